"""Helpers of the per-call fast path: small loops that NumPy would run as several calls.

Built once (no SIMD variants): they are memory-bound loops the compiler
vectorises at the baseline instruction set.
"""
cimport numpy as cnp
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy

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
