"""Drop-in replacements for ``scipy.ndimage.correlate`` and ``convolve``.

Same arguments, modes, origins and output dtype rules as SciPy, on 1-D to
3-D data, computed in parallel by fastconv's kernels (direct or FFT, chosen
per call).  SciPy's boundary modes and PyTorch's padding modes are listed
in ``fastconv._boundary``.
"""
import warnings

import numpy as np

from . import _ndfilters
from ._args import as_array
from ._boundary import SCIPY_MODES as _MODES
from ._filter import correlate_valid
from ._ndfilters import ArgumentError
from ._ndfilters import (convolve1d, correlate1d, gaussian_filter, gaussian_filter1d,
                         gaussian_gradient_magnitude, gaussian_laplace, laplace, prewitt, sobel,
                         uniform_filter, uniform_filter1d)
from ._threads import resolve_workers, workers_scope

__all__ = ["correlate", "convolve", "correlate1d", "convolve1d", "gaussian_filter",
           "gaussian_filter1d", "uniform_filter", "uniform_filter1d", "sobel", "prewitt",
           "laplace", "gaussian_laplace", "gaussian_gradient_magnitude"]


def _per_axis(value, nd, name, op):
    if np.isscalar(value):
        return [int(value)] * nd
    value = [int(v) for v in value]
    if len(value) != nd:
        raise ArgumentError(f"{op}: {name}: sequence argument must have length equal to input "
                            f"rank: expected an int or a sequence of {nd} ints, got {value!r}")
    return value


def _dyadic_grid(a):
    """2**m if every value is a multiple of 2**-m (m <= 30), else None."""
    if a.dtype.kind in "iub":
        return 1.0
    if a.dtype.kind != "f":
        return None
    for m in range(31):
        scaled = a * 2.0 ** m
        if np.array_equal(scaled, np.round(scaled)):
            return 2.0 ** m
    return None


def _sum_grid(x, w):
    """Grid on which every correlation sum of x and w lies exactly, or None.

    Only when the sums stay far inside float64's exact range, so that any
    rounding of the FFT path can be undone by rounding to the grid.
    """
    gx, gw = _dyadic_grid(x), _dyadic_grid(w)
    if gx is None or gw is None or x.size == 0:
        return None
    bound = float(np.abs(x).max()) * float(np.abs(w).sum()) * gx * gw
    return gx * gw if bound < 2.0 ** 40 else None


def _output(output, input, weights, shape, op):
    """The array to return and the dtype to compute in (SciPy's rules)."""
    complex_result = np.iscomplexobj(input) or np.iscomplexobj(weights)
    if output is None:
        dtype = np.promote_types(input.dtype, np.complex64) if complex_result else input.dtype
        result = np.empty(shape, dtype)
    elif isinstance(output, np.ndarray):
        if output.shape != shape:
            raise ValueError(f"{op}: expected output of shape {shape}, got {output.shape}")
        if complex_result and not np.iscomplexobj(output):
            raise RuntimeError(f"{op}: output must have a complex dtype for complex input "
                               f"or weights, got {output.dtype}")
        result = output
    else:
        try:
            dtype = np.dtype(output)
        except TypeError:
            raise TypeError(f"{op}: expected output to be None, an ndarray or a dtype, "
                            f"got {output!r}") from None
        if complex_result and dtype.kind != "c":
            if isinstance(output, str):
                raise RuntimeError(f"{op}: output must have a complex dtype for complex input "
                                   f"or weights, got {dtype}")
            # a dtype or type: SciPy promotes it, with a warning
            warnings.warn("promoting specified output dtype to complex", stacklevel=4)
            dtype = np.promote_types(dtype, np.complex64)
        result = np.empty(shape, dtype)
    # Compute in float32 only when every operand and the output are float32.
    single = (input.dtype in (np.float32, np.complex64) and weights.dtype.itemsize <=
              (8 if complex_result else 4) and result.dtype.itemsize <= (8 if complex_result else 4)
              and result.dtype.kind in "fc")
    work = (np.complex64 if single else np.complex128) if complex_result else \
        (np.float32 if single else np.float64)
    return result, np.dtype(work)


def correlate(input, weights, output=None, mode="reflect", cval=0.0, origin=0, axes=None, *,
              workers=None):
    """Multidimensional correlation, as ``scipy.ndimage.correlate``.

    Parameters
    ----------
    input : array_like, 1-D to 3-D
    weights : array_like, same ndim as ``input`` (or as ``len(axes)``)
    output : ndarray or dtype, optional
        Defaults to the input's dtype (complex if ``weights`` is complex);
        integer outputs truncate toward zero, as SciPy does.
    mode : {'reflect', 'constant', 'nearest', 'mirror', 'wrap', 'grid-mirror',
            'grid-constant', 'grid-wrap'}, default 'reflect'
    cval : scalar, default 0.0
        Fill value for 'constant'.
    origin : int or sequence of ints, default 0
        Shifts the kernel; ``-(k // 2) <= origin <= (k - 1) // 2``.
    axes : sequence of ints, optional
        The axes to filter along (the others are filtered independently).
        Dim i of ``weights`` and ``origin[i]`` belong to ``axes[i]``.  SciPy
        pairs the origins that way but the weights with the axes in
        increasing order (scipy/scipy#22576); fastconv deliberately does not
        follow that for unsorted ``axes``.
    workers : int, optional
        Threads: None = fastconv's setting, -1 = all cores (as ``scipy.fft``).

    Returns
    -------
    ndarray of the input's shape

    Notes
    -----
    A kernel that is exactly an outer product of 1-D factors (rank 1, checked
    bit for bit in float64: Gaussian, box, Sobel-like kernels) runs as one
    1-D pass per axis (:func:`correlate1d`), without a padded copy of the
    input; see ``fastconv._ndfilters.separable_correlate`` for when it does
    not (complex data, zero taps over non-finite data, integer outputs whose
    sums a pass could round).
    """
    return _filter("correlate", input, weights, output, mode, cval, origin, axes, flip=False,
                   workers=workers)


def convolve(input, weights, output=None, mode="reflect", cval=0.0, origin=0, axes=None, *,
             workers=None):
    """Multidimensional convolution, as ``scipy.ndimage.convolve`` (see :func:`correlate`)."""
    return _filter("convolve", input, weights, output, mode, cval, origin, axes, flip=True,
                   workers=workers)


def _filter(op, input, weights, output, mode, cval, origin, axes, flip, workers=None):
    nt = resolve_workers(workers, op)
    x = as_array(input, "input", op)
    w = as_array(weights, "weights", op)
    if x.ndim < 1 or x.ndim > 3 and axes is None:
        raise ValueError(f"{op}: expected a 1-D, 2-D or 3-D input, got {x.ndim} dims")
    axes = _ndfilters._axes(axes, x.ndim, op)       # SciPy's rules and messages
    if not 1 <= len(axes) <= 3:
        raise ValueError(f"{op}: expected 1 to 3 distinct axes, got {axes}")
    if w.ndim != len(axes):
        raise RuntimeError(f"{op}: weights.ndim ({w.ndim}) must match len(axes) ({len(axes)}): "
                           f"weights array has {w.ndim} dims, expected {len(axes)} "
                           f"(the number of filtered axes)")
    if w.size == 0:
        raise RuntimeError(f"{op}: weights must not be empty, got shape {w.shape}")
    if not isinstance(mode, str):
        raise ArgumentError(f"{op}: A sequence of modes is not supported: expected one mode "
                            f"string, got {mode!r}")
    if np.iscomplexobj(cval) and not np.iscomplexobj(x):
        raise ValueError(f"{op}: Cannot provide a complex-valued cval when the input is real "
                         f"(got cval={cval!r})")
    if mode not in _MODES:
        raise ValueError(f"{op}: expected mode to be one of {', '.join(map(repr, _MODES))}, "
                         f"got {mode!r}")
    origins = _per_axis(origin, len(axes), "origin", op)
    if not flip and np.iscomplexobj(w):
        w = w.conj()          # as np.correlate and SciPy: complex weights are conjugated
    if flip:
        # convolve == correlate with the flipped kernel, the origin mirrored
        # (and moved by one on even-length axes so the centre stays put).
        w = w[(slice(None, None, -1),) * w.ndim]
        origins = [-o - (1 - k % 2) for o, k in zip(origins, w.shape)]
    for o, k in zip(origins, w.shape):
        if not -(k // 2) <= o <= (k - 1) // 2:
            raise ValueError(f"{op}: invalid origin {origin!r} for weights of shape {w.shape}: "
                             f"expected -(k // 2) <= origin <= (k - 1) // 2")
    result, work = _output(output, x, w, x.shape, op)
    if x.size == 0:
        return result
    if _ndfilters.separable_correlate(x, w, result, axes, origins, mode, cval, nt) is not None:
        return result
    with workers_scope(nt):
        return _filter_nd(x, w, result, work, axes, origins, mode, cval)


def _filter_nd(x, w, result, work, axes, origins, mode, cval):
    """The N-D path: a padded copy of the input, then fastconv's direct or FFT kernel."""
    xw = x.astype(work, copy=False)
    ww = w.astype(work, copy=False)
    # Filtered axes last, the others flattened into one batch of independent filters.
    rest = [a for a in range(x.ndim) if a not in axes]
    xt = np.moveaxis(xw, list(axes), list(range(len(rest), x.ndim)))
    batch_shape = xt.shape[:len(rest)]
    xt = xt.reshape((-1,) + xt.shape[len(rest):])
    pads = [(0, 0)] + [(k // 2 + o, k - 1 - (k // 2 + o)) for k, o in zip(w.shape, origins)]
    np_mode = _MODES[mode]
    kwargs = {"constant_values": cval} if np_mode == "constant" else {}
    padded = np.pad(xt, pads, mode=np_mode, **kwargs)
    method = "auto"
    grid = _sum_grid(xw, ww) if result.dtype.kind in "iub" else None
    if result.dtype.kind in "iub" and grid is None:
        method = "direct"   # truncation must see SciPy's direct sums, not FFT round-off
    out = correlate_valid(padded, ww, method, batched=True)
    out = out.reshape(batch_shape + out.shape[1:])
    out = np.moveaxis(out, list(range(len(rest), x.ndim)), list(axes))
    if result.dtype.kind in "iub":
        # Data and weights on grids of 2**-m: the exact sum lies on the product
        # grid, so round away any FFT round-off first; then truncate like SciPy.
        out = out.real if out.dtype.kind == "c" else out
        if grid is not None:
            out = np.rint(out * grid) / grid
        out = np.trunc(out)
    result[...] = out if result.dtype.kind == "c" else out.real
    return result
