"""Single-array correlation shared by ``ndimage`` and ``signal``.

``correlate_valid`` correlates an already padded 1-D/2-D/3-D array with a
kernel ('valid' output), choosing the direct kernel or FFT per call from a
cost model calibrated on a 2-core Zen 4 (see ``choose``).
"""
import numpy as np

from . import _engine

# Seconds per multiply-add of the direct kernel and per FFT "n log2 n" unit,
# measured with 2 threads on float32 volumes (benchmarks/): the direct kernel
# streams ~8 GMAC/s per core on single-channel filters; scipy.fft does a
# float32 rfftn+irfftn pair at roughly 1.5 ns per n*log2(n) point.
_DIRECT_SECONDS_PER_MAC = 1.0 / 14e9
_FFT_SECONDS_PER_NLOGN = 1.0 / 1.2e9


def choose(padded_shape, kernel_shape):
    """'direct' or 'fft', whichever the cost model predicts is faster."""
    out = np.prod([p - k + 1 for p, k in zip(padded_shape, kernel_shape)], dtype=float)
    direct = out * np.prod(kernel_shape, dtype=float) * _DIRECT_SECONDS_PER_MAC
    n = np.prod(padded_shape, dtype=float)
    fft = 3 * n * np.log2(max(n, 2)) * _FFT_SECONDS_PER_NLOGN     # forward x, kernel, inverse
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
