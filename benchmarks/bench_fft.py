"""fastconv.signal.fftconvolve against scipy.signal.fftconvolve, side by side.

    python benchmarks/bench_fft.py                 # 2 threads, mode 'same'
    python benchmarks/bench_fft.py --threads 1 --mode full --repeat 7

Both run in this one process, interleaved call by call (fastconv, SciPy,
fastconv, SciPy, ...), so a load change on a shared machine hits both alike.
SciPy gets the same thread count through ``scipy.fft.set_workers`` (its
``fftconvolve`` has no ``workers=``), fastconv through ``workers=``.  Each
row reports the median time of each and ``ratio = SciPy / fastconv``
(> 1: fastconv faster), the path fastconv took (one transform or
overlap-add) and the largest difference from SciPy's result relative to the
output's largest magnitude.  float32 volumes and kernels, as SciPy computes
them (single-precision transforms).
"""
import argparse
import os
import statistics
import time

import numpy as np
import scipy.fft
import scipy.signal

import fastconv
import fastconv._kernels
from fastconv import _fftconv
from fastconv import signal as fsig

ROWS = [((128,) * 3, (7,) * 3), ((128,) * 3, (11,) * 3), ((128,) * 3, (21,) * 3),
        ((256,) * 3, (5,) * 3)]


def path(volume, kernel, mode):
    """'overlap-add (axis i, step s)' or 'one transform', as fftconvolve decides."""
    problem = fsig._FreqProblem(volume, kernel, mode, None, "bench")
    a, b = problem.a, problem.b
    blocking = _fftconv.choose_blocking([a.shape[x] for x in problem.axes],
                                        [b.shape[x] for x in problem.axes],
                                        problem.starts, problem.lengths, True, a.dtype.itemsize)
    return "one transform" if blocking is None else \
        f"overlap-add (axis {blocking[0]}, step {blocking[1]})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", default="same", choices=("full", "same", "valid"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    nt = args.threads
    print(f"fastconv {fastconv.__version__}, SIMD {fastconv._kernels.SIMD}, numpy "
          f"{np.__version__}, scipy {scipy.__version__}, {nt} thread(s), mode "
          f"{args.mode!r}, float32, load average {os.getloadavg()[0]:.2f}")
    print(f"{'volume':>13} {'kernel':>10} {'fastconv ms':>12} {'scipy ms':>10} {'ratio':>6}  "
          f"{'max rel diff':>12}  path")
    rng = np.random.default_rng(0)
    for vshape, kshape in ROWS:
        volume = rng.standard_normal(vshape, dtype=np.float32)
        kernel = rng.standard_normal(kshape, dtype=np.float32)
        ours = lambda: fsig.fftconvolve(volume, kernel, args.mode, workers=nt)  # noqa: E731

        def theirs():
            with scipy.fft.set_workers(nt):
                return scipy.signal.fftconvolve(volume, kernel, args.mode)

        a, b = ours(), theirs()                           # warm-up, and the check
        diff = float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max())
        del a, b
        t_ours, t_theirs = [], []
        for _ in range(args.repeat):
            for run, times in ((ours, t_ours), (theirs, t_theirs)):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
        mo, ms = statistics.median(t_ours) * 1e3, statistics.median(t_theirs) * 1e3
        print(f"{'x'.join(map(str, vshape)):>13} {'x'.join(map(str, kshape)):>10} "
              f"{mo:12.1f} {ms:10.1f} {ms / mo:6.2f}  {diff:12.1e}  "
              f"{path(volume, kernel, args.mode)}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
