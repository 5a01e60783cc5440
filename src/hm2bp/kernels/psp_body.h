/* The S-PSP coefficients in TYPE (a body file of instantiate.h). */

/* Per-spike S-PSP coefficients (docs/algorithm.md §2, docs/algorithm.md §8.2; derivation in functional/psp.py) of nc columns:
 * post[t * stride + k] is the 0/1 spike of column k at step t. cm/cs [T, nc] receive the τ_m and τ_s
 * coefficients (computed in double, stored as TYPE); a backward filter in time turns them into C̃. */
void FN(psp_scatter)(const uint8_t *post, int64_t stride, int64_t T, int64_t nc, const exp_table *et,
                     int32_t t_ref, int64_t window, TYPE *cm, TYPE *cs, int64_t *prev) {
    double c = 1.0 / (1.0 - et->tau_s / et->tau_m);
    memset(cm, 0, (size_t)(T * nc) * sizeof(TYPE));
    memset(cs, 0, (size_t)(T * nc) * sizeof(TYPE));
    for (int64_t k = 0; k < nc; k++) prev[k] = -1;
    for (int64_t t = 0; t < T; t++) {
        const uint8_t *row = post + t * stride;
        for (int64_t k = 0; k < nc; k++) {
            if (!(k & 7) && k + 8 <= nc) { /* skip 8 silent neurons at once (most are) */
                uint64_t word;
                memcpy(&word, row + k, 8);
                if (!word) { k += 7; continue; }
            }
            if (!row[k]) continue;
            int64_t a = t - t_ref, lo = t - window < 1 ? 1 : t - window;
            int64_t p = prev[k];
            int64_t a0 = p >= 0 ? (p > lo ? p : lo) : lo;
            if (a >= a0) { /* case A: pre spikes in [a0, a] */
                int64_t span = a - a0 + 1;
                cm[a * nc + k] += (TYPE)c;
                cm[(a0 - 1) * nc + k] += (TYPE)(-c * exp_m(et, span));
                cs[a * nc + k] += (TYPE)(-c);
                cs[(a0 - 1) * nc + k] += (TYPE)(c * exp_s(et, span));
            }
            if (p >= 0) { /* case B: pre spikes before the previous post spike (reset branch) */
                int64_t hi = p - 1 < a ? p - 1 : a;
                if (hi >= lo) {
                    int64_t sk = t - p - t_ref;
                    double eps = c * (exp_m(et, sk) - exp_s(et, sk));
                    cs[hi * nc + k] += (TYPE)(eps * exp_s(et, p - hi));
                    cs[(lo - 1) * nc + k] += (TYPE)(-eps * exp_s(et, p - lo + 1));
                }
            }
            prev[k] = t;
        }
    }
}

#ifndef PSP_BLOCK
#define PSP_BLOCK 128
#endif

/* C̃ of docs/algorithm.md §2 straight from the post spikes (uint8 [T, M], M = p->N columns): blocks of PSP_BLOCK columns
 * scatter their coefficients into a small local buffer, then filter it backwards in time into out [T, M].
 * Returns 0, or -1 without memory. */
int FN(hm2bp_psp_coeffs)(const hm2bp_params *p, const uint8_t *post, TYPE *out) {
    if (!params_ok(p)) return HM2BP_BAD_PARAMS;
    int64_t T = p->T, M = p->N;
    int64_t n_blocks = (M + PSP_BLOCK - 1) / PSP_BLOCK;
    TYPE dm = (TYPE)exp(-1.0 / p->tau_m), ds = (TYPE)exp(-1.0 / p->tau_s);
    exp_table et;
    if (!exp_table_init(&et, p->tau_m, p->tau_s, T)) return -1;
    int failed = 0;
#pragma omp parallel for num_threads(thread_count(p)) schedule(dynamic, 4) reduction(| : failed)
    for (int64_t blk = 0; blk < n_blocks; blk++) {
        int64_t c0 = blk * PSP_BLOCK, nc = M - c0 < PSP_BLOCK ? M - c0 : PSP_BLOCK;
        if (!scratch_begin(2 * SCRATCH(T * nc * sizeof(TYPE)))) { failed |= 1; continue; }
        TYPE *cm = scratch_take(T * nc * sizeof(TYPE)), *cs = scratch_take(T * nc * sizeof(TYPE));
        int64_t prev[PSP_BLOCK], lo[PSP_BLOCK];
        TYPE am[PSP_BLOCK], as[PSP_BLOCK];
        psp_cover cv;
        FN(psp_scatter)(post + c0, M, T, nc, &et, p->t_ref, p->window, cm, cs, prev);
        cover_init(&cv, post + c0, M, T, p->t_ref, p->window, lo, nc);
        for (int64_t k = 0; k < nc; k++) { am[k] = 0; as[k] = 0; }
        for (int64_t t = T - 1; t >= 0; t--) {
            TYPE *o = out + t * M + c0;
            FN(filter_step)(am, as, cm + t * nc, cs + t * nc, nc, dm, ds, &cv, t);
            for (int64_t k = 0; k < nc; k++) o[k] = am[k] + as[k];
        }
    }
    free(et.mem);
    return failed ? -1 : 0;
}
