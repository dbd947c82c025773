"""``fastconv.explain``: which kernel a call would run, its plan and predicted time, and why.

Nothing is computed: the arguments are validated exactly as the call would
validate them, the call is described as the registry's per-sample
:class:`~fastconv._dispatch.Problem`, and the registry's choice is reported
with every other implementation's predicted time or the reason it does not
apply.
"""
import re
from dataclasses import dataclass, field

import numpy as np

from . import _costs, _dispatch
from ._args import parse_conv, pad3
from ._threads import get_num_threads

_OP = re.compile(r"^(?:grad\.)?conv(_transpose)?([123])d(_input|_weight)?$")


@dataclass
class Explanation:
    """What :func:`fastconv.explain` returns; ``str()`` renders it as a table.

    Attributes
    ----------
    op : str
        The call explained, e.g. ``'conv2d'`` or ``'conv3d_weight'``.
    kernel_op : str
        The registry operation: 'forward', 'transpose', 'input_grad' or 'weight_grad'.
    implementation, family : str
        The implementation that would run and its family.
    plan : dict
        Its tiling (tile sizes, blocks; for a lowering, the lowered Explanation).
    seconds : float
        Predicted time of the whole call with ``threads`` threads (cost model).
    threads : int
        The thread count the call would use now.
    candidates : list of (name, family, seconds or None, reason)
        Every implementation of the operation, in registry order: predicted
        seconds where it applies, else None and the reason it does not.
    """

    op: str
    kernel_op: str
    implementation: str
    family: str
    plan: dict
    seconds: float
    threads: int
    candidates: list = field(default_factory=list)

    def __str__(self):
        lines = [f"{self.op}: {self.kernel_op} -> {self.implementation} ({self.family}), "
                 f"predicted {_ms(self.seconds)} on {self.threads} thread(s)"]
        if self.plan:
            lines.append("  plan: " + ", ".join(
                f"{k}={v.implementation if isinstance(v, Explanation) else v}"
                for k, v in self.plan.items()))
        for name, family, seconds, reason in self.candidates:
            mark = "*" if name == self.implementation else " "
            what = _ms(seconds) if seconds is not None else f"n/a: {reason}"
            lines.append(f"  {mark} {name:<16} {family:<9} {what}")
        for value in self.plan.values():
            if isinstance(value, Explanation):
                lines += ["  " + line for line in str(value).splitlines()]
        return "\n".join(lines)


def _ms(seconds):
    return f"{seconds * 1e3:.3g} ms"


def _placeholder(value, dtype, name, op):
    """An array argument, or a shape given as a tuple of ints (no memory either way)."""
    if isinstance(value, tuple) and all(isinstance(v, (int, np.integer)) for v in value):
        return np.broadcast_to(np.zeros((), dtype), value)
    if dtype is not None and hasattr(value, "shape"):
        return np.broadcast_to(np.zeros((), dtype), value.shape)
    return value


def explain(op, input, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1,
            padding_mode="zeros", output_padding=0, algorithm="auto", dtype=None):
    """Which implementation a call would run, its plan and predicted time; nothing is computed.

    Parameters
    ----------
    op : str
        A function of fastconv: ``'conv1d'`` .. ``'conv3d'``,
        ``'conv_transpose1d'`` .. ``'conv_transpose3d'``, or a gradient of
        ``fastconv.grad`` (``'conv2d_input'`` or ``'grad.conv2d_input'``,
        ``'conv3d_weight'``, ``'conv_transpose2d_weight'``, ...).
    input, weight : array_like or tuple of ints
        The forward call's input and weight (for gradients too), or their
        shapes; shapes compute in ``dtype`` (default float32).
    bias : array_like, tuple of ints or None
        The forward call's bias (checked like the call's; it does not change
        the choice).
    stride, padding, dilation, groups, padding_mode, output_padding
        As the call (``padding_mode`` for convolutions, ``output_padding`` for
        transposed ones).
    algorithm : {'auto', 'direct', 'im2col', 'fft'}, default 'auto'
        As the forward functions' argument (gradients always use 'auto').
    dtype : dtype, optional
        Compute dtype for inputs given as shapes (default float32), or
        overriding the arrays' dtypes.

    Returns
    -------
    Explanation
        ``print()`` it for a table of every implementation considered.

    Examples
    --------
    >>> import fastconv as fc
    >>> e = fc.explain("conv2d", (8, 64, 56, 56), (64, 64, 3, 3), padding=1)
    >>> e.family
    'im2col'
    """
    match = _OP.match(op) if isinstance(op, str) else None
    if match is None:
        raise ValueError("explain: expected op like 'conv2d', 'conv_transpose3d', "
                         f"'grad.conv2d_input' or 'conv_transpose1d_weight', got {op!r}")
    transposed, nd, grad = bool(match.group(1)), int(match.group(2)), match.group(3)
    if algorithm not in ("auto",) + _dispatch.ALGORITHMS:
        raise ValueError(f"explain: expected algorithm to be one of 'auto', "
                         f"{', '.join(map(repr, _dispatch.ALGORITHMS))}, got {algorithm!r}")
    shape_dtype = np.dtype(np.float32 if dtype is None else dtype)
    x = _placeholder(input, shape_dtype if dtype is not None or isinstance(input, tuple)
                     else None, "input", op)
    w = _placeholder(weight, shape_dtype if dtype is not None or isinstance(weight, tuple)
                     else None, "weight", op)
    b = None if bias is None else _placeholder(
        bias, shape_dtype if dtype is not None or isinstance(bias, tuple) else None, "bias", op)
    kwargs = dict(transposed=True, output_padding=output_padding) if transposed else \
        dict(padding_mode=padding_mode)
    call = op.removeprefix("grad.")
    prob = parse_conv(call, nd, x, w, b, stride, padding, dilation, groups, **kwargs)
    p = _kernel_problem(prob, nd, transposed, grad)
    choice = _dispatch.select(p, algorithm if grad is None else "auto")
    batch = prob.out_shape[0]
    return _explanation(op, choice, p, batch)


def _kernel_problem(prob, nd, transposed, grad):
    """The registry Problem the call runs, mirroring functional.py and grad.py."""
    pads = [left for left, _ in prob.pads]
    x_sp = prob.x.shape[2:]
    mode = "zeros" if transposed else prob.padding_mode
    if mode != "zeros" and grad == "_input":         # on the padded grid, then pad_adjoint
        x_sp = tuple(n + left + right for n, (left, right) in zip(x_sp, prob.pads))
        pads = [0] * nd
        mode = "zeros"
    x = prob.x.shape[1:2] + pad3(x_sp, nd, 1)
    out = prob.out_shape[1:2] + pad3(prob.out_shape[2:], nd, 1)
    w = prob.w.shape[:2] + pad3(prob.w.shape[2:], nd, 1)
    common = dict(dtype=prob.dtype, stride=pad3(prob.stride, nd, 1), pad=pad3(pads, nd, 0),
                  dilation=pad3(prob.dilation, nd, 1), groups=prob.groups,
                  finite_weight=bool(np.isfinite(prob.w).all()))
    if grad is None:
        return _dispatch.Problem("transpose" if transposed else "forward", x, w, out,
                                 padding_mode=mode, **common)
    if grad == "_input":
        # conv: a transposed convolution of grad_output; transposed conv: a convolution.
        return _dispatch.Problem("forward" if transposed else "input_grad", out, w, x, **common)
    common["finite_weight"] = True
    if transposed:                  # the weight gradient of the convolution out -> x
        return _dispatch.Problem("weight_grad", out, w, x, **common)
    return _dispatch.Problem("weight_grad", x, w, out, padding_mode=mode, **common)


def _explanation(op, choice, p, batch):
    threads = _costs.threads_for(batch * p.macs, get_num_threads())
    scale = batch / threads
    plan = dict(choice.plan)
    if choice.impl.family == "lowering":
        lowered = _dispatch.lower(choice.impl.name, p)
        plan["lowered"] = _explanation(f"{op} as {lowered.op}", plan["lowered"], lowered, batch)
    candidates = [(impl.name, impl.family,
                   what * scale if isinstance(what, float) else None,
                   "" if isinstance(what, float) else what)
                  for impl, what in choice.candidates]
    return Explanation(op, p.op, choice.impl.name, choice.impl.family, plan,
                       choice.seconds * scale, threads, candidates)
