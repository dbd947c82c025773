"""Integer passes in float32 with SciPy's float64 results, bit for bit.

SciPy computes every 1-D pass of an integer array in float64 and casts the
sum to the integer output by truncation toward zero (a C cast).  The cast
keeps only which unit interval ``(n, n + 1)`` the sum falls in, so a float32
sum gives the same integer whenever it lies far enough from every integer.
:func:`checked_float32` decides whether a pass may run that way and returns
the error bound; ``src/_separable.h`` (``fc_exact_row_f``) flags every cell
whose float32 value lies within the bound of an integer and recomputes it in
float64, in SciPy's order, from the same input values (which are exact in
float32).  The integer stored is therefore SciPy's for every cell.
(:func:`box_float32` gives the same guarantee for box means, whose sums are
exact.)

The bound
---------
A pass adds ``m`` products ``a_j * w_j`` in a fixed order: ``m = k`` plain
taps, or, for (anti)symmetric kernels, ``m = k // 2 + 1`` products of a pair
sum (difference) ``a_j = x[c - j] +- x[c + j]`` with ``w[c - j]``.  Here
every ``x`` is an integer of at most 16 bits (data or ``cval``), so
``a_j`` is an integer below 2**18 and exact in float32 and in float64.  Let
``S = sum a_j w_j`` exactly, ``A = sum |a_j w_j|``, ``u = 2**-24`` and
``v = 2**-53``, ``gamma(m, u) = m u / (1 - m u)``.  The weights in float32
are ``W_j = w_j (1 + e_j)``, ``|e_j| <= u`` (round to nearest; we require
normal float32 weights).  The recursive sum of products (Higham, Accuracy
and Stability of Numerical Algorithms, 2nd ed., eq. 3.5) gives

* float64 (SciPy): ``|s64 - S| <= gamma(m, v) A``;
* float32: ``|s32 - sum a_j W_j| <= gamma(m, u) sum |a_j W_j| <= gamma(m, u) (1 + u) A``,
  and ``|sum a_j W_j - S| <= u A``;

so ``|s32 - s64| <= kappa A`` with
``kappa = gamma(m, u) (1 + u) + u + gamma(m, v)``.  ``A`` is bounded in one
of two ways:

* every ``a_j >= 0`` and ``w_j >= 0`` (unsigned data or intermediates, a
  non-negative ``cval``, Gaussian / box / Sobel-smoothing weights): then
  ``A = S <= s32 + kappa A``, so ``A <= s32 / (1 - kappa)`` and the bound is
  ``rel * |s32|`` with ``rel = kappa / (1 - kappa)``;
* otherwise ``A <= X * sum_t |w_t|`` (``X`` the largest magnitude of the
  data, from the dtype's range or the data's own, and ``cval``; a pair of
  taps counts its weight twice), a bound ``abs`` for every cell; used only
  where it is small (few cells to redo).

If ``s32`` lies more than that bound from every integer, ``s32`` and
``s64`` lie in the same open unit interval ``(n, n + 1)`` and truncate to
the same integer (and, through int32, wrap the same way).  The kernel
redoes a cell when ``|s32 - rint(s32)| <= err`` (the distance to the nearest
integer, exact as ``|s32| < 2**22``; an ``err`` of 1/2 or more redoes every
cell); ``err`` is computed in float32 from ``rel`` and ``abs`` rounded up
here and inflated by ``SAFETY`` to cover its own rounding.

Sums stay below 2**22 in magnitude (checked from the dtype's range), so the
casts to int32 in the kernel are defined and every difference above exact.
When all weights are integers and every partial sum is an integer below
2**24, float32 is exact and the bound is 0: no cell is redone (Sobel,
Prewitt, Laplace on 8- and 16-bit data).
"""
import functools
import math

import numpy as np

#: Source dtypes whose values (and pair sums) are exact in float32.
SMALL_INTEGERS = tuple(np.dtype(t) for t in (np.bool_, np.uint8, np.int8, np.uint16,
                                             np.int16))
#: Factor on the bound covering the float32 arithmetic that evaluates it
#: (two roundings, relative 2**-23 at most).
SAFETY = 1.0 + 2.0 ** -10
#: Largest magnitude of a float32 sum (so |s32| < 2**22 with room to spare).
MAX_SUM = 2.0 ** 21
#: Largest absolute bound the test in the kernel takes (whether it pays is
#: :func:`worth_it`'s question).
ABS_LIMIT = 2.0 ** -3
#: Smallest array whose range is looked up for a smaller bound (below it, the
#: look-up costs more than float64 does).
RANGE_MIN_CELLS = 1 << 16
#: Cells of the sample that estimates the share of cells to redo.
SAMPLE = 4096
#: Cost of redoing one cell in float64 (a scalar chain of adds, latency-bound;
#: rows with many such cells go to vectorised float64 instead), in vector
#: instructions per term and per cell: fitted on AVX2 (128**3 uint16
#: Gaussians and 9-tap correlations) to where float32 stops paying (about 1 %
#: of the cells redone for 5 terms, 2 % for 9, 6 % for 33).
REDO_PER_TERM, REDO_PER_CELL = 6.0, 100.0

_U32 = 2.0 ** -24
_U64 = 2.0 ** -53
# float32 weights must be normal numbers (relative rounding error <= 2**-24)
_TINY = 2.0 ** -100
_HUGE = 2.0 ** 100


def _gamma(m, u):
    return m * u / (1.0 - m * u)


def _up32(value):
    """The smallest float32 >= value (value >= 0)."""
    f = np.float32(value)
    if float(f) < value:
        f = np.nextafter(f, np.float32(np.inf))
    return float(f)


def _terms(weights, kind):
    """(m, the weights as the kernel applies them, with multiplicity)."""
    k = len(weights)
    if kind in (1, 2):                  # (anti)symmetric: pairs use w[c - j] twice
        c = k // 2
        used = np.concatenate([weights[:c], weights[:c], weights[c:c + 1]])
        return c + 1, used
    return k, weights


def checked_float32(src_dtype, dst_dtype, weights, kind, mode, cval, data_range=None):
    """``(rel, abs)`` float32 error bounds of a pass, or None to compute in float64.

    Parameters
    ----------
    src_dtype, dst_dtype : np.dtype
        Element types the pass reads and writes: the route applies to 8- and
        16-bit integer (or bool) sources into integer outputs only.
    weights : ndarray of float64, (k,)
    kind : int
        ``_ndfilters._kind_of(weights)`` (0 general, 1 symmetric,
        2 antisymmetric); running sums (3) keep their own float64 path.
    mode : str
    cval : float
        Must be an integer of at most 16 bits when ``mode`` reads it (it then
        joins the range of the values read).
    data_range : (int, int), optional
        The smallest and largest value of the data (default: the dtype's),
        for a smaller bound.

    Returns
    -------
    (float, float) or None
        ``err = rel * |s32| + abs`` bounds ``|s32 - s64|`` for every cell
        (see the module docstring); ``(0, 0)`` when float32 is exact.
    """
    src_dtype, dst_dtype = np.dtype(src_dtype), np.dtype(dst_dtype)
    if src_dtype not in SMALL_INTEGERS or dst_dtype.kind not in "biu" or kind not in (0, 1, 2):
        return None
    w = np.ascontiguousarray(weights, np.float64)
    if data_range is None:
        data_range = _dtype_range(src_dtype)
    # a filter call asks once per pass, with the same few kernels: cached
    return _checked(dst_dtype, w.tobytes(), len(w), kind, mode, float(cval),
                    int(data_range[0]), int(data_range[1]))


@functools.lru_cache(maxsize=16)
def _dtype_range(dtype):
    if dtype == np.bool_:
        return 0, 1
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


@functools.lru_cache(maxsize=256)
def _term_stats(weight_bytes, k, kind):
    """(m, sum of |weights| as applied) of a kernel (see :func:`_terms`)."""
    m, used = _terms(np.frombuffer(weight_bytes, np.float64, k), kind)
    return m, float(np.abs(used).sum())


def data_range_may_help(src_dtype, dst_dtype, weights, kind, mode, cval):
    """Whether the data's own range could give a bound where the dtype's range
    gives none (so that looking the range up, a pass over the data, may pay)."""
    return checked_float32(src_dtype, dst_dtype, weights, kind, mode, cval) is None and \
        checked_float32(src_dtype, dst_dtype, weights, kind, mode, cval, (0, 1)) is not None


def data_range(a):
    """(smallest, largest) value of an integer array."""
    return (0 if a.dtype.kind in "bu" else int(a.min())), int(a.max())


@functools.lru_cache(maxsize=256)
def _checked(dst_dtype, weight_bytes, k, kind, mode, cval, lo, hi):
    w = np.frombuffer(weight_bytes, np.float64, k)
    if w.size == 0 or not np.isfinite(w).all():
        return None
    a = np.abs(w[w != 0])
    if a.size and (a.min() < _TINY or a.max() > _HUGE):
        return None
    if mode in ("constant", "grid-constant"):
        if cval != math.floor(cval) or abs(cval) > 65535:
            return None
        lo, hi = min(lo, int(cval)), max(hi, int(cval))
    m, used = _terms(w, kind)
    x_max = max(abs(lo), abs(hi))
    total = x_max * float(np.abs(used).sum())
    if total >= MAX_SUM:
        return None
    # exact float32: integer weights, every partial sum an integer below 2**24
    if np.array_equal(w, np.round(w)) and total < 2.0 ** 24:
        return 0.0, 0.0
    kappa = _gamma(m, _U32) * (1 + _U32) + _U32 + _gamma(m, _U64)
    if lo >= 0 and kind != 2 and (w >= 0).all():
        return _up32(kappa / (1 - kappa) * SAFETY), 0.0
    bound = kappa * total * SAFETY
    if bound > ABS_LIMIT:
        return None
    return 0.0, _up32(bound)


def worth_it(src, bounds, weights, kind):
    """Whether a checked float32 pass is expected to be faster than float64.

    Under a relative bound about ``2 * rel * |sum|`` of the cells are redone
    (``|sum|`` estimated by the largest value of a strided sample of ``src``,
    about :data:`SAMPLE` cells, times the sum of the weights), under an
    absolute one ``2 * abs``; float32 saves
    about ``5 m / 8 - 2`` vector instructions per cell (half the lanes' cost of
    ``m`` terms, less the test) and a redone cell costs about
    ``REDO_PER_TERM * m + REDO_PER_CELL``.  Only speed depends on this guess:
    both routes give SciPy's integers.
    """
    rel, abs_ = bounds
    if (rel == 0.0 and abs_ == 0.0) or src.size == 0:
        return True
    w = np.ascontiguousarray(weights, np.float64)
    m, total = _term_stats(w.tobytes(), len(w), kind)
    if rel == 0.0:
        share = 2 * abs_
    else:
        lo, hi = sampled_range(src)
        share = 2 * rel * max(abs(lo), abs(hi)) * total
    return share * (REDO_PER_TERM * m + REDO_PER_CELL) <= 5 * m / 8 - 2


def sampled_range(src):
    """(smallest, largest) value of a strided sample of about :data:`SAMPLE`
    cells: an estimate, for speed decisions only."""
    if src.size <= SAMPLE:
        return int(src.min()), int(src.max())
    step = max(1, int(src.size ** (1 / src.ndim) / SAMPLE ** (1 / src.ndim)))
    sample = src[(slice(None, None, step),) * src.ndim]
    return int(sample.min()), int(sample.max())


#: Largest box (uniform filter) whose mean of integers float32 gives exactly.
BOX_MAX = 255


def box_float32(src_dtype, dst_dtype, size, mode, cval):
    """Whether a box mean (``uniform_filter1d``) of integer data may run in float32.

    SciPy sums the window exactly (integers, in float64) and truncates
    ``sum / size``.  With 8- or 16-bit data (and an integer ``cval`` of at
    most 16 bits) and ``size <= 255``, every sum is an integer below 2**24,
    exact in float32.  Its quotient ``q`` by ``size`` is an integer (then
    every division gives it exactly) or lies at least ``1 / size >= 2**-8``
    from one, while rounding it to float32 moves it by at most half an ulp of
    ``|q| < 2**16``, that is ``2**-8 / 2``: float32 division, or float64
    division rounded to float32, truncates to SciPy's integer.
    """
    src_dtype, dst_dtype = np.dtype(src_dtype), np.dtype(dst_dtype)
    if src_dtype not in SMALL_INTEGERS or dst_dtype.kind not in "biu" or \
            not 1 <= size <= BOX_MAX:
        return False
    if mode in ("constant", "grid-constant"):
        return cval == math.floor(cval) and abs(cval) <= 65535
    return True
