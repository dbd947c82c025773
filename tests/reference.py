"""A slow, obviously-correct float64 NumPy oracle for convolution.

Nothing here is shared with the package: padding goes through ``np.pad`` and
the sums are explicit loops over kernel taps with ``np.einsum``.
"""
import itertools

import numpy as np

_NP_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
                "circular": "wrap"}


def _wide(a):
    a = np.asarray(a)
    return a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)


def _pairs(padding, kernel, dilation):
    nd = len(kernel)
    if padding == "valid":
        return [(0, 0)] * nd
    if padding == "same":
        return [((d * (k - 1)) // 2, d * (k - 1) - (d * (k - 1)) // 2)
                for k, d in zip(kernel, dilation)]
    if np.isscalar(padding):
        padding = (padding,) * nd
    return [(int(p), int(p)) for p in padding]


def _tuple(v, nd):
    return (v,) * nd if np.isscalar(v) else tuple(v)


def conv(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """Batched (N, C, *spatial) convolution in float64 / complex128."""
    x, w = _wide(x), _wide(w)
    nd = x.ndim - 2
    kernel = w.shape[2:]
    stride, dilation = _tuple(stride, nd), _tuple(dilation, nd)
    pads = _pairs(padding, kernel, dilation)
    xp = np.pad(x, [(0, 0), (0, 0)] + pads, mode=_NP_PAD_MODE[padding_mode])
    out_sp = [(n - d * (k - 1) - 1) // s + 1
              for n, k, s, d in zip(xp.shape[2:], kernel, stride, dilation)]
    cin_g, cout_g = w.shape[1], w.shape[0] // groups
    out = np.zeros((x.shape[0], w.shape[0], *out_sp), dtype=np.result_type(x, w))
    for g in range(groups):
        xs = xp[:, g * cin_g:(g + 1) * cin_g]
        wg = w[g * cout_g:(g + 1) * cout_g]
        for tap in itertools.product(*[range(k) for k in kernel]):
            window = tuple(slice(t * d, t * d + s * (o - 1) + 1, s)
                           for t, d, s, o in zip(tap, dilation, stride, out_sp))
            patch = xs[(slice(None), slice(None)) + window]
            out[:, g * cout_g:(g + 1) * cout_g] += np.einsum(
                "nc...,oc->no...", patch, wg[(slice(None), slice(None)) + tap])
    if b is not None:
        out += _wide(b).reshape((1, -1) + (1,) * nd)
    return out


def conv_transpose(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Batched transposed convolution by explicit scatter, in float64 / complex128."""
    x, w = _wide(x), _wide(w)
    nd = x.ndim - 2
    kernel = w.shape[2:]
    stride, dilation = _tuple(stride, nd), _tuple(dilation, nd)
    padding, output_padding = _tuple(padding, nd), _tuple(output_padding, nd)
    full = [(n - 1) * s + d * (k - 1) + 1 + op
            for n, s, d, k, op in zip(x.shape[2:], stride, dilation, kernel, output_padding)]
    cin_g, cout_g = w.shape[0] // groups, w.shape[1]
    out = np.zeros((x.shape[0], cout_g * groups, *full), dtype=np.result_type(x, w))
    for g in range(groups):
        xs = x[:, g * cin_g:(g + 1) * cin_g]
        wg = w[g * cin_g:(g + 1) * cin_g]
        for tap in itertools.product(*[range(k) for k in kernel]):
            window = tuple(slice(t * d, t * d + s * (n - 1) + 1, s)
                           for t, d, s, n in zip(tap, dilation, stride, x.shape[2:]))
            out[(slice(None), slice(g * cout_g, (g + 1) * cout_g)) + window] += np.einsum(
                "nc...,co->no...", xs, wg[(slice(None), slice(None)) + tap])
    crop = tuple(slice(p, n - p) for p, n in zip(padding, full))
    out = out[(slice(None), slice(None)) + crop]
    if b is not None:
        out = out + _wide(b).reshape((1, -1) + (1,) * nd)
    return out


def _pairs_nd(padding, kernel, dilation, nd):
    return _pairs(padding, kernel, _tuple(dilation, nd))


def conv_weight(x, w_shape, g, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros"):
    """dW[o, c, tap] = sum over n, positions of g[n, o] * conj(padded x window)."""
    x = _wide(x)
    g = _wide(g)
    nd = x.ndim - 2
    kernel = w_shape[2:]
    stride, dilation = _tuple(stride, nd), _tuple(dilation, nd)
    pads = _pairs_nd(padding, kernel, dilation, nd)
    xp = np.pad(x, [(0, 0), (0, 0)] + pads, mode=_NP_PAD_MODE[padding_mode])
    cin_g, cout_g = w_shape[1], w_shape[0] // groups
    dw = np.zeros(w_shape, np.result_type(x, g))
    for grp in range(groups):
        xs = xp[:, grp * cin_g:(grp + 1) * cin_g]
        gs = g[:, grp * cout_g:(grp + 1) * cout_g]
        for tap in itertools.product(*[range(k) for k in kernel]):
            window = tuple(slice(t * d, t * d + s * (o - 1) + 1, s)
                           for t, d, s, o in zip(tap, dilation, stride, g.shape[2:]))
            patch = xs[(slice(None), slice(None)) + window]
            sp = "xyz"[:nd]
            dw[(slice(grp * cout_g, (grp + 1) * cout_g), slice(None)) + tap] = np.einsum(
                f"no{sp},nc{sp}->oc", gs, np.conj(patch))
    return dw


def conv_transpose_weight(x, w_shape, g, stride=1, padding=0, output_padding=0,
                              groups=1, dilation=1):
    """dW[c, o, tap] = sum over n, i of conj(x[n, c, i]) * g[n, o, i*s + tap*d - p]."""
    x = _wide(x)
    g = _wide(g)
    nd = x.ndim - 2
    kernel = w_shape[2:]
    stride, dilation = _tuple(stride, nd), _tuple(dilation, nd)
    padding = _tuple(padding, nd)
    # pad g back to the full (uncropped) transposed-convolution extent
    gp = np.pad(g, [(0, 0), (0, 0)] + [(p, p + 1 + d * k) for p, d, k
                                         in zip(padding, dilation, kernel)])
    cin_g, cout_g = w_shape[0] // groups, w_shape[1]
    dw = np.zeros(w_shape, np.result_type(x, g))
    for grp in range(groups):
        xs = x[:, grp * cin_g:(grp + 1) * cin_g]
        gs = gp[:, grp * cout_g:(grp + 1) * cout_g]
        for tap in itertools.product(*[range(k) for k in kernel]):
            window = tuple(slice(t * d, t * d + s * (n - 1) + 1, s)
                           for t, d, s, n in zip(tap, dilation, stride, x.shape[2:]))
            sp = "xyz"[:nd]
            dw[(slice(grp * cin_g, (grp + 1) * cin_g), slice(None)) + tap] = np.einsum(
                f"nc{sp},no{sp}->co", np.conj(xs), gs[(slice(None), slice(None)) + window])
    return dw


def conv_input(x_shape, w, g, stride=1, padding=0, dilation=1, groups=1):
    """Zero-padding convolution's input gradient: a transposed conv of g, to x's size."""
    nd = len(x_shape) - 2
    kernel = w.shape[2:]
    s, d = _tuple(stride, nd), _tuple(dilation, nd)
    pads = _pairs_nd(padding, kernel, d, nd)
    # transposed conv of g with the left padding, enough right output_padding
    full = conv_transpose(g, np.conj(_wide(w)), None, s, 0, 0, groups, d)
    crop = []
    for (left, _), n in zip(pads, x_shape[2:]):
        crop.append((left, n))
    out = np.zeros(x_shape, full.dtype)
    src, dst = [], []
    for (left, n), f in zip(crop, full.shape[2:]):
        take = min(n, f - left)
        src.append(slice(left, left + take))
        dst.append(slice(0, take))
    out[(slice(None), slice(None)) + tuple(dst)] = full[(slice(None), slice(None)) + tuple(src)]
    return out


def conv_transpose_input(x_shape, w, g, stride=1, padding=0, output_padding=0, groups=1,
                             dilation=1):
    y = conv(g, np.conj(_wide(w)), None, stride, padding, dilation, groups)
    return y[(slice(None), slice(None)) + tuple(slice(0, n) for n in x_shape[2:])]
