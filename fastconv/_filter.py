"""Single-array correlation shared by ``ndimage`` and ``signal``.

``correlate_valid`` correlates an already padded 1-D/2-D/3-D array with a
kernel ('valid' output) through the registry's 'filter' table.
"""
import numpy as np

from . import _engine


def _as_3d(shape):
    return (1,) * (3 - len(shape)) + tuple(shape)


def choose(padded_shape, kernel_shape, dtype=np.float64):
    """The family (e.g. 'direct' or 'fft') the registry picks for one array."""
    spatial = _as_3d(padded_shape)
    kernel = _as_3d(kernel_shape)
    out = tuple(p - k + 1 for p, k in zip(spatial, kernel))
    return _engine.choose("filter", (1, 1) + spatial, (1, 1) + kernel, (1, 1) + out,
                          dtype).impl.family


def correlate_valid(padded, kernel, method="auto", batched=False):
    """'valid' cross-correlation of arrays of 1 to 3 dims and one dtype.

    With ``batched=True`` the first axis of ``padded`` is a batch of
    independent arrays (one kernel call for all of them; each array's result
    is the same as alone).
    """
    batch = padded.shape[0] if batched else 1
    spatial = padded.shape[1:] if batched else padded.shape
    nd = len(spatial)
    x = np.ascontiguousarray(padded).reshape((batch, 1) + (1,) * (3 - nd) + spatial)
    w = np.ascontiguousarray(kernel).reshape((1, 1) + (1,) * (3 - nd) + kernel.shape)
    out_shape = tuple(p - k + 1 for p, k in zip(spatial, kernel.shape))
    out = np.empty((batch, 1) + (1,) * (3 - nd) + out_shape, padded.dtype)
    if method == "auto":
        method = choose(spatial, kernel.shape)      # the filter kernels take every dtype
    _engine.conv_forward(x, w, None, out, (1, 1, 1), (0, 0, 0), (1, 1, 1), 1, method,
                         op="filter")
    return out.reshape(((batch,) if batched else ()) + out_shape)
