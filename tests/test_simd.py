"""Every compiled SIMD build of the kernels (baseline, AVX2, AVX-512) gives the
reference's numbers for every forward implementation of the registry: each
build is selected with FASTCONV_SIMD in a fresh interpreter."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from fastconv import _kernels, _modules

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

SCRIPT = r"""
import json, sys
import numpy as np
import fastconv as fc
from fastconv import _dispatch, _engine, _kernels
import reference

def _pad3(v):
    return tuple(v) if isinstance(v, tuple) else (v,) * 3


def aligned_empty(shape, dtype):      # outputs on a cache line: panels may stream
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(n + 64, np.uint8)
    return raw[-raw.ctypes.data % 64:][:n].view(dtype).reshape(shape)


_kernels.implicit.set_stream_min_bytes(0)  # non-temporal stores on every aligned panel
rng = np.random.default_rng(0)
errors = []
ran = set()
cases = [((2, 6, 9, 10, 11), (26, 3, 3, 3, 3), dict(padding=1, groups=2)),   # micro-kernel
         ((1, 4, 7, 8, 20), (5, 4, 2, 1, 3), dict(padding=(1, 0, 1), dilation=(1, 1, 2))),
         ((2, 8, 6, 7, 9), (8, 1, 3, 3, 3), dict(padding=1, groups=8)),       # direct, 3 taps
         ((1, 2, 5, 9, 12), (3, 2, 2, 3, 5), dict(stride=(1, 2, 2), padding=2)),
         ((2, 3, 5, 6, 7), (4, 3, 3, 3, 3), dict(padding=1, padding_mode="reflect")),
         # weights over 1 MiB: output channels split over jobs, a short last panel
         ((2, 224, 1, 5, 6), (151, 224, 1, 3, 3), dict(padding=(0, 1, 1))),
         # panels stored straight into the output (1x1 whole rows, 1-D tiles), 13
         # channels: whole register blocks direct, the rest through the buffer
         ((2, 8, 1, 6, 40), (13, 8, 1, 1, 1), dict()),
         ((2, 12, 1, 1, 300), (13, 12, 1, 1, 3), dict(padding=(0, 0, 1))),
         # ... with 64 cells per channel: every line of the output streamed
         ((2, 8, 1, 8, 8), (16, 8, 1, 1, 1), dict()),
         # a 5x9 image (49 band cells, 64 computed by cell panels): the forward
         # kernel vectorised across output channels, 64 per group
         ((2, 12, 1, 5, 9), (128, 6, 1, 3, 3), dict(padding=(0, 1, 1), groups=2))]
for dtype in (np.float32, np.float64, np.complex64, np.complex128):
    for xs, ws, kw in cases:
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal(ws).astype(dtype)
        ref = reference.conv(x, w, None, kw.get("stride", 1), kw.get("padding", 0),
                             kw.get("dilation", 1), kw.get("groups", 1),
                             kw.get("padding_mode", "zeros"))
        out_shape = (xs[0],) + ref.shape[1:]
        for impl in _dispatch.REGISTRY["forward"]:        # every forward kernel that applies
            out = aligned_empty(out_shape, dtype)
            try:
                _engine.conv_forward(x, w, None, out, kw.get("stride", (1, 1, 1)) if
                                     isinstance(kw.get("stride"), tuple) else
                                     (kw.get("stride", 1),) * 3, _pad3(kw.get("padding", 0)),
                                     _pad3(kw.get("dilation", 1)), kw.get("groups", 1),
                                     implementation=impl.name,
                                     padding_mode=kw.get("padding_mode", "zeros"))
            except ValueError:
                continue          # does not apply to this problem (e.g. subpixel: inf weight)
            got, algorithm = out, impl.name
            ran.add(impl.name)
            tol = 1e-4 if dtype in (np.float32, np.complex64) else 1e-10
            err = float(np.max(np.abs(got - ref)) / (1 + np.max(np.abs(ref))))
            if not err < tol:
                errors.append([str(np.dtype(dtype)), algorithm, str(xs), err])
print(json.dumps({"simd": _kernels.SIMD, "errors": errors, "ran": sorted(ran),
                  "registered": [impl.name for impl in _dispatch.REGISTRY["forward"]]}))
"""


def _built(isa):
    suffix = "" if isa == "baseline" else f"_{isa}"
    return all(importlib.util.find_spec(f"fastconv.{module}{suffix}") is not None
               for module in _modules.COMPUTE_MODULES.values())


def _supported(isa):
    features = _kernels.cpu_features()
    return isa == "baseline" or all(features.get(f) for f in _modules.ISA_REQUIRES[isa])


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
def test_each_simd_build_matches_the_reference(isa):
    if not _supported(isa):
        pytest.skip(f"this CPU cannot run the {isa} build")
    if not _built(isa):
        pytest.skip(f"the {isa} build is not compiled here (FASTCONV_NATIVE=1 or not x86)")
    env = dict(os.environ, FASTCONV_SIMD=isa)
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=TESTS_DIR,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["simd"] == isa
    assert report["errors"] == []
    assert report["ran"] == sorted(report["registered"])      # every forward kernel ran
