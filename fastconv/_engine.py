"""Front door of the kernels: validated 5-D arrays in, the output filled.

Everything here receives C-contiguous, 5-D arrays of one compute dtype (see
``_args``) and fills the output it is given.  It handles the empty cases,
describes the call as a per-sample :class:`~fastconv._dispatch.Problem` and
lets the registry (``_dispatch``) pick and run the implementation.
"""
import numpy as np

from . import _dispatch
from ._dispatch import ALGORITHMS, Arrays, Problem  # noqa: F401 (ALGORITHMS re-exported)


def _fill_bias(out, bias):
    out[...] = 0 if bias is None else bias.reshape((1, -1) + (1,) * (out.ndim - 2))


def _problem(op, x, w, out, stride, pad, dilation, groups, finite_weight=True):
    return Problem(op, x.shape[1:], w.shape, out.shape[1:], x.dtype, tuple(stride), tuple(pad),
                   tuple(dilation), groups, finite_weight)


def choose(op, x_shape, w_shape, out_shape, dtype, stride=(1, 1, 1), pad=(0, 0, 0),
           dilation=(1, 1, 1), groups=1, algorithm="auto"):
    """The :class:`~fastconv._dispatch.Choice` for a call of these 5-D shapes (no data)."""
    p = Problem(op, tuple(x_shape[1:]), tuple(w_shape), tuple(out_shape[1:]), np.dtype(dtype),
                tuple(stride), tuple(pad), tuple(dilation), groups)
    return _dispatch.select(p, algorithm)


def _finite(w):
    return bool(np.isfinite(w).all())


def conv_forward(x, w, bias, out, stride, pad, dilation, groups, algorithm="auto",
                 implementation=None, op="forward"):
    """out = conv(x, w) + bias, with left padding ``pad`` (zeros)."""
    if out.size == 0:
        return out
    if x.size == 0 or w.size == 0:          # no input channels: the sum is empty
        _fill_bias(out, bias)
        return out
    p = _problem(op, x, w, out, stride, pad, dilation, groups, _finite(w))
    _dispatch.run(p, Arrays(x, w, bias, out), algorithm, implementation)
    return out


def transpose_forward(x, w, bias, out, stride, pad, dilation, groups, algorithm="auto",
                      implementation=None):
    """out = conv_transpose(x, w) + bias; out's spatial shape may crop the formula's."""
    if out.size == 0:
        return out
    if x.size == 0 or w.size == 0:
        _fill_bias(out, bias)
        return out
    p = _problem("transpose", x, w, out, stride, pad, dilation, groups, _finite(w))
    _dispatch.run(p, Arrays(x, w, bias, out), algorithm, implementation)
    return out


def input_grad(g, w, grad, stride, pad, dilation, groups, implementation=None):
    """grad (filled) = transposed convolution of grad_output g with w, cropped to grad."""
    if grad.size == 0:
        return grad
    if g.size == 0 or w.size == 0:
        grad[...] = 0
        return grad
    p = _problem("input_grad", g, w, grad, stride, pad, dilation, groups, _finite(w))
    _dispatch.run(p, Arrays(g, w, None, grad), "auto", implementation)
    return grad


def conv_weight_grad(x, grad_out, dw, stride, pad, dilation, groups, implementation=None):
    """dw = sum over batch and positions of grad_out * conj(im2col(x)) (overwritten)."""
    if dw.size == 0:
        return dw
    if x.size == 0 or grad_out.size == 0:
        dw[...] = 0
        return dw
    p = Problem("weight_grad", x.shape[1:], dw.shape, grad_out.shape[1:], x.dtype,
                tuple(stride), tuple(pad), tuple(dilation), groups)
    _dispatch.run(p, Arrays(x, dw, None, grad_out), "auto", implementation)
    return dw
