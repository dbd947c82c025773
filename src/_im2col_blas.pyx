"""im2col / col2im + BLAS GEMM kernels (``scipy.linalg.cython_blas``).

Work is split into jobs of (sample, group, tile); every OpenMP thread owns a
column buffer of bounded size and calls a single-threaded GEMM, so OpenMP and
BLAS threads never multiply (the caller holds BLAS to one thread).  Tile
sizes are chosen by the caller from the problem shape only, never from the
thread count, so each output element is computed by the same sequence of
floating-point operations whatever the number of threads: bit-identical
results for any thread count.

Row-major arrays are handed to column-major BLAS as their transposes:
out_g (cog x P) = W_g (cog x K) @ col (K x P) becomes
out_g^T (P x cog) = col^T (P x K) @ W_g^T (K x cog).
"""
from libc.limits cimport INT_MAX
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from cython.parallel cimport parallel, prange

from _blas cimport gemm
from _fused cimport conv_t
from _geometry cimport (Geometry, ceil_div, decode_cell, decode_tap, grid_length,
                        make_geometry, strided_range, tap_shift)
from _parallel cimport Driver, finish, interrupted, proceed, start


cdef void im2col_tile(const conv_t* xg, conv_t* col, const Geometry* g,
                      Py_ssize_t r0, Py_ssize_t r1,
                      Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """col[r - r0, p - p0] = x_g at the input cell that tap r reads for output p.

    Rows r = (ci, kd, kh, kw) of one group; out-of-range cells (zero padding)
    are written as 0.  ``col`` is (r1 - r0) x (p1 - p0), row-major.
    """
    cdef Py_ssize_t m = p1 - p0
    cdef Py_ssize_t r, t, kw, kh, kd, ci, p, ow, oh, od, seg, id_, ih, lo, hi, j, off
    cdef conv_t* dst
    cdef const conv_t* xrow
    for r in range(r0, r1):
        decode_tap(r, g, &ci, &kd, &kh, &kw)
        off = kw * g.dw - g.pw
        dst = col + (r - r0) * m
        p = p0
        while p < p1:
            decode_cell(p, g.Ho, g.Wo, &od, &oh, &ow)
            seg = min(g.Wo - ow, p1 - p)
            id_ = od * g.sd + kd * g.dd - g.pd
            ih = oh * g.sh + kh * g.dh - g.ph
            if id_ < 0 or id_ >= g.D or ih < 0 or ih >= g.H:
                for j in range(seg):
                    dst[j] = 0
            else:
                xrow = xg + ((ci * g.D + id_) * g.H + ih) * g.W
                strided_range(off, g.sw, g.W, ow, ow + seg, &lo, &hi)
                for j in range(ow, lo):
                    dst[j - ow] = 0
                if g.sw == 1:
                    for j in range(lo, hi):
                        dst[j - ow] = xrow[j + off]
                else:
                    for j in range(lo, hi):
                        dst[j - ow] = xrow[j * g.sw + off]
                for j in range(hi, ow + seg):
                    dst[j - ow] = 0
            dst += seg
            p += seg


cdef void col2im_tile(const conv_t* col, conv_t* og, const Geometry* g,
                      Py_ssize_t r0, Py_ssize_t r1,
                      Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """Scatter-add col rows (cl, kd, kh, kw) of input positions [p0, p1) into og.

    ``og`` points at output channel cl = 0 of the rows' block; input position
    i lands on output o = i * stride + k * dilation - pad when in range.
    """
    cdef Py_ssize_t m = p1 - p0
    cdef Py_ssize_t oplane = g.Do * g.Ho * g.Wo
    cdef Py_ssize_t r, t, kw, kh, kd, cl, p, iw, ih, id_, seg, od, oh, lo, hi, j, off
    cdef const conv_t* src
    cdef conv_t* orow
    for r in range(r0, r1):
        decode_tap(r, g, &cl, &kd, &kh, &kw)
        off = kw * g.dw - g.pw
        src = col + (r - r0) * m
        p = p0
        while p < p1:
            decode_cell(p, g.H, g.W, &id_, &ih, &iw)
            seg = min(g.W - iw, p1 - p)
            od = id_ * g.sd + kd * g.dd - g.pd
            oh = ih * g.sh + kh * g.dh - g.ph
            if od >= 0 and od < g.Do and oh >= 0 and oh < g.Ho:
                orow = og + cl * oplane + (od * g.Ho + oh) * g.Wo
                # input columns j in [iw, iw + seg) whose output j*sw + off is in range
                lo = max(iw, ceil_div(-off, g.sw))
                hi = min(iw + seg, ceil_div(g.Wo - off, g.sw))
                if g.sw == 1:
                    for j in range(lo, hi):
                        orow[j + off] = orow[j + off] + src[j - iw]
                else:
                    for j in range(lo, hi):
                        orow[j * g.sw + off] = orow[j * g.sw + off] + src[j - iw]
            src += seg
            p += seg


cdef inline void pack_rows(const conv_t* src, Py_ssize_t ld, Py_ssize_t rows,
                           Py_ssize_t m, conv_t* dst) noexcept nogil:
    """dst (rows x m, contiguous) = src rows with leading dimension ld."""
    cdef Py_ssize_t i, j
    for i in range(rows):
        for j in range(m):
            dst[i * m + j] = src[i * ld + j]


cdef void forward_job(const conv_t* x, const conv_t* w, const conv_t* bias, bint has_bias,
                      conv_t* out, const Geometry* g, Py_ssize_t tile,
                      Py_ssize_t job, conv_t* col, conv_t* cbuf) noexcept nogil:
    cdef Py_ssize_t P = g.Do * g.Ho * g.Wo
    cdef Py_ssize_t ntiles = ceil_div(P, tile)
    cdef Py_ssize_t it = job % ntiles
    cdef Py_ssize_t grp = (job // ntiles) % g.groups
    cdef Py_ssize_t n = job // (ntiles * g.groups)
    cdef Py_ssize_t cig = g.C // g.groups, cog = g.Co // g.groups
    cdef Py_ssize_t K = cig * g.KD * g.KH * g.KW
    cdef Py_ssize_t p0 = it * tile, p1 = min(P, it * tile + tile), m = p1 - p0
    cdef const conv_t* xg = x + (n * g.C + grp * cig) * g.D * g.H * g.W
    cdef conv_t* og = out + (n * g.Co + grp * cog) * P + p0
    cdef const conv_t* a
    cdef Py_ssize_t lda, ldc, co, j
    cdef conv_t* c
    cdef conv_t beta = 0
    if col == NULL:                 # pointwise: x_g itself is the column matrix
        a = xg + p0
        lda = P
    else:
        im2col_tile(xg, col, g, 0, K, p0, p1)
        a = col
        lda = m
    if cbuf == NULL:
        c = og
        ldc = P
    else:                           # P exceeds BLAS's int: compute into a buffer
        c = cbuf
        ldc = m
    if has_bias:
        for co in range(cog):
            for j in range(m):
                c[co * ldc + j] = bias[grp * cog + co]
        beta = 1
    gemm(c'N', c'N', <int>m, <int>cog, <int>K, 1, a, <int>lda,
         w + grp * cog * K, <int>K, beta, c, <int>ldc)
    if cbuf != NULL:
        for co in range(cog):
            for j in range(m):
                og[co * P + j] = cbuf[co * m + j]


def conv_forward(const conv_t[:, :, :, :, ::1] x, const conv_t[:, :, :, :, ::1] w,
                 const conv_t[::1] bias, bint has_bias, conv_t[:, :, :, :, ::1] out,
                 tuple stride, tuple pad, tuple dilation, Py_ssize_t groups,
                 int num_threads, Py_ssize_t tile):
    """im2col + GEMM convolution into ``out``; jobs = (sample, group, P-tile)."""
    cdef Geometry g = make_geometry(&x.shape[0], &out.shape[0], &w.shape[0],
                                    stride, pad, dilation, groups)
    cdef Py_ssize_t P = g.Do * g.Ho * g.Wo
    cdef Py_ssize_t cig = g.C // groups, cog = g.Co // groups
    cdef Py_ssize_t K = cig * g.KD * g.KH * g.KW
    cdef bint pointwise = is_pointwise(&g) and P <= INT_MAX
    cdef bint big = P > INT_MAX
    cdef Py_ssize_t njobs = g.N * groups * ceil_div(P, tile), job
    cdef conv_t* col
    cdef conv_t* cbuf
    cdef bint scratch_ok
    if njobs == 0:
        return
    cdef Driver d = start(njobs, num_threads)
    with nogil, parallel(num_threads=d.threads, use_threads_if=d.threads > 1):
        col = NULL
        cbuf = NULL
        if not pointwise:
            col = <conv_t*> malloc(K * tile * sizeof(conv_t))
        if big:
            cbuf = <conv_t*> malloc(cog * tile * sizeof(conv_t))
        scratch_ok = (col != NULL or pointwise) and (cbuf != NULL or not big)
        for job in prange(njobs, schedule="dynamic", chunksize=1):
            if proceed(&d, scratch_ok):
                forward_job(&x[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], &bias[0], has_bias,
                            &out[0, 0, 0, 0, 0], &g, tile, job, col, cbuf)
        free(col)
        free(cbuf)
    finish(&d, "im2col buffer")


cdef void transpose_job(const conv_t* x, const conv_t* w, const conv_t* bias,
                        conv_t* out, const Geometry* g, Py_ssize_t tile,
                        Py_ssize_t cblock, Py_ssize_t job,
                        conv_t* col, conv_t* xbuf, Driver* d) noexcept nogil:
    """Output channels [c0, c1) of one (sample, group): GEMM per input tile, col2im."""
    cdef Py_ssize_t cig = g.C // g.groups, cog = g.Co // g.groups
    cdef Py_ssize_t nblocks = ceil_div(cog, cblock)
    cdef Py_ssize_t ib = job % nblocks
    cdef Py_ssize_t grp = (job // nblocks) % g.groups
    cdef Py_ssize_t n = job // (nblocks * g.groups)
    cdef Py_ssize_t c0 = ib * cblock, c1 = min(cog, ib * cblock + cblock)
    cdef Py_ssize_t kvol = g.KD * g.KH * g.KW
    cdef Py_ssize_t Pin = g.D * g.H * g.W, Pout = g.Do * g.Ho * g.Wo
    cdef const conv_t* xg = x + (n * g.C + grp * cig) * Pin
    cdef conv_t* og = out + (n * g.Co + grp * cog + c0) * Pout
    cdef Py_ssize_t i, p0, p1, m, lda
    cdef const conv_t* a
    for i in range((c1 - c0) * Pout):
        og[i] = bias[grp * cog + c0 + i // Pout]
    p0 = 0
    while p0 < Pin:
        p1 = min(Pin, p0 + tile)
        m = p1 - p0
        if xbuf == NULL:
            a = xg + p0
            lda = Pin
        else:
            pack_rows(xg + p0, Pin, cig, m, xbuf)
            a = xbuf
            lda = m
        # col (rows (c, k) x m) = W_g[:, c0:c1]^T @ x_g[:, p0:p1]
        gemm(c'N', c'T', <int>m, <int>((c1 - c0) * kvol), <int>cig, 1, a, <int>lda,
             w + grp * cig * cog * kvol + c0 * kvol, <int>(cog * kvol), 0, col, <int>m)
        col2im_tile(col, og, g, 0, (c1 - c0) * kvol, p0, p1)
        p0 = p1
        if interrupted(d):      # a job spans many tiles: poll inside it
            return


def transpose_forward(const conv_t[:, :, :, :, ::1] x, const conv_t[:, :, :, :, ::1] w,
                      const conv_t[::1] bias, conv_t[:, :, :, :, ::1] out,
                      tuple stride, tuple pad, tuple dilation, Py_ssize_t groups,
                      int num_threads, Py_ssize_t tile, Py_ssize_t cblock):
    """GEMM + col2im transposed convolution; jobs = (sample, group, channel block).

    A job owns its output channels, so the scatter-add of col2im never races
    and its order is fixed.
    """
    cdef Geometry g = make_geometry(&x.shape[0], &out.shape[0], &w.shape[0],
                                    stride, pad, dilation, groups)
    cdef Py_ssize_t cig = g.C // groups, cog = g.Co // groups
    cdef Py_ssize_t kvol = g.KD * g.KH * g.KW
    cdef bint big = g.D * g.H * g.W > INT_MAX
    cdef Py_ssize_t njobs = g.N * groups * ceil_div(cog, cblock), job
    cdef conv_t* col
    cdef conv_t* xbuf
    if njobs == 0:
        return
    cdef Driver d = start(njobs, num_threads)
    with nogil, parallel(num_threads=d.threads, use_threads_if=d.threads > 1):
        col = <conv_t*> malloc(cblock * kvol * tile * sizeof(conv_t))
        xbuf = NULL
        if big:
            xbuf = <conv_t*> malloc(cig * tile * sizeof(conv_t))
        for job in prange(njobs, schedule="dynamic", chunksize=1):
            if proceed(&d, not (col == NULL or (big and xbuf == NULL))):
                transpose_job(&x[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], &bias[0],
                              &out[0, 0, 0, 0, 0], &g, tile, cblock, job, col, xbuf, &d)
        free(col)
        free(xbuf)
    finish(&d, "col2im buffer")


cdef inline bint is_pointwise(const Geometry* g) noexcept nogil:
    """1x1 kernel, stride 1, no padding: x_g itself is the column matrix."""
    return (g.KD * g.KH * g.KW == 1 and g.sd == 1 and g.sh == 1 and g.sw == 1
            and g.pd == 0 and g.ph == 0 and g.pw == 0
            and g.D == g.Do and g.H == g.Ho and g.W == g.Wo)


cdef void weight_grad_job(const conv_t* x, const conv_t* gout, conv_t* dw,
                          const Geometry* g, Py_ssize_t tile, Py_ssize_t rblock,
                          Py_ssize_t cblock, Py_ssize_t job, conv_t* col, conv_t* gbuf,
                          Driver* d) noexcept nogil:
    """dW_g[c0:c1, r0:r1] = sum over samples and tiles of gout_g @ col^H, in fixed order."""
    cdef Py_ssize_t cig = g.C // g.groups, cog = g.Co // g.groups
    cdef Py_ssize_t K = cig * g.KD * g.KH * g.KW
    cdef Py_ssize_t nrb = ceil_div(K, rblock), ncb = ceil_div(cog, cblock)
    cdef Py_ssize_t ib = job % nrb
    cdef Py_ssize_t icb = (job // nrb) % ncb
    cdef Py_ssize_t grp = job // (nrb * ncb)
    cdef Py_ssize_t r0 = ib * rblock, r1 = min(K, ib * rblock + rblock)
    cdef Py_ssize_t c0 = icb * cblock, c1 = min(cog, icb * cblock + cblock)
    cdef Py_ssize_t P = g.Do * g.Ho * g.Wo, Pin = g.D * g.H * g.W
    cdef Py_ssize_t n, p0, p1, m, lda, ldb
    cdef const conv_t* a
    cdef const conv_t* b
    cdef conv_t beta = 0
    for n in range(g.N):
        p0 = 0
        while p0 < P:
            p1 = min(P, p0 + tile)
            m = p1 - p0
            if col == NULL:             # pointwise: rows r0:r1 of x_g, in place
                a = x + (n * g.C + grp * cig + r0) * Pin + p0
                lda = Pin
            else:
                im2col_tile(x + (n * g.C + grp * cig) * Pin, col, g, r0, r1, p0, p1)
                a = col
                lda = m
            b = gout + (n * g.Co + grp * cog + c0) * P + p0
            ldb = P
            if gbuf != NULL:
                pack_rows(b, P, c1 - c0, m, gbuf)
                b = gbuf
                ldb = m
            # dW_g^T (K x cog) [r0:r1, c0:c1] += conj(col) (rows x m) @ gout_g^T (m x cols)
            gemm(c'C', c'N', <int>(r1 - r0), <int>(c1 - c0), <int>m, 1, a, <int>lda,
                 b, <int>ldb, beta, dw + (grp * cog + c0) * K + r0, <int>K)
            beta = 1
            p0 = p1
            if interrupted(d):      # a job spans many tiles: poll inside it
                return


def conv_weight_grad(const conv_t[:, :, :, :, ::1] x, const conv_t[:, :, :, :, ::1] gout,
                     conv_t[:, :, :, :, ::1] dw, tuple stride, tuple pad,
                     tuple dilation, Py_ssize_t groups, int num_threads,
                     Py_ssize_t tile, Py_ssize_t rblock, Py_ssize_t cblock):
    """Weight gradient of a convolution: dw[co, r] = sum gout[co, p] * conj(col[r, p]).

    Jobs = (group, block of output channels, block of rows of W); each job
    reduces over the batch and the output tiles sequentially, so the
    summation order never depends on the thread count.  A pointwise problem
    (1x1, stride 1, no padding) reads its rows of x in place.  ``dw`` must be
    zero-size-free; it is overwritten.
    """
    cdef Geometry g = make_geometry(&x.shape[0], &gout.shape[0], &dw.shape[0],
                                    stride, pad, dilation, groups)
    cdef Py_ssize_t cig = g.C // groups, cog = g.Co // groups
    cdef Py_ssize_t K = cig * g.KD * g.KH * g.KW
    cdef bint big = g.Do * g.Ho * g.Wo > INT_MAX
    cdef bint pointwise = is_pointwise(&g) and not big
    cdef Py_ssize_t njobs = groups * ceil_div(K, rblock) * ceil_div(cog, cblock), job
    cdef conv_t* col
    cdef conv_t* gbuf
    cdef bint scratch_ok
    if njobs == 0:
        return
    cdef Driver d = start(njobs, num_threads)
    with nogil, parallel(num_threads=d.threads, use_threads_if=d.threads > 1):
        col = NULL
        gbuf = NULL
        if not pointwise:
            col = <conv_t*> malloc(rblock * tile * sizeof(conv_t))
        if big:
            gbuf = <conv_t*> malloc(cblock * tile * sizeof(conv_t))
        scratch_ok = (col != NULL or pointwise) and (gbuf != NULL or not big)
        for job in prange(njobs, schedule="dynamic", chunksize=1):
            if proceed(&d, scratch_ok):
                weight_grad_job(&x[0, 0, 0, 0, 0], &gout[0, 0, 0, 0, 0],
                                &dw[0, 0, 0, 0, 0], &g, tile, rblock, cblock, job, col,
                                gbuf, &d)
        free(col)
        free(gbuf)
    finish(&d, "im2col buffer")


# ---------------------------------------------------------------------------
# Stride-1 convolution on a padded input ("shifted-slice" im2col).
#
# On a padded input xp (Dp, Hp, Wp), output (od, oh, ow) of a stride-1
# convolution reads xp at flat index q + shift(tap), where q =
# (od * Hp + oh) * Wp + ow and shift(tap) = (kd*dd*Hp + kh*dh)*Wp + kw*dw.
# Computing the output on that padded-width grid makes every im2col row a
# contiguous slice of xp (one memcpy), at the price of the few grid cells
# with oh >= Ho or ow >= Wo, which are computed and then dropped.
# ---------------------------------------------------------------------------


cdef void shifted_forward_job(const conv_t* xp, const conv_t* w, const conv_t* bias,
                              bint has_bias, conv_t* out, const Geometry* g,
                              Py_ssize_t tile, Py_ssize_t job,
                              conv_t* col, conv_t* cbuf) noexcept nogil:
    cdef Py_ssize_t cig = g.C // g.groups, cog = g.Co // g.groups
    cdef Py_ssize_t kvol = g.KD * g.KH * g.KW, K = cig * kvol
    cdef Py_ssize_t plane = g.D * g.H * g.W
    cdef Py_ssize_t Q = grid_length(g)
    cdef Py_ssize_t ntiles = ceil_div(Q, tile)
    cdef Py_ssize_t it = job % ntiles
    cdef Py_ssize_t grp = (job // ntiles) % g.groups
    cdef Py_ssize_t n = job // (ntiles * g.groups)
    cdef Py_ssize_t q0 = it * tile, q1 = min(Q, it * tile + tile), m = q1 - q0
    cdef const conv_t* xg = xp + (n * g.C + grp * cig) * plane
    cdef Py_ssize_t oplane = g.Do * g.Ho * g.Wo
    cdef conv_t* og = out + (n * g.Co + grp * cog) * oplane
    cdef Py_ssize_t r, t, ci, kd, kh, kw, shift, co, q, ow, oh, od, seg, j, hi
    cdef conv_t b
    cdef conv_t* orow
    cdef const conv_t* crow
    for r in range(K):
        decode_tap(r, g, &ci, &kd, &kh, &kw)
        memcpy(col + r * m, xg + ci * plane + q0 + tap_shift(g, kd, kh, kw),
               m * sizeof(conv_t))
    # cbuf (cog x m, column-major: channels fastest) = W_g @ col.  With the small
    # channel count as BLAS's M dimension, OpenBLAS packs faster (measured).
    gemm(c'T', c'T', <int>cog, <int>m, <int>K, 1, w + grp * cog * K, <int>K,
         col, <int>m, 0, cbuf, <int>cog)
    # Keep the grid cells that are real outputs (oh < Ho, ow < Wo).
    q = q0
    while q < q1:
        decode_cell(q, g.H, g.W, &od, &oh, &ow)
        seg = min(g.W - ow, q1 - q)
        if oh < g.Ho and ow < g.Wo:
            hi = min(ow + seg, g.Wo)
            for co in range(cog):
                orow = og + co * oplane + (od * g.Ho + oh) * g.Wo
                crow = cbuf + co + ((q - q0) - ow) * cog
                b = bias[grp * cog + co] if has_bias else 0
                for j in range(ow, hi):
                    orow[j] = crow[j * cog] + b
        q += seg


def conv_forward_shifted(const conv_t[:, :, :, :, ::1] xp, const conv_t[:, :, :, :, ::1] w,
                         const conv_t[::1] bias, bint has_bias,
                         conv_t[:, :, :, :, ::1] out, tuple dilation, Py_ssize_t groups,
                         int num_threads, Py_ssize_t tile):
    """Stride-1 convolution of an already padded input; jobs = (sample, group, grid tile)."""
    cdef Geometry g = make_geometry(&xp.shape[0], &out.shape[0], &w.shape[0],
                                    (1, 1, 1), (0, 0, 0), dilation, groups)
    cdef Py_ssize_t cog = g.Co // groups
    cdef Py_ssize_t K = (g.C // groups) * g.KD * g.KH * g.KW
    cdef Py_ssize_t Q = grid_length(&g)
    cdef Py_ssize_t njobs = g.N * groups * ceil_div(Q, tile), job
    cdef conv_t* col
    cdef conv_t* cbuf
    if njobs == 0:
        return
    cdef Driver d = start(njobs, num_threads)
    with nogil, parallel(num_threads=d.threads, use_threads_if=d.threads > 1):
        col = <conv_t*> malloc(K * tile * sizeof(conv_t))
        cbuf = <conv_t*> malloc(cog * tile * sizeof(conv_t))
        for job in prange(njobs, schedule="dynamic", chunksize=1):
            if proceed(&d, not (col == NULL or cbuf == NULL)):
                shifted_forward_job(&xp[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], &bias[0], has_bias,
                                    &out[0, 0, 0, 0, 0], &g, tile, job, col, cbuf)
        free(col)
        free(cbuf)
    finish(&d, "im2col buffer")


cdef void shifted_weight_grad_job(const conv_t* xp, const conv_t* gout, conv_t* dw,
                                  const Geometry* g, Py_ssize_t tile, Py_ssize_t rblock,
                                  Py_ssize_t job, conv_t* col, conv_t* gbuf,
                                  Driver* d) noexcept nogil:
    """Stride-1 weight gradient on a padded input, over the padded-width grid.

    Column rows are contiguous slices of xp (as in the forward); grad_output is
    laid onto the same grid with zeros in the cells that are not outputs.
    """
    cdef Py_ssize_t cig = g.C // g.groups, cog = g.Co // g.groups
    cdef Py_ssize_t K = cig * g.KD * g.KH * g.KW
    cdef Py_ssize_t nblocks = ceil_div(K, rblock)
    cdef Py_ssize_t ib = job % nblocks
    cdef Py_ssize_t grp = job // nblocks
    cdef Py_ssize_t r0 = ib * rblock, r1 = min(K, ib * rblock + rblock)
    cdef Py_ssize_t plane = g.D * g.H * g.W, oplane = g.Do * g.Ho * g.Wo
    cdef Py_ssize_t Q = grid_length(g)
    cdef Py_ssize_t n, q0, q1, m, r, t, ci, kd, kh, kw, shift, co, q, ow, oh, od, seg, j, hi
    cdef const conv_t* xg
    cdef const conv_t* grow
    cdef conv_t* dst
    cdef conv_t beta = 0
    for n in range(g.N):
        xg = xp + (n * g.C + grp * cig) * plane
        q0 = 0
        while q0 < Q:
            q1 = min(Q, q0 + tile)
            m = q1 - q0
            for r in range(r0, r1):
                decode_tap(r, g, &ci, &kd, &kh, &kw)
                memcpy(col + (r - r0) * m, xg + ci * plane + q0 + tap_shift(g, kd, kh, kw),
                       m * sizeof(conv_t))
            # gbuf (cog x m): grad_output on the grid, zero where oh >= Ho or ow >= Wo
            q = q0
            while q < q1:
                decode_cell(q, g.H, g.W, &od, &oh, &ow)
                seg = min(g.W - ow, q1 - q)
                hi = min(ow + seg, g.Wo) if oh < g.Ho else ow
                for co in range(cog):
                    dst = gbuf + co * m + (q - q0) - ow
                    grow = gout + ((n * g.Co + grp * cog + co) * g.Do + od) * g.Ho * g.Wo \
                        + oh * g.Wo
                    for j in range(ow, hi):
                        dst[j] = grow[j]
                    for j in range(max(ow, hi), ow + seg):
                        dst[j] = 0
                q += seg
            gemm(c'C', c'N', <int>(r1 - r0), <int>cog, <int>m, 1, col, <int>m,
                 gbuf, <int>m, beta, dw + grp * cog * K + r0, <int>K)
            beta = 1
            q0 = q1
            if interrupted(d):      # a job spans many tiles: poll inside it
                return


def conv_weight_grad_shifted(const conv_t[:, :, :, :, ::1] xp,
                             const conv_t[:, :, :, :, ::1] gout,
                             conv_t[:, :, :, :, ::1] dw, tuple dilation, Py_ssize_t groups,
                             int num_threads, Py_ssize_t tile, Py_ssize_t rblock):
    """Stride-1 weight gradient of an already padded input (see conv_weight_grad)."""
    cdef Geometry g = make_geometry(&xp.shape[0], &gout.shape[0], &dw.shape[0],
                                    (1, 1, 1), (0, 0, 0), dilation, groups)
    cdef Py_ssize_t cog = g.Co // groups
    cdef Py_ssize_t K = (g.C // groups) * g.KD * g.KH * g.KW
    cdef Py_ssize_t njobs = groups * ceil_div(K, rblock), job
    cdef conv_t* col
    cdef conv_t* gbuf
    if njobs == 0:
        return
    cdef Driver d = start(njobs, num_threads)
    with nogil, parallel(num_threads=d.threads, use_threads_if=d.threads > 1):
        col = <conv_t*> malloc(rblock * tile * sizeof(conv_t))
        gbuf = <conv_t*> malloc(cog * tile * sizeof(conv_t))
        for job in prange(njobs, schedule="dynamic", chunksize=1):
            if proceed(&d, not (col == NULL or gbuf == NULL)):
                shifted_weight_grad_job(&xp[0, 0, 0, 0, 0], &gout[0, 0, 0, 0, 0],
                                        &dw[0, 0, 0, 0, 0], &g, tile, rblock, job, col, gbuf, &d)
        free(col)
        free(gbuf)
    finish(&d, "im2col buffer")


