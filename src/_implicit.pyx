"""Implicit-GEMM convolution (float32/float64): forward and weight gradient, no column matrix.

Each job computes one tile of one sample's output: a band of ``R`` output rows
(of one output depth plane) by ``Wc`` output columns, for every output
channel of one group.  It copies the input cells that tile reads into a
thread-private band buffer, zero-padded and split into stride phases, so
that every tap of every output cell is the band cell at a fixed offset:

    buffer[ci, kd, phase_h, phase_w, row, col]
        = x[ci, od*sd + kd*dd - pd, (oh0 + row)*sh + phase_h - ph,
            (ow0 + col)*sw + phase_w - pw]                   (0 outside x)

Output cell (r, c) of the tile sits at r * Wb + c of each (ci, kd, phases)
plane of the buffer, and tap (ci, kd, kh, kw) reads it at a per-tap offset
(kh*dh = sigma*sh + phase_h, kw*dw = tau*sw + phase_w, offset = plane start
+ sigma*Wb + tau; see ``tap_offset``).  So stride, dilation and padding all reduce to a stride-1
GEMM whose B panels are read in place by ``_microkernel.h``'s indirect
kernel; the columns past ``Wc`` of each row are computed and dropped.

The weights are packed once per call into the micro-kernel's blocks.  Every
output's sum runs over the taps in the same blocked order whatever the tile,
the batch or the thread count, so the bits never depend on either.  With one
input channel and few output channels per group (depthwise, single-channel
filters) a register block of output channels would sit idle: those run the
depthwise kernel on the same bands instead, one output channel at a time.
Reflect / replicate / circular padding is read during the band copy
(``source_index``), so no padded copy of x is made.  The weight gradient
(``conv_weight_grad``) reads the same bands with a dot-product kernel; each
job owns a block of the weight and sums the whole batch in order.
"""
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset
from cython.parallel cimport parallel, prange
cimport numpy as cnp

from _geometry cimport Geometry, ceil_div, decode_tap, make_geometry, strided_range
from _parallel cimport Driver, finish, interrupted, proceed, start


cdef extern from *:
    void __builtin_prefetch(const void* address, int rw, int locality) nogil

cdef extern from "_microkernel.h":
    int FC_MR
    int FC_NV
    int FC_VBYTES
    int FC_NR_F
    int FC_NR_D
    void fc_kernel_panel_f(Py_ssize_t K, const float* A, const float* base,
                           const Py_ssize_t* off, float* C, Py_ssize_t ldc,
                           int cols, int accumulate, const float* bias) nogil
    void fc_kernel_panel_d(Py_ssize_t K, const double* A, const double* base,
                           const Py_ssize_t* off, double* C, Py_ssize_t ldc,
                           int cols, int accumulate, const double* bias) nogil
    void fc_pack_block_f(float* dst, const float* src, Py_ssize_t K, int rows, Py_ssize_t rs,
                         Py_ssize_t ks, int mr) nogil
    void fc_pack_block_d(double* dst, const double* src, Py_ssize_t K, int rows,
                         Py_ssize_t rs, Py_ssize_t ks, int mr) nogil
    void fc_kernel_streamed_f(Py_ssize_t K, const float* A, const float* base,
                              const Py_ssize_t* off, float* C, Py_ssize_t ldc,
                              int accumulate, const float* bias) nogil
    void fc_kernel_streamed_d(Py_ssize_t K, const double* A, const double* base,
                              const Py_ssize_t* off, double* C, Py_ssize_t ldc,
                              int accumulate, const double* bias) nogil
    void fc_store_fence() nogil
    int FC_CVF_CV
    int FC_CVF_NK
    void fc_kernel_cvf_f(int nk, Py_ssize_t K, const float* A, Py_ssize_t astride,
                         const float* base, const Py_ssize_t* cell, const Py_ssize_t* off,
                         float* C, Py_ssize_t ldc, int accumulate) nogil
    void fc_kernel_cvf_d(int nk, Py_ssize_t K, const double* A, Py_ssize_t astride,
                         const double* base, const Py_ssize_t* cell, const Py_ssize_t* off,
                         double* C, Py_ssize_t ldc, int accumulate) nogil
    void fc_depthwise_row_f(Py_ssize_t K, const float* w, const float* base,
                            const Py_ssize_t* off, float* out, Py_ssize_t n, float b) nogil
    void fc_depthwise_row_d(Py_ssize_t K, const double* w, const double* base,
                            const Py_ssize_t* off, double* out, Py_ssize_t n, double b) nogil
    void fc_store_row_f(float* dst, const float* src, Py_ssize_t n, float b) nogil
    void fc_store_row_d(double* dst, const double* src, Py_ssize_t n, double b) nogil
    void fc_band_row_f(float* dst, const float* src, Py_ssize_t lo, Py_ssize_t hi,
                       Py_ssize_t n) nogil
    void fc_band_row_d(double* dst, const double* src, Py_ssize_t lo, Py_ssize_t hi,
                       Py_ssize_t n) nogil
    void fc_gather2_f(float* dst, const float* src, Py_ssize_t n) nogil
    void fc_gather2_d(double* dst, const double* src, Py_ssize_t n) nogil
    void fc_store_pair_f(float* dst, const float* src0, const float* src1, Py_ssize_t n,
                         float b) nogil
    void fc_store_pair_d(double* dst, const double* src0, const double* src1,
                         Py_ssize_t n, double b) nogil
    int FC_WG_MR
    int FC_WG_NR
    void fc_wgrad_f(const float* const* G, Py_ssize_t gstride, const float* base,
                    const Py_ssize_t* off, Py_ssize_t bstride, Py_ssize_t rows,
                    Py_ssize_t cols, float* acc) nogil
    void fc_wgrad_d(const double* const* G, Py_ssize_t gstride, const double* base,
                    const Py_ssize_t* off, Py_ssize_t bstride, Py_ssize_t rows,
                    Py_ssize_t cols, double* acc) nogil
    int FC_WGD_NR
    int FC_WGT_NK_MAX
    int FC_HALF_VECTORS
    void fc_wgrad_th_chunk_f(const float* gt, Py_ssize_t cop, const float* base,
                             const Py_ssize_t* off, Py_ssize_t kr, Py_ssize_t bstride,
                             Py_ssize_t rows, Py_ssize_t cols, float* acc) nogil
    void fc_wgrad_th_chunk_d(const double* gt, Py_ssize_t cop, const double* base,
                             const Py_ssize_t* off, Py_ssize_t kr, Py_ssize_t bstride,
                             Py_ssize_t rows, Py_ssize_t cols, double* acc) nogil
    void fc_wgrad_t_chunk_f(const float* gt, Py_ssize_t cop, const float* base,
                            const Py_ssize_t* off, Py_ssize_t kr, Py_ssize_t bstride,
                            Py_ssize_t rows, Py_ssize_t cols, float* acc) nogil
    void fc_wgrad_t_chunk_d(const double* gt, Py_ssize_t cop, const double* base,
                            const Py_ssize_t* off, Py_ssize_t kr, Py_ssize_t bstride,
                            Py_ssize_t rows, Py_ssize_t cols, double* acc) nogil
    void fc_transpose_f(float* dst, Py_ssize_t dpitch, const float* src, Py_ssize_t spitch,
                        Py_ssize_t n, Py_ssize_t m) nogil
    void fc_transpose_d(double* dst, Py_ssize_t dpitch, const double* src,
                        Py_ssize_t spitch, Py_ssize_t n, Py_ssize_t m) nogil
    void fc_wgrad_dw_f(const float* G, Py_ssize_t gstride, const float* base,
                       const Py_ssize_t* off, Py_ssize_t bstride, Py_ssize_t rows,
                       Py_ssize_t cols, int nr, float* acc) nogil
    void fc_wgrad_dw_d(const double* G, Py_ssize_t gstride, const double* base,
                       const Py_ssize_t* off, Py_ssize_t bstride, Py_ssize_t rows,
                       Py_ssize_t cols, int nr, double* acc) nogil

ctypedef fused real_t:
    float
    double

cdef enum:
    KC = 128        # K block: the B rows of a panel stay in L1 (measured best of 48-all)
    # Packed weights one forward job streams per panel: a layer with more than
    # WEIGHT_SPLIT_BYTES (512 channels of 3x3 taps: 9 MiB) splits each tile's
    # output channels over jobs of at most WEIGHT_JOB_BYTES, so a job's weights
    # stay in L2 and small images still give every thread work without cutting
    # tiles into single rows.  Smaller layers stay whole: splitting C3D's 442
    # KiB gained nothing, and each thread then copies every band.
    WEIGHT_JOB_BYTES = 1 << 18
    WEIGHT_SPLIT_BYTES = 1 << 20
    PARALLEL_PACK_ELEMENTS = 1 << 16   # below this, a thread team costs more than it saves
    # Transposed grad_output the channel-vector weight gradient holds per chunk
    # of rows: each block of weight columns re-reads it, from L2.
    WGT_CHUNK_BYTES = 1 << 16
    # A tile runs on the channel-vector forward kernel when the cell panels
    # would compute this many percent more cells than it holds (and its
    # channels come in whole blocks): 16 % at 7x7 (measured 13 % faster on
    # it).  At equal cells it runs 5-6 % slower than the panels (ResNet 3x3),
    # and slower still on stride-2 tiles (11 % waste: 4.76 against 4.47 ms).
    CVF_PANEL_WASTE_PERCENT = 12
    # ... counting output cells only from this K on.  Forced onto the kernel,
    # 14.3 % waste (28- and 14-wide rows) measured 6-10 % faster at K = 1152 -
    # 2304, 6 % slower at K = 576 (stride 2, 64 -> 128 channels).
    CVF_LONG_K = 1024
    # Non-temporal output stores (``stream_output``): for a sample's output of
    # at least this many bytes (half an L2), on cache-line aligned panels.
    STREAM_MIN_BYTES = 1 << 20
    STREAM_ALIGN = 64

cdef enum:
    # Padding modes (``PADDING_MODES`` gives their names): what a cell outside x reads.
    ZEROS = 0
    REFLECT = 1
    REPLICATE = 2
    CIRCULAR = 3

PADDING_MODES = {"zeros": ZEROS, "reflect": REFLECT, "replicate": REPLICATE,
                 "circular": CIRCULAR}

cdef enum:
    # How conv_forward's weight array holds the weight (``pack_block``).
    PLAIN = 0
    TRANSPOSED = 1
    FLIPPED = 2

cnp.import_array()

# CVF_PANEL_WASTE_PERCENT, settable for the tests (``set_channel_vector_waste``)
cdef int cvf_waste_percent = CVF_PANEL_WASTE_PERCENT
# Whether forward jobs may read whole-row bands from x in place (``band_in_place``);
# settable for the tests (``set_band_in_place``)
cdef bint in_place_allowed = True
# STREAM_MIN_BYTES, settable for the tests (``set_stream_min_bytes``)
cdef Py_ssize_t stream_min_bytes = STREAM_MIN_BYTES


# The entry points take ndarrays and check them here, in C: typed memoryviews
# cost ~1 us per call in acquisition alone, a fifth of a tiny convolution.
cdef int check_array(cnp.ndarray a, int typenum, int ndim, bint writeable,
                     str name) except -1:
    if cnp.PyArray_TYPE(a) != typenum or (ndim >= 0 and cnp.PyArray_NDIM(a) != ndim) \
            or not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISNOTSWAPPED(a) \
            or (writeable and not cnp.PyArray_ISWRITEABLE(a)):
        what = "C-contiguous, writeable" if writeable else "C-contiguous"
        dtype = "float32" if typenum == cnp.NPY_FLOAT else "float64"
        rank = f"{ndim}-D " if ndim >= 0 else ""
        raise ValueError(f"fastconv: {name} must be a {what} {rank}array of {dtype}, got "
                         f"{(<object> a).dtype} of shape {(<object> a).shape}")
    return 0


cdef int check_operands(cnp.ndarray x, cnp.ndarray read, str read_name, cnp.ndarray written,
                        str written_name, int ndim) except -1:
    """The dtype number of three operands that check_array accepts: ``x`` and
    ``read`` read, ``written`` written (``ndim`` -1: any rank)."""
    cdef int t = real_typenum(x)
    check_array(x, t, ndim, False, "x")
    check_array(read, t, ndim, False, read_name)
    check_array(written, t, ndim, True, written_name)
    return t


cdef cnp.ndarray aligned(cnp.ndarray a):
    """``a``, or an aligned copy of it: arrays unpickled from out-of-band buffers
    (dask, multiprocessing) may start at any byte, and the kernels load whole
    elements."""
    return a if cnp.PyArray_ISALIGNED(a) else cnp.PyArray_NewCopy(a, cnp.NPY_CORDER)


cdef int real_typenum(cnp.ndarray x) except -1:
    cdef int t = cnp.PyArray_TYPE(x)
    if t != cnp.NPY_FLOAT and t != cnp.NPY_DOUBLE:
        raise ValueError(f"fastconv: the implicit GEMM computes in float32 or float64, got {x.dtype}")
    return t


cdef inline Py_ssize_t* dims(cnp.ndarray a):
    return <Py_ssize_t*> cnp.PyArray_DIMS(a)


ctypedef struct Band:
    # Tile of output cells per job, and the band buffer that serves it.
    Py_ssize_t R, Wc                # output rows and columns per tile
    Py_ssize_t nbh, nbw             # tiles along H and along W
    Py_ssize_t ph_h, ph_w           # stride phases copied along H and W
    Py_ssize_t Hb, Wb               # rows and columns of one buffer plane
    Py_ssize_t planes               # planes per input channel: KD * ph_h * ph_w
    Py_ssize_t size                 # buffer elements (+ one panel of slack)
    Py_ssize_t stride               # elements from one plane to the next (>= Hb * Wb)
    int mode                        # what cells outside x read: ZEROS .. CIRCULAR


ctypedef struct OutMap:
    # Where output cell (od, oh, ow) of the computed grid lands in the output
    # array (D, H, W): at start + step * (od, oh, ow).  The identity for a
    # plain convolution; one stride phase of a transposed convolution otherwise.
    # With a pixel shuffle (fd, fh, fw) != (1, 1, 1), computed channel q is
    # output channel q // (fd * fh * fw) at tap offset (a, b, c) of its
    # fd x fh x fw block, q % (fd * fh * fw) = (a * fh + b) * fw + c: a
    # transposed convolution with stride = kernel as one 1x1 convolution.
    Py_ssize_t C, D, H, W
    Py_ssize_t d0, h0, w0
    Py_ssize_t sd, sh, sw
    Py_ssize_t fd, fh, fw


cdef inline bint uses_depthwise_kernel(Py_ssize_t cig, Py_ssize_t cog) noexcept nogil:
    # One input channel per group and few output channels (depthwise, single-
    # channel filters): a register block of FC_MR output channels would sit
    # mostly idle, so the depthwise kernel runs each output channel alone.
    return cig == 1 and 2 * cog <= FC_MR


cdef inline Py_ssize_t job_channels(Py_ssize_t cig, Py_ssize_t cog, Py_ssize_t K,
                                    Py_ssize_t itemsize) noexcept nogil:
    """Output channels per forward job (whole register blocks, spread evenly): a
    group's, unless its packed weights exceed WEIGHT_SPLIT_BYTES."""
    cdef Py_ssize_t nb = ceil_div(cog, FC_MR)
    cdef Py_ssize_t per_job = WEIGHT_JOB_BYTES // (FC_MR * K * itemsize)
    if uses_depthwise_kernel(cig, cog) or nb * FC_MR * K * itemsize <= WEIGHT_SPLIT_BYTES:
        return cog
    per_job = ceil_div(nb, ceil_div(nb, max(1, per_job)))
    return per_job * FC_MR


def output_channels_per_job(Py_ssize_t cig, Py_ssize_t cog, Py_ssize_t taps,
                            Py_ssize_t itemsize):
    """Output channels of one group that a forward job computes (``job_channels``;
    for the cost model and the tiling)."""
    return job_channels(cig, cog, cig * taps, itemsize)


def weight_grad_channel_block(Py_ssize_t cog, Py_ssize_t itemsize):
    """(channels, vectorised): the output channels a weight-gradient job's
    block is a multiple of, and whether it runs vectorised across them.  Whole
    channel vectors when a group has at least one (``channel_vectors``), else
    whole register blocks of the dot-product kernel."""
    if channel_vectors(cog, itemsize):
        return min(FC_VBYTES // itemsize, channel_pitch(cog, itemsize)), True
    return FC_WG_MR, False


def weight_grad_channel_pitch(Py_ssize_t cob, Py_ssize_t itemsize):
    """Channels the channel-vector weight gradient computes for a block of
    ``cob`` (whole vectors, or a half vector), for the cost model."""
    return channel_pitch(cob, itemsize)


def depthwise_kernel(Py_ssize_t cig, Py_ssize_t cog):
    """Whether conv_forward runs groups of ``cig`` -> ``cog`` channels on the
    depthwise kernel (for the cost model)."""
    return uses_depthwise_kernel(cig, cog)


cdef inline int panel_width(real_t* dummy) noexcept nogil:
    if real_t is float:
        return FC_NR_F
    return FC_NR_D


cdef Band make_band(const Geometry* g, Py_ssize_t R, Py_ssize_t Wc, int NR,
                    bint double_cells, int mode, bint share_pad=False) noexcept nogil:
    cdef Band b
    b.mode = mode
    cdef Py_ssize_t reach_h = (g.KH - 1) * g.dh, reach_w = (g.KW - 1) * g.dw
    b.R, b.Wc = R, Wc
    b.nbh, b.nbw = ceil_div(g.Ho, R), ceil_div(g.Wo, Wc)
    b.ph_h = min(g.sh, reach_h + 1)
    b.ph_w = min(g.sw, reach_w + 1)
    b.Hb = R + reach_h // g.sh
    b.Wb = Wc + reach_w // g.sw
    cdef Py_ssize_t shared = shared_pad_columns(g, &b) if share_pad else 0
    b.Wb -= shared
    b.planes = g.KD * b.ph_h * b.ph_w
    # An odd number of cache lines from plane to plane: a tap's B rows in
    # successive planes then spread over every L1 set (a power-of-two stride,
    # e.g. 1024 floats for a 1-D band, puts them all in one 8-way set).  The
    # last row's reads past its end land in the `shared` cells after it, which
    # only ever hold zeros (calloc, and band_row's zero pads).
    cdef Py_ssize_t line = 64 // (8 if double_cells else 4)
    b.stride = ceil_div(b.Hb * b.Wb + shared, line)
    b.stride = (b.stride + 1 - b.stride % 2) * line
    # A panel past the last cell reads up to NR - 1 cells beyond the last plane.
    b.size = (g.C // g.groups) * b.planes * b.stride + NR
    return b


cdef Py_ssize_t shared_pad_columns(const Geometry* g, const Band* b) noexcept nogil:
    """Columns of zero padding a band row can share with the next row's start.

    With zero padding and tiles of whole rows, the columns a row reads past
    the output's right edge are zeros, and so are the first columns of the
    next row (left padding): a row pitch shorter by the smaller of the two
    reads the same zeros from the next row, and computes fewer dropped cells
    (a 7x7 image at 3x3: 55 computed cells instead of 61).  Each output reads
    the same values in the same order: the results do not change.
    """
    cdef Py_ssize_t shared = b.Wb - b.Wc, fw, lo, hi
    if b.mode != ZEROS or b.nbw != 1:
        return 0
    for fw in range(b.ph_w):
        strided_range(fw - g.pw, g.sw, g.W, 0, b.Wb, &lo, &hi)
        shared = min(shared, lo, b.Wb - hi)
    return shared


cdef inline Py_ssize_t tap_offset(const Geometry* g, const Band* b, Py_ssize_t ci,
                                  Py_ssize_t kd, Py_ssize_t kh, Py_ssize_t kw) noexcept nogil:
    """Where tap (ci, kd, kh, kw) reads output cell 0 of a tile in the band buffer:
    its plane (channel, depth tap, stride phases), then (sigma, tau)."""
    cdef Py_ssize_t plane = (((ci * g.KD + kd) * b.ph_h + (kh * g.dh) % g.sh) * b.ph_w
                             + (kw * g.dw) % g.sw)
    return plane * b.stride + (kh * g.dh) // g.sh * b.Wb + (kw * g.dw) // g.sw


cdef inline Py_ssize_t source_index(Py_ssize_t j, Py_ssize_t n, int mode) noexcept nogil:
    """The cell of a length-n axis that position j reads in ``mode`` (PyTorch's meanings).

    Total for any j, so the rows and columns a band holds beyond the padded
    extent (they feed dropped outputs only) still read inside x.
    """
    cdef Py_ssize_t period
    if 0 <= j < n:
        return j
    if mode == REPLICATE:
        return 0 if j < 0 else n - 1
    if mode == CIRCULAR:
        j = j % n                       # C remainder: the sign of j
        return j + n if j < 0 else j
    if n == 1:                          # REFLECT: mirror about the end cells
        return 0
    period = 2 * (n - 1)
    j = j % period
    if j < 0:
        j += period
    return j if j < n else period - j


cdef void copy_band(const real_t* xg, Py_ssize_t cig, real_t* buf, const Geometry* g,
                    const Band* b, Py_ssize_t od, Py_ssize_t oh0, Py_ssize_t ow0) noexcept nogil:
    """Fill the band buffer of the tile at (od, oh0, ow0) for channels xg[:cig]."""
    if b.mode == ZEROS:
        copy_band_zeros(xg, cig, buf, g, b, od, oh0, ow0)
    else:
        copy_band_padded(xg, cig, buf, g, b, od, oh0, ow0)


cdef void copy_band_padded(const real_t* xg, Py_ssize_t cig, real_t* buf, const Geometry* g,
                           const Band* b, Py_ssize_t od, Py_ssize_t oh0,
                           Py_ssize_t ow0) noexcept nogil:
    """copy_band for reflect / replicate / circular: cells outside x read the cell of
    x that ``source_index`` names, so no padded copy of x is ever made."""
    cdef Py_ssize_t ci, kd, fh, fw, row, col, lo, hi, idd, ih, iw0
    cdef const real_t* src
    cdef real_t* dst
    for ci in range(cig):
        for kd in range(g.KD):
            idd = source_index(od * g.sd + kd * g.dd - g.pd, g.D, b.mode)
            for fh in range(b.ph_h):
                for fw in range(b.ph_w):
                    iw0 = ow0 * g.sw + fw - g.pw
                    strided_range(iw0, g.sw, g.W, 0, b.Wb, &lo, &hi)
                    for row in range(b.Hb):
                        dst = buf + (((ci * g.KD + kd) * b.ph_h + fh) * b.ph_w + fw) \
                            * b.stride + row * b.Wb
                        ih = source_index((oh0 + row) * g.sh + fh - g.ph, g.H, b.mode)
                        src = xg + ((ci * g.D + idd) * g.H + ih) * g.W
                        for col in range(lo):
                            dst[col] = src[source_index(col * g.sw + iw0, g.W, b.mode)]
                        if g.sw == 1:
                            memcpy(dst + lo, src + iw0 + lo, (hi - lo) * sizeof(real_t))
                        else:
                            strided_copy(dst + lo, src + lo * g.sw + iw0, hi - lo, g.sw)
                        for col in range(hi, b.Wb):
                            dst[col] = src[source_index(col * g.sw + iw0, g.W, b.mode)]


cdef void copy_band_zeros(const real_t* xg, Py_ssize_t cig, real_t* buf, const Geometry* g,
                          const Band* b, Py_ssize_t od, Py_ssize_t oh0,
                          Py_ssize_t ow0) noexcept nogil:
    """copy_band for zero padding: cells outside x are 0.

    Planes and their rows are filled in increasing address order, which
    ``fc_band_row`` (whole-vector pads past a row's end) relies on.
    """
    cdef Py_ssize_t ci, kd, fh, fw, row, col, lo, hi, idd, ih, iw0
    cdef const real_t* xplane
    cdef real_t* plane
    cdef real_t* dst
    for ci in range(cig):
        for kd in range(g.KD):
            idd = od * g.sd + kd * g.dd - g.pd
            xplane = xg + (ci * g.D + idd) * g.H * g.W
            for fh in range(b.ph_h):
                for fw in range(b.ph_w):
                    plane = buf + (((ci * g.KD + kd) * b.ph_h + fh) * b.ph_w + fw) * b.stride
                    # buffer column col reads x column col * sw + iw0
                    iw0 = ow0 * g.sw + fw - g.pw
                    strided_range(iw0, g.sw, g.W, 0, b.Wb, &lo, &hi)
                    if g.sh == 1 and g.sw == 1 and lo == 0 and hi == b.Wb == g.W:
                        # Whole rows of x, one after the other (1x1 kernels, no W
                        # padding): the band plane is one block of x.
                        copy_rows_block(xg, plane, g, b, ci, idd, oh0 + fh - g.ph)
                        continue
                    ih = oh0 * g.sh + fh - g.ph
                    dst = plane
                    for row in range(b.Hb):
                        if idd < 0 or idd >= g.D or ih < 0 or ih >= g.H or lo == hi:
                            band_row(dst, <const real_t*> dst, 0, 0, b.Wb)
                        elif g.sw == 1:
                            band_row(dst, xplane + ih * g.W + iw0, lo, hi, b.Wb)
                        else:
                            band_row(dst, <const real_t*> dst, 0, 0, lo)
                            strided_copy(dst + lo, xplane + ih * g.W + lo * g.sw + iw0,
                                         hi - lo, g.sw)
                            band_row(dst + hi, <const real_t*> dst, 0, 0, b.Wb - hi)
                        dst += b.Wb
                        ih += g.sh


cdef inline void strided_copy(real_t* dst, const real_t* src, Py_ssize_t n,
                              Py_ssize_t stride) noexcept nogil:
    """dst[j] = src[j * stride] for j < n."""
    cdef Py_ssize_t j
    if stride == 2:
        if real_t is float:
            fc_gather2_f(dst, src, n)
        else:
            fc_gather2_d(dst, src, n)
        return
    for j in range(n):
        dst[j] = src[j * stride]


cdef inline void band_row(real_t* dst, const real_t* src, Py_ssize_t lo, Py_ssize_t hi,
                          Py_ssize_t n) noexcept nogil:
    if real_t is float:
        fc_band_row_f(dst, src, lo, hi, n)
    else:
        fc_band_row_d(dst, src, lo, hi, n)


cdef inline void copy_rows_block(const real_t* xg, real_t* dst, const Geometry* g,
                                 const Band* b, Py_ssize_t ci, Py_ssize_t idd,
                                 Py_ssize_t ih0) noexcept nogil:
    """copy_band_zeros for one plane whose Hb rows are the whole rows ih0, ih0 + 1, ..
    of x (zeros outside x): one memcpy for the rows inside."""
    cdef Py_ssize_t lo = 0, hi = 0
    if 0 <= idd < g.D:
        lo = min(max(-ih0, 0), b.Hb)
        hi = max(min(g.H - ih0, b.Hb), lo)
    if lo > 0:
        memset(dst, 0, lo * b.Wb * sizeof(real_t))
    if hi > lo:
        memcpy(dst + lo * b.Wb, xg + ((ci * g.D + idd) * g.H + ih0 + lo) * g.W,
               (hi - lo) * b.Wb * sizeof(real_t))
    if hi < b.Hb:
        memset(dst + hi * b.Wb, 0, (b.Hb - hi) * b.Wb * sizeof(real_t))


ctypedef struct Tile:
    # One forward job: sample, group, output depth plane, first output row and
    # column, its columns, and its computed cells (rows - 1) * Wb + cols.
    Py_ssize_t n, grp, od, oh0, ow0, cols, m


cdef inline Tile job_tile(const Geometry* g, const Band* b, Py_ssize_t job) noexcept nogil:
    """job = (((n * groups + grp) * Do + od) * nbh + bh) * nbw + bw."""
    cdef Tile t
    cdef Py_ssize_t bw = job % b.nbw
    cdef Py_ssize_t bh = (job // b.nbw) % b.nbh
    t.od = (job // (b.nbw * b.nbh)) % g.Do
    t.grp = (job // (b.nbw * b.nbh * g.Do)) % g.groups
    t.n = job // (b.nbw * b.nbh * g.Do * g.groups)
    t.oh0, t.ow0 = bh * b.R, bw * b.Wc
    t.cols = min(b.Wc, g.Wo - t.ow0)
    t.m = (min(b.R, g.Ho - t.oh0) - 1) * b.Wb + t.cols
    return t


cdef inline bint band_in_place(const Geometry* g, const Band* b,
                               Py_ssize_t itemsize) noexcept nogil:
    """Whether forward jobs read whole-row bands in x itself (``tile_band``),
    with x's input-channel stride as tap offsets, instead of copying them: a
    band that would be a copy of whole x rows, plane for plane (a 1x1 kernel,
    stride 1, no padding, tiles of whole rows), of a float32 layer with at
    least twice as many input as output channels.  The copy (memmove) was a
    fifth of a 1x1 layer's time; measured in place, float32 reductions ran
    11-24 % faster (512 -> 128 on 28x28, 1024 -> 256 on 14x14, 2048 -> 512
    on 7x7; 256 -> 64 on 56x56 even), while expansions (128 -> 512: 11 %
    slower) and float64 (512 -> 128 on 28x28: 13 % slower) lost the compact,
    cache-friendly copy that many output-channel blocks re-read."""
    return (in_place_allowed and itemsize == 4 and 2 * (g.Co // g.groups) <= g.C // g.groups
            and g.KD == 1 and g.KH == 1 and g.KW == 1 and g.sd == 1 and g.sh == 1
            and g.sw == 1 and g.pd == 0 and g.ph == 0 and g.pw == 0
            and b.Wc == g.W and b.Wb == g.W)


cdef inline const real_t* tile_band(const real_t* x, const Py_ssize_t* xoff,
                                    const Py_ssize_t* off, const Geometry* g, const Band* b,
                                    Tile t, Py_ssize_t tile, Py_ssize_t extent, real_t* buf,
                                    Py_ssize_t* band_of,
                                    const Py_ssize_t** offsets) noexcept nogil:
    """The band a forward job reads for tile ``t`` (``tile``), and its tap
    offsets (``offsets``).  With ``xoff`` (``band_in_place``): x itself, where
    the panels' reads (``extent`` cells from the tile's start in each channel
    plane) stay inside x; else ``buf``, copied unless it holds the tile."""
    cdef Py_ssize_t cig = g.C // g.groups, plane = g.D * g.H * g.W, start
    if xoff != NULL:
        start = ((t.n * g.C + t.grp * cig) * g.D + t.od) * g.H * g.W + t.oh0 * g.W + t.ow0
        if start + (cig - 1) * plane + extent <= g.N * g.C * plane:
            offsets[0] = xoff
            return x + start
    offsets[0] = off
    if band_of[0] != tile:
        copy_band(x + (t.n * g.C + t.grp * cig) * g.D * g.H * g.W, cig, buf, g, b, t.od,
                  t.oh0, t.ow0)
        band_of[0] = tile
    return buf


def set_stream_min_bytes(Py_ssize_t min_bytes):
    """Set the smallest output per sample whose panels use non-temporal stores
    (``stream_output``; -1: none); returns the previous value.  For tests and
    measurements: the same bits."""
    global stream_min_bytes
    previous, stream_min_bytes = stream_min_bytes, min_bytes
    return previous


def set_band_in_place(bint allowed):
    """Allow or forbid reading whole-row bands from x in place (``band_in_place``);
    returns the previous setting.  For tests and measurements: the same bits."""
    global in_place_allowed
    previous, in_place_allowed = in_place_allowed, allowed
    return previous


cdef void implicit_job(const real_t* x, const real_t* wp, const Py_ssize_t* off,
                       const Py_ssize_t* xoff, const real_t* bias, real_t* out,
                       const Geometry* g, const Band* b, const OutMap* om, Py_ssize_t kc,
                       Py_ssize_t occ, Py_ssize_t job, real_t* buf, Py_ssize_t* band_of,
                       real_t* cbuf) noexcept nogil:
    """Job ``job`` = tile * (output-channel blocks) + block: output channels
    [block * occ, block * occ + occ) of one group over one tile.  The blocks of a
    tile share its band: ``band_of`` names the tile whose band ``buf`` holds
    (-1: none), and a thread given the same tile again does not copy it again."""
    cdef int NR = panel_width(<real_t*>NULL)
    cdef Py_ssize_t cig = g.C // g.groups, cog = g.Co // g.groups
    cdef Py_ssize_t K = cig * g.KD * g.KH * g.KW
    cdef Py_ssize_t nob = ceil_div(cog, occ), tile = job // nob
    cdef Py_ssize_t co0 = (job % nob) * occ, nco = min(occ, cog - co0)
    cdef Py_ssize_t nb = ceil_div(nco, FC_MR)
    cdef Tile t = job_tile(g, b, tile)
    cdef Py_ssize_t n = t.n, grp = t.grp, od = t.od, oh0 = t.oh0, ow0 = t.ow0
    cdef Py_ssize_t cols = t.cols, m = t.m
    cdef int VLEN = FC_VBYTES // sizeof(real_t)
    # packed blocks of FC_MR channels: this job's start at block co0 / FC_MR
    cdef const real_t* wg = wp + (grp * ceil_div(cog, FC_MR) + co0 // FC_MR) * K * FC_MR
    cdef Py_ssize_t cq0 = grp * cog + co0, oplane = om.D * om.H * om.W
    cdef Py_ssize_t k0, klen, q = 0, blk, width, ldc, direct_blocks
    cdef bint runs = panels_are_output_runs(b, om, t)
    cdef bint streams = runs and K <= kc and stream_output(om, sizeof(real_t))
    cdef bint stream, streamed = False
    cdef real_t* out_run = out + (n * om.C + cq0) * oplane + output_offset(om, od, oh0, ow0)
    cdef real_t* c
    cdef const real_t* cbias
    cdef real_t zeros[16]               # (>= FC_MR) the bias of a layer without one: + 0,
                                        # as store_row adds
    cdef const Py_ssize_t* offs
    cdef const real_t* band = tile_band(x, xoff, off, g, b, t, tile,
                                        panel_cells(m, NR, VLEN), buf, band_of, &offs)
    memset(zeros, 0, sizeof(zeros))
    # Panel by panel: W_g @ B_p, K blocked so that the panel's B rows
    # (buf[q + off[k]:][:NR]) stay in L1 across the channel blocks.  A whole
    # panel that is one run of each output row (1x1 layers, 1-D tiles) is
    # written straight into the output, bias added by the last K block; other
    # panels, and a last block of fewer than MR channels, go through cbuf
    # (nco x NR) and store_panel, which drops the band's extra columns.
    while q < m:
        width = min(NR, m - q)
        if FC_NV > 2 and 0 < m - q - NR <= VLEN:
            # A last panel of one vector would run MR accumulators, too few to
            # cover the FMA latency (half speed): end on two 2-vector panels
            # instead (a 7x7 tile: 24 + 16 + 15 cells, not 24 + 24 + 7).
            width = NR - VLEN
        direct_blocks = nco // FC_MR if runs and width == NR else 0
        stream = (streams and direct_blocks == nb and
                  (<size_t> (out_run + q)) % STREAM_ALIGN == 0)
        if not stream:
            prefetch_panel_output(out, b, om, n, cq0, nco, od, oh0, ow0, cols, q, width)
        streamed = streamed or stream
        k0 = 0
        while k0 < K:
            klen = min(kc, K - k0)
            for blk in range(nb):
                if blk < direct_blocks:
                    c, ldc = out_run + blk * FC_MR * oplane + q, oplane
                    cbias = NULL
                    if k0 + klen == K:
                        cbias = (bias + cq0 + blk * FC_MR) if bias != NULL else zeros
                else:
                    c, ldc, cbias = cbuf + blk * FC_MR * NR, NR, NULL
                if stream:              # one K block, whole panels: c is the output
                    if real_t is float:
                        fc_kernel_streamed_f(klen, wg + (blk * K + k0) * FC_MR, band + q,
                                             offs + k0, c, ldc, 0, cbias)
                    else:
                        fc_kernel_streamed_d(klen, wg + (blk * K + k0) * FC_MR, band + q,
                                             offs + k0, c, ldc, 0, cbias)
                elif real_t is float:
                    fc_kernel_panel_f(klen, wg + (blk * K + k0) * FC_MR, band + q, offs + k0,
                                      c, ldc, <int>width, k0 > 0, cbias)
                else:
                    fc_kernel_panel_d(klen, wg + (blk * K + k0) * FC_MR, band + q, offs + k0,
                                      c, ldc, <int>width, k0 > 0, cbias)
            k0 += klen
        if direct_blocks < nb:
            blk = direct_blocks * FC_MR
            store_panel(cbuf + blk * NR, NR, q, width, out, bias, g, b, om, n, cq0 + blk,
                        nco - blk, od, oh0, ow0, cols)
        q += width
    if streamed:
        fc_store_fence()


cdef inline bint stream_output(const OutMap* om, Py_ssize_t itemsize) noexcept nogil:
    """Whether forward panels written straight into the output in one K block
    may use non-temporal stores (on 64-byte aligned panels): a sample's
    output of STREAM_MIN_BYTES or more leaves the caches before anyone reads
    it, and a plain store first reads each line it writes (the 1x1 64 -> 256
    layer moves 25.7 MB of output, and read it all again)."""
    cdef Py_ssize_t oplane = om.D * om.H * om.W
    return (streamed_panels() and stream_min_bytes >= 0
            and (oplane * itemsize) % STREAM_ALIGN == 0
            and om.C * oplane * itemsize >= stream_min_bytes)


cdef inline bint streamed_panels() noexcept nogil:
    """Whether a panel's rows are whole cache lines (AVX-512: 48 float or 24
    double cells, 192 bytes), so that streaming them writes whole lines.  An
    AVX2 panel row is 1.5 lines: its two neighbours each wrote half a line
    around the caches, and the 1x1 64 -> 256 layer ran 20 % slower."""
    return (FC_NV * FC_VBYTES) % STREAM_ALIGN == 0


cdef inline Py_ssize_t panel_cells(Py_ssize_t m, Py_ssize_t NR, Py_ssize_t VLEN) noexcept nogil:
    """Cells implicit_job computes for a tile of m band cells: whole vectors,
    and two 2-vector panels in place of a last 1-vector one."""
    cdef Py_ssize_t q = 0, width, computed = 0
    while q < m:
        width = min(NR, m - q)
        if FC_NV > 2 and 0 < m - q - NR <= VLEN:
            width = NR - VLEN
        computed += ceil_div(width, VLEN) * VLEN
        q += width
    return computed


cdef inline bint channel_vector_forward(const Geometry* g, const Band* b, const OutMap* om,
                                        Py_ssize_t itemsize) noexcept nogil:
    """Whether conv_forward runs ``vector_job``: output channels of a group in
    whole blocks of FC_CVF_CV vectors, plain output rows, a build with
    3-vector panels, and a whole tile on which the panels compute over
    ``CVF_PANEL_WASTE_PERCENT`` more cells than the channel-vector kernel:
    its output cells where K is long (``CVF_LONG_K``), else its band cells
    (dropped columns included: with short K, its transposes cost about as
    much as the dropped cells it skips)."""
    cdef Py_ssize_t vl = FC_VBYTES // itemsize, NR = FC_NV * vl
    cdef Py_ssize_t m = (min(b.R, g.Ho) - 1) * b.Wb + min(b.Wc, g.Wo)
    cdef Py_ssize_t K = (g.C // g.groups) * g.KD * g.KH * g.KW
    if FC_NV < 3 or not plain_rows(om) or (g.Co // g.groups) % (FC_CVF_CV * vl) != 0:
        return False
    cdef Py_ssize_t cells = m
    if K >= CVF_LONG_K:
        cells = min(b.R, g.Ho) * min(b.Wc, g.Wo)      # output cells only
    return panel_cells(m, NR, vl) * 100 > cells * (100 + cvf_waste_percent)


cdef void vector_job(const real_t* x, const real_t* wp, const Py_ssize_t* off,
                     const Py_ssize_t* xoff, const real_t* bias, real_t* out,
                     const Geometry* g, const Band* b,
                     const OutMap* om, Py_ssize_t kc, Py_ssize_t occ, Py_ssize_t job,
                     real_t* buf, Py_ssize_t* band_of, real_t* cbuf) noexcept nogil:
    """implicit_job on the channel-vector kernel (``fc_kernel_cvf``): output
    channels [co0, co0 + occ) of one group over one tile, occ = FC_CVF_CV
    vectors.  The tile's output cells (not the band's dropped columns between
    its rows) go in near-equal panels of up to FC_CVF_NK, K blocked as in
    implicit_job; cbuf (cells x occ) is then transposed into the output rows,
    and the bias (+ 0 without one) added after the sum, as store_row adds it:
    the bits of implicit_job.  The cells' band offsets go after cbuf's
    vector_cbuf_cells(b) cells."""
    cdef Py_ssize_t vl = FC_VBYTES // sizeof(real_t)
    cdef Py_ssize_t cig = g.C // g.groups, cog = g.Co // g.groups
    cdef Py_ssize_t K = cig * g.KD * g.KH * g.KW
    cdef Py_ssize_t nob = cog // occ, tile = job // nob, co0 = (job % nob) * occ
    cdef Tile t = job_tile(g, b, tile)
    cdef Py_ssize_t nrows = min(b.R, g.Ho - t.oh0), n = nrows * t.cols
    cdef Py_ssize_t npanels = ceil_div(n, FC_CVF_NK)
    cdef const real_t* wg = wp + (t.grp * (cog // vl) + co0 // vl) * K * vl
    cdef Py_ssize_t cq0 = t.grp * cog + co0, oplane = om.D * om.H * om.W
    cdef Py_ssize_t k0, klen, q, p, r, co, j
    cdef Py_ssize_t* cells = <Py_ssize_t*> (cbuf + vector_cbuf_cells(b) * occ)
    cdef int nk
    cdef real_t* orow
    cdef real_t bv
    cdef const Py_ssize_t* offs
    cdef const real_t* band = tile_band(x, xoff, off, g, b, t, tile, t.m, buf, band_of, &offs)
    for r in range(nrows):
        for j in range(t.cols):
            cells[r * t.cols + j] = r * b.Wb + j
    k0 = 0
    while k0 < K:
        klen = min(kc, K - k0)
        q = 0
        for p in range(npanels):
            nk = <int>(n // npanels + (1 if p < n % npanels else 0))
            if real_t is float:
                fc_kernel_cvf_f(nk, klen, wg + k0 * vl, K * vl, band, cells + q, offs + k0,
                                cbuf + q * occ, occ, k0 > 0)
            else:
                fc_kernel_cvf_d(nk, klen, wg + k0 * vl, K * vl, band, cells + q, offs + k0,
                                cbuf + q * occ, occ, k0 > 0)
            q += nk
        k0 += klen
    # Tile rows that are consecutive whole output rows are one run of each
    # channel: one transpose of all n cells in 8 x 8 blocks (a 7x7 image: 6
    # blocks of 8 cells and one cell, not 7 rows of 7 cells moved one by one).
    cdef Py_ssize_t run = n if (om.sh == 1 and om.w0 == 0 and t.ow0 == 0
                                and t.cols == om.W) else t.cols
    r = 0
    while r < n:
        orow = out + (t.n * om.C + cq0) * oplane + output_offset(om, t.od, t.oh0 + r // t.cols,
                                                                  t.ow0)
        if real_t is float:
            fc_transpose_f(orow, oplane, cbuf + r * occ, occ, run, occ)
        else:
            fc_transpose_d(orow, oplane, cbuf + r * occ, occ, run, occ)
        for co in range(occ):
            bv = bias[cq0 + co] if bias != NULL else 0
            for j in range(run):
                orow[co * oplane + j] += bv
        r += run


cdef inline Py_ssize_t vector_cbuf_cells(const Band* b) noexcept nogil:
    """Cells of vector_job's result buffer: a tile's output cells (whole
    vectors of channels each, so the offsets after them stay aligned)."""
    return b.R * b.Wc


cdef inline bint panels_are_output_runs(const Band* b, const OutMap* om,
                                        Tile t) noexcept nogil:
    """Whether panel cells q .. q + w of tile ``t`` are output cells at + q .. at + q +
    w of each channel: plain rows (no shuffle, unit steps), and either a tile
    of one row (1-D) or whole rows with no dropped columns (1x1 layers)."""
    if om.fd * om.fh * om.fw != 1 or om.sw != 1:
        return False
    if t.m == t.cols:
        return True
    return b.Wb == t.cols == om.W and t.ow0 == 0 and om.w0 == 0 and om.sh == 1


cdef void depthwise_job(const real_t* x, const real_t* w, const Py_ssize_t* off,
                        const real_t* bias, real_t* out,
                        const Geometry* g, const Band* b, const OutMap* om,
                        Py_ssize_t job, real_t* buf, real_t* cbuf) noexcept nogil:
    """implicit_job for one input channel per group (``uses_depthwise_kernel``): the
    band of that channel, then each output channel of the group on its own,
    its weights read unpacked, a row at a time (``fc_depthwise_row``).  Plain
    output rows are written in place (``depthwise_rows``); the strided rows of
    a transposed convolution's stride phase go through cbuf (cog rows of Wb
    cells) and ``store_panel``."""
    cdef Tile t = job_tile(g, b, job)
    cdef Py_ssize_t cog = g.Co // g.groups, K = g.KD * g.KH * g.KW
    cdef Py_ssize_t r, co
    copy_band(x + (t.n * g.C + t.grp) * g.D * g.H * g.W, 1, buf, g, b, t.od, t.oh0, t.ow0)
    if plain_rows(om):
        depthwise_rows(w, off, bias, out, g, b, om, t, buf)
        return
    for r in range(min(b.R, g.Ho - t.oh0)):
        for co in range(cog):            # store_panel adds the bias
            if real_t is float:
                fc_depthwise_row_f(K, w + (t.grp * cog + co) * K, buf + r * b.Wb, off,
                                   cbuf + co * b.Wb, t.cols, 0)
            else:
                fc_depthwise_row_d(K, w + (t.grp * cog + co) * K, buf + r * b.Wb, off,
                                   cbuf + co * b.Wb, t.cols, 0)
        store_panel(cbuf, b.Wb, r * b.Wb, t.cols, out, bias, g, b, om, t.n, t.grp * cog, cog,
                    t.od, t.oh0, t.ow0, t.cols)


cdef inline Py_ssize_t output_offset(const OutMap* m, Py_ssize_t od, Py_ssize_t oh,
                                     Py_ssize_t ow) noexcept nogil:
    """Where computed cell (od, oh, ow) lands in one channel plane of the output."""
    return ((m.d0 + m.sd * od) * m.H + m.h0 + m.sh * oh) * m.W + m.w0 + m.sw * ow


cdef inline bint plain_rows(const OutMap* om) noexcept nogil:
    """Output rows with a unit W step and no shuffle (a forward convolution, a
    stride-1 input gradient): the depthwise kernel writes them in place."""
    return om.fd * om.fh * om.fw == 1 and om.sw == 1


cdef void depthwise_rows(const real_t* w, const Py_ssize_t* off, const real_t* bias,
                         real_t* out, const Geometry* g, const Band* b, const OutMap* om,
                         Tile t, const real_t* buf) noexcept nogil:
    """depthwise_job's tile for plain output rows (no shuffle, unit W step): each
    output row of each output channel computed from the band and written in
    place, its bias added (``fc_depthwise_row``)."""
    cdef Py_ssize_t cog = g.Co // g.groups, K = g.KD * g.KH * g.KW
    cdef Py_ssize_t oplane = om.D * om.H * om.W
    cdef real_t* out_n = out + t.n * om.C * oplane
    cdef Py_ssize_t r, co, cq, at
    cdef real_t bv
    for r in range(min(b.R, g.Ho - t.oh0)):
        at = output_offset(om, t.od, t.oh0 + r, t.ow0)
        for co in range(cog):
            cq = t.grp * cog + co
            bv = bias[cq] if bias != NULL else 0
            if real_t is float:
                fc_depthwise_row_f(K, w + cq * K, buf + r * b.Wb, off, out_n + cq * oplane + at,
                                   t.cols, bv)
            else:
                fc_depthwise_row_d(K, w + cq * K, buf + r * b.Wb, off, out_n + cq * oplane + at,
                                   t.cols, bv)


cdef void prefetch_panel_output(real_t* out, const Band* b, const OutMap* om, Py_ssize_t n,
                                Py_ssize_t cq0, Py_ssize_t nco, Py_ssize_t od,
                                Py_ssize_t oh0, Py_ssize_t ow0, Py_ssize_t cols,
                                Py_ssize_t q0, Py_ssize_t width) noexcept nogil:
    """Ask for the output lines this panel's results go to (from the micro-kernel
    or ``store_panel``), for writing, before the panel is computed: each
    channel's row is its own stream (64 of them on a 64-channel layer), too
    many for the hardware prefetchers, and without this every store of a
    panel waits for its line.  Plain output rows only (the others are rare
    and strided)."""
    cdef OutMap m = om[0]
    if m.fd * m.fh * m.fw != 1 or m.sw != 1:
        return
    cdef Py_ssize_t Wb = b.Wb, oplane = m.D * m.H * m.W
    cdef Py_ssize_t q = q0, r = q0 // Wb, c = q0 - (q0 // Wb) * Wb, hi, at, co, j
    cdef real_t* base = out + (n * m.C + cq0) * oplane
    cdef Py_ssize_t line = 64 // sizeof(real_t)
    while q < q0 + width:
        hi = min(Wb, c + q0 + width - q)
        if c < cols:
            at = output_offset(&m, od, oh0 + r, ow0 + c)
            for co in range(nco):
                j = 0
                while j < min(hi, cols) - c:
                    __builtin_prefetch(base + co * oplane + at + j, 1, 3)
                    j += line
                __builtin_prefetch(base + co * oplane + at + min(hi, cols) - c - 1, 1, 3)
        q += hi - c
        c = 0
        r += 1


cdef void store_panel(const real_t* cbuf, Py_ssize_t NR, Py_ssize_t q0, Py_ssize_t width,
                      real_t* out, const real_t* bias, const Geometry* g,
                      const Band* b, const OutMap* om, Py_ssize_t n, Py_ssize_t cq0,
                      Py_ssize_t nco, Py_ssize_t od, Py_ssize_t oh0, Py_ssize_t ow0,
                      Py_ssize_t cols) noexcept nogil:
    """Write grid cells q0 .. q0 + width - 1 of a tile (+ bias): the real ones only,
    of computed channels cq0 .. cq0 + nco - 1 (cbuf's rows).

    Cell q of the tile is output (row q // Wb, column q % Wb); columns >= cols
    are the dropped ones between rows.
    """
    # Locals, not reads through om and b: Python extensions build with
    # -fno-strict-aliasing, so every store into out would reload them.
    cdef OutMap m = om[0]
    cdef Py_ssize_t Wb = b.Wb
    cdef Py_ssize_t oplane = m.D * m.H * m.W
    cdef Py_ssize_t block = m.fd * m.fh * m.fw
    cdef Py_ssize_t q = q0, r, c, hi, co, cq, tap, j, n_out, at
    cdef real_t* out_n = out + n * m.C * oplane
    cdef real_t* orow
    cdef const real_t* crow
    cdef real_t bv
    if Wb == cols == m.W and ow0 == 0 and m.w0 == 0 and m.sw == m.sh == 1 and block == 1:
        # No dropped columns and whole output rows: the panel is one run of the
        # output plane (1x1 kernels, whole-row tiles), one store per channel.
        at = output_offset(&m, od, oh0, 0) + q0
        for co in range(nco):
            cq = cq0 + co
            bv = bias[cq] if bias != NULL else 0
            if real_t is float:
                fc_store_row_f(out_n + cq * oplane + at, cbuf + co * NR, width, bv)
            else:
                fc_store_row_d(out_n + cq * oplane + at, cbuf + co * NR, width, bv)
        return
    if block == 1 and m.sw == 1:
        # Plain output rows (every forward but a strided transposed phase or a
        # shuffle): walk the panel's rows with running addresses.
        r = q0 // Wb
        c = q0 - r * Wb
        at = output_offset(&m, od, oh0 + r, ow0)
        crow = cbuf - q0 + r * Wb
        while q < q0 + width:
            hi = min(Wb, c + q0 + width - q)
            if c < cols:
                n_out = min(hi, cols) - c
                for co in range(nco):
                    cq = cq0 + co
                    bv = bias[cq] if bias != NULL else 0
                    if real_t is float:
                        fc_store_row_f(out_n + cq * oplane + at + c, crow + co * NR + c, n_out, bv)
                    else:
                        fc_store_row_d(out_n + cq * oplane + at + c, crow + co * NR + c, n_out, bv)
            q += hi - c
            c = 0
            at += m.sh * m.W
            crow += Wb
        return
    while q < q0 + width:
        r = q // Wb
        c = q - r * Wb
        hi = min(Wb, c + q0 + width - q)         # this row's cells in the panel
        if c < cols:
            n_out = min(hi, cols) - c
            # where the row segment lands, before the channel and its shuffle tap
            at = output_offset(&m, od, oh0 + r, ow0 + c)
            crow = cbuf - q0 + r * Wb + c
            if block == 1:
                for co in range(nco):
                    cq = cq0 + co
                    bv = bias[cq] if bias != NULL else 0
                    orow = out_n + cq * oplane + at
                    if m.sw == 1:
                        if real_t is float:
                            fc_store_row_f(orow, crow + co * NR, n_out, bv)
                        else:
                            fc_store_row_d(orow, crow + co * NR, n_out, bv)
                    else:
                        for j in range(n_out):
                            orow[j * m.sw] = crow[co * NR + j] + bv
            else:
                store_shuffled(crow, NR, n_out, out_n + at, bias, &m, cq0, nco, oplane)
        q += hi - c


cdef void store_shuffled(const real_t* crow, Py_ssize_t NR, Py_ssize_t n_out, real_t* dst,
                         const real_t* bias, const OutMap* om, Py_ssize_t cq0,
                         Py_ssize_t cog, Py_ssize_t oplane) noexcept nogil:
    """store_panel's row segment under a pixel shuffle: computed channel cq0 + co
    goes to tap (cq0 + co) % block of output channel (cq0 + co) // block.  A
    shuffle of 2 along W pairs the two channels of a tap pair: they fill one
    output row between them, written interleaved in one pass."""
    cdef OutMap m = om[0]
    cdef Py_ssize_t block = m.fd * m.fh * m.fw, co = 0, cq, oc, tap, j
    cdef bint pairs = m.fw == 2 and m.sw == 2
    cdef real_t* orow
    cdef const real_t* src
    cdef real_t bv
    while co < cog:
        cq = cq0 + co
        oc, tap = cq // block, cq % block
        bv = bias[oc] if bias != NULL else 0
        orow = dst + oc * oplane + ((tap // (m.fh * m.fw)) * m.H + (tap // m.fw) % m.fh) * m.W \
            + tap % m.fw
        src = crow + co * NR
        if pairs:
            if real_t is float:
                fc_store_pair_f(orow, src, src + NR, n_out, bv)
            else:
                fc_store_pair_d(orow, src, src + NR, n_out, bv)
            co += 2
        else:
            for j in range(n_out):
                orow[j * m.sw] = src[j] + bv
            co += 1


ctypedef struct ForwardPlan:
    # Everything conv_forward decides from the shapes and options: a call then
    # supplies the arrays (and with them the batch size, g.N) only.
    Geometry g
    OutMap om
    int mode
    Py_ssize_t rows, cols, kc
    bint transposed_weight
    bint flipped_weight                       # w is the convolution's whose input
                                              # gradient this is (see PreparedForward)
    Py_ssize_t x_cells, out_cells, w_size     # elements per sample of x and out; of w


cdef Py_ssize_t cells(const Py_ssize_t* shape5) noexcept:
    return shape5[1] * shape5[2] * shape5[3] * shape5[4]


cdef int plan_forward(ForwardPlan* fp, Py_ssize_t* xd, Py_ssize_t* wd, Py_ssize_t* od,
                      tuple stride, tuple pad, tuple dilation, Py_ssize_t groups,
                      Py_ssize_t rows, Py_ssize_t cols, tuple out_size, tuple out_start,
                      tuple out_step, Py_ssize_t kc, str padding_mode, tuple shuffle,
                      bint transposed_weight) except -1:
    """Fill ``fp`` from 5-D shapes (``xd``, ``wd``, ``od``) and conv_forward's options."""
    cdef Geometry g = make_geometry(xd, od, wd, stride, pad, dilation, groups)
    cdef OutMap om
    cdef int i
    om.C, om.D, om.H, om.W = od[1], od[2], od[3], od[4]
    om.d0, om.h0, om.w0 = out_start
    om.sd, om.sh, om.sw = out_step
    om.fd, om.fh, om.fw = shuffle
    if om.fd < 1 or om.fh < 1 or om.fw < 1:
        raise ValueError(f"fastconv: shuffle must be positive, got {shuffle}")
    g.Co = om.C * om.fd * om.fh * om.fw
    if transposed_weight:
        if (wd[0] != g.C or wd[1] * groups != om.C or (g.KD, g.KH, g.KW) != shuffle):
            raise ValueError(f"fastconv: transposed weight of shape "
                             f"{(wd[0], wd[1], wd[2], wd[3], wd[4])}, "
                             f"expected ({g.C}, {om.C // groups}) + {shuffle}")
        g.KD, g.KH, g.KW = 1, 1, 1
    elif wd[0] != g.Co:
        raise ValueError(f"fastconv: w has {wd[0]} output channels, "
                         f"expected {g.Co} (out's {om.C} x shuffle {shuffle})")
    if out_size is not None:
        g.Do, g.Ho, g.Wo = out_size
        for i in range(3):
            if out_start[i] < 0 or (out_start[i] + out_step[i] * (out_size[i] - 1)
                                    + shuffle[i] - 1 >= od[2 + i]):
                raise ValueError("fastconv: an output phase reaches past the output")
    fp.g, fp.om = g, om
    fp.mode = PADDING_MODES[padding_mode]
    fp.rows, fp.cols, fp.kc = rows, cols, kc
    fp.transposed_weight = transposed_weight
    fp.flipped_weight = False
    fp.x_cells, fp.out_cells = cells(xd), cells(od)
    fp.w_size = wd[0] * cells(wd)
    return 0


cdef Py_ssize_t planned_batch(cnp.ndarray x, Py_ssize_t x_cells, cnp.ndarray y,
                              Py_ssize_t y_cells, cnp.ndarray fixed, Py_ssize_t fixed_size,
                              str what) except -1:
    """N, the samples in ``x`` and ``y`` (``x_cells`` and ``y_cells`` elements each);
    ``fixed`` holds ``fixed_size`` elements.  A ValueError for any other sizes:
    a prepared kernel reads nothing its plan did not size."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(y) // y_cells if y_cells else 0
    if (cnp.PyArray_SIZE(y) != n * y_cells or cnp.PyArray_SIZE(x) != n * x_cells
            or cnp.PyArray_SIZE(fixed) != fixed_size):
        raise ValueError(f"fastconv: arrays of {cnp.PyArray_SIZE(x)}, {cnp.PyArray_SIZE(y)} "
                         f"and {cnp.PyArray_SIZE(fixed)} elements do not fit the planned {what} "
                         f"({x_cells} and {y_cells} cells per sample, {fixed_size} weights)")
    return n


cdef int run_forward(ForwardPlan* fp, cnp.ndarray x, cnp.ndarray w, object bias,
                     bint has_bias, cnp.ndarray out, int num_threads) except -1:
    """Run a planned conv_forward on arrays of any shape with the planned sizes.

    The arrays must be C-contiguous and of one real dtype; ``x`` and ``out``
    hold a whole number N of samples (the same N), ``w`` the planned weight.
    """
    cdef int t = check_operands(x, w, "w", out, "out", -1)
    cdef Py_ssize_t n = planned_batch(x, fp.x_cells, out, fp.out_cells, w, fp.w_size,
                                      "convolution")
    x, w = aligned(x), aligned(w)
    cdef int layout = TRANSPOSED if fp.transposed_weight else PLAIN
    if fp.flipped_weight:
        if uses_depthwise_kernel(fp.g.C // fp.g.groups, fp.g.Co // fp.g.groups):
            w = flipped(w, &fp.g)       # the depthwise kernel reads w unpacked
        else:
            layout = FLIPPED            # packed straight from the convolution's w
    cdef cnp.ndarray result = aligned(out)          # filled, then copied if not out itself
    cdef const void* b = NULL
    if has_bias:
        check_array(bias, t, 1, False, "bias")
        if cnp.PyArray_DIM(bias, 0) != fp.om.C:
            raise ValueError(f"fastconv: bias has {cnp.PyArray_DIM(bias, 0)} entries for "
                             f"{fp.om.C} output channels")
        bias = aligned(bias)
        b = cnp.PyArray_DATA(bias)
    cdef Geometry g = fp.g
    g.N = n
    if t == cnp.NPY_FLOAT:
        forward_impl(<const float*> cnp.PyArray_DATA(x), <const float*> cnp.PyArray_DATA(w),
                     <const float*> b, <float*> cnp.PyArray_DATA(result), &g, &fp.om,
                     fp.mode, num_threads, fp.rows, fp.cols, fp.kc, layout)
    else:
        forward_impl(<const double*> cnp.PyArray_DATA(x), <const double*> cnp.PyArray_DATA(w),
                     <const double*> b, <double*> cnp.PyArray_DATA(result), &g, &fp.om,
                     fp.mode, num_threads, fp.rows, fp.cols, fp.kc, layout)
    if result is not out:
        out[...] = result
    return 0


def conv_forward(cnp.ndarray x not None, cnp.ndarray w not None, bias, bint has_bias,
                 cnp.ndarray out not None, tuple stride, tuple pad, tuple dilation,
                 Py_ssize_t groups, int num_threads, Py_ssize_t rows, Py_ssize_t cols,
                 tuple out_size=None, tuple out_start=(0, 0, 0), tuple out_step=(1, 1, 1),
                 Py_ssize_t kc=KC, str padding_mode="zeros", tuple shuffle=(1, 1, 1),
                 bint transposed_weight=False):
    """out = conv(x, w) (+ bias): left padding ``pad`` in ``padding_mode``, any stride
    and dilation.

    ``x``, ``w``, ``out``: 5-D, C-contiguous, all float32 or all float64;
    ``bias`` (read when ``has_bias``) 1-D of ``out.shape[1]``.
    ``rows`` x ``cols`` output cells per job (see ``fastconv._costs.band_tile``).
    With ``out_size`` (the convolution's spatial output), output cell o lands
    at ``out[..., out_start + out_step * o]`` of the larger ``out``: one phase
    of a sub-pixel transposed convolution.  ``shuffle`` (fd, fh, fw): ``w`` has
    fd * fh * fw channels per channel of ``out``, channel q computing tap
    q % (fd * fh * fw) of the block of output channel q // (fd * fh * fw) (see
    ``OutMap``); with ``out_step = shuffle`` and a 1x1 ``w``, a transposed
    convolution with stride = kernel.  ``transposed_weight``: ``w`` is that
    transposed convolution's own weight (C_in, C_out/groups, *shuffle), read
    as the 1x1 weight whose row (grp * C_out/groups + co) * prod(shuffle) + tap
    is tap ``tap`` of channel co (no reordered copy).  ``pad`` may be negative
    (zero padding only).
    """
    check_operands(x, w, "w", out, "out", 5)
    if cnp.PyArray_DIM(x, 0) != cnp.PyArray_DIM(out, 0):
        raise ValueError(f"fastconv: x holds {cnp.PyArray_DIM(x, 0)} samples, out "
                         f"{cnp.PyArray_DIM(out, 0)}")
    cdef ForwardPlan fp
    plan_forward(&fp, dims(x), dims(w), dims(out), stride, pad, dilation, groups, rows, cols,
                 out_size, out_start, out_step, kc, padding_mode, shuffle, transposed_weight)
    run_forward(&fp, x, w, bias, has_bias, out, num_threads)


cdef cnp.ndarray flipped(cnp.ndarray w, const Geometry* g):
    """The stride-1 input gradient's weight from the convolution's own ``w``.

    ``g`` is the gradient's forward geometry: input channels g.C (the
    convolution's outputs), outputs g.Co.  Per group, channels swapped and
    taps reversed: result[(grp * cog + o) * cig + i, t] = w[(grp * cig + i) * cog + o,
    taps - 1 - t] with cig = g.C / groups, cog = g.Co / groups (as
    ``_dispatch.flipped_weight``, in one pass).
    """
    cdef Py_ssize_t taps = g.KD * g.KH * g.KW
    cdef Py_ssize_t cig = g.C // g.groups, cog = g.Co // g.groups
    cdef cnp.npy_intp size = cnp.PyArray_SIZE(w)
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, &size, cnp.PyArray_TYPE(w), 0)
    cdef Py_ssize_t grp, o, i, t, src, dst
    cdef bint single = cnp.PyArray_TYPE(w) == cnp.NPY_FLOAT
    cdef float* of = <float*> cnp.PyArray_DATA(out)
    cdef const float* wf = <const float*> cnp.PyArray_DATA(w)
    cdef double* od = <double*> cnp.PyArray_DATA(out)
    cdef const double* wd = <const double*> cnp.PyArray_DATA(w)
    with nogil:
        for grp in range(g.groups):
            for o in range(cog):
                for i in range(cig):
                    dst = ((grp * cog + o) * cig + i) * taps
                    src = ((grp * cig + i) * cog + o) * taps + taps - 1
                    for t in range(taps):
                        if single:
                            of[dst + t] = wf[src - t]
                        else:
                            od[dst + t] = wd[src - t]
    return out


cdef class PreparedForward:
    """conv_forward with the shapes and options decided once: a prepared call's kernel.

    Parameters are conv_forward's, with 5-D shapes (batch 1) in place of the
    arrays; :meth:`run` then takes arrays of any shape holding those sizes
    (the caller's own arrays, without 5-D views) and any batch size.
    ``flipped_weight``: this is the stride-1 input gradient of a convolution
    (x: its grad_output), and :meth:`run` receives that convolution's weight,
    flipped here (see ``flipped``) rather than by the caller.
    """

    cdef ForwardPlan fp

    def __init__(self, tuple x_shape, tuple w_shape, tuple out_shape, tuple stride,
                 tuple pad, tuple dilation, Py_ssize_t groups, Py_ssize_t rows,
                 Py_ssize_t cols, str padding_mode="zeros", tuple out_size=None,
                 tuple out_step=(1, 1, 1), tuple shuffle=(1, 1, 1),
                 bint transposed_weight=False, bint flipped_weight=False):
        cdef Py_ssize_t xd[5]
        cdef Py_ssize_t wd[5]
        cdef Py_ssize_t od[5]
        xd[:] = x_shape
        wd[:] = w_shape
        od[:] = out_shape
        plan_forward(&self.fp, xd, wd, od, stride, pad, dilation, groups, rows, cols,
                     out_size, (0, 0, 0), out_step, KC, padding_mode, shuffle,
                     transposed_weight)
        if flipped_weight and (transposed_weight or shuffle != (1, 1, 1)):
            raise ValueError("fastconv: a flipped weight is read by a plain convolution only")
        self.fp.flipped_weight = flipped_weight

    def run(self, cnp.ndarray x not None, cnp.ndarray w not None, bias,
            cnp.ndarray out not None, int num_threads):
        """out = conv(x, w) (+ bias unless None) with the prepared geometry."""
        run_forward(&self.fp, x, w, bias, bias is not None, out, num_threads)


cdef inline void pack_block(real_t* wp, const real_t* w, Py_ssize_t cig, Py_ssize_t cog,
                            Py_ssize_t taps, Py_ssize_t nb, Py_ssize_t gb, int layout,
                            int mr) noexcept nogil:
    """Packed block gb = grp * nb + blk of mr rows (FC_MR; a vector for the
    channel-vector kernel): wp[(gb * K + k) * mr + i] = W[grp*cog + blk*mr + i,
    k] (rows past cog: 0), K = cig * taps, where W is ``w`` read
    in its ``layout``: PLAIN, w itself; TRANSPOSED, w is (groups, K, cog), a
    transposed convolution's 1x1 weight; FLIPPED, w is the (groups * cig,
    cog, taps) weight of the convolution whose stride-1 input gradient this
    is, W its channel-swapped, tap-reversed form (``flipped``)."""
    cdef Py_ssize_t grp = gb // nb, co = (gb % nb) * mr, K = cig * taps
    cdef int rows = <int>min(mr, cog - co)
    cdef real_t* dst = wp + gb * K * mr
    if layout == TRANSPOSED:
        if real_t is float:
            fc_pack_block_f(dst, w + grp * K * cog + co, K, rows, 1, cog, mr)
        else:
            fc_pack_block_d(dst, w + grp * K * cog + co, K, rows, 1, cog, mr)
        return
    # PLAIN, FLIPPED: blocks transposed (rows x columns to columns x mr) in 8 x 8
    # register blocks; the element-by-element gathers were 7 % (PLAIN) and 11 %
    # (FLIPPED) of a 512-channel 7x7 layer's forward and input gradient
    if rows < mr:
        memset(dst, 0, K * mr * sizeof(real_t))
    if layout == PLAIN:
        transpose_block(dst, mr, w + (grp * cog + co) * K, K, rows, K)
        return
    # FLIPPED: W[o, c * taps + t] = w[grp * cig + c, o, taps - 1 - t]; per c, the
    # rows x taps block of w transposed, then its taps reversed
    cdef Py_ssize_t c, t
    cdef real_t* block
    for c in range(cig):
        block = dst + c * taps * mr
        transpose_block(block, mr, w + ((grp * cig + c) * cog + co) * taps, taps, rows, taps)
        for t in range(taps // 2):
            swap_rows(block + t * mr, block + (taps - 1 - t) * mr, mr)


cdef inline void transpose_block(real_t* dst, Py_ssize_t dpitch, const real_t* src,
                                 Py_ssize_t spitch, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    """dst[c * dpitch + i] = src[i * spitch + c] for i < n, c < m (``fc_transpose``)."""
    if real_t is float:
        fc_transpose_f(dst, dpitch, src, spitch, n, m)
    else:
        fc_transpose_d(dst, dpitch, src, spitch, n, m)


cdef inline void swap_rows(real_t* a, real_t* b, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef real_t v
    for j in range(n):
        v = a[j]
        a[j] = b[j]
        b[j] = v


cdef int forward_impl(const real_t* x, const real_t* wflat, const real_t* bias, real_t* out,
                      Geometry* gp, const OutMap* om, int mode, int num_threads,
                      Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t kc,
                      int layout=PLAIN) except -1:
    """conv_forward on checked pointers (``bias`` NULL: none; ``layout``: how
    ``wflat`` holds the weight, see ``pack_block``)."""
    cdef Geometry g = gp[0]
    cdef Py_ssize_t groups = g.groups
    cdef Py_ssize_t cig = g.C // groups, cog = g.Co // groups
    cdef bint depthwise = uses_depthwise_kernel(cig, cog)
    cdef int NR = panel_width(<real_t*>NULL)
    cdef Band b = make_band(&g, rows, cols, NR, real_t is double, mode, share_pad=True)
    cdef Py_ssize_t K = cig * g.KD * g.KH * g.KW
    cdef bint vectors = not depthwise and channel_vector_forward(&g, &b, om, sizeof(real_t))
    cdef int mr = (FC_VBYTES // sizeof(real_t)) if vectors else FC_MR
    cdef Py_ssize_t nb = ceil_div(cog, mr)
    cdef Py_ssize_t occ = job_channels(cig, cog, K, sizeof(real_t))
    cdef Py_ssize_t cbuf_size = ceil_div(occ, FC_MR) * FC_MR * NR
    if vectors:
        occ = FC_CVF_CV * mr
        # cells x occ results, then the cells' band offsets (vector_job)
        cbuf_size = vector_cbuf_cells(&b) * occ + ceil_div(
            b.R * b.Wc * sizeof(Py_ssize_t), sizeof(real_t))
    elif depthwise and plain_rows(om):
        cbuf_size = 1                   # depthwise_rows writes the output directly
    elif depthwise:
        cbuf_size = cog * b.Wb
    cdef Py_ssize_t njobs = g.N * groups * g.Do * b.nbh * b.nbw * ceil_div(cog, occ), job
    cdef Py_ssize_t band_of
    cdef Py_ssize_t grp, blk, k, co, ci, kd, kh, kw
    cdef int i
    cdef real_t* buf
    cdef real_t* cbuf
    cdef real_t* wp = NULL
    if njobs == 0:
        return 0
    cdef Py_ssize_t* off = <Py_ssize_t*> malloc(K * sizeof(Py_ssize_t))
    if not depthwise:
        wp = <real_t*> malloc(groups * nb * K * mr * sizeof(real_t))
    if off == NULL or (wp == NULL and not depthwise):
        free(wp)
        free(off)
        raise MemoryError("fastconv: could not allocate the packed weights")
    if not depthwise:
        # Large weights (deep layers: 2.4 M for 512 channels of 3x3 taps) pack
        # on every thread: one pass over them costs as much as a small image.
        if num_threads > 1 and groups * nb * K * mr > PARALLEL_PACK_ELEMENTS:
            with nogil, parallel(num_threads=num_threads):
                for blk in prange(groups * nb, schedule="static"):
                    pack_block(wp, wflat, cig, cog, g.KD * g.KH * g.KW, nb, blk, layout, mr)
        else:
            for blk in range(groups * nb):
                pack_block(wp, wflat, cig, cog, g.KD * g.KH * g.KW, nb, blk, layout, mr)
    # Tap k reads its plane of the band buffer at (sigma, tau); in place, input
    # channel k (1x1 taps) of x.
    for k in range(K):
        decode_tap(k, &g, &ci, &kd, &kh, &kw)
        off[k] = tap_offset(&g, &b, ci, kd, kh, kw)
    cdef Py_ssize_t* xoff = NULL
    if not depthwise and band_in_place(&g, &b, sizeof(real_t)):
        xoff = <Py_ssize_t*> malloc(K * sizeof(Py_ssize_t))
        if xoff == NULL:
            free(wp)
            free(off)
            raise MemoryError("fastconv: could not allocate the tap offsets")
        for k in range(K):
            xoff[k] = k * g.D * g.H * g.W
    cdef Driver d = start(njobs, num_threads)
    if d.threads == 1:
        # The same jobs in the same order, without entering OpenMP at all (its
        # region costs about a microsecond, a sixth of a tiny convolution).
        with nogil:
            buf = <real_t*> calloc(b.size, sizeof(real_t))
            cbuf = <real_t*> malloc(cbuf_size * sizeof(real_t))
            band_of = -1
            for job in range(njobs):
                if proceed(&d, not (buf == NULL or cbuf == NULL)):
                    run_job(depthwise, vectors, x, wflat, wp, off, xoff, bias, out, &g, &b,
                            om, kc, occ, job, buf, &band_of, cbuf)
            free(buf)
            free(cbuf)
    else:
        with nogil, parallel(num_threads=d.threads):
            # calloc: the slack panel past the last plane is read (into dropped columns)
            buf = <real_t*> calloc(b.size, sizeof(real_t))
            cbuf = <real_t*> malloc(cbuf_size * sizeof(real_t))
            band_of = -1                # thread-private: assigned in the region
            for job in prange(njobs, schedule="dynamic", chunksize=1):
                if proceed(&d, not (buf == NULL or cbuf == NULL)):
                    run_job(depthwise, vectors, x, wflat, wp, off, xoff, bias, out, &g, &b,
                            om, kc, occ, job, buf, &band_of, cbuf)
            free(buf)
            free(cbuf)
    free(wp)
    free(off)
    free(xoff)
    finish(&d, "band buffer")
    return 0


cdef inline void run_job(bint depthwise, bint vectors, const real_t* x, const real_t* w,
                         const real_t* wp, const Py_ssize_t* off, const Py_ssize_t* xoff,
                         const real_t* bias, real_t* out, const Geometry* g, const Band* b,
                         const OutMap* om, Py_ssize_t kc, Py_ssize_t occ, Py_ssize_t job,
                         real_t* buf, Py_ssize_t* band_of, real_t* cbuf) noexcept nogil:
    if depthwise:
        depthwise_job(x, w, off, bias, out, g, b, om, job, buf, cbuf)
    elif vectors:
        vector_job(x, wp, off, xoff, bias, out, g, b, om, kc, occ, job, buf, band_of, cbuf)
    else:
        implicit_job(x, wp, off, xoff, bias, out, g, b, om, kc, occ, job, buf, band_of,
                     cbuf)


ctypedef struct WeightBlock:
    Py_ssize_t grp, co0, co1, ci0, ci1


cdef inline WeightBlock weight_block(const Geometry* g, Py_ssize_t cib, Py_ssize_t cob,
                                     Py_ssize_t job) noexcept nogil:
    """The block of dw that weight-gradient job ``job`` owns: output channels
    [co0, co1) x input channels [ci0, ci1) of group grp (blocks of cob x cib)."""
    cdef Py_ssize_t cig = g.C // g.groups, cog = g.Co // g.groups
    cdef Py_ssize_t nci = ceil_div(cig, cib), nco = ceil_div(cog, cob)
    cdef WeightBlock blk
    blk.grp = job // (nco * nci)
    blk.co0 = (job % nco) * cob
    blk.co1 = min(cog, blk.co0 + cob)
    blk.ci0 = ((job // nco) % nci) * cib
    blk.ci1 = min(cig, blk.ci0 + cib)
    return blk


cdef void weight_grad_job(const real_t* x, const real_t* gout, real_t* dw,
                          const Py_ssize_t* off, const Geometry* g, const Band* b,
                          Py_ssize_t cib, Py_ssize_t cob, Py_ssize_t job,
                          real_t* buf, Driver* drv) noexcept nogil:
    """dw[co0:co0+cob, ci0:ci0+cib] (one group) summed over the batch and every cell.

    The job owns these weights: it visits the tiles in order (n, od, bh, bw)
    and adds each tile's dot products to them, so the order of the sum is
    fixed by the shape alone.  A job spans the batch, so it polls Ctrl-C per tile.
    """
    cdef Py_ssize_t cig = g.C // g.groups, cog = g.Co // g.groups
    cdef Py_ssize_t taps = g.KD * g.KH * g.KW, K = cig * taps
    cdef WeightBlock blk = weight_block(g, cib, cob, job)
    cdef Py_ssize_t grp = blk.grp, co0 = blk.co0, co1 = blk.co1, ci0 = blk.ci0, ci1 = blk.ci1
    cdef Py_ssize_t kr = (ci1 - ci0) * taps         # weight columns of this job
    cdef Py_ssize_t oplane = g.Do * g.Ho * g.Wo
    cdef Py_ssize_t tile, n, od, oh0, ow0, rows, cols, co, k, i, j, mr, nr
    cdef Tile t
    cdef const real_t* G[8]                         # >= FC_WG_MR
    cdef real_t acc[32]                             # >= FC_WG_MR * FC_WG_NR, FC_WGD_NR
    cdef real_t* row
    for tile in range(g.N * g.Do * b.nbh * b.nbw):
        if interrupted(drv):
            return
        t = weight_grad_tile(x, g, b, grp, ci0, ci1, tile, buf)
        n, od, oh0, ow0 = t.n, t.od, t.oh0, t.ow0
        rows, cols = min(b.R, g.Ho - oh0), t.cols
        co = co0
        while co < co1:
            mr = min(FC_WG_MR, co1 - co)
            if mr == 1:                 # depthwise: one row, more taps per call
                dw_row_grad(gout + (n * g.Co + grp * cog + co) * oplane
                            + (od * g.Ho + oh0) * g.Wo + ow0, g.Wo, buf, off, b.Wb,
                            rows, cols, kr,
                            dw + (grp * cog + co) * K + ci0 * taps, acc)
                break
            for i in range(FC_WG_MR):       # missing rows repeat the last
                G[i] = gout + (n * g.Co + grp * cog + co + min(i, mr - 1)) * oplane \
                    + (od * g.Ho + oh0) * g.Wo + ow0
            k = 0
            while k < kr:
                nr = min(FC_WG_NR, kr - k)
                if real_t is float:
                    fc_wgrad_f(G, g.Wo, buf, off + k, b.Wb, rows, cols, acc)
                else:
                    fc_wgrad_d(G, g.Wo, buf, off + k, b.Wb, rows, cols, acc)
                for i in range(mr):
                    row = dw + (grp * cog + co + i) * K + ci0 * taps + k
                    for j in range(nr):
                        row[j] += acc[i * FC_WG_NR + j]
                k += FC_WG_NR
            co += FC_WG_MR


cdef inline void dw_row_grad(const real_t* G, Py_ssize_t gstride, const real_t* buf,
                             const Py_ssize_t* off, Py_ssize_t bstride, Py_ssize_t rows,
                             Py_ssize_t cols, Py_ssize_t kr, real_t* row,
                             real_t* acc) noexcept nogil:
    """row[:kr] += one output channel's dot products with the kr tap columns."""
    cdef Py_ssize_t k = 0, j
    cdef int nr
    while k < kr:
        nr = <int>min(FC_WGD_NR, kr - k)
        if real_t is float:
            fc_wgrad_dw_f(G, gstride, buf, off + k, bstride, rows, cols, nr, acc)
        else:
            fc_wgrad_dw_d(G, gstride, buf, off + k, bstride, rows, cols, nr, acc)
        for j in range(nr):
            row[k + j] += acc[j]
        k += FC_WGD_NR


cdef inline Tile weight_grad_tile(const real_t* x, const Geometry* g, const Band* b,
                                  Py_ssize_t grp, Py_ssize_t ci0, Py_ssize_t ci1, Py_ssize_t i,
                                  real_t* buf) noexcept nogil:
    """Tile i of group ``grp`` in a weight-gradient job's fixed order (n, od, bh,
    bw), its band of input channels [ci0, ci1) copied into ``buf``."""
    cdef Py_ssize_t per_sample = g.Do * b.nbh * b.nbw, cig = g.C // g.groups
    cdef Tile t = job_tile(g, b, (i // per_sample * g.groups + grp) * per_sample
                           + i % per_sample)
    copy_band(x + (t.n * g.C + grp * cig + ci0) * g.D * g.H * g.W, ci1 - ci0, buf, g, b,
              t.od, t.oh0, t.ow0)
    return t


cdef inline Py_ssize_t channel_vector(Py_ssize_t itemsize) noexcept nogil:
    """The fewest channels the channel-vector weight gradient takes: a vector,
    or half of one where the build has half-vector kernels (AVX-512)."""
    cdef Py_ssize_t vl = FC_VBYTES // itemsize
    return vl // 2 if FC_HALF_VECTORS else vl


cdef inline bint channel_vectors(Py_ssize_t cob, Py_ssize_t itemsize) noexcept nogil:
    """Whether weight-gradient jobs of ``cob`` output channels run the kernel
    vectorised across channels (at least a (half) vector of them) rather than
    the dot products along cells."""
    return cob >= channel_vector(itemsize)


cdef inline Py_ssize_t channel_pitch(Py_ssize_t cob, Py_ssize_t itemsize) noexcept nogil:
    """Channels per transposed grad_output cell: cob in whole vectors, or one
    half vector (``channel_vector``)."""
    cdef Py_ssize_t vl = FC_VBYTES // itemsize
    if cob <= channel_vector(itemsize):
        return channel_vector(itemsize)
    return ceil_div(cob, vl) * vl


cdef inline Py_ssize_t chunk_cols(const Band* b, Py_ssize_t cop,
                                  Py_ssize_t itemsize) noexcept nogil:
    """Cells of a tile row per transposed chunk (``WGT_CHUNK_BYTES``): the row,
    or a part of a long one (1-D signals)."""
    return min(b.Wc, max(1, WGT_CHUNK_BYTES // (itemsize * cop)))


cdef inline Py_ssize_t chunk_rows(const Band* b, Py_ssize_t cop,
                                  Py_ssize_t itemsize) noexcept nogil:
    """Tile rows per transposed chunk, at least one."""
    return max(1, WGT_CHUNK_BYTES // (itemsize * cop * chunk_cols(b, cop, itemsize)))


cdef inline void transposed_chunk(real_t* gt, Py_ssize_t cop, const real_t* g,
                                  Py_ssize_t gpitch, Py_ssize_t oplane, Py_ssize_t nco,
                                  Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    """gt[(r * cols + c) * cop + co] = g[co * oplane + r * gpitch + c]."""
    cdef Py_ssize_t r
    for r in range(rows):
        if real_t is float:
            fc_transpose_f(gt + r * cols * cop, cop, g + r * gpitch, oplane, nco, cols)
        else:
            fc_transpose_d(gt + r * cols * cop, cop, g + r * gpitch, oplane, nco, cols)


cdef void weight_grad_vec_job(const real_t* x, const real_t* gout, real_t* dw,
                              const Py_ssize_t* off, const Geometry* g, const Band* b,
                              Py_ssize_t cib, Py_ssize_t cob, Py_ssize_t job, real_t* buf,
                              real_t* gt, real_t* acc, Driver* drv) noexcept nogil:
    """weight_grad_job's block of dw on the channel-vector kernel: each chunk of
    a tile's grad_output rows is transposed to cells x channels (``gt``), and
    ``acc`` (weight columns x channels) sums the chunks in order (n, od, bh,
    bw, rows): fixed by the shape alone."""
    cdef Py_ssize_t cig = g.C // g.groups, cog = g.Co // g.groups
    cdef Py_ssize_t taps = g.KD * g.KH * g.KW, K = cig * taps
    cdef WeightBlock blk = weight_block(g, cib, cob, job)
    cdef Py_ssize_t grp = blk.grp, co0 = blk.co0, co1 = blk.co1, ci0 = blk.ci0, ci1 = blk.ci1
    cdef Py_ssize_t kr = (ci1 - ci0) * taps
    cdef Py_ssize_t cop = channel_pitch(cob, sizeof(real_t))
    cdef bint half = cop < FC_VBYTES // sizeof(real_t)       # a half-vector block
    cdef Py_ssize_t crows = chunk_rows(b, cop, sizeof(real_t))
    cdef Py_ssize_t ccols = chunk_cols(b, cop, sizeof(real_t))
    cdef Py_ssize_t oplane = g.Do * g.Ho * g.Wo
    cdef Py_ssize_t tile, n, od, oh0, ow0, rows, cols, r0, rc, c0, cc, r, co, k
    cdef Tile t
    cdef const real_t* gtile
    cdef real_t* row
    memset(acc, 0, (kr + FC_WGT_NK_MAX) * cop * sizeof(real_t))
    for tile in range(g.N * g.Do * b.nbh * b.nbw):
        if interrupted(drv):
            return
        t = weight_grad_tile(x, g, b, grp, ci0, ci1, tile, buf)
        n, od, oh0, ow0 = t.n, t.od, t.oh0, t.ow0
        rows, cols = min(b.R, g.Ho - oh0), t.cols
        gtile = gout + (n * g.Co + grp * cog + co0) * oplane \
            + (od * g.Ho + oh0) * g.Wo + ow0
        r0 = 0
        while r0 < rows:
            rc, c0 = min(crows, rows - r0), 0
            while c0 < cols:
                cc = min(ccols, cols - c0)
                transposed_chunk(gt, cop, gtile + r0 * g.Wo + c0, g.Wo, oplane,
                                 co1 - co0, rc, cc)
                if real_t is float and half:
                    fc_wgrad_th_chunk_f(gt, cop, buf + r0 * b.Wb + c0, off, kr,
                                        b.Wb, rc, cc, acc)
                elif real_t is float:
                    fc_wgrad_t_chunk_f(gt, cop, buf + r0 * b.Wb + c0, off, kr, b.Wb,
                                       rc, cc, acc)
                elif half:
                    fc_wgrad_th_chunk_d(gt, cop, buf + r0 * b.Wb + c0, off, kr,
                                        b.Wb, rc, cc, acc)
                else:
                    fc_wgrad_t_chunk_d(gt, cop, buf + r0 * b.Wb + c0, off, kr, b.Wb,
                                       rc, cc, acc)
                c0 += cc
            r0 += rc
    for co in range(co1 - co0):
        row = dw + (grp * cog + co0 + co) * K + ci0 * taps
        for k in range(kr):
            row[k] = acc[k * cop + co]


ctypedef struct WeightGradPlan:
    Geometry g      # N: set per call
    int mode
    Py_ssize_t rows, cols, cib, cob
    Py_ssize_t x_cells, g_cells, dw_size     # elements per sample of x and gout; of dw


cdef int run_weight_grad(WeightGradPlan* wp, cnp.ndarray x, cnp.ndarray gout,
                         cnp.ndarray dw, int num_threads) except -1:
    """Run a planned conv_weight_grad on arrays of any shape with the planned sizes."""
    cdef int t = check_operands(x, gout, "gout", dw, "dw", -1)
    cdef Py_ssize_t n = planned_batch(x, wp.x_cells, gout, wp.g_cells, dw, wp.dw_size,
                                      "weight gradient")
    x, gout = aligned(x), aligned(gout)
    cdef cnp.ndarray result = aligned(dw)
    cdef Geometry g = wp.g
    g.N = n
    if t == cnp.NPY_FLOAT:
        weight_grad_impl(<const float*> cnp.PyArray_DATA(x),
                         <const float*> cnp.PyArray_DATA(gout),
                         <float*> cnp.PyArray_DATA(result),
                         &g, wp.mode, num_threads, wp.rows, wp.cols, wp.cib, wp.cob)
    else:
        weight_grad_impl(<const double*> cnp.PyArray_DATA(x),
                         <const double*> cnp.PyArray_DATA(gout),
                         <double*> cnp.PyArray_DATA(result),
                         &g, wp.mode, num_threads, wp.rows, wp.cols, wp.cib, wp.cob)
    if result is not dw:
        dw[...] = result
    return 0


cdef void plan_weight_grad(WeightGradPlan* wp, Py_ssize_t* xd, Py_ssize_t* gd,
                           Py_ssize_t* wd, tuple stride, tuple pad, tuple dilation,
                           Py_ssize_t groups, Py_ssize_t rows, Py_ssize_t cols,
                           Py_ssize_t cib, Py_ssize_t cob, str padding_mode) except *:
    wp.g = make_geometry(xd, gd, wd, stride, pad, dilation, groups)
    wp.mode = PADDING_MODES[padding_mode]
    wp.rows, wp.cols, wp.cib, wp.cob = rows, cols, cib, cob
    wp.x_cells, wp.g_cells = cells(xd), cells(gd)
    wp.dw_size = wd[0] * cells(wd)


def conv_weight_grad(cnp.ndarray x not None, cnp.ndarray gout not None,
                     cnp.ndarray dw not None, tuple stride, tuple pad, tuple dilation,
                     Py_ssize_t groups, int num_threads, Py_ssize_t rows, Py_ssize_t cols,
                     Py_ssize_t cib, Py_ssize_t cob, str padding_mode="zeros"):
    """dw = sum over the batch and cells of gout * (taps of x padded in
    ``padding_mode``); dw is overwritten.

    All three 5-D, C-contiguous, all float32 or all float64.  Jobs own blocks
    of ``cob`` output x ``cib`` input channels of one group; ``rows`` x
    ``cols`` output cells per band (see ``fastconv._costs``).
    """
    check_operands(x, gout, "gout", dw, "dw", 5)
    if cnp.PyArray_DIM(x, 0) != cnp.PyArray_DIM(gout, 0):
        raise ValueError(f"fastconv: x holds {cnp.PyArray_DIM(x, 0)} samples, gout "
                         f"{cnp.PyArray_DIM(gout, 0)}")
    cdef WeightGradPlan wp
    plan_weight_grad(&wp, dims(x), dims(gout), dims(dw), stride, pad, dilation, groups, rows,
                     cols, cib, cob, padding_mode)
    run_weight_grad(&wp, x, gout, dw, num_threads)


cdef class PreparedWeightGrad:
    """conv_weight_grad with the shapes and options decided once (a prepared call's kernel).

    Parameters are conv_weight_grad's, with 5-D shapes (batch 1) in place of
    the arrays; :meth:`run` takes arrays of any shape holding those sizes.
    """

    cdef WeightGradPlan wp

    def __init__(self, tuple x_shape, tuple gout_shape, tuple dw_shape, tuple stride,
                 tuple pad, tuple dilation, Py_ssize_t groups, Py_ssize_t rows,
                 Py_ssize_t cols, Py_ssize_t cib, Py_ssize_t cob, str padding_mode="zeros"):
        cdef Py_ssize_t xd[5]
        cdef Py_ssize_t gd[5]
        cdef Py_ssize_t wd[5]
        xd[:] = x_shape
        gd[:] = gout_shape
        wd[:] = dw_shape
        plan_weight_grad(&self.wp, xd, gd, wd, stride, pad, dilation, groups, rows, cols, cib,
                         cob, padding_mode)

    def run(self, cnp.ndarray x not None, cnp.ndarray gout not None, bias,
            cnp.ndarray dw not None, int num_threads):
        """dw = the weight gradient of x and gout (``bias`` is unused: None)."""
        run_weight_grad(&self.wp, x, gout, dw, num_threads)


cdef int weight_grad_impl(const real_t* x, const real_t* gout, real_t* dw, Geometry* gp,
                          int mode, int num_threads, Py_ssize_t rows, Py_ssize_t cols,
                          Py_ssize_t cib, Py_ssize_t cob) except -1:
    """conv_weight_grad on checked pointers."""
    cdef Geometry g = gp[0]
    cdef Py_ssize_t groups = g.groups
    cdef int NR = panel_width(<real_t*>NULL)
    cdef Py_ssize_t cig = g.C // groups, cog = g.Co // groups
    cdef Py_ssize_t taps = g.KD * g.KH * g.KW
    cdef Band b = make_band(&g, rows, cols, NR, real_t is double, mode)
    memset(dw, 0, g.Co * cig * taps * sizeof(real_t))
    # The band holds cib channels: its size (+ a vector of slack) from that count.
    cib, cob = min(cib, cig), min(cob, cog)
    cdef Py_ssize_t size = cib * b.planes * b.stride + NR
    cdef Py_ssize_t njobs = groups * ceil_div(cig, cib) * ceil_div(cog, cob), job
    cdef Py_ssize_t k, ci, kd, kh, kw
    cdef real_t* buf
    if njobs == 0 or g.N == 0:
        return 0
    cdef Py_ssize_t slack = max(max(FC_WG_NR, FC_WGD_NR), FC_WGT_NK_MAX)
    cdef bint vec = channel_vectors(cob, sizeof(real_t))
    cdef Py_ssize_t cop = channel_pitch(cob, sizeof(real_t))
    cdef Py_ssize_t gt_size = (chunk_rows(&b, cop, sizeof(real_t))
                               * chunk_cols(&b, cop, sizeof(real_t)) * cop) if vec else 0
    cdef Py_ssize_t acc_size = (cib * taps + FC_WGT_NK_MAX) * cop if vec else 0
    cdef real_t* gt_block
    cdef real_t* gt
    cdef real_t* acc
    cdef Py_ssize_t* off = <Py_ssize_t*> malloc((cib * taps + slack) * sizeof(Py_ssize_t))
    if off == NULL:
        raise MemoryError("fastconv: could not allocate the tap offsets")
    for k in range(cib * taps + slack):         # past the last tap: repeat it (ignored)
        decode_tap(min(k, cib * taps - 1), &g, &ci, &kd, &kh, &kw)
        off[k] = tap_offset(&g, &b, ci, kd, kh, kw)
    cdef Driver d = start(njobs, num_threads)
    with nogil, parallel(num_threads=d.threads, use_threads_if=d.threads > 1):
        buf = <real_t*> calloc(size, sizeof(real_t))
        # calloc: the lanes past a job's channels are read (into discarded sums);
        # gt starts on a cache line, so each cell's channel vectors are aligned
        gt_block = <real_t*> calloc(gt_size + 64 // sizeof(real_t), sizeof(real_t))
        gt = <real_t*> ((<size_t> gt_block + 63) & ~(<size_t> 63))
        acc = <real_t*> malloc((acc_size + 1) * sizeof(real_t))
        for job in prange(njobs, schedule="dynamic", chunksize=1):
            if proceed(&d, buf != NULL and gt_block != NULL and acc != NULL):
                if vec:
                    weight_grad_vec_job(x, gout, dw, off, &g, &b, cib, cob, job, buf, gt, acc,
                                        &d)
                else:
                    weight_grad_job(x, gout, dw, off, &g, &b, cib, cob, job, buf, &d)
        free(buf)
        free(gt_block)
        free(acc)
    free(off)
    finish(&d, "band buffer")
    return 0


def forward_band_pitch(tuple x_shape, tuple w_shape, tuple out_shape, tuple stride,
                       tuple padding, tuple dilation, Py_ssize_t groups, Py_ssize_t rows,
                       Py_ssize_t cols, str padding_mode):
    """Cells from one band row to the next in conv_forward's band (for the tests:
    the cost model's ``shared_pad_columns`` must agree)."""
    cdef Py_ssize_t xs[5]
    cdef Py_ssize_t os[5]
    cdef Py_ssize_t ws[5]
    cdef int i
    for i in range(5):
        xs[i], os[i], ws[i] = x_shape[i], out_shape[i], w_shape[i]
    cdef Geometry g = make_geometry(xs, os, ws, stride, padding, dilation, groups)
    return make_band(&g, rows, cols, FC_NR_F, False, PADDING_MODES[padding_mode],
                     share_pad=True).Wb


def panel_widths():
    """(float, double) panel widths of the micro-kernel in this build."""
    return FC_NR_F, FC_NR_D


def channel_vector_forward_rule():
    """(vectors of output channels per block, percent of panel waste, K from which
    the waste is counted against output cells) of the channel-vector forward
    kernel (``channel_vector_forward``), for the cost model."""
    return FC_CVF_CV, cvf_waste_percent, CVF_LONG_K


def set_channel_vector_waste(int percent):
    """Set the panel waste above which forward tiles run on the channel-vector
    kernel (default ``CVF_PANEL_WASTE_PERCENT``; -100: every tile whose
    channels fit, 10000: none); returns the previous value.  For tests and
    measurements: the two kernels give the same bits."""
    global cvf_waste_percent
    previous, cvf_waste_percent = cvf_waste_percent, percent
    return previous


def stream_rule():
    """(K block, smallest output bytes per sample, alignment in bytes) of the
    non-temporal output stores (``stream_output``), for the cost model's tiles."""
    return KC, stream_min_bytes if streamed_panels() else -1, STREAM_ALIGN


def vector_widths():
    """(float, double) cells per vector register: a tile's last panel is computed
    on as many whole vectors as it needs (``fc_kernel_panel``)."""
    return FC_VBYTES // 4, FC_VBYTES // 8
