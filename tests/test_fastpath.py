"""The per-call fast path: prepared calls remember shapes and options, never data.

A repeated call reuses what validation and kernel selection worked out for
its signature (``_args.call_signature``); these tests check that it still
reads the data, the thread setting and the forced implementation afresh,
and that values which merely compare equal to a cached option are refused.
"""
import numpy as np
import pytest

import fastconv as fc
from fastconv import _dispatch, functional, grad
from fastconv._fastpath import all_finite, copy_into_padded

from conftest import dispatch_recorded


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    g = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    return x, w, g


@pytest.fixture(autouse=True)
def empty_caches():
    functional._CALLS.clear()
    grad._CALLS.clear()
    yield
    functional._CALLS.clear()
    grad._CALLS.clear()


def test_repeated_calls_give_the_first_calls_bits():
    x, w, g = _data()
    first = (fc.conv2d(x, w, padding=1), fc.grad.conv2d_input(x.shape, w, g, padding=1),
             fc.grad.conv2d_weight(x, w.shape, g, padding=1))
    for _ in range(3):
        again = (fc.conv2d(x, w, padding=1), fc.grad.conv2d_input(x.shape, w, g, padding=1),
                 fc.grad.conv2d_weight(x, w.shape, g, padding=1))
        for a, b in zip(again, first):
            assert np.array_equal(_bits(a), _bits(b))


def test_prepared_call_reads_new_data_each_time():
    x, w, _ = _data()
    y = fc.conv2d(x, w, padding=1)
    x2, w2 = x * 2, w.copy()
    w2[0, 0, 1, 1] = 5.0
    np.testing.assert_allclose(fc.conv2d(x2, w2, padding=1),
                               fc.conv2d(x2.tolist(), w2.tolist(), padding=1), rtol=1e-5, atol=1e-4)
    assert not np.allclose(fc.conv2d(x2, w2, padding=1), y)


def test_non_finite_weight_after_a_cached_finite_call_propagates_as_torch():
    """The weight's finiteness is data: checked on every call, never cached."""
    x, w, _ = _data()
    fc.conv2d(x, w, padding=1)
    w_inf = w.copy()
    w_inf[0, 0, 0, 0] = np.inf
    y = fc.conv2d(x, w_inf, padding=1)
    # the inf tap reads zero padding on the first row and column: 0 * inf = NaN
    assert np.isnan(y[:, 0, 0, :]).all() and np.isnan(y[:, 0, :, 0]).all()
    assert np.isfinite(fc.conv2d(x, w, padding=1)).all()


@pytest.mark.parametrize("value, error", [(True, TypeError), (1.0, TypeError),
                                          ((1, True), TypeError), ([1, 1.0], TypeError)])
def test_equal_comparing_options_are_refused_after_a_valid_call(value, error):
    x, w, _ = _data()
    fc.conv2d(x, w, stride=1)
    fc.conv2d(x, w, stride=(1, 1))
    with pytest.raises(error, match="stride"):
        fc.conv2d(x, w, stride=value)


def test_non_contiguous_and_other_dtypes_share_no_prepared_call():
    x, w, _ = _data()
    expected = fc.conv2d(x, w, padding=1)
    fortran = np.asfortranarray(x)
    assert np.array_equal(fc.conv2d(fortran, w, padding=1), expected)
    y64 = fc.conv2d(x.astype(np.float64), w, padding=1)
    assert y64.dtype == np.float64


def test_thread_setting_is_read_on_every_call(monkeypatch):
    """A prepared call asks for the thread count when it runs, not when it was made."""
    seen = []
    real = _dispatch._costs.threads_for
    monkeypatch.setattr(_dispatch._costs, "MIN_MACS_PER_THREAD", 1)
    monkeypatch.setattr(_dispatch._costs, "threads_for",
                        lambda macs, available: seen.append(real(macs, available)) or seen[-1])
    x, w, _ = _data()
    before = fc.get_num_threads()
    try:
        fc.set_num_threads(1)
        a = fc.conv2d(x, w, padding=1)
        fc.set_num_threads(2)
        b = fc.conv2d(x, w, padding=1)
    finally:
        fc.set_num_threads(before)
    assert seen == [1, 2]
    assert np.array_equal(_bits(a), _bits(b))


def test_forced_implementation_is_part_of_the_signature():
    x, w, _ = _data()
    fc.conv2d(x, w, padding=1)                        # prepared with 'auto'
    with _dispatch.forced("direct"), dispatch_recorded() as runs:
        fc.conv2d(x, w, padding=1)
    ran = [choice.impl.name for _, choice in runs]
    assert ran == ["direct"]


def test_choice_of_a_prepared_call_does_not_depend_on_the_batch():
    x, w, _ = _data()
    with dispatch_recorded() as runs:
        whole = fc.conv2d(x, w, padding=1)
        alone = fc.conv2d(x[1:], w, padding=1)
    ran = [(p, choice.impl.name) for p, choice in runs]
    assert ran[0] == ran[1]
    assert np.array_equal(_bits(alone), _bits(whole[1:]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
def test_all_finite_matches_numpy(dtype):
    a = np.ones((3, 5, 7), dtype)
    assert all_finite(a) and all_finite(a[:, ::2])
    for bad in (np.inf, -np.inf, np.nan):
        b = a.copy()
        b[2, 4, 6] = bad
        assert not all_finite(b)
        assert not all_finite(b[:, ::2])
    if np.dtype(dtype).kind == "c":
        b = a.copy()
        b[0, 0, 0] = complex(1, np.nan)
        assert not all_finite(b)
    assert all_finite(np.ones(4, np.dtype(dtype).newbyteorder()))


def test_copy_into_padded_matches_numpy_slicing():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 5, 6))
    for extent, pad in (((6, 7, 8), (1, 1, 1)), ((4, 5, 9), (0, 0, 3)), ((3, 4, 4), (0, 1, 0))):
        xp = np.zeros(x.shape[:2] + extent)
        copy_into_padded(x, xp, pad)
        expected = np.zeros_like(xp)
        src = tuple(slice(0, max(0, min(n, e - q))) for n, e, q in zip(x.shape[2:], extent, pad))
        dst = tuple(slice(q, q + s.stop) for q, s in zip(pad, src))
        expected[(Ellipsis,) + dst] = x[(Ellipsis,) + src]
        assert np.array_equal(xp, expected)


@pytest.mark.parametrize("call", [
    lambda x, w, g: fc.conv2d(x, w, padding=1),
    lambda x, w, g: fc.grad.conv2d_input(x.shape, w, g, padding=1),
    lambda x, w, g: fc.grad.conv2d_weight(x, w.shape, g, padding=1),
    lambda x, w, g: fc.grad.conv_transpose2d_weight(g, w.shape, x, padding=1),
])
def test_prepared_calls_keep_no_reference_to_the_callers_arrays(call):
    import gc
    import weakref

    x, w, g = _data()
    refs = [weakref.ref(a) for a in (x, w, g)]
    call(x, w, g)
    del x, w, g
    gc.collect()
    assert all(r() is None for r in refs)
