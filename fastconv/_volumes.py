"""Volumes on disk, read and written slab by slab: .npy, Zarr and TIFF.

The command line's streaming filter (:mod:`fastconv.cli`) sees every format
through one interface, so its slab and halo logic is written once.

Readers (:func:`open_volume`) have ``path``, ``kind``, ``shape``, ``dtype``,
``ndim``, ``full_shape``, ``chunks`` (a Zarr store's chunking, else None),
``read_slab(start, stop)`` (rows ``[start, stop)`` of axis 0 as a new array),
``reader[rows]`` (the rows of an int array, in any order: a slab and its
halo), ``reader[tuple_of_slices]`` (for ``dask.array.from_array``) and
``close()``.

Writers (:func:`create_volume`) write into a temporary next to OUT and have
``shape``, ``dtype``, ``align`` (the rows of a write unit: a Zarr output's
chunk or shard layer, else 1), ``write_slab(start, values)`` (slabs of any
size, in order; also ``writer[start:stop] = values``), ``writer[region] =
block`` (for ``dask.array.store``: blocks of whole write units, any order),
``commit()`` (OUT appears, complete, by a rename) and ``abort()`` (the
temporary is removed; nothing named OUT was touched).

Formats
-------
``.npy`` (here)
    Positioned reads and writes at the data offset: no memory map, so
    neither address space nor resident memory grows with the file.
Zarr (``.zarr``; v2 and v3 through the ``zarr`` package): :mod:`._zarr_volume`
    A path with a component ending in ``.zarr`` (``image.zarr``, or the level
    ``image.zarr/0`` of an OME-Zarr multiscale image).
TIFF (``.tif`` / ``.tiff`` through ``tifffile``): :mod:`._tiff_volume`
    Multi-page stacks and single 2-D pages, classic TIFF or BigTIFF.

Arrays of more than 3 dims whose leading axes have length 1 (OME-Zarr's
``(t, c, z, y, x)``) are seen as their trailing 3 dims; outputs keep the
full shape.

Every error a user can cause is a :class:`VolumeError` (a ``ValueError``)
with a one-line message; a missing optional package is an ``ImportError``
naming the extra to install.
"""
import errno
import importlib
import math
import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager

import numpy as np

EXTRA = 'pip install "fastconv[{}]"'


class VolumeError(ValueError):
    """A volume that cannot be read or written; the message is one line."""


def require(module, purpose, extra="io"):
    """Import an optional package, or say in one line which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise ImportError(f"{purpose} needs the {package} package: "
                          f"{EXTRA.format(extra)}") from None


# -- formats ------------------------------------------------------------------------------

def volume_kind(path):
    """'npy', 'zarr' or 'tiff', from the name of ``path``.

    Raises
    ------
    VolumeError
        If the name has none of the known forms.
    """
    name = os.fspath(path).rstrip("/\\") or os.fspath(path)
    low = name.lower()
    if low.endswith(".npy"):
        return "npy"
    if low.endswith((".tif", ".tiff")):
        return "tiff"
    if any(part.endswith(".zarr") for part in low.replace("\\", "/").split("/")):
        return "zarr"
    if os.path.isdir(name) and _zarr_metadata(name):
        return "zarr"
    raise VolumeError(f"cannot tell the format of {path} from its name: expected a name "
                      "ending in .npy, .zarr (or a level inside one, e.g. image.zarr/0), "
                      ".tif or .tiff")


def _zarr_metadata(directory):
    """The Zarr metadata files in ``directory`` (empty if it is no Zarr node)."""
    return [m for m in (".zarray", ".zgroup", "zarr.json")
            if os.path.isfile(os.path.join(directory, m))]


def _lead(shape):
    """Leading length-1 axes to drop so that at most 3 dims remain (OME-Zarr t, c)."""
    lead = 0
    while len(shape) - lead > 3 and shape[lead] == 1:
        lead += 1
    return lead


def _runs(rows):
    """(start, stop, position) for each run of consecutive ascending rows."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [rows.size]])
    return [(int(rows[a]), int(rows[a]) + int(b - a), int(a)) for a, b in zip(starts, stops)]


def _check_rows(start, stop, n):
    if not 0 <= start <= stop <= n:
        raise IndexError(f"rows [{start}, {stop}) out of range for {n} rows")


# -- readers ------------------------------------------------------------------------------

class _Reader:
    """Shared geometry and indexing; subclasses fill ``_read_into``."""

    chunks = None

    def _setup(self, full_shape, dtype):
        self.full_shape = tuple(int(n) for n in full_shape)
        self.lead = _lead(self.full_shape)
        self.shape = self.full_shape[self.lead:]
        self.ndim = len(self.shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize
        self.nbytes = math.prod(self.shape) * self.dtype.itemsize

    def read_slab(self, start, stop):
        """Rows ``[start, stop)`` of axis 0 as a new C-contiguous array."""
        _check_rows(start, stop, self.shape[0] if self.shape else 0)
        out = np.empty((stop - start,) + self.shape[1:], self.dtype)
        if stop > start:
            self._read_into(start, stop, out)
        return out

    def __getitem__(self, key):
        if isinstance(key, tuple):            # dask.array.from_array: basic slices
            key = key + (slice(None),) * (self.ndim - len(key))
            start, stop, step = key[0].indices(self.shape[0])
            if step != 1:
                raise IndexError("only step-1 slices of axis 0 are supported")
            return self.read_slab(start, max(start, stop))[(slice(None),) + key[1:]]
        rows = np.asarray(key)
        out = np.empty((rows.size,) + self.shape[1:], self.dtype)
        for start, stop, at in _runs(rows):
            _check_rows(start, stop, self.shape[0])
            self._read_into(start, stop, out[at:at + stop - start])
        return out

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _pread_into(fd, out, offset, path):
    """Fill the C-contiguous array ``out`` with the bytes at ``offset`` of ``fd``."""
    view = memoryview(out).cast("B")
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            raise VolumeError(f"cannot read {path}: the file is truncated (no data at byte "
                              f"{offset + done})")
        done += n


class NpyRows(_Reader):
    """Rows (along axis 0) of a C-ordered .npy file, read without mapping it."""

    kind = "npy"

    def __init__(self, path):
        self.path = path
        self.file = open(path, "rb")
        try:
            try:
                version = np.lib.format.read_magic(self.file)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:
                    raise ValueError(f"unsupported .npy version {version}")
                shape, fortran, dtype = read_header(self.file)
            except (ValueError, OSError, SyntaxError) as exc:
                raise VolumeError(f"cannot read {path} as a .npy array: {exc}") from None
            if dtype.hasobject:
                raise VolumeError(f"cannot read {path}: it holds Python objects (dtype "
                                  f"{dtype}); expected numbers")
            if fortran and len(shape) > 1:
                raise VolumeError(f"cannot read {path}: Fortran-ordered arrays are not "
                                  "supported; save with C order")
            self._setup(shape, dtype)
            self.offset = self.file.tell()
            need = self.offset + self.nbytes
            size = os.fstat(self.file.fileno()).st_size
            if size < need:
                raise VolumeError(f"cannot read {path}: the file is truncated ({size} bytes, "
                                  f"its header promises {need})")
        except BaseException:
            self.file.close()
            raise

    def _read_into(self, start, stop, out):
        _pread_into(self.file.fileno(), out, self.offset + start * self.row_bytes, self.path)

    def close(self):
        self.file.close()










def open_volume(path):
    """A reader for the .npy file, Zarr array or TIFF file at ``path``.

    Raises
    ------
    VolumeError
        Unknown format, or the file is unreadable, corrupt or truncated.
    ImportError
        The format's package (``zarr``, ``tifffile``) is not installed.
    """
    kind = volume_kind(path)
    if kind == "zarr":
        from ._zarr_volume import ZarrVolume
        return ZarrVolume(path)
    if kind == "tiff":
        from ._tiff_volume import TiffVolume
        return TiffVolume(path)
    return NpyRows(path)


# -- writers ------------------------------------------------------------------------------

def _free_bytes(directory):
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def _mb(n):
    return f"{n / 1e6:.1f} MB"


def _check_target(path, kind):
    """The directory OUT goes in; refuses what a rename could not or should not replace."""
    out = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise VolumeError(f"cannot write {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise VolumeError(f"cannot write {path}: no permission to create files in {parent}")
    if os.path.isdir(out):
        if kind != "zarr":
            raise VolumeError(f"cannot write {path}: it is an existing directory")
        if os.listdir(out) and not _zarr_metadata(out):
            raise VolumeError(f"cannot write {path}: it is an existing directory that is not "
                              "a Zarr store; refusing to replace it")
    elif os.path.exists(out) and not os.access(out, os.W_OK):
        raise VolumeError(f"cannot write {path}: the existing file is read-only")
    return parent


def _check_space(parent, need, path):
    free = _free_bytes(parent)
    if free < need:
        raise VolumeError(f"not enough free space for {path}: needs {_mb(need)}, "
                          f"{parent} has {_mb(free)} free")


def _chmod_default(path, mode=0o666):
    """mkstemp/mkdtemp create 0600/0700 files; give OUT the permissions open() would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def _remove(path):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    except OSError:
        pass


class _Writer:
    """Shared parts: the slab interface over ``write_slab``, abort, region writes."""

    align = 1

    def _setup(self, path, shape, dtype):
        self.path = path
        self.full_shape = tuple(int(n) for n in shape)
        self.lead = _lead(self.full_shape)
        self.shape = self.full_shape[self.lead:]
        self.ndim = len(self.shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize
        self.nbytes = math.prod(self.shape) * self.dtype.itemsize
        self.stopped = False

    def __setitem__(self, key, values):
        """``w[start:stop] = slab`` (the filter), ``w[region] = block`` (dask's store)."""
        if self.stopped:                # after Ctrl-C: tasks still running write nothing
            return
        if isinstance(key, slice):
            self.write_slab(key.start or 0, values)
        else:
            self.write_block(key, values)

    def write_block(self, region, values):
        """Write a block at a tuple of slices (files: rows of whole planes at a time)."""
        region = tuple(region) + (slice(None),) * (self.ndim - len(region))
        bounds = [s.indices(n)[:2] for s, n in zip(region, self.shape)]
        if all(b == (0, n) for b, n in zip(bounds[1:], self.shape[1:])):
            self.write_slab(bounds[0][0], values)
            return
        raise ValueError(f"{self.path}: a block must span whole slices, got {region}")

    def abort(self):
        """Remove the temporary output; OUT itself is left as it was."""
        self.stopped = True
        self.close()
        _remove(self.tmp)

    def close(self):
        pass


class _FileWriter(_Writer):
    """A file of known layout whose data start at ``self.offset``, written with pwrite."""

    def _create(self, suffix):
        parent = os.path.dirname(os.path.abspath(self.path))
        fd, self.tmp = tempfile.mkstemp(prefix=".fastconv-", suffix=suffix, dir=parent)
        os.close(fd)
        _chmod_default(self.tmp)

    def write_slab(self, start, values):
        data = np.ascontiguousarray(values, dtype=self.dtype)
        if self._swap:
            data = data.byteswap()
        view = memoryview(data).cast("B")
        offset = self.offset + start * self.row_bytes
        done = 0
        while done < len(view):
            done += os.pwritev(self.fd, [view[done:]], offset + done)

    def commit(self):
        """fsync, then rename the temporary to OUT (atomic: OUT is complete or absent)."""
        os.fsync(self.fd)
        self.close()
        os.replace(self.tmp, self.path)

    def close(self):
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)
            self.fd = None


class NpyWriter(_FileWriter):
    """A C-ordered .npy file of known shape, written slab by slab along axis 0."""

    kind = "npy"

    def __init__(self, path, shape, dtype):
        self._setup(path, shape, dtype)
        self._swap = False
        self._create(".npy.partial")
        try:
            with open(self.tmp, "r+b") as f:
                header = {"descr": np.lib.format.dtype_to_descr(self.dtype),
                          "fortran_order": False, "shape": self.full_shape}
                np.lib.format.write_array_header_2_0(f, header)
                self.offset = f.tell()
                f.truncate(self.offset + self.nbytes)      # sparse until written
            self.fd = os.open(self.tmp, os.O_RDWR)
        except BaseException:
            _remove(self.tmp)
            raise






@contextmanager
def _deferred_interrupt():
    """Hold Ctrl-C until the block ends, then raise it.

    zarr writes from its own I/O thread: a KeyboardInterrupt raised while the
    main thread waits would leave that write running, and it could create
    chunk files after ``abort()`` removed the temporary store.
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    caught = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt


def create_volume(path, shape, dtype, like=None, chunks=None, compressor=None):
    """A writer for a new .npy file, Zarr array or TIFF file at ``path``.

    Everything that can be checked before any work is: the format and its
    package, the output directory (exists, writable), what OUT would replace,
    the options, and the free space (the data's size for .npy, TIFF and an
    uncompressed Zarr output; one chunk layer for a compressed one, whose
    size is unknown in advance).

    Parameters
    ----------
    path : str
        OUT; the data go to a temporary next to it until ``commit()``.
    shape : tuple of int
        The full shape (leading length-1 axes included).
    dtype : numpy dtype
    like : reader, optional
        The input: a Zarr output copies its layout, a TIFF output is BigTIFF
        if it is.
    chunks : tuple of int, optional
        Zarr output chunks: one number (axis 0; the others as the input's or
        the default) or one per axis.
    compressor : str, optional
        Zarr output compressor, see :func:`fastconv._zarr_volume.parse_compressor`.

    Raises
    ------
    VolumeError, ImportError
    """
    kind = volume_kind(path)
    if kind != "zarr" and compressor is not None:
        raise VolumeError(f"--compressor applies to a Zarr output, and {path} is a "
                          f"{'.npy' if kind == 'npy' else 'TIFF'} file")
    if kind != "zarr" and chunks is not None and len(chunks) > 1:
        raise VolumeError(f"--chunks with several numbers sets a Zarr output's chunk shape, "
                          f"and {path} is a {'.npy' if kind == 'npy' else 'TIFF'} file; give "
                          "one number, the slices per slab")
    parent = _check_target(path, kind)
    if kind == "npy":
        writer = NpyWriter(path, shape, dtype)
        need = writer.nbytes
    elif kind == "tiff":
        from ._tiff_volume import TiffWriter
        writer = TiffWriter(path, shape, dtype, bigtiff=getattr(like, "is_bigtiff", False))
        need = writer.nbytes
    else:
        from ._zarr_volume import ZarrWriter
        writer = ZarrWriter(path, shape, dtype, like, chunks, compressor)
        layer = writer.align * writer.row_bytes
        need = writer.nbytes if not writer.array.compressors else min(writer.nbytes, layer)
    try:
        _check_space(parent, need, path)
    except BaseException:
        writer.abort()
        raise
    return writer


def is_disk_full(exc):
    """Whether ``exc`` (an OSError) says the disk or quota is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
