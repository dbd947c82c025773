"""fastconv.load_state_dict reads what torch.save writes (SPEC §7).

The reference is torch itself where it is installed: files are written by
``torch.save`` and every array is compared with the tensor that was saved
(bfloat16 through ``tensor.float()``).  Each test runs on both formats: the
zip archive and the legacy stream (``_use_new_zipfile_serialization=False``).
Tests that need no torch use files built by ``checkpoint_files``.  Malformed
and hostile files are in ``test_checkpoint_hostile.py``.
"""
import io
import os
import pathlib
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import checkpoint_files as cf
import fastconv as fc

FORMATS = ["zip", "legacy"]
NUMPY_DTYPES = [np.float16, np.float32, np.float64, np.complex64, np.complex128, np.int8,
                np.int16, np.int32, np.int64, np.uint8, np.bool_]


def torch_save(torch, obj, path, fmt):
    torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zip"))
    return path


def expected_array(torch, t):
    """What load_state_dict must return for tensor ``t``: torch's own values."""
    return (t.float() if t.dtype == torch.bfloat16 else t).detach().numpy()


def assert_same(arrays, tensors, torch):
    assert list(arrays) == list(tensors)
    for key, t in tensors.items():
        expected = expected_array(torch, t)
        got = arrays[key]
        assert got.dtype == expected.dtype, key
        assert got.shape == expected.shape, key
        np.testing.assert_array_equal(got, expected, err_msg=key)
        assert got.flags.c_contiguous and got.flags.writeable, key


def sample_values(torch, dtype, shape=(3, 4), seed=0):
    """Distinct values of a torch dtype, including negative, fractional, large and special."""
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_complex:
        return torch.randn(shape, dtype=dtype, generator=g) * 100
    if dtype.is_floating_point:
        t = (torch.randn(shape, generator=g) * 100).to(dtype)
        if t.numel() >= 3:
            t.view(-1)[:3] = torch.tensor([float("inf"), float("-inf"), float("nan")]).to(dtype)
        return t
    info = torch.iinfo(dtype)
    values = torch.randint(-100 if info.min < 0 else 0, 100, shape, generator=g)
    t = values.to(dtype)
    if t.numel() >= 2:
        t.view(-1)[:2] = torch.tensor([info.min, info.max], dtype=dtype)
    return t


TORCH_DTYPES = ["float16", "bfloat16", "float32", "float64", "complex64", "complex128",
                "int8", "int16", "int32", "int64", "uint8", "bool", "uint16", "uint32",
                "uint64"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", TORCH_DTYPES)
def test_every_dtype_matches_what_torch_saved(tmp_path, torch, name, fmt):
    dtype = getattr(torch, name)
    tensors = {"t": sample_values(torch, dtype), "scalar": sample_values(torch, dtype, ())}
    arrays = fc.load_state_dict(torch_save(torch, tensors, tmp_path / "m.pt", fmt))
    assert_same(arrays, tensors, torch)
    if name == "bfloat16":      # widened exactly: every bfloat16 is a float32
        assert arrays["t"].dtype == np.float32


@pytest.mark.parametrize("fmt", FORMATS)
def test_views_strides_offsets_and_shared_storages(tmp_path, torch, fmt):
    base = torch.arange(120, dtype=torch.float32).reshape(4, 5, 6)
    tensors = {
        "base": base,
        "transposed": base.transpose(0, 2),
        "permuted": base.permute(1, 2, 0),
        "sliced": base[1:3, ::2, 1::3],
        "offset_row": base[2, 3],
        "one_element": base[3, 4, 5],
        "expanded": torch.arange(3.0).expand(4, 3),
        "empty": base[:, :0],
        "reversed_then_contiguous": base.flip(0).contiguous(),
        "double_view": torch.arange(10, dtype=torch.float64)[2:8].view(2, 3).t(),
    }
    arrays = fc.load_state_dict(torch_save(torch, tensors, tmp_path / "m.pt", fmt))
    assert_same(arrays, tensors, torch)
    # Tensors that shared a storage come back as independent arrays.
    arrays["base"][...] = -1
    np.testing.assert_array_equal(arrays["transposed"], tensors["transposed"].numpy())
    for a in arrays.values():
        for b in arrays.values():
            assert a is b or not np.shares_memory(a, b)


@pytest.mark.parametrize("fmt", FORMATS)
def test_model_state_dict_and_parameters(tmp_path, torch, fmt):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3), torch.nn.BatchNorm3d(4),
                                torch.nn.ConvTranspose2d(4, 2, 2, bias=False))
    state = model.state_dict()
    arrays = fc.load_state_dict(torch_save(torch, state, tmp_path / "m.pt", fmt))
    assert_same(arrays, state, torch)
    assert arrays["1.num_batches_tracked"].dtype == np.int64
    # A dict of nn.Parameter objects (not detached) is pickled with _rebuild_parameter.
    params = {"w": model[0].weight, "b": model[0].bias}
    arrays = fc.load_state_dict(torch_save(torch, params, tmp_path / "p.pt", fmt))
    assert_same(arrays, params, torch)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_pickled_module_is_refused_by_its_class_name(tmp_path, torch, fmt):
    # torch.save(model) pickles the classes themselves: loading it would import them.
    path = torch_save(torch, torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3)), tmp_path / "m.pt",
                      fmt)
    with pytest.raises(fc.RefusedGlobalError, match=r"refused to load global "
                                                    r"torch\.nn\.modules\.container\.Sequential"):
        fc.load_state_dict(path)


def swap_to_big_endian(path, out, itemsize):
    """Rewrite a little-endian torch zip archive as a big-endian one, as a big-endian
    machine would write it: the byteorder record says 'big', each element is swapped."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in info.filename:
                data = np.frombuffer(data, f"u{itemsize}").byteswap().tobytes()
            dst.writestr(info.filename, data)
    return out


@pytest.mark.parametrize("name", ["float16", "bfloat16", "float32", "float64", "complex64",
                                  "complex128", "int16", "int32", "int64", "uint8", "bool"])
def test_big_endian_archive_is_swapped_as_its_byteorder_record_says(tmp_path, torch, name):
    dtype = getattr(torch, name)
    t = sample_values(torch, dtype, (5, 3))
    tensors = {"t": t, "view": t.t()[1:]}
    little = torch_save(torch, tensors, tmp_path / "little.pt", "zip")
    itemsize = t.element_size() // 2 if t.is_complex() else t.element_size()
    big = swap_to_big_endian(little, tmp_path / "big.pt", itemsize)
    if itemsize > 1:   # the rewrite really changed the bytes
        assert zipfile.ZipFile(big).read("little/data/0") != zipfile.ZipFile(little).read(
            "little/data/0")
    assert_same(fc.load_state_dict(big), tensors, torch)
    assert_same(fc.load_state_dict(big), torch.load(big), torch)    # torch agrees


def test_files_from_paths_pathlib_bytes_and_file_objects(tmp_path):
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    path = cf.state_dict_file(tmp_path / "m.pt", arrays)
    data = path.read_bytes()
    for source in (str(path), pathlib.Path(path), os.fsencode(path), io.BytesIO(data)):
        np.testing.assert_array_equal(fc.load_state_dict(source)["w"], arrays["w"])
    with open(path, "rb") as f:
        f.read(5)           # a file object is read from its start, wherever it stands
        np.testing.assert_array_equal(fc.load_state_dict(f)["w"], arrays["w"])
        assert not f.closed
    with open(path, "r") as text, pytest.raises(TypeError, match="binary file object"):
        fc.load_state_dict(text)
    with pytest.raises(TypeError, match="expected path to be a str, os.PathLike or a binary "
                                        "file object, got int"):
        fc.load_state_dict(3)
    with pytest.raises(FileNotFoundError):
        fc.load_state_dict(tmp_path / "missing.pt")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", NUMPY_DTYPES, ids=lambda d: np.dtype(d).name)
def test_hand_built_files_without_torch(tmp_path, fmt, dtype):
    rng = np.random.default_rng(0)
    arrays = {"a": (rng.standard_normal((2, 3, 4)) * 50).astype(dtype),
              "b": (rng.standard_normal(5) * 50).astype(dtype)}
    out = fc.load_state_dict(cf.state_dict_file(tmp_path / "m.pt", arrays,
                                                legacy=fmt == "legacy"))
    for key, value in arrays.items():
        assert out[key].dtype == value.dtype
        np.testing.assert_array_equal(out[key], value)


def test_archive_without_byteorder_record_is_little_endian(tmp_path):
    arrays = {"w": np.array([1.5, -2.0, 3.25], np.float32)}
    path = cf.state_dict_file(tmp_path / "m.pt", arrays)
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp_path / "old.pt", "w") as dst:
        for info in src.infolist():
            if not info.filename.endswith("/byteorder"):
                dst.writestr(info.filename, src.read(info))
    np.testing.assert_array_equal(fc.load_state_dict(tmp_path / "old.pt")["w"], arrays["w"])


def test_archive_written_without_crc32_loads_as_torch_loads_it(tmp_path, torch):
    # torch.serialization.set_crc32_options(False) writes 0 for every CRC.
    torch.serialization.set_crc32_options(False)
    try:
        tensors = {"w": torch.arange(5.0)}
        path = torch_save(torch, tensors, tmp_path / "m.pt", "zip")
    finally:
        torch.serialization.set_crc32_options(True)
    assert all(info.CRC == 0 for info in zipfile.ZipFile(path).infolist())
    assert_same(fc.load_state_dict(path), tensors, torch)


def test_storage_saved_from_a_gpu_loads_on_the_cpu(tmp_path):
    # The location field ('cuda:0') only tells torch where to put the storage.
    pid = cf.storage_id("FloatStorage", "0", 2, location="cuda:0")
    data = cf.dumps(cf.ordered_dict({"w": cf.tensor(pid, 0, (2,), (1,))}))
    path = cf.write_zip(tmp_path / "m.pt", data, {"0": np.float32([4, 5]).tobytes()})
    np.testing.assert_array_equal(fc.load_state_dict(path)["w"], [4, 5])


def test_max_bytes_bounds_the_result_and_is_validated(tmp_path):
    arrays = {"w": np.zeros(1000, np.float32)}
    path = cf.state_dict_file(tmp_path / "m.pt", arrays)
    assert fc.load_state_dict(path, max_bytes=4000)["w"].nbytes == 4000
    with pytest.raises(fc.CheckpointError, match="would take 4000 bytes, more than "
                                                 "max_bytes=3999"):
        fc.load_state_dict(path, max_bytes=3999)
    with pytest.raises(ValueError, match="expected max_bytes >= 0, got -1"):
        fc.load_state_dict(path, max_bytes=-1)
    with pytest.raises(TypeError, match="expected max_bytes to be None or an int, got float"):
        fc.load_state_dict(path, max_bytes=1e9)


def test_loading_imports_no_torch(tmp_path):
    zip_path = cf.state_dict_file(tmp_path / "z.pt", {"w": np.ones(3, np.float32)})
    legacy_path = cf.state_dict_file(tmp_path / "l.pt", {"w": np.ones(3, np.float32)},
                                     legacy=True)
    code = ("import sys; sys.modules['torch'] = None\n"       # `import torch` now fails
            "import fastconv as fc\n"
            f"for p in ({str(zip_path)!r}, {str(legacy_path)!r}):\n"
            "    assert fc.load_state_dict(p)['w'].tolist() == [1.0, 1.0, 1.0]\n"
            "assert not [m for m in sys.modules if m.startswith('torch.')]\n"
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# -- safetensors --------------------------------------------------------------------------


def test_safetensors_file_reads_through_the_safetensors_package(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(0)
    arrays = {"conv.weight": rng.standard_normal((4, 2, 3, 3, 3)).astype(np.float32),
              "conv.bias": rng.standard_normal(4).astype(np.float16),
              "steps": np.arange(3, dtype=np.int64)}
    path = tmp_path / "model.safetensors"
    safetensors_numpy.save_file(arrays, str(path))
    for source in (path, io.BytesIO(path.read_bytes())):
        out = fc.load_state_dict(source)
        assert set(out) == set(arrays)
        for key, value in arrays.items():
            assert out[key].dtype == value.dtype
            np.testing.assert_array_equal(out[key], value)
    layer = fc.Conv3d(2, 4, 3)
    layer.load_state_dict(out, prefix="conv.", strict=False)
    np.testing.assert_array_equal(layer.weight, arrays["conv.weight"])


def safetensors_bytes(dtype_code, shape, raw):
    header = ('{"t":{"dtype":"%s","shape":%s,"data_offsets":[0,%d]}}'
              % (dtype_code, list(shape), len(raw))).encode()
    return len(header).to_bytes(8, "little") + header + raw


def test_safetensors_bfloat16_limit_is_stated(tmp_path):
    pytest.importorskip("safetensors.numpy")
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(safetensors_bytes("BF16", [2], b"\x80\x3f\x00\x40"))
    with pytest.raises(fc.CheckpointError, match="NumPy API cannot read bfloat16"):
        fc.load_state_dict(path)


def test_safetensors_without_the_package_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    path.write_bytes(safetensors_bytes("F32", [1], b"\x00\x00\x80\x3f"))
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match=r'pip install "fastconv\[safetensors\]"'):
        fc.load_state_dict(path)
