"""Shared helpers for the fastconv test suite.

* ``tests/`` goes on ``sys.path`` so that ``import reference`` finds the
  float64 NumPy oracle even when pytest runs from the installed package.
* ``TOL`` / :func:`tolerance` / :func:`assert_close`: per-dtype tolerances,
  loosened with the length of the reduction (number of products summed per
  output element) so that they stay tight for small problems;
  :func:`assert_close_scaled`: per-dtype tolerances relative to the result's
  magnitude (gradients, layers).
* :func:`random_array`: seeded random data in any dtype; complex data always
  has non-zero imaginary parts, so a kernel that drops them cannot pass.
* ``HAVE_TORCH`` / ``torch`` fixture: PyTorch is optional; parity tests skip
  cleanly without it.  :func:`torch_single_threaded` wraps PyTorch calls.
* ``rng`` fixture: a generator seeded from the test id (reproducible per case).
"""
import contextlib
import os
import sys
import zlib

import numpy as np
import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

try:  # PyTorch is a test-only, optional dependency
    import torch as _torch
except ImportError:  # pragma: no cover - depends on the environment
    _torch = None

HAVE_TORCH = _torch is not None

#: The four dtypes fastconv computes in natively.
DTYPES = (np.float32, np.float64, np.complex64, np.complex128)

#: (rtol, atol) per compute dtype, for data of magnitude ~1 and a short
#: reduction; :func:`tolerance` widens both with the reduction length.
TOL = {
    np.dtype(np.float32): (1e-4, 1e-4),
    np.dtype(np.complex64): (1e-4, 1e-4),
    np.dtype(np.float64): (1e-10, 1e-10),
    np.dtype(np.complex128): (1e-10, 1e-10),
}


def tolerance(dtype, reduction=1):
    """(rtol, atol) for results of ``dtype`` summing ``reduction`` products each.

    Rounding errors of a sum grow like sqrt(length) for random data; the
    base tolerances hold up to 16 terms and widen beyond that.
    """
    rtol, atol = TOL[np.dtype(dtype)]
    scale = max(1.0, float(np.sqrt(max(1, reduction) / 16.0)))
    return rtol * scale, atol * scale


def reduction_size(weight):
    """Products summed per output element: C_in/groups * prod(kernel)."""
    return int(np.prod(np.shape(weight)[1:]))


def assert_close(actual, expected, dtype, reduction=1, err_msg=""):
    """``assert_allclose`` with the tolerance of ``dtype`` for this reduction length."""
    rtol, atol = tolerance(dtype, reduction)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=err_msg)


#: Tolerance relative to the result's magnitude, per dtype (see assert_close_scaled).
SCALED_TOL = {
    np.dtype(np.float32): 5e-5,
    np.dtype(np.complex64): 5e-5,
    np.dtype(np.float64): 1e-11,
    np.dtype(np.complex128): 1e-11,
}


def assert_close_scaled(actual, expected, dtype, err_msg=""):
    """``assert_allclose`` with rtol = tol and atol = tol * max|expected|, tol per dtype.

    For results whose reduction length is unknown or mixed (gradients, layers):
    the bound follows the size of the values.  Single precision 5e-5 leaves room
    for summation order but still catches any wrong tap, sign, conjugation or
    padding cell.
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    tol = SCALED_TOL[np.dtype(dtype)]
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, err_msg=err_msg)


def random_array(rng, shape, dtype):
    """Seeded random data of ``shape`` and ``dtype``.

    Floats are standard normal; complex values have independent standard
    normal real and imaginary parts (never all-zero imaginary parts);
    integers are small (0..9, or -9..9 when signed) and bool is random.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        real = rng.standard_normal(shape)
        imag = rng.standard_normal(shape)
        return (real + 1j * imag).astype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind == "u":
        return rng.integers(0, 10, size=shape).astype(dtype)
    if dtype.kind == "i":
        return rng.integers(-9, 10, size=shape).astype(dtype)
    raise ValueError(f"random_array: unsupported dtype {dtype}")


@contextlib.contextmanager
def dispatch_recorded():
    """Record every kernel run inside the block: a list of (Problem, Choice).

    ``fastconv._dispatch.recorded``: every run passes ``_dispatch.run`` meanwhile.
    """
    from fastconv import _dispatch
    with _dispatch.recorded() as runs:
        yield runs


@pytest.fixture
def rng(request):
    """A generator seeded from the test's node id: reproducible, distinct per case."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def torch():
    """The torch module, or skip the test when PyTorch is not installed."""
    return pytest.importorskip("torch")


@contextlib.contextmanager
def torch_single_threaded():
    """Run PyTorch on one thread, then restore its thread count.

    On these tiny problems PyTorch's thread pool only adds latency (tenths of
    a second per call on two cores).  PyTorch shares the OpenMP runtime with
    fastconv, so the setting is restored straight away rather than left to
    leak into fastconv's calls.
    """
    if _torch is None:
        yield
        return
    previous = _torch.get_num_threads()
    _torch.set_num_threads(1)
    try:
        yield
    finally:
        _torch.set_num_threads(previous)
