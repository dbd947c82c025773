"""Filtering volumes on disk: ``fastconv filter`` across formats vs dask-image.

A ``(Z, 1024, 1024)`` uint16 volume (default 2048 MiB: Z = 1024; ``--size``
sets the MiB) that looks like a microscope or CT stack -- smooth structure
plus noise, so that it compresses as real data do -- is written once as
``.npy``, as a compressed Zarr v3 store (chunks 64 x 256 x 256, Blosc zstd
level 5 with byte shuffle, ome-zarr-py's default) and as an uncompressed
multi-page TIFF.  Then each variant filters it
with the same 5 x 5 x 5 Gaussian (``gaussian:sigma=1,truncate=2``, mode
'reflect', uint16 out) in its own process:

* ``npy->npy``, ``zarr->zarr``, ``tif->zarr``: ``fastconv filter IN OUT``
  (slab by slab, no Dask; a Zarr output keeps the input's chunks and
  compressor, the TIFF input's Zarr output gets 64 x 128 x 128 chunks and
  zarr's default Zstd);
* ``zarr->zarr --scheduler threads``: the same through ``fastconv.dask``;
* ``dask-image zarr->zarr``: ``dask_image.ndfilters.correlate`` on
  ``da.from_zarr`` (the same chunks), ``.to_zarr`` -- where dask-image is
  installed.

Each row gives the wall time of the whole process (start-up and imports
included), MB/s of uncompressed input (``Z * 1024 * 1024 * 2 / 1e6`` MB over
that time), the peak resident memory of the process (its ``VmHWM``), the
output's size on disk and the 1-minute load average when the row ended (on a
shared machine, other jobs' load slows every row).  Afterwards the outputs
are compared slice by slice with the ``npy->npy`` result (integer outputs:
equal to within 1, the truncation of a value within rounding of an
integer).  The header names the CPU, its SIMD features and the kernel build
fastconv chose.

Usage::

    python benchmarks/bench_io.py                  # 2048 MiB
    python benchmarks/bench_io.py --size 256 --keep /tmp/io-bench
"""
import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

PLANE = (1024, 1024)
CHUNKS = (64, 256, 256)
KERNEL = "gaussian:sigma=1,truncate=2"


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_slab(z0, z1, rng):
    """Slices [z0, z1): smooth blobs (a few frequencies) plus Poisson-like noise, uint16."""
    z = np.arange(z0, z1, dtype=np.float32)[:, None, None]
    y = np.arange(PLANE[0], dtype=np.float32)[None, :, None]
    x = np.arange(PLANE[1], dtype=np.float32)[None, None, :]
    signal = (np.sin(z / 23.0) * np.cos(y / 37.0) + np.sin((x + y) / 51.0) * np.cos(z / 17.0))
    signal = 1500.0 + 900.0 * signal
    noise = rng.normal(0.0, 40.0, size=signal.shape).astype(np.float32)
    return np.clip(signal + noise, 0, 65535).astype(np.uint16)


def make_inputs(workdir, depth):
    import tifffile
    import zarr

    shape = (depth,) + PLANE
    npy = np.lib.format.open_memmap(os.path.join(workdir, "in.npy"), mode="w+",
                                    dtype=np.uint16, shape=shape)
    # ome-zarr-py's default compressor (Blosc zstd level 5, byte shuffle); the
    # outputs keep it.
    store = zarr.create_array(os.path.join(workdir, "in.zarr"), shape=shape, chunks=CHUNKS,
                              dtype=np.uint16,
                              compressors=zarr.codecs.BloscCodec(cname="zstd", clevel=5,
                                                                 shuffle="shuffle"))
    rng = np.random.default_rng(0)
    with tifffile.TiffWriter(os.path.join(workdir, "in.tif"),
                             bigtiff=depth * PLANE[0] * PLANE[1] * 2 > 2**32 - 2**25) as tif:
        for z0 in range(0, depth, CHUNKS[0]):
            z1 = min(depth, z0 + CHUNKS[0])
            slab = make_slab(z0, z1, rng)
            npy[z0:z1] = slab
            store[z0:z1] = slab
            for plane in slab:                       # one page per slice, uncompressed
                tif.write(plane, contiguous=True, photometric="minisblack")
    npy.flush()
    del npy


def du(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


_DASK_IMAGE = """
import sys
import dask.array as da
import numpy as np
from dask_image import ndfilters
from fastconv.cli import parse_kernel
x = da.from_zarr(sys.argv[1])
y = ndfilters.correlate(x.astype(np.float32), parse_kernel(sys.argv[3], 3).astype(np.float32),
                        mode="reflect")
y = da.trunc(y).astype(np.uint16)
y.to_zarr(sys.argv[2])
"""

# Runs a command line (a module or a script) and reports the process's own
# peak RSS (VmHWM).  ru_maxrss from wait4 would not do: a child created by
# fork/vfork starts its high-water mark at the parent's resident size.
_PEAK = """
import atexit, runpy, sys
def report():
    hwm = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
    sys.stderr.write(f"\\nVmHWM {hwm}\\n")
atexit.register(report)
if sys.argv[1] == "-m":
    sys.argv = [sys.argv[2]] + sys.argv[3:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:
    code = sys.argv[2]
    sys.argv = ["-c"] + sys.argv[3:]
    exec(compile(code, "<bench>", "exec"), {"__name__": "__main__"})
"""


def run(argv):
    """Run ``python -m MODULE ...`` or ``python -c CODE ...`` in a child.

    Returns (seconds, peak RSS in MiB, returncode, stderr).
    """
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PEAK] + argv, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    lines = [l for l in proc.stderr.splitlines() if l.startswith("VmHWM ")]
    rss = int(lines[-1].split()[1]) / 1024.0 if lines else float("nan")
    return seconds, rss, proc.returncode, proc.stderr


def load_slices(path, z0, z1):
    if path.endswith(".npy"):
        return np.load(path, mmap_mode="r")[z0:z1]
    import zarr
    return zarr.open_array(path, mode="r")[z0:z1]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--make-inputs"]:
        make_inputs(argv[1], int(argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="volume size in MiB (uint16)")
    parser.add_argument("--keep", default=None, help="work directory to keep (default: temp)")
    parser.add_argument("--skip", action="append", default=[], help="variant name to skip")
    args = parser.parse_args(argv)
    depth = max(CHUNKS[0], args.size * 2**20 // (PLANE[0] * PLANE[1] * 2))
    workdir = args.keep or tempfile.mkdtemp(prefix="fastconv-bench-io-")
    os.makedirs(workdir, exist_ok=True)

    from fastconv._config import config
    cfg = config()
    print(f"CPU: {cpu_name()}; SIMD features: {cfg['cpu SIMD features']}; fastconv kernel "
          f"build: {cfg['kernel SIMD']}; compile flags: {cfg['compile flags']}; "
          f"{os.cpu_count()} cores, {cfg['threads']} threads")
    mb = depth * PLANE[0] * PLANE[1] * 2 / 1e6
    print(f"volume: ({depth}, {PLANE[0]}, {PLANE[1]}) uint16 = {mb:.0f} MB; kernel {KERNEL} "
          f"(5^3), mode reflect; Zarr chunks {CHUNKS}")
    try:
        if not os.path.exists(os.path.join(workdir, "in.tif")):
            t = time.perf_counter()
            # In a child, so that this process stays small while the variants run.
            subprocess.run([sys.executable, os.path.abspath(__file__), "--make-inputs",
                            workdir, str(depth)], check=True)
            print(f"inputs written in {time.perf_counter() - t:.0f} s: "
                  + ", ".join(f"{name} {du(os.path.join(workdir, name)) / 1e6:.0f} MB"
                              for name in ("in.npy", "in.zarr", "in.tif")))
        w = lambda name: os.path.join(workdir, name)          # noqa: E731
        cli = ["-m", "fastconv", "filter"]
        variants = [
            ("npy->npy", cli + [w("in.npy"), w("out.npy"), "--kernel", KERNEL, "--quiet"],
             w("out.npy")),
            ("zarr->zarr", cli + [w("in.zarr"), w("out.zarr"), "--kernel", KERNEL, "--quiet"],
             w("out.zarr")),
            ("tif->zarr", cli + [w("in.tif"), w("tif.zarr"), "--kernel", KERNEL, "--quiet"],
             w("tif.zarr")),
            ("zarr->zarr --scheduler threads",
             cli + [w("in.zarr"), w("dask.zarr"), "--kernel", KERNEL, "--quiet",
                    "--scheduler", "threads"], w("dask.zarr")),
        ]
        try:
            import dask_image  # noqa: F401 (installed?)
            variants.append(("dask-image zarr->zarr",
                             ["-c", _DASK_IMAGE, w("in.zarr"), w("di.zarr"), KERNEL],
                             w("di.zarr")))
        except ImportError:
            print("dask-image is not installed: its row is skipped")
        print("\n| variant | seconds | MB/s | peak RSS (MiB) | output on disk (MB) | load |")
        print("|---|---|---|---|---|---|")
        outputs = []
        for name, argv_, out in variants:
            if name in args.skip:
                continue
            if os.path.isdir(out):
                shutil.rmtree(out)
            seconds, rss, code, err = run(argv_)
            if code != 0:
                print(f"| {name} | failed ({code}) | | | | |\n{err}")
                continue
            outputs.append((name, out))
            print(f"| {name} | {seconds:.1f} | {mb / seconds:.0f} | {rss:.0f} | "
                  f"{du(out) / 1e6:.0f} | {os.getloadavg()[0]:.1f} |", flush=True)
        reference = w("out.npy")
        if os.path.exists(reference):
            worst = {name: 0 for name, _ in outputs}
            for z0 in range(0, depth, CHUNKS[0]):
                z1 = min(depth, z0 + CHUNKS[0])
                ref = load_slices(reference, z0, z1).astype(np.int32)
                for name, out in outputs:
                    diff = np.abs(load_slices(out, z0, z1).astype(np.int32) - ref).max()
                    worst[name] = max(worst[name], int(diff))
            print("\nlargest difference from npy->npy: "
                  + ", ".join(f"{name} {d}" for name, d in worst.items()))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
