/* The backward pass of an event-driven FC layer in TYPE (a body file of instantiate.h). */

/* What every part of one call reads. */
typedef struct {
    const hm2bp_params *p;
    const hm2bp_events *ev;
    const uint8_t *post;       /* [T, B, N] */
    const int32_t *counts;     /* [B, N] spike counts of post, or NULL (counted here) */
    const TYPE *w, *delta;     /* W [N, n_in], δ [B, N] */
    const double *psp_drive;   /* [B, N] σ's numerator Σ_l w_il e_{i|l} */
    const double *lam;         /* [B, N] Λ, or NULL */
    TYPE vth, silent_psp, dm, ds;
    const exp_table *et;
} FN(bw_args);

/* buf[j, w] += Σ_t Σ_{spikes (row t, j)} coef[t·ld + w] for w < na (one sample: rows are steps; t descending,
 * the spikes of a row in order, so the order of the sums does not depend on GRAD_WIDTH); buf [n_in, GRAD_WIDTH]. */
static void FN(sum_spikes)(const int64_t *restrict row_ptr, const int32_t *restrict cols, int64_t T,
                           const TYPE *restrict coef, int64_t ld, int64_t na, TYPE *restrict buf) {
    TYPE cw[GRAD_WIDTH];
    for (int64_t t = T - 1; t >= 0; t--) {
        int64_t k0 = row_ptr[t], k1 = row_ptr[t + 1];
        if (k0 == k1) continue;
        const TYPE *c = coef + t * ld;
        for (int w = 0; w < GRAD_WIDTH; w++) cw[w] = w < na ? c[w] : (TYPE)0;
        for (int64_t k = k0; k < k1; k++) {
            TYPE *bj = buf + (int64_t)cols[k] * GRAD_WIDTH;
            for (int w = 0; w < GRAD_WIDTH; w++) bj[w] += cw[w];
        }
    }
}

#include "fc_rows_body.h"
#include "fc_block_body.h"

/* out[b, i] = Σ_t C̃_bi(t) · Σ_{j ∈ row t·B+b} w[i, j]   (σ's numerator, when the forward's is stale: the
 * output layer after spike insertion). Returns 0, or -1 without memory. */
int FN(hm2bp_fc_psp_drive)(const hm2bp_params *p, const hm2bp_events *ev, const uint8_t *post, const TYPE *w,
                           TYPE *out) {
    if (!params_ok(p)) return HM2BP_BAD_PARAMS;
    int64_t T = p->T, B = p->B, N = p->N, n_in = p->n_in;
    TYPE dm = (TYPE)exp(-1.0 / p->tau_m), ds = (TYPE)exp(-1.0 / p->tau_s);
    exp_table et;
    if (!exp_table_init(&et, p->tau_m, p->tau_s, T)) return -1;
    int failed = 0;
#pragma omp parallel num_threads(thread_count(p)) reduction(| : failed)
    {
        size_t steps = SCRATCH(T * N * sizeof(TYPE)), vec = SCRATCH(N * sizeof(int64_t));
        int ok = scratch_begin(2 * steps + 5 * vec + SCRATCH(n_in * N * sizeof(TYPE)));
        if (!ok) failed |= 1;
        TYPE *wt = ok ? scratch_take(n_in * N * sizeof(TYPE)) : NULL;
        if (ok) FN(transpose)(w, N, n_in, wt, N);
        TYPE *cm = ok ? scratch_take(T * N * sizeof(TYPE)) : NULL, *cs = ok ? scratch_take(T * N * sizeof(TYPE)) : NULL;
        TYPE *am = ok ? scratch_take(N * sizeof(TYPE)) : NULL, *as = ok ? scratch_take(N * sizeof(TYPE)) : NULL;
        TYPE *ct = ok ? scratch_take(N * sizeof(TYPE)) : NULL;
        int64_t *prev = ok ? scratch_take(N * sizeof(int64_t)) : NULL;
        int64_t *lo = ok ? scratch_take(N * sizeof(int64_t)) : NULL;
        psp_cover cv;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < B; b++) {
            if (!ok) continue;
            FN(psp_scatter)(post + b * N, B * N, T, N, &et, p->t_ref, p->window, cm, cs, prev);
            cover_init(&cv, post + b * N, B * N, T, p->t_ref, p->window, lo, N);
            TYPE *o = out + b * N;
            for (int64_t i = 0; i < N; i++) { am[i] = 0; as[i] = 0; o[i] = 0; }
            for (int64_t t = T - 1; t >= 0; t--) {
                FN(filter_step)(am, as, cm + t * N, cs + t * N, N, dm, ds, &cv, t);
                for (int64_t i = 0; i < N; i++) ct[i] = am[i] + as[i];
                int64_t r = t * B + b;
                for (int64_t k = ev->row_ptr[r]; k < ev->row_ptr[r + 1]; k++) {
                    const TYPE *wr = wt + (int64_t)ev->cols[k] * N;
                    for (int64_t i = 0; i < N; i++) o[i] += ct[i] * wr[i];
                }
            }
        }
    }
    free(et.mem);
    return failed ? -1 : 0;
}

/* below [B, n_in] from the per-block sums (added in block order): mode 2 (effect ratio), where the input
 * fired: Σ through C̃ / counts_in + the silent post neurons' Σ δ̂·w; else δ̂·W. */
static void FN(bw_below)(const hm2bp_params *p, const bw_plan *pl, const int64_t *counts_in, const TYPE *sums,
                         TYPE *below) {
    int mode = p->below;
    for (int64_t x = 0; x < pl->per; x++) {
        TYPE th = 0, al = 0, si = 0;
        for (int64_t blk = 0; blk < pl->n_blocks; blk++) {
            const TYPE *s3 = sums + 3 * blk * pl->per;
            if (mode == 2) th += s3[x];
            al += s3[pl->per + x];
            si += s3[2 * pl->per + x];
        }
        below[x] = mode == 2 && counts_in[x] > 0 ? th / (TYPE)counts_in[x] + si : al;
    }
}

/* The whole HM2-BP backward step of the layer (docs/algorithm.md §3.3), the rules of functional/hm2bp.py's
 * linear_backward in TYPE, from the count error delta [B, N] (TYPE), σ's numerator psp_drive [B, N]
 * (double, Σ_l w_il e_{i|l}) and Λ lam [B, N] (double, NULL = none):
 *   o_bi = Σ_t post_bi(t); δ̂ = δ/ν; σ_bi = psp_drive/(ν·o_bi), or 0.5·Σ_j w_ij/ν for a silent post;
 *   f_bi = δ̂_bi·(1 + σ_bi)·Λ_bi;
 *   grad[i, j] = Σ_b f_bi·e_bij (W layout [N, n_in], all written), e_bij = Σ_t C̃_bi(t)·s_bj(t), or
 *     silent_psp when post i is silent in sample b and counts_in[b, j] > 0 (docs/algorithm.md §2's special case);
 *   below [B, n_in] (p->below 1: δ̂·W; 2, the effect ratio: Σ_t Σ_{spikes (t·B+b, j)} Σ_i C̃_bi(t)·δ̂_bi·w_ij
 *     / counts_in[b, j] + Σ_{i silent} δ̂_bi·w_ij where counts_in[b, j] > 0, else δ̂·W; 0: none).
 * Work items as bw_make_plan says. An item sums its gradient slice in a private [n_in, block] buffer and
 * writes it transposed into grad (sample groups after the first into partial copies, added in group
 * order). The three sums of `below` are kept per block and added in block order. counts [B, N] (int32)
 * are the spike counts of post when the caller has them (NULL: counted here); ev->counts are the input's.
 * Returns 0, or -1 without memory. */
int FN(hm2bp_fc_backward)(const hm2bp_params *p, const hm2bp_events *ev, const uint8_t *post, const int32_t *counts,
                          const TYPE *w, const TYPE *delta, const double *psp_drive, const double *lam, TYPE *grad,
                          TYPE *below) {
    if (!params_ok(p) || p->below < 0 || p->below > 2) return HM2BP_BAD_PARAMS;
    int mode = p->below;
    bw_plan pl = bw_make_plan(p);
    TYPE *part = pl.n_groups > 1 ? malloc((size_t)((pl.n_groups - 1) * pl.size) * sizeof(TYPE)) : NULL;
    /* per block: through, all (δ̂·W) and from_silent sums of `below`, [B, n_in] each */
    TYPE *sums = mode ? malloc((size_t)(3 * pl.n_blocks * pl.per) * sizeof(TYPE)) : NULL;
    exp_table et;
    et.mem = NULL;
    if ((pl.n_groups > 1 && !part) || (mode && !sums) || !exp_table_init(&et, p->tau_m, p->tau_s, p->T)) {
        free(part); free(sums); free(et.mem); return -1;
    }
    FN(bw_args) args = {p, ev, post, counts, w, delta, psp_drive, lam, (TYPE)p->v_th, (TYPE)p->silent_psp,
                        (TYPE)exp(-1.0 / p->tau_m), (TYPE)exp(-1.0 / p->tau_s), &et};
    int failed = 0;
#pragma omp parallel for num_threads(pl.n_items) schedule(static) reduction(| : failed)
    for (int64_t item = 0; item < pl.n_items; item++) {
        int64_t blk = item / pl.n_groups, grp = item % pl.n_groups;
        if (p->B == 1 && mode == 0) { /* one sample: only its active post neurons are summed */
            int64_t c0, nc = block_bounds(p->N, pl.n_blocks, blk, &c0);
            failed |= FN(fc_rows_backward)(&args, c0, nc, grad + c0 * p->n_in);
            continue;
        }
        failed |= FN(bw_item)(&args, &pl, blk, grp, grp == 0 ? grad : part + (grp - 1) * pl.size,
                              mode ? sums + 3 * blk * pl.per : NULL);
    }
    for (int64_t g = 1; g < pl.n_groups && !failed; g++) {
        const TYPE *pg = part + (g - 1) * pl.size;
        for (int64_t i = 0; i < pl.size; i++) grad[i] += pg[i];
    }
    if (mode && !failed) FN(bw_below)(p, &pl, ev->counts, sums, below);
    free(part); free(sums); free(et.mem);
    return failed ? -1 : 0;
}
