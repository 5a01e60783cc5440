/* The HM2-BP backward pass of an event-driven fully connected layer (docs/algorithm.md §3.3; the rules of
 * functional/hm2bp.py's linear_backward), for post spikes post [T, B, N] (uint8; for an output layer after
 * the spike insertion of docs/algorithm.md §3.2) and the CSR index of its input spikes. C̃ of each sample is rebuilt
 * from its spikes (a scatter and one backward filter in time, O(T·N)) and contracted with the input spikes
 * on the fly, step by step. Float and double: fc_backward_body.h. */
#include "hm2bp_kernels.h"

#ifndef GRAD_MIN_WIDTH
#define GRAD_MIN_WIDTH 64
#endif

/* At batch 1 the gradient is summed GRAD_WIDTH active post neurons at a time: buf [n_in, GRAD_WIDTH] (two
 * cache lines per input neuron, ~100 KB for 784 inputs) stays in the core's caches while every input spike
 * adds its lines, where a buffer for all active neurons of a block (a few hundred) does not. Kernel alone,
 * hidden layer of 784-800-10 after 200-300 training steps: 0.71-0.86x the time of the whole-buffer version
 * with cold caches (as in a training step), 0.79-0.98x warm; 16 was slower at T = 400, 64 no better. */
#ifndef GRAD_WIDTH
#define GRAD_WIDTH 32
#endif

/* cnt[i] = the spike count of column i (post[t * stride + i] over T steps), or known[i] when the caller
 * already has the counts (the forward computed them). */
static void post_counts(const uint8_t *post, int64_t stride, int64_t T, int64_t nc, const int32_t *known,
                        int64_t *cnt) {
    if (known) {
        for (int64_t i = 0; i < nc; i++) cnt[i] = known[i];
        return;
    }
    for (int64_t i = 0; i < nc; i++) cnt[i] = 0;
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < nc; i++) cnt[i] += post[t * stride + i] != 0;
}

/* How the work is split: items are (neuron block × sample group), one per thread: neuron blocks first (no
 * two threads then share a gradient entry), at least GRAD_MIN_WIDTH neurons wide, since every input spike
 * costs a pass over the block; the threads left over split the samples. */
typedef struct { int64_t n_blocks, n_groups, n_items, size, per; } bw_plan;

static bw_plan bw_make_plan(const hm2bp_params *p) {
    int64_t N = p->N, B = p->B, nt = thread_count(p);
    bw_plan pl;
    pl.n_blocks = N / GRAD_MIN_WIDTH < nt ? N / GRAD_MIN_WIDTH : nt;
    if (B == 1) pl.n_blocks = N < nt ? N : nt; /* one sample: no samples to split, narrower blocks */
    if (pl.n_blocks < 1) pl.n_blocks = 1;
    pl.n_groups = nt / pl.n_blocks < B ? nt / pl.n_blocks : B;
    if (pl.n_groups < 1) pl.n_groups = 1;
    pl.size = N * p->n_in;
    pl.n_items = pl.n_blocks * pl.n_groups;
    pl.per = B * p->n_in;
    return pl;
}

#define HM2BP_TEMPLATE "fc_backward_body.h"
#include "instantiate.h"
