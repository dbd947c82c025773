"""Direct (loop) kernels: convolution and transposed convolution.

Each job owns a block of output rows of one (sample, channel, depth) plane
and sums every tap into it, so threads never write the same element and the
summation order of every element is fixed by the loop nest alone: results are
bit-identical for any thread count and any batch size.  Zero padding lives in
the index math (no padded copy); the innermost loop runs along the contiguous
W axis so the compiler vectorises it.
"""
from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc

from _parallel cimport Driver, finish, interrupted, proceed, start

from _fused cimport conv_t
from _geometry cimport Geometry, ceil_div, make_geometry, strided_range

# Output tile of one job: about TILE_ELEMS elements, whole rows where possible.
cdef enum:
    TILE_ELEMS = 4096
    MAX_ROW = 2048


cdef inline void tile_shape(const Geometry* g, Py_ssize_t* bh, Py_ssize_t* bw,
                            Py_ssize_t* nbh, Py_ssize_t* nbw) noexcept nogil:
    bw[0] = g.Wo if g.Wo <= MAX_ROW else MAX_ROW
    if bw[0] < 1:
        bw[0] = 1
    bh[0] = TILE_ELEMS // bw[0]
    if bh[0] < 1:
        bh[0] = 1
    if bh[0] > g.Ho:
        bh[0] = g.Ho if g.Ho > 0 else 1
    nbw[0] = ceil_div(g.Wo, bw[0])
    nbh[0] = ceil_div(g.Ho, bh[0])


cdef inline void four_taps(conv_t* orow, const conv_t* xrow, Py_ssize_t dw,
                           conv_t w0, conv_t w1, conv_t w2, conv_t w3,
                           Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """orow[j] += w0 x[j] + w1 x[j + dw] + w2 x[j + 2dw] + w3 x[j + 3dw] for j in [lo, hi)."""
    cdef Py_ssize_t j
    for j in range(lo, hi):
        orow[j] = orow[j] + w0 * xrow[j] + w1 * xrow[j + dw] + w2 * xrow[j + 2 * dw] \
            + w3 * xrow[j + 3 * dw]


cdef inline void three_taps(conv_t* orow, const conv_t* xrow, Py_ssize_t dw,
                            conv_t w0, conv_t w1, conv_t w2,
                            Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(lo, hi):
        orow[j] = orow[j] + w0 * xrow[j] + w1 * xrow[j + dw] + w2 * xrow[j + 2 * dw]


cdef inline void two_taps(conv_t* orow, const conv_t* xrow, Py_ssize_t dw,
                          conv_t w0, conv_t w1, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(lo, hi):
        orow[j] = orow[j] + w0 * xrow[j] + w1 * xrow[j + dw]


cdef inline void edge_taps(conv_t* orow, const conv_t* xrow, conv_t wv,
                           Py_ssize_t ow0, Py_ssize_t ow1, Py_ssize_t lo, Py_ssize_t hi,
                           Py_ssize_t off, Py_ssize_t W) noexcept nogil:
    """One tap on the cells of [ow0, ow1) outside [lo, hi) where it reads the input."""
    cdef Py_ssize_t j, a, b
    strided_range(off, 1, W, ow0, ow1, &a, &b)
    for j in range(a, min(b, lo)):
        orow[j] = orow[j] + wv * xrow[j]
    for j in range(max(a, hi), b):
        orow[j] = orow[j] + wv * xrow[j]


cdef void conv_tile(const conv_t* x, const conv_t* w, const conv_t* bias,
                    conv_t* out, const Geometry* g, Py_ssize_t job) noexcept nogil:
    """out tile = bias + sum over (ci, kd, kh, kw) of w * shifted x rows."""
    cdef Py_ssize_t bh, bw, nbh, nbw
    tile_shape(g, &bh, &bw, &nbh, &nbw)
    cdef Py_ssize_t t = job
    cdef Py_ssize_t ibw = t % nbw
    t = t // nbw
    cdef Py_ssize_t ibh = t % nbh
    t = t // nbh
    cdef Py_ssize_t od = t % g.Do
    t = t // g.Do
    cdef Py_ssize_t co = t % g.Co
    cdef Py_ssize_t n = t // g.Co

    cdef Py_ssize_t ow0 = ibw * bw, ow1 = min(g.Wo, ibw * bw + bw)
    cdef Py_ssize_t oh0 = ibh * bh, oh1 = min(g.Ho, ibh * bh + bh)
    cdef Py_ssize_t cig = g.C // g.groups
    cdef Py_ssize_t cog = g.Co // g.groups
    cdef Py_ssize_t grp = co // cog
    cdef Py_ssize_t plane = g.D * g.H * g.W
    cdef Py_ssize_t kvol = g.KD * g.KH * g.KW
    cdef conv_t* oplane = out + ((n * g.Co + co) * g.Do + od) * g.Ho * g.Wo
    cdef conv_t* orow
    cdef const conv_t* xc
    cdef const conv_t* xrow
    cdef conv_t wv, b = bias[co]
    cdef Py_ssize_t ci, kd, kh, kw, oh, ow, id_, ih, hlo, hhi, wlo, whi, alo, ahi, off, tap, ntaps
    cdef const conv_t* wk

    for oh in range(oh0, oh1):
        orow = oplane + oh * g.Wo
        for ow in range(ow0, ow1):
            orow[ow] = b

    for ci in range(cig):
        xc = x + (n * g.C + grp * cig + ci) * plane
        for kd in range(g.KD):
            id_ = od * g.sd + kd * g.dd - g.pd
            if id_ < 0 or id_ >= g.D:
                continue
            for kh in range(g.KH):
                strided_range(kh * g.dh - g.ph, g.sh, g.H, oh0, oh1, &hlo, &hhi)
                wk = w + (co * cig + ci) * kvol + (kd * g.KH + kh) * g.KW
                kw = 0
                if g.sw == 1:
                    # Up to four taps per pass: one read-modify-write of the output
                    # row instead of one per tap.  Cells where one of the taps falls
                    # in the padding are done tap by tap.
                    while g.KW - kw >= 2:
                        ntaps = min(4, g.KW - kw)
                        off = kw * g.dw - g.pw
                        strided_range(off, 1, g.W, ow0, ow1, &wlo, &whi)
                        strided_range(off + (ntaps - 1) * g.dw, 1, g.W, ow0, ow1, &alo, &ahi)
                        if ahi < whi:
                            whi = ahi
                        if alo > wlo:
                            wlo = alo
                        if whi < wlo:       # no cell has all taps inside
                            whi = wlo
                        for oh in range(hlo, hhi):
                            ih = oh * g.sh + kh * g.dh - g.ph
                            xrow = xc + (id_ * g.H + ih) * g.W + off
                            orow = oplane + oh * g.Wo
                            for tap in range(ntaps):
                                edge_taps(orow, xrow + tap * g.dw, wk[kw + tap], ow0, ow1,
                                          wlo, whi, off + tap * g.dw, g.W)
                            if ntaps == 4:
                                four_taps(orow, xrow, g.dw, wk[kw], wk[kw + 1], wk[kw + 2],
                                          wk[kw + 3], wlo, whi)
                            elif ntaps == 3:
                                three_taps(orow, xrow, g.dw, wk[kw], wk[kw + 1], wk[kw + 2],
                                           wlo, whi)
                            else:
                                two_taps(orow, xrow, g.dw, wk[kw], wk[kw + 1], wlo, whi)
                        kw += ntaps
                for kw in range(kw, g.KW):
                    off = kw * g.dw - g.pw
                    strided_range(off, g.sw, g.W, ow0, ow1, &wlo, &whi)
                    wv = wk[kw]
                    for oh in range(hlo, hhi):
                        ih = oh * g.sh + kh * g.dh - g.ph
                        xrow = xc + (id_ * g.H + ih) * g.W
                        orow = oplane + oh * g.Wo
                        if g.sw == 1:
                            for ow in range(wlo, whi):
                                orow[ow] = orow[ow] + wv * xrow[ow + off]
                        else:
                            for ow in range(wlo, whi):
                                orow[ow] = orow[ow] + wv * xrow[ow * g.sw + off]


cdef void transpose_tile(const conv_t* x, const conv_t* w, const conv_t* bias,
                         conv_t* out, const Geometry* g, Py_ssize_t job) noexcept nogil:
    """Gather form of the transposed convolution for one output tile.

    Output o receives x[i] * w[k] wherever o = i * stride + k * dilation - pad;
    for each tap the matching i form a contiguous range, so no atomics and no
    divisibility test per element are needed.
    """
    cdef Py_ssize_t bh, bw, nbh, nbw
    tile_shape(g, &bh, &bw, &nbh, &nbw)
    cdef Py_ssize_t t = job
    cdef Py_ssize_t ibw = t % nbw
    t = t // nbw
    cdef Py_ssize_t ibh = t % nbh
    t = t // nbh
    cdef Py_ssize_t od = t % g.Do
    t = t // g.Do
    cdef Py_ssize_t co = t % g.Co
    cdef Py_ssize_t n = t // g.Co

    cdef Py_ssize_t ow0 = ibw * bw, ow1 = min(g.Wo, ibw * bw + bw)
    cdef Py_ssize_t oh0 = ibh * bh, oh1 = min(g.Ho, ibh * bh + bh)
    cdef Py_ssize_t cig = g.C // g.groups          # input channels per group
    cdef Py_ssize_t cog = g.Co // g.groups         # output channels per group
    cdef Py_ssize_t grp = co // cog
    cdef Py_ssize_t col = co - grp * cog
    cdef Py_ssize_t plane = g.D * g.H * g.W
    cdef Py_ssize_t kvol = g.KD * g.KH * g.KW
    cdef conv_t* oplane = out + ((n * g.Co + co) * g.Do + od) * g.Ho * g.Wo
    cdef conv_t* orow
    cdef const conv_t* xc
    cdef const conv_t* xrow
    cdef conv_t wv, b = bias[co]
    cdef Py_ssize_t ci, kd, kh, kw, ih, iw, id_, tt, hlo, hhi, wlo, whi, off, oh

    for oh in range(oh0, oh1):
        orow = oplane + oh * g.Wo
        for iw in range(ow0, ow1):
            orow[iw] = b

    for ci in range(cig):
        xc = x + (n * g.C + grp * cig + ci) * plane
        for kd in range(g.KD):
            tt = od + g.pd - kd * g.dd          # must equal id * sd
            if tt < 0 or tt % g.sd != 0:
                continue
            id_ = tt // g.sd
            if id_ >= g.D:
                continue
            for kh in range(g.KH):
                # input rows ih whose output row ih*sh + kh*dh - ph lies in [oh0, oh1)
                off = kh * g.dh - g.ph
                hlo = max(ceil_div(oh0 - off, g.sh), 0)
                hhi = min(ceil_div(oh1 - off, g.sh), g.H)
                for kw in range(g.KW):
                    off = kw * g.dw - g.pw
                    wlo = max(ceil_div(ow0 - off, g.sw), 0)
                    whi = min(ceil_div(ow1 - off, g.sw), g.W)
                    wv = w[((grp * cig + ci) * cog + col) * kvol + (kd * g.KH + kh) * g.KW + kw]
                    for ih in range(hlo, hhi):
                        xrow = xc + (id_ * g.H + ih) * g.W
                        orow = oplane + (ih * g.sh + kh * g.dh - g.ph) * g.Wo
                        if g.sw == 1:
                            for iw in range(wlo, whi):
                                orow[iw + off] = orow[iw + off] + wv * xrow[iw]
                        else:
                            for iw in range(wlo, whi):
                                orow[iw * g.sw + off] = orow[iw * g.sw + off] + wv * xrow[iw]


cdef Py_ssize_t count_jobs(const Geometry* g) noexcept nogil:
    cdef Py_ssize_t bh, bw, nbh, nbw
    tile_shape(g, &bh, &bw, &nbh, &nbw)
    return g.N * g.Co * g.Do * nbh * nbw


cdef run_tiles(const conv_t[:, :, :, :, ::1] x, const conv_t[:, :, :, :, ::1] w,
               const conv_t[::1] bias, conv_t[:, :, :, :, ::1] out, tuple stride,
               tuple pad, tuple dilation, Py_ssize_t groups, int num_threads,
               bint transposed):
    """Every output tile in parallel (one OpenMP region), polling for Ctrl-C."""
    cdef Geometry g = make_geometry(&x.shape[0], &out.shape[0], &w.shape[0],
                                    stride, pad, dilation, groups)
    cdef Py_ssize_t job, njobs = count_jobs(&g)
    if njobs == 0:
        return
    cdef Driver d = start(njobs, num_threads)
    with nogil:
        for job in prange(njobs, num_threads=d.threads, schedule="dynamic", chunksize=1):
            if not proceed(&d, True):
                pass
            elif transposed:
                transpose_tile(&x[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], &bias[0],
                               &out[0, 0, 0, 0, 0], &g, job)
            else:
                conv_tile(&x[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], &bias[0],
                          &out[0, 0, 0, 0, 0], &g, job)
    finish(&d, "")


def conv_forward(const conv_t[:, :, :, :, ::1] x, const conv_t[:, :, :, :, ::1] w,
                 const conv_t[::1] bias, conv_t[:, :, :, :, ::1] out,
                 tuple stride, tuple pad, tuple dilation, Py_ssize_t groups,
                 int num_threads):
    """Direct convolution into ``out`` (IN: x, w, bias; OUT: out)."""
    run_tiles(x, w, bias, out, stride, pad, dilation, groups, num_threads, False)


def transpose_forward(const conv_t[:, :, :, :, ::1] x, const conv_t[:, :, :, :, ::1] w,
                      const conv_t[::1] bias, conv_t[:, :, :, :, ::1] out,
                      tuple stride, tuple pad, tuple dilation, Py_ssize_t groups,
                      int num_threads):
    """Direct (gather) transposed convolution into ``out``."""
    run_tiles(x, w, bias, out, stride, pad, dilation, groups, num_threads, True)


cdef inline conv_t conj_of(conv_t v) noexcept nogil:
    if conv_t is float or conv_t is double:
        return v
    else:
        return v.conjugate()


cdef enum:
    LANES = 8       # partial sums per tap: one AVX2 float vector, SLP-vectorised


cdef void weight_grad_pair(const conv_t* x, const conv_t* gout, conv_t* dw,
                           const Geometry* g, Py_ssize_t job, conv_t* acc,
                           Driver* d) noexcept nogil:
    """dw[co, ci, taps] = sum over samples and outputs of gout * conj(x at the tap).

    One job per (co, ci) pair owns its taps.  Each tap keeps LANES partial
    sums (``acc``), lane l taking the outputs j = l (mod LANES) of every row in
    a fixed order (sample, depth, row), so the loop over lanes vectorises
    without reordering any sum; the lanes are added pairwise at the end.
    """
    cdef Py_ssize_t cig = g.C // g.groups, cog = g.Co // g.groups
    cdef Py_ssize_t co = job // cig, ci = job % cig
    cdef Py_ssize_t c = (co // cog) * cig + ci
    cdef Py_ssize_t kvol = g.KD * g.KH * g.KW
    cdef Py_ssize_t plane = g.D * g.H * g.W, oplane = g.Do * g.Ho * g.Wo
    cdef conv_t* taps = dw + (co * cig + ci) * kvol
    cdef Py_ssize_t n, od, oh, kd, kh, kw, id_, ih, off, lo, hi, j, t, l
    cdef const conv_t* grow
    cdef const conv_t* xrow
    cdef conv_t* a
    for t in range(kvol * LANES):
        acc[t] = 0
    for n in range(g.N):
        if interrupted(d):          # a job spans the whole batch: poll inside it
            return
        for od in range(g.Do):
            for oh in range(g.Ho):
                grow = gout + (n * g.Co + co) * oplane + (od * g.Ho + oh) * g.Wo
                for kd in range(g.KD):
                    id_ = od * g.sd + kd * g.dd - g.pd
                    if id_ < 0 or id_ >= g.D:
                        continue
                    for kh in range(g.KH):
                        ih = oh * g.sh + kh * g.dh - g.ph
                        if ih < 0 or ih >= g.H:
                            continue
                        xrow = x + (n * g.C + c) * plane + (id_ * g.H + ih) * g.W
                        for kw in range(g.KW):
                            off = kw * g.dw - g.pw
                            strided_range(off, g.sw, g.W, 0, g.Wo, &lo, &hi)
                            a = acc + ((kd * g.KH + kh) * g.KW + kw) * LANES
                            j = lo
                            if g.sw == 1:
                                while j + LANES <= hi:
                                    for l in range(LANES):
                                        a[l] = a[l] + grow[j + l] * conj_of(xrow[j + l + off])
                                    j += LANES
                                for l in range(hi - j):
                                    a[l] = a[l] + grow[j + l] * conj_of(xrow[j + l + off])
                            else:
                                while j + LANES <= hi:
                                    for l in range(LANES):
                                        a[l] = a[l] + grow[j + l] * conj_of(
                                            xrow[(j + l) * g.sw + off])
                                    j += LANES
                                for l in range(hi - j):
                                    a[l] = a[l] + grow[j + l] * conj_of(
                                        xrow[(j + l) * g.sw + off])
    for t in range(kvol):
        a = acc + t * LANES
        taps[t] = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))


def conv_weight_grad(const conv_t[:, :, :, :, ::1] x, const conv_t[:, :, :, :, ::1] gout,
                     conv_t[:, :, :, :, ::1] dw, tuple stride, tuple pad, tuple dilation,
                     Py_ssize_t groups, int num_threads):
    """Direct weight gradient (thin problems: few output channels per group)."""
    cdef Geometry g = make_geometry(&x.shape[0], &gout.shape[0], &dw.shape[0],
                                    stride, pad, dilation, groups)
    cdef Py_ssize_t job, njobs = g.Co * (g.C // groups)
    cdef Py_ssize_t kvol = g.KD * g.KH * g.KW
    cdef conv_t* acc
    if njobs == 0:
        return
    cdef Driver d = start(njobs, num_threads)
    with nogil, parallel(num_threads=d.threads, use_threads_if=d.threads > 1):
        acc = <conv_t*> malloc(kvol * LANES * sizeof(conv_t))
        for job in prange(njobs, schedule="dynamic", chunksize=1):
            if proceed(&d, acc != NULL):
                weight_grad_pair(&x[0, 0, 0, 0, 0], &gout[0, 0, 0, 0, 0], &dw[0, 0, 0, 0, 0],
                                 &g, job, acc, &d)
        free(acc)
    finish(&d, "weight-gradient partial sums")
