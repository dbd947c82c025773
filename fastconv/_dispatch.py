"""The kernel registry: every implementation declared once, chosen by per-sample rules.

Per operation (``'forward'``, ``'transpose'``, ``'input_grad'``,
``'weight_grad'``, ``'filter'``) an ordered table of :class:`Implementation`
entries.  Each entry says when it applies, how it tiles the work (its plan),
what it costs and how it runs.  ``algorithm='direct'|'im2col'|'fft'`` picks a
family; ``'auto'`` picks the cheapest entry that applies (the first of equal
costs).  Like oneDNN's per-direction implementation lists, each entry decides
for itself whether it can run a problem.

Reproducibility by construction: the rules, plans and costs see a
:class:`Problem`, which holds one sample's shapes, the dtype and the options
only.  The batch size and the thread count are not in it, so neither can
change which kernel runs or how it tiles, and a sample's bits never depend on
the batch it shares or the number of threads.

Adding a kernel: write it (one file in ``src/`` or a Python module), then add
one :class:`Implementation` to the table of its operation below.  The tests
(``tests/test_registry.py``) and the sanitizer step walk these tables, so the
new entry is covered without being listed anywhere else.
"""
import contextlib
import contextvars
import math
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache

import numpy as np

from . import _costs, _fastpath, _fft, _padding, _planar, _subpixel, _workspace
from ._kernels import blas, direct, implicit
from ._threads import get_num_threads, single_threaded_blas

#: Families that ``algorithm=`` accepts besides 'auto'.
ALGORITHMS = ("direct", "im2col", "fft")
OPS = ("forward", "transpose", "input_grad", "weight_grad", "filter", "pass")


@dataclass(frozen=True)
class Problem:
    """What a rule may read: one sample's shapes, the dtype and the options.

    Shapes are 5-D-canonical (1-D and 2-D problems have leading unit spatial
    dims) without the batch axis.  ``x`` and ``out`` are the kernel's input and
    output: for ``'weight_grad'``, the forward input and ``grad_output``; for
    ``'input_grad'``, ``grad_output`` and the gradient.  ``pad`` is the left
    padding; ``padding_mode`` what it reads (``'zeros'``, or ``'reflect'``,
    ``'replicate'``, ``'circular'`` for 'forward' and 'weight_grad').
    """

    op: str
    x: tuple                   # (C, D, H, W) of one sample
    w: tuple                   # weight (5-D)
    out: tuple                 # (C_out, Do, Ho, Wo) of one sample
    dtype: np.dtype
    stride: tuple = (1, 1, 1)
    pad: tuple = (0, 0, 0)
    dilation: tuple = (1, 1, 1)
    groups: int = 1
    finite_weight: bool = True
    padding_mode: str = "zeros"

    def __hash__(self):
        return self._hash

    # Computed once per Problem (cached_property writes the instance dict, which a
    # frozen dataclass allows): a prepared call reuses its Problem on every call.
    @cached_property
    def _hash(self):
        return hash((self.op, self.x, self.w, self.out, self.dtype, self.stride, self.pad,
                     self.dilation, self.groups, self.finite_weight, self.padding_mode))

    @property
    def kernel(self):
        return self.w[2:]

    @cached_property
    def kvol(self):
        return math.prod(self.w[2:])

    @cached_property
    def macs(self):
        """Multiply-adds of one sample."""
        # Transposed forms scatter each input cell over w[1] channels x taps.
        cells = self.x if self.op in ("transpose", "input_grad") else self.out
        return math.prod(cells) * self.w[1] * self.kvol


@dataclass(frozen=True)
class PassProblem:
    """One 1-D pass of an ndimage filter: what its rules may read.

    The filtered array seen as ``outer`` x ``length`` x ``inner`` cells
    (``length`` along the filtered axis, ``inner`` the cells after it in
    memory), the number of taps, the work dtype, and whether the pass is a
    running sum (``uniform_filter``).  No thread count.
    """

    outer: int
    length: int
    inner: int
    taps: int
    dtype: np.dtype
    running_sum: bool = False
    op: str = "pass"


@dataclass(frozen=True)
class Implementation:
    """One kernel: a name, a family and four callables.

    ``applies(p)`` returns ``''`` when the kernel can run ``p``, else the reason
    it cannot; ``plan(p)`` returns its tiling (a dict); ``cost(p, plan)`` its
    predicted seconds for one sample on one thread; ``run(arrays, p, plan,
    threads)`` fills the output.  ``modes``: it reads reflect / replicate /
    circular padding itself; the others see such problems through the
    'pad_first' lowering.  ``call_seconds``: the fixed cost of one call, added
    to ``cost`` (it only matters on tiny problems).
    """

    name: str
    family: str
    summary: str
    applies: object
    plan: object
    cost: object
    run: object
    modes: bool = False
    call_seconds: float = 0.0
    prepare: object = None


@dataclass(frozen=True)
class Choice:
    """A selected implementation with its plan and predicted one-sample cost."""

    impl: Implementation
    plan: dict
    seconds: float
    candidates: tuple = field(default=(), compare=False)   # (impl, seconds or reason)


def _always(p):
    return ""


def _no_plan(p):
    return {}


# -- shared rules ------------------------------------------------------------------------

def _blas_limit(p):
    """BLAS takes 32-bit dimensions: the GEMM's channel and reduction sizes must fit."""
    dims = (p.w[0] // p.groups, p.w[1] * p.kvol)
    if max(dims) > _costs.INT_MAX:
        return f"a GEMM dimension {max(dims)} exceeds BLAS's 32-bit limit"
    return ""


def _shifted_rule(p, pointwise_ok):
    """Stride 1, and the padded-width grid neither huge nor wasteful.

    The grid is the zero-padded input the output reads, so its size is the
    padded copy this path allocates: it must stay within a few times the
    sample's input plus output (huge padding or dilation with a small output
    goes the classic im2col way instead of padding a copy to its full extent),
    and at most 30 % of its cells may be dropped padding-width columns/rows.
    """
    if p.stride != (1, 1, 1):
        return "needs stride 1"
    if p.kvol == 1 and not pointwise_ok:
        return "1x1 kernel: plain im2col reads the input in place"
    padded = _costs.padded_extent(p)
    if math.prod(padded) > _costs.PADDED_COPY_LIMIT * (math.prod(p.x[1:]) + math.prod(p.out[1:])) \
            + _costs.PADDED_COPY_SLACK:
        return "padded copy far larger than the input and output"
    if _costs.grid_length(p) > _costs.SHIFTED_MAX_WASTE * math.prod(p.out[1:]):
        return "more than 30 % of the padded-width grid would be wasted"
    return ""


def _first_reason(*reasons):
    return next((r for r in reasons if r), "")


# The OpenBLAS that SciPy ships runs a GEMM with m*n*k <= 4 * 65536 on the calling
# thread whatever its thread setting (interface/gemm.c: SMP_THRESHOLD_MIN *
# GEMM_MULTITHREAD_THRESHOLD).  Every GEMM of a call below 64 K multiply-adds
# stays under that (a shifted-slice grid adds at most 30 %), so holding BLAS to
# one thread would change nothing there but cost ~5 us (two set_num_threads).
BLAS_UNTHREADED_MACS = 1 << 16


def _blas_held_to_one_thread(a, p):
    """:class:`single_threaded_blas`, or no-op when the whole call is below BLAS's threading."""
    if a.x.shape[0] * p.macs < BLAS_UNTHREADED_MACS:
        return contextlib.nullcontext()
    return single_threaded_blas()


def threads_for(total_macs):
    """Threads for a call of ``total_macs`` multiply-adds (speed only, never the bits)."""
    return _costs.threads_for(total_macs, get_num_threads)


# -- reflect / replicate / circular padding for the kernels that read zeros only ----------

@lru_cache(maxsize=512)
def _lower_to_padded(p):
    """The 'valid' (zero-padding) Problem on the input padded explicitly in p's mode."""
    return replace(p, x=p.x[:1] + _padded_extent(p), pad=(0, 0, 0), padding_mode="zeros")


def _padded_extent(p):
    """(D, H, W) of the padded input: the extent the output reads, at least x's own."""
    return tuple(max(n + q, (o - 1) * s + d * (k - 1) + 1)
                 for n, q, o, s, d, k in zip(p.x[1:], p.pad, p.out[1:], p.stride, p.dilation,
                                             p.kernel))


def _pad_first_applies(p):
    return "" if p.padding_mode != "zeros" else "zero padding: the kernels read it themselves"


def _pad_first_cost(p, plan):
    return plan["lowered"].seconds + math.prod(_padded_extent(p)) * p.x[0] \
        * _costs.PAD_SECONDS_PER_CELL


def _run_pad_first(a, p, plan, nt):
    q = _lower_to_padded(p)
    pads = tuple((left, n - x - left) for left, n, x in zip(p.pad, q.x[1:], p.x[1:]))
    xp = _padding.pad(a.x, pads, p.padding_mode)
    _run_choice(plan["lowered"], Arrays(xp, a.w, a.bias, a.out), q)


#: In 'forward' and 'weight_grad': the input padded in its mode, then a kernel
#: that reads zero padding only runs it 'valid'.
PAD_FIRST = Implementation(
    "pad_first", "lowering",
    "reflect / replicate / circular: the input padded explicitly, then a 'valid' convolution",
    _pad_first_applies, None, _pad_first_cost, _run_pad_first)


# -- forward ------------------------------------------------------------------------------

def _run_direct_forward(a, p, plan, nt):
    direct.conv_forward(a.x, a.w, a.bias_or_zeros, a.out, p.stride, p.pad, p.dilation,
                        p.groups, nt)
    if any(p.pad) and not p.finite_weight:
        _nan_where_padding_meets_nonfinite(a.out, a.w, a.x.shape, p.stride, p.pad,
                                           p.dilation)


def _run_fft_forward(a, p, plan, nt):
    _fft_per_sample(a, p, _fft.conv_forward, _run_direct_forward)


def _fft_per_sample(a, p, fft, fallback):
    """FFT on the samples that are finite; the direct kernel on the others.

    One inf or NaN would spread over a whole FFT result, so a sample holding
    one is computed directly, whatever batch it is in.
    """
    finite = np.isfinite(a.x.reshape(len(a.x), -1)).all(axis=1)
    if finite.all():
        fft(a.x, a.w, a.bias, a.out, p.stride, p.pad, p.dilation, p.groups)
        return
    for rows, run in ((finite, "fft"), (~finite, "direct")):
        if not rows.any():
            continue
        sub = a.take(rows)
        if run == "fft":
            fft(sub.x, sub.w, sub.bias, sub.out, p.stride, p.pad, p.dilation, p.groups)
        else:
            fallback(sub, p, {}, threads_for(sub.x.shape[0] * p.macs))
        a.out[rows] = sub.out


def _fft_applies(p):
    return "" if p.finite_weight else \
        "the weight holds inf/NaN, which an FFT would spread over every output"


def _as_real(p):
    """The real Problem the micro-kernel runs: complex ones become planar (``_planar``)."""
    return _planar.problem(p) if p.dtype.kind == "c" else p


def _forward_real(p):
    """As :func:`_as_real`; complex64 forward convolutions take the Gauss form."""
    return _planar.gauss_problem(p) if p.dtype == np.complex64 else _as_real(p)


def _plan_implicit(p):
    rows, cols = _costs.band_tile(_forward_real(p), implicit.panel_widths())
    return {"rows": rows, "cols": cols}


def _implicit_rule(p):
    """A kernel not so wide that dropped columns dominate the work."""
    if _costs.band_row_excess(p, _plan_implicit(p)) > _costs.IMPLICIT_MAX_WASTE:
        return "the kernel is wider than the output: most computed columns would be dropped"
    return ""


def _implicit_cost(p, plan):
    return _costs.implicit_cost(_forward_real(p), plan)


def _run_implicit_forward(a, p, plan, nt):
    args = (p.stride, p.pad, p.dilation)
    if p.dtype.kind != "c":
        implicit.conv_forward(a.x, a.w, a.bias, a.bias is not None, a.out, *args,
                              p.groups, nt, plan["rows"], plan["cols"],
                              padding_mode=p.padding_mode)
        return
    q = _forward_real(p)
    out = _workspace.empty(a.out.shape[:1] + q.out, q.dtype)
    if p.dtype == np.complex64:
        implicit.conv_forward(_planar.gauss_input(a.x, nt), _planar.gauss_weight(a.w),
                              _planar.gauss_bias(a.bias_or_zeros), a.bias is not None, out,
                              *args, q.groups, nt, plan["rows"], plan["cols"],
                              padding_mode=p.padding_mode)
        _planar.ungauss(out, a.out, nt)
        return
    g = p.groups
    implicit.conv_forward(_planar.planar(a.x, g, nt), _planar.planar_weight(a.w, g),
                          _planar.planar_bias(a.bias_or_zeros, g), a.bias is not None, out,
                          *args, g, nt, plan["rows"], plan["cols"], padding_mode=p.padding_mode)
    _planar.unplanar(out, a.out, g, nt)


def _prepare_implicit_forward(p, plan):
    if p.dtype.kind == "c":
        return None
    return implicit.PreparedForward((1,) + p.x, p.w, (1,) + p.out, p.stride, p.pad,
                                    p.dilation, p.groups, plan["rows"], plan["cols"],
                                    padding_mode=p.padding_mode)


def _plan_shifted(p):
    return {"tile": _costs.gemm_tile(p.w[1] * p.kvol, _costs.grid_length(p), p.groups,
                                     p.dtype.itemsize),
            "grid": _costs.grid_length(p), "padding": _costs.padding_plan(p) or ()}


def _run_shifted_forward(a, p, plan, nt):
    xp = _costs.zero_pad(a.x, p, plan["padding"])
    with _blas_held_to_one_thread(a, p):
        blas.conv_forward_shifted(xp, a.w, a.bias_or_zeros, a.bias is not None, a.out,
                                  p.dilation, p.groups, nt, plan["tile"])


def _plan_im2col(p):
    return {"tile": _costs.gemm_tile(p.w[1] * p.kvol, math.prod(p.out[1:]), p.groups,
                                     p.dtype.itemsize)}


def _run_im2col_forward(a, p, plan, nt):
    with _blas_held_to_one_thread(a, p):
        blas.conv_forward(a.x, a.w, a.bias_or_zeros, a.bias is not None, a.out, p.stride,
                          p.pad, p.dilation, p.groups, nt, plan["tile"])


FORWARD_DIRECT = Implementation(
    "direct", "direct", "loops over taps along W rows; zero padding in the index math",
    _always, _no_plan, _costs.direct_cost, _run_direct_forward,
    call_seconds=_costs.DIRECT_CALL_SECONDS)
FORWARD_FFT = Implementation(
    "fft", "fft", "scipy.fft transforms, channels contracted per frequency",
    _fft_applies, _no_plan, _costs.fft_forward_cost, _run_fft_forward,
    call_seconds=_costs.FFT_CALL_SECONDS)

FORWARD_IMPLICIT = Implementation(
    "implicit_gemm", "im2col",
    "implicit GEMM on fastconv's micro-kernel: padded, stride-phased input bands, "
    "no column matrix (depthwise: a kernel of its own on the same bands)",
    _implicit_rule, _plan_implicit, _implicit_cost, _run_implicit_forward, modes=True,
    call_seconds=_costs.KERNEL_CALL_SECONDS, prepare=_prepare_implicit_forward)

FORWARD = (
    FORWARD_DIRECT,
    FORWARD_IMPLICIT,
    Implementation(
        "im2col_shifted", "im2col", "stride 1: shifted-slice im2col (one memcpy per row) + BLAS",
        lambda p: _first_reason(_shifted_rule(p, pointwise_ok=False), _blas_limit(p)),
        _plan_shifted, _costs.shifted_cost, _run_shifted_forward,
        call_seconds=_costs.PADDED_CALL_SECONDS),
    Implementation(
        "im2col", "im2col", "im2col tiles + BLAS GEMM (1x1: the input is the column matrix)",
        _blas_limit, _plan_im2col, _costs.im2col_cost, _run_im2col_forward,
        call_seconds=_costs.BLAS_CALL_SECONDS),
    FORWARD_FFT,
    PAD_FIRST,
)


# -- transposed forward ------------------------------------------------------------------

def _run_direct_transpose(a, p, plan, nt):
    direct.transpose_forward(a.x, a.w, a.bias_or_zeros, a.out, p.stride, p.pad, p.dilation,
                             p.groups, nt)


def _plan_col2im(p):
    cog = p.w[1]
    # Channel blocks from the group count only: a sample's bits must not depend
    # on the batch it shares.
    if p.groups < _costs.MIN_JOBS:
        cblock = max(1, -(-cog // -(-_costs.MIN_JOBS // p.groups)))
    else:
        cblock = cog
    tile = _costs.gemm_tile(cblock * p.kvol, math.prod(p.x[1:]), _costs.MIN_JOBS,
                            p.dtype.itemsize)
    return {"tile": tile, "cblock": cblock}


def _run_col2im_transpose(a, p, plan, nt):
    with _blas_held_to_one_thread(a, p):
        blas.transpose_forward(a.x, a.w, a.bias_or_zeros, a.out, p.stride, p.pad, p.dilation,
                               p.groups, nt, plan["tile"], plan["cblock"])


def _subpixel_rule(p):
    phases = math.prod(min(s, n) for s, n in zip(p.stride, p.out[1:]))
    if phases > _costs.SUBPIXEL_MAX_PHASES:
        return f"{phases} stride phases: more than {_costs.SUBPIXEL_MAX_PHASES} kernel calls"
    if not p.finite_weight:
        return "the weight holds inf/NaN: zero padding would turn into NaN (0 * inf)"
    for _, q in _subpixel.phase_problems(p):
        if q is not None and _implicit_rule(q):
            return f"a stride phase: {_implicit_rule(q)}"
    return ""


def _plan_subpixel(p):
    return _subpixel.plan(_as_real(p), lambda q: tuple(_plan_implicit(q).values()))


def _subpixel_cost(p, plan):
    return _subpixel.cost(_as_real(p), plan)


def _run_subpixel_transpose(a, p, plan, nt):
    _subpixel.run(implicit.conv_forward, a, p, plan, nt)


def _shuffle_rule(p):
    return _subpixel.shuffle_rule(p) or _implicit_rule(_subpixel.shuffle_problem(_as_real(p)))


def _plan_shuffle(p):
    # a pixel-shuffled output (stride > 1) never streams: its panels are not output runs
    q = _subpixel.shuffle_problem(_as_real(p))
    rows, cols = _costs.band_tile(q, implicit.panel_widths(),
                                  streams=all(s == 1 for s in p.stride))
    return {"rows": rows, "cols": cols}


def _shuffle_cost(p, plan):
    return _costs.implicit_cost(_subpixel.shuffle_problem(_as_real(p)), plan)


def _run_shuffle_transpose(a, p, plan, nt):
    _subpixel.run_shuffle(implicit.conv_forward, a, p, plan, nt)


def _prepare_shuffle_transpose(p, plan):
    if p.dtype.kind == "c":
        return None
    return implicit.PreparedForward(
        (1,) + p.x, p.w, (1,) + p.out, (1, 1, 1), (0, 0, 0), (1, 1, 1), p.groups,
        plan["rows"], plan["cols"], out_size=p.x[1:], out_step=p.stride, shuffle=p.stride,
        transposed_weight=True)


def _run_fft_transpose(a, p, plan, nt):
    _fft_per_sample(a, p, _fft.transpose_forward, _run_direct_transpose)


TRANSPOSE = (
    Implementation("direct", "direct", "gather form: each output tile sums its taps",
                   _always, _no_plan, _costs.direct_cost, _run_direct_transpose,
                   call_seconds=_costs.DIRECT_CALL_SECONDS),
    Implementation("col2im", "im2col", "BLAS GEMM per input tile, then col2im scatter-add",
                   _blas_limit, _plan_col2im, _costs.col2im_cost, _run_col2im_transpose,
                   call_seconds=_costs.PADDED_CALL_SECONDS),
    Implementation("subpixel", "im2col",
                   "one stride-1 implicit GEMM per stride phase, written to its strided cells",
                   _subpixel_rule, _plan_subpixel, _subpixel_cost, _run_subpixel_transpose),
    Implementation("shuffle", "im2col",
                   "stride = kernel: one 1x1 implicit GEMM of every tap, pixel-shuffled out",
                   _shuffle_rule, _plan_shuffle, _shuffle_cost, _run_shuffle_transpose,
                   call_seconds=_costs.KERNEL_CALL_SECONDS, prepare=_prepare_shuffle_transpose),
    Implementation("fft", "fft", "zero-upsampled input, scipy.fft, cropped",
                   _fft_applies, _no_plan, _costs.fft_transpose_cost, _run_fft_transpose,
                   call_seconds=_costs.FFT_CALL_SECONDS),
)


# -- input gradient: lowered onto the forward or transposed tables ------------------------

def flipped_weight(w, groups):
    """The stride-1 input gradient's kernel: channel-swapped per group, taps reversed."""
    cout, cig = w.shape[:2]
    kernel = w.shape[2:]
    swapped = (w.reshape((groups, cout // groups, cig) + kernel).swapaxes(1, 2)
               .reshape((cig * groups, cout // groups) + kernel))
    return np.ascontiguousarray(swapped[(Ellipsis,) + (slice(None, None, -1),) * 3])


# The lowered Problems are pure functions of p: cached, so that a repeated
# gradient call does not rebuild (and re-hash) one on every run.
@lru_cache(maxsize=512)
def _lower_to_forward(p):
    pad = tuple(d * (k - 1) - q for d, k, q in zip(p.dilation, p.kernel, p.pad))
    cout, cig = p.w[:2]
    w = (cig * p.groups, cout // p.groups) + p.kernel
    return replace(p, op="forward", w=w, pad=pad)


@lru_cache(maxsize=512)
def _lower_to_transpose(p):
    return replace(p, op="transpose")


def _forward_lowering_applies(p):
    if p.stride != (1, 1, 1):
        return "needs stride 1"
    if any(d * (k - 1) < q for d, k, q in zip(p.dilation, p.kernel, p.pad)):
        return "padding larger than the dilated kernel"
    return ""


def _lowered_cost(p, plan):
    return plan["lowered"].seconds


def _run_input_grad_forward(a, p, plan, nt):
    lowered = Arrays(a.x, flipped_weight(a.w, p.groups), None, a.out)
    _run_choice(plan["lowered"], lowered, _lower_to_forward(p))


def _prepare_input_grad_forward(p, plan):
    """The lowered implicit GEMM, flipping the weight itself (real dtypes)."""
    lowered = plan["lowered"]
    if lowered.impl.run is not _run_implicit_forward or p.dtype.kind == "c":
        return None
    q = _lower_to_forward(p)
    return implicit.PreparedForward((1,) + q.x, q.w, (1,) + q.out, q.stride, q.pad,
                                    q.dilation, q.groups, lowered.plan["rows"],
                                    lowered.plan["cols"], flipped_weight=True)


def _run_input_grad_transpose(a, p, plan, nt):
    _run_choice(plan["lowered"], a, _lower_to_transpose(p))


INPUT_GRAD = (
    Implementation("as_forward", "lowering",
                   "stride 1: a forward convolution with the flipped, channel-swapped weight",
                   _forward_lowering_applies, None, _lowered_cost, _run_input_grad_forward,
                   prepare=_prepare_input_grad_forward),
    Implementation("as_transpose", "lowering", "a transposed convolution of grad_output",
                   _always, None, _lowered_cost, _run_input_grad_transpose),
)


# -- weight gradient ---------------------------------------------------------------------

def _thin(p):
    return "" if p.w[0] // p.groups <= 2 else \
        "more than 2 output channels per group: it would re-read the input per channel"


def _run_direct_weight(a, p, plan, nt):
    direct.conv_weight_grad(a.x, a.out, a.w, p.stride, p.pad, p.dilation, p.groups, nt)


def _rblock(p):
    k = p.w[1] * p.kvol
    return max(1, -(-k // -(-_costs.MIN_JOBS // p.groups))) if p.groups < _costs.MIN_JOBS else k


def _plan_weight_shifted(p):
    rblock = _rblock(p)
    return {"rblock": rblock, "grid": _costs.grid_length(p),
            "tile": _costs.gemm_tile(rblock + p.w[0] // p.groups, _costs.grid_length(p),
                                     _costs.MIN_JOBS, p.dtype.itemsize)}


def _run_weight_shifted(a, p, plan, nt):
    xp = _costs.zero_pad(a.x, p)
    with _blas_held_to_one_thread(a, p):
        blas.conv_weight_grad_shifted(xp, a.out, a.w, p.dilation, p.groups, nt, plan["tile"],
                                      plan["rblock"])


def _pointwise(p):
    return p.kvol == 1 and p.stride == (1, 1, 1) and p.pad == (0, 0, 0) and p.x[1:] == p.out[1:]


def _plan_weight_im2col(p):
    """Row blocks of W (each job copies only its own im2col rows); a pointwise
    problem reads x in place, so it splits the larger of its two dimensions
    (rows or output channels): the GEMMs stay as wide as possible."""
    cog = p.w[0] // p.groups
    if _pointwise(p):
        parts = -(-_costs.MIN_JOBS // p.groups) if p.groups < _costs.MIN_JOBS else 1
        rblock, cblock = p.w[1], cog
        if p.w[1] >= cog:
            rblock = max(1, -(-p.w[1] // parts))
        else:
            cblock = max(1, -(-cog // parts))
    else:
        rblock, cblock = _rblock(p), cog
    return {"rblock": rblock, "cblock": cblock,
            "tile": _costs.gemm_tile(rblock, math.prod(p.out[1:]), _costs.MIN_JOBS,
                                     p.dtype.itemsize)}


def _plan_weight_implicit(p):
    q = _as_real(p)
    block, vectors = implicit.weight_grad_channel_block(q.w[0] // q.groups, q.dtype.itemsize)
    cib, cob = _costs.weight_blocks(q, block, channel_vectors=vectors)
    rows, cols = _costs.band_tile(q, implicit.panel_widths(), channels=cib, min_jobs=False)
    return {"cib": cib, "cob": cob, "rows": rows, "cols": cols, "channel_vectors": vectors}


def _prepare_weight_implicit(p, plan):
    if p.dtype.kind == "c":
        return None
    return implicit.PreparedWeightGrad((1,) + p.x, (1,) + p.out, p.w, p.stride, p.pad,
                                       p.dilation, p.groups, plan["rows"], plan["cols"],
                                       plan["cib"], plan["cob"], padding_mode=p.padding_mode)


def _implicit_weight_cost(p, plan):
    return _costs.implicit_weight_cost(_as_real(p), plan)


def _run_weight_implicit(a, p, plan, nt):
    g = p.groups
    x, gout, dw = a.x, a.out, a.w
    if p.dtype.kind == "c":
        x, gout = _planar.planar(x, g, nt), _planar.planar(gout, g, nt)
        dw = _workspace.empty((2 * dw.shape[0], 2 * dw.shape[1]) + dw.shape[2:], x.dtype)
    implicit.conv_weight_grad(x, gout, dw, p.stride, p.pad, p.dilation, g, nt,
                              plan["rows"], plan["cols"], plan["cib"], plan["cob"],
                              padding_mode=p.padding_mode)
    if p.dtype.kind == "c":
        _planar.unplanar_weight_grad(dw, a.w, g)


def _run_weight_im2col(a, p, plan, nt):
    with _blas_held_to_one_thread(a, p):
        blas.conv_weight_grad(a.x, a.out, a.w, p.stride, p.pad, p.dilation, p.groups, nt,
                              plan["tile"], plan["rblock"], plan["cblock"])


WEIGHT_GRAD = (
    Implementation("direct", "direct",
                   "thin problems: one dot product job per (out, in) channel pair",
                   _thin, _no_plan, _costs.direct_weight_cost, _run_direct_weight,
                   call_seconds=_costs.DIRECT_CALL_SECONDS),
    Implementation("implicit_gemm", "im2col",
                   "channel-block jobs over band buffers: dot products along output cells, "
                   "fastconv's micro-kernel",
                   _always, _plan_weight_implicit, _implicit_weight_cost,
                   _run_weight_implicit, modes=True, call_seconds=_costs.KERNEL_CALL_SECONDS,
                   prepare=_prepare_weight_implicit),
    Implementation("im2col_shifted", "im2col", "stride 1: shifted-slice im2col + BLAS",
                   lambda p: _first_reason(_shifted_rule(p, pointwise_ok=False),
                                           _blas_limit(p)),
                   _plan_weight_shifted, _costs.shifted_cost, _run_weight_shifted,
                   call_seconds=_costs.SHIFTED_WEIGHT_CALL_SECONDS),
    Implementation("im2col", "im2col", "im2col row blocks + BLAS, reduced over the batch",
                   _blas_limit, _plan_weight_im2col, _costs.im2col_cost, _run_weight_im2col,
                   call_seconds=_costs.PADDED_CALL_SECONDS),
    PAD_FIRST,
)

# -- 1-D passes of the ndimage filters (src/_separable.pyx, one entry per layout) ----------

def _pass_rule(layout_reason):
    def applies(p):
        if p.dtype not in (np.float32, np.float64):
            return "works in float32 or float64 (complex data runs as two real passes)"
        return layout_reason(p)
    return applies


def _run_pass(layout):
    def run(call, p, plan, nt):
        call(layout, plan["block"], plan["segment"], nt)
    return run


PASS = (
    Implementation(
        "single-line", "separable",
        "the filtered axis is contiguous: each line and its halo copied into a buffer",
        _pass_rule(lambda p: "" if p.inner == 1 and not p.running_sum else
                   ("the filtered axis is not the contiguous one" if p.inner > 1 else
                    "a running sum needs whole lines side by side")),
        _costs.single_line_plan, _costs.pass_cost, _run_pass(0)),
    Implementation(
        "across-lines", "separable",
        "lines side by side in memory: each output row a sum of shifted input rows, "
        "vectorised across the lines",
        _pass_rule(lambda p: "" if p.inner > 1 else "the filtered axis is the contiguous one"),
        _costs.across_lines_plan, _costs.pass_cost, _run_pass(1)),
    Implementation(
        "transposed-lines", "separable",
        "running sums along the contiguous axis: whole lines loaded side by side into a "
        "buffer, the sum vectorised across them",
        _pass_rule(lambda p: "lines are already side by side" if p.inner > 1 else
                   "" if p.running_sum else "a running-sum layout (uniform_filter)"),
        _costs.transposed_lines_plan,
        lambda p, plan: _costs.pass_cost(p, plan, _costs.PASS_SCALAR_PENALTY), _run_pass(2)),
)

_PASS_NAMES = frozenset(impl.name for impl in PASS)

#: Single-array filtering ('valid' correlation of one channel): ndimage and signal.
#: In SciPy's terms both summation kernels are the 'direct' method (as opposed to
#: 'fft'), so the implicit GEMM (its depthwise kernel, one channel) joins that family.
FILTER = (FORWARD_DIRECT,
          replace(FORWARD_IMPLICIT, family="direct",
                  summary="the implicit GEMM's depthwise kernel on zero-padded bands"),
          FORWARD_FFT)

REGISTRY = {"forward": FORWARD, "transpose": TRANSPOSE, "input_grad": INPUT_GRAD,
            "weight_grad": WEIGHT_GRAD, "filter": FILTER, "pass": PASS}


def describe():
    """The registry as text: per operation, its implementations in order."""
    lines = []
    for op, table in REGISTRY.items():
        lines.append(f"{op}:")
        lines += [f"  {impl.name:<16} {impl.family:<9} {impl.summary}" for impl in table]
    return "\n".join(lines)


# -- selection and execution -------------------------------------------------------------

@lru_cache(maxsize=512)
def select(p, algorithm="auto", implementation=None):
    """The implementation that runs ``p``: a :class:`Choice`.

    ``algorithm`` restricts the choice to a family; ``implementation`` forces
    one entry by name (tests, benchmarks).  When no entry of the family
    applies, 'fft' falls back to 'direct' (an inf/NaN weight); any other
    family raises ValueError with every entry's reason.
    """
    candidates, applicable = [], []
    for impl in REGISTRY[p.op]:
        reason = _mismatch(impl, p.op, algorithm, implementation) or _mode_reason(impl, p) \
            or impl.applies(p)
        if reason and impl.family == "lowering" and implementation is not None \
                and not impl.applies(p):
            # forcing a kernel of the lowered operation: the lowering that reaches it
            reason = _reaches(impl, p, algorithm, implementation)
        if reason:
            candidates.append((impl, reason))
            continue
        plan = impl.plan(p) if impl.family != "lowering" else \
            _lowering_plan(impl, p, algorithm, implementation)
        seconds = impl.cost(p, plan) + impl.call_seconds
        candidates.append((impl, seconds))
        applicable.append(Choice(impl, plan, seconds))
    if not applicable:
        if algorithm == "fft" and implementation is None:
            return select(p, "direct")
        reasons = "; ".join(f"{impl.name}: {why}" for impl, why in candidates)
        what = implementation or f"algorithm={algorithm!r}"
        raise ValueError(f"fastconv: no {p.op} kernel for {what} applies ({reasons})")
    best = min(applicable, key=lambda c: c.seconds)      # min keeps the first of ties
    return replace(best, candidates=tuple(candidates))


def _mode_reason(impl, p):
    mode = getattr(p, "padding_mode", "zeros")         # a PassProblem has none
    if mode == "zeros" or impl.modes or impl.family == "lowering":
        return ""
    return f"reads zero padding only ('pad_first' pads a copy for {mode!r})"


def _reaches(lowering, p, algorithm, implementation):
    try:
        select(lower(lowering.name, p), algorithm, implementation)
    except ValueError as exc:
        return str(exc)
    return ""


def _mismatch(impl, op, algorithm, implementation):
    if implementation is not None:
        return "" if impl.name == implementation else "not the requested implementation"
    if algorithm == "auto" or impl.family in (algorithm, "lowering"):
        return ""
    return f"not in family {algorithm!r}"


def lower(name, p):
    """The Problem an 'input_grad' lowering entry runs as."""
    return {"as_forward": _lower_to_forward, "as_transpose": _lower_to_transpose,
            "pad_first": _lower_to_padded}[name](p)


def _lowering_plan(impl, p, algorithm, implementation=None):
    forced = implementation if implementation != impl.name else None
    return {"lowered": select(lower(impl.name, p), algorithm, forced)}


@lru_cache(maxsize=64)
def _zeros(n, dtype):
    """A read-only zero bias (kernels take the bias as ``const``): one per size and dtype."""
    z = np.zeros(n, dtype)
    z.flags.writeable = False
    return z


@dataclass
class Arrays:
    """The arrays of one call, 5-D and C-contiguous; ``bias`` may be None.

    For 'weight_grad' the slots keep the forward convolution's roles: ``x`` is
    its input, ``w`` the weight gradient being filled, ``out`` grad_output.
    """

    __slots__ = ("x", "w", "bias", "out")     # built once per call: keep it cheap
    x: np.ndarray
    w: np.ndarray
    bias: object
    out: np.ndarray

    @property
    def bias_or_zeros(self):
        return _zeros(self.out.shape[1], self.out.dtype) if self.bias is None else self.bias

    def take(self, rows):
        """The samples ``rows`` (a boolean mask) as a new, contiguous Arrays."""
        return Arrays(np.ascontiguousarray(self.x[rows]), self.w, self.bias,
                      np.empty((int(rows.sum()),) + self.out.shape[1:], self.out.dtype))


def _run_choice(choice, arrays, p):
    # The thread count may read the batch size: it never changes the bits.
    choice.impl.run(arrays, p, choice.plan, threads_for(arrays.x.shape[0] * p.macs))


_FORCED = contextvars.ContextVar("fastconv_forced_implementation", default=None)


@contextlib.contextmanager
def forced(implementation):
    """Run every call inside the block with ``implementation`` (benchmarks, tests).

    The calls whose operation has no such entry, or where it does not apply,
    raise ValueError; gradients reach kernels of the operation they lower to.
    """
    token = _FORCED.set(implementation)
    try:
        yield
    finally:
        _FORCED.reset(token)


def forced_implementation():
    """The implementation forced by an enclosing :func:`forced` block, or None."""
    return _FORCED.get()


def run(p, arrays, algorithm="auto", implementation=None):
    """Select the implementation for ``p``, run it on ``arrays``; return the Choice."""
    if implementation is None:
        implementation = _FORCED.get()
    choice = select(p, algorithm, implementation)
    _run_choice(choice, arrays, p)
    for runs in _RECORDING:
        runs.append((p, choice))
    return choice


def prepare(p, algorithm="auto", implementation=None):
    """The chosen entry's compiled ``run`` for ``p`` (see :class:`Implementation`), or None.

    A prepared call runs it directly while nothing records the runs: what
    :func:`recorded` sees goes through :func:`run`.
    """
    if implementation is None:
        implementation = _FORCED.get()
    choice = select(p, algorithm, implementation)
    return None if choice.impl.prepare is None else choice.impl.prepare(p, choice.plan)


def same_choice_for_any_weight(p, algorithm="auto", implementation=None):
    """Whether ``p``'s choice (implementation and plan) is also the choice when the
    weight holds inf or NaN.

    The kernels that have a prepared form compute such a weight as any other
    (0 * inf in the padding is NaN, as PyTorch's); only the choice can change
    (no FFT, no sub-pixel phases).  Where it does not, a prepared call need not
    read the whole weight on every run to check it (13 % of a (1, 512, 7, 7)
    3x3 layer).
    """
    if implementation is None:
        implementation = _FORCED.get()
    finite = select(p, algorithm, implementation)
    try:
        other = select(replace(p, finite_weight=False), algorithm, implementation)
    except ValueError:                  # a forced kernel that a non-finite weight rules out
        return False
    return finite.impl is other.impl and finite.plan == other.plan


_RECORDING = []


@contextlib.contextmanager
def recorded():
    """Record every kernel run inside the block: yields a list of (Problem, Choice).

    While it is open, prepared calls take their Python path, so every run of
    a public function passes :func:`run` (a test's view of the dispatch).
    """
    runs = []
    _RECORDING.append(runs)
    _fastpath.observe_dispatch(True)
    try:
        yield runs
    finally:
        _RECORDING.remove(runs)
        _fastpath.observe_dispatch(bool(_RECORDING))


def run_pass(p, call, threads):
    """Run one 1-D pass: ``call(layout, block, segment, threads)`` with the chosen plan.

    A ``forced`` name of this table forces the layout; other names do not concern
    passes (a forced convolution kernel may run inside an ndimage filter).
    """
    forced = _FORCED.get()
    choice = select(p, "auto", forced if forced in _PASS_NAMES else None)
    choice.impl.run(call, p, choice.plan, threads)
    return choice


def _nan_where_padding_meets_nonfinite(out, w, x_shape, stride, pad, dilation):
    """NaN where a non-finite weight tap reads zero padding (0 * inf = NaN).

    The direct kernel skips padding taps; PyTorch multiplies them.  Only the
    outputs concerned are touched, so no padded copy of the input is needed.
    """
    nan = np.array(np.nan, out.dtype) if out.dtype.kind == "f" else np.array(
        complex(np.nan, np.nan), out.dtype)
    for co, _, *tap in np.argwhere(~np.isfinite(w)):
        inside = [(0 <= np.arange(o) * s + t * d - p) & (np.arange(o) * s + t * d - p < n)
                  for o, s, t, d, p, n in zip(out.shape[2:], stride, tap, dilation, pad,
                                              x_shape[2:])]
        reads_padding = ~(inside[0][:, None, None] & inside[1][None, :, None]
                          & inside[2][None, None, :])
        if reads_padding.any():
            out[:, co][:, reads_padding] = nan
