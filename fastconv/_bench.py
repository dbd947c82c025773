"""``fastconv bench``: a quick side-by-side benchmark that ships with the package.

A dozen representative rows; on each, fastconv (``algorithm='auto'``),
PyTorch (where installed) and SciPy (single-channel volume rows) run in this
process on the same arrays, in interleaved rounds (each round times every
contender once, in a rotating order, after >= 10 ms of untimed calls of
it); the median of the rounds is reported,
with GFLOP/s as a share of NumPy's GEMM peak measured in the same run, and
the kernel fastconv ran (``fastconv.explain``).  The full suite, with every
kernel of the registry timed forced, lives in ``benchmarks/bench.py`` of a
source checkout.
"""
import argparse
import math
import statistics
import sys
import time

import numpy as np

import fastconv as fc
from . import _kernels

# name, function, input shape, weight shape, keyword arguments
ROWS = [
    ("conv2d ResNet 3x3", "conv2d", (8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1)),
    ("conv2d 1x1 256->64", "conv2d", (8, 256, 56, 56), (64, 256, 1, 1), {}),
    ("conv2d depthwise 3x3", "conv2d", (8, 256, 56, 56), (256, 1, 3, 3),
     dict(padding=1, groups=256)),
    ("conv3d 32^3 3x3x3", "conv3d", (1, 32, 32, 32, 32), (32, 32, 3, 3, 3), dict(padding=1)),
    ("conv1d k3", "conv1d", (8, 128, 16000), (128, 128, 3), dict(padding=1)),
    ("conv_transpose3d k2 s2", "conv_transpose3d", (1, 64, 32, 32, 32), (64, 32, 2, 2, 2),
     dict(stride=2)),
    ("grad input ResNet 3x3", "conv2d_input", (8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1)),
    ("grad weight ResNet 3x3", "conv2d_weight", (8, 64, 56, 56), (64, 64, 3, 3),
     dict(padding=1)),
    ("volume 128^3 k5 (1 channel)", "conv3d", (1, 1, 128, 128, 128), (1, 1, 5, 5, 5),
     dict(padding=2)),
    ("tiny 1x3x8x8 k3 (latency)", "conv2d", (1, 3, 8, 8), (8, 3, 3, 3), dict(padding=1)),
]


def _optional(name):
    try:
        return __import__(name)
    except ImportError:
        return None


def _macs(op, x, w, out):
    kernel = math.prod(w[2:])
    if op.startswith("conv_transpose"):
        return math.prod(x) * w[1] * kernel
    return math.prod(out) * w[1] * kernel


def _contenders(op, x, w, kwargs, torch, scipy):
    """{name: zero-argument call} for one row, and the row's forward output shape."""
    forward = getattr(fc, op.split("_input")[0].split("_weight")[0])
    y = forward(x, w, **kwargs)
    calls = {}
    if op.endswith("_input"):
        calls["fastconv"] = lambda: getattr(fc.grad, op)(x.shape, w, y, **kwargs)
    elif op.endswith("_weight"):
        calls["fastconv"] = lambda: getattr(fc.grad, op)(x, w.shape, y, **kwargs)
    else:
        calls["fastconv"] = lambda: forward(x, w, **kwargs)
    if torch is not None:
        calls["torch"] = _torch_call(torch, op, x, w, y, kwargs)
    if scipy is not None and x.shape[:2] == (1, 1) and w.shape[:2] == (1, 1) and \
            not op.endswith(("_input", "_weight")):
        from scipy import ndimage
        calls["scipy.ndimage"] = lambda: ndimage.correlate(x[0, 0], w[0, 0], mode="constant")
    return calls, y.shape


def _torch_call(torch, op, x, w, y, kwargs):
    F = torch.nn.functional
    xt, wt, yt = (torch.from_numpy(np.ascontiguousarray(a)) for a in (x, w, y))
    name = op.split("_input")[0].split("_weight")[0]
    if op.endswith("_input"):
        return lambda: getattr(torch.nn.grad, op)(xt.shape, wt, yt, **kwargs)
    if op.endswith("_weight"):
        return lambda: getattr(torch.nn.grad, op)(xt, wt.shape, yt, **kwargs)
    return lambda: getattr(F, name)(xt, wt, **kwargs)


def _sample(fn, min_seconds):
    """Seconds per call, over enough calls to last ``min_seconds``."""
    reps, start = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / reps


SETTLE_SECONDS = 0.01


def _time(calls, rounds, min_seconds):
    """Median seconds per call of each contender over interleaved rounds."""
    names = list(calls)
    for fn in calls.values():
        fn()                                       # warm-up
    samples = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            # Untimed calls first: in a cyclic order the same contender always
            # follows PyTorch, whose OpenMP threads spin on the cores for a few
            # ms after a call and whose arrays fill the caches.
            _sample(calls[name], SETTLE_SECONDS)
            samples[name].append(_sample(calls[name], min_seconds))
    return {name: statistics.median(ts) for name, ts in samples.items()}


def gemm_peak(threads, size=2048, repeats=3):
    """float32 GFLOP/s of NumPy's matmul (BLAS held to ``threads``)."""
    from threadpoolctl import threadpool_limits
    a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    with threadpool_limits(threads, user_api="blas"):
        a @ a
        best = min(_sample(lambda: a @ a, 0.05) for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastconv bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of short samples (default)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="threads (default: all)")
    parser.add_argument("--filter", default="", help="only rows whose name contains this")
    parser.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, op, xs, ws, kwargs in ROWS:
            print(f"{name:<30} {op}(x{xs}, w{ws}, {kwargs})")
        return 0
    threads = args.threads or fc.get_num_threads()
    fc.set_num_threads(threads)
    torch = None if args.no_torch else _optional("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    scipy = _optional("scipy")
    peak = gemm_peak(threads)
    print(f"fastconv {fc.__version__} bench: kernels {_kernels.SIMD}, {threads} thread(s), "
          f"float32 GEMM peak {peak:.0f} GFLOP/s (NumPy matmul); ratios > 1: fastconv faster")
    header = (f"{'row':<30} {'fastconv kernel':<26} {'fastconv':>10} {'torch':>10} "
              f"{'torch/fc':>8} {'scipy/fc':>8} {'GFLOP/s':>8} {'% peak':>6}")
    print(header)
    rng = np.random.default_rng(0)
    for name, op, xs, ws, kwargs in ROWS:
        if args.filter.lower() not in name.lower():
            continue
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        calls, out_shape = _contenders(op, x, w, kwargs, torch, scipy)
        explanation = fc.explain(op, x, w, **kwargs)
        lowered = explanation.plan.get("lowered")
        kernel = explanation.implementation + (f">{lowered.implementation}" if lowered else "")
        times = _time(calls, args.rounds, 0.02)
        t = times["fastconv"]
        gflops = 2 * _macs(op, xs, ws, out_shape) / t / 1e9
        ratio = {k: f"{times[k] / t:8.2f}" if k in times else f"{'-':>8}"
                 for k in ("torch", "scipy.ndimage")}
        torch_time = f"{times['torch'] * 1e3:8.2f}ms" if "torch" in times else f"{'-':>10}"
        print(f"{name:<30} {kernel:<26} {t * 1e3:8.2f}ms {torch_time} {ratio['torch']} "
              f"{ratio['scipy.ndimage']} {gflops:8.1f} {100 * gflops / peak:6.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
