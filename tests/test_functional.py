"""Forward convolution (``fc.conv1d/2d/3d``) against the float64 NumPy oracle and PyTorch.

The parameter space (dims x dtype x stride x padding x dilation x groups x
padding mode x batching x algorithm x bias) is far too large for a full
product, so each test below crosses dims and algorithm with one or two
other axes, and a hypothesis property test draws random valid combinations
of all of them.  Cases are small (spatial sizes 4-9), except a few sized to
span several parallel jobs / GEMM tiles.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv as fc
import reference
from conftest import (DTYPES, HAVE_TORCH, assert_close, dispatch_recorded, random_array,
                      reduction_size, tolerance, torch_single_threaded)

CONV = {1: fc.conv1d, 2: fc.conv2d, 3: fc.conv3d}
NDS = (1, 2, 3)
ALGORITHMS = ("auto",) + tuple(fc.ALGORITHMS)
#: Algorithms that sum products directly; 'fft' goes through transforms and rounds.
SUMMING_ALGORITHMS = tuple(a for a in ALGORITHMS if a != "fft")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

#: Default spatial sizes and (deliberately non-square) kernels per dim count.
SPATIAL = {1: (9,), 2: (7, 6), 3: (5, 6, 4)}
KERNEL = {1: (3,), 2: (3, 2), 3: (2, 3, 2)}
EVEN_KERNEL = {1: (4,), 2: (2, 4), 3: (2, 2, 4)}


def dtype_id(dtype):
    return np.dtype(dtype).name


def per_dim(values, nd):
    """The first ``nd`` entries of a per-dimension tuple."""
    return tuple(values[:nd])


def make_problem(rng, nd, dtype, *, n=2, c_in=4, c_out=6, groups=1, spatial=None,
                 kernel=None, bias=True, batched=True):
    spatial = SPATIAL[nd] if spatial is None else spatial
    kernel = KERNEL[nd] if kernel is None else kernel
    x_shape = ((n,) if batched else ()) + (c_in,) + tuple(spatial)
    x = random_array(rng, x_shape, dtype)
    w = random_array(rng, (c_out, c_in // groups) + tuple(kernel), dtype)
    b = random_array(rng, (c_out,), dtype) if bias else None
    return x, w, b


def oracle(x, w, b, stride, padding, dilation, groups, padding_mode, batched=True):
    """The reference result, for batched or unbatched input."""
    if batched:
        return reference.conv(x, w, b, stride, padding, dilation, groups, padding_mode)
    return reference.conv(x[np.newaxis], w, b, stride, padding, dilation, groups,
                          padding_mode)[0]


def check_against_reference(x, w, b, nd, *, stride=1, padding=0, dilation=1, groups=1,
                            padding_mode="zeros", algorithm="auto", batched=True):
    """Run fastconv and the oracle on the same problem; compare dtype, shape and values."""
    dtype = x.dtype
    got = CONV[nd](x, w, b, stride, padding, dilation, groups,
                   padding_mode=padding_mode, algorithm=algorithm)
    expected = oracle(x, w, b, stride, padding, dilation, groups, padding_mode, batched)
    assert isinstance(got, np.ndarray)
    assert got.dtype == dtype
    assert got.shape == expected.shape
    assert_close(got, expected, dtype, reduction_size(w))
    return got


# --------------------------------------------------------------------------
# Against the NumPy reference, one or two axes at a time
# --------------------------------------------------------------------------

@pytest.mark.parametrize("batched, bias", [(True, True), (True, False), (False, True)],
                         ids=["batched-bias", "batched-nobias", "unbatched-bias"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", NDS)
def test_conv_matches_reference_for_dtype_batching_and_bias(rng, nd, algorithm, dtype,
                                                             batched, bias):
    x, w, b = make_problem(rng, nd, dtype, bias=bias, batched=batched)
    check_against_reference(x, w, b, nd, padding=1, algorithm=algorithm, batched=batched)


@pytest.mark.parametrize("dilation", [1, 2, (2, 1, 3)], ids=["d1", "d2", "dtuple"])
@pytest.mark.parametrize("stride", [1, 2, (3, 2, 1)], ids=["s1", "s2", "stuple"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", NDS)
def test_conv_matches_reference_for_stride_and_dilation(rng, nd, algorithm, stride, dilation):
    if isinstance(stride, tuple):
        stride = per_dim(stride, nd)
    if isinstance(dilation, tuple):
        dilation = per_dim(dilation, nd)
    dtype = np.complex64 if nd == 2 else np.float64
    x, w, b = make_problem(rng, nd, dtype, spatial=(9, 8, 7)[:nd])
    check_against_reference(x, w, b, nd, stride=stride, padding=1, dilation=dilation,
                            algorithm=algorithm)


PADDING_CASES = [
    # (id, padding, kernel kind, dilation)
    ("p0", 0, "odd", 1),
    ("p2", 2, "odd", 1),
    ("ptuple", (0, 2, 1), "odd", 1),
    ("valid", "valid", "odd", 1),
    ("same-odd", "same", "odd", 1),
    ("same-even", "same", "even", 1),
    ("same-even-dilated", "same", "even", 2),
    ("same-odd-dilated-tuple", "same", "odd", (1, 3, 2)),
    ("p1-even", 1, "even", 1),
]


@pytest.mark.parametrize("case", PADDING_CASES, ids=[c[0] for c in PADDING_CASES])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", NDS)
def test_conv_matches_reference_for_padding(rng, nd, algorithm, case):
    _, padding, kind, dilation = case
    if isinstance(padding, tuple):
        padding = per_dim(padding, nd)
    if isinstance(dilation, tuple):
        dilation = per_dim(dilation, nd)
    kernel = (EVEN_KERNEL if kind == "even" else KERNEL)[nd]
    dtype = np.complex128 if nd == 1 else np.float32
    x, w, b = make_problem(rng, nd, dtype, spatial=(9, 8, 9)[:nd], kernel=kernel)
    got = check_against_reference(x, w, b, nd, padding=padding, dilation=dilation,
                                  algorithm=algorithm)
    if padding == "same":
        assert got.shape[2:] == x.shape[2:]


GROUP_CASES = [
    # (id, c_in, c_out, groups)
    ("g1", 4, 6, 1),
    ("g2", 4, 6, 2),
    ("g3-wide", 6, 9, 3),
    ("depthwise", 4, 4, 4),
    ("depthwise-multiplier", 3, 6, 3),
    ("g2-one-out-channel-per-group", 4, 2, 2),
]


@pytest.mark.parametrize("case", GROUP_CASES, ids=[c[0] for c in GROUP_CASES])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", NDS)
def test_conv_matches_reference_for_groups(rng, nd, algorithm, case):
    _, c_in, c_out, groups = case
    dtype = DTYPES[(GROUP_CASES.index(case) + nd) % len(DTYPES)]
    x, w, b = make_problem(rng, nd, dtype, c_in=c_in, c_out=c_out, groups=groups)
    check_against_reference(x, w, b, nd, stride=(2, 1, 1)[:nd], padding=1, groups=groups,
                            algorithm=algorithm)


def _max_padding(mode, spatial):
    """The largest padding each mode accepts: reflect < size, circular <= size."""
    if mode == "reflect":
        return tuple(n - 1 for n in spatial)
    if mode == "circular":
        return tuple(spatial)
    return tuple(n + 2 for n in spatial)       # zeros / replicate: no limit


#: (padding case, stride); 'same' needs stride 1 (stride 2 is an error, see test_errors).
MODE_PADDINGS = [("ptuple", 2), ("max", 1), ("max", 2), ("same-even", 1)]


@pytest.mark.parametrize("padding_case, stride", MODE_PADDINGS,
                         ids=[f"{p}-s{s}" for p, s in MODE_PADDINGS])
@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", NDS)
def test_conv_matches_reference_for_padding_modes(rng, nd, algorithm, padding_mode,
                                                  padding_case, stride):
    spatial = (5, 4, 6)[:nd]
    kernel = KERNEL[nd]
    if padding_case == "ptuple":
        padding = (2, 0, 1)[:nd]
    elif padding_case == "max":
        padding = _max_padding(padding_mode, spatial)
    else:
        padding = "same"
        kernel = EVEN_KERNEL[nd]
    dtype = np.complex64 if padding_case == "ptuple" else np.float64
    x, w, b = make_problem(rng, nd, dtype, spatial=spatial, kernel=kernel, c_in=2, c_out=3)
    check_against_reference(x, w, b, nd, stride=stride, padding=padding,
                            padding_mode=padding_mode, algorithm=algorithm)


@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", NDS)
def test_unbatched_input_gives_the_first_row_of_the_batched_result(rng, nd, algorithm,
                                                                    padding_mode):
    x, w, b = make_problem(rng, nd, np.float64, n=1)
    batched = CONV[nd](x, w, b, padding=1, padding_mode=padding_mode, algorithm=algorithm)
    single = CONV[nd](x[0], w, b, padding=1, padding_mode=padding_mode, algorithm=algorithm)
    assert single.shape == batched.shape[1:]
    assert np.array_equal(single, batched[0])


@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("nd", NDS)
def test_every_algorithm_gives_the_same_result(rng, nd, dtype, padding_mode):
    # Enough channels that 'auto' may pick im2col.
    x, w, b = make_problem(rng, nd, dtype, c_in=8, c_out=16)
    results = [CONV[nd](x, w, b, 2, 1, 1, 1, padding_mode=padding_mode, algorithm=alg)
               for alg in ALGORITHMS]
    for alg, res in zip(ALGORITHMS[1:], results[1:]):
        assert_close(res, results[0], dtype, reduction_size(w), err_msg=alg)


LARGE_PROBLEMS = {
    # nd: (input shape, weight shape, groups).  Large enough that the kernels split
    # each output plane into several jobs / GEMM tiles (boundaries mid-row), and the
    # 1-D rows are wider than one direct-kernel row tile.
    1: ((2, 4, 4500), (8, 2, 5), 2),
    2: ((1, 3, 45, 50), (16, 3, 3, 3), 1),
    3: ((1, 4, 10, 13, 15), (8, 4, 3, 2, 3), 1),
}


@pytest.mark.parametrize("padding_mode, stride", [("zeros", 1), ("circular", 2)],
                         ids=["zeros-s1", "circular-s2"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", NDS)
def test_problems_spanning_several_tiles_match_the_reference(rng, nd, algorithm,
                                                             padding_mode, stride):
    x_shape, w_shape, groups = LARGE_PROBLEMS[nd]
    x = random_array(rng, x_shape, np.float64)
    w = random_array(rng, w_shape, np.float64)
    b = random_array(rng, w_shape[:1], np.float64)
    check_against_reference(x, w, b, nd, stride=stride, padding=2, groups=groups,
                            padding_mode=padding_mode, algorithm=algorithm)


# --------------------------------------------------------------------------
# Against PyTorch
# --------------------------------------------------------------------------

TORCH_CASES = [
    # (id, stride, padding, dilation, groups, batched)
    ("plain", 1, 0, 1, 1, True),
    ("plain-unbatched", 1, 0, 1, 1, False),
    ("strided-padded", 2, 1, 1, 2, True),
    ("dilated-tuple-unbatched", (1, 2, 1), (2, 1, 0), (2, 1, 2), 1, False),
    ("same-depthwise", 1, "same", 2, 4, True),
    ("valid", 1, "valid", 1, 2, True),
]


def _torch_dtype(torch, dtype):
    return {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64,
            np.dtype(np.complex64): torch.complex64,
            np.dtype(np.complex128): torch.complex128}[np.dtype(dtype)]


def _per_dim_args(nd, *values):
    return [per_dim(v, nd) if isinstance(v, tuple) else v for v in values]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("case", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("nd", NDS)
def test_conv_matches_torch_functional(torch, rng, nd, dtype, case):
    _, stride, padding, dilation, groups, batched = case
    stride, padding, dilation = _per_dim_args(nd, stride, padding, dilation)
    kernel = EVEN_KERNEL[nd] if padding == "same" else KERNEL[nd]
    c_in = 4
    c_out = 8 if groups == 4 else 6
    x, w, b = make_problem(rng, nd, dtype, c_in=c_in, c_out=c_out, groups=groups,
                           kernel=kernel, spatial=(8, 7, 6)[:nd], batched=batched)
    func = getattr(torch.nn.functional, f"conv{nd}d")
    with torch_single_threaded():
        expected = func(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                        stride, padding, dilation, groups).numpy()
    for algorithm in ALGORITHMS:
        got = CONV[nd](x, w, b, stride, padding, dilation, groups, algorithm=algorithm)
        assert got.dtype == expected.dtype
        assert got.shape == expected.shape
        assert_close(got, expected, dtype, reduction_size(w), err_msg=algorithm)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("padding", [1, "max", "same"])
@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.complex128], ids=dtype_id)
@pytest.mark.parametrize("nd", NDS)
def test_conv_matches_torch_module_padding_mode(torch, rng, nd, dtype, padding_mode, padding):
    spatial = (6, 5, 4)[:nd]
    kernel = EVEN_KERNEL[nd] if padding == "same" else KERNEL[nd]
    if padding == "max":
        padding = _max_padding(padding_mode, spatial)
    stride = 1 if padding == "same" else 2
    dilation = (1, 2, 1)[:nd] if padding == "same" else 1
    c_in, c_out, groups = 4, 6, 2
    x, w, b = make_problem(rng, nd, dtype, c_in=c_in, c_out=c_out, groups=groups,
                           kernel=kernel, spatial=spatial)
    layer = getattr(torch.nn, f"Conv{nd}d")(c_in, c_out, kernel, stride=stride,
                                            padding=padding, dilation=dilation, groups=groups,
                                            bias=True, padding_mode=padding_mode,
                                            dtype=_torch_dtype(torch, dtype))
    with torch.no_grad(), torch_single_threaded():
        layer.weight.copy_(torch.from_numpy(w))
        layer.bias.copy_(torch.from_numpy(b))
        expected = layer(torch.from_numpy(x)).numpy()
    for algorithm in ALGORITHMS:
        got = CONV[nd](x, w, b, stride, padding, dilation, groups,
                       padding_mode=padding_mode, algorithm=algorithm)
        assert got.shape == expected.shape
        assert_close(got, expected, dtype, reduction_size(w), err_msg=algorithm)


# --------------------------------------------------------------------------
# Dtype promotion and array-likes
# --------------------------------------------------------------------------

PROMOTIONS = [
    # (x dtype, w dtype, bias dtype or None, result dtype)
    (np.int64, np.int64, None, np.float64),
    (np.int32, np.int64, np.int8, np.float64),
    (np.bool_, np.bool_, None, np.float64),
    (np.bool_, np.float32, None, np.float32),
    (np.uint8, np.uint8, None, np.float64),
    (np.uint8, np.float32, None, np.float32),
    (np.uint8, np.float32, np.float32, np.float32),
    (np.uint16, np.float32, None, np.float32),
    (np.int32, np.float32, None, np.float64),
    (np.float16, np.float16, None, np.float32),
    (np.float16, np.float32, np.float16, np.float32),
    (np.float16, np.float64, None, np.float64),
    (np.float16, np.complex64, None, np.complex64),
    (np.float32, np.float64, None, np.float64),
    (np.float32, np.float32, np.float64, np.float64),
    (np.float32, np.complex64, None, np.complex64),
    (np.float64, np.complex64, None, np.complex128),
    (np.int64, np.complex64, None, np.complex128),
    (np.complex64, np.float32, np.complex128, np.complex128),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("x_dtype, w_dtype, b_dtype, result",
                         PROMOTIONS,
                         ids=[f"{np.dtype(a).name}-{np.dtype(b).name}-"
                              f"{'none' if c is None else np.dtype(c).name}"
                              for a, b, c, _ in PROMOTIONS])
def test_dtype_promotion_follows_result_type(rng, x_dtype, w_dtype, b_dtype, result,
                                             algorithm):
    x = random_array(rng, (2, 4, 7, 6), x_dtype)
    w = random_array(rng, (6, 4, 3, 3), w_dtype)
    b = None if b_dtype is None else random_array(rng, (6,), b_dtype)
    got = fc.conv2d(x, w, b, padding=1, algorithm=algorithm)
    assert got.dtype == np.dtype(result)
    # Computing in the result dtype means: exactly as if converted up front.
    converted = fc.conv2d(x.astype(result), w.astype(result),
                          None if b is None else b.astype(result), padding=1,
                          algorithm=algorithm)
    assert np.array_equal(got, converted)
    expected = reference.conv(x.astype(result), w.astype(result),
                              None if b is None else b.astype(result), padding=1)
    assert_close(got, expected, result, reduction_size(w))


@pytest.mark.parametrize("nd", NDS)
def test_python_lists_are_accepted_and_integers_compute_in_float64(rng, nd):
    x, w, b = make_problem(rng, nd, np.int64, n=1, c_in=2, c_out=3)
    got = CONV[nd](x.tolist(), w.tolist(), b.tolist(), padding=1)
    assert got.dtype == np.float64
    assert np.array_equal(got, CONV[nd](x.astype(np.float64), w.astype(np.float64),
                                        b.astype(np.float64), padding=1))
    assert np.array_equal(got, reference.conv(x, w, b, padding=1))


def test_lists_of_complex_numbers_compute_in_complex128(rng):
    x = random_array(rng, (3, 7), np.complex128)
    w = random_array(rng, (2, 3, 3), np.complex128)
    got = fc.conv1d(x.tolist(), w.tolist(), [1j, -1])
    assert got.dtype == np.complex128
    assert np.array_equal(got, fc.conv1d(x, w, np.array([1j, -1])))


@pytest.mark.parametrize("nd", NDS)
def test_hyperparameters_accept_numpy_integers_lists_and_arrays(rng, nd):
    x, w, b = make_problem(rng, nd, np.float64, c_in=4, c_out=4, groups=2)
    expected = CONV[nd](x, w, b, (2,) * nd, (1,) * nd, (1,) * nd, 2)
    got_np = CONV[nd](x, w, b, np.int64(2), np.int32(1), np.int8(1), np.int64(2))
    got_list = CONV[nd](x, w, b, [2] * nd, [1] * nd, [1] * nd, 2)
    got_array = CONV[nd](x, w, b, np.full(nd, 2), np.ones(nd, np.int64), np.array([1]), 2)
    got_one = CONV[nd](x, w, b, (2,), (1,), (1,), 2)      # one value broadcasts
    for got in (got_np, got_list, got_array, got_one):
        assert np.array_equal(got, expected)


# --------------------------------------------------------------------------
# Memory layouts and untouched inputs
# --------------------------------------------------------------------------

def _layouts(a):
    """Views / copies of ``a`` with the same values and different memory layouts."""
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    wide[..., ::2] = a
    flipped = np.ascontiguousarray(a[..., ::-1])
    readonly = a.copy()
    readonly.flags.writeable = False
    swapped = np.ascontiguousarray(np.swapaxes(a, 0, -1))
    return {
        "strided": wide[..., ::2],
        "fortran": np.asfortranarray(a),
        "negative-stride": flipped[..., ::-1],
        "swapped-axes-view": np.swapaxes(swapped, 0, -1),
        "read-only": readonly,
        "byteswapped": a.astype(a.dtype.newbyteorder()),
    }


LAYOUTS = ["strided", "fortran", "negative-stride", "swapped-axes-view", "read-only",
           "byteswapped"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("algorithm", fc.ALGORITHMS)
@pytest.mark.parametrize("nd, dtype", [(2, np.float32), (3, np.complex128)],
                         ids=["2-float32", "3-complex128"])
def test_any_memory_layout_gives_the_contiguous_result(rng, nd, dtype, algorithm, layout):
    x, w, b = make_problem(rng, nd, dtype)
    expected = CONV[nd](x, w, b, 1, 1, algorithm=algorithm, padding_mode="reflect")
    for name, (xa, wa, ba) in {"input": (_layouts(x)[layout], w, b),
                               "weight": (x, _layouts(w)[layout], b),
                               "bias": (x, w, _layouts(b)[layout]),
                               "all": (_layouts(x)[layout], _layouts(w)[layout], b)}.items():
        assert np.array_equal(xa, x) and np.array_equal(wa, w)
        got = CONV[nd](xa, wa, ba, 1, 1, algorithm=algorithm, padding_mode="reflect")
        assert got.dtype == np.dtype(dtype), name
        assert np.array_equal(got, expected), name


@pytest.mark.parametrize("algorithm", fc.ALGORITHMS)
def test_memmap_inputs_give_the_in_memory_result(rng, tmp_path, algorithm):
    x, w, b = make_problem(rng, 2, np.float32)
    arrays = {}
    for name, a in (("x", x), ("w", w), ("b", b)):
        m = np.memmap(tmp_path / f"{name}.dat", dtype=a.dtype, mode="w+", shape=a.shape)
        m[...] = a
        m.flush()
        del m
        arrays[name] = np.memmap(tmp_path / f"{name}.dat", dtype=a.dtype, mode="r",
                                 shape=a.shape)
    got = fc.conv2d(arrays["x"], arrays["w"], arrays["b"], padding=1, algorithm=algorithm)
    assert isinstance(got, np.ndarray)
    assert np.array_equal(got, fc.conv2d(x, w, b, padding=1, algorithm=algorithm))


@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", NDS)
def test_inputs_are_never_modified(rng, nd, algorithm, padding_mode):
    # float64 arrays reach the kernels as they are (no conversion copy); with
    # nd == 2 the input is float32 and gets converted first.  Both stay untouched.
    x, w, b = make_problem(rng, nd, np.float32 if nd == 2 else np.float64, batched=nd != 3)
    w = w.astype(np.float64)
    copies = [x.copy(), w.copy(), b.copy()]
    CONV[nd](x, w, b, 1, 2, padding_mode=padding_mode, algorithm=algorithm)
    for original, copy in zip((x, w, b), copies):
        assert np.array_equal(original, copy)


# --------------------------------------------------------------------------
# out=
# --------------------------------------------------------------------------

@pytest.mark.parametrize("batched, bias, padding_mode",
                         [(True, True, "zeros"), (True, False, "circular"),
                          (False, True, "circular"), (False, False, "zeros")],
                         ids=["batched-bias-zeros", "batched-nobias-circular",
                              "unbatched-bias-circular", "unbatched-nobias-zeros"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", NDS)
def test_out_is_filled_in_place_and_returned(rng, nd, algorithm, batched, bias, padding_mode):
    dtype = np.float64 if nd != 2 else np.complex64
    x, w, b = make_problem(rng, nd, dtype, bias=bias, batched=batched)
    expected = CONV[nd](x, w, b, 2, 1, padding_mode=padding_mode, algorithm=algorithm)
    out = np.full(expected.shape, np.nan, dtype)      # stale contents must not leak
    result = CONV[nd](x, w, b, 2, 1, padding_mode=padding_mode, algorithm=algorithm, out=out)
    assert result is out
    assert np.array_equal(out, expected)
    assert_close(out, oracle(x, w, b, 2, 1, 1, 1, padding_mode, batched), dtype,
                 reduction_size(w))


def test_out_receives_the_promoted_dtype(rng):
    x = random_array(rng, (1, 2, 6, 6), np.uint8)
    w = random_array(rng, (3, 2, 3, 3), np.float32)
    out = np.empty((1, 3, 4, 4), np.float32)
    result = fc.conv2d(x, w, out=out)
    assert result is out
    assert np.array_equal(out, fc.conv2d(x, w))


@pytest.mark.parametrize("batched, padding_mode", [(True, "zeros"), (False, "reflect")],
                         ids=["batched-zeros", "unbatched-reflect"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", NDS)
def test_out_aliasing_the_input_gives_the_correct_result(rng, nd, algorithm, batched,
                                                         padding_mode):
    # 'same' padding and C_out == C_in: the output has exactly the input's shape.
    x, w, b = make_problem(rng, nd, np.float64, c_in=3, c_out=3, batched=batched)
    original = x.copy()
    expected = oracle(original, w, b, 1, "same", 1, 1, padding_mode, batched)
    result = CONV[nd](x, w, b, padding="same", padding_mode=padding_mode,
                      algorithm=algorithm, out=x)
    assert result is x
    assert_close(x, expected, np.float64, reduction_size(w))


@pytest.mark.parametrize("shift", [1, 5, -3])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_out_partially_overlapping_the_input_gives_the_correct_result(rng, algorithm, shift):
    x0 = random_array(rng, (3, 8, 7), np.float64)
    w = random_array(rng, (3, 3, 3, 3), np.float64)
    size = x0.size
    buffer = np.zeros(size + abs(shift), np.float64)
    x_start, out_start = (0, shift) if shift > 0 else (-shift, 0)
    x = buffer[x_start:x_start + size].reshape(x0.shape)
    x[...] = x0
    out = buffer[out_start:out_start + size].reshape(x0.shape)
    result = fc.conv2d(x, w, padding=1, algorithm=algorithm, out=out)
    assert result is out
    assert_close(out, oracle(x0, w, None, 1, 1, 1, 1, "zeros", batched=False), np.float64,
                 reduction_size(w))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_out_aliasing_the_weight_or_the_bias_gives_the_correct_result(rng, algorithm):
    # Input (2, 2, 5) with weight (2, 2, 3) gives output (2, 2, 3): the weight's shape.
    x = random_array(rng, (2, 2, 5), np.float64)
    w = random_array(rng, (2, 2, 3), np.float64)
    b = random_array(rng, (2,), np.float64)
    expected = reference.conv(x, w, b)
    w_alias = w.copy()
    assert fc.conv1d(x, w_alias, b, algorithm=algorithm, out=w_alias) is w_alias
    assert_close(w_alias, expected, np.float64, reduction_size(w))
    # The bias is a view into out.
    out = np.zeros((2, 2, 3))
    out.reshape(-1)[:2] = b
    bias_view = out.reshape(-1)[:2]
    assert fc.conv1d(x, w, bias_view, algorithm=algorithm, out=out) is out
    assert_close(out, expected, np.float64, reduction_size(w))


# --------------------------------------------------------------------------
# Empty batch
# --------------------------------------------------------------------------

@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", NDS)
def test_empty_batch_returns_an_empty_result_of_the_right_shape(rng, nd, algorithm,
                                                                padding_mode):
    dtype = DTYPES[nd]
    x, w, b = make_problem(rng, nd, dtype, n=0)
    got = CONV[nd](x, w, b, 2, 1, padding_mode=padding_mode, algorithm=algorithm)
    expected_spatial = tuple((n + 2 - k) // 2 + 1 for n, k in zip(SPATIAL[nd], KERNEL[nd]))
    assert got.shape == (0, w.shape[0]) + expected_spatial
    assert got.dtype == np.dtype(dtype)
    out = np.empty(got.shape, dtype)
    assert CONV[nd](x, w, b, 2, 1, padding_mode=padding_mode, algorithm=algorithm,
                    out=out) is out


@pytest.mark.parametrize("nd", NDS)
def test_empty_batch_shape_matches_torch(torch, rng, nd):
    x, w, b = make_problem(rng, nd, np.float32, n=0)
    with torch_single_threaded():
        expected = getattr(torch.nn.functional, f"conv{nd}d")(
            torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), 2, 1)
    assert CONV[nd](x, w, b, 2, 1).shape == tuple(expected.shape)


# --------------------------------------------------------------------------
# Exact arithmetic
# --------------------------------------------------------------------------

@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("dtype, groups", [(np.float32, 1), (np.complex64, 2)],
                         ids=["float32-g1", "complex64-g2"])
@pytest.mark.parametrize("algorithm", SUMMING_ALGORITHMS)
@pytest.mark.parametrize("nd", NDS)
def test_small_integer_data_is_computed_exactly(rng, nd, algorithm, dtype, groups,
                                                padding_mode):
    # Every partial sum of small integers is exact in float32, whatever the
    # order of summation, so the result must equal the float64 oracle exactly.
    # (Not for 'fft': its transforms round even integer data.)
    def integers(shape):
        a = rng.integers(-4, 5, size=shape).astype(dtype)
        if np.dtype(dtype).kind == "c":
            a = a + 1j * rng.integers(-4, 5, size=shape)
        return a.astype(dtype)

    c_in, c_out = 4, 6
    x = integers((2, c_in) + SPATIAL[nd])
    w = integers((c_out, c_in // groups) + KERNEL[nd])
    b = integers((c_out,))
    got = CONV[nd](x, w, b, 1, 2, 1, groups, padding_mode=padding_mode, algorithm=algorithm)
    expected = reference.conv(x, w, b, 1, 2, 1, groups, padding_mode)
    assert np.abs(expected).max() < 2 ** 20        # the premise: all sums are exact
    assert np.array_equal(got, expected.astype(dtype))


# --------------------------------------------------------------------------
# NaN and inf
# --------------------------------------------------------------------------

def _assert_same_nonfinite(got, expected, dtype, reduction, what):
    """Same NaN / +inf / -inf positions (per component), finite values close."""
    for part in ((np.real, np.imag) if np.dtype(dtype).kind == "c" else (np.real,)):
        g, e = part(got), part(expected)
        assert np.array_equal(np.isnan(g), np.isnan(e)), f"NaN positions differ from {what}"
        assert np.array_equal(np.isposinf(g), np.isposinf(e)), f"+inf positions differ ({what})"
        assert np.array_equal(np.isneginf(g), np.isneginf(e)), f"-inf positions differ ({what})"
        finite = np.isfinite(e)
        assert_close(g[finite], e[finite], dtype, reduction, err_msg=what)


def _with_nonfinite_input(rng, nd, dtype):
    """NaN, +inf and -inf in the input, far enough apart that no window sees two."""
    x, w, b = make_problem(rng, nd, dtype, n=2, c_in=2, c_out=3)
    w = (np.abs(w) + 0.5).astype(dtype)        # positive, non-zero taps: no 0 * inf
    first, last = (0,) * nd, tuple(n - 1 for n in SPATIAL[nd])
    middle = tuple(n // 2 for n in SPATIAL[nd])
    x[(0, 0) + first] = np.nan
    x[(0, 1) + last] = -np.inf
    x[(1, 0) + middle] = np.inf
    return x, w, b


def _nonfinite_algorithms():
    return list(ALGORITHMS)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=dtype_id)
@pytest.mark.parametrize("algorithm", _nonfinite_algorithms())
@pytest.mark.parametrize("nd", NDS)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nan_and_inf_in_the_input_propagate_like_the_reference(rng, nd, algorithm, dtype,
                                                               padding_mode):
    x, w, b = _with_nonfinite_input(rng, nd, dtype)
    with np.errstate(invalid="ignore"):
        expected = reference.conv(x, w, b, 1, 1, 1, 1, padding_mode)
    got = CONV[nd](x, w, b, 1, 1, padding_mode=padding_mode, algorithm=algorithm)
    assert np.isnan(got).any() and np.isinf(got).any()
    _assert_same_nonfinite(got, expected, dtype, reduction_size(w), "reference")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("algorithm", _nonfinite_algorithms())
@pytest.mark.parametrize("nd", NDS)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nan_and_inf_in_the_input_propagate_like_torch(torch, rng, nd, algorithm, dtype):
    x, w, b = _with_nonfinite_input(rng, nd, dtype)
    func = getattr(torch.nn.functional, f"conv{nd}d")
    with torch_single_threaded():
        expected = func(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                        1, 1).numpy()
    got = CONV[nd](x, w, b, 1, 1, algorithm=algorithm)
    if np.dtype(dtype).kind == "c":
        # Complex infinities have no single canonical form (C99 Annex G vs the
        # textbook product); what must agree is which outputs are not finite.
        assert np.array_equal(np.isfinite(got), np.isfinite(expected))
        finite = np.isfinite(expected)
        assert_close(got[finite], expected[finite], dtype, reduction_size(w))
    else:
        _assert_same_nonfinite(got, expected, dtype, reduction_size(w), "torch")


def _nonfinite_weight_cases():
    cases = []
    for algorithm in ALGORITHMS:
        for bad, name in ((np.inf, "inf"), (np.nan, "nan")):
            cases.append(pytest.param(algorithm, bad, id=f"{algorithm}-{name}"))
    return cases


@pytest.mark.parametrize("algorithm, bad", _nonfinite_weight_cases())
@pytest.mark.parametrize("nd", NDS)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nonfinite_weight_over_zero_padding_gives_nan_like_torch(rng, nd, algorithm, bad):
    x = np.ones((1, 1) + SPATIAL[nd])
    w = np.ones((1, 1) + (3,) * nd)
    w[(0, 0) + (0,) * nd] = bad          # this tap reads the zero padding at the border
    with np.errstate(invalid="ignore"):
        expected = reference.conv(x, w, None, 1, 1)
    assert np.isnan(expected).any()      # 0 * inf and 0 * nan are NaN
    got = CONV[nd](x, w, None, 1, 1, algorithm=algorithm)
    _assert_same_nonfinite(got, expected, np.float64, w.size, "reference")
    if HAVE_TORCH:
        import torch
        with torch_single_threaded():
            expected_torch = getattr(torch.nn.functional, f"conv{nd}d")(
                torch.from_numpy(x), torch.from_numpy(w), None, 1, 1).numpy()
        _assert_same_nonfinite(got, expected_torch, np.float64, w.size, "torch")


# --------------------------------------------------------------------------
# Property test: random valid configurations
# --------------------------------------------------------------------------

@st.composite
def conv_configs(draw):
    """A random valid forward-convolution problem (every rule of SPEC 1 and 4)."""
    nd = draw(st.integers(1, 3))
    max_k = 3 if nd == 3 else 4
    kernel = tuple(draw(st.integers(1, max_k)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 3 if nd < 3 else 2)) for _ in range(nd))
    padding_mode = draw(st.sampled_from(PADDING_MODES))
    kind = draw(st.sampled_from(["int", "tuple", "same", "valid"]))
    if kind == "same":
        stride = 1
        padding = "same"
        pads = [((d * (k - 1)) // 2, d * (k - 1) - (d * (k - 1)) // 2)
                for k, d in zip(kernel, dilation)]
    else:
        stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
        if kind == "valid":
            padding, pads = "valid", [(0, 0)] * nd
        elif kind == "int":
            padding = draw(st.integers(0, 3))
            pads = [(padding, padding)] * nd
        else:
            padding = tuple(draw(st.integers(0, 3)) for _ in range(nd))
            pads = [(p, p) for p in padding]
    spatial = []
    for k, d, (left, right) in zip(kernel, dilation, pads):
        low = max(1, d * (k - 1) + 1 - left - right)
        if padding_mode == "reflect":
            low = max(low, max(left, right) + 1)
        elif padding_mode == "circular":
            low = max(low, max(left, right))
        spatial.append(draw(st.integers(low, min(low + 5, 12))))
    groups = draw(st.integers(1, 3))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 3))
    return dict(
        nd=nd, kernel=kernel, dilation=dilation, stride=stride, padding=padding,
        padding_mode=padding_mode, spatial=tuple(spatial), groups=groups, c_in=c_in,
        c_out=c_out, n=draw(st.integers(1, 2)), batched=draw(st.booleans()),
        bias=draw(st.booleans()), dtype=draw(st.sampled_from(DTYPES)),
        algorithm=draw(st.sampled_from(ALGORITHMS)), seed=draw(st.integers(0, 2 ** 32 - 1)),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_configs())
def test_random_valid_configurations_match_the_reference(config):
    rng = np.random.default_rng(config["seed"])
    nd = config["nd"]
    x, w, b = make_problem(rng, nd, config["dtype"], n=config["n"], c_in=config["c_in"],
                           c_out=config["c_out"], groups=config["groups"],
                           spatial=config["spatial"], kernel=config["kernel"],
                           bias=config["bias"], batched=config["batched"])
    check_against_reference(x, w, b, nd, stride=config["stride"], padding=config["padding"],
                            dilation=config["dilation"], groups=config["groups"],
                            padding_mode=config["padding_mode"],
                            algorithm=config["algorithm"], batched=config["batched"])


def test_float32_tolerance_is_tight_enough_to_fail():
    # Guard against tolerances so loose they cannot fail: a relative error of
    # 1e-3 (e.g. a dropped small term) must be caught for the reductions used here.
    rtol, atol = tolerance(np.float32, 4 * 9)
    assert rtol < 1e-3 and atol < 1e-3


@pytest.mark.parametrize("shape, groups, multiplier", [
    ((2, 3, 9, 11), 3, 1),            # small tiles
    ((1, 2, 300, 301), 2, 2),         # tiles of many rows, two outputs per group
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_kernel_on_strided_output_rows(shape, groups, multiplier, dtype):
    """The depthwise kernel's strided rows (a transposed convolution's stride
    phases, staged row by row and stored through ``store_panel``; a plain
    forward writes rows in place) against the float64 reference, with a bias."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((groups, multiplier, 3, 3)).astype(dtype)
    b = rng.standard_normal(groups * multiplier).astype(dtype)
    with fc._dispatch.forced("subpixel"), dispatch_recorded() as runs:
        y = fc.conv_transpose2d(x, w, b, stride=2, padding=1, groups=groups)
    assert [choice.impl.name for _, choice in runs] == ["subpixel"]
    assert_close(y, reference.conv_transpose(x, w, b, stride=2, padding=1, groups=groups),
                 dtype, reduction=9)


@pytest.mark.parametrize("width", [4, 5, 8, 9, 16, 31, 56, 63, 64, 65, 72, 129])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_rows_of_any_width(width, dtype):
    """The depthwise kernel writes each output row in place in chunks of vectors:
    widths around the vector and chunk sizes (8 and 64 float32 cells, 4 and 32
    float64), one and two output channels per group, stride, dilation and a
    bias, against the float64 reference."""
    rng = np.random.default_rng(width)
    x = rng.standard_normal((2, 3, 5, width)).astype(dtype)
    for multiplier, stride, dilation in ((1, 1, 1), (2, 1, 2), (1, 2, 1)):
        w = rng.standard_normal((3 * multiplier, 1, 3, 3)).astype(dtype)
        b = rng.standard_normal(3 * multiplier).astype(dtype)
        kw = dict(stride=stride, padding=dilation, dilation=dilation, groups=3)
        with fc._dispatch.forced("implicit_gemm"):
            y = fc.conv2d(x, w, b, **kw)
        assert_close(y, reference.conv(x, w, b, **kw), dtype, reduction=9)
