"""The seed documents' examples (/work/shared/seeds/000-004) as tests.

000  "Conv3d in PyTorch"           (dev.to tutorial, printed weights and outputs)
001  "ConvTranspose3d() in PyTorch" (same author, same layout)
002  torch.nn.Conv3d reference page (shapes, init bound, the 16 -> 33 examples)
003  "Conv1d in PyTorch"           (same author as 000)
004  lucid.nn.Conv3d documentation  (a bias-free 2x2x2 example, a model sketch)

How close is close enough.  The tutorials print every number rounded to 4
decimals, so each printed weight, bias and output is within 5e-5 of the
value torch computed with.  With the *printed* weights, an output
``y = sum_k w_k x_k + b`` can therefore be off by up to
``5e-5 * (sum_k |x_k| + 1)`` from the exact one, plus 5e-5 for rounding the
printed output itself: ``printed_slack`` below.  For x = 8 that is 5e-4,
which is why e.g. 8 * 0.7645 + 0.9186 = 7.0346 is accepted for the printed
7.0349.  Where the weights come from torch itself (``torch.manual_seed(42)``
with PyTorch 2.13 reproduces every printed weight), only the output's own
rounding remains: 5e-5, plus float32 round-off.

Where the document prints a number that cannot come from the weights it
prints, the test says so and checks what can be checked.
"""
import os
import sys

import numpy as np
import pytest

import fastconv as fc

sys.path.insert(0, os.path.dirname(__file__))
import reference  # noqa: E402  (independent float64 oracle)

try:
    import torch
except ImportError:
    torch = None

requires_torch = pytest.mark.skipif(torch is None, reason="needs PyTorch to redraw the "
                                    "unprinted weights with torch.manual_seed(42)")

HALF_ULP_PRINTED = 5e-5          # half a unit in the 4th decimal
ROUND_OFF = 2e-6                 # float32 arithmetic on values of size ~10


def printed_slack(x_abs_sum):
    """Allowed |ours - printed| for an output computed from printed (rounded) weights.

    ``x_abs_sum`` is sum_k |x_k| over the inputs that output multiplies by a
    printed weight; the ``+ 1`` is the printed bias, the second ``+ 1`` the
    printed output's own rounding.
    """
    return HALF_ULP_PRINTED * (np.asarray(x_abs_sum) + 2) + ROUND_OFF


def assert_matches_print(actual, printed, slack):
    actual, printed = np.asarray(actual), np.asarray(printed)
    assert actual.shape == printed.shape
    err = np.abs(actual - printed)
    assert np.all(err <= slack), f"max error {err.max():.2e}, allowed {np.min(slack):.2e}+"


def torch_weights(layer_cls_name, *args, **kwargs):
    """state_dict of ``torch.nn.<name>(*args)`` created right after manual_seed(42)."""
    torch.manual_seed(42)
    layer = getattr(torch.nn, layer_cls_name)(*args, **kwargs)
    return {k: v.detach().numpy() for k, v in layer.state_dict().items()}


def layer_with(cls, weight, bias, *args, **kwargs):
    layer = cls(*args, **kwargs)
    layer.load_state_dict({"weight": weight, "bias": bias})
    return layer


# The input every example starts from, and its reshapes (000, 001, 003).
X_ROW = [8., -3., 0., 1., 5., -2.]
TENSOR1 = np.array([[[X_ROW]]], np.float32)                       # (1, 1, 1, 6)
TENSOR_2x3 = np.array([[[[8., -3., 0.], [1., 5., -2.]]]], np.float32)           # (1, 1, 2, 3)
TENSOR_6x1 = np.array([[[[8.], [-3.], [0.], [1.], [5.], [-2.]]]], np.float32)   # (1, 1, 6, 1)
TENSOR_5D = np.array([[[[[8.], [-3.], [0.]], [[1.], [5.], [-2.]]]]], np.float32)  # (1,1,2,3,1)
TENSOR_5D_C64 = TENSOR_5D.astype(np.complex64)


# =====================================================================================
# 000: Conv3d in PyTorch
# =====================================================================================

CONV3D_W = np.array([0.7645, 0.8300, -0.2343], np.float32).reshape(3, 1, 1, 1, 1)
CONV3D_B = np.array([0.9186, -0.2191, 0.2018], np.float32)
# Printed output of conv3d1(tensor1): shape (3, 1, 1, 6).
CONV3D_OUT_ROWS = np.array([[7.0349, -1.3750, 0.9186, 1.6831, 4.7413, -0.6105],
                            [6.4210, -2.7091, -0.2191, 0.6109, 3.9309, -1.8791],
                            [-1.6724, 0.9046, 0.2018, -0.0325, -0.9696, 0.6703]])
# Printed output of conv3d2(tensor2), conv3d2 = Conv3d(3, 3, 1) after manual_seed(42).
CONV3D2_OUT_ROWS = np.array([[5.9849, -2.4511, -0.1504, 0.6165, 3.6841, -1.6842],
                             [3.2258, 0.2207, 1.0403, 1.3134, 2.4062, 0.4939],
                             [-0.5434, 0.0364, -0.1217, -0.1744, -0.3853, -0.0163]])


def conv3d_printed():
    return layer_with(fc.Conv3d, CONV3D_W, CONV3D_B, in_channels=1, out_channels=3,
                      kernel_size=1)


def test_seed000_conv3d_printed_attributes_and_repr():
    conv3d1 = fc.Conv3d(in_channels=1, out_channels=3, kernel_size=1)
    assert repr(conv3d1) == "Conv3d(1, 3, kernel_size=(1, 1, 1), stride=(1, 1, 1))"
    assert conv3d1.in_channels == 1
    assert conv3d1.out_channels == 3
    assert conv3d1.kernel_size == (1, 1, 1)
    assert conv3d1.stride == (1, 1, 1)
    assert conv3d1.padding == (0, 0, 0)
    assert conv3d1.dilation == (1, 1, 1)
    assert conv3d1.groups == 1
    assert conv3d1.padding_mode == "zeros"
    # "tensor([[[[[0.7645]]]], [[[[0.8300]]]], [[[[-0.2343]]]]])": shape (3, 1, 1, 1, 1).
    assert conv3d1.weight.shape == CONV3D_W.shape and conv3d1.bias.shape == (3,)


@pytest.mark.parametrize("x, printed", [
    pytest.param(TENSOR1, CONV3D_OUT_ROWS.reshape(3, 1, 1, 6), id="4d-unbatched-1x6"),
    pytest.param(TENSOR_2x3, CONV3D_OUT_ROWS.reshape(3, 1, 2, 3), id="4d-unbatched-2x3"),
    pytest.param(TENSOR_6x1, CONV3D_OUT_ROWS.reshape(3, 1, 6, 1), id="4d-unbatched-6x1"),
    # The document's 5-D output lacks a comma after "[-0.2191]]" (a typo in the
    # print); the values and the shape (1, 3, 2, 3, 1) are unambiguous.
    pytest.param(TENSOR_5D, CONV3D_OUT_ROWS.reshape(1, 3, 2, 3, 1), id="5d-batched"),
])
def test_seed000_conv3d_printed_weights_reproduce_printed_outputs(x, printed):
    y = conv3d_printed()(x)
    assert y.shape == printed.shape and y.dtype == np.float32
    # Kernel 1x1x1, one input channel: each output multiplies one x by one weight.
    assert_matches_print(y, printed, printed_slack(np.abs(x)))


def test_seed000_conv3d_with_every_argument_spelled_out_gives_the_same_output():
    # (device=None, dtype=None in the document: torch's defaults, float32 here.)
    conv3d = fc.Conv3d(in_channels=1, out_channels=3, kernel_size=1, stride=1, padding=0,
                       dilation=1, groups=1, bias=True, padding_mode="zeros")
    conv3d.load_state_dict({"weight": CONV3D_W, "bias": CONV3D_B})
    assert repr(conv3d) == "Conv3d(1, 3, kernel_size=(1, 1, 1), stride=(1, 1, 1))"
    assert_matches_print(conv3d(TENSOR1), CONV3D_OUT_ROWS.reshape(3, 1, 1, 6),
                         printed_slack(np.abs(TENSOR1)))


def test_seed000_printed_numbers_are_what_the_1x1x1_kernel_computes_exactly():
    # Independent of the layer: y = w * x + b per channel, in float64 with the
    # printed numbers, is within the rounding slack of the printed output; this
    # pins the slack, so the layer tests above cannot pass with a looser one.
    exact = CONV3D_W.reshape(3, 1) * np.array(X_ROW) + CONV3D_B.reshape(3, 1)
    err = np.abs(exact - CONV3D_OUT_ROWS)
    assert np.all(err <= printed_slack(np.abs(X_ROW)))
    assert err.max() > 1e-4       # the rounding really matters at x = 8 ...
    assert err.max() < 4e-4       # ... and is well inside the slack there (5e-4)


@requires_torch
def test_seed000_torch_manual_seed_42_reproduces_the_printed_weights():
    state = torch_weights("Conv3d", 1, 3, 1)
    np.testing.assert_allclose(state["weight"], CONV3D_W, atol=HALF_ULP_PRINTED)
    np.testing.assert_allclose(state["bias"], CONV3D_B, atol=HALF_ULP_PRINTED)


@requires_torch
def test_seed000_conv3d_chain_with_torch_weights_reproduces_both_printed_outputs():
    # conv3d2 = Conv3d(3, 3, 1) after manual_seed(42): its weights are not printed,
    # so they are redrawn with torch and copied into our layer.
    s1, s2 = torch_weights("Conv3d", 1, 3, 1), torch_weights("Conv3d", 3, 3, 1)
    conv3d1 = layer_with(fc.Conv3d, s1["weight"], s1["bias"], 1, 3, 1)
    conv3d2 = layer_with(fc.Conv3d, s2["weight"], s2["bias"], 3, 3, 1)
    tensor2 = conv3d1(TENSOR1)
    tol = HALF_ULP_PRINTED + ROUND_OFF
    assert_matches_print(tensor2, CONV3D_OUT_ROWS.reshape(3, 1, 1, 6), tol)
    assert_matches_print(conv3d2(tensor2), CONV3D2_OUT_ROWS.reshape(3, 1, 1, 6), tol)
    # Fed the *printed* (rounded) tensor2 instead, the second layer lands one unit
    # off in two places (1.0402 for 1.0403, 0.4938 for 0.4939): the input rounding
    # adds up to 5e-5 * sum|w| to each output.
    from_print = conv3d2(CONV3D_OUT_ROWS.reshape(3, 1, 1, 6).astype(np.float32))
    w_abs_sum = np.abs(s2["weight"]).reshape(3, 3).sum(axis=1).reshape(3, 1, 1, 1)
    assert_matches_print(from_print, CONV3D2_OUT_ROWS.reshape(3, 1, 1, 6),
                         HALF_ULP_PRINTED * (w_abs_sum + 1) + ROUND_OFF)


# 000, complex64: Conv3d(1, 3, 1, dtype=torch.complex64) after manual_seed(42).
# Printed output, shape (1, 3, 2, 3, 1), listed per channel in the input's order
# (8, -3, 0, 1, 5, -2).
CONV3D_C64_OUT = np.array([
    [5.6295 + 7.2273j, -2.7805 - 1.9027j, -0.4869 + 0.5873j,
     0.2777 + 1.4173j, 3.3358 + 4.7373j, -2.0159 - 1.0727j],
    [-0.9926 + 6.6153j, 1.5844 - 3.4895j, 0.8815 - 0.7336j,
     0.6473 + 0.1850j, -0.2898 + 3.8594j, 1.3501 - 2.5709j],
    [-0.8836 + 1.8015j, 1.5265 - 0.4182j, 0.8692 + 0.1872j,
     0.6501 + 0.3889j, -0.2263 + 1.1961j, 1.3074 - 0.2164j]])


def recover_affine_1x1(printed_rows, x_row):
    """Weight and bias of y = w x + b per channel, from the printed outputs at x = 0 and 8.

    The document does not print the complex layer's weights, but with a 1x1x1
    kernel and one input channel each output channel is affine in x, and x = 0
    is among the inputs: the output there *is* the bias, and (y(8) - b) / 8 is
    the weight.  Each recovered value is within (5e-5 + 5e-5) / 8 of the true
    one per real component (1.25e-5) and the bias within 5e-5.
    """
    x_row = list(x_row)
    b = printed_rows[:, x_row.index(0.0)]
    w = (printed_rows[:, x_row.index(8.0)] - b) / 8.0
    return w, b


def test_seed000_complex64_output_follows_from_weights_recovered_from_the_print():
    w, b = recover_affine_1x1(CONV3D_C64_OUT, X_ROW)
    # The recovered weights are the real layer's printed numbers taken in pairs
    # (0.7645+0.8300j, -0.2343+0.9186j, -0.2191+0.2018j): torch fills a complex
    # tensor from the same uniform stream, two reals per complex value.
    np.testing.assert_allclose(w, [0.7645 + 0.8300j, -0.2343 + 0.9186j, -0.2191 + 0.2018j],
                               atol=HALF_ULP_PRINTED + 2e-5)
    conv3d = layer_with(fc.Conv3d, w.reshape(3, 1, 1, 1, 1), b, 1, 3, 1, dtype=np.complex64)
    y = conv3d(TENSOR_5D_C64)
    assert y.shape == (1, 3, 2, 3, 1) and y.dtype == np.complex64
    # The other four outputs per channel: the recovered weight carries up to
    # 1.25e-5 per component (x |x| <= 5, x sqrt(2) in modulus), the recovered
    # bias 5e-5 * sqrt(2), the printed output 5e-5 * sqrt(2).
    slack = np.sqrt(2) * (1.25e-5 * np.abs(X_ROW) + 2 * HALF_ULP_PRINTED) + ROUND_OFF
    assert_matches_print(y[0].reshape(3, 6), CONV3D_C64_OUT, slack)


@requires_torch
def test_seed000_complex64_with_torch_weights_reproduces_the_printed_output():
    state = torch_weights("Conv3d", 1, 3, 1, dtype=torch.complex64)
    conv3d = layer_with(fc.Conv3d, state["weight"], state["bias"], 1, 3, 1,
                        dtype=np.complex64)
    y = conv3d(TENSOR_5D_C64)
    assert y.dtype == np.complex64
    assert_matches_print(y[0].reshape(3, 6), CONV3D_C64_OUT,
                         np.sqrt(2) * HALF_ULP_PRINTED + ROUND_OFF)


# =====================================================================================
# 001: ConvTranspose3d in PyTorch
# =====================================================================================

CONVT3D_W = np.array([0.4414, 0.4792, -0.1353], np.float32).reshape(1, 3, 1, 1, 1)
CONVT3D_B = np.array([0.5304, -0.1265, 0.1165], np.float32)
# Printed output of convtran3d(tensor1) (the call with every argument spelled
# out) and of its 2x3 / 6x1 / 5-D variants.
CONVT3D_OUT_ROWS = np.array([[4.0616, -0.7939, 0.5304, 0.9718, 2.7374, -0.3525],
                             [3.7071, -1.5641, -0.1265, 0.3527, 2.2695, -1.0849],
                             [-0.9656, 0.5223, 0.1165, -0.0188, -0.5598, 0.3870]])
# Printed as tensor2 = convtran3d1(tensor1) -- see the test below: not from the
# printed weights.
CONVT3D_TENSOR2_PRINTED = np.array([[-2.6722, 0.4197, -0.4236, -0.7046, -1.8290, 0.1386],
                                    [3.2144, -0.5154, 0.5018, 0.8409, 2.1972, -0.1763],
                                    [4.1797, -1.4188, 0.1081, 0.6170, 2.6529, -0.9099]])
# Printed output of convtran3d2(tensor2), convtran3d2 = ConvTranspose3d(3, 3, 1).
CONVT3D2_OUT_ROWS = np.array([[3.6068, -1.7503, -0.2893, 0.1977, 2.1458, -1.2633],
                              [1.6518, 0.4964, 0.8115, 0.9165, 1.3367, 0.6014],
                              [-0.5008, 0.2990, 0.0809, 0.0082, -0.2827, 0.2263]])
CONVT3D_C64_OUT = np.array([
    [3.2502 + 4.1727j, -1.6053 - 1.0985j, -0.2811 + 0.3391j,
     0.1603 + 0.8183j, 1.9259 + 2.7351j, -1.1639 - 0.6193j],
    [-0.5731 + 3.8193j, 0.9147 - 2.0146j, 0.5090 - 0.4236j,
     0.3737 + 0.1068j, -0.1673 + 2.2282j, 0.7795 - 1.4843j],
    [-0.5102 + 1.0401j, 0.8813 - 0.2415j, 0.5018 + 0.1081j,
     0.3753 + 0.2246j, -0.1307 + 0.6906j, 0.7548 - 0.1250j]])


def convt3d_printed():
    return layer_with(fc.ConvTranspose3d, CONVT3D_W, CONVT3D_B, in_channels=1,
                      out_channels=3, kernel_size=1)


def test_seed001_conv_transpose3d_printed_attributes_and_repr():
    convtran3d1 = fc.ConvTranspose3d(in_channels=1, out_channels=3, kernel_size=1)
    assert repr(convtran3d1) == "ConvTranspose3d(1, 3, kernel_size=(1, 1, 1), stride=(1, 1, 1))"
    assert convtran3d1.in_channels == 1
    assert convtran3d1.out_channels == 3
    assert convtran3d1.kernel_size == (1, 1, 1)
    assert convtran3d1.stride == (1, 1, 1)
    assert convtran3d1.padding == (0, 0, 0)
    assert convtran3d1.output_padding == (0, 0, 0)
    assert convtran3d1.groups == 1
    assert convtran3d1.dilation == (1, 1, 1)
    assert convtran3d1.padding_mode == "zeros"
    # "tensor([[[[[0.4414]]], [[[0.4792]]], [[[-0.1353]]]]])": shape (1, 3, 1, 1, 1),
    # the transposed layout (C_in, C_out / groups, *kernel).
    assert convtran3d1.weight.shape == CONVT3D_W.shape and convtran3d1.bias.shape == (3,)


@pytest.mark.parametrize("x, printed", [
    pytest.param(TENSOR1, CONVT3D_OUT_ROWS.reshape(3, 1, 1, 6), id="4d-unbatched-1x6"),
    pytest.param(TENSOR_2x3, CONVT3D_OUT_ROWS.reshape(3, 1, 2, 3), id="4d-unbatched-2x3"),
    pytest.param(TENSOR_6x1, CONVT3D_OUT_ROWS.reshape(3, 1, 6, 1), id="4d-unbatched-6x1"),
    pytest.param(TENSOR_5D, CONVT3D_OUT_ROWS.reshape(1, 3, 2, 3, 1), id="5d-batched"),
])
def test_seed001_conv_transpose3d_printed_weights_reproduce_printed_outputs(x, printed):
    convtran3d = fc.ConvTranspose3d(in_channels=1, out_channels=3, kernel_size=1, stride=1,
                                    padding=0, output_padding=0, groups=1, bias=True,
                                    dilation=1, padding_mode="zeros")
    convtran3d.load_state_dict({"weight": CONVT3D_W, "bias": CONVT3D_B})
    y = convtran3d(x)
    assert y.shape == printed.shape and y.dtype == np.float32
    assert_matches_print(y, printed, printed_slack(np.abs(x)))


def test_seed001_printed_tensor2_does_not_come_from_the_printed_weights():
    # The document prints tensor2 = convtran3d1(tensor1) = [[-2.6722, 0.4197,
    # -0.4236, ...]], but convtran3d1's printed bias is [0.5304, -0.1265, 0.1165]
    # and the input there is 0, so the output must be the bias: 0.5304, not
    # -0.4236.  The later call with identical arguments prints the consistent
    # [[4.0616, -0.7939, 0.5304, ...]].  The printed tensor2 is still a 1x1x1
    # layer's output: recovering w, b from x = 0 and x = 8 predicts the other
    # four values to rounding -- with weight [-0.2811, 0.3391, 0.5090] and bias
    # [-0.4236, 0.5018, 0.1081], the draws of a *second* ConvTranspose3d(1, 3, 1)
    # made after manual_seed(42) without re-seeding (checked with torch below).
    ours = convt3d_printed()(TENSOR1).reshape(3, 6)
    assert np.abs(ours - CONVT3D_TENSOR2_PRINTED).max() > 1.0        # not reproducible
    w, b = recover_affine_1x1(CONVT3D_TENSOR2_PRINTED, X_ROW)
    np.testing.assert_allclose(w, [-0.2811, 0.3391, 0.5090], atol=HALF_ULP_PRINTED + 2e-5)
    np.testing.assert_allclose(b, [-0.4236, 0.5018, 0.1081], atol=1e-12)
    layer = layer_with(fc.ConvTranspose3d, w.reshape(1, 3, 1, 1, 1).astype(np.float32),
                       b.astype(np.float32), 1, 3, 1)
    slack = 1.25e-5 * np.abs(X_ROW) + 2 * HALF_ULP_PRINTED + ROUND_OFF
    assert_matches_print(layer(TENSOR1).reshape(3, 6), CONVT3D_TENSOR2_PRINTED, slack)


@requires_torch
def test_seed001_torch_reproduces_the_printed_weights_and_the_stray_tensor2():
    state = torch_weights("ConvTranspose3d", 1, 3, 1)
    np.testing.assert_allclose(state["weight"], CONVT3D_W, atol=HALF_ULP_PRINTED)
    np.testing.assert_allclose(state["bias"], CONVT3D_B, atol=HALF_ULP_PRINTED)
    torch.manual_seed(42)
    torch.nn.ConvTranspose3d(1, 3, 1)
    second = torch.nn.ConvTranspose3d(1, 3, 1)          # no re-seeding in between
    layer = layer_with(fc.ConvTranspose3d, second.weight.detach().numpy(),
                       second.bias.detach().numpy(), 1, 3, 1)
    assert_matches_print(layer(TENSOR1).reshape(3, 6), CONVT3D_TENSOR2_PRINTED,
                         HALF_ULP_PRINTED + ROUND_OFF)


@requires_torch
def test_seed001_second_layer_output_follows_from_the_seeded_tensor2_not_the_printed_one():
    # convtran3d2 = ConvTranspose3d(3, 3, 1) after manual_seed(42) (weights not
    # printed).  Its printed output [[3.6068, -1.7503, ...]] is what it gives for
    # the tensor2 that the *printed* weights produce; fed the stray printed
    # tensor2 it gives something else ([[-1.0732, ...]]).
    s1, s2 = torch_weights("ConvTranspose3d", 1, 3, 1), torch_weights("ConvTranspose3d", 3, 3, 1)
    convtran3d1 = layer_with(fc.ConvTranspose3d, s1["weight"], s1["bias"], 1, 3, 1)
    convtran3d2 = layer_with(fc.ConvTranspose3d, s2["weight"], s2["bias"], 3, 3, 1)
    tensor2 = convtran3d1(TENSOR1)
    tol = HALF_ULP_PRINTED + ROUND_OFF
    assert_matches_print(tensor2, CONVT3D_OUT_ROWS.reshape(3, 1, 1, 6), tol)
    assert_matches_print(convtran3d2(tensor2), CONVT3D2_OUT_ROWS.reshape(3, 1, 1, 6), tol)
    stray = convtran3d2(CONVT3D_TENSOR2_PRINTED.reshape(3, 1, 1, 6).astype(np.float32))
    assert np.abs(stray - CONVT3D2_OUT_ROWS.reshape(3, 1, 1, 6)).max() > 1.0


def test_seed001_complex64_output_follows_from_weights_recovered_from_the_print():
    # Weights not printed; recovered as for Conv3d (see recover_affine_1x1).  For a
    # 1x1x1 transposed convolution with one input channel y = w x + b as well.
    w, b = recover_affine_1x1(CONVT3D_C64_OUT, X_ROW)
    np.testing.assert_allclose(w, [0.4414 + 0.4792j, -0.1353 + 0.5304j, -0.1265 + 0.1165j],
                               atol=HALF_ULP_PRINTED + 2e-5)
    layer = layer_with(fc.ConvTranspose3d, w.reshape(1, 3, 1, 1, 1), b, 1, 3, 1,
                       dtype=np.complex64)
    y = layer(TENSOR_5D_C64)
    assert y.shape == (1, 3, 2, 3, 1) and y.dtype == np.complex64
    slack = np.sqrt(2) * (1.25e-5 * np.abs(X_ROW) + 2 * HALF_ULP_PRINTED) + ROUND_OFF
    assert_matches_print(y[0].reshape(3, 6), CONVT3D_C64_OUT, slack)


@requires_torch
def test_seed001_complex64_with_torch_weights_reproduces_the_printed_output():
    state = torch_weights("ConvTranspose3d", 1, 3, 1, dtype=torch.complex64)
    layer = layer_with(fc.ConvTranspose3d, state["weight"], state["bias"], 1, 3, 1,
                       dtype=np.complex64)
    assert_matches_print(layer(TENSOR_5D_C64)[0].reshape(3, 6), CONVT3D_C64_OUT,
                         np.sqrt(2) * HALF_ULP_PRINTED + ROUND_OFF)


# =====================================================================================
# 002: the torch.nn.Conv3d reference page
# =====================================================================================


def test_seed002_conv3d_16_to_33_stride_2_attributes_and_weight_shape():
    m = fc.Conv3d(16, 33, 3, stride=2, rng=0)
    assert repr(m) == "Conv3d(16, 33, kernel_size=(3, 3, 3), stride=(2, 2, 2))"
    # weight: (out_channels, in_channels / groups, k0, k1, k2), from U(-sqrt(k), sqrt(k))
    # with k = groups / (C_in * prod(kernel_size)).
    assert m.weight.shape == (33, 16, 3, 3, 3) and m.bias.shape == (33,)
    bound = np.sqrt(1 / (16 * 27))
    assert np.abs(m.weight).max() <= bound and np.abs(m.bias).max() <= bound
    assert np.abs(m.weight).max() > 0.99 * bound


def test_seed002_init_bound_with_groups_is_sqrt_groups_over_fan():
    m = fc.Conv3d(16, 32, (3, 1, 2), groups=4, rng=0)
    assert m.weight.shape == (32, 4, 3, 1, 2)
    bound = np.sqrt(4 / (16 * 3 * 1 * 2))
    assert np.abs(m.weight).max() <= bound and np.abs(m.weight).max() > 0.97 * bound


def test_seed002_depthwise_weight_shape():
    # "groups == in_channels and out_channels == K * in_channels": depthwise, K = 3.
    m = fc.Conv3d(4, 12, 3, groups=4)
    assert m.weight.shape == (12, 1, 3, 3, 3)


def test_seed002_non_square_kernel_unequal_stride_output_shape():
    # m = nn.Conv3d(16, 33, (3, 5, 2), stride=(2, 1, 1), padding=(4, 2, 0))
    # input = torch.randn(20, 16, 10, 50, 100); the documented formula gives
    # D = (10 + 8 - 2 - 1) // 2 + 1 = 8, H = (50 + 4 - 4 - 1) + 1 = 50,
    # W = (100 - 1 - 1) + 1 = 99.  The batch of 20 would cost ~12.5 GFLOP; the
    # batch size does not enter the formula, so one sample of the documented
    # spatial size shows the shapes (and is checked against the oracle below).
    m = fc.Conv3d(16, 33, (3, 5, 2), stride=(2, 1, 1), padding=(4, 2, 0), rng=0)
    assert repr(m) == ("Conv3d(16, 33, kernel_size=(3, 5, 2), stride=(2, 1, 1), "
                       "padding=(4, 2, 0))")
    x = np.random.default_rng(0).standard_normal((1, 16, 10, 50, 100)).astype(np.float32)
    y = m(x)
    assert y.shape == (1, 33, 8, 50, 99) and y.dtype == np.float32
    # Spot-check a few output positions against the float64 oracle on a crop
    # (a crop keeps it cheap; positions near the padded border are included).
    x_crop = x[:, :, :, :12, :10].astype(np.float64)
    expected = reference.conv(x_crop, m.weight, m.bias, stride=(2, 1, 1), padding=(4, 2, 0))
    np.testing.assert_allclose(y[:, :, :, :8, :9], expected[:, :, :, :8, :9],
                               rtol=1e-4, atol=1e-4)
    # And the batch of 20 unbatched one by one would give the same D, H, W:
    assert m(x[0]).shape == (33, 8, 50, 99)


# =====================================================================================
# 003: Conv1d in PyTorch
# =====================================================================================

CONV1D_W = CONV3D_W.reshape(3, 1, 1)      # printed [[[0.7645]], [[0.8300]], [[-0.2343]]]
CONV1D_B = CONV3D_B                      # printed [0.9186, -0.2191, 0.2018]
TENSOR1_1D = np.array([X_ROW], np.float32)                                      # (1, 6)


def test_seed003_conv1d_printed_attributes_and_repr():
    conv1d1 = fc.Conv1d(in_channels=1, out_channels=3, kernel_size=1)
    assert repr(conv1d1) == "Conv1d(1, 3, kernel_size=(1,), stride=(1,))"
    assert (conv1d1.in_channels, conv1d1.out_channels) == (1, 3)
    assert conv1d1.kernel_size == (1,)
    assert conv1d1.stride == (1,)
    assert conv1d1.padding == (0,)
    assert conv1d1.dilation == (1,)
    assert conv1d1.groups == 1
    assert conv1d1.padding_mode == "zeros"
    assert conv1d1.weight.shape == (3, 1, 1) and conv1d1.bias.shape == (3,)


@pytest.mark.parametrize("spelled_out", [False, True], ids=["defaults", "every-argument"])
def test_seed003_conv1d_printed_weights_reproduce_printed_output(spelled_out):
    kw = dict(stride=1, padding=0, dilation=1, groups=1, bias=True,
              padding_mode="zeros") if spelled_out else {}
    conv1d = fc.Conv1d(in_channels=1, out_channels=3, kernel_size=1, **kw)
    conv1d.load_state_dict({"weight": CONV1D_W, "bias": CONV1D_B})
    y = conv1d(TENSOR1_1D)                       # 2-D input: unbatched (C=1, L=6)
    assert y.shape == (3, 6) and y.dtype == np.float32
    assert_matches_print(y, CONV3D_OUT_ROWS, printed_slack(np.abs(X_ROW)))


# Outputs whose weights the document does not print (all after manual_seed(42)).
# With kernel_size 1 and several input channels they cannot be recovered from the
# printed outputs (e.g. Conv1d(2, 3, 1) on a (2, 3) input: 3 unknowns per output
# channel and 3 printed values, so nothing is left over to check), so without
# torch only shapes and dtypes are checked; with torch the weights are redrawn.
CONV1D_CASES = [
    # conv1d2(tensor2): the printed tensor2 (rounded) stands in for the exact one.
    pytest.param((3, 3), np.array(CONV3D_OUT_ROWS, np.float32), CONV3D2_OUT_ROWS, np.float32,
                 id="conv1d2-3to3-on-printed-tensor2"),
    pytest.param((2, 3), np.array([[8., -3., 0.], [1., 5., -2.]], np.float32),
                 np.array([[4.5675, 0.9684, -1.5181], [-0.2604, 4.1600, -0.8838],
                           [-0.4734, 1.8016, 0.3380]]), np.float32, id="2to3-unbatched-2x3"),
    pytest.param((6, 3), np.array([[8.], [-3.], [0.], [1.], [5.], [-2.]], np.float32),
                 np.array([[1.0529], [-0.8833], [3.4542]]), np.float32,
                 id="6to3-unbatched-6x1"),
    pytest.param((3, 3), np.array([[[8.], [-3.], [0.]], [[1.], [5.], [-2.]]], np.float32),
                 np.array([[[1.6701], [5.1242], [-3.1578]], [[2.6844], [0.1667], [0.5044]]]),
                 np.float32, id="3to3-batched-2x3x1"),
    pytest.param((3, 3), np.array([[[8.], [-3.], [0.]], [[1.], [5.], [-2.]]], np.complex64),
                 np.array([[[3.6675 + 2.3897j], [-4.0416 + 3.9155j], [2.3427 + 1.2531j]],
                           [[-0.2514 + 3.0452j], [0.9940 - 2.0626j], [0.6939 - 0.1171j]]]),
                 np.complex64, id="3to3-batched-complex64"),
]


@pytest.mark.parametrize("channels, x, printed, dtype", CONV1D_CASES)
def test_seed003_conv1d_unprinted_weights_give_the_printed_shape_and_dtype(channels, x,
                                                                          printed, dtype):
    y = fc.Conv1d(*channels, kernel_size=1, dtype=dtype, rng=42)(x)
    assert y.shape == printed.shape and y.dtype == dtype


@requires_torch
@pytest.mark.parametrize("channels, x, printed, dtype", CONV1D_CASES)
def test_seed003_conv1d_with_torch_weights_reproduces_the_printed_output(channels, x,
                                                                        printed, dtype):
    tdtype = torch.complex64 if dtype == np.complex64 else torch.float32
    state = torch_weights("Conv1d", *channels, 1, dtype=tdtype)
    conv1d = layer_with(fc.Conv1d, state["weight"], state["bias"], *channels, 1, dtype=dtype)
    y = conv1d(x)
    slack = HALF_ULP_PRINTED * (np.sqrt(2) if dtype == np.complex64 else 1) + ROUND_OFF
    if x.shape == (3, 6):                       # conv1d2 on the printed tensor2
        # Fed the printed (rounded) tensor2: one extra rounding per input channel,
        # as for conv3d2 in document 000 (1.0402 here for the printed 1.0403).
        w_abs = np.abs(state["weight"]).reshape(3, 3).sum(axis=1, keepdims=True)
        slack = HALF_ULP_PRINTED * (w_abs + 1) + ROUND_OFF
    assert_matches_print(y, printed, slack)


# =====================================================================================
# 004: lucid.nn.Conv3d documentation
# =====================================================================================

LUCID_VALUES = np.arange(1.0, 9.0)            # the 1..8 both printed tensors hold


def test_seed004_bias_free_example_reading_that_reproduces_204():
    # The example declares Conv3d(in_channels=2, out_channels=1, kernel_size=2,
    # bias=False) and an input "Shape: (1, 2, 2, 2, 2)", but both printed tensors
    # hold only the eight values 1..8 (the input literal is 4-D, the weight has
    # one input channel).  The printed output 204 = 1^2 + ... + 8^2 fits exactly
    # one reading: one input channel, a 2x2x2 input and a 2x2x2 kernel, both 1..8.
    x = LUCID_VALUES.reshape(1, 1, 2, 2, 2).astype(np.float32)
    conv3d = fc.Conv3d(in_channels=1, out_channels=1, kernel_size=2, bias=False)
    conv3d.load_state_dict({"weight": LUCID_VALUES.reshape(1, 1, 2, 2, 2)})
    output = conv3d(x)
    assert output.shape == (1, 1, 1, 1, 1)
    np.testing.assert_allclose(output, [[[[[204.0]]]]], rtol=1e-6)
    # "output.backward()" seeds the gradient with ones.
    grad_input = conv3d.backward(np.ones_like(output))
    # Printed input_tensor.grad: the weight, [[1, 2], [3, 4]], [[5, 6], [7, 8]].
    np.testing.assert_allclose(grad_input, LUCID_VALUES.reshape(1, 1, 2, 2, 2), rtol=1e-6)
    # Printed conv3d.weight.grad: [[1, 2], [3, 4]], [[1, 2], [3, 4]].  That cannot
    # be right under any reading: the weight gradient of a single-output
    # convolution is the input patch, here 1..8 (5..8 never appear in the print).
    assert conv3d.bias is None and conv3d.bias_grad is None
    np.testing.assert_allclose(conv3d.weight_grad, LUCID_VALUES.reshape(1, 1, 2, 2, 2),
                               rtol=1e-6)
    assert not np.allclose(conv3d.weight_grad.ravel(), [1, 2, 3, 4, 1, 2, 3, 4])


def test_seed004_declared_two_channel_layer_rejects_the_printed_one_channel_weight():
    conv3d = fc.Conv3d(in_channels=2, out_channels=1, kernel_size=2, bias=False)
    assert conv3d.weight.shape == (1, 2, 2, 2, 2)
    with pytest.raises(ValueError, match=r"expected weight of shape \(1, 2, 2, 2, 2\), "
                                         r"got \(1, 1, 2, 2, 2\)"):
        conv3d.load_state_dict({"weight": LUCID_VALUES.reshape(1, 1, 2, 2, 2)})


def test_seed004_batched_example_shapes_bias_and_bias_gradient():
    # Conv3d(2, 2, 2, bias=True) on an input of the stated shape (2, 2, 3, 3, 3)
    # (the printed literal has only 36 of its 108 values; the output is printed as
    # "..."), bias [17, 18].  What can be checked: the stated output shape
    # (2, 2, 2, 2, 2), the bias, and that output.backward() (all-ones gradient)
    # gives each bias N * 2 * 2 * 2 = 16.
    conv3d = fc.Conv3d(in_channels=2, out_channels=2, kernel_size=2, bias=True, rng=0)
    conv3d.load_state_dict({"weight": conv3d.weight, "bias": [17.0, 18.0]})
    x = np.arange(1.0, 109.0, dtype=np.float32).reshape(2, 2, 3, 3, 3)
    output = conv3d(x)
    assert output.shape == (2, 2, 2, 2, 2)
    expected = reference.conv(x, conv3d.weight, conv3d.bias)
    np.testing.assert_allclose(output, expected, rtol=1e-5)
    conv3d.backward(np.ones_like(output))
    np.testing.assert_array_equal(conv3d.bias_grad, [16.0, 16.0])
    # The printed weight (one input channel per filter) does not fit this layer either.
    with pytest.raises(ValueError, match="expected weight of shape"):
        conv3d.load_state_dict({"weight": np.concatenate([LUCID_VALUES, LUCID_VALUES + 8])
                                .reshape(2, 1, 2, 2, 2), "bias": [17.0, 18.0]})


def max_pool3d_2(a):
    """MaxPool3D(kernel_size=2, stride=2) of an (N, C, D, H, W) array with even sizes."""
    n, c, d, h, w = a.shape
    return a.reshape(n, c, d // 2, 2, h // 2, 2, w // 2, 2).max(axis=(3, 5, 7))


def test_seed004_model_sketch_shapes():
    # conv1 = Conv3d(1, 8, 3, padding=1) -> ReLU -> conv2 = Conv3d(8, 16, 3) ->
    # MaxPool3D(2, 2) -> Linear(16 * 4 * 4 * 4, 10).  The Linear layer's size holds
    # for a 10x10x10 volume: conv1 keeps 10, conv2 gives 8, the pool 4.
    conv1 = fc.Conv3d(in_channels=1, out_channels=8, kernel_size=3, padding=1, rng=0)
    conv2 = fc.Conv3d(in_channels=8, out_channels=16, kernel_size=3, rng=1)
    x = np.random.default_rng(0).standard_normal((1, 1, 10, 10, 10)).astype(np.float32)
    h = np.maximum(conv1(x), 0)
    assert h.shape == (1, 8, 10, 10, 10)
    pooled = max_pool3d_2(np.maximum(conv2(h), 0))
    assert pooled.reshape(1, -1).shape == (1, 16 * 4 * 4 * 4)
    # The document's own input, "Shape: (1, 1, 3, 3, 3)", leaves conv2 a 1x1x1
    # output, too small for the pool; and its printed literal is only 4-D, which a
    # Conv3d reads as one unbatched 1x3x3 volume, too thin for conv2's kernel.
    assert conv2(np.maximum(conv1(np.ones((1, 1, 3, 3, 3), np.float32)), 0)).shape == (
        1, 16, 1, 1, 1)
    literal = np.array([[[[0.5, -1.2, 3.3], [0.7, 2.2, -0.3], [4.1, 5.5, 6.6]]]], np.float32)
    h_literal = conv1(literal)
    assert h_literal.shape == (8, 1, 3, 3)
    with pytest.raises(ValueError, match="larger than the padded input"):
        conv2(np.maximum(h_literal, 0))


@requires_torch
def test_seed004_model_sketch_forward_and_backward_through_relu_match_torch():
    # The conv -> ReLU -> conv part of the sketch, backpropagated by hand with the
    # layers' backward, equals torch's autograd with the same weights.
    torch.manual_seed(42)
    t1, t2 = torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.Conv3d(8, 16, 3)
    conv1, conv2 = fc.Conv3d(1, 8, 3, padding=1), fc.Conv3d(8, 16, 3)
    for ours, theirs in ((conv1, t1), (conv2, t2)):
        ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6, 6)).astype(np.float32)
    a = conv1(x)
    out = conv2(np.maximum(a, 0))
    grad_x = conv1.backward(conv2.backward(np.ones_like(out)) * (a > 0))
    xt = torch.tensor(x, requires_grad=True)
    out_t = t2(torch.relu(t1(xt)))
    out_t.sum().backward()
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), rtol=1e-4, atol=1e-4)
    for ours, theirs in ((conv1, t1), (conv2, t2)):
        scale = np.abs(theirs.weight.grad.numpy()).max()
        np.testing.assert_allclose(ours.weight_grad, theirs.weight.grad.numpy(),
                                   rtol=1e-4, atol=1e-5 * scale)
        np.testing.assert_allclose(ours.bias_grad, theirs.bias.grad.numpy(),
                                   rtol=1e-4, atol=1e-5 * scale)
