"""Complex convolution as one real convolution with twice the channels.

With ``x = xr + i xi`` and ``w = wr + i wi``, per group

    [yr]   [wr  -wi] [xr]
    [yi] = [wi   wr] [xi]

so a complex convolution is a real one whose input stacks each group's real
and imaginary channel planes, and whose weight is the 2 x 2 block above:
four real multiply-adds per complex one, in the real kernels' register
blocking (the same operation count as complex arithmetic, and its accuracy;
the three-multiplication form is not used for these).  The weight gradient likewise:
``dw = sum g * conj(x)`` is ``(gr xr + gi xi) + i (gi xr - gr xi)``, read
off the real weight gradient of the planar arrays.
"""
from dataclasses import replace

import numpy as np

from . import _workspace
from ._fastpath import merge_complex, split_complex


def real_dtype(dtype):
    return np.empty(0, dtype).real.dtype


def _one_pass(*arrays):
    # _fastpath's conversions take aligned, C-contiguous, native-order arrays
    return all(a.flags.c_contiguous and a.flags.aligned and a.dtype.isnative for a in arrays)


def planar(a, groups, threads=1):
    """(N, C, *S) complex -> (N, 2C, *S) real: per group, real then imaginary channels
    (a temporary: ``_workspace`` scratch)."""
    n, c = a.shape[:2]
    spatial = a.shape[2:]
    if _one_pass(a):
        out = _workspace.empty((n, 2 * c) + spatial, real_dtype(a.dtype))
        split_complex(a, out, groups, False, threads)
        return out
    grouped = a.reshape((n, groups, 1, c // groups) + spatial)
    out = np.empty((n, groups, 2, c // groups) + spatial, real_dtype(a.dtype))
    out[:, :, :1] = grouped.real
    out[:, :, 1:] = grouped.imag
    return out.reshape((n, 2 * c) + spatial)


def planar_bias(bias, groups):
    """(C,) complex -> (2C,) real, in :func:`planar`'s channel order."""
    grouped = bias.reshape(groups, 1, -1)
    return np.concatenate([grouped.real, grouped.imag], axis=1).reshape(-1)


def planar_weight(w, groups):
    """(Co, Ci/g, *k) complex -> (2Co, 2Ci/g, *k) real: [[wr, -wi], [wi, wr]] per group."""
    cout, cig = w.shape[:2]
    kernel = w.shape[2:]
    wg = w.reshape((groups, cout // groups, cig) + kernel)
    out = np.empty((groups, 2, cout // groups, 2, cig) + kernel, real_dtype(w.dtype))
    out[:, 0, :, 0] = wg.real
    out[:, 0, :, 1] = -wg.imag
    out[:, 1, :, 0] = wg.imag
    out[:, 1, :, 1] = wg.real
    return out.reshape((2 * cout, 2 * cig) + kernel)


def unplanar(real, out, groups, threads=1):
    """Write the planar result ``real`` (N, 2C, *S) into the complex ``out`` (N, C, *S)."""
    if _one_pass(real, out):
        merge_complex(real, out, groups, False, threads)
        return
    n, c = out.shape[:2]
    spatial = out.shape[2:]
    src = real.reshape((n, groups, 2, c // groups) + spatial)
    dst = out.reshape((n, groups, c // groups) + spatial)
    dst.real = src[:, :, 0]
    dst.imag = src[:, :, 1]


def unplanar_weight_grad(real, dw, groups):
    """The complex weight gradient from the planar arrays' real one.

    ``real`` (2Co, 2Ci/g, *k) holds per group the blocks (g_re|g_im) x (x_re|x_im).
    """
    cout, cig = dw.shape[:2]
    kernel = dw.shape[2:]
    blocks = real.reshape((groups, 2, cout // groups, 2, cig) + kernel)
    dst = dw.reshape((groups, cout // groups, cig) + kernel)
    dst.real = blocks[:, 0, :, 0] + blocks[:, 1, :, 1]
    dst.imag = blocks[:, 1, :, 0] - blocks[:, 0, :, 1]


def problem(p):
    """The planar real Problem of a complex one (twice the channels, real dtype)."""
    return replace(p, x=(2 * p.x[0],) + p.x[1:], w=(2 * p.w[0], 2 * p.w[1]) + p.w[2:],
                   out=(2 * p.out[0],) + p.out[1:], dtype=real_dtype(p.dtype))


# -- the three-multiplication (Gauss) form, for complex64 forward convolutions ------------
#
#   t0 = conv(xr, wr),  t1 = conv(xi, wi),  t2 = conv(xr + xi, wr + wi)
#   yr = t0 - t1,       yi = t2 - t0 - t1
#
# three real convolutions instead of four, run as one grouped convolution with
# three times the groups.  This is the form PyTorch uses for complex
# convolutions, with its accuracy: yi is a difference of sums that can be much
# larger than it, so its error is relative to |xr + xi| |wr + wi| rather than
# to |y| (about 1e-6 of the largest term in float32, against 4e-7 for the
# four-multiplication form).  complex128 keeps the four-multiplication form.

def gauss_problem(p):
    """The real grouped Problem of the three-multiplication form."""
    return replace(p, x=(3 * p.x[0],) + p.x[1:], w=(3 * p.w[0],) + p.w[1:],
                   out=(3 * p.out[0],) + p.out[1:], groups=3 * p.groups,
                   dtype=real_dtype(p.dtype))


def _three(a, third, axis):
    parts = np.empty((3,) + a.shape, real_dtype(a.dtype))
    parts[0], parts[1] = a.real, a.imag
    np.add(a.real, third * a.imag, out=parts[2])
    return np.moveaxis(parts, 0, axis)


def gauss_input(x, threads=1):
    """(N, C, *S) complex -> (N, 3C, *S) real: xr, xi, xr + xi (a temporary:
    ``_workspace`` scratch)."""
    if _one_pass(x):
        out = _workspace.empty((x.shape[0], 3 * x.shape[1]) + x.shape[2:], real_dtype(x.dtype))
        split_complex(x, out, 1, True, threads)
        return out
    return np.ascontiguousarray(_three(x, 1, 1)).reshape((x.shape[0], -1) + x.shape[2:])


def gauss_weight(w):
    """(Co, Ci/g, *k) complex -> (3Co, Ci/g, *k) real: wr, wi, wr + wi."""
    return _three(w, 1, 0).reshape((-1,) + w.shape[1:])


def gauss_bias(b):
    """(Co,) complex -> (3Co,) real: br, 0, br + bi (so that yr and yi get br and bi)."""
    return np.concatenate([b.real, np.zeros_like(b.real), b.real + b.imag])


def ungauss(t, out, threads=1):
    """Write yr = t0 - t1, yi = t2 - t0 - t1 from ``t`` (N, 3Co, *S) into ``out``."""
    if _one_pass(t, out):
        merge_complex(t, out, 1, True, threads)
        return
    t = t.reshape((t.shape[0], 3, -1) + t.shape[2:])
    np.subtract(t[:, 0], t[:, 1], out=out.real)
    np.subtract(t[:, 2], t[:, 0], out=out.imag)
    out.imag -= t[:, 1]
