"""Gradients of convolution and transposed convolution (``torch.nn.grad`` semantics).

Built on the forward kernels: the input gradient of a convolution is a
transposed convolution of ``grad_output`` (and vice versa), the weight
gradient is a GEMM of im2col columns with ``grad_output``, reduced over the
batch in a fixed order.  Complex gradients follow PyTorch's convention (the
conjugate Wirtinger derivative): ``grad_input = conv_transpose(grad_output,
conj(weight))`` and ``grad_weight = sum(grad_output * conj(input))``.
"""
import numpy as np

from . import _docs, _engine
from ._args import as_array, parse_conv, pad3, result_dtype, to_5d
from ._padding import pad as _pad, pad_adjoint

__all__ = [f"{kind}{nd}d_{part}" for kind in ("conv", "conv_transpose")
           for nd in (1, 2, 3) for part in ("input", "weight")] + ["conv_bias"]


def _shape(value, name, op):
    """A shape argument: a tuple or list of non-negative ints (as torch.Size)."""
    if not isinstance(value, (tuple, list)) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
            for v in value):
        raise TypeError(f"{op}: expected {name} to be a tuple of ints, got {value!r}")
    shape = tuple(int(v) for v in value)
    if any(v < 0 for v in shape):
        raise ValueError(f"{op}: expected {name} with non-negative sizes, got {shape}")
    return shape


def _placeholder(shape, dtype):
    """A read-only array of ``shape`` that costs no memory (for validation only)."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def _check_grad_output(g, prob, op):
    g = as_array(g, "grad_output", op)
    if g.shape != prob.user_out_shape:
        raise ValueError(f"{op}: expected grad_output of shape {prob.user_out_shape} (the "
                         f"forward output shape), got {g.shape}")
    return g if prob.batched else g[np.newaxis]


def _conj(a):
    return np.conj(a) if np.iscomplexobj(a) else a


def _conv_input(nd, input_shape, weight, grad_output, stride, padding, dilation, groups,
                padding_mode):
    op = f"conv{nd}d_input"
    input_shape = _shape(input_shape, "input_shape", op)
    w = as_array(weight, "weight", op)
    prob = parse_conv(op, nd, _placeholder(input_shape, w.dtype), w, None, stride, padding,
                      dilation, groups, padding_mode)
    g = _check_grad_output(grad_output, prob, op)
    dtype = result_dtype(op, w, g)
    g = np.ascontiguousarray(g, dtype)
    w = np.ascontiguousarray(_conj(w), dtype)
    x_shape = prob.x.shape
    if prob.padding_mode == "zeros":
        grad = np.empty(x_shape, dtype)
        pad_left = [left for left, _ in prob.pads]
    else:
        grad = np.empty(x_shape[:2] + tuple(n + l + r for n, (l, r)
                                             in zip(x_shape[2:], prob.pads)), dtype)
        pad_left = (0,) * nd
    _engine.input_grad(to_5d(g, nd), to_5d(w, nd), to_5d(grad, nd), pad3(prob.stride, nd, 1),
                       pad3(pad_left, nd, 0), pad3(prob.dilation, nd, 1), prob.groups)
    if prob.padding_mode != "zeros":
        grad = pad_adjoint(grad, prob.pads, prob.padding_mode)
    return grad if prob.batched else grad[0]


def _conv_weight(nd, input, weight_shape, grad_output, stride, padding, dilation, groups,
                 padding_mode):
    op = f"conv{nd}d_weight"
    weight_shape = _shape(weight_shape, "weight_shape", op)
    x = as_array(input, "input", op)
    prob = parse_conv(op, nd, x, _placeholder(weight_shape, x.dtype), None, stride, padding,
                      dilation, groups, padding_mode)
    g = _check_grad_output(grad_output, prob, op)
    dtype = result_dtype(op, x, g)
    x = np.ascontiguousarray(prob.x, dtype)
    g = np.ascontiguousarray(g, dtype)
    pad_left = [left for left, _ in prob.pads]
    if prob.padding_mode != "zeros":
        x = _pad(x, prob.pads, prob.padding_mode)
        pad_left = (0,) * nd
    dw = np.empty(weight_shape, dtype)
    _engine.conv_weight_grad(to_5d(x, nd), to_5d(g, nd), to_5d(dw, nd),
                             pad3(prob.stride, nd, 1), pad3(pad_left, nd, 0),
                             pad3(prob.dilation, nd, 1), prob.groups)
    return dw


def _transpose_input(nd, input_shape, weight, grad_output, stride, padding, output_padding,
                     groups, dilation):
    op = f"conv_transpose{nd}d_input"
    input_shape = _shape(input_shape, "input_shape", op)
    w = as_array(weight, "weight", op)
    prob = parse_conv(op, nd, _placeholder(input_shape, w.dtype), w, None, stride, padding,
                      dilation, groups, transposed=True, output_padding=output_padding)
    g = _check_grad_output(grad_output, prob, op)
    dtype = result_dtype(op, w, g)
    g = np.ascontiguousarray(g, dtype)
    w = np.ascontiguousarray(_conj(w), dtype)
    grad = np.empty(prob.x.shape, dtype)
    # A convolution of grad_output, cropped to the input's size.
    _engine.conv_forward(to_5d(g, nd), to_5d(w, nd), None, to_5d(grad, nd),
                         pad3(prob.stride, nd, 1), pad3([l for l, _ in prob.pads], nd, 0),
                         pad3(prob.dilation, nd, 1), prob.groups)
    return grad if prob.batched else grad[0]


def _transpose_weight(nd, input, weight_shape, grad_output, stride, padding, output_padding,
                      groups, dilation):
    op = f"conv_transpose{nd}d_weight"
    weight_shape = _shape(weight_shape, "weight_shape", op)
    x = as_array(input, "input", op)
    prob = parse_conv(op, nd, x, _placeholder(weight_shape, x.dtype), None, stride, padding,
                      dilation, groups, transposed=True, output_padding=output_padding)
    g = _check_grad_output(grad_output, prob, op)
    dtype = result_dtype(op, x, g)
    x = np.ascontiguousarray(prob.x, dtype)
    g = np.ascontiguousarray(g, dtype)
    dw = np.empty(weight_shape, dtype)
    # The weight gradient of the convolution that maps grad_output back to input,
    # conjugated: sum(x * conj(g)) -> sum(g * conj(x)).
    pad_left = pad3([left for left, _ in prob.pads], nd, 0)
    _engine.conv_weight_grad(to_5d(g, nd), to_5d(x, nd), to_5d(dw, nd),
                             pad3(prob.stride, nd, 1), pad_left, pad3(prob.dilation, nd, 1),
                             prob.groups)
    if not np.isfinite(x).all():
        _nan_where_nonfinite_meets_crop(to_5d(dw, nd), to_5d(x, nd), to_5d(g, nd).shape,
                                        pad3(prob.stride, nd, 1), pad_left,
                                        pad3(prob.dilation, nd, 1), prob.groups)
    return _conj(dw)


def _nan_where_nonfinite_meets_crop(dw, x, g_shape, stride, pad, dilation, groups):
    """NaN in the taps where a non-finite input cell meets a cropped output position.

    Input cell i of a transposed convolution reaches output i*s + k*d - p
    through tap k; where that position is cropped away (padding), PyTorch
    still multiplies the zero grad_output there by x[i]: 0 * inf = NaN in
    dw[ci, :, k].  The kernels skip those products, so the NaNs are set here.
    """
    bad = ~np.isfinite(x).all(axis=0)                       # (C_in, D, H, W)
    nan = np.array(np.nan if dw.dtype.kind == "f" else complex(np.nan, np.nan), dw.dtype)
    reaches = [[(0 <= np.arange(n) * s + t * d - p) & (np.arange(n) * s + t * d - p < o)
                for t in range(k)]
               for n, s, d, p, o, k in zip(x.shape[2:], stride, dilation, pad, g_shape[2:],
                                           dw.shape[2:])]
    for tap in np.ndindex(*dw.shape[2:]):
        inside = (reaches[0][tap[0]][:, None, None] & reaches[1][tap[1]][None, :, None]
                  & reaches[2][tap[2]][None, None, :])
        hit = (bad & ~inside).reshape(len(bad), -1).any(axis=1)
        dw[(hit, slice(None)) + tap] = nan


def conv_bias(grad_output, nd):
    """Bias gradient: ``grad_output`` summed over every axis but the channel axis.

    Parameters
    ----------
    grad_output : array_like, shape (N, C_out, *spatial) or (C_out, *spatial)
    nd : int
        Number of spatial dims (1, 2 or 3); tells batched from unbatched.
    """
    g = as_array(grad_output, "grad_output", "conv_bias")
    if nd not in (1, 2, 3):
        raise ValueError(f"conv_bias: expected nd in (1, 2, 3), got {nd!r}")
    if g.ndim not in (nd + 1, nd + 2):
        raise ValueError(f"conv_bias: expected grad_output with {nd + 1} or {nd + 2} dims, "
                         f"got shape {g.shape}")
    channel_axis = g.ndim - nd - 1
    axes = tuple(a for a in range(g.ndim) if a != channel_axis)
    return g.sum(axis=axes, dtype=result_dtype("conv_bias", g))


def conv1d_input(input_shape, weight, grad_output, stride=1, padding=0, dilation=1,
                 groups=1, *, padding_mode="zeros"):
    return _conv_input(1, input_shape, weight, grad_output, stride, padding, dilation, groups,
                       padding_mode)


def conv2d_input(input_shape, weight, grad_output, stride=1, padding=0, dilation=1,
                 groups=1, *, padding_mode="zeros"):
    return _conv_input(2, input_shape, weight, grad_output, stride, padding, dilation, groups,
                       padding_mode)


def conv3d_input(input_shape, weight, grad_output, stride=1, padding=0, dilation=1,
                 groups=1, *, padding_mode="zeros"):
    return _conv_input(3, input_shape, weight, grad_output, stride, padding, dilation, groups,
                       padding_mode)


def conv1d_weight(input, weight_shape, grad_output, stride=1, padding=0, dilation=1,
                  groups=1, *, padding_mode="zeros"):
    return _conv_weight(1, input, weight_shape, grad_output, stride, padding, dilation, groups,
                        padding_mode)


def conv2d_weight(input, weight_shape, grad_output, stride=1, padding=0, dilation=1,
                  groups=1, *, padding_mode="zeros"):
    return _conv_weight(2, input, weight_shape, grad_output, stride, padding, dilation, groups,
                        padding_mode)


def conv3d_weight(input, weight_shape, grad_output, stride=1, padding=0, dilation=1,
                  groups=1, *, padding_mode="zeros"):
    return _conv_weight(3, input, weight_shape, grad_output, stride, padding, dilation, groups,
                        padding_mode)


def conv_transpose1d_input(input_shape, weight, grad_output, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1):
    return _transpose_input(1, input_shape, weight, grad_output, stride, padding,
                            output_padding, groups, dilation)


def conv_transpose2d_input(input_shape, weight, grad_output, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1):
    return _transpose_input(2, input_shape, weight, grad_output, stride, padding,
                            output_padding, groups, dilation)


def conv_transpose3d_input(input_shape, weight, grad_output, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1):
    return _transpose_input(3, input_shape, weight, grad_output, stride, padding,
                            output_padding, groups, dilation)


def conv_transpose1d_weight(input, weight_shape, grad_output, stride=1, padding=0,
                            output_padding=0, groups=1, dilation=1):
    return _transpose_weight(1, input, weight_shape, grad_output, stride, padding,
                             output_padding, groups, dilation)


def conv_transpose2d_weight(input, weight_shape, grad_output, stride=1, padding=0,
                            output_padding=0, groups=1, dilation=1):
    return _transpose_weight(2, input, weight_shape, grad_output, stride, padding,
                             output_padding, groups, dilation)


def conv_transpose3d_weight(input, weight_shape, grad_output, stride=1, padding=0,
                            output_padding=0, groups=1, dilation=1):
    return _transpose_weight(3, input, weight_shape, grad_output, stride, padding,
                             output_padding, groups, dilation)


_DOCS = {
    "conv{nd}d_input": _docs.CONV_INPUT,
    "conv{nd}d_weight": _docs.CONV_WEIGHT,
    "conv_transpose{nd}d_input": _docs.TRANSPOSE_INPUT,
    "conv_transpose{nd}d_weight": _docs.TRANSPOSE_WEIGHT,
}
for _name, _template in _DOCS.items():
    for _nd in (1, 2, 3):
        _docs.document(globals()[_name.format(nd=_nd)], _template, _nd)
del _name, _template, _nd
