"""``fastconv.signal`` (convolve, correlate, fftconvolve, choose_conv_method)
against ``scipy.signal``.

Drop-in means: for 1-D to 3-D inputs, every ``mode`` and ``method``, the
result has SciPy's shape and dtype and SciPy's values (to floating-point
tolerance; integer results exactly).  The engine is spied on to check that
``method='direct'`` / ``'fft'`` really run the named algorithm.
"""
import contextlib
import os
import sys
import zlib
from unittest import mock

import numpy as np
import pytest
import scipy.signal as ssig
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))

import fastconv._engine  # noqa: E402
from fastconv import _fftconv  # noqa: E402
import fastconv.signal as fsig  # noqa: E402

FUNCS = ("convolve", "correlate")
MODES = ("full", "valid", "same")
METHODS = ("auto", "direct", "fft")
DTYPES = (np.float64, np.float32, np.complex128, np.complex64, np.int16, np.uint8, np.int64)
#: (in1 shape, in2 shape): in1 larger, in2 larger (the 'valid' swap), and, for
#: 'full' / 'same' only, neither larger in every dimension.  Odd and even sizes.
SHAPE_PAIRS = {
    1: [((9,), (4,)), ((3,), (6,)), ((5,), (5,))],
    2: [((6, 7), (3, 2)), ((2, 3), (4, 5)), ((3, 6), (5, 2))],
    3: [((5, 4, 6), (2, 3, 3)), ((2, 2, 3), (3, 4, 3)), ((4, 2, 3), (2, 3, 2))],
}


def dtype_id(dtype):
    return np.dtype(dtype).name


def random_data(rng, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "u":
        return rng.integers(0, 4, size=shape).astype(dtype)     # no uint8 overflow
    return rng.integers(-5, 6, size=shape).astype(dtype)


def fits(s1, s2):
    """'valid' is defined when one shape is at least the other in every dimension."""
    return all(a >= b for a, b in zip(s1, s2)) or all(b >= a for a, b in zip(s1, s2))


def assert_matches(actual, expected, a, b):
    assert actual.shape == expected.shape, f"shape {actual.shape} != SciPy's {expected.shape}"
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != SciPy's {expected.dtype}"
    if actual.dtype.kind in "iub":
        np.testing.assert_array_equal(actual, expected)
        return
    scale = max(1.0, float(np.max(np.abs(a), initial=0))) * max(1.0, float(np.sum(np.abs(b))))
    # scipy.fft transforms a float32 / complex64 operand in single precision even
    # when the result is double, so SciPy's own 'fft' result is only that accurate.
    single = any(np.asarray(v).dtype in (np.float32, np.complex64, np.float16)
                 for v in (actual, a, b))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=(3e-5 if single else 1e-11) * scale)


class EngineSpy:
    """Records the algorithm of each kernel call: the engine's, or 'fft' for
    fastconv.signal's own FFT path (``fastconv._fftconv``)."""

    def __init__(self):
        self.algorithms = []
        self._real = fastconv._engine.conv_forward

    def __call__(self, *args, **kwargs):
        self.algorithms.append(args[8] if len(args) > 8 else kwargs.get("algorithm", "auto"))
        return self._real(*args, **kwargs)

    def fft(self, real):
        def run(*args, **kwargs):
            self.algorithms.append("fft")
            return real(*args, **kwargs)
        return run


@contextlib.contextmanager
def spying():
    spy = EngineSpy()
    with mock.patch.object(fastconv._engine, "conv_forward", spy), \
            mock.patch.object(_fftconv, "convolve_window", spy.fft(_fftconv.convolve_window)), \
            mock.patch.object(_fftconv, "overlap_add", spy.fft(_fftconv.overlap_add)):
        yield spy


@pytest.fixture
def rng(request):
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


# --------------------------------------------------------------------------- against SciPy

@pytest.mark.parametrize("nd", (1, 2, 3))
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("func", FUNCS)
def test_matches_scipy_for_every_mode_method_and_dtype(func, mode, method, nd, rng):
    ours, scipys = getattr(fsig, func), getattr(ssig, func)
    for dtype in DTYPES:
        for s1, s2 in SHAPE_PAIRS[nd]:
            if mode == "valid" and not fits(s1, s2):
                continue
            a = random_data(rng, s1, dtype)
            b = random_data(rng, s2, dtype)
            with spying() as spy:
                result = ours(a, b, mode=mode, method=method)
            if method != "auto":
                assert spy.algorithms == [method], f"method={method!r} ran {spy.algorithms}"
            assert_matches(result, scipys(a, b, mode=mode, method=method), a, b)


@pytest.mark.parametrize("dtypes", [(np.int16, np.float32), (np.uint8, np.float64),
                                    (np.float32, np.float64), (np.float32, np.complex64),
                                    (np.int32, np.complex64), (np.uint8, np.int8),
                                    (np.float64, np.complex64), (np.int64, np.uint16)],
                         ids=lambda d: f"{dtype_id(d[0])}-{dtype_id(d[1])}")
@pytest.mark.parametrize("method", ("direct", "fft"))
@pytest.mark.parametrize("func", FUNCS)
def test_mixed_dtypes_give_scipys_result_type(func, method, dtypes, rng):
    ours, scipys = getattr(fsig, func), getattr(ssig, func)
    a = random_data(rng, (6, 5), dtypes[0])
    b = random_data(rng, (3, 2), dtypes[1])
    for mode in MODES:
        expected = scipys(a, b, mode=mode, method=method)
        result = ours(a, b, mode=mode, method=method)
        assert result.dtype == expected.dtype == np.result_type(a, b)
        assert_matches(result, expected, a, b)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("func", FUNCS)
def test_integer_results_are_exact_even_through_fft(func, method, rng):
    ours, scipys = getattr(fsig, func), getattr(ssig, func)
    a = rng.integers(-100, 100, size=(30, 40)).astype(np.int32)
    b = rng.integers(-100, 100, size=(9, 12)).astype(np.int32)
    result = ours(a, b, method=method)
    assert result.dtype == np.int32
    np.testing.assert_array_equal(result, scipys(a, b, method="direct"))


@pytest.mark.parametrize("func", FUNCS)
def test_complex_correlate_conjugates_the_second_input(func):
    a = np.array([1.0, 2.0, 3.0]) + 0j
    b = np.array([1j])
    result = getattr(fsig, func)(a, b)
    expected = a * (-1j if func == "correlate" else 1j)
    np.testing.assert_allclose(result, expected)


@pytest.mark.parametrize("nd", (1, 2, 3))
@pytest.mark.parametrize("func", FUNCS)
def test_default_mode_is_full_and_default_method_is_auto(func, nd, rng):
    ours, scipys = getattr(fsig, func), getattr(ssig, func)
    s1, s2 = SHAPE_PAIRS[nd][0]
    a, b = random_data(rng, s1, np.float64), random_data(rng, s2, np.float64)
    result = ours(a, b)
    assert result.shape == tuple(x + y - 1 for x, y in zip(s1, s2))
    assert_matches(result, scipys(a, b), a, b)
    assert_matches(result, ours(a, b, mode="full", method="auto"), a, b)


# --------------------------------------------------------------------------- the 'valid' swap

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("func", FUNCS)
def test_valid_mode_swaps_when_second_input_is_larger(func, method, rng):
    ours, scipys = getattr(fsig, func), getattr(ssig, func)
    small = random_data(rng, (3, 2, 4), np.complex128)
    large = random_data(rng, (5, 4, 4), np.complex128)
    result = ours(small, large, mode="valid", method=method)
    assert result.shape == (3, 3, 1)
    assert_matches(result, scipys(small, large, mode="valid", method=method), large, small)
    if func == "convolve":       # convolution commutes
        assert_matches(result, ours(large, small, mode="valid", method=method), large, small)


@pytest.mark.parametrize("shapes", [((3, 4), (4, 3)), ((5, 2), (2, 5)), ((2, 3, 4), (3, 3, 3))],
                         ids=str)
@pytest.mark.parametrize("func", ("convolve", "correlate", "fftconvolve"))
def test_valid_mode_without_a_larger_input_raises_like_scipy(func, shapes):
    ours, scipys = getattr(fsig, func), getattr(ssig, func)
    a, b = np.ones(shapes[0]), np.ones(shapes[1])
    message = "For 'valid' mode, one must be at least as large as the other in every dimension"
    with pytest.raises(ValueError, match=message):
        scipys(a, b, mode="valid")
    with pytest.raises(ValueError, match=message):
        ours(a, b, mode="valid")


@pytest.mark.parametrize("func", FUNCS)
def test_same_mode_keeps_the_first_inputs_shape(func, rng):
    ours = getattr(fsig, func)
    for s1, s2 in [((4,), (7,)), ((5, 3), (2, 6)), ((3, 4, 2), (5, 1, 4))]:
        a, b = random_data(rng, s1, np.float64), random_data(rng, s2, np.float64)
        for method in METHODS:
            assert ours(a, b, mode="same", method=method).shape == s1


# --------------------------------------------------------------------------- fftconvolve

@pytest.mark.parametrize("dtype", (np.float64, np.float32, np.complex128, np.complex64),
                         ids=dtype_id)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("nd", (1, 2, 3))
def test_fftconvolve_matches_scipy(nd, mode, dtype, rng):
    for s1, s2 in SHAPE_PAIRS[nd]:
        if mode == "valid" and not fits(s1, s2):
            continue
        a, b = random_data(rng, s1, dtype), random_data(rng, s2, dtype)
        with spying() as spy:
            result = fsig.fftconvolve(a, b, mode=mode)
        assert spy.algorithms == ["fft"]
        assert_matches(result, ssig.fftconvolve(a, b, mode=mode), a, b)


def test_fftconvolve_default_mode_is_full(rng):
    a, b = random_data(rng, (7, 5), np.float64), random_data(rng, (3, 3), np.float64)
    assert_matches(fsig.fftconvolve(a, b), ssig.fftconvolve(a, b), a, b)
    assert fsig.fftconvolve(a, b).shape == (9, 7)


@pytest.mark.parametrize("dtypes", [(np.int16, np.int16), (np.uint8, np.uint8),
                                    (np.int64, np.int64), (np.float16, np.float16),
                                    (np.int8, np.float16)],
                         ids=lambda d: f"{dtype_id(d[0])}-{dtype_id(d[1])}")
def test_fftconvolve_of_integer_or_half_inputs_has_scipys_dtype(dtypes, rng):
    """scipy.signal.fftconvolve returns what scipy.fft computes in: float64 for
    integer inputs (unrounded), float32 for float16 -- unlike ``convolve``, which
    casts back to the integer result type."""
    a = random_data(rng, (8,), dtypes[0])
    b = random_data(rng, (3,), dtypes[1])
    for mode in MODES:
        expected = ssig.fftconvolve(a, b, mode=mode)
        result = fsig.fftconvolve(a, b, mode=mode)
        assert result.dtype == expected.dtype, \
            f"fftconvolve({a.dtype}, {b.dtype}) gave {result.dtype}, SciPy {expected.dtype}"
        np.testing.assert_allclose(result, expected, atol=1e-3)


# --------------------------------------------------------------------------- choosing

@pytest.mark.parametrize("shapes", [((5,), (3,)), ((8, 8), (3, 3)), ((6, 5, 4), (2, 2, 2)),
                                    ((400, 400), (60, 60)), ((40, 40, 40), (15, 15, 15)),
                                    ((3, 4), (5, 6))], ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_choose_conv_method_returns_direct_or_fft(shapes, mode):
    a, b = np.zeros(shapes[0]), np.zeros(shapes[1])
    if mode == "valid" and not fits(*shapes):
        return
    assert fsig.choose_conv_method(a, b, mode=mode) in ("direct", "fft")
    assert fsig.choose_conv_method(a, b) in ("direct", "fft")


def test_choose_conv_method_prefers_direct_for_tiny_and_fft_for_huge_kernels():
    assert fsig.choose_conv_method(np.zeros((8, 8)), np.zeros((3, 3))) == "direct"
    assert fsig.choose_conv_method(np.zeros((400, 400)), np.zeros((60, 60))) == "fft"


@pytest.mark.parametrize("func", FUNCS)
def test_auto_runs_an_algorithm_and_agrees_with_both(func, rng):
    ours, scipys = getattr(fsig, func), getattr(ssig, func)
    for s1, s2 in [((10, 11), (3, 2)), ((120, 100), (31, 29))]:
        a, b = random_data(rng, s1, np.float64), random_data(rng, s2, np.float64)
        with spying() as spy:
            auto = ours(a, b, mode="same")
        assert spy.algorithms and spy.algorithms[0] in ("direct", "fft")
        for method in ("direct", "fft"):
            assert_matches(auto, ours(a, b, mode="same", method=method), a, b)
        assert_matches(auto, scipys(a, b, mode="same"), a, b)


def test_auto_picks_fft_for_a_large_kernel_and_matches_scipy(rng):
    a = random_data(rng, (150, 140), np.float32)
    b = random_data(rng, (40, 45), np.float32)
    with spying() as spy:
        result = fsig.convolve(a, b, mode="valid")
    assert spy.algorithms == ["fft"]
    assert_matches(result, ssig.convolve(a, b, mode="valid"), a, b)


# --------------------------------------------------------------------------- inputs

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("func", ("convolve", "correlate", "fftconvolve"))
def test_inputs_are_not_modified_and_any_array_like_is_accepted(func, method, rng):
    ours, scipys = getattr(fsig, func), getattr(ssig, func)
    kwargs = {} if func == "fftconvolve" else {"method": method}
    a = random_data(rng, (12, 9), np.complex128)[::2, ::-1]
    b = np.asfortranarray(random_data(rng, (3, 4), np.complex128))
    a_copy, b_copy = a.copy(), b.copy()
    result = ours(a, b, mode="same", **kwargs)
    np.testing.assert_array_equal(a, a_copy)
    np.testing.assert_array_equal(b, b_copy)
    assert_matches(result, scipys(a, b, mode="same", **kwargs), a, b)
    assert_matches(ours(a.tolist(), b.tolist(), mode="same", **kwargs), result, a, b)


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("func", ("convolve", "correlate", "fftconvolve", "oaconvolve",
                                  "choose_conv_method"))
def test_unknown_mode_raises(func):
    with pytest.raises(ValueError, match="mode"):
        getattr(fsig, func)(np.ones(4), np.ones(2), mode="bogus")


@pytest.mark.parametrize("func", FUNCS)
def test_unknown_method_raises(func):
    with pytest.raises(ValueError, match="method"):
        getattr(fsig, func)(np.ones(4), np.ones(2), method="bogus")


@pytest.mark.parametrize("func", ("convolve", "correlate", "fftconvolve", "choose_conv_method"))
def test_inputs_of_different_dimensionality_raise(func):
    with pytest.raises(ValueError, match="same dimensionality"):
        getattr(fsig, func)(np.ones(4), np.ones((2, 2)))


@pytest.mark.parametrize("func", FUNCS)
def test_four_dimensional_inputs_raise(func):
    with pytest.raises(ValueError, match="1-D to 3-D"):
        getattr(fsig, func)(np.ones((2, 2, 2, 2)), np.ones((1, 1, 1, 1)))
    # fftconvolve takes N-D inputs
    assert fsig.fftconvolve(np.ones((2, 2, 2, 2)), np.ones((1, 1, 1, 1))).shape == (2,) * 4


@pytest.mark.parametrize("func", ("convolve", "correlate", "fftconvolve"))
def test_non_numeric_inputs_raise_type_error(func):
    with pytest.raises(TypeError, match="in1"):
        getattr(fsig, func)(np.array(["a", "b"]), np.ones(2))


# --------------------------------------------------------------------------- hypothesis

@st.composite
def signal_problems(draw):
    nd = draw(st.integers(1, 3))
    s1 = tuple(draw(st.lists(st.integers(1, 7), min_size=nd, max_size=nd)))
    s2 = tuple(draw(st.lists(st.integers(1, 7), min_size=nd, max_size=nd)))
    mode = draw(st.sampled_from(MODES if fits(s1, s2) else ("full", "same")))
    return {"func": draw(st.sampled_from(FUNCS)), "mode": mode, "s1": s1, "s2": s2,
            "method": draw(st.sampled_from(METHODS)),
            "dtype": draw(st.sampled_from((np.float64, np.complex128, np.int32))),
            "seed": draw(st.integers(0, 2**32 - 1))}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=signal_problems())
def test_random_problems_match_scipy(problem):
    rng = np.random.default_rng(problem["seed"])
    ours, scipys = getattr(fsig, problem["func"]), getattr(ssig, problem["func"])
    a = random_data(rng, problem["s1"], problem["dtype"])
    b = random_data(rng, problem["s2"], problem["dtype"])
    kwargs = {"mode": problem["mode"], "method": problem["method"]}
    assert_matches(ours(a, b, **kwargs), scipys(a, b, **kwargs), a, b)
