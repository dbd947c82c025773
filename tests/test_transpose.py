"""Transposed convolution: fc.conv_transpose{1,2,3}d.

Checked against the float64 NumPy oracle (``reference.conv_transpose``) and,
when it is importable, against ``torch.nn.functional.conv_transposeNd``, over
dims x dtype x stride x padding x output_padding x dilation x groups x
batched/unbatched x algorithm x bias.  Also: argument errors, bit-exact
determinism (run to run and across thread counts) and conv -> conv_transpose
shape round trips.
"""
import inspect
import itertools
import os
import sys
import zlib

sys.path.insert(0, os.path.dirname(__file__))

import numpy as np
import pytest

from conftest import torch_single_threaded, assert_close_scaled as assert_close
import fastconv as fc
import reference

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - torch is optional
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


torch_one_thread = torch_single_threaded     # from conftest


DTYPES = [np.float32, np.float64, np.complex64, np.complex128]
ALGORITHMS = list(fc.ALGORITHMS) + ["auto"]
CONV_T = {1: fc.conv_transpose1d, 2: fc.conv_transpose2d, 3: fc.conv_transpose3d}
CONV = {1: fc.conv1d, 2: fc.conv2d, 3: fc.conv3d}

# Tolerance relative to the largest magnitude of the expected result.

# --------------------------------------------------------------------------- helpers

def random_array(rng, shape, dtype):
    """Uniform(-1, 1) data; complex dtypes get independent real and imaginary parts."""
    dtype = np.dtype(dtype)
    a = rng.uniform(-1, 1, shape)
    if dtype.kind == "c":
        a = a + 1j * rng.uniform(-1, 1, shape)
    return a.astype(dtype)




def seed_of(*parts):
    """A seed that is stable across processes (unlike hash())."""
    return zlib.crc32(repr(parts).encode())


def to_torch(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def same_bits(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


class Case:
    """One transposed-convolution configuration (weight layout (C_in, C_out/g, *k))."""

    def __init__(self, nd, c_in, cout_g, kernel, spatial, stride=1, padding=0,
                 output_padding=0, dilation=1, groups=1):
        self.nd, self.c_in, self.cout_g = nd, c_in, cout_g
        self.kernel, self.spatial = tuple(kernel), tuple(spatial)
        self.stride, self.padding = stride, padding
        self.output_padding, self.dilation, self.groups = output_padding, dilation, groups

    @property
    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding,
                    output_padding=self.output_padding, groups=self.groups,
                    dilation=self.dilation)

    def arrays(self, rng, dtype, batched, with_bias):
        x_shape = ((2,) if batched else ()) + (self.c_in,) + self.spatial
        x = random_array(rng, x_shape, dtype)
        w = random_array(rng, (self.c_in, self.cout_g) + self.kernel, dtype)
        b = random_array(rng, (self.cout_g * self.groups,), dtype) if with_bias else None
        return x, w, b

    def __repr__(self):
        return (f"{self.nd}d-cin{self.c_in}-cog{self.cout_g}-k{self.kernel}-s{self.stride}"
                f"-p{self.padding}-op{self.output_padding}-d{self.dilation}-g{self.groups}")


# output_padding is always valid: smaller than the stride or than the dilation in
# every dim.  Cases marked "op<d" use output_padding >= stride, allowed only because
# it is smaller than the dilation.  c_in=8/16 makes 'auto' pick im2col.
CASES = [
    # 1-D
    Case(1, 4, 2, (3,), (6,)),
    Case(1, 4, 3, (3,), (6,), stride=2, padding=1, output_padding=1),
    Case(1, 4, 2, (2,), (5,), stride=3, padding=2, output_padding=2, groups=2),
    Case(1, 4, 2, (3,), (6,), stride=1, padding=1, output_padding=1, dilation=2),  # op<d
    Case(1, 4, 1, (3,), (5,), stride=2, padding=0, output_padding=1, dilation=3, groups=4),
    Case(1, 6, 2, (4,), (4,), stride=3, padding=3, output_padding=0, dilation=2, groups=3),
    Case(1, 8, 4, (3,), (7,), stride=2, padding=1, output_padding=1),
    Case(1, 16, 3, (3,), (5,), stride=1, padding=2, output_padding=0, dilation=2, groups=2),
    # 2-D
    Case(2, 4, 2, (2, 3), (5, 4)),
    Case(2, 4, 2, (2, 3), (5, 4), stride=(1, 2), padding=(0, 1), output_padding=(1, 1),
         dilation=(2, 1), groups=2),  # op<d in dim 0
    Case(2, 4, 3, (3, 2), (4, 5), stride=(2, 3), padding=(1, 2), output_padding=(1, 2)),
    Case(2, 4, 1, (3, 3), (4, 4), stride=2, padding=1, output_padding=1, dilation=2, groups=4),
    Case(2, 6, 2, (2, 2), (3, 5), stride=(3, 1), padding=(2, 0), output_padding=(0, 0),
         dilation=(1, 3), groups=3),
    Case(2, 8, 4, (3, 3), (5, 5), stride=2, padding=1, output_padding=1),
    Case(2, 16, 2, (2, 3), (4, 3), stride=(2, 1), padding=(0, 1), output_padding=(1, 0),
         dilation=(1, 2), groups=2),
    # 3-D
    Case(3, 4, 2, (2, 2, 2), (3, 4, 3)),
    Case(3, 4, 2, (2, 3, 2), (3, 3, 4), stride=(2, 1, 2), padding=(1, 1, 0),
         output_padding=(1, 0, 1), groups=2),
    Case(3, 4, 1, (2, 2, 3), (3, 3, 3), stride=(1, 2, 3), padding=(0, 1, 2),
         output_padding=(1, 1, 2), dilation=(2, 2, 1), groups=4),  # op<d in dim 0
    Case(3, 6, 2, (3, 2, 2), (3, 4, 3), stride=2, padding=(1, 0, 1), output_padding=1,
         dilation=(1, 2, 1), groups=3),
    Case(3, 8, 4, (2, 2, 2), (3, 3, 4), stride=2, padding=0, output_padding=(1, 0, 1)),
    Case(3, 16, 2, (2, 2, 2), (3, 3, 3), stride=(1, 2, 1), padding=(1, 0, 0),
         output_padding=(0, 1, 0), dilation=(1, 1, 2), groups=2),
]

LAYOUTS = [(True, True), (True, False), (False, True), (False, False)]
LAYOUT_IDS = ["batched-bias", "batched-nobias", "unbatched-bias", "unbatched-nobias"]


def _reference(case, x, w, b):
    """The oracle on batched arrays; unbatched input gives unbatched output."""
    xb = x if x.ndim == case.nd + 2 else x[np.newaxis]
    out = reference.conv_transpose(xb, w, b, case.stride, case.padding,
                                   case.output_padding, case.groups, case.dilation)
    return out if x.ndim == case.nd + 2 else out[0]


def _expected_spatial(case):
    nd = case.nd
    t = lambda v: (v,) * nd if isinstance(v, int) else tuple(v)  # noqa: E731
    return tuple((n - 1) * s - 2 * p + d * (k - 1) + op + 1
                 for n, s, p, d, k, op in zip(case.spatial, t(case.stride), t(case.padding),
                                              t(case.dilation), case.kernel,
                                              t(case.output_padding)))


# --------------------------------------------------------------------------- vs oracle

@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_conv_transpose_matches_reference_and_torch(case, dtype, algorithm, layout):
    """One fastconv call, two oracles: the NumPy reference always, PyTorch when present."""
    batched, with_bias = layout
    rng = np.random.default_rng(seed_of(case, np.dtype(dtype).name))
    x, w, b = case.arrays(rng, dtype, batched, with_bias)
    x_copy, w_copy = x.copy(), w.copy()

    y = CONV_T[case.nd](x, w, b, **case.kwargs, algorithm=algorithm)

    expected = _reference(case, x, w, b)
    out_channels = case.cout_g * case.groups
    assert y.shape == ((2,) if batched else ()) + (out_channels,) + _expected_spatial(case)
    assert y.dtype == np.dtype(dtype)
    assert_close(y, expected, dtype)
    # Inputs are never modified.
    assert same_bits(x, x_copy) and same_bits(w, w_copy)

    if torch is not None:
        torch_fn = getattr(F, f"conv_transpose{case.nd}d")
        with torch_one_thread():
            expected = torch_fn(to_torch(x), to_torch(w), None if b is None else to_torch(b),
                                **case.kwargs).numpy()
        assert y.shape == expected.shape
        assert y.dtype == expected.dtype
        assert_close(y, expected, dtype)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_transpose_exhaustive_small_grid_matches_reference(nd):
    """Every stride x padding x dilation x valid output_padding x groups, float64."""
    rng = np.random.default_rng(nd)
    k, n = 2, 3
    x = random_array(rng, (1, 4) + (n,) * nd, np.float64)
    w = random_array(rng, (4, 1) + (k,) * nd, np.float64)
    checked = 0
    for s, p, d, g in itertools.product([1, 2, 3], [0, 1, 2], [1, 2], [1, 2, 4]):
        for op in range(max(s, d)):
            kwargs = dict(stride=s, padding=p, output_padding=op, groups=g, dilation=d)
            if (n - 1) * s - 2 * p + d * (k - 1) + op + 1 < 1:
                continue
            expected = reference.conv_transpose(x, w, None, s, p, op, g, d)
            for algorithm in ALGORITHMS:
                y = CONV_T[nd](x, w, **kwargs, algorithm=algorithm)
                assert y.shape == expected.shape, (kwargs, algorithm)
                np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12,
                                           err_msg=f"{kwargs} {algorithm}")
            checked += 1
    assert checked > 50


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_transpose_all_algorithms_agree(nd):
    """Every algorithm (and 'auto') gives the same result to rounding."""
    case = [c for c in CASES if c.nd == nd and c.c_in >= 8][0]
    rng = np.random.default_rng(11)
    x, w, b = case.arrays(rng, np.float64, True, True)
    results = [CONV_T[nd](x, w, b, **case.kwargs, algorithm=a) for a in ALGORITHMS]
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], rtol=1e-12, atol=1e-12)


def test_conv_transpose_output_padding_allowed_by_dilation_alone_matches_torch_shape():
    """output_padding >= stride is valid when it is below the dilation (as in PyTorch)."""
    x = np.ones((1, 1, 4))
    w = np.ones((1, 1, 3))
    y = fc.conv_transpose1d(x, w, stride=1, output_padding=2, dilation=3)
    assert y.shape == (1, 1, (4 - 1) * 1 + 3 * 2 + 2 + 1)
    np.testing.assert_allclose(
        y, reference.conv_transpose(x, w, None, 1, 0, 2, 1, 3), rtol=1e-12, atol=1e-12)
    if torch is not None:
        with torch_one_thread():
            t = F.conv_transpose1d(to_torch(x), to_torch(w), stride=1, output_padding=2,
                                   dilation=3)
        assert y.shape == tuple(t.shape)


def test_conv_transpose_list_arguments_and_out_parameter():
    rng = np.random.default_rng(3)
    x = random_array(rng, (2, 4, 3, 4), np.float64)
    w = random_array(rng, (4, 3, 2, 2), np.float64)
    expected = reference.conv_transpose(x, w, None, (2, 1), (1, 0), (1, 0), 1, (1, 2))
    out = np.empty(expected.shape)
    result = fc.conv_transpose2d(x.tolist(), w, None, [2, 1], [1, 0], [1, 0], 1, [1, 2],
                                 out=out)
    assert result is out
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_conv_transpose_empty_batch_gives_empty_result():
    x = np.zeros((0, 4, 5))
    w = np.ones((4, 2, 3))
    y = fc.conv_transpose1d(x, w, stride=2, output_padding=1)
    assert y.shape == (0, 2, (5 - 1) * 2 + 2 + 1 + 1)


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("nd", [1, 2, 3])
def test_output_padding_not_smaller_than_stride_or_dilation_is_rejected(nd):
    x = np.ones((1, 2) + (4,) * nd)
    w = np.ones((2, 1) + (2,) * nd)
    with pytest.raises(ValueError, match="output_padding smaller than stride or dilation"):
        CONV_T[nd](x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="output_padding smaller than stride or dilation"):
        CONV_T[nd](x, w, stride=1, output_padding=1, dilation=1)
    with pytest.raises(ValueError, match="output_padding smaller than stride or dilation"):
        CONV_T[nd](x, w, stride=2, output_padding=3, dilation=3)
    # A single offending dim is enough.
    op = (0,) * (nd - 1) + (2,)
    with pytest.raises(ValueError, match="output_padding smaller than stride or dilation"):
        CONV_T[nd](x, w, stride=2, output_padding=op)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_negative_output_padding_is_rejected(nd):
    x = np.ones((1, 2) + (4,) * nd)
    w = np.ones((2, 1) + (2,) * nd)
    with pytest.raises(ValueError, match=r"output_padding >= 0"):
        CONV_T[nd](x, w, stride=2, output_padding=-1)


@pytest.mark.parametrize("padding", ["same", "valid", "full"])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_padding_strings_are_rejected(nd, padding):
    x = np.ones((1, 2) + (4,) * nd)
    w = np.ones((2, 1) + (3,) * nd)
    with pytest.raises(ValueError, match="padding strings are for convolution only"):
        CONV_T[nd](x, w, padding=padding)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_input_channels_must_equal_weight_shape_0(nd):
    x = np.ones((1, 3) + (4,) * nd)
    w = np.ones((4, 2) + (2,) * nd)
    with pytest.raises(ValueError, match=r"expected input with 4 channels .*got 3"):
        CONV_T[nd](x, w)
    # The conv layout (C_out, C_in/groups) would accept 2*2 = 4 channels; transposed must not.
    x4 = np.ones((1, 2) + (4,) * nd)
    w4 = np.ones((4, 1) + (2,) * nd)
    with pytest.raises(ValueError, match=r"expected input with 4 channels .*got 2"):
        CONV_T[nd](x4, w4, groups=2)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_groups_must_divide_weight_shape_0(nd):
    x = np.ones((1, 3) + (4,) * nd)
    w = np.ones((3, 2) + (2,) * nd)
    with pytest.raises(ValueError, match=r"divisible by groups=2"):
        CONV_T[nd](x, w, groups=2)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_output_size_below_one_is_rejected(nd):
    x = np.ones((1, 2) + (1,) * nd)
    w = np.ones((2, 2) + (1,) * nd)
    # (1 - 1) * 1 - 2 * 1 + 0 + 0 + 1 = -1
    with pytest.raises(ValueError, match=r"output size .* below 1"):
        CONV_T[nd](x, w, padding=1)
    # Exactly zero is rejected as well: (2 - 1) * 1 - 2 * 1 + 0 + 0 + 1 = 0.
    x2 = np.ones((1, 2) + (2,) * nd)
    with pytest.raises(ValueError, match=r"output size .* below 1"):
        CONV_T[nd](x2, w, padding=1)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_negative_padding_is_rejected(nd):
    x = np.ones((1, 2) + (4,) * nd)
    w = np.ones((2, 2) + (2,) * nd)
    with pytest.raises(ValueError, match=r"padding >= 0"):
        CONV_T[nd](x, w, padding=-1)
    bad = (1,) * (nd - 1) + (-2,)
    with pytest.raises(ValueError, match=r"padding >= 0"):
        CONV_T[nd](x, w, padding=bad)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_padding_mode_is_not_a_parameter_of_conv_transpose(nd):
    func = CONV_T[nd]
    assert "padding_mode" not in inspect.signature(func).parameters
    x = np.ones((1, 2) + (4,) * nd)
    w = np.ones((2, 2) + (2,) * nd)
    for mode in ["reflect", "replicate", "circular", "zeros"]:
        with pytest.raises(TypeError, match="unexpected keyword argument 'padding_mode'"):
            func(x, w, padding_mode=mode)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_transpose_unknown_algorithm_is_rejected(nd):
    x = np.ones((1, 2) + (4,) * nd)
    w = np.ones((2, 2) + (2,) * nd)
    with pytest.raises(ValueError,
                       match=r"expected algorithm to be one of .*got 'no-such-algorithm'"):
        CONV_T[nd](x, w, algorithm="no-such-algorithm")


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_transpose_wrong_bias_shape_is_rejected(nd):
    x = np.ones((1, 4) + (4,) * nd)
    w = np.ones((4, 3) + (2,) * nd)
    # C_out = 3 * groups = 6; a bias of C_in entries is wrong.
    with pytest.raises(ValueError, match=r"expected bias of shape \(6,\)"):
        CONV_T[nd](x, w, np.ones(4), groups=2)


# --------------------------------------------------------------------------- determinism

def _determinism_problem(nd, dtype):
    rng = np.random.default_rng(100 + nd)
    spatial = {1: (16,), 2: (7, 8), 3: (4, 5, 4)}[nd]
    x = random_array(rng, (3, 16) + spatial, dtype)
    w = random_array(rng, (16, 8) + (3,) * nd, dtype)
    b = random_array(rng, (16,), dtype)
    return x, w, b, dict(stride=2, padding=1, output_padding=1, groups=2, dilation=1)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", [np.float32, np.complex64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_transpose_is_bitwise_deterministic_across_runs_and_threads(nd, dtype, algorithm):
    x, w, b, kwargs = _determinism_problem(nd, dtype)
    first = CONV_T[nd](x, w, b, **kwargs, algorithm=algorithm)
    again = CONV_T[nd](x, w, b, **kwargs, algorithm=algorithm)
    assert same_bits(first, again)

    previous = fc.get_num_threads()
    try:
        fc.set_num_threads(1)
        one = CONV_T[nd](x, w, b, **kwargs, algorithm=algorithm)
        fc.set_num_threads(2)
        two = CONV_T[nd](x, w, b, **kwargs, algorithm=algorithm)
    finally:
        fc.set_num_threads(previous)
    assert fc.get_num_threads() == previous
    assert same_bits(one, two)
    assert same_bits(one, first)


# --------------------------------------------------------------------------- round trips

def _conv_round_trip_configs(nd):
    """(L, k, s, p, d) per dim, valid for conv, in the spirit of PyTorch's shape tests."""
    for n, k, s, p, d in itertools.product(range(3, 9), [1, 2, 3], [1, 2, 3], [0, 1, 2],
                                           [1, 2]):
        if n + 2 * p >= d * (k - 1) + 1:
            yield n, k, s, p, d


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_then_conv_transpose_recovers_input_shape(nd):
    rng = np.random.default_rng(nd)
    configs = list(_conv_round_trip_configs(nd))
    if nd > 1:  # keep the run short: mix dims of different configs
        picks = [rng.choice(len(configs), size=nd) for _ in range(60)]
        configs = [tuple(zip(*[configs[i] for i in pick])) for pick in picks]
    else:
        configs = [tuple((v,) for v in c) for c in configs]
    for n, k, s, p, d in configs:
        x = np.ones((1, 2) + n)
        w = np.ones((3, 2) + k)
        y = CONV[nd](x, w, stride=s, padding=p, dilation=d)
        # The remainder the floor in the conv output size dropped.
        op = tuple((ni + 2 * pi - di * (ki - 1) - 1) % si
                   for ni, ki, si, pi, di in zip(n, k, s, p, d))
        wt = np.ones((3, 2) + k)
        back = CONV_T[nd](y, wt, stride=s, padding=p, output_padding=op, dilation=d)
        assert back.shape == x.shape, dict(n=n, k=k, s=s, p=p, d=d, op=op)
        # Without output_padding only the floor-free sizes come back.
        plain = CONV_T[nd](y, wt, stride=s, padding=p, dilation=d)
        assert plain.shape[2:] == tuple(ni - o for ni, o in zip(n, op))


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_transpose_then_conv_recovers_input_shape(nd):
    rng = np.random.default_rng(10 + nd)
    for _ in range(40):
        n = tuple(rng.integers(3, 7, nd))
        k = tuple(rng.integers(1, 4, nd))
        s = tuple(rng.integers(1, 4, nd))
        d = tuple(rng.integers(1, 3, nd))
        p = tuple(int(rng.integers(0, (di * (ki - 1)) // 2 + 1)) for ki, di in zip(k, d))
        op = tuple(int(rng.integers(0, si)) for si in s)
        x = np.ones((2, 3) + n)
        y = CONV_T[nd](x, np.ones((3, 2) + k), stride=s, padding=p, output_padding=op,
                       dilation=d)
        back = CONV[nd](y, np.ones((3, 2) + k), stride=s, padding=p, dilation=d)
        assert back.shape == x.shape, dict(n=n, k=k, s=s, p=p, d=d, op=op)


@needs_torch
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_transpose_output_shape_matches_torch_output_size(nd):
    """For each target size PyTorch's output_size accepts, our output_padding gives it."""
    x = np.ones((1, 2) + (4,) * nd)
    w = np.ones((2, 1) + (3,) * nd)
    torch_fn = getattr(F, f"conv_transpose{nd}d")
    module = getattr(torch.nn, f"ConvTranspose{nd}d")(2, 1, 3, stride=3, padding=1,
                                                      dtype=torch.float64)
    for extra in range(3):
        target = (4 - 1) * 3 - 2 + 2 + 1 + extra
        with torch_one_thread():
            t = module(to_torch(x), output_size=[target] * nd)
            expected = torch_fn(to_torch(x), to_torch(w), stride=3, padding=1,
                                output_padding=extra).numpy()
        ours = CONV_T[nd](x, w, stride=3, padding=1, output_padding=extra)
        assert ours.shape == tuple(t.shape)
        np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12)
