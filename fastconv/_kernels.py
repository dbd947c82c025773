"""Pick the compute-kernel build that matches this CPU.

setup.py compiles ``_direct`` and ``_gemm`` for baseline x86-64 and, as
``*_avx2`` / ``*_avx512``, with more instruction sets.  The best build the CPU
supports is used; ``FASTCONV_SIMD=baseline|avx2|avx512`` forces one.
"""
import importlib
import os

_REQUIRES = {"avx512": ("AVX512F", "AVX512DQ", "AVX512BW", "AVX512VL", "AVX2", "FMA3"),
             "avx2": ("AVX2", "FMA3")}


def cpu_features():
    """Dict of CPU feature flags, as NumPy detected them."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # NumPy < 2
        from numpy.core._multiarray_umath import __cpu_features__
    return __cpu_features__


def _candidates():
    forced = os.environ.get("FASTCONV_SIMD", "").strip().lower()
    if forced:
        if forced not in ("baseline",) + tuple(_REQUIRES):
            raise ImportError(f"FASTCONV_SIMD must be one of baseline, avx2, avx512; got {forced!r}")
        return [forced]
    features = cpu_features()
    return [isa for isa, need in _REQUIRES.items() if all(features.get(f) for f in need)] + ["baseline"]


def _load():
    for isa in _candidates():
        suffix = "" if isa == "baseline" else f"_{isa}"
        try:
            direct = importlib.import_module(f"fastconv._direct{suffix}")
            gemm = importlib.import_module(f"fastconv._gemm{suffix}")
        except ImportError:
            continue          # not built (FASTCONV_NATIVE=1, non-x86 machine)
        return isa, direct, gemm
    raise ImportError("fastconv: no kernel build could be imported")


SIMD, direct, gemm = _load()
#: Separable 1-D passes (ndimage filters), from the same build as ``direct``.
separable = importlib.import_module(f"fastconv._separable{'' if SIMD == 'baseline' else '_' + SIMD}")
