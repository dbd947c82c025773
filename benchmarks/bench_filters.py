"""fastconv's separable ndimage filters side by side with scipy.ndimage (and OpenCV).

One process, the same arrays for every contender, interleaved rounds (each
round runs every contender once, in rotating order, so that load from other
processes spreads evenly), medians.  fastconv runs with 2 threads and with
``workers=1``; SciPy runs on one thread (it has no other mode).  Peak extra
memory of one call (NumPy allocations, tracemalloc) is given in volumes of
the input.

    python benchmarks/bench_filters.py                  # 128^3 and 256^3, 3 rounds
    python benchmarks/bench_filters.py --sizes 128 --rounds 5
    python benchmarks/bench_filters.py --filter gaussian --markdown out.md

Targets (issue 13): Gaussian-family, derivative and correlate1d rows >= 10x
scipy.ndimage with 2 threads and >= 4x with workers=1; uniform_filter rows
>= 4x.  OpenCV rows (``opencv-python-headless``, skipped if not installed)
filter every 2-D slice of the volume with cv2.GaussianBlur / cv2.blur,
against fastconv's filter over the same two axes (``axes=(1, 2)``).
"""
import argparse
import gc
import platform
import statistics
import sys
import time
import tracemalloc

import numpy as np
import scipy
import scipy.ndimage as sndi

import fastconv
import fastconv.ndimage as fndi
from fastconv import _kernels

try:
    import cv2
except ImportError:  # optional contender
    cv2 = None

TARGETS = {"gaussian": (10.0, 4.0), "derivative": (10.0, 4.0), "correlate1d": (10.0, 4.0),
           "uniform": (4.0, None), "opencv": (1.0, None)}


def _weights(k):
    """A fixed general (not symmetric) kernel of k taps."""
    return np.random.default_rng(k).standard_normal(k)


def rows():
    """(group, name, fastconv(x, workers), reference(x))."""
    out = []
    for s in (1, 2, 4, 8):
        out.append(("gaussian", f"gaussian_filter sigma={s}",
                    lambda x, w, s=s: fndi.gaussian_filter(x, s, workers=w),
                    lambda x, s=s: sndi.gaussian_filter(x, s)))
    for n in (3, 5, 11, 21):
        out.append(("uniform", f"uniform_filter size={n}",
                    lambda x, w, n=n: fndi.uniform_filter(x, n, workers=w),
                    lambda x, n=n: sndi.uniform_filter(x, n)))
    for a in (0, 1, 2):
        out.append(("derivative", f"sobel axis={a}",
                    lambda x, w, a=a: fndi.sobel(x, a, workers=w),
                    lambda x, a=a: sndi.sobel(x, a)))
    out.append(("derivative", "gaussian_gradient_magnitude sigma=2",
                lambda x, w: fndi.gaussian_gradient_magnitude(x, 2, workers=w),
                lambda x: sndi.gaussian_gradient_magnitude(x, 2)))
    for k in (9, 31):
        for a in (0, 1, 2):
            out.append(("correlate1d", f"correlate1d k={k} axis={a}",
                        lambda x, w, k=k, a=a: fndi.correlate1d(x, _weights(k), a, workers=w),
                        lambda x, k=k, a=a: sndi.correlate1d(x, _weights(k), a)))
    return out


def opencv_rows():
    """Slice by slice: cv2 on every 2-D slice against fastconv over axes (1, 2).
    BORDER_REFLECT is SciPy's 'reflect'; the Gaussian has SciPy's radius."""
    if cv2 is None:
        return []
    out = []
    for s in (1, 2, 4, 8):
        r = int(4.0 * s + 0.5)

        def blur(x, s=s, r=r):
            y = np.empty_like(x)
            for i in range(x.shape[0]):
                cv2.GaussianBlur(x[i], (2 * r + 1, 2 * r + 1), s, dst=y[i],
                                 borderType=cv2.BORDER_REFLECT)
            return y
        out.append(("opencv", f"2-D gaussian sigma={s} vs cv2.GaussianBlur",
                    lambda x, w, s=s: fndi.gaussian_filter(x, s, axes=(1, 2), workers=w), blur))
    for n in (3, 5, 11, 21):
        def box(x, n=n):
            y = np.empty_like(x)
            for i in range(x.shape[0]):
                cv2.blur(x[i], (n, n), dst=y[i], borderType=cv2.BORDER_REFLECT)
            return y
        out.append(("opencv", f"2-D uniform size={n} vs cv2.blur",
                    lambda x, w, n=n: fndi.uniform_filter(x, n, axes=(1, 2), workers=w), box))
    return out


def peak_extra(call):
    """Peak NumPy memory of one call beyond what existed before it (bytes)."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del result
    return peak - base


def timed(call):
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def run_row(x, fc, ref, rounds, threads):
    """Medians of fastconv (threads), fastconv (1 thread), reference; peak memory."""
    contenders = {"fc": lambda: fc(x, threads), "fc1": lambda: fc(x, 1), "ref": lambda: ref(x)}
    for call in contenders.values():          # warm up (page faults, thread pool)
        call()
    samples = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name].append(timed(contenders[name]))
    times = {name: statistics.median(v) for name, v in samples.items()}
    memory = {"fc": peak_extra(contenders["fc"]), "ref": peak_extra(contenders["ref"])}
    return times, memory


def make_volume(n, dtype):
    rng = np.random.default_rng(0)
    if np.dtype(dtype).kind == "u":
        return rng.integers(0, 4096, size=(n, n, n)).astype(dtype)     # 12-bit CT-like
    return rng.standard_normal((n, n, n)).astype(dtype)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="128,256", help="edge lengths of the cubes")
    ap.add_argument("--dtypes", default="float32,uint16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="fastconv threads (the 'fc' column)")
    ap.add_argument("--filter", action="append", default=[],
                    help="only rows whose name contains this (repeatable)")
    ap.add_argument("--no-opencv", action="store_true")
    ap.add_argument("--markdown", help="also write the table to this file")
    args = ap.parse_args(argv)
    selected = rows() + ([] if args.no_opencv else opencv_rows())
    if args.filter:
        selected = [r for r in selected if any(f in r[1] for f in args.filter)]
    if cv2 is not None:
        cv2.setNumThreads(1)          # slice by slice on one thread, like SciPy
    header = [
        f"fastconv {fastconv.__version__}, kernels: {_kernels.SIMD} build "
        f"(fastconv._kernels.SIMD), SciPy {scipy.__version__}, NumPy {np.__version__}"
        + (f", OpenCV {cv2.__version__} (1 thread)" if cv2 is not None else ", no OpenCV"),
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"fastconv threads {args.threads}; medians of {args.rounds} interleaved rounds",
    ]
    lines = ["| volume | filter | reference s | fastconv 1 thr s | fastconv "
             f"{args.threads} thr s | x (1 thr) | x ({args.threads} thr) | peak mem ref / fc "
             "(volumes) | target |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    print("\n".join(header))
    print("\n".join(lines), flush=True)
    misses = []
    for n in (int(s) for s in args.sizes.split(",")):
        for dt in args.dtypes.split(","):
            x = make_volume(n, np.dtype(dt))
            for group, name, fc, ref in selected:
                times, memory = run_row(x, fc, ref, args.rounds, args.threads)
                r1 = times["ref"] / times["fc1"]
                rn = times["ref"] / times["fc"]
                want_n, want_1 = TARGETS[group]
                ok = rn >= want_n and (want_1 is None or r1 >= want_1)
                target = f">= {want_n:g}x" + (f", 1 thr >= {want_1:g}x" if want_1 else "")
                target += "" if ok else " **MISS**"
                if not ok:
                    misses.append(f"{n}^3 {dt} {name}")
                line = (f"| {n}^3 {dt} | {name} | {times['ref']:.4f} | {times['fc1']:.4f} | "
                        f"{times['fc']:.4f} | {r1:.1f} | {rn:.1f} | "
                        f"{memory['ref'] / x.nbytes:.2f} / {memory['fc'] / x.nbytes:.2f} | "
                        f"{target} |")
                lines.append(line)
                print(line, flush=True)
    summary = f"\n{len(misses)} of {len(lines) - 2} rows miss their target" + \
        ("".join(f"\n- {m}" for m in misses) if misses else "")
    print(summary)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n\n".join(header) + "\n\n" + "\n".join(lines) + "\n" + summary + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
