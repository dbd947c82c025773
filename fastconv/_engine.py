"""Kernel dispatch: algorithm choice, tile sizes and threads.

Everything here receives validated, C-contiguous, 5-D arrays of one compute
dtype (see ``_args``) and fills the output it is given.  Tile sizes depend on
the problem shape only, never on the thread count, so results are
bit-identical for any number of threads.
"""
import numpy as np

from . import _fft
from ._kernels import direct as _direct, gemm as _gemm
from ._threads import get_num_threads, single_threaded_blas

#: Algorithms that ``algorithm=`` accepts besides 'auto'.
ALGORITHMS = ("direct", "im2col", "fft")

_INT_MAX = 2**31 - 1
_COL_BUFFER_BYTES = 1 << 21      # per-thread im2col buffer: about L2 + a bit
_MIN_JOBS = 8                    # split work into at least this many jobs where possible


# A thread gets at least this many multiply-adds (~0.1 ms): waking a second
# thread for less costs more than it saves, and far more when the other core is
# busy (a spinning OpenMP thread then waits for a time slice).
_MIN_MACS_PER_THREAD = 1 << 20


def _threads_for(macs):
    return max(1, min(get_num_threads(), macs // _MIN_MACS_PER_THREAD))


def _ceil_div(a, b):
    return -(-a // b)


def _gemm_tile(rows, length, outer_jobs, itemsize):
    """Columns per GEMM tile: a bounded buffer, and enough jobs to share.

    Callers pass ``outer_jobs`` without the batch size: tiles (and so every
    output's order of operations) depend on one sample's shape only.
    """
    tile = max(64, _COL_BUFFER_BYTES // max(1, rows * itemsize))
    tile = min(length, tile)
    if outer_jobs * _ceil_div(length, tile) < _MIN_JOBS:
        tile = max(min(length, 64), _ceil_div(length, _ceil_div(_MIN_JOBS, outer_jobs)))
    return max(1, min(tile, _INT_MAX))


#: Stride-1 float32/float64 convolutions run on fastconv's own micro-kernel
#: (no second packing of the column matrix); False falls back to BLAS.
USE_MICROKERNEL = True
_PANEL_BUFFER_BYTES = 1 << 19


def _panel_tile(rows, length, outer_jobs, dtype):
    """Grid positions per micro-kernel job: whole panels, a bounded buffer."""
    width = _gemm.panel_widths()[0 if dtype == np.float32 else 1]
    tile = max(width, _PANEL_BUFFER_BYTES // max(1, rows * dtype.itemsize))
    tile = min(tile, length)
    if outer_jobs * _ceil_div(length, tile) < _MIN_JOBS:
        tile = _ceil_div(length, _ceil_div(_MIN_JOBS, outer_jobs))
    return max(width, _ceil_div(tile, width) * width)


def _check_blas_dims(*dims):
    if max(dims) > _INT_MAX:
        raise ValueError(f"fastconv: a GEMM dimension {max(dims)} exceeds BLAS's 32-bit limit; "
                         "use algorithm='direct'")


# Cost model, calibrated on a 2-core Zen 4 (one thread, float32; benchmarks/):
# the direct kernel streams ~11 G multiply-adds/s on thin problems, and a
# single-channel FFT convolution (two forward transforms and one inverse,
# scipy.fft) costs about 1.1 ns per M*log2(M) padded points, i.e. ~0.37 ns per
# transform.  Both scale alike with threads.
_DIRECT_SECONDS_PER_MAC = 1.0 / 11e9
_FFT_SECONDS_PER_POINT_LOG = 0.37e-9


def fft_cost(points, transforms):
    """Seconds for ``transforms`` real FFTs of ``points`` padded points.

    Past ~16 M points the transforms stream from memory instead of cache and
    ran about twice slower than the in-cache rate (512^3 volume, 7^3 kernel:
    FFT 7.5-12 s against 4.8-6 s direct), so they are charged double.
    """
    rate = _FFT_SECONDS_PER_POINT_LOG * (2.0 if points > 2**24 else 1.0)
    return transforms * rate * points * np.log2(max(points, 2))


def direct_cost(macs):
    return macs * _DIRECT_SECONDS_PER_MAC


def choose_forward(x, w, groups, out=None, stride=(1, 1, 1)):
    """'direct' for thin problems (C_out/groups <= 2: depthwise, single-channel),
    'fft' among those when the cost model prefers it (large kernels), else 'im2col'."""
    cog = w.shape[0] // groups
    if cog > 2:
        return "im2col"
    if out is not None and stride == (1, 1, 1) and groups == 1 and x.shape[1] <= 2:
        points = int(np.prod([o + k - 1 for o, k in zip(out.shape[2:], w.shape[2:])]))
        transforms = x.shape[0] * (x.shape[1] + w.shape[0]) + w.shape[0] * w.shape[1]
        if fft_cost(points, transforms) < direct_cost(out.size * w[0].size):
            return "fft"
    return "direct"


def choose_transpose(x, w, groups):
    cog = w.shape[1]
    cig = w.shape[0] // groups
    if cog * w.shape[2] * w.shape[3] * w.shape[4] < 8 or cig < 8:
        return "direct"
    return "im2col"


def _nan_where_padding_meets_nonfinite(out, w, x_shape, stride, pad, dilation, groups):
    """NaN where a non-finite weight tap reads zero padding (0 * inf = NaN).

    The direct kernel skips padding taps; PyTorch multiplies them.  Only the
    outputs concerned are touched, so no padded copy of the input is needed.
    """
    nan = np.array(np.nan, out.dtype) if out.dtype.kind == "f" else np.array(
        complex(np.nan, np.nan), out.dtype)
    for co, _, *tap in np.argwhere(~np.isfinite(w)):
        inside = [(0 <= np.arange(o) * s + t * d - p) & (np.arange(o) * s + t * d - p < n)
                  for o, s, t, d, p, n in zip(out.shape[2:], stride, tap, dilation, pad,
                                              x_shape[2:])]
        reads_padding = ~(inside[0][:, None, None] & inside[1][None, :, None]
                          & inside[2][None, None, :])
        if reads_padding.any():
            out[:, co][:, reads_padding] = nan


def _all_finite(*arrays):
    return all(np.isfinite(a).all() for a in arrays)


def _bias_or_zeros(bias, channels, dtype):
    return np.zeros(channels, dtype) if bias is None else bias


def _fill_bias(out, bias):
    out[...] = 0 if bias is None else bias.reshape((1, -1) + (1,) * (out.ndim - 2))


def conv_forward(x, w, bias, out, stride, pad, dilation, groups, algorithm="auto"):
    """out = conv(x, w) + bias, with left padding ``pad`` (zeros)."""
    if out.size == 0:
        return out
    if x.size == 0 or w.size == 0:          # no input channels: the sum is empty
        _fill_bias(out, bias)
        return out
    if algorithm == "auto":
        algorithm = choose_forward(x, w, groups, out, stride)
    if algorithm == "fft":
        if _all_finite(x, w):
            return _fft.conv_forward(x, w, bias, out, stride, pad, dilation, groups)
        algorithm = "direct"        # one NaN would spread over the whole FFT result
    poison = algorithm == "direct" and any(pad) and not np.isfinite(w).all()
    nt = _threads_for(out.size * w[0].size)
    b = _bias_or_zeros(bias, out.shape[1], out.dtype)
    if algorithm == "direct":
        _direct.conv_forward(x, w, b, out, stride, pad, dilation, groups, nt)
        if poison:
            _nan_where_padding_meets_nonfinite(out, w, x.shape, stride, pad, dilation, groups)
        return out
    cog = w.shape[0] // groups
    k = w[0].size
    _check_blas_dims(cog, k)
    if _use_shifted(x, w, out, stride, dilation):
        xp = _zero_pad(x, w, out, pad, dilation)
        grid = ((out.shape[2] - 1) * xp.shape[3] + out.shape[3] - 1) * xp.shape[4] + out.shape[4]
        if USE_MICROKERNEL and x.dtype.kind == "f":
            tile = _panel_tile(k, grid, groups, x.dtype)
            _gemm.conv_forward_packed(xp, w, b, bias is not None, out, dilation, groups, nt,
                                      tile)
            return out
        tile = _gemm_tile(k, grid, groups, x.itemsize)
        with single_threaded_blas():
            _gemm.conv_forward_shifted(xp, w, b, bias is not None, out, dilation, groups, nt, tile)
        return out
    tile = _gemm_tile(k, out[0, 0].size, groups, x.itemsize)
    with single_threaded_blas():
        _gemm.conv_forward(x, w, b, bias is not None, out, stride, pad, dilation, groups, nt, tile)
    return out


_SHIFTED_MAX_WASTE = 1.3     # grid cells computed per real output cell


def _use_shifted(x, w, out, stride, dilation):
    """Stride 1, a padded copy of the order of the data, little work wasted on the grid.

    A 1x1x1 kernel qualifies only for the micro-kernel (float32/float64): for
    BLAS the plain pointwise GEMM on the input itself is better.  Huge padding
    or dilation with a small output goes the classic way instead of padding a
    copy of the input to its full extent.
    """
    if stride != (1, 1, 1):
        return False
    if w[0, 0].size == 1 and not (USE_MICROKERNEL and x.dtype.kind == "f"):
        return False
    _, _, do, ho, wo = out.shape
    dp, hp, wp = (o + d * (k - 1) for o, d, k in zip(out.shape[2:], dilation, w.shape[2:]))
    if dp * hp * wp > 4 * (x[0, 0].size + out[0, 0].size) + 4096:
        return False
    grid = ((do - 1) * hp + ho - 1) * wp + wo
    return grid <= _SHIFTED_MAX_WASTE * do * ho * wo


def _zero_pad(x, w, out, pad, dilation, stride=(1, 1, 1)):
    """x zero-padded to exactly the extent a convolution into ``out`` reads."""
    extent = [(o - 1) * s + d * (k - 1) + 1
              for o, s, d, k in zip(out.shape[2:], stride, dilation, w.shape[2:])]
    if pad == (0, 0, 0) and list(x.shape[2:]) == extent:
        return x
    xp = np.zeros(x.shape[:2] + tuple(extent), x.dtype)
    src = tuple(slice(0, max(0, min(n, e - p))) for n, e, p in zip(x.shape[2:], extent, pad))
    dst = tuple(slice(p, p + s.stop) for p, s in zip(pad, src))
    xp[(slice(None), slice(None)) + dst] = x[(slice(None), slice(None)) + src]
    return xp


def transpose_forward(x, w, bias, out, stride, pad, dilation, groups, algorithm="auto"):
    """out = conv_transpose(x, w) + bias; out's spatial shape may crop the formula's."""
    if out.size == 0:
        return out
    if x.size == 0 or w.size == 0:
        _fill_bias(out, bias)
        return out
    if algorithm == "auto":
        algorithm = choose_transpose(x, w, groups)
    if algorithm == "fft":
        if _all_finite(x, w):
            return _fft.transpose_forward(x, w, bias, out, stride, pad, dilation, groups)
        algorithm = "direct"
    nt = _threads_for(x.size * w[0].size)
    b = _bias_or_zeros(bias, out.shape[1], out.dtype)
    if algorithm == "direct":
        _direct.transpose_forward(x, w, b, out, stride, pad, dilation, groups, nt)
        return out
    cig, cog = w.shape[0] // groups, w.shape[1]
    kvol = w[0, 0].size
    _check_blas_dims(cig, cog * kvol)
    # Channel blocks from the group count only: a sample's bits must not depend
    # on the batch it shares.
    cblock = max(1, _ceil_div(cog, _ceil_div(_MIN_JOBS, groups))) if groups < _MIN_JOBS else cog
    tile = _gemm_tile(cblock * kvol, x[0, 0].size, _MIN_JOBS, x.itemsize)
    with single_threaded_blas():
        _gemm.transpose_forward(x, w, b, out, stride, pad, dilation, groups, nt, tile, cblock)
    return out


def conv_weight_grad(x, grad_out, dw, stride, pad, dilation, groups):
    """dw = sum over batch and positions of grad_out * conj(im2col(x)) (overwritten)."""
    if dw.size == 0:
        return dw
    if x.size == 0 or grad_out.size == 0:
        dw[...] = 0
        return dw
    nt = _threads_for(grad_out.size * dw[0].size)
    cog = dw.shape[0] // groups
    if cog <= 2 and grad_out.shape[1] >= 2 * nt:
        # Thin (depthwise, single-channel): dot products per (out, in) channel
        # pair beat hundreds of tiny GEMMs.
        _direct.conv_weight_grad(x, grad_out, dw, stride, pad, dilation, groups, nt)
        return dw
    k = dw[0].size
    _check_blas_dims(cog, k)
    rblock = max(1, _ceil_div(k, _ceil_div(_MIN_JOBS, groups))) if groups < _MIN_JOBS else k
    if _use_shifted(x, dw, grad_out, stride, dilation):
        xp = _zero_pad(x, dw, grad_out, pad, dilation)
        grid = ((grad_out.shape[2] - 1) * xp.shape[3] + grad_out.shape[3] - 1) * xp.shape[4] \
            + grad_out.shape[4]
        tile = _gemm_tile(rblock + cog, grid, _MIN_JOBS, x.itemsize)
        with single_threaded_blas():
            _gemm.conv_weight_grad_shifted(xp, grad_out, dw, dilation, groups, nt, tile, rblock)
        return dw
    tile = _gemm_tile(rblock, grad_out[0, 0].size, _MIN_JOBS, x.itemsize)
    with single_threaded_blas():
        _gemm.conv_weight_grad(x, grad_out, dw, stride, pad, dilation, groups, nt, tile, rblock)
    return dw
