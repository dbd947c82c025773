"""The separable ndimage filters as data: chains of 1-D passes, and their sum.

:mod:`fastconv._ndfilters` runs each SciPy filter on a whole array.  The
command line (slab by slab, :func:`run_slab`) and :mod:`fastconv.dask`
(chunk by chunk) run the same filters on pieces; they need the filter as a
description they can cut: a :class:`FilterPlan`.

A plan is ``terms``, each a chain of :class:`Pass` es (1-D correlations along
one axis, applied in order: the first from the input into an array of the
output dtype, the next ones in place in it, as ``_ndfilters._run_passes``),
and how the terms are combined (``combine``):

* ``'single'`` -- one term (gaussian_filter, uniform_filter, sobel, prewitt,
  correlate1d, ...);
* ``'sum'`` -- the terms added in the output dtype (laplace, gaussian_laplace);
* ``'magnitude'`` -- the square root of the sum of the squared terms
  (gaussian_gradient_magnitude).

:func:`combine_terms` is that combination, written once, with the very NumPy
operations of ``_ndfilters._sum_of_terms`` (so integer outputs wrap and round
as SciPy's do).  A chain with no pass means "the input cast to the output
dtype" (an axis with sigma 0, size 1, or no axes).

The builders below take the public functions' arguments, check them with
``_ndfilters``'s own helpers (so the messages are the in-memory functions'),
and produce the passes in SciPy's order.  Each piece then computes every
output element by the same operations as the whole-array call, so results
are bit for bit those of :mod:`fastconv.ndimage`, except for one case stated
where it arises: a running sum (uniform filters) along the axis a piece is
cut across restarts at the piece's first row, which is exact for integer data
only.
"""
import math
import operator
from dataclasses import dataclass

import numpy as np

from . import _ndfilters as _nd
from ._boundary import SCIPY_MODES, source_index


@dataclass(frozen=True)
class Pass:
    """One 1-D correlation: ``weights`` (float64) along ``axis``, SciPy's kernel
    ``kind`` (``_ndfilters._kind_of``, or running sum), ``origin`` and boundary
    ``mode``."""

    axis: int
    weights: np.ndarray
    kind: int
    origin: int
    mode: str

    @property
    def before(self):
        """Halo cells read before an output cell."""
        return len(self.weights) // 2 + self.origin

    @property
    def after(self):
        """Halo cells read after an output cell."""
        return len(self.weights) - 1 - self.before

    @property
    def running_sum(self):
        return self.kind == _nd._UNIFORM


@dataclass(frozen=True)
class FilterPlan:
    """A separable filter: ``terms`` (tuple of chains of :class:`Pass`),
    ``combine`` ('single', 'sum', 'magnitude'), ``cval`` and the ``out_dtype``
    (with ``double_work``: compute in float64, else float32)."""

    op: str
    terms: tuple
    combine: str
    cval: object
    out_dtype: np.dtype
    double_work: bool

    @property
    def work(self):
        """The dtype a pass reads its input in (exactly the values the kernel reads)."""
        complex_ = self.out_dtype.kind == "c"
        if self.double_work:
            return np.dtype(np.complex128 if complex_ else np.float64)
        return np.dtype(np.complex64 if complex_ else np.float32)

    @property
    def radius(self):
        """Halo cells per axis, (before, after), over every chain."""
        halo = {}
        for chain in self.terms:
            for p in chain:
                b, a = halo.get(p.axis, (0, 0))
                halo[p.axis] = (max(b, p.before), max(a, p.after))
        return halo


def _chain(passes):
    """[(axis, weights, mode)] as ``_ndfilters._run_passes`` takes them -> Pass tuple."""
    out = []
    for ax, w, m in passes:
        w = np.asarray(w, np.float64)
        out.append(Pass(int(ax), w, _nd._kind_of(w), 0, m))
    return tuple(out)


def _dummy(ndim, dtype):
    """A 0-element array of ``ndim`` dims, for helpers that read ``x.ndim``."""
    return np.empty((0,) * ndim, dtype)


def _finish(op, x_dtype, ndim, terms, combine, cval, output, complex_output=False):
    x = _dummy(ndim, x_dtype)
    out = _nd._output(output, x, op, complex_output=complex_output)
    if x.dtype.kind == "c" and out.dtype.kind != "c":
        raise _nd.ArgumentError(f"{op}: output must have complex dtype for complex input, "
                                f"got {out.dtype}")
    if x.dtype.kind != "c" and not complex_output:
        cval = _nd._cval(cval, op)
    return FilterPlan(op, tuple(terms), combine, cval, out.dtype,
                      _nd._double_work(x.dtype, out.dtype))


def _checked_input(x_dtype, op):
    return _nd._input(np.empty(0, x_dtype), op).dtype


# -- the builders (one per public function) ----------------------------------------------

def gaussian_filter(x_dtype, ndim, sigma, order=0, output=None, mode="reflect", cval=0.0,
                    truncate=4.0, radius=None, axes=None):
    op = "gaussian_filter"
    x_dtype = _checked_input(x_dtype, op)
    passes = _nd._gaussian_passes(ndim, sigma, order, mode, truncate, radius, axes, op)
    return _finish(op, x_dtype, ndim, [_chain(passes)], "single", cval, output)


def gaussian_filter1d(x_dtype, ndim, sigma, axis=-1, order=0, output=None, mode="reflect",
                      cval=0.0, truncate=4.0, radius=None):
    op = "gaussian_filter1d"
    x_dtype = _checked_input(x_dtype, op)
    weights = _nd._gaussian_weights(sigma, order, truncate, radius, op)
    return _correlate1d(op, x_dtype, ndim, weights, axis, output, mode, cval, 0)


def correlate1d(x_dtype, ndim, weights, axis=-1, output=None, mode="reflect", cval=0.0,
                origin=0):
    op = "correlate1d"
    return _correlate1d(op, _checked_input(x_dtype, op), ndim, weights, axis, output, mode,
                        cval, origin)


def convolve1d(x_dtype, ndim, weights, axis=-1, output=None, mode="reflect", cval=0.0,
               origin=0):
    """As ``_ndfilters.convolve1d``: reversed weights, mirrored origin."""
    op = "convolve1d"
    w = np.asarray(weights)
    if w.ndim != 1 or w.shape[0] < 1:
        raise _nd.ArgumentError(f"{op}: no filter weights given: expected a non-empty 1-D "
                                f"weights array, got shape {w.shape}")
    w = w[::-1]
    origin = -_nd._int_origin(origin, op)
    if not w.shape[0] & 1:
        origin -= 1
    if w.dtype.kind == "c":
        w = w.conj()
    return _correlate1d(op, _checked_input(x_dtype, op), ndim, w, axis, output, mode, cval,
                        origin)


def _correlate1d(op, x_dtype, ndim, weights, axis, output, mode, cval, origin):
    """Real weights only (complex weights: see ``fastconv.dask``)."""
    w = np.asarray(weights)
    if w.dtype.kind not in "biufc":
        raise TypeError(f"{op}: weights has dtype {w.dtype}, expected numbers")
    if w.ndim != 1 or w.shape[0] < 1:
        raise _nd.ArgumentError(f"{op}: no filter weights given: expected a non-empty 1-D "
                                f"weights array, got shape {w.shape}")
    if w.dtype.kind == "c":
        raise TypeError(f"{op}: complex weights take the complex path")   # pragma: no cover
    axis = _nd._axis(axis, ndim, op)
    origin = _nd._int_origin(origin, op)
    if not _nd._origin_ok(origin, len(w)):
        raise ValueError(f"{op}: Invalid origin; origin must satisfy -(len(weights) // 2) <= "
                         f"origin <= (len(weights)-1) // 2, got origin={origin} for "
                         f"{len(w)} weights")
    mode = _nd._mode(mode, op)
    w = np.asarray(w, np.float64)
    chain = (Pass(axis, w, _nd._kind_of(w), origin, mode),)
    complex_x = np.dtype(x_dtype).kind == "c"
    return _finish(op, x_dtype, ndim, [chain], "single", cval, output,
                   complex_output=complex_x)


def uniform_filter1d(x_dtype, ndim, size, axis=-1, output=None, mode="reflect", cval=0.0,
                     origin=0):
    op = "uniform_filter1d"
    x_dtype = _checked_input(x_dtype, op)
    axis = _nd._axis(axis, ndim, op)
    size = _uniform_size(size, op)
    origin = _uniform_origin(origin, size, op)
    mode = _nd._mode(mode, op)
    chain = (Pass(axis, np.ones(size), _nd._UNIFORM, origin, mode),)
    return _finish(op, x_dtype, ndim, [chain], "single", cval, output,
                   complex_output=np.dtype(x_dtype).kind == "c")


def _uniform_size(size, op):
    try:
        size = operator.index(size)
    except TypeError:
        raise TypeError(f"{op}: size must be an int, got {size!r}") from None
    if size < 1:
        raise _nd.ArgumentError(f"{op}: incorrect filter size: expected size >= 1, got {size}")
    return size


def _uniform_origin(origin, size, op):
    origin = _nd._int_origin(origin, op)
    if size // 2 + origin < 0 or size // 2 + origin >= size:
        raise ValueError(f"{op}: invalid origin {origin} for size {size}: expected "
                         f"-(size // 2) <= origin <= (size - 1) // 2")
    return origin


def uniform_filter(x_dtype, ndim, size=3, output=None, mode="reflect", cval=0.0, origin=0,
                   axes=None):
    """As ``_ndfilters.uniform_filter``: a running sum per axis with size > 1."""
    op = "uniform_filter"
    x_dtype = _checked_input(x_dtype, op)
    axes = _nd._axes(axes, ndim, op)
    n = len(axes)
    chain = []
    for ax, s, o, m in zip(axes, _nd._sequence(size, n, "size", op),
                           _nd._sequence(origin, n, "origin", op),
                           _nd._sequence(mode, n, "mode", op)):
        if s > 1:
            try:
                s = int(s)
            except (TypeError, ValueError):
                raise TypeError(f"{op}: size must be ints, got {s!r}") from None
            o = _uniform_origin(o, s, op)
            chain.append(Pass(ax, np.ones(s), _nd._UNIFORM, o, _nd._mode(m, op)))
    return _finish(op, x_dtype, ndim, [tuple(chain)], "single", cval, output,
                   complex_output=np.dtype(x_dtype).kind == "c")


def _edge(op, smooth, x_dtype, ndim, axis, output, mode, cval):
    x_dtype = _checked_input(x_dtype, op)
    axis = _nd._axis(axis, ndim, op)
    modes = _nd._sequence(mode, ndim, "mode", op)
    passes = [(axis, np.array([-1.0, 0.0, 1.0]), _nd._mode(modes[axis], op))]
    passes += [(ii, smooth, _nd._mode(modes[ii], op)) for ii in range(ndim) if ii != axis]
    return _finish(op, x_dtype, ndim, [_chain(passes)], "single", cval, output)


def sobel(x_dtype, ndim, axis=-1, output=None, mode="reflect", cval=0.0):
    return _edge("sobel", np.array([1.0, 2.0, 1.0]), x_dtype, ndim, axis, output, mode, cval)


def prewitt(x_dtype, ndim, axis=-1, output=None, mode="reflect", cval=0.0):
    return _edge("prewitt", np.array([1.0, 1.0, 1.0]), x_dtype, ndim, axis, output, mode,
                 cval)


def laplace(x_dtype, ndim, output=None, mode="reflect", cval=0.0, axes=None):
    op = "laplace"
    x_dtype = _checked_input(x_dtype, op)
    axes = _nd._axes(axes, ndim, op)
    if not axes:
        return _finish(op, x_dtype, ndim, [()], "single", cval, output)
    modes = [_nd._mode(m, op) for m in _nd._sequence(mode, len(axes), "mode", op)]
    terms = [_chain([(ax, np.array([1.0, -2.0, 1.0]), m)]) for ax, m in zip(axes, modes)]
    return _finish(op, x_dtype, ndim, terms, "sum", cval, output)


def gaussian_laplace(x_dtype, ndim, sigma, output=None, mode="reflect", cval=0.0, axes=None,
                     **kwargs):
    op = "gaussian_laplace"
    x_dtype = _checked_input(x_dtype, op)
    _, terms = _nd._gaussian_terms(_dummy(ndim, x_dtype), sigma, mode, axes, 2, kwargs, op,
                                   expand_sigma=True)
    if not terms:
        return _finish(op, x_dtype, ndim, [()], "single", cval, output)
    return _finish(op, x_dtype, ndim, [_chain(t) for t in terms], "sum", cval, output)


def gaussian_gradient_magnitude(x_dtype, ndim, sigma, output=None, mode="reflect", cval=0.0,
                                axes=None, **kwargs):
    op = "gaussian_gradient_magnitude"
    x_dtype = _checked_input(x_dtype, op)
    _, terms = _nd._gaussian_terms(_dummy(ndim, x_dtype), sigma, mode, axes, 1, kwargs, op,
                                   expand_sigma=False)
    if not terms:
        return _finish(op, x_dtype, ndim, [()], "single", cval, output)
    return _finish(op, x_dtype, ndim, [_chain(t) for t in terms], "magnitude", cval, output)


# -- running a pass and combining terms -------------------------------------------------

def cval_parts(cval):
    """(real, imaginary) parts of cval as floats."""
    return float(np.real(cval)), float(np.imag(cval))


def valid_pass(window, p, out_dtype, cval, double_work, workers):
    """``p`` over a window that holds ``p.before`` / ``p.after`` halo cells on each
    side along ``p.axis`` (no boundary rule is read): 'valid' output of
    ``out_dtype``.  Complex data go part by part, as ``_run_passes``."""
    ax = p.axis
    rows = window.shape[ax] - p.before - p.after
    shape = window.shape[:ax] + (rows,) + window.shape[ax + 1:]
    out = np.empty(shape, out_dtype)
    if window.dtype.kind == "c":
        parts = ((window.real, out.real, cval_parts(cval)[0]),
                 (window.imag, out.imag, cval_parts(cval)[1]))
    else:
        parts = ((window, out, float(np.real(cval))),)
    for src, dst, cv in parts:
        _nd._pass(src, dst, ax, p.kind, p.weights, p.origin, "constant", cv, double_work,
                  workers, l0=p.before)
    return out


def in_place_pass(a, p, cval, double_work, workers):
    """``p`` along its axis of the whole array ``a``, in place, its mode at the edges."""
    if a.dtype.kind == "c":
        parts = ((a.real, cval_parts(cval)[0]), (a.imag, cval_parts(cval)[1]))
    else:
        parts = ((a, float(np.real(cval))),)
    for part, cv in parts:
        _nd._pass(part, part, p.axis, p.kind, p.weights, p.origin, p.mode, cv, double_work,
                  workers)
    return a


def run_chain(x, chain, out_dtype, cval, double_work, workers):
    """A chain over the whole array ``x`` (its modes at the edges) -> a new array."""
    out = np.empty(x.shape, out_dtype)
    if not chain:
        out[...] = x
        return out
    xs = (x.real, x.imag) if x.dtype.kind == "c" else (x,)
    outs = (out.real, out.imag) if out.dtype.kind == "c" else (out,)
    cvs = cval_parts(cval) if x.dtype.kind == "c" else (float(np.real(cval)),)
    for src, dst, cv in zip(xs, outs, cvs):
        for p in chain:
            _nd._pass(src, dst, p.axis, p.kind, p.weights, p.origin, p.mode, cv, double_work,
                      workers)
            src = dst
    return out


def combine_terms(combine, *terms):
    """The terms (arrays of the output dtype) combined as ``_sum_of_terms`` does.

    The first term is used as the result (overwritten): pass arrays you own.
    """
    out = terms[0]
    if combine == "single":
        return out
    square = combine == "magnitude"
    if square:
        np.multiply(out, out, out)
    for tmp in terms[1:]:
        if square:
            tmp = np.multiply(tmp, tmp)
        out += tmp
    if square:
        np.sqrt(out, out, casting="unsafe")
    return out


# -- slab by slab (the command line) -----------------------------------------------------

def run_slab(src, z0, z1, plan, workers):
    """Rows ``[z0, z1)`` of axis 0 of ``plan`` applied to the whole of ``src``.

    ``src`` is anything indexable by an int array of rows along axis 0 (a
    NumPy array, or a reader of :mod:`fastconv._volumes`).  Each chain reads
    the rows its axis-0 pass needs (the slab and its halo, boundary rows by
    the mode's index rule, cval rows for 'constant'); the passes before it
    run on those rows (they filter along other axes, row by row), the axis-0
    pass runs 'valid', the passes after it in place within the slab.  Every
    output element gets the operations of the whole-array call, except
    across slabs for a running sum along axis 0 on non-integer data (it
    restarts at the slab's first row: rounding-level differences).
    """
    terms = [_chain_slab(src, z0, z1, chain, plan, workers) for chain in plan.terms]
    return combine_terms(plan.combine, *terms)


def _chain_slab(src, z0, z1, chain, plan, workers):
    n0 = src.shape[0]
    rest = tuple(src.shape[1:])
    out_dtype = plan.out_dtype
    first0 = next((i for i, p in enumerate(chain) if p.axis == 0), None)
    if first0 is None:                       # no pass along axis 0: rows are independent
        return run_chain(np.asarray(src[np.arange(z0, z1)]), chain, out_dtype, plan.cval,
                         plan.double_work, workers)
    p = chain[first0]
    positions = np.arange(z0 - p.before, z1 + p.after)
    rows = source_index(positions, n0, SCIPY_MODES[p.mode])
    inside = rows >= 0
    window = np.empty((len(rows),) + rest, plan.work)
    if first0 == 0:
        window[inside] = src[rows[inside]]
    else:
        # the passes before: on the distinct rows the window copies, row by row
        used = np.unique(rows[inside])
        before = run_chain(np.asarray(src[used]), chain[:first0], out_dtype, plan.cval,
                           plan.double_work, workers)
        window[inside] = before[np.searchsorted(used, rows[inside])]
    window[~inside] = plan.cval
    out = valid_pass(window, p, out_dtype, plan.cval, plan.double_work, workers)
    del window
    for q in chain[first0 + 1:]:
        in_place_pass(out, q, plan.cval, plan.double_work, workers)
    return out


def slab_rows(shape, plan, budget=128 << 20):
    """Slices per slab: about ``budget`` bytes of work per slab."""
    row = math.prod(shape[1:]) * max(plan.work.itemsize, plan.out_dtype.itemsize)
    row *= 2 + len(plan.terms)              # window, output, terms
    return max(1, min(shape[0], budget // max(1, row)))
