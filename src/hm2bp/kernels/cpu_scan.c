/* Compiled CPU kernels for hm2bp: the LIF scan of spec §1.1 and the backward S-PSP filter.
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
        if (!v || !x || !r) { failed |= 1; free(v); free(x); free(r); continue; }
        for (int64_t t = 1; t < T; t++) {
            const float *d = drive + (t - 1) * M + c0;
            const float *prev = out + (t - 1) * M + c0;
            float *o = out + t * M + c0;
            for (int64_t c = 0; c < nc; c++) {
                float vv = v[c], xx = x[c];
                vv = vv - vv / tau_m;
                xx = xx - xx / tau_s;
                float current = d[c];
                if (lateral) {
                    const float *row = lateral + (c % N) * N;
                    const float *ps = prev + (c / N) * N;
                    float lat = 0.0f;
                    for (int64_t l = 0; l < N; l++) lat += row[l] * ps[l];
                    current = current + lat;
                }
                xx = xx + current;
                vv = vv + xx / tau_s;
                if (r[c] > 0) { vv = 0.0f; r[c] -= 1; }
                if (vv > theta) { o[c] = 1.0f; r[c] = t_ref; vv = 0.0f; }
                v[c] = vv; x[c] = xx;
            }
        }
        free(v); free(x); free(r);
    }
    return failed ? -1 : 0;
}


/* Event-driven products with a binary spike matrix S [R rows = (t, b), N_in columns], given as CSR
 * (row_ptr, cols). W is passed transposed, wt = Wᵀ [N_in, N_out], so that
 * every spike touches one contiguous row of N_out weights. */
#define EVENT_KERNELS(SUFFIX, TYPE)                                                                  \
    /* out[r, :] = Σ_{j ∈ row r} wt[j, :]   (the forward drive W·s) */                               \
    void hm2bp_event_drive_##SUFFIX(const int64_t *row_ptr, const int64_t *cols, const TYPE *wt,     \
                                    TYPE *out, int64_t R, int64_t n_out, int32_t n_threads) {        \
        _Pragma("omp parallel for num_threads(n_threads > 0 ? n_threads : 1) schedule(static)")       \
        for (int64_t r = 0; r < R; r++) {                                                            \
            TYPE *o = out + r * n_out;                                                               \
            for (int64_t k = row_ptr[r]; k < row_ptr[r + 1]; k++) {                                   \
                const TYPE *w = wt + cols[k] * n_out;                                                \
                for (int64_t i = 0; i < n_out; i++) o[i] += w[i];                                    \
            }                                                                                        \
        }                                                                                            \
    }

EVENT_KERNELS(f32, float)
EVENT_KERNELS(f64, double)

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

/* Scaled event-driven products for the HM2-BP backward pass; scale is [B, n_out] (row r belongs to
 * sample r mod B), so that δ̂·(1+σ)·Λ never has to be multiplied into a [T, B, n_out] copy. */
#define SCALED_EVENT_KERNELS(SUFFIX, TYPE)                                                          \
    /* gt[j, :] = Σ_{spikes (r, j)} c[r, :] ⊙ scale[r mod B, :] */                                  \
    void hm2bp_event_outer_scaled_##SUFFIX(const int64_t *row_ptr, const int64_t *cols,            \
                                           const TYPE *c, const TYPE *scale, TYPE *gt, int64_t R,  \
                                           int64_t n_in, int64_t n_out, int64_t B,                 \
                                           int32_t n_threads) {                                    \
        int64_t nt = n_threads > 0 ? n_threads : 1;                                                \
        int64_t size = n_in * n_out;                                                               \
        TYPE *priv = nt > 1 ? calloc((size_t)((nt - 1) * size), sizeof(TYPE)) : NULL;             \
        if (nt > 1 && !priv) nt = 1;                                                               \
        _Pragma("omp parallel num_threads(nt)")                                                     \
        {                                                                                          \
            TYPE *tmp = malloc((size_t)n_out * sizeof(TYPE));                                      \
            _Pragma("omp for schedule(static)")                                                     \
            for (int64_t b = 0; b < nt; b++) {                                                     \
                int64_t r0;                                                                        \
                int64_t nr = block_bounds(R, nt, b, &r0);                                          \
                TYPE *g = b == 0 ? gt : priv + (b - 1) * size;                                     \
                for (int64_t r = r0; r < r0 + nr && tmp; r++) {                                    \
                    if (row_ptr[r] == row_ptr[r + 1]) continue;                                    \
                    const TYPE *cr = c + r * n_out, *sr = scale + (r % B) * n_out;                 \
                    for (int64_t i = 0; i < n_out; i++) tmp[i] = cr[i] * sr[i];                    \
                    for (int64_t k = row_ptr[r]; k < row_ptr[r + 1]; k++) {                         \
                        TYPE *gj = g + cols[k] * n_out;                                            \
                        for (int64_t i = 0; i < n_out; i++) gj[i] += tmp[i];                       \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
            free(tmp);                                                                             \
        }                                                                                          \
        for (int64_t b = 1; b < nt; b++) {                                                         \
            const TYPE *p = priv + (b - 1) * size;                                                 \
            for (int64_t i = 0; i < size; i++) gt[i] += p[i];                                      \
        }                                                                                          \
        free(priv);                                                                                \
    }                                                                                              \
    /* out[b, j] += Σ_i c[r, i]·scale[b, i]·wt[j, i] for every spike (r, j), b = r mod B. Samples   \
     * are spread over the threads; each row's scaled coefficients are formed once. */              \
    void hm2bp_event_dot_scaled_##SUFFIX(const int64_t *row_ptr, const int64_t *cols,              \
                                         const TYPE *c, const TYPE *scale, const TYPE *wt,         \
                                         TYPE *out, int64_t T, int64_t n_in, int64_t n_out,        \
                                         int64_t B, int32_t n_threads) {                           \
        _Pragma("omp parallel num_threads(n_threads > 0 ? n_threads : 1)")                          \
        {                                                                                          \
            TYPE *tmp = malloc((size_t)n_out * sizeof(TYPE));                                      \
            _Pragma("omp for schedule(dynamic, 1)")                                                 \
            for (int64_t b = 0; b < B; b++) {                                                      \
                const TYPE *sb = scale + b * n_out;                                                \
                TYPE *ob = out + b * n_in;                                                         \
                for (int64_t t = 0; t < T && tmp; t++) {                                           \
                    int64_t r = t * B + b;                                                         \
                    if (row_ptr[r] == row_ptr[r + 1]) continue;                                    \
                    const TYPE *cr = c + r * n_out;                                                \
                    for (int64_t i = 0; i < n_out; i++) tmp[i] = cr[i] * sb[i];                    \
                    for (int64_t k = row_ptr[r]; k < row_ptr[r + 1]; k++) {                         \
                        ob[cols[k]] += dot_##SUFFIX(tmp, wt + cols[k] * n_out, n_out);            \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
            free(tmp);                                                                             \
        }                                                                                          \
    }                                                                                              \
    /* out[b, i] = Σ_t c[t·B + b, i] · Σ_{j ∈ row t·B+b} wt[j, i]  (Σ_l w_il e_il without the drive) */ \
    void hm2bp_event_sigma_##SUFFIX(const int64_t *row_ptr, const int64_t *cols, const TYPE *c,    \
                                    const TYPE *wt, TYPE *out, int64_t T, int64_t B, int64_t n_out, \
                                    int32_t n_threads) {                                           \
        _Pragma("omp parallel for num_threads(n_threads > 0 ? n_threads : 1) schedule(static)")     \
        for (int64_t b = 0; b < B; b++) {                                                          \
            TYPE *o = out + b * n_out;                                                             \
            for (int64_t t = 0; t < T; t++) {                                                      \
                int64_t r = t * B + b;                                                             \
                const TYPE *cr = c + r * n_out;                                                    \
                for (int64_t k = row_ptr[r]; k < row_ptr[r + 1]; k++) {                             \
                    const TYPE *w = wt + cols[k] * n_out;                                          \
                    for (int64_t i = 0; i < n_out; i++) o[i] += cr[i] * w[i];                      \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

SCALED_EVENT_KERNELS(f32, float)
SCALED_EVENT_KERNELS(f64, double)

/* C̃ of spec §2 / design.md §2 straight from the post spikes (uint8 [T, M]), without the [2, T, M]
 * coefficient buffers: blocks of PSP_BLOCK columns scatter their per-spike coefficients into a small
 * local buffer, then filter it backwards in time. Coefficients are computed in double. */
#define PSP_BLOCK 128
#define PSP_COEFFS(SUFFIX, TYPE)                                                                    \
    int hm2bp_psp_coeffs_##SUFFIX(const uint8_t *post, TYPE *out, int64_t T, int64_t M,            \
                                  double tau_m, double tau_s, int32_t t_ref, int64_t window,       \
                                  int32_t n_threads) {                                             \
        int64_t n_blocks = (M + PSP_BLOCK - 1) / PSP_BLOCK;                                        \
        double c = 1.0 / (1.0 - tau_s / tau_m);                                                    \
        TYPE dm = (TYPE)exp(-1.0 / tau_m), ds = (TYPE)exp(-1.0 / tau_s);                           \
        int failed = 0;                                                                            \
        _Pragma("omp parallel for num_threads(n_threads > 0 ? n_threads : 1) schedule(dynamic, 4) reduction(| : failed)") \
        for (int64_t blk = 0; blk < n_blocks; blk++) {                                             \
            int64_t c0 = blk * PSP_BLOCK, nc = M - c0 < PSP_BLOCK ? M - c0 : PSP_BLOCK;            \
            TYPE *cm = calloc((size_t)(T * nc), sizeof(TYPE));                                     \
            TYPE *cs = calloc((size_t)(T * nc), sizeof(TYPE));                                     \
            if (!cm || !cs) { failed |= 1; free(cm); free(cs); continue; }                         \
            int64_t prev[PSP_BLOCK];                                                               \
            TYPE am[PSP_BLOCK], as[PSP_BLOCK];                                                     \
            for (int64_t k = 0; k < nc; k++) { prev[k] = -1; am[k] = 0; as[k] = 0; }               \
            for (int64_t t = 0; t < T; t++) {                                                      \
                const uint8_t *row = post + t * M + c0;                                            \
                for (int64_t k = 0; k < nc; k++) {                                                 \
                    if (!row[k]) continue;                                                         \
                    int64_t a = t - t_ref, lo = t - window < 1 ? 1 : t - window;                   \
                    int64_t p = prev[k];                                                           \
                    int64_t a0 = p >= 0 ? (p > lo ? p : lo) : lo;                                  \
                    if (a >= a0) {                                                                 \
                        double span = (double)(a - a0 + 1);                                        \
                        cm[a * nc + k] += (TYPE)c;                                                 \
                        cm[(a0 - 1) * nc + k] += (TYPE)(-c * exp(-span / tau_m));                  \
                        cs[a * nc + k] += (TYPE)(-c);                                              \
                        cs[(a0 - 1) * nc + k] += (TYPE)(c * exp(-span / tau_s));                   \
                    }                                                                              \
                    if (p >= 0) {                                                                  \
                        int64_t hi = p - 1 < a ? p - 1 : a;                                        \
                        if (hi >= lo) {                                                            \
                            double sk = (double)(t - p - t_ref);                                   \
                            double eps = c * (exp(-sk / tau_m) - exp(-sk / tau_s));                \
                            cs[hi * nc + k] += (TYPE)(eps * exp(-(double)(p - hi) / tau_s));       \
                            cs[(lo - 1) * nc + k] += (TYPE)(-eps * exp(-(double)(p - lo + 1) / tau_s)); \
                        }                                                                          \
                    }                                                                              \
                    prev[k] = t;                                                                   \
                }                                                                                  \
            }                                                                                      \
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

/* CSR index of the 1s of a 0/1 float32 matrix S [R, N] (rows r = t·B + b), plus per-sample counts
 * [B, N]. A first call with cols == NULL fills row_ptr [R+1] and returns nnz; the second fills cols
 * [nnz] and counts. */
int64_t hm2bp_spike_index(const float *s, int64_t R, int64_t N, int64_t B, int64_t *row_ptr, int64_t *cols,
                          int64_t *counts) {
    if (!cols) {
        row_ptr[0] = 0;
        for (int64_t r = 0; r < R; r++) {
            const float *sr = s + r * N;
            int64_t n = 0;
            for (int64_t j = 0; j < N; j++) n += sr[j] != 0.0f;
            row_ptr[r + 1] = row_ptr[r] + n;
        }
        return row_ptr[R];
    }
    memset(counts, 0, (size_t)(B * N) * sizeof(int64_t));
    for (int64_t r = 0; r < R; r++) {
        const float *sr = s + r * N;
        int64_t k = row_ptr[r];
        int64_t *cb = counts + (r % B) * N;
        for (int64_t j = 0; j < N; j++) {
            if (sr[j] != 0.0f) { cols[k++] = j; cb[j]++; }
        }
    }
    return row_ptr[R];
}
