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
        float *v = calloc((size_t)nc, sizeof(float));
        float *x = calloc((size_t)nc, sizeof(float));
        int32_t *r = calloc((size_t)nc, sizeof(int32_t));
        float *cur = lateral ? malloc((size_t)nc * sizeof(float)) : NULL;
        if (!v || !x || !r || (lateral && !cur)) { failed |= 1; free(v); free(x); free(r); free(cur); continue; }
        for (int64_t t = 1; t < T; t++) {
            const float *d = drive + (t - 1) * M + c0;
            if (lateral) {
                const float *prev = out + (t - 1) * M + c0;
                for (int64_t g = 0; g < ng; g++) add_lateral(d + g * N, lateral, prev + g * N, cur + g * N, N);
                d = cur;
            }
            lif_step(v, x, r, d, out + t * M + c0, nc, tau_m, tau_s, t_ref, theta);
        }
        free(v); free(x); free(r); free(cur);
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

/* Per-spike S-PSP coefficients (spec §2, design.md §2; derivation in functional/psp.py) of nc columns:
 * post[t * stride + k] is the 0/1 spike of column k at step t. cm/cs [T, nc] receive the τ_m and τ_s
 * coefficients (computed in double, stored as TYPE); a backward filter in time turns them into C̃. */
#define PSP_SCATTER(SUFFIX, TYPE)                                                                   \
    static void psp_scatter_##SUFFIX(const uint8_t *post, int64_t stride, int64_t T, int64_t nc,     \
                                     double tau_m, double tau_s, int32_t t_ref, int64_t window,      \
                                     TYPE *cm, TYPE *cs, int64_t *prev) {                            \
        double c = 1.0 / (1.0 - tau_s / tau_m);                                                     \
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
                    double span = (double)(a - a0 + 1);                                             \
                    cm[a * nc + k] += (TYPE)c;                                                      \
                    cm[(a0 - 1) * nc + k] += (TYPE)(-c * exp(-span / tau_m));                       \
                    cs[a * nc + k] += (TYPE)(-c);                                                   \
                    cs[(a0 - 1) * nc + k] += (TYPE)(c * exp(-span / tau_s));                        \
                }                                                                                   \
                if (p >= 0) { /* case B: pre spikes before the previous post spike (reset branch) */ \
                    int64_t hi = p - 1 < a ? p - 1 : a;                                             \
                    if (hi >= lo) {                                                                 \
                        double sk = (double)(t - p - t_ref);                                        \
                        double eps = c * (exp(-sk / tau_m) - exp(-sk / tau_s));                     \
                        cs[hi * nc + k] += (TYPE)(eps * exp(-(double)(p - hi) / tau_s));            \
                        cs[(lo - 1) * nc + k] += (TYPE)(-eps * exp(-(double)(p - lo + 1) / tau_s)); \
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
        int failed = 0;                                                                            \
        _Pragma("omp parallel for num_threads(n_threads > 0 ? n_threads : 1) schedule(dynamic, 4) reduction(| : failed)") \
        for (int64_t blk = 0; blk < n_blocks; blk++) {                                             \
            int64_t c0 = blk * PSP_BLOCK, nc = M - c0 < PSP_BLOCK ? M - c0 : PSP_BLOCK;            \
            TYPE *cm = malloc((size_t)(T * nc) * sizeof(TYPE));                                    \
            TYPE *cs = malloc((size_t)(T * nc) * sizeof(TYPE));                                    \
            if (!cm || !cs) { failed |= 1; free(cm); free(cs); continue; }                         \
            int64_t prev[PSP_BLOCK];                                                               \
            TYPE am[PSP_BLOCK], as[PSP_BLOCK];                                                     \
            psp_scatter_##SUFFIX(post + c0, M, T, nc, tau_m, tau_s, t_ref, window, cm, cs, prev);   \
            for (int64_t k = 0; k < nc; k++) { am[k] = 0; as[k] = 0; }                             \
            for (int64_t t = T - 1; t >= 0; t--) {                                                 \
                TYPE *o = out + t * M + c0;                                                        \
                for (int64_t k = 0; k < nc; k++) {                                                 \
                    am[k] = am[k] * dm + cm[t * nc + k];                                           \
                    as[k] = as[k] * ds + cs[t * nc + k];                                           \
                    o[k] = am[k] + as[k];                                                          \
                }                                                                                  \
            }                                                                                      \
            free(cm); free(cs);                                                                    \
        }                                                                                          \
        return failed ? -1 : 0;                                                                    \
    }
PSP_COEFFS(f32, float)
PSP_COEFFS(f64, double)

/* ----------------------------------------------------------------------------------------------
 * Event-driven fully connected layer. The input spikes S [R = T·B rows (r = t·B + b), N_in] are a CSR
 * index (row_ptr, cols); W is passed transposed, wt = Wᵀ [N_in, N], so that every input spike touches
 * one contiguous row of weights. Without lateral coupling the N neurons are independent, so the work is
 * split into blocks of at most FC_BLOCK neurons, block-major: the block's slice of Wᵀ (and of the
 * gradient) stays in the cache while every sample and step goes through it, and every buffer is
 * [T, block] at most, so no [T, B, N] float tensor (drive, C̃) is ever formed.
 * ---------------------------------------------------------------------------------------------- */
#ifndef FC_BLOCK
#define FC_BLOCK 64
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
 * spikes. Returns 0, or -1 without memory. */
int hm2bp_fc_forward_f32(const int64_t *row_ptr, const int32_t *cols, const float *wt, int64_t T, int64_t B,
                         int64_t N, float tau_m, float tau_s, int32_t t_ref, float theta, const float *lateral,
                         float *out, uint8_t *out_u8, int32_t *counts, double *psp_drive, double psp_tau_m,
                         double psp_tau_s, int64_t window, int32_t n_threads) {
    int keep = out_u8 && counts && psp_drive;
    if (!out && !out_u8) return 0;
    int64_t nt = n_threads > 0 ? n_threads : 1;
    int64_t blk = fc_block(N, lateral != NULL, nt);
    int64_t n_blocks = (N + blk - 1) / blk;
    int failed = 0;
    double dm = exp(-1.0 / psp_tau_m), ds = exp(-1.0 / psp_tau_s);
#pragma omp parallel num_threads(nt) reduction(| : failed)
    {
        float *v = malloc((size_t)blk * sizeof(float)), *x = malloc((size_t)blk * sizeof(float));
        int32_t *r = malloc((size_t)blk * sizeof(int32_t));
        float *cur = lateral ? malloc((size_t)blk * sizeof(float)) : NULL;
        float *o = malloc((size_t)blk * sizeof(float));
        float *drive = malloc((size_t)((keep ? T : 1) * blk) * sizeof(float));
        double *cm = keep ? malloc((size_t)(T * blk) * sizeof(double)) : NULL;
        double *cs = keep ? malloc((size_t)(T * blk) * sizeof(double)) : NULL;
        double *am = malloc((size_t)blk * sizeof(double)), *as = malloc((size_t)blk * sizeof(double));
        int64_t *prev = malloc((size_t)blk * sizeof(int64_t));
        int ok = v && x && r && o && drive && am && as && prev && (!lateral || cur) && (!keep || (cm && cs));
        if (!ok) failed |= 1;
#pragma omp for collapse(2) schedule(static)
        for (int64_t cb = 0; cb < n_blocks; cb++) {
            for (int64_t b = 0; b < B; b++) {
                if (!ok) continue;
                int64_t c0 = cb * blk, nc = N - c0 < blk ? N - c0 : blk;
                int64_t base = b * N + c0, stride = B * N;
                memset(v, 0, (size_t)nc * sizeof(float));
                memset(x, 0, (size_t)nc * sizeof(float));
                memset(r, 0, (size_t)nc * sizeof(int32_t));
                memset(o, 0, (size_t)nc * sizeof(float));
                if (T > 0 && out) memset(out + base, 0, (size_t)nc * sizeof(float));
                if (T > 0 && out_u8) memset(out_u8 + base, 0, (size_t)nc);
                for (int64_t t = 1; t < T; t++) {
                    float *d = drive + (keep ? (t - 1) * nc : 0);
                    row_sum_f32(row_ptr, cols, wt + c0, N, (t - 1) * B + b, nc, d);
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
                if (T > 0) row_sum_f32(row_ptr, cols, wt + c0, N, (T - 1) * B + b, nc, drive + (T - 1) * nc);
                psp_scatter_f64(out_u8 + base, stride, T, nc, psp_tau_m, psp_tau_s, t_ref, window, cm, cs, prev);
                double *acc = psp_drive + base;
                for (int64_t k = 0; k < nc; k++) { am[k] = 0; as[k] = 0; acc[k] = 0; }
                for (int64_t t = T - 1; t >= 0; t--) {
                    const float *d = drive + t * nc;
                    for (int64_t k = 0; k < nc; k++) {
                        am[k] = am[k] * dm + cm[t * nc + k];
                        as[k] = as[k] * ds + cs[t * nc + k];
                        acc[k] += (am[k] + as[k]) * (double)d[k];
                    }
                }
            }
        }
        free(v); free(x); free(r); free(cur); free(o); free(drive); free(cm); free(cs); free(am); free(as);
        free(prev);
    }
    return failed ? -1 : 0;
}

/* Backward of the event-driven FC layer, for post spikes post [T, B, N] (uint8; for an output layer after
 * the spike insertion of spec §3.2). C̃ of each sample is rebuilt from its spikes (a scatter and one
 * backward filter in time, O(T·N)) and contracted with the input spikes on the fly, step by step. */
#define FC_BACKWARD(SUFFIX, TYPE)                                                                   \
    /* out[b, i] = Σ_t C̃_bi(t) · Σ_{j ∈ row t·B+b} wt[j, i]   (σ's numerator, when the forward's is stale) */ \
    int hm2bp_fc_psp_drive_##SUFFIX(const uint8_t *post, const int64_t *row_ptr, const int32_t *cols,       \
                                    const TYPE *wt, TYPE *out, int64_t T, int64_t B, int64_t N,             \
                                    double tau_m, double tau_s, int32_t t_ref, int64_t window,              \
                                    int32_t n_threads) {                                                    \
        TYPE dm = (TYPE)exp(-1.0 / tau_m), ds = (TYPE)exp(-1.0 / tau_s);                                    \
        int failed = 0;                                                                                     \
        _Pragma("omp parallel num_threads(n_threads > 0 ? n_threads : 1) reduction(| : failed)")            \
        {                                                                                                   \
            TYPE *cm = malloc((size_t)(T * N) * sizeof(TYPE)), *cs = malloc((size_t)(T * N) * sizeof(TYPE)); \
            TYPE *am = malloc((size_t)N * sizeof(TYPE)), *as = malloc((size_t)N * sizeof(TYPE));            \
            TYPE *ct = malloc((size_t)N * sizeof(TYPE));                                                    \
            int64_t *prev = malloc((size_t)N * sizeof(int64_t));                                            \
            int ok = cm && cs && am && as && ct && prev;                                                    \
            if (!ok) failed |= 1;                                                                           \
            _Pragma("omp for schedule(static)")                                                             \
            for (int64_t b = 0; b < B; b++) {                                                               \
                if (!ok) continue;                                                                          \
                psp_scatter_##SUFFIX(post + b * N, B * N, T, N, tau_m, tau_s, t_ref, window, cm, cs, prev); \
                TYPE *o = out + b * N;                                                                      \
                for (int64_t i = 0; i < N; i++) { am[i] = 0; as[i] = 0; o[i] = 0; }                         \
                for (int64_t t = T - 1; t >= 0; t--) {                                                      \
                    for (int64_t i = 0; i < N; i++) {                                                       \
                        am[i] = am[i] * dm + cm[t * N + i];                                                 \
                        as[i] = as[i] * ds + cs[t * N + i];                                                 \
                        ct[i] = am[i] + as[i];                                                              \
                    }                                                                                       \
                    int64_t r = t * B + b;                                                                  \
                    for (int64_t k = row_ptr[r]; k < row_ptr[r + 1]; k++) {                                 \
                        const TYPE *w = wt + (int64_t)cols[k] * N;                                          \
                        for (int64_t i = 0; i < N; i++) o[i] += ct[i] * w[i];                               \
                    }                                                                                       \
                }                                                                                           \
            }                                                                                               \
            free(cm); free(cs); free(am); free(as); free(ct); free(prev);                                   \
        }                                                                                                   \
        return failed ? -1 : 0;                                                                             \
    }                                                                                                       \
    /* grad_t[j, i] = Σ_b Σ_t Σ_{spikes (t·B+b, j)} C̃_bi(t)·factor[b, i]   (Wᵀ layout, zeroed by the caller) \
     * through[b, j] = Σ_t Σ_{spikes (t·B+b, j)} Σ_i C̃_bi(t)·dhat[b, i]·wt[j, i]   (only when dhat != NULL) \
     * Each thread owns a contiguous block of samples and, but the first, a private gradient buffer that  \
     * is added in thread order at the end (the result does not depend on scheduling). */                 \
    int hm2bp_fc_psp_grads_##SUFFIX(const uint8_t *post, const int64_t *row_ptr, const int32_t *cols,       \
                                    const TYPE *wt, const TYPE *factor, const TYPE *dhat, TYPE *grad_t,     \
                                    TYPE *through, int64_t T, int64_t B, int64_t n_in, int64_t N,           \
                                    double tau_m, double tau_s, int32_t t_ref, int64_t window,              \
                                    int32_t n_threads) {                                                    \
        TYPE dm = (TYPE)exp(-1.0 / tau_m), ds = (TYPE)exp(-1.0 / tau_s);                                    \
        int64_t nt = n_threads > 0 ? n_threads : 1;                                                         \
        if (nt > B) nt = B > 0 ? B : 1;                                                                     \
        int64_t size = n_in * N;                                                                            \
        TYPE *priv = nt > 1 ? calloc((size_t)((nt - 1) * size), sizeof(TYPE)) : NULL;                      \
        if (nt > 1 && !priv) return -1;                                                                     \
        int failed = 0;                                                                                     \
        _Pragma("omp parallel for num_threads(nt) schedule(static) reduction(| : failed)")                  \
        for (int64_t blk = 0; blk < nt; blk++) {                                                            \
            TYPE *cm = malloc((size_t)(T * N) * sizeof(TYPE)), *cs = malloc((size_t)(T * N) * sizeof(TYPE)); \
            TYPE *am = malloc((size_t)N * sizeof(TYPE)), *as = malloc((size_t)N * sizeof(TYPE));            \
            TYPE *tg = malloc((size_t)N * sizeof(TYPE)), *td = malloc((size_t)N * sizeof(TYPE));            \
            int64_t *prev = malloc((size_t)N * sizeof(int64_t));                                            \
            if (!(cm && cs && am && as && tg && td && prev)) failed |= 1;                                   \
            else {                                                                                          \
                TYPE *g = blk == 0 ? grad_t : priv + (blk - 1) * size;                                      \
                int64_t b0;                                                                                 \
                int64_t nb = block_bounds(B, nt, blk, &b0);                                                 \
                for (int64_t b = b0; b < b0 + nb; b++) {                                                    \
                    psp_scatter_##SUFFIX(post + b * N, B * N, T, N, tau_m, tau_s, t_ref, window, cm, cs, prev); \
                    const TYPE *fb = factor + b * N, *db = dhat ? dhat + b * N : NULL;                      \
                    TYPE *ob = through ? through + b * n_in : NULL;                                         \
                    for (int64_t i = 0; i < N; i++) { am[i] = 0; as[i] = 0; }                               \
                    for (int64_t t = T - 1; t >= 0; t--) {                                                  \
                        for (int64_t i = 0; i < N; i++) {                                                   \
                            am[i] = am[i] * dm + cm[t * N + i];                                             \
                            as[i] = as[i] * ds + cs[t * N + i];                                             \
                        }                                                                                   \
                        int64_t r = t * B + b;                                                              \
                        if (row_ptr[r] == row_ptr[r + 1]) continue;                                         \
                        for (int64_t i = 0; i < N; i++) tg[i] = (am[i] + as[i]) * fb[i];                    \
                        if (db)                                                                             \
                            for (int64_t i = 0; i < N; i++) td[i] = (am[i] + as[i]) * db[i];                \
                        for (int64_t k = row_ptr[r]; k < row_ptr[r + 1]; k++) {                             \
                            int64_t j = cols[k];                                                            \
                            TYPE *gj = g + j * N;                                                           \
                            for (int64_t i = 0; i < N; i++) gj[i] += tg[i];                                 \
                            if (db) ob[j] += dot_##SUFFIX(td, wt + j * N, N);                               \
                        }                                                                                   \
                    }                                                                                       \
                }                                                                                           \
            }                                                                                               \
            free(cm); free(cs); free(am); free(as); free(tg); free(td); free(prev);                         \
        }                                                                                                   \
        for (int64_t blk = 1; blk < nt && !failed; blk++) {                                                 \
            const TYPE *p = priv + (blk - 1) * size;                                                        \
            for (int64_t i = 0; i < size; i++) grad_t[i] += p[i];                                           \
        }                                                                                                   \
        free(priv);                                                                                         \
        return failed ? -1 : 0;                                                                             \
    }
FC_BACKWARD(f32, float)
FC_BACKWARD(f64, double)

/* CSR index of the nonzero entries of a spike matrix S [R, N] (rows r = t·B + b), plus per-sample
 * counts [B, N]. A first call with cols == NULL fills row_ptr [R+1] and returns nnz, or (float input)
 * -1 when S holds NaN/inf, or -2 when it holds values other than 0 and 1 (graded input: the dense path
 * takes it). The second call fills cols [nnz] and counts. Both passes run in parallel and scan the
 * (mostly zero) rows without branches, 16 entries at a time. */
#define SPIKE_INDEX(SUFFIX, TYPE, CHECK_VALUES)                                                     \
    int64_t hm2bp_spike_index_##SUFFIX(const TYPE *s, int64_t R, int64_t N, int64_t B, int64_t *row_ptr, \
                                       int32_t *cols, int64_t *counts, int32_t n_threads) {        \
        int nt = n_threads > 0 ? n_threads : 1;                                                    \
        if (!cols) {                                                                               \
            int odd = 0;                                                                           \
            _Pragma("omp parallel for num_threads(nt) schedule(static) reduction(| : odd)")        \
            for (int64_t r = 0; r < R; r++) {                                                      \
                const TYPE *sr = s + r * N;                                                        \
                int64_t n = 0;                                                                     \
                int o = 0;                                                                         \
                for (int64_t j = 0; j < N; j++) {                                                  \
                    n += sr[j] != 0;                                                               \
                    if (CHECK_VALUES) o |= (sr[j] != 0) & (sr[j] != 1);                            \
                }                                                                                  \
                row_ptr[r + 1] = n;                                                                \
                odd |= o;                                                                          \
            }                                                                                      \
            if (odd) { /* rare: tell NaN/inf from graded values */                                 \
                for (int64_t i = 0; i < R * N; i++)                                                \
                    if (s[i] != s[i] || s[i] - s[i] != 0) return -1;                               \
                return -2;                                                                         \
            }                                                                                      \
            row_ptr[0] = 0;                                                                        \
            for (int64_t r = 0; r < R; r++) row_ptr[r + 1] += row_ptr[r];                          \
            return row_ptr[R];                                                                     \
        }                                                                                          \
        int64_t T = B > 0 ? R / B : 0;                                                             \
        _Pragma("omp parallel for num_threads(nt) schedule(static)")                               \
        for (int64_t b = 0; b < B; b++) {                                                          \
            int64_t *cb = counts + b * N;                                                          \
            memset(cb, 0, (size_t)N * sizeof(int64_t));                                            \
            for (int64_t t = 0; t < T; t++) {                                                      \
                int64_t r = t * B + b;                                                             \
                const TYPE *sr = s + r * N;                                                        \
                int64_t k = row_ptr[r];                                                            \
                int64_t j0 = 0;                                                                    \
                for (; j0 + 16 <= N; j0 += 16) {                                                   \
                    int any = 0;                                                                   \
                    for (int i = 0; i < 16; i++) any |= sr[j0 + i] != 0;                           \
                    if (!any) continue;                                                            \
                    for (int i = 0; i < 16; i++)                                                   \
                        if (sr[j0 + i] != 0) { cols[k++] = (int32_t)(j0 + i); cb[j0 + i]++; }      \
                }                                                                                  \
                for (int64_t j = j0; j < N; j++)                                                   \
                    if (sr[j] != 0) { cols[k++] = (int32_t)j; cb[j]++; }                           \
            }                                                                                      \
        }                                                                                          \
        return row_ptr[R];                                                                         \
    }
SPIKE_INDEX(f32, float, 1)
SPIKE_INDEX(u8, uint8_t, 0)
