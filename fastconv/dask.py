"""Chunked convolution of Dask arrays with fastconv's kernels.

``fastconv.dask`` runs fastconv on the existing Dask engine: the functions
take a ``dask.array.Array``, a ``zarr.Array`` or the path of a Zarr array
(v2 or v3, e.g. the level ``image.zarr/0`` of an OME-Zarr image; read with
``dask.array.from_zarr``, chunked as stored; needs ``fastconv[io]``), or any
other array-like (wrapped with ``dask.array.asarray``), and return a lazy
``dask.array.Array`` with known chunks that computes to the in-memory
fastconv result (and streams to disk with ``.to_zarr(...)``, a chunk per
task):

* :func:`correlate` / :func:`convolve` -- ``scipy.ndimage`` semantics, as
  :func:`fastconv.ndimage.correlate` / :func:`fastconv.ndimage.convolve`, on
  1-D to 3-D arrays chunked any way; the output has the input's chunks.
* :func:`correlate1d`, :func:`convolve1d`, :func:`gaussian_filter`,
  :func:`gaussian_filter1d`, :func:`uniform_filter`, :func:`uniform_filter1d`,
  :func:`sobel`, :func:`prewitt`, :func:`laplace`, :func:`gaussian_laplace`,
  :func:`gaussian_gradient_magnitude` -- the separable ``scipy.ndimage``
  filters, as their :mod:`fastconv.ndimage` versions (same arguments, dtype
  rules and bits), on arrays of any number of dims chunked any way; the
  output has the input's chunks (see "Separable filters" below).
* :func:`conv1d` / :func:`conv2d` / :func:`conv3d` -- ``torch.nn.functional``
  semantics, as :func:`fastconv.conv1d` etc., on ``(N, C, *spatial)`` (or
  unbatched ``(C, *spatial)``) inputs chunked along the batch and spatial
  axes; the channel axis is made whole (one chunk), the output channels are
  one chunk.

Halos
-----
The graph is built with explicit halos (one task per output block, fed by
slices of the input blocks), not with ``dask.array.map_overlap``.  Along each
axis the output block ``[o0, o1)`` reads the padded-input range
``[o0 * s, (o1 - 1) * s + d * (k - 1) + 1)`` -- kernel size ``k``, dilation
``d``, stride ``s``, the padding (or, for the ndimage functions, ``k // 2 +
origin`` on the left) shifting padded to input coordinates.  Every padded
position is mapped to the input cell it copies, exactly as ``np.pad`` /
fastconv pad the whole array ('reflect', 'mirror', 'nearest', 'wrap',
'grid-*', PyTorch's 'reflect', 'replicate', 'circular'), or to the fill value
('constant' + ``cval``, 'zeros').  The task gathers exactly those cells from
whichever input blocks hold them, so

* halos wider than the neighbouring chunks (chunks smaller than the halo,
  the case of dask issue #6688) simply read from several blocks -- no
  rechunking is needed and the input chunking is kept;
* 'wrap' / 'circular' read the far end of the array, across any number of
  chunk edges (the bug of dask-image issue #242 cannot occur);
* stride is exact: output chunk boundaries are placed where the centre of
  the receptive field crosses an input chunk boundary, and each output block
  is computed from its own receptive field, so nothing is re-chunked.

Where the in-memory call (``algorithm='auto'``) would use the direct kernel,
every block uses it too and the results are bitwise identical to the
in-memory ones.  Where it would use FFT or im2col (GEMM), each block picks
its own algorithm and the results agree to floating-point tolerance (the
spec's promise for any two algorithms; GEMM tiling depends on the block
shape).

Separable filters
-----------------
The separable filters run as SciPy runs them, one 1-D pass per axis with
the intermediate in the output dtype, and each pass is one layer of the
graph: output block ``[o0, o1)`` along the pass's axis gathers exactly its
window ``[o0 - before, o1 + after)`` (``before = len(w) // 2 + origin``) by the
rule above, the pass's own mode at the array's edges (cval for 'constant',
read as the in-memory kernel reads it), and runs the pass 'valid' over it;
the other axes need no halo.  Filters that add terms (``laplace``,
``gaussian_laplace``, ``gaussian_gradient_magnitude``) build one chain of
layers per term and add (square, square-root) them block by block with the
in-memory function's NumPy operations.  Every output element thus gets the
same operations as in :mod:`fastconv.ndimage`, and ``.compute()`` equals the
in-memory result bit for bit, every dtype and mode, chunks smaller than the
halo included.  One caveat is handled by rechunking: a running sum
(``uniform_filter``) restarts at the first row of a block, which changes the
rounding unless the sums are exact (integer data of at most 32 bits and an
integral cval); otherwise that pass runs on whole lines along its axis (the
array is rechunked to one chunk along it, the other axes split so that a
block stays about as large as an input block, and back afterwards).  When
the input is a single chunk, the in-memory function runs on it directly.

Threads
-------
Dask runs several tasks at once and every fastconv call is itself
parallelised with OpenMP.  So that Dask's threads times OpenMP threads never
exceed the cores, every task runs fastconv under
``threadpoolctl.threadpool_limits(n, user_api='openmp')`` with::

    n = max(1, min(T, cores // tasks))

* ``cores`` -- :data:`dask.system.CPU_COUNT` (CPU affinity and cgroup
  quotas taken into account);
* ``tasks`` -- how many tasks Dask can run at once in the task's process:
  the size of the thread pool of the threaded scheduler (``CPU_COUNT`` by
  default, or ``num_workers``), the ``nthreads`` of a ``dask.distributed``
  worker, 1 for the synchronous scheduler in the main thread; ``cores``
  (hence ``n = 1``) when it cannot be told;
* ``T`` -- :func:`fastconv.get_num_threads` in the task's thread before
  limiting, so ``OMP_NUM_THREADS`` and :func:`fastconv.set_num_threads` are
  never exceeded.  Note that ``dask.distributed``'s nanny starts worker
  processes with ``OMP_NUM_THREADS=1`` (config
  ``distributed.nanny.pre-spawn-environ``), so distributed workers run
  fastconv single-threaded unless that setting is changed.

The ``threads=`` argument of every function overrides ``n``.  Only the
OpenMP limit is set: fastconv already holds BLAS to one thread inside its
kernels.

Processes
---------
GNU libgomp cannot start threads in a child forked after the parent used
its thread pool; fastconv detects such a child and runs single-threaded in
it (correct, never hanging).  ``dask.distributed`` starts its worker
processes with the 'spawn' method (config
``distributed.worker.multiprocessing-method``), where fastconv is fully
parallel.  Dask's own threaded scheduler is not fork-safe either: in a child
forked after the parent used it, ``compute()`` with the default threaded
scheduler hangs whatever the graph (a Dask matter, not fastconv's); use
``scheduler='sync'`` there, or the 'spawn' / 'forkserver' start methods.
"""
import dataclasses
import functools
import itertools
import multiprocessing
import operator
import os
import sys
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph
    from dask.system import CPU_COUNT
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("fastconv.dask needs Dask: pip install 'dask[array]' "
                      "(and 'dask[distributed]' for clusters)") from exc

from . import _ndfilters
from . import _pass_plans
from . import functional as _functional
from . import ndimage as _ndimage
from . import _engine
from ._args import check_choice, pad3, parse_conv
from ._boundary import SCIPY_MODES, TORCH_MODES, source_index
from ._filter import choose as _choose_method, correlate_valid as _correlate_valid
from ._threads import get_num_threads

__all__ = ["correlate", "convolve", "correlate1d", "convolve1d", "gaussian_filter",
           "gaussian_filter1d", "uniform_filter", "uniform_filter1d", "sobel", "prewitt",
           "laplace", "gaussian_laplace", "gaussian_gradient_magnitude", "conv1d", "conv2d",
           "conv3d", "threads_per_task"]


# --------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------

_controller = None
_controller_lock = threading.Lock()


def _get_controller():
    global _controller
    with _controller_lock:
        if _controller is None:
            from threadpoolctl import ThreadpoolController
            _controller = ThreadpoolController()
        return _controller


def _concurrent_tasks():
    """How many Dask tasks may run at once in this process (see the module notes)."""
    worker = None
    distributed = sys.modules.get("distributed")     # loaded in any distributed worker
    if distributed is not None:
        try:
            worker = distributed.get_worker()
        except (ValueError, AttributeError):
            worker = None
    if worker is not None:
        state = getattr(worker, "state", worker)
        return max(1, int(getattr(state, "nthreads", CPU_COUNT)))
    thread = threading.current_thread()
    pool = _executor_of(thread)
    if pool is not None:
        return max(1, int(pool._max_workers))
    if thread is threading.main_thread() and multiprocessing.parent_process() is None:
        return 1                   # the synchronous scheduler, in the main thread
    return max(1, CPU_COUNT)       # unknown: assume the cores are all in use


def _executor_of(thread):
    """The ``concurrent.futures.ThreadPoolExecutor`` running ``thread``, if any.

    Dask's threaded scheduler runs tasks in such a pool.  A pool thread holds a
    weak reference to its executor (CPython's ``_worker`` arguments); the
    executor's ``_threads`` set is the fallback (a thread is added to it only
    after it has started, so the first tasks could miss it).
    """
    args = getattr(thread, "_args", None)
    if args:
        ref = args[0]
        if isinstance(ref, weakref.ReferenceType):
            pool = ref()
            if isinstance(pool, ThreadPoolExecutor):
                return pool
    try:
        from dask import threaded
        pools = [threaded.default_pool]
        pools += [p for by_size in list(threaded.pools.values()) for p in list(by_size.values())]
        for pool in pools:
            if isinstance(pool, ThreadPoolExecutor) and thread in list(pool._threads):
                return pool
    except Exception:  # pragma: no cover - dask internals changed
        pass
    return None


def threads_per_task():
    """OpenMP threads a fastconv task gets in the calling thread.

    ``max(1, min(T, cores // tasks))``: see the module docstring.

    Returns
    -------
    int
    """
    return max(1, min(get_num_threads(), CPU_COUNT // _concurrent_tasks()))


def _limited(threads, func, *args):
    n = threads_per_task() if threads is None else threads
    with _get_controller().limit(limits=n, user_api="openmp"):
        return func(*args)


def _check_threads(threads, op):
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"{op}: expected threads to be None or an int >= 1, got {threads!r}")
    return int(threads)


# --------------------------------------------------------------------------
# Halo plans and the graph
# --------------------------------------------------------------------------

def _source_map(length, left, right, np_mode):
    """Input cell copied to each padded position (-1: the fill value)."""
    return source_index(np.arange(-left, length + right, dtype=np.intp), length, np_mode)


def _axis_plan(src, chunks, windows):
    """For each padded window ``[p0, p1)``: the input pieces it reads and how to gather.

    Returns a list of ``(pieces, gather)``: ``pieces`` is a list of
    ``(chunk, lo, hi)`` (a slice of one input chunk; the window's data is the
    concatenation of the pieces), ``gather`` is None (the concatenation as
    is), a slice of it, or an index array into it with -1 for the fill value.
    """
    bounds = np.concatenate([[0], np.cumsum(chunks)]).astype(np.intp)
    plans = []
    for p0, p1 in windows:
        need = src[p0:p1]
        valid = need >= 0
        local = np.full(need.shape, -1, dtype=np.intp)
        pieces = []
        if not valid.any():
            # Nothing but fill: read one cell anyway, for the other axes' shapes.
            first = int(np.flatnonzero(np.asarray(chunks) > 0)[0])
            plans.append(([(first, 0, 1)], local))
            continue
        v = need[valid]
        owner = np.searchsorted(bounds, v, side="right") - 1
        lv = np.empty_like(v)
        offset = 0
        for c in np.unique(owner):
            sel = owner == c
            cells = v[sel] - bounds[c]
            lo, hi = int(cells.min()), int(cells.max()) + 1
            pieces.append((int(c), lo, hi))
            lv[sel] = offset + cells - lo
            offset += hi - lo
        local[valid] = lv
        if valid.all() and np.array_equal(local, np.arange(local[0], local[0] + local.size)):
            start = int(local[0])
            gather = None if (start, start + local.size) == (0, offset) else \
                slice(start, start + local.size)
        else:
            gather = local
        plans.append((pieces, gather))
    return plans


def _passthrough_plan(chunks):
    """Output block i is input block i, whole."""
    return [([(i, 0, n)], None) for i, n in enumerate(chunks)]


def _assemble(nested, depth):
    """The concatenation of a nested list (depth ``depth``) of blocks."""
    if depth == 0:
        return nested
    flat = nested
    for _ in range(depth):
        if len(flat) != 1:
            return np.block(nested)
        flat = flat[0]
    return flat


def _run_block(kernel, gathers, work, fill, threads, pieces, *operands):
    """One output block: gather its padded window, then run the kernel on it."""
    win = _assemble(pieces, len(gathers))
    fills = []
    for axis, g in enumerate(gathers):
        if g is None:
            continue
        if isinstance(g, slice):
            win = win[(slice(None),) * axis + (g,)]
        else:
            missing = g < 0
            win = np.take(win, np.where(missing, 0, g), axis=axis)
            if missing.any():
                fills.append((axis, missing))
    if fills:
        win = np.array(win, dtype=work, order="C")          # a copy we own
        for axis, missing in fills:
            win[(slice(None),) * axis + (missing,)] = fill
    else:
        win = np.ascontiguousarray(win, dtype=work)
    return _limited(threads, kernel, win, *operands)


def _build(op, x, plans, out_chunks, dtype, kernel, work, fill, threads, operands, token):
    """A dask Array whose block ``idx`` is ``kernel(window(idx), *operands)``."""
    name = f"fastconv-{op}-{token}"
    piece_name = f"fastconv-{op}-halo-{token}"
    dsk = {}
    operand_keys = []
    for i, value in enumerate(operands):
        if value is None:
            operand_keys.append(None)
        else:
            key = (f"fastconv-{op}-operand-{token}", i)
            dsk[key] = value
            operand_keys.append(key)
    piece_keys = {}

    def piece_key(block, cuts):
        if all(lo == 0 and hi == x.chunks[a][block[a]] for a, (lo, hi) in enumerate(cuts)):
            return (x.name,) + block
        k = (block, cuts)
        if k not in piece_keys:
            key = (piece_name, len(piece_keys))
            dsk[key] = (operator.getitem, (x.name,) + block,
                        tuple(slice(lo, hi) for lo, hi in cuts))
            piece_keys[k] = key
        return piece_keys[k]

    def nested(per_axis, block, cuts):
        axis = len(block)
        if axis == len(per_axis):
            return piece_key(block, cuts)
        return [nested(per_axis, block + (c,), cuts + ((lo, hi),))
                for c, lo, hi in per_axis[axis]]

    for idx in itertools.product(*[range(len(p)) for p in plans]):
        chosen = [plans[a][i] for a, i in enumerate(idx)]
        pieces = nested([p for p, _ in chosen], (), ())
        gathers = tuple(g for _, g in chosen)
        dsk[(name,) + idx] = (functools.partial(_run_block, kernel, gathers, work, fill,
                                                threads), pieces, *operand_keys)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x])
    meta = np.empty((0,) * len(out_chunks), dtype=dtype)
    return da.Array(graph, name, out_chunks, meta=meta)


def _as_dask(x, op):
    if isinstance(x, (str, os.PathLike)) or _is_zarr_array(x):
        x = _from_zarr(x, op)
    elif not isinstance(x, da.Array):
        x = da.asarray(x)
    if any(np.isnan(c) for cs in x.chunks for c in cs):
        raise ValueError(f"{op}: expected an input with known chunk sizes, got unknown "
                         f"(nan) chunks; call x.compute_chunk_sizes() first")
    return x


def _is_zarr_array(x):
    """A ``zarr.Array``, told without importing zarr."""
    return type(x).__module__.split(".")[0] == "zarr" and hasattr(x, "chunks") \
        and hasattr(x, "shape")


def _from_zarr(x, op):
    """A Zarr array or the path of one (v2 or v3; an OME-Zarr level) as a Dask array.

    Its chunks become the Dask chunks, so the result (chunked as the input)
    streams back with ``to_zarr`` one chunk per task.
    """
    from ._volumes import VolumeError, volume_kind
    from ._zarr_volume import open_zarr_array

    if not _is_zarr_array(x):
        try:
            if volume_kind(x) != "zarr":
                raise VolumeError(f"{os.fspath(x)!r} is not a Zarr store")
            x = open_zarr_array(x)
        except VolumeError as exc:
            raise ValueError(f"{op}: expected x to be a Dask array, an array-like, a "
                             f"zarr.Array or the path of a Zarr array; {exc}") from None
    return da.from_zarr(x)


# --------------------------------------------------------------------------
# scipy.ndimage semantics
# --------------------------------------------------------------------------

def _ndimage_kernel(win, weights, method, result_dtype):
    out = _correlate_valid(win, weights, method=method)
    if result_dtype.kind in "iub" and out.dtype.kind == "f":
        np.trunc(out, out=out)
    if result_dtype.kind != "c":
        out = out.real
    return out.astype(result_dtype, copy=False)


def _filter(op, x, weights, mode, cval, origin, threads, flip):
    x = _as_dask(x, op)
    w = np.asarray(weights)
    threads = _check_threads(threads, op)
    # Validate exactly as the in-memory call does (same errors), on a 1-cell input.
    in_memory = _ndimage.convolve if flip else _ndimage.correlate
    in_memory(np.zeros((1,) * x.ndim, x.dtype), w, mode=mode, cval=cval, origin=origin)
    nd = x.ndim
    origins = _ndimage._per_axis(origin, nd, "origin", op)
    if not flip and np.iscomplexobj(w):
        w = w.conj()
    if flip:
        w = w[(slice(None, None, -1),) * nd]
        origins = [-o - (1 - k % 2) for o, k in zip(origins, w.shape)]
    result, work = _ndimage._output(None, np.empty((0,) * nd, x.dtype), w, (0,) * nd, op)
    result_dtype = result.dtype
    if x.size == 0:
        return da.zeros(x.shape, dtype=result_dtype, chunks=x.chunks)
    ww = np.ascontiguousarray(w, dtype=work)
    pads = [(k // 2 + o, k - 1 - (k // 2 + o)) for k, o in zip(w.shape, origins)]
    np_mode = SCIPY_MODES[mode]
    whole = tuple(n + left + right for n, (left, right) in zip(x.shape, pads))
    # A rank-1 kernel: the whole-array call runs 1-D passes; each block runs
    # the same passes over its padded window (bit for bit the same; integer
    # outputs, which need the data's range to be decided, keep the N-D path).
    separable = _ndfilters.separable_plan(x.dtype, w, result_dtype, tuple(range(nd)),
                                          origins, mode, cval)
    if separable is not None:
        work = separable.work
    # Bitwise equality with the whole-array call: use its 'direct' kernel when it
    # would; where it would use FFT, let each block choose (tolerance only).
    method = "direct" if _choose_method(whole, w.shape) == "direct" else "auto"
    plans = []
    for n, chunks, k, (left, right) in zip(x.shape, x.chunks, w.shape, pads):
        src = _source_map(n, left, right, np_mode)
        starts = np.concatenate([[0], np.cumsum(chunks)])
        windows = [(int(a), int(b) + k - 1) for a, b in zip(starts[:-1], starts[1:])]
        plans.append(_axis_plan(src, chunks, windows))
    kernel = functools.partial(_ndimage_kernel, method=method, result_dtype=result_dtype)
    operands = [ww]
    if separable is not None:
        kernel = functools.partial(_ndfilters.correlate_valid_passes, plan=separable,
                                   out_dtype=result_dtype)
        operands = []
        method = "separable"
    fill = np.asarray(cval).astype(work) if np_mode == "constant" else None
    token = tokenize(x, ww, mode, cval, pads, method, str(result_dtype), threads, op)
    return _build(op, x, plans, x.chunks, result_dtype, kernel, work, fill, threads, operands,
                  token)


def correlate(x, weights, mode="reflect", cval=0.0, origin=0, *, threads=None):
    """Multidimensional correlation of a Dask array, as :func:`fastconv.ndimage.correlate`.

    Parameters
    ----------
    x : dask.array.Array, zarr.Array, str, os.PathLike or array_like, 1-D to 3-D
        Chunked any way (chunks smaller than the kernel's halo included); a
        Zarr array or the path of one is read with ``dask.array.from_zarr``
        (its chunks are kept), other array-likes are wrapped with
        ``dask.array.asarray``.
    weights : array_like
        Kernel with ``x.ndim`` dims (a NumPy array; it is embedded in the graph
        once).  Complex weights are conjugated, as in SciPy.
    mode : {'reflect', 'constant', 'nearest', 'mirror', 'wrap', 'grid-mirror', \
'grid-constant', 'grid-wrap'}, default 'reflect'
        Boundary mode, with :mod:`scipy.ndimage`'s meaning, applied at the
        edges of the whole array, never at chunk edges.
    cval : scalar, default 0.0
        Fill value for 'constant' / 'grid-constant'.
    origin : int or sequence of ints, default 0
        Kernel shift, ``-(k // 2) <= origin <= (k - 1) // 2``.
    threads : int, optional
        OpenMP threads per task; default: the rule in the module docstring.

    Returns
    -------
    dask.array.Array
        Lazy, with the chunks of ``x`` and the dtype SciPy gives (the input's;
        complex if the weights are).  ``.compute()`` equals
        ``fastconv.ndimage.correlate(x.compute(), weights, mode=mode, cval=cval,
        origin=origin)``.

    Raises
    ------
    ValueError, TypeError, RuntimeError
        As :func:`fastconv.ndimage.correlate`, raised when the graph is built.

    See Also
    --------
    convolve, fastconv.ndimage.correlate

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv.dask as fcd
    >>> x = da.random.random((64, 64, 64), chunks=16)
    >>> y = fcd.correlate(x, np.ones((5, 5, 5)) / 125, mode="wrap")
    >>> y.chunks == x.chunks
    True
    """
    return _filter("correlate", x, weights, mode, cval, origin, threads, flip=False)


def convolve(x, weights, mode="reflect", cval=0.0, origin=0, *, threads=None):
    """Multidimensional convolution of a Dask array, as :func:`fastconv.ndimage.convolve`.

    Parameters
    ----------
    x : dask.array.Array, zarr.Array, str, os.PathLike or array_like, 1-D to 3-D
        As in :func:`correlate`.
    weights : array_like
        Kernel with ``x.ndim`` dims; flipped, as convolution does.
    mode : str, default 'reflect'
        As in :func:`correlate`.
    cval : scalar, default 0.0
    origin : int or sequence of ints, default 0
    threads : int, optional
        OpenMP threads per task; default: the rule in the module docstring.

    Returns
    -------
    dask.array.Array
        Lazy, chunked as ``x``; computes to
        ``fastconv.ndimage.convolve(x.compute(), weights, ...)``.

    See Also
    --------
    correlate, fastconv.ndimage.convolve
    """
    return _filter("convolve", x, weights, mode, cval, origin, threads, flip=True)


# --------------------------------------------------------------------------
# The separable scipy.ndimage filters
# --------------------------------------------------------------------------

def _valid_pass_kernel(win, p, out_dtype, cval, double_work):
    return _pass_plans.valid_pass(win, p, out_dtype, cval, double_work,
                                  get_num_threads())


def _exact_running_sum(dtype, cval, mode):
    """Whether a running sum over data of ``dtype`` is exact in float64, so that
    restarting it at a block's first row changes nothing."""
    if dtype.kind not in "biu" or dtype.itemsize > 4:
        return False
    if SCIPY_MODES[mode] == "constant":
        c = float(np.real(cval))
        return c == round(c) and abs(c) < 2.0 ** 32
    return True


def _whole_lines(y, axis):
    """``y`` rechunked to one chunk along ``axis``, the other axes split so that a
    block holds about as many elements as the largest block of ``y``."""
    largest = max(1, int(np.prod([max(c) for c in y.chunks])))
    line = y.shape[axis]
    others = [a for a in range(y.ndim) if a != axis]
    budget = max(1, largest // max(1, line))
    chunks = {axis: -1}
    # split the other axes from the last one inward, keeping their chunks where they fit
    for a in reversed(others):
        size = max(1, min(y.shape[a], max(y.chunks[a]), budget))
        chunks[a] = size
        budget = max(1, budget // size)
    return y.rechunk(chunks)


def _pass_graph(op, y, p, plan, out_dtype, cval, threads):
    """One pass ``p`` of a chain over the Dask array ``y`` (real or complex), into
    ``out_dtype``, chunked as ``y``."""
    ax = p.axis
    chunks = y.chunks
    if p.running_sum and len(chunks[ax]) > 1 and \
            not _exact_running_sum(y.dtype, cval, p.mode):
        y = _whole_lines(y, ax)
    np_mode = SCIPY_MODES[p.mode]
    src = _source_map(y.shape[ax], p.before, p.after, np_mode)
    starts = np.concatenate([[0], np.cumsum(y.chunks[ax])])
    windows = [(int(a), int(b) + p.before + p.after) for a, b in zip(starts[:-1], starts[1:])]
    plans = [_axis_plan(src, c, windows) if a == ax else _passthrough_plan(c)
             for a, c in enumerate(y.chunks)]
    work = plan.work
    if y.dtype.kind == "c" and work.kind != "c":
        work = np.promote_types(work, np.complex64)
    fill = np.asarray(cval).astype(work) if np_mode == "constant" else None
    kernel = functools.partial(_valid_pass_kernel, p=p, out_dtype=out_dtype, cval=cval,
                               double_work=plan.double_work)
    token = tokenize(y, ax, p.weights, p.kind, p.origin, p.mode, cval, str(out_dtype),
                     plan.double_work, threads, op)
    out = _build(op, y, plans, y.chunks, out_dtype, kernel, work, fill, threads, [], token)
    return out.rechunk(chunks) if out.chunks != chunks else out


def _chain_graph(op, x, chain, plan, threads):
    if not chain:
        return x.astype(plan.out_dtype)          # ``out[...] = x``: an unsafe cast
    y = x
    for p in chain:
        y = _pass_graph(op, y, p, plan, plan.out_dtype, plan.cval, threads)
    return y


def _combine_block(*blocks, combine):
    first = np.array(blocks[0], copy=True)
    return _pass_plans.combine_terms(combine, first, *blocks[1:])


def _plan_graph(op, x, plan, threads):
    terms = [_chain_graph(op, x, chain, plan, threads) for chain in plan.terms]
    if plan.combine == "single":
        return terms[0]
    return da.map_blocks(_combine_block, *terms, combine=plan.combine, dtype=plan.out_dtype,
                         meta=np.empty((0,) * x.ndim, plan.out_dtype))


def _whole_block(block, function, args, kwargs, threads):
    return _limited(threads, functools.partial(function, **kwargs), block, *args)


def _check_output(output, op):
    if isinstance(output, np.ndarray) or (output is not None and
                                          not isinstance(output, (type, np.dtype, str))):
        raise TypeError(f"{op}: expected output to be None or a dtype (the result is a new "
                        f"Dask array), got {type(output).__name__}")


def _separable(op, x, args, kwargs, threads, output):
    """``fastconv.ndimage.<op>(x, *args, output=output, **kwargs)`` on a Dask array."""
    x = _as_dask(x, op)
    threads = _check_threads(threads, op)
    _check_output(output, op)
    in_memory = getattr(_ndimage, op)
    # Validate exactly as the in-memory call does (same errors), on a 1-cell input.
    in_memory(np.zeros((1,) * x.ndim, x.dtype), *args, output=output, **kwargs)
    builder = getattr(_pass_plans, op)
    complex_weights = op in ("correlate1d", "convolve1d") and np.iscomplexobj(args[0])
    if complex_weights:
        plan = None
        out_dtype = _ndfilters._output(output, np.empty(0, x.dtype), op,
                                       complex_output=True).dtype
    else:
        plan = builder(x.dtype, x.ndim, *args, output=output, **kwargs)
        out_dtype = plan.out_dtype
    if x.size == 0:
        return da.zeros(x.shape, dtype=out_dtype, chunks=x.chunks)
    if all(len(c) == 1 for c in x.chunks):
        # one block: the in-memory function itself
        whole = functools.partial(_whole_block, function=in_memory, args=args,
                                  kwargs=dict(kwargs, output=out_dtype), threads=threads)
        return x.map_blocks(whole, dtype=out_dtype, meta=np.empty((0,) * x.ndim, out_dtype))
    if complex_weights:
        return _complex_correlate1d(op, x, args, kwargs, out_dtype, threads)
    return _plan_graph(op, x, plan, threads)


def _complex_correlate1d(op, x, args, kwargs, out_dtype, threads):
    """``_ndfilters._complex_1d``: complex weights as four (or two) real passes."""
    weights = np.asarray(args[0])
    axis = kwargs.get("axis", -1)
    mode = kwargs.get("mode", "reflect")
    cval = kwargs.get("cval", 0.0)
    origin = kwargs.get("origin", 0)
    builder = getattr(_pass_plans, op)
    part = np.empty(0, out_dtype).real.dtype
    double_work = _ndfilters._double_work(x.dtype, out_dtype)

    def corr(a, w, cv, dtype):
        plan = builder(a.dtype, a.ndim, w, axis=axis, output=dtype, mode=mode, cval=cv,
                       origin=origin)
        plan = dataclasses.replace(plan, double_work=double_work)
        return _plan_graph(op, a, plan, threads)

    # correlate1d correlates with the conjugate weights; convolve1d with the
    # reversed weights, not conjugated (the builder reverses them)
    wr, wi = np.real(weights).astype(np.float64), np.imag(weights).astype(np.float64)
    if op == "correlate1d":
        wi = -wi
    cr, ci = float(np.real(cval)), float(np.imag(cval))
    xr = x.real if x.dtype.kind == "c" else x
    if x.dtype.kind == "c":
        xi = x.imag
        terms = [corr(xr, wr, cr, part), corr(xi, wi, ci, xi.dtype),
                 corr(xr, wi, cr, part), corr(xi, wr, ci, xi.dtype)]
    else:
        terms = [corr(xr, wr, cr, part), corr(xr, wi, cr, part)]
    return da.map_blocks(_complex_block, *terms, dtype=out_dtype,
                         meta=np.empty((0,) * x.ndim, out_dtype))


def _complex_block(*terms):
    out = np.empty(terms[0].shape, np.result_type(terms[0].dtype, np.complex64))
    if len(terms) == 2:
        out.real, out.imag = terms
    else:
        out.real = terms[0]
        out.real -= terms[1]
        out.imag = terms[2]
        out.imag += terms[3]
    return out


_SEPARABLE_DOC = """{summary}, on a Dask array: :func:`fastconv.ndimage.{name}`.

Parameters
----------
input : dask.array.Array, zarr.Array, str, os.PathLike or array_like
    Any number of dims, chunked any way (chunks smaller than the filter's
    halo included); a Zarr array or the path of one is read with
    ``dask.array.from_zarr`` (its chunks are kept), other array-likes are
    wrapped with ``dask.array.asarray``.
{params}output : dtype, optional
    The result's dtype (default: the input's, as SciPy); not an array.
mode, cval{extra}
    As :func:`fastconv.ndimage.{name}` (and ``scipy.ndimage.{name}``);
    the modes apply at the edges of the whole array, never at chunk edges.
threads : int, optional
    OpenMP threads per task; default: the rule in the module docstring.

Returns
-------
dask.array.Array
    Lazy, with the chunks of ``input``; ``.compute()`` equals
    ``fastconv.ndimage.{name}(input.compute(), ...)`` bit for bit (same
    dtype; float32 data into a float32 output is computed in float32, with
    the accuracy against SciPy stated there).

Raises
------
ValueError, TypeError, RuntimeError
    As :func:`fastconv.ndimage.{name}`, raised when the graph is built; a
    TypeError for an ndarray ``output``.

Examples
--------
>>> import numpy as np, dask.array as da, fastconv.dask as fcd
>>> x = da.random.random((32, 32, 32), chunks=(8, 16, 3))
>>> y = fcd.{name}({example})
>>> y.chunks == x.chunks
True
"""


def _separable_doc(func, summary, params, extra, example):
    func.__doc__ = _SEPARABLE_DOC.format(name=func.__name__, summary=summary, params=params,
                                         extra=extra, example=example)
    return func


def correlate1d(input, weights, axis=-1, output=None, mode="reflect", cval=0.0, origin=0, *,
                threads=None):
    return _separable("correlate1d", input, (weights,),
                      dict(axis=axis, mode=mode, cval=cval, origin=origin), threads, output)


def convolve1d(input, weights, axis=-1, output=None, mode="reflect", cval=0.0, origin=0, *,
               threads=None):
    return _separable("convolve1d", input, (weights,),
                      dict(axis=axis, mode=mode, cval=cval, origin=origin), threads, output)


def gaussian_filter1d(input, sigma, axis=-1, order=0, output=None, mode="reflect", cval=0.0,
                      truncate=4.0, *, radius=None, threads=None):
    return _separable("gaussian_filter1d", input, (sigma,),
                      dict(axis=axis, order=order, mode=mode, cval=cval, truncate=truncate,
                           radius=radius), threads, output)


def gaussian_filter(input, sigma, order=0, output=None, mode="reflect", cval=0.0,
                    truncate=4.0, *, radius=None, axes=None, threads=None):
    return _separable("gaussian_filter", input, (sigma,),
                      dict(order=order, mode=mode, cval=cval, truncate=truncate,
                           radius=radius, axes=axes), threads, output)


def uniform_filter1d(input, size, axis=-1, output=None, mode="reflect", cval=0.0, origin=0, *,
                     threads=None):
    return _separable("uniform_filter1d", input, (size,),
                      dict(axis=axis, mode=mode, cval=cval, origin=origin), threads, output)


def uniform_filter(input, size=3, output=None, mode="reflect", cval=0.0, origin=0, *,
                   axes=None, threads=None):
    return _separable("uniform_filter", input, (size,),
                      dict(mode=mode, cval=cval, origin=origin, axes=axes), threads, output)


def sobel(input, axis=-1, output=None, mode="reflect", cval=0.0, *, threads=None):
    return _separable("sobel", input, (), dict(axis=axis, mode=mode, cval=cval), threads,
                      output)


def prewitt(input, axis=-1, output=None, mode="reflect", cval=0.0, *, threads=None):
    return _separable("prewitt", input, (), dict(axis=axis, mode=mode, cval=cval), threads,
                      output)


def laplace(input, output=None, mode="reflect", cval=0.0, *, axes=None, threads=None):
    return _separable("laplace", input, (), dict(mode=mode, cval=cval, axes=axes), threads,
                      output)


def gaussian_laplace(input, sigma, output=None, mode="reflect", cval=0.0, *, axes=None,
                     threads=None, **kwargs):
    return _separable("gaussian_laplace", input, (sigma,),
                      dict(mode=mode, cval=cval, axes=axes, **kwargs), threads, output)


def gaussian_gradient_magnitude(input, sigma, output=None, mode="reflect", cval=0.0, *,
                                axes=None, threads=None, **kwargs):
    return _separable("gaussian_gradient_magnitude", input, (sigma,),
                      dict(mode=mode, cval=cval, axes=axes, **kwargs), threads, output)


_WEIGHTS = "weights : array_like, (k,)\n    Real or complex taps.\n"
_AXIS = "axis : int, default -1\n"
_SIGMA = "sigma : scalar or sequence of scalars\n"
_separable_doc(correlate1d, "1-D correlation along one axis", _WEIGHTS + _AXIS,
               ", origin", "x, [1, 2, 1], axis=0, mode='wrap'")
_separable_doc(convolve1d, "1-D convolution along one axis", _WEIGHTS + _AXIS, ", origin",
               "x, [1, 2, 1], axis=0, mode='wrap'")
_separable_doc(gaussian_filter1d, "1-D Gaussian filter (or derivative)",
               "sigma : scalar\n" + _AXIS + "order : int, default 0\n",
               ", truncate, radius", "x, 2.0, axis=1")
_separable_doc(gaussian_filter, "Multidimensional Gaussian filter (or derivatives)",
               _SIGMA + "order : int or sequence of ints, default 0\n",
               ", truncate, radius, axes", "x, 1.5, mode='nearest'")
_separable_doc(uniform_filter1d, "1-D running mean along one axis",
               "size : int\n" + _AXIS, ", origin", "x, 5, axis=0")
_separable_doc(uniform_filter, "Multidimensional box mean",
               "size : int or sequence of ints, default 3\n", ", origin, axes",
               "x, 5, mode='mirror'")
_separable_doc(sobel, "Sobel filter", _AXIS, "", "x, axis=0")
_separable_doc(prewitt, "Prewitt filter", _AXIS, "", "x, axis=2")
_separable_doc(laplace, "Laplace filter (second differences)", "", ", axes", "x")
_separable_doc(gaussian_laplace, "Laplace filter from Gaussian second derivatives", _SIGMA,
               ", axes, **kwargs (truncate, radius)", "x, 2.0")
_separable_doc(gaussian_gradient_magnitude, "Gradient magnitude from Gaussian derivatives",
               _SIGMA, ", axes, **kwargs (truncate, radius)", "x, 2.0")


# --------------------------------------------------------------------------
# torch.nn.functional semantics
# --------------------------------------------------------------------------



def _conv_kernel(win, weight, bias, nd, stride, dilation, groups, algorithm):
    conv = {1: _functional.conv1d, 2: _functional.conv2d, 3: _functional.conv3d}[nd]
    return conv(win, weight, bias, stride=stride, padding=0, dilation=dilation,
                groups=groups, algorithm=algorithm)


def _whole_array_choice(prob, nd, shape):
    """The family ``algorithm='auto'`` picks for the whole array in memory (shapes only)."""
    def as_5d(s):
        return tuple(s[:2]) + (1,) * (3 - nd) + tuple(s[2:])

    return _engine.choose("forward", as_5d(shape), as_5d(np.shape(prob.w)),
                          as_5d(prob.out_shape), prob.dtype, pad3(prob.stride, nd, 1),
                          dilation=pad3(prob.dilation, nd, 1),
                          groups=prob.groups).impl.family


def _output_chunks(chunks, out_len, stride, left, span):
    """Output chunks: a new block where the receptive field's centre enters an input block."""
    half = span // 2
    bounds = [0]
    start = 0
    for c in chunks[:-1]:
        start += c
        # first o with o * stride - left + half >= start
        o = -(-(start + left - half) // stride)
        bounds.append(min(max(o, bounds[-1]), out_len))
    bounds.append(out_len)
    sizes = [b - a for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    return tuple(sizes) or (out_len,)


def _conv(nd, x, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm,
          threads):
    op = f"conv{nd}d"
    x = _as_dask(x, op)
    threads = _check_threads(threads, op)
    w = np.asarray(weight)
    b = None if bias is None else np.asarray(bias)
    # Validate exactly as the in-memory call does, on a zero-copy stand-in for x.
    fake = np.broadcast_to(np.zeros((), dtype=x.dtype), x.shape)
    prob = parse_conv(op, nd, fake, w, b, stride, padding, dilation, groups, padding_mode)
    check_choice(algorithm, ("auto",) + _functional.ALGORITHMS, "algorithm", op)
    batched = prob.batched
    if not batched:
        x = x[None]
    x = x.rechunk({1: -1})                              # channels whole
    dtype = prob.dtype
    w = np.ascontiguousarray(w, dtype=dtype)
    b = None if b is None else np.ascontiguousarray(b, dtype=dtype)
    plans = [_passthrough_plan(x.chunks[0]), _passthrough_plan(x.chunks[1])]
    out_chunks = [x.chunks[0], (prob.out_shape[1],)]
    for n, chunks, k, (left, right), s, d, o_len in zip(
            x.shape[2:], x.chunks[2:], w.shape[2:], prob.pads, prob.stride, prob.dilation,
            prob.out_shape[2:]):
        span = d * (k - 1)
        ochunks = _output_chunks(chunks, o_len, s, left, span)
        starts = np.concatenate([[0], np.cumsum(ochunks)])
        windows = [(int(o0) * s, (int(o1) - 1) * s + span + 1)
                   for o0, o1 in zip(starts[:-1], starts[1:])]
        src = _source_map(n, left, right, TORCH_MODES[prob.padding_mode])
        plans.append(_axis_plan(src, chunks, windows))
        out_chunks.append(ochunks)
    if prob.out_shape[0] == 0 or x.size == 0:
        out = da.zeros(prob.out_shape, dtype=dtype,
                       chunks=tuple(out_chunks)) + (0 if b is None else b.reshape(
                           (-1,) + (1,) * nd))
        return out if batched else out[0]
    if algorithm == "auto" and _whole_array_choice(prob, nd, x.shape) == "direct":
        algorithm = "direct"           # as the in-memory call: bit for bit
    kernel = functools.partial(_conv_kernel, nd=nd, stride=prob.stride,
                               dilation=prob.dilation, groups=prob.groups, algorithm=algorithm)
    token = tokenize(x, w, b, prob.stride, prob.pads, prob.dilation, prob.groups,
                     prob.padding_mode, algorithm, threads, op)
    out = _build(op, x, plans, tuple(out_chunks), dtype, kernel, dtype, dtype.type(0), threads,
                 [w, b], token)
    return out if batched else out[0]


_CONV_DOC = """{nd}-D convolution of a Dask array, as :func:`fastconv.conv{nd}d`.

Deep-learning semantics (``torch.nn.functional.conv{nd}d``: cross-correlation,
PyTorch's padding modes, stride, dilation, groups).

Parameters
----------
x : dask.array.Array, zarr.Array, path or array_like, shape (N, C_in, {sp}) or (C_in, {sp})
    Chunked along the batch and spatial axes in any way (chunks smaller than
    the halo included); the channel axis is rechunked to one chunk.  A Zarr
    array or the path of one is read with ``dask.array.from_zarr``.
weight : array_like, shape (C_out, C_in / groups, {k})
    A NumPy array (embedded in the graph once).
bias : array_like, shape (C_out,), optional
stride, dilation : int or tuple of {nd} ints, default 1
padding : int, tuple of {nd} ints, 'valid' or 'same', default 0
groups : int, default 1
padding_mode : {{'zeros', 'reflect', 'replicate', 'circular'}}, default 'zeros'
    Applied at the edges of the whole array, never at chunk edges.
algorithm : {{'auto', 'direct', 'im2col', 'fft'}}, default 'auto'
    Passed to each block's :func:`fastconv.conv{nd}d` call.
threads : int, optional
    OpenMP threads per task; default: the rule in the module docstring.

Returns
-------
dask.array.Array, shape (N, C_out, {osp}) or (C_out, {osp})
    Lazy, with known chunks: the batch chunks of ``x``, one chunk of output
    channels, and per spatial axis about ``chunk / stride`` outputs per input
    chunk (a block starts where the receptive field's centre enters an input
    chunk).  dtype ``np.result_type(x, weight, bias)`` mapped as fastconv
    maps it.  ``.compute()`` equals ``fastconv.conv{nd}d(x.compute(), weight,
    bias, stride, padding, dilation, groups, padding_mode=padding_mode)``.

Raises
------
ValueError, TypeError
    As :func:`fastconv.conv{nd}d`, raised when the graph is built.

Examples
--------
>>> import numpy as np, dask.array as da, fastconv.dask as fcd
>>> x = da.ones((2, 3{shape}), chunks=(1, 3{chunks}))
>>> y = fcd.conv{nd}d(x, np.ones((4, 3{kernel})), stride=2, padding=1,
...                padding_mode="circular")
>>> y.shape
(2, 4{oshape})
"""

_NAMES = {1: ("L", "kL", "L_out"), 2: ("H, W", "kH, kW", "H_out, W_out"),
          3: ("D, H, W", "kD, kH, kW", "D_out, H_out, W_out")}


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", algorithm="auto", threads=None):
    return _conv(1, x, weight, bias, stride, padding, dilation, groups, padding_mode,
                 algorithm, threads)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", algorithm="auto", threads=None):
    return _conv(2, x, weight, bias, stride, padding, dilation, groups, padding_mode,
                 algorithm, threads)


def conv3d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", algorithm="auto", threads=None):
    return _conv(3, x, weight, bias, stride, padding, dilation, groups, padding_mode,
                 algorithm, threads)


for _nd, _f in ((1, conv1d), (2, conv2d), (3, conv3d)):
    _sp, _k, _osp = _NAMES[_nd]
    _f.__doc__ = _CONV_DOC.format(nd=_nd, sp=_sp, k=_k, osp=_osp, shape=", 16" * _nd,
                                  chunks=", 5" * _nd, kernel=", 3" * _nd, oshape=", 8" * _nd)
del _nd, _f, _sp, _k, _osp
