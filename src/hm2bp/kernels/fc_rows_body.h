/* The batch-1 weight gradient (B = 1, no error below) in TYPE; included by fc_backward_body.h. */

/* The factors f_i of the nc post neurons from c0 (fac), the rows of grad of the silent ones (the constant
 * silent_psp·f_i where the input fired, docs/algorithm.md §2), and the list of the active ones; returns their number. */
static int64_t FN(rows_factors)(const FN(bw_args) *g, int64_t c0, int64_t nc, const int64_t *cnt, TYPE *fac,
                                int64_t *act, TYPE *grad) {
    int64_t n_in = g->p->n_in, n_act = 0;
    const int64_t *counts_in = g->ev->counts;
    for (int64_t i = 0; i < nc; i++) {
        TYPE wsum = cnt[i] > 0 ? (TYPE)0 : FN(sum)(g->w + (c0 + i) * n_in, n_in);
        fac[i] = FN(layer_factor)(g->delta[c0 + i], cnt[i], g->psp_drive[c0 + i], wsum,
                                  g->lam ? g->lam + c0 + i : NULL, g->vth);
        if (cnt[i] > 0) {
            act[n_act++] = i;
        } else {
            TYPE gi = g->silent_psp * fac[i], *row = grad + i * n_in;
            for (int64_t j = 0; j < n_in; j++) row[j] = counts_in[j] > 0 ? gi : (TYPE)0;
        }
    }
    return n_act;
}

/* The weight gradient of one sample (B = 1) for the nc post neurons from c0, into their rows of grad
 * ([nc, n_in], W's layout). A silent post neuron's row is written at once (rows_factors); only the n_act
 * active neurons are summed (at batch 1 most post neurons are silent), GRAD_WIDTH of them at a time
 * (sum_spikes), in the general path's order (t descending), so the two give the same bits. (At batch > 1
 * the general path's whole-block buffer wins: narrower blocks there repeat the per-sample work over the
 * spikes and the post spikes, measured 1.4× slower.) Returns 0, or 1 without memory. */
static int FN(fc_rows_backward)(const FN(bw_args) *g, int64_t c0, int64_t nc, TYPE *grad) {
    const hm2bp_params *p = g->p;
    int64_t T = p->T, n_in = p->n_in, N = p->N;
    size_t steps = SCRATCH(T * nc * sizeof(TYPE)), vec = SCRATCH(nc * sizeof(int64_t));
    size_t slice = SCRATCH(n_in * GRAD_WIDTH * sizeof(TYPE));
    if (!scratch_begin(2 * steps + 2 * slice + 8 * vec + SCRATCH(T * nc))) return 1;
    TYPE *cm = scratch_take(T * nc * sizeof(TYPE)), *cs = scratch_take(T * nc * sizeof(TYPE));
    TYPE *am = scratch_take(nc * sizeof(TYPE)), *as = scratch_take(nc * sizeof(TYPE));
    TYPE *fac = scratch_take(nc * sizeof(TYPE));
    int64_t *prev = scratch_take(nc * sizeof(int64_t)), *act = scratch_take(nc * sizeof(int64_t));
    int64_t *cnt = scratch_take(nc * sizeof(int64_t)), *lo = scratch_take(nc * sizeof(int64_t));
    post_counts(g->post + c0, N, T, nc, g->counts ? g->counts + c0 : NULL, cnt);
    int64_t n_act = FN(rows_factors)(g, c0, nc, cnt, fac, act, grad);
    if (n_act == 0) return 0;
    TYPE *buf = scratch_take(n_in * GRAD_WIDTH * sizeof(TYPE));
    TYPE *rows = scratch_take(n_in * GRAD_WIDTH * sizeof(TYPE));
    uint8_t *fired = scratch_take(T * n_act);
    psp_cover cv;
    gather_columns(g->post + c0, N, T, act, n_act, fired);
    FN(psp_scatter)(fired, n_act, T, n_act, g->et, p->t_ref, p->window, cm, cs, prev);
    cover_init(&cv, fired, n_act, T, p->t_ref, p->window, lo, n_act);
    for (int64_t a = 0; a < n_act; a++) { am[a] = 0; as[a] = 0; fac[a] = fac[act[a]]; }
    for (int64_t t = T - 1; t >= 0; t--) { /* cm[t] becomes C̃(t)·f, read back per sub-block */
        FN(filter_step)(am, as, cm + t * n_act, cs + t * n_act, n_act, g->dm, g->ds, &cv, t);
        for (int64_t a = 0; a < n_act; a++) cm[t * n_act + a] = (am[a] + as[a]) * fac[a];
    }
    for (int64_t a0 = 0; a0 < n_act; a0 += GRAD_WIDTH) {
        int64_t na = n_act - a0 < GRAD_WIDTH ? n_act - a0 : GRAD_WIDTH;
        memset(buf, 0, (size_t)(n_in * GRAD_WIDTH) * sizeof(TYPE));
        FN(sum_spikes)(g->ev->row_ptr, g->ev->cols, T, cm + a0, n_act, na, buf);
        FN(transpose)(buf, n_in, GRAD_WIDTH, rows, n_in);
        for (int64_t a = 0; a < na; a++)
            memcpy(grad + act[a0 + a] * n_in, rows + a * n_in, (size_t)n_in * sizeof(TYPE));
    }
    return 0;
}
