"""``fastconv.ndimage.correlate`` / ``convolve`` against ``scipy.ndimage``.

fastconv's filters promise to be drop-in replacements for SciPy's: same
arguments, boundary modes, origins, output dtype rules and numbers (to
floating-point tolerance; integer outputs exactly, since SciPy truncates an
exact sum).  Every test here runs SciPy on the same data and compares.

fastconv picks the direct kernel or FFT per call (``fastconv._filter.choose``);
the ``method`` fixture forces each one in turn by monkeypatching ``choose``
and checks, by spying on the engine, that the forced algorithm really ran.
All sizes are tiny, so the whole file runs in a few seconds.
"""
import contextlib
import itertools
import os
import sys
import zlib
from unittest import mock

import numpy as np
import pytest
import scipy.ndimage as sndi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))

import fastconv  # noqa: E402
import fastconv._engine  # noqa: E402
import fastconv._filter  # noqa: E402
import fastconv._ndfilters  # noqa: E402
import fastconv.ndimage as fndi  # noqa: E402

FUNCS = ("correlate", "convolve")
MODES = ("reflect", "mirror", "nearest", "wrap", "constant",
         "grid-mirror", "grid-wrap", "grid-constant")
METHODS = ("direct", "fft")
CVAL = 1.75                      # non-zero, so 'constant' is really tested
SHAPES = {1: (9,), 2: (7, 6), 3: (5, 4, 6)}
ODD_KERNELS = {1: (3,), 2: (3, 5), 3: (3, 1, 3)}
EVEN_KERNELS = {1: (4,), 2: (2, 4), 3: (2, 3, 4)}
REAL_INT_DTYPES = (np.uint8, np.uint16, np.int16, np.int32)
FLOAT_DTYPES = (np.float32, np.float64)
COMPLEX_DTYPES = (np.complex64, np.complex128)
ALL_INPUT_DTYPES = REAL_INT_DTYPES + FLOAT_DTYPES + COMPLEX_DTYPES


# --------------------------------------------------------------------------- helpers

def dtype_id(dtype):
    return np.dtype(dtype).name


def both(func_name):
    """(fastconv function, SciPy function) of that name."""
    return getattr(fndi, func_name), getattr(sndi, func_name)


def random_data(rng, shape, dtype):
    """Standard normal floats / complex (non-zero imaginary parts) or small ints."""
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "u":
        return rng.integers(0, 10, size=shape).astype(dtype)
    return rng.integers(-9, 10, size=shape).astype(dtype)


def dyadic_weights(rng, shape, signed=True):
    """Weights that are multiples of 1/8: integer-valued data times these sum exactly
    in float64, so truncation to an integer output is unambiguous."""
    low = -8 if signed else 0
    return rng.integers(low, 9, size=shape) / 8.0


def assert_matches(actual, expected, x, w, cval=0.0):
    """Same dtype and shape as SciPy's result; values equal (integers) or within a
    tolerance scaled by the largest possible output magnitude (floats)."""
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != SciPy's {expected.dtype}"
    assert actual.shape == expected.shape
    if actual.dtype.kind in "iub":
        np.testing.assert_array_equal(actual, expected)
        return
    scale = max(1.0, float(np.max(np.abs(x), initial=0)), abs(cval)) * \
        max(1.0, float(np.sum(np.abs(w))))
    single = actual.dtype in (np.float32, np.complex64) or \
        (np.asarray(x).dtype in (np.float32, np.complex64) and
         np.asarray(w).dtype.itemsize <= np.asarray(x).dtype.itemsize)
    atol = (2e-5 if single else 1e-11) * scale
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


class EngineSpy:
    """Records the algorithm of every ``fastconv._engine.conv_forward`` call."""

    def __init__(self):
        self.algorithms = []
        self._real = fastconv._engine.conv_forward

    def __call__(self, *args, **kwargs):
        algorithm = args[8] if len(args) > 8 else kwargs.get("algorithm", "auto")
        self.algorithms.append(algorithm)
        return self._real(*args, **kwargs)


@contextlib.contextmanager
def forced_method(method):
    """Make fastconv's filters use ``method`` ('direct' or 'fft'); yields the spy.

    Rank-1 kernels (every 1-D kernel among them) would otherwise take the
    separable passes, tested in test_separable.py; here the N-D path is forced.
    """
    spy = EngineSpy()
    with mock.patch.object(fastconv._filter, "choose", lambda padded, kernel: method), \
            mock.patch.object(fastconv._engine, "conv_forward", spy), \
            mock.patch.object(fastconv._ndfilters, "separable_correlate",
                              lambda *args, **kwargs: None):
        yield spy


@contextlib.contextmanager
def spying():
    spy = EngineSpy()
    with mock.patch.object(fastconv._engine, "conv_forward", spy):
        yield spy


@pytest.fixture(params=METHODS)
def method(request):
    """Run the test once with the direct kernel and once with FFT, both forced."""
    with forced_method(request.param) as spy:
        yield request.param
    assert spy.algorithms, "fastconv's filter never reached the engine"
    assert set(spy.algorithms) == {request.param}, \
        f"forced {request.param!r} but the engine ran {set(spy.algorithms)}"


@pytest.fixture
def rng(request):
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


# --------------------------------------------------------------------------- modes

@pytest.mark.parametrize("nd", (1, 2, 3))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("func", FUNCS)
def test_every_mode_matches_scipy_with_odd_and_even_kernels(func, mode, nd, method, rng):
    ours, scipys = both(func)
    x = random_data(rng, SHAPES[nd], np.float64)
    for kernel in (ODD_KERNELS[nd], EVEN_KERNELS[nd]):
        w = random_data(rng, kernel, np.float64)
        expected = scipys(x, w, mode=mode, cval=CVAL)
        assert_matches(ours(x, w, mode=mode, cval=CVAL), expected, x, w, CVAL)


@pytest.mark.parametrize("mode", ("constant", "grid-constant"))
@pytest.mark.parametrize("func", FUNCS)
def test_constant_modes_pad_with_cval(func, mode, rng):
    ours, scipys = both(func)
    x = random_data(rng, (6, 5), np.float64)
    w = random_data(rng, (3, 3), np.float64)
    with_cval = ours(x, w, mode=mode, cval=-3.5)
    assert_matches(with_cval, scipys(x, w, mode=mode, cval=-3.5), x, w, 3.5)
    # the border really depends on cval
    assert not np.allclose(with_cval[0], ours(x, w, mode=mode, cval=0.0)[0])


@pytest.mark.parametrize("func", FUNCS)
def test_default_mode_is_reflect_like_scipy(func, rng):
    ours, scipys = both(func)
    x = random_data(rng, (8, 5), np.float64)
    w = random_data(rng, (3, 4), np.float64)
    assert_matches(ours(x, w), scipys(x, w), x, w)
    assert_matches(ours(x, w), ours(x, w, mode="reflect"), x, w)


# --------------------------------------------------------------------------- kernels > data

@pytest.mark.parametrize("shapes, origin", [(((1,), (5,)), 0), (((2,), (7,)), -1),
                                            (((3,), (8,)), 0), (((4,), (13,)), -1),
                                            (((1, 1), (3, 3)), 0), (((3, 4), (7, 9)), -1),
                                            (((2, 3, 2), (5, 4, 6)), -1)],
                         ids=lambda s: f"{s[0]}-{s[1]}" if isinstance(s, tuple) else f"o{s}")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("func", FUNCS)
def test_kernel_larger_than_input_matches_scipy(func, mode, shapes, origin, method, rng):
    ours, scipys = both(func)
    x = random_data(rng, shapes[0], np.float64)
    w = random_data(rng, shapes[1], np.float64)
    expected = scipys(x, w, mode=mode, cval=CVAL, origin=origin)
    assert_matches(ours(x, w, mode=mode, cval=CVAL, origin=origin), expected, x, w, CVAL)


# --------------------------------------------------------------------------- origins

def allowed_origins(k):
    """SciPy's rule: -(k // 2) <= origin <= (k - 1) // 2."""
    return range(-(k // 2), (k - 1) // 2 + 1)


@pytest.mark.parametrize("k", (1, 2, 3, 4, 5, 6))
@pytest.mark.parametrize("mode", ("reflect", "constant", "wrap"))
@pytest.mark.parametrize("func", FUNCS)
def test_every_allowed_scalar_origin_matches_scipy(func, mode, k, method, rng):
    ours, scipys = both(func)
    x = random_data(rng, (10,), np.float64)
    w = random_data(rng, (k,), np.float64)
    for origin in allowed_origins(k):
        expected = scipys(x, w, mode=mode, cval=CVAL, origin=origin)
        assert_matches(ours(x, w, mode=mode, cval=CVAL, origin=origin), expected, x, w, CVAL)


@pytest.mark.parametrize("func", FUNCS)
def test_scalar_origin_applies_to_every_axis(func, method, rng):
    ours, scipys = both(func)
    x = random_data(rng, (6, 7, 5), np.float64)
    w = random_data(rng, (3, 4, 2), np.float64)
    for origin in (-1, 0):
        assert_matches(ours(x, w, origin=origin, mode="nearest"),
                       scipys(x, w, origin=origin, mode="nearest"), x, w)


@pytest.mark.parametrize("kernel", [(3, 4), (2, 5), (4, 1)])
@pytest.mark.parametrize("func", FUNCS)
def test_every_allowed_per_axis_origin_matches_scipy_2d(func, kernel, method, rng):
    ours, scipys = both(func)
    x = random_data(rng, (7, 8), np.float64)
    w = random_data(rng, kernel, np.float64)
    origins = list(itertools.product(*(allowed_origins(k) for k in kernel)))
    for i, origin in enumerate(origins):
        as_type = (tuple, list, np.array)[i % 3]
        expected = scipys(x, w, mode="mirror", origin=as_type(origin))
        assert_matches(ours(x, w, mode="mirror", origin=as_type(origin)), expected, x, w)


@pytest.mark.parametrize("origin", [(1, -1, 0), (-1, 0, 1), (0, -2, 1)])
@pytest.mark.parametrize("func", FUNCS)
def test_per_axis_origin_matches_scipy_3d(func, origin, method, rng):
    ours, scipys = both(func)
    x = random_data(rng, (5, 6, 4), np.float64)
    w = random_data(rng, (3, 4, 3), np.float64)
    expected = scipys(x, w, mode="wrap", origin=origin)
    assert_matches(ours(x, w, mode="wrap", origin=origin), expected, x, w)


@pytest.mark.parametrize("k, origin", [(1, 1), (1, -1), (2, 1), (2, -2), (3, 2), (3, -2),
                                       (4, 2), (4, -3), (5, 3), (5, -3)])
@pytest.mark.parametrize("func", FUNCS)
def test_out_of_range_origin_raises_value_error_like_scipy(func, k, origin):
    ours, scipys = both(func)
    x = np.arange(10.0)
    w = np.ones(k)
    with pytest.raises(ValueError, match="[Ii]nvalid origin"):
        scipys(x, w, origin=origin)
    with pytest.raises(ValueError, match="invalid origin"):
        ours(x, w, origin=origin)


@pytest.mark.parametrize("func", FUNCS)
def test_out_of_range_origin_on_one_axis_raises(func):
    ours, _ = both(func)
    x = np.zeros((6, 6))
    with pytest.raises(ValueError, match="invalid origin"):
        ours(x, np.ones((3, 2)), origin=(1, 1))
    with pytest.raises(ValueError, match="invalid origin"):
        ours(x, np.ones((3, 2)), origin=(-2, 0))


@pytest.mark.parametrize("func", FUNCS)
def test_origin_sequence_of_wrong_length_raises(func):
    ours, _ = both(func)
    with pytest.raises(ValueError, match="origin"):
        ours(np.zeros((5, 5)), np.ones((3, 3)), origin=(0, 0, 0))


# --------------------------------------------------------------------------- dtypes

@pytest.mark.parametrize("dtype", REAL_INT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("func", FUNCS)
def test_integer_input_gives_integer_output_truncated_like_scipy(func, dtype, rng):
    """Direct path: SciPy truncates the exact float64 sum toward zero."""
    ours, scipys = both(func)
    signed = np.dtype(dtype).kind == "i"
    x = random_data(rng, (6, 7), dtype)
    w = dyadic_weights(rng, (3, 2), signed=signed)
    with forced_method("direct"):
        for mode in MODES:
            result = ours(x, w, mode=mode, cval=2.0)
            expected = scipys(x, w, mode=mode, cval=2.0)
            assert result.dtype == np.dtype(dtype)
            assert_matches(result, expected, x, w)


def test_negative_results_truncate_toward_zero_not_floor():
    x = np.array([3, -5, 7, 2, -1, -8], np.int16)
    w = np.array([0.25, 0.5, 0.125])
    exact = sndi.correlate(x.astype(np.float64), w, mode="constant")
    result = fndi.correlate(x, w, mode="constant")
    np.testing.assert_array_equal(result, np.trunc(exact).astype(np.int16))
    np.testing.assert_array_equal(result, sndi.correlate(x, w, mode="constant"))
    assert (exact < 0).any() and (exact != np.trunc(exact)).any()


@pytest.mark.parametrize("dtype", REAL_INT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("func", FUNCS)
def test_integer_output_through_fft_equals_scipy(func, dtype, rng):
    """The FFT path must not turn an exact integer sum such as 15 into 14.9999 -> 14.

    SciPy sums directly, so integer data with integer (or dyadic) weights gives an
    exactly representable result that it truncates without ambiguity.
    """
    ours, scipys = both(func)
    x = random_data(rng, (20, 20), dtype)
    w = np.ones((5, 5)) if np.dtype(dtype).kind == "u" else dyadic_weights(rng, (5, 5))
    output = np.int32 if np.dtype(dtype).itemsize < 4 else None
    with forced_method("fft") as spy:
        result = ours(x, w, output=output)
    assert spy.algorithms == ["fft"]
    assert_matches(result, scipys(x, w, output=output), x, w)


@pytest.mark.parametrize("separable", (True, False), ids=("separable", "n-d"))
def test_integer_output_with_large_box_kernel_matches_scipy_under_auto(separable, rng):
    """A uint8 image summed over a 31 x 31 box into int32, method left to fastconv:
    the auto choice (two separable passes for this rank-1 box; FFT on the N-D
    path) must still give SciPy's exact integers."""
    x = rng.integers(0, 10, size=(100, 100)).astype(np.uint8)
    w = np.ones((31, 31))
    off = mock.patch.object(fastconv._ndfilters, "separable_correlate",
                            lambda *args, **kwargs: None)
    with spying() as spy, (contextlib.nullcontext() if separable else off):
        result = fndi.correlate(x, w, output=np.int32, mode="nearest")
    if separable:
        assert spy.algorithms == []
    else:
        assert spy.algorithms and spy.algorithms[0] in fastconv.ALGORITHMS
    np.testing.assert_array_equal(result, sndi.correlate(x, w, output=np.int32, mode="nearest"))


@pytest.mark.parametrize("dtype", ALL_INPUT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("wdtype", (np.float32, np.float64), ids=dtype_id)
@pytest.mark.parametrize("func", FUNCS)
def test_default_output_dtype_and_values_match_scipy(func, dtype, wdtype, method, rng):
    ours, scipys = both(func)
    x = random_data(rng, (5, 6), dtype)
    if np.dtype(dtype).kind in "iu":
        w = dyadic_weights(rng, (3, 2), signed=np.dtype(dtype).kind == "i").astype(wdtype)
    else:
        w = random_data(rng, (3, 2), wdtype)
    expected = scipys(x, w)
    result = ours(x, w)
    assert result.dtype == expected.dtype
    if result.dtype.kind in "iu" and method == "fft":
        # FFT rounding may straddle an integer; the exact-integer contract under
        # FFT has its own test above.  Here: within one unit.
        np.testing.assert_allclose(result.astype(float), expected.astype(float), atol=1)
    else:
        assert_matches(result, expected, x, w)


@pytest.mark.parametrize("dtype", ALL_INPUT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("wdtype", COMPLEX_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("func", FUNCS)
def test_complex_weights_give_scipys_complex_output(func, dtype, wdtype, method, rng):
    """Real input with complex weights gives a complex result (complex64 for
    inputs up to 16-bit ints / float32, as SciPy); correlate conjugates the weights."""
    ours, scipys = both(func)
    x = random_data(rng, (6, 5), dtype)
    w = random_data(rng, (3, 4), wdtype)
    expected = scipys(x, w, mode="constant", cval=0.5)
    result = ours(x, w, mode="constant", cval=0.5)
    assert result.dtype.kind == "c"
    assert_matches(result, expected, x, w, 0.5)


def test_correlate_conjugates_complex_weights_and_convolve_does_not():
    x = np.array([0.0, 1.0, 0.0])
    w = np.array([1j, 2 + 1j, 3j])
    assert fndi.correlate(x, w, mode="constant")[1] == np.conj(w[1])
    assert fndi.convolve(x, w, mode="constant")[1] == w[1]


@pytest.mark.parametrize("dtype", COMPLEX_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("func", FUNCS)
def test_complex_input_every_mode_matches_scipy(func, mode, dtype, method, rng):
    ours, scipys = both(func)
    x = random_data(rng, (5, 4, 3), dtype)
    w = random_data(rng, (2, 3, 2), dtype)
    assert_matches(ours(x, w, mode=mode, cval=CVAL), scipys(x, w, mode=mode, cval=CVAL),
                   x, w, CVAL)


# --------------------------------------------------------------------------- output=

@pytest.mark.parametrize("output", [np.float64, np.float32, np.int32, np.int16, "f4",
                                    np.dtype("float64"), "complex128"],
                         ids=lambda o: str(np.dtype(o)))
@pytest.mark.parametrize("func", FUNCS)
def test_output_given_as_dtype(func, output, method, rng):
    ours, scipys = both(func)
    x = random_data(rng, (6, 7), np.float32) * 10
    w = dyadic_weights(rng, (3, 3))
    if np.dtype(output).kind == "c":
        w = w + 0.5j
    result = ours(x, w, output=output)
    expected = scipys(x, w, output=output)
    assert result.dtype == np.dtype(output) == expected.dtype
    if result.dtype.kind in "iu":
        np.testing.assert_allclose(result, expected, atol=1)    # float32 data near integers
    else:
        assert_matches(result, expected, x, w)


@pytest.mark.parametrize("out_dtype", (np.float64, np.float32, np.complex128, np.int32),
                         ids=dtype_id)
@pytest.mark.parametrize("func", FUNCS)
def test_output_given_as_array_is_filled_and_returned(func, out_dtype, method, rng):
    ours, scipys = both(func)
    x = random_data(rng, (5, 6, 4), np.int16)
    w = dyadic_weights(rng, (3, 2, 3))
    out = np.full(x.shape, 99, out_dtype)
    result = ours(x, w, output=out, mode="mirror")
    assert result is out
    # SciPy refuses a complex output for real data and weights; fastconv fills it.
    scipy_dtype = np.float64 if out.dtype.kind == "c" else out_dtype
    expected = scipys(x, w, output=np.zeros(x.shape, scipy_dtype), mode="mirror").astype(out_dtype)
    if out.dtype.kind in "iu" and method == "fft":
        np.testing.assert_allclose(out, expected, atol=1)
    else:
        assert_matches(out, expected, x, w)


@pytest.mark.parametrize("func", FUNCS)
def test_output_array_may_be_a_strided_view(func, method, rng):
    ours, scipys = both(func)
    x = random_data(rng, (6, 5), np.float64)
    w = random_data(rng, (3, 2), np.float64)
    base = np.zeros((6, 10))
    view = base[:, ::2]
    assert ours(x, w, output=view) is view
    assert_matches(view, scipys(x, w), x, w)
    assert not base[:, 1::2].any(), "wrote outside the output view"


@pytest.mark.parametrize("func", FUNCS)
def test_output_may_be_the_input_array(func, method, rng):
    ours, scipys = both(func)
    x = random_data(rng, (7, 6), np.float64)
    w = random_data(rng, (3, 3), np.float64)
    expected = scipys(x, w)
    inplace = x.copy()
    assert ours(inplace, w, output=inplace) is inplace
    assert_matches(inplace, expected, x, w)


@pytest.mark.parametrize("func", FUNCS)
def test_complex_weights_into_real_output_raise_runtime_error_like_scipy(func):
    ours, scipys = both(func)
    x = np.ones((5, 5))
    w = np.ones((3, 3)) * 1j
    with pytest.raises(RuntimeError, match="complex"):
        scipys(x, w, output=np.empty((5, 5)))
    with pytest.raises(RuntimeError, match="complex"):
        ours(x, w, output=np.empty((5, 5)))
    with pytest.raises(RuntimeError, match="complex"):
        ours(x, w, output="float64")
    # a dtype (not a string) is promoted with SciPy's warning
    with pytest.warns(UserWarning, match="promoting specified output dtype to complex"):
        expected = scipys(x, w, output=np.float64)
    with pytest.warns(UserWarning, match="promoting specified output dtype to complex"):
        actual = ours(x, w, output=np.float64)
    assert actual.dtype == expected.dtype == np.complex128
    np.testing.assert_allclose(actual, expected, rtol=1e-12)


@pytest.mark.parametrize("func", FUNCS)
def test_output_array_of_wrong_shape_raises(func):
    ours, _ = both(func)
    with pytest.raises((ValueError, RuntimeError), match="shape"):
        ours(np.ones((5, 5)), np.ones((3, 3)), output=np.empty((5, 4)))


@pytest.mark.parametrize("func", FUNCS)
def test_output_that_is_neither_array_nor_dtype_raises_type_error(func):
    ours, _ = both(func)
    with pytest.raises(TypeError, match="output"):
        ours(np.ones((5, 5)), np.ones((3, 3)), output=object())


# --------------------------------------------------------------------------- axes

AXES_CASES = [((0,), {}), ((1,), {"origin": -1}), ((2,), {"mode": "constant", "cval": CVAL}),
              ((-1,), {"mode": "wrap"}), ((0, 1), {"origin": (-1, 0)}),
              ((0, 2), {"mode": "constant", "cval": CVAL}), ((1, 2), {"mode": "mirror"}),
              ((-2, -1), {"origin": (1, -1)}), ((0, 1, 2), {"origin": (-1, 0, 1)})]


@pytest.mark.parametrize("axes, kwargs", AXES_CASES, ids=[str(a) for a, _ in AXES_CASES])
@pytest.mark.parametrize("func", FUNCS)
def test_axes_subset_matches_scipy(func, axes, kwargs, method, rng):
    ours, scipys = both(func)
    x = random_data(rng, (3, 4, 3), np.float64)
    w = random_data(rng, (3, 2, 4)[:len(axes)], np.float64)
    expected = scipys(x, w, axes=axes, **kwargs)
    assert_matches(ours(x, w, axes=axes, **kwargs), expected, x, w, CVAL)


@pytest.mark.parametrize("func", FUNCS)
def test_axes_on_4d_input_filters_three_axes_and_loops_over_the_fourth(func, method, rng):
    ours, scipys = both(func)
    x = random_data(rng, (2, 4, 3, 2), np.float64)
    w = random_data(rng, (2, 3, 2), np.float64)
    expected = scipys(x, w, axes=(1, 2, 3), mode="nearest")
    assert_matches(ours(x, w, axes=(1, 2, 3), mode="nearest"), expected, x, w)
    w2 = random_data(rng, (3, 3), np.float64)
    assert_matches(ours(x, w2, axes=(0, 3)), scipys(x, w2, axes=(0, 3)), x, w2)


@pytest.mark.parametrize("func", FUNCS)
def test_axes_given_out_of_order_pair_weights_and_origin_with_axes_entries(func, rng):
    """Weights axis i and origin[i] belong to axes[i] (fastconv's documented rule).

    SciPy's own handling of unsorted ``axes`` is inconsistent (origin follows the
    order of ``axes``, the weights follow sorted order; scipy/scipy#22576), so this
    checks fastconv against itself: reversing ``axes`` together with the weights'
    axes and the origins must not change the result.
    """
    ours, _ = both(func)
    x = random_data(rng, (5, 6, 4), np.float64)
    w = random_data(rng, (3, 2), np.float64)
    forward = ours(x, w, axes=(0, 2), origin=(1, -1))
    backward = ours(x, w.T, axes=(2, 0), origin=(-1, 1))
    assert_matches(forward, backward, x, w)


@pytest.mark.parametrize("func", FUNCS)
def test_repeated_axes_raise(func):
    ours, _ = both(func)
    with pytest.raises(ValueError, match="axes"):
        ours(np.ones((4, 4)), np.ones((3, 3)), axes=(1, 1))


# --------------------------------------------------------------------------- algorithms

def test_large_kernel_takes_the_fft_path_and_matches_scipy(rng):
    """A 31 x 31 kernel on 100 x 100 floats: left to itself fastconv uses FFT."""
    x = random_data(rng, (100, 100), np.float64)
    w = random_data(rng, (31, 31), np.float64)
    with spying() as spy:
        result = fndi.correlate(x, w, mode="reflect")
    assert spy.algorithms == ["fft"]
    assert_matches(result, sndi.correlate(x, w, mode="reflect"), x, w)


def test_small_kernel_takes_the_direct_path_and_matches_scipy(rng):
    x = random_data(rng, (20, 20, 20), np.float32)
    w = random_data(rng, (3, 3, 3), np.float32)
    with spying() as spy:
        result = fndi.convolve(x, w, mode="wrap")
    assert spy.algorithms == ["direct"]
    assert_matches(result, sndi.convolve(x, w, mode="wrap"), x, w)


@pytest.mark.parametrize("dtype", (np.float32, np.float64, np.complex64), ids=dtype_id)
@pytest.mark.parametrize("func", FUNCS)
def test_direct_and_fft_agree_on_3d_volumes(func, dtype, rng):
    ours, scipys = both(func)
    x = random_data(rng, (12, 10, 11), dtype)
    w = random_data(rng, (5, 4, 3), dtype)
    results = {}
    for method in METHODS:
        with forced_method(method):
            results[method] = ours(x, w, mode="mirror", origin=(1, -1, 0))
    expected = scipys(x, w, mode="mirror", origin=(1, -1, 0))
    for method in METHODS:
        assert_matches(results[method], expected, x, w)


@pytest.mark.parametrize("value", (np.nan, np.inf), ids=("nan", "inf"))
@pytest.mark.parametrize("func", FUNCS)
def test_nan_and_inf_reach_only_their_neighbourhood_like_scipy(func, value, method):
    """Masked microscopy / CT volumes carry NaNs: one bad sample must spoil only the
    outputs whose window covers it, as in SciPy, whichever algorithm runs."""
    ours, scipys = both(func)
    x = np.ones((12, 11))
    x[0, 0] = value
    w = np.ones((3, 3))
    expected = scipys(x, w, mode="constant")
    with np.errstate(invalid="ignore"):
        result = ours(x, w, mode="constant")
    np.testing.assert_array_equal(np.isfinite(result), np.isfinite(expected))
    np.testing.assert_allclose(result[np.isfinite(expected)], expected[np.isfinite(expected)])


def test_nan_in_a_volume_filtered_with_a_large_kernel_matches_scipy(rng):
    """Left to auto (FFT for a 31 x 31 kernel on 100 x 100), as a user would call it."""
    x = random_data(rng, (100, 100), np.float64)
    x[0, 0] = np.nan
    w = random_data(rng, (31, 31), np.float64)
    expected = sndi.correlate(x, w, mode="reflect")
    with np.errstate(invalid="ignore"):
        result = fndi.correlate(x, w, mode="reflect")
    np.testing.assert_array_equal(np.isnan(result), np.isnan(expected))


# --------------------------------------------------------------------------- inputs

@pytest.mark.parametrize("func", FUNCS)
def test_inputs_are_never_modified(func, method, rng):
    ours, _ = both(func)
    for dtype in (np.uint8, np.float32, np.complex128):
        x = random_data(rng, (6, 5, 4), dtype)
        w = random_data(rng, (3, 2, 3), np.complex128 if dtype == np.complex128 else np.float64)
        if dtype == np.uint8:
            # Weights on a 1/4 grid keep the FFT path usable for an integer output
            # (otherwise fastconv rightly falls back to direct sums).
            w = np.round(w * 4) / 4
        x_copy, w_copy = x.copy(), w.copy()
        ours(x, w, mode="constant", cval=CVAL, origin=(1, 0, -1))
        ours(x, w, output=np.complex128 if np.iscomplexobj(w) else np.float64)
        np.testing.assert_array_equal(x, x_copy)
        np.testing.assert_array_equal(w, w_copy)


@pytest.mark.parametrize("func", FUNCS)
def test_non_contiguous_and_list_inputs_match_scipy(func, method, rng):
    ours, scipys = both(func)
    base = random_data(rng, (10, 12), np.float64)
    x = base[::2, ::-3]
    w = np.asfortranarray(random_data(rng, (3, 4), np.float64))
    assert_matches(ours(x, w), scipys(x, w), x, w)
    assert_matches(ours(x.tolist(), w.tolist()), scipys(x, w), x, w)


@pytest.mark.parametrize("func", FUNCS)
def test_unit_kernel_is_the_identity(func, method, rng):
    ours, _ = both(func)
    x = random_data(rng, (4, 5, 6), np.float64)
    np.testing.assert_allclose(ours(x, np.ones((1, 1, 1))), x, atol=1e-12)


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("mode", ("bogus", "zeros", "circular", "REFLECT", ""))
@pytest.mark.parametrize("func", FUNCS)
def test_unknown_mode_raises(func, mode):
    ours, _ = both(func)
    with pytest.raises(ValueError, match="mode"):
        ours(np.ones((4, 4)), np.ones((3, 3)), mode=mode)


@pytest.mark.parametrize("wshape", [(3,), (3, 3, 3), (1, 1, 1, 1)], ids=str)
@pytest.mark.parametrize("func", FUNCS)
def test_weights_with_wrong_ndim_raise_runtime_error_like_scipy(func, wshape):
    ours, scipys = both(func)
    x = np.ones((5, 5))
    w = np.ones(wshape)
    with pytest.raises(RuntimeError, match="weights"):
        scipys(x, w)
    with pytest.raises(RuntimeError, match="weights"):
        ours(x, w)


@pytest.mark.parametrize("func", FUNCS)
def test_weights_ndim_must_match_number_of_axes(func):
    ours, _ = both(func)
    with pytest.raises(RuntimeError, match="weights"):
        ours(np.ones((4, 5, 6)), np.ones((3, 3)), axes=(0,))


@pytest.mark.parametrize("func", FUNCS)
def test_empty_weights_raise(func):
    ours, _ = both(func)
    with pytest.raises(RuntimeError, match="weights must not be empty"):
        ours(np.ones((4, 4)), np.ones((0, 3)))


@pytest.mark.parametrize("func", FUNCS)
def test_four_dimensional_input_without_axes_raises(func):
    ours, _ = both(func)
    with pytest.raises(ValueError, match="1-D, 2-D or 3-D"):
        ours(np.ones((2, 3, 4, 5)), np.ones((1, 1, 1, 1)))


@pytest.mark.parametrize("func", FUNCS)
def test_non_numeric_input_raises_type_error(func):
    ours, _ = both(func)
    with pytest.raises(TypeError, match="input"):
        ours(np.array(["a", "b", "c"]), np.ones(3))


# --------------------------------------------------------------------------- hypothesis

@st.composite
def filter_problems(draw):
    nd = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 7), min_size=nd, max_size=nd)))
    kernel = tuple(draw(st.lists(st.integers(1, 6), min_size=nd, max_size=nd)))
    per_axis = draw(st.booleans())
    if per_axis:
        origin = tuple(draw(st.integers(-(k // 2), (k - 1) // 2)) for k in kernel)
    else:
        smallest = min(kernel)
        origin = draw(st.integers(-(smallest // 2), (smallest - 1) // 2))
    return {
        "func": draw(st.sampled_from(FUNCS)),
        "mode": draw(st.sampled_from(MODES)),
        "cval": draw(st.sampled_from([0.0, CVAL, -2.5])),
        "shape": shape,
        "kernel": kernel,
        "origin": origin,
        "dtype": draw(st.sampled_from([np.float64, np.float32, np.complex128])),
        "wdtype": draw(st.sampled_from([np.float64, np.complex128])),
        "method": draw(st.sampled_from(METHODS)),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=filter_problems())
def test_random_filters_match_scipy(problem):
    rng = np.random.default_rng(problem["seed"])
    ours, scipys = both(problem["func"])
    x = random_data(rng, problem["shape"], problem["dtype"])
    w = random_data(rng, problem["kernel"], problem["wdtype"])
    kwargs = {"mode": problem["mode"], "cval": problem["cval"], "origin": problem["origin"]}
    expected = scipys(x, w, **kwargs)
    x_copy, w_copy = x.copy(), w.copy()
    with forced_method(problem["method"]) as spy:
        result = ours(x, w, **kwargs)
    assert set(spy.algorithms) == {problem["method"]}
    assert_matches(result, expected, x, w, problem["cval"])
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(w, w_copy)
