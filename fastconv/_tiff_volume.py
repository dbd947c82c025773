"""TIFF volumes (through ``tifffile``) for :mod:`fastconv._volumes`.

Reading: the first image series of the file -- a multi-page stack (one page
per slice) or one 2-D page, classic TIFF or BigTIFF, either byte order.
Uncompressed contiguous data is read with positioned reads at its offset
(what a memory map would read, without mapping the file, so the address
space does not grow with it); compressed or scattered pages are decoded page
by page.  Writing: one uncompressed contiguous multi-page file, written with
positioned writes into a temporary renamed to OUT by ``commit()``; BigTIFF
when the input is BigTIFF or the data exceed 4 GB minus 32 MiB.
"""
import logging
import math
import os
from contextlib import contextmanager

import numpy as np

from ._volumes import VolumeError, _FileWriter, _pread_into, _Reader, _remove, require

# tifffile's own threshold for switching to BigTIFF.
_BIGTIFF_BYTES = 2 ** 32 - 2 ** 25


@contextmanager
def _quiet_logger(name):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class TiffVolume(_Reader):
    """The first image series of a TIFF file, read by slices (pages)."""

    kind = "tiff"

    def __init__(self, path):
        tifffile = require("tifffile", f"reading {path}")
        self.path = path
        # tifffile logs what it finds wrong in a damaged file; the one-line
        # error below says it instead.
        with _quiet_logger("tifffile"):
            try:
                self.tif = tifffile.TiffFile(path)
            except Exception as exc:
                raise VolumeError(f"cannot read {path} as a TIFF: {type(exc).__name__}: "
                                  f"{exc}") from None
            try:
                self._open()
            except BaseException:
                self.tif.close()
                raise

    def _open(self):
        path = self.path
        try:
            if not self.tif.series:
                raise VolumeError(f"cannot read {path}: the TIFF holds no image")
            series = self.tif.series[0]
            shape, dtype = series.shape, series.dtype
            offset = series.dataoffset          # None unless uncompressed and contiguous
            pages = list(series.pages) if offset is None else []
            page_shape = tuple(series.keyframe.shape)
        except VolumeError:
            raise
        except Exception as exc:
            raise VolumeError(f"cannot read {path} as a TIFF: {type(exc).__name__}: "
                              f"{exc}") from None
        self._setup(shape, dtype)
        self.is_bigtiff = self.tif.is_bigtiff
        self._swap = self.tif.byteorder != ("<" if np.little_endian else ">")
        size = os.fstat(self.tif.filehandle.fileno()).st_size
        if offset is not None:
            self._offset = offset
            if offset + self.nbytes > size:
                raise VolumeError(f"cannot read {path}: the file is truncated ({size} bytes, "
                                  f"its image data end at {offset + self.nbytes})")
            self._pages = None
            return
        self._offset = None
        end = max((max((o + n for o, n in zip(p.dataoffsets, p.databytecounts)), default=0)
                   for p in pages), default=0)
        if end > size:
            raise VolumeError(f"cannot read {path}: the file is truncated ({size} bytes, its "
                              f"image data end at {end})")
        if self.ndim >= 2 and len(pages) == self.shape[0] and \
                math.prod(page_shape) == math.prod(self.shape[1:]):
            self._pages = pages                 # one page per slice: decode page by page
        elif len(pages) == 1:
            self._pages = "whole"               # one (2-D) page: decoded whole, once
            self._whole = None
        else:
            raise VolumeError(f"cannot read {path}: its pages ({len(pages)} of shape "
                              f"{page_shape}) do not map onto slices of the image shape "
                              f"{self.full_shape}")

    def _decode(self, what, func):
        try:
            return func()
        except MemoryError:
            raise
        except Exception as exc:
            raise VolumeError(f"cannot read {self.path}, {what} (corrupt or truncated?): "
                              f"{type(exc).__name__}: {exc}") from None

    def _read_into(self, start, stop, out):
        if self._offset is not None:
            _pread_into(self.tif.filehandle.fileno(), out,
                        self._offset + start * self.row_bytes, self.path)
            if self._swap:
                out.byteswap(inplace=True)
            return
        if isinstance(self._pages, list):
            for i in range(start, stop):
                page = self._pages[i]
                out[i - start] = self._decode(f"page {i}", page.asarray).reshape(self.shape[1:])
            return
        if self._whole is None:
            self._whole = self._decode("its image", self.tif.series[0].asarray).reshape(
                self.shape)
        out[...] = self._whole[start:stop]

    def close(self):
        self.tif.close()


class TiffWriter(_FileWriter):
    """An uncompressed contiguous multi-page TIFF (BigTIFF if asked or needed)."""

    kind = "tiff"

    def __init__(self, path, shape, dtype, bigtiff=False):
        tifffile = require("tifffile", f"writing {path}")
        self._setup(path, shape, dtype)
        if len(self.full_shape) < 2:
            raise VolumeError(f"cannot write {path}: TIFF holds images of 2 or more dims, "
                              f"got shape {self.full_shape}; write .npy or .zarr instead")
        self._create(".tif.partial")
        try:
            bigtiff = bool(bigtiff) or self.nbytes > _BIGTIFF_BYTES
            # tifffile writes the header and page directories and leaves the data
            # region empty (sparse); its offset is then read back.
            tifffile.imwrite(self.tmp, shape=self.full_shape, dtype=self.dtype,
                             bigtiff=bigtiff, photometric="minisblack")
            with tifffile.TiffFile(self.tmp) as tif:
                self.offset = tif.series[0].dataoffset
                self._swap = tif.byteorder != ("<" if np.little_endian else ">")
            if self.offset is None:       # pragma: no cover - tifffile changed its layout
                raise VolumeError(f"cannot write {path}: tifffile did not lay the data out "
                                  "contiguously")
            self.fd = os.open(self.tmp, os.O_RDWR)
        except BaseException:
            _remove(self.tmp)
            raise
