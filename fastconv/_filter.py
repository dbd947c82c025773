"""Single-array correlation shared by ``ndimage`` and ``signal``.

``correlate_valid`` correlates an already padded 1-D/2-D/3-D array with a
kernel ('valid' output), choosing the direct kernel or FFT per call from the
cost model in ``_engine`` (calibrated on a 2-core Zen 4).
"""
import numpy as np

from . import _engine

def choose(padded_shape, kernel_shape):
    """'direct' or 'fft', whichever ``_engine``'s cost model predicts is faster."""
    out = np.prod([p - k + 1 for p, k in zip(padded_shape, kernel_shape)], dtype=float)
    direct = _engine.direct_cost(out * np.prod(kernel_shape, dtype=float))
    fft = _engine.fft_cost(float(np.prod(padded_shape, dtype=float)), 3)
    return "direct" if direct <= fft else "fft"


def correlate_valid(padded, kernel, method="auto", batched=False):
    """'valid' cross-correlation of arrays of 1 to 3 dims and one dtype.

    With ``batched=True`` the first axis of ``padded`` is a batch of
    independent arrays (one kernel call for all of them).
    """
    batch = padded.shape[0] if batched else 1
    spatial = padded.shape[1:] if batched else padded.shape
    nd = len(spatial)
    x = np.ascontiguousarray(padded).reshape((batch, 1) + (1,) * (3 - nd) + spatial)
    w = np.ascontiguousarray(kernel).reshape((1, 1) + (1,) * (3 - nd) + kernel.shape)
    out_shape = tuple(p - k + 1 for p, k in zip(spatial, kernel.shape))
    out = np.empty((batch, 1) + (1,) * (3 - nd) + out_shape, padded.dtype)
    if method == "auto":
        method = choose(spatial, kernel.shape)
    algorithm = "fft" if method == "fft" else "direct"
    _engine.conv_forward(x, w, None, out, (1, 1, 1), (0, 0, 0), (1, 1, 1), 1, algorithm)
    return out.reshape(((batch,) if batched else ()) + out_shape)
