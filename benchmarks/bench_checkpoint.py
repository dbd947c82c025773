"""Load time and peak extra memory of fastconv.load_state_dict on a ~100 MB checkpoint.

    python benchmarks/bench_checkpoint.py              # 100 MB, zip and legacy formats
    python benchmarks/bench_checkpoint.py --size-mb 400 --repeat 5

The checkpoint is a state dict of float32 3-D convolution weights written by
``torch.save`` (or, without torch, by the tests' hand-built writer in the same
format).  Each measurement runs in a fresh process without torch:

* time: best and median of ``--repeat`` loads;
* tracemalloc peak: the largest total of Python and NumPy allocations during
  one load (NumPy reports its buffers to tracemalloc);
* RSS peak: the process's high-water mark during one load minus its resident
  size before (the mark is reset through /proc/self/clear_refs on Linux).

Both memory figures are shown as a multiple of the file size; the target is
at most 1.2x.  ``torch.load(weights_only=True)`` is timed for comparison
when torch is installed.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

MEASURE = r"""
import gc, json, statistics, sys, time, tracemalloc
import fastconv as fc

path, repeat = sys.argv[1], int(sys.argv[2])

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None

times = []
for _ in range(repeat):
    start = time.perf_counter()
    state = fc.load_state_dict(path)
    times.append(time.perf_counter() - start)
    del state
    gc.collect()

rss_extra = None
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                      # reset the RSS high-water mark (VmHWM)
    before = status("VmRSS")
    state = fc.load_state_dict(path)
    rss_extra = status("VmHWM") - before
    del state
    gc.collect()
except OSError:
    pass

tracemalloc.start()
state = fc.load_state_dict(path)
traced_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(json.dumps({"best": min(times), "median": statistics.median(times),
                  "traced_peak": traced_peak, "rss_extra": rss_extra,
                  "result_bytes": sum(a.nbytes for a in state.values()),
                  "tensors": len(state)}))
"""


def write_checkpoint(path, size_mb, legacy):
    """float32 Conv3d weights (256, 256, 3, 3, 3) (~7 MB each) plus biases, ~size_mb MB."""
    import numpy as np
    rng = np.random.default_rng(0)
    per_layer = 256 * 256 * 27 * 4
    arrays = {}
    for i in range(max(1, round(size_mb * 1e6 / per_layer))):
        arrays[f"layer{i}.weight"] = rng.standard_normal((256, 256, 3, 3, 3), np.float32)
        arrays[f"layer{i}.bias"] = rng.standard_normal(256, np.float32)
    try:
        import torch
    except ImportError:
        tests = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests")
        sys.path.insert(0, tests)
        import checkpoint_files
        checkpoint_files.state_dict_file(path, arrays, legacy=legacy)
        return "hand-built (torch not installed)"
    torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, path,
               _use_new_zipfile_serialization=not legacy)
    return f"torch.save, torch {torch.__version__}"


def torch_load_time(path, repeat):
    try:
        import torch
    except ImportError:
        return None
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        torch.load(path, weights_only=True)
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("zip", "legacy"):
            path = os.path.join(tmp, f"{fmt}.pt")
            writer = write_checkpoint(path, args.size_mb, legacy=fmt == "legacy")
            size = os.path.getsize(path)
            out = subprocess.run([sys.executable, "-c", MEASURE, path, str(args.repeat)],
                                 capture_output=True, text=True, check=True)
            m = json.loads(out.stdout)
            rss = ("n/a" if m["rss_extra"] is None
                   else f"{m['rss_extra'] / 1e6:.1f} MB = {m['rss_extra'] / size:.2f}x file")
            print(f"{fmt} format, {size / 1e6:.1f} MB file, {m['tensors']} tensors ({writer})")
            print(f"  load_state_dict: best {1e3 * m['best']:.0f} ms, median "
                  f"{1e3 * m['median']:.0f} ms ({size / m['best'] / 1e9:.2f} GB/s)")
            print(f"  tracemalloc peak {m['traced_peak'] / 1e6:.1f} MB = "
                  f"{m['traced_peak'] / size:.2f}x file; RSS peak extra {rss}; "
                  f"result {m['result_bytes'] / 1e6:.1f} MB")
            reference = torch_load_time(path, args.repeat)
            if reference is not None:
                print(f"  torch.load(weights_only=True): best {1e3 * reference:.0f} ms")


if __name__ == "__main__":
    main()
