"""The compiled modules, listed once: setup.py builds them, ``_kernels`` loads them.

``COMPUTE_MODULES`` maps the name the Python side uses to the Cython module
(``src/<module>.pyx``); each is also built per instruction set (``_avx2``,
``_avx512``) and the best build the CPU runs is loaded.
"""
COMPUTE_MODULES = {
    "direct": "_direct",        # direct convolution, gather-form transposed, thin weight grad
    "blas": "_im2col_blas",     # im2col / col2im + BLAS GEMM (all dtypes)
    "implicit": "_implicit",    # implicit-GEMM float32/float64 forward on the same micro-kernel
    "separable": "_separable",  # 1-D passes along one axis (the ndimage filters)
}
# Built once, no SIMD variants: OpenMP queries; the per-call fast path's helpers.
RUNTIME_MODULES = ("_runtime", "_fastpath")
ISA_FLAGS = {
    "avx2": ["-mavx2", "-mfma"],
    "avx512": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"],
}
# CPU features (NumPy's names) an ISA build needs at run time.
ISA_REQUIRES = {"avx512": ("AVX512F", "AVX512DQ", "AVX512BW", "AVX512VL", "AVX2", "FMA3"),
                "avx2": ("AVX2", "FMA3")}
