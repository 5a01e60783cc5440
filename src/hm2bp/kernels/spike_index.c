/* CSR index of the nonzero entries of a spike matrix S [R, N] (rows r = t·B + b), plus per-sample
 * counts [B, N], in one pass over S (at long windows S is tens of MB and reading it is most of the
 * cost). Each thread scans a contiguous range of rows, appends their column indices to its own buffer
 * and counts the spikes of its rows per sample; the row lengths become row_ptr [R+1] and the counts are
 * added up. The caller then allocates cols [nnz] and calls hm2bp_spike_index_take, which copies each
 * thread's buffer into place (one memcpy per thread: its rows are contiguous) and frees the buffers. */
#include "hm2bp_kernels.h"

typedef struct { int nt; int32_t **buf; int64_t *first_row, *n_rows; } index_parts;

static void index_parts_free(index_parts *ip) {
    if (!ip) return;
    if (ip->buf)
        for (int k = 0; k < ip->nt; k++) free(ip->buf[k]);
    free(ip->buf); free(ip->first_row); free(ip->n_rows); free(ip);
}

static index_parts *index_parts_new(int nt) {
    index_parts *ip = calloc(1, sizeof(index_parts));
    if (!ip) return NULL;
    ip->nt = nt;
    ip->buf = calloc((size_t)nt, sizeof(int32_t *));
    ip->first_row = malloc((size_t)nt * sizeof(int64_t));
    ip->n_rows = malloc((size_t)nt * sizeof(int64_t));
    if (!ip->buf || !ip->first_row || !ip->n_rows) { index_parts_free(ip); return NULL; }
    return ip;
}

/* row_ptr [R+1] from the row lengths in row_ptr[1:], and counts [B, N] as the sum of the nt threads'
 * counts local [nt, B, N]. */
static void index_finish(int64_t *row_ptr, int64_t R, int64_t *counts, const int32_t *local, int64_t BN, int nt) {
    row_ptr[0] = 0;
    for (int64_t r = 0; r < R; r++) row_ptr[r + 1] += row_ptr[r];
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < BN; i++) {
        int64_t c = 0;
        for (int k = 0; k < nt; k++) c += local[k * BN + i];
        counts[i] = c;
    }
}

void hm2bp_spike_index_take(void *handle, const int64_t *row_ptr, int32_t *cols) {
    index_parts *ip = handle;
    if (ip && cols) {
#pragma omp parallel for num_threads(ip->nt) schedule(static)
        for (int k = 0; k < ip->nt; k++) {
            int64_t r0 = ip->first_row[k], r1 = r0 + ip->n_rows[k];
            if (r1 > r0) memcpy(cols + row_ptr[r0], ip->buf[k], (size_t)(row_ptr[r1] - row_ptr[r0]) * sizeof(int32_t));
        }
    }
    index_parts_free(ip);
}

/* float spikes: checked for values other than 0 and 1 */
#define TYPE float
#define SUFFIX f32
#define CHECK_VALUES 1
#include "spike_index_body.h"
#undef TYPE
#undef SUFFIX
#undef CHECK_VALUES
/* bytes: any nonzero byte is a spike */
#define TYPE uint8_t
#define SUFFIX u8
#define CHECK_VALUES 0
#include "spike_index_body.h"
#undef TYPE
#undef SUFFIX
#undef CHECK_VALUES
