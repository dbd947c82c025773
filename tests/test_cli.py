"""The ``fastconv`` command line: exit codes, messages, results equal to the library."""
import errno
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage as sndi

import fastconv as fc
from fastconv import cli

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
MODES = ["reflect", "mirror", "nearest", "wrap", "constant"]


@pytest.fixture
def volume(tmp_path):
    x = np.random.default_rng(0).random((23, 17, 19)).astype(np.float32)
    path = tmp_path / "in.npy"
    np.save(path, x)
    return x, path


def run(*args):
    return subprocess.run([sys.executable, "-m", "fastconv", *map(str, args)], cwd=TESTS_DIR,
                          capture_output=True, text=True, timeout=300)


def test_info_prints_the_configuration():
    result = run("info")
    assert result.returncode == 0
    assert "openmp" in result.stdout and fc.__version__ in result.stdout


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("spec", ["gaussian:sigma=1.2", "box:4"])
def test_filter_equals_the_library_call_and_scipy(volume, tmp_path, mode, spec):
    x, path = volume
    out = tmp_path / "out.npy"
    assert cli.main(["filter", str(path), str(out), "--kernel", spec, "--mode", mode,
                     "--chunks", "5", "--quiet"]) == 0
    kernel = cli.parse_kernel(spec, 3)
    got = np.load(out)
    np.testing.assert_allclose(got, fc.ndimage.correlate(x, kernel, mode=mode), atol=2e-6)
    np.testing.assert_allclose(got, sndi.correlate(x, kernel, mode=mode), atol=2e-6)


def test_filter_with_a_kernel_file_dtype_and_subprocess(volume, tmp_path):
    x, path = volume
    kernel = np.random.default_rng(1).random((3, 5, 2))
    np.save(tmp_path / "k.npy", kernel)
    out = tmp_path / "out.npy"
    result = run("filter", path, out, "--kernel", tmp_path / "k.npy", "--dtype", "float64")
    assert result.returncode == 0, result.stderr
    got = np.load(out)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, sndi.correlate(x.astype(np.float64), kernel), atol=1e-10)


def test_gaussian_kernel_matches_scipy_gaussian_filter(volume, tmp_path):
    x, path = volume
    out = tmp_path / "out.npy"
    assert cli.main(["filter", str(path), str(out), "--kernel", "gaussian:sigma=2",
                     "--quiet"]) == 0
    np.testing.assert_allclose(np.load(out), sndi.gaussian_filter(x, 2.0), atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["filter", "{missing}", "{out}", "--kernel", "box:3"], "input file not found"),
    (["filter", "{input}", "{out}", "--kernel", "blob:3"], "bad kernel spec 'blob:3'"),
    (["filter", "{input}", "{out}", "--kernel", "gaussian:sigma=-1"], "S > 0"),
    (["filter", "{input}", "{out}", "--kernel", "box:x"], "expected box:N"),
    (["filter", "{input}", "{out}", "--kernel", "box:3", "--mode", "bogus"], "unknown mode"),
    (["filter", "{input}", "{out}", "--kernel", "box:3", "--chunks", "0"], "--chunks"),
    (["filter", "{input}", "{out}", "--kernel", "box:3", "--dtype", "nope"], "--dtype"),
])
def test_bad_arguments_exit_2_with_a_message_and_write_nothing(volume, tmp_path, args, message):
    _, path = volume
    out = tmp_path / "out.npy"
    names = {"missing": tmp_path / "missing.npy", "input": path, "out": out}
    result = run(*[a.format(**names) for a in args])
    assert result.returncode == 2
    assert message in result.stderr
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["in.npy"]


def test_not_an_npy_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not a numpy file")
    result = run("filter", bad, tmp_path / "out.npy", "--kernel", "box:3")
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_interrupted_write_leaves_no_output(volume, tmp_path, monkeypatch):
    _, path = volume
    out = tmp_path / "out.npy"

    def interrupted(src, dst, *args, **kwargs):
        dst[slice(0, 1)] = np.zeros((1,) + tuple(src.shape[1:]))
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "filter_volume", interrupted)
    assert cli.main(["filter", str(path), str(out), "--kernel", "box:3", "--quiet"]) == 130
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["in.npy"]       # no temporary left behind


def test_full_disk_is_reported_and_leaves_no_output(volume, tmp_path, monkeypatch, capsys):
    _, path = volume
    out = tmp_path / "out.npy"

    def full(self, rows, values):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli.NpyWriter, "__setitem__", full)
    assert cli.main(["filter", str(path), str(out), "--kernel", "box:3", "--quiet"]) == 2
    assert "disk full" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["in.npy"]


def test_output_file_gets_normal_permissions(volume, tmp_path):
    _, path = volume
    out = tmp_path / "out.npy"
    assert cli.main(["filter", str(path), str(out), "--kernel", "box:3", "--quiet"]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert (os.stat(out).st_mode & 0o777) == (0o666 & ~umask)


def test_bench_lists_its_workloads():
    result = run("bench", "--list")
    assert result.returncode == 0
    assert "conv2d ResNet 3x3" in result.stdout and "volume 128^3" in result.stdout


def test_bench_times_a_row_and_names_the_kernel_and_isa():
    from fastconv import _kernels
    result = run("bench", "--filter", "tiny", "--rounds", "1", "--no-torch")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"kernels {_kernels.SIMD}" in lines[0]
    row = [line for line in lines if line.startswith("tiny")]
    assert len(row) == 1 and fc.explain("conv2d", (1, 3, 8, 8), (8, 3, 3, 3),
                                        padding=1).implementation in row[0]
