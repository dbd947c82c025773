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
from fastconv._fastpath import all_finite, copy_array, copy_into_padded

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


@pytest.mark.parametrize("shape, w_shape, padding", [
    ((2, 16, 9, 9), (8, 16, 3, 3), 1),              # implicit GEMM for any weight
    ((1, 1, 32, 32, 32), (1, 1, 11, 11, 11), 5),    # FFT when finite, not otherwise
    ((3, 8, 40), (6, 8, 3), 0)])
@pytest.mark.parametrize("op", ["forward", "input_grad"])
def test_fast_path_with_a_non_finite_weight_gives_the_python_paths_bits(shape, w_shape, padding,
                                                                        op):
    """A prepared call skips the weight's inf/NaN check only where such a weight
    leaves the registry's choice as it is: with inf and NaN taps it returns the
    bits of the Python path, which checks the weight and chooses again."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    nd = len(shape) - 2
    conv = getattr(fc, f"conv{nd}d")
    gout = conv(x, w, padding=padding)
    bad = w.copy()
    bad.reshape(-1)[[0, -1]] = np.inf, np.nan

    def call(weight):
        if op == "forward":
            return conv(x, weight, padding=padding)
        return getattr(grad, f"conv{nd}d_input")(x.shape, weight, gout, padding=padding)

    call(w)                                       # prepare the signature
    fast = call(bad)
    with _dispatch.recorded():                    # every run through the Python path
        slow = call(bad)
    np.testing.assert_array_equal(_bits(fast), _bits(slow))
    assert np.isnan(fast).any()


def test_weight_check_is_skipped_only_where_the_choice_cannot_change():
    resnet = _dispatch.Problem("forward", (16, 1, 9, 9), (8, 16, 1, 3, 3), (8, 1, 9, 9),
                               np.dtype(np.float32), pad=(0, 1, 1))
    volume = _dispatch.Problem("forward", (1, 32, 32, 32), (1, 1, 11, 11, 11), (1, 32, 32, 32),
                               np.dtype(np.float32), pad=(5, 5, 5))
    assert _dispatch.select(resnet, "auto", None).impl.name == "implicit_gemm"
    assert _dispatch.same_choice_for_any_weight(resnet)
    assert _dispatch.select(volume, "auto", None).impl.name == "fft"
    assert not _dispatch.same_choice_for_any_weight(volume)


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


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape, dtype", [((3, 1000, 1001), np.float32), ((7,), ">f8"),
                                          ((2, 700, 900), np.complex64), ((0, 4), np.float64)])
def test_copy_array_is_an_exact_private_copy(shape, dtype, threads):
    """The layers' parallel copy: every byte (chunks of 1 MiB and a short last one),
    C order, its own memory; non-contiguous arrays are refused."""
    a = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    b = copy_array(a, threads)
    assert b.dtype == a.dtype and b.shape == a.shape and b.flags.c_contiguous
    assert not np.shares_memory(a, b)
    np.testing.assert_array_equal(_bits(b), _bits(a))
    with pytest.raises(ValueError, match="C-contiguous"):
        copy_array(np.ones((4, 6))[:, ::2], threads)


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


# -- the compiled fast path (FastForwardCall -> the kernel's prepared run) -------------------

FAST_CASES = [
    # name, function, x shape, w shape, bias, options
    ("conv1d", fc.conv1d, (2, 4, 33), (6, 4, 3), True, dict(padding=1)),
    ("conv2d", fc.conv2d, (3, 3, 9, 8), (5, 3, 3, 3), False, dict(padding=1)),
    ("conv2d_unbatched", fc.conv2d, (3, 9, 8), (5, 3, 3, 2), True, dict(stride=2)),
    ("conv2d_groups_reflect", fc.conv2d, (2, 4, 7, 9), (6, 2, 3, 3), True,
     dict(padding=1, groups=2, padding_mode="reflect")),
    ("conv3d_1x1", fc.conv3d, (2, 4, 5, 6, 7), (8, 4, 1, 1, 1), False, {}),
    ("conv_transpose2d_shuffle", fc.conv_transpose2d, (2, 6, 5, 4), (6, 4, 2, 2), True,
     dict(stride=2, groups=2)),
    ("conv_transpose3d_shuffle", fc.conv_transpose3d, (1, 4, 3, 4, 5), (4, 3, 2, 2, 2), False,
     dict(stride=2)),
]


def _fast_inputs(case, dtype, seed=0):
    _, _, x_shape, w_shape, with_bias, _ = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    n_out = w_shape[1] * 2 if case[0] == "conv_transpose2d_shuffle" else (
        w_shape[1] if case[0].startswith("conv_transpose") else w_shape[0])
    bias = rng.standard_normal(n_out).astype(dtype) if with_bias else None
    return x, w, bias


@pytest.mark.parametrize("case", FAST_CASES, ids=[c[0] for c in FAST_CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_path_gives_the_python_paths_bits(case, dtype):
    """The compiled call and the recorded (Python) call run one kernel: same bits, any
    thread count, and the output in the caller's shape and dtype."""
    _, f, _, _, _, options = case
    x, w, bias = _fast_inputs(case, dtype)
    with dispatch_recorded() as runs:
        reference = f(x, w, bias, **options)
    assert len(runs) == 1
    key = next(k for k in functional._CALLS._calls)
    assert type(functional._CALLS._calls[key]).__name__ == "FastForwardCall"
    before = fc.get_num_threads()
    try:
        for threads in (1, 2):
            fc.set_num_threads(threads)
            fast = f(x, w, bias, **options)
            assert fast.shape == reference.shape and fast.dtype == reference.dtype
            assert fast.flags.c_contiguous and fast.flags.writeable
            assert np.array_equal(_bits(fast), _bits(reference))
    finally:
        fc.set_num_threads(before)


class SubclassArray(np.ndarray):
    """An ndarray subclass: keyed out of the prepared-call cache, converted by NumPy."""

    def __new__(cls, a):
        return np.asarray(a).view(cls)


@pytest.mark.parametrize("case", FAST_CASES[:2] + FAST_CASES[-2:-1],
                         ids=[c[0] for c in FAST_CASES[:2] + FAST_CASES[-2:-1]])
def test_fast_path_hands_every_other_call_to_the_python_path(case):
    """Arrays it cannot use as they are take the Python path, with the same result."""
    _, f, _, _, _, options = case
    x, w, bias = _fast_inputs(case, np.float32)
    expected = f(x, w, bias, **options)
    x64 = x.astype(np.float64)
    unaligned = np.frombuffer(b"\0" + x.tobytes(), np.float32, offset=1).reshape(x.shape)
    variants = [
        (np.asfortranarray(x), w, bias),            # not C-contiguous
        (x, w[..., ::-1].copy()[..., ::-1], bias),  # a copy (still the fast path)
        (SubclassArray(x), w, bias),              # not an ndarray: a subclass
        (unaligned, w, bias),                       # not aligned
        (x.astype(x.dtype.newbyteorder()), w, bias),   # byte-swapped
    ]
    for xv, wv, bv in variants:
        for _ in range(2):                          # the first call prepares, the second reuses
            assert np.array_equal(_bits(f(xv, wv, bv, **options)), _bits(expected))
    out = np.full_like(expected, np.nan)
    assert f(x, w, bias, out=out, **options) is out
    assert np.array_equal(_bits(out), _bits(expected))
    y64 = f(x64, w, None if bias is None else bias, **options)      # float64 result
    assert y64.dtype == np.float64


def test_fast_path_leaves_its_inputs_unmodified():
    x, w, bias = _fast_inputs(FAST_CASES[0], np.float32)
    copies = [a.copy() for a in (x, w, bias)]
    for _ in range(2):
        fc.conv1d(x, w, bias, padding=1)
    assert all(np.array_equal(_bits(a), _bits(b)) for a, b in zip((x, w, bias), copies))


@pytest.mark.parametrize("bad", ["x", "w", "out", "bias", "dtype", "readonly"])
def test_prepared_kernel_rejects_arrays_of_other_sizes(bad):
    """The compiled kernel checks sizes and dtypes itself: a ValueError, never a wild read."""
    p = _dispatch.Problem("forward", (3, 1, 8, 8), (4, 3, 1, 3, 3), (4, 1, 8, 8),
                          np.dtype(np.float32), pad=(0, 1, 1))
    kernel = _dispatch.prepare(p)
    assert kernel is not None
    arrays = dict(x=np.zeros((2, 3, 8, 8), np.float32), w=np.zeros((4, 3, 3, 3), np.float32),
                  out=np.zeros((2, 4, 8, 8), np.float32), bias=np.zeros(4, np.float32))
    kernel.run(arrays["x"], arrays["w"], arrays["bias"], arrays["out"], 1)     # fits
    if bad in ("x", "w", "out", "bias"):
        arrays[bad] = np.zeros(arrays[bad].size + (3 if bad != "bias" else 1), np.float32)
    elif bad == "dtype":
        arrays["w"] = arrays["w"].astype(np.float64)
    else:
        arrays["out"].flags.writeable = False
    with pytest.raises(ValueError, match="fastconv"):
        kernel.run(arrays["x"], arrays["w"], arrays["bias"], arrays["out"], 1)


def test_call_signature_tells_layouts_apart():
    from fastconv._args import call_signature
    a = np.zeros((2, 3, 4), np.float32)
    same = call_signature("t", (a, None), (1,))
    assert same == call_signature("t", (np.ones((2, 3, 4), np.float32), None), (1,))
    others = [
        (a.astype(np.float64), None), (a.astype(a.dtype.newbyteorder()), None),
        (a.reshape(2, 12), None), (np.asfortranarray(a), None), (a[:, :, ::2], None),
        (a.astype(np.int32), None), (None, a), (a, a),
    ]
    keys = [call_signature("t", arrays, (1,)) for arrays in others]
    assert len(set(keys + [same])) == len(others) + 1
    assert call_signature("t", (a.tolist(), None), (1,)) is None
    deep = np.zeros((1,) * 10)                    # keyed in Python, still distinct
    assert call_signature("t", (deep,), ()) != call_signature("t", (deep.reshape((1,) * 9),), ())


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("threads", [1, 2])
def test_complex_planes_match_numpy(dtype, groups, threads):
    """The one-pass conversions of _planar against NumPy's slicing (same bits)."""
    from fastconv import _planar
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((2, 6, 3, 5)) + 1j * rng.standard_normal((2, 6, 3, 5))).astype(dtype)
    real = _planar.planar(x, groups, threads)
    grouped = x.reshape(2, groups, 1, 6 // groups, 3, 5)
    expected = np.concatenate([grouped.real, grouped.imag], axis=2).reshape(2, 12, 3, 5)
    assert np.array_equal(_bits(real), _bits(expected))
    back = np.empty_like(x)
    _planar.unplanar(real, back, groups, threads)
    assert np.array_equal(_bits(back), _bits(x))
    if groups == 1:
        three = _planar.gauss_input(x, threads)
        assert np.array_equal(_bits(three), _bits(np.concatenate(
            [x.real, x.imag, x.real + x.imag], axis=1)))
        t0, t1, t2 = np.split(three, 3, axis=1)
        y = np.empty_like(x)
        _planar.ungauss(three, y, threads)
        assert np.array_equal(_bits(y.real), _bits(t0 - t1))
        assert np.array_equal(_bits(y.imag), _bits((t2 - t0) - t1))


def test_complex_plane_conversions_reject_mismatched_arrays():
    from fastconv._fastpath import merge_complex, split_complex
    x = np.zeros((2, 4, 5), np.complex64)
    with pytest.raises(ValueError, match="split_complex"):
        split_complex(x, np.zeros((2, 8, 5), np.float64), 1, False)       # other precision
    with pytest.raises(ValueError, match="split_complex"):
        split_complex(x, np.zeros((2, 8, 4), np.float32), 1, False)       # too small
    with pytest.raises(ValueError, match="groups"):
        split_complex(x, np.zeros((2, 8, 5), np.float32), 3, False)
    readonly = np.zeros((2, 4, 5), np.complex64)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        merge_complex(np.zeros((2, 8, 5), np.float32), readonly, 1, False)


GRAD_CASES = [
    # name, nd, x shape, w shape, options
    ("conv1d", 1, (2, 4, 33), (6, 4, 3), dict(padding=1)),
    ("conv2d_groups_dilated", 2, (3, 4, 9, 8), (6, 2, 3, 3), dict(padding=2, dilation=2,
                                                                   groups=2)),
    ("conv2d_unbatched", 2, (3, 9, 8), (5, 3, 3, 2), dict(padding=(1, 0))),
    ("conv2d_reflect", 2, (2, 3, 9, 8), (4, 3, 3, 3), dict(padding=1, padding_mode="reflect")),
    ("conv3d", 3, (1, 3, 5, 6, 7), (4, 3, 3, 3, 3), dict(padding=1)),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("part", ["input", "weight"])
def test_gradient_fast_paths_give_the_python_paths_bits(case, dtype, part):
    """The compiled gradient calls (the input gradient flipping the weight in C) and
    the recorded Python calls: same bits at 1 and 2 threads, the caller's shape."""
    _, nd, x_shape, w_shape, options = case
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    g = rng.standard_normal(getattr(fc, f"conv{nd}d")(x, w, **options).shape
                            ).astype(dtype)
    f = getattr(fc.grad, f"conv{nd}d_{part}")
    args = (x.shape, w, g) if part == "input" else (x, w.shape, g)
    grad._CALLS.clear()
    with dispatch_recorded():
        reference = f(*args, **options)
    assert reference.shape == (x.shape if part == "input" else w.shape)
    before = fc.get_num_threads()
    try:
        for threads in (1, 2):
            fc.set_num_threads(threads)
            fast = f(*args, **options)
            assert fast.shape == reference.shape and fast.dtype == reference.dtype
            assert np.array_equal(_bits(fast), _bits(reference))
    finally:
        fc.set_num_threads(before)
    kinds = {type(c).__name__ for c in grad._CALLS._calls.values()}
    if part == "weight" or options.get("padding_mode", "zeros") == "zeros":
        assert kinds & {"FastInputGradCall", "FastWeightGradCall"}, kinds


def test_input_gradient_fast_path_matches_the_transposed_convolution():
    """Independent of the flip: conv2d_input equals conv_transpose2d of grad_output."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 6, 7, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    g = fc.conv2d(x, w, padding=1, groups=2)
    for _ in range(2):
        dx = fc.grad.conv2d_input(x.shape, w, g, padding=1, groups=2)
    expected = fc.conv_transpose2d(g.astype(np.float64), w.astype(np.float64), padding=1,
                                   groups=2)
    np.testing.assert_allclose(dx, expected, rtol=1e-5, atol=1e-4)


def test_prepared_weight_gradient_rejects_arrays_of_other_sizes():
    p = _dispatch.Problem("weight_grad", (3, 1, 8, 8), (4, 3, 1, 3, 3), (4, 1, 8, 8),
                          np.dtype(np.float32), pad=(0, 1, 1))
    kernel = _dispatch.prepare(p)
    if kernel is None:
        pytest.skip("the registry chose a kernel without a prepared form")
    x, g = np.zeros((2, 3, 8, 8), np.float32), np.zeros((2, 4, 8, 8), np.float32)
    dw = np.zeros((4, 3, 3, 3), np.float32)
    kernel.run(x, g, None, dw, 1)
    for bad in ((x[:1], g, dw), (x, g, dw[:2]), (x, g[:, :3], dw)):
        with pytest.raises(ValueError, match="fastconv"):
            kernel.run(bad[0], bad[1], None, bad[2], 1)
