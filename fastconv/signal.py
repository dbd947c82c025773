"""Drop-in replacements for ``scipy.signal.convolve``, ``correlate`` and ``fftconvolve``.

1-D to 3-D arrays; ``mode`` 'full' | 'valid' | 'same' and ``method`` 'auto' |
'direct' | 'fft' as in SciPy.  'auto' asks fastconv's cost model (calibrated
on this machine kind) instead of SciPy's.
"""
import numpy as np

from ._args import as_array, check_choice
from ._filter import choose, correlate_valid

__all__ = ["convolve", "correlate", "fftconvolve", "choose_conv_method"]

_MODES = ("full", "valid", "same")
_METHODS = ("auto", "direct", "fft")


def _check(in1, in2, mode, method, op):
    a = as_array(in1, "in1", op)
    b = as_array(in2, "in2", op)
    check_choice(mode, _MODES, "mode", op)
    check_choice(method, _METHODS, "method", op)
    if a.ndim != b.ndim:
        raise ValueError(f"{op}: in1 and in2 should have the same dimensionality, got "
                         f"{a.ndim} and {b.ndim}")
    if not 1 <= a.ndim <= 3:
        raise ValueError(f"{op}: expected 1-D to 3-D inputs, got {a.ndim} dims")
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


def _fft_dtype(dtype):
    if dtype.kind in "biu":
        return np.dtype(np.float64)
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def _convolve(a, b, mode, method, integer_result=True):
    """Linear convolution of two same-ndim arrays, cropped to ``mode``.

    Integer inputs give an integer result (``convolve``/``correlate``) or a
    float64 one (``fftconvolve``, ``integer_result=False``), as in SciPy.
    """
    if a.size == 0 or b.size == 0:
        return np.zeros((0,) * a.ndim, np.result_type(a, b))
    if _swap_needed(mode, a.shape, b.shape):
        a, b = b, a
    result_dtype = np.result_type(a, b)
    if not integer_result:      # what scipy.fft computes each input in
        result_dtype = np.result_type(_fft_dtype(a.dtype), _fft_dtype(b.dtype))
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
    if method == "auto":
        method = choose(padded.shape, flipped.shape)
    out = correlate_valid(padded, flipped, method)
    if result_dtype.kind in "iu":
        return np.rint(out).astype(result_dtype)
    if result_dtype.kind == "b":
        return out != 0
    return out.astype(result_dtype, copy=False)


def convolve(in1, in2, mode="full", method="auto"):
    """Convolve two N-D arrays (N = 1, 2, 3), as ``scipy.signal.convolve``.

    Parameters
    ----------
    in1, in2 : array_like, same number of dims
    mode : {'full', 'valid', 'same'}, default 'full'
    method : {'auto', 'direct', 'fft'}, default 'auto'

    Returns
    -------
    ndarray
        dtype ``np.result_type(in1, in2)``; integer inputs give integer results.
    """
    a, b = _check(in1, in2, mode, method, "convolve")
    return _convolve(a, b, mode, method)


def correlate(in1, in2, mode="full", method="auto"):
    """Cross-correlate two N-D arrays, as ``scipy.signal.correlate`` (in2 is conjugated)."""
    a, b = _check(in1, in2, mode, method, "correlate")
    reversed_conj = b[(slice(None, None, -1),) * b.ndim]
    if np.iscomplexobj(reversed_conj):
        reversed_conj = reversed_conj.conj()
    return _convolve(a, reversed_conj, mode, method)


def fftconvolve(in1, in2, mode="full"):
    """Convolve two N-D arrays with FFTs, as ``scipy.signal.fftconvolve`` (no ``axes``)."""
    a, b = _check(in1, in2, mode, "fft", "fftconvolve")
    return _convolve(a, b, mode, "fft", integer_result=False)


def choose_conv_method(in1, in2, mode="full"):
    """'direct' or 'fft': what ``method='auto'`` would use for these inputs."""
    a, b = _check(in1, in2, mode, "auto", "choose_conv_method")
    full = [x + y - 1 for x, y in zip(a.shape, b.shape)]
    return choose(full, b.shape)
