"""Gradients: every function of fastconv.grad.

* against ``torch.autograd`` (when PyTorch is importable): forward with
  ``requires_grad``, backward with a random ``grad_output``; padding modes go
  through ``torch.nn.ConvNd(padding_mode=...)`` with copied weights;
* against finite differences of the float64 NumPy oracle (no PyTorch needed),
  real and complex, which pins down PyTorch's complex convention
  ``grad = dL/dRe + i dL/dIm`` for the real loss ``L = Re(sum(conj(G) * y))``;
* adjoint identities ``<conv(x), y> == <x, conv_transpose(y)>``;
* a hypothesis property test of random conv3d configurations;
* argument errors.
"""
import os
import sys
import zlib

sys.path.insert(0, os.path.dirname(__file__))

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import torch_single_threaded, assert_close_scaled as assert_close
import fastconv as fc
import reference
from fastconv import grad

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - torch is optional
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
# PyTorch warns that 'same' with an even kernel copies the input; that is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")


torch_one_thread = torch_single_threaded     # from conftest


DTYPES = [np.float32, np.float64, np.complex64, np.complex128]
DTYPE_IDS = [np.dtype(d).name for d in DTYPES]
PADDING_MODES = ["zeros", "reflect", "replicate", "circular"]
CONV = {1: fc.conv1d, 2: fc.conv2d, 3: fc.conv3d}
CONV_T = {1: fc.conv_transpose1d, 2: fc.conv_transpose2d, 3: fc.conv_transpose3d}
CONV_INPUT = {nd: getattr(grad, f"conv{nd}d_input") for nd in (1, 2, 3)}
CONV_WEIGHT = {nd: getattr(grad, f"conv{nd}d_weight") for nd in (1, 2, 3)}
CONV_T_INPUT = {nd: getattr(grad, f"conv_transpose{nd}d_input") for nd in (1, 2, 3)}
CONV_T_WEIGHT = {nd: getattr(grad, f"conv_transpose{nd}d_weight") for nd in (1, 2, 3)}

# Tolerance relative to the largest magnitude of the expected result.

# --------------------------------------------------------------------------- helpers

def seed_of(*parts):
    """A seed that is stable across processes (unlike hash())."""
    return zlib.crc32(repr(parts).encode())


def random_array(rng, shape, dtype):
    """Uniform(-1, 1) data; complex dtypes get independent real and imaginary parts."""
    dtype = np.dtype(dtype)
    a = rng.uniform(-1, 1, shape)
    if dtype.kind == "c":
        a = a + 1j * rng.uniform(-1, 1, shape)
    return a.astype(dtype)




def to_torch(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def batched(a, nd):
    return a if a.ndim == nd + 2 else a[np.newaxis]


def unbatch_like(result, like, nd):
    return result if like.ndim == nd + 2 else result[0]


def reference_conv(x, w, b=None, stride=1, padding=0, dilation=1, groups=1,
                   padding_mode="zeros", nd=None):
    """reference.conv for batched or unbatched x (nd says which)."""
    out = reference.conv(batched(x, nd), w, b, stride, padding, dilation, groups, padding_mode)
    return unbatch_like(out, x, nd)


def reference_conv_transpose(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1,
                             dilation=1, nd=None):
    out = reference.conv_transpose(batched(x, nd), w, b, stride, padding, output_padding,
                                   groups, dilation)
    return unbatch_like(out, x, nd)


def real_loss(G, y):
    """PyTorch's real loss for a complex backward with grad_output G: Re(sum(conj(G) * y))."""
    return float(np.real(np.vdot(G, y)))


def finite_difference_gradient(loss, a, h=1e-3):
    """Central differences of a real loss w.r.t. every element of a.

    For complex a the result is dL/dRe(a) + i dL/dIm(a), PyTorch's convention.
    The losses here are linear in a, so the differences are exact up to rounding.
    """
    a = np.array(a, dtype=np.complex128 if np.iscomplexobj(a) else np.float64)
    g = np.zeros_like(a)
    flat, gflat = a.reshape(-1), g.reshape(-1)
    directions = [1.0, 1j] if np.iscomplexobj(a) else [1.0]
    for i in range(flat.size):
        for direction in directions:
            orig = flat[i]
            flat[i] = orig + h * direction
            up = loss(a)
            flat[i] = orig - h * direction
            down = loss(a)
            flat[i] = orig
            gflat[i] += direction * (up - down) / (2 * h)
    return g


def directional_check(loss, a, grad_a, rng, h=1e-3, rtol=1e-9):
    """Finite differences along one random direction V (and iV for complex):
    the directional derivative must equal Re(vdot(grad, V))."""
    V = random_array(rng, a.shape, np.complex128 if np.iscomplexobj(a) else np.float64)
    a = a.astype(V.dtype)
    directions = [V, 1j * V] if np.iscomplexobj(a) else [V]
    for D in directions:
        fd = (loss(a + h * D) - loss(a - h * D)) / (2 * h)
        predicted = float(np.real(np.vdot(grad_a.astype(np.complex128), D)))
        scale = max(1.0, float(np.abs(grad_a).sum()) * float(np.abs(D).max()))
        assert abs(fd - predicted) <= rtol * scale, (fd, predicted)


def same_padding_output_padding(n, k, s, p, d):
    """output_padding that makes conv_transpose undo the floor in conv's output size."""
    return tuple((ni + 2 * pi - di * (ki - 1) - 1) % si
                 for ni, ki, si, pi, di in zip(n, k, s, p, d))


def tup(v, nd):
    return (v,) * nd if isinstance(v, int) else tuple(v)


class ConvCase:
    """A convolution configuration; weight (C_out, C_in/groups, *k)."""

    def __init__(self, nd, c_in, c_out, kernel, spatial, stride=1, padding=0, dilation=1,
                 groups=1, padding_mode="zeros"):
        self.nd, self.c_in, self.c_out = nd, c_in, c_out
        self.kernel, self.spatial = tuple(kernel), tuple(spatial)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.groups, self.padding_mode = groups, padding_mode

    @property
    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def arrays(self, rng, dtype, is_batched):
        x_shape = ((2,) if is_batched else ()) + (self.c_in,) + self.spatial
        x = random_array(rng, x_shape, dtype)
        w = random_array(rng, (self.c_out, self.c_in // self.groups) + self.kernel, dtype)
        b = random_array(rng, (self.c_out,), dtype)
        return x, w, b

    def forward(self, x, w, b=None):
        return CONV[self.nd](x, w, b, **self.kwargs, padding_mode=self.padding_mode)

    def reference(self, x, w, b=None):
        return reference_conv(x, w, b, **self.kwargs, padding_mode=self.padding_mode,
                              nd=self.nd)

    def __repr__(self):
        return (f"{self.nd}d-{self.c_in}to{self.c_out}-k{self.kernel}-n{self.spatial}"
                f"-s{self.stride}-p{self.padding}-d{self.dilation}-g{self.groups}"
                f"-{self.padding_mode}")


class TransposeCase:
    """A transposed-convolution configuration; weight (C_in, C_out/groups, *k)."""

    def __init__(self, nd, c_in, cout_g, kernel, spatial, stride=1, padding=0,
                 output_padding=0, dilation=1, groups=1):
        self.nd, self.c_in, self.cout_g = nd, c_in, cout_g
        self.kernel, self.spatial = tuple(kernel), tuple(spatial)
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        self.dilation, self.groups = dilation, groups

    @property
    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding,
                    output_padding=self.output_padding, groups=self.groups,
                    dilation=self.dilation)

    def arrays(self, rng, dtype, is_batched):
        x_shape = ((2,) if is_batched else ()) + (self.c_in,) + self.spatial
        x = random_array(rng, x_shape, dtype)
        w = random_array(rng, (self.c_in, self.cout_g) + self.kernel, dtype)
        b = random_array(rng, (self.cout_g * self.groups,), dtype)
        return x, w, b

    def forward(self, x, w, b=None):
        return CONV_T[self.nd](x, w, b, **self.kwargs)

    def reference(self, x, w, b=None):
        return reference_conv_transpose(x, w, b, **self.kwargs, nd=self.nd)

    def __repr__(self):
        return (f"T{self.nd}d-cin{self.c_in}-cog{self.cout_g}-k{self.kernel}-n{self.spatial}"
                f"-s{self.stride}-p{self.padding}-op{self.output_padding}-d{self.dilation}"
                f"-g{self.groups}")


CONV_CASES = [
    # 1-D
    ConvCase(1, 2, 3, (3,), (7,)),
    ConvCase(1, 4, 4, (3,), (8,), stride=2, padding=1, groups=2),
    ConvCase(1, 2, 2, (2,), (6,), padding="same", dilation=2, padding_mode="reflect"),
    ConvCase(1, 3, 2, (4,), (6,), padding="same", padding_mode="circular"),
    ConvCase(1, 2, 4, (3,), (5,), stride=3, padding=2, padding_mode="replicate"),
    ConvCase(1, 4, 2, (3,), (8,), padding="valid", dilation=3, groups=2),
    ConvCase(1, 4, 4, (2,), (5,), stride=2, padding=(3,), groups=4, padding_mode="circular"),
    ConvCase(1, 2, 2, (3,), (6,), stride=2, padding=4, dilation=2, padding_mode="reflect"),
    ConvCase(1, 2, 2, (3,), (3,), padding=3, padding_mode="circular"),  # padding == size
    # 2-D
    ConvCase(2, 2, 3, (2, 3), (5, 6)),
    ConvCase(2, 4, 2, (3, 2), (6, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2),
             groups=2),
    ConvCase(2, 2, 2, (2, 2), (5, 4), padding="same", padding_mode="reflect"),
    ConvCase(2, 3, 3, (3, 3), (5, 5), padding="same", dilation=(2, 1), groups=3,
             padding_mode="replicate"),
    ConvCase(2, 2, 4, (3, 2), (4, 6), stride=(3, 2), padding=(2, 1), padding_mode="circular"),
    ConvCase(2, 4, 4, (2, 3), (6, 5), padding="valid", stride=2, dilation=(2, 1), groups=2),
    ConvCase(2, 2, 2, (3, 3), (4, 5), padding=(1, 0), padding_mode="reflect"),
    ConvCase(2, 2, 2, (3, 3), (3, 4), padding=(4, 2), padding_mode="replicate"),  # pad > size
    # 3-D
    ConvCase(3, 2, 2, (2, 2, 2), (4, 3, 4)),
    ConvCase(3, 4, 2, (2, 3, 2), (4, 5, 3), stride=(1, 2, 2), padding=(1, 1, 0), groups=2),
    ConvCase(3, 2, 3, (3, 2, 2), (4, 4, 3), padding="same", dilation=(1, 2, 1),
             padding_mode="reflect"),
    ConvCase(3, 2, 2, (2, 3, 3), (3, 4, 4), stride=2, padding=(1, 2, 1),
             padding_mode="replicate"),
    ConvCase(3, 2, 2, (2, 2, 3), (3, 4, 3), padding="same", padding_mode="circular"),
    ConvCase(3, 4, 4, (2, 2, 2), (4, 3, 5), padding="valid", stride=(2, 1, 2),
             dilation=(1, 2, 2), groups=4),
    ConvCase(3, 2, 2, (2, 2, 2), (4, 3, 3), padding=(3, 2, 2),
             padding_mode="reflect"),  # padding == size - 1
]

TRANSPOSE_CASES = [
    # 1-D
    TransposeCase(1, 2, 3, (3,), (5,)),
    TransposeCase(1, 4, 2, (3,), (5,), stride=2, padding=1, output_padding=1, groups=2),
    TransposeCase(1, 3, 1, (2,), (4,), stride=3, padding=2, output_padding=2, dilation=2,
                  groups=3),
    TransposeCase(1, 2, 2, (3,), (5,), stride=1, padding=1, output_padding=1, dilation=2),
    TransposeCase(1, 4, 3, (4,), (4,), stride=2, padding=(2,), output_padding=0, dilation=1),
    # 2-D
    TransposeCase(2, 2, 2, (2, 3), (4, 3)),
    TransposeCase(2, 4, 1, (3, 2), (3, 4), stride=(2, 3), padding=(1, 0),
                  output_padding=(1, 2), groups=4),
    TransposeCase(2, 2, 3, (2, 2), (4, 4), stride=(1, 2), padding=(1, 1),
                  output_padding=(1, 0), dilation=(2, 1)),
    TransposeCase(2, 4, 2, (3, 3), (3, 3), stride=2, padding=2, output_padding=1,
                  dilation=2, groups=2),
    # 3-D
    TransposeCase(3, 2, 2, (2, 2, 2), (3, 3, 3)),
    TransposeCase(3, 4, 1, (2, 3, 2), (3, 3, 2), stride=(2, 1, 2), padding=(0, 1, 1),
                  output_padding=(1, 0, 1), groups=2),
    TransposeCase(3, 2, 2, (2, 2, 2), (3, 2, 3), stride=(1, 2, 1), padding=(1, 0, 0),
                  output_padding=(1, 1, 0), dilation=(2, 1, 1)),
    TransposeCase(3, 3, 2, (3, 2, 2), (2, 3, 3), stride=3, padding=(2, 1, 0),
                  output_padding=(2, 0, 1), dilation=(1, 2, 1), groups=3),
]


# --------------------------------------------------------------------------- vs torch

def _torch_conv_grads(case, x, w, b, G):
    """(y, dx, dw, db) from torch.autograd through nn.ConvNd(padding_mode=...)."""
    nd = case.nd
    module = getattr(torch.nn, f"Conv{nd}d")(
        case.c_in, case.c_out, case.kernel, stride=case.stride, padding=case.padding,
        dilation=case.dilation, groups=case.groups, bias=True,
        padding_mode=case.padding_mode, dtype=to_torch(w).dtype)
    with torch.no_grad():
        module.weight.copy_(to_torch(w))
        module.bias.copy_(to_torch(b))
    xt = to_torch(x).clone().requires_grad_(True)
    with torch_one_thread():
        y = module(xt)
        y.backward(to_torch(G))
    return (y.detach().numpy(), xt.grad.numpy(), module.weight.grad.numpy(),
            module.bias.grad.numpy())


def _torch_transpose_grads(case, x, w, b, G):
    """(y, dx, dw, db) from torch.autograd through F.conv_transposeNd."""
    xt = to_torch(x).clone().requires_grad_(True)
    wt = to_torch(w).clone().requires_grad_(True)
    bt = to_torch(b).clone().requires_grad_(True)
    with torch_one_thread():
        y = getattr(F, f"conv_transpose{case.nd}d")(xt, wt, bt, **case.kwargs)
        y.backward(to_torch(G))
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


@needs_torch
@pytest.mark.parametrize("is_batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CONV_CASES, ids=repr)
def test_conv_gradients_match_torch_autograd(case, dtype, is_batched):
    rng = np.random.default_rng(seed_of(case, DTYPE_IDS[DTYPES.index(dtype)], is_batched))
    x, w, b = case.arrays(rng, dtype, is_batched)
    y = case.forward(x, w, b)
    G = random_array(rng, y.shape, dtype)

    y_t, dx_t, dw_t, db_t = _torch_conv_grads(case, x, w, b, G)
    assert_close(y, y_t, dtype, "forward")

    nd = case.nd
    dx = CONV_INPUT[nd](x.shape, w, G, **case.kwargs, padding_mode=case.padding_mode)
    dw = CONV_WEIGHT[nd](x, w.shape, G, **case.kwargs, padding_mode=case.padding_mode)
    db = grad.conv_bias(G, nd)
    for name, ours, theirs in (("input", dx, dx_t), ("weight", dw, dw_t), ("bias", db, db_t)):
        assert ours.shape == theirs.shape, name
        assert ours.dtype == np.dtype(dtype), name
        assert_close(ours, theirs, dtype, name)


@needs_torch
@pytest.mark.parametrize("is_batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=repr)
def test_conv_transpose_gradients_match_torch_autograd(case, dtype, is_batched):
    rng = np.random.default_rng(seed_of(case, DTYPE_IDS[DTYPES.index(dtype)], is_batched))
    x, w, b = case.arrays(rng, dtype, is_batched)
    y = case.forward(x, w, b)
    G = random_array(rng, y.shape, dtype)

    y_t, dx_t, dw_t, db_t = _torch_transpose_grads(case, x, w, b, G)
    assert_close(y, y_t, dtype, "forward")

    nd = case.nd
    dx = CONV_T_INPUT[nd](x.shape, w, G, **case.kwargs)
    dw = CONV_T_WEIGHT[nd](x, w.shape, G, **case.kwargs)
    db = grad.conv_bias(G, nd)
    for name, ours, theirs in (("input", dx, dx_t), ("weight", dw, dw_t), ("bias", db, db_t)):
        assert ours.shape == theirs.shape, name
        assert ours.dtype == np.dtype(dtype), name
        assert_close(ours, theirs, dtype, name)


@needs_torch
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_gradients_match_torch_nn_grad(nd):
    """The zeros-mode functions mirror torch.nn.grad.convNd_input / convNd_weight."""
    rng = np.random.default_rng(nd)
    x = random_array(rng, (2, 4) + (5,) * nd, np.float64)
    w = random_array(rng, (6, 2) + (3,) * nd, np.float64)
    kwargs = dict(stride=2, padding=1, dilation=1, groups=2)
    G = random_array(rng, CONV[nd](x, w, **kwargs).shape, np.float64)
    with torch_one_thread():
        expected_dx = getattr(torch.nn.grad, f"conv{nd}d_input")(x.shape, to_torch(w),
                                                                 to_torch(G), **kwargs)
        expected_dw = getattr(torch.nn.grad, f"conv{nd}d_weight")(to_torch(x), w.shape,
                                                                  to_torch(G), **kwargs)
    assert_close(CONV_INPUT[nd](x.shape, w, G, **kwargs), expected_dx.numpy(), np.float64)
    assert_close(CONV_WEIGHT[nd](x, w.shape, G, **kwargs), expected_dw.numpy(), np.float64)


# --------------------------------------------------------------------------- finite differences

FD_CONV_CASES = [c for c in CONV_CASES if c.nd < 3 or c.padding_mode != "zeros"]
FD_TRANSPOSE_CASES = TRANSPOSE_CASES[::2]


@pytest.mark.parametrize("dtype", [np.float64, np.complex128], ids=["float64", "complex128"])
@pytest.mark.parametrize("case", FD_CONV_CASES, ids=repr)
def test_conv_gradients_match_finite_differences_of_reference(case, dtype):
    rng = np.random.default_rng(seed_of(case, np.dtype(dtype).name, "fd"))
    x, w, b = case.arrays(rng, dtype, is_batched=case.nd == 1)
    G = random_array(rng, case.forward(x, w, b).shape, dtype)
    nd = case.nd

    fd_x = finite_difference_gradient(lambda a: real_loss(G, case.reference(a, w, b)), x)
    fd_w = finite_difference_gradient(lambda a: real_loss(G, case.reference(x, a, b)), w)
    fd_b = finite_difference_gradient(lambda a: real_loss(G, case.reference(x, w, a)), b)

    dx = CONV_INPUT[nd](x.shape, w, G, **case.kwargs, padding_mode=case.padding_mode)
    dw = CONV_WEIGHT[nd](x, w.shape, G, **case.kwargs, padding_mode=case.padding_mode)
    db = grad.conv_bias(G, nd)
    np.testing.assert_allclose(dx, fd_x, rtol=1e-8, atol=1e-8, err_msg="input")
    np.testing.assert_allclose(dw, fd_w, rtol=1e-8, atol=1e-8, err_msg="weight")
    np.testing.assert_allclose(db, fd_b, rtol=1e-8, atol=1e-8, err_msg="bias")


@pytest.mark.parametrize("dtype", [np.float64, np.complex128], ids=["float64", "complex128"])
@pytest.mark.parametrize("case", FD_TRANSPOSE_CASES, ids=repr)
def test_conv_transpose_gradients_match_finite_differences_of_reference(case, dtype):
    rng = np.random.default_rng(seed_of(case, np.dtype(dtype).name, "fd"))
    x, w, b = case.arrays(rng, dtype, is_batched=case.nd != 2)
    G = random_array(rng, case.forward(x, w, b).shape, dtype)
    nd = case.nd

    fd_x = finite_difference_gradient(lambda a: real_loss(G, case.reference(a, w, b)), x)
    fd_w = finite_difference_gradient(lambda a: real_loss(G, case.reference(x, a, b)), w)
    fd_b = finite_difference_gradient(lambda a: real_loss(G, case.reference(x, w, a)), b)

    dx = CONV_T_INPUT[nd](x.shape, w, G, **case.kwargs)
    dw = CONV_T_WEIGHT[nd](x, w.shape, G, **case.kwargs)
    db = grad.conv_bias(G, nd)
    np.testing.assert_allclose(dx, fd_x, rtol=1e-8, atol=1e-8, err_msg="input")
    np.testing.assert_allclose(dw, fd_w, rtol=1e-8, atol=1e-8, err_msg="weight")
    np.testing.assert_allclose(db, fd_b, rtol=1e-8, atol=1e-8, err_msg="bias")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64])
@pytest.mark.parametrize("groups, c_in, c_out, kernel", [(1, 24, 16, (3, 3)),
                                                          (2, 16, 24, (3, 2)),
                                                          (4, 32, 8, (1, 3))])
def test_stride1_input_gradient_through_the_public_call_matches_the_oracle(
        groups, c_in, c_out, kernel, dtype):
    """The public call's stride-1 input gradient packs the convolution's own weight,
    channels swapped and taps reversed per group, with no flipped copy: its
    result is the oracle's (several channels per group, so the packed kernel,
    not the depthwise one, runs), and the weight is left as it was."""
    rng = np.random.default_rng(groups)
    x_shape = (2, c_in, 6, 7)
    w = random_array(rng, (c_out, c_in // groups) + kernel, dtype)
    pad = tuple(k // 2 for k in kernel)
    out = tuple(n + 2 * p - k + 1 for n, p, k in zip(x_shape[2:], pad, kernel))
    g = random_array(rng, (2, c_out) + out, dtype)
    w_before = w.copy()
    got = grad.conv2d_input(x_shape, w, g, padding=pad, groups=groups)
    again = grad.conv2d_input(x_shape, w, g, padding=pad, groups=groups)   # prepared call
    want = reference.conv_input(x_shape, w, g, padding=pad, groups=groups)
    assert_close(got, want, dtype)
    np.testing.assert_array_equal(again, got)
    np.testing.assert_array_equal(w, w_before)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_complex_gradient_convention_is_conjugate_wirtinger(nd):
    """grad = dL/dRe + i dL/dIm for L = Re(sum(conj(G) * y)); the conjugate convention
    (dL/dRe - i dL/dIm) and the unconjugated formulas must fail, so the check has teeth."""
    rng = np.random.default_rng(40 + nd)
    x = random_array(rng, (1, 2) + (4,) * nd, np.complex128)
    w = random_array(rng, (2, 2) + (2,) * nd, np.complex128)
    kwargs = dict(stride=1, padding=1)
    G = random_array(rng, CONV[nd](x, w, **kwargs).shape, np.complex128)

    fd_x = finite_difference_gradient(
        lambda a: real_loss(G, reference.conv(a, w, None, **kwargs)), x)
    fd_w = finite_difference_gradient(
        lambda a: real_loss(G, reference.conv(x, a, None, **kwargs)), w)
    dx = CONV_INPUT[nd](x.shape, w, G, **kwargs)
    dw = CONV_WEIGHT[nd](x, w.shape, G, **kwargs)
    np.testing.assert_allclose(dx, fd_x, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(dw, fd_w, rtol=1e-9, atol=1e-9)

    # The explicit formula grad_x = conv_transpose(G, conj(w)) agrees with the
    # finite differences; the unconjugated conv_transpose(G, w) does not.
    np.testing.assert_allclose(reference.conv_transpose(G, np.conj(w), None, 1, 1), fd_x,
                               rtol=1e-9, atol=1e-9)
    dx_unconj = reference.conv_transpose(G, w, None, 1, 1)
    for wrong in (np.conj(fd_x), dx_unconj):
        assert np.abs(dx - wrong).max() > 1e-2
    assert np.abs(dw - np.conj(fd_w)).max() > 1e-2


# --------------------------------------------------------------------------- adjoint identities

def _random_conv_config(rng, nd):
    k = tuple(int(v) for v in rng.integers(1, 4, nd))
    s = tuple(int(v) for v in rng.integers(1, 4, nd))
    d = tuple(int(v) for v in rng.integers(1, 3, nd))
    p = tuple(int(v) for v in rng.integers(0, 3, nd))
    n = tuple(max(int(rng.integers(3, 7)), di * (ki - 1) + 1 - 2 * pi)
              for ki, di, pi in zip(k, d, p))
    groups = int(rng.choice([1, 2]))
    return n, k, s, p, d, groups


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_adjoint_identity_conv_and_conv_transpose(nd, dtype):
    """<conv(x, w), y> == <x, conv_transpose(y, w)> (bilinear), and with vdot:
    vdot(conv(x, w), y) == vdot(x, conv_transpose(y, conj(w)))."""
    rng = np.random.default_rng(seed_of(nd, DTYPE_IDS[DTYPES.index(dtype)], "adjoint"))
    for _ in range(6):
        n, k, s, p, d, groups = _random_conv_config(rng, nd)
        x = random_array(rng, (2, 2 * groups) + n, dtype)
        w = random_array(rng, (3 * groups, 2) + k, dtype)
        y_shape = CONV[nd](x, w, stride=s, padding=p, dilation=d, groups=groups).shape
        y = random_array(rng, y_shape, dtype)
        op = same_padding_output_padding(n, k, s, p, d)
        kwargs = dict(stride=s, padding=p, output_padding=op, groups=groups, dilation=d)

        ax = CONV[nd](x, w, stride=s, padding=p, dilation=d, groups=groups)
        aty = CONV_T[nd](y, w, **kwargs)
        ahy = CONV_T[nd](y, np.conj(w), **kwargs)
        assert aty.shape == x.shape

        wide = np.complex128
        lhs = np.sum(ax.astype(wide) * y)
        rhs = np.sum(x.astype(wide) * aty)
        scale = np.abs(ax).sum() * np.abs(y).max() + 1.0
        tol = 1e-12 if dtype in (np.float64, np.complex128) else 1e-5
        assert abs(lhs - rhs) <= tol * scale, (n, k, s, p, d, groups)
        lhs = np.vdot(ax.astype(wide), y)
        rhs = np.vdot(x.astype(wide), ahy)
        assert abs(lhs - rhs) <= tol * scale, (n, k, s, p, d, groups)


@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("dtype", [np.float64, np.complex128], ids=["float64", "complex128"])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_adjoint_identity_of_conv_input_gradient_for_every_padding_mode(nd, dtype,
                                                                       padding_mode):
    """vdot(conv(x), G) == vdot(x, convNd_input(G)): the input gradient is the adjoint."""
    rng = np.random.default_rng(seed_of(nd, padding_mode, np.dtype(dtype).name))
    for _ in range(4):
        n, k, s, p, d, groups = _random_conv_config(rng, nd)
        n = tuple(max(ni, pi + 1) for ni, pi in zip(n, p))  # reflect needs p < n
        x = random_array(rng, (2, 2 * groups) + n, dtype)
        w = random_array(rng, (2 * groups, 2) + k, dtype)
        kwargs = dict(stride=s, padding=p, dilation=d, groups=groups)
        ax = CONV[nd](x, w, **kwargs, padding_mode=padding_mode)
        G = random_array(rng, ax.shape, dtype)
        dx = CONV_INPUT[nd](x.shape, w, G, **kwargs, padding_mode=padding_mode)
        v = random_array(rng, w.shape, dtype)
        dw = CONV_WEIGHT[nd](x, w.shape, G, **kwargs, padding_mode=padding_mode)
        av = CONV[nd](x, v, **kwargs, padding_mode=padding_mode)
        np.testing.assert_allclose(np.vdot(ax, G), np.vdot(x, dx), rtol=1e-11, atol=1e-11)
        # The weight gradient is the adjoint of w -> conv(x, w).
        np.testing.assert_allclose(np.vdot(G, av), np.vdot(dw, v), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_input_gradient_equals_conv_transpose_with_matching_output_padding(nd, dtype):
    rng = np.random.default_rng(seed_of(nd, DTYPE_IDS[DTYPES.index(dtype)], "eq"))
    for _ in range(6):
        n, k, s, p, d, groups = _random_conv_config(rng, nd)
        x = random_array(rng, (2, 2 * groups) + n, dtype)
        w = random_array(rng, (3 * groups, 2) + k, dtype)
        kwargs = dict(stride=s, padding=p, dilation=d, groups=groups)
        G = random_array(rng, CONV[nd](x, w, **kwargs).shape, dtype)
        op = same_padding_output_padding(n, k, s, p, d)
        dx = CONV_INPUT[nd](x.shape, w, G, **kwargs)
        # PyTorch's convention: the complex input gradient uses conj(weight).
        expected = CONV_T[nd](G, np.conj(w), stride=s, padding=p, output_padding=op,
                              groups=groups, dilation=d)
        assert dx.shape == expected.shape == x.shape
        assert_close(dx, expected, dtype)
        # And the transposed convolution's input gradient is a convolution.
        dy = CONV_T_INPUT[nd](G.shape, w, dx, stride=s, padding=p, output_padding=op,
                              groups=groups, dilation=d)
        assert_close(dy, CONV[nd](dx, np.conj(w), **kwargs), dtype)


# --------------------------------------------------------------------------- misc behaviour

@pytest.mark.parametrize("nd", [1, 2, 3])
def test_gradient_result_dtype_is_result_type_of_arguments(nd):
    x = np.ones((1, 2) + (4,) * nd, np.float32)
    w = np.ones((2, 2) + (2,) * nd, np.float32)
    G32 = np.ones((1, 2) + (3,) * nd, np.float32)
    assert CONV_INPUT[nd](x.shape, w, G32).dtype == np.float32
    assert CONV_INPUT[nd](x.shape, w, G32.astype(np.float64)).dtype == np.float64
    assert CONV_WEIGHT[nd](x, w.shape, G32.astype(np.complex64)).dtype == np.complex64
    assert CONV_WEIGHT[nd](x.astype(np.float64), w.shape, G32.astype(np.complex64)).dtype \
        == np.complex128
    Gt = np.ones((1, 2) + (5,) * nd, np.float32)
    assert CONV_T_INPUT[nd](x.shape, w, Gt).dtype == np.float32
    assert CONV_T_WEIGHT[nd](x, w.shape, Gt.astype(np.complex128)).dtype == np.complex128
    assert grad.conv_bias(G32, nd).dtype == np.float32
    assert grad.conv_bias(G32.astype(np.int64), nd).dtype == np.float64


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_bias_sums_every_axis_but_channels_batched_and_unbatched(nd):
    rng = np.random.default_rng(nd)
    G = random_array(rng, (3, 4) + (3,) * nd, np.complex128)
    expected = G.sum(axis=tuple(a for a in range(G.ndim) if a != 1))
    np.testing.assert_allclose(grad.conv_bias(G, nd), expected, rtol=1e-12)
    np.testing.assert_allclose(grad.conv_bias(G[0], nd), G[0].sum(axis=tuple(range(1, nd + 1))),
                               rtol=1e-12)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_gradients_accept_lists_and_leave_inputs_unmodified(nd):
    rng = np.random.default_rng(nd)
    x = random_array(rng, (2, 2) + (4,) * nd, np.float64)
    w = random_array(rng, (2, 2) + (2,) * nd, np.float64)
    G = random_array(rng, CONV[nd](x, w, padding=1).shape, np.float64)
    copies = [a.copy() for a in (x, w, G)]
    dx = CONV_INPUT[nd](list(x.shape), w.tolist(), G.tolist(), padding=[1] * nd,
                        padding_mode="reflect")
    dw = CONV_WEIGHT[nd](x.tolist(), list(w.shape), G, padding=1, padding_mode="circular")
    for a, c in zip((x, w, G), copies):
        assert a.tobytes() == c.tobytes()
    np.testing.assert_allclose(dx, CONV_INPUT[nd](x.shape, w, G, padding=1,
                                                  padding_mode="reflect"), rtol=1e-12)
    np.testing.assert_allclose(dw, CONV_WEIGHT[nd](x, w.shape, G, padding=1,
                                                   padding_mode="circular"), rtol=1e-12)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_weight_gradient_is_bitwise_deterministic_across_threads(nd):
    rng = np.random.default_rng(nd)
    x = random_array(rng, (4, 8) + (6,) * nd, np.float32)
    G = random_array(rng, (4, 8) + (4,) * nd, np.float32)
    previous = fc.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 2):
            fc.set_num_threads(threads)
            results.append(CONV_WEIGHT[nd](x, (8, 4) + (3,) * nd, G, groups=2))
    finally:
        fc.set_num_threads(previous)
    assert results[0].tobytes() == results[1].tobytes() == results[2].tobytes()


# --------------------------------------------------------------------------- hypothesis

@st.composite
def conv3d_problems(draw):
    groups = draw(st.integers(1, 2))
    cin_g, cout_g = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(3))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(3))
    mode = draw(st.sampled_from(PADDING_MODES))
    kind = draw(st.sampled_from(["int", "tuple", "same", "valid"]))
    stride = (1, 1, 1) if kind == "same" else tuple(draw(st.integers(1, 2)) for _ in range(3))
    if kind == "int":
        padding = draw(st.integers(0, 2))
    elif kind == "tuple":
        padding = tuple(draw(st.integers(0, 2)) for _ in range(3))
    else:
        padding = kind
    pads = [(p, p) for p in tup(padding, 3)] if kind in ("int", "tuple") else [
        ((d * (k - 1)) // 2, d * (k - 1) - (d * (k - 1)) // 2) if kind == "same" else (0, 0)
        for k, d in zip(kernel, dilation)]
    spatial = []
    for k, d, (left, right) in zip(kernel, dilation, pads):
        low = max(3, d * (k - 1) + 1 - left - right, max(left, right) + 1)
        spatial.append(draw(st.integers(low, max(low, 6))))
    dtype = draw(st.sampled_from(DTYPES))
    is_batched = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    return dict(case=ConvCase(3, cin_g * groups, cout_g * groups, kernel, spatial,
                              stride=stride, padding=padding, dilation=dilation,
                              groups=groups, padding_mode=mode),
                dtype=dtype, is_batched=is_batched, seed=seed)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=conv3d_problems())
def test_conv3d_gradients_property_vs_finite_differences_and_torch(problem):
    case, dtype = problem["case"], problem["dtype"]
    rng = np.random.default_rng(problem["seed"])
    x, w, b = case.arrays(rng, dtype, problem["is_batched"])
    y = case.forward(x, w)
    G = random_array(rng, y.shape, dtype)
    dx = grad.conv3d_input(x.shape, w, G, **case.kwargs, padding_mode=case.padding_mode)
    dw = grad.conv3d_weight(x, w.shape, G, **case.kwargs, padding_mode=case.padding_mode)
    assert dx.shape == x.shape and dw.shape == w.shape
    assert dx.dtype == dw.dtype == np.dtype(dtype)

    # Finite differences of the float64 oracle along random directions (no torch).
    Gw = G.astype(np.complex128 if np.iscomplexobj(G) else np.float64)
    rtol = 1e-9 if dtype in (np.float64, np.complex128) else 5e-5
    directional_check(lambda a: real_loss(Gw, case.reference(a, w)), x, dx, rng, rtol=rtol)
    directional_check(lambda a: real_loss(Gw, case.reference(x, a)), w, dw, rng, rtol=rtol)

    if torch is not None:
        _, dx_t, dw_t, _ = _torch_conv_grads(case, x, w, b, G)
        assert_close(dx, dx_t, dtype, "input")
        assert_close(dw, dw_t, dtype, "weight")


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("nd", [1, 2, 3])
def test_grad_output_of_wrong_shape_is_rejected(nd):
    x = np.ones((2, 2) + (5,) * nd)
    w = np.ones((3, 2) + (3,) * nd)
    good = (2, 3) + (3,) * nd
    bad_shapes = [(2, 3) + (4,) * nd, (2, 4) + (3,) * nd, (1, 3) + (3,) * nd, (3,) + (3,) * nd]
    for bad in bad_shapes:
        G = np.ones(bad)
        msg = r"expected grad_output of shape \(2, 3" + r", 3" * nd
        with pytest.raises(ValueError, match=msg):
            CONV_INPUT[nd](x.shape, w, G)
        with pytest.raises(ValueError, match=msg):
            CONV_WEIGHT[nd](x, w.shape, G)
    # Transposed: input (2, 3, 3...) with weight (3, 2, 3...) gives (2, 2, 5...).
    xt = np.ones(good)
    for bad in [(2, 2) + (4,) * nd, (2, 3) + (5,) * nd, (2,) + (5,) * nd]:
        G = np.ones(bad)
        msg = r"expected grad_output of shape \(2, 2" + r", 5" * nd
        with pytest.raises(ValueError, match=msg):
            CONV_T_INPUT[nd](xt.shape, w, G)
        with pytest.raises(ValueError, match=msg):
            CONV_T_WEIGHT[nd](xt, w.shape, G)
    # Unbatched shapes expect an unbatched grad_output.
    with pytest.raises(ValueError, match=r"expected grad_output of shape \(3, 3"):
        CONV_INPUT[nd](x.shape[1:], w, np.ones(good))


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_bias_rejects_wrong_number_of_dims(nd):
    with pytest.raises(ValueError, match=r"conv_bias: expected grad_output with"):
        grad.conv_bias(np.ones((2,) * (nd + 3)), nd)
    with pytest.raises(ValueError, match=r"conv_bias: expected grad_output with"):
        grad.conv_bias(np.ones((2,) * nd), nd)
    with pytest.raises(ValueError, match=r"conv_bias: expected nd in \(1, 2, 3\)"):
        grad.conv_bias(np.ones((2, 2, 2)), 4)


@pytest.mark.parametrize("bad", [5, None, 2.5, object()], ids=["int", "None", "float", "object"])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_non_sequence_shapes_are_type_errors(nd, bad):
    x = np.ones((1, 2) + (4,) * nd)
    w = np.ones((2, 2) + (2,) * nd)
    G = np.ones((1, 2) + (3,) * nd)
    Gt = np.ones((1, 2) + (5,) * nd)
    with pytest.raises(TypeError, match=r"expected input_shape to be a tuple of ints"):
        CONV_INPUT[nd](bad, w, G)
    with pytest.raises(TypeError, match=r"expected weight_shape to be a tuple of ints"):
        CONV_WEIGHT[nd](x, bad, G)
    with pytest.raises(TypeError, match=r"expected input_shape to be a tuple of ints"):
        CONV_T_INPUT[nd](bad, w, Gt)
    with pytest.raises(TypeError, match=r"expected weight_shape to be a tuple of ints"):
        CONV_T_WEIGHT[nd](x, bad, Gt)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_negative_sizes_in_shapes_are_rejected(nd):
    w = np.ones((2, 2) + (2,) * nd)
    x = np.ones((1, 2) + (4,) * nd)
    G = np.ones((1, 2) + (3,) * nd)
    with pytest.raises(ValueError, match=r"expected input_shape with non-negative sizes"):
        CONV_INPUT[nd]((1, 2) + (-4,) * nd, w, G)
    with pytest.raises(ValueError, match=r"expected weight_shape with non-negative sizes"):
        CONV_WEIGHT[nd](x, (2, -2) + (2,) * nd, G)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_shapes_with_wrong_number_of_dims_are_rejected(nd):
    w = np.ones((2, 2) + (2,) * nd)
    x = np.ones((1, 2) + (4,) * nd)
    G = np.ones((1, 2) + (3,) * nd)
    with pytest.raises(ValueError, match=rf"expected input with {nd + 1} \(unbatched\) or "
                                         rf"{nd + 2} \(batched\) dims"):
        CONV_INPUT[nd]((1, 1, 2) + (4,) * nd, w, G)
    with pytest.raises(ValueError, match=r"expected weight of shape \(C_out, C_in/groups"):
        CONV_WEIGHT[nd](x, (2, 2) + (2,) * (nd + 1), G)
    with pytest.raises(ValueError, match=r"expected weight of shape \(C_in, C_out/groups"):
        CONV_T_WEIGHT[nd](x, (2,) + (2,) * nd, np.ones((1, 2) + (5,) * nd))


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_shapes_inconsistent_with_the_arrays_are_rejected(nd):
    w = np.ones((2, 2) + (2,) * nd)
    x = np.ones((1, 2) + (4,) * nd)
    G = np.ones((1, 2) + (3,) * nd)
    with pytest.raises(ValueError, match=r"expected input with 2 channels .*got 3"):
        CONV_INPUT[nd]((1, 3) + (4,) * nd, w, G)
    with pytest.raises(ValueError, match=r"expected input with 4 channels .*got 2"):
        CONV_WEIGHT[nd](x, (2, 4) + (2,) * nd, G)
    with pytest.raises(ValueError, match=r"divisible by groups=3"):
        CONV_WEIGHT[nd](np.ones((1, 3) + (4,) * nd), (2, 1) + (2,) * nd, G, groups=3)
    with pytest.raises(ValueError, match=r"output_padding smaller than stride or dilation"):
        CONV_T_INPUT[nd](x.shape, w, np.ones((1, 2) + (5,) * nd), output_padding=1)
    with pytest.raises(ValueError, match=r"padding strings are for convolution only"):
        CONV_T_WEIGHT[nd](x, w.shape, np.ones((1, 2) + (5,) * nd), padding="same")
    with pytest.raises(ValueError, match=r"padding='same' requires stride 1"):
        CONV_INPUT[nd](x.shape, w, G, stride=2, padding="same")
    with pytest.raises(ValueError, match=r"padding_mode='reflect' needs padding smaller"):
        CONV_INPUT[nd](x.shape, w, np.ones((1, 2) + (11,) * nd), padding=4,
                       padding_mode="reflect")
    with pytest.raises(ValueError, match=r"expected padding_mode to be one of"):
        CONV_WEIGHT[nd](x, w.shape, G, padding=1, padding_mode="symmetric")


def _shape_problem(nd):
    """x, w, G for conv (G of the conv output) and Gt (of the transposed output)."""
    x = np.ones((1, 2) + (4,) * nd)
    w = np.ones((2, 2) + (2,) * nd)
    return x, w, np.ones((1, 2) + (3,) * nd), np.ones((1, 2) + (5,) * nd)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_float_sizes_in_shapes_are_type_errors_not_truncated(nd):
    x, w, G, Gt = _shape_problem(nd)
    with pytest.raises(TypeError, match=r"expected input_shape to be a tuple of ints"):
        CONV_INPUT[nd]((1, 2) + (4.7,) * nd, w, G)
    with pytest.raises(TypeError, match=r"expected weight_shape to be a tuple of ints"):
        CONV_WEIGHT[nd](x, (2, 2) + (2.5,) * nd, G)
    with pytest.raises(TypeError, match=r"expected input_shape to be a tuple of ints"):
        CONV_T_INPUT[nd]((1, 2) + (4.2,) * nd, w, Gt)
    with pytest.raises(TypeError, match=r"expected weight_shape to be a tuple of ints"):
        CONV_T_WEIGHT[nd](x, (2, 2) + (2.9,) * nd, Gt)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_non_numeric_sizes_in_shapes_are_type_errors_naming_the_argument(nd):
    x, w, G, Gt = _shape_problem(nd)
    with pytest.raises(TypeError, match=r"expected input_shape to be a tuple of ints"):
        CONV_INPUT[nd]((1, "x") + (4,) * nd, w, G)
    with pytest.raises(TypeError, match=r"expected weight_shape to be a tuple of ints"):
        CONV_WEIGHT[nd](x, (2, None) + (2,) * nd, G)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_string_shapes_are_type_errors(nd):
    x, w, G, Gt = _shape_problem(nd)
    with pytest.raises(TypeError, match=r"expected input_shape to be a tuple of ints"):
        CONV_INPUT[nd]("12" + "4" * nd, w, G)
    with pytest.raises(TypeError, match=r"expected weight_shape to be a tuple of ints"):
        CONV_WEIGHT[nd](x, "22" + "2" * nd, G)


NONFINITE_TRANSPOSE = [
    (1, (2, 3, 9), (3, 2, 3), dict(stride=2, padding=1, output_padding=1)),
    (2, (2, 3, 6, 7), (3, 2, 3, 3), dict(stride=1, padding=2)),
    (2, (2, 4, 6, 7), (4, 1, 3, 2), dict(stride=(2, 1), padding=(0, 1), dilation=2, groups=2)),
    (3, (1, 2, 4, 5, 3), (2, 2, 2, 3, 2), dict(stride=2, padding=1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128],
                         ids=["float32", "float64", "complex128"])
@pytest.mark.parametrize("case", range(len(NONFINITE_TRANSPOSE)))
def test_transposed_weight_gradient_puts_nan_where_torch_does(case, dtype):
    """inf/NaN input cells that meet cropped outputs: NaN taps, as PyTorch (0 * inf).

    The pattern is PyTorch's double-precision one (its reference kernels
    multiply every cropped position).  Its float32/complex64 oneDNN kernels
    skip some of those products, so their NaNs depend on the backend's
    blocking; float32 is compared with PyTorch's float64 result on the same data.
    """
    torch = pytest.importorskip("torch")
    nd, xs, ws, kw = NONFINITE_TRANSPOSE[case]
    rng = np.random.default_rng(case)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    x.reshape(-1)[[0, x.size // 2 + 1]] = [np.inf, np.nan]
    x.reshape(-1)[-1] = -np.inf
    conv = getattr(torch.nn.functional, f"conv_transpose{nd}d")
    wide = np.complex128 if np.dtype(dtype).kind == "c" else np.float64
    wt = torch.tensor(w.astype(wide), requires_grad=True)
    with torch_single_threaded():
        y = conv(torch.tensor(x.astype(wide)), wt, **kw)
        g = rng.standard_normal(tuple(y.shape)).astype(dtype)
        y.backward(torch.tensor(g.astype(wide)))
    expected = wt.grad.numpy()
    got = getattr(fc.grad, f"conv_transpose{nd}d_weight")(x, ws, g, **kw)
    assert np.isnan(expected).any()                   # the case does reach cropped outputs
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = ~np.isnan(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-4, atol=1e-4)
    layer = getattr(fc, f"ConvTranspose{nd}d")(xs[1], ws[1] * kw.get("groups", 1), ws[2:],
                                                dtype=dtype, bias=False, **kw)
    layer.weight = w.copy()
    layer(x)
    layer.backward(g)
    np.testing.assert_array_equal(np.isnan(layer.weight_grad), np.isnan(expected))
