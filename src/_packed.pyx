"""Stride-1 float32/float64 convolution on fastconv's own register-blocked micro-kernel.

Same padded-width grid as the shifted-slice BLAS path (``_im2col_blas``), but
im2col writes the column matrix directly as the micro-kernel's packed panels
(each panel row is one NR-element copy of the padded input), so no BLAS packs
it a second time: with few output channels that packing costs as much as the
multiply.  The micro-kernel itself is ``_microkernel.h``, sized per ISA.
"""
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from cython.parallel cimport parallel, prange

from _geometry cimport (Geometry, ceil_div, decode_cell, decode_tap, grid_length,
                        make_geometry, tap_shift)
from _parallel cimport Driver, finish, proceed, start


cdef extern from "_microkernel.h":
    int FC_MR
    int FC_NR_F
    int FC_NR_D
    void fc_kernel_f(Py_ssize_t K, const float* A, const float* B, float* C, Py_ssize_t ldc,
                     int rows, int cols, int accumulate) nogil
    void fc_kernel_d(Py_ssize_t K, const double* A, const double* B, double* C,
                     Py_ssize_t ldc, int rows, int cols, int accumulate) nogil
    void fc_panel_copy_f(float* dst, const float* src) nogil
    void fc_panel_copy_d(double* dst, const double* src) nogil

ctypedef fused real_t:
    float
    double

cdef enum:
    KC = 256        # K block: one A block and one B panel slice stay in L1


cdef inline int panel_width(real_t* dummy) noexcept nogil:
    if real_t is float:
        return FC_NR_F
    return FC_NR_D


cdef void packed_forward_job(const real_t* xp, const real_t* wp, const real_t* bias,
                             bint has_bias, real_t* out, const Geometry* g,
                             Py_ssize_t tile, Py_ssize_t job,
                             real_t* col, real_t* cbuf) noexcept nogil:
    cdef int NR = panel_width(<real_t*>NULL)
    cdef Py_ssize_t cig = g.C // g.groups, cog = g.Co // g.groups
    cdef Py_ssize_t K = cig * g.KD * g.KH * g.KW
    cdef Py_ssize_t nb = ceil_div(cog, FC_MR)
    cdef Py_ssize_t plane = g.D * g.H * g.W, oplane = g.Do * g.Ho * g.Wo
    cdef Py_ssize_t Q = grid_length(g)
    cdef Py_ssize_t ntiles = ceil_div(Q, tile)
    cdef Py_ssize_t it = job % ntiles
    cdef Py_ssize_t grp = (job // ntiles) % g.groups
    cdef Py_ssize_t n = job // (ntiles * g.groups)
    cdef Py_ssize_t q0 = it * tile, q1 = min(Q, it * tile + tile), m = q1 - q0
    cdef Py_ssize_t npan = ceil_div(m, NR)
    cdef const real_t* xg = xp + (n * g.C + grp * cig) * plane
    cdef real_t* og = out + (n * g.Co + grp * cog) * oplane
    cdef const real_t* wg = wp + grp * nb * K * FC_MR
    cdef Py_ssize_t r, t, ci, kd, kh, kw, shift, p, valid, j, k0, klen, b, co
    cdef Py_ssize_t q, ow, oh, od, seg, hi
    cdef const real_t* src
    cdef real_t* dst
    cdef real_t* orow
    cdef const real_t* crow
    cdef real_t bv
    # im2col straight into panels: col[(p * K + r) * NR + j] = xg[... q0 + p*NR + j + shift(r)]
    for r in range(K):
        decode_tap(r, g, &ci, &kd, &kh, &kw)
        src = xg + ci * plane + q0 + tap_shift(g, kd, kh, kw)
        for p in range(m // NR):
            if real_t is float:
                fc_panel_copy_f(col + (p * K + r) * NR, src + p * NR)
            else:
                fc_panel_copy_d(col + (p * K + r) * NR, src + p * NR)
        if m % NR:                      # last, partial panel: zeros past the tile
            p = m // NR
            dst = col + (p * K + r) * NR
            valid = m - p * NR
            memcpy(dst, src + p * NR, valid * sizeof(real_t))
            for j in range(valid, NR):
                dst[j] = 0
    # cbuf (cog x m, row-major) = W_g @ col, K blocked so both operands stay in L1.
    k0 = 0
    while k0 < K:
        klen = min(KC, K - k0)
        for p in range(npan):
            for b in range(nb):
                if real_t is float:
                    fc_kernel_f(klen, wg + (b * K + k0) * FC_MR, col + (p * K + k0) * NR,
                                cbuf + b * FC_MR * m + p * NR, m,
                                <int>min(FC_MR, cog - b * FC_MR), <int>min(NR, m - p * NR),
                                k0 > 0)
                else:
                    fc_kernel_d(klen, wg + (b * K + k0) * FC_MR, col + (p * K + k0) * NR,
                                cbuf + b * FC_MR * m + p * NR, m,
                                <int>min(FC_MR, cog - b * FC_MR), <int>min(NR, m - p * NR),
                                k0 > 0)
        k0 += klen
    # Keep the grid cells that are real outputs, adding the bias.
    q = q0
    while q < q1:
        decode_cell(q, g.H, g.W, &od, &oh, &ow)
        seg = min(g.W - ow, q1 - q)
        if oh < g.Ho and ow < g.Wo:
            hi = min(ow + seg, g.Wo)
            for co in range(cog):
                orow = og + co * oplane + (od * g.Ho + oh) * g.Wo
                crow = cbuf + co * m + (q - q0) - ow
                bv = bias[grp * cog + co] if has_bias else 0
                for j in range(ow, hi):
                    orow[j] = crow[j] + bv
        q += seg


def conv_forward(const real_t[:, :, :, :, ::1] xp, const real_t[:, :, :, :, ::1] w,
                        const real_t[::1] bias, bint has_bias,
                        real_t[:, :, :, :, ::1] out, tuple dilation, Py_ssize_t groups,
                        int num_threads, Py_ssize_t tile):
    """Stride-1 convolution of an already padded input on fastconv's micro-kernel.

    ``tile`` (grid positions per job) must be a multiple of the panel width.
    """
    cdef Geometry g = make_geometry(&xp.shape[0], &out.shape[0], &w.shape[0],
                                    (1, 1, 1), (0, 0, 0), dilation, groups)
    cdef int NR = panel_width(<real_t*>NULL)
    cdef Py_ssize_t cog = g.Co // groups
    cdef Py_ssize_t K = (g.C // groups) * g.KD * g.KH * g.KW
    cdef Py_ssize_t nb = ceil_div(cog, FC_MR)
    cdef Py_ssize_t Q = grid_length(&g)
    cdef Py_ssize_t njobs = g.N * groups * ceil_div(Q, tile), job
    cdef Py_ssize_t grp, b, i, k, co
    cdef real_t* col
    cdef real_t* cbuf
    if njobs == 0:
        return
    # Weights packed once: wp[((grp * nb + b) * K + k) * MR + i] = w[grp*cog + b*MR + i, k].
    cdef real_t* wp = <real_t*> malloc(groups * nb * K * FC_MR * sizeof(real_t))
    if wp == NULL:
        raise MemoryError("fastconv: could not allocate the packed weights")
    cdef const real_t* wflat = &w[0, 0, 0, 0, 0]
    for grp in range(groups):
        for b in range(nb):
            for k in range(K):
                for i in range(FC_MR):
                    co = b * FC_MR + i
                    wp[((grp * nb + b) * K + k) * FC_MR + i] = \
                        wflat[(grp * cog + co) * K + k] if co < cog else 0
    cdef Driver d = start(njobs, num_threads)
    with nogil, parallel(num_threads=d.threads):
        col = <real_t*> malloc(K * tile * sizeof(real_t))
        cbuf = <real_t*> malloc(nb * FC_MR * tile * sizeof(real_t))
        for job in prange(njobs, schedule="dynamic", chunksize=1):
            if proceed(&d, not (col == NULL or cbuf == NULL)):
                packed_forward_job(&xp[0, 0, 0, 0, 0], wp, &bias[0], has_bias,
                                   &out[0, 0, 0, 0, 0], &g, tile, job, col, cbuf)
        free(col)
        free(cbuf)
    free(wp)
    finish(&d, "im2col buffer")


def panel_widths():
    """(float, double) panel widths of the micro-kernel in this build."""
    return FC_NR_F, FC_NR_D
