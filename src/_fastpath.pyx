"""Helpers of the per-call fast path: small loops that NumPy would run as several calls.

Built once (no SIMD variants): they are memory-bound loops the compiler
vectorises at the baseline instruction set.
"""
cimport numpy as cnp
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_FromStringAndSize

import numpy as np

cnp.import_array()


cdef bint finite_f32(const uint32_t* bits, Py_ssize_t n) noexcept nogil:
    # An all-ones exponent is inf or NaN; an integer OR-reduction vectorises.
    cdef uint32_t bad = 0
    cdef Py_ssize_t i
    for i in range(n):
        bad |= (bits[i] & 0x7f800000u) == 0x7f800000u
    return bad == 0


cdef bint finite_f64(const uint64_t* bits, Py_ssize_t n) noexcept nogil:
    cdef uint64_t bad = 0
    cdef uint64_t mask = 0x7ff0000000000000u
    cdef Py_ssize_t i
    for i in range(n):
        bad |= (bits[i] & mask) == mask
    return bad == 0


def all_finite(cnp.ndarray a not None):
    """``bool(np.isfinite(a).all())`` without NumPy's temporary boolean array.

    Parameters
    ----------
    a : ndarray of float32, float64, complex64 or complex128
        Other dtypes, and arrays that are not C-contiguous, aligned and in
        native byte order, go through NumPy.
    """
    cdef int kind = cnp.PyArray_TYPE(a)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(a)
    cdef const void* data = cnp.PyArray_DATA(a)
    if not (cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a)
            and cnp.PyArray_ISNOTSWAPPED(a)):
        return bool(np.isfinite(a).all())
    cdef bint ok
    if kind == cnp.NPY_FLOAT or kind == cnp.NPY_CFLOAT:
        n *= 2 if kind == cnp.NPY_CFLOAT else 1
        with nogil:
            ok = finite_f32(<const uint32_t*> data, n)
        return ok
    if kind == cnp.NPY_DOUBLE or kind == cnp.NPY_CDOUBLE:
        n *= 2 if kind == cnp.NPY_CDOUBLE else 1
        with nogil:
            ok = finite_f64(<const uint64_t*> data, n)
        return ok
    return bool(np.isfinite(a).all())


def copy_into_padded(cnp.ndarray x not None, cnp.ndarray xp not None, tuple pad):
    """``xp[:, :, pd:, ph:, pw:] = x`` clipped to ``xp``: the copy of a zero-padded input.

    Both arrays 5-D, C-contiguous, of one dtype; ``xp`` is already zero
    outside.  One ``memcpy`` per row instead of NumPy's slicing machinery
    (which costs a few microseconds on a tiny call).
    """
    if not (cnp.PyArray_IS_C_CONTIGUOUS(x) and cnp.PyArray_IS_C_CONTIGUOUS(xp)
            and x.ndim == 5 and xp.ndim == 5 and x.dtype == xp.dtype
            and x.shape[0] == xp.shape[0] and x.shape[1] == xp.shape[1]):
        raise ValueError("copy_into_padded: expected two C-contiguous 5-D arrays of one "
                         "dtype with the same (N, C)")
    cdef Py_ssize_t qd = pad[0], qh = pad[1], qw = pad[2]
    cdef Py_ssize_t D = x.shape[2], H = x.shape[3], W = x.shape[4]
    cdef Py_ssize_t De = xp.shape[2], He = xp.shape[3], We = xp.shape[4]
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1], item = x.itemsize
    # the part of x that lands inside xp
    cdef Py_ssize_t cd = max(0, min(D, De - qd)), ch = max(0, min(H, He - qh))
    cdef Py_ssize_t cw = max(0, min(W, We - qw))
    cdef const char* src = <const char*> cnp.PyArray_DATA(x)
    cdef char* dst = <char*> cnp.PyArray_DATA(xp)
    cdef Py_ssize_t pl, d, h
    if cw == 0:
        return
    with nogil:
        for pl in range(planes):
            for d in range(cd):
                for h in range(ch):
                    memcpy(dst + (((pl * De + d + qd) * He + h + qh) * We + qw) * item,
                           src + (((pl * D + d) * H + h) * W) * item, cw * item)


cdef object _with_types(object value):
    # A tuple or list option is keyed with its elements' types: (1, True) == (1, 1).
    if type(value) is tuple or type(value) is list:
        return (type(value), tuple(value), tuple(map(type, value)))
    return (type(value), value)


cdef enum:
    KEY_MAX_DIMS = 8        # deeper arrays (invalid for a convolution) are keyed in Python


cdef object _arrays_key(tuple arrays):
    """The arrays' part of a call signature: one bytes object of their layouts.

    Per array its rank, type number, byte order, item size, shape and strides
    (a few C reads, where the Python attributes cost a tuple each and a dtype
    hash); None as -1; False if an item is not an ndarray (no fast path).
    """
    cdef Py_ssize_t words[3 * (4 + 2 * KEY_MAX_DIMS)]
    cdef Py_ssize_t n = 0, i, nd
    cdef cnp.ndarray a
    if len(arrays) > 3:
        return _arrays_key_py(arrays)
    for item in arrays:
        if item is None:
            words[n] = -1
            n += 1
            continue
        if type(item) is not np.ndarray:
            return False
        a = <cnp.ndarray> item
        nd = cnp.PyArray_NDIM(a)
        if nd > KEY_MAX_DIMS:
            return _arrays_key_py(arrays)
        words[n] = nd
        words[n + 1] = cnp.PyArray_TYPE(a)
        words[n + 2] = cnp.PyArray_ISNOTSWAPPED(a)
        words[n + 3] = cnp.PyArray_ITEMSIZE(a)
        n += 4
        for i in range(nd):
            words[n + i] = cnp.PyArray_DIM(a, i)
            words[n + nd + i] = cnp.PyArray_STRIDE(a, i)
        n += 2 * nd
    return PyBytes_FromStringAndSize(<char*> words, n * sizeof(Py_ssize_t))


cdef object _arrays_key_py(tuple arrays):
    key = []
    for item in arrays:
        if item is None:
            key.append(None)
        elif type(item) is np.ndarray:
            key.append((item.shape, item.dtype, item.strides))
        else:
            return False
    return tuple(key)


def call_signature(tag, tuple arrays, tuple options):
    """The key of a call in a prepared-call cache, or None when it cannot have one.

    ``arrays``: the call's array arguments; each ndarray is keyed by its shape,
    dtype and strides, None by itself, anything else (a list, a memmap, a
    tensor) gives None: no fast path.  ``options``: plain ints, strings and
    None stand for themselves; any other value is keyed with its type (and a
    tuple's or list's elements with theirs), so that a value that merely
    compares equal (True == 1, 1.0 == 1) never shares a key.  An unhashable
    option (an ndarray stride) leaves a key that the cache declines.
    """
    layout = _arrays_key(arrays)
    if layout is False:
        return None
    cdef list key = [tag, layout]
    for value in options:
        if type(value) is int or type(value) is str or value is None:
            key.append(value)
        else:
            key.append(_with_types(value))
    return tuple(key)


# -- prepared forward calls without Python frames ---------------------------------------

cdef bint _observed = False


def observe_dispatch(bint on):
    """While on, every prepared call takes its Python path, through ``_dispatch.run``
    (where the runs are recorded: ``_dispatch.recorded``)."""
    global _observed
    _observed = on


cdef inline bint _plain(object a, cnp.dtype dtype):
    # An aligned, C-contiguous ndarray of the compute dtype: used as it is.
    return type(a) is np.ndarray and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray> a) \
        and cnp.PyArray_ISALIGNED(<cnp.ndarray> a) \
        and cnp.PyArray_EquivTypes(<cnp.dtype> cnp.PyArray_DESCR(<cnp.ndarray> a), dtype)


cdef class FastForwardCall:
    """A prepared (transposed) convolution's usual call, run in C.

    When the input and the weight are C-contiguous ndarrays of the compute
    dtype, the bias is None or one too, there is no ``out=``, the weight is
    finite and dispatch is not observed: the output is allocated in the
    caller's shape and ``kernel.run(input, weight, bias, output, threads)``
    fills it (the registry's choice, prepared for these shapes).  Any other
    call goes to ``slow``, the Python prepared call, which gives the same bits.

    Parameters
    ----------
    slow : callable
        ``slow(input, weight, bias, out)``.
    kernel : object
        Its ``run`` takes arrays of the prepared sizes, any batch.
    dtype : numpy.dtype
        Compute and output dtype.
    out_shape : tuple of int
        The output's shape as the caller sees it.
    batched : bool
        Whether axis 0 of the input is the batch.
    macs : int
        Multiply-adds per sample.
    min_macs : int
        ``_costs.MIN_MACS_PER_THREAD``: below twice that, one thread without asking.
    threads_for : callable
        ``threads_for(total_macs)``, asked on every larger call.
    """

    cdef readonly object slow
    cdef object kernel, threads_for
    cdef cnp.dtype dtype
    cdef int typenum, nd
    cdef cnp.npy_intp out_dims[KEY_MAX_DIMS]
    cdef Py_ssize_t macs, min_macs
    cdef bint batched

    def __init__(self, slow, kernel, cnp.dtype dtype, tuple out_shape, bint batched,
                 Py_ssize_t macs, Py_ssize_t min_macs, threads_for):
        if len(out_shape) > KEY_MAX_DIMS:
            raise ValueError(f"FastForwardCall: out_shape {out_shape} has more than "
                             f"{KEY_MAX_DIMS} dims")
        self.slow, self.kernel, self.threads_for = slow, kernel, threads_for
        self.dtype, self.typenum, self.nd = dtype, dtype.num, len(out_shape)
        for i, n in enumerate(out_shape):
            self.out_dims[i] = n
        self.batched, self.macs, self.min_macs = batched, macs, max(1, min_macs)

    def __call__(self, input, weight, bias=None, out=None):
        if (out is not None or _observed or not _plain(input, self.dtype)
                or not _plain(weight, self.dtype)
                or not (bias is None or _plain(bias, self.dtype))
                or not _finite(<cnp.ndarray> weight)):
            return self.slow(input, weight, bias, out)
        cdef Py_ssize_t n = cnp.PyArray_DIM(<cnp.ndarray> input, 0) if self.batched else 1
        cdef Py_ssize_t total = n * self.macs
        threads = 1 if total // self.min_macs <= 1 else self.threads_for(total)
        result = cnp.PyArray_EMPTY(self.nd, self.out_dims, self.typenum, 0)
        self.kernel.run(input, weight, bias, result, threads)
        return result


cdef bint _finite(cnp.ndarray a):
    cdef int kind = cnp.PyArray_TYPE(a)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(a)
    cdef const void* data = cnp.PyArray_DATA(a)
    if kind == cnp.NPY_FLOAT:
        return finite_f32(<const uint32_t*> data, n)
    if kind == cnp.NPY_DOUBLE:
        return finite_f64(<const uint64_t*> data, n)
    return all_finite(a)


def as_compute(a, cnp.dtype dtype, tuple shape):
    """``np.ascontiguousarray(a, dtype).reshape(shape)`` in one call.

    A C-contiguous ndarray of ``dtype`` (the usual case) is reshaped through the
    C API, without the two method calls' argument parsing; anything else goes
    through NumPy (a converting copy; the caller has validated the argument).
    """
    cdef cnp.ndarray arr
    if type(a) is np.ndarray:
        arr = <cnp.ndarray> a
        if cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_EquivTypes(
                <cnp.dtype> cnp.PyArray_DESCR(arr), dtype):
            return cnp.PyArray_Reshape(arr, shape)
    return np.ascontiguousarray(a, dtype).reshape(shape)
