/* dst[c * ld_dst + r] = src[r * C + c] for src [R, C]: a transpose in 32 × 32 tiles, so that reads and
 * writes both stay within a few cache lines at a time; float goes through 8 × 8 AVX tiles where there
 * are (a body file of instantiate.h). */
void FN(transpose)(const TYPE *restrict src, int64_t R, int64_t C, TYPE *restrict dst, int64_t ld_dst) {
    const int tile8 = HM2BP_TILE8 && sizeof(TYPE) == sizeof(float);
    for (int64_t r0 = 0; r0 < R; r0 += 32)
        for (int64_t c0 = 0; c0 < C; c0 += 32) {
            int64_t r1 = r0 + 32 < R ? r0 + 32 : R, c1 = c0 + 32 < C ? c0 + 32 : C, r = r0;
            for (; tile8 && r + 8 <= r1; r += 8) {
                int64_t c = c0;
                for (; c + 8 <= c1; c += 8)
                    transpose8_f32((const float *)src + r * C + c, C, (float *)dst + c * ld_dst + r, ld_dst);
                for (; c < c1; c++)
                    for (int64_t k = r; k < r + 8; k++) dst[c * ld_dst + k] = src[k * C + c];
            }
            for (int64_t c = c0; c < c1; c++)
                for (int64_t k = r; k < r1; k++) dst[c * ld_dst + k] = src[k * C + c];
        }
}
