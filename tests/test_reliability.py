"""Trustworthy under stress (issue 8): bitwise reproducibility, exact arithmetic,
leaks, huge arrays, Ctrl-C and fork.

* Reproducibility matrix: every public function gives bit-identical results
  (compared as bytes) for 1, 2, 3 and 8 threads and run after run; sample i of
  a batch equals the same sample computed alone (forward, transposed and
  input-gradient functions; the weight gradient sums over the batch, so it
  has no per-sample result).  The shapes span many parallel jobs and GEMM
  tiles and are large enough that fastconv really uses 8 threads.
* Exact arithmetic (as oneDNN's benchdnn): integer-valued data in [-3, 3];
  every sum is then exactly representable, so float32/complex64 results must
  equal the float64 oracle exactly, for every op, dtype and algorithm but
  'fft' (which rounds by design).
* Leaks: 10,000 calls mixing valid and invalid arguments of every public
  function: bounded RSS growth, no tracemalloc growth trend.
* Huge arrays: a 1-D input of 2**31 + 97 float32 and a transposed output of
  as many elements (``pytest -m slow tests/test_reliability.py`` or
  FASTCONV_SLOW=1; about 20-30 s and 8.7 GB peak RSS); outputs too large to
  allocate fail at once, without touching memory (always run).
* Ctrl-C: a long call answers SIGINT within about a second and the next call
  is correct.  Fork: a child forked after fastconv used its OpenMP threads
  still computes the right answer (single-threaded, as documented).

Subprocesses start in tests/ so that they import the installed package.
"""
import gc
import itertools
import json
import os
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

import fastconv as fc
import reference

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
THREAD_COUNTS = (1, 2, 3, 8)
DTYPES = (np.float32, np.float64, np.complex64, np.complex128)
DTYPE_IDS = [np.dtype(t).name for t in DTYPES]


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.view(np.uint8)


def assert_bitwise_equal(actual, expected, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (
        f"{what}: {actual.shape} {actual.dtype} vs {expected.shape} {expected.dtype}")
    if not np.array_equal(_bits(actual), _bits(expected)):
        differ = int(np.count_nonzero(actual != expected))
        diff = float(np.max(np.abs(actual.astype(np.complex128) - expected)))
        raise AssertionError(f"{what}: not bit-identical ({differ} of {actual.size} elements "
                             f"differ, max |diff| {diff:.3g})")


def _data(rng, shape, dtype):
    a = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * rng.standard_normal(shape)
    return a.astype(dtype)


@pytest.fixture
def restore_threads():
    before = fc.get_num_threads()
    yield before
    fc.set_num_threads(before)


# ==========================================================================
# 1. Bitwise reproducibility
# ==========================================================================

# name: (function, input shape, weight shape, kwargs).  Every problem gives
# fastconv at least 8 * 2**20 multiply-adds, so 8 threads really are used.
FORWARD = {
    "conv1d": (fc.conv1d, (4, 16, 2048), (32, 8, 5), dict(padding=2, groups=2)),
    "conv1d_stride3_dil2": (fc.conv1d, (4, 16, 6000), (24, 16, 5),
                            dict(stride=3, padding=4, dilation=2)),
    "conv2d": (fc.conv2d, (4, 16, 20, 24), (32, 16, 3, 3), dict(padding=1)),
    "conv2d_stride2_groups2": (fc.conv2d, (4, 16, 64, 64), (32, 8, 3, 3),
                               dict(stride=2, padding=1, groups=2)),
    "conv2d_reflect_dil2": (fc.conv2d, (4, 16, 20, 24), (32, 16, 3, 3),
                            dict(padding=2, dilation=2, padding_mode="reflect")),
    "conv2d_circular_same": (fc.conv2d, (4, 16, 20, 24), (32, 16, 4, 3),
                             dict(padding="same", padding_mode="circular")),
    "conv3d": (fc.conv3d, (2, 8, 10, 12, 14), (16, 8, 3, 3, 3), dict(padding=1)),
    "conv3d_stride2_replicate": (fc.conv3d, (2, 8, 20, 24, 28), (16, 8, 3, 3, 3),
                                 dict(stride=2, padding=1, padding_mode="replicate")),
    "conv_transpose1d": (fc.conv_transpose1d, (4, 16, 4096), (16, 12, 5),
                         dict(stride=2, padding=1, groups=2, output_padding=1)),
    # long rows: the col2im of im2col spans several input tiles
    "conv_transpose1d_long": (fc.conv_transpose1d, (4, 8, 40000), (8, 16, 5), dict()),
    "conv_transpose2d": (fc.conv_transpose2d, (4, 16, 32, 32), (16, 16, 3, 3),
                         dict(stride=2, padding=1, output_padding=1)),
    "conv_transpose3d": (fc.conv_transpose3d, (2, 8, 10, 12, 14), (8, 16, 3, 3, 3),
                         dict(stride=2, padding=1, dilation=(1, 2, 1))),
}


def _forward_case(name, dtype, seed=0):
    func, xs, ws, kw = FORWARD[name]
    rng = np.random.default_rng(seed)
    x, w = _data(rng, xs, dtype), _data(rng, ws, dtype)
    c_out = ws[1] * kw.get("groups", 1) if "transpose" in name else ws[0]
    b = _data(rng, (c_out,), dtype)
    return func, x, w, b, kw


def _over_threads(compute):
    """compute() for every thread count, then again for 1 and 8 (run after run)."""
    results = []
    for n in THREAD_COUNTS + (1, 8):
        fc.set_num_threads(n)
        results.append((n, compute()))
    return results


def _check_threads(results, what):
    (_, first), rest = results[0], results[1:]
    if isinstance(first, np.ndarray):
        first, rest = (first,), [(n, (r,)) for n, r in rest]
    for n, r in rest:
        for i, (a, b) in enumerate(zip(r, first)):
            assert_bitwise_equal(a, b, f"{what}, result {i}, {n} threads vs 1 thread")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("algorithm", fc.ALGORITHMS)
@pytest.mark.parametrize("name", list(FORWARD))
def test_forward_is_bitwise_identical_for_any_thread_count(restore_threads, name, algorithm,
                                                           dtype):
    func, x, w, b, kw = _forward_case(name, dtype)
    _check_threads(_over_threads(lambda: func(x, w, b, algorithm=algorithm, **kw)),
                   f"{name} {algorithm}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64],
                         ids=["float32", "float64", "complex64"])
@pytest.mark.parametrize("algorithm", fc.ALGORITHMS)
@pytest.mark.parametrize("name", list(FORWARD))
def test_forward_sample_does_not_depend_on_the_rest_of_the_batch(name, algorithm, dtype):
    func, x, w, b, kw = _forward_case(name, dtype)
    full = func(x, w, b, algorithm=algorithm, **kw)
    for i in range(x.shape[0]):
        alone = func(x[i:i + 1], w, b, algorithm=algorithm, **kw)
        assert_bitwise_equal(alone[0], full[i], f"{name} {algorithm}: sample {i} alone vs "
                                                f"in a batch of {x.shape[0]}")
        unbatched = func(x[i], w, b, algorithm=algorithm, **kw)
        assert_bitwise_equal(unbatched, full[i], f"{name} {algorithm}: unbatched sample {i}")
    pair = func(x[1:3], w, b, algorithm=algorithm, **kw)
    assert_bitwise_equal(pair, full[1:3], f"{name} {algorithm}: samples 1:3 vs whole batch")


# Gradients: name -> (grad function, input shape, weight shape, kwargs, forward).
GRADS = {
    "conv1d": ((4, 16, 2048), (32, 8, 5), dict(padding=2, groups=2, padding_mode="reflect")),
    "conv2d": ((4, 16, 20, 24), (32, 16, 3, 3), dict(padding=1)),
    "conv2d_stride2": ((4, 16, 64, 64), (32, 8, 3, 3), dict(stride=2, padding=1, groups=2)),
    "conv3d": ((2, 8, 10, 12, 14), (16, 8, 3, 3, 3), dict(padding=1, padding_mode="circular")),
    "conv_transpose1d": ((4, 16, 4096), (16, 12, 5), dict(stride=2, padding=1, groups=2)),
    "conv_transpose2d": ((4, 16, 32, 32), (16, 16, 3, 3),
                         dict(stride=2, padding=1, output_padding=1)),
    "conv_transpose3d": ((2, 8, 10, 12, 14), (8, 16, 3, 3, 3), dict(stride=2, padding=1)),
}


def _forward_of(name):
    base = name.split("_stride")[0]
    return getattr(fc, base)


def _grad_case(name, dtype, seed=1):
    xs, ws, kw = GRADS[name]
    rng = np.random.default_rng(seed)
    x, w = _data(rng, xs, dtype), _data(rng, ws, dtype)
    y = _forward_of(name)(x, w, **kw)
    g = _data(rng, y.shape, dtype)
    base = name.split("_stride")[0]
    return (getattr(fc.grad, f"{base}_input"), getattr(fc.grad, f"{base}_weight"),
            x, w, g, kw)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", list(GRADS))
def test_gradients_are_bitwise_identical_for_any_thread_count(restore_threads, name, dtype):
    g_input, g_weight, x, w, g, kw = _grad_case(name, dtype)
    _check_threads(_over_threads(lambda: (g_input(x.shape, w, g, **kw),
                                          g_weight(x, w.shape, g, **kw),
                                          fc.grad.conv_bias(g, x.ndim - 2))), name)


@pytest.mark.parametrize("dtype", [np.float32, np.complex128], ids=["float32", "complex128"])
@pytest.mark.parametrize("name", list(GRADS))
def test_input_gradient_sample_does_not_depend_on_the_rest_of_the_batch(name, dtype):
    g_input, _, x, w, g, kw = _grad_case(name, dtype)
    full = g_input(x.shape, w, g, **kw)
    for i in range(x.shape[0]):
        alone = g_input((1,) + x.shape[1:], w, g[i:i + 1], **kw)
        assert_bitwise_equal(alone[0], full[i], f"{name}_input: sample {i} alone vs batch")
        unbatched = g_input(x.shape[1:], w, g[i], **kw)
        assert_bitwise_equal(unbatched, full[i], f"{name}_input: unbatched sample {i}")


FILTERS = {
    "ndimage.correlate_reflect_3d": lambda v, k: fc.ndimage.correlate(v, k, mode="reflect"),
    "ndimage.correlate_nearest_3d": lambda v, k: fc.ndimage.correlate(v, k, mode="nearest"),
    "ndimage.convolve_wrap_3d": lambda v, k: fc.ndimage.convolve(v, k, mode="wrap"),
    "ndimage.correlate_axes": lambda v, k: fc.ndimage.correlate(v, k[0], axes=(1, 2)),
    "signal.convolve_direct": lambda v, k: fc.signal.convolve(v, k, method="direct"),
    "signal.correlate_fft_same": lambda v, k: fc.signal.correlate(v, k, "same", method="fft"),
    "signal.fftconvolve_valid": lambda v, k: fc.signal.fftconvolve(v, k, "valid"),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", list(FILTERS))
def test_filters_are_bitwise_identical_for_any_thread_count(restore_threads, name, dtype):
    rng = np.random.default_rng(2)
    volume, kernel = _data(rng, (40, 44, 48), dtype), _data(rng, (5, 5, 5), dtype)
    _check_threads(_over_threads(lambda: FILTERS[name](volume, kernel)), name)


LAYERS = {
    "Conv2d": (lambda dt: fc.Conv2d(16, 32, 3, padding=1, padding_mode="reflect", dtype=dt,
                                    rng=0), (4, 16, 20, 24)),
    "Conv3d": (lambda dt: fc.Conv3d(8, 16, 3, stride=2, padding=1, groups=2, dtype=dt, rng=0),
               (2, 8, 20, 24, 28)),
    "ConvTranspose1d": (lambda dt: fc.ConvTranspose1d(16, 24, 5, stride=2, padding=1,
                                                      output_padding=1, dtype=dt, rng=0),
                        (4, 16, 4096)),
    "ConvTranspose2d": (lambda dt: fc.ConvTranspose2d(16, 16, 3, stride=2, padding=1,
                                                      dtype=dt, rng=0), (4, 16, 32, 32)),
}


def _layer_step(name, dtype):
    make, shape = LAYERS[name]
    layer = make(dtype)
    rng = np.random.default_rng(3)
    x = _data(rng, shape, dtype)
    y = layer(x)
    grad_input = layer.backward(_data(rng, y.shape, dtype))
    return y, grad_input, layer.weight_grad, layer.bias_grad


@pytest.mark.parametrize("dtype", [np.float32, np.complex128], ids=["float32", "complex128"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_forward_and_backward_are_bitwise_identical_for_any_thread_count(
        restore_threads, name, dtype):
    _check_threads(_over_threads(lambda: _layer_step(name, dtype)), name)


# ==========================================================================
# 2. Exact arithmetic: integer-valued data, float32 == float64 oracle exactly
# ==========================================================================

def _small_ints(rng, shape, dtype):
    a = rng.integers(-3, 4, size=shape).astype(np.float64)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * rng.integers(-3, 4, size=shape)
    return a.astype(dtype)


EXACT_CONV = [
    # (nd, input shape, weight shape, kwargs)
    (1, (3, 4, 37), (6, 2, 5), dict(stride=2, padding=3, dilation=2, groups=2)),
    (1, (2, 3, 30), (4, 3, 4), dict(padding="same", padding_mode="reflect")),
    (2, (2, 4, 13, 11), (6, 4, 3, 3), dict(padding=1)),
    (2, (2, 4, 13, 11), (6, 2, 3, 2), dict(stride=(2, 1), padding=(2, 1), dilation=(1, 2),
                                            groups=2, padding_mode="circular")),
    (2, (1, 3, 9, 10), (5, 3, 1, 1), dict()),
    (3, (2, 4, 7, 8, 6), (4, 4, 3, 3, 3), dict(padding=1, padding_mode="replicate")),
    (3, (2, 2, 7, 8, 9), (4, 1, 2, 3, 2), dict(stride=(1, 2, 3), padding=(1, 0, 1), groups=2)),
]
EXACT_TRANSPOSE = [
    (1, (3, 4, 23), (4, 3, 5), dict(stride=2, padding=1, output_padding=1, groups=2)),
    (2, (2, 4, 9, 11), (4, 3, 3, 3), dict(stride=1, padding=1)),
    (2, (2, 4, 9, 11), (4, 2, 2, 3), dict(stride=(2, 3), padding=(0, 1), dilation=(2, 1),
                                           output_padding=(1, 2), groups=2)),
    (3, (2, 4, 5, 6, 7), (4, 3, 3, 2, 3), dict(stride=2, padding=1, output_padding=(1, 0, 1))),
]


def _exact(actual, expected, what):
    expected = expected.astype(np.asarray(actual).dtype)
    assert np.array_equal(actual, expected), (
        f"{what}: not exact, max |diff| {np.max(np.abs(actual - expected))}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", range(len(EXACT_CONV)))
def test_convolution_and_its_gradients_are_exact_on_integer_data(case, dtype):
    nd, xs, ws, kw = EXACT_CONV[case]
    rng = np.random.default_rng(case)
    x, w = _small_ints(rng, xs, dtype), _small_ints(rng, ws, dtype)
    b = _small_ints(rng, ws[:1], dtype)
    conv = getattr(fc, f"conv{nd}d")
    expected = reference.conv(x, w, b, **kw)
    for algorithm in ("auto", "direct", "im2col"):
        y = conv(x, w, b, algorithm=algorithm, **kw)
        assert y.dtype == np.dtype(dtype)
        _exact(y, expected, f"conv{nd}d {algorithm}")
    g = _small_ints(rng, expected.shape, dtype)
    _exact(getattr(fc.grad, f"conv{nd}d_weight")(x, ws, g, **kw),
           reference.conv_weight(x, ws, g, **kw), f"conv{nd}d_weight")
    if kw.get("padding_mode", "zeros") == "zeros":
        kw0 = {k: v for k, v in kw.items() if k != "padding_mode"}
        _exact(getattr(fc.grad, f"conv{nd}d_input")(xs, w, g, **kw),
               reference.conv_input(xs, w, g, **kw0), f"conv{nd}d_input")
    else:   # other modes: the adjoint identity <conv(x), g> == <x, grad_input(g)>
        gi = getattr(fc.grad, f"conv{nd}d_input")(xs, w, g, **kw)
        lhs = np.vdot(g.astype(np.complex128), reference.conv(x, w, None, **kw))
        rhs = np.vdot(gi.astype(np.complex128), x.astype(np.complex128))
        # np.vdot conjugates its first argument: <g, Ax> == <A^H g, x>
        assert lhs == rhs, f"conv{nd}d_input ({kw['padding_mode']}): adjoint not exact"
    _exact(fc.grad.conv_bias(g, nd),
           g.sum(axis=(0,) + tuple(range(2, 2 + nd)),
                 dtype=np.complex128 if g.dtype.kind == "c" else np.float64), "conv_bias")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", range(len(EXACT_TRANSPOSE)))
def test_transposed_convolution_and_its_gradients_are_exact_on_integer_data(case, dtype):
    nd, xs, ws, kw = EXACT_TRANSPOSE[case]
    rng = np.random.default_rng(100 + case)
    x, w = _small_ints(rng, xs, dtype), _small_ints(rng, ws, dtype)
    b = _small_ints(rng, (ws[1] * kw.get("groups", 1),), dtype)
    conv_t = getattr(fc, f"conv_transpose{nd}d")
    expected = reference.conv_transpose(x, w, b, **kw)
    for algorithm in ("auto", "direct", "im2col"):
        y = conv_t(x, w, b, algorithm=algorithm, **kw)
        assert y.dtype == np.dtype(dtype)
        _exact(y, expected, f"conv_transpose{nd}d {algorithm}")
    g = _small_ints(rng, expected.shape, dtype)
    _exact(getattr(fc.grad, f"conv_transpose{nd}d_input")(xs, w, g, **kw),
           reference.conv_transpose_input(xs, w, g, **{k: v for k, v in kw.items()
                                                 if k != "output_padding"}),
           f"conv_transpose{nd}d_input")
    _exact(getattr(fc.grad, f"conv_transpose{nd}d_weight")(x, ws, g, **kw),
           reference.conv_transpose_weight(x, ws, g, **kw), f"conv_transpose{nd}d_weight")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_layers_are_exact_on_integer_data(dtype):
    rng = np.random.default_rng(7)
    layer = fc.Conv2d(4, 6, 3, padding=1, groups=2, dtype=dtype)
    layer.load_state_dict({"weight": _small_ints(rng, layer.weight.shape, dtype),
                           "bias": _small_ints(rng, layer.bias.shape, dtype)})
    x = _small_ints(rng, (2, 4, 9, 8), dtype)
    y = layer(x)
    _exact(y, reference.conv(x, layer.weight, layer.bias, padding=1, groups=2), "Conv2d")
    g = _small_ints(rng, y.shape, dtype)
    gi = layer.backward(g)
    _exact(gi, reference.conv_input(x.shape, layer.weight, g, padding=1, groups=2), "Conv2d grad_input")
    _exact(layer.weight_grad, reference.conv_weight(x, layer.weight.shape, g, padding=1, groups=2),
           "Conv2d weight_grad")
    tlayer = fc.ConvTranspose3d(2, 4, 3, stride=2, padding=1, output_padding=1, dtype=dtype)
    tlayer.load_state_dict({"weight": _small_ints(rng, tlayer.weight.shape, dtype),
                            "bias": _small_ints(rng, tlayer.bias.shape, dtype)})
    x = _small_ints(rng, (2, 2, 4, 5, 3), dtype)
    y = tlayer(x)
    _exact(y, reference.conv_transpose(x, tlayer.weight, tlayer.bias, stride=2, padding=1,
                                       output_padding=1), "ConvTranspose3d")
    g = _small_ints(rng, y.shape, dtype)
    tlayer.backward(g)
    _exact(tlayer.weight_grad, reference.conv_transpose_weight(x, tlayer.weight.shape, g, stride=2,
                                                         padding=1, output_padding=1),
           "ConvTranspose3d weight_grad")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("mode", ["reflect", "mirror", "nearest", "wrap", "constant"])
def test_ndimage_correlate_is_exact_on_integer_data(mode, dtype):
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(8)
    volume = _small_ints(rng, (9, 10, 11), dtype)
    kernel = _small_ints(rng, (3, 4, 3), dtype)
    expected = ndimage.correlate(volume.astype(np.complex128 if volume.dtype.kind == "c"
                                               else np.float64),
                                 kernel.astype(np.complex128 if kernel.dtype.kind == "c"
                                               else np.float64), mode=mode, cval=2.0)
    _exact(fc.ndimage.correlate(volume, kernel, mode=mode, cval=2.0), expected,
           f"ndimage.correlate {mode}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_signal_direct_is_exact_on_integer_data(mode, dtype):
    rng = np.random.default_rng(9)
    a, k = _small_ints(rng, (12, 9, 10), dtype), _small_ints(rng, (3, 2, 4), dtype)
    wide = a.astype(np.complex128), k.astype(np.complex128)
    full = reference.conv(wide[0][None, None], wide[1][None, None, ::-1, ::-1, ::-1],
                          padding=[(n - 1) for n in k.shape])[0, 0]
    start = {"full": [0] * 3, "same": [(n - 1) // 2 for n in k.shape],
             "valid": [n - 1 for n in k.shape]}[mode]
    length = {"full": full.shape, "same": a.shape,
              "valid": [x - y + 1 for x, y in zip(a.shape, k.shape)]}[mode]
    expected = full[tuple(slice(s, s + n) for s, n in zip(start, length))]
    if a.dtype.kind != "c":
        expected = expected.real
    _exact(fc.signal.convolve(a, k, mode, method="direct"), expected, f"signal.convolve {mode}")


def _unaligned(a):
    """A copy of ``a`` whose data starts one byte past an element boundary (as arrays
    unpickled from out-of-band buffers by dask or multiprocessing may)."""
    raw = np.zeros(a.nbytes + 1, np.uint8)[1:]
    b = raw.view(a.dtype).reshape(a.shape)
    b[...] = a
    assert not b.flags.aligned
    return b


@pytest.mark.parametrize("dtype", (np.float32, np.float64, np.complex64), ids=lambda d: d.__name__)
@pytest.mark.parametrize("kwargs", [dict(padding=1), dict(padding=1, groups=4),
                                    dict(padding=1, padding_mode="reflect")],
                         ids=["dense", "depthwise", "reflect"])
def test_unaligned_arrays_give_the_aligned_results(dtype, kwargs):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 4, 9, 10)).astype(dtype)
    w = rng.standard_normal((4, 4 // kwargs.get("groups", 1), 3, 3)).astype(dtype)
    g = rng.standard_normal((2, 4, 9, 10)).astype(dtype)
    expected = fc.conv2d(x, w, **kwargs)
    out = _unaligned(np.zeros_like(expected))
    fc.conv2d(_unaligned(x), _unaligned(w), out=out, **kwargs)
    _exact(out, expected, "conv2d on unaligned arrays")
    _exact(fc.grad.conv2d_weight(_unaligned(x), w.shape, _unaligned(g), **kwargs),
           fc.grad.conv2d_weight(x, w.shape, g, **kwargs), "conv2d_weight on unaligned arrays")


@pytest.mark.parametrize("case", ["shuffled_channels", "transposed_weight_kernel",
                                  "transposed_weight_channels", "shuffle_past_output"])
def test_pixel_shuffle_entry_rejects_inconsistent_shapes(case):
    """The implicit GEMM's pixel-shuffle mode reads w and writes out by index
    arithmetic: a weight or output that does not match raises, never reads or
    writes past an array."""
    from fastconv._kernels import implicit
    x = np.ones((1, 4, 3, 4, 5), np.float32)
    out = np.zeros((1, 3, 6, 8, 10), np.float32)
    args = dict(out_size=(3, 4, 5), out_step=(2, 2, 2), shuffle=(2, 2, 2))
    w, transposed = np.ones((3 * 8, 4, 1, 1, 1), np.float32), False
    if case == "shuffled_channels":
        w = np.ones((3 * 8 - 1, 4, 1, 1, 1), np.float32)
    elif case == "transposed_weight_kernel":
        w, transposed = np.ones((4, 3, 2, 2, 1), np.float32), True
    elif case == "transposed_weight_channels":
        w, transposed = np.ones((4, 2, 2, 2, 2), np.float32), True
    else:
        out = np.zeros((1, 3, 6, 8, 9), np.float32)
    before = out.copy()
    with pytest.raises(ValueError):
        implicit.conv_forward(x, w, None, False, out, (1, 1, 1), (0, 0, 0), (1, 1, 1), 1, 1,
                              4, 5, transposed_weight=transposed, **args)
    assert np.array_equal(out, before)


# ==========================================================================
# 3. Leaks: 10,000 calls, success and error paths, every public function
# ==========================================================================

def _leak_calls():
    """A list of zero-argument callables: valid calls and calls that must raise."""
    rng = np.random.default_rng(11)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    c64 = lambda *s: (rng.standard_normal(s)  # noqa: E731
                      + 1j * rng.standard_normal(s)).astype(np.complex64)
    ok, bad = [], []
    for nd in (1, 2, 3):
        sp = (5,) * nd
        k = (3,) * nd
        x, w, b = f32(2, 2, *sp), f32(4, 2, *k), f32(4)
        xc, wc = c64(2, 2, *sp), c64(4, 2, *k)
        tw = f32(2, 4, *k)
        conv, conv_t = getattr(fc, f"conv{nd}d"), getattr(fc, f"conv_transpose{nd}d")
        # (functions looked up once: getattr with a fresh f-string name per call
        # churns CPython's type cache, which tracemalloc reports as growth)
        gi, gw = getattr(fc.grad, f"conv{nd}d_input"), getattr(fc.grad, f"conv{nd}d_weight")
        gti = getattr(fc.grad, f"conv_transpose{nd}d_input")
        gtw = getattr(fc.grad, f"conv_transpose{nd}d_weight")
        y_shape = (2, 4) + (3,) * nd
        yt_shape = (2, 4) + (7,) * nd
        g, gt = f32(*y_shape), f32(*yt_shape)
        out = np.empty(y_shape, np.float32)
        u8 = (np.abs(x[0, 0]) * 10).astype(np.uint8)
        for alg in fc.ALGORITHMS:
            ok.append(lambda conv=conv, x=x, w=w, b=b, alg=alg: conv(x, w, b, algorithm=alg))
            ok.append(lambda conv_t=conv_t, x=x, tw=tw, alg=alg:
                      conv_t(x, tw, stride=1, algorithm=alg))
        ok += [
            lambda conv=conv, x=x, w=w, out=out: conv(x, w, padding="valid", out=out),
            lambda conv=conv, xc=xc, wc=wc: conv(xc, wc, padding="same", padding_mode="reflect"),
            lambda conv=conv, x=x, w=w: conv(x[0], w, padding=1, padding_mode="circular",
                                             stride=2),
            lambda conv_t=conv_t, x=x, tw=tw: conv_t(x, tw, stride=2, output_padding=1),
            lambda gi=gi, x=x, w=w, g=g: gi(x.shape, w, g),
            lambda gw=gw, x=x, w=w, g=g: gw(x, w.shape, g),
            lambda gti=gti, x=x, tw=tw, gt=gt: gti(x.shape, tw, gt),
            lambda gtw=gtw, x=x, tw=tw, gt=gt: gtw(x, tw.shape, gt),
            lambda nd=nd, g=g: fc.grad.conv_bias(g, nd),
            lambda x=x, w=w: fc.ndimage.correlate(x[0, 0], w[0, 0], mode="nearest"),
            lambda u8=u8, w=w: fc.ndimage.convolve(u8, w[0, 0]),
            lambda x=x, w=w: fc.signal.convolve(x[0, 0], w[0, 0]),
            lambda x=x, w=w: fc.signal.correlate(x[0, 0], w[0, 0], "same"),
            lambda x=x, w=w: fc.signal.fftconvolve(x[0, 0], w[0, 0], "valid"),
        ]
        bad += [
            lambda conv=conv, x=x, w=w: conv(x, w, stride=0),
            lambda conv=conv, x=x, w=w: conv(x, w, padding=-1),
            lambda conv=conv, x=x, w=w: conv(x, w, padding="bogus"),
            lambda conv=conv, x=x, w=w: conv(x, w, groups=3),
            lambda conv=conv, x=x, w=w: conv(x, w, algorithm="nope"),
            lambda conv=conv, x=x, w=w: conv(x, w, padding_mode="reflect", padding=9),
            lambda conv=conv, x=x, w=w: conv(x.astype(object), w),
            lambda conv=conv, x=x, w=w: conv(x, w, dilation=(1,) * (nd + 1)),
            lambda conv=conv, x=x, w=w: conv(x, w, out=np.empty(3)),
            lambda conv=conv, w=w: conv("text", w),
            lambda conv_t=conv_t, x=x, tw=tw: conv_t(x, tw, output_padding=2),
            lambda conv_t=conv_t, x=x, tw=tw: conv_t(x, tw, padding="same"),
            lambda gi=gi, x=x, w=w, g=g: gi(x.shape, w, g[:1]),
            lambda gw=gw, x=x, g=g: gw(x, (4, 2), g),
            lambda gti=gti, tw=tw, gt=gt: gti((2.5,), tw, gt),
            lambda gtw=gtw, x=x, tw=tw, g=g: gtw(x, tw.shape, g),
            lambda x=x, w=w: fc.ndimage.correlate(x[0, 0], w[0, 0], mode="bogus"),
            lambda x=x, w=w: fc.signal.convolve(x[0, 0], w[0], "full"),
        ]
    for cls, shape in ((fc.Conv1d, (2, 2, 6)), (fc.Conv2d, (2, 2, 6, 5)),
                       (fc.Conv3d, (2, 2, 4, 5, 4)), (fc.ConvTranspose1d, (2, 2, 6)),
                       (fc.ConvTranspose2d, (2, 2, 6, 5)), (fc.ConvTranspose3d, (2, 2, 4, 5, 4))):
        layer = cls(2, 4, 3, rng=0)
        xl = f32(*shape)

        def step(layer=layer, xl=xl):
            y = layer(xl)
            layer.backward(np.ones_like(y))
            layer.zero_grad()
        ok.append(step)
        bad.append(lambda layer=layer, xl=xl: layer.backward(np.ones(3, np.float32)))
        bad.append(lambda cls=cls: cls(2, 4, 0))
        bad.append(lambda layer=layer, xl=xl: layer(xl[:, :1]))
    bad += [lambda: fc.set_num_threads(0), lambda: fc.set_num_threads("2"),
            lambda: fc.grad.conv_bias(np.ones(3), 5)]
    return ok, bad


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _run_calls(ok, bad, count):
    n_ok = n_bad = 0
    for i in range(count):
        if i % 3 == 2:
            f = bad[(i // 3) % len(bad)]
            try:
                f()
            except (ValueError, TypeError, RuntimeError):
                n_bad += 1
            else:
                raise AssertionError(f"invalid call #{i} did not raise")
        else:
            ok[i % len(ok)]()
            n_ok += 1
    return n_ok, n_bad


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm")
def test_ten_thousand_calls_do_not_leak(restore_threads, record_property):
    fc.set_num_threads(2)
    ok, bad = _leak_calls()
    start = time.perf_counter()
    _run_calls(ok, bad, 1500)                 # warm-up: caches, BLAS buffers, pools
    gc.collect()
    rss_before = _rss_bytes()
    n_ok, n_bad = _run_calls(ok, bad, 10_000)
    gc.collect()
    rss_growth = _rss_bytes() - rss_before
    record_property("rss_growth_bytes", rss_growth)
    print(f"\nleaks: {n_ok} valid + {n_bad} invalid calls, RSS growth "
          f"{rss_growth / 2**20:.2f} MiB")
    assert n_ok > 5000 and n_bad > 3000
    assert rss_growth < 20 * 2**20, f"RSS grew by {rss_growth / 2**20:.1f} MiB"

    # tracemalloc: Python-level allocations must not trend upwards.
    # CPython 3.11's method cache keys 4096 slots on the *address* of the
    # attribute name, so getattr(module, f"...") with a fresh string per call
    # (layers.py does) parks up to 4096 dead name strings there: bounded, not a
    # leak, but it looks like growth.  Clearing the cache before each reading
    # removes that noise.
    def settle():
        gc.collect()
        if hasattr(sys, "_clear_type_cache"):
            sys._clear_type_cache()

    traced = [0] * 4
    tracemalloc.start(5)
    try:
        _run_calls(ok, bad, 1500)
        settle()
        first = tracemalloc.take_snapshot()
        for i in range(len(traced)):
            _run_calls(ok, bad, 1000)
            settle()
            traced[i] = tracemalloc.get_traced_memory()[0]
        last = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = sum(s.size_diff for s in last.compare_to(first, "filename"))
    top = last.compare_to(first, "lineno")[:5]
    print(f"tracemalloc: {growth:+d} B over 4,000 calls, traced after each 1,000: {traced}")
    record_property("tracemalloc_growth_bytes", growth)
    assert growth < 16 * 1024, "tracemalloc growth:\n" + "\n".join(map(str, top))
    steadily_up = all(b > a for a, b in zip(traced, traced[1:]))
    assert not (steadily_up and traced[-1] - traced[0] > 4 * 1024), (
        f"traced memory grows call after call: {traced}\n" + "\n".join(map(str, top)))
    assert time.perf_counter() - start < 60


# ==========================================================================
# 4. Huge arrays
# ==========================================================================

def _slow_enabled(config):
    return "slow" in (config.getoption("-m") or "") or os.environ.get("FASTCONV_SLOW") == "1"


def _mem_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@pytest.mark.slow
def test_input_over_two_to_the_31_elements(request, restore_threads):
    """A 1-D float32 input of 2**31 + 97 elements (8.6 GB), stride 2**20.

    Runs with ``pytest -m slow`` (or FASTCONV_SLOW=1) on a machine with 12 GB
    free.  Every output reads cells past index 2**31 from the 1024th on, so a
    32-bit index anywhere shows up as wrong numbers.  Also: the weight
    gradient (im2col of the huge input) and a transposed convolution writing
    an output of 2**31 + 97 elements.
    """
    if not _slow_enabled(request.config):
        pytest.skip("huge-array test: run with -m slow or FASTCONV_SLOW=1")
    if _mem_available() < 12 * 2**30:
        pytest.skip("needs 12 GB of free memory")
    fc.set_num_threads(2)
    n, s, period = 2**31 + 97, 2**20, 251
    x = np.empty(n, np.float32)
    pattern = (np.arange(period) - period // 2).astype(np.float32)
    x[:period] = pattern                      # x[i] = i % 251 - 125, filled by doubling
    filled = period
    while filled < n:
        step = min(filled - filled % period, n - filled)
        x[filled:filled + step] = x[:step]
        filled += step
    assert x[n - 1] == (n - 1) % period - period // 2
    w = np.array([[[1.0, -2.0, 3.0]]], np.float32)
    b = np.array([0.5], np.float32)

    def value(i):
        return np.where((i >= 0) & (i < n), i % period - period // 2, 0).astype(np.float64)

    for padding in (0, 1):
        out_len = (n + 2 * padding - 3) // s + 1
        taps = np.arange(out_len)[:, None] * s + np.arange(3)[None, :] - padding
        expected = value(taps) @ w[0, 0].astype(np.float64) + 0.5
        for algorithm in ("direct", "im2col"):
            y = fc.conv1d(x[None, None], w, b, stride=s, padding=padding, algorithm=algorithm)
            assert y.shape == (1, 1, out_len)
            np.testing.assert_array_equal(y[0, 0], expected,
                                          err_msg=f"{algorithm}, padding {padding}")
        g = np.ones((1, 1, out_len), np.float32)
        dw = fc.grad.conv1d_weight(x[None, None], w.shape, g, stride=s, padding=padding)
        np.testing.assert_array_equal(dw[0, 0], value(taps).sum(axis=0),
                                      err_msg=f"conv1d_weight, padding {padding}")
    small = x[: 2049 * s: s][:2049].copy()    # the first tap of every output: 2049 values
    del x, taps
    gc.collect()

    # Transposed: 2049 inputs, stride 2**20 -> an output of 2**31 + 97 elements.
    xt = small[None, None]
    for algorithm in ("direct", "im2col"):
        y = fc.conv_transpose1d(xt, w, stride=s, output_padding=94, algorithm=algorithm)
        assert y.shape == (1, 1, n)
        flat = y[0, 0]
        for k in range(3):
            np.testing.assert_array_equal(flat[k::s][:2049], small * w[0, 0, k],
                                          err_msg=f"transposed {algorithm}, tap {k}")
        assert np.count_nonzero(flat) == 3 * np.count_nonzero(small)
        del y, flat
        gc.collect()


# Each: (label, call).  The outputs need petabytes (or more than an address space).
TOO_LARGE = [
    ("conv_transpose1d stride 2**47",
     lambda alg: fc.conv_transpose1d(np.ones((1, 1, 2)), np.ones((1, 1, 1)), stride=2**47,
                                     algorithm=alg)),
    ("conv_transpose3d stride 2**20",
     lambda alg: fc.conv_transpose3d(np.ones((1, 1, 2, 2, 2), np.float32),
                                     np.ones((1, 1, 1, 1, 1), np.float32), stride=2**20,
                                     algorithm=alg)),
    ("conv1d padding 2**48",
     lambda alg: fc.conv1d(np.ones((1, 1, 2)), np.ones((1, 1, 1)), padding=2**48,
                           algorithm=alg)),
    ("conv3d padding 2**16",
     lambda alg: fc.conv3d(np.ones((1, 1, 1, 1, 1), np.complex64),
                           np.ones((1, 1, 1, 1, 1), np.complex64), padding=2**16,
                           algorithm=alg)),
    ("conv2d 2**47 channels",
     lambda alg: fc.conv2d(np.ones((1, 1, 3, 3)), np.broadcast_to(1.0, (2**47, 1, 1, 1)),
                           algorithm=alg)),
    ("conv1d_input input_shape 2**48",
     lambda alg: fc.grad.conv1d_input((1, 1, 2**48), np.ones((1, 1, 1)),
                                      np.broadcast_to(1.0, (1, 1, 2**48)))),
    ("conv_transpose1d_weight weight 2**47",
     lambda alg: fc.grad.conv_transpose1d_weight(np.ones((1, 1, 2)), (1, 1, 2**47),
                                                 np.broadcast_to(1.0, (1, 1, 2**47 + 1)))),
    ("ConvTranspose1d stride 2**47",
     lambda alg: fc.ConvTranspose1d(1, 1, 1, stride=2**47, rng=0)(np.ones((1, 1, 2),
                                                                         np.float32))),
]


@pytest.mark.parametrize("algorithm", ("auto",) + fc.ALGORITHMS)
@pytest.mark.parametrize("label", [label for label, _ in TOO_LARGE])
def test_output_too_large_to_allocate_fails_at_once(label, algorithm):
    call = dict(TOO_LARGE)[label]
    rss = _rss_bytes()
    start = time.perf_counter()
    with pytest.raises((MemoryError, ValueError)):
        call(algorithm)
    assert time.perf_counter() - start < 2.0
    assert _rss_bytes() - rss < 256 * 2**20, "memory was touched before failing"


# ==========================================================================
# 5. Ctrl-C
# ==========================================================================

INTERRUPT_SCRIPT = r"""
import json, os, signal, sys, threading, time
import numpy as np
import fastconv as fc
from threadpoolctl import threadpool_info

op, algorithm, size, k = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
x = rng.standard_normal((1, 1, size, size, size)).astype(np.float32)
w = rng.standard_normal((1, 1, k, k, k)).astype(np.float32)
if op == "conv3d":
    call = lambda: fc.conv3d(x, w, algorithm=algorithm)
elif op == "conv_transpose3d":
    call = lambda: fc.conv_transpose3d(x, w, algorithm=algorithm)
else:
    g = np.ones((1, 1) + (size - k + 1,) * 3, np.float32)
    call = lambda: fc.grad.conv3d_weight(x, w.shape, g)

blas_before = sorted((p["filepath"], p["num_threads"]) for p in threadpool_info()
                     if p["user_api"] == "blas")
threads_before = fc.get_num_threads()
sent = []

def interrupt():
    time.sleep(1.0)
    sent.append(time.monotonic())
    os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=interrupt, daemon=True).start()
start = time.monotonic()
report = {}
try:
    call()
    report["finished"] = time.monotonic() - start
except KeyboardInterrupt:
    report["latency"] = time.monotonic() - sent[0]
    report["interrupted_after"] = sent[0] - start
# the next calls are correct and the runtime state is intact
a = rng.integers(-3, 4, (2, 3, 11, 12, 10)).astype(np.float32)
b = rng.integers(-3, 4, (4, 3, 3, 3, 3)).astype(np.float32)
ref = None
ok = True
for alg in ("direct", "im2col"):
    y = fc.conv3d(a, b, padding=1, algorithm=alg)
    yt = fc.conv_transpose3d(a, b.transpose(1, 0, 2, 3, 4).copy(), algorithm=alg)
    ref = (y, yt) if ref is None else ref
    ok = ok and np.array_equal(y, ref[0]) and np.array_equal(yt, ref[1])
# direct check of one output cell against a float64 sum
cell = float((np.pad(a.astype(np.float64), [(0, 0), (0, 0)] + [(1, 1)] * 3)[0, :, 2:5, 3:6, 4:7]
              * b[1]).sum())
report["next_call_correct"] = bool(ok and y[0, 1, 2, 3, 4] == cell)
report["threads_unchanged"] = fc.get_num_threads() == threads_before
report["blas_unchanged"] = blas_before == sorted(
    (p["filepath"], p["num_threads"]) for p in threadpool_info() if p["user_api"] == "blas")
print(json.dumps(report))
"""

INTERRUPT_CASES = {
    # (op, algorithm, size, kernel): each call takes several to tens of seconds
    "conv3d-direct": ("conv3d", "direct", 200, 31),
    "conv3d-im2col": ("conv3d", "im2col", 256, 21),
    "conv_transpose3d-direct": ("conv_transpose3d", "direct", 150, 31),
    "conv_transpose3d-im2col": ("conv_transpose3d", "im2col", 150, 25),
    # each weight-gradient job reduces over the whole volume: make jobs long
    "conv3d_weight": ("conv3d_weight", "auto", 256, 21),
}


@pytest.mark.parametrize("case", list(INTERRUPT_CASES))
def test_ctrl_c_interrupts_a_long_call_within_a_second(case, record_property):
    result = subprocess.run([sys.executable, "-c", INTERRUPT_SCRIPT,
                             *map(str, INTERRUPT_CASES[case])],
                            capture_output=True, text=True, timeout=120, cwd=TESTS_DIR)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"\n{case}: {report}")
    assert "finished" not in report, f"the call finished ({report['finished']:.1f} s) before " \
                                     "the interrupt: make the problem larger"
    record_property("interrupt_latency_s", report["latency"])
    assert report["latency"] < 1.0, f"KeyboardInterrupt took {report['latency']:.2f} s"
    assert report["next_call_correct"], "the call after the interrupt is wrong"
    assert report["threads_unchanged"] and report["blas_unchanged"], report


# ==========================================================================
# 6. Fork
# ==========================================================================

FORK_SCRIPT = r"""
import json, multiprocessing as mp
import numpy as np
import fastconv as fc

def problems():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 16, 20, 24)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    g = rng.standard_normal((4, 32, 20, 24)).astype(np.float32)
    out = []
    for alg in fc.ALGORITHMS:
        out.append(fc.conv2d(x, w, padding=1, algorithm=alg))
        out.append(fc.conv_transpose2d(x, w.transpose(1, 0, 2, 3).copy(), stride=2,
                                       algorithm=alg))
    out.append(fc.grad.conv2d_input(x.shape, w, g, padding=1))
    out.append(fc.grad.conv2d_weight(x, w.shape, g, padding=1))
    out.append(fc.ndimage.correlate(x[0, 0], w[0, 0]))
    return out

def child(queue):
    results = problems()
    queue.put((fc.get_num_threads(), [r.tobytes() for r in results]))

if __name__ == "__main__":
    fc.set_num_threads(2)
    expected = problems()                 # the OpenMP pool is now running
    ctx = mp.get_context("fork")
    report = {"children": []}
    for _ in range(2):
        queue = ctx.Queue()
        p = ctx.Process(target=child, args=(queue,))
        p.start()
        threads, got = queue.get(timeout=90)
        p.join(30)
        report["children"].append({
            "exitcode": p.exitcode, "threads": threads,
            "equal": all(g == e.tobytes() for g, e in zip(got, expected))})
    # and the parent still works, on 2 threads, bit-identically
    report["parent_equal"] = all(np.array_equal(a, b) for a, b in zip(problems(), expected))
    report["parent_threads"] = fc.get_num_threads()
    print(json.dumps(report))
"""


def test_a_forked_child_of_a_process_that_used_openmp_computes_correctly(tmp_path):
    script = tmp_path / "fork_check.py"
    script.write_text(FORK_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=180, cwd=TESTS_DIR)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for child in report["children"]:
        assert child["exitcode"] == 0, report
        assert child["equal"], f"the forked child computed different results: {report}"
        assert child["threads"] == 1, report     # documented: single-threaded after fork
    assert report["parent_equal"] and report["parent_threads"] == 2, report


# ==========================================================================
# 7. Python threads: 8 threads x mixed operations == sequential results
# ==========================================================================

THREADS_SCRIPT = r"""
import json, threading
import numpy as np
import fastconv as fc

rng = np.random.default_rng(9)

def data(*shape, dtype=np.float32):
    a = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * rng.standard_normal(shape)
    return a.astype(dtype)

x2, w2 = data(3, 8, 18, 17), data(12, 4, 3, 3)
x3, w3 = data(2, 4, 9, 8, 7, dtype=np.complex128), data(8, 4, 3, 2, 3, dtype=np.complex128)
xt, wt = data(2, 6, 20, 21), data(6, 4, 3, 3)
g2 = data(3, 12, 18, 17)
vol, ker = data(24, 26, 22, dtype=np.float64), data(5, 5, 5, dtype=np.float64)
layer = fc.Conv3d(4, 8, 3, padding=1, dtype=np.complex128, rng=0)

def layer_step():
    y = layer(x3)
    return y, layer.backward(np.ones_like(y))

jobs = [
    lambda: fc.conv2d(x2, w2, padding=1, groups=2, algorithm="im2col"),
    lambda: fc.conv2d(x2, w2, stride=2, padding=1, groups=2, padding_mode="reflect",
                      algorithm="direct"),
    lambda: fc.conv3d(x3, w3, padding=(1, 0, 1), algorithm="fft"),
    lambda: fc.conv_transpose2d(xt, wt, stride=2, padding=1, output_padding=1,
                                algorithm="im2col"),
    lambda: fc.conv_transpose2d(xt, wt, stride=2, algorithm="direct"),
    lambda: (fc.grad.conv2d_input(x2.shape, w2, g2, padding=1, groups=2),
             fc.grad.conv2d_weight(x2, w2.shape, g2, padding=1, groups=2)),
    lambda: fc.ndimage.correlate(vol, ker, mode="mirror"),
    lambda: fc.signal.fftconvolve(vol, ker, "same"),
]

def flat(r):
    return [np.asarray(a) for a in (r if isinstance(r, tuple) else (r,))]

expected = [flat(job()) for job in jobs]
# the layer keeps state: each thread gets its own copy of it
expected.append(flat(layer_step()))
barrier = threading.Barrier(len(jobs) + 1)
results = [None] * (len(jobs) + 1)

def run(i):
    barrier.wait()
    if i == len(jobs):
        import copy
        mine = copy.deepcopy(layer)
        results[i] = [flat((lambda y: (y, mine.backward(np.ones_like(y))))(mine(x3)))
                      for _ in range(3)]
    else:
        results[i] = [flat(jobs[i]()) for _ in range(3)]

threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs) + 1)]
for t in threads: t.start()
for t in threads: t.join()
bad = [i for i, rs in enumerate(results)
       if any(any(a.tobytes() != b.tobytes() for a, b in zip(r, expected[i])) for r in rs)]
print(json.dumps({"mismatched": bad}))
"""


def test_nine_python_threads_running_mixed_operations_match_sequential_results():
    result = subprocess.run([sys.executable, "-c", THREADS_SCRIPT], capture_output=True,
                            text=True, timeout=300, cwd=TESTS_DIR)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["mismatched"] == [], f"operations {report['mismatched']} differ from " \
                                       "their sequential results"
