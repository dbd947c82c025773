"""Drop-in replacements for ``scipy.signal.convolve``, ``correlate``,
``fftconvolve``, ``oaconvolve`` and ``choose_conv_method``.

``convolve`` / ``correlate``: 0-D to 3-D arrays; ``mode`` 'full' | 'valid' |
'same' and ``method`` 'auto' | 'direct' | 'fft' as in SciPy.  'auto' asks
fastconv's cost model (calibrated on this machine kind) instead of SciPy's.
``fftconvolve`` / ``oaconvolve``: N-D, with SciPy's ``axes`` and its
broadcasting over the axes not convolved, plus ``workers=``.

Deliberate differences from SciPy:

* ``convolve`` / ``correlate`` with ``method='fft'`` on input holding inf or
  NaN warn as SciPy does (its test passes), but then compute directly
  instead of returning a result spoilt by NaN everywhere.
* (skipped by name, with this reason, in ``benchmarks/run_scipy_tests.py
  --signal``) long double (``np.longdouble``, ``np.clongdouble``) is computed by
  ``fftconvolve`` / ``oaconvolve`` (``scipy.fft`` transforms it natively), but
  not by ``convolve`` / ``correlate`` (fastconv's kernels are float32/float64
  and complex): a TypeError.
"""
import math
import numbers
import operator
import warnings

import numpy as np

from . import _fftconv
from ._args import as_array, check_choice
from ._filter import choose, correlate_valid
from ._threads import resolve_workers

__all__ = ["convolve", "correlate", "fftconvolve", "oaconvolve", "choose_conv_method"]

_MODES = ("full", "valid", "same")
_METHODS = ("auto", "direct", "fft")
_KERNEL_DTYPES = "float16, float32, float64, complex64, complex128, integers and bool"


def _check(in1, in2, mode, method, op):
    a = as_array(in1, "in1", op)
    b = as_array(in2, "in2", op)
    check_choice(mode, _MODES, "mode", op)
    check_choice(method, _METHODS, "method", op)
    if a.ndim != b.ndim:
        raise ValueError(f"{op}: in1 and in2 should have the same dimensionality, got "
                         f"{a.ndim} and {b.ndim}")
    if a.ndim > 3:
        raise ValueError(f"{op}: expected 1-D to 3-D inputs, got {a.ndim} dims "
                         "(fftconvolve takes N-D inputs)")
    for name, arr in (("in1", a), ("in2", b)):
        if arr.dtype.kind in "fc" and arr.dtype.itemsize > (8 if arr.dtype.kind == "f" else 16):
            raise TypeError(f"{op}: {name} has dtype {arr.dtype}, which fastconv's kernels do "
                            f"not compute; supported: {_KERNEL_DTYPES} (fftconvolve "
                            "computes long double)")
    return a, b


def _swap_needed(mode, s1, s2):
    """'valid' needs one input at least as large as the other along every axis."""
    if mode != "valid":
        return False
    if all(x >= y for x, y in zip(s1, s2)):
        return False
    if all(y >= x for x, y in zip(s1, s2)):
        return True
    raise ValueError("For 'valid' mode, one must be at least as large as the other in "
                     f"every dimension, got shapes {s1} and {s2}")


def _all_finite(*arrays):
    return all(a.dtype.kind not in "fc" or np.isfinite(a).all() for a in arrays)


def _convolve(a, b, mode, method, op):
    """Linear convolution of two same-ndim arrays (1-D to 3-D), cropped to ``mode``.

    The result has dtype ``np.result_type(a, b)``; integer and bool results
    are rounded from the float64 computation, as SciPy does.
    """
    if a.ndim == 0:
        return a * b
    if a.size == 0 or b.size == 0:
        return np.zeros((0,) * a.ndim, np.result_type(a, b))
    if _swap_needed(mode, a.shape, b.shape):
        a, b = b, a
    result_dtype = np.result_type(a, b)
    if method == "auto":
        full = [x + y - 1 for x, y in zip(a.shape, b.shape)]
        method = choose(full, b.shape)
        if method == "fft" and not _all_finite(a, b):
            method = "direct"          # an inf/NaN would spread over the whole result
    elif method == "fft" and not _all_finite(a, b):
        warnings.warn(f"{op}: Use of fft convolution on input with NAN or inf results in NAN "
                      "or inf output; fastconv computes this call with method='direct' "
                      "instead.", RuntimeWarning, stacklevel=3)
        method = "direct"
    if method == "fft":
        out = fftconvolve(a, b, mode)
    else:
        out = _direct(a, b, mode, result_dtype)
    if result_dtype.kind in "iu":
        return np.rint(out).astype(result_dtype)
    if result_dtype.kind == "b":
        return np.rint(out) != 0
    return out.astype(result_dtype, copy=False)


def _direct(a, b, mode, result_dtype):
    """The cropped convolution through the registry's direct 'filter' kernels."""
    if result_dtype.kind in "biu":
        work = np.float64
    elif result_dtype == np.float16:
        work = np.float32
    else:
        work = result_dtype
    n, k = a.shape, b.shape
    if mode == "full":
        start, length = [0] * a.ndim, [x + y - 1 for x, y in zip(n, k)]
    elif mode == "same":
        start, length = [(y - 1) // 2 for y in k], list(n)
    else:
        start, length = [y - 1 for y in k], [x - y + 1 for x, y in zip(n, k)]
    # Output position t of the cropped full convolution is a 'valid' correlation
    # of a padded by (k - 1 - start) on the left with the flipped kernel.
    pads = []
    for x, y, s, m in zip(n, k, start, length):
        left = y - 1 - s
        pads.append((left, m + y - 1 - left - x))
    padded = np.pad(a.astype(work, copy=False), pads)
    flipped = np.ascontiguousarray(b.astype(work, copy=False)[(slice(None, None, -1),) * b.ndim])
    return correlate_valid(padded, flipped, "direct")


def convolve(in1, in2, mode="full", method="auto"):
    """Convolve two N-D arrays (N = 0 to 3), as ``scipy.signal.convolve``.

    Parameters
    ----------
    in1, in2 : array_like, same number of dims
    mode : {'full', 'valid', 'same'}, default 'full'
    method : {'auto', 'direct', 'fft'}, default 'auto'
        'fft' runs :func:`fftconvolve`; 'auto' picks with fastconv's cost
        model.  On input holding inf or NaN, 'fft' warns (as SciPy) and
        computes directly, and 'auto' computes directly.

    Returns
    -------
    ndarray
        dtype ``np.result_type(in1, in2)``; integer inputs give integer results
        (rounded from the float64 computation).  0-D inputs give ``in1 * in2``.
    """
    a, b = _check(in1, in2, mode, method, "convolve")
    return _convolve(a, b, mode, method, "convolve")


def correlate(in1, in2, mode="full", method="auto"):
    """Cross-correlate two N-D arrays, as ``scipy.signal.correlate`` (in2 is conjugated).

    Parameters and result as :func:`convolve`.
    """
    a, b = _check(in1, in2, mode, method, "correlate")
    reversed_conj = b[(slice(None, None, -1),) * b.ndim]
    if np.iscomplexobj(reversed_conj):
        reversed_conj = reversed_conj.conj()
    return _convolve(a, reversed_conj, mode, method, "correlate")


def choose_conv_method(in1, in2, mode="full"):
    """'direct' or 'fft': what ``method='auto'`` would use for these inputs."""
    a, b = _check(in1, in2, mode, "auto", "choose_conv_method")
    full = [x + y - 1 for x, y in zip(a.shape, b.shape)]
    return choose(full, b.shape)


# --------------------------------------------------------------------------- FFT

_AXES_ERROR = "axes must be a scalar or iterable of integers"


def _fft_dtype(dtype):
    """The dtype ``scipy.fft`` transforms an input of ``dtype`` in."""
    if dtype.kind in "biu":
        return np.dtype(np.float64)
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def _normalise_axes(axes, ndim):
    """SciPy's rules for ``axes`` (``scipy.fft``'s), with its messages."""
    if axes is None:
        return list(range(ndim))
    if isinstance(axes, numbers.Number):
        axes = (axes,)
    try:
        axes = [operator.index(x) for x in axes]
    except TypeError as exc:
        raise ValueError(f"{_AXES_ERROR}, got axes={axes!r}") from exc
    axes = [x + ndim if x < 0 else x for x in axes]
    if any(x >= ndim or x < 0 for x in axes):
        raise ValueError(f"axes exceeds dimensionality of input: axes={axes}, ndim={ndim}")
    if len(set(axes)) != len(axes):
        raise ValueError(f"all axes must be unique, got axes={axes}")
    if not axes:
        raise ValueError("when provided, axes cannot be empty")
    return axes


class _FreqProblem:
    """A validated ``fftconvolve`` / ``oaconvolve`` call, read as SciPy reads it.

    ``a`` and ``b`` are the operands in the working dtype (swapped for
    'valid' as SciPy swaps them); ``axes`` the convolved axes (sorted; those
    where either input has length 1 dropped, as SciPy drops them); per
    convolved axis the ``starts`` and ``lengths`` of the wanted window of the
    full convolution.  ``early`` is the result when no transform is needed
    (scalars, empty inputs, no axis left to convolve), else None.
    """

    def __init__(self, in1, in2, mode, axes, op):
        self.early = None
        a = as_array(in1, "in1", op)
        b = as_array(in2, "in2", op)
        if a.ndim == b.ndim == 0:
            self.early = a * b
            return
        if a.ndim != b.ndim:
            raise ValueError(f"{op}: in1 and in2 should have the same dimensionality, got "
                             f"{a.ndim} and {b.ndim} dims")
        if not isinstance(mode, str) or mode not in _MODES:
            raise ValueError(f"{op}: acceptable mode flags are 'valid', 'same', or 'full'; "
                             f"got mode={mode!r}")
        if a.size == 0 or b.size == 0:
            self.early = np.array([])
            return
        s1, s2 = a.shape, b.shape
        axes = sorted(x for x in _normalise_axes(axes, a.ndim) if s1[x] != 1 and s2[x] != 1)
        if not all(s1[x] == s2[x] or s1[x] == 1 or s2[x] == 1
                   for x in range(a.ndim) if x not in axes):
            raise ValueError(f"incompatible shapes for in1 and in2: {s1} and {s2} "
                             "(along the axes not convolved they must be equal or 1)")
        if mode == "valid":
            ok1 = all(s1[x] >= s2[x] for x in axes)
            ok2 = all(s2[x] >= s1[x] for x in axes)
            if not (ok1 or ok2):
                raise ValueError("For 'valid' mode, one must be at least as large as the "
                                 f"other in every dimension, got shapes {s1} and {s2}")
            if not ok1:
                a, b, s1, s2 = b, a, s2, s1
        elif mode == "same":
            # SciPy crops every axis to in1's length, centred: along a broadcast
            # axis where in1 has length 1, that keeps in2's middle element.
            for x in range(a.ndim):
                if x not in axes and s1[x] == 1 and s2[x] > 1:
                    mid = (s2[x] - 1) // 2
                    b = b[(slice(None),) * x + (slice(mid, mid + 1),)]
        if not axes:
            self.early = a * b
            return
        n1 = [s1[x] for x in axes]
        n2 = [s2[x] for x in axes]
        if mode == "full":
            starts, lengths = [0] * len(axes), [p + q - 1 for p, q in zip(n1, n2)]
        elif mode == "same":
            starts, lengths = [(q - 1) // 2 for q in n2], n1
        else:
            starts, lengths = [q - 1 for q in n2], [p - q + 1 for p, q in zip(n1, n2)]
        work = np.result_type(_fft_dtype(a.dtype), _fft_dtype(b.dtype))
        self.a = a.astype(work, copy=False)
        self.b = b.astype(work, copy=False)
        self.axes, self.starts, self.lengths = axes, starts, lengths

    def run(self, workers, op, force_blocks):
        """The result: overlap-add when a blocking is chosen, else one transform."""
        a, b = self.a, self.b
        # Convolution commutes and the window is one of the full convolution,
        # which is symmetric: the larger operand is the one cut into blocks.
        if math.prod(b.shape[x] for x in self.axes) > math.prod(a.shape[x] for x in self.axes):
            a, b = b, a
        nt = resolve_workers(workers, op)
        blocking = _fftconv.choose_blocking(
            [a.shape[x] for x in self.axes], [b.shape[x] for x in self.axes],
            self.starts, self.lengths, a.dtype.kind == "f", a.dtype.itemsize,
            force=force_blocks)
        if blocking is not None:
            return _fftconv.overlap_add(a, b, self.axes, self.starts, self.lengths, nt,
                                        *blocking)
        return _fftconv.convolve_window(a, b, self.axes, self.starts, self.lengths, nt)


def fftconvolve(in1, in2, mode="full", axes=None, *, workers=None):
    """Convolve two N-D arrays with FFTs, as ``scipy.signal.fftconvolve``.

    Parameters
    ----------
    in1 : array_like, shape (n_0, ..., n_{d-1})
    in2 : array_like, same number of dims as ``in1``
        Along the axes not convolved, lengths must be equal or 1 (broadcast).
    mode : {'full', 'valid', 'same'}, default 'full'
        'full': ``n1 + n2 - 1`` per convolved axis; 'same': ``in1``'s shape,
        centred; 'valid': ``|n1 - n2| + 1`` (one input must be at least as
        large as the other along every convolved axis).
    axes : int, sequence of int or None
        Axes to convolve over (default: all).
    workers : int or None
        Threads for the transforms (``scipy.fft``'s convention): None =
        fastconv's thread setting (:func:`fastconv.get_num_threads`), -1 =
        every core.

    Returns
    -------
    ndarray
        float64 for integer or bool inputs, float32 for float16, else the
        promoted floating dtype (float32 stays float32, as in SciPy); complex
        when either input is complex.  Scalar inputs give ``in1 * in2``, an
        empty input an empty float64 array, and inputs with no axis left to
        convolve (all of length 1) ``in1 * in2`` in their own dtype, as SciPy.

    Notes
    -----
    Only what the requested window needs is transformed: real transforms for
    real inputs, of the smallest fast length per axis that gives the window
    exactly (so 'valid' transforms at ``n1``, not ``n1 + n2 - 1``), axis by
    axis, the output cropped axis by axis.  A small kernel on a large volume
    runs by overlap-add (:func:`oaconvolve`) when that is estimated cheaper,
    from the shapes alone (never the thread count, so the result does not
    depend on it).

    Accuracy: float32 / complex64 operands are transformed in single
    precision (as ``scipy.fft`` does): expect errors near 1e-6 of the
    output's largest magnitude; float64 near 1e-15.  A float32 operand with a
    float64 one is transformed in float64 (SciPy transforms each operand in
    its own precision).  inf or NaN spread over the whole result, as in SciPy.

    Memory: the spectra of both inputs over the padded lengths of the
    convolved axes (half length along the first convolved axis for real
    inputs) and the output; with overlap-add, one block's spectra and the
    kernel's instead.  The result is C-contiguous; it may be a view of a
    buffer at most 1/0.75 of its size.

    Examples
    --------
    >>> import fastconv.signal as fs
    >>> fs.fftconvolve([1.0, 2.0, 3.0], [0.0, 1.0, 0.5]).round(12) + 0.0
    array([0. , 1. , 2.5, 4. , 1.5])
    """
    problem = _FreqProblem(in1, in2, mode, axes, "fftconvolve")
    if problem.early is not None:
        return problem.early
    return problem.run(workers, "fftconvolve", force_blocks=False)


def oaconvolve(in1, in2, mode="full", axes=None, *, workers=None):
    """Convolve two N-D arrays by overlap-add, as ``scipy.signal.oaconvolve``.

    Parameters, result, dtype rules, accuracy and memory as :func:`fftconvolve`.

    The larger input is cut into blocks along the one convolved axis where
    fastconv's cost estimate says that is cheapest; each block is convolved
    with the kernel's spectrum (computed once) and added into the output.
    When no blocking fits (inputs of similar lengths along every axis) this is
    :func:`fftconvolve`'s single transform, as in SciPy.

    Differences from SciPy: SciPy cuts every convolved axis, into the block
    length that is optimal for 1-D signals; fastconv cuts one axis.  Results
    agree to floating-point tolerance.

    Examples
    --------
    >>> import numpy as np, fastconv.signal as fs
    >>> x, h = np.ones(1000), np.ones(5)
    >>> y = fs.oaconvolve(x, h, mode="same")
    >>> y.shape, float(y[500].round(9))
    ((1000,), 5.0)
    """
    problem = _FreqProblem(in1, in2, mode, axes, "oaconvolve")
    if problem.early is not None:
        return problem.early
    return problem.run(workers, "oaconvolve", force_blocks=True)
