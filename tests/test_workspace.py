"""Scratch reuse (``fastconv._workspace``): temporaries of one call never share
memory, a later call reuses them, results never alias them."""
import threading

import numpy as np
import pytest

import fastconv as fc
from fastconv import _workspace


def test_live_scratch_arrays_never_share_memory():
    a = _workspace.empty((512, 1024), np.float32)
    b = _workspace.empty((512, 1024), np.float32)
    c = _workspace.empty((256, 1024), np.float64)
    assert not np.shares_memory(a, b) and not np.shares_memory(a, c)
    assert not np.shares_memory(b, c)
    assert a.shape == (512, 1024) and a.dtype == np.float32 and a.flags.c_contiguous
    assert a.ctypes.data % 64 == 0 and c.ctypes.data % 64 == 0


def test_released_scratch_is_reused_and_the_pool_is_capped():
    a = _workspace.empty((1 << 20,), np.float32)
    address = a.ctypes.data
    view = a[10:]                     # a view keeps the buffer in use
    del a
    b = _workspace.empty((1 << 20,), np.float32)
    assert b.ctypes.data != address and not np.shares_memory(b, view)
    del view
    c = _workspace.empty((1 << 20,), np.float32)
    assert c.ctypes.data == address   # free again: handed out again
    del b, c
    big = [_workspace.empty((1 << 24,), np.float32) for _ in range(3)]   # 3 x 64 MiB
    assert _workspace.kept_bytes() > _workspace.KEEP_BYTES             # all in use
    del big
    _workspace.empty((1 << 20,), np.float32)
    assert _workspace.kept_bytes() <= _workspace.KEEP_BYTES


def test_small_temporaries_are_plain_arrays():
    a = _workspace.empty((16, 16), np.float64)
    assert a.base is None


def _complex(shape, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _reference(x, w):
    """complex64 conv3d, padding 1, by float64 sums (x: (1, C, D, H, W))."""
    xp = np.pad(x[0].astype(np.complex128), ((0, 0), (1, 1), (1, 1), (1, 1)))
    d, h, wd = x.shape[2:]
    out = np.zeros((w.shape[0], d, h, wd), np.complex128)
    for a in range(3):
        for b in range(3):
            for c in range(3):
                patch = xp[:, a:a + d, b:b + h, c:c + wd]
                out += np.einsum("oi,idhw->odhw", w[:, :, a, b, c].astype(np.complex128), patch)
    return out[None]


def test_complex_results_do_not_alias_scratch_across_calls():
    """complex64 runs on planar scratch (> 1 MiB here): a result kept from one
    call is not overwritten by the next call's temporaries."""
    w = _complex((8, 8, 3, 3, 3), 0)
    x1, x2 = _complex((1, 8, 16, 32, 32), 1), _complex((1, 8, 16, 32, 32), 2)
    y1 = fc.conv3d(x1, w, padding=1)
    kept = y1.copy()
    y2 = fc.conv3d(x2, w, padding=1)
    np.testing.assert_array_equal(y1, kept)
    for x, y in ((x1, y1), (x2, y2)):
        ref = _reference(x, w)
        assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_threads_calling_at_once_get_their_own_scratch(dtype):
    w = _complex((8, 8, 3, 3, 3), 3).astype(dtype)
    xs = [_complex((1, 8, 16, 32, 32), 10 + i).astype(dtype) for i in range(4)]
    expected = [fc.conv3d(x, w, padding=1) for x in xs]
    results = [None] * len(xs)

    def work(i):
        for _ in range(3):
            results[i] = fc.conv3d(xs[i], w, padding=1)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)
