/* The LIF scan of docs/algorithm.md §1.1 over a given drive. Columns (one per neuron and sample) are independent,
 * except through the optional lateral matrix, which couples the N neurons of one sample; blocks of whole
 * samples are therefore spread over the threads. */
#include "hm2bp_kernels.h"

/* drive, out: [T, M] float32, row-major, M = B·N (p->T, p->B, p->N); lateral [N, N] couples the N neurons
 * of a sample (NULL: none). out must be zero-filled by the caller. Returns 0, -1 when memory runs out. */
int hm2bp_lif_scan_f32(const hm2bp_params *p, const float *drive, float *out, const float *lateral) {
    if (!params_ok(p)) return HM2BP_BAD_PARAMS;
    int64_t T = p->T, N = p->N, M = p->B * p->N;
    float tau_m = (float)p->tau_m, tau_s = (float)p->tau_s;
    int64_t group = lateral ? N : 1;
    int64_t n_groups = group > 0 ? M / group : 0;
    int64_t n_blocks = thread_count(p);
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
            lif_step(v, x, r, d, out + t * M + c0, nc, tau_m, tau_s, p->t_ref, p->theta);
        }
    }
    return failed ? -1 : 0;
}
