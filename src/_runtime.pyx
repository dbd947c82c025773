"""OpenMP runtime queries, and what the kernels were compiled for."""

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FC_OPENMP 1
    static int fc_max_threads(void) { return omp_get_max_threads(); }
    static void fc_set_threads(int n) { omp_set_num_threads(n); }
    static int fc_openmp_version(void) { return _OPENMP; }
    #else
    #define FC_OPENMP 0
    static int fc_max_threads(void) { return 1; }
    static void fc_set_threads(int n) { (void)n; }
    static int fc_openmp_version(void) { return 0; }
    #endif
    #if defined(__AVX512F__)
    #define FC_SIMD "AVX-512"
    #elif defined(__AVX2__)
    #define FC_SIMD "AVX2"
    #elif defined(__AVX__)
    #define FC_SIMD "AVX"
    #elif defined(__SSE2__)
    #define FC_SIMD "SSE2"
    #else
    #define FC_SIMD "none"
    #endif
    """
    int FC_OPENMP
    const char* FC_SIMD
    int fc_max_threads() nogil
    void fc_set_threads(int n) nogil
    int fc_openmp_version() nogil

OPENMP = bool(FC_OPENMP)
OPENMP_VERSION = fc_openmp_version()
SIMD = FC_SIMD.decode()


def max_threads():
    """omp_get_max_threads() of the calling thread (1 without OpenMP)."""
    return fc_max_threads()


def set_threads(int n):
    """omp_set_num_threads(n) for the calling thread."""
    fc_set_threads(n)
