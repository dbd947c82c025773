"""Thread-count resolution and the BLAS limiter.

fastconv parallelises with OpenMP and calls BLAS from inside its parallel
regions, one single-threaded GEMM per OpenMP thread.  BLAS is therefore held
to one thread while a kernel runs, so OpenMP x BLAS threads never multiply.
"""
import os
import threading

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
_controller = None


def get_num_threads():
    """Number of OpenMP threads fastconv's kernels use in the calling thread.

    Honours ``OMP_NUM_THREADS``, :func:`set_num_threads` and
    ``threadpoolctl.threadpool_limits`` (the smallest of them wins).
    """
    global _openmp_started
    if _forked_after_openmp:
        return 1
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
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: expected n to be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"set_num_threads: expected n >= 1, got {n}")
    _user_threads = n
    _runtime.set_threads(n)


def _get_controller():
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController()
    return _controller


class single_threaded_blas:
    """Context manager holding every BLAS library to one thread.

    Reference-counted across Python threads: the first caller in sets the
    limit, the last one out restores the previous setting.
    """

    def __enter__(self):
        global _blas_depth, _blas_limiter
        with _lock:
            if _blas_depth == 0:
                _blas_limiter = _get_controller().limit(limits=1, user_api="blas")
            _blas_depth += 1
        return self

    def __exit__(self, *exc):
        global _blas_depth, _blas_limiter
        with _lock:
            _blas_depth -= 1
            if _blas_depth == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None
        return False
