"""Forward convolution and transposed convolution (``torch.nn.functional`` semantics).

Every function normalises its arguments in ``_args``, converts the arrays to
the result dtype, pads explicitly only for the reflect / replicate /
circular modes, and hands 5-D views to the kernels in ``_engine``.
"""
import numpy as np

from . import _docs, _engine
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
    _docs.document(_f, _docs.CONV, _nd)
for _nd, _f in ((1, conv_transpose1d), (2, conv_transpose2d), (3, conv_transpose3d)):
    _docs.document(_f, _docs.TRANSPOSE, _nd)
del _nd, _f
