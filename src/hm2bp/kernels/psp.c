/* The S-PSP coefficients of docs/algorithm.md §2 (docs/algorithm.md §8.2; derivation in functional/psp.py): per post spike a few
 * weighted exponentials are scattered into per-(step, column) coefficients, which one backward filter in
 * time turns into C̃, so that e_{i|j} = Σ_t C̃_i(t)·s_j(t). */
#include "hm2bp_kernels.h"

int exp_table_init(exp_table *et, double tau_m, double tau_s, int64_t T) {
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

void cover_init(psp_cover *cv, const uint8_t *post, int64_t stride, int64_t T, int32_t t_ref, int64_t window,
                int64_t *lo, int64_t n) {
    cv->post = post; cv->stride = stride; cv->T = T; cv->t_ref = t_ref; cv->window = window; cv->lo = lo;
    for (int64_t k = 0; k < n; k++) lo[k] = INT64_MAX;
}

void gather_columns(const uint8_t *post, int64_t stride, int64_t T, const int64_t *act, int64_t n_act,
                    uint8_t *dst) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t a = 0; a < n_act; a++) dst[t * n_act + a] = post[t * stride + act[a]];
}

#define HM2BP_TEMPLATE "psp_body.h"
#include "instantiate.h"
