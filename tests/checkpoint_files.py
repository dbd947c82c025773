"""``torch.save``-format files built by hand, without torch, for the checkpoint tests.

The hostile-file tests need pickles that name torch's functions (or worse)
without importing anything, so this module writes pickle opcodes itself from
a tiny object language:

* ``Global(module, name)``   -> GLOBAL (pushes ``module.name``)
* ``Call(func, args)``       -> func, args tuple, REDUCE (calls it)
* ``PersistentId(tuple)``    -> the tuple, BINPERSID
* ``Build(obj, state)``      -> obj, state, BUILD (``__setstate__``)
* None, bool, int, float, str, bytes, tuple, list, dict -> their usual opcodes

:func:`write_zip` and :func:`write_legacy` lay out the two ``torch.save``
formats around such a pickle; :func:`state_dict_file` writes NumPy arrays as
a well-formed checkpoint, one storage per array.
"""
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# NumPy dtype -> torch storage class that torch.save names for it.
STORAGE_TYPES = {
    np.dtype(np.float16): "HalfStorage", np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage", np.dtype(np.complex64): "ComplexFloatStorage",
    np.dtype(np.complex128): "ComplexDoubleStorage", np.dtype(np.int8): "CharStorage",
    np.dtype(np.int16): "ShortStorage", np.dtype(np.int32): "IntStorage",
    np.dtype(np.int64): "LongStorage", np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage",
}


class Global:
    def __init__(self, module, name):
        self.module, self.name = module, name


class Call:
    def __init__(self, func, args):
        self.func, self.args = func, tuple(args)


class PersistentId:
    def __init__(self, pid):
        self.pid = tuple(pid)


class Build:
    def __init__(self, obj, state):
        self.obj, self.state = obj, state


def _emit(obj, out):
    if obj is None:
        out += b"N"
    elif obj is True or obj is False:
        out += b"\x88" if obj else b"\x89"
    elif isinstance(obj, int):
        raw = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
        if len(raw) < 256:
            out += b"\x8a" + bytes([len(raw)]) + raw                   # LONG1
        else:
            out += b"\x8b" + struct.pack("<I", len(raw)) + raw         # LONG4
    elif isinstance(obj, float):
        out += b"G" + struct.pack(">d", obj)                            # BINFLOAT
    elif isinstance(obj, str):
        raw = obj.encode()
        out += b"X" + struct.pack("<I", len(raw)) + raw                 # BINUNICODE
    elif isinstance(obj, bytes):
        out += b"B" + struct.pack("<I", len(obj)) + obj                 # BINBYTES
    elif isinstance(obj, tuple):
        out += b"("
        for item in obj:
            _emit(item, out)
        out += b"t"
    elif isinstance(obj, list):
        out += b"]("
        for item in obj:
            _emit(item, out)
        out += b"e"
    elif isinstance(obj, dict):
        out += b"}("
        for key, value in obj.items():
            _emit(key, out)
            _emit(value, out)
        out += b"u"
    elif isinstance(obj, Global):
        out += b"c" + f"{obj.module}\n{obj.name}\n".encode()
    elif isinstance(obj, Call):
        _emit(obj.func, out)
        _emit(obj.args, out)
        out += b"R"
    elif isinstance(obj, PersistentId):
        _emit(obj.pid, out)
        out += b"Q"
    elif isinstance(obj, Build):
        _emit(obj.obj, out)
        _emit(obj.state, out)
        out += b"b"
    else:
        raise TypeError(f"cannot emit {type(obj).__name__}")


def dumps(obj):
    """Protocol-2 pickle bytes of ``obj`` in the object language above."""
    out = bytearray(b"\x80\x02")
    _emit(obj, out)
    return bytes(out + b".")


def storage_id(storage_type, key, numel, location="cpu", legacy=False):
    """The persistent id torch.save writes for a storage (legacy adds a view field)."""
    pid = ("storage", Global("torch", storage_type), key, location, numel)
    return PersistentId(pid + (None,) if legacy else pid)


def tensor(storage, offset, shape, stride):
    """A call of torch._utils._rebuild_tensor_v2 as torch.save writes it."""
    return Call(Global("torch._utils", "_rebuild_tensor_v2"),
                (storage, offset, tuple(shape), tuple(stride), False,
                 Call(Global("collections", "OrderedDict"), ())))


def ordered_dict(items):
    """A collections.OrderedDict holding ``items`` (a dict), as torch's state_dict."""
    return Call(Global("collections", "OrderedDict"), ([list(kv) for kv in items.items()],))


def write_zip(path, data_pkl, storages=(), byteorder="little", prefix="archive",
              compression=zipfile.ZIP_STORED):
    """A torch.save zip archive: ``<prefix>/data.pkl``, ``byteorder``, ``data/<key>``.

    ``storages`` maps key -> bytes; ``byteorder=None`` leaves the record out.
    """
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        zf.writestr(f"{prefix}/data.pkl", data_pkl)
        if byteorder is not None:
            zf.writestr(f"{prefix}/byteorder", byteorder)
        for key, raw in dict(storages).items():
            zf.writestr(f"{prefix}/data/{key}", bytes(raw))
        zf.writestr(f"{prefix}/version", "3\n")
    return path


def write_legacy(path, data_pkl, storages=(), header=None):
    """A legacy (pre-1.6) torch.save stream.

    ``storages``: (key, numel, bytes) in file order; ``header`` replaces the
    magic-number pickle when given.
    """
    storages = list(storages)
    with open(path, "wb") as f:
        f.write(pickle.dumps(LEGACY_MAGIC, protocol=2) if header is None else header)
        f.write(pickle.dumps(1001, protocol=2))
        f.write(pickle.dumps({"protocol_version": 1001, "little_endian": True,
                              "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2))
        f.write(data_pkl)
        f.write(pickle.dumps([key for key, _, _ in storages], protocol=2))
        for _, numel, raw in storages:
            f.write(struct.pack("<q", numel) + bytes(raw))
    return path


def state_dict_file(path, arrays, legacy=False, byteorder="little"):
    """Write ``arrays`` (name -> ndarray) as a torch.save file, one storage each.

    With ``byteorder='big'`` the stored bytes are big-endian, as the record says.
    """
    entries, storages = {}, []
    for i, (name, array) in enumerate(arrays.items()):
        array = np.ascontiguousarray(array)
        strides = tuple(s // array.itemsize for s in array.strides)
        pid = storage_id(STORAGE_TYPES[array.dtype], str(i), array.size, legacy=legacy)
        entries[name] = tensor(pid, 0, array.shape, strides)
        order = ">" if byteorder == "big" else "<"
        raw = array.astype(array.dtype.newbyteorder(order)).tobytes()
        storages.append((str(i), array.size, raw))
    data = dumps(ordered_dict(entries))
    if legacy:
        return write_legacy(path, data, storages)
    return write_zip(path, data, {key: raw for key, _, raw in storages}, byteorder=byteorder)
