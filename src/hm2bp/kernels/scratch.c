/* Per-thread scratch memory, kept from call to call. The per-thread buffers of one call reach a few MB
 * at long windows; freed after every call, glibc hands them back to the OS and the next call pays a page
 * fault per 4 KB it touches, which at batch 1 costs more than the work itself. Each thread (the OpenMP
 * pool's threads live as long as the process) keeps one region, grown when a call needs more and
 * carved into 64-byte aligned pieces; hm2bp_release_scratch frees them. */
#include "hm2bp_kernels.h"

typedef struct { char *base; size_t cap, used; } scratch_t;
static _Thread_local scratch_t tls_scratch;

/* Invalidates the pieces taken before. */
int scratch_begin(size_t bytes) {
    scratch_t *s = &tls_scratch;
    s->used = 0;
    if (bytes <= s->cap) return 1;
    free(s->base);
    s->base = aligned_alloc(64, SCRATCH(bytes));
    s->cap = s->base ? SCRATCH(bytes) : 0;
    return s->base != NULL;
}

void *scratch_take(size_t bytes) {
    scratch_t *s = &tls_scratch;
    void *piece = s->base + s->used;
    s->used += SCRATCH(bytes);
    return piece;
}

/* Frees the scratch regions of up to n_threads threads (those of the pool that run this region). */
void hm2bp_release_scratch(int32_t n_threads) {
#pragma omp parallel num_threads(n_threads > 0 ? n_threads : 1)
    {
        free(tls_scratch.base);
        tls_scratch.base = NULL;
        tls_scratch.cap = tls_scratch.used = 0;
    }
}
