"""Transposed convolution as stride-1 convolutions, one per stride phase (sub-pixel).

A transposed convolution writes ``out[i] += x[o] * w[k]`` wherever
``i = o * s + k * d - p``.  The outputs of one phase ``i = phi + s * j`` are
reached only by the taps with ``(phi + p - k * d) % s == 0``, each from
``x[j + c_k]`` with ``c_k = (phi + p - k * d) // s``: a plain stride-1
correlation of ``x`` with those taps (reversed, channel-swapped per group),
dilation ``d / gcd(d, s)`` and padding ``-min(c_k)``, whose output is written
to every ``s``-th cell from ``phi``.  No scatter and no column matrix: each
phase runs on the implicit-GEMM kernel, writing its strided cells in place.
"""
import math
from dataclasses import dataclass, replace

import numpy as np

from . import _costs, _planar, _workspace


@dataclass(frozen=True)
class AxisPhase:
    """One stride phase along one axis: output cells start + step * j, j < size."""

    start: int
    size: int
    taps: slice          # weight taps of the phase, in correlation order
    count: int           # number of taps (0: the phase holds only the bias)
    pad: int             # padding of the phase's stride-1 correlation (may be < 0)
    dilation: int


def axis_phases(n_out, kernel, stride, pad, dilation):
    """The ``stride`` phases of one axis (those with output cells)."""
    phases = []
    step = stride // math.gcd(stride, dilation)          # k between consecutive taps
    for phi in range(min(stride, n_out)):
        taps = [k for k in range(kernel) if (phi + pad - k * dilation) % stride == 0]
        size = (n_out - phi + stride - 1) // stride
        if not taps:
            phases.append(AxisPhase(phi, size, slice(0, 0), 0, 0, 1))
            continue
        k_min, k_max = taps[0], taps[-1]
        phases.append(AxisPhase(
            phi, size, slice(k_max, k_min - 1 if k_min > 0 else None, -step), len(taps),
            -((phi + pad - k_max * dilation) // stride), dilation // math.gcd(stride, dilation)))
    return phases


def phase_problems(p):
    """[(per-axis phases, forward Problem or None)] of a transposed Problem ``p``.

    The Problem is None for a phase without taps (its cells hold the bias).
    """
    axes = [axis_phases(*args) for args in zip(p.out[1:], p.kernel, p.stride, p.pad,
                                               p.dilation)]
    c_in, cog = p.w[0], p.w[1]
    result = []
    for d in axes[0]:
        for h in axes[1]:
            for w in axes[2]:
                ph = (d, h, w)
                if min(a.count for a in ph) == 0:
                    result.append((ph, None))
                    continue
                result.append((ph, replace(
                    p, op="forward", w=(cog * p.groups, c_in // p.groups) + tuple(
                        a.count for a in ph),
                    out=(cog * p.groups,) + tuple(a.size for a in ph), stride=(1, 1, 1),
                    pad=tuple(a.pad for a in ph), dilation=tuple(a.dilation for a in ph))))
    return result


def swapped_weight(w, groups):
    """(C_in, C_out/g, k) transposed weight as a (C_out, C_in/g, k) forward weight."""
    c_in, cog = w.shape[:2]
    kernel = w.shape[2:]
    return (w.reshape((groups, c_in // groups, cog) + kernel).swapaxes(1, 2)
            .reshape((cog * groups, c_in // groups) + kernel))


class Phases(tuple):
    """The plan's phases: (axis phases, forward Problem or None, band tile) each."""

    def __repr__(self):
        taps = [q.w[2:] for _, q, _ in self if q is not None]
        return f"{len(self)} phases, kernels {', '.join('x'.join(map(str, t)) for t in taps)}"


def plan(p, band_tile):
    """Per phase: its axis phases, forward Problem and band tile (rows, cols)."""
    return {"phases": Phases((ph, q, band_tile(q) if q is not None else None)
                             for ph, q in phase_problems(p))}


def cost(p, plan):
    """The phases' implicit-GEMM costs, each phase also paying one kernel call."""
    seconds = _costs.CALL_SECONDS * len(plan["phases"])
    for ph, q, tile in plan["phases"]:
        if q is None:
            seconds += _costs.COPY_SECONDS_PER_CELL * p.out[0] * math.prod(a.size for a in ph)
        else:
            seconds += _costs.implicit_cost(q, {"rows": tile[0], "cols": tile[1]})
    return seconds


def run(kernel, a, p, plan, nt):
    """Fill ``a.out`` phase by phase with ``kernel`` (``_implicit.conv_forward``).

    ``plan`` is made for the real problem: complex arrays run planar (``_planar``).
    """
    g = p.groups
    x, out, bias, weight = a.x, a.out, a.bias_or_zeros, swapped_weight(a.w, g)
    if np.iscomplexobj(out):
        x, bias = _planar.planar(x, g, nt), _planar.planar_bias(bias, g)
        out = _workspace.empty((out.shape[0], 2 * out.shape[1]) + out.shape[2:], x.dtype)
    for ph, q, tile in plan["phases"]:
        cells = (Ellipsis,) + tuple(slice(x_.start, None, s) for x_, s in zip(ph, p.stride))
        if q is None:
            out[cells] = bias.reshape(-1, 1, 1, 1) if a.bias is not None else 0
            continue
        w = weight[(slice(None), slice(None)) + tuple(x_.taps for x_ in ph)]
        w = _planar.planar_weight(w, g) if np.iscomplexobj(w) else np.ascontiguousarray(w)
        kernel(x, w, bias, a.bias is not None, out, (1, 1, 1), q.pad, q.dilation, g, nt,
               tile[0], tile[1], tuple(x_.size for x_ in ph), tuple(x_.start for x_ in ph),
               tuple(p.stride))
    if out is not a.out:
        _planar.unplanar(out, a.out, g, nt)


def shuffle_rule(p):
    """'' when the transposed Problem ``p`` is a pixel shuffle of one 1x1 convolution."""
    if p.stride != p.kernel:
        return "needs stride = kernel"
    if p.pad != (0, 0, 0) or any(d != 1 and k > 1 for d, k in zip(p.dilation, p.kernel)):
        return "needs no padding or dilation"
    if p.out[1:] != tuple(n * s for n, s in zip(p.x[1:], p.stride)):
        return "output padding: cells no tap reaches"
    return ""


def shuffle_problem(p):
    """The 1x1 forward Problem computing every tap of the transposed ``p`` at once:
    ``prod(kernel)`` channels per output channel, in :func:`shuffle_weight`'s order."""
    c_in, cog = p.w[:2]
    channels = cog * p.groups * p.kvol
    return replace(p, op="forward", w=(channels, c_in // p.groups, 1, 1, 1),
                   out=(channels,) + p.x[1:], stride=(1, 1, 1), pad=(0, 0, 0),
                   dilation=(1, 1, 1))


def shuffle_weight(w, groups):
    """(C_in, C_out/g, *k) transposed weight -> (C_out * prod(k), C_in/g, 1, 1, 1):
    row (grp * C_out/g + co) * prod(k) + tap holds tap ``tap`` of output channel co."""
    c_in, cog = w.shape[:2]
    taps = math.prod(w.shape[2:])
    rows = (w.reshape(groups, c_in // groups, cog * taps).transpose(0, 2, 1)
            .reshape(groups * cog * taps, c_in // groups, 1, 1, 1))
    return np.ascontiguousarray(rows)


def run_shuffle(kernel, a, p, plan, nt):
    """Fill ``a.out`` with one 1x1 ``kernel`` call (``_implicit.conv_forward``).

    A real weight is read in place in :func:`shuffle_weight`'s order by the
    kernel's packing (``transposed_weight``); a complex one is reordered here,
    then made planar.
    """
    g = p.groups
    x, out, bias, weight = a.x, a.out, a.bias, a.w
    is_complex = np.iscomplexobj(out)
    if is_complex:
        x, weight = (_planar.planar(x, g, nt),
                     _planar.planar_weight(shuffle_weight(weight, g), g))
        bias = _planar.planar_bias(a.bias_or_zeros, g)
        out = _workspace.empty((out.shape[0], 2 * out.shape[1]) + out.shape[2:], x.dtype)
    kernel(x, weight, bias, a.bias is not None, out, (1, 1, 1), (0, 0, 0), (1, 1, 1), g, nt,
           plan["rows"], plan["cols"], out_size=tuple(x.shape[2:]), out_step=p.stride,
           shuffle=p.stride, transposed_weight=not is_complex)
    if out is not a.out:
        _planar.unplanar(out, a.out, g, nt)
