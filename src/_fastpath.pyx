"""Helpers of the per-call fast path: small loops that NumPy would run as several calls.

Built once (no SIMD variants): they are memory-bound loops the compiler
vectorises at the baseline instruction set.
"""
cimport numpy as cnp
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy
from cython.parallel cimport prange
from cpython.bytes cimport PyBytes_FromStringAndSize

import math

import numpy as np

from fastconv._workspace import MIN_BYTES as ALIGNED_MIN_BYTES, aligned_empty

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


def copy_array(cnp.ndarray a not None, int num_threads):
    """A C-contiguous copy of the C-contiguous ``a``, in chunks on ``num_threads``.

    One thread's copy stops at about 10 GB/s on these machines; two threads
    copy a 25.7 MB activation in 1.3-1.7 ms instead of 2.3-2.4 (a layer keeps
    such a copy of its input on every forward).
    """
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError("copy_array: expected a C-contiguous array")
    cdef cnp.ndarray out = np.empty_like(a, order="C", subok=False)
    cdef const char* src = <const char*> cnp.PyArray_DATA(a)
    cdef char* dst = <char*> cnp.PyArray_DATA(out)
    cdef Py_ssize_t nbytes = cnp.PyArray_NBYTES(a), chunk = 1 << 20
    cdef Py_ssize_t chunks = (nbytes + chunk - 1) // chunk, i
    if num_threads < 2 or chunks < 2:
        memcpy(dst, src, nbytes)
        return out
    with nogil:
        for i in prange(chunks, num_threads=num_threads, schedule="static"):
            memcpy(dst + i * chunk, src + i * chunk, min(chunk, nbytes - i * chunk))
    return out


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


# -- prepared calls run without Python frames ---------------------------------------------

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


cdef class FastCall:
    """A prepared call's usual case, run in C: the base of the public functions' fast paths.

    When the arrays are C-contiguous, aligned ndarrays of the compute dtype,
    the weight is finite (where that matters: ``check_finite``) and dispatch
    is not observed, the result is
    allocated in the caller's shape and ``kernel.run(x, w, bias, result,
    threads)`` fills it (the registry's choice, prepared for these shapes).
    Any other call goes to ``slow``, the Python prepared call, which gives
    the same bits.

    Parameters
    ----------
    slow : callable
        The Python prepared call, with the public function's arguments.
    kernel : object
        Its ``run`` takes arrays of the prepared sizes, any batch.
    dtype : numpy.dtype
        Compute and result dtype.
    out_shape : tuple of int
        The result's shape as the caller sees it.
    batched : bool
        Whether axis 0 of the kernel's input is the batch.
    macs : int
        Multiply-adds per sample.
    min_macs : int
        ``_costs.MIN_MACS_PER_THREAD``: below twice that, one thread without asking.
    threads_for : callable
        ``threads_for(total_macs)``, asked on every larger call.
    check_finite : bool
        Whether a weight must be finite for ``kernel`` (False when an inf or NaN
        would not change the registry's choice: no pass over the weight).
    """

    cdef readonly object slow
    cdef object kernel, threads_for
    cdef cnp.dtype dtype
    cdef int typenum, nd
    cdef cnp.npy_intp out_dims[KEY_MAX_DIMS]
    cdef Py_ssize_t macs, min_macs
    cdef bint batched, check_finite
    cdef object aligned_shape          # large results start on a cache line; else None

    def __init__(self, slow, kernel, cnp.dtype dtype, tuple out_shape, bint batched,
                 Py_ssize_t macs, Py_ssize_t min_macs, threads_for, bint check_finite=True):
        if len(out_shape) > KEY_MAX_DIMS:
            raise ValueError(f"{type(self).__name__}: out_shape {out_shape} has more than "
                             f"{KEY_MAX_DIMS} dims")
        self.slow, self.kernel, self.threads_for = slow, kernel, threads_for
        self.dtype, self.typenum, self.nd = dtype, dtype.num, len(out_shape)
        for i, n in enumerate(out_shape):
            self.out_dims[i] = n
        self.batched, self.macs, self.min_macs = batched, macs, max(1, min_macs)
        self.check_finite = check_finite
        large = math.prod(out_shape) * dtype.itemsize >= ALIGNED_MIN_BYTES
        self.aligned_shape = tuple(out_shape) if large else None

    cdef bint usable(self, x, w, bias, bint weight=True):
        """Whether the kernel can take these arrays as they are (``weight``: ``w`` is
        a weight, which must be finite where ``check_finite``)."""
        return not _observed and _plain(x, self.dtype) and _plain(w, self.dtype) \
            and (bias is None or _plain(bias, self.dtype)) \
            and (not weight or not self.check_finite or _finite(<cnp.ndarray> w))

    cdef object run(self, x, w, bias):
        cdef Py_ssize_t n = cnp.PyArray_DIM(<cnp.ndarray> x, 0) if self.batched else 1
        cdef Py_ssize_t total = n * self.macs
        threads = 1 if total // self.min_macs <= 1 else self.threads_for(total)
        if self.aligned_shape is None:
            result = cnp.PyArray_EMPTY(self.nd, self.out_dims, self.typenum, 0)
        else:
            result = aligned_empty(self.aligned_shape, self.dtype)
        self.kernel.run(x, w, bias, result, threads)
        return result


cdef class FastForwardCall(FastCall):
    """``conv*d(input, weight, bias)`` and ``conv_transpose*d``: see :class:`FastCall`
    (an ``out=`` goes to the Python path)."""

    def __call__(self, input, weight, bias=None, out=None):
        if out is None and self.usable(input, weight, bias):
            return self.run(input, weight, bias)
        return self.slow(input, weight, bias, out)


cdef class FastInputGradCall(FastCall):
    """``grad.conv*d_input(weight, grad_output)``: see :class:`FastCall` (the kernel
    convolves grad_output, axis 0 its batch)."""

    def __call__(self, weight, grad_output):
        if self.usable(grad_output, weight, None):
            return self.run(grad_output, weight, None)
        return self.slow(weight, grad_output)


cdef class FastWeightGradCall(FastCall):
    """``grad.conv*d_weight(input, grad_output)``: see :class:`FastCall` (the kernel
    reads the input, axis 0 its batch, and grad_output; it fills the weight
    gradient)."""

    def __call__(self, input, grad_output):
        if self.usable(input, grad_output, None, False):
            return self.run(input, grad_output, None)
        return self.slow(input, grad_output)


cdef bint _finite(cnp.ndarray a):
    cdef int kind = cnp.PyArray_TYPE(a)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(a)
    cdef const void* data = cnp.PyArray_DATA(a)
    if kind == cnp.NPY_FLOAT:
        return finite_f32(<const uint32_t*> data, n)
    if kind == cnp.NPY_DOUBLE:
        return finite_f64(<const uint64_t*> data, n)
    return all_finite(a)


# -- complex <-> real planes (fastconv._planar), one pass each -----------------------------
#
# A complex array is read as interleaved (re, im) pairs of its real dtype.  NumPy
# would take two to four passes (and temporaries) per conversion; these take one,
# over the (sample, channel) planes in parallel.  The arithmetic is _planar's, in
# the same order, so the bits do not change.

ctypedef fused real_t:
    float
    double


cdef void split_plane(const real_t* src, real_t* re, real_t* im, real_t* both,
                      Py_ssize_t n) noexcept nogil:
    """Deinterleave n complex values; ``both`` (if not NULL) gets re + im."""
    cdef Py_ssize_t i
    for i in range(n):
        re[i] = src[2 * i]
        im[i] = src[2 * i + 1]
    if both != NULL:
        for i in range(n):
            both[i] = src[2 * i] + src[2 * i + 1]


cdef void merge_plane(real_t* dst, const real_t* re, const real_t* im, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        dst[2 * i] = re[i]
        dst[2 * i + 1] = im[i]


cdef void ungauss_plane(real_t* dst, const real_t* t0, const real_t* t1, const real_t* t2,
                        Py_ssize_t n) noexcept nogil:
    # yr = t0 - t1, yi = (t2 - t0) - t1: _planar.ungauss's order
    cdef Py_ssize_t i
    for i in range(n):
        dst[2 * i] = t0[i] - t1[i]
        dst[2 * i + 1] = (t2[i] - t0[i]) - t1[i]


cdef inline Py_ssize_t real_plane(Py_ssize_t plane, Py_ssize_t C, Py_ssize_t groups,
                                  bint gauss) noexcept nogil:
    """The real plane that complex plane (n, c) = divmod(plane, C) puts its real part
    in; the imaginary part follows C planes later (Gauss form: C more for re + im)
    or C / groups planes later (its group's imaginary channels)."""
    cdef Py_ssize_t n = plane // C, c = plane % C, cg = C // groups
    if gauss:
        return n * 3 * C + c
    return (n * groups + c // cg) * 2 * cg + c % cg


cdef int _check_pair(cnp.ndarray c, cnp.ndarray r, Py_ssize_t groups, bint gauss,
                     str what) except -1:
    """``c`` complex, ``r`` of its real dtype with 3x (``gauss``) or 2x its channels;
    ``groups`` divides them (1 for the Gauss form)."""
    cdef Py_ssize_t factor = 3 if gauss else 2
    ok = (cnp.PyArray_IS_C_CONTIGUOUS(c) and cnp.PyArray_IS_C_CONTIGUOUS(r)
          and cnp.PyArray_ISALIGNED(c) and cnp.PyArray_ISALIGNED(r)
          and cnp.PyArray_ISNOTSWAPPED(c) and cnp.PyArray_ISNOTSWAPPED(r)
          and cnp.PyArray_NDIM(c) >= 2 and cnp.PyArray_NDIM(r) == cnp.PyArray_NDIM(c)
          and ((cnp.PyArray_TYPE(c) == cnp.NPY_CFLOAT and cnp.PyArray_TYPE(r) == cnp.NPY_FLOAT)
               or (cnp.PyArray_TYPE(c) == cnp.NPY_CDOUBLE
                   and cnp.PyArray_TYPE(r) == cnp.NPY_DOUBLE))
          and cnp.PyArray_SIZE(r) == factor * cnp.PyArray_SIZE(c)
          and cnp.PyArray_DIM(r, 0) == cnp.PyArray_DIM(c, 0)
          and cnp.PyArray_DIM(r, 1) == factor * cnp.PyArray_DIM(c, 1))
    if not ok:
        raise ValueError(f"{what}: expected a C-contiguous complex array and a real one of its "
                         f"precision with {factor}x its channels, got {(<object> c).dtype} "
                         f"{(<object> c).shape} and {(<object> r).dtype} {(<object> r).shape}")
    cdef Py_ssize_t C = cnp.PyArray_DIM(c, 1)
    if groups < 1 or C % groups or (gauss and groups != 1):
        raise ValueError(f"{what}: groups={groups} for {C} channels (gauss={gauss})")
    return 0


def split_complex(cnp.ndarray x not None, cnp.ndarray out not None, Py_ssize_t groups,
                  bint gauss, int num_threads=1):
    """Complex (N, C, *S) -> real planes, written into ``out``.

    ``gauss``: ``out`` is (N, 3C, *S) with x.real, x.imag, x.real + x.imag
    (``_planar.gauss_input``); else (N, 2C, *S) with each group's real then
    imaginary channels (``_planar.planar``).
    """
    _check_pair(x, out, groups, gauss, "split_complex")
    cdef Py_ssize_t N = cnp.PyArray_DIM(x, 0), C = cnp.PyArray_DIM(x, 1)
    cdef Py_ssize_t S = cnp.PyArray_SIZE(x) // (N * C) if N * C else 0
    cdef Py_ssize_t plane, re_at, im_at
    cdef char* src = <char*> cnp.PyArray_DATA(x)
    cdef char* dst = <char*> cnp.PyArray_DATA(out)
    cdef bint single = cnp.PyArray_TYPE(out) == cnp.NPY_FLOAT
    for plane in prange(N * C, nogil=True, num_threads=max(1, num_threads), schedule="static"):
        re_at = real_plane(plane, C, groups, gauss) * S
        im_at = re_at + (C if gauss else C // groups) * S
        if single:
            split_plane((<const float*> src) + 2 * plane * S, (<float*> dst) + re_at,
                        (<float*> dst) + im_at,
                        (<float*> dst) + im_at + C * S if gauss else NULL, S)
        else:
            split_plane((<const double*> src) + 2 * plane * S, (<double*> dst) + re_at,
                        (<double*> dst) + im_at,
                        (<double*> dst) + im_at + C * S if gauss else NULL, S)


def merge_complex(cnp.ndarray t not None, cnp.ndarray out not None, Py_ssize_t groups,
                  bint gauss, int num_threads=1):
    """Real planes -> complex (N, C, *S) ``out``: the inverse of :func:`split_complex`'s
    layouts (``gauss``: yr = t0 - t1, yi = t2 - t0 - t1 as ``_planar.ungauss``)."""
    _check_pair(out, t, groups, gauss, "merge_complex")
    if not cnp.PyArray_ISWRITEABLE(out):
        raise ValueError("merge_complex: out is read-only")
    cdef Py_ssize_t N = cnp.PyArray_DIM(out, 0), C = cnp.PyArray_DIM(out, 1)
    cdef Py_ssize_t S = cnp.PyArray_SIZE(out) // (N * C) if N * C else 0
    cdef Py_ssize_t plane, re_at, im_at
    cdef char* src = <char*> cnp.PyArray_DATA(t)
    cdef char* dst = <char*> cnp.PyArray_DATA(out)
    cdef bint single = cnp.PyArray_TYPE(t) == cnp.NPY_FLOAT
    for plane in prange(N * C, nogil=True, num_threads=max(1, num_threads), schedule="static"):
        re_at = real_plane(plane, C, groups, gauss) * S
        im_at = re_at + (C if gauss else C // groups) * S
        if gauss:
            if single:
                ungauss_plane((<float*> dst) + 2 * plane * S, (<const float*> src) + re_at,
                              (<const float*> src) + im_at,
                              (<const float*> src) + im_at + C * S, S)
            else:
                ungauss_plane((<double*> dst) + 2 * plane * S, (<const double*> src) + re_at,
                              (<const double*> src) + im_at,
                              (<const double*> src) + im_at + C * S, S)
        else:
            if single:
                merge_plane((<float*> dst) + 2 * plane * S, (<const float*> src) + re_at,
                            (<const float*> src) + im_at, S)
            else:
                merge_plane((<double*> dst) + 2 * plane * S, (<const double*> src) + re_at,
                            (<const double*> src) + im_at, S)


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
