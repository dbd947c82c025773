/* Register-blocked micro-kernels of the implicit GEMM (src/_implicit.pyx).
 *
 * Forward: C[MR x NR] (+)= A[MR x K] * B[K x NR], where A is a packed block of
 * MR output channels' weights (A[k*MR + i]) and row k of B is NR consecutive
 * cells of the band buffer at a per-tap offset (base + off[k]): no column
 * matrix is written.  NR is NV vector registers of the ISA this file is
 * compiled for; the MR x NV accumulators stay in registers.
 * Weight gradient: dot products along output cells (below).
 */
#ifndef FASTCONV_MICROKERNEL_H
#define FASTCONV_MICROKERNEL_H
#include <stddef.h>
#include <string.h>

/* MR x NV accumulators + the NV B vectors (+ a broadcast temporary) must fit
 * the register file: 32 zmm with AVX-512, 16 ymm/xmm otherwise.
 * AVX-512: 8 x 3 (8 output channels x 48 positions): 8 broadcasts and 3
 * vector loads per 24 FMAs.  16 x 1 issued 17 loads per 16 FMAs, more than
 * the two load ports of a Sapphire Rapids core serve in the 8 cycles of its
 * FMAs (ResNet 3x3 forward: 8.46 -> 6.48 ms).
 * AVX2: 4 x 3 (4 output channels x 24 positions, XNNPACK's and oneDNN's
 * shape), so each k step issues 3 vector loads and 4 broadcasts for 12 FMAs
 * instead of 1 + 12 for 12 (12 x 1): the load ports no longer limit the FMA
 * rate, and MR = 4 leaves no idle rows for channel counts divisible by 4
 * (6 x 2 idles 11 % of the rows at 32 channels; 4 x 3 measured 5-15 %
 * faster).  Baseline SSE2: 6 x 2. */
#if defined(__AVX512F__)
#define FC_VBYTES 64
#define FC_MR 8
#define FC_NV 3
#elif defined(__AVX2__) || defined(__AVX__)
#define FC_VBYTES 32
#define FC_MR 4
#define FC_NV 3
#else
#define FC_VBYTES 16
#define FC_MR 6
#define FC_NV 2
#endif
#define FC_NR_F (FC_NV * FC_VBYTES / 4)
#define FC_NR_D (FC_NV * FC_VBYTES / 8)

/* Unroll the loops over the register block completely: rolled, they index the
 * accumulators by a variable, and gcc keeps them all in memory. */
#define FC_UNROLL _Pragma("GCC unroll 32")

typedef float fc_vf __attribute__((vector_size(FC_VBYTES), aligned(4)));
typedef double fc_vd __attribute__((vector_size(FC_VBYTES), aligned(8)));

/* C[MR x NR] (+)= A[MR x K] * B[K x NR]; B's row k is the NR cells at
 * base + off[k], NR = NV vectors; then + bias[i] on row i when `bias` is not
 * NULL (the last K block of a tile written straight into the output).  The
 * whole MR x NR tile of C is written, even at edges (rows past a layer's last
 * channel have zero weights, cells past a panel's end are dropped by the
 * caller): one store path keeps the accumulators in registers to the end (a
 * second, partial path made gcc spill all of them after every K block, 6 %
 * of a ResNet layer).  Each C cell is the same chain of multiply-adds
 * whatever NV is, and ((sum of K blocks) + bias) whatever C is. */
/* One vector to a 64-byte aligned address, around the caches: the forward
 * results no one reads soon (whole, aligned lines of C: see _implicit.pyx's
 * stream_output). */
#if defined(__AVX512F__)
#include <immintrin.h>
static inline void fc_stream_f(float *p, fc_vf v) { _mm512_stream_ps(p, (__m512)v); }
static inline void fc_stream_d(double *p, fc_vd v) { _mm512_stream_pd(p, (__m512d)v); }
#elif defined(__AVX__)
#include <immintrin.h>
static inline void fc_stream_f(float *p, fc_vf v) { _mm256_stream_ps(p, (__m256)v); }
static inline void fc_stream_d(double *p, fc_vd v) { _mm256_stream_pd(p, (__m256d)v); }
#elif defined(__SSE2__)
#include <emmintrin.h>
static inline void fc_stream_f(float *p, fc_vf v) { _mm_stream_ps(p, (__m128)v); }
static inline void fc_stream_d(double *p, fc_vd v) { _mm_stream_pd(p, (__m128d)v); }
#else
static inline void fc_stream_f(float *p, fc_vf v) { memcpy(p, &v, sizeof(v)); }
static inline void fc_stream_d(double *p, fc_vd v) { memcpy(p, &v, sizeof(v)); }
#endif

/* Order a job's non-temporal stores before whatever reads its output next
 * (another thread, after the team's barrier). */
static inline void fc_store_fence(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_sfence();
#endif
}

#define FC_DEFINE_INDIRECT_KERNEL(NAME, T, V, NV, STORE)                           \
static void NAME(ptrdiff_t K, const T *A, const T *base, const ptrdiff_t *off,     \
                 T *C, ptrdiff_t ldc, int accumulate, const T *bias) {            \
    enum { VLEN = FC_VBYTES / sizeof(T) };                                        \
    V c[FC_MR][NV];                                                               \
    FC_UNROLL for (int i = 0; i < FC_MR; i++)                                      \
        FC_UNROLL for (int v = 0; v < NV; v++) c[i][v] = (V){0};                   \
    for (ptrdiff_t k = 0; k < K; k++) {                                           \
        const T *brow = base + off[k];                                            \
        V b[NV];                                                                  \
        FC_UNROLL for (int v = 0; v < NV; v++) b[v] = *(const V *)(brow + v * VLEN); \
        const T *a = A + k * FC_MR;                                               \
        FC_UNROLL for (int i = 0; i < FC_MR; i++)   /* unrolled: one broadcast, NV FMAs */ \
            FC_UNROLL for (int v = 0; v < NV; v++) c[i][v] += a[i] * b[v];         \
    }                                                                             \
    FC_UNROLL for (int i = 0; i < FC_MR; i++)                                      \
        FC_UNROLL for (int v = 0; v < NV; v++) {                                   \
            V *dst = (V *)(C + i * ldc + v * VLEN);                               \
            V r = accumulate ? *dst + c[i][v] : c[i][v];                          \
            if (bias) r += bias[i];                                               \
            STORE((T *)dst, r);                                                   \
        }                                                                         \
}

#define FC_STORE_F(p, v) (*(fc_vf *)(p) = (v))
#define FC_STORE_D(p, v) (*(fc_vd *)(p) = (v))
FC_DEFINE_INDIRECT_KERNEL(fc_kernel_indirect_f, float, fc_vf, FC_NV, FC_STORE_F)
FC_DEFINE_INDIRECT_KERNEL(fc_kernel_indirect_d, double, fc_vd, FC_NV, FC_STORE_D)
/* The same, its results streamed (fc_stream): a kernel of its own, so the
 * others keep one store path with no branch (6 % of a grouped layer's input
 * gradient on the AVX2 build, K = 72). */
FC_DEFINE_INDIRECT_KERNEL(fc_kernel_streamed_f, float, fc_vf, FC_NV, fc_stream_f)
FC_DEFINE_INDIRECT_KERNEL(fc_kernel_streamed_d, double, fc_vd, FC_NV, fc_stream_d)
/* A tile's last panel is often short (a 7x7 image is 61 band cells: 2 panels
 * of 24 and 13 cells): narrower kernels compute it on 1 or 2 vectors. */
FC_DEFINE_INDIRECT_KERNEL(fc_kernel_indirect1_f, float, fc_vf, 1, FC_STORE_F)
FC_DEFINE_INDIRECT_KERNEL(fc_kernel_indirect1_d, double, fc_vd, 1, FC_STORE_D)
#if FC_NV > 2
FC_DEFINE_INDIRECT_KERNEL(fc_kernel_indirect2_f, float, fc_vf, 2, FC_STORE_F)
FC_DEFINE_INDIRECT_KERNEL(fc_kernel_indirect2_d, double, fc_vd, 2, FC_STORE_D)
#endif

/* The kernel on the fewest vectors that cover `cols` cells (C: MR rows of at
 * least that many whole vectors). */
#define FC_DEFINE_PANEL_KERNEL(NAME, T, FULL, ONE, TWO)                            \
static inline void NAME(ptrdiff_t K, const T *A, const T *base, const ptrdiff_t *off, \
                        T *C, ptrdiff_t ldc, int cols, int accumulate, const T *bias) { \
    enum { VLEN = FC_VBYTES / sizeof(T) };                                         \
    int nv = (cols + VLEN - 1) / VLEN;                                             \
    if (nv >= FC_NV)                                                               \
        FULL(K, A, base, off, C, ldc, accumulate, bias);                           \
    else if (nv == 1)                                                              \
        ONE(K, A, base, off, C, ldc, accumulate, bias);                            \
    else                                                                           \
        TWO(K, A, base, off, C, ldc, accumulate, bias);                            \
}
#if FC_NV > 2
FC_DEFINE_PANEL_KERNEL(fc_kernel_panel_f, float, fc_kernel_indirect_f, fc_kernel_indirect1_f,
                       fc_kernel_indirect2_f)
FC_DEFINE_PANEL_KERNEL(fc_kernel_panel_d, double, fc_kernel_indirect_d, fc_kernel_indirect1_d,
                       fc_kernel_indirect2_d)
#else
FC_DEFINE_PANEL_KERNEL(fc_kernel_panel_f, float, fc_kernel_indirect_f, fc_kernel_indirect1_f,
                       fc_kernel_indirect_f)
FC_DEFINE_PANEL_KERNEL(fc_kernel_panel_d, double, fc_kernel_indirect_d, fc_kernel_indirect1_d,
                       fc_kernel_indirect_d)
#endif

/* One packed block of the forward kernel's weights (mr rows: FC_MR, or a
 * vector's worth for the channel-vector kernel): dst[k * mr + i] =
 * src[i * rs + k * ks] for the block's `rows` output channels, 0 for the rows
 * past them.  Row-major across k: MR stores side by side, MR read streams. */
#define FC_DEFINE_PACK_BLOCK(NAME, T)                                              \
static void NAME(T *restrict dst, const T *restrict src, ptrdiff_t K, int rows,    \
                 ptrdiff_t rs, ptrdiff_t ks, int mr) {                             \
    if (rows == mr) {                                                              \
        for (ptrdiff_t k = 0; k < K; k++)                                          \
            for (int i = 0; i < mr; i++) dst[k * mr + i] = src[i * rs + k * ks];   \
        return;                                                                    \
    }                                                                              \
    for (ptrdiff_t k = 0; k < K; k++)                                              \
        for (int i = 0; i < mr; i++)                                               \
            dst[k * mr + i] = i < rows ? src[i * rs + k * ks] : (T)0;              \
}

FC_DEFINE_PACK_BLOCK(fc_pack_block_f, float)
FC_DEFINE_PACK_BLOCK(fc_pack_block_d, double)

/* Depthwise (one input channel per group, so no weight is shared between
 * output rows), one output row at a time: out[j] = b + sum_k w[k] *
 * base[off[k] + j] for j < n, taps in order, written straight into the output
 * row (no result buffer, no store pass, none of the dropped columns between
 * band rows).  The row goes in chunks of up to FC_DW_CHUNK vectors, the last
 * chunk with just the vectors it needs; each tap costs a broadcast and one
 * load per vector (load-bound, as any depthwise kernel).  Cells past n are
 * computed in the last vector (the band's slack holds them) but not stored. */
#define FC_DW_CHUNK 8
#define FC_DW_ROW_CHUNK(T, V, NV)                                                  \
    do {                                                                           \
        V c[NV];                                                                   \
        for (int v = 0; v < NV; v++) c[v] = (V){0};                                \
        for (ptrdiff_t k = 0; k < K; k++) {                                        \
            const T *brow = base + off[k] + j0;                                    \
            T a = w[k];                                                            \
            for (int v = 0; v < NV; v++) c[v] += a * *(const V *)(brow + v * L);  \
        }                                                                          \
        for (int v = 0; v < NV - 1; v++) *(V *)(out + j0 + v * L) = c[v] + b;     \
        ptrdiff_t rest = n - j0 - (NV - 1) * L;   /* 1 .. L cells */               \
        if (rest >= L) {                                                           \
            *(V *)(out + j0 + (NV - 1) * L) = c[NV - 1] + b;                       \
        } else {                                                                   \
            T tmp[L];                                                              \
            V last = c[NV - 1] + b;                                                \
            memcpy(tmp, &last, sizeof(tmp));                                       \
            for (ptrdiff_t j = 0; j < rest; j++) out[j0 + (NV - 1) * L + j] = tmp[j]; \
        }                                                                          \
    } while (0)

#define FC_DEFINE_DEPTHWISE_ROW(NAME, T, V)                                        \
static void NAME(ptrdiff_t K, const T *w, const T *base, const ptrdiff_t *off,     \
                 T *out, ptrdiff_t n, T b) {                                       \
    enum { L = FC_VBYTES / sizeof(T) };                                            \
    ptrdiff_t j0 = 0;                                                              \
    for (; n - j0 > FC_DW_CHUNK * L; j0 += FC_DW_CHUNK * L)                        \
        FC_DW_ROW_CHUNK(T, V, FC_DW_CHUNK);                                        \
    switch ((n - j0 + L - 1) / L) {                                                \
    case 1: FC_DW_ROW_CHUNK(T, V, 1); break;                                       \
    case 2: FC_DW_ROW_CHUNK(T, V, 2); break;                                       \
    case 3: FC_DW_ROW_CHUNK(T, V, 3); break;                                       \
    case 4: FC_DW_ROW_CHUNK(T, V, 4); break;                                       \
    case 5: FC_DW_ROW_CHUNK(T, V, 5); break;                                       \
    case 6: FC_DW_ROW_CHUNK(T, V, 6); break;                                       \
    case 7: FC_DW_ROW_CHUNK(T, V, 7); break;                                       \
    case 8: FC_DW_ROW_CHUNK(T, V, 8); break;                                       \
    default: break;                       /* n == j0: nothing left */              \
    }                                                                              \
}

FC_DEFINE_DEPTHWISE_ROW(fc_depthwise_row_f, float, fc_vf)
FC_DEFINE_DEPTHWISE_ROW(fc_depthwise_row_d, double, fc_vd)

/* dst[j] = src[j] + b for j < n: a result row segment into the output.  The
 * pointers never overlap (scratch -> output); saying so lets the compiler
 * vectorise without a run-time alias check. */
#define FC_DEFINE_STORE_ROW(NAME, T, V)                                            \
static inline void NAME(T *restrict dst, const T *restrict src, ptrdiff_t n, T b) { \
    enum { L = FC_VBYTES / sizeof(T) };                                            \
    if (n < L) {                                                                   \
        for (ptrdiff_t j = 0; j < n; j++) dst[j] = src[j] + b;                     \
        return;                                                                    \
    }                                                                              \
    ptrdiff_t j = 0;                                                               \
    for (; j + L <= n; j += L) *(V *)(dst + j) = *(const V *)(src + j) + b;        \
    /* the tail as one vector ending at n: it rewrites a few cells with the same \
     * values (dst and src never overlap), instead of a scalar loop per row */     \
    if (j < n) *(V *)(dst + n - L) = *(const V *)(src + n - L) + b;               \
}

FC_DEFINE_STORE_ROW(fc_store_row_f, float, fc_vf)
FC_DEFINE_STORE_ROW(fc_store_row_d, double, fc_vd)

/* One band row: dst[0:lo] = 0, dst[lo:hi] = src[lo:hi], dst[hi:n] = 0.
 * The pads are a cell or two and the rows tens of cells: libc calls (and the
 * memset calls GCC turns zero loops into) cost more than the copy itself, so
 * short rows are moved in vectors.  The zero pads are whole vectors and may
 * write up to one vector past dst + n: the caller fills a band in increasing
 * address order (later rows overwrite them) and the band ends in a panel of
 * slack. */
/* GCC would turn the short vector loops below back into libc calls: an empty
 * asm makes the loop index opaque to its pattern matcher (and costs nothing). */
#if defined(__GNUC__)
#define FC_OPAQUE(j) __asm__("" : "+r"(j))
#else
#define FC_OPAQUE(j) ((void)0)
#endif
#define FC_DEFINE_BAND_ROW(NAME, T, V)                                             \
static inline void NAME(T *restrict dst, const T *restrict src, ptrdiff_t lo,      \
                        ptrdiff_t hi, ptrdiff_t n) {                               \
    enum { L = FC_VBYTES / sizeof(T) };                                            \
    if (n > 64 * L) {                       /* long rows: libc is as fast */       \
        if (lo > 0) memset(dst, 0, lo * sizeof(T));                                \
        if (hi > lo) memcpy(dst + lo, src + lo, (hi - lo) * sizeof(T));            \
        if (n > hi) memset(dst + hi, 0, (n - hi) * sizeof(T));                     \
        return;                                                                    \
    }                                                                              \
    for (ptrdiff_t j = 0; j < lo; j += L) {                                       \
        FC_OPAQUE(j);                                                              \
        *(V *)(dst + j) = (V){0};                                                  \
    }                                                                              \
    ptrdiff_t m = hi - lo, j = 0;                                                  \
    if (m >= L) {                                                                  \
        for (; j + 4 * L <= m; j += 4 * L) {                                       \
            FC_OPAQUE(j);                                                          \
            V v0 = *(const V *)(src + lo + j), v1 = *(const V *)(src + lo + j + L);  \
            V v2 = *(const V *)(src + lo + j + 2 * L);                             \
            V v3 = *(const V *)(src + lo + j + 3 * L);                             \
            *(V *)(dst + lo + j) = v0;                                             \
            *(V *)(dst + lo + j + L) = v1;                                         \
            *(V *)(dst + lo + j + 2 * L) = v2;                                     \
            *(V *)(dst + lo + j + 3 * L) = v3;                                     \
        }                                                                          \
        for (; j + L <= m; j += L) {                                               \
            FC_OPAQUE(j);                                                          \
            *(V *)(dst + lo + j) = *(const V *)(src + lo + j);                     \
        }                                                                          \
        if (j < m) *(V *)(dst + hi - L) = *(const V *)(src + hi - L);               \
    } else {                                                                       \
        for (; j < m; j++) {                                                       \
            FC_OPAQUE(j);                                                          \
            dst[lo + j] = src[lo + j];                                             \
        }                                                                          \
    }                                                                              \
    for (ptrdiff_t k = hi; k < n; k += L) {                                        \
        FC_OPAQUE(k);                                                              \
        *(V *)(dst + k) = (V){0};                                                  \
    }                                                                              \
}

FC_DEFINE_BAND_ROW(fc_band_row_f, float, fc_vf)
FC_DEFINE_BAND_ROW(fc_band_row_d, double, fc_vd)

/* dst[j] = src[2 * j] for j < n: one stride phase of a stride-2 band row.
 * Each vector of cells is the even lanes of two loads, picked by one
 * two-source shuffle (vpermt2ps on AVX-512).  The loads never reach past
 * src[2 * (n - 1)]: the last whole vector ends on an overlapping one, and
 * the last cell is copied alone.  The stride-2 forward spent 12 % of its
 * time gathering these cells one at a time. */
#define FC_DEFINE_GATHER2(NAME, T, V, I)                                           \
static void NAME(T *restrict dst, const T *restrict src, ptrdiff_t n) {            \
    enum { L = FC_VBYTES / sizeof(T) };                                            \
    typedef I M __attribute__((vector_size(FC_VBYTES)));                          \
    M even;                                                                        \
    for (int i = 0; i < L; i++) even[i] = 2 * i;                                   \
    ptrdiff_t j = 0;                                                               \
    if (n > L) {                                                                   \
        for (; j + L < n; j += L)                                                  \
            *(V *)(dst + j) = __builtin_shuffle(*(const V *)(src + 2 * j),         \
                                                *(const V *)(src + 2 * j + L), even); \
        if (j < n - 1) {                                                           \
            ptrdiff_t k = n - 1 - L;    /* reads src[2k .. 2k + 2L - 1 = 2n - 3] */ \
            *(V *)(dst + k) = __builtin_shuffle(*(const V *)(src + 2 * k),         \
                                                *(const V *)(src + 2 * k + L), even); \
        }                                                                          \
        j = n - 1;                                                                 \
    }                                                                              \
    for (; j < n; j++) dst[j] = src[2 * j];                                        \
}

FC_DEFINE_GATHER2(fc_gather2_f, float, fc_vf, int)
FC_DEFINE_GATHER2(fc_gather2_d, double, fc_vd, long long)

/* dst[2j] = src0[j] + b, dst[2j + 1] = src1[j] + b for j < n: the two W taps of
 * a pixel shuffle of 2 (transposed convolution, stride = kernel = 2 along W)
 * interleaved into one contiguous output row. */
#define FC_DEFINE_STORE_PAIR(NAME, T)                                              \
static inline void NAME(T *restrict dst, const T *restrict src0,                   \
                        const T *restrict src1, ptrdiff_t n, T b) {                \
    for (ptrdiff_t j = 0; j < n; j++) {                                            \
        dst[2 * j] = src0[j] + b;                                                  \
        dst[2 * j + 1] = src1[j] + b;                                              \
    }                                                                              \
}

FC_DEFINE_STORE_PAIR(fc_store_pair_f, float)
FC_DEFINE_STORE_PAIR(fc_store_pair_d, double)

/* The weight gradient's register block: FC_WG_MR output channels x FC_WG_NR
 * weight columns of dot products, each a vector of partial sums.  A k step
 * loads MR grad_output vectors and NR band vectors for MR x NR FMAs.  AVX-512
 * 4 x 6: its unaligned 64-byte loads each span two cache lines, and 3 x 4 (7
 * loads per 12 FMAs) left the FMA units waiting on the load ports. */
#if defined(__AVX512F__)
#define FC_WG_MR 4
#define FC_WG_NR 6
#else
#define FC_WG_MR 3
#define FC_WG_NR 4
#endif

/* Keep v in a register: gcc otherwise folds a vector that several FMAs use
 * into each of them as a memory operand, one load per FMA instead of one. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && defined(__AVX__)
#define FC_IN_REGISTER(v) __asm__("" : "+v"(v))
#else
#define FC_IN_REGISTER(v) ((void)0)
#endif

/* The first n (< one vector) elements at p, zeros in the other lanes, reading
 * no element past p + n: masked loads where the ISA has them. */
#if defined(__AVX512F__)
#include <immintrin.h>
static inline fc_vf fc_load_partial_f(const float *p, ptrdiff_t n) {
    return (fc_vf)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
}
static inline fc_vd fc_load_partial_d(const double *p, ptrdiff_t n) {
    return (fc_vd)_mm512_maskz_loadu_pd((__mmask8)((1u << n) - 1), p);
}
#elif defined(__AVX2__)
#include <immintrin.h>
static inline fc_vf fc_load_partial_f(const float *p, ptrdiff_t n) {
    __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n),
                                      _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return (fc_vf)_mm256_maskload_ps(p, mask);
}
static inline fc_vd fc_load_partial_d(const double *p, ptrdiff_t n) {
    __m256i mask = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
    return (fc_vd)_mm256_maskload_pd(p, mask);
}
#else
static inline fc_vf fc_load_partial_f(const float *p, ptrdiff_t n) {
    fc_vf v = {0};
    memcpy(&v, p, n * sizeof(float));
    return v;
}
static inline fc_vd fc_load_partial_d(const double *p, ptrdiff_t n) {
    fc_vd v = {0};
    memcpy(&v, p, n * sizeof(double));
    return v;
}
#endif

/* The lanes of v summed left to right.  Not inlined: gcc vectorised the
 * kernels' reductions together through the stack, and so kept every
 * accumulator in memory through the whole kernel. */
__attribute__((noinline)) static float fc_hsum_f(fc_vf v) {
    float sum = 0;
    for (int l = 0; l < (int)(FC_VBYTES / sizeof(float)); l++) sum += v[l];
    return sum;
}
__attribute__((noinline)) static double fc_hsum_d(fc_vd v) {
    double sum = 0;
    for (int l = 0; l < (int)(FC_VBYTES / sizeof(double)); l++) sum += v[l];
    return sum;
}

/* One k step of the weight-gradient block: LOAD(p) is one vector at p. */
#define FC_WGRAD_STEP(V, LOAD)                                                     \
    do {                                                                           \
        V gv[FC_WG_MR];                                                            \
        FC_UNROLL for (int i = 0; i < FC_WG_MR; i++) gv[i] = LOAD(g[i] + q);       \
        FC_UNROLL for (int j = 0; j < FC_WG_NR; j++) {                             \
            V bv = LOAD(b[j] + q);                                                 \
            FC_IN_REGISTER(bv);                                                    \
            FC_UNROLL for (int i = 0; i < FC_WG_MR; i++) c[i][j] += gv[i] * bv;    \
        }                                                                          \
    } while (0)

/* A row of `cols` cells: whole vectors, then the rest zero-filled.  AVX-512
 * runs both in one loop under a lane mask (all ones but on the last step): a
 * separate tail step made gcc spill the 24 accumulators around every row. */
#if defined(__AVX512F__)
#define FC_WG_LOAD_MASKED_f(p) ((fc_vf)_mm512_maskz_loadu_ps((__mmask16)mask, (p)))
#define FC_WG_LOAD_MASKED_d(p) ((fc_vd)_mm512_maskz_loadu_pd((__mmask8)mask, (p)))
#define FC_WGRAD_ROW(V, SUFFIX)                                                    \
    for (ptrdiff_t q = 0; q < cols; q += VL) {                                     \
        unsigned mask = cols - q >= VL ? ~0u : (1u << (cols - q)) - 1;             \
        FC_WGRAD_STEP(V, FC_WG_LOAD_MASKED_##SUFFIX);                              \
    }
#else
#define FC_WGRAD_ROW(V, SUFFIX)                                                    \
    ptrdiff_t q = 0;                                                               \
    for (; q < full; q += VL) FC_WGRAD_STEP(V, *(const V *));                      \
    if (full < cols) {                                                             \
        FC_WGRAD_STEP(V, FC_WG_LOAD_REST_##SUFFIX);                                \
    }
#define FC_WG_LOAD_REST_f(p) fc_load_partial_f((p), cols - full)
#define FC_WG_LOAD_REST_d(p) fc_load_partial_d((p), cols - full)
#endif

#define FC_DEFINE_WGRAD_KERNEL(NAME, T, V, HSUM, SUFFIX)                           \
static void NAME(const T *const *G, ptrdiff_t gstride, const T *base,             \
                 const ptrdiff_t *off, ptrdiff_t bstride, ptrdiff_t rows,          \
                 ptrdiff_t cols, T *acc) {                                         \
    enum { VL = FC_VBYTES / sizeof(T) };                                          \
    V c[FC_WG_MR][FC_WG_NR];                                                      \
    FC_UNROLL for (int i = 0; i < FC_WG_MR; i++)                                   \
        FC_UNROLL for (int j = 0; j < FC_WG_NR; j++) c[i][j] = (V){0};             \
    ptrdiff_t full = cols - cols % VL;                                            \
    (void)full;                                                                    \
    for (ptrdiff_t r = 0; r < rows; r++) {                                        \
        const T *g[FC_WG_MR];                                                     \
        const T *b[FC_WG_NR];                                                     \
        FC_UNROLL for (int i = 0; i < FC_WG_MR; i++) g[i] = G[i] + r * gstride;    \
        FC_UNROLL for (int j = 0; j < FC_WG_NR; j++) b[j] = base + off[j] + r * bstride; \
        FC_WGRAD_ROW(V, SUFFIX)                                                    \
    }                                                                             \
    FC_UNROLL for (int i = 0; i < FC_WG_MR; i++)                                   \
        FC_UNROLL for (int j = 0; j < FC_WG_NR; j++) acc[i * FC_WG_NR + j] = HSUM(c[i][j]); \
}

FC_DEFINE_WGRAD_KERNEL(fc_wgrad_f, float, fc_vf, fc_hsum_f, f)
FC_DEFINE_WGRAD_KERNEL(fc_wgrad_d, double, fc_vd, fc_hsum_d, d)

/* The same dot products for one output channel (depthwise: one input channel
 * per group, so no grad_output row is shared between weight rows): FC_WGD_NR
 * taps at a time, one grad_output load per FC_WGD_NR band loads and FMAs. */
#define FC_WGD_NR 9

#define FC_WGRAD_DW_BODY(T, V, NR, LOAD_PARTIAL, HSUM)                             \
    do {                                                                          \
        V c[NR];                                                                  \
        FC_UNROLL for (int j = 0; j < NR; j++) c[j] = (V){0};                      \
        for (ptrdiff_t r = 0; r < rows; r++) {                                    \
            const T *g = G + r * gstride;                                         \
            const T *b[NR];                                                       \
            FC_UNROLL for (int j = 0; j < NR; j++) b[j] = base + off[j] + r * bstride; \
            for (ptrdiff_t q = 0; q < full; q += VL) {                            \
                V gv = *(const V *)(g + q);                                       \
                FC_UNROLL for (int j = 0; j < NR; j++) c[j] += gv * *(const V *)(b[j] + q); \
            }                                                                     \
            if (full < cols) {                                                    \
                V gv = LOAD_PARTIAL(g + full, cols - full);                       \
                FC_UNROLL for (int j = 0; j < NR; j++)                             \
                    c[j] += gv * LOAD_PARTIAL(b[j] + full, cols - full);          \
            }                                                                     \
        }                                                                         \
        FC_UNROLL for (int j = 0; j < NR; j++) acc[j] = HSUM(c[j]);                \
    } while (0)

/* nr (1 .. FC_WGD_NR) taps: a 3 x 3 kernel is one call of 9, 5 x 5 two of 9
 * and one of 7, each running only the dot products it needs.  Each tap's sum
 * is the same whatever else the call computes. */
#define FC_DEFINE_WGRAD_DW_KERNEL(NAME, T, V, LOAD_PARTIAL, HSUM)                  \
static void NAME(const T *G, ptrdiff_t gstride, const T *base, const ptrdiff_t *off, \
                 ptrdiff_t bstride, ptrdiff_t rows, ptrdiff_t cols, int nr, T *acc) { \
    enum { VL = FC_VBYTES / sizeof(T) };                                          \
    ptrdiff_t full = cols - cols % VL;                                            \
    switch (nr) {                                                                 \
    case 1: FC_WGRAD_DW_BODY(T, V, 1, LOAD_PARTIAL, HSUM); break;                  \
    case 2: FC_WGRAD_DW_BODY(T, V, 2, LOAD_PARTIAL, HSUM); break;                  \
    case 3: FC_WGRAD_DW_BODY(T, V, 3, LOAD_PARTIAL, HSUM); break;                  \
    case 4: FC_WGRAD_DW_BODY(T, V, 4, LOAD_PARTIAL, HSUM); break;                  \
    case 5: FC_WGRAD_DW_BODY(T, V, 5, LOAD_PARTIAL, HSUM); break;                  \
    case 6: FC_WGRAD_DW_BODY(T, V, 6, LOAD_PARTIAL, HSUM); break;                  \
    case 7: FC_WGRAD_DW_BODY(T, V, 7, LOAD_PARTIAL, HSUM); break;                  \
    case 8: FC_WGRAD_DW_BODY(T, V, 8, LOAD_PARTIAL, HSUM); break;                  \
    default: FC_WGRAD_DW_BODY(T, V, FC_WGD_NR, LOAD_PARTIAL, HSUM); break;         \
    }                                                                             \
}

FC_DEFINE_WGRAD_DW_KERNEL(fc_wgrad_dw_f, float, fc_vf, fc_load_partial_f, fc_hsum_f)
FC_DEFINE_WGRAD_DW_KERNEL(fc_wgrad_dw_d, double, fc_vd, fc_load_partial_d, fc_hsum_d)

/* The forward kernel vectorised across output channels instead of cells, for
 * tiles the cell panels fit badly (a 7x7 image is 55 band cells: NR = 48
 * computes 64, on two 2-vector panels whose 8 broadcasts and 2 loads per 16
 * FMAs keep the load ports busier than the FMA units).  C[j][co] (+)= sum_k
 * A[k][co] * base[off[k] + cell[j]] for NK cells j and CV vectors of
 * channels: the cells are any band cells, so the 49 output cells of a 7x7
 * image are computed without the 6 dropped ones between its rows; A
 * holds CV packed blocks of one vector of channels each (block v at A + v *
 * astride, row k at + k * VL).  Each C cell is the same chain of
 * multiply-adds as in fc_kernel_indirect: the two give the same bits. */
#if defined(__AVX512F__)
#define FC_CVF_CV 4             /* 4 x 6: 24 accumulators + 4 + 1 of 32 registers */
#else
#define FC_CVF_CV 2             /* 2 x 6: 12 accumulators + 2 + 1 of 16 registers */
#endif
#define FC_CVF_NK 6

#define FC_CVF_BODY(T, V, SPLAT, NK)                                               \
    do {                                                                          \
        enum { VL = FC_VBYTES / sizeof(T) };                                      \
        V c[NK][FC_CVF_CV];                                                       \
        FC_UNROLL for (int j = 0; j < NK; j++)                                    \
            FC_UNROLL for (int v = 0; v < FC_CVF_CV; v++) c[j][v] = (V){0};       \
        for (ptrdiff_t k = 0; k < K; k++) {                                       \
            V av[FC_CVF_CV];                                                      \
            FC_UNROLL for (int v = 0; v < FC_CVF_CV; v++)                         \
                av[v] = *(const V *)(A + v * astride + k * VL);                   \
            const T *b = base + off[k];                                           \
            FC_OPAQUE(b);   /* one address per k, then b[cell[j]]: no add per cell */ \
            FC_UNROLL for (int j = 0; j < NK; j++) {                              \
                V bj = SPLAT(b[cell[j]]);                                         \
                FC_IN_REGISTER(bj);                                               \
                FC_UNROLL for (int v = 0; v < FC_CVF_CV; v++) c[j][v] += av[v] * bj; \
            }                                                                     \
        }                                                                         \
        FC_UNROLL for (int j = 0; j < NK; j++)                                    \
            FC_UNROLL for (int v = 0; v < FC_CVF_CV; v++) {                       \
                V *dst = (V *)(C + j * ldc + v * VL);                             \
                *dst = accumulate ? *dst + c[j][v] : c[j][v];                     \
            }                                                                     \
    } while (0)

/* nk (1 .. FC_CVF_NK) cells. */
#define FC_DEFINE_CVF_KERNEL(NAME, T, V, SPLAT)                                   \
static void NAME(int nk, ptrdiff_t K, const T *A, ptrdiff_t astride, const T *base, \
                 const ptrdiff_t *cell, const ptrdiff_t *off, T *C, ptrdiff_t ldc,  \
                 int accumulate) {                                                 \
    switch (nk) {                                                                 \
    case 1: FC_CVF_BODY(T, V, SPLAT, 1); break;                                   \
    case 2: FC_CVF_BODY(T, V, SPLAT, 2); break;                                   \
    case 3: FC_CVF_BODY(T, V, SPLAT, 3); break;                                   \
    case 4: FC_CVF_BODY(T, V, SPLAT, 4); break;                                   \
    case 5: FC_CVF_BODY(T, V, SPLAT, 5); break;                                   \
    default: FC_CVF_BODY(T, V, SPLAT, FC_CVF_NK); break;                          \
    }                                                                             \
}

/* The weight gradient vectorised across output channels instead of cells:
 * acc[j][co] += sum over the cells of gt[cell][co] * band[off[j] + cell], with
 * gt a tile of grad_output transposed to cells x channels (pitch `cop`, whole
 * vectors).  Each cell step loads CV channel vectors and broadcasts NK band
 * cells for CV x NK FMAs: no horizontal sums, no masked tails, and one long
 * loop per row (the dot-product kernel above ran 3.5 vectors per 56-cell row
 * on AVX-512, its unaligned loads splitting cache lines).  Each (j, co) sum
 * runs over the cells in order, then is added to acc. */
#if defined(__AVX512F__)
#define FC_WGT_CV 4             /* 4 x 6: 24 accumulators + 4 + 1 of 32 registers */
#define FC_WGT_NK4 6
#define FC_WGT_NK2 12
#else
#define FC_WGT_CV 2             /* 2 x 6: 12 accumulators + 2 + 1 of 16 registers */
#define FC_WGT_NK4 6
#define FC_WGT_NK2 6
#endif
#define FC_WGT_NK1 12

/* x in every lane (a broadcast load where x is read from memory). */
#if defined(__AVX512F__)
#define fc_splat_f(x) ((fc_vf)_mm512_set1_ps(x))
#define fc_splat_d(x) ((fc_vd)_mm512_set1_pd(x))
#elif defined(__AVX__)
#define fc_splat_f(x) ((fc_vf)_mm256_set1_ps(x))
#define fc_splat_d(x) ((fc_vd)_mm256_set1_pd(x))
#elif defined(__SSE2__)
#include <emmintrin.h>
#define fc_splat_f(x) ((fc_vf)_mm_set1_ps(x))
#define fc_splat_d(x) ((fc_vd)_mm_set1_pd(x))
#else
#define fc_splat_f(x) ((x) - (fc_vf){0})
#define fc_splat_d(x) ((x) - (fc_vd){0})
#endif
#define FC_WGT_NK_MAX 12

#define FC_DEFINE_WGRAD_T_KERNEL(NAME, T, V, SPLAT, CV, NK)                          \
static void NAME(const T *gt, ptrdiff_t cop, const T *base, const ptrdiff_t *off,  \
                 ptrdiff_t bstride, ptrdiff_t rows, ptrdiff_t cols, T *acc) {      \
    enum { VL = sizeof(V) / sizeof(T) };                                          \
    V c[NK][CV];                                                                  \
    FC_UNROLL for (int j = 0; j < NK; j++)                                        \
        FC_UNROLL for (int v = 0; v < CV; v++) c[j][v] = (V){0};                  \
    for (ptrdiff_t r = 0; r < rows; r++) {                                        \
        const T *b[NK];                                                           \
        FC_UNROLL for (int j = 0; j < NK; j++) b[j] = base + off[j] + r * bstride; \
        const T *g = gt + r * cols * cop;                                         \
        for (ptrdiff_t q = 0; q < cols; q++, g += cop) {                          \
            V gv[CV];                                                             \
            FC_UNROLL for (int v = 0; v < CV; v++) gv[v] = *(const V *)(g + v * VL); \
            FC_UNROLL for (int j = 0; j < NK; j++) {                              \
                V bj = SPLAT(b[j][q]);                                            \
                FC_IN_REGISTER(bj);                                               \
                FC_UNROLL for (int v = 0; v < CV; v++) c[j][v] += gv[v] * bj;     \
            }                                                                     \
        }                                                                         \
    }                                                                             \
    FC_UNROLL for (int j = 0; j < NK; j++)                                        \
        FC_UNROLL for (int v = 0; v < CV; v++) {                                  \
            V *dst = (V *)(acc + j * cop + v * VL);                               \
            *dst += c[j][v];                                                      \
        }                                                                         \
}

FC_DEFINE_CVF_KERNEL(fc_kernel_cvf_f, float, fc_vf, fc_splat_f)
FC_DEFINE_CVF_KERNEL(fc_kernel_cvf_d, double, fc_vd, fc_splat_d)

/* t4: the widest block, FC_WGT_CV vectors (4 on AVX-512, 2 otherwise); t2, t1:
 * the last 2 or 1 vectors of a job's channels. */
FC_DEFINE_WGRAD_T_KERNEL(fc_wgrad_t4_f, float, fc_vf, fc_splat_f, FC_WGT_CV, FC_WGT_NK4)
FC_DEFINE_WGRAD_T_KERNEL(fc_wgrad_t4_d, double, fc_vd, fc_splat_d, FC_WGT_CV, FC_WGT_NK4)
#if FC_WGT_CV > 2
FC_DEFINE_WGRAD_T_KERNEL(fc_wgrad_t2_f, float, fc_vf, fc_splat_f, 2, FC_WGT_NK2)
FC_DEFINE_WGRAD_T_KERNEL(fc_wgrad_t2_d, double, fc_vd, fc_splat_d, 2, FC_WGT_NK2)
#endif
FC_DEFINE_WGRAD_T_KERNEL(fc_wgrad_t1_f, float, fc_vf, fc_splat_f, 1, FC_WGT_NK1)
FC_DEFINE_WGRAD_T_KERNEL(fc_wgrad_t1_d, double, fc_vd, fc_splat_d, 1, FC_WGT_NK1)

/* One chunk of cells for kr weight columns and cop channels (acc: kr +
 * FC_WGT_NK_MAX rows of cop, off: kr + FC_WGT_NK_MAX offsets): the widest
 * kernel over the channel vectors first, then the narrower ones. */
#define FC_DEFINE_WGRAD_T_CHUNK(NAME, T, K4, K2, K1)                               \
static void NAME(const T *gt, ptrdiff_t cop, const T *base, const ptrdiff_t *off,  \
                 ptrdiff_t kr, ptrdiff_t bstride, ptrdiff_t rows, ptrdiff_t cols,  \
                 T *acc) {                                                         \
    enum { VL = FC_VBYTES / sizeof(T) };                                          \
    ptrdiff_t nv = cop / VL, v0 = 0, k;                                           \
    while (v0 < nv) {                                                             \
        if (nv - v0 >= FC_WGT_CV) {                                               \
            for (k = 0; k < kr; k += FC_WGT_NK4)                                  \
                K4(gt + v0 * VL, cop, base, off + k, bstride, rows, cols,         \
                   acc + k * cop + v0 * VL);                                      \
            v0 += FC_WGT_CV;                                                      \
        } else if (nv - v0 >= 2) {                                                \
            for (k = 0; k < kr; k += FC_WGT_NK2)                                  \
                K2(gt + v0 * VL, cop, base, off + k, bstride, rows, cols,         \
                   acc + k * cop + v0 * VL);                                      \
            v0 += 2;                                                              \
        } else {                                                                  \
            for (k = 0; k < kr; k += FC_WGT_NK1)                                  \
                K1(gt + v0 * VL, cop, base, off + k, bstride, rows, cols,         \
                   acc + k * cop + v0 * VL);                                      \
            v0 += 1;                                                              \
        }                                                                         \
    }                                                                             \
}
#if FC_WGT_CV > 2
FC_DEFINE_WGRAD_T_CHUNK(fc_wgrad_t_chunk_f, float, fc_wgrad_t4_f, fc_wgrad_t2_f, fc_wgrad_t1_f)
FC_DEFINE_WGRAD_T_CHUNK(fc_wgrad_t_chunk_d, double, fc_wgrad_t4_d, fc_wgrad_t2_d, fc_wgrad_t1_d)
#else
FC_DEFINE_WGRAD_T_CHUNK(fc_wgrad_t_chunk_f, float, fc_wgrad_t4_f, fc_wgrad_t4_f, fc_wgrad_t1_f)
FC_DEFINE_WGRAD_T_CHUNK(fc_wgrad_t_chunk_d, double, fc_wgrad_t4_d, fc_wgrad_t4_d, fc_wgrad_t1_d)
#endif

/* Half vectors (256 bits) of channels for the AVX-512 build: a group of 8-15
 * float (4-7 double) output channels has no whole 512-bit vector of them,
 * and the dot-product kernel it ran on instead reached a third of peak
 * (grouped 3x3, g = 32: 8.6 ms, against 7.7 with the AVX2 build's 8-lane
 * channel vectors).  The same kernel on one ymm vector and NK cells; only
 * called where FC_HALF_VECTORS. */
#if defined(__AVX512F__)
#define FC_HALF_VECTORS 1
typedef float fc_hf __attribute__((vector_size(32), aligned(4)));
typedef double fc_hd __attribute__((vector_size(32), aligned(8)));
#define fc_hsplat_f(x) ((fc_hf)_mm256_set1_ps(x))
#define fc_hsplat_d(x) ((fc_hd)_mm256_set1_pd(x))
FC_DEFINE_WGRAD_T_KERNEL(fc_wgrad_th_f, float, fc_hf, fc_hsplat_f, 1, FC_WGT_NK_MAX)
FC_DEFINE_WGRAD_T_KERNEL(fc_wgrad_th_d, double, fc_hd, fc_hsplat_d, 1, FC_WGT_NK_MAX)
#define FC_DEFINE_WGRAD_TH_CHUNK(NAME, T, KERNEL)                                   \
static void NAME(const T *gt, ptrdiff_t cop, const T *base, const ptrdiff_t *off,  \
                 ptrdiff_t kr, ptrdiff_t bstride, ptrdiff_t rows, ptrdiff_t cols,  \
                 T *acc) {                                                         \
    for (ptrdiff_t k = 0; k < kr; k += FC_WGT_NK_MAX)                             \
        KERNEL(gt, cop, base, off + k, bstride, rows, cols, acc + k * cop);       \
}
FC_DEFINE_WGRAD_TH_CHUNK(fc_wgrad_th_chunk_f, float, fc_wgrad_th_f)
FC_DEFINE_WGRAD_TH_CHUNK(fc_wgrad_th_chunk_d, double, fc_wgrad_th_d)
#else
#define FC_HALF_VECTORS 0
#define fc_wgrad_th_chunk_f fc_wgrad_t_chunk_f
#define fc_wgrad_th_chunk_d fc_wgrad_t_chunk_d
#endif

/* dst[c * dpitch + i] = src[i * spitch + c] for i < n rows, c < m cells: a
 * grad_output tile (channels x cells) to cells x channels.  With AVX, 8 x 8
 * float (4 x 4 double) blocks in registers, 3 (2) shuffle stages: scalar
 * copies took a third of a ResNet 3x3 weight gradient; the edges are scalar. */
#define FC_TRANSPOSE_EDGES(T)                                                      \
    for (ptrdiff_t i = 0; i < n; i++)                                             \
        for (ptrdiff_t c = (i < nb ? mb : 0); c < m; c++)                         \
            dst[c * dpitch + i] = src[i * spitch + c];

#if defined(__AVX__)
static void fc_transpose_f(float *restrict dst, ptrdiff_t dpitch, const float *restrict src,
                           ptrdiff_t spitch, ptrdiff_t n, ptrdiff_t m) {
    ptrdiff_t nb = n - n % 8, mb = m - m % 8;
    for (ptrdiff_t i0 = 0; i0 < nb; i0 += 8)
        for (ptrdiff_t c0 = 0; c0 < mb; c0 += 8) {
            const float *s = src + i0 * spitch + c0;
            __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + spitch);
            __m256 r2 = _mm256_loadu_ps(s + 2 * spitch), r3 = _mm256_loadu_ps(s + 3 * spitch);
            __m256 r4 = _mm256_loadu_ps(s + 4 * spitch), r5 = _mm256_loadu_ps(s + 5 * spitch);
            __m256 r6 = _mm256_loadu_ps(s + 6 * spitch), r7 = _mm256_loadu_ps(s + 7 * spitch);
            __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
            __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
            __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
            __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
            __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
            __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
            __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
            __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            float *d = dst + c0 * dpitch + i0;
            _mm256_storeu_ps(d, _mm256_permute2f128_ps(s0, s4, 0x20));
            _mm256_storeu_ps(d + dpitch, _mm256_permute2f128_ps(s1, s5, 0x20));
            _mm256_storeu_ps(d + 2 * dpitch, _mm256_permute2f128_ps(s2, s6, 0x20));
            _mm256_storeu_ps(d + 3 * dpitch, _mm256_permute2f128_ps(s3, s7, 0x20));
            _mm256_storeu_ps(d + 4 * dpitch, _mm256_permute2f128_ps(s0, s4, 0x31));
            _mm256_storeu_ps(d + 5 * dpitch, _mm256_permute2f128_ps(s1, s5, 0x31));
            _mm256_storeu_ps(d + 6 * dpitch, _mm256_permute2f128_ps(s2, s6, 0x31));
            _mm256_storeu_ps(d + 7 * dpitch, _mm256_permute2f128_ps(s3, s7, 0x31));
        }
    FC_TRANSPOSE_EDGES(float)
}
static void fc_transpose_d(double *restrict dst, ptrdiff_t dpitch, const double *restrict src,
                           ptrdiff_t spitch, ptrdiff_t n, ptrdiff_t m) {
    ptrdiff_t nb = n - n % 4, mb = m - m % 4;
    for (ptrdiff_t i0 = 0; i0 < nb; i0 += 4)
        for (ptrdiff_t c0 = 0; c0 < mb; c0 += 4) {
            const double *s = src + i0 * spitch + c0;
            __m256d r0 = _mm256_loadu_pd(s), r1 = _mm256_loadu_pd(s + spitch);
            __m256d r2 = _mm256_loadu_pd(s + 2 * spitch), r3 = _mm256_loadu_pd(s + 3 * spitch);
            __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
            __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
            double *d = dst + c0 * dpitch + i0;
            _mm256_storeu_pd(d, _mm256_permute2f128_pd(t0, t2, 0x20));
            _mm256_storeu_pd(d + dpitch, _mm256_permute2f128_pd(t1, t3, 0x20));
            _mm256_storeu_pd(d + 2 * dpitch, _mm256_permute2f128_pd(t0, t2, 0x31));
            _mm256_storeu_pd(d + 3 * dpitch, _mm256_permute2f128_pd(t1, t3, 0x31));
        }
    FC_TRANSPOSE_EDGES(double)
}
#else
#define FC_DEFINE_TRANSPOSE(NAME, T)                                               \
static void NAME(T *restrict dst, ptrdiff_t dpitch, const T *restrict src,         \
                 ptrdiff_t spitch, ptrdiff_t n, ptrdiff_t m) {                     \
    ptrdiff_t nb = 0, mb = 0;                                                     \
    FC_TRANSPOSE_EDGES(T)                                                         \
}
FC_DEFINE_TRANSPOSE(fc_transpose_f, float)
FC_DEFINE_TRANSPOSE(fc_transpose_d, double)
#endif

#endif
