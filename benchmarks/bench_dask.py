"""Chunked 3-D filtering: dask + fastconv vs in-memory fastconv vs dask-image.

A ``SIZE^3`` float32 volume (default 512^3 = 512 MiB) chunked ``CHUNK^3``
(default 128^3) is correlated with a ``K^3`` kernel (default 7^3, mode
'reflect').  Every variant runs in its own subprocess, which reports the wall
time of the filtering and its peak resident memory (``ru_maxrss``) above the
interpreter with its imports loaded:

* ``fastconv in-memory`` -- ``np.load`` the volume, ``fastconv.ndimage.correlate``;
* ``dask+fastconv compute`` -- :func:`fastconv.dask.correlate` on a dask array
  read block by block from the ``.npy`` file, ``.compute()`` to a NumPy result;
* ``dask+fastconv store`` -- the same, ``dask.array.store`` into an ``.npy``
  file block by block (out of core: neither volume is ever whole in memory);
* ``dask-image compute`` / ``dask-image store`` -- ``dask_image.ndfilters.correlate``
  (``scipy.ndimage`` per block), when dask-image is installed.

Blocks are read and written through short-lived memory maps, so file pages
do not count towards the process's resident memory.  Dask uses its default
threaded scheduler (one thread per core); fastconv.dask then gives each task
``cores // threads`` OpenMP threads (see :mod:`fastconv.dask`).  Afterwards
every output is compared with the in-memory fastconv result.

Usage::

    python benchmarks/bench_dask.py                    # 512^3, chunks 128^3, 7^3 kernel
    python benchmarks/bench_dask.py --size 256 --chunk 64
    python benchmarks/bench_dask.py --skip dask-image-compute
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

VARIANTS = ("fastconv-inmemory", "dask-fastconv-compute", "dask-fastconv-store",
            "dask-image-compute", "dask-image-store")
LABELS = {"fastconv-inmemory": "fastconv in-memory",
          "dask-fastconv-compute": "dask+fastconv compute",
          "dask-fastconv-store": "dask+fastconv store",
          "dask-image-compute": "dask-image compute",
          "dask-image-store": "dask-image store"}


def _maxrss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0    # KiB on Linux


def _rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def kernel(k):
    """A fixed, normalised, non-separable k^3 kernel."""
    rng = np.random.default_rng(7)
    w = rng.random((k, k, k)).astype(np.float32)
    return w / w.sum()


def make_volume(path, size, seed=0):
    """Random float32 volume written slab by slab (never whole in memory)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(size,) * 3)
    rng = np.random.default_rng(seed)
    step = max(1, (64 << 20) // (4 * size * size))
    for z in range(0, size, step):
        out[z:z + step] = rng.random((min(step, size - z), size, size), dtype=np.float32)
    out.flush()
    del out


def _read_block(path, block_info=None):
    loc = block_info[None]["array-location"]
    m = np.load(path, mmap_mode="r")
    block = np.array(m[tuple(slice(a, b) for a, b in loc)])
    del m
    return block


class _NpyWriter:
    """``dask.array.store`` target writing each block through a short-lived memmap."""

    def __init__(self, path, shape, dtype):
        self.path = path
        m = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        del m

    def __setitem__(self, key, value):
        m = np.load(self.path, mmap_mode="r+")
        m[key] = value
        m.flush()
        del m


def _lazy_volume(path, chunk):
    import dask.array as da
    m = np.load(path, mmap_mode="r")
    shape, dtype = m.shape, m.dtype
    del m
    return da.map_blocks(_read_block, path, chunks=da.core.normalize_chunks(chunk, shape),
                         dtype=dtype, meta=np.empty((0, 0, 0), dtype))


def run_variant(name, inp, out, chunk, k, mode):
    """Run one variant in this process; return its measurements."""
    import dask  # noqa: F401  (imports count in the baseline)
    import fastconv.dask as fcd
    import fastconv.ndimage as fndi
    from dask.system import CPU_COUNT
    w = kernel(k)
    if name.startswith("dask-image"):
        from dask_image import ndfilters
    baseline = _rss_mib()
    info = {}
    if name == "fastconv-inmemory":
        x = np.load(inp)
        t0 = time.perf_counter()
        y = fndi.correlate(x, w, mode=mode)
        elapsed = time.perf_counter() - t0
        peak = _maxrss_mib()
        np.save(out, y)
    else:
        x = _lazy_volume(inp, chunk)
        t0 = time.perf_counter()
        if name.startswith("dask-fastconv"):
            y = fcd.correlate(x, w, mode=mode)
            info["threads_per_task"] = dask.compute(
                dask.delayed(lambda _: fcd.threads_per_task())(0))[0]
            t0 = time.perf_counter()          # the probe above is not part of the run
            y = fcd.correlate(x, w, mode=mode)
        else:
            y = ndfilters.correlate(x, w, mode=mode)
        if name.endswith("compute"):
            result = y.compute()
            elapsed = time.perf_counter() - t0
            peak = _maxrss_mib()
            np.save(out, result)
        else:
            import dask.array as da
            da.store(y, _NpyWriter(out, y.shape, y.dtype), lock=False)
            elapsed = time.perf_counter() - t0
            peak = _maxrss_mib()
        info["tasks"] = len(y.__dask_graph__())
    return dict(variant=name, seconds=elapsed, peak_rss_mib=peak,
                baseline_rss_mib=baseline, above_baseline_mib=peak - baseline,
                cores=CPU_COUNT, **info)


def compare(path_a, path_b, slab=32):
    """Max |a - b| and whether a and b are bitwise equal, slab by slab."""
    a = np.load(path_a, mmap_mode="r")
    b = np.load(path_b, mmap_mode="r")
    worst, equal = 0.0, True
    for z in range(0, a.shape[0], slab):
        sa, sb = np.asarray(a[z:z + slab]), np.asarray(b[z:z + slab])
        worst = max(worst, float(np.abs(sa.astype(np.float64) - sb).max()))
        equal = equal and np.array_equal(sa, sb)
    return worst, equal


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="volume edge (default 512)")
    parser.add_argument("--chunk", type=int, default=128, help="chunk edge (default 128)")
    parser.add_argument("--kernel", type=int, default=7, help="kernel edge (default 7)")
    parser.add_argument("--mode", default="reflect", help="ndimage boundary mode")
    parser.add_argument("--skip", nargs="*", default=[], choices=VARIANTS,
                        help="variants to leave out")
    parser.add_argument("--workdir", help="directory for the volumes (default: a temp dir)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        result = run_variant(args.worker, args.input, args.output, args.chunk, args.kernel,
                             args.mode)
        print("RESULT " + json.dumps(result))
        return 0

    try:
        import dask_image  # noqa: F401
        have_dask_image = True
    except ImportError:
        have_dask_image = False
    variants = [v for v in VARIANTS if v not in args.skip
                and (have_dask_image or not v.startswith("dask-image"))]
    workdir = args.workdir or tempfile.mkdtemp(prefix="fastconv-bench-dask-")
    os.makedirs(workdir, exist_ok=True)
    inp = os.path.join(workdir, f"volume{args.size}.npy")
    try:
        if not os.path.exists(inp):
            print(f"writing a {args.size}^3 float32 volume ({args.size ** 3 * 4 / 2**20:.0f} MiB) "
                  f"to {inp}", flush=True)
            make_volume(inp, args.size)
        results = []
        for name in variants:
            out = os.path.join(workdir, f"out-{name}.npy")
            print(f"running {LABELS[name]} ...", flush=True)
            proc = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--worker", name, "--input", inp,
                 "--output", out, "--chunk", str(args.chunk), "--kernel", str(args.kernel),
                 "--mode", args.mode], capture_output=True, text=True)
            line = [s for s in proc.stdout.splitlines() if s.startswith("RESULT ")]
            if proc.returncode or not line:
                print(f"  {name} failed:\n{proc.stderr[-2000:]}", flush=True)
                continue
            res = json.loads(line[-1][len("RESULT "):])
            res["output"] = out
            results.append(res)
        reference = next((r["output"] for r in results if r["variant"] == "fastconv-inmemory"),
                         None)
        for r in results:
            if reference is not None:
                r["max_abs_diff"], r["bitwise_equal"] = compare(r["output"], reference)
        print()
        print(f"{args.size}^3 float32 volume ({args.size ** 3 * 4 / 2**20:.0f} MiB), chunks "
              f"{args.chunk}^3, {args.kernel}^3 kernel, mode '{args.mode}', "
              f"{results[0]['cores'] if results else '?'} cores")
        header = (f"{'variant':<24}{'time (s)':>10}{'peak RSS':>11}{'above base':>12}"
                  f"{'tasks':>8}{'omp/task':>10}   vs in-memory fastconv")
        print(header)
        print("-" * len(header))
        for r in results:
            diff = ("reference" if r["variant"] == "fastconv-inmemory" else
                    "bitwise equal" if r.get("bitwise_equal") else
                    f"max |diff| {r.get('max_abs_diff', float('nan')):.2e}")
            print(f"{LABELS[r['variant']]:<24}{r['seconds']:>10.2f}"
                  f"{r['peak_rss_mib']:>8.0f} MiB{r['above_baseline_mib']:>8.0f} MiB"
                  f"{r.get('tasks', ''):>8}{r.get('threads_per_task', ''):>10}   {diff}")
        print("peak RSS: ru_maxrss of the variant's process; above base: minus its RSS "
              "after imports")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
