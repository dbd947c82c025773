# Convolution geometry shared by all kernels, in canonical 3-D form
# (1-D and 2-D problems arrive with leading unit spatial dims).
# All index arithmetic is Py_ssize_t (64-bit).

#
# Convolution:            x (N, C, D, H, W) -> out (N, Co, Do, Ho, Wo),
#                         input index  i = o * stride + k * dilation - pad.
# Transposed convolution: x (N, C, D, H, W) -> out (N, Co, Do, Ho, Wo),
#                         output index o = i * stride + k * dilation - pad.
# Only the left padding is stored: the right padding is implied by the sizes,
# and every kernel bounds-checks, so an output smaller than the formula's
# (gradients crop) is fine.
ctypedef struct Geometry:
    Py_ssize_t N, C, D, H, W
    Py_ssize_t Co, Do, Ho, Wo
    Py_ssize_t KD, KH, KW
    Py_ssize_t sd, sh, sw
    Py_ssize_t pd, ph, pw
    Py_ssize_t dd, dh, dw
    Py_ssize_t groups


cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """Ceiling of a / b for b > 0 and any sign of a (C division truncates)."""
    if a >= 0:
        return (a + b - 1) // b
    return -((-a) // b)


cdef inline void strided_range(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t length,
                               Py_ssize_t lo, Py_ssize_t hi,
                               Py_ssize_t* out_lo, Py_ssize_t* out_hi) noexcept nogil:
    """Clip [lo, hi) to the j with 0 <= j * stride + offset < length.

    The result always lies inside [lo, hi] (an empty range included): callers
    fill [lo, out_lo) and [out_hi, hi) with zeros.
    """
    cdef Py_ssize_t a = ceil_div(-offset, stride)
    cdef Py_ssize_t b = ceil_div(length - offset, stride)
    if a < lo:
        a = lo
    if a > hi:
        a = hi
    if b > hi:
        b = hi
    if b < a:
        b = a
    out_lo[0] = a
    out_hi[0] = b


cdef inline Geometry make_geometry(Py_ssize_t* x_shape, Py_ssize_t* out_shape,
                                   Py_ssize_t* w_shape, tuple stride, tuple pad,
                                   tuple dilation, Py_ssize_t groups):
    """Fill a Geometry from 5-D shapes and 3-tuples (called with the GIL)."""
    cdef Geometry g
    g.N, g.C, g.D, g.H, g.W = x_shape[0], x_shape[1], x_shape[2], x_shape[3], x_shape[4]
    g.Co, g.Do, g.Ho, g.Wo = out_shape[1], out_shape[2], out_shape[3], out_shape[4]
    g.KD, g.KH, g.KW = w_shape[2], w_shape[3], w_shape[4]
    g.sd, g.sh, g.sw = stride
    g.pd, g.ph, g.pw = pad
    g.dd, g.dh, g.dw = dilation
    g.groups = groups
    return g


cdef inline void decode_tap(Py_ssize_t r, const Geometry* g, Py_ssize_t* ci, Py_ssize_t* kd,
                            Py_ssize_t* kh, Py_ssize_t* kw) noexcept nogil:
    """Row r = ((ci * KD + kd) * KH + kh) * KW + kw of an im2col matrix, decoded."""
    kw[0] = r % g.KW
    r = r // g.KW
    kh[0] = r % g.KH
    r = r // g.KH
    kd[0] = r % g.KD
    ci[0] = r // g.KD


cdef inline void decode_cell(Py_ssize_t q, Py_ssize_t H, Py_ssize_t W, Py_ssize_t* d,
                             Py_ssize_t* h, Py_ssize_t* w) noexcept nogil:
    """Flat index q = (d * H + h) * W + w of a (., H, W) grid, decoded."""
    w[0] = q % W
    q = q // W
    h[0] = q % H
    d[0] = q // H


cdef inline Py_ssize_t grid_length(const Geometry* g) noexcept nogil:
    """Cells of the padded-width grid of a stride-1 convolution on a padded input
    (D, H, W): output (od, oh, ow) sits at (od * H + oh) * W + ow."""
    return ((g.Do - 1) * g.H + (g.Ho - 1)) * g.W + g.Wo


cdef inline Py_ssize_t tap_shift(const Geometry* g, Py_ssize_t kd, Py_ssize_t kh,
                                 Py_ssize_t kw) noexcept nogil:
    """Offset of tap (kd, kh, kw) on the padded grid: grid cell q reads q + shift."""
    return (kd * g.dd * g.H + kh * g.dh) * g.W + kw * g.dw
