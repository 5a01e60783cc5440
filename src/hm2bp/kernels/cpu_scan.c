/* Compiled CPU kernels for hm2bp: the LIF scan of spec §1.1 and the backward S-PSP filter.
 *
 * Built on first use by hm2bp/kernels/cpu.py with -O3 -ffp-contract=off (no FMA contraction, no
 * fast-math), so every float operation is the one written here, in the spec's order. Columns (one per
 * neuron and sample) are independent, except through the optional lateral matrix, which couples the
 * N neurons of one sample; blocks of whole samples are therefore spread over the threads. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

/* out[t] = Σ_{t' ≥ t} dm^{t'−t} cm[t'] + ds^{t'−t} cs[t'] for every column: two backward scans. */
#define REVERSE_FILTER(NAME, TYPE)                                                                   \
    void NAME(const TYPE *cm, const TYPE *cs, TYPE *out, int64_t T, int64_t M, TYPE dm, TYPE ds,     \
              int32_t n_threads) {                                                                   \
        int64_t n_blocks = n_threads > 0 ? n_threads : 1;                                           \
        if (n_blocks > M) n_blocks = M > 0 ? M : 1;                                                  \
        _Pragma("omp parallel for num_threads(n_blocks) schedule(static)")                           \
        for (int64_t b = 0; b < n_blocks; b++) {                                                     \
            int64_t c0;                                                                              \
            int64_t nc = block_bounds(M, n_blocks, b, &c0);                                          \
            TYPE *am = calloc((size_t)nc, sizeof(TYPE));                                             \
            TYPE *as = calloc((size_t)nc, sizeof(TYPE));                                             \
            if (!am || !as) { free(am); free(as); continue; }                                        \
            for (int64_t t = T - 1; t >= 0; t--) {                                                   \
                const TYPE *pm = cm + t * M + c0, *ps = cs + t * M + c0;                             \
                TYPE *o = out + t * M + c0;                                                          \
                for (int64_t c = 0; c < nc; c++) {                                                   \
                    am[c] = am[c] * dm + pm[c];                                                      \
                    as[c] = as[c] * ds + ps[c];                                                      \
                    o[c] = am[c] + as[c];                                                            \
                }                                                                                    \
            }                                                                                        \
            free(am); free(as);                                                                      \
        }                                                                                            \
    }

REVERSE_FILTER(hm2bp_reverse_filter_f32, float)
REVERSE_FILTER(hm2bp_reverse_filter_f64, double)

/* Event-driven products with a binary spike matrix S [R rows = (t, b), N_in columns], given as CSR
 * (row_ptr, cols) and CSC (col_ptr, rows). W is passed transposed, wt = Wᵀ [N_in, N_out], so that
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
    }                                                                                                \
    /* gt[j, :] = Σ_{spikes (r, j)} c[r, :]   (the weight gradient Cᵀ·S, transposed). Rows are visited \
     * in order so that c is streamed once; each thread adds into its own copy of gt. */                \
    int hm2bp_event_outer_##SUFFIX(const int64_t *row_ptr, const int64_t *cols, const TYPE *c,       \
                                   TYPE *gt, int64_t R, int64_t n_in, int64_t n_out,                 \
                                   int32_t n_threads) {                                              \
        int64_t nt = n_threads > 0 ? n_threads : 1;                                                  \
        int64_t size = n_in * n_out;                                                                 \
        TYPE *priv = nt > 1 ? calloc((size_t)((nt - 1) * size), sizeof(TYPE)) : NULL;               \
        if (nt > 1 && !priv) nt = 1;                                                                 \
        _Pragma("omp parallel for num_threads(nt) schedule(static)")                                  \
        for (int64_t b = 0; b < nt; b++) {                                                           \
            int64_t r0;                                                                              \
            int64_t nr = block_bounds(R, nt, b, &r0);                                                \
            TYPE *g = b == 0 ? gt : priv + (b - 1) * size;                                           \
            for (int64_t r = r0; r < r0 + nr; r++) {                                                 \
                const TYPE *cr = c + r * n_out;                                                      \
                for (int64_t k = row_ptr[r]; k < row_ptr[r + 1]; k++) {                               \
                    TYPE *gj = g + cols[k] * n_out;                                                  \
                    for (int64_t i = 0; i < n_out; i++) gj[i] += cr[i];                              \
                }                                                                                    \
            }                                                                                        \
        }                                                                                            \
        for (int64_t b = 1; b < nt; b++) {                                                           \
            const TYPE *p = priv + (b - 1) * size;                                                   \
            for (int64_t i = 0; i < size; i++) gt[i] += p[i];                                        \
        }                                                                                            \
        free(priv);                                                                                  \
        return 0;                                                                                    \
    }                                                                                                \
    /* out[r mod B, j] += <a[r, :], wt[j, :]> for every spike (r, j)   (Σ_t s ⊙ (A·W)) */            \
    void hm2bp_event_dot_##SUFFIX(const int64_t *col_ptr, const int64_t *rows, const TYPE *a,        \
                                  const TYPE *wt, TYPE *out, int64_t n_in, int64_t n_out, int64_t B, \
                                  int32_t n_threads) {                                               \
        _Pragma("omp parallel for num_threads(n_threads > 0 ? n_threads : 1) schedule(dynamic, 8)")   \
        for (int64_t j = 0; j < n_in; j++) {                                                         \
            const TYPE *w = wt + j * n_out;                                                          \
            for (int64_t k = col_ptr[j]; k < col_ptr[j + 1]; k++) {                                   \
                const TYPE *ar = a + rows[k] * n_out;                                                \
                TYPE acc = 0;                                                                        \
                for (int64_t i = 0; i < n_out; i++) acc += ar[i] * w[i];                             \
                out[(rows[k] % B) * n_in + j] += acc;                                                \
            }                                                                                        \
        }                                                                                            \
    }

EVENT_KERNELS(f32, float)
EVENT_KERNELS(f64, double)
