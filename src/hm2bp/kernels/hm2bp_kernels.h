/* Shared declarations of hm2bp's compiled CPU kernels (docs/algorithm.md §8.1-§8.3): the parameter struct that every
 * entry point takes, the per-thread scratch memory, and the small helpers the kernels inline in their loops.
 *
 * The C files listed in kernels/cpu.py (SOURCES) are compiled into one shared library by kernels/build.py
 * with -O3 -ffp-contract=off (no FMA contraction, no fast-math), so every float operation is the one
 * written here, in the spec's order. Functions shared between the files but not called from Python are
 * HIDDEN (not exported). Code written once for float and double is a body file included twice by
 * instantiate.h, with TYPE and SUFFIX set; FN(name) is then name_f32 or name_f64. */
#ifndef HM2BP_KERNELS_H
#define HM2BP_KERNELS_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#define HIDDEN __attribute__((visibility("hidden")))
#define HM2BP_CAT_(a, b) a##_##b
#define HM2BP_CAT(a, b) HM2BP_CAT_(a, b)
#define FN(name) HM2BP_CAT(name, SUFFIX)

/* The constants and sizes of one call (kernels/cpu.py: Params, the same fields in the same order). A
 * kernel reads only the fields it needs; cpu.py bounds every integer before the call. */
typedef struct {
    int64_t T, B, N, n_in;      /* steps, samples, neurons of the layer (or columns), its inputs */
    double tau_m, tau_s;        /* τ_m, τ_s; the float32 LIF scan uses them rounded to float */
    double v_th;                /* ν of the backward rules and of the output rules */
    double silent_psp;          /* e for a silent post and an active pre neuron (docs/algorithm.md §2) */
    double strength;            /* w0 of the output layer's lateral factor (docs/algorithm.md §3.4) */
    int64_t window;             /* S-PSP look-back window (≥ 0) */
    int64_t step;               /* Δ of the output spike insertion (docs/algorithm.md §3.2; none when < 1) */
    float theta;                /* the float32 spike test v > θ (docs/algorithm.md §1.1) */
    int32_t t_ref;              /* T_ref (≥ 0) */
    int32_t below;              /* error for the layer below: 0 none, 1 δ̂·W, 2 effect ratio (docs/algorithm.md §3.3) */
    int32_t n_threads;
} hm2bp_params;

/* The input spikes S [R = T·B rows (r = t·B + b), n_in] of a layer as a CSR index, with their per-sample
 * counts [B, n_in] (may be NULL where a kernel does not need them). */
typedef struct {
    const int64_t *row_ptr;
    const int32_t *cols;
    const int64_t *counts;
} hm2bp_events;

#define HM2BP_BAD_PARAMS (-5)
/* 1 when the sizes and constants cannot index outside the buffers (cpu.py checks them first). */
static inline int params_ok(const hm2bp_params *p) {
    return p && p->T >= 0 && p->B >= 0 && p->N >= 0 && p->n_in >= 0 && p->t_ref >= 0 && p->window >= 0;
}

static inline int64_t thread_count(const hm2bp_params *p) { return p->n_threads > 0 ? p->n_threads : 1; }

/* The b-th of n_blocks near-equal ranges of n_groups items: its first item in *lo, its length returned. */
static inline int64_t block_bounds(int64_t n_groups, int64_t n_blocks, int64_t b, int64_t *lo) {
    int64_t base = n_groups / n_blocks, extra = n_groups % n_blocks;
    *lo = b * base + (b < extra ? b : extra);
    return base + (b < extra ? 1 : 0);
}

/* Per-thread scratch memory (scratch.c): room for `bytes` (the SCRATCH-rounded sizes of the pieces to
 * take, 64-byte aligned) in this thread's region, 0 without memory; then the pieces, in order. */
#define SCRATCH(n) (((size_t)(n) + 63) / 64 * 64)
HIDDEN int scratch_begin(size_t bytes);
HIDDEN void *scratch_take(size_t bytes);

/* One step t of docs/algorithm.md §1.1 for n neurons: state v, x, r; cur = the current I(t−1) (feed-forward plus
 * lateral); o receives the 0/1 spikes. Written without branches so that the compiler vectorises it; the
 * float operations are those of the spec, in its order. */
static inline void lif_step(float *restrict v, float *restrict x, int32_t *restrict r, const float *restrict cur,
                            float *restrict o, int64_t n, float tau_m, float tau_s, int32_t t_ref, float theta) {
    for (int64_t c = 0; c < n; c++) {
        float vv = v[c], xx = x[c];
        vv = vv - vv / tau_m;
        xx = xx - xx / tau_s;
        xx = xx + cur[c];
        vv = vv + xx / tau_s;
        int32_t rc = r[c];
        int32_t clamped = rc > 0;
        vv = clamped ? 0.0f : vv;
        rc = rc - clamped;
        int32_t fire = vv > theta;
        o[c] = fire ? 1.0f : 0.0f;
        r[c] = fire ? t_ref : rc;
        v[c] = fire ? 0.0f : vv;
        x[c] = xx;
    }
}

/* cur[c] = d[c] + Σ_l lateral[c, l]·prev[l] for the n neurons of one sample. */
static inline void add_lateral(const float *d, const float *lateral, const float *prev, float *cur, int64_t n) {
    for (int64_t c = 0; c < n; c++) {
        const float *row = lateral + c * n;
        float lat = 0.0f;
        for (int64_t l = 0; l < n; l++) lat += row[l] * prev[l];
        cur[c] = d[c] + lat;
    }
}

/* exp(−k/τ_m) and exp(−k/τ_s) for the integer spans k = 0 … n−1 that the S-PSP coefficients need (differences
 * of spike times, so k < T + 2), computed once per call with the very expression of the direct call:
 * psp_scatter takes ~6 exp per post spike, which was most of its time at long windows. Other k (a
 * negative span, possible for inserted spikes closer than T_ref) take exp itself. (psp.c) */
typedef struct { double tau_m, tau_s; const double *m, *s; int64_t n; double *mem; } exp_table;
HIDDEN int exp_table_init(exp_table *et, double tau_m, double tau_s, int64_t T);

static inline double exp_m(const exp_table *et, int64_t k) {
    return k >= 0 && k < et->n ? et->m[k] : exp(-(double)k / et->tau_m);
}

static inline double exp_s(const exp_table *et, int64_t k) {
    return k >= 0 && k < et->n ? et->s[k] : exp(-(double)k / et->tau_s);
}

/* Where C̃ must be exactly 0 (docs/algorithm.md §2): outside every post spike's window [lo_k, a_k], lo_k = max(1,
 * t_k − window), a_k = t_k − T_ref, the coefficients of psp_scatter cancel only up to rounding (~1e-7 in
 * float), which Adam turns into a ±lr step of a weight that should not move. Going down in time a window
 * opens at a_k, i.e. at a spike at t + T_ref, and since lo_k grows with t_k the last window opened
 * reaches lowest: lo[k] is that bound (INT64_MAX before any), and t is covered iff t ≥ lo[k]. post is the
 * [T, stride] 0/1 spike train of the columns the filter runs over. (psp.c) */
typedef struct { const uint8_t *post; int64_t stride, T, t_ref, window; int64_t *lo; } psp_cover;
HIDDEN void cover_init(psp_cover *cv, const uint8_t *post, int64_t stride, int64_t T, int32_t t_ref,
                       int64_t window, int64_t *lo, int64_t n);

/* dst[t, a] = post[t * stride + act[a]]: the spike trains of the n_act listed columns, side by side. A
 * silent post neuron has no S-PSP (C̃ = 0), so the coefficients need only the columns that fired. (psp.c) */
HIDDEN void gather_columns(const uint8_t *post, int64_t stride, int64_t T, const int64_t *act, int64_t n_act,
                           uint8_t *dst);

/* The typed helpers: dot, sum, filter_step (inline), psp_scatter, transpose. */
#define HM2BP_TEMPLATE "typed.h"
#include "instantiate.h"

#endif
