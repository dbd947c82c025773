"""Front door of the kernels: validated 5-D arrays in, the output filled.

Everything here receives C-contiguous, 5-D arrays of one compute dtype (see
``_args``) and fills the output it is given.  It handles the empty cases,
describes the call as a per-sample :class:`~fastconv._dispatch.Problem` and
lets the registry (``_dispatch``) pick and run the implementation.
"""
import math
from dataclasses import replace

import numpy as np

from . import _dispatch
from ._dispatch import ALGORITHMS, Arrays, Problem  # noqa: F401 (ALGORITHMS re-exported)
from ._fastpath import all_finite


def _fill_bias(out, bias):
    out[...] = 0 if bias is None else bias.reshape((1, -1) + (1,) * (out.ndim - 2))


def _problem(op, x, w, out, stride, pad, dilation, groups, finite_weight=True,
             padding_mode="zeros"):
    return Problem(op, x.shape[1:], w.shape, out.shape[1:], x.dtype, tuple(stride), tuple(pad),
                   tuple(dilation), groups, finite_weight, padding_mode)


def choose(op, x_shape, w_shape, out_shape, dtype, stride=(1, 1, 1), pad=(0, 0, 0),
           dilation=(1, 1, 1), groups=1, algorithm="auto"):
    """The :class:`~fastconv._dispatch.Choice` for a call of these 5-D shapes (no data)."""
    p = Problem(op, tuple(x_shape[1:]), tuple(w_shape), tuple(out_shape[1:]), np.dtype(dtype),
                tuple(stride), tuple(pad), tuple(dilation), groups)
    return _dispatch.select(p, algorithm)


def _finite(w):
    return all_finite(w)


def conv_forward(x, w, bias, out, stride, pad, dilation, groups, algorithm="auto",
                 implementation=None, op="forward", padding_mode="zeros"):
    """out = conv(x, w) + bias, with left padding ``pad`` in ``padding_mode``."""
    if out.size == 0:
        return out
    if x.size == 0 or w.size == 0:          # no input channels: the sum is empty
        _fill_bias(out, bias)
        return out
    p = _problem(op, x, w, out, stride, pad, dilation, groups, _finite(w), padding_mode)
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


def conv_weight_grad(x, grad_out, dw, stride, pad, dilation, groups, implementation=None,
                     padding_mode="zeros"):
    """dw = sum over batch and positions of grad_out * conj(im2col(x)) (overwritten);
    x padded by ``pad`` on the left in ``padding_mode``."""
    if dw.size == 0:
        return dw
    if x.size == 0 or grad_out.size == 0:
        dw[...] = 0
        return dw
    p = Problem("weight_grad", x.shape[1:], dw.shape, grad_out.shape[1:], x.dtype,
                tuple(stride), tuple(pad), tuple(dilation), groups, padding_mode=padding_mode)
    _dispatch.run(p, Arrays(x, dw, None, grad_out), "auto", implementation)
    return dw


class KernelCall:
    """One kernel call with everything but the data decided, for repeated calls.

    Built once per signature (5-D shapes, dtype, options) by the public
    functions' call cache: the per-sample :class:`Problem` (whose hash and
    cost figures are computed once, so the registry's cached choice is one
    lookup) and what to do with empty arrays.  A call then only checks the
    weight for inf/NaN (which changes the Problem) and runs
    :func:`~fastconv._dispatch.run`.  The choice reads the Problem only:
    never the batch size, never the thread count.

    Parameters
    ----------
    op : {'forward', 'transpose', 'input_grad', 'weight_grad'}
    x_shape, w_shape, out_shape : tuple of 5 ints
        The arrays in :class:`~fastconv._dispatch.Arrays`'s slots (for
        'weight_grad': the input, the weight gradient, grad_output).
    padding_mode : str
        What the left padding ``pad`` reads ('forward' and 'weight_grad').
    """

    __slots__ = ("_problem", "_algorithm", "_implementation", "_empty", "_check_weight",
                 "prepared", "prepared_checks_weight")

    def __init__(self, op, x_shape, w_shape, out_shape, dtype, stride, pad, dilation, groups,
                 algorithm="auto", implementation=None, padding_mode="zeros"):
        self._problem = Problem(op, tuple(x_shape[1:]), tuple(w_shape), tuple(out_shape[1:]),
                                np.dtype(dtype), tuple(stride), tuple(pad), tuple(dilation),
                                groups, padding_mode=padding_mode)
        self._algorithm, self._implementation = algorithm, implementation
        self._empty = _empty_rule(op, x_shape, w_shape, out_shape)
        # 'weight_grad' has no weight operand: its Problem is always finite.
        self._check_weight = op != "weight_grad"
        #: the chosen kernel in compiled form for a finite weight, or None (see
        #: _dispatch.prepare): the public function's fast path calls it directly.
        self.prepared = None
        #: whether a run of ``prepared`` must check the weight for inf/NaN first
        #: (only when such a weight would change the choice)
        self.prepared_checks_weight = self._check_weight
        if not self._empty:             # choose now: errors surface here, and it is cached
            self.prepared = _dispatch.prepare(self._problem, algorithm, implementation)
        if self.prepared is not None and self._check_weight:
            self.prepared_checks_weight = not _dispatch.same_choice_for_any_weight(
                self._problem, algorithm, implementation)

    @property
    def macs(self):
        """Multiply-adds of one sample (what the thread count is chosen from)."""
        return self._problem.macs

    def __call__(self, x, w, bias, out):
        """Fill the output slot (``w`` for 'weight_grad', else ``out``)."""
        if self._empty:
            _fill_empty(self._empty, w, bias, out)
            return
        p = self._problem
        if self._check_weight and not all_finite(w):
            p = replace(p, finite_weight=False)      # rare: not worth a second cached Problem
        # Through _dispatch.run, the one place every kernel run goes (and is observed).
        _dispatch.run(p, Arrays(x, w, bias, out), self._algorithm, self._implementation)


def _empty_rule(op, x_shape, w_shape, out_shape):
    """What a call with empty arrays does (as the functions above); '' if none is empty."""
    if op == "weight_grad":
        if math.prod(w_shape) == 0:
            return "nothing"
        return "zero_w" if 0 in (math.prod(x_shape), math.prod(out_shape)) else ""
    if math.prod(out_shape) == 0:
        return "nothing"
    if 0 in (math.prod(x_shape), math.prod(w_shape)):
        return "zero_out" if op == "input_grad" else "bias"
    return ""


def _fill_empty(rule, w, bias, out):
    if rule == "bias":
        _fill_bias(out, bias)
    elif rule == "zero_out":
        out[...] = 0
    elif rule == "zero_w":
        w[...] = 0
