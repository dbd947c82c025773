"""Gradients of convolution and transposed convolution (``torch.nn.grad`` semantics).

Built on the forward kernels: the input gradient of a convolution is a
transposed convolution of ``grad_output`` (and vice versa), the weight
gradient is a GEMM of im2col columns with ``grad_output``, reduced over the
batch in a fixed order.  Complex gradients follow PyTorch's convention (the
conjugate Wirtinger derivative): ``grad_input = conv_transpose(grad_output,
conj(weight))`` and ``grad_weight = sum(grad_output * conj(input))``.
"""
from dataclasses import replace

import numpy as np

from . import _costs, _dispatch, _docs, _engine, _workspace
from ._args import (CallCache, as_array, call_signature, option_keywords, pad3, parse_conv,
                    result_dtype, shape5)
from ._dispatch import _FORCED
from ._fastpath import FastInputGradCall, FastWeightGradCall, all_finite, as_compute
from ._padding import pad_adjoint

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


# -- prepared calls -------------------------------------------------------------------
#
# Each gradient function validates a call signature once (shapes, dtypes,
# options: see _args.call_signature) into a prepared call; repeated calls
# with arrays of that signature skip straight to the kernel.

_CALLS = CallCache()


def _without_arrays(prob):
    """The validated problem without the first call's arrays: a cache must not keep them alive."""
    return replace(prob, x=None, w=None, bias=None)


class _InputGradCall:
    """Input gradient of a (transposed) convolution, prepared for one signature.

    For a convolution: a transposed convolution of grad_output (on the padded
    grid for reflect/replicate/circular, folded back by ``pad_adjoint``); for
    a transposed convolution: a convolution of grad_output, cropped.
    """

    __slots__ = ("prob", "dtype", "conj", "g5", "w5", "grad5", "grad_shape", "kernel")

    def __init__(self, prob, w, g, dtype):
        nd = prob.nd
        self.dtype, self.conj = dtype, np.iscomplexobj(w)
        self.prob = _without_arrays(prob)
        grad_shape = prob.x.shape
        pad_left = [left for left, _ in prob.pads]
        if prob.padding_mode != "zeros":
            grad_shape = grad_shape[:2] + tuple(n + l + r for n, (l, r)
                                                in zip(grad_shape[2:], prob.pads))
            pad_left = (0,) * nd
        self.grad_shape = grad_shape
        self.g5, self.w5, self.grad5 = (shape5(s, nd) for s in (g.shape, w.shape, grad_shape))
        op = "forward" if prob.transposed else "input_grad"
        self.kernel = _engine.KernelCall(
            op, self.g5, self.w5, self.grad5, dtype, pad3(prob.stride, nd, 1),
            pad3(pad_left, nd, 0), pad3(prob.dilation, nd, 1), prob.groups,
            implementation=_dispatch.forced_implementation())

    def __call__(self, weight, grad_output):
        prob, dtype = self.prob, self.dtype
        g = as_compute(grad_output, dtype, self.g5)
        w = as_compute(np.conj(weight) if self.conj else weight, dtype, self.w5)
        grad = _workspace.aligned_empty(self.grad5, dtype)
        self.kernel(g, w, None, grad)
        grad = grad.reshape(self.grad_shape)
        if prob.padding_mode != "zeros":
            grad = pad_adjoint(grad, prob.pads, prob.padding_mode, overwrite=True)
        return grad if prob.batched else grad[0]


def _prepare_input_grad(op, nd, weight, input_shape, grad_output, options):
    """Validate an input-gradient call: its prepared call and the arrays to pass it."""
    input_shape = _shape(input_shape, "input_shape", op)
    w = as_array(weight, "weight", op)
    prob = parse_conv(op, nd, _placeholder(input_shape, w.dtype), w, None, **options)
    g = _check_grad_output(grad_output, prob, op)
    call = _InputGradCall(prob, w, g, result_dtype(op, w, g))
    kernel = call.kernel.prepared
    if kernel is not None and prob.padding_mode == "zeros" and not call.conj:
        # the kernel fills the gradient in the caller's input_shape directly
        call = FastInputGradCall(call, kernel, call.dtype, input_shape, prob.batched,
                                 call.kernel.macs, _costs.MIN_MACS_PER_THREAD,
                                 _dispatch.threads_for, call.kernel.prepared_checks_weight)
    return call, (w, g)


class _WeightGradCall:
    """Weight gradient of a (transposed) convolution, prepared for one signature.

    For a convolution: the weight-gradient kernel on the input (its
    reflect/replicate/circular padding read by the kernel, or padded by the
    registry's 'pad_first') and grad_output; for a transposed convolution: the
    same kernel with the two swapped, conjugated.
    """

    __slots__ = ("prob", "dtype", "x5", "g5", "dw5", "weight_shape", "kernel", "crop")

    def __init__(self, prob, x, g, weight_shape, dtype):
        nd = prob.nd
        self.dtype, self.weight_shape = dtype, weight_shape
        self.prob = _without_arrays(prob)
        pad_left = [left for left, _ in prob.pads]
        self.x5, self.g5, self.dw5 = (shape5(s, nd) for s in (prob.x.shape, g.shape,
                                                              weight_shape))
        stride, pad, dilation = (pad3(prob.stride, nd, 1), pad3(pad_left, nd, 0),
                                 pad3(prob.dilation, nd, 1))
        forced = _dispatch.forced_implementation()
        if prob.transposed:
            # The weight gradient of the convolution that maps grad_output back to
            # input, conjugated: sum(x * conj(g)) -> sum(g * conj(x)).
            self.kernel = _engine.KernelCall("weight_grad", self.g5, self.dw5, self.x5, dtype,
                                             stride, pad, dilation, prob.groups,
                                             implementation=forced)
            self.crop = (stride, pad, dilation)
        else:
            self.kernel = _engine.KernelCall("weight_grad", self.x5, self.dw5, self.g5, dtype,
                                             stride, pad, dilation, prob.groups,
                                             implementation=forced,
                                             padding_mode=prob.padding_mode)
            self.crop = None

    def __call__(self, input, grad_output):
        prob, dtype = self.prob, self.dtype
        x = as_compute(input, dtype, self.x5)
        g = as_compute(grad_output, dtype, self.g5)
        dw = np.empty(self.dw5, dtype)
        if not prob.transposed:
            self.kernel(x, dw, None, g)
            return dw.reshape(self.weight_shape)
        self.kernel(g, dw, None, x)
        if not all_finite(x):
            _nan_where_nonfinite_meets_crop(dw, x, g.shape, *self.crop, prob.groups)
        return _conj(dw.reshape(self.weight_shape))


def _prepare_weight_grad(op, nd, input, weight_shape, grad_output, options):
    """Validate a weight-gradient call: its prepared call and the arrays to pass it."""
    weight_shape = _shape(weight_shape, "weight_shape", op)
    x = as_array(input, "input", op)
    prob = parse_conv(op, nd, x, _placeholder(weight_shape, x.dtype), None, **options)
    g = _check_grad_output(grad_output, prob, op)
    call = _WeightGradCall(prob, x, g, weight_shape, result_dtype(op, x, g))
    kernel = call.kernel.prepared
    if kernel is not None and not prob.transposed:
        # the kernel fills the gradient in the caller's weight_shape directly
        call = FastWeightGradCall(call, kernel, call.dtype, weight_shape, prob.batched,
                                  call.kernel.macs, _costs.MIN_MACS_PER_THREAD,
                                  _dispatch.threads_for)
    return call, (prob.x, g)


def _gradient(prepare, op, nd, array, shape, grad_output, options):
    """Run a gradient through its prepared call (made by ``prepare`` on first use).

    ``array``: the weight (input gradients) or the input (weight gradients);
    ``shape``: the shape of the other.  ``options``: the public function's own
    (stride, padding, dilation or output_padding, groups, padding_mode or
    dilation), part of the key.
    """
    key = call_signature(op, (array, grad_output), (shape, _FORCED.get()) + options)
    call = _CALLS.get(key)
    if call is None:
        call, arrays = prepare(op, nd, array, shape, grad_output, option_keywords(op, options))
        _CALLS.put(key, call)
        return call(*arrays)
    return call(array, grad_output)


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
    return _gradient(_prepare_input_grad, "conv1d_input", 1, weight, input_shape,
                     grad_output, (stride, padding, dilation, groups, padding_mode))


def conv2d_input(input_shape, weight, grad_output, stride=1, padding=0, dilation=1,
                 groups=1, *, padding_mode="zeros"):
    return _gradient(_prepare_input_grad, "conv2d_input", 2, weight, input_shape,
                     grad_output, (stride, padding, dilation, groups, padding_mode))


def conv3d_input(input_shape, weight, grad_output, stride=1, padding=0, dilation=1,
                 groups=1, *, padding_mode="zeros"):
    return _gradient(_prepare_input_grad, "conv3d_input", 3, weight, input_shape,
                     grad_output, (stride, padding, dilation, groups, padding_mode))


def conv1d_weight(input, weight_shape, grad_output, stride=1, padding=0, dilation=1,
                  groups=1, *, padding_mode="zeros"):
    return _gradient(_prepare_weight_grad, "conv1d_weight", 1, input, weight_shape,
                     grad_output, (stride, padding, dilation, groups, padding_mode))


def conv2d_weight(input, weight_shape, grad_output, stride=1, padding=0, dilation=1,
                  groups=1, *, padding_mode="zeros"):
    return _gradient(_prepare_weight_grad, "conv2d_weight", 2, input, weight_shape,
                     grad_output, (stride, padding, dilation, groups, padding_mode))


def conv3d_weight(input, weight_shape, grad_output, stride=1, padding=0, dilation=1,
                  groups=1, *, padding_mode="zeros"):
    return _gradient(_prepare_weight_grad, "conv3d_weight", 3, input, weight_shape,
                     grad_output, (stride, padding, dilation, groups, padding_mode))


def conv_transpose1d_input(input_shape, weight, grad_output, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1):
    return _gradient(_prepare_input_grad, "conv_transpose1d_input", 1, weight, input_shape,
                     grad_output, (stride, padding, output_padding, groups, dilation))


def conv_transpose2d_input(input_shape, weight, grad_output, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1):
    return _gradient(_prepare_input_grad, "conv_transpose2d_input", 2, weight, input_shape,
                     grad_output, (stride, padding, output_padding, groups, dilation))


def conv_transpose3d_input(input_shape, weight, grad_output, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1):
    return _gradient(_prepare_input_grad, "conv_transpose3d_input", 3, weight, input_shape,
                     grad_output, (stride, padding, output_padding, groups, dilation))


def conv_transpose1d_weight(input, weight_shape, grad_output, stride=1, padding=0,
                            output_padding=0, groups=1, dilation=1):
    return _gradient(_prepare_weight_grad, "conv_transpose1d_weight", 1, input, weight_shape,
                     grad_output, (stride, padding, output_padding, groups, dilation))


def conv_transpose2d_weight(input, weight_shape, grad_output, stride=1, padding=0,
                            output_padding=0, groups=1, dilation=1):
    return _gradient(_prepare_weight_grad, "conv_transpose2d_weight", 2, input, weight_shape,
                     grad_output, (stride, padding, output_padding, groups, dilation))


def conv_transpose3d_weight(input, weight_shape, grad_output, stride=1, padding=0,
                            output_padding=0, groups=1, dilation=1):
    return _gradient(_prepare_weight_grad, "conv_transpose3d_weight", 3, input, weight_shape,
                     grad_output, (stride, padding, output_padding, groups, dilation))


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
