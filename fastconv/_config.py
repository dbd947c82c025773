"""``show_config()``: how this fastconv was built and what it runs on."""
import platform
import sys

import numpy as np


def _cpu_features():
    from ._kernels import cpu_features
    features = cpu_features()
    return [f for f in ("AVX512F", "AVX2", "FMA3", "AVX", "SSE42") if features.get(f)]


def config():
    """Dict of build and runtime facts (what show_config prints)."""
    from threadpoolctl import threadpool_info

    from . import __version__, _build_config, _kernels, _runtime
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
        "kernel SIMD": f"{_kernels.SIMD} (baseline build: {_runtime.SIMD})",
        "cpu SIMD features": " ".join(_cpu_features()),
        "threads": get_num_threads(),
        "algorithms": ", ".join(ALGORITHMS),
    }


def show_config():
    """Print the version, compiler and flags, OpenMP runtime, BLAS, SIMD level and threads."""
    for key, value in config().items():
        print(f"{key:>28}: {value}")
