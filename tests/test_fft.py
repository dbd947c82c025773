"""The ``'fft'`` algorithm of the deep-learning API.

``fc.convNd(..., algorithm='fft')`` and ``fc.conv_transposeNd(...,
algorithm='fft')`` must give what ``algorithm='direct'`` gives and what the
independent float64 oracle ``tests/reference.py`` gives, for multi-channel,
grouped, strided, dilated, padded (every padding mode) and output-padded
problems in every dtype -- "every algorithm gives the same result to
floating-point tolerance" (SPEC section 1).  The FFT module is spied on so a
silent fallback to another algorithm cannot pass.
"""
import contextlib
import os
import sys
import zlib
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))

import fastconv as fc  # noqa: E402
import fastconv._fft  # noqa: E402
import reference  # noqa: E402

DTYPES = (np.float32, np.float64, np.complex64, np.complex128)
CONV = {1: fc.conv1d, 2: fc.conv2d, 3: fc.conv3d}
TRANSPOSE = {1: fc.conv_transpose1d, 2: fc.conv_transpose2d, 3: fc.conv_transpose3d}
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def dtype_id(dtype):
    return np.dtype(dtype).name


def random_data(rng, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "u":
        return rng.integers(0, 10, size=shape).astype(dtype)
    return rng.integers(-9, 10, size=shape).astype(dtype)


def assert_close(actual, expected, x, w, b, dtype):
    """Within a tolerance scaled by the largest possible output magnitude."""
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    scale = max(1.0, float(np.max(np.abs(x), initial=0))) * \
        max(1.0, float(np.sum(np.abs(w)) / max(1, w.shape[0]) * 2)) + \
        (0.0 if b is None else float(np.max(np.abs(b))))
    single = np.dtype(dtype) in (np.float32, np.complex64)
    np.testing.assert_allclose(actual, expected, rtol=0,
                               atol=(5e-5 if single else 1e-11) * scale)


@contextlib.contextmanager
def fft_spy():
    """Counts calls into fastconv._fft (forward and transposed)."""
    calls = []
    real_conv, real_transpose = fastconv._fft.conv_forward, fastconv._fft.transpose_forward

    def conv(*args, **kwargs):
        calls.append("conv")
        return real_conv(*args, **kwargs)

    def transpose(*args, **kwargs):
        calls.append("transpose")
        return real_transpose(*args, **kwargs)

    with mock.patch.object(fastconv._fft, "conv_forward", conv), \
            mock.patch.object(fastconv._fft, "transpose_forward", transpose):
        yield calls


@pytest.fixture
def rng(request):
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def test_fft_is_a_listed_algorithm():
    assert "fft" in fc.ALGORITHMS
    assert {"direct", "im2col", "fft"} <= set(fc.ALGORITHMS)


# --------------------------------------------------------------------------- forward convolution

CONV_CASES = [
    # nd, n, groups, c_in, c_out, spatial, kernel, stride, padding, dilation, padding_mode, bias
    dict(nd=1, n=2, groups=1, c_in=3, c_out=4, spatial=(11,), kernel=(3,)),
    dict(nd=1, n=1, groups=2, c_in=4, c_out=6, spatial=(13,), kernel=(3,), stride=3,
         padding=2, dilation=2),
    dict(nd=1, n=2, groups=1, c_in=2, c_out=3, spatial=(9,), kernel=(4,), padding="same",
         dilation=3),
    dict(nd=1, n=1, groups=3, c_in=3, c_out=3, spatial=(8,), kernel=(3,), padding=3,
         padding_mode="circular"),
    dict(nd=1, n=1, groups=1, c_in=1, c_out=1, spatial=(10,), kernel=(10,)),
    dict(nd=2, n=2, groups=1, c_in=2, c_out=3, spatial=(7, 8), kernel=(3, 3), stride=(2, 1),
         padding=(1, 2), padding_mode="reflect"),
    dict(nd=2, n=1, groups=2, c_in=4, c_out=2, spatial=(6, 7), kernel=(3, 2), dilation=(2, 1),
         padding=(2, 1), padding_mode="replicate"),
    dict(nd=2, n=2, groups=1, c_in=3, c_out=2, spatial=(9, 9), kernel=(4, 4), stride=2,
         padding="valid"),
    dict(nd=2, n=1, groups=1, c_in=3, c_out=5, spatial=(6, 5), kernel=(1, 1), stride=2),
    dict(nd=2, n=1, groups=1, c_in=2, c_out=2, spatial=(4, 5), kernel=(2, 2), padding=4),
    dict(nd=2, n=1, groups=1, c_in=1, c_out=1, spatial=(12, 11), kernel=(7, 6), stride=(3, 2),
         dilation=(1, 2), padding=(3, 5)),
    dict(nd=3, n=2, groups=1, c_in=2, c_out=3, spatial=(5, 6, 4), kernel=(3, 2, 3)),
    dict(nd=3, n=1, groups=4, c_in=4, c_out=8, spatial=(5, 7, 7), kernel=(2, 3, 3),
         stride=(1, 2, 2), dilation=(2, 1, 1), padding=(1, 1, 2), padding_mode="circular"),
    dict(nd=3, n=1, groups=1, c_in=2, c_out=2, spatial=(5, 6, 5), kernel=(2, 4, 3),
         padding="same"),
    dict(nd=3, n=2, groups=2, c_in=2, c_out=4, spatial=(6, 5, 6), kernel=(3, 3, 2), stride=2,
         padding=1, padding_mode="reflect"),
    dict(nd=3, n=1, groups=1, c_in=1, c_out=1, spatial=(4, 5, 3), kernel=(4, 5, 3)),
]


def conv_case_id(case):
    keys = ("groups", "stride", "padding", "dilation", "padding_mode")
    extra = "-".join(f"{k[0]}{case[k]}" for k in keys if k in case)
    name = f"{case['nd']}d-c{case['c_in']}x{case['c_out']}-k{case['kernel']}-{extra}"
    return name.replace(" ", "")


def make_conv(rng, case, dtype, bias=True):
    x = random_data(rng, (case["n"], case["c_in"]) + case["spatial"], dtype)
    w = random_data(rng, (case["c_out"], case["c_in"] // case["groups"]) + case["kernel"], dtype)
    b = random_data(rng, (case["c_out"],), dtype) if bias else None
    kwargs = {k: case[k] for k in ("stride", "padding", "dilation") if k in case}
    kwargs["groups"] = case["groups"]
    return x, w, b, kwargs, case.get("padding_mode", "zeros")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("case", CONV_CASES, ids=conv_case_id)
def test_fft_convolution_matches_direct_and_reference(case, dtype, rng):
    x, w, b, kwargs, padding_mode = make_conv(rng, case, dtype, bias=case["nd"] != 2)
    conv = CONV[case["nd"]]
    with fft_spy() as calls:
        result = conv(x, w, b, padding_mode=padding_mode, algorithm="fft", **kwargs)
    assert calls == ["conv"], "algorithm='fft' did not run the FFT code"
    assert result.dtype == np.dtype(dtype)
    expected = reference.conv(x, w, b, padding_mode=padding_mode, **kwargs)
    assert_close(result, expected, x, w, b, dtype)
    direct = conv(x, w, b, padding_mode=padding_mode, algorithm="direct", **kwargs)
    assert_close(result, direct, x, w, b, dtype)


@pytest.mark.parametrize("nd", (1, 2, 3))
def test_fft_agrees_with_every_other_algorithm(nd, rng):
    x = random_data(rng, (2, 4) + (6,) * nd, np.float64)
    w = random_data(rng, (8, 2) + (3,) * nd, np.float64)
    b = random_data(rng, (8,), np.float64)
    results = {a: CONV[nd](x, w, b, stride=2, padding=1, groups=2, algorithm=a)
               for a in ("auto",) + tuple(fc.ALGORITHMS)}
    for algorithm, result in results.items():
        assert_close(result, results["fft"], x, w, b, np.float64)


def test_fft_on_a_single_channel_volume_with_a_large_kernel(rng):
    """The filtering use case: 1 channel, 16^3 volume, 7^3 kernel, 'same' padding."""
    x = random_data(rng, (1, 1, 16, 16, 16), np.float32)
    w = random_data(rng, (1, 1, 7, 7, 7), np.float32)
    fft = fc.conv3d(x, w, padding="same", algorithm="fft")
    direct = fc.conv3d(x, w, padding="same", algorithm="direct")
    assert fft.dtype == np.float32
    assert_close(fft, direct, x, w, None, np.float32)
    assert_close(fft, reference.conv(x, w, padding="same"), x, w, None, np.float32)


# --------------------------------------------------------------------------- transposed convolution

TRANSPOSE_CASES = [
    # nd, n, groups, c_in, c_out (total), spatial, kernel, stride, padding, output_padding, dilation
    dict(nd=1, n=2, groups=1, c_in=3, c_out=2, spatial=(7,), kernel=(3,), stride=2, padding=1,
         output_padding=1),
    dict(nd=1, n=1, groups=2, c_in=4, c_out=6, spatial=(5,), kernel=(3,), stride=3,
         dilation=2, output_padding=2),
    dict(nd=1, n=1, groups=1, c_in=2, c_out=2, spatial=(6,), kernel=(4,), stride=3,
         output_padding=2),
    dict(nd=1, n=1, groups=1, c_in=1, c_out=1, spatial=(1,), kernel=(5,)),
    dict(nd=2, n=2, groups=1, c_in=2, c_out=3, spatial=(4, 5), kernel=(3, 2), stride=(2, 3),
         padding=(1, 0), output_padding=(1, 2)),
    dict(nd=2, n=1, groups=2, c_in=4, c_out=4, spatial=(5, 4), kernel=(3, 3), stride=2,
         padding=2, dilation=2, output_padding=1),
    dict(nd=2, n=1, groups=1, c_in=2, c_out=1, spatial=(4, 4), kernel=(2, 3), dilation=3,
         output_padding=2),
    dict(nd=2, n=1, groups=1, c_in=3, c_out=2, spatial=(3, 4), kernel=(1, 1), stride=2,
         output_padding=1),
    dict(nd=3, n=1, groups=2, c_in=2, c_out=4, spatial=(3, 4, 3), kernel=(2, 3, 2), stride=2,
         padding=1, output_padding=1),
    dict(nd=3, n=2, groups=3, c_in=3, c_out=3, spatial=(4, 3, 4), kernel=(3, 3, 2),
         padding=(1, 0, 1)),
    dict(nd=3, n=1, groups=1, c_in=2, c_out=2, spatial=(3, 4, 2), kernel=(2, 2, 3),
         stride=(3, 1, 2), dilation=(1, 2, 1), output_padding=(2, 1, 0)),
]


def make_transpose(rng, case, dtype, bias=True):
    g = case["groups"]
    x = random_data(rng, (case["n"], case["c_in"]) + case["spatial"], dtype)
    w = random_data(rng, (case["c_in"], case["c_out"] // g) + case["kernel"], dtype)
    b = random_data(rng, (case["c_out"],), dtype) if bias else None
    kwargs = {k: case[k] for k in ("stride", "padding", "output_padding", "dilation") if k in case}
    kwargs["groups"] = g
    return x, w, b, kwargs


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=conv_case_id)
def test_fft_transposed_convolution_matches_direct_and_reference(case, dtype, rng):
    x, w, b, kwargs = make_transpose(rng, case, dtype, bias=case["nd"] != 1)
    transpose = TRANSPOSE[case["nd"]]
    with fft_spy() as calls:
        result = transpose(x, w, b, algorithm="fft", **kwargs)
    assert calls == ["transpose"], "algorithm='fft' did not run the FFT code"
    assert result.dtype == np.dtype(dtype)
    expected = reference.conv_transpose(x, w, b, **kwargs)
    assert_close(result, expected, x, w, b, dtype)
    direct = transpose(x, w, b, algorithm="direct", **kwargs)
    assert_close(result, direct, x, w, b, dtype)


# --------------------------------------------------------------------------- API under 'fft'

@pytest.mark.parametrize("dtypes, expected", [
    ((np.int32, np.int64), np.float64),
    ((np.uint8, np.float32), np.float32),
    ((np.uint16, np.float32), np.float32),
    ((np.float16, np.float16), np.float32),
    ((np.float32, np.complex64), np.complex64),
    ((np.int16, np.complex128), np.complex128),
], ids=lambda v: "-".join(dtype_id(d) for d in v) if isinstance(v, tuple) else dtype_id(v))
def test_result_dtype_rules_hold_under_fft(dtypes, expected, rng):
    x = random_data(rng, (1, 2, 6, 5), dtypes[0])
    w = random_data(rng, (3, 2, 3, 2), dtypes[1])
    result = fc.conv2d(x, w, padding=1, algorithm="fft")
    assert result.dtype == np.dtype(expected)
    assert_close(result, reference.conv(x, w, padding=1), x, w, None, expected)
    wt = random_data(rng, (2, 3, 3, 2), dtypes[1])
    result = fc.conv_transpose2d(x, wt, stride=2, algorithm="fft")
    assert result.dtype == np.dtype(expected)
    assert_close(result, reference.conv_transpose(x, wt, stride=2), x, wt, None, expected)


@pytest.mark.parametrize("nd", (1, 2, 3))
def test_unbatched_input_gives_unbatched_output_under_fft(nd, rng):
    x = random_data(rng, (2,) + (5,) * nd, np.float64)
    w = random_data(rng, (3, 2) + (2,) * nd, np.float64)
    result = CONV[nd](x, w, padding=1, algorithm="fft")
    assert result.shape == (3,) + (6,) * nd
    assert_close(result, reference.conv(x[None], w, padding=1)[0], x, w, None, np.float64)
    wt = random_data(rng, (2, 3) + (2,) * nd, np.float64)
    result = TRANSPOSE[nd](x, wt, stride=2, algorithm="fft")
    assert result.shape == (3,) + (10,) * nd
    assert_close(result, reference.conv_transpose(x[None], wt, stride=2)[0], x, wt, None,
                 np.float64)


def test_out_is_filled_and_returned_under_fft(rng):
    x = random_data(rng, (2, 2, 5, 6), np.complex64)
    w = random_data(rng, (4, 1, 3, 3), np.complex64)
    out = np.full((2, 4, 3, 4), np.nan, np.complex64)
    assert fc.conv2d(x, w, groups=2, algorithm="fft", out=out) is out
    assert_close(out, reference.conv(x, w, groups=2), x, w, None, np.complex64)
    wt = random_data(rng, (2, 3, 2, 2), np.float64)
    xt = random_data(rng, (1, 2, 3, 3), np.float64)
    out = np.full((1, 3, 9, 9), np.nan)       # (3 - 1) * 3 + (2 - 1) + 1 + 1
    assert fc.conv_transpose2d(xt, wt, stride=3, output_padding=1, algorithm="fft", out=out) is out
    assert_close(out, reference.conv_transpose(xt, wt, stride=3, output_padding=1), xt, wt,
                 None, np.float64)


def test_empty_batch_under_fft(rng):
    x = np.zeros((0, 2, 5, 5))
    w = random_data(rng, (3, 2, 2, 2), np.float64)
    assert fc.conv2d(x, w, algorithm="fft").shape == (0, 3, 4, 4)
    assert fc.conv_transpose2d(x, w.transpose(1, 0, 2, 3), algorithm="fft").shape == (0, 3, 6, 6)


def test_inputs_are_not_modified_under_fft(rng):
    for dtype in (np.float32, np.complex128):
        x = random_data(rng, (2, 4, 7, 6), dtype)
        w = random_data(rng, (4, 2, 3, 3), dtype)
        b = random_data(rng, (4,), dtype)
        copies = [a.copy() for a in (x, w, b)]
        fc.conv2d(x, w, b, stride=2, padding=1, groups=2, padding_mode="reflect",
                  algorithm="fft")
        fc.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1, groups=2,
                            algorithm="fft")
        for original, copy in zip((x, w, b), copies):
            np.testing.assert_array_equal(original, copy)


def test_non_contiguous_and_fortran_inputs_under_fft(rng):
    x = np.asfortranarray(random_data(rng, (2, 3, 8, 14), np.float64))[:, :, ::-1, ::2]
    w = random_data(rng, (2, 3, 3, 6), np.float64)[..., ::-2]
    assert_close(fc.conv2d(x, w, padding=(1, 0), algorithm="fft"),
                 reference.conv(x, w, padding=(1, 0)), x, w, None, np.float64)


@pytest.mark.parametrize("value", (np.nan, np.inf), ids=("nan", "inf"))
def test_nan_and_inf_reach_only_the_outputs_that_read_them(value):
    """NaN / inf propagate as in PyTorch: only outputs whose window covers the bad
    sample are affected.  FFT must not smear them over the whole output."""
    x = np.ones((1, 1, 12))
    x[0, 0, 0] = value
    w = np.ones((1, 1, 3))
    direct = fc.conv1d(x, w, algorithm="direct")
    fft = fc.conv1d(x, w, algorithm="fft")
    np.testing.assert_array_equal(np.isfinite(fft), np.isfinite(direct))
    np.testing.assert_allclose(fft[np.isfinite(direct)], 3.0)
    wt = np.ones((1, 1, 3))
    direct = fc.conv_transpose1d(x, wt, algorithm="direct")
    fft = fc.conv_transpose1d(x, wt, algorithm="fft")
    np.testing.assert_array_equal(np.isfinite(fft), np.isfinite(direct))


# --------------------------------------------------------------------------- hypothesis

@st.composite
def conv_problems(draw):
    nd = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.lists(st.integers(1, 3), min_size=nd, max_size=nd)))
    dilation = tuple(draw(st.lists(st.integers(1, 2), min_size=nd, max_size=nd)))
    stride = tuple(draw(st.lists(st.integers(1, 3), min_size=nd, max_size=nd)))
    transposed = draw(st.booleans())
    padding_mode = "zeros" if transposed else draw(st.sampled_from(PADDING_MODES))
    spatial, padding = [], []
    for k, d in zip(kernel, dilation):
        extent = d * (k - 1) + 1
        size = draw(st.integers(1, 6) if transposed else st.integers(max(2, extent - 2), 7))
        spatial.append(size)
        if transposed:
            padding.append(draw(st.integers(0, (extent - 1) // 2)))
        else:
            limit = {"reflect": size - 1, "circular": size}.get(padding_mode, extent)
            p = draw(st.integers(0, min(limit, extent)))
            if size + 2 * p < extent:
                p = min(limit, extent)
            if size + 2 * p < extent:          # cannot fit this kernel: shrink it
                return draw(conv_problems())
            padding.append(p)
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation)) \
        if transposed else None
    return {"nd": nd, "groups": groups, "c_in": c_in, "c_out": c_out, "kernel": kernel,
            "dilation": dilation, "stride": stride, "padding": tuple(padding),
            "padding_mode": padding_mode, "spatial": tuple(spatial), "transposed": transposed,
            "output_padding": output_padding, "n": draw(st.integers(1, 2)),
            "bias": draw(st.booleans()), "batched": draw(st.booleans()),
            "dtype": draw(st.sampled_from(DTYPES)), "seed": draw(st.integers(0, 2**32 - 1))}


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(p=conv_problems())
def test_random_configurations_fft_matches_direct_and_reference(p):
    rng = np.random.default_rng(p["seed"])
    dtype, g = p["dtype"], p["groups"]
    x = random_data(rng, (p["n"], p["c_in"]) + p["spatial"], dtype)
    b = random_data(rng, (p["c_out"],), dtype) if p["bias"] else None
    if p["transposed"]:
        w = random_data(rng, (p["c_in"], p["c_out"] // g) + p["kernel"], dtype)
        kwargs = dict(stride=p["stride"], padding=p["padding"],
                      output_padding=p["output_padding"], groups=g, dilation=p["dilation"])
        expected = reference.conv_transpose(x, w, b, **kwargs)
        func = TRANSPOSE[p["nd"]]
    else:
        w = random_data(rng, (p["c_out"], p["c_in"] // g) + p["kernel"], dtype)
        kwargs = dict(stride=p["stride"], padding=p["padding"], dilation=p["dilation"], groups=g,
                      padding_mode=p["padding_mode"])
        expected = reference.conv(x, w, b, **kwargs)
        func = CONV[p["nd"]]
    if min(expected.shape[2:]) < 1:
        return                       # an invalid configuration; errors are tested elsewhere
    xin = x if p["batched"] else x[0]
    with fft_spy() as calls:
        result = func(xin, w, b, algorithm="fft", **kwargs)
    assert calls, "algorithm='fft' did not run the FFT code"
    direct = func(xin, w, b, algorithm="direct", **kwargs)
    if not p["batched"]:
        expected = expected[:1]
        result, direct = result[None], direct[None]
    assert result.dtype == np.dtype(dtype)
    assert_close(result, expected[: result.shape[0]], x, w, b, dtype)
    assert_close(result, direct, x, w, b, dtype)
