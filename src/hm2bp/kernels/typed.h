/* Typed helpers shared by the kernels (a body file of instantiate.h: TYPE, SUFFIX). */

/* Dot product with 8 independent partial sums, so that the compiler can vectorise it without
 * -ffast-math (the order of a reduction is otherwise fixed). */
static inline TYPE FN(dot)(const TYPE *a, const TYPE *b, int64_t n) {
    TYPE acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += a[i + k] * b[i + k];
    TYPE total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) total += a[i] * b[i];
    return total;
}

/* Σ a[0:n] with 8 independent partial sums (vectorised; a fixed order). */
static inline TYPE FN(sum)(const TYPE *a, int64_t n) {
    TYPE acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += a[i + k];
    TYPE total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) total += a[i];
    return total;
}

/* One step t (descending) of the backward filter in time that turns the scattered coefficients (cm, cs
 * at step t) into C̃(t) = am + as (docs/algorithm.md §2): am = am·dm + cm, as = as·ds + cs over n columns, then both
 * set to 0 where t lies outside every window (cv). */
static inline void FN(filter_step)(TYPE *restrict am, TYPE *restrict as, const TYPE *restrict cm,
                                   const TYPE *restrict cs, int64_t n, TYPE dm, TYPE ds, const psp_cover *cv,
                                   int64_t t) {
    int64_t *restrict lo = cv->lo, top = t + cv->t_ref;
    if (top < cv->T) {
        const uint8_t *restrict row = cv->post + top * cv->stride;
        int64_t lo_top = top - cv->window < 1 ? 1 : top - cv->window;
        for (int64_t k = 0; k < n; k++) lo[k] = row[k] ? lo_top : lo[k];
    }
    for (int64_t k = 0; k < n; k++) {
        int in = t >= lo[k];
        TYPE m = am[k] * dm + cm[k], s = as[k] * ds + cs[k];
        am[k] = in ? m : (TYPE)0;
        as[k] = in ? s : (TYPE)0;
    }
}

/* f = δ̂·(1 + σ)·Λ of docs/algorithm.md §3.3 for one post neuron and sample: δ̂ = δ/ν; σ = psp_drive/(ν·o) when it fired
 * (o > 0), else 0.5·Σ_j w_ij/ν (weight_sum, read only then); Λ = *lam (NULL: none). In TYPE, in the order
 * of functional/hm2bp.py's torch code (used by the FC and the conv backward passes). */
static inline TYPE FN(layer_factor)(TYPE delta, int64_t count, double psp_drive, TYPE weight_sum,
                                    const double *lam, TYPE vth) {
    TYPE dh = delta / vth;
    TYPE sigma = count > 0 ? (TYPE)psp_drive / (vth * (TYPE)count) : (TYPE)0.5 * weight_sum / vth;
    TYPE f = dh * ((TYPE)1 + sigma);
    return lam ? f * (TYPE)*lam : f;
}

/* Per-spike S-PSP coefficients of nc columns into cm/cs [T, nc] (psp_body.h). */
HIDDEN void FN(psp_scatter)(const uint8_t *post, int64_t stride, int64_t T, int64_t nc, const exp_table *et,
                            int32_t t_ref, int64_t window, TYPE *cm, TYPE *cs, int64_t *prev);

/* dst[c * ld_dst + r] = src[r * C + c] for src [R, C] (transpose_body.h). */
HIDDEN void FN(transpose)(const TYPE *restrict src, int64_t R, int64_t C, TYPE *restrict dst, int64_t ld_dst);
