"""Read PyTorch checkpoints into NumPy without PyTorch: :func:`load_state_dict`.

A ``torch.save`` file is a zip archive (``<name>/data.pkl``, a pickle of the
object, and one ``<name>/data/<key>`` record of raw bytes per storage) or,
with ``_use_new_zipfile_serialization=False``, the legacy stream of pickles
followed by the raw storages.  The pickle is read by the restricted
unpickler of ``_torch_pickle``, which never runs code named by the file;
this module checks the archive, every tensor against its storage and the
memory the result will take *before* reading any tensor data, then reads
each storage once into its final array.
"""
import collections
import math
import os
import struct
import sys
import zipfile
import zlib

import numpy as np

from ._torch_pickle import (CheckpointError, RefusedGlobalError, StorageRecord, StorageType,
                            TensorRecord, unpickle, unpickle_bytes)

__all__ = ["load_state_dict", "CheckpointError", "RefusedGlobalError"]

_CHUNK = 4 << 20                  # bytes read (and CRC-checked) at a time
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_MAX_DIMS = 32                    # NumPy 1.x's limit
_MAX_SIZE = 2**48                 # no real tensor dimension comes near; larger overflows strides
_DEFAULT_SLACK = 64 << 20


def load_state_dict(path, *, max_bytes=None):
    """Read a state dict saved by ``torch.save`` (or a ``.safetensors`` file) into NumPy.

    torch is not imported.  The file's pickle is read by a restricted
    unpickler that resolves only what a tensor state dict needs (torch's
    tensor and parameter rebuild functions, its storage types and dtypes,
    ``collections.OrderedDict``), each to a local stand-in that records its
    arguments; any other global is refused by name and never imported or
    called, so a hostile file cannot run code.

    Parameters
    ----------
    path : str, os.PathLike or binary file object
        A file written by ``torch.save(state_dict, path)`` (zip format, the
        default since PyTorch 1.6, or the legacy format of
        ``_use_new_zipfile_serialization=False``), or a ``.safetensors``
        file (needs the ``safetensors`` package: ``pip install
        "fastconv[safetensors]"``).  The format is recognised from the
        content, not the name.  A file object is read from its start.
    max_bytes : int, optional
        Largest total size of the returned arrays.  Default: four times the
        file size plus 64 MiB, room for bfloat16 widened to float32 and for
        tensors sharing a storage, not for a small file that claims
        terabytes.  Raise it for a file holding many views of one storage.

    Returns
    -------
    collections.OrderedDict of str -> numpy.ndarray
        The tensors in file order, as writable C-contiguous arrays that share
        no memory with each other (tensors that shared a storage in torch are
        copied apart).  dtypes: float16, float32, float64, complex64,
        complex128, int8, int16, int32, int64, uint8, uint16, uint32, uint64
        and bool as in torch; bfloat16 becomes float32 (exactly).  Strides,
        storage offsets, shared storages, storages saved from a GPU and
        big-endian archives (``byteorder`` record ``big``) are honoured; an
        archive without a ``byteorder`` record is little-endian, as every
        PyTorch before that record wrote, and legacy files always are.

    Raises
    ------
    RefusedGlobalError
        The pickle names a global outside the allowed set (the message names
        it).  Subclass of ``CheckpointError`` and ``pickle.UnpicklingError``.
    CheckpointError
        (a ``ValueError``) The file is not a state dict this function can
        read safely: truncated or corrupt, compressed or encrypted zip
        entries (``torch.save`` stores them uncompressed; inflating is how
        zip bombs work), a storage shorter than a tensor claims, absurd
        shapes, arrays larger than ``max_bytes``, a value that is not a
        tensor, an unsupported dtype.  Raised before any tensor data is read.
    ImportError
        A ``.safetensors`` file without the ``safetensors`` package.

    Examples
    --------
    >>> import fastconv as fc
    >>> state = fc.load_state_dict("model.pt")                   # doctest: +SKIP
    >>> conv = fc.Conv3d(1, 8, 3, padding=1)                     # doctest: +SKIP
    >>> conv.load_state_dict(state, prefix="encoder.0.")         # doctest: +SKIP
    """
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)):
            raise TypeError(f"load_state_dict: expected max_bytes to be None or an int, got "
                            f"{type(max_bytes).__name__}")
        if max_bytes < 0:
            raise ValueError(f"load_state_dict: expected max_bytes >= 0, got {max_bytes}")
    file, owned, name = _open(path)
    try:
        size = file.seek(0, os.SEEK_END)
        file.seek(0)
        head = file.read(16)
        file.seek(0)
        if _is_safetensors(head, size):
            return _load_safetensors(path, file, name)
        if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
            reader = _ZipReader(file, size, name)
        elif head[:1] == b"\x80":                      # pickle protocol >= 2: legacy format
            reader = _LegacyReader(file, size, name)
        elif not head:
            raise CheckpointError(f"{name}: the file is empty")
        else:
            raise CheckpointError(f"{name}: not a torch.save or safetensors file (starts with "
                                  f"{head[:8]!r}; expected a zip archive, a legacy torch.save "
                                  f"pickle stream or a safetensors header)")
        try:
            limit = 4 * size + _DEFAULT_SLACK if max_bytes is None else max_bytes
            return _materialise(reader, size, limit, name)
        finally:
            reader.close()
    finally:
        if owned:
            file.close()


def _open(path):
    """(binary file, whether we opened it, name for messages)."""
    if isinstance(path, (str, bytes, os.PathLike)):
        return open(path, "rb"), True, os.fsdecode(path)
    if all(hasattr(path, attr) for attr in ("read", "seek", "tell")):
        if not isinstance(path.read(0), bytes):
            raise TypeError(f"load_state_dict: expected a binary file object (opened 'rb'), "
                            f"got a text file {path!r}")
        return path, False, str(getattr(path, "name", "<file object>"))
    raise TypeError(f"load_state_dict: expected path to be a str, os.PathLike or a binary file "
                    f"object, got {type(path).__name__}")


def _short(value, limit=60):
    """repr for messages, cut to ``limit``; never fails (a 10**5000 int cannot be shown)."""
    try:
        text = repr(value)
    except Exception:  # int too large for str(), recursion, ...
        return f"<a {type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[:limit] + "..."


# -- state dict checks and arrays ---------------------------------------------------------


def _as_state_dict(top, name):
    """The unpickled object as an OrderedDict of name -> TensorRecord, or a clear error."""
    if isinstance(top, TensorRecord):
        raise CheckpointError(f"{name} holds a single tensor, not a state dict: save a dict "
                              f"such as {{'weight': tensor}}")
    if not isinstance(top, dict):
        raise CheckpointError(f"{name} holds a {type(top).__name__}, expected a state dict "
                              f"(a mapping of names to tensors)")
    tensors = collections.OrderedDict()
    for key, value in top.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{name}: expected string keys in the state dict, got "
                                  f"{_short(key)}")
        if not isinstance(value, TensorRecord):
            raise CheckpointError(f"{name}: expected a tensor under {_short(key)}, got "
                                  f"{type(value).__name__} (only state dicts and dicts of "
                                  f"tensors can be read)")
        tensors[key] = value
    return tensors


def _check_tensor(key, t, name):
    """Dtype, dimensions and extent of one tensor against its storage; its element count."""
    storage, dtype = t.storage, t.dtype
    what = f"{name}: tensor {_short(key)}"
    if storage.dtype is not None and storage.dtype is not dtype:
        raise CheckpointError(f"{what} has dtype {dtype.name} but its storage holds "
                              f"{storage.dtype.name}")
    if len(t.shape) > _MAX_DIMS:
        raise CheckpointError(f"{what} has {len(t.shape)} dimensions, at most {_MAX_DIMS} "
                              f"are supported")
    if any(n < 0 or n > _MAX_SIZE for n in t.shape) or any(s < 0 for s in t.strides) \
            or t.offset < 0:
        raise CheckpointError(f"{what} has an invalid shape {_short(t.shape)}, stride "
                              f"{_short(t.strides)} or storage offset {_short(t.offset)} (sizes "
                              f"must be in 0..2**48, strides and offset >= 0)")
    itemsize = dtype.stored.itemsize
    if storage.nbytes % itemsize:
        raise CheckpointError(f"{what}: storage {_short(storage.key)} holds {storage.nbytes} "
                              f"bytes, not a whole number of {dtype.name} elements")
    available = storage.nbytes // itemsize
    numel = math.prod(t.shape)
    if numel:
        last = t.offset + sum((n - 1) * s for n, s in zip(t.shape, t.strides))
        if last >= available:
            raise CheckpointError(
                f"{what} of shape {t.shape}, stride {_short(t.strides)} and storage offset "
                f"{_short(t.offset)} needs {_short(last + 1)} {dtype.name} elements, but its "
                f"storage {_short(storage.key)} holds only {available}")
    return numel


def _materialise(reader, file_size, limit, name):
    """Check every tensor and the total size, then build the arrays storage by storage."""
    tensors = reader.tensors
    users = collections.Counter()
    storages, out_bytes = {}, 0
    for key, t in tensors.items():
        numel = _check_tensor(key, t, name)
        out_bytes += numel * t.dtype.result.itemsize
        viewed_as = storages.setdefault(t.storage.key, (t.storage, t.dtype))[1]
        if viewed_as is not t.dtype:
            raise CheckpointError(f"{name}: storage {_short(t.storage.key)} is viewed both as "
                                  f"{viewed_as.name} and as {t.dtype.name} (torch.save refuses "
                                  f"to write that)")
        users[t.storage.key] += 1
    stored = sum(s.nbytes for s, _ in storages.values())
    if stored > file_size:     # entries of a well-formed archive do not overlap
        raise CheckpointError(f"{name}: its storages claim {_short(stored)} bytes in a file of "
                              f"{file_size} bytes (overlapping zip entries?)")
    if out_bytes > limit:
        raise CheckpointError(f"{name}: the tensors would take {_short(out_bytes)} bytes, more than "
                              f"max_bytes={limit}; pass a larger max_bytes to "
                              f"load_state_dict if the file is trusted")

    swap = reader.byteorder != sys.byteorder
    buffers, result = {}, collections.OrderedDict()
    for key, t in tensors.items():
        skey = t.storage.key
        if skey not in buffers:
            raw = reader.read_storage(t.storage).view(t.dtype.stored)
            if swap and raw.itemsize > 1:
                raw.byteswap(inplace=True)      # the buffer is ours: no second copy
            buffers[skey] = raw
        result[key] = _array(t, buffers[skey], sole_user=users[skey] == 1)
        users[skey] -= 1
        if not users[skey]:
            del buffers[skey]                   # free a shared storage after its last view
    return result


def _is_c_contiguous(shape, strides):
    expected = 1
    for n, s in zip(reversed(shape), reversed(strides)):
        if n != 1 and s != expected:
            return False
        expected *= n
    return True


def _array(t, raw, sole_user):
    """The tensor's values as a C-contiguous array of its result dtype."""
    dtype = t.dtype
    if math.prod(t.shape) == 0:
        return np.empty(t.shape, dtype.result)
    if sole_user and t.offset == 0 and raw.size == math.prod(t.shape) \
            and _is_c_contiguous(t.shape, t.strides):
        view, is_buffer = raw.reshape(t.shape), True    # the storage buffer becomes the array
    else:
        # Strides of dimensions of size 1 never matter; zero them so that a huge one
        # cannot overflow NumPy's byte strides.  _check_tensor bounded the rest.
        strides = [s * raw.itemsize if n > 1 else 0 for n, s in zip(t.shape, t.strides)]
        view = np.lib.stride_tricks.as_strided(raw[t.offset:], t.shape, strides,
                                               writeable=False)
        is_buffer = False
    if dtype.name == "bfloat16":     # the 16 bits are the top half of a float32
        widened = view.astype(np.uint32, order="C")
        widened <<= 16
        return widened.view(np.float32)
    if dtype.result == np.bool_:      # any non-zero byte counts as True
        return np.not_equal(view, 0, out=np.empty(t.shape, np.bool_))
    return view if is_buffer else np.array(view, order="C")


# -- the zip format ------------------------------------------------------------------------


class _ZipReader:
    """A ``torch.save`` zip archive: its tensors, byte order and storage reader.

    ``zipfile`` parses the central directory; entries are then read straight
    from the file into their final buffers (``torch.save`` stores them
    uncompressed), each checked against its CRC-32.
    """

    def __init__(self, file, size, name):
        self._file, self._name, self._size = file, name, size
        try:
            self._zip = zipfile.ZipFile(file)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
            raise CheckpointError(f"{name}: truncated or corrupt zip archive ({exc})") from None
        try:
            self._infos = {}
            for info in self._zip.infolist():
                if info.filename in self._infos:
                    raise CheckpointError(f"{name}: the zip archive holds two entries named "
                                          f"{info.filename!r}")
                self._infos[info.filename] = info
            pickles = [n for n in self._infos if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                hint = (" (a TorchScript archive? torch.save(model.state_dict(), path) writes "
                        "what this function reads)"
                        if any(n.endswith("/constants.pkl") for n in self._infos) else "")
                raise CheckpointError(f"{name}: expected one '<archive>/data.pkl' record in "
                                      f"the zip archive, found {len(pickles)}{hint}")
            self._prefix = pickles[0][:-len("data.pkl")]
            self.byteorder = self._byteorder()
            self._storages = {}
            data = self._read(self._entry(pickles[0]))
            top = unpickle_bytes(bytes(data), self._load_storage, f"{name}: data.pkl")
            self.tensors = _as_state_dict(top, name)
        except BaseException:
            self._zip.close()
            raise

    def close(self):
        self._zip.close()

    def _entry(self, entry_name):
        """The ZipInfo of a record we are about to read, after checks that need no reading."""
        info = self._infos.get(entry_name)
        where = f"{self._name}: zip entry {_short(entry_name)}"
        if info is None:
            raise CheckpointError(f"{where} is missing")
        if info.flag_bits & 0x1:
            raise CheckpointError(f"{where} is encrypted")
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(f"{where} is compressed (method {info.compress_type}); "
                                  f"torch.save stores entries uncompressed, and inflating an "
                                  f"untrusted entry is how zip bombs work: refused")
        if info.file_size != info.compress_size:
            raise CheckpointError(f"{where} declares {info.file_size} bytes but stores "
                                  f"{info.compress_size}: refused")
        if info.header_offset + info.compress_size > self._size:
            raise CheckpointError(f"{where} ({info.compress_size} bytes at offset "
                                  f"{info.header_offset}) extends past the end of the "
                                  f"{self._size}-byte file: truncated archive?")
        return info

    def _data_start(self, info):
        """Offset of an entry's bytes: after its local header, whose name must match."""
        where = f"{self._name}: zip entry {_short(info.filename)}"
        self._file.seek(info.header_offset)
        header = self._file.read(30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            raise CheckpointError(f"{where}: no local header at offset {info.header_offset} "
                                  f"(truncated or corrupt archive)")
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
        if self._file.read(name_length) != info.orig_filename.encode(encoding):
            raise CheckpointError(f"{where}: its local header names another file (corrupt "
                                  f"archive)")
        start = info.header_offset + 30 + name_length + extra_length
        if start + info.compress_size > self._size:
            raise CheckpointError(f"{where} extends past the end of the {self._size}-byte "
                                  f"file: truncated archive")
        return start

    def _read(self, info, buf=None):
        """An entry's bytes, read into ``buf`` (default: a new uint8 array), CRC-checked.

        A CRC of 0 is not checked: ``torch.serialization.set_crc32_options(False)``
        writes 0 and torch.load accepts such files.  The bounds checks above, not
        the CRC, are what keeps a hostile file in line.
        """
        size = info.file_size
        buf = np.empty(size, np.uint8) if buf is None else buf
        self._file.seek(self._data_start(info))
        view, crc, pos = memoryview(buf), 0, 0
        while pos < size:        # in chunks, so each one is still in cache for its CRC
            chunk = view[pos:pos + _CHUNK]
            got = self._file.readinto(chunk)
            if not got:
                raise CheckpointError(f"{self._name}: zip entry {_short(info.filename)} is "
                                      f"truncated")
            crc = zlib.crc32(chunk[:got], crc)
            pos += got
        if info.CRC and crc != info.CRC:
            raise CheckpointError(f"{self._name}: zip entry {_short(info.filename)} fails its "
                                  f"CRC-32 check (corrupt file)")
        return buf

    def _byteorder(self):
        entry = self._prefix + "byteorder"
        if entry not in self._infos:
            return "little"      # written before the record existed: little-endian machines
        info = self._entry(entry)
        value = bytes(self._read(info)) if info.file_size <= 16 else b"?"
        if value not in (b"little", b"big"):
            raise CheckpointError(f"{self._name}: byteorder record is {_short(value)}, "
                                  f"expected b'little' or b'big'")
        return value.decode()

    def _load_storage(self, pid):
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id {_short(pid)}: expected "
                                  f"('storage', storage type, key, location, size)")
        record = _storage_record(pid[1], pid[2], pid[3], pid[4])
        known = self._storages.get(record.key)
        if known is not None:
            if known.dtype is not record.dtype or known.nbytes != record.nbytes:
                raise CheckpointError(f"storage {_short(record.key)} is declared twice, "
                                      f"differently")
            return known
        info = self._entry(f"{self._prefix}data/{record.key}")
        if info.file_size != record.nbytes:
            raise CheckpointError(f"storage {_short(record.key)} declares {_short(record.nbytes)} "
                                  f"bytes, but its record holds {info.file_size}")
        self._storages[record.key] = record
        return record

    def read_storage(self, record):
        """The storage's bytes, read once into a new uint8 array (its final home)."""
        return self._read(self._infos[f"{self._prefix}data/{record.key}"])


def _storage_record(storage_type, key, location, numel):
    """A StorageRecord from the fields of a persistent id, type-checked."""
    if not isinstance(storage_type, StorageType):
        raise CheckpointError(f"expected a torch storage type in a persistent id, got "
                              f"{_short(storage_type)}")
    if type(key) is not str or not key or len(key) > 256:
        raise CheckpointError(f"expected a storage key string, got {_short(key)}")
    if type(location) is not str:
        raise CheckpointError(f"expected a storage location string such as 'cpu', got "
                              f"{_short(location)}")
    if type(numel) is not int or numel < 0:
        raise CheckpointError(f"expected a storage size >= 0, got {_short(numel)}")
    itemsize = 1 if storage_type.dtype is None else storage_type.dtype.stored.itemsize
    return StorageRecord(key, storage_type.dtype, numel * itemsize)


# -- the legacy format ---------------------------------------------------------------------


class _Bounded:
    """Reads of a file that never ask for more than the file has left.

    A hostile pickle can declare a string of 2**60 bytes; clamping the
    request keeps the read buffer to what the file really holds.
    """

    def __init__(self, file, size):
        self._file, self._size = file, size

    def _left(self):
        return max(0, self._size - self._file.tell())

    def read(self, n=-1):
        left = self._left()
        return self._file.read(left if n is None or n < 0 else min(n, left))

    def readline(self, limit=-1):
        left = self._left()
        return self._file.readline(left if limit is None or limit < 0 else min(limit, left))

    def readinto(self, buffer):
        view = memoryview(buffer).cast("B")
        return self._file.readinto(view[:self._left()])

    def tell(self):
        return self._file.tell()

    def seek(self, offset, whence=os.SEEK_SET):
        return self._file.seek(offset, whence)


def _no_storage(pid):
    raise CheckpointError(f"unexpected persistent id {_short(pid)} outside the data pickle")


class _LegacyReader:
    """The pre-1.6 stream: magic number, protocol, system info, data pickle, storage
    keys, then each storage as an int64 element count and its bytes, little-endian
    whatever the machine (torch converts when writing)."""

    byteorder = "little"

    def __init__(self, file, size, name):
        self._name = name
        stream = _Bounded(file, size)
        what = f"{name} (legacy torch.save format)"
        if unpickle(stream, _no_storage, f"{what}: header") != _LEGACY_MAGIC:
            raise CheckpointError(f"{name}: a pickle without torch.save's magic number, not a "
                                  f"torch.save file")
        protocol = unpickle(stream, _no_storage, f"{what}: protocol version")
        if protocol != _LEGACY_PROTOCOL:
            raise CheckpointError(f"{what}: protocol version {_short(protocol)}, expected "
                                  f"{_LEGACY_PROTOCOL}")
        unpickle(stream, _no_storage, f"{what}: system info")
        self._storages = {}
        top = unpickle(stream, self._load_storage, f"{what}: data pickle")
        self.tensors = _as_state_dict(top, name)
        keys = unpickle(stream, _no_storage, f"{what}: storage keys")
        if not isinstance(keys, list) or sorted(keys, key=str) != sorted(self._storages):
            raise CheckpointError(f"{what}: the list of stored storages {_short(keys)} does not "
                                  f"match the storages the tensors use "
                                  f"{_short(sorted(self._storages))}")
        self._data = {key: self._read(stream, self._storages[key], size, what) for key in keys}

    def _load_storage(self, pid):
        if not (type(pid) is tuple and len(pid) == 6 and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id {_short(pid)}: expected "
                                  f"('storage', storage type, key, location, size, view)")
        if pid[5] is not None:
            raise CheckpointError("storage views (PyTorch before 1.0) are not supported")
        record = _storage_record(*pid[1:5])
        known = self._storages.setdefault(record.key, record)
        if known.dtype is not record.dtype or known.nbytes != record.nbytes:
            raise CheckpointError(f"storage {_short(record.key)} is declared twice, differently")
        return known

    @staticmethod
    def _read(stream, record, size, what):
        header = stream.read(8)
        itemsize = 1 if record.dtype is None else record.dtype.stored.itemsize
        if len(header) < 8 or int.from_bytes(header, "little") * itemsize != record.nbytes:
            raise CheckpointError(f"{what}: storage {_short(record.key)} should start with "
                                  f"its size, {_short(record.nbytes // itemsize)} elements; found "
                                  f"{header!r} (truncated or corrupt file)")
        if record.nbytes > size - stream.tell():
            raise CheckpointError(f"{what}: storage {_short(record.key)} needs "
                                  f"{_short(record.nbytes)} bytes, the file has "
                                  f"{size - stream.tell()} left: truncated file")
        buf = np.empty(record.nbytes, np.uint8)
        if stream.readinto(buf) != record.nbytes:
            raise CheckpointError(f"{what}: storage {_short(record.key)} is truncated")
        return buf

    def read_storage(self, record):
        return self._data.pop(record.key)

    def close(self):
        self._data.clear()


# -- safetensors ---------------------------------------------------------------------------


def _is_safetensors(head, size):
    """A little-endian u64 header length followed by a JSON object."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 8 + int.from_bytes(head[:8], "little") <= size


def _load_safetensors(path, file, name):
    try:
        import safetensors.numpy as safetensors_numpy
    except ImportError:
        raise ImportError(f"load_state_dict: {name} is a safetensors file; reading it needs "
                          f"the safetensors package: pip install \"fastconv[safetensors]\"") \
            from None
    try:
        if file is not path:
            arrays = safetensors_numpy.load_file(os.fsdecode(path))
        else:
            arrays = safetensors_numpy.load(file.read())
    except Exception as exc:  # its parser's errors: header, offsets, dtypes
        hint = ("; safetensors' NumPy API cannot read bfloat16 tensors (NumPy has no "
                "bfloat16)" if "bfloat16" in str(exc) else "")
        raise CheckpointError(f"{name}: could not read the safetensors file: {exc}{hint}") \
            from None
    return collections.OrderedDict(arrays)
