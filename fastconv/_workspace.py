"""Scratch arrays for a call's internal temporaries, reused from call to call.

A large NumPy array comes from a fresh mmap (or from heap memory that glibc
gives back to the system when it is freed), so a call that allocates and
frees tens of MB of temporaries zero-fills new pages every time: 7 % of a
complex64 (1, 32, 32^3) 3x3x3 convolution went to page faults on its two
12.6 MB planar arrays.  Each thread keeps its recent scratch buffers and
hands one out again once nothing holds it (CPython's reference count tells).
"""
import math
import sys
import threading

import numpy as np

MIN_BYTES = 1 << 20        # smaller temporaries stay on malloc's heap (no page faults)
KEEP_BYTES = 1 << 27       # scratch a thread keeps between calls, at most
_ALIGN = 64                # bytes: a cache line (the kernels' vectors never straddle one)

_local = threading.local()


def empty(shape, dtype):
    """``np.empty(shape, dtype)`` for a temporary that does not outlive the call.

    The array may share memory with an earlier call's temporary that is no
    longer referenced; it must not be returned to the caller or kept.
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    pool, need, best = _pool(), nbytes + _ALIGN, None
    for i in range(len(pool)):
        size = pool[i].nbytes
        # the smallest free buffer that fits, at most twice the need; references
        # to a free one: the pool's and getrefcount's argument
        if need <= size <= 2 * need and sys.getrefcount(pool[i]) == 2 and (
                best is None or size < pool[best].nbytes):
            best = i
    buf = pool.pop(best) if best is not None else np.empty(need, np.uint8)
    pool.append(buf)                          # most recently used last
    _trim(pool)
    return _view(buf, nbytes, shape, dtype)


def aligned_empty(shape, dtype):
    """``np.empty(shape, dtype)`` starting on a cache line, for a large array
    returned to the caller: the kernels may write its lines whole with
    non-temporal stores (NumPy's large arrays start 16 bytes into a line)."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    return _view(np.empty(nbytes + _ALIGN, np.uint8), nbytes, shape, dtype)


def _pool():
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = []
    return pool


def _view(buf, nbytes, shape, dtype):
    start = -buf.ctypes.data % _ALIGN
    return buf[start:start + nbytes].view(dtype).reshape(shape)


def _trim(pool):
    """Drop the least recently used free buffers beyond KEEP_BYTES."""
    total = sum(b.nbytes for b in pool)
    i = 0
    while total > KEEP_BYTES and i < len(pool):
        if sys.getrefcount(pool[i]) == 2:     # the pool's and the argument's: free
            total -= pool.pop(i).nbytes
        else:
            i += 1


def kept_bytes():
    """Bytes of scratch this thread keeps (for the tests)."""
    return sum(b.nbytes for b in _pool())
