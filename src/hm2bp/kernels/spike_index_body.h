/* The spike index for one element type (TYPE, SUFFIX; CHECK_VALUES: refuse values other than 0 and 1). */

/* Rows [r0, r1) of S: their column indices appended to *bufp (grown as needed; NULL without memory),
 * their lengths into row_ptr[r + 1], the spikes counted per sample into cnt [B, N]. Stops early (and
 * sets *stop for the other threads) at a value other than 0/1 or when the running *total passes max_nnz
 * (≥ 0). Returns 1 when it saw a value other than 0/1. */
static int FN(index_rows)(const TYPE *s, int64_t r0, int64_t r1, int64_t N, int64_t B, int64_t *row_ptr,
                          int32_t *cnt, int64_t max_nnz, int64_t *total, int *stop, int32_t **bufp) {
    int64_t cap = 1024, n = 0;
    int32_t *buf = malloc((size_t)cap * sizeof(int32_t));
    int o = 0;
    for (int64_t r = r0; r < r1 && buf && !__atomic_load_n(stop, __ATOMIC_RELAXED); r++) {
        const TYPE *sr = s + r * N;
        int32_t *cb = cnt + (r % B) * N;
        if (n + N > cap) { /* room for a full row */
            while (n + N > cap) cap *= 2;
            int32_t *grown = realloc(buf, (size_t)cap * sizeof(int32_t));
            if (!grown) { free(buf); buf = NULL; break; }
            buf = grown;
        }
        int64_t start = n, j0 = 0;
        for (; j0 + 16 <= N; j0 += 16) {
            int any = 0;
            for (int i = 0; i < 16; i++) any |= sr[j0 + i] != 0;
            if (!any) continue;
            for (int i = 0; i < 16; i++)
                if (sr[j0 + i] != 0) {
                    if (CHECK_VALUES) o |= sr[j0 + i] != 1;
                    buf[n++] = (int32_t)(j0 + i);
                    cb[j0 + i]++;
                }
        }
        for (int64_t j = j0; j < N; j++)
            if (sr[j] != 0) {
                if (CHECK_VALUES) o |= sr[j] != 1;
                buf[n++] = (int32_t)j;
                cb[j]++;
            }
        row_ptr[r + 1] = n - start;
        if (o || (max_nnz >= 0 && __atomic_add_fetch(total, n - start, __ATOMIC_RELAXED) > max_nnz)) {
            __atomic_store_n(stop, 1, __ATOMIC_RELAXED);
            break;
        }
    }
    *bufp = buf;
    return o;
}

/* S [R = p->T · p->B, N = p->N]. Returns nnz with *handle set, or (float input) -1 when S holds NaN/inf, -2
 * when it holds values other than 0 and 1 (graded input: the dense path takes it), -3 without memory, -4
 * when there are more than max_nnz spikes (≥ 0; the dense path is then cheaper); *handle is then NULL.
 * The scan stops early in the last three cases, so that a dense or graded input never gets a large index
 * built. */
int64_t FN(hm2bp_spike_index)(const hm2bp_params *p, const TYPE *s, int64_t *row_ptr, int64_t *counts,
                              int64_t max_nnz, void **handle) {
    *handle = NULL;
    if (!params_ok(p)) return HM2BP_BAD_PARAMS;
    int64_t T = p->T, B = p->B, N = p->N, R = T * B;
    int nt = (int)thread_count(p);
    if (T < nt) nt = T > 0 ? (int)T : 1;
    index_parts *ip = index_parts_new(nt);
    int32_t *local = malloc((size_t)(nt * B * N) * sizeof(int32_t) + 1); /* per-thread counts */
    if (!ip || !local) { index_parts_free(ip); free(local); return -3; }
    int odd = 0, failed = 0, stop = 0;
    int64_t total = 0;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(| : odd, failed)
    for (int k = 0; k < nt; k++) {
        int64_t t0, nt_k = block_bounds(T, nt, k, &t0);
        int64_t r0 = t0 * B, r1 = (t0 + nt_k) * B;
        int32_t *cnt = local + k * B * N;
        memset(cnt, 0, (size_t)(B * N) * sizeof(int32_t));
        ip->first_row[k] = r0;
        ip->n_rows[k] = r1 - r0;
        odd |= FN(index_rows)(s, r0, r1, N, B, row_ptr, cnt, max_nnz, &total, &stop, &ip->buf[k]);
        failed |= ip->buf[k] == NULL;
    }
    if (failed || odd || stop) {
        index_parts_free(ip); free(local);
        if (failed) return -3;
        if (!odd) return -4;
        for (int64_t i = 0; i < R * N; i++) /* rare: tell NaN/inf from graded values */
            if (s[i] != s[i] || s[i] - s[i] != 0) return -1;
        return -2;
    }
    index_finish(row_ptr, R, counts, local, B * N, nt);
    free(local);
    *handle = ip;
    return row_ptr[R];
}
