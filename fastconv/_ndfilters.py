"""SciPy's separable ndimage filters on fastconv's 1-D pass kernel.

This module does what SciPy's ``_filters.py`` does in Python (argument
normalisation, output allocation, Gaussian weights, the order of the passes
and the dtype of the intermediates) and hands every 1-D pass to
``src/_separable.pyx``, which filters blocks of lines in parallel.

The layout of each pass and its block shape are chosen by the kernel
registry (``_dispatch.PASS``), from a :class:`~fastconv._dispatch.PassProblem`:
the array's shape around the filtered axis, the kernel length and the work
dtype only, so results never depend on the thread count.

Precision
---------
float32 data (and complex64) with a float32 (complex64) output is computed in
float32; float64 data, and anything into a float output, in float64, by the
same operations in the same order as SciPy's C code (float64 results agree
to the last bit or so).  8- and 16-bit integer data into an integer output
run in float32 where that is provably exact (``fastconv/_exact32.py``): the
cells whose float32 sum lies within a rigorous error bound of an integer
(the truncation boundaries) are recomputed in float64 by SciPy's sequence of
operations, and box means sum exactly; so integer results are SciPy's
exactly on every route.  Multi-axis filters keep SciPy's intermediate in the
output dtype, so an integer output truncates after every pass, as SciPy's
does.

Memory
------
No padded copy of the input: boundary rows are read through the mode's index
rule into per-thread buffers of about 0.2 MB (``(rows + taps) x block`` of the
work type, plus the output rows).  A multi-axis filter works in place in its
output after the first pass.  Filters that add several terms (``laplace``,
``gaussian_laplace``, ``gaussian_gradient_magnitude``) compute each extra term
slab by slab (at most :data:`SLAB_BYTES` at a time).  Peak extra memory of a
call is therefore its output plus O(slab).  An input whose axes cannot be
merged into (outer, line, inner) strides (rare: some views of views) is first
copied to C order.
"""
import functools
import math
import numbers
import operator
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from . import _dispatch, _exact32
from ._kernels import separable as _kernel
from ._threads import resolve_workers

# ----------------------------------------------------------------------- codes

#: Element types the kernel reads and writes (src/_separable.pyx, T_*); bool
#: is read and written as its byte, as SciPy's C casts do.
_DTYPE_CODES = {np.dtype(t): c for t, c in (
    (np.bool_, 0), (np.uint8, 0), (np.int8, 1), (np.uint16, 2), (np.int16, 3),
    (np.uint32, 4), (np.int32, 5), (np.uint64, 6), (np.int64, 7),
    (np.float32, 8), (np.float64, 9))}

#: SciPy's boundary modes (filters treat the grid- variants as their plain ones).
MODES = ("reflect", "constant", "nearest", "mirror", "wrap",
         "grid-constant", "grid-mirror", "grid-wrap")
_MODE_CODES = {"nearest": 0, "wrap": 1, "grid-wrap": 1, "reflect": 2, "grid-mirror": 2,
               "mirror": 3, "constant": 4, "grid-constant": 4}

_CORRELATE, _SYMMETRIC, _ANTISYMMETRIC, _UNIFORM, _BOX = 0, 1, 2, 3, 4
#: Longest box summed directly (``_BOX``) along the contiguous axis in float32:
#: k adds per output, against a running sum's two plus a transposition into
#: lanes; the float32 sum of k values errs by at most (k - 1) 2**-24 of their
#: largest magnitude (well inside the documented 1e-5).
_BOX_MAX = 32
_DBL_EPSILON = float(np.finfo(np.float64).eps)

#: Bytes of one slab of an extra term (laplace & co.).
SLAB_BYTES = 1 << 23
#: A thread gets at least this many multiply-adds (~0.1 ms), as in _engine.
_MIN_WORK_PER_THREAD = 1 << 20


class ArgumentError(ValueError, RuntimeError):
    """A bad argument value where SciPy raises RuntimeError.

    Both a ValueError (fastconv's contract) and a RuntimeError (so that code
    written against SciPy, and SciPy's own tests, still catch it).
    """


def _merge(shape, steps):
    """(count, step) of axes that form one arithmetic sequence, else None."""
    dims = [(n, s) for n, s in zip(shape, steps) if n != 1]
    if not dims:
        return 1, 0
    for (n0, s0), (n1, s1) in zip(dims, dims[1:]):
        if s0 != s1 * n1:
            return None
    return math.prod(n for n, _ in dims), dims[-1][1]


def _line_steps(a, axis):
    """(outer step, line step, inner step) of ``a`` in elements, or None."""
    if a.flags.c_contiguous:            # the common case, without the general merge
        inner = math.prod(a.shape[axis + 1:])
        return a.shape[axis] * inner, inner, 1
    if any(s % a.itemsize for s in a.strides):
        return None
    steps = [s // a.itemsize for s in a.strides]
    before = _merge(a.shape[:axis], steps[:axis])
    after = _merge(a.shape[axis + 1:], steps[axis + 1:])
    if before is None or after is None:
        return None
    return before[1], steps[axis], after[1]


def _pass(src, dst, axis, kind, weights, origin, mode, cval, double_work, workers, l0=0):
    """One 1-D pass: dst = filter(src) along ``axis``, output rows [l0, l0 + dst rows).

    ``dst`` may be ``src`` itself; any other overlap is resolved by a copy.
    """
    if dst.size == 0:
        return dst
    if dst is not src and np.may_share_memory(src, dst):
        src = src.copy()
    src_steps = _line_steps(src, axis)
    if src_steps is None:
        src = np.ascontiguousarray(src)
        src_steps = _line_steps(src, axis)
    target = dst
    dst_steps = _line_steps(dst, axis)
    if dst_steps is None:
        dst = np.empty(dst.shape, dst.dtype)
        dst_steps = _line_steps(dst, axis)
    if src_steps is None or dst_steps is None:          # pragma: no cover - defensive
        raise RuntimeError("fastconv: could not describe the arrays as lines")
    weights = np.ascontiguousarray(weights, np.float64)
    k = len(weights)
    inner = math.prod(dst.shape[axis + 1:])
    outer = math.prod(dst.shape[:axis])
    # integer data: float32 arithmetic with the doubtful cells redone in float64
    # gives SciPy's integers exactly; box means of integers are exact in float32
    # (see fastconv/_exact32.py)
    bounds = None
    if double_work and kind == _UNIFORM:
        if _exact32.box_float32(src.dtype, dst.dtype, k, mode, cval):
            bounds = (0.0, 0.0)
    elif double_work:
        bounds = _exact32.checked_float32(src.dtype, dst.dtype, weights, kind, mode, cval)
        if bounds is None and src.size >= _exact32.RANGE_MIN_CELLS and \
                _exact32.data_range_may_help(src.dtype, dst.dtype, weights, kind, mode, cval):
            # mixed-sign weights on, say, 12-bit data in uint16: the data's own
            # range may give a small enough bound; a sample says whether it is
            # worth reading the data for it
            guess = _exact32.checked_float32(src.dtype, dst.dtype, weights, kind, mode, cval,
                                             _exact32.sampled_range(src))
            if guess is not None and _exact32.worth_it(src, guess, weights, kind):
                bounds = _exact32.checked_float32(src.dtype, dst.dtype, weights, kind, mode,
                                                  cval, _exact32.data_range(src))
        if bounds is not None and not _exact32.worth_it(src, bounds, weights, kind):
            bounds = None
    if bounds is not None:
        double_work = False
    if kind == _UNIFORM and axis == dst.ndim - 1 and not double_work and k <= _BOX_MAX:
        # along the last axis: each output sums its own window in float32 (no
        # transposition into lanes for a running sum; no drift).  Chosen by the
        # axis, not by the extents after it, so that a chunk (fastconv.dask)
        # gets the arithmetic of the whole array.
        kind = _BOX
    work = np.dtype(np.float64 if double_work else np.float32)
    in_place = src.ctypes.data == dst.ctypes.data
    p = _dispatch.PassProblem(outer, dst.shape[axis], inner, k, work, kind == _UNIFORM)
    rows = dst.shape[axis]
    if inner > 1:
        s_steps, d_steps = src_steps, dst_steps
    else:                 # one line per outer index: the lines run along 'outer'
        s_steps = (0, src_steps[1], src_steps[0])
        d_steps = (0, dst_steps[1], dst_steps[0])

    def call(layout, block, segment, nt):
        grid = (outer, inner, block) if inner > 1 else (1, outer, block)
        # in place, a job must read all of its rows before it writes: whole lines
        _kernel.filter_pass(src, dst, _DTYPE_CODES[src.dtype], _DTYPE_CODES[dst.dtype],
                            double_work, grid, rows if in_place else segment, layout,
                            s_steps, d_steps, src.shape[axis], l0, rows, kind, weights,
                            k // 2 + origin, _MODE_CODES[mode], cval, nt,
                            checked=bounds is not None, err_rel=bounds[0] if bounds else 0.0,
                            err_abs=bounds[1] if bounds else 0.0)

    nt = max(1, min(workers, dst.size * k // _MIN_WORK_PER_THREAD))
    _dispatch.run_pass(p, call, nt)
    if target is not dst:
        target[...] = dst
    return target


def _kind_of(weights):
    """SciPy's test for (anti)symmetric weights (NI_Correlate1D), in float64."""
    w = np.ascontiguousarray(weights, np.float64)
    return _kind_of_bytes(w.tobytes(), len(w))


@functools.lru_cache(maxsize=256)
def _kind_of_bytes(weight_bytes, k):
    weights = np.frombuffer(weight_bytes, np.float64, k)
    if k % 2 == 0:
        return _CORRELATE
    c = k // 2
    left, right = weights[c - 1::-1] if c else weights[:0], weights[c + 1:]
    if np.all(np.abs(right - left) <= _DBL_EPSILON):
        return _SYMMETRIC
    if np.all(np.abs(right + left) <= _DBL_EPSILON):
        return _ANTISYMMETRIC
    return _CORRELATE


# ----------------------------------------------------------------------- arguments

def _input(input, op):
    """``np.asarray(input)`` with a dtype SciPy's filters accept."""
    try:
        x = np.asarray(input)
    except Exception as exc:
        raise TypeError(f"{op}: input must be array-like, got {type(input).__name__}: {exc}") \
            from exc
    if x.dtype.kind == "c":
        if x.dtype not in (np.complex64, np.complex128):
            raise ArgumentError(f"{op}: input dtype {x.dtype} is not supported "
                                "(complex64 and complex128 are)")
        return x
    if x.dtype not in _DTYPE_CODES:
        if x.dtype.kind in "biuf":      # float16, longdouble: SciPy raises RuntimeError too
            raise ArgumentError(f"{op}: input dtype {x.dtype} is not supported (as in SciPy); "
                                "convert it to float32 or float64")
        raise TypeError(f"{op}: input has dtype {x.dtype}, expected a numeric array")
    return x


def _output(output, x, op, complex_output=False, shape=None):
    """The output array, as SciPy's ``_ni_support._get_output`` makes it."""
    shape = x.shape if shape is None else shape
    if output is None:
        dtype = np.promote_types(x.dtype, np.complex64) if complex_output else x.dtype
        out = np.empty(shape, dtype)
    elif isinstance(output, (type, np.dtype)):
        dtype = np.dtype(output)
        if complex_output and dtype.kind != "c":
            warnings.warn("promoting specified output dtype to complex", stacklevel=3)
            dtype = np.promote_types(dtype, np.complex64)
        out = np.empty(shape, dtype)
    elif isinstance(output, str):
        try:
            dtype = np.dtype(output)
        except TypeError:
            raise TypeError(f"{op}: output {output!r} is not a dtype") from None
        if complex_output and dtype.kind != "c":
            raise ArgumentError(f"{op}: output must have complex dtype for complex input "
                                f"or weights, got {dtype}")
        if not issubclass(dtype.type, np.number):
            raise ArgumentError(f"{op}: output must have numeric dtype, got {dtype}")
        out = np.empty(shape, dtype)
    else:
        out = np.asarray(output)
        if out.shape != tuple(shape):
            raise ArgumentError(f"{op}: output shape not correct: expected {tuple(shape)}, "
                                f"got {out.shape}")
        if complex_output and out.dtype.kind != "c":
            raise ArgumentError(f"{op}: output must have complex dtype for complex input "
                                f"or weights, got {out.dtype}")
        if not out.flags.writeable:
            raise ValueError(f"{op}: output array is read-only")
    if out.dtype.kind == "c":
        if out.dtype not in (np.complex64, np.complex128):
            raise ArgumentError(f"{op}: output dtype {out.dtype} is not supported")
        if x.dtype.kind != "c" and not complex_output:
            raise ArgumentError(f"{op}: output dtype {out.dtype} is not supported for real "
                                "input and weights (as in SciPy)")
    elif out.dtype not in _DTYPE_CODES:
        raise ArgumentError(f"{op}: output dtype {out.dtype} is not supported (as in SciPy); "
                            "use float32 or float64")
    return out


def _axis(axis, ndim, op):
    try:
        a = operator.index(axis)
    except TypeError:
        raise TypeError(f"{op}: axis must be an int, got {axis!r}") from None
    if not -ndim <= a < ndim:
        raise np.exceptions.AxisError(a, ndim, msg_prefix=f"{op}: axis")
    return a % ndim


def _axes(axes, ndim, op):
    """SciPy's ``_check_axes``: None, an int or an iterable of distinct ints."""
    if axes is None:
        return tuple(range(ndim))
    if np.isscalar(axes):
        try:
            axes = (operator.index(axes),)
        except TypeError:
            raise TypeError(f"{op}: axes: {axes!r} cannot be interpreted as an integer") from None
    elif isinstance(axes, Iterable):
        values = []
        for ax in axes:
            try:
                ax = operator.index(ax)
            except TypeError:
                raise TypeError(f"{op}: axes: {ax!r} cannot be interpreted as an integer") \
                    from None
            values.append(ax)
        axes = tuple(values)
    else:
        raise ValueError(f"{op}: axes must be an integer, iterable of integers, or None; "
                         f"got {axes!r}")
    for ax in axes:
        if not -ndim <= ax < ndim:
            raise ValueError(f"{op}: axes: specified axis: {ax} is out of range for an "
                             f"input of {ndim} dims")
    axes = tuple(ax % ndim for ax in axes)
    if len(set(axes)) != len(axes):
        raise ValueError(f"{op}: axes must be unique, got {axes}")
    return axes


def _sequence(value, rank, name, op):
    """SciPy's ``_normalize_sequence``: a scalar repeated, or exactly ``rank`` values."""
    if not isinstance(value, str) and np.iterable(value):
        values = list(value)
        if len(values) != rank:
            raise ArgumentError(f"{op}: {name}: sequence argument must have length equal to "
                                f"input rank ({rank} filtered axes), got {len(values)} values")
        return values
    return [value] * rank


def _mode(mode, op):
    if not isinstance(mode, str) or mode not in _MODE_CODES:
        raise ArgumentError(f"{op}: boundary mode not supported: expected mode to be one of "
                            f"{', '.join(map(repr, MODES))}, got {mode!r}")
    return mode


def _cval(cval, op):
    if np.iscomplexobj(cval):
        raise ValueError(f"{op}: Cannot provide a complex-valued cval when the input is real "
                         f"(got cval={cval!r})")
    try:
        return float(cval)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: expected cval to be a real number, got {cval!r}") from None


def _origin_ok(origin, k):
    return -(k // 2) <= origin <= (k - 1) // 2


def _int_origin(origin, op):
    try:
        return operator.index(origin)
    except TypeError:
        raise TypeError(f"{op}: origin must be an int, got {origin!r}") from None


def _double_work(x_dtype, out_dtype):
    """float32 arithmetic only for float32 (complex64) data into a float32 output."""
    single = (np.dtype(np.float32), np.dtype(np.complex64))
    return not (x_dtype in single and out_dtype in single)


def _parts(a):
    """(real part, imaginary part or None) views of an array."""
    if a.dtype.kind == "c":
        return a.real, a.imag
    return a, None


# ----------------------------------------------------------------------- docstrings

# Parameter and note texts shared by the public filters (written once, filled
# into each docstring by _docfill).
_DOCS = {
    "input": """input : array_like
        Any number of dims (1-D to 3-D volumes, or N-D through ``axis`` /
        ``axes``), any strides.  bool, (u)int8 to (u)int64, float32, float64,
        complex64, complex128; float16 is refused, as SciPy refuses it.""",
    "output": """output : ndarray or dtype, optional
        The array to fill (any strides; it may be ``input`` itself) or the
        result's dtype; default the input's.  Integer outputs truncate toward
        zero, and wrap when out of range, exactly as SciPy's C casts do.""",
    "mode": """mode : {'reflect', 'constant', 'nearest', 'mirror', 'wrap', 'grid-constant', \
'grid-mirror', 'grid-wrap'}, default 'reflect'
        SciPy's boundary modes (the grid- ones equal their plain versions
        for filters), read through an index rule: no padded copy.""",
    "mode_multiple": """mode : str or sequence of str, default 'reflect'
        A boundary mode (see :func:`correlate1d`), or one per filtered axis.""",
    "cval": """cval : scalar, default 0.0
        The value outside the input for 'constant' modes.""",
    "origin": """origin : int, default 0
        Shifts the filter: ``-(k // 2) <= origin <= (k - 1) // 2``.""",
    "origin_multiple": """origin : int or sequence of ints, default 0
        Shifts the filter, per filtered axis.""",
    "axis": """axis : int, default -1
        The axis to filter along.""",
    "axes": """axes : int or sequence of ints, optional
        The axes to filter along (default all); sequences given for the
        other arguments then have one entry per axis in ``axes``.""",
    "workers": """workers : int, optional
        Threads: None = fastconv's setting (:func:`fastconv.set_num_threads`,
        ``OMP_NUM_THREADS``), n > 0 = n threads, -1 = every core, -2 = all
        but one... (``scipy.fft``'s convention).  Results are bit-identical
        for any number.""",
    "returns": """Returns
    -------
    ndarray
        The input's shape; the output's dtype (see ``output``).""",
    "notes": """Precision: float32 (complex64) data into a float32 (complex64) output is
    computed in float32; SciPy computes in float64.  The difference is at
    most ``1e-5 * max|input| * G``, G the largest factor by which the filter
    scales a value (1 for Gaussian and box means, sum |w| for a correlation;
    that is 1e-5 of the largest possible output), for kernels up to 101 taps
    (tests/test_separable.py).  float64 data, and any data into a float
    output, are computed in float64 by SciPy's own sequence of operations,
    so float64 results are SciPy's.  8- and 16-bit integers into an integer
    output run in float32 where it is provably exact: cells within the
    rounding error bound of a truncation boundary are redone in float64
    (fastconv/_exact32.py); integer results are SciPy's exactly.

    Memory: no padded or cast copy of the input; boundary cells are read
    through the mode's index rule into per-thread buffers of about 0.3 MB.
    Peak extra memory is the output array (plus, for filters that add
    terms, one slab of at most 8 MB).""",
}


def _docfill(func):
    func.__doc__ = func.__doc__.format(**_DOCS)
    return func


# ----------------------------------------------------------------------- 1-D

def _correlate_real(x, out, axis, weights, origin, mode, cval, double_work, workers):
    """Real data, real float64 weights: the pass itself (checked arguments)."""
    return _pass(x, out, axis, _kind_of(weights), weights, origin, mode, cval, double_work,
                 workers)


@_docfill
def correlate1d(input, weights, axis=-1, output=None, mode="reflect", cval=0.0, origin=0,
                *, workers=None):
    """1-D correlation along one axis, as ``scipy.ndimage.correlate1d``.

    ``output[..., i, ...] = sum_t weights[t] * input[..., i + t - len(weights) // 2 - origin, ...]``
    along ``axis``; complex weights are conjugated (as ``np.correlate``).

    Parameters
    ----------
    {input}
    weights : array_like, (k,)
        The taps (real or complex).
    {axis}
    {output}
    {mode}
    {cval}
    {origin}
    {workers}

    {returns}

    Notes
    -----
    {notes}

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.ndimage import correlate1d
    >>> correlate1d(np.array([2, 8, 0, 4, 1, 9, 9, 0]), [1, 3])
    array([ 8, 26,  8, 12,  7, 28, 36,  9])
    """
    return _correlate1d(input, weights, axis, output, mode, cval, origin, workers,
                        "correlate1d")


def _correlate1d(input, weights, axis, output, mode, cval, origin, workers, op):
    x = _input(input, op)
    w = np.asarray(weights)
    nt = resolve_workers(workers, op)
    if w.dtype.kind not in "biufc":
        raise TypeError(f"{op}: weights has dtype {w.dtype}, expected numbers")
    if w.ndim != 1 or w.shape[0] < 1:
        raise ArgumentError(f"{op}: no filter weights given: expected a non-empty 1-D "
                            f"weights array, got shape {w.shape}")
    axis = _axis(axis, x.ndim, op)
    origin = _int_origin(origin, op)
    if not _origin_ok(origin, len(w)):
        raise ValueError(f"{op}: Invalid origin; origin must satisfy -(len(weights) // 2) <= "
                         f"origin <= (len(weights)-1) // 2, got origin={origin} for "
                         f"{len(w)} weights")
    mode = _mode(mode, op)
    if x.dtype.kind == "c" or w.dtype.kind == "c":
        out = _output(output, x, op, complex_output=True)
        if w.dtype.kind == "c":
            w = w.conj().astype(np.complex128)
        return _complex_1d(x, w, out, axis, origin, mode, cval, nt, op)
    cval = _cval(cval, op)
    out = _output(output, x, op)
    w = np.asarray(w, np.float64)
    return _correlate_real(x, out, axis, w, origin, mode, cval,
                           _double_work(x.dtype, out.dtype), nt)


def _complex_1d(x, w, out, axis, origin, mode, cval, nt, op):
    """SciPy's ``_complex_via_real_components`` for one 1-D correlation."""
    double_work = _double_work(x.dtype, out.dtype)
    xr, xi = _parts(x)
    wr, wi = (w.real.astype(np.float64), w.imag.astype(np.float64)) if w.dtype.kind == "c" \
        else (w.astype(np.float64), None)
    cr, ci = float(np.real(cval)), float(np.imag(cval))
    if xi is None and np.iscomplexobj(cval) and ci != 0:
        raise ValueError(f"{op}: Cannot provide a complex-valued cval when the input is real "
                         f"(got cval={cval!r})")
    if xi is not None and wi is not None:
        _correlate_real(xr, out.real, axis, wr, origin, mode, cr, double_work, nt)
        tmp = np.empty(xi.shape, xi.dtype)
        out.real -= _correlate_real(xi, tmp, axis, wi, origin, mode, ci, double_work, nt)
        _correlate_real(xr, out.imag, axis, wi, origin, mode, cr, double_work, nt)
        out.imag += _correlate_real(xi, tmp, axis, wr, origin, mode, ci, double_work, nt)
    elif xi is not None:
        _correlate_real(xr, out.real, axis, wr, origin, mode, cr, double_work, nt)
        _correlate_real(xi, out.imag, axis, wr, origin, mode, ci, double_work, nt)
    else:
        _correlate_real(xr, out.real, axis, wr, origin, mode, cr, double_work, nt)
        _correlate_real(xr, out.imag, axis, wi, origin, mode, cr, double_work, nt)
    return out


@_docfill
def convolve1d(input, weights, axis=-1, output=None, mode="reflect", cval=0.0, origin=0,
               *, workers=None):
    """1-D convolution along one axis, as ``scipy.ndimage.convolve1d``.

    :func:`correlate1d` with the weights reversed and the origin mirrored.

    Parameters
    ----------
    {input}
    weights : array_like, (k,)
    {axis}
    {output}
    {mode}
    {cval}
    {origin}
    {workers}

    {returns}

    Notes
    -----
    {notes}
    """
    op = "convolve1d"
    w = np.asarray(weights)
    if w.ndim != 1 or w.shape[0] < 1:
        raise ArgumentError(f"{op}: no filter weights given: expected a non-empty 1-D "
                            f"weights array, got shape {w.shape}")
    w = w[::-1]
    origin = -_int_origin(origin, op)
    if not w.shape[0] & 1:
        origin -= 1
    if w.dtype.kind == "c":
        w = w.conj()            # undoes correlate1d's conjugation
    return _correlate1d(input, w, axis, output, mode, cval, origin, workers, op)


def gaussian_kernel1d(sigma, order, radius):
    """SciPy's 1-D Gaussian (derivative) kernel, computed by the same NumPy operations."""
    if order < 0:
        raise ValueError(f"order must be non-negative, got {order}")
    # sigma as given (a float32 sigma squares in float32, as in SciPy); typed keys
    try:
        hash(sigma)
    except TypeError:               # a 0-d array, say
        return _gaussian_kernel1d_uncached(sigma, int(order), int(radius))
    return _gaussian_kernel1d(sigma, int(order), int(radius)).copy()


@functools.lru_cache(maxsize=64, typed=True)
def _gaussian_kernel1d(sigma, order, radius):
    """Cached (a filter call asks once per axis, with the same sigmas): read-only."""
    k = _gaussian_kernel1d_uncached(sigma, order, radius)
    k.flags.writeable = False
    return k


def _gaussian_kernel1d_uncached(sigma, order, radius):
    if order < 0:
        raise ValueError(f"order must be non-negative, got {order}")
    exponent_range = np.arange(order + 1)
    sigma2 = sigma * sigma
    x = np.arange(-radius, radius + 1)
    phi_x = np.exp(-0.5 / sigma2 * x ** 2)
    phi_x = phi_x / phi_x.sum()
    if order == 0:
        return phi_x
    # f(x) = q(x) * phi(x); f'(x) = (q'(x) + q(x) * p'(x)) * phi(x), p'(x) = -x / sigma**2
    q = np.zeros(order + 1)
    q[0] = 1
    D = np.diag(exponent_range[1:], 1)
    P = np.diag(np.ones(order) / -sigma2, -1)
    Q_deriv = D + P
    for _ in range(order):
        q = Q_deriv.dot(q)
    q = (x[:, None] ** exponent_range).dot(q)
    return q * phi_x


def _gaussian_weights(sigma, order, truncate, radius, op):
    """Correlation weights of ``gaussian_filter1d`` (the kernel reversed)."""
    try:
        sd = float(sigma)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: sigma must be a real number, got {sigma!r}") from None
    lw = int(truncate * sd + 0.5)
    if radius is not None:
        lw = radius
    if not isinstance(lw, numbers.Integral) or lw < 0:
        raise ValueError(f"{op}: Radius must be a nonnegative integer, got radius={lw!r}")
    try:
        order = operator.index(order)
    except TypeError:
        raise TypeError(f"{op}: order must be an int, got {order!r}") from None
    if order < 0:
        raise ValueError(f"{op}: order must be non-negative, got {order}")
    return gaussian_kernel1d(sigma, order, lw)[::-1]


@_docfill
def gaussian_filter1d(input, sigma, axis=-1, order=0, output=None, mode="reflect", cval=0.0,
                      truncate=4.0, *, radius=None, workers=None):
    """1-D Gaussian filter (or its derivatives), as ``scipy.ndimage.gaussian_filter1d``.

    Parameters
    ----------
    {input}
    sigma : scalar
        Standard deviation of the Gaussian.
    {axis}
    order : int, default 0
        0: smoothing; 1, 2, 3: that derivative of the Gaussian.
    {output}
    {mode}
    {cval}
    truncate : float, default 4.0
        The kernel has ``2 * int(truncate * sigma + 0.5) + 1`` taps ...
    radius : int, optional
        ... or ``2 * radius + 1`` taps when given.
    {workers}

    {returns}

    Notes
    -----
    The weights are SciPy's, computed by the same NumPy operations.

    {notes}
    """
    op = "gaussian_filter1d"
    weights = _gaussian_weights(sigma, order, truncate, radius, op)
    return _correlate1d(input, weights, axis, output, mode, cval, 0, workers, op)


@_docfill
def uniform_filter1d(input, size, axis=-1, output=None, mode="reflect", cval=0.0, origin=0,
                     *, workers=None):
    """1-D running mean along one axis, as ``scipy.ndimage.uniform_filter1d``.

    A running sum (one addition and one subtraction per output, whatever
    ``size``), as SciPy's, accumulated in float64 even for float32 data,
    where a float32 running sum would drift along the line; except along the
    last axis for float32 data and ``size <= 32``, where each output sums its
    own window in float32 (no drift; within the float32 bound below).  8- and
    16-bit integers into an integer output sum exactly in float32 (sizes up
    to 255) and are divided as SciPy divides them.

    Parameters
    ----------
    {input}
    size : int
        Length of the window, >= 1.
    {axis}
    {output}
    {mode}
    {cval}
    {origin}
    {workers}

    {returns}

    Notes
    -----
    {notes}
    """
    op = "uniform_filter1d"
    x = _input(input, op)
    nt = resolve_workers(workers, op)
    axis = _axis(axis, x.ndim, op)
    try:
        size = operator.index(size)
    except TypeError:
        raise TypeError(f"{op}: size must be an int, got {size!r}") from None
    if size < 1:
        raise ArgumentError(f"{op}: incorrect filter size: expected size >= 1, got {size}")
    origin = _int_origin(origin, op)
    if size // 2 + origin < 0 or size // 2 + origin >= size:
        raise ValueError(f"{op}: invalid origin {origin} for size {size}: expected "
                         f"-(size // 2) <= origin <= (size - 1) // 2")
    mode = _mode(mode, op)
    complex_output = x.dtype.kind == "c"
    out = _output(output, x, op, complex_output=complex_output)
    _uniform_pass(x, out, axis, size, origin, mode, cval, nt, op)
    return out


def _uniform_pass(x, out, axis, size, origin, mode, cval, nt, op, double_work=None):
    """One running-mean pass; ``double_work`` from the filter's input (default
    ``x``'s), so that the later passes of an integer input into a float32
    output keep SciPy's float64 arithmetic."""
    if double_work is None:
        double_work = _double_work(x.dtype, out.dtype)
    ones = np.ones(size)
    if x.dtype.kind == "c":
        _pass(x.real, out.real, axis, _UNIFORM, ones, origin, mode, float(np.real(cval)),
              double_work, nt)
        _pass(x.imag, out.imag, axis, _UNIFORM, ones, origin, mode, float(np.imag(cval)),
              double_work, nt)
    else:
        _pass(x, out, axis, _UNIFORM, ones, origin, mode, _cval(cval, op), double_work, nt)


# ----------------------------------------------------------------------- N-D

@_docfill
def gaussian_filter(input, sigma, order=0, output=None, mode="reflect", cval=0.0,
                    truncate=4.0, *, radius=None, axes=None, workers=None):
    """Multidimensional Gaussian filter, as ``scipy.ndimage.gaussian_filter``.

    One 1-D pass per axis (in order, the first from ``input`` into the
    output, the next ones in place), so a sigma of 4 costs 3 x 33 taps per
    voxel instead of 33**3.  As in SciPy, the intermediate is kept in the
    output's dtype (an integer output truncates after every pass).

    Parameters
    ----------
    {input}
    sigma : scalar or sequence of scalars
        Standard deviation per axis; axes with sigma <= 1e-15 are skipped.
    order : int or sequence of ints, default 0
        Derivative order (0 to 3) per axis.
    {output}
    {mode_multiple}
    {cval}
    truncate : float, default 4.0
        Radius ``int(truncate * sigma + 0.5)`` per axis ...
    radius : int or sequence of ints, optional
        ... unless given.
    {axes}
    {workers}

    {returns}

    Notes
    -----
    {notes}

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.ndimage import gaussian_filter
    >>> gaussian_filter(np.arange(50, step=2).reshape((5, 5)), sigma=1)
    array([[ 4,  6,  8,  9, 11],
           [10, 12, 14, 15, 17],
           [20, 22, 24, 25, 27],
           [29, 31, 33, 34, 36],
           [35, 37, 39, 40, 42]])
    """
    op = "gaussian_filter"
    x = _input(input, op)
    nt = resolve_workers(workers, op)
    out = _output(output, x, op)
    passes = _gaussian_passes(x.ndim, sigma, order, mode, truncate, radius, axes, op)
    _run_passes(x, out, passes, cval, nt, op)
    return out


def _gaussian_passes(ndim, sigma, order, mode, truncate, radius, axes, op):
    """[(axis, weights, mode)] in SciPy's order, axes with sigma <= 1e-15 left out."""
    axes = _axes(axes, ndim, op)
    n = len(axes)
    orders = _sequence(order, n, "order", op)
    sigmas = _sequence(sigma, n, "sigma", op)
    modes = _sequence(mode, n, "mode", op)
    radii = _sequence(radius, n, "radius", op)
    passes = []
    for ax, s, o, m, r in zip(axes, sigmas, orders, modes, radii):
        if s > 1e-15:
            passes.append((ax, _gaussian_weights(s, o, truncate, r, op), _mode(m, op)))
    return passes


def _run_passes(x, out, passes, cval, nt, op, l0=0, double_work=None):
    """Apply 1-D correlations in order: x -> out, then out -> out in place.

    With ``l0`` the first pass produces rows [l0, l0 + out rows) of its axis
    only (a slab); the later passes must run along other axes.
    ``double_work`` (default from x's and out's dtypes) lets the rest of a
    filter started on another array keep that filter's arithmetic.
    """
    if not passes:
        if l0:
            raise RuntimeError("fastconv: a slab needs a first pass")   # pragma: no cover
        if out is not x:
            out[...] = x
        return out
    if double_work is None:
        double_work = _double_work(x.dtype, out.dtype)
    if x.dtype.kind == "c" and out.dtype.kind != "c":
        raise ArgumentError(f"{op}: output must have complex dtype for complex input, "
                            f"got {out.dtype}")
    xs, outs = _parts(x), _parts(out)
    cvals = (float(np.real(cval)), float(np.imag(cval))) if x.dtype.kind == "c" else \
        (_cval(cval, op), None)
    for part in range(2):
        src, dst = xs[part], outs[part]
        if src is None:
            continue
        for i, (ax, w, m) in enumerate(passes):
            _pass(src, dst, ax, _kind_of(np.asarray(w, np.float64)), w, 0, m, cvals[part],
                  double_work, nt, l0=l0 if i == 0 else 0)
            src = dst
    return out


@_docfill
def uniform_filter(input, size=3, output=None, mode="reflect", cval=0.0, origin=0, *,
                   axes=None, workers=None):
    """Multidimensional box mean, as ``scipy.ndimage.uniform_filter``.

    One running-sum pass (:func:`uniform_filter1d`) per axis with size > 1,
    the intermediate kept in the output's dtype, as SciPy does.

    Parameters
    ----------
    {input}
    size : int or sequence of ints, default 3
    {output}
    {mode_multiple}
    {cval}
    {origin_multiple}
    {axes}
    {workers}

    {returns}

    Notes
    -----
    {notes}
    """
    op = "uniform_filter"
    x = _input(input, op)
    nt = resolve_workers(workers, op)
    out = _output(output, x, op, complex_output=x.dtype.kind == "c")
    axes = _axes(axes, x.ndim, op)
    n = len(axes)
    sizes = _sequence(size, n, "size", op)
    origins = _sequence(origin, n, "origin", op)
    modes = _sequence(mode, n, "mode", op)
    todo = []
    for ax, s, o, m in zip(axes, sizes, origins, modes):
        if s > 1:
            try:
                s = int(s)
            except (TypeError, ValueError):
                raise TypeError(f"{op}: size must be ints, got {s!r}") from None
            o = _int_origin(o, op)
            if s // 2 + o < 0 or s // 2 + o >= s:
                raise ValueError(f"{op}: invalid origin {o} for size {s}: expected "
                                 f"-(size // 2) <= origin <= (size - 1) // 2")
            todo.append((ax, s, o, _mode(m, op)))
    if not todo:
        out[...] = x
        return out
    src = x
    double_work = _double_work(x.dtype, out.dtype)
    for ax, s, o, m in todo:
        _uniform_pass(src, out, ax, s, o, m, cval, nt, op, double_work)
        src = out
    return out


def _edge(input, axis, output, mode, cval, smooth, op, workers):
    """sobel / prewitt: [-1, 0, 1] along ``axis``, ``smooth`` along the others."""
    x = _input(input, op)
    nt = resolve_workers(workers, op)
    axis = _axis(axis, x.ndim, op)
    out = _output(output, x, op)
    modes = _sequence(mode, x.ndim, "mode", op)
    passes = [(axis, np.array([-1.0, 0.0, 1.0]), _mode(modes[axis], op))]
    passes += [(ii, smooth, _mode(modes[ii], op)) for ii in range(x.ndim) if ii != axis]
    return _run_passes(x, out, passes, cval, nt, op)


@_docfill
def sobel(input, axis=-1, output=None, mode="reflect", cval=0.0, *, workers=None):
    """Sobel filter, as ``scipy.ndimage.sobel``.

    ``[-1, 0, 1]`` along ``axis``, then ``[1, 2, 1]`` along every other axis,
    in place in the output.

    Parameters
    ----------
    {input}
    {axis}
    {output}
    {mode_multiple}
        (One per axis of the input.)
    {cval}
    {workers}

    {returns}

    Notes
    -----
    {notes}
    """
    return _edge(input, axis, output, mode, cval, np.array([1.0, 2.0, 1.0]), "sobel", workers)


@_docfill
def prewitt(input, axis=-1, output=None, mode="reflect", cval=0.0, *, workers=None):
    """Prewitt filter, as ``scipy.ndimage.prewitt``.

    ``[-1, 0, 1]`` along ``axis``, then ``[1, 1, 1]`` along every other axis.

    Parameters
    ----------
    {input}
    {axis}
    {output}
    {mode_multiple}
        (One per axis of the input.)
    {cval}
    {workers}

    {returns}

    Notes
    -----
    {notes}
    """
    return _edge(input, axis, output, mode, cval, np.array([1.0, 1.0, 1.0]), "prewitt",
                 workers)


def _sum_of_terms(x, out, terms, cval, nt, op, square):
    """out = sum over terms (each a list of passes), as SciPy's generic_laplace /
    generic_gradient_magnitude: the first term in ``out``, each further term
    computed slab by slab in the output dtype and added (squared first when
    ``square``), with NumPy's casting, so that integer outputs wrap as SciPy's.

    Further terms that begin with the same pass (gaussian_laplace and
    gaussian_gradient_magnitude smooth along axis 0 first in all but the first
    term) share it: per slab, the pass runs once and each term finishes on a
    copy.  Their passes are the same operations, so the bits are the same;
    slabs are then half as large, so memory stays the output plus one slab."""
    double_work = _double_work(x.dtype, out.dtype)
    _run_passes(x, out, terms[0], cval, nt, op)
    if square:
        np.multiply(out, out, out)
    for group in _groups_by_first_pass(terms[1:]):
        if not group[0]:
            tmp = np.empty(out.shape, out.dtype)
            tmp[...] = x
            _accumulate(out, tmp, square)
            continue
        ax = group[0][0][0]
        plane = out.size // max(1, out.shape[ax]) * out.itemsize
        # a shared first pass keeps a slab and a copy: each half of what one
        # term's slab would take, so the peak stays the output plus one slab
        rows = max(1, min(SLAB_BYTES, out.nbytes) // max(1, plane * min(2, len(group))))
        for l0 in range(0, out.shape[ax], rows):
            n = min(rows, out.shape[ax] - l0)
            shape = out.shape[:ax] + (n,) + out.shape[ax + 1:]
            index = (slice(None),) * ax + (slice(l0, l0 + n),)
            head = np.empty(shape, out.dtype)
            _run_passes(x, head, group[0][:1], cval, nt, op, l0=l0, double_work=double_work)
            for i, passes in enumerate(group):
                tmp = head if i == len(group) - 1 else head.copy()
                _run_passes(tmp, tmp, passes[1:], cval, nt, op, double_work=double_work)
                _accumulate(out[index], tmp, square)
                del tmp
            del head                # one slab at a time
    if square:
        np.sqrt(out, out, casting="unsafe")
    return out


def _first_pass_key(passes):
    if not passes:
        return None
    ax, w, m = passes[0]
    return ax, np.asarray(w, np.float64).tobytes(), m


def _groups_by_first_pass(terms):
    """Consecutive terms with the same first pass (axis, weights, mode), grouped."""
    groups = []
    for passes in terms:
        key = _first_pass_key(passes)
        if groups and key is not None and _first_pass_key(groups[-1][0]) == key:
            groups[-1].append(passes)
        else:
            groups.append([passes])
    return groups


def _accumulate(dst, tmp, square):
    if square:
        np.multiply(tmp, tmp, tmp)
    dst += tmp


@_docfill
def laplace(input, output=None, mode="reflect", cval=0.0, *, axes=None, workers=None):
    """N-D Laplace filter from second differences, as ``scipy.ndimage.laplace``.

    The sum over ``axes`` of ``[1, -2, 1]`` along each: the first term in the
    output, each further one computed slab by slab (output dtype, NumPy's
    casting, as SciPy) and added.

    Parameters
    ----------
    {input}
    {output}
    {mode_multiple}
    {cval}
    {axes}
    {workers}

    {returns}

    Notes
    -----
    {notes}
    """
    op = "laplace"
    x = _input(input, op)
    nt = resolve_workers(workers, op)
    out = _output(output, x, op)
    axes = _axes(axes, x.ndim, op)
    if not axes:
        out[...] = x
        return out
    modes = [_mode(m, op) for m in _sequence(mode, len(axes), "mode", op)]
    terms = [[(ax, np.array([1.0, -2.0, 1.0]), m)] for ax, m in zip(axes, modes)]
    return _sum_of_terms(x, out, terms, cval, nt, op, square=False)


def _gaussian_terms(x, sigma, mode, axes, derivative, kwargs, op, expand_sigma):
    """One gaussian_filter per filtered axis, with that axis's derivative order.

    ``expand_sigma``: sigma is per filtered axis and 0 on the others
    (gaussian_laplace); otherwise it is passed on as given, so a scalar sigma
    smooths every axis of the input (SciPy's gaussian_gradient_magnitude).
    """
    axes = _axes(axes, x.ndim, op)
    if expand_sigma:
        sigmas = _sequence(sigma, len(axes), "sigma", op)
        if len(axes) < x.ndim:          # sigma 0 on the axes not filtered
            full = [0] * x.ndim
            for s, ax in zip(sigmas, axes):
                full[ax] = s
            sigmas = full
    else:
        sigmas = sigma
    modes = _sequence(mode, len(axes), "mode", op)
    unknown = set(kwargs) - {"truncate", "radius"}
    if unknown:
        raise TypeError(f"{op}: unexpected keyword argument(s) {sorted(unknown)} "
                        "(gaussian_filter takes truncate and radius)")
    truncate = kwargs.get("truncate", 4.0)
    radius = kwargs.get("radius", None)
    terms = []
    for ax, m in zip(axes, modes):
        order = [0] * x.ndim
        order[ax] = derivative
        terms.append(_gaussian_passes(x.ndim, sigmas, order, m, truncate, radius, None, op))
    return axes, terms


@_docfill
def gaussian_laplace(input, sigma, output=None, mode="reflect", cval=0.0, *, axes=None,
                     workers=None, **kwargs):
    """Laplace filter from Gaussian second derivatives, as ``scipy.ndimage.gaussian_laplace``.

    The sum over ``axes`` of a Gaussian filter with order 2 along that axis
    (sigma 0, i.e. no smoothing, along axes not in ``axes``); the first term
    in the output, each further one slab by slab.

    Parameters
    ----------
    {input}
    sigma : scalar or sequence of scalars
        Per filtered axis.
    {output}
    {mode_multiple}
    {cval}
    {axes}
    {workers}
    **kwargs
        ``truncate``, ``radius``: passed to the Gaussian filters.

    {returns}

    Notes
    -----
    {notes}
    """
    op = "gaussian_laplace"
    x = _input(input, op)
    nt = resolve_workers(workers, op)
    axes, terms = _gaussian_terms(x, sigma, mode, axes, 2, kwargs, op, expand_sigma=True)
    out = _output(output, x, op)
    if not terms:
        out[...] = x
        return out
    return _sum_of_terms(x, out, terms, cval, nt, op, square=False)


@_docfill
def gaussian_gradient_magnitude(input, sigma, output=None, mode="reflect", cval=0.0, *,
                                axes=None, workers=None, **kwargs):
    """Gradient magnitude from Gaussian derivatives, as
    ``scipy.ndimage.gaussian_gradient_magnitude``.

    ``sqrt(sum over axes of gaussian_filter(input, sigma, order=1 along that
    axis) ** 2)``, with SciPy's order of operations and casts (NumPy's, for
    the squares and the square root).  As in SciPy, ``sigma`` applies to every
    axis of the input, those outside ``axes`` included (they are smoothed,
    not differentiated): a scalar sigma with ``axes`` smooths all axes,
    unlike :func:`gaussian_laplace`.

    Parameters
    ----------
    {input}
    sigma : scalar or sequence of scalars
        Per axis of the input.
    {output}
    {mode_multiple}
    {cval}
    {axes}
    {workers}
    **kwargs
        ``truncate``, ``radius``: passed to the Gaussian filters.

    {returns}

    Notes
    -----
    {notes}
    """
    op = "gaussian_gradient_magnitude"
    x = _input(input, op)
    nt = resolve_workers(workers, op)
    axes, terms = _gaussian_terms(x, sigma, mode, axes, 1, kwargs, op,
                                   expand_sigma=False)
    out = _output(output, x, op)
    if not terms:
        out[...] = x
        return out
    return _sum_of_terms(x, out, terms, cval, nt, op, square=True)


# ----------------------------------------------------------------------- rank-1 kernels

#: How far (in units of float64's epsilon, relative to each entry) the outer
#: product of the factors may be from the kernel: the rounding of the products
#: that built it, and of the divisions that recover the factors.
RANK1_ULPS = 8


def rank1_factors(weights, ulps=RANK1_ULPS):
    """1-D factors whose outer product is ``weights``, else None.

    The factor along axis 0 is the fibre of ``weights`` through its largest
    entry; the others are their fibres divided by that entry.  Multiplied
    back in float64 they must give every entry to within ``ulps`` units of
    its last place, and exactly the zero entries.  ``ulps=0`` asks for bit
    for bit equality, which kernels of integers or multiples of 2**-m meet;
    a Gaussian built with ``np.multiply.outer`` differs from any such
    reconstruction by the rounding of its own products, a few ulps, which
    ``RANK1_ULPS`` allows (the passes then differ from the N-D sum by about
    as much as two summation orders do).  Anything further from rank 1 keeps
    the N-D path.
    """
    w = np.asarray(weights, np.float64)
    if w.ndim == 0 or w.size == 0 or not np.isfinite(w).all():
        return None
    pivot = np.unravel_index(int(np.argmax(np.abs(w))), w.shape)
    p = w[pivot]
    if p == 0:
        return None
    factors = []
    for a in range(w.ndim):
        index = list(pivot)
        index[a] = slice(None)
        f = w[tuple(index)].copy()
        if a > 0:
            f = f / p
        factors.append(f)
    product = factors[0].reshape((-1,) + (1,) * (w.ndim - 1))
    for a, f in enumerate(factors[1:], 1):
        product = product * f.reshape((1,) * a + (-1,) + (1,) * (w.ndim - a - 1))
    if np.array_equal(product, w):
        return factors
    if not np.array_equal(product == 0, w == 0):
        return None
    close = np.abs(product - w) <= ulps * _DBL_EPSILON * np.abs(w)
    return factors if close.all() else None


def _grid_scale(values):
    """2**m if every value is a multiple of 2**-m (m <= 30), else None."""
    values = np.asarray(values, np.float64)
    for m in range(31):
        scaled = values * 2.0 ** m
        if np.array_equal(scaled, np.round(scaled)):
            return 2.0 ** m
    return None


@dataclass(frozen=True)
class SeparableCorrelation:
    """An N-D correlation as 1-D passes: [(axis, taps, origin, cval)] in order.

    ``cval`` of a later pass is what the earlier passes make of a region of
    cval (the kernel's own arithmetic on a constant line), so that the passes
    reproduce the N-D sum's 'constant' boundary, and a chunked computation
    (fastconv.dask) that pads its windows with cval gets the same bits.
    """

    passes: tuple
    double_work: bool

    @property
    def work(self):
        return np.dtype(np.float64 if self.double_work else np.float32)


def separable_plan(x_dtype, weights, out_dtype, axes, origins, mode, cval, max_abs_x=None):
    """A :class:`SeparableCorrelation` for ``scipy.ndimage.correlate`` semantics, or None.

    None where the N-D path must run instead:

    * complex data or weights, or a dtype the pass kernel does not handle;
    * weights that are not an outer product (:func:`rank1_factors`), or that
      hold non-zero entries below float64's epsilon (SciPy drops those taps);
    * an integer output whose sums a pass could round: separable sums equal
      SciPy's exact sums only when data, cval and factors lie on a grid of
      2**-m and the sums stay below 2**52 (and the kernel is then rank 1 bit
      for bit); ``max_abs_x`` (None: unknown) bounds the data.

    As on the N-D path, NaN or inf under a zero tap spreads (0 * inf), where
    SciPy skips zero taps.
    """
    x_dtype, out_dtype = np.dtype(x_dtype), np.dtype(out_dtype)
    if x_dtype.kind not in "biuf" or x_dtype not in _DTYPE_CODES or \
            np.iscomplexobj(weights) or out_dtype not in _DTYPE_CODES:
        return None
    w = np.asarray(weights, np.float64)
    nonzero = np.abs(w[w != 0])
    if nonzero.size and nonzero.min() <= _DBL_EPSILON:
        return None
    integer_out = out_dtype.kind in "biu"
    factors = rank1_factors(w, ulps=0 if integer_out else RANK1_ULPS)
    if factors is None:
        return None
    cval = float(np.real(cval))
    double_work = _double_work(x_dtype, out_dtype)
    if integer_out:
        if max_abs_x is None or x_dtype.kind not in "biu" or \
                (mode in ("constant", "grid-constant") and cval != round(cval)):
            return None
        bound = max(float(max_abs_x), abs(cval))
        for f in factors:
            g = _grid_scale(f)
            if g is None:
                return None
            bound *= float(np.abs(f).sum()) * g
        if bound >= 2.0 ** 52:
            return None
    # passes along the axes whose factor has more than one tap; scalar
    # factors are folded into the first of them
    scale = 1.0
    passes = []
    for ax, f, o in zip(axes, factors, origins):
        if len(f) == 1:
            scale *= f[0]
        else:
            passes.append([ax, f, o])
    if not passes:                      # a 1 x 1 x ... kernel: one scaling pass
        passes = [[axes[0], np.array([scale]), 0]]
    elif scale != 1.0:
        passes[0][1] = passes[0][1] * scale
    work = np.dtype(np.float64 if double_work else np.float32)
    chain = []
    for ax, f, o in passes:
        chain.append((ax, f, o, cval))
        # outside the input the N-D sum reads cval everywhere; after this pass
        # that region holds the pass applied to a constant line of cval
        line = np.full(1, cval, work)
        _pass(line, line, 0, _kind_of(f), f, 0, "constant", cval, double_work, 1)
        cval = float(line[0])
    return SeparableCorrelation(tuple(chain), double_work)


def separable_correlate(x, weights, out, axes, origins, mode, cval, workers):
    """``scipy.ndimage.correlate`` as 1-D passes when ``weights`` is rank 1.

    Called by :func:`fastconv.ndimage.correlate` / ``convolve`` with checked
    arguments (the correlation kernel, its origins per filtered axis, a single
    mode string) and the allocated output.  Returns ``out``, or None where the
    N-D path must run instead (see :func:`separable_plan`).

    Memory: the output, plus an intermediate of the output's shape in the work
    dtype when the output is not of that dtype (integer outputs: float64).
    """
    max_abs_x = None
    if out.dtype.kind in "biu" and x.dtype.kind in "biu" and x.size:
        # no |x| temporary: the extremes bound it
        max_abs_x = max(abs(int(x.min())), abs(int(x.max())))
    plan = separable_plan(x.dtype, weights, out.dtype, axes, origins, mode, cval, max_abs_x)
    if plan is None:
        return None
    tmp = out if out.dtype == plan.work else np.empty(out.shape, plan.work)
    src = x
    for i, (ax, f, o, cv) in enumerate(plan.passes):
        dst = out if i == len(plan.passes) - 1 else tmp
        _pass(src, dst, ax, _kind_of(f), f, o, mode, cv, plan.double_work, workers)
        src = dst
    return out


def correlate_valid_passes(window, plan, out_dtype):
    """The passes of ``plan`` over a window that already holds every halo cell
    ('valid' correlation: no boundary rule is read).  For fastconv.dask: each
    output cell gets the same operations, so the same bits, as in
    :func:`separable_correlate` on the whole array.  ``window`` holds the work
    dtype."""
    src = window
    for i, (ax, f, o, cv) in enumerate(plan.passes):
        k = len(f)
        rows = src.shape[ax] - (k - 1)
        shape = src.shape[:ax] + (rows,) + src.shape[ax + 1:]
        dst = np.empty(shape, out_dtype if i == len(plan.passes) - 1 else plan.work)
        _pass(src, dst, ax, _kind_of(f), f, o, "constant", cv, plan.double_work,
              resolve_workers(None, "correlate"), l0=k // 2 + o)
        src = dst
    return src
