"""Gradients of convolution and transposed convolution (``torch.nn.grad`` semantics).

Built on the forward kernels: the input gradient of a convolution is a
transposed convolution of ``grad_output`` (and vice versa), the weight
gradient is a GEMM of im2col columns with ``grad_output``, reduced over the
batch in a fixed order.  Complex gradients follow PyTorch's convention (the
conjugate Wirtinger derivative): ``grad_input = conv_transpose(grad_output,
conj(weight))`` and ``grad_weight = sum(grad_output * conj(input))``.
"""
import numpy as np

from . import _engine
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
    _input_gradient(g, w, grad, prob.stride, pad_left, prob.dilation, prob.groups, nd)
    if prob.padding_mode != "zeros":
        grad = pad_adjoint(grad, prob.pads, prob.padding_mode)
    return grad if prob.batched else grad[0]


def _input_gradient(g, w, grad, stride, pad_left, dilation, groups, nd):
    """grad (filled) = transposed convolution of g with w, cropped to grad's shape.

    With stride 1 this is a plain convolution with the flipped, channel-swapped
    kernel and padding d*(k-1) - p, which runs on the (faster) forward kernels.
    """
    kernel = w.shape[2:]
    flipped_pad = [d * (k - 1) - p for d, k, p in zip(dilation, kernel, pad_left)]
    if all(s == 1 for s in stride) and all(p >= 0 for p in flipped_pad):
        cout, cig = w.shape[:2]
        swapped = (w.reshape((groups, cout // groups, cig) + kernel).swapaxes(1, 2)
                   .reshape((cig * groups, cout // groups) + kernel))
        flipped = np.ascontiguousarray(swapped[(Ellipsis,) + (slice(None, None, -1),) * nd])
        _engine.conv_forward(to_5d(g, nd), to_5d(flipped, nd), None, to_5d(grad, nd),
                             (1, 1, 1), pad3(flipped_pad, nd, 0), pad3(dilation, nd, 1), groups)
    else:
        _engine.transpose_forward(to_5d(g, nd), to_5d(w, nd), None, to_5d(grad, nd),
                                  pad3(stride, nd, 1), pad3(pad_left, nd, 0),
                                  pad3(dilation, nd, 1), groups)


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
    _engine.conv_weight_grad(to_5d(g, nd), to_5d(x, nd), to_5d(dw, nd),
                             pad3(prob.stride, nd, 1), pad3([l for l, _ in prob.pads], nd, 0),
                             pad3(prob.dilation, nd, 1), prob.groups)
    return _conj(dw)


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


def _make(nd):
    def conv_input(input_shape, weight, grad_output, stride=1, padding=0, dilation=1,
                   groups=1, *, padding_mode="zeros"):
        return _conv_input(nd, input_shape, weight, grad_output, stride, padding, dilation,
                           groups, padding_mode)

    def conv_weight(input, weight_shape, grad_output, stride=1, padding=0, dilation=1,
                    groups=1, *, padding_mode="zeros"):
        return _conv_weight(nd, input, weight_shape, grad_output, stride, padding, dilation,
                            groups, padding_mode)

    def transpose_input(input_shape, weight, grad_output, stride=1, padding=0,
                        output_padding=0, groups=1, dilation=1):
        return _transpose_input(nd, input_shape, weight, grad_output, stride, padding,
                                output_padding, groups, dilation)

    def transpose_weight(input, weight_shape, grad_output, stride=1, padding=0,
                         output_padding=0, groups=1, dilation=1):
        return _transpose_weight(nd, input, weight_shape, grad_output, stride, padding,
                                 output_padding, groups, dilation)

    conv_input.__doc__ = (f"Gradient of conv{nd}d with respect to its input, as "
                          f"``torch.nn.grad.conv{nd}d_input``; ``padding_mode`` folds the "
                          "gradient of the padded border back onto the input.")
    conv_weight.__doc__ = (f"Gradient of conv{nd}d with respect to its weight, as "
                           f"``torch.nn.grad.conv{nd}d_weight``.")
    transpose_input.__doc__ = f"Gradient of conv_transpose{nd}d with respect to its input."
    transpose_weight.__doc__ = f"Gradient of conv_transpose{nd}d with respect to its weight."
    for f, name in ((conv_input, f"conv{nd}d_input"), (conv_weight, f"conv{nd}d_weight"),
                    (transpose_input, f"conv_transpose{nd}d_input"),
                    (transpose_weight, f"conv_transpose{nd}d_weight")):
        f.__name__ = f.__qualname__ = name
        globals()[name] = f


for _nd in (1, 2, 3):
    _make(_nd)
del _nd
