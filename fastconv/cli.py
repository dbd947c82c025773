"""The ``fastconv`` command line: ``info``, ``bench`` and ``filter``.

Rank-1 kernels (``gaussian:sigma=S``, ``box:N``, any outer product given as
a .npy file) run as one 1-D pass per axis (fastconv.ndimage's separable
filters); other kernels as an N-D correlation.

``fastconv filter`` streams a volume of any size through bounded memory: the
input is read slab by slab along the first axis with positioned reads (no
memory map, so neither address space nor resident memory grows with the
file), each slab with the halo the kernel needs and its boundary rows taken
by the mode's index rule, and written with positioned writes into a temporary
.npy file that is renamed to OUT only when complete.
"""
import argparse
import errno
import math
import os
import sys
import tempfile
import time

import numpy as np

from ._boundary import SCIPY_MODES as _NP_MODES, source_index


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


# -- kernels ------------------------------------------------------------------------------

def parse_kernel(spec, ndim):
    """Kernel from 'gaussian:sigma=S[,truncate=T]', 'box:N' or a path to a .npy file."""
    name, _, params = spec.partition(":")
    if name == "gaussian":
        opts = dict(p.split("=", 1) for p in params.split(",") if "=" in p)
        try:
            sigma = float(opts.pop("sigma"))
            truncate = float(opts.pop("truncate", 4.0))
        except (KeyError, ValueError):
            raise CLIError(f"bad kernel spec {spec!r}: expected gaussian:sigma=S[,truncate=T] "
                           "with numbers") from None
        if opts or sigma <= 0:
            raise CLIError(f"bad kernel spec {spec!r}: expected gaussian:sigma=S with S > 0")
        radius = int(truncate * sigma + 0.5)          # scipy.ndimage.gaussian_filter's rule
        t = np.arange(-radius, radius + 1, dtype=np.float64)
        g = np.exp(-0.5 * (t / sigma) ** 2)
        g /= g.sum()
        return _outer([g] * ndim)
    if name == "box":
        try:
            size = int(params)
        except ValueError:
            raise CLIError(f"bad kernel spec {spec!r}: expected box:N with an integer N") from None
        if size < 1:
            raise CLIError(f"bad kernel spec {spec!r}: expected box:N with N >= 1")
        return np.full((size,) * ndim, 1.0 / size ** ndim)
    if os.path.exists(spec):
        kernel = np.load(spec)
        if kernel.ndim != ndim:
            raise CLIError(f"kernel {spec} has {kernel.ndim} dims, the input has {ndim}")
        return kernel
    raise CLIError(f"bad kernel spec {spec!r}: expected gaussian:sigma=S, box:N or an "
                   "existing .npy file")


def _outer(vectors):
    out = vectors[0]
    for v in vectors[1:]:
        out = np.multiply.outer(out, v)
    return out


# -- slabs --------------------------------------------------------------------------------

def source_rows(positions, n, mode):
    """Input row feeding each (possibly out-of-range) position along an axis; -1 = cval."""
    return source_index(positions, n, _NP_MODES[mode])


def filter_volume(src, dst, kernel, mode="reflect", cval=0.0, slab=None, progress=None):
    """dst = scipy.ndimage.correlate(src, kernel, mode, cval), slab by slab along axis 0.

    A rank-1 kernel (gaussian:, box:, any outer product) runs as 1-D passes
    (fastconv.ndimage's separable filters), the same bits as
    ``fastconv.ndimage.correlate`` on the whole volume.
    """
    from . import _ndfilters
    from ._filter import correlate_valid

    plan = _ndfilters.separable_plan(src.dtype, kernel, dst.dtype, tuple(range(src.ndim)),
                                     [0] * src.ndim, mode, cval)
    if plan is not None:
        return _filter_separable(src, dst, plan, mode, cval, slab, progress)
    n0 = src.shape[0]
    k0 = kernel.shape[0]
    left = k0 // 2
    work = np.float32 if dst.dtype == np.float32 and src.dtype.itemsize <= 4 else np.float64
    kernel = kernel.astype(work)
    if slab is None:
        row_bytes = math.prod(src.shape[1:]) * np.dtype(work).itemsize
        slab = max(1, min(n0, (128 << 20) // max(1, row_bytes)))
    np_mode = _NP_MODES[mode]
    pads = [(0, 0)] + [(k // 2, k - 1 - k // 2) for k in kernel.shape[1:]]
    kwargs = {"constant_values": cval} if np_mode == "constant" else {}
    for z0 in range(0, n0, slab):
        z1 = min(n0, z0 + slab)
        rows = source_rows(np.arange(z0 - left, z1 + k0 - 1 - left), n0, mode)
        block = np.empty((len(rows),) + tuple(src.shape[1:]), work)
        inside = rows >= 0
        block[inside] = src[rows[inside]]
        block[~inside] = cval
        block = np.pad(block, pads, mode=np_mode, **kwargs)
        result = correlate_valid(block, kernel)
        if dst.dtype.kind in "iu":
            np.trunc(result, out=result)
        dst[slice(z0, z1)] = result
        if progress:
            progress(z1, n0)


def _filter_separable(src, dst, plan, mode, cval, slab, progress):
    """Slabs along axis 0 through the passes of a SeparableCorrelation: the
    axis-0 pass 'valid' over the slab and its halo rows (boundary rows by the
    mode's index rule), the others in place within the slab."""
    from . import _ndfilters

    n0 = src.shape[0]
    first = [p for p in plan.passes if p[0] == 0]
    k0, o0 = (len(first[0][1]), first[0][2]) if first else (1, 0)
    before = k0 // 2 + o0
    rest = tuple(src.shape[1:])
    if slab is None:
        row_bytes = math.prod(rest) * plan.work.itemsize
        slab = max(1, min(n0, (128 << 20) // max(1, row_bytes)))
    workers = _ndfilters.resolve_workers(None, "filter")
    for z0 in range(0, n0, slab):
        z1 = min(n0, z0 + slab)
        rows = source_rows(np.arange(z0 - before, z1 + k0 - 1 - before), n0, mode)
        block = np.empty((len(rows),) + rest, plan.work)
        inside = rows >= 0
        block[inside] = src[rows[inside]]
        block[~inside] = cval
        out = block
        for ax, f, o, cv in plan.passes:
            kind = _ndfilters._kind_of(f)
            if ax == 0:
                out = np.empty((z1 - z0,) + rest, plan.work)
                _ndfilters._pass(block, out, 0, kind, f, o, "constant", cv, plan.double_work,
                                 workers, l0=before)
            else:
                _ndfilters._pass(out, out, ax, kind, f, o, mode, cv, plan.double_work, workers)
        dst[slice(z0, z1)] = out
        if progress:
            progress(z1, n0)


class _Progress:
    def __init__(self, stream, label):
        self.stream, self.label, self.start = stream, label, time.perf_counter()

    def __call__(self, done, total):
        elapsed = time.perf_counter() - self.start
        self.stream.write(f"\r{self.label}: {done}/{total} slices ({100 * done // total}%), "
                          f"{elapsed:.1f} s")
        if done == total:
            self.stream.write("\n")
        self.stream.flush()


class NpyRows:
    """Rows (along axis 0) of a C-ordered .npy file, read without mapping it."""

    def __init__(self, path):
        self.file = open(path, "rb")
        try:
            version = np.lib.format.read_magic(self.file)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy version {version}")
            self.shape, fortran, self.dtype = read_header(self.file)
        except Exception:
            self.file.close()
            raise
        if fortran and len(self.shape) > 1:
            self.file.close()
            raise ValueError("Fortran-ordered arrays are not supported; save with C order")
        self.offset = self.file.tell()
        self.row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize
        self.ndim = len(self.shape)

    def __getitem__(self, rows):
        """Rows ``rows`` (an int array of valid indices) as a new array."""
        out = np.empty((len(rows),) + tuple(self.shape[1:]), self.dtype)
        flat = out.reshape(len(rows), -1).view(np.uint8)
        start = 0
        while start < len(rows):           # one read per run of consecutive rows
            stop = start + 1
            while stop < len(rows) and rows[stop] == rows[stop - 1] + 1:
                stop += 1
            nbytes = (stop - start) * self.row_bytes
            data = os.pread(self.file.fileno(), nbytes, self.offset + int(rows[start]) * self.row_bytes)
            if len(data) != nbytes:
                raise ValueError("the input file is truncated")
            flat[start:stop] = np.frombuffer(data, np.uint8).reshape(stop - start, -1)
            start = stop
        return out

    def close(self):
        self.file.close()


class NpyWriter:
    """A C-ordered .npy file of known shape, written slab by slab along axis 0."""

    def __init__(self, path, shape, dtype):
        self.dtype = np.dtype(dtype)
        self.file = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": tuple(shape)}
        np.lib.format.write_array_header_2_0(self.file, header)
        self.offset = self.file.tell()
        self.row_bytes = math.prod(shape[1:]) * self.dtype.itemsize
        self.file.truncate(self.offset + shape[0] * self.row_bytes)

    def __setitem__(self, rows, values):
        data = np.ascontiguousarray(values, dtype=self.dtype)
        os.pwrite(self.file.fileno(), data.tobytes(), self.offset + rows.start * self.row_bytes)

    def close(self):
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


def run_filter(args):
    if not os.path.exists(args.input):
        raise CLIError(f"input file not found: {args.input}")
    try:
        src = NpyRows(args.input)
    except (ValueError, OSError) as exc:
        raise CLIError(f"cannot read {args.input} as a .npy array: {exc}") from None
    try:
        if not 1 <= src.ndim <= 3:
            raise CLIError(f"expected a 1-D, 2-D or 3-D array in {args.input}, got shape "
                           f"{src.shape}")
        if args.mode not in _NP_MODES:
            raise CLIError(f"unknown mode {args.mode!r}; expected one of {', '.join(_NP_MODES)}")
        kernel = parse_kernel(args.kernel, src.ndim)
        dtype = np.dtype(args.dtype) if args.dtype else src.dtype
        out_dir = os.path.dirname(os.path.abspath(args.output))
        fd, tmp = tempfile.mkstemp(prefix=".fastconv-", suffix=".npy.partial", dir=out_dir)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)      # mkstemp's 0600 would outlive the rename
        try:
            dst = NpyWriter(tmp, src.shape, dtype)
            progress = None if args.quiet else _Progress(sys.stderr, "filter")
            filter_volume(src, dst, kernel, args.mode, args.cval, args.chunks, progress)
            dst.close()
            os.replace(tmp, args.output)            # OUT appears only when complete
        except OSError as exc:
            _remove(tmp)
            if exc.errno == errno.ENOSPC:
                raise CLIError(f"disk full while writing {args.output}; nothing was "
                               "written") from None
            raise
        except BaseException:
            _remove(tmp)
            raise
    finally:
        src.close()
    return 0


def run_info():
    """Build and runtime configuration, the kernel registry, and two example choices."""
    from . import explain, show_config
    from ._dispatch import describe
    show_config()
    print("\nkernel registry (algorithm='auto' takes the cheapest entry that applies):")
    print(describe())
    print("\nexamples (fastconv.explain):")
    print(explain("conv2d", (8, 64, 56, 56), (64, 64, 3, 3), padding=1))
    print(explain("conv3d", (1, 1, 128, 128, 128), (1, 1, 9, 9, 9), padding=4))
    return 0


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


# -- entry point --------------------------------------------------------------------------

def _parser():
    parser = argparse.ArgumentParser(prog="fastconv", description=(
        "fastconv: PyTorch-exact convolution for NumPy on Cython/OpenMP kernels."))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the build and runtime configuration and kernel registry")
    bench = sub.add_parser("bench", help="side-by-side benchmark (PyTorch, SciPy if installed)",
                           add_help=False)
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    f = sub.add_parser("filter", help="filter a .npy volume of any size (memory-mapped)")
    f.add_argument("input", help="input .npy file (1-D to 3-D)")
    f.add_argument("output", help="output .npy file (written atomically)")
    f.add_argument("--kernel", required=True,
                   help="gaussian:sigma=S[,truncate=T] | box:N | KERNEL.npy")
    f.add_argument("--mode", default="reflect", help="scipy.ndimage boundary mode")
    f.add_argument("--cval", type=float, default=0.0, help="fill value for mode=constant")
    f.add_argument("--chunks", type=int, default=None,
                   help="slices per slab along axis 0 (default: ~128 MiB slabs)")
    f.add_argument("--dtype", default=None, help="output dtype (default: the input's)")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from ._bench import main as bench_main
        return bench_main(argv[1:]) or 0
    args = _parser().parse_args(argv)
    try:
        if args.command == "info":
            return run_info()
        if args.chunks is not None and args.chunks < 1:
            raise CLIError(f"--chunks must be >= 1, got {args.chunks}")
        if args.dtype is not None:
            try:
                np.dtype(args.dtype)
            except TypeError:
                raise CLIError(f"unknown --dtype {args.dtype!r}") from None
        return run_filter(args)
    except CLIError as exc:
        print(f"fastconv: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nfastconv: interrupted; no output written", file=sys.stderr)
        return 130
