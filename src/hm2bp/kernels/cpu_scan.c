/* Compiled CPU kernels for hm2bp: the LIF scan of spec §1.1, the S-PSP coefficients of spec §2 and the
 * fused event-driven forward and backward passes of a fully connected layer (design.md §1-§3).
 *
 * Built on first use by hm2bp/kernels/cpu.py with -O3 -ffp-contract=off (no FMA contraction, no
 * fast-math), so every float operation is the one written here, in the spec's order. Columns (one per
 * neuron and sample) are independent, except through the optional lateral matrix, which couples the
 * N neurons of one sample; blocks of whole samples are therefore spread over the threads. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

static int64_t block_bounds(int64_t n_groups, int64_t n_blocks, int64_t b, int64_t *lo) {
    int64_t base = n_groups / n_blocks, extra = n_groups % n_blocks;
    *lo = b * base + (b < extra ? b : extra);
    return base + (b < extra ? 1 : 0);
}

/* Per-thread scratch memory, kept from call to call. The per-thread buffers of one call reach a few MB
 * at long windows; freed after every call, glibc hands them back to the OS and the next call pays a page
 * fault per 4 KB it touches, which at batch 1 costs more than the work itself. Each thread (the OpenMP
 * pool's threads live as long as the process) keeps one region, grown when a call needs more and
 * carved into 64-byte aligned pieces; hm2bp_release_scratch frees them. */
typedef struct { char *base; size_t cap, used; } scratch_t;
static _Thread_local scratch_t tls_scratch;
#define SCRATCH(n) (((size_t)(n) + 63) / 64 * 64)

/* Room for `bytes` (the SCRATCH-rounded sizes of the pieces to take) in this thread's region; 0 without
 * memory. Invalidates the pieces taken before. */
static int scratch_begin(size_t bytes) {
    scratch_t *s = &tls_scratch;
    s->used = 0;
    if (bytes <= s->cap) return 1;
    free(s->base);
    s->base = aligned_alloc(64, SCRATCH(bytes));
    s->cap = s->base ? SCRATCH(bytes) : 0;
    return s->base != NULL;
}

static void *scratch_take(size_t bytes) {
    scratch_t *s = &tls_scratch;
    void *piece = s->base + s->used;
    s->used += SCRATCH(bytes);
    return piece;
}

/* Frees the scratch regions of up to n_threads threads (those of the pool that run this region). */
void hm2bp_release_scratch(int32_t n_threads) {
#pragma omp parallel num_threads(n_threads > 0 ? n_threads : 1)
    {
        free(tls_scratch.base);
        tls_scratch.base = NULL;
        tls_scratch.cap = tls_scratch.used = 0;
    }
}

/* One step t of spec §1.1 for n neurons: state v, x, r; cur = the current I(t−1) (feed-forward plus
 * lateral); o receives the 0/1 spikes. Written without branches so that the compiler vectorises it; the
 * float operations are those of the spec, in its order. */
static void lif_step(float *restrict v, float *restrict x, int32_t *restrict r, const float *restrict cur,
                     float *restrict o, int64_t n, float tau_m, float tau_s, int32_t t_ref, float theta) {
    for (int64_t c = 0; c < n; c++) {
        float vv = v[c], xx = x[c];
        vv = vv - vv / tau_m;
        xx = xx - xx / tau_s;
        xx = xx + cur[c];
        vv = vv + xx / tau_s;
        int32_t rc = r[c];
        int32_t clamped = rc > 0;
        vv = clamped ? 0.0f : vv;
        rc = rc - clamped;
        int32_t fire = vv > theta;
        o[c] = fire ? 1.0f : 0.0f;
        r[c] = fire ? t_ref : rc;
        v[c] = fire ? 0.0f : vv;
        x[c] = xx;
    }
}

/* cur[c] = d[c] + Σ_l lateral[c, l]·prev[l] for the n neurons of one sample. */
static void add_lateral(const float *d, const float *lateral, const float *prev, float *cur, int64_t n) {
    for (int64_t c = 0; c < n; c++) {
        const float *row = lateral + c * n;
        float lat = 0.0f;
        for (int64_t l = 0; l < n; l++) lat += row[l] * prev[l];
        cur[c] = d[c] + lat;
    }
}

/* drive, out: [T, M] float32, row-major; M = G * N (G samples of N neurons when lateral != NULL).
 * out must be zero-filled by the caller. Returns 0, or -1 when memory runs out. */
int hm2bp_lif_scan_f32(const float *drive, float *out, int64_t T, int64_t M, float tau_m, float tau_s,
                       int32_t t_ref, float theta, const float *lateral, int64_t N, int32_t n_threads) {
    int64_t group = lateral ? N : 1;
    int64_t n_groups = M / group;
    int64_t n_blocks = n_threads > 0 ? n_threads : 1;
    if (n_blocks > n_groups) n_blocks = n_groups > 0 ? n_groups : 1;
    int failed = 0;
#pragma omp parallel for num_threads(n_blocks) schedule(static) reduction(| : failed)
    for (int64_t b = 0; b < n_blocks; b++) {
        int64_t g0;
        int64_t ng = block_bounds(n_groups, n_blocks, b, &g0);
        int64_t c0 = g0 * group, nc = ng * group;
        if (!scratch_begin(4 * SCRATCH(nc * sizeof(float)))) { failed |= 1; continue; }
        float *v = scratch_take(nc * sizeof(float)), *x = scratch_take(nc * sizeof(float));
        int32_t *r = scratch_take(nc * sizeof(int32_t));
        float *cur = lateral ? scratch_take(nc * sizeof(float)) : NULL;
        memset(v, 0, (size_t)nc * sizeof(float));
        memset(x, 0, (size_t)nc * sizeof(float));
        memset(r, 0, (size_t)nc * sizeof(int32_t));
        for (int64_t t = 1; t < T; t++) {
            const float *d = drive + (t - 1) * M + c0;
            if (lateral) {
                const float *prev = out + (t - 1) * M + c0;
                for (int64_t g = 0; g < ng; g++) add_lateral(d + g * N, lateral, prev + g * N, cur + g * N, N);
                d = cur;
            }
            lif_step(v, x, r, d, out + t * M + c0, nc, tau_m, tau_s, t_ref, theta);
        }
    }
    return failed ? -1 : 0;
}


/* Dot products with 8 independent partial sums, so that the compiler can vectorise them without
 * -ffast-math (the order of a reduction is otherwise fixed). */
#define DOT(SUFFIX, TYPE)                                                                           \
    static TYPE dot_##SUFFIX(const TYPE *a, const TYPE *b, int64_t n) {                           \
        TYPE acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                    \
        int64_t i = 0;                                                                             \
        for (; i + 8 <= n; i += 8)                                                                 \
            for (int k = 0; k < 8; k++) acc[k] += a[i + k] * b[i + k];                             \
        TYPE total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])); \
        for (; i < n; i++) total += a[i] * b[i];                                                   \
        return total;                                                                              \
    }
DOT(f32, float)
DOT(f64, double)

/* Σ a[0:n] with 8 independent partial sums (vectorised; a fixed order). */
#define SUM(SUFFIX, TYPE)                                                                           \
    static TYPE sum_##SUFFIX(const TYPE *a, int64_t n) {                                           \
        TYPE acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                    \
        int64_t i = 0;                                                                             \
        for (; i + 8 <= n; i += 8)                                                                 \
            for (int k = 0; k < 8; k++) acc[k] += a[i + k];                                        \
        TYPE total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])); \
        for (; i < n; i++) total += a[i];                                                          \
        return total;                                                                              \
    }
SUM(f32, float)
SUM(f64, double)

/* Where C̃ must be exactly 0 (spec §2): outside every post spike's window [lo_k, a_k], lo_k = max(1,
 * t_k − window), a_k = t_k − T_ref, the coefficients of psp_scatter cancel only up to rounding (~1e-7 in
 * float), which Adam turns into a ±lr step of a weight that should not move. Going down in time a window
 * opens at a_k, i.e. at a spike at t + T_ref, and since lo_k grows with t_k the last window opened
 * reaches lowest: lo[k] is that bound (INT64_MAX before any), and t is covered iff t ≥ lo[k]. post is the
 * [T, stride] 0/1 spike train of the columns the filter runs over. */
typedef struct { const uint8_t *post; int64_t stride, T, t_ref, window; int64_t *lo; } psp_cover;

static void cover_init(psp_cover *cv, const uint8_t *post, int64_t stride, int64_t T, int32_t t_ref,
                       int64_t window, int64_t *lo, int64_t n) {
    cv->post = post; cv->stride = stride; cv->T = T; cv->t_ref = t_ref; cv->window = window; cv->lo = lo;
    for (int64_t k = 0; k < n; k++) lo[k] = INT64_MAX;
}

/* One step t (descending) of the backward filter in time that turns the scattered coefficients (cm, cs
 * at step t) into C̃(t) = am + as (spec §2): am = am·dm + cm, as = as·ds + cs over n columns, then both
 * set to 0 where t lies outside every window (cv). */
#define FILTER_STEP(SUFFIX, TYPE)                                                                   \
    static inline void filter_step_##SUFFIX(TYPE *restrict am, TYPE *restrict as, const TYPE *restrict cm, \
                                            const TYPE *restrict cs, int64_t n, TYPE dm, TYPE ds,  \
                                            const psp_cover *cv, int64_t t) {                      \
        int64_t *restrict lo = cv->lo, top = t + cv->t_ref;                                        \
        if (top < cv->T) {                                                                         \
            const uint8_t *restrict row = cv->post + top * cv->stride;                             \
            int64_t lo_top = top - cv->window < 1 ? 1 : top - cv->window;                          \
            for (int64_t k = 0; k < n; k++) lo[k] = row[k] ? lo_top : lo[k];                       \
        }                                                                                          \
        for (int64_t k = 0; k < n; k++) {                                                          \
            int in = t >= lo[k];                                                                   \
            TYPE m = am[k] * dm + cm[k], s = as[k] * ds + cs[k];                                   \
            am[k] = in ? m : (TYPE)0;                                                              \
            as[k] = in ? s : (TYPE)0;                                                              \
        }                                                                                          \
    }
FILTER_STEP(f32, float)
FILTER_STEP(f64, double)

/* exp(−k/τ_m) and exp(−k/τ_s) for the integer spans k = 0 … n−1 that the S-PSP coefficients need (differences
 * of spike times, so k < T + 2), computed once per call with the very expression of the direct call:
 * psp_scatter takes ~6 exp per post spike, which was most of its time at long windows. Other k (a
 * negative span, possible for inserted spikes closer than T_ref) take exp itself. */
typedef struct { double tau_m, tau_s; const double *m, *s; int64_t n; double *mem; } exp_table;

static int exp_table_init(exp_table *et, double tau_m, double tau_s, int64_t T) {
    int64_t n = T + 2;
    et->tau_m = tau_m; et->tau_s = tau_s; et->n = n;
    et->mem = malloc((size_t)(2 * n) * sizeof(double));
    if (!et->mem) return 0;
    for (int64_t k = 0; k < n; k++) {
        et->mem[k] = exp(-(double)k / tau_m);
        et->mem[n + k] = exp(-(double)k / tau_s);
    }
    et->m = et->mem; et->s = et->mem + n;
    return 1;
}

static inline double exp_m(const exp_table *et, int64_t k) {
    return k >= 0 && k < et->n ? et->m[k] : exp(-(double)k / et->tau_m);
}

static inline double exp_s(const exp_table *et, int64_t k) {
    return k >= 0 && k < et->n ? et->s[k] : exp(-(double)k / et->tau_s);
}

/* dst[t, a] = post[t * stride + act[a]]: the spike trains of the n_act listed columns, side by side. A
 * silent post neuron has no S-PSP (C̃ = 0), so the coefficients need only the columns that fired. */
static void gather_columns(const uint8_t *post, int64_t stride, int64_t T, const int64_t *act, int64_t n_act,
                           uint8_t *dst) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t a = 0; a < n_act; a++) dst[t * n_act + a] = post[t * stride + act[a]];
}

/* Per-spike S-PSP coefficients (spec §2, design.md §2; derivation in functional/psp.py) of nc columns:
 * post[t * stride + k] is the 0/1 spike of column k at step t. cm/cs [T, nc] receive the τ_m and τ_s
 * coefficients (computed in double, stored as TYPE); a backward filter in time turns them into C̃. */
#define PSP_SCATTER(SUFFIX, TYPE)                                                                   \
    static void psp_scatter_##SUFFIX(const uint8_t *post, int64_t stride, int64_t T, int64_t nc,     \
                                     const exp_table *et, int32_t t_ref, int64_t window,             \
                                     TYPE *cm, TYPE *cs, int64_t *prev) {                            \
        double c = 1.0 / (1.0 - et->tau_s / et->tau_m);                                             \
        memset(cm, 0, (size_t)(T * nc) * sizeof(TYPE));                                             \
        memset(cs, 0, (size_t)(T * nc) * sizeof(TYPE));                                             \
        for (int64_t k = 0; k < nc; k++) prev[k] = -1;                                              \
        for (int64_t t = 0; t < T; t++) {                                                           \
            const uint8_t *row = post + t * stride;                                                 \
            for (int64_t k = 0; k < nc; k++) {                                                      \
                if (!(k & 7) && k + 8 <= nc) { /* skip 8 silent neurons at once (most are) */       \
                    uint64_t word;                                                                  \
                    memcpy(&word, row + k, 8);                                                      \
                    if (!word) { k += 7; continue; }                                                \
                }                                                                                   \
                if (!row[k]) continue;                                                              \
                int64_t a = t - t_ref, lo = t - window < 1 ? 1 : t - window;                        \
                int64_t p = prev[k];                                                                \
                int64_t a0 = p >= 0 ? (p > lo ? p : lo) : lo;                                       \
                if (a >= a0) { /* case A: pre spikes in [a0, a] */                                  \
                    int64_t span = a - a0 + 1;                                                      \
                    cm[a * nc + k] += (TYPE)c;                                                      \
                    cm[(a0 - 1) * nc + k] += (TYPE)(-c * exp_m(et, span));                          \
                    cs[a * nc + k] += (TYPE)(-c);                                                   \
                    cs[(a0 - 1) * nc + k] += (TYPE)(c * exp_s(et, span));                           \
                }                                                                                   \
                if (p >= 0) { /* case B: pre spikes before the previous post spike (reset branch) */ \
                    int64_t hi = p - 1 < a ? p - 1 : a;                                             \
                    if (hi >= lo) {                                                                 \
                        int64_t sk = t - p - t_ref;                                                 \
                        double eps = c * (exp_m(et, sk) - exp_s(et, sk));                           \
                        cs[hi * nc + k] += (TYPE)(eps * exp_s(et, p - hi));                         \
                        cs[(lo - 1) * nc + k] += (TYPE)(-eps * exp_s(et, p - lo + 1));              \
                    }                                                                               \
                }                                                                                   \
                prev[k] = t;                                                                        \
            }                                                                                       \
        }                                                                                           \
    }
PSP_SCATTER(f32, float)
PSP_SCATTER(f64, double)

/* C̃ of spec §2 straight from the post spikes (uint8 [T, M]): blocks of PSP_BLOCK columns scatter their
 * coefficients into a small local buffer, then filter it backwards in time into out [T, M]. */
#define PSP_BLOCK 128
#define PSP_COEFFS(SUFFIX, TYPE)                                                                    \
    int hm2bp_psp_coeffs_##SUFFIX(const uint8_t *post, TYPE *out, int64_t T, int64_t M,            \
                                  double tau_m, double tau_s, int32_t t_ref, int64_t window,       \
                                  int32_t n_threads) {                                             \
        int64_t n_blocks = (M + PSP_BLOCK - 1) / PSP_BLOCK;                                        \
        TYPE dm = (TYPE)exp(-1.0 / tau_m), ds = (TYPE)exp(-1.0 / tau_s);                           \
        exp_table et;                                                                              \
        if (!exp_table_init(&et, tau_m, tau_s, T)) return -1;                                      \
        int failed = 0;                                                                            \
        _Pragma("omp parallel for num_threads(n_threads > 0 ? n_threads : 1) schedule(dynamic, 4) reduction(| : failed)") \
        for (int64_t blk = 0; blk < n_blocks; blk++) {                                             \
            int64_t c0 = blk * PSP_BLOCK, nc = M - c0 < PSP_BLOCK ? M - c0 : PSP_BLOCK;            \
            if (!scratch_begin(2 * SCRATCH(T * nc * sizeof(TYPE)))) { failed |= 1; continue; }    \
            TYPE *cm = scratch_take(T * nc * sizeof(TYPE)), *cs = scratch_take(T * nc * sizeof(TYPE)); \
            int64_t prev[PSP_BLOCK], lo[PSP_BLOCK];                                                \
            TYPE am[PSP_BLOCK], as[PSP_BLOCK];                                                     \
            psp_cover cv;                                                                          \
            psp_scatter_##SUFFIX(post + c0, M, T, nc, &et, t_ref, window, cm, cs, prev);            \
            cover_init(&cv, post + c0, M, T, t_ref, window, lo, nc);                               \
            for (int64_t k = 0; k < nc; k++) { am[k] = 0; as[k] = 0; }                             \
            for (int64_t t = T - 1; t >= 0; t--) {                                                 \
                TYPE *o = out + t * M + c0;                                                        \
                filter_step_##SUFFIX(am, as, cm + t * nc, cs + t * nc, nc, dm, ds, &cv, t);        \
                for (int64_t k = 0; k < nc; k++) o[k] = am[k] + as[k];                             \
            }                                                                                      \
        }                                                                                          \
        free(et.mem);                                                                              \
        return failed ? -1 : 0;                                                                    \
    }
PSP_COEFFS(f32, float)
PSP_COEFFS(f64, double)

/* dst[c * ld_dst + r] = src[r * C + c] for src [R, C]: a transpose in 32 × 32 tiles, so that reads and
 * writes both stay within a few cache lines at a time. A plain copy: no arithmetic, exact. */
#define TRANSPOSE(SUFFIX, TYPE, TILE8)                                                              \
    static void transpose_##SUFFIX(const TYPE *restrict src, int64_t R, int64_t C, TYPE *restrict dst, \
                                   int64_t ld_dst) {                                                \
        for (int64_t r0 = 0; r0 < R; r0 += 32)                                                      \
            for (int64_t c0 = 0; c0 < C; c0 += 32) {                                                \
                int64_t r1 = r0 + 32 < R ? r0 + 32 : R, c1 = c0 + 32 < C ? c0 + 32 : C, r = r0;    \
                for (; TILE8 && r + 8 <= r1; r += 8) {                                              \
                    int64_t c = c0;                                                                 \
                    for (; c + 8 <= c1; c += 8) transpose8_f32((const float *)src + r * C + c, C,   \
                                                               (float *)dst + c * ld_dst + r, ld_dst); \
                    for (; c < c1; c++)                                                             \
                        for (int64_t k = r; k < r + 8; k++) dst[c * ld_dst + k] = src[k * C + c];   \
                }                                                                                   \
                for (int64_t c = c0; c < c1; c++)                                                   \
                    for (int64_t k = r; k < r1; k++) dst[c * ld_dst + k] = src[k * C + c];          \
            }                                                                                       \
    }
#ifdef __AVX__
#include <immintrin.h>
/* One 8 × 8 float tile through AVX registers: scalar code writes a transpose ~6× slower. */
static inline void transpose8_f32(const float *s, int64_t ls, float *d, int64_t ld) {
    __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + ls), r2 = _mm256_loadu_ps(s + 2 * ls),
           r3 = _mm256_loadu_ps(s + 3 * ls), r4 = _mm256_loadu_ps(s + 4 * ls), r5 = _mm256_loadu_ps(s + 5 * ls),
           r6 = _mm256_loadu_ps(s + 6 * ls), r7 = _mm256_loadu_ps(s + 7 * ls);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
           t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
           t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
           u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
           u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
           u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(d + ld, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(d + 2 * ld, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(d + 3 * ld, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(d + 4 * ld, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(d + 5 * ld, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(d + 6 * ld, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(d + 7 * ld, _mm256_permute2f128_ps(u3, u7, 0x31));
}
TRANSPOSE(f32, float, 1)
#else
static inline void transpose8_f32(const float *s, int64_t ls, float *d, int64_t ld) {
    (void)s; (void)ls; (void)d; (void)ld;  /* not called: TILE8 is 0 */
}
TRANSPOSE(f32, float, 0)
#endif
TRANSPOSE(f64, double, 0)

/* The output layer's rules (spec §3.2, §3.4) for post spikes post [T, B, N] (uint8, before insertion) and
 * labels [B], one sample per iteration:
 *   used [T, B, N]: a copy of post where a silent label neuron gets spikes at t = Δ, 2Δ, … < T (Δ = step;
 *     none when step < 1);
 *   lam [B, N] (skipped when NULL): Λ_j = 1 / (1 − w0² Σ_{l≠j} R_jl d_l R_lj d_j) from the spikes before
 *     insertion, in double: R_jl = e_{l|j} / f_j where both counts are > 0 (else 1), e_{l|j} = Σ_t s_j(t)·C̃_l(t),
 *     d_j = [f_j > 0 or j = label] / ν.
 * stats[0] receives the number of samples that got spikes inserted, stats[1] the number whose Λ has an
 * entry that is not finite or ≤ 0 (a loop gain ≥ 1, which the authors leave unguarded). Returns 0, -1
 * without memory, or -2 when a label is not in [0, N). */
int hm2bp_output_rules(const uint8_t *post, const int64_t *labels, uint8_t *used, double *lam, int64_t *stats,
                       int64_t T, int64_t B, int64_t N, int64_t step, double v_th, double strength, double tau_m,
                       double tau_s, int32_t t_ref, int64_t window, int32_t n_threads) {
    double dm = exp(-1.0 / tau_m), ds = exp(-1.0 / tau_s);
    int failed = 0;
    int64_t n_inserted = 0, n_bad = 0;
    for (int64_t b = 0; b < B; b++)
        if (labels[b] < 0 || labels[b] >= N) return -2;
    exp_table et;
    if (lam && !exp_table_init(&et, tau_m, tau_s, T)) return -1;
#pragma omp parallel for num_threads(n_threads > 0 ? n_threads : 1) schedule(static) reduction(| : failed) reduction(+ : n_inserted, n_bad)
    for (int64_t b = 0; b < B; b++) {
        int64_t lab = labels[b], stride = B * N;
        const uint8_t *pb = post + b * N;
        uint8_t *ub = used + b * N;
        for (int64_t t = 0; t < T; t++) memcpy(ub + t * stride, pb + t * stride, (size_t)N);
        int label_fired = 0;
        for (int64_t t = 0; t < T; t++) label_fired |= pb[t * stride + lab] != 0;
        if (!label_fired && step >= 1) {
            for (int64_t t = step; t < T; t += step) ub[t * stride + lab] = 1;
            n_inserted += T > step;
        }
        if (!lam) continue;
        size_t steps = SCRATCH(T * N * sizeof(double)), mat = SCRATCH(N * N * sizeof(double)), vec = SCRATCH(N * sizeof(double));
        if (!scratch_begin(2 * steps + 2 * mat + 6 * vec)) { failed |= 1; continue; }
        double *cm = scratch_take(T * N * sizeof(double)), *cs = scratch_take(T * N * sizeof(double));
        double *e = scratch_take(N * N * sizeof(double)), *ratio = scratch_take(N * N * sizeof(double));
        double *am = scratch_take(N * sizeof(double)), *as = scratch_take(N * sizeof(double));
        double *f = scratch_take(N * sizeof(double)), *d = scratch_take(N * sizeof(double));
        int64_t *prev = scratch_take(N * sizeof(int64_t)), *lo = scratch_take(N * sizeof(int64_t));
        psp_cover cv;
        psp_scatter_f64(pb, stride, T, N, &et, t_ref, window, cm, cs, prev);
        cover_init(&cv, pb, stride, T, t_ref, window, lo, N);
        memset(e, 0, (size_t)(N * N) * sizeof(double));
        for (int64_t k = 0; k < N; k++) { am[k] = 0; as[k] = 0; f[k] = 0; }
        for (int64_t t = T - 1; t >= 0; t--) {  /* e[j, l] += s_j(t)·C̃_l(t) */
            filter_step_f64(am, as, cm + t * N, cs + t * N, N, dm, ds, &cv, t);
            const uint8_t *row = pb + t * stride;
            for (int64_t j = 0; j < N; j++) {
                if (!row[j]) continue;
                f[j] += 1;
                for (int64_t l = 0; l < N; l++) e[j * N + l] += am[l] + as[l];
            }
        }
        for (int64_t j = 0; j < N; j++) {
            for (int64_t l = 0; l < N; l++)
                ratio[j * N + l] = f[j] > 0 && f[l] > 0 ? e[j * N + l] / f[j] : 1.0;
            d[j] = (f[j] > 0 || j == lab ? 1.0 : 0.0) / v_th;
        }
        int bad = 0;
        double *lb = lam + b * N;
        for (int64_t j = 0; j < N; j++) {
            double loop = 0.0;
            for (int64_t l = 0; l < N; l++)
                if (l != j) loop += ratio[j * N + l] * ratio[l * N + j] * d[l] * d[j];
            lb[j] = 1.0 / (1.0 - strength * strength * loop);
            bad |= !(lb[j] - lb[j] == 0.0) || !(lb[j] > 0.0);
        }
        n_bad += bad;
    }
    if (lam) free(et.mem);
    stats[0] = n_inserted;
    stats[1] = n_bad;
    return failed ? -1 : 0;
}

/* ----------------------------------------------------------------------------------------------
 * Event-driven fully connected layer. The input spikes S [R = T·B rows (r = t·B + b), N_in] are a CSR
 * index (row_ptr, cols); W [N, N_in] is row-major, as torch keeps it. Without lateral coupling the N
 * neurons are independent, so the work is split into blocks of at most FC_BLOCK neurons, block-major:
 * each thread transposes its block's rows of W into scratch memory once, so that every input spike
 * touches one contiguous row of that slice of Wᵀ, and the slice (and the block's gradient) stays in the
 * cache while every sample and step goes through it. Every buffer is [T, block] at most, so no
 * [T, B, N] float tensor (drive, C̃) is ever formed, and no Wᵀ either.
 * ---------------------------------------------------------------------------------------------- */
#ifndef FC_BLOCK
#define FC_BLOCK 64
#endif
#ifndef GRAD_MIN_WIDTH
#define GRAD_MIN_WIDTH 64
#endif

/* Neuron block width: FC_BLOCK, narrower when that leaves fewer than 4 blocks per thread; the whole
 * layer when lateral weights couple its neurons. */
static int64_t fc_block(int64_t N, int coupled, int64_t n_threads) {
    if (coupled) return N > 0 ? N : 1;
    int64_t want = (N + 4 * n_threads - 1) / (4 * n_threads);
    want = (want + 7) / 8 * 8;
    if (want < 16) want = 16;
    return want < FC_BLOCK ? want : FC_BLOCK;
}

/* 1 when a[0:n] holds no NaN and no inf (x − x is 0 exactly for finite x); vectorised, no branches. */
static int all_finite_f32(const float *a, int64_t n) {
    int ok = 1;
    for (int64_t i = 0; i < n; i++) ok &= (a[i] - a[i]) == 0.0f;
    return ok;
}

/* d[0:n] = Σ_{j ∈ row r} wt[j, 0:n] (rows ld apart): the drive W·s of one step, sample and neuron block.
 * Summed in chunks of 16 neurons held in registers across the row's spikes (each d[i] is still the sum
 * of its weights in spike order, from 0). */
static void row_sum_f32(const int64_t *restrict row_ptr, const int32_t *restrict cols, const float *restrict wt,
                        int64_t ld, int64_t r, int64_t n, float *restrict d) {
    int64_t k0 = row_ptr[r], k1 = row_ptr[r + 1];
    int64_t i0 = 0;
    for (; i0 + 16 <= n; i0 += 16) {
        float acc[16] = {0};
        for (int64_t k = k0; k < k1; k++) {
            const float *w = wt + (int64_t)cols[k] * ld + i0;
            for (int i = 0; i < 16; i++) acc[i] += w[i];
        }
        for (int i = 0; i < 16; i++) d[i0 + i] = acc[i];
    }
    for (int64_t i = i0; i < n; i++) {
        float acc = 0.0f;
        for (int64_t k = k0; k < k1; k++) acc += wt[(int64_t)cols[k] * ld + i];
        d[i] = acc;
    }
}

/* Forward: the drive of each step is summed from the input spikes and integrated at once by lif_step
 * (the operations of hm2bp_lif_scan_f32, so the same spikes as a scan of the same drive). The spikes go
 * to out [T, B, N] (float 0/1) and/or out_u8 (same layout, one byte each), whichever is not NULL. With
 * counts and psp_drive (which need out_u8), counts [B, N] gets the spike counts and the block's drive is
 * kept ([T, block]) so that, once
 * its spikes are known, σ's numerator psp_drive[b, i] = Σ_t C̃_i(t)·drive_i(t) (= Σ_l w_il e_{i|l}) is
 * formed in double: the backward pass then needs neither the drive nor a second pass over the input
 * spikes. Every block of W is checked for NaN/inf as it is transposed (the forward reads all of W
 * anyway, so the check costs no pass over memory). Returns 0, -1 without memory, or -2 when W holds
 * NaN or inf (the outputs are then garbage). */
int hm2bp_fc_forward_f32(const int64_t *row_ptr, const int32_t *cols, const float *w, int64_t T, int64_t B,
                         int64_t N, int64_t n_in, float tau_m, float tau_s, int32_t t_ref, float theta, const float *lateral,
                         float *out, uint8_t *out_u8, int32_t *counts, double *psp_drive, double psp_tau_m,
                         double psp_tau_s, int64_t window, int32_t n_threads) {
    int keep = out_u8 && counts && psp_drive;
    if (!out && !out_u8) return 0;
    int64_t nt = n_threads > 0 ? n_threads : 1;
    int64_t blk = fc_block(N, lateral != NULL, nt);
    int64_t n_blocks = (N + blk - 1) / blk;
    int failed = 0, bad_weights = 0;
    double dm = exp(-1.0 / psp_tau_m), ds = exp(-1.0 / psp_tau_s);
    exp_table et;
    if (keep && !exp_table_init(&et, psp_tau_m, psp_tau_s, T)) return -1;
#pragma omp parallel num_threads(nt) reduction(| : failed, bad_weights)
    {
        size_t vec = SCRATCH(blk * sizeof(double)), steps = SCRATCH((keep ? T : 1) * blk * sizeof(double));
        int ok = scratch_begin(11 * vec + 3 * steps + SCRATCH(n_in * blk * sizeof(float)) + SCRATCH((keep ? T : 1) * blk));
        if (!ok) failed |= 1;
        float *wt = ok ? scratch_take(n_in * blk * sizeof(float)) : NULL; /* the current block's Wᵀ [n_in, nc] */
        int64_t wt_block = -1;
        float *v = ok ? scratch_take(blk * sizeof(float)) : NULL, *x = ok ? scratch_take(blk * sizeof(float)) : NULL;
        int32_t *r = ok ? scratch_take(blk * sizeof(int32_t)) : NULL;
        float *cur = ok && lateral ? scratch_take(blk * sizeof(float)) : NULL;
        float *o = ok ? scratch_take(blk * sizeof(float)) : NULL;
        float *drive = ok ? scratch_take((keep ? T : 1) * blk * sizeof(float)) : NULL;
        double *cm = ok && keep ? scratch_take(T * blk * sizeof(double)) : NULL;
        double *cs = ok && keep ? scratch_take(T * blk * sizeof(double)) : NULL;
        double *am = ok ? scratch_take(blk * sizeof(double)) : NULL, *as = ok ? scratch_take(blk * sizeof(double)) : NULL;
        int64_t *prev = ok ? scratch_take(blk * sizeof(int64_t)) : NULL;
        int64_t *lo = ok ? scratch_take(blk * sizeof(int64_t)) : NULL;
        int64_t *act = ok ? scratch_take(blk * sizeof(int64_t)) : NULL;  /* the block's neurons that fired */
        double *acc = ok ? scratch_take(blk * sizeof(double)) : NULL;
        uint8_t *fired = ok ? scratch_take((keep ? T : 1) * blk) : NULL; /* their spikes, [T, n_act] */
#pragma omp for collapse(2) schedule(static)
        for (int64_t cb = 0; cb < n_blocks; cb++) {
            for (int64_t b = 0; b < B; b++) {
                if (!ok) continue;
                int64_t c0 = cb * blk, nc = N - c0 < blk ? N - c0 : blk;
                int64_t base = b * N + c0, stride = B * N;
                if (wt_block != cb) {
                    transpose_f32(w + c0 * n_in, nc, n_in, wt, nc);
                    wt_block = cb;
                    bad_weights |= !all_finite_f32(wt, nc * n_in);
                }
                memset(v, 0, (size_t)nc * sizeof(float));
                memset(x, 0, (size_t)nc * sizeof(float));
                memset(r, 0, (size_t)nc * sizeof(int32_t));
                memset(o, 0, (size_t)nc * sizeof(float));
                if (T > 0 && out) memset(out + base, 0, (size_t)nc * sizeof(float));
                if (T > 0 && out_u8) memset(out_u8 + base, 0, (size_t)nc);
                for (int64_t t = 1; t < T; t++) {
                    float *d = drive + (keep ? (t - 1) * nc : 0);
                    row_sum_f32(row_ptr, cols, wt, nc, (t - 1) * B + b, nc, d);
                    const float *c_in = d;
                    if (lateral) {  /* one block (nc == N); o still holds the spikes of step t − 1 */
                        add_lateral(d, lateral, o, cur, N);
                        c_in = cur;
                    }
                    lif_step(v, x, r, c_in, o, nc, tau_m, tau_s, t_ref, theta);
                    if (out) memcpy(out + t * stride + base, o, (size_t)nc * sizeof(float));
                    if (out_u8) {
                        uint8_t *u = out_u8 + t * stride + base;
                        for (int64_t c = 0; c < nc; c++) u[c] = o[c] != 0.0f;
                    }
                }
                if (!keep) continue;
                int32_t *cnt = counts + base;
                memset(cnt, 0, (size_t)nc * sizeof(int32_t));
                for (int64_t t = 0; t < T; t++) {
                    const uint8_t *u = out_u8 + t * stride + base;
                    for (int64_t c = 0; c < nc; c++) cnt[c] += u[c];
                }
                if (T > 0) row_sum_f32(row_ptr, cols, wt, nc, (T - 1) * B + b, nc, drive + (T - 1) * nc);
                int64_t n_act = 0;  /* σ's numerator is 0 for a silent neuron: only the others are filtered */
                for (int64_t c = 0; c < nc; c++) {
                    psp_drive[base + c] = 0;
                    if (cnt[c] > 0) act[n_act++] = c;
                }
                if (n_act == 0) continue;
                gather_columns(out_u8 + base, stride, T, act, n_act, fired);
                psp_scatter_f64(fired, n_act, T, n_act, &et, t_ref, window, cm, cs, prev);
                psp_cover cv;
                cover_init(&cv, fired, n_act, T, t_ref, window, lo, n_act);
                for (int64_t a = 0; a < n_act; a++) { am[a] = 0; as[a] = 0; acc[a] = 0; }
                for (int64_t t = T - 1; t >= 0; t--) {
                    const float *d = drive + t * nc;
                    filter_step_f64(am, as, cm + t * n_act, cs + t * n_act, n_act, dm, ds, &cv, t);
                    for (int64_t a = 0; a < n_act; a++) acc[a] += (am[a] + as[a]) * (double)d[act[a]];
                }
                for (int64_t a = 0; a < n_act; a++) psp_drive[base + act[a]] = acc[a];
            }
        }
    }
    if (keep) free(et.mem);
    return failed ? -1 : bad_weights ? -2 : 0;
}


/* cnt[i] = the spike count of column i (post[t * stride + i] over T steps), or known[i] when the caller
 * already has the counts (the forward computed them). */
static void post_counts(const uint8_t *post, int64_t stride, int64_t T, int64_t nc, const int32_t *known,
                        int64_t *cnt) {
    if (known) {
        for (int64_t i = 0; i < nc; i++) cnt[i] = known[i];
        return;
    }
    for (int64_t i = 0; i < nc; i++) cnt[i] = 0;
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < nc; i++) cnt[i] += post[t * stride + i] != 0;
}

/* f = δ̂·(1 + σ)·Λ of spec §3.3 for one post neuron and sample: δ̂ = δ/ν; σ = psp_drive/(ν·o) when it fired
 * (o > 0), else 0.5·Σ_j w_ij/ν (weight_sum, read only then); Λ = *lam (NULL: none). In TYPE, in the order
 * of functional/hm2bp.py's torch code. */
#define LAYER_FACTOR(SUFFIX, TYPE)                                                                  \
    static inline TYPE layer_factor_##SUFFIX(TYPE delta, int64_t count, double psp_drive, TYPE weight_sum, \
                                             const double *lam, TYPE vth) {                         \
        TYPE dh = delta / vth;                                                                      \
        TYPE sigma = count > 0 ? (TYPE)psp_drive / (vth * (TYPE)count) : (TYPE)0.5 * weight_sum / vth; \
        TYPE f = dh * ((TYPE)1 + sigma);                                                            \
        return lam ? f * (TYPE)*lam : f;                                                            \
    }
LAYER_FACTOR(f32, float)
LAYER_FACTOR(f64, double)

/* At batch 1 the gradient is summed GRAD_WIDTH active post neurons at a time: buf [n_in, GRAD_WIDTH] (two
 * cache lines per input neuron, ~100 KB for 784 inputs) stays in the core's caches while every input spike
 * adds its lines, where a buffer for all active neurons of a block (a few hundred) does not. Kernel alone,
 * hidden layer of 784-800-10 after 200-300 training steps: 0.71-0.86x the time of the whole-buffer version
 * with cold caches (as in a training step), 0.79-0.98x warm; 16 was slower at T = 400, 64 no better. */
#ifndef GRAD_WIDTH
#define GRAD_WIDTH 32
#endif

/* buf[j, w] += Σ_t Σ_{spikes (row t, j)} coef[t·ld + w] for w < na (one sample: rows are steps; t descending,
 * the spikes of a row in order, so the order of the sums does not depend on GRAD_WIDTH); buf [n_in, GRAD_WIDTH]. */
#define SUM_SPIKES(SUFFIX, TYPE)                                                                    \
    static void sum_spikes_##SUFFIX(const int64_t *restrict row_ptr, const int32_t *restrict cols, int64_t T, \
                                    const TYPE *restrict coef, int64_t ld, int64_t na, TYPE *restrict buf) { \
        TYPE cw[GRAD_WIDTH];                                                                        \
        for (int64_t t = T - 1; t >= 0; t--) {                                                      \
            int64_t k0 = row_ptr[t], k1 = row_ptr[t + 1];                                           \
            if (k0 == k1) continue;                                                                 \
            const TYPE *c = coef + t * ld;                                                          \
            for (int w = 0; w < GRAD_WIDTH; w++) cw[w] = w < na ? c[w] : (TYPE)0;                   \
            for (int64_t k = k0; k < k1; k++) {                                                     \
                TYPE *bj = buf + (int64_t)cols[k] * GRAD_WIDTH;                                     \
                for (int w = 0; w < GRAD_WIDTH; w++) bj[w] += cw[w];                                \
            }                                                                                       \
        }                                                                                           \
    }
SUM_SPIKES(f32, float)
SUM_SPIKES(f64, double)

/* The weight gradient of one sample (B = 1) for nc post neurons, into their rows of grad ([nc, n_in], W's
 * layout). A silent post neuron's row is the constant silent_psp·f_i where the input fired (spec §2), written
 * at once; only the n_act active neurons are summed (at batch 1 most post neurons are silent), GRAD_WIDTH
 * of them at a time (sum_spikes), in the general path's order (t descending), so the two give the same
 * bits. (At batch > 1 the general path's whole-block buffer wins: narrower blocks there repeat the
 * per-sample work over the spikes and the post spikes, measured 1.4× slower.) post is [T, stride] (uint8, this block's columns); counts (may be NULL: counted here), delta,
 * psp_drive, lam (may be NULL) and w ([nc, n_in]) are this block's. Returns 0, or 1 without memory. */
#define FC_ROWS_BACKWARD(SUFFIX, TYPE)                                                              \
    static int fc_rows_backward_##SUFFIX(const uint8_t *post, int64_t stride, const int32_t *counts, \
                                         const int64_t *row_ptr, const int32_t *cols,                 \
                                         const int64_t *counts_in, const TYPE *w,                     \
                                         const TYPE *delta, const double *psp_drive, const double *lam, \
                                         TYPE vth, TYPE silent_psp, TYPE *grad, int64_t T, int64_t n_in, \
                                         int64_t nc, const exp_table *et, int32_t t_ref,             \
                                         int64_t window) {                                            \
        TYPE dm = (TYPE)exp(-1.0 / et->tau_m), ds = (TYPE)exp(-1.0 / et->tau_s);                      \
        size_t steps = SCRATCH(T * nc * sizeof(TYPE)), vec = SCRATCH(nc * sizeof(int64_t));           \
        size_t slice = SCRATCH(n_in * GRAD_WIDTH * sizeof(TYPE));                                     \
        if (!scratch_begin(2 * steps + 2 * slice + 8 * vec + SCRATCH(T * nc))) return 1;              \
        TYPE *cm = scratch_take(T * nc * sizeof(TYPE)), *cs = scratch_take(T * nc * sizeof(TYPE));    \
        TYPE *am = scratch_take(nc * sizeof(TYPE)), *as = scratch_take(nc * sizeof(TYPE));            \
        TYPE *fac = scratch_take(nc * sizeof(TYPE));                                                  \
        int64_t *prev = scratch_take(nc * sizeof(int64_t)), *act = scratch_take(nc * sizeof(int64_t)); \
        int64_t *cnt = scratch_take(nc * sizeof(int64_t)), *lo = scratch_take(nc * sizeof(int64_t));  \
        post_counts(post, stride, T, nc, counts, cnt);                                                \
        int64_t n_act = 0;                                                                            \
        for (int64_t i = 0; i < nc; i++) {                                                            \
            TYPE wsum = cnt[i] > 0 ? (TYPE)0 : sum_##SUFFIX(w + i * n_in, n_in);                     \
            fac[i] = layer_factor_##SUFFIX(delta[i], cnt[i], psp_drive[i], wsum, lam ? lam + i : NULL, vth); \
            if (cnt[i] > 0) {                                                                         \
                act[n_act++] = i;                                                                     \
            } else {                                                                                  \
                TYPE g = silent_psp * fac[i], *row = grad + i * n_in;                                 \
                for (int64_t j = 0; j < n_in; j++) row[j] = counts_in[j] > 0 ? g : (TYPE)0;           \
            }                                                                                         \
        }                                                                                             \
        if (n_act == 0) return 0;                                                                     \
        TYPE *buf = scratch_take(n_in * GRAD_WIDTH * sizeof(TYPE));                                   \
        TYPE *rows = scratch_take(n_in * GRAD_WIDTH * sizeof(TYPE));                                  \
        uint8_t *fired = scratch_take(T * n_act);                                                     \
        gather_columns(post, stride, T, act, n_act, fired);                                           \
        psp_scatter_##SUFFIX(fired, n_act, T, n_act, et, t_ref, window, cm, cs, prev);                \
        psp_cover cv;                                                                                 \
        cover_init(&cv, fired, n_act, T, t_ref, window, lo, n_act);                                   \
        for (int64_t a = 0; a < n_act; a++) { am[a] = 0; as[a] = 0; fac[a] = fac[act[a]]; }           \
        for (int64_t t = T - 1; t >= 0; t--) { /* cm[t] becomes C̃(t)·f, read back per sub-block */    \
            filter_step_##SUFFIX(am, as, cm + t * n_act, cs + t * n_act, n_act, dm, ds, &cv, t);      \
            for (int64_t a = 0; a < n_act; a++) cm[t * n_act + a] = (am[a] + as[a]) * fac[a];          \
        }                                                                                             \
        for (int64_t a0 = 0; a0 < n_act; a0 += GRAD_WIDTH) {                                          \
            int64_t na = n_act - a0 < GRAD_WIDTH ? n_act - a0 : GRAD_WIDTH;                           \
            memset(buf, 0, (size_t)(n_in * GRAD_WIDTH) * sizeof(TYPE));                               \
            sum_spikes_##SUFFIX(row_ptr, cols, T, cm + a0, n_act, na, buf);                         \
            transpose_##SUFFIX(buf, n_in, GRAD_WIDTH, rows, n_in);                                    \
            for (int64_t a = 0; a < na; a++)                                                          \
                memcpy(grad + act[a0 + a] * n_in, rows + a * n_in, (size_t)n_in * sizeof(TYPE));      \
        }                                                                                             \
        return 0;                                                                                     \
    }
FC_ROWS_BACKWARD(f32, float)
FC_ROWS_BACKWARD(f64, double)

/* Backward of the event-driven FC layer, for post spikes post [T, B, N] (uint8; for an output layer after
 * the spike insertion of spec §3.2). C̃ of each sample is rebuilt from its spikes (a scatter and one
 * backward filter in time, O(T·N)) and contracted with the input spikes on the fly, step by step. */
#define FC_BACKWARD(SUFFIX, TYPE)                                                                   \
    /* out[b, i] = Σ_t C̃_bi(t) · Σ_{j ∈ row t·B+b} w[i, j]   (σ's numerator, when the forward's is stale) */ \
    int hm2bp_fc_psp_drive_##SUFFIX(const uint8_t *post, const int64_t *row_ptr, const int32_t *cols,       \
                                    const TYPE *w, TYPE *out, int64_t T, int64_t B, int64_t N, int64_t n_in, \
                                    double tau_m, double tau_s, int32_t t_ref, int64_t window,              \
                                    int32_t n_threads) {                                                    \
        TYPE dm = (TYPE)exp(-1.0 / tau_m), ds = (TYPE)exp(-1.0 / tau_s);                                    \
        exp_table et;                                                                                       \
        if (!exp_table_init(&et, tau_m, tau_s, T)) return -1;                                               \
        int failed = 0;                                                                                     \
        _Pragma("omp parallel num_threads(n_threads > 0 ? n_threads : 1) reduction(| : failed)")            \
        {                                                                                                   \
            size_t steps = SCRATCH(T * N * sizeof(TYPE)), vec = SCRATCH(N * sizeof(int64_t));               \
            int ok = scratch_begin(2 * steps + 5 * vec + SCRATCH(n_in * N * sizeof(TYPE)));                 \
            if (!ok) failed |= 1;                                                                           \
            TYPE *wt = ok ? scratch_take(n_in * N * sizeof(TYPE)) : NULL;                                   \
            if (ok) transpose_##SUFFIX(w, N, n_in, wt, N);                                                  \
            TYPE *cm = ok ? scratch_take(T * N * sizeof(TYPE)) : NULL, *cs = ok ? scratch_take(T * N * sizeof(TYPE)) : NULL; \
            TYPE *am = ok ? scratch_take(N * sizeof(TYPE)) : NULL, *as = ok ? scratch_take(N * sizeof(TYPE)) : NULL; \
            TYPE *ct = ok ? scratch_take(N * sizeof(TYPE)) : NULL;                                          \
            int64_t *prev = ok ? scratch_take(N * sizeof(int64_t)) : NULL;                                  \
            int64_t *lo = ok ? scratch_take(N * sizeof(int64_t)) : NULL;                                    \
            psp_cover cv;                                                                                   \
            _Pragma("omp for schedule(static)")                                                             \
            for (int64_t b = 0; b < B; b++) {                                                               \
                if (!ok) continue;                                                                          \
                psp_scatter_##SUFFIX(post + b * N, B * N, T, N, &et, t_ref, window, cm, cs, prev);          \
                cover_init(&cv, post + b * N, B * N, T, t_ref, window, lo, N);                              \
                TYPE *o = out + b * N;                                                                      \
                for (int64_t i = 0; i < N; i++) { am[i] = 0; as[i] = 0; o[i] = 0; }                         \
                for (int64_t t = T - 1; t >= 0; t--) {                                                      \
                    filter_step_##SUFFIX(am, as, cm + t * N, cs + t * N, N, dm, ds, &cv, t);                \
                    for (int64_t i = 0; i < N; i++) ct[i] = am[i] + as[i];                                  \
                    int64_t r = t * B + b;                                                                  \
                    for (int64_t k = row_ptr[r]; k < row_ptr[r + 1]; k++) {                                 \
                        const TYPE *w = wt + (int64_t)cols[k] * N;                                          \
                        for (int64_t i = 0; i < N; i++) o[i] += ct[i] * w[i];                               \
                    }                                                                                       \
                }                                                                                           \
            }                                                                                               \
        }                                                                                                   \
        free(et.mem);                                                                                       \
        return failed ? -1 : 0;                                                                             \
    }                                                                                                       \
    /* The whole HM2-BP backward step of the layer (spec §3.3), the rules of functional/hm2bp.py's        \
     * linear_backward in TYPE, from the count error delta [B, N] (TYPE), σ's numerator psp_drive [B, N]  \
     * (double, Σ_l w_il e_{i|l}) and Λ lam [B, N] (double, NULL = none):                               \
     *   o_bi = Σ_t post_bi(t); δ̂ = δ/ν; σ_bi = psp_drive/(ν·o_bi), or 0.5·Σ_j w_ij/ν for a silent post;  \
     *   f_bi = δ̂_bi·(1 + σ_bi)·Λ_bi;                                                                    \
     *   grad[i, j] = Σ_b f_bi·e_bij (W layout [N, n_in], all written), e_bij = Σ_t C̃_bi(t)·s_bj(t), or   \
     *     silent_psp when post i is silent in sample b and counts_in[b, j] > 0 (spec §2's special case); \
     *   below [B, n_in] (mode 1: δ̂·W; mode 2, the effect ratio: Σ_t Σ_{spikes (t·B+b, j)} Σ_i C̃_bi(t)·δ̂_bi·w_ij \
     *     / counts_in[b, j] + Σ_{i silent} δ̂_bi·w_ij where counts_in[b, j] > 0, else δ̂·W; mode 0: none).  \
     * Work items are (neuron block × sample group), one per thread: neuron blocks first (no two threads  \
     * then share a gradient entry), at least GRAD_MIN_WIDTH neurons wide, since every input spike costs  \
     * a pass over the block; the threads left over split the samples. An item sums its gradient slice   \
     * in a private [n_in, block] buffer and writes it transposed into grad (sample groups after the     \
     * first into partial copies, added in group order). The three sums of `below` are kept per block    \
     * and added in block order. counts [B, N] (int32) are the spike counts of post when the caller has   \
     * them (NULL: counted here). Returns 0, or -1 without memory. */                                    \
    int hm2bp_fc_backward_##SUFFIX(const uint8_t *post, const int32_t *counts, const int64_t *row_ptr,      \
                                   const int32_t *cols,                                                     \
                                   const int64_t *counts_in, const TYPE *w, const TYPE *delta,              \
                                   const double *psp_drive, const double *lam, double v_th, int32_t mode,   \
                                   TYPE silent_psp, TYPE *grad, TYPE *below, int64_t T, int64_t B,          \
                                   int64_t n_in, int64_t N, double tau_m, double tau_s, int32_t t_ref,      \
                                   int64_t window, int32_t n_threads) {                                     \
        TYPE dm = (TYPE)exp(-1.0 / tau_m), ds = (TYPE)exp(-1.0 / tau_s), vth = (TYPE)v_th;                  \
        int64_t nt = n_threads > 0 ? n_threads : 1;                                                         \
        int64_t n_blocks = N / GRAD_MIN_WIDTH < nt ? N / GRAD_MIN_WIDTH : nt;                               \
        if (B == 1) n_blocks = N < nt ? N : nt; /* one sample: no samples to split, narrower blocks */    \
        if (n_blocks < 1) n_blocks = 1;                                                                     \
        int64_t n_groups = nt / n_blocks < B ? nt / n_blocks : B;                                           \
        if (n_groups < 1) n_groups = 1;                                                                     \
        int64_t size = N * n_in, n_items = n_blocks * n_groups, per = B * n_in;                             \
        TYPE *part = n_groups > 1 ? malloc((size_t)((n_groups - 1) * size) * sizeof(TYPE)) : NULL;          \
        /* per block: through, all (δ̂·W) and from_silent sums of `below`, [B, n_in] each */                \
        TYPE *sums = mode ? malloc((size_t)(3 * n_blocks * per) * sizeof(TYPE)) : NULL;                     \
        exp_table et;                                                                                       \
        et.mem = NULL;                                                                                      \
        if ((n_groups > 1 && !part) || (mode && !sums) || !exp_table_init(&et, tau_m, tau_s, T)) {          \
            free(part); free(sums); free(et.mem); return -1;                                                \
        }                                                                                                   \
        int failed = 0;                                                                                     \
        _Pragma("omp parallel for num_threads(n_items) schedule(static) reduction(| : failed)")             \
        for (int64_t item = 0; item < n_items; item++) {                                                    \
            int64_t blk = item / n_groups, grp = item % n_groups, c0, b0;                                   \
            int64_t nc = block_bounds(N, n_blocks, blk, &c0), nb = block_bounds(B, n_groups, grp, &b0);     \
            if (B == 1 && mode == 0) { /* one sample: only its active post neurons are summed */          \
                failed |= fc_rows_backward_##SUFFIX(post + c0, N, counts ? counts + c0 : NULL, row_ptr, cols, \
                                                    counts_in, w + c0 * n_in,                               \
                                                    delta + c0, psp_drive + c0, lam ? lam + c0 : NULL, vth, \
                                                    silent_psp, grad + c0 * n_in, T, n_in, nc, &et, t_ref, \
                                                    window);                                                \
                continue;                                                                                   \
            }                                                                                               \
            size_t steps = SCRATCH(T * nc * sizeof(TYPE)), vec = SCRATCH(nc * sizeof(int64_t));             \
            size_t slice = SCRATCH(n_in * nc * sizeof(TYPE));                                               \
            size_t inputs = SCRATCH(n_in * sizeof(int64_t));                                                \
            if (!scratch_begin(2 * steps + (mode ? 3 : 2) * slice + 15 * vec + SCRATCH(T * nc) + 2 * inputs)) { \
                failed |= 1;                                                                                \
                continue;                                                                                   \
            }                                                                                               \
            TYPE *cm = scratch_take(T * nc * sizeof(TYPE)), *cs = scratch_take(T * nc * sizeof(TYPE));      \
            TYPE *acc = scratch_take(n_in * nc * sizeof(TYPE));                                             \
            TYPE *am = scratch_take(nc * sizeof(TYPE)), *as = scratch_take(nc * sizeof(TYPE));              \
            TYPE *fac_act = scratch_take(nc * sizeof(TYPE)), *td = scratch_take(nc * sizeof(TYPE));         \
            TYPE *fac = scratch_take(nc * sizeof(TYPE)), *dh = scratch_take(nc * sizeof(TYPE));             \
            TYPE *dsil = scratch_take(nc * sizeof(TYPE)), *wsum = scratch_take(nc * sizeof(TYPE));          \
            int64_t *prev = scratch_take(nc * sizeof(int64_t)), *cnt = scratch_take(nc * sizeof(int64_t));  \
            int64_t *lo = scratch_take(nc * sizeof(int64_t));                                               \
            psp_cover cv;                                                                                   \
            int64_t *act = scratch_take(nc * sizeof(int64_t)); /* the post neurons that fired in sample b */ \
            uint8_t *fired = scratch_take(T * nc); /* their spikes, [T, n_act] */                          \
            TYPE *accb = scratch_take(n_in * nc * sizeof(TYPE)); /* sample b's sums, [inputs that fired, n_act] */ \
            TYPE *tgc = scratch_take(nc * sizeof(TYPE)), *full = scratch_take(nc * sizeof(TYPE));          \
            int64_t *in_act = scratch_take(n_in * sizeof(int64_t)), *jmap = scratch_take(n_in * sizeof(int64_t)); \
            TYPE *wt = mode ? scratch_take(n_in * nc * sizeof(TYPE)) : NULL; /* the block's Wᵀ [n_in, nc] */ \
            if (wt) transpose_##SUFFIX(w + c0 * n_in, nc, n_in, wt, nc);                                    \
            int have_wsum = 0;                                                                              \
            TYPE *thr = mode ? sums + 3 * blk * per : NULL, *all = thr ? thr + per : NULL;                  \
            TYPE *sil = all ? all + per : NULL;                                                             \
            memset(acc, 0, (size_t)(n_in * nc) * sizeof(TYPE));                                             \
            for (int64_t b = b0; b < b0 + nb && !failed; b++) {                                             \
                const uint8_t *pb = post + b * N + c0;                                                      \
                post_counts(pb, B * N, T, nc, counts ? counts + b * N + c0 : NULL, cnt);                    \
                int silent = 0;                                                                             \
                for (int64_t i = 0; i < nc; i++) silent |= cnt[i] == 0;                                     \
                if (silent && !have_wsum) { /* Σ_j w_ij, only for the silent post neurons' σ */            \
                    for (int64_t i = 0; i < nc; i++) wsum[i] = sum_##SUFFIX(w + (c0 + i) * n_in, n_in);     \
                    have_wsum = 1;                                                                          \
                }                                                                                           \
                for (int64_t i = 0; i < nc; i++) {                                                          \
                    int64_t bi = b * N + c0 + i;                                                            \
                    dh[i] = delta[bi] / vth;                                                                \
                    fac[i] = layer_factor_##SUFFIX(delta[bi], cnt[i], psp_drive[bi], cnt[i] > 0 ? (TYPE)0 : wsum[i], \
                                                   lam ? lam + bi : NULL, vth);                             \
                    dsil[i] = cnt[i] == 0 ? dh[i] : (TYPE)0;                                                \
                }                                                                                           \
                /* Sample b touches only the rows j of the inputs that fired in it. C̃ is built only for the   \
                 * post neurons that fired (a silent one has none) and summed over the spikes in a compact    \
                 * [inputs that fired, n_act] buffer; each such row then gets, in one pass over the block,    \
                 * those sums and, for the silent post neurons, spec §2's silent_psp·f. */                   \
                int64_t n_act = 0, n_inact = 0;                                                             \
                for (int64_t i = 0; i < nc; i++)                                                            \
                    if (cnt[i] > 0) act[n_act++] = i;                                                       \
                const int64_t *cin = counts_in + b * n_in;                                                  \
                for (int64_t j = 0; j < n_in; j++)                                                          \
                    if (cin[j] > 0) { jmap[j] = n_inact; in_act[n_inact++] = j; }                           \
                TYPE *ob = mode == 2 ? thr + b * n_in : NULL;                                               \
                if (ob) memset(ob, 0, (size_t)n_in * sizeof(TYPE));                                         \
                if (n_act > 0 && n_inact > 0) {                                                             \
                    gather_columns(pb, B * N, T, act, n_act, fired);                                        \
                    psp_scatter_##SUFFIX(fired, n_act, T, n_act, &et, t_ref, window, cm, cs, prev);         \
                    cover_init(&cv, fired, n_act, T, t_ref, window, lo, n_act);                             \
                    memset(accb, 0, (size_t)(n_inact * n_act) * sizeof(TYPE));                              \
                    if (ob) for (int64_t i = 0; i < nc; i++) td[i] = 0;                                     \
                    for (int64_t a = 0; a < n_act; a++) { am[a] = 0; as[a] = 0; fac_act[a] = fac[act[a]]; } \
                    for (int64_t t = T - 1; t >= 0; t--) {                                                  \
                        filter_step_##SUFFIX(am, as, cm + t * n_act, cs + t * n_act, n_act, dm, ds, &cv, t); \
                        int64_t r = t * B + b;                                                              \
                        if (row_ptr[r] == row_ptr[r + 1]) continue;                                         \
                        for (int64_t a = 0; a < n_act; a++) tgc[a] = (am[a] + as[a]) * fac_act[a];          \
                        if (ob)                                                                             \
                            for (int64_t a = 0; a < n_act; a++) td[act[a]] = (am[a] + as[a]) * dh[act[a]];  \
                        for (int64_t k = row_ptr[r]; k < row_ptr[r + 1]; k++) {                             \
                            int64_t j = cols[k];                                                            \
                            TYPE *aj = accb + jmap[j] * n_act;                                              \
                            for (int64_t a = 0; a < n_act; a++) aj[a] += tgc[a];                            \
                            if (ob) ob[j] += dot_##SUFFIX(td, wt + j * nc, nc);                             \
                        }                                                                                   \
                    }                                                                                       \
                }                                                                                           \
                if (n_inact > 0) {                                                                          \
                    for (int64_t i = 0; i < nc; i++) full[i] = cnt[i] == 0 ? silent_psp * fac[i] : (TYPE)0; \
                    for (int64_t jj = 0; jj < n_inact; jj++) {                                              \
                        const TYPE *src = accb + jj * n_act;                                                \
                        for (int64_t a = 0; a < n_act; a++) full[act[a]] = src[a];                          \
                        TYPE *row = acc + in_act[jj] * nc;                                                  \
                        for (int64_t i = 0; i < nc; i++) row[i] += full[i];                                 \
                    }                                                                                       \
                }                                                                                           \
                if (mode)                                                                                   \
                    for (int64_t j = 0; j < n_in; j++) {                                                    \
                        all[b * n_in + j] = dot_##SUFFIX(dh, wt + j * nc, nc);                              \
                        sil[b * n_in + j] = silent ? dot_##SUFFIX(dsil, wt + j * nc, nc) : (TYPE)0;         \
                    }                                                                                       \
            }                                                                                               \
            if (!failed) /* the block's rows of grad (or of its group's partial copy) */                   \
                transpose_##SUFFIX(acc, n_in, nc, (grp == 0 ? grad : part + (grp - 1) * size) + c0 * n_in, n_in); \
        }                                                                                                   \
        for (int64_t g = 1; g < n_groups && !failed; g++) {                                                 \
            const TYPE *p = part + (g - 1) * size;                                                          \
            for (int64_t i = 0; i < size; i++) grad[i] += p[i];                                             \
        }                                                                                                   \
        if (mode && !failed)                                                                                \
            for (int64_t x = 0; x < per; x++) {                                                             \
                TYPE th = 0, al = 0, si = 0;                                                                \
                for (int64_t blk = 0; blk < n_blocks; blk++) {                                              \
                    const TYPE *s3 = sums + 3 * blk * per;                                                  \
                    if (mode == 2) th += s3[x];                                                             \
                    al += s3[per + x];                                                                      \
                    si += s3[2 * per + x];                                                                  \
                }                                                                                           \
                below[x] = mode == 2 && counts_in[x] > 0 ? th / (TYPE)counts_in[x] + si : al;               \
            }                                                                                               \
        free(part); free(sums); free(et.mem);                                                               \
        return failed ? -1 : 0;                                                                             \
    }
FC_BACKWARD(f32, float)
FC_BACKWARD(f64, double)

/* CSR index of the nonzero entries of a spike matrix S [R, N] (rows r = t·B + b), plus per-sample
 * counts [B, N], in one pass over S (at long windows S is tens of MB and reading it is most of the
 * cost). Each thread scans a contiguous range of rows, appends their column indices to its own buffer
 * and counts the spikes of its rows per sample; the row lengths become row_ptr [R+1] and the counts are
 * added up. The caller then allocates cols [nnz] and calls hm2bp_spike_index_take, which copies each
 * thread's buffer into place (one memcpy per thread: its rows are contiguous) and frees the buffers.
 * Returns nnz with *handle set, or (float input) -1 when S holds NaN/inf, -2 when it holds values other
 * than 0 and 1 (graded input: the dense path takes it), -3 without memory, -4 when there are more than
 * max_nnz spikes (≥ 0; the dense path is then cheaper); *handle is then NULL. The scan stops early in the
 * last three cases, so that a dense or graded input never gets a large index built. */
typedef struct { int nt; int32_t **buf; int64_t *first_row, *n_rows; } index_parts;

static void index_parts_free(index_parts *ip) {
    if (!ip) return;
    if (ip->buf)
        for (int k = 0; k < ip->nt; k++) free(ip->buf[k]);
    free(ip->buf); free(ip->first_row); free(ip->n_rows); free(ip);
}

void hm2bp_spike_index_take(void *handle, const int64_t *row_ptr, int32_t *cols) {
    index_parts *ip = handle;
    if (ip && cols) {
        _Pragma("omp parallel for num_threads(ip->nt) schedule(static)")
        for (int k = 0; k < ip->nt; k++) {
            int64_t r0 = ip->first_row[k], r1 = r0 + ip->n_rows[k];
            if (r1 > r0) memcpy(cols + row_ptr[r0], ip->buf[k], (size_t)(row_ptr[r1] - row_ptr[r0]) * sizeof(int32_t));
        }
    }
    index_parts_free(ip);
}

#define SPIKE_INDEX(SUFFIX, TYPE, CHECK_VALUES)                                                     \
    int64_t hm2bp_spike_index_##SUFFIX(const TYPE *s, int64_t R, int64_t N, int64_t B, int64_t *row_ptr, \
                                       int64_t *counts, int64_t max_nnz, void **handle, int32_t n_threads) { \
        *handle = NULL;                                                                            \
        int nt = n_threads > 0 ? n_threads : 1;                                                    \
        int64_t T = B > 0 ? R / B : 0;                                                             \
        if (T < nt) nt = T > 0 ? (int)T : 1;                                                       \
        index_parts *ip = calloc(1, sizeof(index_parts));                                          \
        int32_t *local = malloc((size_t)(nt * B * N) * sizeof(int32_t) + 1); /* per-thread counts */ \
        if (ip) {                                                                                  \
            ip->nt = nt;                                                                           \
            ip->buf = calloc((size_t)nt, sizeof(int32_t *));                                       \
            ip->first_row = malloc((size_t)nt * sizeof(int64_t));                                  \
            ip->n_rows = malloc((size_t)nt * sizeof(int64_t));                                     \
        }                                                                                          \
        if (!ip || !local || !ip->buf || !ip->first_row || !ip->n_rows) {                          \
            index_parts_free(ip); free(local); return -3;                                          \
        }                                                                                          \
        int odd = 0, failed = 0, stop = 0;                                                         \
        int64_t total = 0;                                                                         \
        _Pragma("omp parallel for num_threads(nt) schedule(static) reduction(| : odd, failed)")    \
        for (int k = 0; k < nt; k++) {                                                             \
            int64_t t0, nt_k = block_bounds(T, nt, k, &t0);                                        \
            int64_t r0 = t0 * B, r1 = (t0 + nt_k) * B;                                             \
            int32_t *cnt = local + k * B * N;                                                      \
            memset(cnt, 0, (size_t)(B * N) * sizeof(int32_t));                                     \
            ip->first_row[k] = r0;                                                                 \
            ip->n_rows[k] = r1 - r0;                                                               \
            int64_t cap = 1024, n = 0;                                                             \
            int32_t *buf = malloc((size_t)cap * sizeof(int32_t));                                  \
            int o = 0;                                                                             \
            for (int64_t r = r0; r < r1 && buf && !__atomic_load_n(&stop, __ATOMIC_RELAXED); r++) { \
                const TYPE *sr = s + r * N;                                                        \
                int32_t *cb = cnt + (r % B) * N;                                                   \
                if (n + N > cap) { /* room for a full row */                                       \
                    while (n + N > cap) cap *= 2;                                                  \
                    int32_t *grown = realloc(buf, (size_t)cap * sizeof(int32_t));                  \
                    if (!grown) { free(buf); buf = NULL; break; }                                  \
                    buf = grown;                                                                   \
                }                                                                                  \
                int64_t start = n, j0 = 0;                                                         \
                for (; j0 + 16 <= N; j0 += 16) {                                                   \
                    int any = 0;                                                                   \
                    for (int i = 0; i < 16; i++) any |= sr[j0 + i] != 0;                           \
                    if (!any) continue;                                                            \
                    for (int i = 0; i < 16; i++)                                                   \
                        if (sr[j0 + i] != 0) {                                                     \
                            if (CHECK_VALUES) o |= sr[j0 + i] != 1;                                \
                            buf[n++] = (int32_t)(j0 + i);                                          \
                            cb[j0 + i]++;                                                          \
                        }                                                                          \
                }                                                                                  \
                for (int64_t j = j0; j < N; j++)                                                   \
                    if (sr[j] != 0) {                                                              \
                        if (CHECK_VALUES) o |= sr[j] != 1;                                         \
                        buf[n++] = (int32_t)j;                                                     \
                        cb[j]++;                                                                   \
                    }                                                                              \
                row_ptr[r + 1] = n - start;                                                        \
                if (o || (max_nnz >= 0 && __atomic_add_fetch(&total, n - start, __ATOMIC_RELAXED) > max_nnz)) { \
                    __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);                                  \
                    break;                                                                         \
                }                                                                                  \
            }                                                                                      \
            ip->buf[k] = buf;                                                                      \
            failed |= buf == NULL;                                                                 \
            odd |= o;                                                                              \
        }                                                                                          \
        if (failed || odd || stop) {                                                               \
            index_parts_free(ip); free(local);                                                     \
            if (failed) return -3;                                                                 \
            if (!odd) return -4;                                                                   \
            for (int64_t i = 0; i < R * N; i++) /* rare: tell NaN/inf from graded values */        \
                if (s[i] != s[i] || s[i] - s[i] != 0) return -1;                                   \
            return -2;                                                                             \
        }                                                                                          \
        row_ptr[0] = 0;                                                                            \
        for (int64_t r = 0; r < R; r++) row_ptr[r + 1] += row_ptr[r];                              \
        int64_t BN = B * N;                                                                        \
        _Pragma("omp parallel for num_threads(nt) schedule(static)")                               \
        for (int64_t i = 0; i < BN; i++) {                                                         \
            int64_t c = 0;                                                                         \
            for (int k = 0; k < nt; k++) c += local[k * BN + i];                                   \
            counts[i] = c;                                                                         \
        }                                                                                          \
        free(local);                                                                               \
        *handle = ip;                                                                              \
        return row_ptr[R];                                                                         \
    }
SPIKE_INDEX(f32, float, 1)
SPIKE_INDEX(u8, uint8_t, 0)
