"""The separable ndimage filters outside memory: ``fastconv.dask`` and ``fastconv filter``.

* fastconv.dask: every function, every mode, 1-3 dims, float32 / float64 /
  uint16, random chunkings (chunks of 1 included, smaller than any halo):
  ``.compute()`` equals the in-memory fastconv.ndimage result bit for bit
  (hypothesis draws the shapes, chunkings and options);
* fastconv filter: each named kernel, slab by slab, on .npy and on Zarr /
  TIFF, equals fastconv.ndimage bit for bit and scipy.ndimage to the
  documented float32 bound; --help lists the kernels; bad specs exit 2 with
  a message naming --kernel and the accepted forms.
"""
import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage as sndi

hypothesis = pytest.importorskip("hypothesis")
da = pytest.importorskip("dask.array")

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import fastconv.dask as fcd  # noqa: E402
import fastconv.ndimage as fndi  # noqa: E402
from fastconv import cli  # noqa: E402

MODES = ("reflect", "constant", "nearest", "mirror", "wrap", "grid-constant", "grid-mirror",
         "grid-wrap")
DTYPES = (np.float32, np.float64, np.uint16)
CVAL = 0.5
TOL32 = 1e-5        # float32 against SciPy: 1e-5 of the largest possible output

#: name -> (positional args, keyword args for the call, a function of ndim)
FILTERS = {
    "gaussian_filter": lambda nd: ((1.3,), {}),
    "gaussian_filter_order": lambda nd: ((0.9,), {"order": [1, 0, 2][:nd]}),
    "gaussian_filter1d": lambda nd: ((1.6,), {"axis": 0, "order": 1}),
    "uniform_filter": lambda nd: ((4,), {}),
    "uniform_filter_origin": lambda nd: (([3, 5, 2][:nd],), {"origin": [1, -2, 0][:nd]}),
    "uniform_filter1d": lambda nd: ((5,), {"axis": 0, "origin": 1}),
    "sobel": lambda nd: ((), {"axis": 0}),
    "prewitt": lambda nd: ((), {"axis": -1}),
    "laplace": lambda nd: ((), {}),
    "gaussian_laplace": lambda nd: ((1.1,), {}),
    "gaussian_gradient_magnitude": lambda nd: ((0.8,), {"truncate": 3.0}),
    "correlate1d": lambda nd: (([1.0, -2.5, 0.75, 3.0],), {"axis": 0, "origin": -1}),
    "convolve1d": lambda nd: (([0.5, 2.0, -1.0],), {"axis": -1}),
}


def _function(name):
    base = name.replace("_order", "").replace("_origin", "")
    return getattr(fndi, base), getattr(fcd, base)


def _data(rng, shape, dtype):
    if np.dtype(dtype).kind == "u":
        return rng.integers(0, 4096, shape).astype(dtype)
    return (rng.standard_normal(shape) * 10).astype(dtype)


@st.composite
def problems(draw):
    nd = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=nd, max_size=nd)))
    chunks = []
    for n in shape:
        sizes = []
        while sum(sizes) < n:
            sizes.append(draw(st.integers(1, n - sum(sizes))))
        chunks.append(tuple(sizes))
    return shape, tuple(chunks)


def _assert_same(lazy, whole):
    got = lazy.compute(scheduler="sync")
    assert got.dtype == whole.dtype and got.shape == whole.shape
    assert got.tobytes() == whole.tobytes()


# -- fastconv.dask ------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(FILTERS))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems(), mode=st.sampled_from(MODES), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2 ** 16))
def test_dask_filter_equals_the_in_memory_filter_bit_for_bit(name, problem, mode, dtype,
                                                             seed):
    shape, chunks = problem
    x = _data(np.random.default_rng(seed), shape, dtype)
    in_memory, lazy = _function(name)
    args, kwargs = FILTERS[name](len(shape))
    whole = in_memory(x, *args, mode=mode, cval=CVAL, **kwargs)
    _assert_same(lazy(da.from_array(x, chunks=chunks), *args, mode=mode, cval=CVAL, **kwargs),
                 whole)


@pytest.mark.parametrize("mode", ["reflect", "constant", "mirror", "wrap"])
@pytest.mark.parametrize("name", ["gaussian_filter", "uniform_filter", "sobel",
                                  "gaussian_gradient_magnitude"])
def test_dask_filter_with_chunks_of_one_and_a_wide_halo(name, mode):
    """A 3-D volume in chunks of 1 to 3 cells, halos of up to 8 cells."""
    x = _data(np.random.default_rng(1), (5, 4, 9), np.float64)
    in_memory, lazy = _function(name)
    args = {"gaussian_filter": (2.0,), "uniform_filter": (9,),
            "gaussian_gradient_magnitude": (2.0,)}.get(name, ())
    whole = in_memory(x, *args, mode=mode, cval=CVAL)
    _assert_same(lazy(da.from_array(x, chunks=(1, 2, (1, 2, 1, 3, 2))), *args, mode=mode,
                      cval=CVAL), whole)


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_dask_filters_against_scipy(dtype):
    """The lazy result is the in-memory one, so it meets SciPy where that does:
    exactly for integers, to the documented bound for float32."""
    x = _data(np.random.default_rng(2), (10, 11, 12), dtype)
    xd = da.from_array(x, chunks=(3, 4, 5))
    for name in ("gaussian_filter", "uniform_filter", "sobel", "laplace",
                 "gaussian_gradient_magnitude", "gaussian_laplace"):
        args = {"gaussian_filter": (1.5,), "uniform_filter": (5,),
                "gaussian_gradient_magnitude": (1.5,), "gaussian_laplace": (1.5,)}.get(name, ())
        got = getattr(fcd, name)(xd, *args, mode="nearest").compute()
        want = getattr(sndi, name)(x, *args, mode="nearest")
        assert got.dtype == want.dtype
        if dtype == np.uint16:
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            scale = float(np.abs(x).max()) * {"sobel": 8, "laplace": 6}.get(name, 4)
            np.testing.assert_allclose(got, want, rtol=0, atol=TOL32 * scale, err_msg=name)


def test_dask_filters_complex_data_and_weights():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 8)) + 1j * rng.standard_normal((9, 8))
    xd = da.from_array(x, chunks=(2, 3))
    for w in ([1.0, 2j, -0.5], [1.0, -1.0, 0.5 + 0.5j, 2.0]):
        for fn in ("correlate1d", "convolve1d"):
            for data in (x, x.real, x.astype(np.complex64)):
                lazy = getattr(fcd, fn)(da.from_array(data, chunks=(2, 3)), w, axis=0,
                                        mode="wrap")
                _assert_same(lazy, getattr(fndi, fn)(data, w, axis=0, mode="wrap"))
    _assert_same(fcd.gaussian_filter(xd, 1.0, mode="constant", cval=1 + 2j),
                 fndi.gaussian_filter(x, 1.0, mode="constant", cval=1 + 2j))
    _assert_same(fcd.uniform_filter(xd, 3), fndi.uniform_filter(x, 3))


def test_dask_filters_keep_chunks_stay_lazy_and_take_output_dtypes():
    x = _data(np.random.default_rng(4), (12, 10), np.uint16)
    xd = da.from_array(x, chunks=(5, 3))
    y = fcd.gaussian_filter(xd, 1.0, output=np.float32, axes=(1,))
    assert isinstance(y, da.Array) and y.chunks == xd.chunks and y.dtype == np.float32
    _assert_same(y, fndi.gaussian_filter(x, 1.0, output=np.float32, axes=(1,)))
    _assert_same(fcd.sobel(xd, axis=1, output="float64"),
                 fndi.sobel(x, axis=1, output=np.float64))
    _assert_same(fcd.uniform_filter(x.astype(np.float64), 3),     # a NumPy input, one block
                 fndi.uniform_filter(x.astype(np.float64), 3))
    empty = fcd.laplace(da.zeros((0, 4), chunks=2, dtype=np.float32))
    assert empty.shape == (0, 4) and empty.dtype == np.float32


def test_dask_uniform_filter_on_floats_runs_whole_lines_and_on_integers_halos():
    """A float running sum restarts exactly only on whole lines: rechunked;
    integer sums are exact: explicit halos, no rechunk."""
    xf = da.from_array(np.random.default_rng(5).random((20, 20)), chunks=5)
    xi = xf.astype(np.uint16)
    layers_f = fcd.uniform_filter(xf, 5).__dask_graph__().layers
    layers_i = fcd.uniform_filter(xi, 5).__dask_graph__().layers
    assert any("rechunk" in k for k in layers_f)
    assert not any("rechunk" in k for k in layers_i)


@pytest.mark.parametrize("call, error, match", [
    (lambda x: fcd.gaussian_filter(x, 1.0, output=np.empty((6, 6))), TypeError,
     "gaussian_filter: expected output to be None or a dtype"),
    (lambda x: fcd.sobel(x, mode="bogus"), ValueError,
     "sobel: boundary mode not supported.*got 'bogus'"),
    (lambda x: fcd.sobel(x, axis=2), np.exceptions.AxisError, "sobel: axis"),
    (lambda x: fcd.uniform_filter1d(x, 0), ValueError,
     "uniform_filter1d: incorrect filter size"),
    (lambda x: fcd.correlate1d(x, [1.0, 2.0], origin=5), ValueError,
     "correlate1d: Invalid origin"),
    (lambda x: fcd.laplace(x, threads=0), ValueError, "laplace: expected threads"),
    (lambda x: fcd.gaussian_filter(x.astype(np.float16), 1.0), ValueError,
     "gaussian_filter: input dtype float16 is not supported"),
])
def test_dask_filter_bad_arguments_raise_as_in_memory(call, error, match):
    with pytest.raises(error, match=match):
        call(da.ones((6, 6), chunks=3))


# -- fastconv filter ----------------------------------------------------------------------

CLI_KERNELS = [
    ("gaussian:sigma=1.2", "gaussian_filter", (1.2,), {}),
    ("gaussian:sigma=0.8,truncate=2", "gaussian_filter", (0.8,), {"truncate": 2.0}),
    ("box:4", "uniform_filter", (4,), {}),
    ("sobel", "sobel", (), {}),
    ("sobel:axis=0", "sobel", (), {"axis": 0}),
    ("prewitt:axis=1", "prewitt", (), {"axis": 1}),
    ("laplace", "laplace", (), {}),
    ("gaussian-gradient:sigma=1.5", "gaussian_gradient_magnitude", (1.5,), {}),
    ("gaussian-gradient:1", "gaussian_gradient_magnitude", (1.0,), {}),
    ("gaussian-laplace:sigma=1,truncate=3", "gaussian_laplace", (1.0,), {"truncate": 3.0}),
]


def _filter(*args):
    return cli.main(["filter", *map(str, args), "--quiet"])


@pytest.mark.parametrize("mode", ["reflect", "constant", "wrap"])
@pytest.mark.parametrize("spec, name, args, kwargs", CLI_KERNELS)
def test_cli_named_kernels_on_npy_equal_ndimage(tmp_path, spec, name, args, kwargs, mode):
    """Slabs of 2 slices (thinner than the halo) and one slab; uint16 and float32."""
    rng = np.random.default_rng(6)
    for dtype in (np.uint16, np.float32):
        x = _data(rng, (9, 6, 7), dtype)
        np.save(tmp_path / "in.npy", x)
        whole = getattr(fndi, name)(x, *args, mode=mode, cval=CVAL, **kwargs)
        for slab in ("2", "64"):
            assert _filter(tmp_path / "in.npy", tmp_path / "out.npy", "--kernel", spec,
                           "--mode", mode, "--cval", CVAL, "--chunks", slab) == 0
            got = np.load(tmp_path / "out.npy")
            assert got.dtype == dtype
            assert got.tobytes() == whole.tobytes(), (spec, dtype, slab)
        want = getattr(sndi, name)(x, *args, mode=mode, cval=CVAL, **kwargs)
        if dtype == np.uint16:
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=0, atol=TOL32 * 8 * np.abs(x).max())


def test_cli_box_on_float64_across_slabs_is_within_rounding(tmp_path):
    """The one non-bitwise case: a float running sum along axis 0 restarts at
    each slab (documented)."""
    x = _data(np.random.default_rng(7), (12, 7, 6), np.float64)
    np.save(tmp_path / "in.npy", x)
    assert _filter(tmp_path / "in.npy", tmp_path / "out.npy", "--kernel", "box:5",
                   "--chunks", "3") == 0
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), sndi.uniform_filter(x, 5),
                               rtol=0, atol=1e-13 * np.abs(x).max())


@pytest.mark.parametrize("out_name", ["out.zarr", "out.tif"])
@pytest.mark.parametrize("scheduler", [None, "synchronous"])
@pytest.mark.parametrize("spec, name, args, kwargs",
                         [k for k in CLI_KERNELS if k[0] in ("box:4", "sobel:axis=0",
                                                             "gaussian-gradient:sigma=1.5",
                                                             "gaussian-laplace:sigma=1,"
                                                             "truncate=3", "laplace")])
def test_cli_named_kernels_through_zarr_and_tiff(tmp_path, spec, name, args, kwargs,
                                                 out_name, scheduler):
    zarr = pytest.importorskip("zarr")
    tifffile = pytest.importorskip("tifffile")
    x = _data(np.random.default_rng(8), (10, 9, 8), np.uint16)
    z = zarr.create_array(str(tmp_path / "in.zarr"), shape=x.shape, chunks=(3, 4, 4),
                          dtype=x.dtype)
    z[...] = x
    extra = ["--scheduler", scheduler] if scheduler else ["--chunks", "2"]
    assert _filter(tmp_path / "in.zarr", tmp_path / out_name, "--kernel", spec, "--mode",
                   "wrap", *extra) == 0
    if out_name.endswith(".zarr"):
        got = zarr.open_array(str(tmp_path / out_name), mode="r")[...]
    else:
        got = tifffile.imread(tmp_path / out_name)
    np.testing.assert_array_equal(got, getattr(sndi, name)(x, *args, mode="wrap", **kwargs))


def test_cli_help_lists_the_named_kernels(tmp_path):
    # outside the source tree: CI imports the installed (compiled) package
    result = subprocess.run([sys.executable, "-m", "fastconv", "filter", "--help"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for form in ("gaussian:sigma=S", "box:N", "sobel[:axis=A]", "prewitt[:axis=A]", "laplace",
                 "gaussian-gradient:sigma=S", "gaussian-laplace:sigma=S", "KERNEL.npy"):
        assert form in text.replace("- ", "-"), form


@pytest.mark.parametrize("spec, message", [
    ("sobel:axis=3", "axis 3 is out of range for a 3-D volume"),
    ("prewitt:axis=x", "expected prewitt\\[:axis=A\\] with an integer A"),
    ("gaussian-gradient:sigma=0", "S > 0, got sigma=0"),
    ("gaussian-laplace", "sigma is missing"),
    ("gaussian:sigma=1,size=2", "unknown option 'size'"),
    ("laplace:2", "expected name=value"),
    ("box:0", "N >= 1, got 0"),
    ("median:3", "unknown filter 'median'"),
])
def test_cli_bad_kernel_specs_name_the_option_and_the_accepted_forms(tmp_path, capsys, spec,
                                                                     message):
    np.save(tmp_path / "in.npy", np.zeros((4, 4, 4), np.float32))
    assert _filter(tmp_path / "in.npy", tmp_path / "out.npy", "--kernel", spec) == 2
    err = capsys.readouterr().err
    assert f"--kernel: bad kernel spec {spec!r}" in err
    assert __import__("re").search(message, err), err
    assert "accepted: gaussian:sigma=S" in err and "gaussian-laplace:sigma=S" in err
    assert not (tmp_path / "out.npy").exists()


def test_cli_output_dtype_the_filter_cannot_write_is_refused(tmp_path, capsys):
    np.save(tmp_path / "in.npy", np.zeros((4, 4, 4), np.float32))
    assert _filter(tmp_path / "in.npy", tmp_path / "out.npy", "--kernel", "sobel",
                   "--dtype", "float16") == 2
    assert "--kernel sobel with --dtype: sobel: output dtype float16" in capsys.readouterr().err
