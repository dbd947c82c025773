"""Every compiled SIMD build of the kernels (baseline, AVX2, AVX-512) gives the
reference's numbers: each is selected with FASTCONV_SIMD in a fresh interpreter."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from fastconv import _kernels

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

SCRIPT = r"""
import json, sys
import numpy as np
import fastconv as fc
from fastconv import _kernels
import reference

rng = np.random.default_rng(0)
errors = []
cases = [((2, 6, 9, 10, 11), (26, 3, 3, 3, 3), dict(padding=1, groups=2)),   # micro-kernel
         ((1, 4, 7, 8, 20), (5, 4, 2, 1, 3), dict(padding=(1, 0, 1), dilation=(1, 1, 2))),
         ((2, 8, 6, 7, 9), (8, 1, 3, 3, 3), dict(padding=1, groups=8)),       # direct, 3 taps
         ((1, 2, 5, 9, 12), (3, 2, 2, 3, 5), dict(stride=(1, 2, 2), padding=2))]
for dtype in (np.float32, np.float64, np.complex64, np.complex128):
    for xs, ws, kw in cases:
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal(ws).astype(dtype)
        ref = reference.conv(x, w, None, kw.get("stride", 1), kw.get("padding", 0),
                             kw.get("dilation", 1), kw.get("groups", 1))
        for algorithm in fc.ALGORITHMS:
            got = fc.conv3d(x, w, algorithm=algorithm, **kw)
            tol = 1e-4 if dtype in (np.float32, np.complex64) else 1e-10
            err = float(np.max(np.abs(got - ref)) / (1 + np.max(np.abs(ref))))
            if not err < tol:
                errors.append([str(np.dtype(dtype)), algorithm, str(xs), err])
print(json.dumps({"simd": _kernels.SIMD, "errors": errors}))
"""


def _built(isa):
    suffix = "" if isa == "baseline" else f"_{isa}"
    return importlib.util.find_spec(f"fastconv._gemm{suffix}") is not None


def _supported(isa):
    features = _kernels.cpu_features()
    return isa == "baseline" or all(features.get(f) for f in _kernels._REQUIRES[isa])


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
def test_each_simd_build_matches_the_reference(isa):
    if not _built(isa):
        pytest.skip(f"the {isa} build is not compiled here (FASTCONV_NATIVE=1 or not x86)")
    if not _supported(isa):
        pytest.skip(f"this CPU cannot run the {isa} build")
    env = dict(os.environ, FASTCONV_SIMD=isa)
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=TESTS_DIR,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["simd"] == isa
    assert report["errors"] == []
