"""``fastconv filter`` on .npy, Zarr (v2, v3, OME-Zarr levels) and TIFF volumes.

* every input format x every output format, slab by slab and through Dask,
  equal to the in-memory result, inputs untouched, no temporaries left;
* TIFF multi-page, BigTIFF, compressed, big-endian; OME-Zarr level paths;
* Zarr outputs keep the input's chunks, shards and compressors unless
  ``--chunks`` / ``--compressor`` say otherwise;
* refusals before any work (missing extra, corrupt or truncated input,
  unwritable output, full disk, dtypes), corrupt data found mid-run, Ctrl-C:
  one line, exit status 2 (130 for Ctrl-C), no OUT and no temporary;
* a few hundred MB Zarr store filtered under an address-space limit that
  leaves far less room than the volume's size.
"""
import hashlib
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage as sndi

zarr = pytest.importorskip("zarr")
tifffile = pytest.importorskip("tifffile")

import fastconv as fc  # noqa: E402
from fastconv import _tiff_volume, _volumes, _zarr_volume, cli  # noqa: E402

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
EXTRA = 'pip install "fastconv[io]"'
KERNEL = "gaussian:sigma=1.3"
SHAPE = (23, 17, 19)


# -- helpers ------------------------------------------------------------------------------

def make_input(kind, path, x):
    """Write ``x`` as ``kind`` at ``path``; returns the path."""
    if kind == "npy":
        np.save(path, x)
    elif kind == "zarr2":                       # v2, uncompressed, chunks smaller than halos
        z = zarr.create_array(str(path), shape=x.shape, chunks=(2, 10, 7), dtype=x.dtype,
                              zarr_format=2, compressors=None)
        z[...] = x
    elif kind == "zarr3":                       # v3, Blosc, sharded
        z = zarr.create_array(str(path), shape=x.shape, chunks=(4, 17, 19),
                              shards=(8, 17, 19), dtype=x.dtype,
                              compressors=zarr.codecs.BloscCodec(cname="lz4", clevel=3))
        z[...] = x
    elif kind == "tif":
        tifffile.imwrite(path, x, photometric="minisblack")
    elif kind == "bigtif":
        tifffile.imwrite(path, x, bigtiff=True, photometric="minisblack")
    elif kind == "ztif":                        # compressed pages: decoded page by page
        tifffile.imwrite(path, x, compression="zlib", photometric="minisblack")
    else:
        raise AssertionError(kind)
    return path


SUFFIX = {"npy": ".npy", "zarr2": ".zarr", "zarr3": ".zarr", "tif": ".tif", "bigtif": ".tif",
          "ztif": ".tiff"}


def load(path):
    path = str(path)
    if path.endswith(".npy"):
        return np.load(path)
    if path.endswith((".tif", ".tiff")):
        return tifffile.imread(path)
    return zarr.open_array(path, mode="r")[...]


def digest(path):
    """A hash of a file or of every file under a directory (to show it is untouched)."""
    h = hashlib.sha256()
    paths = [path] if os.path.isfile(path) else sorted(
        os.path.join(d, f) for d, _, files in os.walk(path) for f in files)
    for p in paths:
        h.update(os.path.relpath(p, path).encode())
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def filt(*args):
    return cli.main(["filter", *map(str, args), "--quiet"])


def run(*args, env=None, preexec_fn=None):
    return subprocess.run([sys.executable, "-m", "fastconv", *map(str, args)], cwd=TESTS_DIR,
                          capture_output=True, text=True, timeout=600, env=env,
                          preexec_fn=preexec_fn)


@pytest.fixture
def x():
    return np.random.default_rng(0).random(SHAPE).astype(np.float32)


@pytest.fixture
def expected(x):
    return sndi.correlate(x, cli.parse_kernel(KERNEL, 3), mode="reflect")


# -- every combination --------------------------------------------------------------------

@pytest.mark.parametrize("out_kind", ["npy", "zarr", "tif"])
@pytest.mark.parametrize("in_kind", ["npy", "zarr2", "zarr3", "tif", "bigtif", "ztif"])
def test_every_input_and_output_format(tmp_path, x, expected, in_kind, out_kind):
    src = make_input(in_kind, tmp_path / f"in{SUFFIX[in_kind]}", x)
    before = digest(src)
    out = tmp_path / f"out.{out_kind}"
    assert filt(src, out, "--kernel", KERNEL, "--chunks", "8" if out_kind != "zarr" else
                "4") == 0
    got = load(out)
    assert got.dtype == np.float32 and got.shape == SHAPE
    np.testing.assert_allclose(got, expected, atol=2e-6)
    np.testing.assert_allclose(got, fc.ndimage.correlate(x, cli.parse_kernel(KERNEL, 3)),
                               atol=2e-6)
    assert digest(src) == before                                   # input untouched
    assert sorted(os.listdir(tmp_path)) == sorted([src.name, out.name])   # no temporaries


@pytest.mark.parametrize("in_kind, out_kind, scheduler", [
    ("zarr3", "zarr", "threads"), ("zarr2", "npy", "threads"), ("tif", "tif", "threads"),
    ("npy", "zarr", "threads"), ("zarr2", "zarr", "synchronous")])
@pytest.mark.parametrize("mode", ["reflect", "wrap", "constant"])
def test_dask_scheduler_gives_the_same_result(tmp_path, x, in_kind, out_kind, scheduler, mode):
    src = make_input(in_kind, tmp_path / f"in{SUFFIX[in_kind]}", x)
    out = tmp_path / f"out.{out_kind}"
    assert filt(src, out, "--kernel", "box:3", "--mode", mode, "--cval", "0.5",
                "--scheduler", scheduler) == 0
    want = sndi.correlate(x, cli.parse_kernel("box:3", 3), mode=mode, cval=0.5)
    np.testing.assert_allclose(load(out), want, atol=2e-6)
    assert sorted(os.listdir(tmp_path)) == sorted([src.name, out.name])


def test_integer_volume_through_zarr_and_tiff_is_truncated_as_scipy(tmp_path):
    x = np.random.default_rng(2).integers(0, 4096, SHAPE).astype(np.uint16)
    src = make_input("zarr3", tmp_path / "in.zarr", x)
    kernel = cli.parse_kernel("box:3", 3)
    assert filt(src, tmp_path / "out.tif", "--kernel", "box:3", "--mode", "nearest") == 0
    got = tifffile.imread(tmp_path / "out.tif")
    assert got.dtype == np.uint16
    # box:N is scipy.ndimage.uniform_filter: a pass per axis, each truncated to
    # uint16 as SciPy's intermediate is; integer data give SciPy's bits.
    np.testing.assert_array_equal(got, sndi.uniform_filter(x, 3, mode="nearest"))
    assert filt(src, tmp_path / "f.zarr", "--kernel", "box:3", "--dtype", "float64") == 0
    np.testing.assert_allclose(load(tmp_path / "f.zarr"),
                               sndi.correlate(x.astype(np.float64), kernel), rtol=1e-12)


def test_2d_and_1d_volumes(tmp_path):
    rng = np.random.default_rng(3)
    img = rng.random((40, 33)).astype(np.float32)
    make_input("ztif", tmp_path / "img.tif", img)      # one compressed 2-D page
    assert filt(tmp_path / "img.tif", tmp_path / "img.zarr", "--kernel", "box:5",
                "--chunks", "7") == 0
    np.testing.assert_allclose(load(tmp_path / "img.zarr"),
                               sndi.correlate(img, np.full((5, 5), 1 / 25)), atol=2e-6)
    assert zarr.open_array(tmp_path / "img.zarr").chunks[0] == 7
    sig = rng.random(1000)
    z = zarr.create_array(str(tmp_path / "sig.zarr"), shape=sig.shape, chunks=(64,),
                          dtype=sig.dtype)
    z[...] = sig
    assert filt(tmp_path / "sig.zarr", tmp_path / "sig.npy", "--kernel", "box:9",
                "--mode", "mirror") == 0
    np.testing.assert_allclose(np.load(tmp_path / "sig.npy"),
                               sndi.correlate(sig, np.full(9, 1 / 9), mode="mirror"),
                               atol=1e-12)


# -- TIFF ---------------------------------------------------------------------------------

def test_tiff_output_is_a_multipage_stack_and_bigtiff_follows_the_input(tmp_path, x, expected):
    make_input("bigtif", tmp_path / "big.tif", x)
    make_input("tif", tmp_path / "classic.tif", x)
    assert filt(tmp_path / "big.tif", tmp_path / "a.tif", "--kernel", KERNEL) == 0
    assert filt(tmp_path / "classic.tif", tmp_path / "b.tif", "--kernel", KERNEL) == 0
    for name, big in (("a.tif", True), ("b.tif", False)):
        with tifffile.TiffFile(tmp_path / name) as tif:
            assert tif.is_bigtiff is big
            assert len(tif.pages) == SHAPE[0]                  # one page per slice
            assert tif.pages[0].shape == SHAPE[1:]
            assert tif.pages[0].compression == 1               # uncompressed
            np.testing.assert_allclose(tif.asarray(), expected, atol=2e-6)


def test_tiff_written_page_by_page_and_big_endian(tmp_path, x, expected):
    with tifffile.TiffWriter(tmp_path / "pages.tif") as w:   # scattered pages, no metadata
        for plane in x:
            w.write(plane, contiguous=False, metadata=None, photometric="minisblack")
    tifffile.imwrite(tmp_path / "be.tif", x.astype(">f4"), byteorder=">",
                     photometric="minisblack")
    for name in ("pages.tif", "be.tif"):
        out = tmp_path / f"{name}.npy"
        assert filt(tmp_path / name, out, "--kernel", KERNEL) == 0
        np.testing.assert_allclose(np.load(out), expected, atol=2e-6)


# -- Zarr ---------------------------------------------------------------------------------

@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_zarr_level_path(tmp_path, x, expected, zarr_format):
    group = zarr.open_group(str(tmp_path / "image.zarr"), mode="w", zarr_format=zarr_format)
    datasets = [{"path": "0"}, {"path": "1"}]
    if zarr_format == 2:
        group.attrs["multiscales"] = [{"version": "0.4", "datasets": datasets}]
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": [{"datasets": datasets}]}
    level0 = group.create_array("0", shape=(1, 1) + SHAPE, chunks=(1, 1, 5, 17, 19),
                                dtype=x.dtype)
    level0[...] = x[None, None]
    group.create_array("1", shape=(1, 1, 12, 9, 10), dtype=x.dtype)
    out = tmp_path / "smooth.zarr"
    assert filt(tmp_path / "image.zarr" / "0", out, "--kernel", KERNEL) == 0
    got = zarr.open_array(str(out), mode="r")
    assert got.shape == (1, 1) + SHAPE                     # (t, c, z, y, x) kept
    assert got.chunks == (1, 1, 5, 17, 19)
    assert got.metadata.zarr_format == zarr_format
    np.testing.assert_allclose(got[0, 0], expected, atol=2e-6)
    result = run("filter", tmp_path / "image.zarr", tmp_path / "o.zarr", "--kernel", KERNEL)
    assert result.returncode == 2
    assert "OME-Zarr multiscale image" in result.stderr and "image.zarr/0" in result.stderr
    assert not (tmp_path / "o.zarr").exists()


def test_zarr_output_keeps_the_inputs_chunks_shards_and_compressors(tmp_path, x):
    make_input("zarr3", tmp_path / "v3.zarr", x)
    make_input("zarr2", tmp_path / "v2.zarr", x)
    assert filt(tmp_path / "v3.zarr", tmp_path / "o3.zarr", "--kernel", "box:3") == 0
    assert filt(tmp_path / "v2.zarr", tmp_path / "o2.zarr", "--kernel", "box:3") == 0
    for a, b in (("v3.zarr", "o3.zarr"), ("v2.zarr", "o2.zarr")):
        src = zarr.open_array(str(tmp_path / a), mode="r")
        out = zarr.open_array(str(tmp_path / b), mode="r")
        assert out.metadata.zarr_format == src.metadata.zarr_format
        assert out.chunks == src.chunks and out.shards == src.shards
        assert out.compressors == src.compressors
        assert out.dtype == src.dtype


def test_chunks_and_compressor_options_override(tmp_path, x, expected):
    make_input("zarr3", tmp_path / "in.zarr", x)
    make_input("zarr2", tmp_path / "in2.zarr", x)
    assert filt(tmp_path / "in.zarr", tmp_path / "a.zarr", "--kernel", KERNEL,
                "--chunks", "5,6,7", "--compressor", "zstd:3") == 0
    a = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")
    assert a.chunks == (5, 6, 7) and a.shards is None
    assert a.compressors == (zarr.codecs.ZstdCodec(level=3),)
    np.testing.assert_allclose(a[...], expected, atol=2e-6)
    assert filt(tmp_path / "in.zarr", tmp_path / "b.zarr", "--kernel", KERNEL,
                "--chunks", "3", "--compressor", "none") == 0
    b = zarr.open_array(str(tmp_path / "b.zarr"), mode="r")
    assert b.chunks == (3, 17, 19) and b.compressors == ()
    assert filt(tmp_path / "in2.zarr", tmp_path / "c.zarr", "--kernel", KERNEL,
                "--compressor", "blosc:zstd:4") == 0
    c = zarr.open_array(str(tmp_path / "c.zarr"), mode="r")
    assert c.metadata.zarr_format == 2 and c.chunks == (2, 10, 7)
    assert c.compressors[0].get_config()["cname"] == "zstd"
    assert c.compressors[0].get_config()["clevel"] == 4
    np.testing.assert_allclose(c[...], expected, atol=2e-6)


def test_zarr_output_of_a_file_input_gets_default_chunks_and_compressor(tmp_path):
    x = np.zeros((70, 150, 20), np.float32)
    np.save(tmp_path / "in.npy", x)
    assert filt(tmp_path / "in.npy", tmp_path / "o.zarr", "--kernel", "box:1") == 0
    out = zarr.open_array(str(tmp_path / "o.zarr"), mode="r")
    assert out.metadata.zarr_format == 3 and out.chunks == (64, 128, 20)
    (codec,) = out.compressors
    assert (codec.cname.value, codec.clevel, codec.shuffle.value) == ("zstd", 5, "shuffle")


def test_zarr_writer_buffers_slabs_that_end_inside_a_chunk_layer(tmp_path, x):
    writer = _volumes.create_volume(str(tmp_path / "o.zarr"), SHAPE, np.float32,
                                    chunks=(8, 17, 19))
    assert writer.align == 8
    for start in range(0, SHAPE[0], 3):                  # 3-slice slabs, 8-slice chunks
        writer.write_slab(start, x[start:start + 3])
    with pytest.raises(ValueError, match="slabs must be written in order"):
        writer.write_slab(4, x[4:6])
    writer.commit()
    np.testing.assert_array_equal(load(tmp_path / "o.zarr"), x)
    unordered = _volumes.create_volume(str(tmp_path / "p.zarr"), SHAPE, np.float32,
                                       chunks=(8, 17, 19))
    unordered.write_slab(0, x[:5])
    with pytest.raises(ValueError, match="expected row 5, got 6"):
        unordered.write_slab(6, x[6:9])
    with pytest.raises(ValueError, match="rows from 5 on were never written"):
        unordered.commit()
    unordered.abort()
    assert sorted(os.listdir(tmp_path)) == ["o.zarr"]


def test_output_replaces_an_existing_store_only_when_complete(tmp_path, x, expected):
    make_input("zarr3", tmp_path / "in.zarr", x)
    old = zarr.create_array(str(tmp_path / "out.zarr"), shape=(3,), dtype="i4")
    old[...] = 7
    assert filt(tmp_path / "in.zarr", tmp_path / "out.zarr", "--kernel", KERNEL) == 0
    np.testing.assert_allclose(load(tmp_path / "out.zarr"), expected, atol=2e-6)
    assert sorted(os.listdir(tmp_path)) == ["in.zarr", "out.zarr"]


# -- refusals before any work -------------------------------------------------------------

@pytest.mark.parametrize("module, name", [("zarr", "in.zarr"), ("tifffile", "in.tif")])
def test_missing_extra_is_one_line_naming_it(tmp_path, x, monkeypatch, capsys, module, name):
    make_input("zarr3" if module == "zarr" else "tif", tmp_path / name, x)
    np.save(tmp_path / "in.npy", x)
    monkeypatch.setitem(sys.modules, module, None)          # import fails
    out_name = "out.zarr" if module == "zarr" else "out.tif"
    for args in ([tmp_path / name, tmp_path / "out.npy"],
                 [tmp_path / "in.npy", tmp_path / out_name]):
        assert filt(*args, "--kernel", "box:3") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and EXTRA in err and f"the {module} package" in err
    assert sorted(os.listdir(tmp_path)) == sorted(["in.npy", name])


def test_scheduler_without_dask_names_the_dask_extra(tmp_path, x, monkeypatch, capsys):
    np.save(tmp_path / "in.npy", x)
    monkeypatch.setitem(sys.modules, "dask.array", None)
    assert filt(tmp_path / "in.npy", tmp_path / "out.zarr", "--kernel", "box:3",
                "--scheduler", "threads") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert '--scheduler needs the dask package: pip install "fastconv[dask]"' in err
    assert sorted(os.listdir(tmp_path)) == ["in.npy"]


def test_missing_extra_in_a_fresh_process(tmp_path, x):
    make_input("zarr3", tmp_path / "in.zarr", x)
    code = ("import sys; sys.modules['zarr'] = None; from fastconv.cli import main; "
            f"sys.exit(main(['filter', {str(tmp_path / 'in.zarr')!r}, "
            f"{str(tmp_path / 'o.npy')!r}, '--kernel', 'box:3']))")
    result = subprocess.run([sys.executable, "-c", code], cwd=TESTS_DIR, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"fastconv: error: reading {tmp_path / 'in.zarr'} needs the zarr package: {EXTRA}"]


def corrupt_inputs(tmp_path, x):
    """name -> (path, part of the message) for inputs refused before any work."""
    np.save(tmp_path / "t.npy", x)
    with open(tmp_path / "t.npy", "r+b") as f:
        f.truncate(os.path.getsize(tmp_path / "t.npy") - 100)
    make_input("tif", tmp_path / "t.tif", x)
    with open(tmp_path / "t.tif", "r+b") as f:
        f.truncate(os.path.getsize(tmp_path / "t.tif") // 2)
    (tmp_path / "junk.tif").write_bytes(b"II*\x00garbage" * 10)
    make_input("zarr2", tmp_path / "meta.zarr", x)
    (tmp_path / "meta.zarr" / ".zarray").write_text("{not json")
    (tmp_path / "plain.zarr").mkdir()
    np.save(tmp_path / "obj.npy", np.array([{}, 1], dtype=object))
    return {"truncated npy": ("t.npy", "truncated"),
            "truncated tif": ("t.tif", "truncated"),
            "garbage tif": ("junk.tif", "cannot read"),
            "corrupt zarr metadata": ("meta.zarr", "corrupt metadata"),
            "not a zarr store": ("plain.zarr", "no Zarr metadata"),
            "object npy": ("obj.npy", "Python objects")}


@pytest.mark.parametrize("case", ["truncated npy", "truncated tif", "garbage tif",
                                  "corrupt zarr metadata", "not a zarr store", "object npy"])
def test_corrupt_or_truncated_input_is_refused(tmp_path, x, capsys, case):
    name, message = corrupt_inputs(tmp_path, x)[case]
    before = sorted(os.listdir(tmp_path))
    assert filt(tmp_path / name, tmp_path / "out.npy", "--kernel", "box:3") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and name in err
    assert sorted(os.listdir(tmp_path)) == before


def test_truncated_tiff_is_one_line_in_a_fresh_process(tmp_path, x):
    # tifffile logs warnings about damaged files; in a real run (no pytest
    # log capture) they must not reach stderr besides the error.
    make_input("tif", tmp_path / "t.tif", x)
    with open(tmp_path / "t.tif", "r+b") as f:
        f.truncate(os.path.getsize(tmp_path / "t.tif") // 2)
    result = run("filter", tmp_path / "t.tif", tmp_path / "out.npy", "--kernel", "box:3")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "the file is truncated" in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["t.tif"]


def test_corrupt_zarr_chunk_found_mid_run_leaves_the_old_output(tmp_path, x, capsys):
    make_input("zarr3", tmp_path / "in.zarr", x)
    chunk = tmp_path / "in.zarr" / "c" / "2" / "0" / "0"     # the third shard
    assert chunk.is_file()
    chunk.write_bytes(b"\x00" * 100)
    np.save(tmp_path / "out.npy", np.arange(3))
    before = digest(tmp_path / "out.npy")
    assert filt(tmp_path / "in.zarr", tmp_path / "out.npy", "--kernel", "box:3",
                "--chunks", "4") == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "in.zarr" in err and "nothing was written" in err
    assert digest(tmp_path / "out.npy") == before
    assert sorted(os.listdir(tmp_path)) == ["in.zarr", "out.npy"]


def test_unwritable_outputs_are_refused(tmp_path, x, capsys):
    np.save(tmp_path / "in.npy", x)
    (tmp_path / "file").write_text("")
    (tmp_path / "dir.npy").mkdir()
    (tmp_path / "notastore.zarr").mkdir()
    (tmp_path / "notastore.zarr" / "keep.txt").write_text("precious")
    cases = [(tmp_path / "missing" / "out.zarr", "does not exist"),
             (tmp_path / "file" / "out.tif", "does not exist"),
             (tmp_path / "dir.npy", "existing directory"),
             (tmp_path / "notastore.zarr", "not a Zarr store; refusing"),
             (tmp_path / "out.unknown", "cannot tell the format")]
    for out, message in cases:
        assert filt(tmp_path / "in.npy", out, "--kernel", "box:3") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (out, err)
    assert (tmp_path / "notastore.zarr" / "keep.txt").read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == ["dir.npy", "file", "in.npy", "notastore.zarr"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root may write into a read-only directory")
def test_read_only_directory_is_refused(tmp_path, x, capsys):
    np.save(tmp_path / "in.npy", x)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert filt(tmp_path / "in.npy", locked / "out.zarr", "--kernel", "box:3") == 2
        assert "no permission" in capsys.readouterr().err
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("out_name", ["out.npy", "out.tif", "out.zarr"])
def test_full_disk_is_refused_before_any_work(tmp_path, x, monkeypatch, capsys, out_name):
    np.save(tmp_path / "in.npy", x)
    monkeypatch.setattr(_volumes, "_free_bytes", lambda directory: 1000)

    def no_work(*args, **kwargs):
        raise AssertionError("the filter ran")

    monkeypatch.setattr(cli, "filter_volume", no_work)
    assert filt(tmp_path / "in.npy", tmp_path / out_name, "--kernel", "box:3") == 2
    err = capsys.readouterr().err
    assert "not enough free space" in err and "1000" not in err and "MB" in err
    assert sorted(os.listdir(tmp_path)) == ["in.npy"]


@pytest.mark.parametrize("out_name", ["out.tif", "out.zarr"])
def test_disk_full_mid_run_leaves_no_output(tmp_path, x, monkeypatch, capsys, out_name):
    import errno
    np.save(tmp_path / "in.npy", x)
    # Zarr: the write that fails runs in the writer's background thread.
    cls, method = ((_tiff_volume.TiffWriter, "write_slab") if out_name.endswith(".tif") else
                   (_zarr_volume.ZarrWriter, "_write"))
    calls = []

    def full(self, start, values):
        calls.append(start)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cls, method, full)
    assert filt(tmp_path / "in.npy", tmp_path / out_name, "--kernel", "box:3",
                "--chunks", "4") == 2
    assert "disk full" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["in.npy"]


@pytest.mark.parametrize("make, args, message", [
    ("bool", ["--kernel", "box:3"], "the input's dtype"),
    ("float32", ["--kernel", "box:3", "--dtype", "complex64"], "--dtype: the filter writes"),
    ("float32", ["--kernel", "box:3", "--dtype", "bool"], "got bool"),
    ("complex64", ["--kernel", "box:3"], "dtype complex64 is not supported"),
    ("float32", ["--kernel", "box:3", "--compressor", "zstd"], "--compressor applies to a Zarr"),
    ("float32", ["--kernel", "box:3", "--chunks", "4,4,4"], "--chunks with several numbers"),
    ("float32", ["--kernel", "box:3", "--chunks", "4,x"], "--chunks: expected"),
])
def test_option_and_dtype_refusals(tmp_path, capsys, make, args, message):
    np.save(tmp_path / "in.npy", np.zeros(SHAPE, make))
    assert filt(tmp_path / "in.npy", tmp_path / "out.npy", *args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert sorted(os.listdir(tmp_path)) == ["in.npy"]


@pytest.mark.parametrize("spec", ["lzma", "zstd:x", "blosc:snappy", "gzip:1:2"])
def test_bad_compressor_is_refused(tmp_path, x, capsys, spec):
    make_input("zarr3", tmp_path / "in.zarr", x)
    assert filt(tmp_path / "in.zarr", tmp_path / "out.zarr", "--kernel", "box:3",
                "--compressor", spec) == 2
    err = capsys.readouterr().err
    assert "--compressor: expected none, zstd[:LEVEL]" in err and repr(spec) in err
    assert sorted(os.listdir(tmp_path)) == ["in.zarr"]


def test_more_than_three_dims_is_refused(tmp_path, capsys):
    zarr.create_array(str(tmp_path / "in.zarr"), shape=(1, 2, 3, 4, 5), dtype="f4")
    assert filt(tmp_path / "in.zarr", tmp_path / "out.zarr", "--kernel", "box:3") == 2
    assert "got shape (1, 2, 3, 4, 5)" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["in.zarr"]


def test_one_dimensional_tiff_output_is_refused(tmp_path, capsys):
    np.save(tmp_path / "in.npy", np.zeros(10))
    assert filt(tmp_path / "in.npy", tmp_path / "out.tif", "--kernel", "box:3") == 2
    assert "TIFF holds images of 2 or more dims" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["in.npy"]


# -- Ctrl-C -------------------------------------------------------------------------------

@pytest.mark.parametrize("out_name", ["out.zarr", "out.tif", "out.npy"])
@pytest.mark.parametrize("scheduler", [None, "threads"])
def test_interrupt_leaves_no_output(tmp_path, x, monkeypatch, out_name, scheduler):
    make_input("zarr3", tmp_path / "in.zarr", x)
    calls = []

    def interrupting(method):
        def write(self, where, values):
            calls.append(where)
            if len(calls) > 1:
                raise KeyboardInterrupt
            method(self, where, values)
        return write

    for cls in (_zarr_volume.ZarrWriter, _tiff_volume.TiffWriter, _volumes.NpyWriter):
        monkeypatch.setattr(cls, "write_slab", interrupting(cls.write_slab))
    monkeypatch.setattr(_zarr_volume.ZarrWriter, "write_block",
                        interrupting(_zarr_volume.ZarrWriter.write_block))
    args = ["--scheduler", scheduler] if scheduler else ["--chunks", "4"]
    assert filt(tmp_path / "in.zarr", tmp_path / out_name, "--kernel", "box:3", *args) == 130
    assert len(calls) >= 2                          # a block was written, then Ctrl-C
    assert sorted(os.listdir(tmp_path)) == ["in.zarr"]


def test_sigint_to_a_running_filter_leaves_no_output(tmp_path):
    x = np.random.default_rng(4).random((192, 256, 256)).astype(np.float32)
    z = zarr.create_array(str(tmp_path / "in.zarr"), shape=x.shape, chunks=(4, 128, 128),
                          dtype=x.dtype)
    z[...] = x
    proc = subprocess.Popen([sys.executable, "-m", "fastconv", "filter", str(tmp_path / "in.zarr"),
                             str(tmp_path / "out.zarr"), "--kernel", "gaussian:sigma=2",
                             "--chunks", "4", "--progress"], cwd=TESTS_DIR,
                            stderr=subprocess.PIPE, text=True)
    try:
        seen = proc.stderr.read(len("filter ["))            # the first progress report
        assert seen == "filter [", seen
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted; no output written" in err
    assert sorted(os.listdir(tmp_path)) == ["in.zarr"]


# -- progress -----------------------------------------------------------------------------

def test_progress_bar_with_throughput_and_eta_only_when_asked(tmp_path, x):
    np.save(tmp_path / "in.npy", x)
    shown = run("filter", tmp_path / "in.npy", tmp_path / "a.zarr", "--kernel", "box:3",
                "--chunks", "4", "--progress")
    assert shown.returncode == 0, shown.stderr
    last = shown.stderr.strip().splitlines()[-1]
    assert last.startswith("filter [########################] 100% 23/23 slices, ")
    assert " MB/s, " in last and "elapsed" in last
    hidden = run("filter", tmp_path / "in.npy", tmp_path / "b.zarr", "--kernel", "box:3")
    assert hidden.returncode == 0 and hidden.stderr == ""       # stderr is not a terminal


def test_progress_reports_eta_while_running():
    lines = []

    class Stream:
        def isatty(self):
            return True

        def write(self, text):
            lines.append(text)

        def flush(self):
            pass

    progress = cli._Progress(Stream(), "filter", bytes_per_slice=1e6)
    progress.start -= 2.0                    # 2 s in, a quarter done
    progress.last -= 1.0
    progress(25, 100)
    assert lines[-1].startswith("\rfilter [######..................]  25% 25/100 slices, ")
    assert "12 MB/s" in lines[-1] and "ETA 0:06" in lines[-1]


# -- bounded memory -----------------------------------------------------------------------

_PEAK = """
import sys
from fastconv.cli import main
code = main(sys.argv[1:])
peak = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmPeak')][0]
print(peak, file=sys.stderr)
sys.exit(code)
"""


def _filter_peak(args, limit=None):
    """Run the CLI in a child (optionally under RLIMIT_AS); returns (result, VmPeak bytes)."""
    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    # One malloc arena: each extra one reserves 64 MiB of address space per
    # thread that happens to allocate, noise larger than the budget.
    env = dict(os.environ, MALLOC_ARENA_MAX="1")
    result = subprocess.run([sys.executable, "-c", _PEAK, "filter", *map(str, args)],
                            cwd=TESTS_DIR, capture_output=True, text=True, timeout=900,
                            env=env, preexec_fn=limited if limit else None)
    peak = int(result.stderr.split()[-1]) * 1024 if result.returncode == 0 else None
    return result, peak


def _bounded_memory(tmp_path, depth, budget):
    """Filter a (depth, 512, 512) float32 Zarr store with RLIMIT_AS = thin run + budget."""
    chunks = (16, 256, 256)
    rng = np.random.default_rng(5)
    for name, n in (("thin.zarr", 3 * chunks[0]), ("big.zarr", depth)):
        z = zarr.create_array(str(tmp_path / name), shape=(n, 512, 512), chunks=chunks,
                              dtype="f4", compressors=zarr.codecs.BloscCodec(cname="lz4",
                                                                             clevel=1))
        for i in range(0, n, 64):
            z[i:i + 64] = rng.random((min(64, n - i), 512, 512), dtype=np.float32)
    args = ["--kernel", "box:3", "--mode", "nearest", "--chunks", str(chunks[0]), "--quiet"]
    # The address space a run needs whatever the depth: interpreter, libraries,
    # threads, and the buffers of one slab (16 slices) and of the two cached
    # chunk layers, measured on a volume of three slabs.
    thin, base = _filter_peak([tmp_path / "thin.zarr", tmp_path / "thin_out.zarr", *args])
    assert thin.returncode == 0, thin.stderr
    size = depth * 512 * 512 * 4
    assert budget <= size / 4                        # far below the volume's size
    big, _ = _filter_peak([tmp_path / "big.zarr", tmp_path / "out.zarr", *args],
                          limit=base + budget)
    assert big.returncode == 0, big.stderr
    x = zarr.open_array(str(tmp_path / "big.zarr"), mode="r")[...]
    want = fc.ndimage.correlate(x, np.full((3, 3, 3), 1 / 27), mode="nearest")
    np.testing.assert_allclose(zarr.open_array(str(tmp_path / "out.zarr"), mode="r")[...],
                               want, atol=2e-6)


def test_a_zarr_store_larger_than_the_address_space_budget(tmp_path):
    # 256 MiB of float32 (~235 MB on disk) in the address space of a 48 MiB
    # volume's run plus 64 MiB.
    _bounded_memory(tmp_path, depth=256, budget=64 << 20)


@pytest.mark.slow
def test_a_2gb_zarr_store_under_an_address_space_budget(tmp_path, request):
    # 2 GiB in the same budget; needs ~7 GB free memory for the in-memory check.
    if "slow" not in (request.config.getoption("-m") or "") and \
            os.environ.get("FASTCONV_SLOW") != "1":
        pytest.skip("2 GiB volume: run with -m slow or FASTCONV_SLOW=1")
    _bounded_memory(tmp_path, depth=2048, budget=64 << 20)
