# GEMM over the fused type, through SciPy's BLAS: callable without the GIL,
# so it can run inside OpenMP regions (each thread its own single-threaded GEMM).
from scipy.linalg.cython_blas cimport sgemm, dgemm, cgemm, zgemm
from _fused cimport conv_t


cdef inline void gemm(char transa, char transb, int m, int n, int k,
                      conv_t alpha, const conv_t* a, int lda,
                      const conv_t* b, int ldb,
                      conv_t beta, conv_t* c, int ldc) noexcept nogil:
    """Column-major C = alpha * op(A) @ op(B) + beta * C (BLAS conventions)."""
    if conv_t is float:
        sgemm(&transa, &transb, &m, &n, &k, &alpha, <float*>a, &lda,
              <float*>b, &ldb, &beta, c, &ldc)
    elif conv_t is double:
        dgemm(&transa, &transb, &m, &n, &k, &alpha, <double*>a, &lda,
              <double*>b, &ldb, &beta, c, &ldc)
    elif conv_t is floatcomplex:
        cgemm(&transa, &transb, &m, &n, &k, &alpha, <float complex*>a, &lda,
              <float complex*>b, &ldb, &beta, c, &ldc)
    else:
        zgemm(&transa, &transb, &m, &n, &k, &alpha, <double complex*>a, &lda,
              <double complex*>b, &ldb, &beta, c, &ldc)
