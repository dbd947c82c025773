"""The cost model and the tiling rules of the registry's implementations.

Every function here reads a :class:`fastconv._dispatch.Problem` (one
sample's shapes, the dtype, the options): never the batch size, never the
thread count.  Costs are predicted seconds for one sample on one thread.

Rates measured on a 2-core AMD EPYC, float32, one thread (``benchmarks/``):
the direct kernel streams ~11 G multiply-adds/s; fastconv's micro-kernel
~40 GMAC/s and OpenBLAS ~32 GMAC/s on conv-shaped GEMMs, both falling in
proportion when the GEMM has fewer than ~8 rows of output channels (one
register block); a real FFT costs ~0.37 ns per M log2 M points.
"""
import math

import numpy as np

from ._fastpath import copy_into_padded

INT_MAX = 2**31 - 1
MIN_JOBS = 8                     # split work into at least this many jobs where possible
COL_BUFFER_BYTES = 1 << 21       # per-thread im2col buffer: about L2 + a bit
PANEL_BUFFER_BYTES = 1 << 19     # per-thread packed panels of the micro-kernel
# The shifted-slice paths pad a copy of the input: allowed up to this many
# times the sample's input + output cells (+ a small constant, so tiny
# problems with large relative padding still qualify), and computing at most
# this fraction of dropped cells on the padded-width grid.
PADDED_COPY_LIMIT = 4
PADDED_COPY_SLACK = 4096
SHIFTED_MAX_WASTE = 1.3

DIRECT_SECONDS_PER_MAC = 1 / 11e9
PACKED_SECONDS_PER_MAC = 1 / 40e9
BLAS_SECONDS_PER_MAC = 1 / 32e9
GATHER_SECONDS_PER_CELL = 0.3e-9     # im2col/col2im cell with index arithmetic
COPY_SECONDS_PER_CELL = 0.05e-9      # contiguous copy (memcpy-like)
FFT_SECONDS_PER_POINT_LOG = 0.37e-9
FFT_CONTRACT_SECONDS = 1e-9          # per frequency and channel pair (NumPy broadcasting)
GEMM_FULL_ROWS = 8                   # rows of a register block: fewer idle the FMA units

# A thread gets at least this many multiply-adds (~0.1 ms): waking a second
# thread for less costs more than it saves, and far more when the other core is
# busy (a spinning OpenMP thread then waits for a time slice).
MIN_MACS_PER_THREAD = 1 << 20


def threads_for(total_macs, available):
    """Threads for a call of ``total_macs``; changes speed only, never results.

    ``available`` may be a callable, asked only when more than one thread
    could be used (the OpenMP query costs ~2 us, a tiny call ~30 us in all).
    """
    wanted = total_macs // MIN_MACS_PER_THREAD
    if wanted <= 1:
        return 1
    return max(1, min(available() if callable(available) else available, wanted))


def ceil_div(a, b):
    return -(-a // b)


# -- geometry -----------------------------------------------------------------------------

def padded_extent(p):
    """Spatial extent of the zero-padded input a stride-1 output reads."""
    return tuple((o - 1) * s + d * (k - 1) + 1
                 for o, s, d, k in zip(p.out[1:], p.stride, p.dilation, p.kernel))


def grid_length(p):
    """Cells of the padded-width grid: output (od, oh, ow) at (od*Hp + oh)*Wp + ow."""
    _, hp, wp = padded_extent(p)
    do, ho, wo = p.out[1:]
    return ((do - 1) * hp + ho - 1) * wp + wo


def padding_plan(p):
    """(extent, destination, source) of :func:`zero_pad`; None if x needs no copy."""
    extent = padded_extent(p)
    if p.pad == (0, 0, 0) and tuple(p.x[1:]) == extent:
        return None
    src = tuple(slice(0, max(0, min(n, e - q))) for n, e, q in zip(p.x[1:], extent, p.pad))
    dst = tuple(slice(q, q + s.stop) for q, s in zip(p.pad, src))
    return extent, (slice(None), slice(None)) + dst, (slice(None), slice(None)) + src


def zero_pad(x, p, plan=None):
    """x (5-D) zero-padded to exactly the extent a stride-1 output reads.

    ``plan`` is :func:`padding_plan`'s result, computed once per problem.
    """
    plan = padding_plan(p) if plan is None else plan
    if plan is None or plan == ():
        return x
    extent, dst, src = plan
    xp = np.zeros(x.shape[:2] + extent, x.dtype)
    if x.flags.c_contiguous:
        copy_into_padded(x, xp, p.pad)        # one memcpy per row: cheap on tiny calls
    else:
        xp[dst] = x[src]
    return xp


# -- tiles --------------------------------------------------------------------------------

def gemm_tile(rows, length, outer_jobs, itemsize):
    """Columns per GEMM tile: a bounded buffer, and enough jobs to share.

    ``outer_jobs`` never includes the batch size: tiles (and so every output's
    order of operations) depend on one sample's shape only.
    """
    tile = max(64, COL_BUFFER_BYTES // max(1, rows * itemsize))
    tile = min(length, tile)
    if outer_jobs * ceil_div(length, tile) < MIN_JOBS:
        tile = max(min(length, 64), ceil_div(length, ceil_div(MIN_JOBS, outer_jobs)))
    return max(1, min(tile, INT_MAX))


def panel_tile(p, widths):
    """Grid positions per micro-kernel job: whole panels, a bounded buffer."""
    width = widths[0 if p.dtype == np.float32 else 1]
    rows = p.w[1] * p.kvol
    length = grid_length(p)
    tile = max(width, PANEL_BUFFER_BYTES // max(1, rows * p.dtype.itemsize))
    tile = min(tile, length)
    if p.groups * ceil_div(length, tile) < MIN_JOBS:
        tile = ceil_div(length, ceil_div(MIN_JOBS, p.groups))
    return max(width, ceil_div(tile, width) * width)


# -- costs --------------------------------------------------------------------------------

def _gemm_efficiency(rows):
    return min(1.0, rows / GEMM_FULL_ROWS)


def _padding_copy(p):
    return COPY_SECONDS_PER_CELL * p.x[0] * math.prod(padded_extent(p))


def direct_cost(p, plan=None):
    return p.macs * DIRECT_SECONDS_PER_MAC


def direct_weight_cost(p, plan=None):
    """One job per (out, in) channel pair: charged as if the missing jobs idled cores."""
    pairs = p.w[0] * p.w[1]
    return direct_cost(p) * max(1.0, MIN_JOBS / pairs)


def packed_cost(p, plan):
    cog, k = p.w[0] // p.groups, p.w[1] * p.kvol
    cells = plan["grid"] / max(1, math.prod(p.out[1:]))
    return (p.macs * cells * PACKED_SECONDS_PER_MAC / _gemm_efficiency(cog)
            + COPY_SECONDS_PER_CELL * k * plan["grid"] * p.groups + _padding_copy(p))


def shifted_cost(p, plan):
    cog, k = p.w[0] // p.groups, p.w[1] * p.kvol
    cells = plan["grid"] / max(1, math.prod(p.out[1:]))
    return (p.macs * cells * BLAS_SECONDS_PER_MAC / _gemm_efficiency(cog)
            + COPY_SECONDS_PER_CELL * k * plan["grid"] * p.groups + _padding_copy(p))


def im2col_cost(p, plan=None):
    cog, k = p.w[0] // p.groups, p.w[1] * p.kvol
    pointwise = p.kvol == 1 and p.stride == (1, 1, 1) and p.pad == (0, 0, 0)
    gather = 0 if pointwise else GATHER_SECONDS_PER_CELL * k * math.prod(p.out[1:]) * p.groups
    return p.macs * BLAS_SECONDS_PER_MAC / _gemm_efficiency(cog) + gather


def col2im_cost(p, plan=None):
    cig, cog = p.w[0] // p.groups, p.w[1]
    scatter = GATHER_SECONDS_PER_CELL * p.groups * cog * p.kvol * math.prod(p.x[1:])
    return (p.macs * BLAS_SECONDS_PER_MAC
            / (_gemm_efficiency(cig) * _gemm_efficiency(cog * p.kvol)) + scatter)


def fft_cost(points, transforms):
    """Seconds for ``transforms`` real FFTs of ``points`` padded points.

    Past ~16 M points the transforms stream from memory instead of cache and
    ran about twice slower than the in-cache rate (512^3 volume, 7^3 kernel:
    FFT 7.5-12 s against 4.8-6 s direct), so they are charged double.
    """
    rate = FFT_SECONDS_PER_POINT_LOG * (2.0 if points > 2**24 else 1.0)
    return transforms * rate * points * math.log2(max(points, 2))


def _fft_problem_cost(p, extent):
    points = math.prod(extent)
    c_in, c_out = p.x[0], p.out[0]
    pairs = p.w[0] * p.w[1]                       # spectra of the weight
    return fft_cost(points, c_in + c_out + pairs) + FFT_CONTRACT_SECONDS * points * pairs


def fft_forward_cost(p, plan=None):
    """Input, output and weight transforms over the stride-1 extent, plus the contraction."""
    return _fft_problem_cost(p, padded_extent(p))


def fft_transpose_cost(p, plan=None):
    extent = tuple((n - 1) * s + d * (k - 1) + 1
                   for n, s, d, k in zip(p.x[1:], p.stride, p.dilation, p.kernel))
    return _fft_problem_cost(p, extent)
