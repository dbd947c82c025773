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
    void fc_kernel_indirect_f(Py_ssize_t K, const float* A, const float* base,
                              const Py_ssize_t* off, float* C, Py_ssize_t ldc,
                              int rows, int cols, int accumulate) nogil
    void fc_kernel_indirect_d(Py_ssize_t K, const double* A, const double* base,
                              const Py_ssize_t* off, double* C, Py_ssize_t ldc,
                              int rows, int cols, int accumulate) nogil
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
                             Py_ssize_t tile, Py_ssize_t job, const Py_ssize_t* off,
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
    # Full panels are read in place (implicit GEMM: row r of panel p is the NR
    # cells at q0 + p*NR + off[r]); only the last, partial panel is copied, with
    # zeros past the tile, so no read goes beyond the padded input.
    cdef Py_ssize_t nfull = m // NR
    cdef Py_ssize_t pcol = 0 if off != NULL else nfull
    if off == NULL:                     # im2col straight into panels
        for r in range(K):
            decode_tap(r, g, &ci, &kd, &kh, &kw)
            src = xg + ci * plane + q0 + tap_shift(g, kd, kh, kw)
            for p in range(nfull):
                if real_t is float:
                    fc_panel_copy_f(col + (p * K + r) * NR, src + p * NR)
                else:
                    fc_panel_copy_d(col + (p * K + r) * NR, src + p * NR)
    if m % NR:
        for r in range(K):
            decode_tap(r, g, &ci, &kd, &kh, &kw)
            src = xg + ci * plane + q0 + tap_shift(g, kd, kh, kw)
            dst = col + (pcol * K + r) * NR
            valid = m - nfull * NR
            memcpy(dst, src + nfull * NR, valid * sizeof(real_t))
            for j in range(valid, NR):
                dst[j] = 0
    # cbuf (cog x m, row-major) = W_g @ col, K blocked so both operands stay in L1.
    k0 = 0
    while k0 < K:
        klen = min(KC, K - k0)
        for p in range(npan):
            for b in range(nb):
                if off != NULL and p < nfull:
                    if real_t is float:
                        fc_kernel_indirect_f(klen, wg + (b * K + k0) * FC_MR, xg + q0 + p * NR,
                                             off + k0, cbuf + b * FC_MR * m + p * NR, m,
                                             <int>min(FC_MR, cog - b * FC_MR), NR, k0 > 0)
                    else:
                        fc_kernel_indirect_d(klen, wg + (b * K + k0) * FC_MR, xg + q0 + p * NR,
                                             off + k0, cbuf + b * FC_MR * m + p * NR, m,
                                             <int>min(FC_MR, cog - b * FC_MR), NR, k0 > 0)
                    continue
                if real_t is float:
                    fc_kernel_f(klen, wg + (b * K + k0) * FC_MR, col + ((p - nfull + pcol) * K + k0) * NR,
                                cbuf + b * FC_MR * m + p * NR, m,
                                <int>min(FC_MR, cog - b * FC_MR), <int>min(NR, m - p * NR),
                                k0 > 0)
                else:
                    fc_kernel_d(klen, wg + (b * K + k0) * FC_MR, col + ((p - nfull + pcol) * K + k0) * NR,
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
                        int num_threads, Py_ssize_t tile, bint implicit=True):
    """Stride-1 convolution of an already padded input on fastconv's micro-kernel.

    ``tile`` (grid positions per job) must be a multiple of the panel width.
    ``implicit`` reads whole panels in place through a per-tap offset table
    instead of copying them (same operations in the same order: same bits).
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
    cdef Py_ssize_t* off = NULL
    cdef Py_ssize_t ci, kd, kh, kw
    cdef Py_ssize_t plane = g.D * g.H * g.W
    if implicit:
        off = <Py_ssize_t*> malloc(K * sizeof(Py_ssize_t))
        if off == NULL:
            free(wp)
            raise MemoryError("fastconv: could not allocate the tap offsets")
        for k in range(K):
            decode_tap(k, &g, &ci, &kd, &kh, &kw)
            off[k] = ci * plane + tap_shift(&g, kd, kh, kw)
    cdef Py_ssize_t colsize = K * (NR if implicit else tile)
    cdef Driver d = start(njobs, num_threads)
    with nogil, parallel(num_threads=d.threads, use_threads_if=d.threads > 1):
        col = <real_t*> malloc(colsize * sizeof(real_t))
        cbuf = <real_t*> malloc(nb * FC_MR * tile * sizeof(real_t))
        for job in prange(njobs, schedule="dynamic", chunksize=1):
            if proceed(&d, not (col == NULL or cbuf == NULL)):
                packed_forward_job(&xp[0, 0, 0, 0, 0], wp, &bias[0], has_bias,
                                   &out[0, 0, 0, 0, 0], &g, tile, job, off, col, cbuf)
        free(col)
        free(cbuf)
    free(wp)
    free(off)
    finish(&d, "im2col buffer")


def panel_widths():
    """(float, double) panel widths of the micro-kernel in this build."""
    return FC_NR_F, FC_NR_D
