"""FFT convolution: the 'fft' algorithm of the deep-learning API and of the filters.

The spatial axes are transformed with ``scipy.fft`` (its own threads:
``workers`` = fastconv's thread count), channels are contracted per
frequency with a batched matrix product, and the result is transformed back.
Stride and dilation are exact: the kernel is dilated by inserting zeros and
the stride-1 result is subsampled.

Memory: the transforms of the input, the weight and the output, each over
the padded spatial size ``L + k - 1`` per axis (real inputs use half
spectra), i.e. about (C_in + C_out) / C_in times the input size plus the
weight's spectra (C_out * C_in/groups spectra): for single-channel filtering
about 2-3x the input.
"""
import numpy as np
import scipy.fft as sfft

from . import _fftconv
from ._threads import get_num_threads


def _dilate(w, dilation):
    """Kernel with (d - 1) zeros inserted between taps along each spatial axis."""
    if all(d == 1 for d in dilation):
        return w
    k = w.shape[2:]
    out = np.zeros(w.shape[:2] + tuple(d * (n - 1) + 1 for n, d in zip(k, dilation)), w.dtype)
    out[(slice(None), slice(None)) + tuple(slice(None, None, d) for d in dilation)] = w
    return out


def _single_channel(x, wd, out, pad):
    """out = the window of conv(x, flipped wd) that a one-channel, stride-1
    correlation reads, by ``signal.fftconvolve``'s engine: transforms of the
    needed length per axis, no padded copy of x, overlap-add when cheaper."""
    axes = (2, 3, 4)
    k = wd.shape[2:]
    wf = wd[(slice(None), slice(None)) + (slice(None, None, -1),) * 3]
    starts = [kk - 1 - p for kk, p in zip(k, pad)]
    lengths = list(out.shape[2:])
    s1, s2 = list(x.shape[2:]), list(k)
    real = x.dtype.kind == "f"
    blocking = _fftconv.choose_blocking(s1, s2, starts, lengths, real, x.dtype.itemsize)
    workers = get_num_threads()
    if blocking is None:
        out[...] = _fftconv.convolve_window(x, wf, axes, starts, lengths, workers)
    else:
        out[...] = _fftconv.overlap_add(x, wf, axes, starts, lengths, workers, *blocking)


def conv_forward(x, w, bias, out, stride, pad, dilation, groups):
    """out = conv(x, w) + bias via FFT; x, w, out are 5-D, zero padding ``pad`` (left)."""
    nd = 3
    axes = tuple(range(2, 2 + nd))
    wd = _dilate(w, dilation)
    k = wd.shape[2:]
    if w.shape[:2] == (1, 1) and x.shape[1] == 1 and stride == (1, 1, 1) and \
            all(p <= kk - 1 for p, kk in zip(pad, k)):
        _single_channel(x, wd, out, pad)
        if bias is not None:
            out += bias.reshape(1, -1, 1, 1, 1)
        return out
    # Only the input region the output reads: left pad, and just enough on the right.
    need = [(o - 1) * s + kk for o, s, kk in zip(out.shape[2:], stride, k)]
    xp = np.zeros(x.shape[:2] + tuple(need), x.dtype)
    src = tuple(slice(0, max(0, min(n, e - p))) for n, e, p in zip(x.shape[2:], need, pad))
    dst = tuple(slice(p, p + s.stop) for p, s in zip(pad, src))
    xp[(slice(None), slice(None)) + dst] = x[(slice(None), slice(None)) + src]
    real = not np.iscomplexobj(xp)
    shape = [sfft.next_fast_len(n, real=real) for n in need]
    fwd, inv = _transforms(real)
    workers = get_num_threads()
    # Correlation = convolution with the flipped kernel.
    wf = wd[(slice(None), slice(None)) + (slice(None, None, -1),) * nd]
    Y = _contract(fwd(xp, s=shape, axes=axes, workers=workers),
                  fwd(wf, s=shape, axes=axes, workers=workers), groups, transposed=False)
    y = inv(Y, s=shape, axes=axes, workers=workers)
    valid = tuple(slice(kk - 1, kk - 1 + (o - 1) * s + 1, s)
                  for kk, o, s in zip(k, out.shape[2:], stride))
    out[...] = y[(slice(None), slice(None)) + valid]
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1, 1)
    return out


def _contract(X, Wf, groups, transposed):
    """Per-frequency channel contraction of input spectra X with weight spectra Wf."""
    n, c = X.shape[:2]
    spatial = X.shape[2:]
    nfreq = int(np.prod(spatial))
    cig = c // groups
    if transposed:                        # Wf: (C_in, C_out/groups, ...)
        cog = Wf.shape[1]
        Wg = Wf.reshape(groups, cig, cog, nfreq).transpose(0, 3, 1, 2)   # (g, F, cig, cog)
    else:                                 # Wf: (C_out, C_in/groups, ...)
        cog = Wf.shape[0] // groups
        Wg = Wf.reshape(groups, cog, cig, nfreq).transpose(0, 3, 2, 1)   # (g, F, cig, cog)
    if cig * cog <= 16:
        # Few channels: a broadcast multiply-add per input channel streams the
        # spectra once; matmul over millions of tiny matrices would crawl.
        Xs = X.reshape(n, groups, 1, cig, nfreq)
        Ws = Wg.transpose(0, 3, 2, 1)[np.newaxis]                         # (1, g, cog, cig, F)
        Y = Xs[:, :, :, 0] * Ws[:, :, :, 0]
        for ci in range(1, cig):
            Y += Xs[:, :, :, ci] * Ws[:, :, :, ci]
        return Y.reshape((n, groups * cog) + spatial)
    # One sample at a time: a batched matmul's blocking (and so its rounding)
    # would depend on how many samples share the call.
    Y = np.empty((n, groups * cog) + spatial, np.result_type(X, Wf))
    for i in range(n):
        Xg = X[i].reshape(groups, cig, nfreq).transpose(0, 2, 1)[:, :, np.newaxis]  # (g,F,1,cig)
        Y[i] = np.matmul(Xg, Wg)[:, :, 0].transpose(0, 2, 1).reshape((groups * cog,) + spatial)
    return Y


def _transforms(real):
    return (sfft.rfftn, sfft.irfftn) if real else (sfft.fftn, sfft.ifftn)


def transpose_forward(x, w, bias, out, stride, pad, dilation, groups):
    """out = conv_transpose(x, w) + bias via FFT: zero-upsample x, convolve, crop."""
    axes = (2, 3, 4)
    up = np.zeros(x.shape[:2] + tuple((n - 1) * s + 1 for n, s in zip(x.shape[2:], stride)),
                  x.dtype)
    up[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)] = x
    wd = _dilate(w, dilation)
    full = [u + k - 1 for u, k in zip(up.shape[2:], wd.shape[2:])]
    real = not np.iscomplexobj(up)
    shape = [sfft.next_fast_len(n, real=real) for n in full]
    fwd, inv = _transforms(real)
    workers = get_num_threads()
    Y = _contract(fwd(up, s=shape, axes=axes, workers=workers),
                  fwd(wd, s=shape, axes=axes, workers=workers), groups, transposed=True)
    y = inv(Y, s=shape, axes=axes, workers=workers)
    out[...] = 0
    # Output o is full-convolution position o + pad; positions past the full
    # length (output_padding larger than pad) receive nothing but the bias.
    take = tuple(slice(p, min(p + o, f)) for p, o, f in zip(pad, out.shape[2:], full))
    put = tuple(slice(0, t.stop - t.start) for t in take)
    out[(slice(None), slice(None)) + put] = y[(slice(None), slice(None)) + take]
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1, 1)
    return out
