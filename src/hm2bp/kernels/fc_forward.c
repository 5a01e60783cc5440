/* The event-driven forward pass of a fully connected layer. The input spikes S [R = T·B rows (r = t·B + b),
 * N_in] are a CSR index (hm2bp_events); W [N, N_in] is row-major, as torch keeps it. Without lateral
 * coupling the N neurons are independent, so the work is split into blocks of at most FC_BLOCK neurons,
 * block-major: each thread transposes its block's rows of W into scratch memory once, so that every input
 * spike touches one contiguous row of that slice of Wᵀ, and the slice stays in the cache while every sample
 * and step goes through it. Every buffer is [T, block] at most, so no [T, B, N] float tensor (drive, C̃) is
 * ever formed, and no Wᵀ either. */
#include "hm2bp_kernels.h"

#ifndef FC_BLOCK
#define FC_BLOCK 64
#endif

/* Neuron block width: FC_BLOCK, narrower when that leaves fewer than 4 blocks per thread; the whole
 * layer when lateral weights couple its neurons. */
static int64_t fc_block(int64_t N, int coupled, int64_t n_threads) {
    if (coupled) return N > 0 ? N : 1;
    int64_t want = (N + 4 * n_threads - 1) / (4 * n_threads);
    want = (want + 7) / 8 * 8;
    if (want < 16) want = 16;
    return want < FC_BLOCK ? want : FC_BLOCK;
}

/* 1 when a[0:n] holds no NaN and no inf (x − x is 0 exactly for finite x); vectorised, no branches. */
static int all_finite_f32(const float *a, int64_t n) {
    int ok = 1;
    for (int64_t i = 0; i < n; i++) ok &= (a[i] - a[i]) == 0.0f;
    return ok;
}

/* d[0:n] = Σ_{j ∈ row r} wt[j, 0:n] (rows ld apart): the drive W·s of one step, sample and neuron block.
 * Summed in chunks of 16 neurons held in registers across the row's spikes (each d[i] is still the sum
 * of its weights in spike order, from 0). */
static inline void row_sum_f32(const int64_t *restrict row_ptr, const int32_t *restrict cols,
                               const float *restrict wt, int64_t ld, int64_t r, int64_t n, float *restrict d) {
    int64_t k0 = row_ptr[r], k1 = row_ptr[r + 1];
    int64_t i0 = 0;
    for (; i0 + 16 <= n; i0 += 16) {
        float acc[16] = {0};
        for (int64_t k = k0; k < k1; k++) {
            const float *w = wt + (int64_t)cols[k] * ld + i0;
            for (int i = 0; i < 16; i++) acc[i] += w[i];
        }
        for (int i = 0; i < 16; i++) d[i0 + i] = acc[i];
    }
    for (int64_t i = i0; i < n; i++) {
        float acc = 0.0f;
        for (int64_t k = k0; k < k1; k++) acc += wt[(int64_t)cols[k] * ld + i];
        d[i] = acc;
    }
}

/* One thread's buffers (scratch memory), for blocks of up to blk neurons. */
typedef struct {
    float *wt;                 /* the current block's Wᵀ [n_in, nc] */
    float *v, *x, *cur, *o, *drive;
    int32_t *r;
    double *cm, *cs, *am, *as, *acc;
    int64_t *prev, *lo, *act;  /* act: the block's neurons that fired */
    uint8_t *fired;            /* their spikes, [T, n_act] */
} fw_buffers;

static int fw_take(fw_buffers *f, int64_t T, int64_t blk, int64_t n_in, int keep, int lateral) {
    size_t vec = SCRATCH(blk * sizeof(double)), steps = SCRATCH((keep ? T : 1) * blk * sizeof(double));
    if (!scratch_begin(11 * vec + 3 * steps + SCRATCH(n_in * blk * sizeof(float)) + SCRATCH((keep ? T : 1) * blk)))
        return 0;
    f->wt = scratch_take(n_in * blk * sizeof(float));
    f->v = scratch_take(blk * sizeof(float));
    f->x = scratch_take(blk * sizeof(float));
    f->r = scratch_take(blk * sizeof(int32_t));
    f->cur = lateral ? scratch_take(blk * sizeof(float)) : NULL;
    f->o = scratch_take(blk * sizeof(float));
    f->drive = scratch_take((keep ? T : 1) * blk * sizeof(float));
    f->cm = keep ? scratch_take(T * blk * sizeof(double)) : NULL;
    f->cs = keep ? scratch_take(T * blk * sizeof(double)) : NULL;
    f->am = scratch_take(blk * sizeof(double));
    f->as = scratch_take(blk * sizeof(double));
    f->prev = scratch_take(blk * sizeof(int64_t));
    f->lo = scratch_take(blk * sizeof(int64_t));
    f->act = scratch_take(blk * sizeof(int64_t));
    f->acc = scratch_take(blk * sizeof(double));
    f->fired = scratch_take((keep ? T : 1) * blk);
    return 1;
}

/* The LIF scan of sample b for the nc neurons of the block at base = b·N + c0, its drive summed spike by
 * spike (the operations of hm2bp_lif_scan_f32); the drive of every step is kept in f->drive when keep. */
static void fw_scan(const hm2bp_params *p, const hm2bp_events *ev, fw_buffers *f, int64_t b, int64_t base,
                    int64_t nc, int keep, const float *lateral, float *out, uint8_t *out_u8) {
    int64_t T = p->T, B = p->B, stride = B * p->N;
    float tau_m = (float)p->tau_m, tau_s = (float)p->tau_s;
    memset(f->v, 0, (size_t)nc * sizeof(float));
    memset(f->x, 0, (size_t)nc * sizeof(float));
    memset(f->r, 0, (size_t)nc * sizeof(int32_t));
    memset(f->o, 0, (size_t)nc * sizeof(float));
    if (T > 0 && out) memset(out + base, 0, (size_t)nc * sizeof(float));
    if (T > 0 && out_u8) memset(out_u8 + base, 0, (size_t)nc);
    for (int64_t t = 1; t < T; t++) {
        float *d = f->drive + (keep ? (t - 1) * nc : 0);
        row_sum_f32(ev->row_ptr, ev->cols, f->wt, nc, (t - 1) * B + b, nc, d);
        const float *c_in = d;
        if (lateral) {  /* one block (nc == N); o still holds the spikes of step t − 1 */
            add_lateral(d, lateral, f->o, f->cur, p->N);
            c_in = f->cur;
        }
        lif_step(f->v, f->x, f->r, c_in, f->o, nc, tau_m, tau_s, p->t_ref, p->theta);
        if (out) memcpy(out + t * stride + base, f->o, (size_t)nc * sizeof(float));
        if (out_u8) {
            uint8_t *u = out_u8 + t * stride + base;
            for (int64_t c = 0; c < nc; c++) u[c] = f->o[c] != 0.0f;
        }
    }
}

/* The spike counts of the block in sample b and σ's numerator psp_drive = Σ_t C̃_i(t)·drive_i(t) in
 * double, from the kept drive and the block's spikes in out_u8 (only the neurons that fired: 0 for a
 * silent one). */
static void fw_psp_drive(const hm2bp_params *p, const hm2bp_events *ev, fw_buffers *f, const exp_table *et,
                         int64_t b, int64_t base, int64_t nc, const uint8_t *out_u8, int32_t *counts,
                         double *psp_drive) {
    int64_t T = p->T, B = p->B, stride = B * p->N;
    double dm = exp(-1.0 / p->tau_m), ds = exp(-1.0 / p->tau_s);
    int32_t *cnt = counts + base;
    memset(cnt, 0, (size_t)nc * sizeof(int32_t));
    for (int64_t t = 0; t < T; t++) {
        const uint8_t *u = out_u8 + t * stride + base;
        for (int64_t c = 0; c < nc; c++) cnt[c] += u[c];
    }
    if (T > 0) row_sum_f32(ev->row_ptr, ev->cols, f->wt, nc, (T - 1) * B + b, nc, f->drive + (T - 1) * nc);
    int64_t n_act = 0;
    for (int64_t c = 0; c < nc; c++) {
        psp_drive[base + c] = 0;
        if (cnt[c] > 0) f->act[n_act++] = c;
    }
    if (n_act == 0) return;
    psp_cover cv;
    gather_columns(out_u8 + base, stride, T, f->act, n_act, f->fired);
    psp_scatter_f64(f->fired, n_act, T, n_act, et, p->t_ref, p->window, f->cm, f->cs, f->prev);
    cover_init(&cv, f->fired, n_act, T, p->t_ref, p->window, f->lo, n_act);
    for (int64_t a = 0; a < n_act; a++) { f->am[a] = 0; f->as[a] = 0; f->acc[a] = 0; }
    for (int64_t t = T - 1; t >= 0; t--) {
        const float *d = f->drive + t * nc;
        filter_step_f64(f->am, f->as, f->cm + t * n_act, f->cs + t * n_act, n_act, dm, ds, &cv, t);
        for (int64_t a = 0; a < n_act; a++) f->acc[a] += (f->am[a] + f->as[a]) * (double)d[f->act[a]];
    }
    for (int64_t a = 0; a < n_act; a++) psp_drive[base + f->act[a]] = f->acc[a];
}

/* Forward: the drive of each step is summed from the input spikes and integrated at once by lif_step
 * (the same spikes as a scan of the same drive). The spikes go to out [T, B, N] (float 0/1) and/or out_u8
 * (same layout, one byte each), whichever is not NULL. With counts and psp_drive (which need out_u8),
 * counts [B, N] gets the spike counts and psp_drive [B, N] σ's numerator Σ_l w_il e_{i|l} (fw_psp_drive):
 * the backward pass then needs neither the drive nor a second pass over the input spikes. Every block of W
 * is checked for NaN/inf as it is transposed (the forward reads all of W anyway, so the check costs no
 * pass over memory). Returns 0, -1 without memory, or -2 when W holds NaN or inf (the outputs are then
 * garbage). */
int hm2bp_fc_forward_f32(const hm2bp_params *p, const hm2bp_events *ev, const float *w, const float *lateral,
                         float *out, uint8_t *out_u8, int32_t *counts, double *psp_drive) {
    if (!params_ok(p)) return HM2BP_BAD_PARAMS;
    int64_t T = p->T, B = p->B, N = p->N, n_in = p->n_in;
    int keep = out_u8 && counts && psp_drive;
    if (!out && !out_u8) return 0;
    int64_t nt = thread_count(p);
    int64_t blk = fc_block(N, lateral != NULL, nt);
    int64_t n_blocks = (N + blk - 1) / blk;
    int failed = 0, bad_weights = 0;
    exp_table et;
    if (keep && !exp_table_init(&et, p->tau_m, p->tau_s, T)) return -1;
#pragma omp parallel num_threads(nt) reduction(| : failed, bad_weights)
    {
        fw_buffers f = {0};
        int ok = fw_take(&f, T, blk, n_in, keep, lateral != NULL);
        if (!ok) failed |= 1;
        int64_t wt_block = -1;
#pragma omp for collapse(2) schedule(static)
        for (int64_t cb = 0; cb < n_blocks; cb++) {
            for (int64_t b = 0; b < B; b++) {
                if (!ok) continue;
                int64_t c0 = cb * blk, nc = N - c0 < blk ? N - c0 : blk;
                if (wt_block != cb) {
                    transpose_f32(w + c0 * n_in, nc, n_in, f.wt, nc);
                    wt_block = cb;
                    bad_weights |= !all_finite_f32(f.wt, nc * n_in);
                }
                fw_scan(p, ev, &f, b, b * N + c0, nc, keep, lateral, out, out_u8);
                if (keep) fw_psp_drive(p, ev, &f, &et, b, b * N + c0, nc, out_u8, counts, psp_drive);
            }
        }
    }
    if (keep) free(et.mem);
    return failed ? -1 : bad_weights ? -2 : 0;
}
