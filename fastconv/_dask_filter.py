"""``fastconv filter --scheduler``: the filter as a ``fastconv.dask`` graph.

The slab-by-slab route (:func:`fastconv.cli.filter_volume`) needs no Dask;
this one runs the same correlation chunk by chunk on a Dask scheduler, with
the readers and writers of :mod:`fastconv._volumes`.
"""
import math

import numpy as np

from ._volumes import require


def filter_volume_dask(src, dst, kernel, mode="reflect", cval=0.0, scheduler="threads",
                       progress=None):
    """dst = correlate(src, kernel), computed by ``fastconv.dask`` chunk by chunk.

    ``kernel`` may instead be a :class:`fastconv.cli.NamedFilter` (gaussian:,
    box:, sobel, ...): its ``fastconv.dask`` function then runs, with the
    output dtype ``dst.dtype``.

    The input's Zarr chunks (or slabs of ``dst.align`` slices for files) are
    the tasks; blocks are written straight into ``dst`` (rechunked to whole
    output chunks for Zarr, whole slices for files, so no two tasks write one
    chunk).  The graph is computed a few block rows (along axis 0) at a time:
    given the whole graph, Dask's threaded scheduler loads input chunks far
    ahead of the blocks that consume them (3.8 GB peak on a 2 GB volume), so
    memory is bounded by a few chunk layers instead, at the cost of decoding
    the halo's neighbouring chunk layers again.  On Ctrl-C the writer is
    stopped and the running tasks are waited for, so nothing writes into the
    output after ``run_filter`` removes it.
    """
    from concurrent.futures import ThreadPoolExecutor

    dask = require("dask", "--scheduler", extra="dask")
    da = require("dask.array", "--scheduler", extra="dask")
    from dask.system import CPU_COUNT

    from . import dask as fcd

    work = np.float32 if dst.dtype == np.float32 and src.dtype.itemsize <= 4 else np.float64
    if src.kind == "zarr":
        x = da.from_zarr(src.array)[(0,) * src.lead]
    else:
        rows = max(dst.align, (64 << 20) // max(1, src.row_bytes) // dst.align * dst.align)
        x = da.from_array(src, chunks=(rows,) + src.shape[1:], lock=src.kind == "tiff",
                          asarray=False, meta=np.empty((0,) * src.ndim, src.dtype))
    if isinstance(kernel, np.ndarray):
        y = fcd.correlate(x.astype(work), kernel.astype(work), mode=mode, cval=cval)
        if dst.dtype.kind in "iu":
            y = da.trunc(y)
        y = y.astype(dst.dtype)
    else:
        y = kernel.dask(x, dst.dtype, mode, cval)
    if dst.kind == "zarr":
        y = y.rechunk(dst.write_chunks)
    else:
        y = y.rechunk({axis: -1 for axis in range(1, y.ndim)})
    n0 = src.shape[0]
    # Groups of whole block rows, each at least ~128 MiB of work.
    row_work = math.prod(src.shape[1:]) * np.dtype(work).itemsize
    group_rows = max(1, (128 << 20) // max(1, row_work))
    bounds = [0]
    for rows in y.chunks[0]:
        if len(bounds) == 1 or bounds[-1] - bounds[-2] >= group_rows:
            bounds.append(bounds[-1] + rows)
        else:
            bounds[-1] += rows
    # Our own pool, so that after Ctrl-C we can wait for the tasks still running.
    pool = ThreadPoolExecutor(CPU_COUNT) if scheduler == "threads" else None
    try:
        for z0, z1 in zip(bounds[:-1], bounds[1:]):
            store = da.store(y[z0:z1], dst, regions=(slice(z0, z1),), lock=False,
                             compute=False)
            dask.compute(store, scheduler=scheduler, pool=pool)
            if progress:
                progress(z1, n0)
    except BaseException:
        dst.stopped = True
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
