"""Per-call overhead: fastconv against PyTorch on tiny problems, one thread.

Issue 12 item 6: on the tiny rows (8x8 conv2d, an 8^3 1x1x1 conv3d, a 1-D
convolution, a transposed convolution, and the input and weight gradients of
each) a fastconv call should cost no more than the same PyTorch call.  The
work is a few thousand multiply-adds, so what is measured is the per-call
overhead: argument handling, dispatch and kernel launch.

How it is timed: every contender gets the same arrays (standard normal,
seed 0, float32).  Each round times ``--calls`` back-to-back calls one at a
time with ``perf_counter_ns`` and keeps the median per call (a stall in the
middle of a round, e.g. the other core's job, is not averaged in); rounds
alternate the contender that goes first, and the reported time is the
median over rounds.  PyTorch runs under ``torch.no_grad()`` with
``torch.set_num_threads(1)``; fastconv with ``fc.set_num_threads(1)``.
PyTorch's gradients are ``torch.nn.grad.convNd_input/_weight`` and, for
transposed convolutions (which torch.nn.grad lacks),
``torch.ops.aten.convolution_backward`` as autograd calls it.

Run::

    python benchmarks/bench_overhead.py                 # all rows, 15 rounds
    python benchmarks/bench_overhead.py --rounds 31 --filter conv2d
"""
import argparse
import os
import platform
import statistics
import time

import numpy as np

import fastconv as fc
from fastconv import grad as G
from fastconv._kernels import SIMD

try:
    import torch
except ImportError:       # the fastconv column alone is still worth printing
    torch = None

#: name, nd, transposed, input shape, weight shape, options
ROWS = (
    ("conv2d 1x3x8x8 k3 p1", 2, False, (1, 3, 8, 8), (8, 3, 3, 3), dict(padding=1)),
    ("conv3d 1x4x8^3 k1", 3, False, (1, 4, 8, 8, 8), (8, 4, 1, 1, 1), {}),
    ("conv1d 1x4x32 k3 p1", 1, False, (1, 4, 32), (8, 4, 3), dict(padding=1)),
    ("conv_transpose2d 1x8x8x8 k2 s2", 2, True, (1, 8, 8, 8), (8, 4, 2, 2), dict(stride=2)),
)
PARTS = ("forward", "input", "weight")


def _calls(nd, transposed, x_shape, w_shape, options):
    """{(part, contender): zero-argument callable} for one row."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape, dtype=np.float32)
    w = rng.standard_normal(w_shape, dtype=np.float32)
    kind = "conv_transpose" if transposed else "conv"
    y = getattr(fc, f"{kind}{nd}d")(x, w, **options)
    g = rng.standard_normal(y.shape, dtype=np.float32)
    f_fwd = getattr(fc, f"{kind}{nd}d")
    f_in = getattr(G, f"{kind}{nd}d_input")
    f_w = getattr(G, f"{kind}{nd}d_weight")
    calls = {
        ("forward", "fastconv"): lambda: f_fwd(x, w, **options),
        ("input", "fastconv"): lambda: f_in(x.shape, w, g, **options),
        ("weight", "fastconv"): lambda: f_w(x, w.shape, g, **options),
    }
    if torch is None:
        return calls
    tx, tw, tg = (torch.from_numpy(a) for a in (x, w, g))
    s, p = options.get("stride", 1), options.get("padding", 0)
    F = torch.nn.functional
    if not transposed:
        t_fwd = getattr(F, f"conv{nd}d")
        t_in = getattr(torch.nn.grad, f"conv{nd}d_input")
        t_w = getattr(torch.nn.grad, f"conv{nd}d_weight")
        calls[("forward", "torch")] = lambda: t_fwd(tx, tw, None, s, p)
        calls[("input", "torch")] = lambda: t_in(tx.shape, tw, tg, s, p)
        calls[("weight", "torch")] = lambda: t_w(tx, tw.shape, tg, s, p)
        return calls
    t_fwd = getattr(F, f"conv_transpose{nd}d")
    backward = torch.ops.aten.convolution_backward
    args = ([s] * nd, [p] * nd, [1] * nd, True, [0] * nd, 1)
    x_like, w_like = tg.new_empty(1).expand(tx.shape), tw.new_empty(1).expand(tw.shape)
    calls[("forward", "torch")] = lambda: t_fwd(tx, tw, None, s, p)
    calls[("input", "torch")] = lambda: backward(tg, x_like, tw, None, *args,
                                                 (True, False, False))[0]
    calls[("weight", "torch")] = lambda: backward(tg, tx, w_like, None, *args,
                                                  (False, True, False))[1]
    return calls


def _median_per_call(fn, calls):
    """Median of ``calls`` single-call timings, in seconds."""
    clock = time.perf_counter_ns
    samples = []
    for _ in range(calls):
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    return statistics.median(samples) * 1e-9


def _check(fc_call, torch_call):
    a = np.asarray(fc_call())
    b = torch_call().numpy()
    return float(np.abs(a - b).max() / max(1e-30, np.abs(b).max()))


def run(rounds, calls, name_filter=None):
    """Time every row; return a list of (row, part, {contender: seconds}, check)."""
    results = []
    for name, nd, transposed, x_shape, w_shape, options in ROWS:
        if name_filter and not any(f in name for f in name_filter):
            continue
        table = _calls(nd, transposed, x_shape, w_shape, options)
        for part in PARTS:
            contenders = [c for c in ("fastconv", "torch") if (part, c) in table]
            check = _check(table[part, "fastconv"], table[part, "torch"]) \
                if len(contenders) == 2 else float("nan")
            for c in contenders:                      # warm-up: caches, page faults
                _median_per_call(table[part, c], max(10, calls // 10))
            times = {c: [] for c in contenders}
            for r in range(rounds):
                order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
                for c in order:
                    times[c].append(_median_per_call(table[part, c], calls))
            results.append((name, part, {c: statistics.median(t) for c, t in times.items()},
                            check))
    return results


def _header():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    tv = torch.__version__ if torch is not None else "absent"
    return (f"fastconv {fc.__version__} (kernels: {SIMD}), torch {tv}, "
            f"1 thread, float32; {cpu}; load {load:.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=400, help="calls timed per round")
    parser.add_argument("--filter", action="append", help="rows whose name contains this")
    args = parser.parse_args(argv)
    fc.set_num_threads(1)
    if torch is not None:
        torch.set_num_threads(1)
        torch.set_grad_enabled(False)
    print(_header())
    print(f"median over {args.rounds} interleaved rounds of the median of {args.calls} calls")
    print(f"{'row':<32} {'part':<8} {'fastconv us':>11} {'torch us':>9} {'torch/fc':>8} "
          f"{'check':>8}")
    for name, part, t, check in run(args.rounds, args.calls, args.filter):
        fcus = t["fastconv"] * 1e6
        tus = t.get("torch", float("nan")) * 1e6
        print(f"{name:<32} {part:<8} {fcus:11.1f} {tus:9.1f} {tus / fcus:8.2f} {check:8.1e}")


if __name__ == "__main__":
    main()
