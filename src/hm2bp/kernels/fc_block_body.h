/* One work item of the general backward path (a neuron block × a sample group) in TYPE; included by
 * fc_backward_body.h. */

/* One item's buffers (scratch memory) for a block of nc neurons. */
typedef struct {
    TYPE *cm, *cs;             /* [T, n_act] scattered coefficients */
    TYPE *acc;                 /* the block's gradient slice [n_in, nc] */
    TYPE *am, *as, *fac_act, *td, *fac, *dh, *dsil, *wsum, *tgc, *full;
    int64_t *prev, *cnt, *lo;
    int64_t *act;              /* the post neurons that fired in sample b */
    uint8_t *fired;            /* their spikes, [T, n_act] */
    TYPE *accb;                /* sample b's sums, [inputs that fired, n_act] */
    int64_t *in_act, *jmap;    /* the inputs that fired in sample b, and each one's row in accb */
    TYPE *wt;                  /* the block's Wᵀ [n_in, nc] (only with an error below) */
} FN(bw_buffers);

static int FN(bw_take)(FN(bw_buffers) *f, int64_t T, int64_t nc, int64_t n_in, int mode) {
    size_t steps = SCRATCH(T * nc * sizeof(TYPE)), vec = SCRATCH(nc * sizeof(int64_t));
    size_t slice = SCRATCH(n_in * nc * sizeof(TYPE));
    size_t inputs = SCRATCH(n_in * sizeof(int64_t));
    if (!scratch_begin(2 * steps + (mode ? 3 : 2) * slice + 15 * vec + SCRATCH(T * nc) + 2 * inputs)) return 0;
    f->cm = scratch_take(T * nc * sizeof(TYPE)); f->cs = scratch_take(T * nc * sizeof(TYPE));
    f->acc = scratch_take(n_in * nc * sizeof(TYPE));
    f->am = scratch_take(nc * sizeof(TYPE)); f->as = scratch_take(nc * sizeof(TYPE));
    f->fac_act = scratch_take(nc * sizeof(TYPE)); f->td = scratch_take(nc * sizeof(TYPE));
    f->fac = scratch_take(nc * sizeof(TYPE)); f->dh = scratch_take(nc * sizeof(TYPE));
    f->dsil = scratch_take(nc * sizeof(TYPE)); f->wsum = scratch_take(nc * sizeof(TYPE));
    f->prev = scratch_take(nc * sizeof(int64_t)); f->cnt = scratch_take(nc * sizeof(int64_t));
    f->lo = scratch_take(nc * sizeof(int64_t));
    f->act = scratch_take(nc * sizeof(int64_t));
    f->fired = scratch_take(T * nc);
    f->accb = scratch_take(n_in * nc * sizeof(TYPE));
    f->tgc = scratch_take(nc * sizeof(TYPE)); f->full = scratch_take(nc * sizeof(TYPE));
    f->in_act = scratch_take(n_in * sizeof(int64_t)); f->jmap = scratch_take(n_in * sizeof(int64_t));
    f->wt = mode ? scratch_take(n_in * nc * sizeof(TYPE)) : NULL;
    return 1;
}

/* Sample b's counts, δ̂, f and the silent neurons' δ̂ (dsil) for the block's nc neurons from c0; Σ_j w_ij of
 * the block (for the silent post neurons' σ) the first time a sample has one. Returns 1 when one is silent. */
static int FN(bw_factors)(const FN(bw_args) *g, FN(bw_buffers) *f, int64_t b, int64_t c0, int64_t nc,
                          int *have_wsum) {
    const hm2bp_params *p = g->p;
    int64_t N = p->N, n_in = p->n_in;
    post_counts(g->post + b * N + c0, p->B * N, p->T, nc, g->counts ? g->counts + b * N + c0 : NULL, f->cnt);
    int silent = 0;
    for (int64_t i = 0; i < nc; i++) silent |= f->cnt[i] == 0;
    if (silent && !*have_wsum) {
        for (int64_t i = 0; i < nc; i++) f->wsum[i] = FN(sum)(g->w + (c0 + i) * n_in, n_in);
        *have_wsum = 1;
    }
    for (int64_t i = 0; i < nc; i++) {
        int64_t bi = b * N + c0 + i;
        f->dh[i] = g->delta[bi] / g->vth;
        f->fac[i] = FN(layer_factor)(g->delta[bi], f->cnt[i], g->psp_drive[bi], f->cnt[i] > 0 ? (TYPE)0 : f->wsum[i],
                                     g->lam ? g->lam + bi : NULL, g->vth);
        f->dsil[i] = f->cnt[i] == 0 ? f->dh[i] : (TYPE)0;
    }
    return silent;
}

/* C̃ of sample b's n_act active post neurons, contracted step by step with the input spikes: accb[jj, a] =
 * Σ_t C̃_a(t)·f_a·s_j(t) for the inputs that fired, and (ob, mode 2) ob[j] = Σ_t Σ_{spikes (t, j)} Σ_i
 * C̃_i(t)·δ̂_i·w_ij. */
static void FN(bw_contract)(const FN(bw_args) *g, FN(bw_buffers) *f, int64_t b, int64_t c0, int64_t nc,
                            int64_t n_act, int64_t n_inact, TYPE *ob) {
    const hm2bp_params *p = g->p;
    int64_t T = p->T, B = p->B, N = p->N;
    const int64_t *row_ptr = g->ev->row_ptr;
    const int32_t *cols = g->ev->cols;
    psp_cover cv;
    gather_columns(g->post + b * N + c0, B * N, T, f->act, n_act, f->fired);
    FN(psp_scatter)(f->fired, n_act, T, n_act, g->et, p->t_ref, p->window, f->cm, f->cs, f->prev);
    cover_init(&cv, f->fired, n_act, T, p->t_ref, p->window, f->lo, n_act);
    memset(f->accb, 0, (size_t)(n_inact * n_act) * sizeof(TYPE));
    if (ob) for (int64_t i = 0; i < nc; i++) f->td[i] = 0;
    for (int64_t a = 0; a < n_act; a++) { f->am[a] = 0; f->as[a] = 0; f->fac_act[a] = f->fac[f->act[a]]; }
    for (int64_t t = T - 1; t >= 0; t--) {
        FN(filter_step)(f->am, f->as, f->cm + t * n_act, f->cs + t * n_act, n_act, g->dm, g->ds, &cv, t);
        int64_t r = t * B + b;
        if (row_ptr[r] == row_ptr[r + 1]) continue;
        for (int64_t a = 0; a < n_act; a++) f->tgc[a] = (f->am[a] + f->as[a]) * f->fac_act[a];
        if (ob)
            for (int64_t a = 0; a < n_act; a++) f->td[f->act[a]] = (f->am[a] + f->as[a]) * f->dh[f->act[a]];
        for (int64_t k = row_ptr[r]; k < row_ptr[r + 1]; k++) {
            int64_t j = cols[k];
            TYPE *aj = f->accb + f->jmap[j] * n_act;
            for (int64_t a = 0; a < n_act; a++) aj[a] += f->tgc[a];
            if (ob) ob[j] += FN(dot)(f->td, f->wt + j * nc, nc);
        }
    }
}

/* Adds sample b's rows into the block's gradient slice: each input that fired gets, in one pass over the
 * block, the active neurons' sums and, for the silent post neurons, docs/algorithm.md §2's silent_psp·f. */
static void FN(bw_add_rows)(const FN(bw_args) *g, FN(bw_buffers) *f, int64_t nc, int64_t n_act, int64_t n_inact) {
    for (int64_t i = 0; i < nc; i++) f->full[i] = f->cnt[i] == 0 ? g->silent_psp * f->fac[i] : (TYPE)0;
    for (int64_t jj = 0; jj < n_inact; jj++) {
        const TYPE *src = f->accb + jj * n_act;
        for (int64_t a = 0; a < n_act; a++) f->full[f->act[a]] = src[a];
        TYPE *row = f->acc + f->in_act[jj] * nc;
        for (int64_t i = 0; i < nc; i++) row[i] += f->full[i];
    }
}

/* Item (blk, grp): the gradient rows of neuron block blk summed over sample group grp into dst (grad or
 * its group's partial copy, W's layout), and with an error below the block's three sums s3 [3, B, n_in].
 * Sample b touches only the rows j of the inputs that fired in it; C̃ is built only for the post neurons
 * that fired (a silent one has none). Returns 0, or 1 without memory. */
static int FN(bw_item)(const FN(bw_args) *g, const bw_plan *pl, int64_t blk, int64_t grp, TYPE *dst, TYPE *s3) {
    const hm2bp_params *p = g->p;
    int64_t N = p->N, n_in = p->n_in, c0, b0;
    int64_t nc = block_bounds(N, pl->n_blocks, blk, &c0), nb = block_bounds(p->B, pl->n_groups, grp, &b0);
    int mode = p->below;
    FN(bw_buffers) f;
    if (!FN(bw_take)(&f, p->T, nc, n_in, mode)) return 1;
    if (f.wt) FN(transpose)(g->w + c0 * n_in, nc, n_in, f.wt, nc);
    int have_wsum = 0;
    TYPE *thr = s3, *all = thr ? thr + pl->per : NULL, *sil = all ? all + pl->per : NULL;
    memset(f.acc, 0, (size_t)(n_in * nc) * sizeof(TYPE));
    for (int64_t b = b0; b < b0 + nb; b++) {
        int silent = FN(bw_factors)(g, &f, b, c0, nc, &have_wsum);
        int64_t n_act = 0, n_inact = 0;
        for (int64_t i = 0; i < nc; i++)
            if (f.cnt[i] > 0) f.act[n_act++] = i;
        const int64_t *cin = g->ev->counts + b * n_in;
        for (int64_t j = 0; j < n_in; j++)
            if (cin[j] > 0) { f.jmap[j] = n_inact; f.in_act[n_inact++] = j; }
        TYPE *ob = mode == 2 ? thr + b * n_in : NULL;
        if (ob) memset(ob, 0, (size_t)n_in * sizeof(TYPE));
        if (n_act > 0 && n_inact > 0) FN(bw_contract)(g, &f, b, c0, nc, n_act, n_inact, ob);
        if (n_inact > 0) FN(bw_add_rows)(g, &f, nc, n_act, n_inact);
        if (mode)
            for (int64_t j = 0; j < n_in; j++) {
                all[b * n_in + j] = FN(dot)(f.dh, f.wt + j * nc, nc);
                sil[b * n_in + j] = silent ? FN(dot)(f.dsil, f.wt + j * nc, nc) : (TYPE)0;
            }
    }
    FN(transpose)(f.acc, n_in, nc, dst + c0 * n_in, n_in);
    return 0;
}
