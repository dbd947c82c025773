"""The ``fastconv`` command line: ``info``, ``bench`` and ``filter``.

Named kernels (``gaussian:sigma=S``, ``box:N``, ``sobel[:axis=A]``,
``prewitt[:axis=A]``, ``laplace``, ``gaussian-gradient:sigma=S``,
``gaussian-laplace:sigma=S``) are the separable ``fastconv.ndimage`` filters
(``gaussian_filter``, ``uniform_filter``, ...), run pass by pass
(:mod:`fastconv._pass_plans`).  A .npy kernel is a correlation: rank-1
kernels (outer products) run as one 1-D pass per axis, others as an N-D
correlation.

``fastconv filter`` streams a volume of any size through bounded memory: the
input (.npy, Zarr or TIFF: :mod:`fastconv._volumes`) is read slab by slab
along the first axis, each slab with the halo the kernel needs and its
boundary rows taken by the mode's index rule, filtered, and written into a
temporary file or store that is renamed to OUT only when complete.  With
``--scheduler`` the same work runs as a ``fastconv.dask`` graph instead,
chunk by chunk.
"""
import argparse
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from . import _pass_plans, _volumes
from ._boundary import SCIPY_MODES as _NP_MODES, source_index
from ._volumes import NpyRows, NpyWriter, VolumeError  # noqa: F401 (cli.NpyWriter)


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


# -- kernels ------------------------------------------------------------------------------

#: The accepted forms of --kernel, listed in --help and in every spec error.
KERNEL_FORMS = ("gaussian:sigma=S[,truncate=T] | box:N | sobel[:axis=A] | prewitt[:axis=A] | "
                "laplace | gaussian-gradient:sigma=S[,truncate=T] | "
                "gaussian-laplace:sigma=S[,truncate=T] | KERNEL.npy")


@dataclass(frozen=True)
class NamedFilter:
    """A --kernel naming a separable filter: ``fastconv.ndimage.<function>(x,
    *args, **kwargs)`` (and ``fastconv.dask.<function>``), plus mode and cval."""

    spec: str
    function: str
    args: tuple = ()
    kwargs: tuple = ()              # (name, value) pairs

    def plan(self, x_dtype, ndim, out_dtype, mode, cval):
        """The :class:`fastconv._pass_plans.FilterPlan` for a volume."""
        build = getattr(_pass_plans, self.function)
        return build(x_dtype, ndim, *self.args, output=out_dtype, mode=mode, cval=cval,
                     **dict(self.kwargs))

    def dask(self, x, out_dtype, mode, cval):
        from . import dask as fcd
        return getattr(fcd, self.function)(x, *self.args, output=out_dtype, mode=mode,
                                           cval=cval, **dict(self.kwargs))


def _spec_error(spec, problem):
    return CLIError(f"--kernel: bad kernel spec {spec!r}: {problem} (accepted: {KERNEL_FORMS})")


def _options(spec, params, allowed, positional):
    """'k=v,k=v' (or a bare first value for ``positional``) -> dict of strings."""
    opts = {}
    for i, part in enumerate(p for p in params.split(",") if p.strip()):
        key, eq, value = part.partition("=")
        if not eq:
            if i == 0 and positional:
                key, value = positional, part
            else:
                raise _spec_error(spec, f"expected name=value, got {part!r}")
        key = key.strip()
        if key not in allowed:
            raise _spec_error(spec, f"unknown option {key!r}; expected "
                              f"{' or '.join(allowed) if allowed else 'no options'}")
        if key in opts:
            raise _spec_error(spec, f"{key} given twice")
        opts[key] = value.strip()
    return opts


def _positive(spec, opts, key, form, default=None):
    if key not in opts:
        if default is None:
            raise _spec_error(spec, f"expected {form}: {key} is missing")
        return default
    try:
        value = float(opts[key])
    except ValueError:
        raise _spec_error(spec, f"expected {form} with a number {key[0].upper()}, got "
                          f"{key}={opts[key]!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise _spec_error(spec, f"expected {form} with {key[0].upper()} > 0, got "
                          f"{key}={opts[key]}")
    return value


def parse_filter(spec, ndim):
    """--kernel -> a :class:`NamedFilter`, or the kernel array of a .npy file."""
    name, _, params = spec.partition(":")
    gaussians = {"gaussian": "gaussian_filter", "gaussian-gradient":
                 "gaussian_gradient_magnitude", "gaussian-laplace": "gaussian_laplace"}
    if name in gaussians:
        form = f"{name}:sigma=S[,truncate=T]"
        opts = _options(spec, params, ("sigma", "truncate"), "sigma")
        sigma = _positive(spec, opts, "sigma", form)
        truncate = _positive(spec, opts, "truncate", form, default=4.0)
        kwargs = (("truncate", truncate),)
        return NamedFilter(spec, gaussians[name], (sigma,), kwargs)
    if name == "box":
        opts = _options(spec, params, ("size",), "size")
        try:
            size = int(opts["size"])
        except (KeyError, ValueError):
            raise _spec_error(spec, "expected box:N with an integer N") from None
        if size < 1:
            raise _spec_error(spec, f"expected box:N with N >= 1, got {size}")
        return NamedFilter(spec, "uniform_filter", (size,))
    if name in ("sobel", "prewitt"):
        opts = _options(spec, params, ("axis",), "axis")
        try:
            axis = int(opts.get("axis", -1))
        except ValueError:
            raise _spec_error(spec, f"expected {name}[:axis=A] with an integer A, got "
                              f"axis={opts['axis']!r}") from None
        if not -ndim <= axis < ndim:
            raise _spec_error(spec, f"axis {axis} is out of range for a {ndim}-D volume; "
                              f"expected {-ndim} <= A < {ndim}")
        return NamedFilter(spec, name, (), (("axis", axis),))
    if name == "laplace":
        _options(spec, params, (), None)
        return NamedFilter(spec, "laplace")
    if os.path.exists(spec):
        kernel = np.load(spec)
        if kernel.ndim != ndim:
            raise CLIError(f"--kernel: kernel {spec} has {kernel.ndim} dims, the input has "
                           f"{ndim}")
        return kernel
    if spec.lower().endswith(".npy"):
        raise CLIError(f"--kernel: kernel file not found: {spec}")
    raise _spec_error(spec, f"unknown filter {name!r} and no such .npy file")


def parse_kernel(spec, ndim):
    """The kernel of 'gaussian:...', 'box:N' or a .npy file as a dense ``ndim``-D array.

    (What ``scipy.ndimage.correlate`` would take; ``fastconv filter`` itself
    runs the named filters as their separable ndimage functions.)
    """
    filt = parse_filter(spec, ndim)
    if isinstance(filt, np.ndarray):
        return filt
    if filt.function == "gaussian_filter":
        sigma, truncate = filt.args[0], dict(filt.kwargs)["truncate"]
        radius = int(truncate * sigma + 0.5)          # scipy.ndimage.gaussian_filter's rule
        t = np.arange(-radius, radius + 1, dtype=np.float64)
        g = np.exp(-0.5 * (t / sigma) ** 2)
        g /= g.sum()
        return _outer([g] * ndim)
    if filt.function == "uniform_filter":
        size = filt.args[0]
        return np.full((size,) * ndim, 1.0 / size ** ndim)
    raise CLIError(f"--kernel {spec!r} is a filter with several terms or a derivative, not "
                   "one correlation kernel")


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
    """dst = the filter of ``src``, slab by slab along axis 0.

    ``kernel`` is either a :class:`fastconv._pass_plans.FilterPlan` (a named
    filter: gaussian:, box:, sobel, ...; ``mode``/``cval`` are the plan's),
    giving the bits of its ``fastconv.ndimage`` function on the whole volume,
    or an array: ``scipy.ndimage.correlate(src, kernel, mode, cval)``, where
    a rank-1 kernel (any outer product) runs as 1-D passes (fastconv.ndimage's
    separable filters), the same bits as ``fastconv.ndimage.correlate`` on
    the whole volume.
    """
    from . import _ndfilters
    from ._filter import correlate_valid

    if isinstance(kernel, _pass_plans.FilterPlan):
        return _filter_named(src, dst, kernel, slab, progress)

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


def _filter_named(src, dst, plan, slab, progress):
    """A named filter's passes slab by slab (:func:`fastconv._pass_plans.run_slab`):
    bit for bit its ndimage function on the whole volume, except a box filter's
    running sum along axis 0 on non-integer data, which restarts at each slab
    (differences at the rounding level)."""
    from ._ndfilters import resolve_workers

    n0 = src.shape[0]
    if slab is None:
        slab = _pass_plans.slab_rows(src.shape, plan)
    workers = resolve_workers(None, "filter")
    for z0 in range(0, n0, slab):
        z1 = min(n0, z0 + slab)
        dst[slice(z0, z1)] = _pass_plans.run_slab(src, z0, z1, plan, workers)
        if progress:
            progress(z1, n0)


class _Progress:
    """A progress bar with throughput and ETA: ``\\r``-updated on a terminal, else lines."""

    def __init__(self, stream, label, bytes_per_slice, width=24):
        self.stream, self.label, self.width = stream, label, width
        self.bytes_per_slice = bytes_per_slice
        self.tty = stream.isatty()
        self.start = time.perf_counter()
        self.last = -math.inf               # the first report is always shown

    def __call__(self, done, total):
        now = time.perf_counter()
        if done < total and now - self.last < (0.2 if self.tty else 5.0):
            return                          # throttle: a log file gets a line every 5 s
        self.last = now
        elapsed = now - self.start
        fraction = done / total if total else 1.0
        filled = int(self.width * fraction)
        rate = done * self.bytes_per_slice / elapsed / 1e6 if elapsed > 0 else 0.0
        if done >= total:
            tail = f"{_clock(elapsed)} elapsed"
        elif done:
            tail = f"ETA {_clock(elapsed * (total - done) / done)}"
        else:
            tail = "ETA --:--"
        line = (f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
                f"{100 * fraction:3.0f}% {done}/{total} slices, {rate:.0f} MB/s, {tail}")
        end = "\n" if done >= total or not self.tty else ""
        self.stream.write(("\r" if self.tty else "") + line + end)
        self.stream.flush()


def _clock(seconds):
    minutes, seconds = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def _check_dtypes(src, dtype, explicit, path):
    """The filter computes in float32/float64 and writes integers or reals up to 64 bits."""
    if src.dtype.kind not in "biuf" or src.dtype.itemsize > 8:
        raise CLIError(f"cannot filter {path}: its dtype {src.dtype} is not supported; "
                       "expected bool, integer or real floating point of at most 64 bits")
    if dtype.kind not in "iuf" or dtype.itemsize > 8:
        where = "--dtype" if explicit else f"the input's dtype (from {path})"
        raise CLIError(f"{where}: the filter writes integer or real floating-point data of at "
                       f"most 64 bits, got {dtype}; pass e.g. --dtype float32")


def _parse_chunks(text):
    """--chunks: N (slices per slab, also a Zarr output's axis-0 chunk) or A,B,C."""
    if text is None:
        return None
    try:
        chunks = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise CLIError(f"--chunks: expected N or comma-separated integers, got {text!r}") \
            from None
    if min(chunks) < 1:
        raise CLIError(f"--chunks must be >= 1, got {text}")
    return chunks


def run_filter(args):
    if not os.path.exists(args.input):
        raise CLIError(f"input file not found: {args.input}")
    chunks = _parse_chunks(args.chunks)
    try:
        src = _volumes.open_volume(args.input)
    except (VolumeError, ImportError) as exc:
        raise CLIError(str(exc)) from None
    try:
        if not 1 <= src.ndim <= 3:
            raise CLIError(f"expected a 1-D, 2-D or 3-D array in {args.input} (leading axes "
                           f"of length 1 are allowed), got shape {src.full_shape}")
        if args.mode not in _NP_MODES:
            raise CLIError(f"unknown mode {args.mode!r}; expected one of {', '.join(_NP_MODES)}")
        filt = parse_filter(args.kernel, src.ndim)
        dtype = np.dtype(args.dtype) if args.dtype else src.dtype
        _check_dtypes(src, dtype, args.dtype is not None, args.input)
        if isinstance(filt, NamedFilter):
            try:
                kernel = filt.plan(src.dtype, src.ndim, dtype, args.mode, args.cval)
            except (ValueError, TypeError) as exc:
                where = "--dtype" if args.dtype else f"the input's dtype (from {args.input})"
                raise CLIError(f"--kernel {args.kernel} with {where}: {exc}") from None
        else:
            kernel = filt
        try:
            if args.scheduler:
                _volumes.require("dask.array", "--scheduler", extra="dask")
            dst = _volumes.create_volume(args.output, src.full_shape, dtype, like=src,
                                         chunks=chunks, compressor=args.compressor)
        except (VolumeError, ImportError) as exc:
            raise CLIError(str(exc)) from None
        except OSError as exc:
            raise CLIError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        show = not args.quiet and (args.progress or sys.stderr.isatty())
        progress = _Progress(sys.stderr, "filter", src.row_bytes) if show else None
        try:
            if args.scheduler:
                from ._dask_filter import filter_volume_dask
                filter_volume_dask(src, dst, filt if isinstance(filt, NamedFilter) else kernel,
                                   args.mode, args.cval, args.scheduler, progress)
            else:
                slab = chunks[0] if chunks is not None and len(chunks) == 1 else None
                filter_volume(src, dst, kernel, args.mode, args.cval, slab, progress)
            dst.commit()                        # OUT appears only when complete
        except VolumeError as exc:              # corrupt input data found while reading
            dst.abort()
            raise CLIError(f"{exc}; nothing was written") from None
        except OSError as exc:
            dst.abort()
            if _volumes.is_disk_full(exc):
                raise CLIError(f"disk full while writing {args.output}; nothing was "
                               "written") from None
            raise
        except BaseException:
            dst.abort()
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


# -- entry point --------------------------------------------------------------------------

def _parser():
    parser = argparse.ArgumentParser(prog="fastconv", description=(
        "fastconv: PyTorch-exact convolution for NumPy on Cython/OpenMP kernels."))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the build and runtime configuration and kernel registry")
    bench = sub.add_parser("bench", help="side-by-side benchmark (PyTorch, SciPy if installed)",
                           add_help=False)
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    f = sub.add_parser("filter", help="filter a .npy, Zarr or TIFF volume of any size, "
                       "streaming")
    f.add_argument("input", help="input volume, 1-D to 3-D: .npy, .zarr (v2/v3; an OME-Zarr "
                   "level as image.zarr/0) or .tif/.tiff (multi-page, BigTIFF)")
    f.add_argument("output", help="output volume, any of the same formats (written to a "
                   "temporary, renamed when complete)")
    f.add_argument("--kernel", required=True, metavar="SPEC", help=(
        f"{KERNEL_FORMS}. The named filters are the scipy.ndimage functions, run as "
        "separable 1-D passes: gaussian = gaussian_filter, box = uniform_filter (size N "
        "per axis), sobel / prewitt along axis A (default -1, the last), laplace, "
        "gaussian-gradient = gaussian_gradient_magnitude, gaussian-laplace = "
        "gaussian_laplace; a .npy file is a kernel for scipy.ndimage.correlate"))
    f.add_argument("--mode", default="reflect",
                   help=f"scipy.ndimage boundary mode: {', '.join(_NP_MODES)} (default "
                   "reflect)")
    f.add_argument("--cval", type=float, default=0.0,
                   help="fill value for mode=constant / grid-constant (default 0)")
    f.add_argument("--chunks", default=None,
                   help="N: slices per slab along axis 0 (default: ~128 MiB slabs), also a "
                   "Zarr output's axis-0 chunk; Z,Y,X: a Zarr output's chunk shape "
                   "(default: the input's)")
    f.add_argument("--compressor", default=None,
                   help="Zarr output: none | zstd[:LEVEL] | blosc[:CNAME[:LEVEL]] | "
                   "gzip[:LEVEL] (default: the input's)")
    f.add_argument("--scheduler", default=None, choices=["threads", "synchronous"],
                   help="compute with fastconv.dask on this Dask scheduler, chunk by chunk "
                   "(default: slab by slab, without Dask)")
    f.add_argument("--dtype", default=None, help="output dtype (default: the input's)")
    f.add_argument("--progress", action="store_true",
                   help="show the progress bar even when stderr is not a terminal")
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
