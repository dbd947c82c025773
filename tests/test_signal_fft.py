"""``fastconv.signal.fftconvolve`` / ``oaconvolve`` against ``scipy.signal`` and
a NumPy float64 oracle: ``axes`` (negative, unsorted, broadcast axes, axes of
length 1), every mode, dtypes (float32 stays float32 as in SciPy), 1-3 dims,
overlap-add, ``workers=``, the numpy.fft fallback, and SciPy's errors.
"""
import itertools

import numpy as np
import pytest
import scipy.signal as ssig
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
import fastconv.signal as fsig
from fastconv import _fftconv

from conftest import random_array

MODES = ("full", "same", "valid")
FREQ_FUNCS = ("fftconvolve", "oaconvolve")
#: dtype -> (SciPy's result dtype for two such inputs, relative tolerance)
DTYPES = {
    np.float32: (np.float32, 2e-6),
    np.float64: (np.float64, 1e-12),
    np.complex64: (np.complex64, 2e-6),
    np.complex128: (np.complex128, 1e-12),
    np.int16: (np.float64, 1e-12),
    np.uint8: (np.float64, 1e-12),
    np.uint16: (np.float64, 1e-12),
}


def reference(a, b, mode="full", axes=None):
    """The obviously-correct oracle, in float64 / complex128: one shifted,
    scaled copy of ``a`` per element of ``b`` (over the convolved axes), SciPy's
    broadcasting over the others, then SciPy's crop for ``mode``."""
    a = np.asarray(a)
    b = np.asarray(b)
    work = np.complex128 if np.iscomplexobj(a) or np.iscomplexobj(b) else np.float64
    a, b = a.astype(work), b.astype(work)
    nd = a.ndim
    axes = list(range(nd)) if axes is None else [x % nd for x in np.atleast_1d(axes)]
    axes = [x for x in axes if a.shape[x] != 1 and b.shape[x] != 1]
    if mode == "valid" and not all(a.shape[x] >= b.shape[x] for x in axes):
        a, b = b, a
    s1 = a.shape
    full = [a.shape[x] + b.shape[x] - 1 if x in axes else max(a.shape[x], b.shape[x])
            for x in range(nd)]
    out = np.zeros(full, work)
    for j in itertools.product(*[range(b.shape[x]) if x in axes else [None]
                                 for x in range(nd)]):
        bslice = tuple(slice(None) if x not in axes else slice(j[x], j[x] + 1)
                       for x in range(nd))
        oslice = tuple(slice(None) if x not in axes else slice(j[x], j[x] + a.shape[x])
                       for x in range(nd))
        out[oslice] += a * b[bslice]
    if mode == "full":
        return out
    if mode == "same":
        want = s1
    else:
        want = [s1[x] - b.shape[x] + 1 if x in axes else full[x] for x in range(nd)]
    start = [(f - w) // 2 for f, w in zip(full, want)]
    return out[tuple(slice(s, s + w) for s, w in zip(start, want))]


def assert_close(actual, expected, rtol, what=""):
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(1.0, float(np.max(np.abs(expected), initial=0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale * 10, err_msg=what)


# --------------------------------------------------------------------------- modes, dtypes, dims

SHAPES = {1: [((17,), (4,)), ((5,), (9,)), ((12,), (12,))],
          2: [((13, 9), (3, 4)), ((4, 5), (6, 7)), ((9, 6), (2, 6))],
          3: [((9, 8, 7), (3, 2, 4)), ((3, 4, 2), (5, 4, 3)), ((6, 1, 5), (2, 3, 2))]}


@pytest.mark.parametrize("dtype", list(DTYPES), ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("nd", (1, 2, 3))
@pytest.mark.parametrize("func", FREQ_FUNCS)
def test_matches_scipy_and_the_float64_oracle(func, nd, mode, dtype, rng):
    result_dtype, rtol = DTYPES[dtype]
    for s1, s2 in SHAPES[nd]:
        a, b = random_array(rng, s1, dtype), random_array(rng, s2, dtype)
        # axes of length 1 are not convolved (SciPy), so (6, 1, 5) 'valid' (2, 3, 2) is fine
        convolved = [(p, q) for p, q in zip(s1, s2) if p > 1 and q > 1]
        if mode == "valid" and not (all(p >= q for p, q in convolved)
                                    or all(p <= q for p, q in convolved)):
            with pytest.raises(ValueError, match="For 'valid' mode"):
                getattr(fsig, func)(a, b, mode)
            continue
        result = getattr(fsig, func)(a, b, mode)
        expected = getattr(ssig, func)(a, b, mode)
        assert result.dtype == expected.dtype == result_dtype, (result.dtype, expected.dtype)
        assert result.flags.c_contiguous
        assert_close(result, expected, rtol, f"{func} vs SciPy {s1} {s2}")
        assert_close(result, reference(a, b, mode), rtol, f"{func} vs oracle {s1} {s2}")


@pytest.mark.parametrize("dtypes,expected", [((np.float32, np.float64), np.float64),
                                             ((np.float32, np.complex64), np.complex64),
                                             ((np.float16, np.float16), np.float32),
                                             ((np.int8, np.float32), np.float64),
                                             ((np.bool_, np.bool_), np.float64),
                                             ((np.float32, np.complex128), np.complex128)],
                         ids=str)
def test_mixed_dtypes_give_scipys_dtype(dtypes, expected, rng):
    a = random_array(rng, (7, 6), dtypes[0])
    b = random_array(rng, (3, 2), dtypes[1])
    for mode in MODES:
        result = fsig.fftconvolve(a, b, mode)
        scipys = ssig.fftconvolve(a, b, mode)
        assert result.dtype == scipys.dtype == expected
        assert_close(result, reference(a, b, mode), 2e-6 if expected in (np.float32, np.complex64)
                     or np.float32 in dtypes or np.float16 in dtypes else 1e-12)


def test_float32_is_computed_in_single_precision(rng):
    """Same as SciPy: float32 in, float32 out, at float32's accuracy."""
    a = random_array(rng, (40, 30, 20), np.float32)
    b = random_array(rng, (5, 4, 3), np.float32)
    result = fsig.fftconvolve(a, b, "same")
    assert result.dtype == np.float32
    error = np.abs(result - reference(a, b, "same")).max()
    assert 0 < error < 1e-5 * np.abs(result).max()


# --------------------------------------------------------------------------- axes

AXES_CASES = [
    ((2, 9, 3), (2, 4, 3), [1]),
    ((2, 9, 3), (1, 4, 3), -2),
    ((4, 9, 1), (1, 3, 5), (1,)),            # broadcast on axes 0 and 2
    ((5, 7, 6), (3, 2, 6), [1, 0]),          # unsorted
    ((5, 7, 6), (3, 2, 6), [-1, -3]),
    ((1, 7, 6), (3, 2, 6), [0, 1]),          # a convolved axis of length 1 is dropped
    ((6, 5, 2, 3), (2, 5, 1, 3), [0, 2]),    # 4-D, broadcast on axis 2
    ((3, 1, 8), (3, 4, 2), [2]),             # in1 of length 1 along a broadcast axis
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", AXES_CASES, ids=str)
@pytest.mark.parametrize("func", FREQ_FUNCS)
def test_axes_match_scipy_and_the_oracle(func, case, mode, rng):
    s1, s2, axes = case
    for dtype in (np.float64, np.complex64):
        a, b = random_array(rng, s1, dtype), random_array(rng, s2, dtype)
        try:
            expected = getattr(ssig, func)(a, b, mode, axes=axes)
        except ValueError as exc:
            with pytest.raises(ValueError, match=str(exc).split(":")[0][:40]):
                getattr(fsig, func)(a, b, mode, axes=axes)
            continue
        result = getattr(fsig, func)(a, b, mode, axes=axes)
        assert result.dtype == expected.dtype
        rtol = DTYPES[dtype][1]
        assert_close(result, expected, rtol, f"{case} vs SciPy")
        assert_close(result, reference(a, b, mode, axes), rtol, f"{case} vs oracle")


def test_no_axis_left_is_the_product_in_the_inputs_dtype():
    """As SciPy: every convolved axis of length 1 means no transform at all."""
    a = np.array([[3], [4]], np.int32)
    b = np.array([[5]], np.int32)
    result = fsig.fftconvolve(a, b)
    assert result.dtype == np.int32
    np.testing.assert_array_equal(result, [[15], [20]])


def test_scalars_and_empty_inputs_as_scipy():
    assert fsig.fftconvolve(3.0, 4.0) == 12.0
    assert fsig.oaconvolve(np.array(2), np.array(5)) == 10
    for a, b in (([], []), ([5.0, 6.0], []), ([], [7.0])):
        result = fsig.fftconvolve(a, b)
        assert result.shape == (0,) and result.dtype == ssig.fftconvolve(a, b).dtype


# --------------------------------------------------------------------------- overlap-add

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shapes", [((300,), (7,)), ((120, 40), (5, 3)), ((90, 30, 20), (4, 3, 3)),
                                    ((7,), (200,)), ((50, 60, 8), (3, 60, 2))], ids=str)
def test_overlap_add_matches_the_plain_transform(shapes, mode, rng):
    a, b = random_array(rng, shapes[0], np.float64), random_array(rng, shapes[1], np.float64)
    if mode == "valid" and not all(p >= q for p, q in zip(*shapes)) and \
            not all(p <= q for p, q in zip(*shapes)):
        return
    result = fsig.oaconvolve(a, b, mode)
    assert_close(result, ssig.oaconvolve(a, b, mode), 1e-12)
    assert_close(result, fsig.fftconvolve(a, b, mode), 1e-12)


@pytest.mark.parametrize("block, step", [(0, 16), (0, 17), (1, 9), (2, 5)])
def test_every_blocking_gives_the_same_result(block, step, rng):
    a = random_array(rng, (40, 30, 20), np.complex128)
    b = random_array(rng, (3, 4, 2), np.complex128)
    axes, starts, lengths = [0, 1, 2], [1, 1, 0], [40, 30, 20]      # 'same'
    result = _fftconv.overlap_add(a, b, axes, starts, lengths, 1, block, step)
    assert_close(result, reference(a, b, "same"), 1e-12)


def test_overlap_add_is_chosen_for_a_small_kernel_on_a_large_volume():
    def choice(s1, s2, itemsize=4):
        starts = [(k - 1) // 2 for k in s2]
        return _fftconv.choose_blocking(list(s1), list(s2), starts, list(s1), True, itemsize)
    assert choice((256,) * 3, (5,) * 3) is not None
    assert choice((1_000_000,), (512,)) is not None
    assert choice((128,) * 3, (21,) * 3) is None       # kernel too large for blocks to pay
    assert choice((64, 64), (3, 3)) is None            # small: one transform


def test_result_does_not_depend_on_the_thread_count(rng):
    """The path is chosen from shapes only, and each transform line is
    computed the same way by any thread."""
    a = random_array(rng, (96, 40, 30), np.float32)
    b = random_array(rng, (3, 3, 3), np.float32)
    for func in (fsig.fftconvolve, fsig.oaconvolve):
        one = func(a, b, "same", workers=1)
        np.testing.assert_array_equal(one, func(a, b, "same", workers=2))
        np.testing.assert_array_equal(one, func(a, b, "same", workers=-1))


def test_workers_none_reads_fastconvs_thread_setting(rng, monkeypatch):
    seen = []
    real = _fftconv._call
    monkeypatch.setattr(_fftconv, "_call", lambda *args, **kw: seen.append(args[4]) or
                        real(*args, **kw))
    a, b = random_array(rng, (30, 20), np.float64), random_array(rng, (3, 3), np.float64)
    fsig.fftconvolve(a, b)
    assert set(seen) == {fastconv.get_num_threads()}


def test_numpy_fft_fallback_without_scipy(rng, monkeypatch):
    monkeypatch.setattr(_fftconv, "_sfft", None)
    assert _fftconv.next_fast_len(131, True) == 135
    assert _fftconv.next_fast_len(97, True) == 100
    for dtype in (np.float32, np.complex128):
        a, b = random_array(rng, (20, 11, 9), dtype), random_array(rng, (4, 3, 2), dtype)
        for mode in MODES:
            result = fsig.fftconvolve(a, b, mode)
            assert result.dtype == dtype
            assert_close(result, reference(a, b, mode), DTYPES[dtype][1])


def test_inputs_are_not_modified_and_views_are_read(rng):
    a = random_array(rng, (30, 24), np.float32)[::2, ::-1]
    b = np.asfortranarray(random_array(rng, (3, 5), np.float32))
    a_copy, b_copy = a.copy(), b.copy()
    for func in (fsig.fftconvolve, fsig.oaconvolve):
        result = func(a, b, "same")
        np.testing.assert_array_equal(a, a_copy)
        np.testing.assert_array_equal(b, b_copy)
        assert_close(result, reference(a_copy, b_copy, "same"), 2e-6)


# --------------------------------------------------------------------------- convolve / correlate

def test_convolve_fft_on_nan_input_warns_and_computes_directly():
    x = np.ones(50)
    x[10] = np.nan
    with pytest.warns(RuntimeWarning, match="Use of fft convolution"):
        result = fsig.convolve(x, np.ones(3), mode="same", method="fft")
    assert np.isnan(result[9:12]).all() and np.isfinite(np.delete(result, [9, 10, 11])).all()


@pytest.mark.parametrize("func", ("convolve", "correlate"))
def test_zero_dimensional_inputs_multiply(func):
    expected = 3 * (2 - 1j) if func == "correlate" else 3 * (2 + 1j)
    assert getattr(fsig, func)(3, 2 + 1j) == expected
    assert getattr(fsig, func)(3, 2 + 1j) == getattr(ssig, func)(3, 2 + 1j)


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("func", FREQ_FUNCS)
@pytest.mark.parametrize("axes, message", [
    ([], "when provided, axes cannot be empty"),
    ([[1, 2]], "axes must be a scalar or iterable of integers"),
    ([1.0], "axes must be a scalar or iterable of integers"),
    ([1], "axes exceeds dimensionality of input"),
    ([-2], "axes exceeds dimensionality of input"),
    ([0, 0], "all axes must be unique"),
])
def test_bad_axes_raise_scipys_errors(func, axes, message):
    with pytest.raises(ValueError, match=message):
        getattr(ssig, func)([1.0], [2.0], axes=axes)
    with pytest.raises(ValueError, match=message):
        getattr(fsig, func)([1.0], [2.0], axes=axes)


@pytest.mark.parametrize("func", FREQ_FUNCS)
def test_incompatible_broadcast_axes_raise(func):
    with pytest.raises(ValueError, match=r"incompatible shapes for in1 and in2: \(5, 6, 2, 1\)"):
        getattr(fsig, func)(np.zeros((5, 6, 2, 1)), np.zeros((5, 6, 3, 1)), axes=[0, 1])


@pytest.mark.parametrize("func", FREQ_FUNCS)
def test_bad_mode_dims_and_types_raise(func):
    f = getattr(fsig, func)
    with pytest.raises(ValueError, match="acceptable mode flags are 'valid', 'same', or 'full'; "
                                         "got mode='chips'"):
        f([1.0], [2.0], mode="chips")
    with pytest.raises(ValueError, match="in1 and in2 should have the same dimensionality"):
        f([1.0], [[2.0]])
    with pytest.raises(TypeError, match="in2 has dtype <U1"):
        f([1.0], ["a"])


@pytest.mark.parametrize("workers, error, message", [
    (0, ValueError, "expected workers >= 1"),
    (-10_000, ValueError, "expected workers >= 1"),
    (1.5, TypeError, "expected workers to be None or an int, got 1.5"),
    (True, TypeError, "expected workers to be None or an int, got True"),
])
def test_bad_workers_raise(workers, error, message):
    with pytest.raises(error, match=f"fftconvolve: {message}"):
        fsig.fftconvolve(np.ones((8, 8)), np.ones((3, 3)), workers=workers)


# --------------------------------------------------------------------------- hypothesis

@st.composite
def freq_problems(draw):
    nd = draw(st.integers(1, 3))
    s1 = [draw(st.integers(1, 9)) for _ in range(nd)]
    s2 = [draw(st.integers(1, 9)) for _ in range(nd)]
    axes = draw(st.one_of(st.none(), st.lists(st.integers(-nd, nd - 1), min_size=1,
                                              max_size=nd, unique_by=lambda x: x % nd)))
    convolved = range(nd) if axes is None else [x % nd for x in axes]
    for x in range(nd):          # broadcast-compatible along the axes not convolved
        if x not in convolved and s1[x] != s2[x]:
            if draw(st.booleans()):
                s1[x] = 1
            else:
                s2[x] = 1
    return {"func": draw(st.sampled_from(FREQ_FUNCS)), "s1": tuple(s1), "s2": tuple(s2),
            "axes": axes, "mode": draw(st.sampled_from(MODES)),
            "dtype": draw(st.sampled_from((np.float32, np.float64, np.complex128, np.int16))),
            "seed": draw(st.integers(0, 2**32 - 1))}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=freq_problems())
def test_random_problems_match_scipy(problem):
    rng = np.random.default_rng(problem["seed"])
    a = random_array(rng, problem["s1"], problem["dtype"])
    b = random_array(rng, problem["s2"], problem["dtype"])
    args = (a, b, problem["mode"])
    kwargs = {"axes": problem["axes"]}
    try:
        expected = getattr(ssig, problem["func"])(*args, **kwargs)
    except ValueError as exc:
        with pytest.raises(ValueError, match=str(exc).split(":")[0][:40]):
            getattr(fsig, problem["func"])(*args, **kwargs)
        return
    result = getattr(fsig, problem["func"])(*args, **kwargs)
    assert result.shape == expected.shape and result.dtype == expected.dtype
    assert_close(result, expected, DTYPES[problem["dtype"]][1])
