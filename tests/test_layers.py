"""Tests of the layer classes (SPEC §3): Conv1d/2d/3d and ConvTranspose1d/2d/3d.

What is checked, in order: attributes and repr against ``torch.nn``; the
default initialisation; forward, input gradient and parameter gradients
against ``torch.nn`` with the weights copied over (every padding mode,
batched and unbatched, every dtype, groups, stride, dilation,
output_padding); gradient accumulation and ``zero_grad``; what ``forward``
keeps for ``backward``; state_dict / parameters / pickling; constructor
validation; and a finite-difference check of ``backward`` that needs no torch.
"""
import copy
import math
import os
import pickle
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import torch_single_threaded, assert_close_scaled as assert_close
import fastconv as fc

sys.path.insert(0, os.path.dirname(__file__))
import reference  # noqa: E402  (independent float64 oracle)

try:
    import torch
except ImportError:  # the torch comparisons are skipped, everything else runs
    torch = None

requires_torch = pytest.mark.skipif(torch is None, reason="needs PyTorch for the comparison")

CONV = {1: fc.Conv1d, 2: fc.Conv2d, 3: fc.Conv3d}
TRANSPOSE = {1: fc.ConvTranspose1d, 2: fc.ConvTranspose2d, 3: fc.ConvTranspose3d}
ALL_LAYERS = list(CONV.values()) + list(TRANSPOSE.values())
DTYPES = [np.float32, np.float64, np.complex64, np.complex128]
PADDING_MODES = ["zeros", "reflect", "replicate", "circular"]
# Spatial input sizes per dimensionality: small, distinct, not square.
SPATIAL = {1: (9,), 2: (7, 8), 3: (5, 6, 7)}


def layer_id(cls):
    return cls.__name__


def nd_of(cls):
    return cls._nd if hasattr(cls, "_nd") else int(cls.__name__[-2])


def is_transposed(cls):
    return cls.__name__.startswith("ConvTranspose")


def random_array(shape, dtype, rng):
    """Standard normal values of ``dtype`` (independent real and imaginary parts)."""
    a = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * rng.standard_normal(shape)
    return a.astype(dtype)


# -- torch helpers ----------------------------------------------------------------------


def torch_dtype(dtype):
    return {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64,
            np.dtype(np.complex64): torch.complex64,
            np.dtype(np.complex128): torch.complex128}[np.dtype(dtype)]


def make_pair(cls, in_channels, out_channels, dtype=np.float32, **kwargs):
    """(fastconv layer, torch.nn layer) with the same arguments and torch's weights.

    The weights go from torch to fastconv through ``load_state_dict`` with
    ``tensor.detach().numpy()``, the way a user would move them.
    """
    torch.manual_seed(0)
    theirs = getattr(torch.nn, cls.__name__)(in_channels, out_channels,
                                             dtype=torch_dtype(dtype), **kwargs)
    ours = cls(in_channels, out_channels, dtype=dtype, **kwargs)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


torch_on_one_thread = torch_single_threaded     # from conftest


def check_against_torch(ours, theirs, x, seed=1):
    """Forward, input gradient, weight_grad and bias_grad of ``ours`` equal torch's."""
    dtype = ours.dtype
    y = ours(x)
    xt = torch.tensor(x, requires_grad=True)
    with torch_on_one_thread():
        yt = theirs(xt)
    assert y.dtype == dtype
    assert_close(y, yt.detach().numpy(), dtype)

    g = random_array(y.shape, dtype, np.random.default_rng(seed))
    grad_input = ours.backward(g)
    with torch_on_one_thread():
        yt.backward(torch.from_numpy(g))
    assert grad_input.shape == x.shape and grad_input.dtype == dtype
    assert_close(grad_input, xt.grad.numpy(), dtype)
    assert ours.weight_grad.dtype == dtype
    assert_close(ours.weight_grad, theirs.weight.grad.numpy(), dtype)
    if theirs.bias is None:
        assert ours.bias is None and ours.bias_grad is None
    else:
        assert_close(ours.bias_grad, theirs.bias.grad.numpy(), dtype)


def per_nd(case, nd):
    """A case with 3-tuples cut down to ``nd`` entries (ints and strings unchanged)."""
    return {k: v[:nd] if isinstance(v, tuple) else v for k, v in case.items()}


# -- attributes and repr ----------------------------------------------------------------

REPR_CASES_CONV = [
    dict(kernel_size=1),
    dict(kernel_size=3, stride=2),
    dict(kernel_size=(3, 1, 2), stride=(1, 2, 3)),
    dict(kernel_size=3, padding=1),
    dict(kernel_size=3, padding=(0, 1, 2)),
    dict(kernel_size=3, padding="same"),
    dict(kernel_size=4, padding="same", dilation=2, padding_mode="reflect"),
    dict(kernel_size=3, padding="valid"),
    dict(kernel_size=3, dilation=(1, 2, 3)),
    dict(kernel_size=3, groups=2),
    dict(kernel_size=3, bias=False),
    dict(kernel_size=3, padding=1, padding_mode="reflect"),
    dict(kernel_size=3, padding=2, padding_mode="replicate", groups=4, bias=False),
    dict(kernel_size=3, padding=1, padding_mode="circular", stride=2, dilation=2),
    dict(kernel_size=[3, 2, 1], stride=[2, 1, 1], padding=[1, 0, 0]),   # lists become tuples
    dict(kernel_size=3, padding=0, dilation=1, groups=1, bias=True, padding_mode="zeros"),
]
REPR_CASES_TRANSPOSE = [
    dict(kernel_size=1),
    dict(kernel_size=3, stride=2),
    dict(kernel_size=3, stride=2, output_padding=1),
    dict(kernel_size=(3, 1, 2), stride=(2, 3, 1), output_padding=(1, 2, 0)),
    dict(kernel_size=3, padding=1),
    dict(kernel_size=3, padding=(0, 1, 2)),
    dict(kernel_size=3, dilation=2, output_padding=1),
    dict(kernel_size=3, groups=2, bias=False),
    dict(kernel_size=2, stride=3, padding=1, output_padding=2, groups=4, bias=False,
         dilation=2),
    dict(kernel_size=3, padding_mode="zeros", output_padding=0, dilation=1),
]


def cut(case, nd):
    """Like per_nd, but lists too (they stand for user-supplied sequences)."""
    return {k: (type(v)(v[:nd]) if isinstance(v, (tuple, list)) else v)
            for k, v in case.items()}


ATTRIBUTES = ["in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
              "output_padding", "groups", "padding_mode"]


def repr_params():
    for nd in (1, 2, 3):
        for i, case in enumerate(REPR_CASES_CONV):
            yield pytest.param(CONV[nd], cut(case, nd), id=f"Conv{nd}d-{i}")
        for i, case in enumerate(REPR_CASES_TRANSPOSE):
            yield pytest.param(TRANSPOSE[nd], cut(case, nd), id=f"ConvTranspose{nd}d-{i}")


@requires_torch
@pytest.mark.parametrize("cls, kwargs", list(repr_params()))
def test_repr_and_attributes_match_torch(cls, kwargs):
    ours = cls(4, 8, **kwargs)
    theirs = getattr(torch.nn, cls.__name__)(4, 8, **kwargs)
    assert repr(ours) == repr(theirs)
    for name in ATTRIBUTES:
        assert getattr(ours, name) == getattr(theirs, name), name
        assert type(getattr(ours, name)) is type(getattr(theirs, name)), name
    assert ours.weight.shape == tuple(theirs.weight.shape)
    assert (ours.bias is None) == (theirs.bias is None)
    if ours.bias is not None:
        assert ours.bias.shape == tuple(theirs.bias.shape)


@st.composite
def layer_arguments(draw):
    """Valid constructor arguments for any of the six layers (as torch accepts them)."""
    nd = draw(st.integers(1, 3))
    transposed = draw(st.booleans())
    groups = draw(st.integers(1, 3))
    in_channels = groups * draw(st.integers(1, 3))
    out_channels = groups * draw(st.integers(1, 3))

    def ints(lo, hi):
        return st.one_of(st.integers(lo, hi), st.tuples(*[st.integers(lo, hi)] * nd))

    kw = dict(kernel_size=draw(ints(1, 4)), stride=draw(ints(1, 3)),
              dilation=draw(ints(1, 3)), groups=groups, bias=draw(st.booleans()))
    if transposed:
        kw["padding"] = draw(ints(0, 2))
        stride = kw["stride"] if isinstance(kw["stride"], tuple) else (kw["stride"],) * nd
        dil = kw["dilation"] if isinstance(kw["dilation"], tuple) else (kw["dilation"],) * nd
        kw["output_padding"] = tuple(draw(st.integers(0, max(s, d) - 1))
                                     for s, d in zip(stride, dil))
    else:
        kw["padding_mode"] = draw(st.sampled_from(PADDING_MODES))
        padding = draw(st.one_of(ints(0, 2), st.just("valid"), st.just("same")))
        if padding == "same":
            kw["stride"] = 1
        kw["padding"] = padding
    cls = (TRANSPOSE if transposed else CONV)[nd]
    return cls, in_channels, out_channels, kw


@requires_torch
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer_arguments())
def test_repr_and_attributes_match_torch_for_random_arguments(args):
    cls, in_channels, out_channels, kw = args
    ours = cls(in_channels, out_channels, **kw)
    theirs = getattr(torch.nn, cls.__name__)(in_channels, out_channels, **kw)
    assert repr(ours) == repr(theirs)
    for name in ATTRIBUTES:
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.weight.shape == tuple(theirs.weight.shape)


@pytest.mark.parametrize("cls, expected", [
    (fc.Conv1d, "Conv1d(1, 3, kernel_size=(1,), stride=(1,))"),
    (fc.Conv2d, "Conv2d(1, 3, kernel_size=(1, 1), stride=(1, 1))"),
    (fc.Conv3d, "Conv3d(1, 3, kernel_size=(1, 1, 1), stride=(1, 1, 1))"),
    (fc.ConvTranspose1d, "ConvTranspose1d(1, 3, kernel_size=(1,), stride=(1,))"),
    (fc.ConvTranspose2d, "ConvTranspose2d(1, 3, kernel_size=(1, 1), stride=(1, 1))"),
    (fc.ConvTranspose3d, "ConvTranspose3d(1, 3, kernel_size=(1, 1, 1), stride=(1, 1, 1))"),
], ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_repr_of_default_layer_is_pytorchs_without_torch(cls, expected):
    assert repr(cls(1, 3, 1)) == expected


def test_repr_prints_non_default_fields_as_pytorch_does_without_torch():
    # Strings written out from PyTorch 2.13's repr, so this runs without torch.
    assert repr(fc.Conv2d(2, 4, 3, padding="same", groups=2, bias=False,
                          padding_mode="reflect")) == (
        "Conv2d(2, 4, kernel_size=(3, 3), stride=(1, 1), padding=same, groups=2, "
        "bias=False, padding_mode=reflect)")
    assert repr(fc.ConvTranspose2d(2, 4, 3, output_padding=1, stride=2, dilation=2)) == (
        "ConvTranspose2d(2, 4, kernel_size=(3, 3), stride=(2, 2), dilation=(2, 2), "
        "output_padding=(1, 1))")
    assert repr(fc.Conv1d(2, 4, 3, padding="valid")) == (
        "Conv1d(2, 4, kernel_size=(3,), stride=(1,), padding=valid)")


@pytest.mark.parametrize("cls", ALL_LAYERS, ids=layer_id)
def test_attributes_are_tuples_and_parameters_have_pytorch_shapes(cls):
    nd = nd_of(cls)
    layer = cls(4, 6, 3, stride=2, padding=1, groups=2)
    for name in ("kernel_size", "stride", "padding", "dilation", "output_padding"):
        value = getattr(layer, name)
        assert isinstance(value, tuple) and len(value) == nd, name
    assert layer.kernel_size == (3,) * nd and layer.stride == (2,) * nd
    assert layer.padding == (1,) * nd and layer.dilation == (1,) * nd
    assert layer.output_padding == (0,) * nd
    assert (layer.in_channels, layer.out_channels, layer.groups) == (4, 6, 2)
    assert layer.padding_mode == "zeros"
    if is_transposed(cls):
        assert layer.weight.shape == (4, 3) + (3,) * nd     # (C_in, C_out/groups, *k)
    else:
        assert layer.weight.shape == (6, 2) + (3,) * nd     # (C_out, C_in/groups, *k)
    assert layer.bias.shape == (6,)
    assert layer.weight.dtype == layer.bias.dtype == np.float32
    assert layer.weight_grad.shape == layer.weight.shape and not layer.weight_grad.any()
    assert layer.bias_grad.shape == (6,) and not layer.bias_grad.any()


def test_padding_string_attribute_stays_a_string():
    assert fc.Conv2d(2, 2, 3, padding="same").padding == "same"
    assert fc.Conv3d(2, 2, 3, padding="valid").padding == "valid"


# -- initialisation ---------------------------------------------------------------------


def fan_in_bound(layer):
    return 1.0 / math.sqrt(layer.weight.shape[1] * math.prod(layer.kernel_size))


@pytest.mark.parametrize("cls", ALL_LAYERS, ids=layer_id)
def test_default_init_is_uniform_within_one_over_sqrt_fan_in(cls):
    nd = nd_of(cls)
    kernel = {1: 9, 2: 3, 3: (3, 3, 2)}[nd]
    layer = cls(64, 96, kernel, groups=2, rng=123)
    w, b = layer.weight.astype(np.float64), layer.bias.astype(np.float64)
    bound = fan_in_bound(layer)
    # fan-in is weight.shape[1] * prod(kernel): C_in/groups for convolution,
    # C_out/groups for transposed convolution (PyTorch computes it from the weight).
    expected_fan_in = (48 if is_transposed(cls) else 32) * math.prod(layer.kernel_size)
    assert bound == pytest.approx(1 / math.sqrt(expected_fan_in))
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    # Uniform on [-b, b]: the extremes come close to +-b, the mean is ~0, the
    # variance ~b^2/3 and each tenth of the interval holds ~a tenth of the values.
    n = w.size
    assert w.max() > 0.99 * bound and w.min() < -0.99 * bound
    assert abs(w.mean()) < 5 * bound / math.sqrt(3 * n)
    assert w.var() == pytest.approx(bound ** 2 / 3, rel=0.05)
    counts, _ = np.histogram(w, bins=10, range=(-bound, bound))
    assert np.all(np.abs(counts - n / 10) < 5 * math.sqrt(n / 10))
    assert layer.weight.dtype == layer.bias.dtype == np.float32


@requires_torch
@pytest.mark.parametrize("cls", ALL_LAYERS, ids=layer_id)
def test_init_bound_is_the_one_torch_uses(cls):
    # Torch's own draws fill the same interval: its max |w| approaches our bound.
    ours = cls(12, 18, 3, groups=3, rng=0)
    torch.manual_seed(0)
    theirs = getattr(torch.nn, cls.__name__)(12, 18, 3, groups=3)
    bound = fan_in_bound(ours)
    for t in (theirs.weight, theirs.bias):
        a = np.abs(t.detach().numpy())
        assert a.max() <= bound
    assert np.abs(theirs.weight.detach().numpy()).max() > 0.95 * bound
    assert np.abs(ours.weight).max() > 0.95 * bound


@pytest.mark.parametrize("cls", ALL_LAYERS, ids=layer_id)
def test_same_seed_gives_same_weights_and_different_seeds_differ(cls):
    a, b, c = cls(4, 6, 3, rng=7), cls(4, 6, 3, rng=7), cls(4, 6, 3, rng=8)
    np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(a.bias, b.bias)
    assert not np.array_equal(a.weight, c.weight)
    # rng=None draws fresh entropy: two layers differ.
    assert not np.array_equal(cls(4, 6, 3).weight, cls(4, 6, 3).weight)


@pytest.mark.parametrize("cls", ALL_LAYERS, ids=layer_id)
def test_generator_is_accepted_and_advanced(cls):
    gen = np.random.default_rng(5)
    first, second = cls(4, 6, 3, rng=gen), cls(4, 6, 3, rng=gen)
    assert not np.array_equal(first.weight, second.weight)
    again = cls(4, 6, 3, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(first.weight, again.weight)
    # A numpy integer is a seed too.
    np.testing.assert_array_equal(cls(4, 6, 3, rng=np.int64(9)).weight,
                                  cls(4, 6, 3, rng=9).weight)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("cls", ALL_LAYERS, ids=layer_id)
def test_complex_init_draws_independent_real_and_imaginary_parts(cls, dtype):
    layer = cls(32, 48, 3, rng=1, dtype=dtype)
    assert layer.weight.dtype == layer.bias.dtype == dtype
    bound = fan_in_bound(layer)
    for p in (layer.weight, layer.bias):
        assert np.abs(p.real).max() <= bound and np.abs(p.imag).max() <= bound
        assert np.all(p.imag != 0) and not np.array_equal(p.real, p.imag)
    re, im = layer.weight.real.ravel(), layer.weight.imag.ravel()
    assert abs(np.corrcoef(re, im)[0, 1]) < 5 / math.sqrt(re.size)
    assert im.var() == pytest.approx(bound ** 2 / 3, rel=0.1)


# -- forward and gradients against torch ------------------------------------------------

# Tuples hold one value per spatial dim (cut to nd); channels default to 4 -> 6.
CONV_CASES = {
    "defaults": dict(kernel_size=3),
    "zeros-tuple-padding-stride": dict(kernel_size=(3, 2, 3), padding=(1, 0, 2),
                                       stride=(2, 1, 3)),
    "reflect": dict(kernel_size=3, padding=2, padding_mode="reflect"),
    "reflect-dilation-stride": dict(kernel_size=(2, 3, 2), padding=(1, 2, 1),
                                    dilation=(2, 1, 3), stride=2, padding_mode="reflect"),
    "replicate-groups": dict(kernel_size=3, padding=(2, 1, 3), padding_mode="replicate",
                             groups=2),
    "circular-stride": dict(kernel_size=3, padding=(1, 2, 1), stride=(1, 2, 2),
                            padding_mode="circular"),
    "circular-depthwise": dict(in_channels=4, out_channels=8, groups=4, kernel_size=3,
                               padding=2, dilation=2, padding_mode="circular"),
    "same-even-kernel-reflect": dict(kernel_size=(4, 2, 3), padding="same",
                                     dilation=(1, 2, 1), padding_mode="reflect"),
    "same-replicate-no-bias": dict(kernel_size=2, padding="same", padding_mode="replicate",
                                   bias=False),
    "same-circular-dilated": dict(kernel_size=3, padding="same", dilation=2,
                                  padding_mode="circular"),
    "valid-groups-stride-no-bias": dict(kernel_size=2, padding="valid", groups=2, stride=2,
                                        bias=False),
}
TRANSPOSE_CASES = {
    "defaults": dict(kernel_size=3),
    "stride-output_padding": dict(kernel_size=3, stride=2, output_padding=1),
    "tuple-arguments": dict(kernel_size=(2, 3, 1), stride=(3, 1, 2), padding=(1, 1, 0),
                            output_padding=(2, 0, 1)),
    "output_padding-below-dilation": dict(kernel_size=2, dilation=3, output_padding=2),
    "groups-padding-no-bias": dict(kernel_size=3, groups=2, stride=2, padding=1, bias=False),
    "depthwise-dilated": dict(in_channels=4, out_channels=8, groups=4, kernel_size=3,
                              stride=2, dilation=2, padding=2, output_padding=1),
}


def forward_params():
    for nd in (1, 2, 3):
        for name, case in CONV_CASES.items():
            yield pytest.param(CONV[nd], per_nd(case, nd), id=f"Conv{nd}d-{name}")
        for name, case in TRANSPOSE_CASES.items():
            yield pytest.param(TRANSPOSE[nd], per_nd(case, nd), id=f"ConvTranspose{nd}d-{name}")


@requires_torch
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("cls, case", list(forward_params()))
def test_forward_and_gradients_match_torch(cls, case, dtype, batched):
    case = dict(case)
    in_channels, out_channels = case.pop("in_channels", 4), case.pop("out_channels", 6)
    ours, theirs = make_pair(cls, in_channels, out_channels, dtype, **case)
    shape = ((2,) if batched else ()) + (in_channels,) + SPATIAL[nd_of(cls)]
    x = random_array(shape, dtype, np.random.default_rng(0))
    check_against_torch(ours, theirs, x)


@requires_torch
@pytest.mark.parametrize("cls", ALL_LAYERS, ids=layer_id)
def test_real_input_to_complex_layer_matches_torch(cls):
    ours, theirs = make_pair(cls, 2, 4, np.complex64, kernel_size=3, padding=1)
    x = random_array((2, 2) + SPATIAL[nd_of(cls)], np.float32, np.random.default_rng(3))
    y = ours(x)
    assert y.dtype == np.complex64
    with torch_on_one_thread():
        expected = theirs(torch.from_numpy(x.astype(np.complex64))).detach().numpy()
    assert_close(y, expected, np.complex64)


def test_forward_agrees_with_the_numpy_oracle_without_torch():
    rng = np.random.default_rng(4)
    layer = fc.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(2, 1), dilation=(1, 2),
                      groups=2, padding_mode="reflect", dtype=np.float64, rng=0)
    x = rng.standard_normal((2, 4, 7, 8))
    expected = reference.conv(x, layer.weight, layer.bias, stride=(2, 1), padding=(2, 1),
                              dilation=(1, 2), groups=2, padding_mode="reflect")
    assert_close(layer(x), expected, np.float64)

    tlayer = fc.ConvTranspose3d(4, 6, (2, 3, 1), stride=(2, 1, 3), padding=(1, 0, 0),
                                output_padding=(1, 0, 2), groups=2, dtype=np.complex128, rng=0)
    x = random_array((2, 4, 3, 4, 2), np.complex128, rng)
    expected = reference.conv_transpose(x, tlayer.weight, tlayer.bias, stride=(2, 1, 3),
                                        padding=(1, 0, 0), output_padding=(1, 0, 2), groups=2)
    assert_close(tlayer(x), expected, np.complex128)


def test_call_is_forward():
    layer = fc.Conv1d(2, 3, 3, rng=0)
    x = np.random.default_rng(0).standard_normal((2, 2, 8)).astype(np.float32)
    np.testing.assert_array_equal(layer(x), layer.forward(x))


# -- accumulation, zero_grad, what backward uses ----------------------------------------


@requires_torch
@pytest.mark.parametrize("cls", ALL_LAYERS, ids=layer_id)
def test_gradients_accumulate_over_two_backward_calls_and_zero_grad_resets(cls):
    ours, theirs = make_pair(cls, 4, 6, np.float64, kernel_size=3, stride=2, padding=1,
                             groups=2)
    rng = np.random.default_rng(0)
    spatial = SPATIAL[nd_of(cls)]
    for step in range(2):           # two different inputs, two backward calls
        x = rng.standard_normal((2, 4) + spatial)
        y = ours(x)
        g = rng.standard_normal(y.shape)
        grad_input = ours.backward(g)
        xt = torch.tensor(x, requires_grad=True)
        with torch_on_one_thread():
            theirs(xt).backward(torch.from_numpy(g))   # torch adds into .grad as well
        assert_close(grad_input, xt.grad.numpy(), np.float64)   # no accumulation here
    assert_close(ours.weight_grad, theirs.weight.grad.numpy(), np.float64)
    assert_close(ours.bias_grad, theirs.bias.grad.numpy(), np.float64)

    ours.zero_grad()
    assert ours.weight_grad.shape == ours.weight.shape and not ours.weight_grad.any()
    assert ours.bias_grad.shape == (6,) and not ours.bias_grad.any()
    assert ours.weight_grad.dtype == ours.bias_grad.dtype == np.float64
    # After zero_grad, one backward gives exactly one step's gradients.
    theirs.zero_grad()
    x = rng.standard_normal((2, 4) + spatial)
    check_against_torch(ours, theirs, x)


@pytest.mark.parametrize("cls", ALL_LAYERS, ids=layer_id)
def test_two_backward_calls_add_up_without_torch(cls):
    rng = np.random.default_rng(1)
    layer = cls(2, 4, 3, padding=1, dtype=np.float64, rng=0)
    xs = [rng.standard_normal((2, 2) + SPATIAL[nd_of(cls)]) for _ in range(2)]
    singles = []
    for x in xs:
        fresh = copy.deepcopy(layer)
        y = fresh(x)
        fresh.backward(np.ones_like(y))
        singles.append((fresh.weight_grad, fresh.bias_grad))
    for x in xs:
        y = layer(x)
        layer.backward(np.ones_like(y))
    assert_close(layer.weight_grad, singles[0][0] + singles[1][0], np.float64)
    assert_close(layer.bias_grad, singles[0][1] + singles[1][1], np.float64)


def test_backward_twice_after_one_forward_accumulates_twice():
    layer = fc.Conv2d(1, 1, 1, bias=True, dtype=np.float64, rng=0)
    x = np.arange(6.0).reshape(1, 1, 2, 3)
    y = layer(x)
    layer.backward(np.ones_like(y))
    layer.backward(np.ones_like(y))
    np.testing.assert_allclose(layer.weight_grad.ravel(), [2 * x.sum()])
    np.testing.assert_allclose(layer.bias_grad, [12.0])


@pytest.mark.parametrize("cls", ALL_LAYERS, ids=layer_id)
def test_backward_before_forward_raises_runtime_error(cls):
    layer = cls(2, 2, 1)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((1, 2) + (1,) * nd_of(cls), np.float32))


def test_backward_with_wrong_grad_output_shape_raises_value_error():
    layer = fc.Conv2d(2, 3, 3, rng=0)
    layer(np.ones((1, 2, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"expected grad_output of shape \(1, 3, 3, 3\)"):
        layer.backward(np.ones((1, 3, 5, 5), np.float32))


def test_complex_input_to_real_layer_raises_type_error():
    layer = fc.Conv1d(1, 1, 1, rng=0)
    with pytest.raises(TypeError, match="expected real input"):
        layer(np.ones((1, 1, 3), np.complex64))


@pytest.mark.parametrize("cls", [fc.Conv1d, fc.ConvTranspose1d], ids=layer_id)
def test_complex_grad_output_to_real_layer_raises_type_error(cls):
    # The mirror of the forward check above (torch rejects it as well): a real
    # layer's output is real, so a complex gradient for it is a caller's error.
    layer = cls(1, 1, 1, rng=0)
    y = layer(np.ones((1, 1, 3), np.float32))
    with pytest.raises(TypeError, match="complex"):
        layer.backward(np.full(y.shape, 1 + 1j, np.complex64))


def input_kinds():
    """Ways to hand forward an array whose memory the caller can still change."""
    yield pytest.param(lambda a: a, id="ndarray")
    yield pytest.param(lambda a: a.astype(np.float64), id="float64-ndarray")  # gets converted
    yield pytest.param(lambda a: a[:, :, ::-1], id="reversed-view")
    yield pytest.param(lambda a: np.asfortranarray(a), id="fortran-order")
    yield pytest.param(
        lambda a: memoryview(a), id="memoryview")
    if torch is not None:
        yield pytest.param(
            lambda a: torch.from_numpy(a), id="torch-tensor")


@pytest.mark.parametrize("make_input", list(input_kinds()))
@pytest.mark.parametrize("cls", [fc.Conv2d, fc.ConvTranspose2d], ids=layer_id)
def test_changing_the_input_in_place_after_forward_does_not_change_gradients(cls, make_input):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    layer = cls(3, 4, 3, padding=1, rng=0)
    pristine = copy.deepcopy(layer)
    arr = base.copy()
    handed = make_input(arr)
    # The same values, in an array nobody else holds.
    g_shape = pristine(np.array(np.asarray(handed))).shape
    g = rng.standard_normal(g_shape).astype(np.float32)
    expected_input_grad = pristine.backward(g)

    layer(handed)
    target = handed if isinstance(handed, np.ndarray) else arr
    if torch is not None and isinstance(handed, torch.Tensor):
        handed.mul_(-3.0)          # the way a torch user would change it
    else:
        target[...] = 99.0         # the caller reuses their buffer
    grad_input = layer.backward(g)
    np.testing.assert_allclose(layer.weight_grad, pristine.weight_grad, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad_input, expected_input_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", ALL_LAYERS, ids=layer_id)
def test_updating_the_weight_between_forward_and_backward_uses_forwards_weight(cls):
    # A plain SGD loop may update layer.weight before the next backward; backward
    # must differentiate the forward that actually ran.
    rng = np.random.default_rng(2)
    layer = cls(2, 3, 3, dtype=np.float64, rng=0)
    pristine = copy.deepcopy(layer)
    x = rng.standard_normal((2, 2) + SPATIAL[nd_of(cls)])
    y = layer(x)
    g = rng.standard_normal(y.shape)
    pristine(x)
    expected = pristine.backward(g)
    layer.weight -= 0.5                     # in place
    assert_close(layer.backward(g), expected, np.float64)


@pytest.mark.parametrize("cls", ALL_LAYERS, ids=layer_id)
def test_unbatched_input_gives_unbatched_output_and_gradient(cls):
    layer = cls(2, 3, 3, padding=1, dtype=np.float64, rng=0)
    x = np.random.default_rng(0).standard_normal((2,) + SPATIAL[nd_of(cls)])
    y = layer(x)
    batched = copy.deepcopy(layer)
    yb = batched(x[np.newaxis])
    assert y.shape == yb.shape[1:]
    assert_close(y, yb[0], np.float64)
    g = np.random.default_rng(1).standard_normal(y.shape)
    gi = layer.backward(g)
    assert gi.shape == x.shape
    assert_close(gi, batched.backward(g[np.newaxis])[0], np.float64)
    assert_close(layer.weight_grad, batched.weight_grad, np.float64)


@pytest.mark.parametrize("cls", ALL_LAYERS, ids=layer_id)
def test_empty_batch_gives_empty_output_and_zero_gradients(cls):
    layer = cls(2, 3, 3, padding=1, rng=0)
    y = layer(np.zeros((0, 2) + SPATIAL[nd_of(cls)], np.float32))
    assert y.shape[:2] == (0, 3)
    gi = layer.backward(np.zeros_like(y))
    assert gi.shape == (0, 2) + SPATIAL[nd_of(cls)]
    assert not layer.weight_grad.any() and not layer.bias_grad.any()


# -- state_dict, parameters, pickling ---------------------------------------------------


@pytest.mark.parametrize("cls", ALL_LAYERS, ids=layer_id)
def test_state_dict_round_trip_and_copies(cls):
    src, dst = cls(4, 6, 3, groups=2, rng=0), cls(4, 6, 3, groups=2, rng=1)
    state = src.state_dict()
    assert set(state) == {"weight", "bias"}
    dst.load_state_dict(state)
    np.testing.assert_array_equal(dst.weight, src.weight)
    np.testing.assert_array_equal(dst.bias, src.bias)
    # state_dict returns copies, and load_state_dict keeps its own copies.
    state["weight"][...] = 0
    assert src.weight.any() and dst.weight.any()


@pytest.mark.parametrize("cls", ALL_LAYERS, ids=layer_id)
def test_state_dict_without_bias_has_no_bias_key(cls):
    layer = cls(2, 4, 3, bias=False)
    assert list(layer.state_dict()) == ["weight"]
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    with pytest.raises(ValueError, match="unexpected.*bias"):
        layer.load_state_dict({"weight": layer.weight, "bias": np.zeros(4)})


@pytest.mark.parametrize("cls", ALL_LAYERS, ids=layer_id)
def test_load_state_dict_rejects_wrong_shapes_and_keys(cls):
    layer = cls(4, 6, 3)
    good = layer.state_dict()
    bad_weight = dict(good, weight=np.zeros(layer.weight.shape[:-1] + (2,)))
    with pytest.raises(ValueError, match="expected weight of shape"):
        layer.load_state_dict(bad_weight)
    with pytest.raises(ValueError, match="expected bias of shape"):
        layer.load_state_dict(dict(good, bias=np.zeros(5)))
    with pytest.raises(ValueError, match="missing.*bias"):
        layer.load_state_dict({"weight": good["weight"]})
    # A failed load leaves the layer as it was.
    np.testing.assert_array_equal(layer.weight, good["weight"])


def test_load_state_dict_casts_to_the_layer_dtype_and_accepts_lists():
    layer = fc.Conv1d(1, 2, 1, rng=0)
    layer.load_state_dict({"weight": [[[1.5]], [[-2.0]]], "bias": np.array([0.25, 0.5])})
    assert layer.weight.dtype == layer.bias.dtype == np.float32
    np.testing.assert_array_equal(layer.weight.ravel(), [1.5, -2.0])
    np.testing.assert_array_equal(layer(np.array([[2.0]], np.float32)), [[3.25], [-3.5]])
    with pytest.raises(TypeError, match="complex"):
        layer.load_state_dict({"weight": np.ones((2, 1, 1), np.complex64), "bias": [0, 0]})


def model_state(rng):
    """A flat state dict of a two-layer model plus an unrelated key, as torch names them."""
    return {"encoder.conv1.weight": rng.standard_normal((4, 2, 3)).astype(np.float32),
            "encoder.conv1.bias": rng.standard_normal(4).astype(np.float32),
            "encoder.conv10.weight": rng.standard_normal((4, 4, 1)).astype(np.float32),
            "head.scale": np.ones(1, np.float32)}


def test_load_state_dict_with_prefix_takes_its_keys_and_ignores_other_layers():
    state = model_state(np.random.default_rng(0))
    before = {k: v.copy() for k, v in state.items()}
    layer = fc.Conv1d(2, 4, 3, rng=1)
    result = layer.load_state_dict(state, prefix="encoder.conv1.")
    np.testing.assert_array_equal(layer.weight, state["encoder.conv1.weight"])
    np.testing.assert_array_equal(layer.bias, state["encoder.conv1.bias"])
    assert result.missing_keys == [] and result.unexpected_keys == []
    # The layer keeps copies, and the caller's dict is untouched.
    layer.weight[...] = 0
    for key in state:
        np.testing.assert_array_equal(state[key], before[key])
    # "encoder.conv10." does not start with "encoder.conv1.": no clash between them.
    other = fc.Conv1d(4, 4, 1, bias=False)
    other.load_state_dict(state, prefix="encoder.conv10.")
    np.testing.assert_array_equal(other.weight, state["encoder.conv10.weight"])


def test_load_state_dict_without_prefix_stays_strict_about_foreign_keys():
    state = model_state(np.random.default_rng(0))
    layer = fc.Conv1d(2, 4, 3)
    with pytest.raises(ValueError, match=r"missing \['weight', 'bias'\].*unexpected "
                                         r"\['encoder.conv1.bias'"):
        layer.load_state_dict(state)


def test_load_state_dict_prefix_errors_name_the_full_key():
    state = model_state(np.random.default_rng(0))
    layer = fc.Conv1d(2, 4, 5)
    with pytest.raises(ValueError, match=r"expected encoder.conv1.weight of shape \(4, 2, 5\), "
                                         r"got \(4, 2, 3\)"):
        layer.load_state_dict(state, prefix="encoder.conv1.")
    complex_state = dict(state, **{"encoder.conv1.weight": np.ones((4, 2, 5), np.complex64)})
    with pytest.raises(TypeError, match="cannot load complex encoder.conv1.weight"):
        layer.load_state_dict(complex_state, prefix="encoder.conv1.")
    with pytest.raises(TypeError, match="encoder.conv1.weight has dtype <U1"):
        layer.load_state_dict(dict(state, **{"encoder.conv1.weight": np.full((4, 2, 5), "a")}),
                              prefix="encoder.conv1.")
    with pytest.raises(ValueError, match=r"missing \['decoder.weight', 'decoder.bias'\].*"
                                         r"no key starts with prefix 'decoder.'"):
        layer.load_state_dict(state, prefix="decoder.")
    # Under the prefix, a key that is not a parameter is an error when strict.
    with pytest.raises(ValueError, match=r"unexpected \['encoder.conv1.weight_orig'\]"):
        fc.Conv1d(2, 4, 3).load_state_dict(
            dict(state, **{"encoder.conv1.weight_orig": state["encoder.conv1.weight"]}),
            prefix="encoder.conv1.")
    # Every failure above left the layer as it was constructed.
    assert layer.weight.shape == (4, 2, 5) and np.abs(layer.weight).max() <= 1


def test_load_state_dict_non_strict_reports_and_keeps_what_is_missing():
    state = model_state(np.random.default_rng(0))
    layer = fc.Conv1d(2, 4, 3, rng=1)
    bias_before = layer.bias.copy()
    partial = {k: v for k, v in state.items() if k != "encoder.conv1.bias"}
    partial["encoder.conv1.extra"] = np.zeros(1)
    result = layer.load_state_dict(partial, prefix="encoder.conv1.", strict=False)
    assert result.missing_keys == ["encoder.conv1.bias"]
    assert result.unexpected_keys == ["encoder.conv1.extra"]
    np.testing.assert_array_equal(layer.weight, state["encoder.conv1.weight"])
    np.testing.assert_array_equal(layer.bias, bias_before)


def test_load_state_dict_casts_float16_to_the_layer_dtype():
    rng = np.random.default_rng(0)
    half = {"0.weight": rng.standard_normal((3, 2, 2, 2, 2)).astype(np.float16),
            "0.bias": rng.standard_normal(3).astype(np.float16)}
    layer = fc.Conv3d(2, 3, 2)
    layer.load_state_dict(half, prefix="0.")
    assert layer.weight.dtype == layer.bias.dtype == np.float32
    np.testing.assert_array_equal(layer.weight, half["0.weight"].astype(np.float32))
    double = fc.Conv3d(2, 3, 2, dtype=np.float64)
    double.load_state_dict(half, prefix="0.")
    assert double.weight.dtype == np.float64


def test_load_state_dict_rejects_bad_argument_types():
    layer = fc.Conv1d(2, 4, 3)
    with pytest.raises(TypeError, match="expected state_dict to be a mapping.*list"):
        layer.load_state_dict([("weight", layer.weight)])
    with pytest.raises(TypeError, match="expected prefix to be a str, got int"):
        layer.load_state_dict(layer.state_dict(), prefix=0)
    with pytest.raises(TypeError, match="expected strict to be a bool, got 'no'"):
        layer.load_state_dict(layer.state_dict(), strict="no")


@requires_torch
@pytest.mark.parametrize("cls", ALL_LAYERS, ids=layer_id)
def test_load_state_dict_from_torch_tensors_numpy(cls):
    torch.manual_seed(3)
    theirs = getattr(torch.nn, cls.__name__)(2, 4, 3, stride=2)
    ours = cls(2, 4, 3, stride=2)
    ours.load_state_dict({"weight": theirs.weight.detach().numpy(),
                          "bias": theirs.bias.detach().numpy()})
    np.testing.assert_array_equal(ours.weight, theirs.weight.detach().numpy())
    # The layer holds its own copy: changing torch's parameter does not reach it.
    with torch.no_grad():
        theirs.weight.zero_()
    assert ours.weight.any()


@pytest.mark.parametrize("cls", ALL_LAYERS, ids=layer_id)
def test_parameters_are_the_layer_arrays_so_in_place_updates_stick(cls):
    layer = cls(2, 4, 3)
    named = dict(layer.named_parameters())
    assert list(named) == ["weight", "bias"]
    assert named["weight"] is layer.weight and named["bias"] is layer.bias
    params = list(layer.parameters())
    assert len(params) == 2 and params[0] is layer.weight and params[1] is layer.bias
    for p in layer.parameters():
        p *= 0
    assert not layer.weight.any() and not layer.bias.any()


def sgd_step(layer, lr):
    for name, p in layer.named_parameters():
        p -= lr * getattr(layer, name + "_grad")


@requires_torch
@pytest.mark.parametrize("cls", ALL_LAYERS, ids=layer_id)
def test_sgd_with_named_parameters_matches_torch_sgd(cls):
    # torch's side is torch.optim.SGD(lr=0.05)'s update written out (p -= lr * grad);
    # importing torch.optim costs seconds on first use.
    ours, theirs = make_pair(cls, 2, 4, np.float64, kernel_size=3, padding=1)
    rng = np.random.default_rng(0)
    spatial = SPATIAL[nd_of(cls)]
    for _ in range(3):
        x = rng.standard_normal((2, 2) + spatial)
        # loss = 0.5 * sum(y^2): dloss/dy = y
        ours.zero_grad()
        y = ours(x)
        ours.backward(y)
        sgd_step(ours, 0.05)
        with torch_on_one_thread():
            theirs.zero_grad()
            yt = theirs(torch.from_numpy(x))
            (0.5 * (yt ** 2).sum()).backward()
            with torch.no_grad():
                for p in theirs.parameters():
                    p -= 0.05 * p.grad
    assert_close(ours.weight, theirs.weight.detach().numpy(), np.float64)
    assert_close(ours.bias, theirs.bias.detach().numpy(), np.float64)


@pytest.mark.parametrize("cls", ALL_LAYERS, ids=layer_id)
def test_sgd_with_named_parameters_fits_a_target_layer(cls):
    rng = np.random.default_rng(0)
    teacher = cls(2, 3, 3, padding=1, dtype=np.float64, rng=1)
    student = cls(2, 3, 3, padding=1, dtype=np.float64, rng=2)
    x = rng.standard_normal((4, 2) + SPATIAL[nd_of(cls)])
    target = teacher(x)
    losses = []
    for _ in range(30):
        student.zero_grad()
        diff = student(x) - target
        losses.append(float(np.mean(diff ** 2)))
        student.backward(2 * diff / diff.size)
        sgd_step(student, 0.5)
    assert losses[-1] < 0.2 * losses[0]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("cls", ALL_LAYERS, ids=layer_id)
def test_pickle_round_trip_keeps_weights_attributes_and_results(cls, dtype):
    kw = dict(output_padding=1, stride=2) if is_transposed(cls) else dict(
        padding="same", padding_mode="circular")
    layer = cls(4, 6, 3, groups=2, dtype=dtype, rng=0, **kw)
    x = random_array((2, 4) + SPATIAL[nd_of(cls)], dtype, np.random.default_rng(0))
    y = layer(x)
    layer.backward(np.ones_like(y))
    clone = pickle.loads(pickle.dumps(layer))
    assert type(clone) is cls and repr(clone) == repr(layer)
    for name in ATTRIBUTES:
        assert getattr(clone, name) == getattr(layer, name)
    for name in ("weight", "bias", "weight_grad", "bias_grad"):
        np.testing.assert_array_equal(getattr(clone, name), getattr(layer, name))
        assert getattr(clone, name).dtype == dtype
    np.testing.assert_array_equal(clone(x), layer(x))
    # The clone owns its arrays.
    clone.weight[...] = 0
    assert layer.weight.any()


def test_pickled_layer_does_not_carry_the_last_activation():
    layer = fc.Conv2d(1, 1, 3, rng=0)
    layer(np.ones((1, 1, 5, 5), np.float32))
    clone = pickle.loads(pickle.dumps(layer))
    with pytest.raises(RuntimeError, match="before forward"):
        clone.backward(np.ones((1, 1, 3, 3), np.float32))


# -- constructor validation -------------------------------------------------------------

VALIDATION = [
    (fc.Conv2d, (0, 4, 3), {}, ValueError, "expected in_channels >= 1, got 0"),
    (fc.Conv2d, (2, 0, 3), {}, ValueError, "expected out_channels >= 1, got 0"),
    (fc.ConvTranspose3d, (-1, 4, 3), {}, ValueError, "expected in_channels >= 1"),
    (fc.Conv1d, (2.0, 4, 3), {}, TypeError, "expected in_channels to be an int"),
    (fc.Conv1d, (True, 4, 3), {}, TypeError, "expected in_channels to be an int"),
    (fc.Conv2d, (4, 6, 3), dict(groups=3), ValueError,
     "expected in_channels divisible by groups=3, got 4"),
    (fc.Conv3d, (6, 4, 3), dict(groups=3), ValueError,
     "expected out_channels divisible by groups=3, got 4"),
    (fc.ConvTranspose2d, (4, 6, 3), dict(groups=4), ValueError,
     "out_channels divisible by groups=4"),
    (fc.Conv2d, (2, 2, 3), dict(groups=0), ValueError, "expected groups >= 1"),
    (fc.Conv2d, (2, 2, 3), dict(padding_mode="mirror"), ValueError,
     "expected padding_mode to be one of 'zeros', 'reflect', 'replicate', 'circular', "
     "got 'mirror'"),
    (fc.Conv2d, (2, 2, 3), dict(padding_mode="Zeros"), ValueError, "padding_mode"),
    (fc.Conv1d, (2, 2, 3), dict(padding="same", stride=2), ValueError,
     r"padding='same' requires stride 1"),
    (fc.Conv3d, (2, 2, 3), dict(padding="same", stride=(1, 1, 2)), ValueError,
     r"padding='same' requires stride 1"),
    (fc.Conv2d, (2, 2, 3), dict(padding="full"), ValueError,
     "expected padding to be 'valid', 'same'"),
    (fc.ConvTranspose1d, (2, 2, 3), dict(padding_mode="reflect"), ValueError,
     "only padding_mode='zeros' is supported for transposed"),
    (fc.ConvTranspose3d, (2, 2, 3), dict(padding_mode="circular"), ValueError,
     "only padding_mode='zeros'"),
    (fc.ConvTranspose2d, (2, 2, 3), dict(padding="same"), ValueError,
     "padding strings are for convolution only"),
    (fc.ConvTranspose2d, (2, 2, 3), dict(stride=2, output_padding=2), ValueError,
     "expected output_padding smaller than stride or dilation"),
    (fc.ConvTranspose1d, (2, 2, 3), dict(output_padding=1), ValueError,
     "expected output_padding smaller than stride or dilation"),
    (fc.ConvTranspose3d, (2, 2, 3), dict(stride=2, dilation=3, output_padding=(0, 3, 0)),
     ValueError, "expected output_padding smaller than stride or dilation"),
    (fc.ConvTranspose2d, (2, 2, 3), dict(output_padding=-1, stride=2), ValueError,
     "expected output_padding >= 0"),
    (fc.Conv2d, (2, 2, 3), dict(dtype=np.int32), TypeError,
     "expected dtype to be one of float32, float64, complex64, complex128, got int32"),
    (fc.Conv2d, (2, 2, 3), dict(dtype=np.float16), TypeError, "expected dtype to be one of"),
    (fc.ConvTranspose1d, (2, 2, 3), dict(dtype="not-a-dtype"), TypeError,
     "expected dtype to be one of"),
    (fc.Conv3d, (2, 2, 3), dict(rng="42"), TypeError,
     "expected rng to be None, an int seed or a numpy.random.Generator, got str"),
    (fc.Conv3d, (2, 2, 3), dict(rng=1.5), TypeError, "expected rng to be None"),
    (fc.Conv1d, (2, 2, 3), dict(rng=np.random.RandomState(0)), TypeError,
     "got RandomState"),
    (fc.Conv2d, (2, 2, 3), dict(padding=-1), ValueError, "expected padding >= 0"),
    (fc.Conv3d, (2, 2, 3), dict(padding=(1, -2, 0)), ValueError, "expected padding >= 0"),
    (fc.ConvTranspose2d, (2, 2, 3), dict(padding=-1), ValueError, "padding"),
    (fc.Conv2d, (2, 2, 0), {}, ValueError, "expected kernel_size >= 1"),
    (fc.ConvTranspose3d, (2, 2, (3, 0, 3)), {}, ValueError, "expected kernel_size >= 1"),
    (fc.Conv3d, (2, 2, (3, 3)), {}, ValueError, "expected kernel_size to be an int or a tuple "
     "of 3 ints"),
    (fc.Conv2d, (2, 2, 3.0), {}, TypeError, "expected kernel_size to be an int or a tuple"),
    (fc.Conv2d, (2, 2, 3), dict(stride=0), ValueError, "expected stride >= 1"),
    (fc.Conv1d, (2, 2, 3), dict(dilation=0), ValueError, "expected dilation >= 1"),
]


@pytest.mark.parametrize("cls, args, kwargs, exc, match", VALIDATION,
                         ids=[f"{c.__name__}-{m[:40]}" for c, _, _, _, m in VALIDATION])
def test_constructor_rejects_bad_arguments(cls, args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cls(*args, **kwargs)


def test_constructor_error_names_the_class():
    with pytest.raises(ValueError, match=r"^ConvTranspose2d: "):
        fc.ConvTranspose2d(0, 2, 3)


# -- finite differences (no torch) ------------------------------------------------------


def numeric_gradient(loss, a, h=1e-2):
    """Central differences of the real scalar ``loss()`` w.r.t. each entry of ``a``.

    ``a`` is perturbed in place and restored.  For complex ``a`` this is
    dL/dRe + i dL/dIm, PyTorch's convention for a real loss.  The losses used
    here are linear in each argument, so central differences are exact up to
    rounding and a large ``h`` keeps that rounding small.
    """
    flat = a.reshape(-1)
    assert np.shares_memory(flat, a)
    grad = np.zeros(flat.shape, a.dtype)
    units = (1, 1j) if np.iscomplexobj(a) else (1,)
    for i in range(flat.size):
        old = flat[i]
        for unit in units:
            flat[i] = old + h * unit
            plus = loss()
            flat[i] = old - h * unit
            minus = loss()
            flat[i] = old
            grad[i] += unit * (plus - minus) / (2 * h)
    return grad.reshape(a.shape)


FD_CASES = [
    pytest.param(fc.Conv1d, dict(kernel_size=3, padding="same", padding_mode="replicate",
                                 dilation=2), (2, 4, 7), id="Conv1d-same-replicate"),
    pytest.param(fc.Conv2d, dict(kernel_size=(3, 2), stride=2, padding=(2, 1), dilation=(1, 2),
                                 groups=2, padding_mode="reflect"), (1, 4, 5, 6),
                 id="Conv2d-reflect-stride-groups"),
    pytest.param(fc.Conv3d, dict(kernel_size=2, padding=1, padding_mode="circular"),
                 (2, 3, 3, 3), id="Conv3d-circular-unbatched"),
    pytest.param(fc.ConvTranspose2d, dict(kernel_size=3, stride=2, padding=1, output_padding=1,
                                          groups=2), (1, 4, 3, 3),
                 id="ConvTranspose2d-stride-groups"),
    pytest.param(fc.ConvTranspose1d, dict(kernel_size=2, dilation=3, output_padding=2),
                 (4, 5), id="ConvTranspose1d-dilated-unbatched"),
]


@pytest.mark.parametrize("dtype", [np.float64, np.complex128], ids=["float64", "complex128"])
@pytest.mark.parametrize("cls, kwargs, shape", FD_CASES)
def test_backward_matches_finite_differences(cls, kwargs, shape, dtype):
    rng = np.random.default_rng(0)
    in_channels = shape[-(nd_of(cls) + 1)]
    layer = cls(in_channels, 4, dtype=dtype, rng=0, **kwargs)
    x = random_array(shape, dtype, rng)
    g = random_array(layer(x).shape, dtype, rng)

    def loss():
        # L = Re(sum(conj(g) * y)), so that dL/dy = g in PyTorch's convention.
        return float(np.real(np.vdot(g, layer.forward(x))))

    expected_input_grad = numeric_gradient(loss, x)
    expected_weight_grad = numeric_gradient(loss, layer.weight)
    expected_bias_grad = numeric_gradient(loss, layer.bias)
    layer.zero_grad()
    layer.forward(x)
    grad_input = layer.backward(g)
    for actual, expected in ((grad_input, expected_input_grad),
                             (layer.weight_grad, expected_weight_grad),
                             (layer.bias_grad, expected_bias_grad)):
        np.testing.assert_allclose(actual, expected, rtol=1e-8, atol=1e-9)
