"""Hostile and malformed checkpoints: each raises a clear error and has no side effect.

No torch here: every file is built by hand (``checkpoint_files``) or with the
standard ``pickle`` and ``zipfile`` modules.  Payloads that would run code
try to create a marker file; each test asserts the marker does not exist,
and ``test_payloads_are_live_under_plain_pickle`` shows that the same bytes
do create it when given to ``pickle.loads``, so the tests can fail.
Memory-related refusals are checked with tracemalloc to happen before any
large allocation.
"""
import copyreg
import io
import os
import pickle
import struct
import subprocess
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest

import checkpoint_files as cf
import fastconv as fc
from checkpoint_files import Build, Call, Global


class Payload:
    """Unpickling calls ``func(*args)``: what a malicious checkpoint does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def payloads(marker):
    """(id, object whose unpickling creates ``marker``, the global it names as a regex).

    Protocols 0-2 write some globals under their Python 2 names (``__builtin__``,
    ``commands``); the error names the global as the file names it.
    """
    m = str(marker)
    return [
        ("os.system", Payload(os.system, f"touch '{m}'"), r"(posix|os)\.system"),
        ("eval", Payload(eval, f"open({m!r}, 'w').close()"), r"(builtins|__builtin__)\.eval"),
        ("exec", Payload(exec, f"open({m!r}, 'w').close()"), r"(builtins|__builtin__)\.exec"),
        ("subprocess.Popen", Payload(subprocess.Popen, ["touch", m]),
         r"(subprocess|commands)\.Popen"),
        ("open", Payload(open, m, "w"), r"(io|builtins|__builtin__)\.open"),
    ]


PAYLOAD_IDS = [p[0] for p in payloads("x")]


def pick(marker, name):
    return next(p for p in payloads(marker) if p[0] == name)


def load_zip_pickle(tmp_path, data, storages=()):
    return fc.load_state_dict(cf.write_zip(tmp_path / "m.pt", data, storages))


@pytest.mark.parametrize("name", PAYLOAD_IDS)
def test_payloads_are_live_under_plain_pickle(tmp_path, name):
    # The control: these bytes do run code when unpickled without restrictions.
    marker = tmp_path / "pwned"
    _, obj, _ = pick(marker, name)
    result = pickle.loads(pickle.dumps(obj, protocol=2))
    if isinstance(result, subprocess.Popen):
        result.wait()
    elif hasattr(result, "close"):
        result.close()
    assert marker.exists()


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("name", PAYLOAD_IDS)
def test_code_running_globals_are_refused_by_name(tmp_path, name, protocol):
    marker = tmp_path / "pwned"
    _, obj, pattern = pick(marker, name)
    with pytest.raises(fc.RefusedGlobalError, match=f"refused to load global {pattern}"):
        load_zip_pickle(tmp_path, pickle.dumps(obj, protocol=protocol))
    assert not marker.exists()


@pytest.mark.parametrize("where", ["value", "key", "tensor_offset", "hooks", "storage_type",
                                   "persistent_id", "metadata_build"])
def test_payload_hidden_inside_a_state_dict_is_refused(tmp_path, where):
    marker = tmp_path / "pwned"
    evil = Call(Global("posix", "system"), (f"touch '{marker}'",))
    pid = cf.storage_id("FloatStorage", "0", 2)
    good = cf.tensor(pid, 0, (2,), (1,))
    rebuild = Global("torch._utils", "_rebuild_tensor_v2")
    od = Call(Global("collections", "OrderedDict"), ())
    cases = {
        "value": {"w": good, "x": evil},
        "key": {"w": good, evil: good},
        "tensor_offset": {"w": Call(rebuild, (pid, evil, (2,), (1,), False, od))},
        "hooks": {"w": Call(rebuild, (pid, 0, (2,), (1,), False, evil))},
        "storage_type": {"w": cf.tensor(cf.PersistentId(("storage", evil, "0", "cpu", 2)), 0,
                                        (2,), (1,))},
        "persistent_id": {"w": Call(rebuild, (cf.PersistentId(("storage", evil)), 0, (2,),
                                              (1,), False, od))},
        "metadata_build": Build(cf.ordered_dict({"w": good}), {"_metadata": evil}),
    }
    data = cf.dumps(cases[where] if where == "metadata_build" else cf.ordered_dict(cases[where]))
    with pytest.raises(fc.RefusedGlobalError, match=r"refused to load global posix\.system"):
        load_zip_pickle(tmp_path, data, {"0": np.zeros(2, np.float32).tobytes()})
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [
    ("builtins", "getattr"), ("builtins", "__import__"), ("importlib", "import_module"),
    ("torch", "load"), ("torch.serialization", "load"), ("torch.nn.modules.conv", "Conv3d"),
    ("torch._utils", "_rebuild_device_tensor_from_numpy"), ("numpy.core.multiarray",
                                                             "_reconstruct"),
    ("collections", "OrderedDict.fromkeys"), ("torch._utils", "_rebuild_tensor_v2.__globals__"),
    ("collections", "namedtuple"), ("copyreg", "_reconstructor"), ("__main__", "Payload"),
])
def test_every_other_global_is_refused_without_importing_it(tmp_path, module, name):
    data = cf.dumps(cf.ordered_dict({"w": Global(module, name)}))
    with pytest.raises(fc.RefusedGlobalError, match=f"refused to load global "
                                                    f"{module}.{name}".replace(".", r"\.")):
        load_zip_pickle(tmp_path, data)


def test_refused_global_error_is_an_unpickling_error_and_a_value_error():
    assert issubclass(fc.RefusedGlobalError, pickle.UnpicklingError)
    assert issubclass(fc.RefusedGlobalError, fc.CheckpointError)
    assert issubclass(fc.CheckpointError, ValueError)


def test_a_numpy_pickle_is_refused_rather_than_trusted(tmp_path):
    data = pickle.dumps({"w": np.ones(3)}, protocol=2)
    with pytest.raises(fc.RefusedGlobalError, match="numpy"):
        load_zip_pickle(tmp_path, data)


def test_inst_and_obj_opcodes_go_through_the_same_check(tmp_path):
    marker = tmp_path / "pwned"
    inst = b"(S'touch " + str(marker).encode() + b"'\nios\nsystem\n."   # protocol 0 INST
    obj = b"\x80\x02cposix\nsystem\nq\x00(X\x05\x00\x00\x00touch" + b"o."  # OBJ
    for data in (inst, obj):
        with pytest.raises(fc.RefusedGlobalError, match=r"refused to load global "
                                                        r"(os|posix)\.system"):
            load_zip_pickle(tmp_path, data)
    assert not marker.exists()


def test_extension_registry_opcodes_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    copyreg.add_extension("posix", "system", 0x7FF0)
    try:
        data = pickle.dumps(Payload(os.system, f"touch '{marker}'"), protocol=2)
        assert b"\x83" in data          # EXT2 opcode
        with pytest.raises(fc.RefusedGlobalError, match="refused pickle opcode EXT2"):
            load_zip_pickle(tmp_path, data)
    finally:
        copyreg.remove_extension("posix", "system", 0x7FF0)
    assert not marker.exists()


def test_stand_ins_cannot_be_rewritten_by_build(tmp_path):
    pid = cf.storage_id("FloatStorage", "0", 2)
    tampered = Build(cf.tensor(pid, 0, (2,), (1,)), {"shape": (10**6,)})
    data = cf.dumps(cf.ordered_dict({"w": tampered}))
    with pytest.raises(fc.CheckpointError, match="refused to set the state of a TensorRecord"):
        load_zip_pickle(tmp_path, data, {"0": bytes(8)})


@pytest.mark.parametrize("payload", [
    "not-a-tuple", ("storage",), ("module", Global("torch", "FloatStorage"), "0", "cpu", 2),
    ("storage", "FloatStorage", "0", "cpu", 2), ("storage", Global("torch", "FloatStorage"),
                                                 0, "cpu", 2),
    ("storage", Global("torch", "FloatStorage"), "0", "cpu", -1),
    ("storage", Global("torch", "FloatStorage"), "0", "cpu", 2.0),
])
def test_malformed_persistent_ids_are_refused(tmp_path, payload):
    pid = cf.PersistentId(payload if isinstance(payload, tuple) else (payload,))
    data = cf.dumps(cf.ordered_dict({"w": cf.tensor(pid, 0, (2,), (1,))}))
    with pytest.raises(fc.CheckpointError, match="persistent id|storage type|storage key|"
                                                 "storage size"):
        load_zip_pickle(tmp_path, data, {"0": bytes(8)})


@pytest.mark.parametrize("storage_type", ["QInt8Storage", "ComplexHalfStorage"])
def test_unsupported_storage_types_are_named(tmp_path, storage_type):
    pid = cf.storage_id(storage_type, "0", 2)
    data = cf.dumps(cf.ordered_dict({"w": cf.tensor(pid, 0, (2,), (1,))}))
    with pytest.raises(fc.CheckpointError, match=f"unsupported torch type torch.{storage_type}"):
        load_zip_pickle(tmp_path, data, {"0": bytes(8)})


# -- what the file holds ------------------------------------------------------------------


@pytest.mark.parametrize("top, message", [
    ({"epoch": 3}, "expected a tensor under 'epoch', got int"),
    ([1, 2], "holds a list, expected a state dict"),
    ({3: None}, "expected string keys in the state dict, got 3"),
])
def test_non_tensor_contents_are_refused_with_the_key(tmp_path, top, message):
    with pytest.raises(fc.CheckpointError, match=message):
        load_zip_pickle(tmp_path, cf.dumps(top))


def test_a_single_tensor_is_not_a_state_dict(tmp_path):
    pid = cf.storage_id("FloatStorage", "0", 2)
    with pytest.raises(fc.CheckpointError, match="holds a single tensor, not a state dict"):
        load_zip_pickle(tmp_path, cf.dumps(cf.tensor(pid, 0, (2,), (1,))), {"0": bytes(8)})


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"hello, this is text", "not a torch.save or safetensors file"),
    (pickle.dumps(12345, protocol=2), "without torch.save's magic number"),
])
def test_files_that_are_not_checkpoints(tmp_path, content, message):
    path = tmp_path / "m.pt"
    path.write_bytes(content)
    with pytest.raises(fc.CheckpointError, match=message):
        fc.load_state_dict(path)


def test_zip_without_data_pkl_or_torchscript_archive(tmp_path):
    path = tmp_path / "ts.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ts/constants.pkl", b"")
        zf.writestr("ts/code/__torch__.py", b"")
    with pytest.raises(fc.CheckpointError, match="found 0.*TorchScript"):
        fc.load_state_dict(path)


def test_duplicate_zip_entries_are_refused(tmp_path):
    path = tmp_path / "dup.pt"
    with zipfile.ZipFile(path, "w") as zf, pytest.warns(UserWarning, match="Duplicate"):
        zf.writestr("archive/data.pkl", cf.dumps({}))
        zf.writestr("archive/data.pkl", cf.dumps({}))
    with pytest.raises(fc.CheckpointError, match="two entries named 'archive/data.pkl'"):
        fc.load_state_dict(path)


# -- sizes: storages, shapes, zip bombs, truncation ---------------------------------------


def float_file(tmp_path, shape, stride, numel, offset=0, raw=None, name="m.pt"):
    """A checkpoint with one float32 tensor of the given geometry on one storage."""
    pid = cf.storage_id("FloatStorage", "0", numel)
    data = cf.dumps(cf.ordered_dict({"w": cf.tensor(pid, offset, shape, stride)}))
    raw = np.arange(numel, dtype="<f4").tobytes() if raw is None else raw
    return cf.write_zip(tmp_path / name, data, {"0": raw})


def peak_bytes_of(fn):
    """Peak traced allocation (bytes) while ``fn`` runs; NumPy reports its buffers."""
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_storage_shorter_than_its_tensor_is_refused(tmp_path):
    path = float_file(tmp_path, (10,), (1,), numel=4)
    with pytest.raises(fc.CheckpointError, match=r"tensor 'w' of shape \(10,\), stride \(1,\) "
                                                 r"and storage offset 0 needs 10 float32 "
                                                 r"elements, but its storage '0' holds only 4"):
        fc.load_state_dict(path)
    # Offsets and strides count too.
    with pytest.raises(fc.CheckpointError, match="needs 7 float32 elements"):
        fc.load_state_dict(float_file(tmp_path, (2,), (3,), numel=4, offset=3, name="o.pt"))


def test_storage_record_shorter_than_declared_is_refused(tmp_path):
    path = float_file(tmp_path, (4,), (1,), numel=4, raw=bytes(12))
    with pytest.raises(fc.CheckpointError, match="storage '0' declares 16 bytes, but its "
                                                 "record holds 12"):
        fc.load_state_dict(path)


@pytest.mark.parametrize("shape, stride, message", [
    ((2**40, 2**40), (2**40, 1), "needs 1208925819614629174706176 float32 elements"),
    ((-1, 4), (4, 1), "invalid shape"),
    ((4,), (-1,), "invalid shape"),
    ((2**60, 0), (1, 1), "invalid shape"),
    ((1,) * 40, (1,) * 40, "40 dimensions, at most 32"),
    ((2, 2), (10**5000, 1), "stride <a tuple too large to show>"),
    ((2,), (1,), r"storage offset 1000+\.\.\. needs 1000+\.\.\. float32 elements"),
])
def test_absurd_shapes_are_refused_before_allocating(tmp_path, shape, stride, message):
    offset = 10**100 if "needs 1000" in message else 0
    path = float_file(tmp_path, shape, stride, numel=4, offset=offset)
    with pytest.raises(fc.CheckpointError, match=message):
        fc.load_state_dict(path)


def test_huge_broadcast_views_are_refused_before_allocating(tmp_path):
    # Zero strides make 10**12 elements out of one: within the storage, far beyond memory.
    path = float_file(tmp_path, (10**6, 10**6), (0, 0), numel=1)
    with pytest.raises(fc.CheckpointError, match=r"would take 4000000000000 bytes, more than "
                                                 r"max_bytes"):
        fc.load_state_dict(path)
    peak = peak_bytes_of(lambda: pytest.raises(fc.CheckpointError, fc.load_state_dict, path))
    assert peak < 1 << 20
    # Many views of one storage add up the same way.
    pid = cf.storage_id("FloatStorage", "0", 2**18)
    view = cf.tensor(pid, 0, (2**18,), (1,))
    data = cf.dumps(cf.ordered_dict({f"w{i}": view for i in range(200)}))
    path = cf.write_zip(tmp_path / "many.pt", data, {"0": bytes(2**20)})
    with pytest.raises(fc.CheckpointError, match="would take 209715200 bytes"):
        fc.load_state_dict(path)


def test_size_one_dimensions_with_huge_strides_still_load(tmp_path):
    # torch gives size-1 dimensions arbitrary strides; they address nothing.
    path = float_file(tmp_path, (1, 3), (2**62, 1), numel=3)
    np.testing.assert_array_equal(fc.load_state_dict(path)["w"], [[0, 1, 2]])


def test_compressed_entry_is_refused_without_inflating(tmp_path):
    # 64 MiB of zeros deflate to ~64 KiB: the classic zip bomb shape.
    numel = 16 << 20
    pid = cf.storage_id("FloatStorage", "0", numel)
    data = cf.dumps(cf.ordered_dict({"w": cf.tensor(pid, 0, (numel,), (1,))}))
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data)
        zf.writestr("archive/data/0", bytes(4 * numel), compress_type=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(fc.CheckpointError, match="is compressed .method 8.*zip bombs"):
        fc.load_state_dict(path)
    peak = peak_bytes_of(lambda: pytest.raises(fc.CheckpointError, fc.load_state_dict, path))
    assert peak < 4 << 20
    # A compressed data.pkl is refused the same way.
    with zipfile.ZipFile(tmp_path / "pkl.pt", "w") as zf:
        zf.writestr("archive/data.pkl", cf.dumps({}), compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(fc.CheckpointError, match="data.pkl' is compressed"):
        fc.load_state_dict(tmp_path / "pkl.pt")


def patch_sizes(path, entry, size):
    """Make the zip's headers claim ``size`` bytes for ``entry`` (data unchanged)."""
    raw = bytearray(path.read_bytes())
    name = entry.encode()
    for signature, size_at in ((b"PK\x03\x04", 18), (b"PK\x01\x02", 20)):
        start = 0
        while (start := raw.find(signature, start)) >= 0:
            name_at = start + (30 if signature == b"PK\x03\x04" else 46)
            if raw[name_at:name_at + len(name)] == name:
                raw[start + size_at:start + size_at + 8] = struct.pack("<II", size, size)
            start += 4
    path.write_bytes(bytes(raw))


def test_declared_huge_entry_is_refused_without_reading(tmp_path):
    numel = 0x3FFFFFF0                          # claims ~4 GiB of float32
    pid = cf.storage_id("FloatStorage", "0", numel)
    data = cf.dumps(cf.ordered_dict({"w": cf.tensor(pid, 0, (numel,), (1,))}))
    path = cf.write_zip(tmp_path / "huge.pt", data, {"0": bytes(16)})
    patch_sizes(path, "archive/data/0", 4 * numel)
    with pytest.raises(fc.CheckpointError, match="extends past the end of the .*-byte file"):
        fc.load_state_dict(path)
    peak = peak_bytes_of(lambda: pytest.raises(fc.CheckpointError, fc.load_state_dict, path))
    assert peak < 1 << 20


def sample_file(tmp_path, legacy):
    rng = np.random.default_rng(0)
    arrays = {"a": rng.standard_normal((64, 64)).astype(np.float32),
              "b": rng.standard_normal(100).astype(np.float64)}
    name = "legacy.pt" if legacy else "zip.pt"
    return cf.state_dict_file(tmp_path / name, arrays, legacy=legacy), arrays


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_truncated_files_give_a_clear_error(tmp_path, fmt):
    path, arrays = sample_file(tmp_path, fmt == "legacy")
    full = path.read_bytes()
    np.testing.assert_array_equal(fc.load_state_dict(path)["a"], arrays["a"])
    cut_path = tmp_path / "cut.pt"
    for cut in sorted({1, 2, 10, 30, 100, 200, len(full) // 3, len(full) // 2,
                       len(full) - 200, len(full) - 22, len(full) - 1}):
        cut_path.write_bytes(full[:cut])
        with pytest.raises(fc.CheckpointError, match="truncated|corrupt|not a torch.save"):
            fc.load_state_dict(cut_path)


def test_corrupted_storage_bytes_fail_the_crc_check(tmp_path):
    path, _ = sample_file(tmp_path, legacy=False)
    raw = bytearray(path.read_bytes())
    at = raw.find(b"archive/data/0") + 100          # inside the first storage's bytes
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(fc.CheckpointError, match="zip entry 'archive/data/0' fails its CRC-32 "
                                                 "check"):
        fc.load_state_dict(path)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_storage_declaring_an_absurd_size_is_refused(tmp_path, fmt):
    pid = cf.storage_id("FloatStorage", "0", 10**5000, legacy=fmt == "legacy")
    data = cf.dumps(cf.ordered_dict({"w": cf.tensor(pid, 0, (2,), (1,))}))
    if fmt == "zip":
        path = cf.write_zip(tmp_path / "m.pt", data, {"0": bytes(8)})
        message = "storage '0' declares <a int too large to show> bytes"
    else:
        path = cf.write_legacy(tmp_path / "m.pt", data, [("0", 2, bytes(8))])
        message = "should start with its size, <a int too large to show> elements"
    with pytest.raises(fc.CheckpointError, match=message):
        fc.load_state_dict(path)


def test_legacy_stream_with_mismatched_storage_list_or_sizes(tmp_path):
    pid = cf.storage_id("FloatStorage", "0", 2, legacy=True)
    data = cf.dumps(cf.ordered_dict({"w": cf.tensor(pid, 0, (2,), (1,))}))
    cf.write_legacy(tmp_path / "keys.pt", data, [("1", 2, bytes(8))])
    with pytest.raises(fc.CheckpointError, match="list of stored storages"):
        fc.load_state_dict(tmp_path / "keys.pt")
    cf.write_legacy(tmp_path / "size.pt", data, [("0", 3, bytes(12))])
    with pytest.raises(fc.CheckpointError, match="should start with its size, 2 elements"):
        fc.load_state_dict(tmp_path / "size.pt")


@pytest.mark.parametrize("name", PAYLOAD_IDS)
def test_legacy_stream_refuses_payloads_in_every_pickle(tmp_path, name):
    marker = tmp_path / "pwned"
    _, obj, pattern = pick(marker, name)
    evil = pickle.dumps(obj, protocol=2)
    good = cf.dumps(cf.ordered_dict({}))
    for i, kwargs in enumerate([dict(header=evil), dict(data_pkl=evil)]):
        path = tmp_path / f"l{i}.pt"
        cf.write_legacy(path, kwargs.get("data_pkl", good), header=kwargs.get("header"))
        with pytest.raises(fc.RefusedGlobalError, match=f"refused to load global {pattern}"):
            fc.load_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_deeply_nested_pickle_is_refused_before_it_can_crash(tmp_path, fmt):
    # A dict key nested 10**6 tuples deep: plain pickle.loads hashes it and overflows
    # the C stack (a segfault).  Run in a subprocess, so that a regression fails this
    # test instead of killing the test run.
    data = b"\x80\x02}N" + b"\x85" * 10**6 + b"K\x01s."
    path = tmp_path / "deep.pt"
    if fmt == "zip":
        cf.write_zip(path, data)
    else:
        cf.write_legacy(path, data)
    code = ("import fastconv as fc, sys\n"
            "try:\n"
            f"    fc.load_state_dict({str(path)!r})\n"
            "except fc.CheckpointError as exc:\n"
            "    print(exc)\n")
    # cwd: not the source tree, whose unbuilt fastconv/ would shadow the installed one
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "objects nested more than 100 levels deep: refused" in result.stdout


def test_nesting_of_real_state_dicts_is_far_below_the_limit(tmp_path):
    inner = {f"k{i}": cf.tensor(cf.storage_id("FloatStorage", "0", 1), 0, (1,), (1,))
             for i in range(3)}
    data = cf.dumps(Build(cf.ordered_dict(inner), {"_metadata": {"": {"version": 1}}}))
    out = load_zip_pickle(tmp_path, data, {"0": np.float32([7]).tobytes()})
    assert [float(v[0]) for v in out.values()] == [7.0, 7.0, 7.0]


def test_pickle_declaring_a_huge_string_is_refused_cheaply(tmp_path):
    # BINUNICODE8 claiming 2**40 bytes: the reader never asks for more than the file has.
    data = b"\x80\x04\x8d" + struct.pack("<Q", 2**40) + b"abc"
    peak = peak_bytes_of(lambda: pytest.raises(fc.CheckpointError, load_zip_pickle,
                                               tmp_path, data))
    assert peak < 1 << 20
    legacy = tmp_path / "l.pt"
    cf.write_legacy(legacy, data)
    with pytest.raises(fc.CheckpointError, match="truncated or not a valid pickle"):
        fc.load_state_dict(legacy)
    with pytest.raises(fc.CheckpointError, match="truncated or not a valid pickle"):
        fc.load_state_dict(io.BytesIO(legacy.read_bytes()))
