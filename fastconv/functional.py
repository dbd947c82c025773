"""Forward convolution and transposed convolution (``torch.nn.functional`` semantics).

Every function normalises its arguments in ``_args``, converts the arrays to
the result dtype, pads explicitly only for the reflect / replicate /
circular modes, and hands 5-D views to the kernels in ``_engine``.
"""
import numpy as np

from . import _engine
from ._args import check_choice, check_out, parse_conv, pad3, to_5d
from ._padding import pad as _pad

ALGORITHMS = _engine.ALGORITHMS


def _prepare(prob, out, algorithm):
    """Converted arrays and the array to write into, for a validated problem."""
    check_choice(algorithm, ("auto",) + ALGORITHMS, "algorithm", prob.op)
    if out is not None:
        check_out(out, prob.user_out_shape, prob.dtype, prob.op)
    x = np.ascontiguousarray(prob.x, dtype=prob.dtype)
    w = np.ascontiguousarray(prob.w, dtype=prob.dtype)
    b = None if prob.bias is None else np.ascontiguousarray(prob.bias, dtype=prob.dtype)
    aliased = out is not None and any(
        a is not None and np.may_share_memory(out, a) for a in (prob.x, prob.w, prob.bias))
    # An out= that overlaps an operand is filled only after the kernel has run.
    target = np.empty(prob.out_shape, prob.dtype) if out is None or aliased else out
    return x, w, b, target.reshape(prob.out_shape)


def _finish(prob, result, out):
    """The array to return: ``out`` itself when given, unbatched when the input was."""
    if out is None:
        return result if prob.batched else result[0]
    if not np.may_share_memory(result, out):
        out[...] = result.reshape(out.shape)
    return out


def _conv(nd, input, weight, bias, stride, padding, dilation, groups, padding_mode,
          algorithm, out):
    prob = parse_conv(f"conv{nd}d", nd, input, weight, bias, stride, padding, dilation,
                      groups, padding_mode)
    x, w, b, result = _prepare(prob, out, algorithm)
    pad_left = tuple(left for left, _ in prob.pads)
    if prob.padding_mode != "zeros":
        x = _pad(x, prob.pads, prob.padding_mode)
        pad_left = (0,) * nd
    _engine.conv_forward(to_5d(x, nd), to_5d(w, nd), b, to_5d(result, nd),
                         pad3(prob.stride, nd, 1), pad3(pad_left, nd, 0),
                         pad3(prob.dilation, nd, 1), prob.groups, algorithm)
    return _finish(prob, result, out)


def _conv_transpose(nd, input, weight, bias, stride, padding, output_padding, groups,
                    dilation, algorithm, out):
    prob = parse_conv(f"conv_transpose{nd}d", nd, input, weight, bias, stride, padding,
                      dilation, groups, transposed=True, output_padding=output_padding)
    x, w, b, result = _prepare(prob, out, algorithm)
    _engine.transpose_forward(to_5d(x, nd), to_5d(w, nd), b, to_5d(result, nd),
                              pad3(prob.stride, nd, 1), pad3([l for l, _ in prob.pads], nd, 0),
                              pad3(prob.dilation, nd, 1), prob.groups, algorithm)
    return _finish(prob, result, out)


_CONV_DOC = """{nd}-D convolution (cross-correlation), as ``torch.nn.functional.conv{nd}d``.

Parameters
----------
input : array_like, shape (N, C_in, {sp}) or (C_in, {sp})
weight : array_like, shape (C_out, C_in / groups, {k})
bias : array_like, shape (C_out,), optional
stride, dilation : int or tuple of {nd} ints, default 1
padding : int, tuple of {nd} ints, 'valid' or 'same', default 0
    'same' needs stride 1; an odd total padding puts the extra cell on the right.
groups : int, default 1
padding_mode : {{'zeros', 'reflect', 'replicate', 'circular'}}, default 'zeros'
    As ``torch.nn.Conv{nd}d(padding_mode=...)``.
algorithm : {{'auto', 'direct', 'im2col'}}, default 'auto'
out : ndarray, optional
    C-contiguous array of the output shape and result dtype, filled in place.

Returns
-------
ndarray, shape (N, C_out, {osp}) or (C_out, {osp})
    ``O = floor((L + 2p - d (k - 1) - 1) / s) + 1`` per spatial dim; dtype
    ``np.result_type(input, weight, bias)`` (integers -> float64, float16 -> float32).

Examples
--------
>>> import numpy as np, fastconv as fc
>>> fc.conv{nd}d(np.ones((1, 2{ones})), np.ones((3, 2{kones}))).shape
(1, 3{oshape})
"""

_TRANSPOSE_DOC = """{nd}-D transposed convolution, as ``torch.nn.functional.conv_transpose{nd}d``.

Parameters
----------
input : array_like, shape (N, C_in, {sp}) or (C_in, {sp})
weight : array_like, shape (C_in, C_out / groups, {k})
bias : array_like, shape (C_out,), optional
stride, padding, output_padding, dilation : int or tuple of {nd} ints
    ``output_padding`` must be smaller than stride or dilation.
groups : int, default 1
algorithm : {{'auto', 'direct', 'im2col'}}, default 'auto'
out : ndarray, optional

Returns
-------
ndarray, shape (N, C_out, {osp}) or (C_out, {osp})
    ``O = (L - 1) s - 2p + d (k - 1) + output_padding + 1`` per spatial dim.
"""

_NAMES = {1: ("L", "kL", "L_out"), 2: ("H, W", "kH, kW", "H_out, W_out"),
          3: ("D, H, W", "kD, kH, kW", "D_out, H_out, W_out")}


def _document(func, template, nd):
    sp, k, osp = _NAMES[nd]
    func.__doc__ = template.format(nd=nd, sp=sp, k=k, osp=osp, ones=", 5" * nd,
                                   kones=", 3" * nd, oshape=", 3" * nd)
    return func


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", algorithm="auto", out=None):
    return _conv(1, input, weight, bias, stride, padding, dilation, groups, padding_mode,
                 algorithm, out)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", algorithm="auto", out=None):
    return _conv(2, input, weight, bias, stride, padding, dilation, groups, padding_mode,
                 algorithm, out)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", algorithm="auto", out=None):
    return _conv(3, input, weight, bias, stride, padding, dilation, groups, padding_mode,
                 algorithm, out)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, *, algorithm="auto", out=None):
    return _conv_transpose(1, input, weight, bias, stride, padding, output_padding, groups,
                           dilation, algorithm, out)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, *, algorithm="auto", out=None):
    return _conv_transpose(2, input, weight, bias, stride, padding, output_padding, groups,
                           dilation, algorithm, out)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, *, algorithm="auto", out=None):
    return _conv_transpose(3, input, weight, bias, stride, padding, output_padding, groups,
                           dilation, algorithm, out)


for _nd, _f in ((1, conv1d), (2, conv2d), (3, conv3d)):
    _document(_f, _CONV_DOC, _nd)
for _nd, _f in ((1, conv_transpose1d), (2, conv_transpose2d), (3, conv_transpose3d)):
    _document(_f, _TRANSPOSE_DOC, _nd)
