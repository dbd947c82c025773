"""Every SPEC section 4 error of the forward convolution.

Each bad call must raise ValueError (bad value) or TypeError (bad type) with
a message naming the argument and showing the value received, and must leave
every array it was given (``out=`` included) exactly as it was.
"""
import copy
import re

import numpy as np
import pytest

import fastconv as fc
from conftest import random_array

CONV = {1: fc.conv1d, 2: fc.conv2d, 3: fc.conv3d}
NDS = (1, 2, 3)


def _arrays_in(args, kwargs):
    return [a for a in list(args) + list(kwargs.values()) if isinstance(a, np.ndarray)]


def assert_rejected(exc, pattern, func, *args, **kwargs):
    """``func(*args, **kwargs)`` raises ``exc`` matching ``pattern`` and modifies nothing."""
    arrays = _arrays_in(args, kwargs)
    before = [copy.deepcopy(a) for a in arrays]
    with pytest.raises(exc, match=pattern):
        func(*args, **kwargs)
    for original, saved in zip(arrays, before):
        assert original.dtype == saved.dtype and original.shape == saved.shape
        if original.dtype.kind in "biufc":
            assert np.array_equal(original, saved, equal_nan=original.dtype.kind in "fc")
        else:
            assert (original == saved).all()


def problem(rng, nd, *, n=1, c_in=2, c_out=3, size=5, kernel=3, groups=1,
            dtype=np.float64):
    x = random_array(rng, (n, c_in) + (size,) * nd, dtype)
    w = random_array(rng, (c_out, c_in // groups) + (kernel,) * nd, dtype)
    b = random_array(rng, (c_out,), dtype)
    return x, w, b


def shape_text(shape):
    return re.escape(str(tuple(shape)))


# --------------------------------------------------------------------------
# Shapes: dims, channels, groups, kernel, bias
# --------------------------------------------------------------------------

@pytest.mark.parametrize("extra_dims", [-1, 1, -2], ids=["too-few", "too-many", "far-too-few"])
@pytest.mark.parametrize("nd", NDS)
def test_input_with_the_wrong_number_of_dims_is_rejected(rng, nd, extra_dims):
    x, w, b = problem(rng, nd)
    # x is (1, 2, *spatial): dropping the batch axis would be a valid unbatched input.
    bad = {-1: x[0, 0], -2: x[0, 0, 0], 1: x[np.newaxis]}[extra_dims]
    pattern = (rf"conv{nd}d: expected input with {nd + 1} \(unbatched\) or {nd + 2} "
               rf"\(batched\) dims, got {bad.ndim} dims, shape {shape_text(bad.shape)}")
    assert_rejected(ValueError, pattern, CONV[nd], bad, w, b)


@pytest.mark.parametrize("extra_dims", [-1, 1], ids=["too-few", "too-many"])
@pytest.mark.parametrize("nd", NDS)
def test_weight_with_the_wrong_number_of_dims_is_rejected(rng, nd, extra_dims):
    x, w, b = problem(rng, nd)
    bad = w[..., 0] if extra_dims < 0 else w[..., np.newaxis]
    pattern = rf"weight .*with {nd + 2} dims, got shape {shape_text(bad.shape)}"
    assert_rejected(ValueError, pattern, CONV[nd], x, bad, b)


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("nd", NDS)
def test_input_channels_not_matching_the_weight_are_rejected(rng, nd, batched):
    x, w, b = problem(rng, nd, c_in=2)
    x = x[:, :1] if batched else x[0, :1]
    pattern = re.escape(f"expected input with 2 channels (groups=1, weight {w.shape}), got 1")
    assert_rejected(ValueError, pattern, CONV[nd], x, w, b)


@pytest.mark.parametrize("nd", NDS)
def test_groups_not_dividing_the_output_channels_are_rejected(rng, nd):
    x, _, _ = problem(rng, nd, c_in=2)
    w = random_array(rng, (3, 1) + (3,) * nd, np.float64)
    pattern = re.escape(f"weight.shape[0] (out_channels) divisible by groups=2, "
                        f"got weight {w.shape}")
    assert_rejected(ValueError, pattern, CONV[nd], x, w, None, groups=2)


@pytest.mark.parametrize("nd", NDS)
def test_groups_not_dividing_the_input_channels_are_rejected(rng, nd):
    x, _, _ = problem(rng, nd, c_in=3)
    w = random_array(rng, (4, 1) + (3,) * nd, np.float64)
    pattern = re.escape(f"expected input with 2 channels (groups=2, weight {w.shape}), got 3")
    assert_rejected(ValueError, pattern, CONV[nd], x, w, None, groups=2)


@pytest.mark.parametrize("groups", [0, -1, -4])
@pytest.mark.parametrize("nd", NDS)
def test_groups_below_one_are_rejected(rng, nd, groups):
    x, w, b = problem(rng, nd)
    assert_rejected(ValueError, rf"expected groups >= 1, got {groups}\b", CONV[nd], x, w, b,
                    groups=groups)


@pytest.mark.parametrize("groups", [1.0, 2.5, "1", None, True, (1,)],
                         ids=["float", "fraction", "str", "None", "bool", "tuple"])
def test_groups_that_are_not_ints_are_rejected(rng, groups):
    x, w, b = problem(rng, 2)
    pattern = re.escape(f"expected groups to be an int, got {groups!r}")
    assert_rejected(TypeError, pattern, fc.conv2d, x, w, b, groups=groups)


def test_groups_accept_numpy_integers(rng):
    x, w, b = problem(rng, 2, c_in=2, c_out=4, groups=2)
    assert np.array_equal(fc.conv2d(x, w, b, groups=np.int64(2)), fc.conv2d(x, w, b, groups=2))


@pytest.mark.parametrize("nd", NDS)
def test_zero_size_kernel_is_rejected(rng, nd):
    x, w, b = problem(rng, nd)
    bad = w[..., :0]
    pattern = re.escape(f"expected kernel size >= 1 in every dimension, "
                        f"got weight shape {bad.shape}")
    assert_rejected(ValueError, pattern, CONV[nd], x, bad, b)


@pytest.mark.parametrize("nd", NDS)
def test_kernel_larger_than_the_input_is_rejected(rng, nd):
    x, w, b = problem(rng, nd, size=3, kernel=4)
    pattern = (r"kernel size 4 \(dilation 1: extent 4\) is larger than the padded input "
               r"size 3 in spatial dim 0")
    assert_rejected(ValueError, pattern, CONV[nd], x, w, b)


@pytest.mark.parametrize("nd", NDS)
def test_dilated_kernel_larger_than_the_padded_input_is_rejected(rng, nd):
    x, w, b = problem(rng, nd, size=5, kernel=3)
    dilation = (1,) * (nd - 1) + (4,)       # only the last dim overflows
    pattern = (rf"kernel size 3 \(dilation 4: extent 9\) is larger than the padded input "
               rf"size 7 in spatial dim {nd - 1}")
    assert_rejected(ValueError, pattern, CONV[nd], x, w, b, dilation=dilation, padding=1)


@pytest.mark.parametrize("bias_shape", [(2,), (4,), (3, 1), (1, 3), ()],
                         ids=["short", "long", "column", "row", "scalar"])
@pytest.mark.parametrize("nd", NDS)
def test_bias_of_the_wrong_shape_is_rejected(rng, nd, bias_shape):
    x, w, _ = problem(rng, nd, c_out=3)
    bias = random_array(rng, bias_shape, np.float64)
    pattern = re.escape(f"expected bias of shape (3,) (out_channels), got {bias_shape}")
    assert_rejected(ValueError, pattern, CONV[nd], x, w, bias)


# --------------------------------------------------------------------------
# stride, padding, dilation
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["stride", "dilation"])
@pytest.mark.parametrize("value", [0, -1, "tuple"])
@pytest.mark.parametrize("nd", NDS)
def test_stride_and_dilation_below_one_are_rejected(rng, nd, name, value):
    x, w, b = problem(rng, nd, size=7)
    if value == "tuple":
        value = (1,) * (nd - 1) + (0,)
    pattern = re.escape(f"expected {name} >= 1 in every dimension, got {value!r}")
    assert_rejected(ValueError, pattern, CONV[nd], x, w, b, **{name: value})


@pytest.mark.parametrize("name, value", [("stride", 2 ** 63), ("padding", 2 ** 62)])
def test_values_too_large_to_index_are_rejected_by_name(rng, name, value):
    x, w, b = problem(rng, 2)
    assert_rejected(ValueError, rf"{name}.*{value}", fc.conv2d, x, w, b, **{name: value})


@pytest.mark.parametrize("value", [-1, "tuple"])
@pytest.mark.parametrize("nd", NDS)
def test_negative_padding_is_rejected(rng, nd, value):
    x, w, b = problem(rng, nd, size=7)
    if value == "tuple":
        value = (1,) * (nd - 1) + (-2,)
    pattern = re.escape(f"expected padding >= 0 in every dimension, got {value!r}")
    assert_rejected(ValueError, pattern, CONV[nd], x, w, b, padding=value)


@pytest.mark.parametrize("name", ["stride", "padding", "dilation"])
@pytest.mark.parametrize("nd", NDS)
def test_tuples_of_the_wrong_length_are_rejected(rng, nd, name):
    x, w, b = problem(rng, nd, size=7)
    for value in [(1,) * (nd + 1), (), [1] * (nd + 2)]:
        pattern = re.escape(f"expected {name} to be an int or a tuple of {nd} ints, "
                            f"got {value!r} ({len(value)} values)")
        assert_rejected(ValueError, pattern, CONV[nd], x, w, b, **{name: value})


NOT_INTS = {"float": 1.5, "None": None, "bool": True, "float-in-tuple": (1.0, 1),
            "None-in-tuple": (1, None), "str": "2"}
NOT_INT_CASES = [(name, kind) for name in ("stride", "dilation", "padding") for kind in NOT_INTS
                 if (name, kind) != ("padding", "str")]   # a padding string: its own test


@pytest.mark.parametrize("name, kind", NOT_INT_CASES, ids=[f"{n}-{k}" for n, k in NOT_INT_CASES])
def test_hyperparameters_that_are_not_ints_are_rejected(rng, name, kind):
    x, w, b = problem(rng, 2, size=7)
    value = NOT_INTS[kind]
    pattern = re.escape(f"expected {name} to be an int or a tuple of 2 ints, got {value!r}")
    assert_rejected(TypeError, pattern, fc.conv2d, x, w, b, **{name: value})


@pytest.mark.parametrize("padding", ["full", "SAME", "Valid", ""])
@pytest.mark.parametrize("nd", NDS)
def test_unknown_padding_string_is_rejected(rng, nd, padding):
    x, w, b = problem(rng, nd)
    pattern = re.escape(f"expected padding to be 'valid', 'same', an int or a tuple of {nd} "
                        f"ints, got {padding!r}")
    assert_rejected(ValueError, pattern, CONV[nd], x, w, b, padding=padding)


@pytest.mark.parametrize("stride", [2, "tuple"])
@pytest.mark.parametrize("nd", NDS)
def test_same_padding_with_stride_above_one_is_rejected(rng, nd, stride):
    x, w, b = problem(rng, nd, size=7)
    if stride == "tuple":
        stride = (1,) * (nd - 1) + (3,)
    expanded = stride if isinstance(stride, tuple) else (stride,) * nd
    pattern = re.escape(f"padding='same' requires stride 1 in every dimension, "
                        f"got stride {expanded}")
    assert_rejected(ValueError, pattern, CONV[nd], x, w, b, stride=stride, padding="same")


# --------------------------------------------------------------------------
# padding_mode
# --------------------------------------------------------------------------

@pytest.mark.parametrize("padding_mode", ["mirror", "Zeros", "symmetric", "", None, 0])
@pytest.mark.parametrize("nd", NDS)
def test_unknown_padding_mode_is_rejected(rng, nd, padding_mode):
    x, w, b = problem(rng, nd)
    pattern = re.escape("expected padding_mode to be one of 'zeros', 'reflect', 'replicate', "
                        f"'circular', got {padding_mode!r}")
    assert_rejected(ValueError, pattern, CONV[nd], x, w, b, padding=1,
                    padding_mode=padding_mode)


@pytest.mark.parametrize("padding", [4, 6, "same-even"])
@pytest.mark.parametrize("nd", NDS)
def test_reflect_padding_not_smaller_than_the_input_is_rejected(rng, nd, padding):
    size = 4
    kernel = 3
    if padding == "same-even":
        size, kernel, padding = 2, 4, "same"        # pads (1, 2): the right pad is too big
        pads = (1, 2)
    else:
        pads = (padding, padding)
    x, w, b = problem(rng, nd, size=size, kernel=kernel)
    pattern = re.escape(f"padding_mode='reflect' needs padding smaller than the input size, "
                        f"got padding {pads} for size {size} in spatial dim 0")
    assert_rejected(ValueError, pattern, CONV[nd], x, w, b, padding=padding,
                    padding_mode="reflect")


@pytest.mark.parametrize("nd", NDS)
def test_reflect_padding_too_large_in_a_later_dim_is_rejected(rng, nd):
    x = random_array(rng, (1, 2) + (6,) * (nd - 1) + (3,), np.float64)
    w = random_array(rng, (3, 2) + (1,) * nd, np.float64)
    pattern = re.escape(f"got padding (3, 3) for size 3 in spatial dim {nd - 1}")
    assert_rejected(ValueError, pattern, CONV[nd], x, w, None, padding=3,
                    padding_mode="reflect")


@pytest.mark.parametrize("nd", NDS)
def test_circular_padding_larger_than_the_input_is_rejected(rng, nd):
    x, w, b = problem(rng, nd, size=4)
    pattern = re.escape("padding_mode='circular' needs padding no larger than the input size, "
                        "got padding (5, 5) for size 4 in spatial dim 0")
    assert_rejected(ValueError, pattern, CONV[nd], x, w, b, padding=5, padding_mode="circular")


@pytest.mark.parametrize("padding_mode", ["reflect", "circular"])
def test_padding_exactly_at_the_mode_limit_is_accepted(rng, padding_mode):
    size = 4
    padding = size - 1 if padding_mode == "reflect" else size
    x, w, b = problem(rng, 2, size=size)
    expected_shape = (1, 3, 2 * padding + 2, 2 * padding + 2)
    assert fc.conv2d(x, w, b, padding=padding, padding_mode=padding_mode).shape == expected_shape


# --------------------------------------------------------------------------
# algorithm
# --------------------------------------------------------------------------

BOGUS_ALGORITHMS = [a for a in ("Direct", "IM2COL", "im2col ", "no-such-algorithm", "", None)
                    if a not in fc.ALGORITHMS]


@pytest.mark.parametrize("algorithm", BOGUS_ALGORITHMS)
@pytest.mark.parametrize("nd", NDS)
def test_unknown_algorithm_is_rejected(rng, nd, algorithm):
    x, w, b = problem(rng, nd)
    choices = ", ".join(repr(a) for a in ("auto",) + tuple(fc.ALGORITHMS))
    pattern = re.escape(f"expected algorithm to be one of {choices}, got {algorithm!r}")
    assert_rejected(ValueError, pattern, CONV[nd], x, w, b, algorithm=algorithm)


# --------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------

NON_NUMERIC = {
    "object": lambda a: a.astype(object),
    "str": lambda a: a.astype(str),
    "bytes": lambda a: a.astype("S8"),
    "datetime": lambda a: np.zeros(a.shape, "datetime64[D]"),
    "timedelta": lambda a: np.zeros(a.shape, "timedelta64[s]"),
    "structured": lambda a: np.zeros(a.shape, [("re", "f8"), ("im", "f8")]),
}


@pytest.mark.parametrize("kind", list(NON_NUMERIC))
@pytest.mark.parametrize("name", ["input", "weight", "bias"])
def test_non_numeric_dtypes_are_rejected(rng, name, kind):
    arrays = dict(zip(("input", "weight", "bias"), problem(rng, 2)))
    arrays[name] = NON_NUMERIC[kind](arrays[name])
    pattern = re.escape(f"conv2d: {name} has dtype {arrays[name].dtype}, expected a numeric")
    assert_rejected(TypeError, pattern, fc.conv2d, arrays["input"], arrays["weight"],
                    arrays["bias"])


LONG_DTYPES = [t for t in (np.longdouble, np.clongdouble)
               if np.dtype(t) not in (np.dtype(np.float64), np.dtype(np.complex128))]


@pytest.mark.skipif(not LONG_DTYPES, reason="np.longdouble is float64 on this platform")
@pytest.mark.parametrize("dtype", LONG_DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("name", ["input", "weight", "bias"])
def test_extended_precision_dtypes_are_rejected(rng, name, dtype):
    arrays = dict(zip(("input", "weight", "bias"), problem(rng, 2)))
    arrays[name] = arrays[name].astype(dtype)
    pattern = re.escape(f"conv2d: unsupported dtype {np.dtype(dtype)}; supported dtypes are "
                        "float32, float64, complex64, complex128")
    assert_rejected(TypeError, pattern, fc.conv2d, arrays["input"], arrays["weight"],
                    arrays["bias"])


def test_ragged_list_input_is_rejected(rng):
    _, w, b = problem(rng, 1)
    ragged = [[[1.0, 2.0, 3.0], [1.0, 2.0]]]
    assert_rejected(TypeError, r"conv1d: input must be array-like, got list", fc.conv1d,
                    ragged, w, b)


# --------------------------------------------------------------------------
# out=
# --------------------------------------------------------------------------

@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("nd", NDS)
def test_out_of_the_wrong_shape_is_rejected(rng, nd, batched):
    x, w, b = problem(rng, nd)
    if not batched:
        x = x[0]
    shape = CONV[nd](x, w, b).shape
    for bad_shape in (shape[:-1] + (shape[-1] + 1,), (1,) + shape if not batched else shape[1:]):
        out = np.full(bad_shape, 7.0)
        pattern = re.escape(f"expected out of shape {shape}, got {bad_shape}")
        assert_rejected(ValueError, pattern, CONV[nd], x, w, b, out=out)


@pytest.mark.parametrize("out_dtype, in_dtype",
                         [(np.float32, np.float64), (np.float64, np.float32),
                          (np.complex128, np.float64), (np.float64, np.complex128),
                          (np.float64, np.uint8)],
                         ids=["f32-for-f64", "f64-for-f32", "c128-for-f64", "f64-for-c128",
                              "f64-for-uint8-f32"])
def test_out_of_the_wrong_dtype_is_rejected(rng, out_dtype, in_dtype):
    x, w, b = problem(rng, 2, dtype=in_dtype)
    if in_dtype == np.uint8:          # uint8 volume + float32 kernel computes in float32
        w, b = w.astype(np.float32), b.astype(np.float32)
    expected_dtype = fc.conv2d(x, w, b).dtype
    out = np.zeros((1, 3, 3, 3), out_dtype)
    pattern = re.escape(f"expected out of dtype {expected_dtype} (the result dtype), "
                        f"got {np.dtype(out_dtype)}")
    assert_rejected(ValueError, pattern, fc.conv2d, x, w, b, out=out)


@pytest.mark.parametrize("layout", ["strided", "fortran"])
def test_non_contiguous_out_is_rejected(rng, layout):
    x, w, b = problem(rng, 2)
    if layout == "strided":
        out = np.zeros((1, 3, 3, 6))[..., ::2]
    else:
        out = np.asfortranarray(np.zeros((1, 3, 3, 3)))
    pattern = re.escape(f"expected a C-contiguous out array, got strides {out.strides}")
    assert_rejected(ValueError, pattern, fc.conv2d, x, w, b, out=out)


def test_read_only_out_is_rejected(rng):
    x, w, b = problem(rng, 2)
    out = np.zeros((1, 3, 3, 3))
    out.flags.writeable = False
    assert_rejected(ValueError, r"expected a writable out array, got a read-only one",
                    fc.conv2d, x, w, b, out=out)


@pytest.mark.parametrize("out", [[[0.0]], 0.0, "out"], ids=["list", "float", "str"])
def test_out_that_is_not_an_ndarray_is_rejected(rng, out):
    x, w, b = problem(rng, 2)
    pattern = re.escape(f"expected out to be a numpy.ndarray, got {type(out).__name__}")
    assert_rejected(TypeError, pattern, fc.conv2d, x, w, b, out=out)


def test_error_messages_name_the_function(rng):
    x, w, b = problem(rng, 3)
    with pytest.raises(ValueError, match=r"^conv3d: "):
        fc.conv3d(x, w, b, stride=0)


def test_a_validated_call_never_lends_its_verdict_to_an_equal_comparing_value():
    """parse_conv remembers validated calls; True == 1 and 1.0 == 1 must still be refused."""
    x = np.ones((1, 2, 6, 6), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    fc.conv2d(x, w, stride=1, padding=1)                 # validated, remembered
    fc.conv2d(x, w, stride=1, padding=1)                 # served from the memo
    with pytest.raises(TypeError, match="stride"):
        fc.conv2d(x, w, stride=True, padding=1)
    with pytest.raises(TypeError, match="padding"):
        fc.conv2d(x, w, stride=1, padding=1.0)
    with pytest.raises(ValueError, match="bias"):
        fc.conv2d(x, w, np.ones(4, np.float32), stride=1, padding=1)
    with pytest.raises(ValueError, match="channels"):
        fc.conv2d(np.ones((1, 3, 6, 6), np.float32), w, stride=1, padding=1)
