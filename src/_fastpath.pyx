"""Helpers of the per-call fast path: small loops that NumPy would run as several calls.

Built once (no SIMD variants): they are memory-bound loops the compiler
vectorises at the baseline instruction set.
"""
cimport numpy as cnp
from libc.stdint cimport uint32_t, uint64_t

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
