"""fastconv.dask: chunked results equal the in-memory fastconv results.

* ndimage semantics (correlate / convolve): random shapes, chunkings (chunks
  smaller than the halo included), kernels, every mode, origins, dtypes;
* deep-learning semantics (conv1d/2d/3d): stride, dilation, padding ints /
  tuples / strings, groups, bias, every padding mode, batched and unbatched;
* laziness, known chunks, per-block correctness, thread limiting;
* a dask.distributed LocalCluster (2 worker processes on loopback);
* fork safety: a process that already ran fastconv's OpenMP kernels forks
  and fastconv still works in the child.
"""
import multiprocessing
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

import fastconv as fc  # noqa: E402
import fastconv.dask as fcd  # noqa: E402
import fastconv.ndimage as ndi  # noqa: E402
from fastconv._filter import choose  # noqa: E402
from conftest import random_array, tolerance  # noqa: E402

MODES = ("reflect", "mirror", "nearest", "wrap", "constant", "grid-mirror", "grid-wrap",
         "grid-constant")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def random_chunks(rng, n):
    """A random chunking of length n: sizes 1..n, often smaller than any halo."""
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(min(n - sum(sizes), rng.integers(1, max(2, n // 2) + 1))))
    return tuple(sizes)


def assert_matches(actual, expected, reduction, exact):
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    if exact:
        np.testing.assert_array_equal(actual, expected)
    elif expected.dtype.kind in "iub":
        # The FFT path may land a value on the other side of an integer.
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1)
    else:
        rtol, atol = tolerance(expected.dtype, reduction)
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * 10)


# --------------------------------------------------------------------------
# ndimage semantics
# --------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(48))
def test_ndimage_random(seed):
    rng = np.random.default_rng(seed)
    nd = int(rng.integers(1, 4))
    shape = tuple(int(rng.integers(1, 14)) for _ in range(nd))
    kernel = tuple(int(rng.integers(1, 8)) for _ in range(nd))
    chunks = tuple(random_chunks(rng, n) for n in shape)
    mode = MODES[seed % len(MODES)]
    dtype = [np.float32, np.float64, np.complex64, np.complex128, np.uint8, np.int16][seed % 6]
    wdtype = [np.float32, np.float64, np.complex64][(seed // 6) % 3]
    x = random_array(rng, shape, dtype)
    w = random_array(rng, kernel, wdtype)
    origin = [int(rng.integers(-(k // 2), (k - 1) // 2 + 1)) for k in kernel]
    cval = float(rng.standard_normal())
    for ours, theirs in ((fcd.correlate, ndi.correlate), (fcd.convolve, ndi.convolve)):
        y = ours(da.from_array(x, chunks=chunks), w, mode=mode, cval=cval, origin=origin)
        expected = theirs(x, w, mode=mode, cval=cval, origin=origin)
        assert y.chunks == chunks
        assert y.dtype == expected.dtype
        assert_matches(y.compute(), expected, int(np.prod(kernel)), exact=False)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ndimage_bitwise(mode, dtype, rng):
    """Where the in-memory call uses the direct kernel, every block does: bit for bit."""
    x = random_array(rng, (13, 11, 9), dtype)
    w = random_array(rng, (5, 4, 3), dtype)
    assert choose((17, 14, 11), w.shape) == "direct"
    for chunks in [(5, 4, 4), (2, 3, 1), (13, 11, 9), (5, (1, 10), 4)]:
        xd = da.from_array(x, chunks=chunks)
        got = fcd.correlate(xd, w, mode=mode, cval=0.5, origin=(1, -2, 0)).compute()
        np.testing.assert_array_equal(got, ndi.correlate(x, w, mode=mode, cval=0.5,
                                                         origin=(1, -2, 0)))
        got = fcd.convolve(xd, w, mode=mode).compute()
        np.testing.assert_array_equal(got, ndi.convolve(x, w, mode=mode))


@pytest.mark.parametrize("mode", MODES)
def test_ndimage_chunks_smaller_than_halo(mode, rng):
    """dask #6688: chunks of 1-2 cells with a 7-wide kernel (halo 3) -- no rechunking."""
    x = random_array(rng, (11, 9, 10), np.float64)
    w = random_array(rng, (7, 7, 7), np.float64)
    xd = da.from_array(x, chunks=(1, 2, (3, 1, 1, 5)))
    y = fcd.correlate(xd, w, mode=mode, cval=-1.0)
    assert y.chunks == xd.chunks
    assert_matches(y.compute(), ndi.correlate(x, w, mode=mode, cval=-1.0), w.size, exact=False)


@pytest.mark.parametrize("mode", ["wrap", "grid-wrap", "reflect", "mirror", "nearest",
                                  "constant"])
def test_ndimage_kernel_larger_than_array(mode, rng):
    """Halo wider than the whole array: 'wrap' goes round, 'reflect' reflects repeatedly."""
    x = random_array(rng, (10,), np.float64)
    w = random_array(rng, (25,), np.float64)
    for chunks in [1, 3, 10]:
        y = fcd.correlate(da.from_array(x, chunks=chunks), w, mode=mode)
        assert_matches(y.compute(), ndi.correlate(x, w, mode=mode), w.size, exact=False)
    x2 = random_array(rng, (7, 5), np.float32)
    w2 = random_array(rng, (9, 13), np.float32)
    y = fcd.convolve(da.from_array(x2, chunks=2), w2, mode=mode)
    assert_matches(y.compute(), ndi.convolve(x2, w2, mode=mode), w2.size, exact=False)


def test_ndimage_wrap_across_chunk_edges(rng):
    """dask-image #242: 'wrap' must read the far end of the array, not the neighbour chunk."""
    x = np.arange(12.0)
    w = np.zeros(5)
    w[0] = 1.0                     # picks x[i - 2], wrapping round
    y = fcd.correlate(da.from_array(x, chunks=4), w, mode="wrap").compute()
    np.testing.assert_array_equal(y, np.roll(x, 2))
    x3 = random_array(rng, (16, 12, 8), np.float32)
    w3 = random_array(rng, (5, 5, 5), np.float32)
    y3 = fcd.correlate(da.from_array(x3, chunks=(4, 3, 8)), w3, mode="wrap").compute()
    np.testing.assert_array_equal(y3, ndi.correlate(x3, w3, mode="wrap"))


def test_ndimage_fft_path(rng):
    """A 15^3 kernel sends the in-memory call to FFT: equal to float32 tolerance."""
    x = random_array(rng, (40, 36, 30), np.float32)
    w = random_array(rng, (15, 15, 15), np.float32)
    assert choose((54, 50, 44), w.shape) == "fft"
    y = fcd.correlate(da.from_array(x, chunks=(16, 20, 13)), w, mode="wrap").compute()
    expected = ndi.correlate(x, w, mode="wrap")
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_ndimage_integer_output_and_zero_chunks(rng):
    x = rng.integers(0, 255, (30, 20)).astype(np.uint8)
    w = rng.standard_normal((3, 5))
    xd = da.from_array(x, chunks=((10, 0, 20), (7, 13)))
    y = fcd.correlate(xd, w, mode="mirror")
    assert y.dtype == np.uint8 and y.chunks == xd.chunks
    np.testing.assert_array_equal(y.compute(), ndi.correlate(x, w, mode="mirror"))


def test_ndimage_empty_and_numpy_input():
    y = fcd.correlate(da.zeros((0, 5), chunks=2), np.ones((3, 3)))
    assert y.shape == (0, 5) and y.compute().shape == (0, 5)
    x = np.arange(20.0).reshape(4, 5)
    y = fcd.convolve(x, np.ones((2, 3)), mode="nearest")          # NumPy in, dask out
    assert isinstance(y, da.Array)
    np.testing.assert_array_equal(y.compute(), ndi.convolve(x, np.ones((2, 3)), mode="nearest"))


def test_ndimage_errors_match_in_memory():
    x = da.ones((6, 6), chunks=3)
    for kwargs in [dict(mode="bogus"), dict(origin=5), dict(origin=(0, 0, 0))]:
        with pytest.raises(Exception) as ours:
            fcd.correlate(x, np.ones((3, 3)), **kwargs)
        with pytest.raises(Exception) as theirs:
            ndi.correlate(np.ones((6, 6)), np.ones((3, 3)), **kwargs)
        assert type(ours.value) is type(theirs.value)
        assert str(ours.value) == str(theirs.value)
    with pytest.raises(RuntimeError, match="weights array has 3 dims"):
        fcd.correlate(x, np.ones((3, 3, 3)))
    with pytest.raises(ValueError, match="threads"):
        fcd.correlate(x, np.ones((3, 3)), threads=0)
    unknown = x[x[:, 0] > 0]
    with pytest.raises(ValueError, match="known chunk sizes"):
        fcd.correlate(unknown, np.ones((3, 3)))


# --------------------------------------------------------------------------
# Deep-learning semantics
# --------------------------------------------------------------------------

CONV = {1: (fcd.conv1d, fc.conv1d), 2: (fcd.conv2d, fc.conv2d), 3: (fcd.conv3d, fc.conv3d)}


def random_conv_case(rng, seed):
    nd = 1 + seed % 3
    groups = int(rng.choice([1, 2]))
    c_in = groups * int(rng.integers(1, 3))
    c_out = groups * int(rng.integers(1, 3))
    n = int(rng.integers(1, 4))
    spatial = tuple(int(rng.integers(5, 14 - 2 * nd)) for _ in range(nd))
    kernel = tuple(int(rng.integers(1, 4)) for _ in range(nd))
    dilation = tuple(int(rng.integers(1, 3)) for _ in range(nd))
    padding_mode = PADDING_MODES[seed % 4]
    choice = seed % 5
    if choice == 0:
        padding, stride = "same", 1
    elif choice == 1:
        padding, stride = "valid", tuple(int(rng.integers(1, 4)) for _ in range(nd))
    else:
        padding = tuple(int(rng.integers(0, 4)) for _ in range(nd))
        stride = tuple(int(rng.integers(1, 4)) for _ in range(nd))
    batched = seed % 7 != 0
    shape = ((n,) if batched else ()) + (c_in,) + spatial
    chunks = tuple(random_chunks(rng, s) for s in shape)
    return dict(nd=nd, groups=groups, c_in=c_in, c_out=c_out, shape=shape, kernel=kernel,
                dilation=dilation, padding=padding, stride=stride, padding_mode=padding_mode,
                chunks=chunks, batched=batched)


@pytest.mark.parametrize("seed", range(48))
def test_conv_random(seed):
    rng = np.random.default_rng(1000 + seed)
    case = random_conv_case(rng, seed)
    dtype = [np.float32, np.float64, np.complex64, np.complex128][seed % 4]
    x = random_array(rng, case["shape"], dtype)
    w = random_array(rng, (case["c_out"], case["c_in"] // case["groups"]) + case["kernel"], dtype)
    b = random_array(rng, (case["c_out"],), dtype) if seed % 2 else None
    ours, theirs = CONV[case["nd"]]
    kwargs = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                  groups=case["groups"], padding_mode=case["padding_mode"])
    xd = da.from_array(x, chunks=case["chunks"])
    try:
        expected = theirs(x, w, b, **kwargs)
    except ValueError as exc:          # e.g. reflect padding not smaller than the input
        with pytest.raises(ValueError) as info:
            ours(xd, w, b, **kwargs)
        assert str(info.value) == str(exc)
        return
    y = ours(xd, w, b, **kwargs)
    assert y.shape == expected.shape and y.dtype == expected.dtype
    assert all(sum(c) == s for c, s in zip(y.chunks, y.shape))
    assert_matches(y.compute(), expected, int(np.prod(w.shape[1:])), exact=False)


@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("stride,padding,dilation,groups", [
    (1, 1, 1, 1), (2, 2, 1, 1), (3, (2, 1, 0), (1, 2, 1), 2), (1, "same", 2, 1),
    (2, "valid", 1, 2)])
def test_conv3d_bitwise_direct(padding_mode, stride, padding, dilation, groups, rng):
    """With the direct kernel every block is bitwise the in-memory result."""
    x = random_array(rng, (2, 4, 10, 9, 7), np.float64)
    w = random_array(rng, (6, 4 // groups, 3, 2, 3), np.float64)
    b = random_array(rng, (6,), np.float64)
    kwargs = dict(padding_mode=padding_mode, algorithm="direct")
    expected = fc.conv3d(x, w, b, stride, padding, dilation, groups, **kwargs)
    for chunks in [(1, 2, 4, 4, 3), (2, 4, 1, 2, 2), (2, 4, 10, 9, 7)]:
        y = fcd.conv3d(da.from_array(x, chunks=chunks), w, b, stride, padding, dilation, groups,
                       **kwargs)
        assert y.chunks[:2] == (da.from_array(x, chunks=chunks).chunks[0], (6,))
        np.testing.assert_array_equal(y.compute(), expected)


@pytest.mark.parametrize("algorithm", ["auto", "im2col", "fft"])
@pytest.mark.parametrize("c_out", [2, 8])
def test_conv3d_algorithms(algorithm, c_out, rng):
    """'auto' is bitwise where the whole-array call picks 'direct'; else to tolerance."""
    x = random_array(rng, (2, 3, 10, 9, 7), np.float32)
    w = random_array(rng, (c_out, 3, 3, 3, 3), np.float32)
    kwargs = dict(padding=1, padding_mode="reflect", algorithm=algorithm)
    expected = fc.conv3d(x, w, **kwargs)
    y = fcd.conv3d(da.from_array(x, chunks=(1, 3, 4, 3, 7)), w, **kwargs).compute()
    whole = algorithm
    if algorithm == "auto":                           # what the in-memory call picked
        whole = fc.explain("conv3d", x, w, **kwargs).family
    if whole == "direct":
        np.testing.assert_array_equal(y, expected)
    else:
        assert_matches(y, expected, w[0].size, exact=False)


def test_conv_stride_blocks_exact(rng):
    """Each output block on its own equals its slice of the in-memory result."""
    x = random_array(rng, (2, 3, 23, 17), np.float32)
    w = random_array(rng, (5, 3, 4, 3), np.float32)
    kwargs = dict(stride=(3, 2), padding=(2, 1), dilation=(2, 1), padding_mode="circular")
    y = fcd.conv2d(da.from_array(x, chunks=(1, 1, 4, 5)), w, **kwargs)
    expected = fc.conv2d(x, w, **kwargs)
    assert y.shape == expected.shape
    starts = [np.concatenate([[0], np.cumsum(c)]) for c in y.chunks]
    for idx in np.ndindex(*y.numblocks):
        sl = tuple(slice(s[i], s[i + 1]) for s, i in zip(starts, idx))
        assert_matches(y.blocks[idx].compute(), expected[sl], 36, exact=False)


def test_conv_output_chunks_follow_input(rng):
    """Stride 1 'same': output chunks are the input's; stride 2: about half of them."""
    x = da.zeros((2, 3, 32, 24), chunks=(1, 1, 8, 12))
    w = np.ones((4, 3, 3, 3))
    assert fcd.conv2d(x, w, padding="same").chunks == ((1, 1), (4,), (8, 8, 8, 8), (12, 12))
    assert fcd.conv2d(x, w, stride=2, padding=1).chunks == ((1, 1), (4,), (4, 4, 4, 4), (6, 6))


def test_conv_unbatched_and_empty(rng):
    x = random_array(rng, (3, 17), np.float64)
    w = random_array(rng, (2, 3, 4), np.float64)
    y = fcd.conv1d(da.from_array(x, chunks=(3, 2)), w, stride=3, padding=2,
                   padding_mode="circular")
    assert y.ndim == 2
    np.testing.assert_array_equal(
        y.compute(), fc.conv1d(x, w, stride=3, padding=2, padding_mode="circular"))
    x0 = np.zeros((0, 3, 8))
    y0 = fcd.conv1d(da.from_array(x0), np.ones((2, 3, 3)), np.ones(2))
    assert y0.compute().shape == fc.conv1d(x0, np.ones((2, 3, 3)), np.ones(2)).shape


def test_conv_errors_match_in_memory():
    x = da.ones((1, 2, 5, 5), chunks=2)
    cases = [((np.ones((3, 1, 3, 3)),), {}),
             ((np.ones((3, 2, 3, 3)),), dict(algorithm="bogus")),
             ((np.ones((3, 2, 3, 3)),), dict(padding="same", stride=2)),
             ((np.ones((3, 2, 3, 3)),), dict(padding=5, padding_mode="reflect")),
             ((np.ones((3, 2, 3, 3)),), dict(padding_mode="bogus"))]
    for args, kwargs in cases:
        with pytest.raises(Exception) as ours:
            fcd.conv2d(x, *args, **kwargs)
        with pytest.raises(Exception) as theirs:
            fc.conv2d(np.ones((1, 2, 5, 5)), *args, **kwargs)
        assert type(ours.value) is type(theirs.value)
        assert str(ours.value) == str(theirs.value)


# --------------------------------------------------------------------------
# Zarr arrays and paths in, to_zarr out
# --------------------------------------------------------------------------

@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_array_or_path_in_to_zarr_out(tmp_path, rng, zarr_format):
    zarr = pytest.importorskip("zarr")
    x = rng.random((21, 18, 16)).astype(np.float32)
    store = zarr.create_array(str(tmp_path / "in.zarr"), shape=x.shape, chunks=(4, 9, 16),
                              dtype=x.dtype, zarr_format=zarr_format)
    store[...] = x
    w = rng.random((5, 3, 4)).astype(np.float32)
    expected = ndi.correlate(x, w, mode="wrap")
    for source in (store, str(tmp_path / "in.zarr"), tmp_path / "in.zarr"):
        y = fcd.correlate(source, w, mode="wrap")
        assert y.chunks == ((4, 4, 4, 4, 4, 1), (9, 9), (16,))     # the store's chunks
        assert_matches(y.compute(), expected, w.size, exact=False)
    out = tmp_path / "out.zarr"
    fcd.correlate(tmp_path / "in.zarr", w, mode="wrap").to_zarr(str(out))   # streamed
    written = zarr.open_array(str(out), mode="r")
    assert written.chunks == store.chunks
    assert_matches(written[...], expected, w.size, exact=False)
    assert_matches(fcd.convolve(store, w).compute(), ndi.convolve(x, w), w.size, exact=False)


def test_conv3d_and_ome_zarr_level_from_a_path(tmp_path, rng):
    zarr = pytest.importorskip("zarr")
    x = rng.random((1, 2, 9, 10, 11)).astype(np.float32)          # (N, C, D, H, W)
    group = zarr.open_group(str(tmp_path / "image.zarr"), mode="w")
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"datasets": [{"path": "0"}]}]}
    level = group.create_array("0", shape=x.shape, chunks=(1, 2, 4, 10, 11), dtype=x.dtype)
    level[...] = x
    w = rng.random((3, 2, 3, 3, 3)).astype(np.float32)
    y = fcd.conv3d(tmp_path / "image.zarr" / "0", w, padding=1, padding_mode="circular")
    assert_matches(y.compute(), fc.conv3d(x, w, padding=1, padding_mode="circular"), 54,
                   exact=False)
    with pytest.raises(ValueError, match=r"conv3d: expected x to be .* OME-Zarr multiscale "
                                         r"image, not one array; give one of its levels"):
        fcd.conv3d(tmp_path / "image.zarr", w)


def test_paths_that_are_not_zarr_arrays_are_refused(tmp_path, monkeypatch):
    pytest.importorskip("zarr")
    np.save(tmp_path / "x.npy", np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"correlate: expected x to be a Dask array, an "
                                         r"array-like, a zarr.Array or the path of a Zarr "
                                         r"array; '.*x.npy' is not a Zarr store"):
        fcd.correlate(str(tmp_path / "x.npy"), np.ones((3, 3)))
    with pytest.raises(ValueError, match="no such directory"):
        fcd.correlate(tmp_path / "missing.zarr", np.ones((3, 3)))
    monkeypatch.setitem(sys.modules, "zarr", None)                 # zarr not installed
    (tmp_path / "x.zarr").mkdir()
    with pytest.raises(ImportError, match=r'needs the zarr package: pip install "fastconv\[io\]"'):
        fcd.correlate(tmp_path / "x.zarr", np.ones((3, 3)))


# --------------------------------------------------------------------------
# Laziness, graph, threads
# --------------------------------------------------------------------------

def test_lazy_with_known_chunks():
    calls = []

    def source(block):
        if block.size:                       # map_blocks probes with empty arrays
            calls.append(1)
        return block

    x = da.random.default_rng(0).random((20, 18, 16), chunks=(5, 6, 16)).map_blocks(
        source, dtype=np.float64, meta=np.empty((0, 0, 0)))   # no probing call
    y = fcd.correlate(x, np.ones((3, 3, 3)), mode="wrap")
    z = fcd.conv3d(x[None, None], np.ones((2, 1, 3, 3, 3)), stride=2, padding=1)
    assert calls == []                                   # building the graph computes nothing
    for arr in (y, z):
        assert isinstance(arr, da.Array)
        assert not any(np.isnan(c) for cs in arr.chunks for c in cs)
        assert all(sum(c) == s for c, s in zip(arr.chunks, arr.shape))
    assert y.chunks == x.chunks
    # One task per output block plus the halo slices: no hidden rechunk of the whole array.
    assert len(y.__dask_graph__()) < 40 * y.npartitions
    np.testing.assert_array_equal(y.compute(scheduler="sync"),
                                  ndi.correlate(x.compute(scheduler="sync"), np.ones((3, 3, 3)),
                                                mode="wrap"))
    assert calls


def test_import_fastconv_does_not_import_dask():
    code = "import sys, fastconv; assert 'dask' not in sys.modules, 'dask imported'"
    # From tests/: "python -c" puts its working directory on sys.path, and the
    # repository root would import the uncompiled source tree.
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   cwd=os.path.dirname(os.path.abspath(__file__)))


def _cores():
    from dask.system import CPU_COUNT
    return CPU_COUNT


def test_threads_per_task_rule():
    from dask import delayed
    t = fc.get_num_threads()
    probe = delayed(lambda _: fcd.threads_per_task())
    assert dask.compute(probe(0), scheduler="sync")[0] == max(1, min(t, _cores()))
    # The default thread pool has one thread per core: one OpenMP thread per task.
    assert dask.compute(probe(0), scheduler="threads")[0] == 1
    assert dask.compute(probe(0), scheduler="threads", num_workers=1)[0] == max(1, min(t, _cores()))


def test_tasks_run_under_the_thread_limit(monkeypatch, rng):
    """Each block's fastconv call sees the limited thread count; the caller's is untouched."""
    seen = []
    real = fcd._correlate_valid

    def spy(*args, **kwargs):
        seen.append((threading.current_thread().name, fc.get_num_threads()))
        return real(*args, **kwargs)

    monkeypatch.setattr(fcd, "_correlate_valid", spy)
    before = fc.get_num_threads()
    x = da.from_array(random_array(rng, (24, 24, 24), np.float32), chunks=8)
    w = np.ones((3, 3, 3), np.float32)
    w[0, 0, 0] = 0                                       # not rank 1: the N-D kernel
    fcd.correlate(x, w).compute(scheduler="threads")
    assert len(seen) == 27
    assert all(n == 1 for _, n in seen)                  # cores // cores
    seen.clear()
    fcd.correlate(x, w, threads=1).compute(scheduler="sync")
    assert all(n == 1 for _, n in seen)
    assert fc.get_num_threads() == before
    # a rank-1 kernel runs separable passes per block, under the same limit
    seen.clear()
    real_passes = fcd._ndfilters.correlate_valid_passes

    def spy_passes(*args, **kwargs):
        seen.append((threading.current_thread().name, fc.get_num_threads()))
        return real_passes(*args, **kwargs)

    monkeypatch.setattr(fcd._ndfilters, "correlate_valid_passes", spy_passes)
    fcd.correlate(x, np.ones((3, 3, 3), np.float32)).compute(scheduler="threads")
    assert len(seen) == 27
    assert all(n == 1 for _, n in seen)
    assert fc.get_num_threads() == before


# --------------------------------------------------------------------------
# dask.distributed and processes
# --------------------------------------------------------------------------

def test_local_cluster_two_processes(rng):
    distributed = pytest.importorskip("dask.distributed")
    x = random_array(rng, (30, 20, 16), np.float32)
    w = random_array(rng, (5, 3, 3), np.float32)
    xx = random_array(rng, (2, 3, 12, 10, 9), np.float64)
    ww = random_array(rng, (4, 3, 3, 3, 3), np.float64)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, host="127.0.0.1") as cluster, \
            distributed.Client(cluster) as client:
        y = fcd.correlate(da.from_array(x, chunks=(4, 7, 16)), w, mode="wrap")
        z = fcd.conv3d(da.from_array(xx, chunks=(1, 3, 5, 4, 3)), ww, stride=2, padding=1,
                       padding_mode="reflect")
        got_y, got_z = client.compute([y, z], sync=True)
        # Worker processes: 1 thread each, OMP_NUM_THREADS=1 from the nanny.
        per_worker = client.run(fcd.threads_per_task)
        assert len(per_worker) == 2
        assert set(per_worker.values()) == {1}
        assert len(client.run(os.getpid)) == 2
    np.testing.assert_array_equal(got_y, ndi.correlate(x, w, mode="wrap"))
    np.testing.assert_allclose(       # 4 output channels: im2col, GEMM-tiled per block
        got_z, fc.conv3d(xx, ww, stride=2, padding=1, padding_mode="reflect"),
        rtol=1e-12, atol=1e-12)


def _child_runs_fastconv(queue, x, w):
    try:
        y = fc.conv3d(x, w)
        z = fcd.correlate(da.from_array(x[0, 0], chunks=16), w[0, 0], mode="wrap")
        queue.put((y, z.compute(scheduler="sync"), fc.get_num_threads()))
    except BaseException as exc:  # pragma: no cover - reported to the parent
        queue.put(exc)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_after_openmp_does_not_hang(rng):
    """libgomp is not fork-safe: a child forked after OpenMP ran must still work.

    The parent runs fastconv with more than one thread (the OpenMP pool is
    started), then forks; the child calls fastconv (and fastconv.dask with the
    synchronous scheduler).  It must finish within the timeout with the
    parent's results.
    """
    # Large enough (> 2 * 2**20 multiply-adds) for fastconv to use 2 OpenMP threads.
    x = random_array(rng, (1, 1, 48, 48, 48), np.float64)
    w = random_array(rng, (2, 1, 3, 3, 3), np.float64)
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=2, user_api="openmp"):
        expected = fc.conv3d(x, w)                        # OpenMP thread pool started
    expected_z = ndi.correlate(x[0, 0], w[0, 0], mode="wrap")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_runs_fastconv, args=(queue, x, w))
    child.start()
    try:
        # Read before joining: a child cannot exit while its queue data is unread.
        result = queue.get(timeout=60)
    except Exception:
        result = None
    child.join(10)
    if result is None or child.is_alive():
        alive = child.is_alive()
        child.kill()
        child.join()
        pytest.fail("a child forked after fastconv's OpenMP kernels ran "
                    + ("hung calling fastconv" if alive else f"died (exit code {child.exitcode})"))
    assert child.exitcode == 0
    assert not isinstance(result, BaseException), result
    y, z, threads = result
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(z, expected_z)
    assert threads >= 1
