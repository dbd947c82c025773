"""Thread-count resolution and the BLAS limiter.

fastconv parallelises with OpenMP and calls BLAS from inside its parallel
regions, one single-threaded GEMM per OpenMP thread.  BLAS is therefore held
to one thread while a kernel runs, so OpenMP x BLAS threads never multiply.
"""
import os
import threading

import numpy as np

from . import _runtime

_user_threads = None
# libgomp cannot start threads in a child forked after the parent used its
# thread pool: such a child would hang.  fastconv therefore runs single-
# threaded in that child (use the 'spawn' or 'forkserver' start method for
# parallel workers).
_openmp_started = False
_forked_after_openmp = False
_lock = threading.Lock()
_blas_depth = 0
_blas_limiter = None
# A ``workers=`` argument in force in this Python thread (see ``workers_scope``).
_local = threading.local()


def get_num_threads():
    """Number of OpenMP threads fastconv's kernels use in the calling thread.

    Honours ``OMP_NUM_THREADS``, :func:`set_num_threads` and
    ``threadpoolctl.threadpool_limits`` (the smallest of them wins).
    """
    global _openmp_started
    if _forked_after_openmp:
        return 1
    scoped = getattr(_local, "workers", None)
    if scoped is not None:
        if scoped > 1:
            _openmp_started = True
        return scoped
    n = _runtime.max_threads()
    if _user_threads is not None:
        n = min(n, _user_threads)
    n = max(1, n)
    if n > 1:
        _openmp_started = True
    return n


def _after_fork_in_child():
    global _forked_after_openmp
    _forked_after_openmp = _openmp_started


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def set_num_threads(n):
    """Set the number of threads fastconv's kernels use.

    Parameters
    ----------
    n : int
        Number of threads, >= 1.
    """
    global _user_threads
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"set_num_threads: expected n to be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"set_num_threads: expected n >= 1, got {n}")
    _user_threads = int(n)
    _runtime.set_threads(int(n))


def _scipy_blas_threads_api():
    """(get, set) of the OpenBLAS that scipy.linalg.cython_blas calls, or None.

    Its thread count is process-wide, so setting it from any Python thread
    holds every concurrent GEMM to one thread.
    """
    import ctypes

    import scipy.linalg.cython_blas  # noqa: F401  (loads the library)
    from threadpoolctl import threadpool_info

    for info in threadpool_info():
        if info["internal_api"] != "openblas" or "scipy.libs" not in info["filepath"]:
            continue
        lib = ctypes.CDLL(info["filepath"])
        for prefix in (info.get("prefix") or "", "scipy_openblas", "openblas"):
            get = getattr(lib, f"{prefix}_get_num_threads", None)
            put = getattr(lib, f"{prefix}_set_num_threads", None)
            if get is not None and put is not None:
                put.argtypes = [ctypes.c_int]
                return get, put
    return None


class _Limiter:
    """Hold the kernels' BLAS to one thread; threadpoolctl when the library is unknown."""

    def __init__(self):
        self._api = _scipy_blas_threads_api()
        self._saved = None

    def enter(self):
        if self._api is not None:
            get, put = self._api
            self._saved = get()
            put(1)
        else:
            from threadpoolctl import threadpool_limits
            self._saved = threadpool_limits(limits=1, user_api="blas")

    def exit(self):
        if self._api is not None:
            self._api[1](self._saved)
        else:
            self._saved.restore_original_limits()


class single_threaded_blas:
    """Context manager holding the kernels' BLAS to one thread.

    Reference-counted across Python threads: the first caller in sets the
    limit, the last one out restores the previous setting.
    """

    def __enter__(self):
        global _blas_depth, _blas_limiter
        with _lock:
            if _blas_limiter is None:
                _blas_limiter = _Limiter()
            if _blas_depth == 0:
                _blas_limiter.enter()
            _blas_depth += 1
        return self

    def __exit__(self, *exc):
        global _blas_depth
        with _lock:
            _blas_depth -= 1
            if _blas_depth == 0:
                _blas_limiter.exit()
        return False


def resolve_workers(workers, op):
    """Threads for a ``workers=`` argument, as ``scipy.fft`` reads it.

    None: fastconv's thread setting (:func:`get_num_threads`); a positive int:
    that many threads; -1: every core of the machine, -2: all but one, and so
    on.  0 or fewer than ``-cpu_count`` is a ValueError, a non-int a TypeError.
    """
    if workers is None:
        return get_num_threads()
    if isinstance(workers, (bool, np.bool_)) or not isinstance(workers, (int, np.integer)):
        raise TypeError(f"{op}: expected workers to be None or an int, got {workers!r}")
    workers = int(workers)
    if workers > 0:
        n = workers
    else:
        cores = os.cpu_count() or 1
        n = cores + 1 + workers
        if workers == 0 or n < 1:
            raise ValueError(f"{op}: expected workers >= 1, or -1 (all {cores} cores) down to "
                             f"-{cores}, or None; got {workers}")
    return 1 if _forked_after_openmp else n


class workers_scope:
    """Context manager: :func:`get_num_threads` returns ``n`` in this Python thread.

    How a ``workers=`` argument reaches kernels that read the thread setting
    themselves; other Python threads are unaffected.
    """

    def __init__(self, n):
        self._n = n

    def __enter__(self):
        self._saved = getattr(_local, "workers", None)
        _local.workers = self._n
        return self

    def __exit__(self, *exc):
        _local.workers = self._saved
        return False
