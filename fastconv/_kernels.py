"""Load the compute-kernel build that matches this CPU.

setup.py compiles every module of ``_modules.COMPUTE_MODULES`` for baseline
x86-64 and, as ``<module>_avx2`` / ``<module>_avx512``, with more
instruction sets.  The best build the CPU supports (and that was built) is
used; ``FASTCONV_SIMD=baseline|avx2|avx512`` forces one.
"""
import importlib
import os

from ._modules import COMPUTE_MODULES, ISA_REQUIRES


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
        if forced not in ("baseline",) + tuple(ISA_REQUIRES):
            raise ImportError(f"FASTCONV_SIMD must be one of baseline, avx2, avx512; got {forced!r}")
        return [forced]
    features = cpu_features()
    return [isa for isa, need in ISA_REQUIRES.items()
            if all(features.get(f) for f in need)] + ["baseline"]


def _load():
    for isa in _candidates():
        suffix = "" if isa == "baseline" else f"_{isa}"
        try:
            modules = {name: importlib.import_module(f"fastconv.{module}{suffix}")
                       for name, module in COMPUTE_MODULES.items()}
        except ImportError:
            continue          # not built (FASTCONV_NATIVE=1, another CPU, non-x86 machine)
        return isa, modules
    raise ImportError("fastconv: no kernel build could be imported")


SIMD, modules = _load()
direct = modules["direct"]
blas = modules["blas"]
implicit = modules["implicit"]
separable = modules["separable"]
