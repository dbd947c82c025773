"""The cost model and the tiling rules of the registry's implementations.

Every function here reads a :class:`fastconv._dispatch.Problem` (one
sample's shapes, the dtype, the options): never the batch size, never the
thread count.  Costs are predicted seconds for one sample on one thread.

Rates measured on a 2-core AMD EPYC (AVX2), float32, one thread
(``benchmarks/``): the direct kernel streams ~11 G multiply-adds/s;
fastconv's implicit-GEMM micro-kernel ~38-40 GMAC/s and OpenBLAS ~38 GMAC/s
on conv-shaped GEMMs, both falling in proportion when the GEMM has fewer
than ~8 rows of output channels (one register block); the implicit GEMM's
band copy reads the input from memory (~0.25 ns a cell), which is what a
1x1 convolution's in-place BLAS GEMM saves; a real FFT costs ~0.37 ns per
M log2 M points.
"""
import math

import numpy as np

from ._fastpath import copy_into_padded
from ._kernels import implicit as _implicit

depthwise_kernel = _implicit.depthwise_kernel

INT_MAX = 2**31 - 1
MIN_JOBS = 8                     # split work into at least this many jobs where possible
# ... but an implicit-GEMM forward splits a sample's rows into only this many
# tiles: taller tiles waste fewer panel cells and re-copy fewer halo rows.
# Batch 8, 2 threads, AVX-512 (8 / 6 / 4 tiles): ResNet 3x3 6.08 / 5.83 / 5.70
# ms, stride 2 3.78 / 3.47 / 3.54; one sample 0.83 / 0.85 / 0.80 and 0.68 /
# 0.60 / 0.65 (AVX2 build: within 2 %, one sample of stride 2 0.86 / 0.81 /
# 0.83).  Fewer tiles leave a single sample fewer jobs to balance when the
# other core is busy: its slowest of 5 runs was 0.86 ms against 0.69 with 8.
MIN_TILES = 4
MIN_JOB_MACS = 1 << 16           # ... but no job smaller than this (each re-copies its halo)
COL_BUFFER_BYTES = 1 << 21       # per-thread im2col buffer: about L2 + a bit
BAND_BUFFER_BYTES = 1 << 19      # per-thread band of the implicit GEMM: an L2 (measured best of 128 K-1 M)
IMPLICIT_MAX_WASTE = 2.0         # band cells per output cell along a row (halo included)
# The shifted-slice paths pad a copy of the input: allowed up to this many
# times the sample's input + output cells (+ a small constant, so tiny
# problems with large relative padding still qualify), and computing at most
# this fraction of dropped cells on the padded-width grid.
PADDED_COPY_LIMIT = 4
PADDED_COPY_SLACK = 4096
SHIFTED_MAX_WASTE = 1.3

# The direct kernel: ~5 GMAC/s measured at one thread on depthwise 2-D/3-D and on
# single-channel 2-D/3-D filters (3.2-9 GMAC/s; it makes one pass over an output
# row per input row it reads, so 3-D kernels and short rows sit at the low end).
DIRECT_SECONDS_PER_MAC = 1 / 5e9
PACKED_SECONDS_PER_MAC = 1 / 40e9
# The AVX-512 build of the implicit GEMM (8 x 3 zmm registers) against BLAS,
# relative to the AVX2 fit above: implicit / im2col forward time on ResNet 3x3
# was 0.55 on a Sapphire Rapids core, 0.68 on the AVX2 EPYC (0.31 .. 0.74 on
# four layers).  Not measured on Zen 4, whose AVX-512 units are 256 bits wide.
IMPLICIT_AVX512_SPEEDUP = 1.25
BLAS_SECONDS_PER_MAC = 1 / 38e9
BAND_SECONDS_PER_CELL = 0.25e-9      # band copy: the input streams from memory
DEPTHWISE_SECONDS_PER_MAC = 1 / 28e9  # the implicit GEMM's depthwise row kernel: load-bound
DEPTHWISE_SECONDS_PER_CELL = 0.125e-9  # ... and its work per output cell (row set-up, store)
PAD_SECONDS_PER_CELL = 0.7e-9        # explicit reflect/replicate/circular copy (NumPy slices)
GATHER_SECONDS_PER_CELL = 0.3e-9     # im2col/col2im cell with index arithmetic
# BLAS on im2col's column tiles against the rate above: measured / predicted
# 1.15-1.61 (median 1.4) on 14 float32 forward suite rows, where the implicit
# GEMM's prediction was off by 0.96-1.21 (median 1.11); the shifted-slice and
# col2im tiles are charged the same (col2im: 1.5-1.9 on three input gradients).
IM2COL_TILE_SLOWDOWN = 1.25
COPY_SECONDS_PER_CELL = 0.05e-9      # contiguous copy (memcpy-like)
FFT_SECONDS_PER_POINT_LOG = 0.37e-9
FFT_CONTRACT_SECONDS = 1e-9          # per frequency and channel pair (NumPy broadcasting)
GEMM_FULL_ROWS = 8                   # rows of a register block: fewer idle the FMA units
# A GEMM whose inner dimension is this short or shorter stores each C tile after
# a few FMAs: col2im's GEMM with 8 grad_output channels (the input gradient of
# a 1 -> 8 3x3x3 layer, (4,8,16^3)) took 0.65 ms against 0.135 predicted, the
# implicit GEMM of the same gradient 0.49 (measured interleaved).
GEMM_FULL_DEPTH = 32
IMPLICIT_FULL_ROWS = 4               # the implicit GEMM's register block (AVX2 4 x 24)
DIRECT_WEIGHT_SECONDS_PER_MAC = 1 / 2e9
# The implicit weight gradient's fixed work per tile, in output cells' worth:
# measured/predicted time went 4.6, 2.2, 1.9, 1.25 on 7^2, 14^2, 28^2, 56^2
# tiles of 3x3 layers (8 samples, 512 .. 64 channels; the 7^2 one 3x slower
# than BLAS im2col).
WGRAD_TILE_CELLS = 150
# The channel-vector weight-gradient kernel (``_implicit.weight_grad_vec_job``):
# its chunks of transposed grad_output (WGT_CHUNK_BYTES), the fixed work of one
# kernel call on a chunk in cells' worth (the accumulators added to the job's
# sums), and an 8 x 8 register transpose per grad_output cell and channel.
WGRAD_CHUNK_BYTES = 1 << 16
WGRAD_CALL_CELLS = 24
TRANSPOSE_SECONDS_PER_CELL = 0.1e-9
WGRAD_FIT_CELLS = 56 * 56
DIRECT_FULL_ROW = 32                 # output cells per row that keep the direct kernel's lanes busy

# Python-level cost of one more kernel invocation (weights sliced and packed,
# arguments converted): charged where an implementation calls a kernel per
# stride phase (measured ~15 us per phase on an 8x8 transposed convolution).
CALL_SECONDS = 10e-6
# Fixed cost of one kernel call whatever its size (argument handling, weight
# packing, scratch allocation, BLAS and OpenMP set-up), measured on tiny
# problems at one thread (benchmarks/bench_overhead.py's shapes): it decides
# between kernels only where the work itself costs microseconds.
KERNEL_CALL_SECONDS = 3e-6           # implicit GEMM
BLAS_CALL_SECONDS = 6e-6             # im2col reading x in place + a BLAS GEMM, which packs
                                     # even tiny operands (8^3 1x1x1: 14.6 us, implicit 11.3)
DIRECT_CALL_SECONDS = 5e-6
PADDED_CALL_SECONDS = 5e-6           # a zero-padded copy first (shifted im2col, col2im)
SHIFTED_WEIGHT_CALL_SECONDS = 15e-6  # + per-thread GEMM partials reduced at the end
FFT_CALL_SECONDS = 50e-6
SUBPIXEL_MAX_PHASES = 64         # stride phases (one kernel call each) worth planning

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


def band_geometry(p):
    """(planes per input channel, extra rows, extra columns) of an implicit-GEMM band.

    The band of R x Wc output cells holds, per input channel and kernel depth
    tap, one (R + extra rows) x (Wc + extra columns) plane per stride phase.
    """
    (kd, kh, kw), (_, sh, sw), (_, dh, dw) = p.kernel, p.stride, p.dilation
    planes = kd * min(sh, (kh - 1) * dh + 1) * min(sw, (kw - 1) * dw + 1)
    return planes, (kh - 1) * dh // sh, (kw - 1) * dw // sw


def shared_pad_columns(p, cols):
    """Zero-padding columns a forward band row shares with the start of the next
    (``_implicit.shared_pad_columns``: whole-row tiles in zero padding only)."""
    reach = (p.kernel[2] - 1) * p.dilation[2]
    sw, pw, width = p.stride[2], p.pad[2], p.x[3]
    full = cols + reach // sw
    if p.padding_mode != "zeros" or cols < p.out[3]:
        return 0
    shared = reach // sw
    for phase in range(min(sw, reach + 1)):
        # band column j reads x column j * sw + phase - pw: zeros before lo, from hi
        lo = min(max(ceil_div(pw - phase, sw), 0), full)
        hi = min(max(ceil_div(width + pw - phase, sw), lo), full)
        shared = min(shared, lo, full - hi)
    return shared


def band_tile(p, widths, channels=None, min_jobs=True, streams=True):
    """(rows, cols): output cells per implicit-GEMM job, from the shape only.

    Whole output rows, as many as keep the band buffer of ``channels`` input
    channels (default: a group's, for the forward kernel, whose packed weights
    share the L2 with the band) within ``BAND_BUFFER_BYTES``; narrower
    column tiles only when one row is too wide, as in long 1-D signals.  The
    rows are spread evenly over the tiles; where the forward's panels stream
    into the output (``streams``: not a pixel-shuffled one), tiles of whole
    panels (``_streamed_rows``).  With ``min_jobs``, fewer rows if a
    sample would give fewer than ``MIN_TILES`` jobs (the forward kernel's jobs
    are tiles), unless jobs would fall below ``MIN_JOB_MACS``.
    """
    width = widths[0 if p.dtype == np.float32 else 1]
    planes, extra_rows, extra_cols = band_geometry(p)
    per_cell = (channels or p.x[0] // p.groups) * planes
    budget = BAND_BUFFER_BYTES
    blocks = 1
    if channels is None:
        # The forward kernel re-reads a job's packed weights for every panel:
        # when they fit in L2 beside a band, the band leaves them room (measured
        # on (1,32,32^3) 3x3x3: a 448 KiB band with 110 KiB of weights ran at
        # 60 GFLOP/s on one core, a 224 KiB one at 68).  Larger weights are
        # split over jobs by output channels (``job_channels``), which are
        # jobs of the sample too.
        per_job = job_channels(p)
        weight_bytes = per_job * p.w[1] * p.kvol * p.dtype.itemsize
        blocks = ceil_div(p.w[0] // p.groups, per_job)
        if weight_bytes <= BAND_BUFFER_BYTES // 2:
            budget -= weight_bytes
    budget //= p.dtype.itemsize
    do, ho, wo = p.out[1:]
    cols = wo
    if per_cell * (1 + extra_rows) * (cols + extra_cols) > budget:
        cols = min(wo, max(4 * width, budget // (per_cell * (1 + extra_rows)) - extra_cols))
    rows = min(ho, max(1, budget // (per_cell * (cols + extra_cols)) - extra_rows))
    per_sample = p.groups * blocks * do * ceil_div(wo, cols)
    jobs = min(MIN_TILES, ceil_div(p.macs, MIN_JOB_MACS))
    if min_jobs and per_sample * ceil_div(ho, rows) < jobs:
        rows = max(1, ceil_div(ho, ceil_div(jobs, per_sample)))
    rows = ceil_div(ho, ceil_div(ho, rows))          # even tiles: 16 + 16, not 29 + 3
    if streams and channels is None and cols == wo:
        rows = _streamed_rows(p, rows, width)
    return rows, cols


def _streamed_rows(p, rows, width):
    """``rows``, or fewer, so that each tile of a forward whose panels stream
    into the output (``_implicit.stream_output``: 1x1, one K block, a large
    output with whole cache lines per channel) starts on a cache line, and
    where possible is whole panels of ``width`` cells: a misaligned tile
    writes its output with plain stores, and a tile's partial last panel goes
    through the panel buffer (1x1 64 -> 256 on 56x56: 14-row tiles 2.81 ms,
    12 rows 2.71)."""
    kc, min_bytes, align = _implicit.stream_rule()
    item, (do, ho, wo) = p.dtype.itemsize, p.out[1:]
    plane = do * ho * wo * item
    pointwise = p.kvol == 1 and p.stride == (1, 1, 1) and p.pad == (0, 0, 0)
    if not (pointwise and p.w[1] <= kc and plane % align == 0
            and min_bytes >= 0 and p.w[0] * plane >= min_bytes):
        return rows
    for step in (width, 1):             # whole panels, else whole cache lines
        aligned = rows
        while aligned > 1 and (aligned * wo % step or aligned * wo * item % align):
            aligned -= 1
        if aligned * wo % step == 0 and aligned * wo * item % align == 0:
            return aligned
    return rows


def job_channels(p):
    """Output channels of a group that one implicit forward job computes: the
    group's, unless its packed weights exceed ``_implicit``'s WEIGHT_SPLIT_BYTES (1 MiB)."""
    return _implicit.output_channels_per_job(p.x[0] // p.groups, p.w[0] // p.groups,
                                             p.kvol, p.dtype.itemsize)


WGRAD_VECTOR_BLOCKS = 4     # channel vectors per job of the channel-vector kernel (4 x 6)
WGRAD_MIN_COLUMNS = 32      # weight columns per job it needs to amortise its transposes


def weight_blocks(p, rows_per_block=3, channel_vectors=False):
    """(input, output) channels per implicit weight-gradient job.

    A job owns a block of the weight and sums it over the whole batch, so the
    jobs are channel blocks: input channels first (each job then copies only
    its own channels' bands), output channels (whole register blocks of
    ``rows_per_block``) when that gives too few jobs.

    The channel-vector kernel (``channel_vectors``, ``rows_per_block`` its
    vector) transposes its grad_output channels once per job, so output
    channels come first, up to ``WGRAD_VECTOR_BLOCKS`` vectors per job, and
    each job keeps at least ``WGRAD_MIN_COLUMNS`` weight columns (input
    channels x taps) where the layer has them: a 1x1 layer split into 8
    input channels a job spent more time transposing than multiplying.
    """
    cig, cog = p.x[0] // p.groups, p.w[0] // p.groups
    if channel_vectors:
        block = rows_per_block * WGRAD_VECTOR_BLOCKS
        nco = ceil_div(cog, block)
        cob = min(cog, ceil_div(ceil_div(cog, nco), rows_per_block) * rows_per_block)
        nco = ceil_div(cog, cob)
        nci = min(ceil_div(MIN_JOBS, p.groups * nco),
                  max(1, cig * p.kvol // WGRAD_MIN_COLUMNS))
        cib = ceil_div(cig, max(1, nci))
        return cib, cob
    nci = min(cig, ceil_div(MIN_JOBS, p.groups))
    cib = ceil_div(cig, nci)
    nci = ceil_div(cig, cib)
    nco = min(ceil_div(cog, rows_per_block), max(1, ceil_div(MIN_JOBS, p.groups * nci)))
    cob = min(cog, ceil_div(ceil_div(cog, nco), rows_per_block) * rows_per_block)
    return cib, cob


def implicit_waste(p, plan):
    """Computed cells per output cell of a tile: every band row but the last also
    computes the extra columns it does not share with the next row
    (``shared_pad_columns``; a 1-D tile is one row and computes none of them: a
    dilation of 512 costs band copying there, not compute), and the last panel
    in whole vectors (a 7x7 image at 3x3: 55 cells, computed as 56 = 24 + 16 + 16)."""
    _, _, extra_cols = band_geometry(p)
    rows, cols = plan["rows"], plan["cols"]
    extra_cols -= shared_pad_columns(p, cols)
    single = p.dtype.itemsize == 4
    width = _implicit.panel_widths()[0 if single else 1]
    vector = _implicit.vector_widths()[0 if single else 1]
    cells = (rows - 1) * (cols + extra_cols) + cols
    computed = panel_cells(cells, width, vector)
    # ... unless the channel-vector kernel takes the tile: it computes each output
    # cell once, and none of the dropped columns
    block, waste_percent, long_k = _implicit.channel_vector_forward_rule()
    rule_cells = rows * cols if p.w[1] * p.kvol >= long_k else cells
    if (width >= 3 * vector and (p.w[0] // p.groups) % (block * vector) == 0
            and computed * 100 > rule_cells * (100 + waste_percent)):
        computed = rows * cols
    return computed / (rows * cols)


def panel_cells(cells, width, vector):
    """Cells the cell panels compute for a tile of ``cells`` band cells: whole
    panels, then the last one in whole vectors."""
    return cells // width * width + ceil_div(cells % width, vector) * vector


def band_row_excess(p, plan):
    """Band cells per output cell along a row: above ``IMPLICIT_MAX_WASTE`` the
    kernel is wider than the output and the band is mostly halo."""
    _, _, extra_cols = band_geometry(p)
    return (plan["cols"] + extra_cols) / plan["cols"]


# -- 1-D passes of the ndimage filters (``PassProblem``) ----------------------------------

PASS_BUFFER_BYTES = 1 << 18      # per-thread line buffers ('transposed-lines')
PASS_CACHE_BYTES = 1 << 18       # ring of rows in cache ('across-lines')
PASS_LINE_JOB_ELEMENTS = 1 << 14  # elements per job on 'single-line' (a few lines)
PASS_SEGMENT_ROWS = 4096         # rows per job when one line is split (long 1-D signals)
PASS_MIN_JOBS = 16
PASS_SECONDS_PER_TAP = 1 / 8e9   # a vectorised multiply-add of a 1-D pass
PASS_SCALAR_PENALTY = 2.0        # 'transposed-lines' gathers whole lines side by side


def pass_segment(p):
    """Output rows per job: a running sum starts at row 0, so it never splits a line."""
    return p.length if p.running_sum else max(1, min(p.length, PASS_SEGMENT_ROWS))


def single_line_plan(p):
    """Lines per job: about ``PASS_LINE_JOB_ELEMENTS`` elements, at least 16 jobs."""
    segment = pass_segment(p)
    segments = ceil_div(p.length, segment)
    per_job = max(1, PASS_LINE_JOB_ELEMENTS // segment)
    per_job = min(per_job, max(1, ceil_div(p.outer * segments, PASS_MIN_JOBS)))
    return {"block": per_job, "segment": segment}


def _lanes_plan(p, lines, slabs, block):
    segment = pass_segment(p)
    segments = ceil_div(p.length, segment)
    block = max(32, min(4096, block // 32 * 32))
    if lines <= block:
        block = lines
    # enough jobs for the threads to share, from the shape alone
    while block > 32 and slabs * ceil_div(lines, block) * segments < PASS_MIN_JOBS:
        block = max(32, block // 2 // 32 * 32)
    if p.running_sum:
        block = max(2, block)          # a running sum works across >= 2 lanes
    return {"block": block, "segment": segment}


def across_lines_plan(p):
    """Lines (the inner cells) per job: a ring of taps + 1 rows of them stays in cache."""
    return _lanes_plan(p, p.inner, p.outer,
                       PASS_CACHE_BYTES // max(1, 2 * p.taps * p.dtype.itemsize))


def transposed_lines_plan(p):
    """Whole lines per job, loaded side by side into a buffer of that many lanes."""
    rows = 2 * pass_segment(p) + p.taps - 1
    return _lanes_plan(p, p.outer, 1, PASS_BUFFER_BYTES // max(1, rows * p.dtype.itemsize))


def pass_cost(p, plan, penalty=1.0):
    taps = 2 if p.running_sum else p.taps        # a running sum: one add, one subtract
    return p.outer * p.length * p.inner * taps * PASS_SECONDS_PER_TAP * penalty


# -- costs --------------------------------------------------------------------------------

def work(p):
    """Real multiply-adds of one sample: a complex one is four."""
    return p.macs * (4 if p.dtype.kind == "c" else 1)


def _gemm_efficiency(rows):
    return min(1.0, rows / GEMM_FULL_ROWS)


def _padding_copy(p):
    return COPY_SECONDS_PER_CELL * p.x[0] * math.prod(padded_extent(p))


def direct_cost(p, plan=None):
    """The direct kernel vectorises along output rows: a forward convolution's rows
    shorter than ``DIRECT_FULL_ROW`` cells leave lanes idle (measured: 16-cell rows
    of a 3-D denoiser at a third of the rate of long ones)."""
    rate = DIRECT_SECONDS_PER_MAC
    if p.op == "forward":
        rate /= min(1.0, p.out[-1] / DIRECT_FULL_ROW)
    return work(p) * rate


def direct_weight_cost(p, plan=None):
    """One dot-product job per (out, in) channel pair, at ~2 GMAC/s (measured on
    depthwise, 1- and 2-output-channel problems); missing jobs idle cores."""
    pairs = p.w[0] * p.w[1]
    return work(p) * DIRECT_WEIGHT_SECONDS_PER_MAC * max(1.0, MIN_JOBS / pairs)


def packed_seconds_per_mac():
    """PACKED_SECONDS_PER_MAC for the SIMD build loaded (``IMPLICIT_AVX512_SPEEDUP``)."""
    wide = _implicit.vector_widths()[0] >= 16
    return PACKED_SECONDS_PER_MAC / (IMPLICIT_AVX512_SPEEDUP if wide else 1.0)


def implicit_cost(p, plan):
    """Register-blocked GEMM over the band, or, with one input channel and few
    output channels per group (depthwise, single-channel filters), the
    depthwise kernel (``_implicit.depthwise_kernel``): load-bound taps plus
    a cost per output cell (fitted at one thread on 1-D, 2-D and 3-D depthwise
    layers and single-channel 1024^2 images and 96^3-128^3 volumes, 3-1331
    taps: within 20 %)."""
    cog = p.w[0] // p.groups
    planes, extra_rows, extra_cols = band_geometry(p)
    rows, cols = plan["rows"], plan["cols"]
    tiles = p.out[1] * ceil_div(p.out[2], rows) * ceil_div(p.out[3], cols)
    copied = p.x[0] * planes * (rows + extra_rows) * (cols + extra_cols) * tiles
    if depthwise_kernel(p.x[0] // p.groups, cog):
        # output rows computed in place: no dropped columns
        return (work(p) * DEPTHWISE_SECONDS_PER_MAC
                + DEPTHWISE_SECONDS_PER_CELL * p.out[0] * math.prod(p.out[1:])
                + BAND_SECONDS_PER_CELL * copied)
    return (work(p) * implicit_waste(p, plan) * packed_seconds_per_mac()
            / min(1.0, cog / IMPLICIT_FULL_ROWS) + BAND_SECONDS_PER_CELL * copied)


def implicit_weight_cost(p, plan):
    """The channel-vector kernel (``plan["channel_vectors"]``) pays for idle
    lanes past a block's last channel, a fixed cost per kernel call and its
    transposes of grad_output.  The dot-product kernel idles when a job has
    fewer than 3 output channels or 4 weight columns, and each tile's dot
    products end in horizontal sums, which a small tile (a 7x7 image) does not
    amortise (``WGRAD_TILE_CELLS``).  Each output-channel block copies the
    bands again."""
    cog = p.w[0] // p.groups
    planes, extra_rows, extra_cols = band_geometry(p)
    rows, cols = plan["rows"], plan["cols"]
    transposes = 0
    if plan.get("channel_vectors"):
        # idle lanes past the last channel of a block, a fixed cost per kernel
        # call (a chunk of cells), and the grad_output transposed once per job
        cob = plan["cob"]
        pitch = _implicit.weight_grad_channel_pitch(cob, p.dtype.itemsize)
        efficiency = cog / (ceil_div(cog, cob) * pitch)
        chunk = min(rows * cols, WGRAD_CHUNK_BYTES // (p.dtype.itemsize * cob))
        efficiency *= chunk / (chunk + WGRAD_CALL_CELLS)
        transposes = ceil_div(p.x[0] // p.groups, plan["cib"]) * p.w[0] * math.prod(p.out[1:])
    else:
        efficiency = min(1.0, cog / 3) * min(1.0, plan["cib"] * p.kvol / 4)
        # (PACKED_SECONDS_PER_MAC was fitted on 56 x 56 tiles: the term is relative to them)
        fitted = 1 + WGRAD_TILE_CELLS / WGRAD_FIT_CELLS
        efficiency *= fitted / (1 + WGRAD_TILE_CELLS / (rows * cols))
    tiles = p.out[1] * ceil_div(p.out[2], rows) * ceil_div(p.out[3], cols)
    copied = (p.x[0] * planes * (rows + extra_rows) * (cols + extra_cols) * tiles
              * ceil_div(cog, plan["cob"]))
    # A pointwise band is whole input rows, copied with one memcpy per plane
    # (measured: 1x1 256->64 on (8, 256, 56, 56), implicit 8.3 ms against BLAS
    # im2col's 9.5-9.7 in two suite runs; 9.2 against 10.0 alone).
    whole_rows = p.kvol == 1 and p.stride == (1, 1, 1) and p.pad == (0, 0, 0)
    per_cell = COPY_SECONDS_PER_CELL if whole_rows else BAND_SECONDS_PER_CELL
    return (work(p) * packed_seconds_per_mac() / efficiency + per_cell * copied
            + TRANSPOSE_SECONDS_PER_CELL * transposes)


def shifted_cost(p, plan):
    cog, k = p.w[0] // p.groups, p.w[1] * p.kvol
    cells = plan["grid"] / max(1, math.prod(p.out[1:]))
    return (work(p) * cells * BLAS_SECONDS_PER_MAC * IM2COL_TILE_SLOWDOWN
            / _gemm_efficiency(cog) + COPY_SECONDS_PER_CELL * k * plan["grid"] * p.groups
            + _padding_copy(p))


def im2col_cost(p, plan=None):
    """BLAS on column tiles (``IM2COL_TILE_SLOWDOWN``) plus the gather; a 1x1
    convolution multiplies the input in place."""
    cog, k = p.w[0] // p.groups, p.w[1] * p.kvol
    if p.kvol == 1 and p.stride == (1, 1, 1) and p.pad == (0, 0, 0):
        return work(p) * BLAS_SECONDS_PER_MAC / _gemm_efficiency(cog)
    gather = GATHER_SECONDS_PER_CELL * k * math.prod(p.out[1:]) * p.groups
    return (work(p) * BLAS_SECONDS_PER_MAC * IM2COL_TILE_SLOWDOWN / _gemm_efficiency(cog)
            + gather)


def col2im_cost(p, plan=None):
    """The GEMM W^T (cog * taps x cig) @ x (cig x cells), then the scatter; cig is
    the GEMM's inner dimension (``GEMM_FULL_DEPTH``)."""
    cig, cog = p.w[0] // p.groups, p.w[1]
    scatter = GATHER_SECONDS_PER_CELL * p.groups * cog * p.kvol * math.prod(p.x[1:])
    depth = min(1.0, cig / GEMM_FULL_DEPTH)
    return (work(p) * BLAS_SECONDS_PER_MAC * IM2COL_TILE_SLOWDOWN
            / (_gemm_efficiency(cig) * _gemm_efficiency(cog * p.kvol) * depth) + scatter)


def fft_cost(points, transforms):
    """Seconds for ``transforms`` real FFTs of ``points`` padded points.

    Large transforms stream from memory instead of cache and run slower per
    point, about 1.25x at 266^3 (256^3 volume, 11^3 kernel: 322 ms measured,
    257 at the in-cache rate) and 2x at 512^3 (7^3 kernel: FFT 7.5-12 s
    against 4.8-6 s direct): charged 1 + points / 2^27 times the rate.
    """
    rate = FFT_SECONDS_PER_POINT_LOG * (1.0 + points / 2**27)
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
