"""The kernel registry, walked: every implementation of every operation.

For each entry of ``fastconv._dispatch.REGISTRY`` the problems below where
it applies are run with that entry forced, and checked

* against the float64 NumPy oracle (``reference.py``), in every dtype;
* for bit-identical results at 1, 2, 3 and 4 threads;
* for bit-identical samples whether computed in a batch, alone, or in any
  split of the batch (not for weight gradients, which sum over the batch).

A kernel added to the registry is covered without being listed here:
:func:`test_every_implementation_is_walked` fails until some problem below
lets it apply.  Also here: the rules read neither the thread count nor the
batch size, ``fastconv.explain`` names what really runs, and the two
reproducibility failures of issue 11.
"""
import contextlib
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastconv as fc
from fastconv import _costs, _dispatch, _engine
from fastconv import _ndfilters, _subpixel
from fastconv._dispatch import REGISTRY, PassProblem, Problem

import reference
from conftest import assert_close, dispatch_recorded, random_array

DTYPES = (np.float32, np.float64, np.complex64, np.complex128)
DTYPE_IDS = [np.dtype(t).name for t in DTYPES]
BATCH = 3


def _conv_out(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _transpose_out(n, k, s, p, d):
    return (n - 1) * s - 2 * p + d * (k - 1) + 1


# Convolutions: (x shape without batch, w shape, stride, pad, dilation, groups); 5-D canonical.
CONVS = {
    "2d_3x3": ((4, 1, 9, 10), (6, 4, 1, 3, 3), (1, 1, 1), (0, 1, 1), (1, 1, 1), 1),
    "1d_strided_dilated_groups": ((4, 1, 1, 40), (6, 2, 1, 1, 5), (1, 1, 2), (0, 0, 2),
                                  (1, 1, 2), 2),
    "3d_3x3x3": ((2, 5, 6, 7), (4, 2, 3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), 1),
    "2d_1x1": ((8, 1, 6, 7), (5, 8, 1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1), 1),
    "2d_depthwise": ((4, 1, 8, 8), (4, 1, 1, 3, 3), (1, 1, 1), (0, 1, 1), (1, 1, 1), 4),
    "2d_thin_stride2": ((3, 1, 11, 12), (2, 3, 1, 3, 3), (1, 2, 2), (0, 1, 1), (1, 1, 1), 1),
    "2d_huge_padding": ((2, 1, 4, 4), (3, 2, 1, 3, 3), (1, 1, 1), (0, 9, 9), (1, 1, 1), 1),
    "3d_dilated_wide": ((2, 4, 5, 13), (24, 2, 2, 2, 3), (1, 1, 1), (0, 1, 2), (1, 2, 2), 1),
    # stride phases along H and W with dilation, and uneven padding reach
    "2d_stride3_dilated": ((3, 1, 17, 19), (5, 3, 1, 4, 3), (1, 3, 2), (0, 2, 1), (1, 2, 3), 1),
    "3d_stride2": ((3, 7, 8, 9), (4, 3, 3, 3, 3), (2, 2, 1), (1, 0, 1), (1, 1, 1), 1),
    # one input channel per group (the implicit GEMM's depthwise kernel): a channel
    # multiplier with stride, and a single-channel volume
    "2d_depthwise_multiplier": ((3, 1, 7, 9), (6, 1, 1, 3, 3), (1, 1, 2), (0, 1, 1),
                                (1, 1, 1), 3),
    "3d_single_channel": ((1, 6, 7, 8), (1, 1, 3, 2, 3), (1, 1, 1), (1, 0, 1), (1, 1, 1), 1),
    # a row too wide for one band buffer: the implicit GEMM splits it into column tiles
    "1d_wide_split": ((64, 1, 1, 1200), (4, 64, 1, 1, 3), (1, 1, 1), (0, 0, 1), (1, 1, 1), 1),
    # whole input rows, padded along D and H only: band planes copied as one block,
    # zero rows and planes around it; panels stored as one run of the output
    "3d_1x1_padded_dh": ((3, 2, 5, 6), (4, 3, 1, 1, 1), (1, 1, 1), (1, 2, 0), (1, 1, 1), 1),
    # weights too large for one job (deep layers): a tile's output channels split
    # over several jobs, the last block partial (test_deep_layers_split_...)
    "2d_deep_channel_blocks": ((224, 1, 5, 6), (151, 224, 1, 3, 3), (1, 1, 1), (0, 1, 1),
                               (1, 1, 1), 1),
    # grouped, stride 1: the input gradient packs the convolution's own weight,
    # channels swapped and taps reversed per group (FLIPPED), with no copy
    "2d_grouped_flipped": ((8, 1, 7, 9), (10, 4, 1, 3, 2), (1, 1, 1), (0, 1, 1), (1, 1, 2), 2),
    # weight gradients vectorised across output channels (at least a vector of
    # them per group): blocks of 1, 2 and 4+ vectors with idle lanes past the
    # last channel; 3-D; grouped 1-D with stride; rows so wide that each is its
    # own transposed chunk
    "2d_wgrad_channel_vectors": ((10, 1, 9, 11), (37, 10, 1, 3, 3), (1, 1, 1), (0, 1, 1),
                                 (1, 1, 1), 1),
    "3d_wgrad_channel_vectors": ((3, 4, 5, 6), (72, 3, 3, 2, 3), (1, 1, 1), (1, 0, 1),
                                 (1, 1, 1), 1),
    "1d_wgrad_channel_vectors_groups": ((8, 1, 1, 70), (48, 4, 1, 1, 3), (1, 1, 2), (0, 0, 2),
                                        (1, 1, 1), 2),
    "2d_wgrad_chunked_rows": ((2, 1, 9, 140), (64, 2, 1, 3, 3), (1, 1, 1), (0, 1, 1),
                              (1, 1, 1), 1),
    # groups of 8, 4 and 12 output channels: a half vector of them on AVX-512
    # (8 float, 4 double), and a whole one with idle lanes (12)
    "2d_wgrad_half_vectors": ((16, 1, 9, 11), (32, 4, 1, 3, 3), (1, 1, 1), (0, 1, 1),
                              (1, 1, 1), 4),
    "2d_wgrad_half_vectors_f64": ((8, 1, 6, 13), (16, 2, 1, 3, 3), (1, 1, 2), (0, 1, 1),
                                  (1, 1, 1), 4),
    "3d_wgrad_twelve_channels": ((6, 3, 5, 6), (24, 3, 3, 2, 3), (1, 1, 1), (1, 0, 1),
                                 (1, 1, 1), 2),
    # small images whose cell panels waste over 12 %: the forward kernel
    # vectorised across output channels (whole blocks of them per group), its
    # stride-1 input gradient packing the flipped weight a vector at a time
    "2d_channel_vector_forward": ((16, 1, 7, 7), (64, 16, 1, 3, 3), (1, 1, 1), (0, 1, 1),
                                  (1, 1, 1), 1),
    "2d_channel_vector_forward_groups": ((12, 1, 5, 9), (128, 6, 1, 3, 3), (1, 1, 1),
                                         (0, 1, 1), (1, 1, 1), 2),
}
# Reflect / replicate / circular padding (symmetric pads): forward and weight_grad only.
MODE_CONVS = {
    "2d_reflect": ((3, 1, 7, 8), (4, 3, 1, 3, 3), (1, 1, 1), (0, 2, 1), (1, 1, 1), 1,
                   "reflect"),
    "3d_circular_strided": ((2, 5, 6, 7), (4, 2, 3, 3, 3), (2, 1, 2), (1, 1, 2), (1, 2, 1), 1,
                            "circular"),
    "1d_replicate_groups": ((4, 1, 1, 20), (6, 2, 1, 1, 5), (1, 1, 2), (0, 0, 3), (1, 1, 2), 2,
                            "replicate"),
}
# Transposed convolutions: x shape without batch, w (C_in, C_out/groups, k), ...
TRANSPOSES = {
    "2d_stride2": ((4, 1, 5, 6), (4, 3, 1, 3, 3), (1, 2, 2), (0, 1, 1), (1, 1, 1), 1),
    "1d_dilated_groups": ((4, 1, 1, 11), (4, 2, 1, 1, 3), (1, 1, 3), (0, 0, 1), (1, 1, 2), 2),
    "3d_k2_s2": ((2, 3, 4, 5), (2, 3, 2, 2, 2), (2, 2, 2), (0, 0, 0), (1, 1, 1), 1),
    "2d_wide": ((16, 1, 5, 5), (16, 12, 1, 2, 2), (1, 1, 1), (0, 0, 0), (1, 1, 1), 1),
    # stride phases that no tap reaches (they hold the bias), and dilated phases
    "1d_sparse_taps": ((4, 1, 1, 7), (4, 3, 1, 1, 2), (1, 1, 4), (0, 0, 1), (1, 1, 1), 1),
    "2d_stride3_dilated": ((3, 1, 5, 6), (3, 2, 1, 4, 3), (1, 3, 2), (0, 2, 1), (1, 2, 3), 1),
    # depthwise: each stride phase is a one-channel-per-group convolution
    "2d_depthwise_s2": ((4, 1, 5, 6), (4, 1, 1, 3, 3), (1, 2, 2), (0, 1, 1), (1, 1, 1), 4),
    # stride = kernel: one pixel-shuffled 1x1 GEMM ('shuffle'), odd factors and groups
    "1d_k3_s3_groups": ((4, 1, 1, 7), (4, 3, 1, 1, 3), (1, 1, 3), (0, 0, 0), (1, 1, 1), 2),
    "2d_k2x3_s2x3": ((5, 1, 3, 4), (5, 7, 1, 2, 3), (1, 2, 3), (0, 0, 0), (1, 1, 1), 1),
    # stride phases whose weights split over jobs by output channels
    "2d_deep_stride2": ((512, 1, 4, 5), (512, 151, 1, 3, 3), (1, 2, 2), (0, 1, 1), (1, 1, 1), 1),
}
# Single-array filters: (padded shape, kernel shape), 'valid' correlation.
FILTERS = {
    "2d_5x5": ((1, 12, 13), (1, 5, 5)),
    "3d_3x3x3": ((6, 7, 8), (3, 3, 3)),
    "1d_31": ((1, 1, 64), (1, 1, 31)),
}


# 1-D passes of the ndimage filters: (outer, length, inner) cells, taps, running sum;
# the array is (outer, length, inner), filtered along axis 1.
PASSES = {
    "contiguous_lines": ((6, 40, 1), 5, False),
    "across_lines": ((3, 17, 40), 3, False),
    "running_sum_contiguous": ((5, 33, 1), 4, True),
    "running_sum_across": ((2, 20, 37), 3, True),
    "long_split_line": ((1, 9000, 1), 7, False),
}


def _pass_problem(name):
    (outer, length, inner), taps, running = PASSES[name]
    return PassProblem(outer, length, inner, taps, np.dtype(np.float64), running)


def _conv_problem(op, name):
    x, w, s, p, d, g, *mode = CONVS[name] if name in CONVS else MODE_CONVS[name]
    out = (w[0],) + tuple(_conv_out(n, k, ss, pp, dd)
                          for n, k, ss, pp, dd in zip(x[1:], w[2:], s, p, d))
    if op in ("forward", "weight_grad"):
        return Problem(op, x, w, out, np.dtype(np.float64), s, p, d, g,
                       padding_mode=mode[0] if mode else "zeros")
    return Problem("input_grad", out, w, x, np.dtype(np.float64), s, p, d, g)


def _transpose_problem(name):
    x, w, s, p, d, g = TRANSPOSES[name]
    out = (w[1] * g,) + tuple(_transpose_out(n, k, ss, pp, dd)
                              for n, k, ss, pp, dd in zip(x[1:], w[2:], s, p, d))
    return Problem("transpose", x, w, out, np.dtype(np.float64), s, p, d, g)


def _filter_problem(name):
    padded, kernel = FILTERS[name]
    out = (1,) + tuple(n - k + 1 for n, k in zip(padded, kernel))
    return Problem("filter", (1,) + padded, (1, 1) + kernel, out, np.dtype(np.float64))


def _problems(op):
    if op in ("forward", "weight_grad"):
        return {name: _conv_problem(op, name) for name in (*CONVS, *MODE_CONVS)}
    if op == "input_grad":
        return {name: _conv_problem(op, name) for name in CONVS}
    if op == "transpose":
        return {name: _transpose_problem(name) for name in TRANSPOSES}
    if op == "pass":
        return {name: _pass_problem(name) for name in PASSES}
    return {name: _filter_problem(name) for name in FILTERS}


def _walk(dtypes):
    """(op, implementation, problem, dtype) wherever the entry applies."""
    cases = []
    for op, table in REGISTRY.items():
        for impl in table:
            for name, p in _problems(op).items():
                for dtype in dtypes:
                    p = replace(p, dtype=np.dtype(dtype))
                    if not impl.applies(p):
                        cases.append(pytest.param(op, impl.name, p, dtype, id=f"{op}-{impl.name}"
                                                  f"-{name}-{np.dtype(dtype).name}"))
    return cases


CASES = _walk(DTYPES)


def test_every_implementation_is_walked():
    walked = {(c.values[0], c.values[1]) for c in CASES}
    missing = [(op, impl.name) for op, table in REGISTRY.items() for impl in table
               if (op, impl.name) not in walked]
    assert not missing, f"no test problem lets these implementations apply: {missing}"


# -- running one forced implementation ---------------------------------------------------

def _arrays(p, dtype, batch, seed=0):
    rng = np.random.default_rng(seed)
    x = random_array(rng, (batch,) + p.x, dtype)
    w = random_array(rng, p.w, dtype)
    bias = random_array(rng, (p.out[0],), dtype) if p.op in ("forward", "transpose") else None
    return x, w, bias


def _run_pass(p, impl, x, w):
    """A 1-D pass along axis 1 with ``impl`` forced: uniform_filter1d or correlate1d."""
    with _dispatch.forced(impl) if impl else contextlib.nullcontext():
        if p.running_sum:
            return fc.ndimage.uniform_filter1d(x, p.taps, axis=1, mode="reflect")
        return fc.ndimage.correlate1d(x, w, axis=1, mode="reflect")


def _expected_pass(p, x, w):
    """float64 oracle: SciPy's 'reflect' is NumPy's 'symmetric' padding."""
    w = np.full(p.taps, 1 / p.taps) if p.running_sum else w
    left = p.taps // 2
    padded = np.pad(x.astype(np.float64), [(0, 0), (left, p.taps - 1 - left), (0, 0)],
                    mode="symmetric")
    return sum(w[j] * padded[:, j:j + p.length] for j in range(p.taps))


def _run(p, impl, x, w, bias):
    """Output of ``impl`` forced on p (weight_grad: x is the input, w grad_output)."""
    if p.op == "pass":
        return _run_pass(p, impl, x, w)
    dtype = x.dtype
    if p.op == "weight_grad":
        dw = np.empty(p.w, dtype)
        _engine.conv_weight_grad(x, w, dw, p.stride, p.pad, p.dilation, p.groups,
                                 implementation=impl, padding_mode=p.padding_mode)
        return dw
    out = np.empty((x.shape[0],) + p.out, dtype)
    if p.op == "transpose":
        _engine.transpose_forward(x, w, bias, out, p.stride, p.pad, p.dilation, p.groups,
                                  implementation=impl)
    elif p.op == "input_grad":
        _engine.input_grad(x, w, out, p.stride, p.pad, p.dilation, p.groups,
                           implementation=impl)
    else:
        _engine.conv_forward(x, w, bias, out, p.stride, p.pad, p.dilation, p.groups,
                             implementation=impl, op=p.op, padding_mode=p.padding_mode)
    return out


def _inputs(p, dtype, batch, seed=0):
    """Arrays for _run: for weight_grad, grad_output takes the weight's slot."""
    if p.op == "pass":                       # one array, no batch; float64 taps
        rng = np.random.default_rng(seed)
        return (random_array(rng, (p.outer, p.length, p.inner), dtype),
                rng.standard_normal(p.taps), None)
    x, w, bias = _arrays(p, dtype, batch, seed)
    if p.op == "weight_grad":
        g = random_array(np.random.default_rng(seed + 1), (batch,) + p.out, dtype)
        return x, g, None
    return x, w, bias


def _expected(p, x, w, bias):
    """The float64 oracle, on the 5-D arrays (padding is symmetric in these problems)."""
    if p.op == "pass":
        return _expected_pass(p, x, w)
    s, d, g = p.stride, p.dilation, p.groups
    if p.op in ("forward", "filter"):
        return reference.conv(x, w, bias, s, p.pad, d, g, p.padding_mode)
    if p.op == "transpose":
        return reference.conv_transpose(x, w, bias, s, p.pad, 0, g, d)
    if p.op == "input_grad":        # the kernel takes the weight already conjugated
        return reference.conv_input((x.shape[0],) + p.out, np.conj(w), x, s, p.pad, d, g)
    return reference.conv_weight(x, p.w, w, s, p.pad, d, g, p.padding_mode)


@pytest.fixture
def threads_on_tiny_problems(monkeypatch):
    """Let every thread work on these small problems (normally ~1 M MACs per thread)."""
    monkeypatch.setattr(_costs, "MIN_MACS_PER_THREAD", 1)
    monkeypatch.setattr(_ndfilters, "_MIN_WORK_PER_THREAD", 1)
    before = fc.get_num_threads()
    yield
    fc.set_num_threads(before)


@pytest.mark.parametrize("op, impl, p, dtype", CASES)
def test_implementation_matches_the_float64_oracle(op, impl, p, dtype):
    x, w, bias = _inputs(p, dtype, BATCH)
    actual = _run(p, impl, x, w, bias)
    expected = _expected(p, x, w, bias)
    if op == "pass":
        assert_close(actual, expected, dtype, p.taps, err_msg=f"{op}/{impl}")
        return
    reduction = p.w[1] * p.kvol
    if op in ("weight_grad",):
        reduction = BATCH * math.prod(p.out[1:])
    elif op == "input_grad":
        reduction = p.w[0] // p.groups * p.kvol
    elif op == "transpose":
        reduction = p.x[0] // p.groups * p.kvol
    assert_close(actual, expected, dtype, reduction, err_msg=f"{op}/{impl}")


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def _assert_same_bits(actual, expected, what):
    assert np.array_equal(_bits(actual), _bits(expected)), (
        f"{what}: not bit-identical (max |diff| "
        f"{np.max(np.abs(actual.astype(complex) - expected)):.3g})")


@pytest.mark.parametrize("op, impl, p, dtype", CASES)
def test_implementation_is_bitwise_identical_for_any_thread_count(
        threads_on_tiny_problems, op, impl, p, dtype):
    x, w, bias = _inputs(p, dtype, BATCH)
    fc.set_num_threads(1)
    first = _run(p, impl, x, w, bias)
    for n in (2, 3, 4):
        fc.set_num_threads(n)
        _assert_same_bits(_run(p, impl, x, w, bias), first, f"{op}/{impl}, {n} threads")


@pytest.mark.parametrize("op, impl, p, dtype", [
    c for c in CASES if c.values[0] not in ("weight_grad", "pass") and c.values[3] in (np.float32,
                                                                       np.complex128)])
def test_sample_does_not_depend_on_its_batch(threads_on_tiny_problems, op, impl, p, dtype):
    x, w, bias = _inputs(p, dtype, BATCH)
    fc.set_num_threads(2)
    whole = _run(p, impl, x, w, bias)
    for i in range(BATCH):
        _assert_same_bits(_run(p, impl, x[i:i + 1], w, bias), whole[i:i + 1],
                          f"{op}/{impl}: sample {i} alone")
    split = np.concatenate([_run(p, impl, x[:2], w, bias), _run(p, impl, x[2:], w, bias)])
    _assert_same_bits(split, whole, f"{op}/{impl}: batch split 2 + 1")


# -- the rules read one sample's shape only -----------------------------------------------

def test_selection_never_reads_the_thread_count(monkeypatch):
    def forbidden():
        raise AssertionError("a selection rule read the thread count")

    monkeypatch.setattr(_dispatch, "get_num_threads", forbidden)
    _dispatch.select.cache_clear()
    for op, table in REGISTRY.items():
        # algorithm= exists for the forward functions only (and the filters' method=)
        families = {impl.family for impl in table} & set(_dispatch.ALGORITHMS) \
            if op in ("forward", "transpose", "filter") else set()
        for p in _problems(op).values():
            for algorithm in ("auto",) + tuple(sorted(families)):
                _dispatch.select(p, algorithm)
    _dispatch.select.cache_clear()


def test_problem_holds_no_batch_size_and_no_thread_count():
    fields = set(Problem.__dataclass_fields__)
    assert fields == {"op", "x", "w", "out", "dtype", "stride", "pad", "dilation", "groups",
                      "finite_weight", "padding_mode"}


@settings(max_examples=60, deadline=None)
@given(batch=st.integers(1, 9), name=st.sampled_from(sorted(CONVS) + sorted(MODE_CONVS)),
       op=st.sampled_from(["forward", "input_grad", "weight_grad"]))
def test_choice_is_the_same_for_every_batch_size(batch, name, op):
    p = _conv_problem(op, name)
    x, w, bias = _inputs(p, np.float32, batch)
    with dispatch_recorded() as runs:
        _run(p, None, x, w, bias)
        # weight_grad: w is grad_output, which holds a batch too
        _run(p, None, x[:1], w[:1] if op == "weight_grad" else w, bias)
    seen = [choice.impl.name for _, choice in runs]
    assert seen[0] == seen[1]


# -- issue 11's two reproducibility failures ---------------------------------------------

def test_thin_weight_gradient_has_the_same_bits_at_1_2_and_3_threads():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4, 128, 128)).astype(np.float32)
    g = rng.standard_normal((8, 4, 126, 126)).astype(np.float32)
    before = fc.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            fc.set_num_threads(n)
            results.append(fc.grad.conv2d_weight(x, (4, 2, 3, 3), g, groups=2))
    finally:
        fc.set_num_threads(before)
    for n, r in zip((2, 3), results[1:]):
        _assert_same_bits(r, results[0], f"conv2d_weight at {n} threads")


def test_sample_of_a_batch_equals_the_sample_alone_with_a_large_kernel():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 1, 64, 64)).astype(np.float32)
    w = rng.standard_normal((2, 1, 11, 11)).astype(np.float32)
    batch = fc.conv2d(x, w)
    for i in (0, 5):
        _assert_same_bits(fc.conv2d(x[i:i + 1], w), batch[i:i + 1], f"sample {i}")


# -- explain ------------------------------------------------------------------------------

def _recorded(call):
    with dispatch_recorded() as runs:
        call()
    return [(problem.op, choice.impl.name) for problem, choice in runs]


EXPLAINED = [
    ("conv2d", (2, 4, 9, 10), (6, 4, 3, 3), dict(padding=1)),
    ("conv2d", (2, 4, 9, 10), (6, 4, 3, 3), dict(padding=1, algorithm="direct")),
    ("conv2d", (2, 1, 40, 40), (1, 1, 15, 15), dict(padding="same", padding_mode="reflect")),
    ("conv1d", (2, 4, 50), (6, 2, 5), dict(stride=2, groups=2, dilation=2)),
    ("conv3d", (1, 2, 6, 7, 8), (4, 2, 3, 3, 3), dict(padding=1, padding_mode="circular")),
    ("conv_transpose2d", (2, 4, 5, 6), (4, 3, 3, 3), dict(stride=2, padding=1,
                                                         output_padding=1)),
    ("conv2d_input", (2, 4, 9, 10), (6, 4, 3, 3), dict(padding=1)),
    ("conv2d_input", (2, 4, 9, 10), (6, 4, 3, 3), dict(stride=2, padding=1)),
    ("conv3d_weight", (1, 2, 6, 7, 8), (4, 2, 3, 3, 3), dict(padding=1)),
    ("conv2d_weight", (2, 4, 16, 16), (4, 2, 3, 3), dict(groups=2, padding_mode="replicate",
                                                        padding=1)),
    ("conv_transpose1d_input", (2, 4, 11), (4, 3, 3), dict(stride=2)),
    ("conv_transpose3d_weight", (1, 2, 3, 4, 5), (2, 3, 2, 2, 2), dict(stride=2)),
]


def _call(op, x, w, kwargs):
    """Run the real call of ``op`` on data of the explained shapes."""
    import fastconv.grad as G
    kwargs = dict(kwargs)
    forward = getattr(fc, op.split("_input")[0].split("_weight")[0])
    out = forward(x, w, **kwargs)
    kwargs.pop("algorithm", None)
    if op.endswith("_input"):
        return getattr(G, op)(x.shape, w, out, **kwargs)
    if op.endswith("_weight"):
        return getattr(G, op)(x, w.shape, out, **kwargs)
    return out


@pytest.mark.parametrize("op, xs, ws, kwargs", EXPLAINED,
                         ids=[f"{e[0]}-{i}" for i, e in enumerate(EXPLAINED)])
def test_explain_names_the_implementation_that_runs(op, xs, ws, kwargs):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    e = fc.explain(op, x, w, **kwargs)
    ran = _recorded(lambda: _call(op, x, w, kwargs))
    # the gradient's run is the last call (the forward, run first, gives grad_output)
    assert ran[-1] == (e.kernel_op, e.implementation), (str(e), ran)
    same = fc.explain(op, xs, ws, **kwargs)           # shapes instead of arrays
    assert (same.implementation, same.plan.keys()) == (e.implementation, e.plan.keys())
    assert e.seconds > 0 and e.implementation in str(e)
    names = [c[0] for c in e.candidates]
    assert names == [impl.name for impl in REGISTRY[e.kernel_op]]
    for name, family, seconds, reason in e.candidates:
        assert (seconds is None) == bool(reason), (name, seconds, reason)


def test_explain_reports_why_an_implementation_does_not_apply():
    e = fc.explain("conv2d", (1, 3, 16, 16), (8, 3, 3, 3), stride=2, padding=1)
    reasons = {name: reason for name, _, _, reason in e.candidates}
    assert reasons["im2col_shifted"] == "needs stride 1"
    e = fc.explain("conv1d", (1, 1, 10), (1, 1, 9))
    assert "wider than the output" in dict((c[0], c[3]) for c in e.candidates)["implicit_gemm"]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_deep_layers_split_output_channels_over_jobs(dtype):
    """The deep cases above exercise forward jobs of a block of a group's output
    channels, as real (planar / Gauss) problems too: the forward, its input
    gradient (a 151 -> 224 forward) and a stride phase of 2d_deep_stride2
    (2x2 taps)."""
    from fastconv._dispatch import _forward_real
    forwards = (_conv_problem("forward", "2d_deep_channel_blocks"),
                Problem("forward", (151, 1, 5, 6), (224, 151, 1, 3, 3), (224, 1, 5, 6),
                        np.dtype(np.float64), pad=(0, 1, 1)),
                Problem("forward", (512, 1, 4, 5), (151, 512, 1, 2, 2), (151, 1, 4, 5),
                        np.dtype(np.float64)))
    for p in forwards:
        q = _forward_real(replace(p, dtype=np.dtype(dtype)))
        cog, per_job = q.w[0] // q.groups, _costs.job_channels(q)
        assert per_job < cog, (q, per_job)
        if cog == 151:      # prime: the last job, and its last register block, are partial
            assert cog % per_job, (q, per_job)


def _implicit_forward_per_setting(setter, settings, conv, x, w, b, kw):
    """conv(x, w, b, **kw) on the implicit GEMM once per setting of a kernel
    switch (``setter`` returns the previous value, restored after)."""
    results = []
    for setting in settings:
        previous = setter(setting)
        try:
            with _dispatch.forced("implicit_gemm"):
                results.append(conv(x, w, b, **kw))
        finally:
            setter(previous)
    return results


# Forward problems whose output channels per group come in whole blocks of the
# channel-vector kernel on every build (64 float32 / 32 float64 on AVX-512):
# (x, w, options).
CHANNEL_VECTOR_FORWARDS = [
    ((2, 16, 7, 7), (64, 16, 3, 3), dict(padding=1)),
    ((1, 12, 5, 9), (128, 6, 3, 3), dict(padding=1, groups=2)),
    ((2, 8, 11, 13), (64, 8, 3, 2), dict(stride=2, padding=(1, 0), dilation=(1, 2))),
    ((1, 4, 5, 6, 7), (64, 4, 3, 3, 3), dict(padding=1, padding_mode="reflect")),
    ((3, 16, 1, 40), (64, 16, 1, 3), dict(padding=(0, 1), padding_mode="circular")),
    # tiles of 2 whole rows of 10 (one 20-cell run per channel), and tiles
    # narrower than a row (rows=1, cols=2536 of 4000: transposed row by row)
    ((2, 8, 6, 10), (64, 8, 3, 3), dict(padding=1)),
    ((1, 16, 2, 4000), (64, 16, 3, 3), dict(padding=1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [False, True])
def test_channel_vector_forward_gives_the_panel_kernels_bits(dtype, bias):
    """The forward kernel vectorised across output channels (``vector_job``)
    computes each output cell with the panel kernel's chain of multiply-adds, and
    adds the bias (or + 0) after it: every tile on one kernel or on the other
    gives the same bits, signed zeros included."""
    implicit = fc._kernels.implicit
    rng = np.random.default_rng(5)
    for xs, ws, kw in CHANNEL_VECTOR_FORWARDS:
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal(ws).astype(dtype)
        x[..., 0] = -0.0                       # zero products: sums of -0.0 and +0.0
        w[1] = -0.0
        b = rng.standard_normal(ws[0]).astype(dtype) if bias else None
        nd = len(xs) - 2
        conv = getattr(fc, f"conv{nd}d")
        # every tile on the channel-vector kernel; none
        results = _implicit_forward_per_setting(implicit.set_channel_vector_waste, (-100, 10000),
                                                conv, x, w, b, kw)
        _assert_same_bits(results[0], results[1], f"{xs} {ws} {kw}")
        expected = reference.conv(x, w, b, kw.get("stride", 1), kw.get("padding", 0),
                                  kw.get("dilation", 1), kw.get("groups", 1),
                                  kw.get("padding_mode", "zeros"))
        assert_close(results[0], expected, dtype, ws[1] * math.prod(ws[2:]))


# 1x1 float32 forwards with at least twice as many input as output channels:
# the implicit GEMM reads whole-row bands in x itself (``band_in_place``), but
# copies a tile whose last panel would read past the end of x.  (x, w, options)
IN_PLACE_FORWARDS = [
    ((2, 32, 7, 7), (16, 32, 1, 1), {}),
    ((1, 48, 5, 6, 7), (8, 48, 1, 1, 1), {}),
    ((3, 64, 50), (16, 32, 1), dict(groups=2)),
    ((2, 40, 9, 11), (13, 40, 1, 1), {}),
    ((1, 256, 14, 14), (64, 256, 1, 1), {}),
]


def test_band_read_in_place_gives_the_copys_bits():
    """Reading the band in place or from its copy gives the same bits (the same
    values in the same order); ASan (.ci/sanitize) checks no read leaves x."""
    implicit = fc._kernels.implicit
    rng = np.random.default_rng(6)
    for xs, ws, kw in IN_PLACE_FORWARDS:
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        b = rng.standard_normal(ws[0]).astype(np.float32)
        conv = getattr(fc, f"conv{len(xs) - 2}d")
        results = _implicit_forward_per_setting(implicit.set_band_in_place, (True, False),
                                                conv, x, w, b, kw)
        _assert_same_bits(results[0], results[1], f"{xs} {ws} {kw}")
        expected = reference.conv(x, w, b, 1, 0, 1, kw.get("groups", 1))
        assert_close(results[0], expected, np.float32, ws[1])


def test_streamed_pointwise_tiles_are_whole_panels():
    """A forward whose panels stream into the output (a 1x1 layer, one K block,
    a large output) gets tiles of whole panels that start on cache lines: a
    partial last panel would go through the panel buffer, a misaligned one
    with plain stores.  Without streaming the even split stands."""
    widths = fc._kernels.implicit.panel_widths()
    kc, min_bytes, align = fc._kernels.implicit.stream_rule()
    expand = Problem("forward", (64, 1, 56, 56), (256, 64, 1, 1, 1), (256, 1, 56, 56),
                     np.dtype(np.float32))
    rows, cols = _costs.band_tile(expand, widths)
    even_rows, _ = _costs.band_tile(expand, widths, streams=False)
    assert cols == 56 and rows <= even_rows
    if min_bytes >= 0:                      # a build whose panels stream
        assert rows * 56 % widths[0] == 0 and rows * 56 * 4 % align == 0, rows
    else:
        assert rows == even_rows
    # a stride-2 transposed convolution runs as a pixel-shuffled 1x1: no streaming
    from fastconv._dispatch import _plan_shuffle
    up = Problem("transpose", (64, 32, 32, 32), (64, 32, 2, 2, 2), (32, 64, 64, 64),
                 np.dtype(np.float32), stride=(2, 2, 2))
    shuffled = _costs.band_tile(_subpixel.shuffle_problem(up), widths, streams=False)
    assert _plan_shuffle(up) == {"rows": shuffled[0], "cols": shuffled[1]}


def test_implicit_waste_counts_dropped_columns_between_rows_only():
    """A band row computes its extra (kernel-reach) columns only when another row
    of the tile follows it: a 1-D tile (one row) drops nothing however large the
    dilation, and a 2-D tile of R rows drops R - 1 rows' extras; the tile's last
    panel is computed in whole vectors."""
    width = fc._kernels.implicit.panel_widths()[0]         # float32 cells per panel
    vector = fc._kernels.implicit.vector_widths()[0]       # ... and per vector

    def computed(cells):        # whole panels, then the last one in whole vectors
        return cells // width * width + -(-(cells % width) // vector) * vector

    wavenet = Problem("forward", (64, 1, 1, 16000), (64, 64, 1, 1, 2), (64, 1, 1, 15488),
                      np.dtype(np.float32), dilation=(1, 1, 512))
    assert _costs.implicit_waste(wavenet, {"rows": 1, "cols": 1920}) == 1.0   # whole panels
    assert _costs.band_row_excess(wavenet, {"rows": 1, "cols": 1920}) == (1920 + 512) / 1920
    resnet = Problem("forward", (64, 1, 56, 56), (64, 64, 1, 3, 3), (64, 1, 56, 56),
                     np.dtype(np.float32), pad=(0, 1, 1))
    # zero padding: a row's right pad column is the next row's left one (pitch 57)
    assert _costs.implicit_waste(resnet, {"rows": 7, "cols": 56}) == computed(6 * 57 + 56) / (
        7 * 56)
    reflect = replace(resnet, padding_mode="reflect")     # no zeros to share: pitch 58
    assert _costs.implicit_waste(reflect, {"rows": 7, "cols": 56}) == computed(6 * 58 + 56) / (
        7 * 56)
    deep = Problem("forward", (512, 1, 7, 7), (512, 512, 1, 3, 3), (512, 1, 7, 7),
                   np.dtype(np.float32), pad=(0, 1, 1))
    # 55 cells: 7 vectors on AVX2 (run as panels of 24 + 16 + 15); 4 on AVX-512,
    # over 12 % more than 55, so 512 channels run on the channel-vector kernel,
    # which computes the 49 output cells only
    block, waste_percent, long_k = fc._kernels.implicit.channel_vector_forward_rule()
    assert 512 * 9 >= long_k            # the waste is counted against 49 cells
    vectors_kernel = (width >= 3 * vector and 512 % (block * vector) == 0
                      and computed(55) * 100 > 49 * (100 + waste_percent))
    assert _costs.implicit_waste(deep, {"rows": 7, "cols": 7}) == (
        1.0 if vectors_kernel else computed(55) / 49)


@pytest.mark.parametrize("name", [*CONVS, *MODE_CONVS])
def test_cost_model_knows_the_forward_band_pitch(name):
    """Zero padding lets a band row share its right pad columns with the next row's
    left ones (``shared_pad_columns``): the cost model's pitch is the kernel's."""
    p = _conv_problem("forward", name)
    plan = _dispatch._plan_implicit(p)
    q = _dispatch._forward_real(p)
    _, _, extra_cols = _costs.band_geometry(q)
    shared = _costs.shared_pad_columns(q, plan["cols"])
    pitch = fc._kernels.implicit.forward_band_pitch(
        (1, *q.x), q.w, (1, *q.out), q.stride, q.pad, q.dilation, q.groups, plan["rows"],
        plan["cols"], q.padding_mode)
    assert pitch == plan["cols"] + extra_cols - shared
    # pad 1 on both sides shares 1 column; pad 9 shares the whole reach (2)
    expected = {"2d_3x3": 1, "3d_3x3x3": 1, "2d_depthwise": 1, "2d_huge_padding": 2}
    if name in expected:
        assert shared == expected[name], (name, shared)
    if name in MODE_CONVS or name == "1d_wide_split":
        assert shared == 0, (name, shared)          # padded values, or column tiles


def test_explain_takes_the_spec_signature():
    """SPEC: fc.explain(op, input, weight, bias=None, **kwargs), op as 'grad.conv2d_weight'."""
    shapes = ((2, 4, 9, 10), (6, 4, 3, 3))
    plain = fc.explain("conv2d_weight", *shapes, padding=1)
    prefixed = fc.explain("grad.conv2d_weight", *shapes, padding=1)
    assert prefixed.implementation == plain.implementation
    assert prefixed.plan == plain.plan
    with_bias = fc.explain("conv2d", *shapes, np.zeros(6, np.float32), padding=1)
    assert with_bias.implementation == fc.explain("conv2d", *shapes, padding=1).implementation
    with pytest.raises(ValueError, match="bias"):
        fc.explain("conv2d", *shapes, (5,), padding=1)


def test_explain_rejects_bad_arguments():
    with pytest.raises(ValueError, match="explain: expected op"):
        fc.explain("conv4d", (1, 1, 4), (1, 1, 3))
    with pytest.raises(ValueError, match="algorithm"):
        fc.explain("conv1d", (1, 1, 4), (1, 1, 3), algorithm="winograd")
    with pytest.raises(ValueError, match="channels"):
        fc.explain("conv1d", (1, 2, 4), (1, 1, 3))


def test_forcing_a_family_that_cannot_apply_raises_with_every_reason():
    p = _conv_problem("forward", "2d_3x3")
    with pytest.raises(ValueError, match="implicit_gemm: not the requested"):
        _dispatch.select(p, implementation="nonexistent")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_stride_two_band_rows_at_every_width(dtype, mode):
    """Stride-2 band rows are gathered a vector at a time with an overlapping
    last vector (``fc_gather2``): widths around one and two vectors of either
    dtype and ISA, through the forward and the weight gradient, match the oracle."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((5, 3, 3, 3)).astype(dtype)
    for width in list(range(2, 40)) + [63, 64, 65, 66, 67]:
        x = rng.standard_normal((1, 3, 4, width)).astype(dtype)
        with _dispatch.forced("implicit_gemm"):
            y = fc.conv2d(x, w, stride=2, padding=1, padding_mode=mode)
            g = np.ones_like(y)
            dw = fc.grad.conv2d_weight(x, w.shape, g, stride=2, padding=1) if mode == "zeros" \
                else None
        expected = reference.conv(x, w, None, 2, 1, 1, 1, mode)
        assert_close(y, expected, dtype, 27)
        if dw is not None:
            assert_close(dw, reference.conv_weight(x, w.shape, g, 2, 1), dtype, 4 * width)


def _aligned_zeros(shape, dtype):
    """A zeroed array whose data starts on a 64-byte cache line."""
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    raw = np.zeros(nbytes + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + nbytes].view(dtype).reshape(shape)


# Forward problems whose panels are output runs computed in one K block, with
# cache-line multiples of output per channel: (x, w, options).
STREAMED_FORWARDS = [
    ((2, 32, 8, 8), (64, 32, 1, 1), {}),
    ((1, 16, 4, 4, 4), (24, 16, 1, 1, 1), {}),
    ((3, 8, 64), (16, 8, 2), dict(dilation=4, padding=2)),
    ((2, 24, 96), (32, 12, 1), dict(groups=2)),
    ((1, 40, 16, 16), (8, 40, 1, 1), {}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_streamed_output_stores_give_the_same_bits(dtype):
    """Non-temporal output stores (every aligned direct panel, with the size
    rule off) write the same bits as plain stores, into aligned and unaligned
    outputs, with and without bias."""
    implicit = fc._kernels.implicit
    rng = np.random.default_rng(8)
    for xs, ws, kw in STREAMED_FORWARDS:
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal(ws).astype(dtype)
        conv = getattr(fc, f"conv{len(xs) - 2}d")
        shape = conv(x, w, **kw).shape
        for b in (rng.standard_normal(ws[0]).astype(dtype), None):
            previous = implicit.set_stream_min_bytes(-1)
            try:
                with _dispatch.forced("implicit_gemm"):
                    plain = conv(x, w, b, out=_aligned_zeros(shape, dtype), **kw)
                    implicit.set_stream_min_bytes(0)
                    streamed = conv(x, w, b, out=_aligned_zeros(shape, dtype), **kw)
                    unaligned = conv(x, w, b, **kw)
            finally:
                implicit.set_stream_min_bytes(previous)
            what = f"{xs} {ws} {kw} bias={b is not None}"
            _assert_same_bits(streamed, plain, what)
            _assert_same_bits(unaligned, plain, what)
            expected = reference.conv(x, w, b, 1, kw.get("padding", 0), kw.get("dilation", 1),
                                      kw.get("groups", 1))
            assert_close(streamed, expected, dtype, ws[1] * ws[-1])
