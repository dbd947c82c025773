/* Register-blocked GEMM micro-kernels for the stride-1 convolution path.
 *
 * C[MR x NR] (+)= A[MR x K] * B[K x NR], where A is a packed block of MR
 * output channels' weights (A[k*MR + i]) and B a packed panel of NR output
 * positions (B[k*NR + j]), built by im2col directly in this layout so that no
 * BLAS has to pack it again.  NR is NV vector registers of the ISA this file
 * is compiled for; the MR x NV accumulators stay in registers.
 */
#ifndef FASTCONV_MICROKERNEL_H
#define FASTCONV_MICROKERNEL_H
#include <stddef.h>
#include <string.h>

/* MR x NV accumulators + the NV B vectors (+ a broadcast temporary) must fit
 * the register file: 32 zmm with AVX-512, 16 ymm/xmm otherwise.
 * AVX-512: 16 x 1 (MR = 16 divides the common channel counts with no idle
 * rows).  AVX2: 6 x 2, so each k step issues 2 vector loads and 6 broadcasts
 * for 12 FMAs instead of 1 + 12 for 12 (12 x 1): the load ports no longer
 * limit the FMA rate (as oneDNN's and BLIS's AVX2 kernels block). */
#if defined(__AVX512F__)
#define FC_VBYTES 64
#define FC_MR 16
#define FC_NV 1
#elif defined(__AVX2__) || defined(__AVX__)
#define FC_VBYTES 32
#define FC_MR 6
#define FC_NV 2
#else
#define FC_VBYTES 16
#define FC_MR 6
#define FC_NV 2
#endif
#define FC_NR_F (FC_NV * FC_VBYTES / 4)
#define FC_NR_D (FC_NV * FC_VBYTES / 8)

typedef float fc_vf __attribute__((vector_size(FC_VBYTES), aligned(4)));
typedef double fc_vd __attribute__((vector_size(FC_VBYTES), aligned(8)));

/* The kernel body.  B_ROW(k) is the address of B's row k (NR elements): a
 * packed panel (B + k * NR) or, for the implicit GEMM, a row read straight
 * from the padded input through a per-k offset table (base + off[k]). */
#define FC_KERNEL_BODY(T, V, NR, B_ROW)                                           \
    enum { VLEN = NR / FC_NV };                                                   \
    V c[FC_MR][FC_NV];                                                            \
    for (int i = 0; i < FC_MR; i++)                                               \
        for (int v = 0; v < FC_NV; v++) c[i][v] = (V){0};                         \
    for (ptrdiff_t k = 0; k < K; k++) {                                           \
        const T *brow = (B_ROW);                                                  \
        V b[FC_NV];                                                               \
        for (int v = 0; v < FC_NV; v++) b[v] = *(const V *)(brow + v * VLEN);     \
        const T *a = A + k * FC_MR;                                               \
        for (int i = 0; i < FC_MR; i++)   /* unrolled: one broadcast, NV FMAs */  \
            for (int v = 0; v < FC_NV; v++) c[i][v] += a[i] * b[v];               \
    }                                                                             \
    if (rows == FC_MR && cols == NR) {    /* whole tile: vector stores */         \
        for (int i = 0; i < FC_MR; i++)                                           \
            for (int v = 0; v < FC_NV; v++) {                                     \
                V *dst = (V *)(C + i * ldc + v * VLEN);                           \
                *dst = accumulate ? *dst + c[i][v] : c[i][v];                     \
            }                                                                     \
        return;                                                                   \
    }                                                                             \
    for (int i = 0; i < rows; i++) {                                              \
        T tmp[NR];                                                                \
        memcpy(tmp, c[i], sizeof(tmp));                                           \
        T *dst = C + i * ldc;                                                     \
        if (accumulate)                                                           \
            for (int j = 0; j < cols; j++) dst[j] += tmp[j];                      \
        else                                                                      \
            for (int j = 0; j < cols; j++) dst[j] = tmp[j];                       \
    }

#define FC_DEFINE_KERNEL(NAME, T, V, NR)                                          \
static void NAME(ptrdiff_t K, const T *A, const T *B, T *C, ptrdiff_t ldc,         \
                 int rows, int cols, int accumulate) {                            \
    FC_KERNEL_BODY(T, V, NR, B + k * NR)                                          \
}

#define FC_DEFINE_INDIRECT_KERNEL(NAME, T, V, NR)                                 \
static void NAME(ptrdiff_t K, const T *A, const T *base, const ptrdiff_t *off,     \
                 T *C, ptrdiff_t ldc, int rows, int cols, int accumulate) {       \
    FC_KERNEL_BODY(T, V, NR, base + off[k])                                       \
}

/* One panel row: a fixed-size copy the compiler turns into vector moves. */
static inline void fc_panel_copy_f(float *dst, const float *src) {
    memcpy(dst, src, FC_NR_F * sizeof(float));
}
static inline void fc_panel_copy_d(double *dst, const double *src) {
    memcpy(dst, src, FC_NR_D * sizeof(double));
}

FC_DEFINE_KERNEL(fc_kernel_f, float, fc_vf, FC_NR_F)
FC_DEFINE_KERNEL(fc_kernel_d, double, fc_vd, FC_NR_D)
FC_DEFINE_INDIRECT_KERNEL(fc_kernel_indirect_f, float, fc_vf, FC_NR_F)
FC_DEFINE_INDIRECT_KERNEL(fc_kernel_indirect_d, double, fc_vd, FC_NR_D)

#endif
