"""Forward convolution and transposed convolution (``torch.nn.functional`` semantics).

Every function normalises its arguments in ``_args``, converts the arrays to
the result dtype, pads explicitly only for the reflect / replicate /
circular modes, and hands 5-D views to the kernels in ``_engine``.
"""
import numpy as np

from . import _costs, _dispatch, _docs, _engine, _workspace
from ._args import (CallCache, call_signature, check_choice, check_out, option_keywords, pad3,
                    parse_conv, shape5)
from ._dispatch import _FORCED
from ._fastpath import FastForwardCall, as_compute

ALGORITHMS = _engine.ALGORITHMS


class _ForwardCall:
    """A validated (transposed) convolution, prepared once per call signature.

    Holds what validation, padding and kernel selection decided for these
    shapes, dtypes and options; calling it converts the arrays (no copy when
    they already are C-contiguous in the compute dtype), allocates the output
    and runs the kernel.
    """

    __slots__ = ("op", "dtype", "batched", "user_out_shape", "x5", "w5", "out5", "kernel")

    def __init__(self, prob, algorithm):
        nd = prob.nd
        check_choice(algorithm, ("auto",) + ALGORITHMS, "algorithm", prob.op)
        self.op, self.dtype, self.batched = prob.op, prob.dtype, prob.batched
        self.user_out_shape = prob.user_out_shape
        pad_left = tuple(left for left, _ in prob.pads)
        self.x5, self.w5, self.out5 = (shape5(s, nd) for s in (prob.x.shape, prob.w.shape,
                                                                prob.out_shape))
        # The right padding is implied by the output's size; a reflect/replicate/
        # circular mode is read by the kernel or padded by the registry's 'pad_first'.
        self.kernel = _engine.KernelCall(
            "transpose" if prob.transposed else "forward", self.x5, self.w5, self.out5,
            prob.dtype, pad3(prob.stride, nd, 1), pad3(pad_left, nd, 0),
            pad3(prob.dilation, nd, 1), prob.groups, algorithm, _dispatch.forced_implementation(),
            padding_mode=prob.padding_mode)

    def __call__(self, input, weight, bias, out):
        dtype = self.dtype
        x = as_compute(input, dtype, self.x5)
        w = as_compute(weight, dtype, self.w5)
        b = None if bias is None else np.ascontiguousarray(bias, dtype)
        if out is None:
            result = _workspace.aligned_empty(self.out5, dtype)
            self.kernel(x, w, b, result)
            return result.reshape(self.user_out_shape)
        check_out(out, self.user_out_shape, dtype, self.op)
        # An out= that overlaps an operand is filled only after the kernel has run.
        aliased = any(a is not None and np.may_share_memory(out, a)
                      for a in (input, weight, bias))
        result = np.empty(self.out5, dtype) if aliased else out.reshape(self.out5)
        self.kernel(x, w, b, result)
        if aliased:
            out[...] = result.reshape(out.shape)
        return out


_CALLS = CallCache()


def _call(op, nd, input, weight, bias, options, algorithm, out):
    """Run a forward call through its prepared call (made on first use).

    ``options``: the function's own (stride, padding, dilation or
    output_padding, groups, padding_mode or dilation), part of the key.
    """
    key = call_signature(op, (input, weight, bias), options + (algorithm, _FORCED.get()))
    call = _CALLS.get(key)
    if call is None:
        prob = parse_conv(op, nd, input, weight, bias, **option_keywords(op, options))
        call = _prepared(prob, algorithm)
        _CALLS.put(key, call)
        input, weight, bias = prob.x, prob.w, prob.bias       # as arrays
    return call(input, weight, bias, out)


def _prepared(prob, algorithm):
    """A :class:`_ForwardCall`, behind the compiled fast path where its kernel has one."""
    call = _ForwardCall(prob, algorithm)
    kernel = call.kernel.prepared
    if kernel is None:
        return call
    return FastForwardCall(call, kernel, call.dtype, call.user_out_shape, call.batched,
                           call.kernel.macs, _costs.MIN_MACS_PER_THREAD,
                           _dispatch.threads_for, call.kernel.prepared_checks_weight)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", algorithm="auto", out=None):
    return _call("conv1d", 1, input, weight, bias,
                 (stride, padding, dilation, groups, padding_mode), algorithm, out)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", algorithm="auto", out=None):
    return _call("conv2d", 2, input, weight, bias,
                 (stride, padding, dilation, groups, padding_mode), algorithm, out)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", algorithm="auto", out=None):
    return _call("conv3d", 3, input, weight, bias,
                 (stride, padding, dilation, groups, padding_mode), algorithm, out)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, *, algorithm="auto", out=None):
    return _call("conv_transpose1d", 1, input, weight, bias,
                 (stride, padding, output_padding, groups, dilation), algorithm, out)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, *, algorithm="auto", out=None):
    return _call("conv_transpose2d", 2, input, weight, bias,
                 (stride, padding, output_padding, groups, dilation), algorithm, out)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, *, algorithm="auto", out=None):
    return _call("conv_transpose3d", 3, input, weight, bias,
                 (stride, padding, output_padding, groups, dilation), algorithm, out)


for _nd, _f in ((1, conv1d), (2, conv2d), (3, conv3d)):
    _docs.document(_f, _docs.CONV, _nd)
for _nd, _f in ((1, conv_transpose1d), (2, conv_transpose2d), (3, conv_transpose3d)):
    _docs.document(_f, _docs.TRANSPOSE, _nd)
del _nd, _f
