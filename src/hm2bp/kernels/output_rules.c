/* The output layer's rules (docs/algorithm.md §3.2 spike insertion, §3.4 lateral factor) in one pass. */
#include "hm2bp_kernels.h"

/* used = a copy of sample b's post spikes where a silent label neuron gets spikes at t = Δ, 2Δ, … < T
 * (Δ = step; none when step < 1); returns 1 when spikes were inserted. */
static int insert_label(const uint8_t *pb, uint8_t *ub, int64_t T, int64_t N, int64_t stride, int64_t lab,
                        int64_t step) {
    for (int64_t t = 0; t < T; t++) memcpy(ub + t * stride, pb + t * stride, (size_t)N);
    int label_fired = 0;
    for (int64_t t = 0; t < T; t++) label_fired |= pb[t * stride + lab] != 0;
    if (label_fired || step < 1) return 0;
    for (int64_t t = step; t < T; t += step) ub[t * stride + lab] = 1;
    return T > step;
}

/* e[j, l] = e_{l|j} = Σ_t s_j(t)·C̃_l(t) and the counts f of sample b's N neurons, in double. */
static void pair_psps(const hm2bp_params *p, const uint8_t *pb, int64_t stride, const exp_table *et,
                      double *e, double *f) {
    int64_t T = p->T, N = p->N;
    double dm = exp(-1.0 / p->tau_m), ds = exp(-1.0 / p->tau_s);
    double *cm = scratch_take(T * N * sizeof(double)), *cs = scratch_take(T * N * sizeof(double));
    double *am = scratch_take(N * sizeof(double)), *as = scratch_take(N * sizeof(double));
    int64_t *prev = scratch_take(N * sizeof(int64_t)), *lo = scratch_take(N * sizeof(int64_t));
    psp_cover cv;
    psp_scatter_f64(pb, stride, T, N, et, p->t_ref, p->window, cm, cs, prev);
    cover_init(&cv, pb, stride, T, p->t_ref, p->window, lo, N);
    memset(e, 0, (size_t)(N * N) * sizeof(double));
    for (int64_t k = 0; k < N; k++) { am[k] = 0; as[k] = 0; f[k] = 0; }
    for (int64_t t = T - 1; t >= 0; t--) {
        filter_step_f64(am, as, cm + t * N, cs + t * N, N, dm, ds, &cv, t);
        const uint8_t *row = pb + t * stride;
        for (int64_t j = 0; j < N; j++) {
            if (!row[j]) continue;
            f[j] += 1;
            for (int64_t l = 0; l < N; l++) e[j * N + l] += am[l] + as[l];
        }
    }
}

/* Λ of sample b into lb [N]: Λ_j = 1 / (1 − w0² Σ_{l≠j} R_jl d_l R_lj d_j), R_jl = e_{l|j} / f_j where both
 * counts are > 0 (else 1), d_j = [f_j > 0 or j = label] / ν. Returns 1 when an entry is not finite or ≤ 0. */
static int sample_lambda(const hm2bp_params *p, const uint8_t *pb, int64_t stride, int64_t lab,
                         const exp_table *et, double *lb) {
    int64_t N = p->N;
    double *e = scratch_take(N * N * sizeof(double)), *ratio = scratch_take(N * N * sizeof(double));
    double *f = scratch_take(N * sizeof(double)), *d = scratch_take(N * sizeof(double));
    pair_psps(p, pb, stride, et, e, f);
    for (int64_t j = 0; j < N; j++) {
        for (int64_t l = 0; l < N; l++)
            ratio[j * N + l] = f[j] > 0 && f[l] > 0 ? e[j * N + l] / f[j] : 1.0;
        d[j] = (f[j] > 0 || j == lab ? 1.0 : 0.0) / p->v_th;
    }
    int bad = 0;
    for (int64_t j = 0; j < N; j++) {
        double loop = 0.0;
        for (int64_t l = 0; l < N; l++)
            if (l != j) loop += ratio[j * N + l] * ratio[l * N + j] * d[l] * d[j];
        lb[j] = 1.0 / (1.0 - p->strength * p->strength * loop);
        bad |= !(lb[j] - lb[j] == 0.0) || !(lb[j] > 0.0);
    }
    return bad;
}

/* For post spikes post [T, B, N] (uint8, before insertion) and labels [B], one sample per iteration:
 *   used [T, B, N]: post with the label spikes of docs/algorithm.md §3.2 inserted (insert_label);
 *   lam [B, N] (skipped when NULL): Λ of docs/algorithm.md §3.4 from the spikes before insertion, in double.
 * stats[0] receives the number of samples that got spikes inserted, stats[1] the number whose Λ has an
 * entry that is not finite or ≤ 0 (a loop gain ≥ 1, which the authors leave unguarded). Returns 0, -1
 * without memory, or -2 when a label is not in [0, N). */
int hm2bp_output_rules(const hm2bp_params *p, const uint8_t *post, const int64_t *labels, uint8_t *used,
                       double *lam, int64_t *stats) {
    if (!params_ok(p)) return HM2BP_BAD_PARAMS;
    int64_t T = p->T, B = p->B, N = p->N;
    int failed = 0;
    int64_t n_inserted = 0, n_bad = 0;
    for (int64_t b = 0; b < B; b++)
        if (labels[b] < 0 || labels[b] >= N) return -2;
    exp_table et;
    if (lam && !exp_table_init(&et, p->tau_m, p->tau_s, T)) return -1;
#pragma omp parallel for num_threads(thread_count(p)) schedule(static) reduction(| : failed) reduction(+ : n_inserted, n_bad)
    for (int64_t b = 0; b < B; b++) {
        int64_t stride = B * N;
        n_inserted += insert_label(post + b * N, used + b * N, T, N, stride, labels[b], p->step);
        if (!lam) continue;
        size_t steps = SCRATCH(T * N * sizeof(double)), mat = SCRATCH(N * N * sizeof(double)), vec = SCRATCH(N * sizeof(double));
        if (!scratch_begin(2 * steps + 2 * mat + 6 * vec)) { failed |= 1; continue; }
        n_bad += sample_lambda(p, post + b * N, stride, labels[b], &et, lam + b * N);
    }
    if (lam) free(et.mem);
    stats[0] = n_inserted;
    stats[1] = n_bad;
    return failed ? -1 : 0;
}
