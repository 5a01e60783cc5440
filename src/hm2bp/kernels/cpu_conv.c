/* Event-driven spiking conv and pool layers (docs/algorithm.md §8.1-§8.3; docs/algorithm.md §1.2 CONVSPIKING/POOLINGSPIKING, §3.5).
 *
 * Every layer reads its input spikes as a CSR index over rows r = t·B + b whose columns are the flat input
 * positions c·H·W + u·W + v in ascending order (kernels/cpu.py spike_index). The drive of each step is
 * summed from the spikes and integrated at once by the LIF step of hm2bp_kernels.h, so no [T, B, K, Ho, Wo]
 * float drive exists; the output spikes are one byte each. A spike visits the k² outputs it reaches and adds
 * one contiguous vector of kernel weights per output, so an output's drive is summed in ascending (c, i, j)
 * order: the authors' loop order (and the float64 reference's), bit for bit.
 *
 * The backward pass rebuilds C̃ (docs/algorithm.md §2, functional/psp.py) only for the neurons that fired and contracts it
 * with the input spikes step by step, in double: the weight gradient is a sum over input spikes of
 * f·C̃ at the outputs they reach, the effect-ratio error below a sum over input spikes of δ̂·C̃·W.
 *
 * Work items are (sample, block of output channels): whole samples when there are at least as many samples
 * as threads, else the channels are split so that batch 1 uses every thread. Per-sample partial results
 * are reduced in sample order afterwards, so the results do not depend on the number of threads.
 *
 * Compiled into the one kernel library of kernels/cpu.py (SOURCES); its helpers (LIF step, scratch memory,
 * exp table, layer factor) come from hm2bp_kernels.h. */
#include "hm2bp_kernels.h"

/* One layer's geometry and neuron constants (a ctypes Structure in kernels/cpu_conv.py, same order). */
typedef struct {
    int64_t T, B, C, H, W; /* input: T steps, B samples, C maps of H×W */
    int64_t K, k;          /* conv: K kernels of k×k; pool: K = C, k = pool size */
    int64_t Ho, Wo;        /* output map */
    float tau_m, tau_s, theta;
    int32_t t_ref;
    int64_t window;              /* S-PSP look-back window */
    double psp_tau_m, psp_tau_s; /* τ_m, τ_s of the S-PSP (double, as in the FC kernels) */
    int32_t n_threads;
} layer_args;

/* The channels of a block are stored padded to a multiple of FWD_PAD (float, forward) or BWD_PAD (double,
 * backward) in the position-major buffers, so that the per-output loops over channels have no remainder;
 * the padding has zero weights and is never read back (kernels/cpu_conv.py pads W the same way). */
#define FWD_PAD 8
#define BWD_PAD 4
static inline int64_t padded(int64_t n, int64_t pad) { return (n + pad - 1) / pad * pad; }

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

/* The LIF update of cpu_scan.c's lif_step (docs/algorithm.md §1.1: the same float operations in the same order) for n
 * neurons, writing the spikes as bytes f8 and adding them to cnt. With τ_m and τ_s powers of two (64 and 8
 * in every config), v/τ is computed as v·(1/τ): the same float (both are the correctly rounded value of the
 * same real number) for a fraction of the cost of a division, which dominated the scan. */
static void lif_step_u8(float *restrict v, float *restrict x, int32_t *restrict r, const float *restrict cur,
                        uint8_t *restrict f8, int32_t *restrict cnt, int64_t n, float tau_m, float tau_s,
                        int32_t t_ref, float theta, int pow2) {
#define LIF_BODY(SCALE_M, SCALE_S)                                                                 \
    for (int64_t c = 0; c < n; c++) {                                                              \
        float vv = v[c], xx = x[c];                                                                \
        vv = vv - SCALE_M(vv);                                                                     \
        xx = xx - SCALE_S(xx);                                                                     \
        xx = xx + cur[c];                                                                          \
        vv = vv + SCALE_S(xx);                                                                     \
        int32_t rc = r[c], clamped = rc > 0;                                                       \
        vv = clamped ? 0.0f : vv;                                                                  \
        rc = rc - clamped;                                                                         \
        int32_t fire = vv > theta;                                                                 \
        f8[c] = (uint8_t)fire;                                                                     \
        cnt[c] += fire;                                                                            \
        r[c] = fire ? t_ref : rc;                                                                  \
        v[c] = fire ? 0.0f : vv;                                                                   \
        x[c] = xx;                                                                                 \
    }
    if (pow2) {
        float im = 1.0f / tau_m, is = 1.0f / tau_s;
#define MUL_M(z) ((z) * im)
#define MUL_S(z) ((z) * is)
        LIF_BODY(MUL_M, MUL_S)
    } else {
#define DIV_M(z) ((z) / tau_m)
#define DIV_S(z) ((z) / tau_s)
        LIF_BODY(DIV_M, DIV_S)
    }
#undef LIF_BODY
#undef MUL_M
#undef MUL_S
#undef DIV_M
#undef DIV_S
}

/* 1 when τ (> 0) is a power of two, so that 1/τ is exact and z/τ = z·(1/τ) for every float z. */
static int power_of_two(float tau) {
    int e;
    return frexpf(tau, &e) == 0.5f;
}

/* The spikes f8 [P, ns] (position-major, ns ≥ nk channels apart) of one step into out/out_u8 [K, P] (this
 * block's rows of the step). Most neurons are silent: the rows are cleared and only the spikes written,
 * found 8 at a time. */
static void write_spikes(const uint8_t *f8, int64_t P, int64_t nk, int64_t ns, float *out, uint8_t *out_u8) {
    int64_t nb = P * ns, n = 0;
    memset(out_u8, 0, (size_t)(P * nk));
    if (out) memset(out, 0, (size_t)(P * nk) * sizeof(float));
    for (; n < nb; n += 8) {
        uint64_t word = 0;
        if (n + 8 <= nb) memcpy(&word, f8 + n, 8);
        else word = 1;  /* the tail: look at each */
        if (!word) continue;
        for (int64_t m = n; m < n + 8 && m < nb; m++)
            if (f8[m] && m % ns < nk) {
                int64_t i = m % ns * P + m / ns;
                out_u8[i] = 1;
                if (out) out[i] = 1.0f;
            }
    }
}

/* Forward of a conv layer: spikes to out_u8 [T, B, K, Ho, Wo] (and out, float 0/1, when not NULL), spike
 * counts to counts [B, K·P] when not NULL. wt [n_blocks][C, k, k, ns] holds each channel block's weights,
 * channels innermost and padded to ns = a multiple of FWD_PAD. Returns 0 or -1 without memory. */
int hm2bp_conv_forward_f32(const layer_args *a, const int64_t *row_ptr, const int32_t *cols, const float *wt,
                           float *out, uint8_t *out_u8, int32_t *counts) {
    int64_t T = a->T, B = a->B, K = a->K, P = a->Ho * a->Wo, ckk = a->C * a->k * a->k;
    int64_t nt = a->n_threads > 0 ? a->n_threads : 1, nkb = channel_blocks(B, K, nt);
    int64_t kmax = padded((K + nkb - 1) / nkb, FWD_PAD), nb_max = P * kmax;
    int failed = 0, pow2 = power_of_two(a->tau_m) && power_of_two(a->tau_s);
#pragma omp parallel for num_threads(nt) collapse(2) schedule(dynamic, 1) reduction(| : failed)
    for (int64_t b = 0; b < B; b++)
        for (int64_t kb = 0; kb < nkb; kb++) {
            int64_t k0, nk = block_bounds(K, nkb, kb, &k0), ns = padded(nk, FWD_PAD), nb = P * ns;
            if (!scratch_begin(6 * SCRATCH(nb_max * sizeof(float)))) { failed |= 1; continue; }
            float *v = scratch_take(nb * sizeof(float)), *x = scratch_take(nb * sizeof(float));
            uint8_t *o = scratch_take(nb);
            float *d = scratch_take(nb * sizeof(float));
            int32_t *r = scratch_take(nb * sizeof(int32_t)), *cnt = scratch_take(nb * sizeof(int32_t));
            memset(v, 0, (size_t)nb * sizeof(float));
            memset(x, 0, (size_t)nb * sizeof(float));
            memset(r, 0, (size_t)nb * sizeof(int32_t));
            memset(o, 0, (size_t)nb);
            memset(cnt, 0, (size_t)nb * sizeof(int32_t));
            const float *w = wt + kb * ckk * kmax;
            int64_t base = b * K * P + k0 * P, stride = B * K * P;
            if (T > 0) write_spikes(o, P, nk, ns, out ? out + base : NULL, out_u8 + base);
            for (int64_t t = 1; t < T; t++) {
                memset(d, 0, (size_t)nb * sizeof(float));
                conv_scatter(a, row_ptr, cols, (t - 1) * B + b, w, ns, d);
                lif_step_u8(v, x, r, d, o, cnt, nb, a->tau_m, a->tau_s, a->t_ref, a->theta, pow2);
                write_spikes(o, P, nk, ns, out ? out + t * stride + base : NULL, out_u8 + t * stride + base);
            }
            if (counts)
                for (int64_t kk = 0; kk < nk; kk++)
                    for (int64_t p = 0; p < P; p++) counts[base + kk * P + p] = cnt[p * ns + kk];
        }
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
    int failed = 0, pow2 = power_of_two(a->tau_m) && power_of_two(a->tau_s);
#pragma omp parallel for num_threads(nt) collapse(2) schedule(dynamic, 1) reduction(| : failed)
    for (int64_t b = 0; b < B; b++)
        for (int64_t cb = 0; cb < ncb; cb++) {
            int64_t c0, nc = block_bounds(C, ncb, cb, &c0), nb = P * nc;
            if (!scratch_begin(6 * SCRATCH(nb_max * sizeof(float)))) { failed |= 1; continue; }
            float *v = scratch_take(nb * sizeof(float)), *x = scratch_take(nb * sizeof(float));
            uint8_t *o = scratch_take(nb);
            float *d = scratch_take(nb * sizeof(float));
            int32_t *r = scratch_take(nb * sizeof(int32_t)), *cnt = scratch_take(nb * sizeof(int32_t));
            memset(cnt, 0, (size_t)nb * sizeof(int32_t));
            memset(v, 0, (size_t)nb * sizeof(float));
            memset(x, 0, (size_t)nb * sizeof(float));
            memset(r, 0, (size_t)nb * sizeof(int32_t));
            memset(o, 0, (size_t)nb);
            int64_t base = (b * C + c0) * P, stride = B * C * P;
            if (T > 0) write_spikes(o, nb, 1, 1, out ? out + base : NULL, out_u8 + base);
            for (int64_t t = 1; t < T; t++) {
                int64_t q0, q1;
                memset(d, 0, (size_t)nb * sizeof(float));
                channel_range(row_ptr, cols, (t - 1) * B + b, HW, c0, c0 + nc, &q0, &q1);
                for (int64_t q = q0; q < q1; q++) {
                    int64_t j = cols[q] - c0 * HW, c = j / HW, u = j % HW / a->W, w = j % a->W;
                    d[c * P + u / p * a->Wo + w / p] += 1.0f;
                }
                lif_step_u8(v, x, r, d, o, cnt, nb, a->tau_m, a->tau_s, a->t_ref, a->theta, pow2);
                write_spikes(o, nb, 1, 1, out ? out + t * stride + base : NULL, out_u8 + t * stride + base);
            }
            if (counts) memcpy(counts + base, cnt, (size_t)nb * sizeof(int32_t));
        }
    return failed ? -1 : 0;
}

/* ----------------------------------------------------------------------------------------------
 * Backward passes. C̃ (docs/algorithm.md §2, functional/psp.py) of the neurons of a work item that fired is filtered
 * backwards in time, step by step, from the coefficients psp_scatter of psp_body.h would scatter into dense
 * [T, n] buffers. Each coefficient of post spike k at t_k (previous spike p) lies at a step fixed by t_k or
 * p: a = t_k − T_ref (case A's +c, and case B's upper end when p − 1 > a), p − 1 (case A's lower end when
 * a0 = p, case B's upper end) or lo − 1 = max(0, t_k − window − 1) (case A's lower end when a0 = lo, case
 * B's lower end). So at step t they come from the post spikes of steps t + T_ref, t + 1 (through the next
 * spike of the same neuron) and t + window + 1 (all steps ≤ window + 1 at t = 0): no sorting, no buffer.
 * ---------------------------------------------------------------------------------------------- */
typedef struct {
    int64_t n_act, n_sp, t_max, T, t_ref, window;
    const int64_t *act;      /* [n_act] offsets, in the item's block, of the neurons that fired */
    const int64_t *rstart;   /* [T + 1] the block's post spikes of step t are rstart[t] … rstart[t + 1] − 1 */
    const int32_t *sq, *st;  /* [n_sp] neuron (index into act) and step of each spike */
    const int32_t *sprev;    /* [n_sp] the neuron's previous spike step (−1: none) */
    const int32_t *snext;    /* [n_sp] the index of the neuron's next spike (−1: none) */
    int32_t *tlo, *thi;      /* [n_act] C̃_q(t) is 0 outside [tlo[q], thi[q]] */
    int64_t *cover;          /* [n_act] lower end of the window opened last (psp_cover of hm2bp_kernels.h) */
    double *am, *as, dm, ds, c;
    const exp_table *et;
} psp_stream;

/* Scratch bytes of psp_stream_build for nb neurons with n_sp spikes over T steps. */
static size_t psp_stream_bytes(int64_t nb, int64_t n_sp, int64_t T) {
    return 4 * SCRATCH(nb * sizeof(int64_t)) + SCRATCH((T + 1) * sizeof(int64_t)) +
           4 * SCRATCH(n_sp * sizeof(int32_t)) + 2 * SCRATCH(nb * sizeof(double)) + 2 * SCRATCH(nb * sizeof(int32_t)) +
           SCRATCH(nb * sizeof(int64_t));
}

/* The stream of the nb neurons [col0, col0 + nb) of sample b, whose spikes are rows t·B + b of the CSR index
 * (prp, pcols) and whose counts are cnt [nb] (n_sp in all); the memory comes from this thread's scratch. */
static void psp_stream_build(psp_stream *ps, const int64_t *prp, const int32_t *pcols, int64_t T, int64_t B,
                             int64_t b, int64_t col0, int64_t nb, const int32_t *cnt, int64_t n_sp,
                             const exp_table *et, int32_t t_ref, int64_t window) {
    int64_t *act = scratch_take(nb * sizeof(int64_t)), *qof = scratch_take(nb * sizeof(int64_t));
    int64_t *last_k = scratch_take(nb * sizeof(int64_t)), *first = scratch_take(nb * sizeof(int64_t));
    int64_t *rstart = scratch_take((T + 1) * sizeof(int64_t));
    int32_t *sq = scratch_take(n_sp * sizeof(int32_t)), *st = scratch_take(n_sp * sizeof(int32_t));
    int32_t *sprev = scratch_take(n_sp * sizeof(int32_t)), *snext = scratch_take(n_sp * sizeof(int32_t));
    int64_t n_act = 0, n = 0, t_max = -1;
    for (int64_t i = 0; i < nb; i++) {
        qof[i] = cnt[i] > 0 ? n_act : -1;
        if (cnt[i] > 0) { last_k[n_act] = -1; act[n_act++] = i; }
    }
    rstart[0] = 0;
    for (int64_t t = 0; t < T; t++) {
        int64_t q0 = 0, q1 = 0;
        if (n_act) channel_range(prp, pcols, t * B + b, 1, col0, col0 + nb, &q0, &q1);
        for (int64_t k = q0; k < q1 && n < n_sp; k++, n++) {
            int64_t q = qof[pcols[k] - col0], lk = last_k[q];
            sq[n] = (int32_t)q; st[n] = (int32_t)t; snext[n] = -1;
            sprev[n] = lk >= 0 ? st[lk] : -1;
            if (lk >= 0) snext[lk] = (int32_t)n;
            else first[q] = t;
            last_k[q] = n;
            t_max = t;
        }
        rstart[t + 1] = n;
    }
    ps->tlo = scratch_take(nb * sizeof(int32_t));
    ps->thi = scratch_take(nb * sizeof(int32_t));
    for (int64_t q = 0; q < n_act; q++) {
        int64_t lo = first[q] - window - 1;
        ps->tlo[q] = (int32_t)(lo > 0 ? lo : 0);
        ps->thi[q] = last_k[q] >= 0 ? st[last_k[q]] : -1;
    }
    ps->n_act = n_act; ps->n_sp = n; ps->t_max = t_max; ps->T = T; ps->t_ref = t_ref; ps->window = window;
    ps->act = act; ps->rstart = rstart; ps->sq = sq; ps->st = st; ps->sprev = sprev; ps->snext = snext;
    ps->am = scratch_take(nb * sizeof(double));
    ps->as = scratch_take(nb * sizeof(double));
    ps->cover = scratch_take(nb * sizeof(int64_t));
    ps->dm = exp(-1.0 / et->tau_m);
    ps->ds = exp(-1.0 / et->tau_s);
    ps->c = 1.0 / (1.0 - et->tau_s / et->tau_m);
    ps->et = et;
}

static void psp_stream_reset(psp_stream *ps) {
    for (int64_t q = 0; q < ps->n_act; q++) { ps->am[q] = 0.0; ps->as[q] = 0.0; ps->cover[q] = INT64_MAX; }
}

/* ε(s_k)·c-scaled reset-branch factor of case B for post spike t_k after p (docs/algorithm.md §2). */
static inline double case_b_eps(const psp_stream *ps, int64_t tk, int64_t p) {
    int64_t sk = tk - p - ps->t_ref;
    return ps->c * (exp_m(ps->et, sk) - exp_s(ps->et, sk));
}

/* The coefficients at step t (see the block comment above), added to the filter state. */
static void psp_stream_add(psp_stream *ps, int64_t t) {
    const exp_table *et = ps->et;
    int64_t T = ps->T, W = ps->window;
    double c = ps->c, *am = ps->am, *as = ps->as;
    if (t + ps->t_ref < T)  /* post spikes at t + T_ref: case A's +c at a = t */
        for (int64_t n = ps->rstart[t + ps->t_ref]; n < ps->rstart[t + ps->t_ref + 1]; n++) {
            int64_t q = ps->sq[n], tk = t + ps->t_ref, p = ps->sprev[n], lo = tk - W < 1 ? 1 : tk - W;
            int64_t a0 = p >= 0 ? (p > lo ? p : lo) : lo;
            ps->cover[q] = lo;  /* its window [lo, t] opens */
            if (t >= a0) { am[q] += c; as[q] += -c; }
            if (p >= 0 && p - 1 > t && t >= lo) as[q] += case_b_eps(ps, tk, p) * exp_s(et, p - t);
        }
    if (t + 1 < T)  /* post spikes at p = t + 1, through the neuron's next spike t_k: the ends at p − 1 */
        for (int64_t n0 = ps->rstart[t + 1]; n0 < ps->rstart[t + 2]; n0++) {
            int64_t n = ps->snext[n0];
            if (n < 0) continue;
            int64_t q = ps->sq[n], tk = ps->st[n], p = t + 1, a = tk - ps->t_ref, lo = tk - W < 1 ? 1 : tk - W;
            if (p >= lo && a >= p) { am[q] += -c * exp_m(et, a - p + 1); as[q] += c * exp_s(et, a - p + 1); }
            if (p - 1 <= a && p - 1 >= lo) as[q] += case_b_eps(ps, tk, p) * exp_s(et, 1);
        }
    int64_t r0 = t == 0 ? 0 : t + W + 1, r1 = t + W + 1 < T - 1 ? t + W + 1 : T - 1;
    for (int64_t n = r0 <= r1 ? ps->rstart[r0] : 0; r0 <= r1 && n < ps->rstart[r1 + 1]; n++) {  /* the ends at lo − 1 */
        int64_t q = ps->sq[n], tk = ps->st[n], p = ps->sprev[n], a = tk - ps->t_ref, lo = tk - W < 1 ? 1 : tk - W;
        if (p < lo && a >= lo) { am[q] += -c * exp_m(et, a - lo + 1); as[q] += c * exp_s(et, a - lo + 1); }
        if (p >= 0) {
            int64_t hi = p - 1 < a ? p - 1 : a;
            if (hi >= lo) as[q] += -case_b_eps(ps, tk, p) * exp_s(et, p - lo + 1);
        }
    }
}

/* One step of the backward filter (steps t_max, t_max − 1, …, 0 in turn): cq[q] = C̃_q(t), set to 0 (and
 * the state with it) where t lies outside every window of the neuron, where the cancelling coefficients
 * would leave rounding residuals. The state is left decayed for step t − 1, so that one pass over the
 * neurons does the mask, the output and the decay (the same operations, in the same order, as decaying
 * at the start of each step). */
static void psp_stream_step(psp_stream *ps, int64_t t, double *restrict cq) {
    double *restrict am = ps->am, *restrict as = ps->as, dm = ps->dm, ds = ps->ds;
    const int64_t *restrict cover = ps->cover;
    psp_stream_add(ps, t);
    for (int64_t q = 0; q < ps->n_act; q++) {  /* exactly 0 outside every window (docs/algorithm.md §2; #13 item 4) */
        int in = t >= cover[q];
        double m = in ? am[q] : 0.0, s = in ? as[q] : 0.0;
        cq[q] = m + s;
        am[q] = m * dm;
        as[q] = s * ds;
    }
}

static int64_t sum_counts(const int32_t *cnt, int64_t n) {
    int64_t s = 0;
    for (int64_t i = 0; i < n; i++) s += cnt[i];
    return s;
}

enum { VISIT_ADD, VISIT_PROD, VISIT_GRAD_DOT, VISIT_DOTS };

/* The outputs reached by input (c, u, v): at each, v1 and v2 [P, nk] at the output o and the kernel
 * weights wt at their offset e in [C, k, k, nk]. VISIT_ADD: g[e] += v1[o]; VISIT_PROD: prod[o] += v1[o]·wt[e]
 * (elementwise); VISIT_GRAD_DOT: g[e] += v1[o] and acc[kk] += v2[o]·wt[e]; VISIT_DOTS: acc[kk] += v1[o]·wt[e]
 * and acc[nk + kk] += v2[o]·wt[e] (acc: per-channel partial sums, so that the loops vectorise). With live
 * [P, 2], outputs whose range of steps with C̃ ≠ 0 does not hold t are skipped (v1, v2 are 0 there). Kind is
 * a constant at every call, so each use compiles to its own loop. */
static inline __attribute__((always_inline)) void conv_visit(
    const layer_args *a, int kind, int64_t c, int64_t u, int64_t v, const double *restrict v1,
    const double *restrict v2, int64_t nk, double *restrict g, const double *restrict wt, double *restrict prod,
    double *restrict acc, const int32_t *live, int64_t t) {
    int64_t k = a->k, i0, i1, j0, j1;
    reach(u, a->Ho, k, &i0, &i1);
    reach(v, a->Wo, k, &j0, &j1);
    for (int64_t i = i0; i <= i1; i++)
        for (int64_t jj = j0; jj <= j1; jj++) {
            int64_t pos = (u - i) * a->Wo + (v - jj), o = pos * nk, e = ((c * k + i) * k + jj) * nk;
            if (live && (t < live[2 * pos] || t > live[2 * pos + 1])) continue;
            const double *restrict x = v1 + o, *restrict y = v2 + o, *restrict w = wt + e;
            double *restrict ge = g + e, *restrict po = prod + o;
            if (kind == VISIT_ADD)
                for (int64_t kk = 0; kk < nk; kk++) ge[kk] += x[kk];
            if (kind == VISIT_PROD)
                for (int64_t kk = 0; kk < nk; kk++) po[kk] += x[kk] * w[kk];
            if (kind == VISIT_GRAD_DOT)
                for (int64_t kk = 0; kk < nk; kk++) { ge[kk] += x[kk]; acc[kk] += y[kk] * w[kk]; }
            if (kind == VISIT_DOTS)
                for (int64_t kk = 0; kk < nk; kk++) { acc[kk] += x[kk] * w[kk]; acc[nk + kk] += y[kk] * w[kk]; }
        }
}

/* Σ acc[0:n], clearing it. */
static double drain(double *acc, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) { s += acc[i]; acc[i] = 0.0; }
    return s;
}

/* The inputs of the conv backward pass shared by its work items (see hm2bp_conv_backward). */
typedef struct {
    const layer_args *a;
    const int64_t *prp, *row_ptr, *counts_in;
    const int32_t *pcols, *cols, *counts;
    const double *wsum, *delta;
    double v_th, silent_psp;
    int32_t mode;
    const exp_table *et;
} conv_bw;

/* One pass over the input spikes of sample b against C̃ of the item's neurons that fired, steps descending:
 * with scale NULL, prod [P, nk] += C̃·W (σ's numerator Σ_l w_il e_{i|l}); else g += Σ f·C̃ over the outputs
 * each spike reaches (f = scale [n_act]) and, with th, th[input] += Σ δ̂·C̃·W (δ̂ = dh [n_act]). vec, vec2
 * [P, nk] hold the step's values at the outputs (0 at silent ones); live [P, 2] the outputs' ranges of steps
 * with C̃ ≠ 0. */
static void conv_pass(const conv_bw *z, psp_stream *ps, int64_t b, const int64_t *idx, const int32_t *live,
                      const double *wt, int64_t nk, const double *scale, const double *dh, double *cq, double *vec,
                      double *vec2, double *prod, double *g, double *th, double *acc) {
    const layer_args *a = z->a;
    int64_t HW = a->H * a->W;
    psp_stream_reset(ps);
    for (int64_t t = ps->t_max; t >= 0; t--) {
        psp_stream_step(ps, t, cq);
        for (int64_t q = 0; q < ps->n_act; q++) {
            vec[idx[q]] = scale ? cq[q] * scale[q] : cq[q];
            if (th) vec2[idx[q]] = cq[q] * dh[q];
        }
        int64_t r = t * a->B + b;
        for (int64_t q = z->row_ptr[r]; q < z->row_ptr[r + 1]; q++) {
            int64_t j = z->cols[q], c = j / HW, u = j % HW / a->W, v = j % a->W;
            if (!scale) {
                conv_visit(a, VISIT_PROD, c, u, v, vec, NULL, nk, NULL, wt, prod, NULL, live, t);
            } else if (th) {
                conv_visit(a, VISIT_GRAD_DOT, c, u, v, vec, vec2, nk, g, wt, NULL, acc, live, t);
                th[j] += drain(acc, nk);
            } else {
                conv_visit(a, VISIT_ADD, c, u, v, vec, NULL, nk, g, NULL, NULL, NULL, live, t);
            }
        }
    }
}

/* One work item of the conv backward: sample b, output channels [k0, k0 + nk). g [C·k·k, ns] (ns = nk padded
 * to BWD_PAD, as wt [C, k, k, ns] and the position-major buffers) receives its
 * weight gradient, sums [3, C·H·W] the effect-ratio, all-δ̂ and silent-δ̂ terms of its error below. */
static int conv_backward_item(const conv_bw *z, int64_t b, int64_t k0, int64_t nk, const double *wt, double *g,
                              double *sums) {
    const layer_args *a = z->a;
    int64_t T = a->T, K = a->K, P = a->Ho * a->Wo, HW = a->H * a->W, CHW = a->C * HW;
    int64_t nb = P * nk, ns = padded(nk, BWD_PAD), nbs = P * ns, base = b * K * P + k0 * P;
    int64_t n_sp = sum_counts(z->counts + base, nb);
    size_t vec = SCRATCH(nbs * sizeof(double));
    if (!scratch_begin(12 * vec + SCRATCH(2 * P * sizeof(int32_t)) + SCRATCH(2 * ns * sizeof(double)) +
                       psp_stream_bytes(nb, n_sp, T))) return 1;
    double *fac = scratch_take(nbs * sizeof(double)), *dh = scratch_take(nbs * sizeof(double));
    double *fs = scratch_take(nbs * sizeof(double)), *dsil = scratch_take(nbs * sizeof(double));
    double *v1 = scratch_take(nbs * sizeof(double)), *v2 = scratch_take(nbs * sizeof(double));
    double *psd = scratch_take(nbs * sizeof(double)), *cq = scratch_take(nb * sizeof(double));
    double *fa = scratch_take(nb * sizeof(double)), *da = scratch_take(nb * sizeof(double));
    int64_t *idx = scratch_take(nb * sizeof(int64_t));
    int32_t *live = scratch_take(2 * P * sizeof(int32_t));
    double *acc = scratch_take(2 * ns * sizeof(double));
    for (int64_t kk = 0; kk < 2 * ns; kk++) acc[kk] = 0.0;
    psp_stream ps;
    psp_stream_build(&ps, z->prp, z->pcols, T, a->B, b, base - b * K * P, nb, z->counts + base, n_sp, z->et,
                     a->t_ref, a->window);
    for (int64_t n = 0; n < nbs; n++) { v1[n] = v2[n] = psd[n] = fac[n] = dh[n] = fs[n] = dsil[n] = 0.0; }
    for (int64_t p = 0; p < P; p++) { live[2 * p] = (int32_t)T; live[2 * p + 1] = -1; }
    for (int64_t q = 0; q < ps.n_act; q++) {
        int64_t p = ps.act[q] % P;
        idx[q] = p * ns + ps.act[q] / P;  /* position-major */
        live[2 * p] = ps.tlo[q] < live[2 * p] ? ps.tlo[q] : live[2 * p];
        live[2 * p + 1] = ps.thi[q] > live[2 * p + 1] ? ps.thi[q] : live[2 * p + 1];
    }
    if (ps.n_act > 0) conv_pass(z, &ps, b, idx, live, wt, ns, NULL, NULL, cq, v1, v2, psd, NULL, NULL, acc);
    int any_silent = 0;
    for (int64_t kk = 0; kk < nk; kk++)
        for (int64_t p = 0; p < P; p++) {
            int64_t n = p * ns + kk, i = base + kk * P + p, o = z->counts[i];
            dh[n] = z->delta[i] / z->v_th;
            fac[n] = layer_factor_f64(z->delta[i], o, psd[n], z->wsum[k0 + kk], NULL, z->v_th);
            fs[n] = o == 0 ? z->silent_psp * fac[n] : 0.0;
            dsil[n] = o == 0 ? dh[n] : 0.0;
            any_silent |= o == 0 && fac[n] != 0.0;
            v1[n] = 0.0;
        }
    double *th = sums, *al = sums + CHW, *si = sums + 2 * CHW;
    if (ps.n_act > 0) {
        for (int64_t q = 0; q < ps.n_act; q++) { fa[q] = fac[idx[q]]; da[q] = dh[idx[q]]; }
        conv_pass(z, &ps, b, idx, live, wt, ns, fa, da, cq, v1, v2, NULL, g, z->mode == 2 ? th : NULL, acc);
    }
    for (int64_t j = 0; j < CHW && (any_silent || z->mode); j++) {  /* docs/algorithm.md §2's e = 0.1; the δ̂·W terms */
        int64_t c = j / HW, u = j % HW / a->W, v = j % a->W;
        if (any_silent && z->counts_in[b * CHW + j] > 0)
            conv_visit(a, VISIT_ADD, c, u, v, fs, NULL, ns, g, NULL, NULL, NULL, NULL, 0);
        if (z->mode) {
            conv_visit(a, VISIT_DOTS, c, u, v, dh, dsil, ns, NULL, wt, NULL, acc, NULL, 0);
            al[j] += drain(acc, ns);
            si[j] += drain(acc + ns, ns);
        }
    }
    return 0;
}

/* Backward of a conv layer (docs/algorithm.md §3.5; the rules of functional/hm2bp.py's conv_backward), in double:
 *   δ̂ = δ/ν; σ = Σ_l w_il e_{i|l}/(ν·o) for a neuron that fired, else 0.5·Σ W[k]/ν (wsum [K]); f = δ̂(1 + σ);
 *   grad [K, C, k, k] = Σ_b Σ_{x,y} f·e (e = Σ_t C̃(t)·s_in(t), or silent_psp for a silent output and an
 *   input that fired);
 *   below [B, C·H·W] (mode 1: the transposed conv of δ̂ with W; mode 2, the effect ratio: Σ δ̂·W·e / o_in +
 *   the transposed conv of the silent outputs' δ̂ where o_in > 0, else of all δ̂; mode 0: none).
 * The output spikes are the CSR index (prp, pcols) over rows t·B + b (columns k·P + p), with counts [B, K·P];
 * the input's are (row_ptr, cols) with counts_in [B, C·H·W]; wt is W as [n_blocks][C, k, k, ns]. Returns 0
 * or -1 without memory. */
int hm2bp_conv_backward(const layer_args *a, const int64_t *prp, const int32_t *pcols, const int32_t *counts,
                        const int64_t *row_ptr, const int32_t *cols, const int64_t *counts_in, const double *wt,
                        const double *wsum, const double *delta, double v_th, int32_t mode, double silent_psp,
                        double *grad, double *below) {
    int64_t T = a->T, B = a->B, K = a->K, ckk = a->C * a->k * a->k, CHW = a->C * a->H * a->W;
    int64_t nt = a->n_threads > 0 ? a->n_threads : 1, nkb = channel_blocks(B, K, nt);
    int64_t kmax = padded((K + nkb - 1) / nkb, BWD_PAD);
    exp_table et;
    if (!exp_table_init(&et, a->psp_tau_m, a->psp_tau_s, T)) return -1;
    double *part = calloc((size_t)(B * nkb * ckk * kmax) + 1, sizeof(double));
    double *sums = calloc((size_t)(B * nkb * 3 * CHW) + 1, sizeof(double));
    conv_bw z = {a, prp, row_ptr, counts_in, pcols, cols, counts, wsum, delta, v_th, silent_psp, mode, &et};
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
            int64_t k0, nk = block_bounds(K, nkb, kb, &k0), ns = padded(nk, BWD_PAD);
            for (int64_t kk = 0; kk < nk; kk++)
                for (int64_t e = 0; e < ckk; e++) {
                    double s = 0.0;
                    for (int64_t b = 0; b < B; b++) s += part[(b * nkb + kb) * ckk * kmax + e * ns + kk];
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

/* Error through a pool layer (docs/algorithm.md §3.5): below [B, C·H·W] = δ_pool/p² · r, r = e/o_in when the pool neuron
 * and the input both fired, else 1, e = Σ_t C̃_pool(t)·s_in(t). The pool's spikes are the CSR index (prp,
 * pcols) with counts [B, C·P]; its input's are (row_ptr, cols) with counts_in [B, C·H·W]. Returns 0 or -1
 * without memory. */
int hm2bp_pool_backward(const layer_args *a, const int64_t *prp, const int32_t *pcols, const int32_t *counts,
                        const int64_t *row_ptr, const int32_t *cols, const int64_t *counts_in, const double *delta,
                        double *below) {
    int64_t T = a->T, B = a->B, C = a->C, HW = a->H * a->W, P = a->Ho * a->Wo, p = a->k;
    int64_t nt = a->n_threads > 0 ? a->n_threads : 1, ncb = channel_blocks(B, C, nt);
    exp_table et;
    if (!exp_table_init(&et, a->psp_tau_m, a->psp_tau_s, T)) return -1;
    int failed = 0;
#pragma omp parallel for num_threads(nt) collapse(2) schedule(dynamic, 1) reduction(| : failed)
    for (int64_t b = 0; b < B; b++)
        for (int64_t cb = 0; cb < ncb; cb++) {
            int64_t c0, nc = block_bounds(C, ncb, cb, &c0), nb = P * nc, nin = nc * HW;
            int64_t base = (b * C + c0) * P, base_in = (b * C + c0) * HW, n_sp = sum_counts(counts + base, nb);
            if (!scratch_begin(2 * SCRATCH(nb * sizeof(double)) + SCRATCH(nin * sizeof(double)) +
                               psp_stream_bytes(nb, n_sp, T))) { failed |= 1; continue; }
            double *ct = scratch_take(nb * sizeof(double)), *cq = scratch_take(nb * sizeof(double));
            double *e = scratch_take(nin * sizeof(double));
            psp_stream ps;
            psp_stream_build(&ps, prp, pcols, T, B, b, c0 * P, nb, counts + base, n_sp, &et, a->t_ref, a->window);
            for (int64_t i = 0; i < nb; i++) ct[i] = 0.0;
            for (int64_t i = 0; i < nin; i++) e[i] = 0.0;
            psp_stream_reset(&ps);
            for (int64_t t = ps.n_act ? ps.t_max : -1; t >= 0; t--) {
                psp_stream_step(&ps, t, cq);
                for (int64_t q = 0; q < ps.n_act; q++) ct[ps.act[q]] = cq[q];
                int64_t q0, q1;
                channel_range(row_ptr, cols, t * B + b, HW, c0, c0 + nc, &q0, &q1);
                for (int64_t q = q0; q < q1; q++) {
                    int64_t j = cols[q] - c0 * HW, c = j / HW, u = j % HW / a->W, w = j % a->W;
                    e[j] += ct[c * P + u / p * a->Wo + w / p];
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
