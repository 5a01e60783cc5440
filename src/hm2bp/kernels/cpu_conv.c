/* Event-driven spiking conv and pool layers (design.md §1-§3; spec §1.2 CONVSPIKING/POOLINGSPIKING, §3.5).
 *
 * Every layer reads its input spikes as a CSR index over rows r = t·B + b whose columns are the flat input
 * positions c·H·W + u·W + v in ascending order (kernels/cpu.py spike_index). The drive of each step is
 * summed from the spikes and integrated at once by the LIF step of cpu_scan.c, so no [T, B, K, Ho, Wo]
 * float drive exists; the output spikes are one byte each. A spike visits the k² outputs it reaches and adds
 * one contiguous vector of kernel weights per output, so an output's drive is summed in ascending (c, i, j)
 * order: the authors' loop order (and the float64 reference's), bit for bit.
 *
 * The backward pass rebuilds C̃ (spec §2, functional/psp.py) only for the neurons that fired and contracts it
 * with the input spikes step by step, in double: the weight gradient is a sum over input spikes of
 * f·C̃ at the outputs they reach, the effect-ratio error below a sum over input spikes of δ̂·C̃·W.
 *
 * Work items are (sample, block of output channels): whole samples when there are at least as many samples
 * as threads, else the channels are split so that batch 1 uses every thread. Per-sample partial results
 * are reduced in sample order afterwards, so the results do not depend on the number of threads.
 *
 * Built by kernels/cpu_conv.py with the flags of cpu_scan.c; its helpers are included from there. */
#include "cpu_scan.c"

/* One layer's geometry and neuron constants (a ctypes Structure in kernels/cpu_conv.py, same order). */
typedef struct {
    int64_t T, B, C, H, W; /* input: T steps, B samples, C maps of H×W */
    int64_t K, k;          /* conv: K kernels of k×k; pool: K = C, k = pool size */
    int64_t Ho, Wo;        /* output map */
    float tau_m, tau_s, theta;
    int32_t t_ref;
    int64_t window;              /* S-PSP look-back window */
    double psp_tau_m, psp_tau_s; /* τ_m, τ_s of the S-PSP (double, as in cpu_scan.c) */
    int32_t n_threads;
} layer_args;

/* Blocks of output channels per sample: 1 when the samples alone keep every thread busy. */
static int64_t channel_blocks(int64_t B, int64_t K, int64_t nt) {
    if (B >= nt) return 1;
    int64_t n = (nt + B - 1) / B;
    return n < K ? n : K;
}

/* Range [q0, q1) of the spikes of row r whose channel lies in [c0, c1) (columns are ascending). */
static void channel_range(const int64_t *row_ptr, const int32_t *cols, int64_t r, int64_t HW, int64_t c0,
                          int64_t c1, int64_t *q0, int64_t *q1) {
    int64_t q = row_ptr[r], e = row_ptr[r + 1];
    while (q < e && cols[q] < c0 * HW) q++;
    *q0 = q;
    while (q < e && cols[q] < c1 * HW) q++;
    *q1 = q;
}

/* Output rows/columns reached by input position u along one axis: kernel offsets i in [*i0, *i1]. */
static inline void reach(int64_t u, int64_t n_out, int64_t k, int64_t *i0, int64_t *i1) {
    *i0 = u - n_out + 1 > 0 ? u - n_out + 1 : 0;
    *i1 = u < k - 1 ? u : k - 1;
}

/* d [Ho·Wo, nk] += the weights wt [C, k, k, nk] of every spike of row r (the drive of one step). */
static void conv_scatter(const layer_args *a, const int64_t *row_ptr, const int32_t *cols, int64_t r,
                         const float *restrict wt, int64_t nk, float *restrict d) {
    int64_t HW = a->H * a->W, k = a->k;
    for (int64_t q = row_ptr[r]; q < row_ptr[r + 1]; q++) {
        int64_t j = cols[q], c = j / HW, u = j % HW / a->W, v = j % a->W, i0, i1, j0, j1;
        reach(u, a->Ho, k, &i0, &i1);
        reach(v, a->Wo, k, &j0, &j1);
        for (int64_t i = i0; i <= i1; i++)
            for (int64_t jj = j0; jj <= j1; jj++) {
                float *restrict dp = d + ((u - i) * a->Wo + (v - jj)) * nk;
                const float *restrict wp = wt + ((c * k + i) * k + jj) * nk;
                for (int64_t kk = 0; kk < nk; kk++) dp[kk] += wp[kk];
            }
    }
}

/* The spikes o [P, nk] (position-major, as the block's state) of step t into out/out_u8 [T, B, K, P]. */
static void write_spikes(const float *o, int64_t P, int64_t nk, float *out, uint8_t *out_u8) {
    for (int64_t kk = 0; kk < nk; kk++)
        for (int64_t p = 0; p < P; p++) {
            float s = o[p * nk + kk];
            if (out) out[kk * P + p] = s;
            out_u8[kk * P + p] = s != 0.0f;
        }
}

/* σ's numerator Σ_t C̃_i(t)·drive_i(t) (= Σ_l w_il e_{i|l}) of the n_act neurons that fired, in double:
 * their spikes are gathered from post (offsets off, rows stride apart), drive [T, *] is read at idx. */
static void psp_drive_of(const uint8_t *post, int64_t stride, int64_t T, const int64_t *off, const int64_t *idx,
                         int64_t n_act, int64_t ld, const float *drive, const exp_table *et, int32_t t_ref,
                         int64_t window, uint8_t *fired, double *cm, double *cs, int64_t *prev, double *am,
                         double *as, double *acc) {
    double dm = exp(-1.0 / et->tau_m), ds = exp(-1.0 / et->tau_s);
    gather_columns(post, stride, T, off, n_act, fired);
    psp_scatter_f64(fired, n_act, T, n_act, et, t_ref, window, cm, cs, prev);
    for (int64_t q = 0; q < n_act; q++) { am[q] = 0; as[q] = 0; acc[q] = 0; }
    for (int64_t t = T - 1; t >= 0; t--) {
        filter_step_f64(am, as, cm + t * n_act, cs + t * n_act, n_act, dm, ds);
        for (int64_t q = 0; q < n_act; q++) acc[q] += (am[q] + as[q]) * (double)drive[t * ld + idx[q]];
    }
}

/* Forward of a conv layer: spikes to out_u8 [T, B, K, Ho, Wo] (and out, float 0/1, when not NULL); with
 * counts [B, K·P] and psp_drive [B, K·P] (double) also what the backward pass needs. wt [n_blocks][C, k, k,
 * nk] holds each channel block's weights, channels innermost. Returns 0 or -1 without memory. */
int hm2bp_conv_forward_f32(const layer_args *a, const int64_t *row_ptr, const int32_t *cols, const float *wt,
                           float *out, uint8_t *out_u8, int32_t *counts, double *psp_drive) {
    int64_t T = a->T, B = a->B, K = a->K, P = a->Ho * a->Wo, ckk = a->C * a->k * a->k;
    int64_t nt = a->n_threads > 0 ? a->n_threads : 1, nkb = channel_blocks(B, K, nt);
    int keep = counts && psp_drive;
    int failed = 0;
    exp_table et;
    if (keep && !exp_table_init(&et, a->psp_tau_m, a->psp_tau_s, T)) return -1;
    int64_t kmax = (K + nkb - 1) / nkb, nb_max = P * kmax;
#pragma omp parallel for num_threads(nt) collapse(2) schedule(dynamic, 1) reduction(| : failed)
    for (int64_t b = 0; b < B; b++)
        for (int64_t kb = 0; kb < nkb; kb++) {
            int64_t k0, nk = block_bounds(K, nkb, kb, &k0), nb = P * nk, steps = keep ? T : 1;
            size_t vec = SCRATCH(nb_max * sizeof(double));
            if (!scratch_begin(12 * vec + SCRATCH(steps * nb_max * sizeof(float)) + SCRATCH(T * nb_max) +
                               2 * SCRATCH(T * nb_max * sizeof(double)))) { failed |= 1; continue; }
            float *v = scratch_take(nb * sizeof(float)), *x = scratch_take(nb * sizeof(float));
            float *o = scratch_take(nb * sizeof(float));
            int32_t *r = scratch_take(nb * sizeof(int32_t)), *cnt = scratch_take(nb * sizeof(int32_t));
            float *drive = scratch_take(steps * nb * sizeof(float));
            memset(v, 0, (size_t)nb * sizeof(float));
            memset(x, 0, (size_t)nb * sizeof(float));
            memset(r, 0, (size_t)nb * sizeof(int32_t));
            memset(o, 0, (size_t)nb * sizeof(float));
            memset(cnt, 0, (size_t)nb * sizeof(int32_t));
            const float *w = wt + kb * ckk * kmax;
            int64_t base = b * K * P + k0 * P, stride = B * K * P;
            if (T > 0) write_spikes(o, P, nk, out ? out + base : NULL, out_u8 + base);
            for (int64_t t = 1; t < T; t++) {
                float *d = drive + (keep ? (t - 1) * nb : 0);
                memset(d, 0, (size_t)nb * sizeof(float));
                conv_scatter(a, row_ptr, cols, (t - 1) * B + b, w, nk, d);
                lif_step(v, x, r, d, o, nb, a->tau_m, a->tau_s, a->t_ref, a->theta);
                write_spikes(o, P, nk, out ? out + t * stride + base : NULL, out_u8 + t * stride + base);
                for (int64_t n = 0; n < nb; n++) cnt[n] += o[n] != 0.0f;
            }
            if (!keep) continue;
            if (T > 0) {
                memset(drive + (T - 1) * nb, 0, (size_t)nb * sizeof(float));
                conv_scatter(a, row_ptr, cols, (T - 1) * B + b, w, nk, drive + (T - 1) * nb);
            }
            int64_t *off = scratch_take(nb * sizeof(int64_t)), *idx = scratch_take(nb * sizeof(int64_t));
            int64_t n_act = 0;
            for (int64_t kk = 0; kk < nk; kk++)
                for (int64_t p = 0; p < P; p++) {
                    int32_t c = cnt[p * nk + kk];
                    counts[base + kk * P + p] = c;
                    psp_drive[base + kk * P + p] = 0.0;
                    if (c > 0) { off[n_act] = kk * P + p; idx[n_act++] = p * nk + kk; }
                }
            if (n_act == 0) continue;
            uint8_t *fired = scratch_take(T * n_act);
            double *cm = scratch_take(T * nb * sizeof(double)), *cs = scratch_take(T * nb * sizeof(double));
            double *am = scratch_take(nb * sizeof(double)), *as = scratch_take(nb * sizeof(double));
            double *acc = scratch_take(nb * sizeof(double));
            int64_t *prev = scratch_take(nb * sizeof(int64_t));
            psp_drive_of(out_u8 + base, stride, T, off, idx, n_act, nb, drive, &et, a->t_ref, a->window, fired, cm,
                         cs, prev, am, as, acc);
            for (int64_t q = 0; q < n_act; q++) psp_drive[base + off[q]] = acc[q];
        }
    if (keep) free(et.mem);
    return failed ? -1 : 0;
}

/* Forward of a pool layer (size = skip = k, windows clipped to the map): the drive of pool neuron (c, x, y)
 * is the number of input spikes in its window; spikes to out_u8 [T, B, C, Ho, Wo] (and out when not
 * NULL), counts [B, C·P] when not NULL. Returns 0 or -1 without memory. */
int hm2bp_pool_forward_f32(const layer_args *a, const int64_t *row_ptr, const int32_t *cols, float *out,
                           uint8_t *out_u8, int32_t *counts) {
    int64_t T = a->T, B = a->B, C = a->C, HW = a->H * a->W, P = a->Ho * a->Wo, p = a->k;
    int64_t nt = a->n_threads > 0 ? a->n_threads : 1, ncb = channel_blocks(B, C, nt);
    int64_t nb_max = P * ((C + ncb - 1) / ncb);
    int failed = 0;
#pragma omp parallel for num_threads(nt) collapse(2) schedule(dynamic, 1) reduction(| : failed)
    for (int64_t b = 0; b < B; b++)
        for (int64_t cb = 0; cb < ncb; cb++) {
            int64_t c0, nc = block_bounds(C, ncb, cb, &c0), nb = P * nc;
            if (!scratch_begin(6 * SCRATCH(nb_max * sizeof(float)))) { failed |= 1; continue; }
            float *v = scratch_take(nb * sizeof(float)), *x = scratch_take(nb * sizeof(float));
            float *o = scratch_take(nb * sizeof(float)), *d = scratch_take(nb * sizeof(float));
            int32_t *r = scratch_take(nb * sizeof(int32_t)), *cnt = scratch_take(nb * sizeof(int32_t));
            memset(cnt, 0, (size_t)nb * sizeof(int32_t));
            memset(v, 0, (size_t)nb * sizeof(float));
            memset(x, 0, (size_t)nb * sizeof(float));
            memset(r, 0, (size_t)nb * sizeof(int32_t));
            memset(o, 0, (size_t)nb * sizeof(float));
            int64_t base = (b * C + c0) * P, stride = B * C * P;
            if (T > 0) write_spikes(o, nb, 1, out ? out + base : NULL, out_u8 + base);
            for (int64_t t = 1; t < T; t++) {
                int64_t q0, q1;
                memset(d, 0, (size_t)nb * sizeof(float));
                channel_range(row_ptr, cols, (t - 1) * B + b, HW, c0, c0 + nc, &q0, &q1);
                for (int64_t q = q0; q < q1; q++) {
                    int64_t j = cols[q] - c0 * HW, c = j / HW, u = j % HW / a->W, w = j % a->W;
                    d[c * P + u / p * a->Wo + w / p] += 1.0f;
                }
                lif_step(v, x, r, d, o, nb, a->tau_m, a->tau_s, a->t_ref, a->theta);
                write_spikes(o, nb, 1, out ? out + t * stride + base : NULL, out_u8 + t * stride + base);
                for (int64_t n = 0; n < nb; n++) cnt[n] += o[n] != 0.0f;
            }
            if (counts) memcpy(counts + base, cnt, (size_t)nb * sizeof(int32_t));
        }
    return failed ? -1 : 0;
}

/* The neurons of a block that fired (position-major index idx, offset off in the sample's [K·P] layout) and
 * their gathered C̃ ingredients; shared by the two backward passes. Returns n_act. */
static int64_t active_neurons(const int32_t *counts, int64_t P, int64_t nk, int positions_major, int64_t *off,
                              int64_t *idx) {
    int64_t n_act = 0;
    for (int64_t kk = 0; kk < nk; kk++)
        for (int64_t p = 0; p < P; p++)
            if (counts[kk * P + p] > 0) {
                off[n_act] = kk * P + p;
                idx[n_act++] = positions_major ? p * nk + kk : kk * P + p;
            }
    return n_act;
}


/* C̃ of the n_act listed neurons of one sample (their spikes gathered from post at off, rows stride apart) as
 * scattered coefficients cm, cs [T, n_act]; returns the last step at which any of them fired (C̃ is 0 after it). */
static int64_t psp_of_active(const uint8_t *post, int64_t stride, int64_t T, const int64_t *off, int64_t n_act,
                             const exp_table *et, int32_t t_ref, int64_t window, uint8_t *fired, double *cm,
                             double *cs, int64_t *prev) {
    gather_columns(post, stride, T, off, n_act, fired);
    psp_scatter_f64(fired, n_act, T, n_act, et, t_ref, window, cm, cs, prev);
    int64_t last = -1;
    for (int64_t q = 0; q < n_act; q++) last = prev[q] > last ? prev[q] : last;
    return last;
}

/* The per-sample, per-block parts of the conv backward pass (see hm2bp_conv_backward). */
typedef struct {
    const layer_args *a;
    const uint8_t *post;
    const int32_t *counts;
    const int64_t *row_ptr, *counts_in;
    const int32_t *cols;
    const double *wt, *wsum, *delta, *psp_drive;
    double v_th, silent_psp;
    int32_t mode;
    const exp_table *et;
} conv_bw;

/* g [C·k·k, nk] += Σ over the outputs reached by input (c, u, v) of vec [P, nk] at them; with wt the dot
 * products Σ vec·wt over the same outputs are returned (0 without wt). */
static double conv_gather(const layer_args *a, int64_t c, int64_t u, int64_t v, const double *restrict vec,
                          int64_t nk, double *restrict g, const double *restrict wt) {
    int64_t k = a->k, i0, i1, j0, j1;
    double dot = 0.0;
    reach(u, a->Ho, k, &i0, &i1);
    reach(v, a->Wo, k, &j0, &j1);
    for (int64_t i = i0; i <= i1; i++)
        for (int64_t jj = j0; jj <= j1; jj++) {
            const double *restrict vp = vec + ((u - i) * a->Wo + (v - jj)) * nk;
            int64_t e = ((c * k + i) * k + jj) * nk;
            if (g)
                for (int64_t kk = 0; kk < nk; kk++) g[e + kk] += vp[kk];
            if (wt) dot += dot_f64(vp, wt + e, nk);
        }
    return dot;
}

/* One work item of the conv backward: sample b, output channels [k0, k0 + nk). g [C·k·k, nk] receives its
 * weight gradient, sums [3, C·H·W] the effect-ratio, all-δ̂ and silent-δ̂ terms of its error below. */
static int conv_backward_item(const conv_bw *z, int64_t b, int64_t k0, int64_t nk, const double *wt, double *g,
                              double *sums) {
    const layer_args *a = z->a;
    int64_t T = a->T, B = a->B, K = a->K, P = a->Ho * a->Wo, HW = a->H * a->W, CHW = a->C * HW;
    int64_t nb = P * nk, base = b * K * P + k0 * P, stride = B * K * P;
    size_t vec = SCRATCH(nb * sizeof(double));
    if (!scratch_begin(13 * vec + 2 * SCRATCH(T * nb * sizeof(double)) + SCRATCH(T * nb))) return 1;
    double *fac = scratch_take(nb * sizeof(double)), *dh = scratch_take(nb * sizeof(double));
    double *fs = scratch_take(nb * sizeof(double)), *dsil = scratch_take(nb * sizeof(double));
    double *cf = scratch_take(nb * sizeof(double)), *cd = scratch_take(nb * sizeof(double));
    double *fa = scratch_take(nb * sizeof(double)), *da = scratch_take(nb * sizeof(double));
    double *am = scratch_take(nb * sizeof(double)), *as = scratch_take(nb * sizeof(double));
    int64_t *off = scratch_take(nb * sizeof(int64_t)), *idx = scratch_take(nb * sizeof(int64_t));
    int64_t *prev = scratch_take(nb * sizeof(int64_t));
    int any_silent = 0;
    for (int64_t kk = 0; kk < nk; kk++)
        for (int64_t p = 0; p < P; p++) {
            int64_t n = p * nk + kk, i = base + kk * P + p, o = z->counts[i];
            dh[n] = z->delta[i] / z->v_th;
            fac[n] = layer_factor_f64(z->delta[i], o, z->psp_drive[i], z->wsum[k0 + kk], NULL, z->v_th);
            fs[n] = o == 0 ? z->silent_psp * fac[n] : 0.0;
            dsil[n] = o == 0 ? dh[n] : 0.0;
            any_silent |= o == 0 && fac[n] != 0.0;
            cf[n] = 0.0;
            cd[n] = 0.0;
        }
    double *th = sums, *al = sums + CHW, *si = sums + 2 * CHW;
    int64_t n_act = active_neurons(z->counts + base, P, nk, 1, off, idx);
    if (n_act > 0) {
        uint8_t *fired = scratch_take(T * n_act);
        double *cm = scratch_take(T * n_act * sizeof(double)), *cs = scratch_take(T * n_act * sizeof(double));
        int64_t last = psp_of_active(z->post + base, stride, T, off, n_act, z->et, a->t_ref, a->window, fired, cm,
                                     cs, prev);
        double dm = exp(-1.0 / z->et->tau_m), ds = exp(-1.0 / z->et->tau_s);
        for (int64_t q = 0; q < n_act; q++) { am[q] = 0; as[q] = 0; fa[q] = fac[idx[q]]; da[q] = dh[idx[q]]; }
        for (int64_t t = last < T - 1 ? last : T - 1; t >= 0; t--) {  /* C̃(t) = 0 after the last spike */
            filter_step_f64(am, as, cm + t * n_act, cs + t * n_act, n_act, dm, ds);
            for (int64_t q = 0; q < n_act; q++) {
                double c = am[q] + as[q];
                cf[idx[q]] = c * fa[q];
                cd[idx[q]] = c * da[q];
            }
            int64_t r = t * B + b;
            for (int64_t q = z->row_ptr[r]; q < z->row_ptr[r + 1]; q++) {
                int64_t j = z->cols[q], c = j / HW, u = j % HW / a->W, v = j % a->W;
                conv_gather(a, c, u, v, cf, nk, g, NULL);
                if (z->mode == 2) th[j] += conv_gather(a, c, u, v, cd, nk, NULL, wt);
            }
        }
    }
    for (int64_t j = 0; j < CHW && (any_silent || z->mode); j++) {  /* spec §2's e = 0.1; the δ̂·W terms */
        int64_t c = j / HW, u = j % HW / a->W, v = j % a->W;
        if (any_silent && z->counts_in[b * CHW + j] > 0) conv_gather(a, c, u, v, fs, nk, g, NULL);
        if (z->mode) {
            al[j] += conv_gather(a, c, u, v, dh, nk, NULL, wt);
            si[j] += conv_gather(a, c, u, v, dsil, nk, NULL, wt);
        }
    }
    return 0;
}

/* Backward of a conv layer (spec §3.5; the rules of functional/hm2bp.py's conv_backward), in double:
 *   δ̂ = δ/ν; σ = psp_drive/(ν·o) for a neuron that fired, else 0.5·Σ W[k]/ν (wsum [K]); f = δ̂(1 + σ);
 *   grad [K, C, k, k] = Σ_b Σ_{x,y} f·e (e = Σ_t C̃(t)·s_in(t), or silent_psp for a silent output and an
 *   input that fired);
 *   below [B, C·H·W] (mode 1: the transposed conv of δ̂ with W; mode 2, the effect ratio: Σ δ̂·W·e / o_in +
 *   the transposed conv of the silent outputs' δ̂ where o_in > 0, else of all δ̂; mode 0: none).
 * post [T, B, K, Ho, Wo] uint8 and counts [B, K·P] are the forward's; counts_in [B, C·H·W]; wt is W as
 * [n_blocks][C, k, k, nk] (channels innermost). Returns 0 or -1 without memory. */
int hm2bp_conv_backward(const layer_args *a, const uint8_t *post, const int32_t *counts, const int64_t *row_ptr,
                        const int32_t *cols, const int64_t *counts_in, const double *wt, const double *wsum,
                        const double *delta, const double *psp_drive, double v_th, int32_t mode, double silent_psp,
                        double *grad, double *below) {
    int64_t T = a->T, B = a->B, K = a->K, ckk = a->C * a->k * a->k, CHW = a->C * a->H * a->W;
    int64_t nt = a->n_threads > 0 ? a->n_threads : 1, nkb = channel_blocks(B, K, nt), kmax = (K + nkb - 1) / nkb;
    exp_table et;
    if (!exp_table_init(&et, a->psp_tau_m, a->psp_tau_s, T)) return -1;
    double *part = calloc((size_t)(B * nkb * ckk * kmax) + 1, sizeof(double));
    double *sums = calloc((size_t)(B * nkb * 3 * CHW) + 1, sizeof(double));
    conv_bw z = {a, post, counts, row_ptr, counts_in, cols, wt, wsum, delta, psp_drive, v_th, silent_psp, mode, &et};
    int failed = !part || !sums;
#pragma omp parallel for num_threads(nt) collapse(2) schedule(dynamic, 1) reduction(| : failed)
    for (int64_t b = 0; b < B; b++)
        for (int64_t kb = 0; kb < nkb; kb++) {
            if (failed) continue;
            int64_t k0, nk = block_bounds(K, nkb, kb, &k0), item = b * nkb + kb;
            failed |= conv_backward_item(&z, b, k0, nk, wt + kb * ckk * kmax, part + item * ckk * kmax,
                                         sums + item * 3 * CHW);
        }
    if (!failed) {
        for (int64_t kb = 0; kb < nkb; kb++) {  /* grad[k0 + kk, e] = Σ_b part[b, kb][e, kk], in sample order */
            int64_t k0, nk = block_bounds(K, nkb, kb, &k0);
            for (int64_t kk = 0; kk < nk; kk++)
                for (int64_t e = 0; e < ckk; e++) {
                    double s = 0.0;
                    for (int64_t b = 0; b < B; b++) s += part[(b * nkb + kb) * ckk * kmax + e * nk + kk];
                    grad[(k0 + kk) * ckk + e] = s;
                }
        }
        for (int64_t b = 0; b < B && mode; b++)
            for (int64_t j = 0; j < CHW; j++) {
                double th = 0, al = 0, si = 0;
                for (int64_t kb = 0; kb < nkb; kb++) {
                    const double *s3 = sums + (b * nkb + kb) * 3 * CHW;
                    th += s3[j];
                    al += s3[CHW + j];
                    si += s3[2 * CHW + j];
                }
                int64_t o_in = counts_in[b * CHW + j];
                below[b * CHW + j] = mode == 2 && o_in > 0 ? th / (double)o_in + si : al;
            }
    }
    free(part); free(sums); free(et.mem);
    return failed ? -1 : 0;
}

/* Error through a pool layer (spec §3.5): below [B, C·H·W] = δ_pool/p² · r, r = e/o_in when the pool neuron
 * and the input both fired, else 1, e = Σ_t C̃_pool(t)·s_in(t); post [T, B, C, Ho, Wo] uint8 and counts
 * [B, C·P] are the pool's forward spikes, row_ptr/cols/counts_in its input's. Returns 0 or -1 without memory. */
int hm2bp_pool_backward(const layer_args *a, const uint8_t *post, const int32_t *counts, const int64_t *row_ptr,
                        const int32_t *cols, const int64_t *counts_in, const double *delta, double *below) {
    int64_t T = a->T, B = a->B, C = a->C, HW = a->H * a->W, P = a->Ho * a->Wo, p = a->k;
    int64_t nt = a->n_threads > 0 ? a->n_threads : 1, ncb = channel_blocks(B, C, nt);
    int64_t nc_max = (C + ncb - 1) / ncb, nb_max = P * nc_max;
    exp_table et;
    if (!exp_table_init(&et, a->psp_tau_m, a->psp_tau_s, T)) return -1;
    double dm = exp(-1.0 / a->psp_tau_m), ds = exp(-1.0 / a->psp_tau_s);
    int failed = 0;
#pragma omp parallel for num_threads(nt) collapse(2) schedule(dynamic, 1) reduction(| : failed)
    for (int64_t b = 0; b < B; b++)
        for (int64_t cb = 0; cb < ncb; cb++) {
            int64_t c0, nc = block_bounds(C, ncb, cb, &c0), nb = P * nc, nin = nc * HW;
            size_t vec = SCRATCH(nb_max * sizeof(double));
            if (!scratch_begin(6 * vec + SCRATCH(nc_max * HW * sizeof(double)) + 2 * SCRATCH(T * nb_max * sizeof(double))
                               + SCRATCH(T * nb_max))) { failed |= 1; continue; }
            double *ct = scratch_take(nb * sizeof(double)), *e = scratch_take(nin * sizeof(double));
            double *am = scratch_take(nb * sizeof(double)), *as = scratch_take(nb * sizeof(double));
            int64_t *off = scratch_take(nb * sizeof(int64_t)), *idx = scratch_take(nb * sizeof(int64_t));
            int64_t *prev = scratch_take(nb * sizeof(int64_t));
            int64_t base = (b * C + c0) * P, base_in = (b * C + c0) * HW;
            for (int64_t i = 0; i < nb; i++) ct[i] = 0.0;
            for (int64_t i = 0; i < nin; i++) e[i] = 0.0;
            int64_t n_act = active_neurons(counts + base, nb, 1, 0, off, idx);
            if (n_act > 0) {
                uint8_t *fired = scratch_take(T * n_act);
                double *cm = scratch_take(T * n_act * sizeof(double)), *cs = scratch_take(T * n_act * sizeof(double));
                int64_t last = psp_of_active(post + base, B * C * P, T, off, n_act, &et, a->t_ref, a->window, fired,
                                             cm, cs, prev);
                for (int64_t q = 0; q < n_act; q++) { am[q] = 0; as[q] = 0; }
                for (int64_t t = last < T - 1 ? last : T - 1; t >= 0; t--) {
                    filter_step_f64(am, as, cm + t * n_act, cs + t * n_act, n_act, dm, ds);
                    for (int64_t q = 0; q < n_act; q++) ct[off[q]] = am[q] + as[q];
                    int64_t q0, q1;
                    channel_range(row_ptr, cols, t * B + b, HW, c0, c0 + nc, &q0, &q1);
                    for (int64_t q = q0; q < q1; q++) {
                        int64_t j = cols[q] - c0 * HW, c = j / HW, u = j % HW / a->W, w = j % a->W;
                        e[j] += ct[c * P + u / p * a->Wo + w / p];
                    }
                }
            }
            for (int64_t j = 0; j < nin; j++) {
                int64_t c = j / HW, u = j % HW / a->W, w = j % a->W, pi = c * P + u / p * a->Wo + w / p;
                int64_t o_in = counts_in[base_in + j];
                double ratio = counts[base + pi] > 0 && o_in > 0 ? e[j] / (double)o_in : 1.0;
                below[base_in + j] = delta[base + pi] / (double)(p * p) * ratio;
            }
        }
    free(et.mem);
    return failed ? -1 : 0;
}
