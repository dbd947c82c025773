"""``show_config()``: how this fastconv was built and what it runs on."""
import platform
import sys

import numpy as np


def _cpu_features():
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__
    return [f for f in ("AVX512F", "AVX2", "FMA3", "AVX", "SSE42") if __cpu_features__.get(f)]


def config():
    """Dict of build and runtime facts (what show_config prints)."""
    from threadpoolctl import threadpool_info

    from . import __version__, _build_config, _runtime
    from ._engine import ALGORITHMS
    from ._threads import get_num_threads

    pools = threadpool_info()
    return {
        "fastconv": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "compiler": _build_config.COMPILER,
        "compile flags": " ".join(_build_config.COMPILE_ARGS),
        "openmp": (f"yes (OpenMP {_runtime.OPENMP_VERSION})" if _runtime.OPENMP
                   else "NO: sequential build"),
        "openmp runtime": ", ".join(f"{p['internal_api']} {p.get('version') or ''} {p['filepath']}"
                                    for p in pools if p["user_api"] == "openmp") or "none loaded",
        "blas": ", ".join(f"{p['internal_api']} {p.get('version') or ''} ({p['filepath']})"
                          for p in pools if p["user_api"] == "blas") or "none loaded",
        "kernel SIMD (compile time)": _runtime.SIMD,
        "cpu SIMD features": " ".join(_cpu_features()),
        "threads": get_num_threads(),
        "algorithms": ", ".join(ALGORITHMS),
    }


def show_config():
    """Print the version, compiler and flags, OpenMP runtime, BLAS, SIMD level and threads."""
    for key, value in config().items():
        print(f"{key:>28}: {value}")
