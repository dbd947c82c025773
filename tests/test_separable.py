"""fastconv's separable ndimage filters against ``scipy.ndimage``.

What is promised (fastconv/_ndfilters.py):

* integer and float64 data give SciPy's numbers exactly (same operations in
  the same order, SciPy's casts to integer outputs), complex128 too;
* float32 / complex64 data are computed in float32, within
  ``1e-5 * max|input| * gain`` of SciPy (gain: the largest factor by which the
  filter can scale a value, e.g. 1 for a Gaussian or a box, sum |w| for a
  correlation);
* SciPy's output dtypes, argument rules and exception types;
* bit-identical results for any thread count, inputs never modified, no
  padded copy: peak extra memory is the output plus a slab.

Every comparison runs SciPy on the same data.  Sizes are small; the file
runs in well under a minute.
"""
import contextlib
import math
import os
import tracemalloc
import zlib
from unittest import mock

import numpy as np
import pytest
import scipy.ndimage as sndi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
import fastconv._engine
import fastconv._ndfilters as nf
import fastconv.ndimage as fndi

MODES = ("reflect", "constant", "nearest", "mirror", "wrap",
         "grid-constant", "grid-mirror", "grid-wrap")
DTYPES = (np.float32, np.float64, np.uint8, np.uint16, np.int16, np.complex64)
SINGLE = (np.dtype(np.float32), np.dtype(np.complex64))
CVAL = 2.5                 # non-zero, so 'constant' is really tested
TOL32 = 1e-5               # the documented float32 bound (module docstring)


# --------------------------------------------------------------------------- helpers

@pytest.fixture
def rng(request):
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def make_data(rng, shape, dtype):
    """Data filling the dtype's range (so that integer results also overflow
    and wrap, as SciPy's C casts make them) or standard normal floats."""
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


def gaussian_gain(sigma, order, truncate=4.0):
    w = nf.gaussian_kernel1d(sigma, order, int(truncate * float(sigma) + 0.5))
    return float(np.abs(w).sum())


def gain(name, ndim, params):
    """Largest factor by which the filter can scale a value (float32 error scale)."""
    if name in ("correlate1d", "convolve1d"):
        return float(np.abs(params["weights"]).sum())
    if name == "gaussian_filter1d":
        return gaussian_gain(params["sigma"], params.get("order", 0))
    if name == "gaussian_filter":
        sigmas, orders = params["sigma"], params.get("order", 0)
        n = len(sigmas) if np.iterable(sigmas) else ndim
        sigmas = sigmas if np.iterable(sigmas) else [sigmas] * n
        orders = orders if np.iterable(orders) else [orders] * n
        return math.prod(gaussian_gain(s, o) for s, o in zip(sigmas, orders))
    if name in ("uniform_filter1d", "uniform_filter"):
        return 1.0
    if name == "sobel":
        return 2.0 * 4.0 ** (ndim - 1)
    if name == "prewitt":
        return 2.0 * 3.0 ** (ndim - 1)
    if name == "laplace":
        return 4.0 * ndim
    sigma = params["sigma"]
    sigma = max(sigma) if np.iterable(sigma) else sigma
    one = math.prod(gaussian_gain(sigma, 0) for _ in range(ndim - 1))
    if name == "gaussian_laplace":
        return ndim * one * gaussian_gain(min(np.atleast_1d(params["sigma"])), 2)
    return math.sqrt(ndim) * one * gaussian_gain(min(np.atleast_1d(params["sigma"])), 1)


def check_against_scipy(name, x, params, **kwargs):
    """Run both, compare dtype, shape and values; returns fastconv's result."""
    before = x.copy()
    expected = getattr(sndi, name)(x, **params, **kwargs)
    actual = getattr(fndi, name)(x, **params, **kwargs)
    np.testing.assert_array_equal(x, before, err_msg="the input was modified")
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != SciPy's {expected.dtype}"
    assert actual.shape == expected.shape
    if x.dtype in SINGLE and actual.dtype in SINGLE:
        scale = max(float(np.abs(x).max(initial=0)), abs(kwargs.get("cval", 0.0)), 1e-30)
        atol = TOL32 * scale * gain(name, x.ndim, params)
        np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)
    else:
        # integers, float64, complex128: SciPy's numbers exactly
        np.testing.assert_array_equal(actual, expected)
    return actual


# One call of each function, with non-default parameters.
CASES = {
    "correlate1d": dict(weights=np.array([0.5, -1.25, 3.0, 0.75]), axis=0, origin=1),
    "convolve1d": dict(weights=np.array([1.0, -2.0, 0.5, 3.0, 0.25]), axis=-1, origin=-1),
    "gaussian_filter1d": dict(sigma=1.3, axis=-1, order=1),
    "gaussian_filter": dict(sigma=0.9, order=0),
    "uniform_filter1d": dict(size=4, axis=0, origin=-1),
    "uniform_filter": dict(size=3),
    "sobel": dict(axis=0),
    "prewitt": dict(axis=-1),
    "laplace": dict(),
    "gaussian_laplace": dict(sigma=1.1),
    "gaussian_gradient_magnitude": dict(sigma=0.8),
}
SHAPES = {1: (13,), 2: (9, 7), 3: (6, 5, 7)}


# --------------------------------------------------------------------------- against SciPy

@pytest.mark.parametrize("nd", (1, 2, 3))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_function_mode_dtype_and_dims_matches_scipy(name, mode, dtype, nd, rng):
    x = make_data(rng, SHAPES[nd], dtype)
    check_against_scipy(name, x, CASES[name], mode=mode, cval=CVAL)


@pytest.mark.parametrize("order", (0, 1, 2, 3))
@pytest.mark.parametrize("dtype", (np.float32, np.float64, np.uint16), ids=lambda d: np.dtype(d).name)
def test_gaussian_filter_orders_per_axis(order, dtype, rng):
    x = make_data(rng, (8, 9, 7), dtype)
    check_against_scipy("gaussian_filter", x, dict(sigma=(1.0, 0.7, 1.6),
                                                   order=(order, 3 - order, order)),
                        mode="mirror")
    check_against_scipy("gaussian_filter", x, dict(sigma=1.2, order=order), mode="wrap")


@pytest.mark.parametrize("dtype", (np.float32, np.float64, np.int16), ids=lambda d: np.dtype(d).name)
def test_sequences_of_modes_radius_truncate_and_axes(dtype, rng):
    x = make_data(rng, (7, 8, 6), dtype)
    modes = ("nearest", "constant", "wrap")
    check_against_scipy("gaussian_filter", x, dict(sigma=(0.5, 1.5, 2.5), radius=(1, 3, 2)),
                        mode=modes, cval=-1.5)
    check_against_scipy("gaussian_filter", x, dict(sigma=(0.8, 2.0), truncate=2.5),
                        mode=("mirror", "reflect"), axes=(2, 0))
    check_against_scipy("uniform_filter", x, dict(size=(2, 5, 3), origin=(0, -2, 1)),
                        mode=modes, cval=4.0)
    check_against_scipy("uniform_filter", x, dict(size=(4, 1)), axes=(-1, 1))
    check_against_scipy("sobel", x, dict(axis=1), mode=modes, cval=1.0)
    check_against_scipy("prewitt", x, dict(axis=2), mode=modes)
    check_against_scipy("laplace", x, dict(), mode=("wrap", "mirror"), axes=(0, 2))
    check_against_scipy("gaussian_laplace", x, dict(sigma=(0.8, 1.4)), axes=(1, 2),
                        mode=("nearest", "wrap"))
    check_against_scipy("gaussian_gradient_magnitude", x, dict(sigma=1.0, truncate=3.0),
                        axes=(0, 1))


def test_gaussian_gradient_magnitude_with_axes_smooths_every_axis_as_scipy(rng):
    """SciPy's gaussian_gradient_magnitude differentiates along ``axes`` only but,
    with a scalar sigma, smooths along every axis (unlike gaussian_laplace);
    fastconv follows it, so that results agree."""
    x = make_data(rng, (6, 8, 7), np.float64)
    ours = fndi.gaussian_gradient_magnitude(x, 1.0, axes=(1, 2))
    per_slice = np.stack([fndi.gaussian_gradient_magnitude(s, 1.0) for s in x])
    np.testing.assert_array_equal(ours, sndi.gaussian_gradient_magnitude(x, 1.0, axes=(1, 2)))
    assert not np.allclose(ours, per_slice)


@pytest.mark.parametrize("name", ("correlate1d", "gaussian_filter1d", "uniform_filter1d"))
@pytest.mark.parametrize("mode", MODES)
def test_halo_longer_than_the_line(name, mode, rng):
    """Kernels reaching several line lengths past the edge: SciPy extends the
    line periodically (reflect 2n, mirror 2n - 2, wrap n); lines of length 1."""
    params = {"correlate1d": dict(weights=np.linspace(-1, 2, 23), origin=-5),
              "gaussian_filter1d": dict(sigma=3.0),
              "uniform_filter1d": dict(size=17, origin=3)}[name]
    for shape in ((1, 3), (2, 5), (3, 4), (1,), (4, 1)):
        for dtype in (np.float64, np.uint8):
            x = make_data(rng, shape, dtype)
            check_against_scipy(name, x, params, mode=mode, cval=-0.75)


@pytest.mark.parametrize("mode", MODES)
def test_uint8_gaussian_truncates_as_scipy_after_every_pass(mode):
    """A constant image: Gaussian weights sum to 1 - tiny, so SciPy's float64
    sums land just below the integer and truncate (100 -> 99), pass by pass."""
    x = np.full((12, 11, 10), 100, np.uint8)
    x[3:7, 2:9, 4] = 250
    check_against_scipy("gaussian_filter", x, dict(sigma=1.7), mode=mode)
    check_against_scipy("gaussian_filter", x, dict(sigma=(0.6, 2.2, 1.0)), mode=mode,
                        output=np.int16)


@pytest.mark.parametrize("output", (np.float32, np.float64, np.uint8, np.int16, np.int32,
                                    np.uint16, np.int64, np.uint64, np.uint32, np.int8),
                         ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("dtype", (np.float32, np.uint8, np.int16, np.float64, np.bool_),
                         ids=lambda d: np.dtype(d).name)
def test_output_dtypes_and_their_casts_match_scipy(dtype, output, rng):
    """Every input/output dtype pair: negative and too-large results wrap in
    integer outputs exactly as SciPy's C casts make them."""
    x = make_data(rng, (9, 8), dtype) if dtype != np.bool_ else rng.random((9, 8)) > 0.5
    if np.dtype(dtype).kind == "f":
        x = (x * 300).astype(dtype)
    for name in ("sobel", "correlate1d", "uniform_filter", "gaussian_filter"):
        params = dict(CASES[name])
        if name == "correlate1d":
            params["weights"] = np.array([1.5, -3.0, 2.0])
        expected = getattr(sndi, name)(x, **params, output=output)
        actual = getattr(fndi, name)(x, **params, output=output)
        assert actual.dtype == expected.dtype
        if x.dtype in SINGLE and actual.dtype in SINGLE:
            np.testing.assert_allclose(actual, expected, rtol=1e-5,
                                       atol=1e-5 * 300 * gain(name, 2, params))
        elif x.dtype in SINGLE and actual.dtype.kind == "f":
            np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-9)
        else:
            np.testing.assert_array_equal(actual, expected)


def test_output_array_filled_in_place_and_returned(rng):
    x = make_data(rng, (10, 9), np.float32)
    out = np.full((10, 9), np.nan, np.float64)
    result = fndi.gaussian_filter(x, 1.5, output=out)
    assert result is out
    np.testing.assert_allclose(out, sndi.gaussian_filter(x, 1.5, output=np.float64),
                               rtol=0, atol=1e-12)
    # a non-contiguous output view is filled too
    big = np.zeros((20, 9), np.float32)
    fndi.sobel(x, axis=0, output=big[::2])
    np.testing.assert_allclose(big[::2], sndi.sobel(x, axis=0), rtol=0, atol=1e-4)
    assert not big[1::2].any()


def test_output_may_be_the_input_itself(rng):
    """``output=input`` (as SciPy allows): the filter reads every row before it
    overwrites it, whatever the axis."""
    for name in ("gaussian_filter", "uniform_filter", "sobel", "correlate1d"):
        for dtype in (np.float64, np.uint16):
            x = make_data(rng, (8, 9, 10), dtype)
            params = dict(CASES[name])
            expected = getattr(sndi, name)(x.copy(), **params)
            y = x.copy()
            result = getattr(fndi, name)(y, **params, output=y)
            assert result is y
            np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("name", ("correlate1d", "gaussian_filter", "uniform_filter", "sobel"))
def test_strided_views_negative_strides_and_fortran_order(name, rng):
    base = make_data(rng, (14, 11, 12), np.float64)
    params = CASES[name]
    for x in (base[::2, 1:, ::-1], np.asfortranarray(base), base.transpose(2, 0, 1),
              base[:, 3, :], base[..., ::3]):
        expected = getattr(sndi, name)(x, **params, mode="mirror")
        np.testing.assert_array_equal(getattr(fndi, name)(x, **params, mode="mirror"), expected)


def test_complex_weights_and_cval_match_scipy(rng):
    for dtype in (np.complex64, np.complex128, np.float64, np.float32):
        x = make_data(rng, (7, 9), dtype)
        w = np.array([1 - 1j, 0.5j, 2.0, -0.25 + 0.75j])
        params = dict(weights=w, axis=1, origin=-1)
        cval = CVAL + 1j if np.dtype(dtype).kind == "c" else CVAL
        for name in ("correlate1d", "convolve1d"):
            expected = getattr(sndi, name)(x, **params, mode="constant", cval=cval)
            actual = getattr(fndi, name)(x, **params, mode="constant", cval=cval)
            assert actual.dtype == expected.dtype
            tol = 1e-5 * 4 * float(np.abs(x).max()) if x.dtype in SINGLE else 0
            np.testing.assert_allclose(actual, expected, rtol=0, atol=tol)


# --------------------------------------------------------------------------- hypothesis

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@st.composite
def filter_calls(draw):
    nd = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=nd, max_size=nd)))
    dtype = draw(st.sampled_from(DTYPES))
    name = draw(st.sampled_from(sorted(CASES)))
    mode = draw(st.sampled_from(MODES))
    cval = draw(st.floats(-5, 5, allow_nan=False).map(lambda v: round(v, 2)))
    params = {}
    if name in ("correlate1d", "convolve1d"):
        k = draw(st.integers(1, 9))
        params["weights"] = np.array(draw(st.lists(st.floats(-4, 4).map(lambda v: round(v, 3)),
                                                   min_size=k, max_size=k)))
        params["origin"] = draw(st.integers(-(k // 2), (k - 1) // 2))
    if name in ("gaussian_filter1d", "gaussian_filter", "gaussian_laplace",
                "gaussian_gradient_magnitude"):
        params["sigma"] = draw(st.floats(0.3, 3.0).map(lambda v: round(v, 2)))
    if name in ("gaussian_filter1d", "gaussian_filter"):
        params["order"] = draw(st.integers(0, 3))
    if name in ("uniform_filter1d", "uniform_filter"):
        size = draw(st.integers(1, 8))
        params["size"] = size
        params["origin"] = draw(st.integers(-(size // 2), (size - 1) // 2))
    if name in ("correlate1d", "convolve1d", "gaussian_filter1d", "uniform_filter1d",
                "sobel", "prewitt"):
        params["axis"] = draw(st.integers(-nd, nd - 1))
    seed = draw(st.integers(0, 2**32 - 1))
    return name, shape, dtype, mode, cval, params, seed


@SETTINGS
@given(filter_calls())
def test_random_calls_match_scipy(call):
    name, shape, dtype, mode, cval, params, seed = call
    x = make_data(np.random.default_rng(seed), shape, dtype)
    check_against_scipy(name, x, params, mode=mode, cval=cval)


@st.composite
def rank1_calls(draw):
    nd = draw(st.integers(2, 3))
    shape = tuple(draw(st.lists(st.integers(1, 8), min_size=nd, max_size=nd)))
    factors = [np.array(draw(st.lists(st.integers(-3, 3), min_size=1, max_size=5))) / 2.0
               for _ in range(nd)]
    dtype = draw(st.sampled_from((np.float32, np.float64, np.uint8, np.int16)))
    mode = draw(st.sampled_from(MODES))
    seed = draw(st.integers(0, 2**32 - 1))
    return shape, factors, dtype, mode, seed


@SETTINGS
@given(rank1_calls())
def test_rank1_correlate_and_convolve_match_scipy(call):
    shape, factors, dtype, mode, seed = call
    w = factors[0]
    for f in factors[1:]:
        w = np.multiply.outer(w, f)
    x = make_data(np.random.default_rng(seed), shape, dtype)
    if np.dtype(dtype).kind in "iu":
        x = (x // 64).astype(dtype)       # sums far inside float64's exact range
    origin = [(len(f) - 1) // 2 for f in factors]
    for name in ("correlate", "convolve"):
        expected = getattr(sndi, name)(x, w, mode=mode, cval=1.0, origin=origin)
        actual = getattr(fndi, name)(x, w, mode=mode, cval=1.0, origin=origin)
        assert actual.dtype == expected.dtype
        if x.dtype == np.float32:
            scale = float(np.abs(x).max()) * float(np.abs(w).sum()) + 1.0
            np.testing.assert_allclose(actual, expected, rtol=0, atol=TOL32 * scale)
        elif x.dtype == np.float64:
            np.testing.assert_allclose(actual, expected, rtol=0,
                                       atol=1e-12 * (float(np.abs(x).max()) + 1.0)
                                       * float(np.abs(w).sum()))
        else:
            np.testing.assert_array_equal(actual, expected)


# --------------------------------------------------------------------------- float32 bound

@pytest.mark.parametrize("taps", (3, 31, 101))
@pytest.mark.parametrize("mode", ("reflect", "constant", "wrap"))
def test_float32_error_bound_up_to_101_taps(taps, mode, rng):
    """The documented bound: float32 within 1e-5 * max|input| * gain of SciPy
    (which computes in float64), here for correlate1d, a Gaussian as wide as
    101 taps, its derivative and a 101-tap box, along every axis."""
    x = (rng.standard_normal((24, 20, 110)) * 100 + 50).astype(np.float32)
    w = rng.standard_normal(taps)
    sigma = (taps - 1) / 8.0            # radius = 4 sigma: `taps` taps
    for axis in range(3):
        check_against_scipy("correlate1d", x, dict(weights=w, axis=axis), mode=mode,
                            cval=CVAL)
        for order in (0, 1):
            check_against_scipy("gaussian_filter1d", x,
                                dict(sigma=sigma, axis=axis, order=order), mode=mode)
        check_against_scipy("uniform_filter1d", x, dict(size=taps, axis=axis), mode=mode)
    check_against_scipy("gaussian_filter", x, dict(sigma=sigma), mode=mode)


def test_float32_is_computed_in_float32():
    """float32 in, float32 out, float32 arithmetic: the kernel is asked for
    single precision (SciPy computes in float64).  16-bit integers into an
    integer output too, with the cells near an integer checked (float64 work
    for an integer output of int32 data, or a float64 output)."""
    seen = []
    real = nf._kernel.filter_pass

    def spy(*args, **kwargs):
        seen.append((args[4], kwargs.get("checked", False)))    # double_work, checked
        return real(*args, **kwargs)

    with mock.patch.object(nf._kernel, "filter_pass", spy):
        fndi.gaussian_filter(np.ones((5, 6), np.float32), 1.0)
        fndi.gaussian_filter(np.ones((5, 6), np.float32), 1.0, output=np.float64)
        fndi.gaussian_filter(np.ones((5, 6), np.uint16), 1.0)
        fndi.gaussian_filter(np.ones((5, 6), np.int32), 1.0)
        fndi.gaussian_filter(np.ones((5, 6), np.uint8), 1.0, output=np.float64)
    assert seen == [(False, False)] * 2 + [(True, False)] * 2 + [(False, True)] * 2 + \
        [(True, False)] * 4


# --------------------------------------------------------------------------- exact float32

INT_DTYPES = (np.uint8, np.uint16, np.int16)


def adversarial_data(rng, shape, dtype, kind):
    """Integer data whose filtered sums land on or next to integers.

    'blocks': piecewise constant (a normalised filter of a constant c gives
    c (1 +- a few ulps), straddling the truncation boundary at c); 'steps':
    a constant plus 0 / 1 noise; 'full': the dtype's whole range (large sums,
    many cells to redo); '12bit': 0 .. 4095, as CT data.
    """
    info = np.iinfo(dtype)
    if kind == "full":
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    if kind == "12bit":
        return rng.integers(0, min(4096, info.max + 1), size=shape).astype(dtype)
    base = int(rng.integers(info.min, info.max - 1, endpoint=True))
    if kind == "steps":
        return (base + rng.integers(0, 2, size=shape)).astype(dtype)
    levels = rng.integers(info.min, info.max, size=4, endpoint=True)
    cells = rng.integers(0, 4, size=tuple(max(1, n // 4) for n in shape))
    for ax, n in enumerate(shape):
        cells = np.repeat(cells, 4, axis=ax)[(slice(None),) * ax + (slice(0, n),)]
        if cells.shape[ax] < n:
            cells = np.concatenate([cells] + [cells[(slice(None),) * ax + (slice(-1, None),)]]
                                   * (n - cells.shape[ax]), axis=ax)
    return levels[cells].astype(dtype)


@contextlib.contextmanager
def float32_always():
    """The checked float32 route wherever it is exact, whatever the data say about
    its speed (so that full-range data run it too)."""
    with mock.patch.object(nf._exact32, "worth_it", lambda *args: True):
        yield


@st.composite
def integer_calls(draw):
    nd = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 12), min_size=nd, max_size=nd)))
    dtype = draw(st.sampled_from(INT_DTYPES))
    kind = draw(st.sampled_from(("blocks", "steps", "full", "12bit")))
    mode = draw(st.sampled_from(MODES))
    info = np.iinfo(dtype)
    cval = draw(st.integers(max(info.min, -100), min(info.max, 300)))   # integer: checked
    name = draw(st.sampled_from(("gaussian_filter", "gaussian_filter1d", "correlate1d",
                                 "sobel", "prewitt", "laplace", "gaussian_laplace",
                                 "gaussian_gradient_magnitude")))
    params = {}
    if name.startswith("gaussian"):
        params["sigma"] = draw(st.floats(0.4, 4.0).map(lambda v: round(v, 2)))
    if name in ("gaussian_filter", "gaussian_filter1d"):
        params["order"] = draw(st.integers(0, 3))
    if name == "correlate1d":
        weights = draw(st.sampled_from(("random", "dyadic", "box")))
        k = draw(st.integers(1, 9))
        if weights == "random":
            w = draw(st.lists(st.floats(-2, 2).map(lambda v: round(v, 3)), min_size=k,
                              max_size=k))
        elif weights == "dyadic":       # sums exactly on integers and halves
            w = [v / 4 for v in draw(st.lists(st.integers(0, 4), min_size=k, max_size=k))]
        else:
            w = [1 / k] * k
        params["weights"] = np.array(w)
    if name in ("gaussian_filter1d", "correlate1d", "sobel", "prewitt"):
        params["axis"] = draw(st.integers(-nd, nd - 1))
    output = draw(st.sampled_from((None, np.uint8, np.int16, np.uint16, np.int32)))
    seed = draw(st.integers(0, 2**32 - 1))
    return name, shape, dtype, kind, mode, cval, params, output, seed


@SETTINGS
@given(integer_calls())
def test_integer_data_in_checked_float32_give_scipy_bits(call):
    """8- and 16-bit data into integer outputs run in float32, cells near an
    integer redone in float64: SciPy's integers exactly, on data built to put
    sums on the truncation boundaries."""
    name, shape, dtype, kind, mode, cval, params, output, seed = call
    x = adversarial_data(np.random.default_rng(seed), shape, dtype, kind)
    with float32_always():
        check_against_scipy(name, x, params, mode=mode, cval=cval, output=output)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("nd", (1, 2, 3))
def test_gaussians_of_constant_regions_truncate_as_scipy(nd, dtype, mode, rng):
    """A normalised Gaussian of a constant is the constant give or take an ulp,
    in float32 and float64 alike, on different sides: every such cell must be
    redone.  (Without the redo, most of them differ: see the next test.)"""
    shape = {1: (301,), 2: (41, 37), 3: (13, 11, 17)}[nd]
    x = adversarial_data(rng, shape, dtype, "blocks")
    with float32_always():
        for sigma in (0.8, 1.3, 2.0, 3.7):
            check_against_scipy("gaussian_filter", x, dict(sigma=sigma), mode=mode, cval=7)
        check_against_scipy("gaussian_filter1d", x, dict(sigma=1.7, order=1, axis=0),
                            mode=mode)


def test_without_the_redo_float32_truncates_differently():
    """The test above can fail: with the bound set to 0 (no cell redone) the
    float32 sums of constant regions truncate to other integers than SciPy's."""
    x = np.repeat(np.arange(0, 65536, 7, dtype=np.uint16)[:, None], 40, axis=1)
    real = nf._kernel.filter_pass

    def no_redo(*args, **kwargs):
        if kwargs.get("checked"):
            kwargs.update(err_rel=0.0, err_abs=0.0)
        return real(*args, **kwargs)

    with float32_always(), mock.patch.object(nf._kernel, "filter_pass", no_redo):
        actual = fndi.gaussian_filter(x, 1.3)
    assert np.count_nonzero(actual != sndi.gaussian_filter(x, 1.3)) > 1000
    with float32_always():
        np.testing.assert_array_equal(fndi.gaussian_filter(x, 1.3),
                                      sndi.gaussian_filter(x, 1.3))


@pytest.mark.parametrize("axis", (0, 1))
def test_rows_with_many_cells_to_redo_switch_to_float64(axis, rng):
    """Full-range uint16 data make many cells doubtful: rows of 64 cells or more
    are then finished, and the next ones computed, in float64 (both layouts)."""
    x = rng.integers(0, 65536, size=(150, 203)).astype(np.uint16)
    with float32_always():
        for sigma in (1.0, 3.0):
            check_against_scipy("gaussian_filter1d", x, dict(sigma=sigma, axis=axis))
        check_against_scipy("gaussian_filter", x, dict(sigma=2.0), mode="wrap")


@pytest.mark.parametrize("mode", ("reflect", "constant", "wrap"))
def test_mixed_sign_weights_on_12_bit_data_use_the_data_range(mode, rng):
    """uint16 holding 12-bit values: with mixed-sign weights the dtype's range
    gives too large a bound, the data's own range (looked up for arrays of
    64 Ki cells or more) a small one; the checked float32 pass then gives
    SciPy's integers, here on data placed on the boundaries too."""
    x = rng.integers(0, 4096, size=(40, 41, 42)).astype(np.uint16)
    x[::3] = 1000                                    # constant slabs: sums on integers
    seen = []
    real = nf._kernel.filter_pass

    def spy(*args, **kwargs):
        seen.append(kwargs.get("err_abs", 0.0) if kwargs.get("checked") else None)
        return real(*args, **kwargs)

    with float32_always(), mock.patch.object(nf._kernel, "filter_pass", spy):
        for axis in (0, 1, 2):
            check_against_scipy("correlate1d", x, dict(weights=np.array([0.3, -0.6, 0.9, 0.2]),
                                                       axis=axis), mode=mode, cval=5)
            check_against_scipy("gaussian_filter1d", x, dict(sigma=1.5, order=1, axis=axis),
                                mode=mode, cval=5)
    assert all(e is not None and e > 0 for e in seen), seen


def test_which_passes_run_checked_in_float32():
    """The bound, by case: exact for integer weights, relative for non-negative
    terms, absolute (when small) otherwise, float64 where float32 cannot be
    made exact or would redo too many cells."""
    check = nf._exact32.checked_float32
    gauss = nf._gaussian_weights(2.0, 0, 4.0, None, "t")
    u16, i16 = np.dtype(np.uint16), np.dtype(np.int16)
    assert check(u16, u16, np.array([1.0, 2.0, 1.0]), 1, "reflect", 0.0) == (0.0, 0.0)
    assert check(i16, i16, np.array([-1.0, 0.0, 1.0]), 2, "reflect", 0.0) == (0.0, 0.0)
    rel, ab = check(u16, u16, gauss, 1, "reflect", 0.0)
    m = len(gauss) // 2 + 1
    assert ab == 0 and m * 2.0 ** -24 < rel < 1.2 * (m + 1) * 2.0 ** -24
    rel, ab = check(np.dtype(np.uint8), np.dtype(np.uint8), -gauss, 1, "reflect", 0.0)
    assert rel == 0 and 0 < ab < 255 * 2.0 ** -24 * 2 * (m + 1)
    u8 = np.dtype(np.uint8)
    assert check(u8, u8, gauss, 1, "constant", 3.0)[1] == 0             # relative
    assert check(u8, u8, gauss, 1, "constant", -1.0)[0] == 0            # cval < 0: absolute
    assert check(u16, u16, gauss, 1, "constant", 0.5) is None           # not exact in the ring
    assert check(u16, u16, gauss, 1, "reflect", 0.5) is not None        # cval unused
    assert check(np.dtype(np.int32), np.dtype(np.int32), gauss, 1, "reflect", 0.0) is None
    assert check(u16, np.dtype(np.float32), gauss, 1, "reflect", 0.0) is None
    assert check(u16, u16, gauss * 1e3, 1, "reflect", 0.0) is None       # sums past 2**21
    assert check(u16, u16, np.array([1e-40, 1.0]), 0, "reflect", 0.0) is None
    assert check(u16, u16, gauss, 3, "reflect", 0.0) is None             # running sums
    rel, ab = check(i16, i16, gauss, 1, "reflect", 0.0)                  # signed data
    assert rel == 0 and ab > 0.01
    assert not nf._exact32.worth_it(np.zeros((9, 9), np.int16), (rel, ab), gauss, 1)
    assert check(i16, i16, gauss * 8, 1, "reflect", 0.0) is None         # bound too large
    assert check(i16, i16, gauss * 8, 1, "reflect", 0.0, (-300, 200)) is not None
    x = np.full((32, 32), 60000, np.uint16)
    assert not nf._exact32.worth_it(x, check(u16, u16, gauss, 1, "reflect", 0.0), gauss, 1)
    assert nf._exact32.worth_it(x // 64, check(u16, u16, gauss, 1, "reflect", 0.0), gauss, 1)


def test_checked_pass_refuses_what_it_cannot_make_exact():
    """filter_pass itself refuses a checked float32 pass it cannot make exact, and
    box sums outside their layout (arguments taken from a real call)."""
    calls = []
    real = nf._kernel.filter_pass

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    with mock.patch.object(nf._kernel, "filter_pass", spy), float32_always():
        fndi.correlate1d(np.arange(20, dtype=np.uint16).reshape(4, 5), [0.25, 0.5, 0.25],
                         axis=0)
        fndi.uniform_filter1d(np.zeros((4, 5), np.float32), 3, axis=-1)
    (args, kwargs), (box, _) = calls
    assert kwargs["checked"] and not args[4]
    real(*args, **kwargs)                                               # the good call
    for index, value, bounds in ((4, True, (1e-6, 0.0)),                # float64 work
                                 (3, 8, (1e-6, 0.0)),                   # float32 output
                                 (2, 5, (1e-6, 0.0)),                   # int32 data
                                 (None, None, (-1.0, 0.0))):            # a negative bound
        changed = list(args)
        if index is not None:
            changed[index] = value
        with pytest.raises(ValueError, match="checked float32 pass"):
            real(*changed, checked=True, err_rel=bounds[0], err_abs=bounds[1])
    box = list(box)
    assert box[13] == 4 and box[7] == 0              # K_BOX, single-line layout
    real(*box)
    for index, value in ((4, True), (13, 7)):        # float64 work; no such kind
        changed = list(box)
        changed[index] = value
        with pytest.raises(ValueError, match="bad geometry"):
            real(*changed)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_box_means_of_integers_in_float32_give_scipy_bits(dtype, mode, rng):
    """uniform_filter1d of 8- and 16-bit data in float32: exact window sums,
    divided as SciPy divides them (running sums across lines; along the last
    axis direct sums, tap by tap or by doubling spans), up to the largest box
    float32 covers (255) and past it (float64), on data whose sums fall on
    multiples of the size (quotients that are integers) and next to them."""
    info = np.iinfo(dtype)
    for size in (2, 3, 5, 8, 11, 21, 32, 33, 64, 255, 256):
        base = rng.integers(info.min // size, info.max // size, size=(6, 300), endpoint=True)
        x = (base * size + rng.integers(-1, 2, size=base.shape)).clip(info.min, info.max)
        x = x.astype(dtype)
        cval = int(rng.integers(0, 100))
        for axis in (0, -1):
            check_against_scipy("uniform_filter1d", x, dict(size=size, axis=axis),
                                mode=mode, cval=cval)
        check_against_scipy("uniform_filter", x[:, :40], dict(size=(3, size % 40 + 1)),
                            mode=mode, cval=cval)


@pytest.mark.parametrize("size", (3, 8, 21, 32, 33))
@pytest.mark.parametrize("mode", ("reflect", "constant", "wrap"))
def test_float32_box_sums_along_the_last_axis_within_the_bound(size, mode, rng):
    """float32 box sums (direct, tap by tap or by doubling spans, up to 32 taps)
    stay within the documented float32 bound, and run only along the last axis."""
    x = (rng.standard_normal((5, 7, 333)) * 100).astype(np.float32)
    kinds = []
    real = nf._kernel.filter_pass

    def spy(*args, **kwargs):
        kinds.append(args[13])
        return real(*args, **kwargs)

    with mock.patch.object(nf._kernel, "filter_pass", spy):
        for axis in (0, 1, 2):
            check_against_scipy("uniform_filter1d", x, dict(size=size, axis=axis), mode=mode,
                                cval=CVAL)
    box = nf._BOX if size <= nf._BOX_MAX else nf._UNIFORM
    assert kinds == [nf._UNIFORM, nf._UNIFORM, box]


@pytest.mark.parametrize("dtype", (np.float32, np.uint16, np.float64), ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ("gaussian_gradient_magnitude", "gaussian_laplace"))
def test_terms_sharing_their_first_pass_give_the_same_bits(name, dtype, rng, monkeypatch):
    """Further terms that start with the same smoothing pass share it per slab:
    the same bits as computing each term on its own, in several slabs, and
    with modes per axis (terms with different modes do not share)."""
    x = make_data(rng, (12, 10, 9), dtype)
    monkeypatch.setattr(nf, "SLAB_BYTES", x.nbytes // 3)
    for mode in ("reflect", ["wrap", "nearest", "nearest"]):
        shared = getattr(fndi, name)(x, 1.2, mode=mode)
        with mock.patch.object(nf, "_groups_by_first_pass", lambda terms: [[t] for t in terms]):
            alone = getattr(fndi, name)(x, 1.2, mode=mode)
        assert shared.tobytes() == alone.tobytes()
        check_against_scipy(name, x, dict(sigma=1.2), mode=mode)
    terms = [[(0, np.ones(3), "wrap"), (1, np.ones(2), "wrap")], [(0, np.ones(3), "wrap")],
             [(0, np.ones(3), "reflect")], []]
    assert [len(g) for g in nf._groups_by_first_pass(terms)] == [2, 1, 1]


# --------------------------------------------------------------------------- threads

@contextlib.contextmanager
def threads_recorded():
    """Every kernel call's thread count, with a thread for even tiny work."""
    counts = []
    real = nf._kernel.filter_pass

    def spy(*args, **kwargs):
        counts.append(args[-1])
        return real(*args, **kwargs)

    with mock.patch.object(nf, "_MIN_WORK_PER_THREAD", 1), \
            mock.patch.object(nf._kernel, "filter_pass", spy):
        yield counts


@pytest.mark.parametrize("dtype", (np.float32, np.float64, np.uint16), ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", sorted(CASES))
def test_bit_identical_for_1_2_and_3_threads(name, dtype, rng):
    x = make_data(rng, (23, 37, 41), dtype)
    results = []
    for workers in (1, 2, 3):
        with threads_recorded() as counts:
            results.append(getattr(fndi, name)(x, **CASES[name], workers=workers))
        assert counts and max(counts) == workers
    for r in results[1:]:
        assert r.tobytes() == results[0].tobytes()


def test_long_lines_split_into_segments_give_the_same_bits(rng):
    """A long 1-D signal is cut into segments that threads share: the result is
    the same as one job per line."""
    x = make_data(rng, (3 * fastconv._costs.PASS_SEGMENT_ROWS + 77,), np.float32)
    with threads_recorded():
        a = fndi.gaussian_filter1d(x, 5.0, workers=3)
        fastconv._dispatch.select.cache_clear()
        try:
            with mock.patch.object(fastconv._costs, "PASS_SEGMENT_ROWS", 10**9):
                b = fndi.gaussian_filter1d(x, 5.0, workers=3)
        finally:
            fastconv._dispatch.select.cache_clear()
    assert a.tobytes() == b.tobytes()
    check_against_scipy("gaussian_filter1d", x, dict(sigma=5.0))


def test_workers_argument_follows_scipy_fft(rng):
    """None: fastconv's thread setting; n: n threads; -1: every core."""
    x = make_data(rng, (30, 40), np.float32)
    with threads_recorded() as counts:
        fndi.uniform_filter1d(x, 3, workers=2)
        fndi.uniform_filter1d(x, 3, workers=-1)
        fndi.uniform_filter1d(x, 3, workers=None)
    assert counts == [2, os.cpu_count(), fastconv.get_num_threads()]


def test_calls_from_several_python_threads_agree(rng):
    from concurrent.futures import ThreadPoolExecutor
    x = make_data(rng, (20, 30, 40), np.float32)
    expected = fndi.gaussian_filter(x, 2.0)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: fndi.gaussian_filter(x, 2.0, workers=2), range(8)))
    for r in results:
        assert r.tobytes() == expected.tobytes()


# --------------------------------------------------------------------------- memory

def peak_extra_bytes(func):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = func()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - base, result


@pytest.mark.parametrize("dtype", (np.float32, np.uint16), ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ("gaussian_filter", "uniform_filter", "sobel", "correlate1d",
                                  "laplace", "gaussian_laplace",
                                  "gaussian_gradient_magnitude"))
def test_peak_memory_is_the_output_plus_a_slab(name, dtype, rng, monkeypatch):
    """No padded or cast copy of the input: NumPy allocations during a call add
    up to the output, plus one slab (here 1/8 of the volume) for the filters
    that sum several terms.  (Without the slab rule those would need a second
    output-sized array per term; with np.pad, four volumes.)  (The kernel's per-thread buffers, ~0.3 MB each,
    are C allocations tracemalloc does not see; their size is fixed by
    the registry's pass plans, not by the volume.)"""
    x = make_data(rng, (64, 64, 64), dtype)
    out_bytes = x.nbytes
    slab = out_bytes // 8
    monkeypatch.setattr(nf, "SLAB_BYTES", slab)
    extra, result = peak_extra_bytes(lambda: getattr(fndi, name)(x, **CASES[name]))
    allowed = out_bytes + (slab if name in ("laplace", "gaussian_laplace",
                                            "gaussian_gradient_magnitude") else 0)
    # + 128 KB: NumPy's ufunc buffers (8192 elements per operand) where a
    # slab is added into a non-contiguous part of the output
    assert extra <= allowed + 128 * 1024, f"{extra} bytes > {allowed}"
    assert result.dtype == x.dtype


def test_rank1_correlate_uses_no_padded_copy(rng):
    x = make_data(rng, (48, 48, 48), np.float32)
    g = nf.gaussian_kernel1d(1.5, 0, 6)
    w = np.multiply.outer(np.multiply.outer(g, g), g)
    extra, result = peak_extra_bytes(lambda: fndi.correlate(x, w))
    # the output, and temporaries of the kernel's size (rank-1 test)
    assert extra <= x.nbytes + 64 * 1024 + 8 * w.nbytes, f"{extra} bytes"
    np.testing.assert_allclose(result, sndi.correlate(x, w), rtol=0, atol=1e-5 * 4)


# --------------------------------------------------------------------------- rank-1 detection

@contextlib.contextmanager
def engine_spied():
    calls = []
    real = fastconv._engine.conv_forward

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    with mock.patch.object(fastconv._engine, "conv_forward", spy):
        yield calls


def test_rank1_factors_are_exact_or_none(rng):
    g = nf.gaussian_kernel1d(1.2, 0, 4)
    w = np.multiply.outer(g, np.array([1.0, 2.0, 1.0]))
    factors = nf.rank1_factors(w)
    assert factors is not None and [len(f) for f in factors] == [9, 3]
    assert np.array_equal(np.multiply.outer(*factors), w)
    assert nf.rank1_factors(rng.standard_normal((3, 3))) is None
    nudged = w.copy()
    nudged[2, 1] *= 1 + 1e-13                  # ~450 ulps off rank 1
    assert nf.rank1_factors(nudged) is None
    one_ulp = w.copy()
    one_ulp[2, 1] = np.nextafter(one_ulp[2, 1], 1.0)
    assert nf.rank1_factors(one_ulp, ulps=0) is None       # bit for bit
    assert nf.rank1_factors(one_ulp) is not None           # within rounding
    assert nf.rank1_factors(np.zeros((3, 3))) is None
    # a Gaussian built as NumPy users build it: rank 1 up to the rounding of
    # its products
    g3 = np.multiply.outer(np.multiply.outer(g, g), g)
    assert nf.rank1_factors(g3) is not None and nf.rank1_factors(g3, ulps=0) is None
    # integer kernels are recovered bit for bit
    sobel3 = np.multiply.outer(np.multiply.outer([1, 2, 1], [-1, 0, 1]), [1, 2, 1])
    assert nf.rank1_factors(sobel3, ulps=0) is not None


@pytest.mark.parametrize("mode", MODES)
def test_separable_kernels_in_correlate_skip_the_nd_engine(mode, rng):
    x = make_data(rng, (10, 12, 9), np.float64)
    sobel3 = np.multiply.outer(np.multiply.outer([1.0, 2.0, 1.0], [-1.0, 0.0, 1.0]),
                               [1.0, 2.0, 1.0])
    box = np.ones((3, 5, 2)) / 30.0
    for w in (sobel3, box):
        for name in ("correlate", "convolve"):
            with engine_spied() as calls:
                actual = getattr(fndi, name)(x, w, mode=mode, cval=CVAL)
            assert calls == []
            np.testing.assert_allclose(actual, getattr(sndi, name)(x, w, mode=mode, cval=CVAL),
                                       rtol=0, atol=1e-12 * float(np.abs(x).max()) * 32)
    with engine_spied() as calls:
        fndi.correlate(x, rng.standard_normal((3, 3, 3)), mode=mode)
    assert calls, "a kernel that is not rank 1 must take the N-D path"


def test_integer_outputs_take_passes_only_when_exact(rng):
    x = make_data(rng, (16, 15), np.uint8)
    sobel = np.multiply.outer([1.0, 2.0, 1.0], [-1.0, 0.0, 1.0])
    with engine_spied() as calls:
        r = fndi.correlate(x, sobel, output=np.int16)
    assert calls == []
    np.testing.assert_array_equal(r, sndi.correlate(x, sobel, output=np.int16))
    third = np.multiply.outer([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]) / 9.0   # 1/9: not dyadic
    with engine_spied() as calls:
        fndi.correlate(x, third)
    assert calls, "non-dyadic factors could round differently: N-D path"
    # the same kernel into a float output is separable
    with engine_spied() as calls:
        r = fndi.correlate(x, third, output=np.float64)
    assert calls == []
    np.testing.assert_allclose(r, sndi.correlate(x, third, output=np.float64), rtol=1e-14)


# --------------------------------------------------------------------------- errors

BAD_CALLS = [
    # (function, args, kwargs, what the message must name)
    ("gaussian_filter", (1.0,), dict(mode="bogus"), "mode"),
    ("uniform_filter1d", (3,), dict(mode=3), "mode"),
    ("correlate1d", ([1.0, 2.0, 3.0],), dict(origin=2), "origin"),
    ("uniform_filter1d", (4,), dict(origin=-3), "origin"),
    ("uniform_filter", (3,), dict(origin=(1, 5)), "origin"),
    ("correlate1d", ([],), {}, "weights"),
    ("correlate1d", ([[1.0, 2.0]],), {}, "weights"),
    ("uniform_filter1d", (0,), {}, "size"),
    ("gaussian_filter1d", (1.0,), dict(axis=2), "axis"),
    ("sobel", (), dict(axis=-3), "axis"),
    ("gaussian_filter", (1.0,), dict(axes=(0, 0)), "axes must be unique"),
    ("gaussian_filter", (1.0,), dict(axes=(2,)), "out of range"),
    ("uniform_filter", (3,), dict(axes=(1.5,)), "cannot be interpreted as an integer"),
    ("gaussian_filter", ((1.0, 2.0, 3.0),), {}, "sigma"),
    ("uniform_filter", ((3, 3),), dict(axes=(0,)), "size"),
    ("gaussian_filter", (1.0,), dict(mode=("reflect",)), "mode"),
    ("gaussian_filter1d", (1.0,), dict(radius=-1), "Radius"),
    ("gaussian_filter1d", (1.0,), dict(order=-1), "order"),
    ("gaussian_filter", (1.0,), dict(output=np.zeros((3, 3))), "output"),
    ("sobel", (), dict(output="complex64"), "output dtype complex64"),
    ("gaussian_filter", (1.0,), dict(output=np.complex128), "output dtype complex128"),
    ("laplace", (), dict(workers=0), "workers"),
    ("laplace", (), dict(workers=1.5), "workers"),
    ("gaussian_laplace", (1.0,), dict(bogus=1), "bogus"),
]


@pytest.mark.parametrize("name, args, kwargs, names", BAD_CALLS,
                         ids=[f"{c[0]}-{'-'.join(c[2]) or 'args'}" for c in BAD_CALLS])
def test_bad_arguments_raise_like_scipy_and_name_the_argument(name, args, kwargs, names):
    x = np.arange(20.0).reshape(4, 5)
    scipy_kwargs = {k: v for k, v in kwargs.items() if k != "workers"}
    scipy_error = None
    try:
        getattr(sndi, name)(x, *args, **scipy_kwargs)
    except Exception as exc:        # noqa: BLE001 - recording SciPy's type
        scipy_error = type(exc)
    with pytest.raises((ValueError, TypeError, RuntimeError)) as info:
        getattr(fndi, name)(x, *args, **kwargs)
    assert isinstance(info.value, (ValueError, TypeError)), \
        f"{type(info.value).__name__} is neither a ValueError nor a TypeError"
    if scipy_error is not None:
        assert isinstance(info.value, scipy_error), \
            f"SciPy raises {scipy_error.__name__}, fastconv {type(info.value).__name__}"
    message = str(info.value)
    assert names in message
    assert message.startswith(name) or names in ("bogus",)


def test_float16_input_is_refused_as_in_scipy():
    x = np.ones((4, 4), np.float16)
    with pytest.raises(RuntimeError):
        sndi.gaussian_filter(x, 1.0)
    with pytest.raises(ValueError, match="float16"):
        fndi.gaussian_filter(x, 1.0)


def test_complex_cval_with_real_input():
    with pytest.raises(ValueError, match="cval"):
        fndi.correlate1d(np.ones(5), [1.0, 1.0j], cval=1j)


def test_complex_data_into_a_real_dtype_warns_and_promotes_like_scipy(rng):
    x = make_data(rng, (6, 5), np.complex64)
    with pytest.warns(UserWarning, match="promoting"):
        expected = sndi.correlate1d(x, [1.0, 2.0], output=np.float32)
    with pytest.warns(UserWarning, match="promoting"):
        actual = fndi.correlate1d(x, [1.0, 2.0], output=np.float32)
    assert actual.dtype == expected.dtype
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * 3 * np.abs(x).max())


def test_empty_arrays(rng):
    for name in sorted(CASES):
        x = np.zeros((0, 4), np.float32)
        params = dict(CASES[name])
        if "axis" in params:
            params["axis"] = 0 if params["axis"] in (0,) else -1
        r = getattr(fndi, name)(x, **params)
        assert r.shape == (0, 4) and r.dtype == np.float32


@pytest.mark.parametrize("mode", ("constant", "reflect", "wrap", "mirror", "nearest"))
@pytest.mark.parametrize("dtype", (np.float32, np.float64), ids=lambda d: np.dtype(d).name)
def test_dask_rank1_correlate_gives_the_in_memory_bits(mode, dtype, rng):
    """Chunks smaller than the halo included: each block runs the same passes
    over its padded window, so the result is the whole-array result bit for bit
    (constant mode too: later passes pad with what the earlier ones make of cval)."""
    da = pytest.importorskip("dask.array")
    import fastconv.dask as fcd
    x = make_data(rng, (13, 11, 12), dtype)
    g = nf.gaussian_kernel1d(1.5, 0, 6)
    w = np.multiply.outer(np.multiply.outer(g, [1.0, 2.0, 1.0]), g[::2])
    lazy = fcd.correlate(da.from_array(x, chunks=(3, 4, 5)), w, mode=mode, cval=CVAL)
    whole = fndi.correlate(x, w, mode=mode, cval=CVAL)
    assert lazy.compute(scheduler="sync").tobytes() == whole.tobytes()
    np.testing.assert_allclose(whole, sndi.correlate(x, w, mode=mode, cval=CVAL), rtol=0,
                               atol=(TOL32 if dtype == np.float32 else 1e-12)
                               * float(np.abs(x).max() + CVAL) * float(np.abs(w).sum()))


@pytest.mark.parametrize("mode", ("constant", "reflect", "wrap", "mirror", "nearest"))
def test_cli_filter_volume_runs_rank1_kernels_as_passes(mode, rng):
    """``fastconv filter --kernel gaussian:...|box:N``: slab by slab (slabs
    thinner than the halo included), the same bits as the in-memory call."""
    from fastconv import cli
    x = make_data(rng, (11, 9, 10), np.float32)
    for spec in ("gaussian:sigma=1.5", "box:4"):
        kernel = cli.parse_kernel(spec, 3)
        whole = fndi.correlate(x, kernel, mode=mode, cval=CVAL)
        out = np.empty_like(x)
        with engine_spied() as calls:
            cli.filter_volume(x, out, kernel, mode=mode, cval=CVAL, slab=2)
        assert calls == []
        assert out.tobytes() == whole.tobytes()
