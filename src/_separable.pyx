"""Separable filters: one 1-D pass along one axis of a strided array.

The array is seen as lines along the filtered axis.  A job takes a block of
``B`` neighbouring lines, loads them (converted to the work type, float or
double) into a per-thread buffer of ``(rows + halo) x B`` elements, with the
halo rows read through SciPy's boundary rule (no padded copy of the volume),
filters the block and stores it, converted, into the output.  In the buffer
the ``B`` lines are the contiguous axis, so every arithmetic loop runs across
lines and vectorises whatever axis is filtered: "output row += w[t] * input
row t".

Every output element is computed by the same sequence of operations whatever
the block size, the job split and the thread count, so results are
bit-identical for any number of threads.  In float64 that sequence is
SciPy's (``NI_Correlate1D``: the symmetric / antisymmetric pairing of taps,
the running sum of ``NI_UniformFilter1D``), and so is the C cast to integer
outputs, which is how integer inputs give SciPy's results exactly.

A job reads all of its lines before it writes any, and jobs own disjoint
lines, so a pass may write over its own input (``input is output``), as the
later passes of a multi-axis filter do.
"""
cimport numpy as cnp
from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport (int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t,
                          uint64_t)
from libc.stdlib cimport calloc, free

from _interrupt cimport fc_monotonic, fc_poll_signals, fc_stopped, reraise

cnp.import_array()

cdef extern from *:
    """
    /* No fused multiply-add in this module: SciPy rounds every product and
       every sum, and float64 results must equal SciPy's bit for bit (integer
       outputs truncate them, so one ulp can change a result by one).  Also
       makes the baseline and AVX builds give identical float32 results. */
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC optimize ("fp-contract=off")
    #elif defined(__clang__)
    #pragma clang fp contract(off)
    #endif
    """

# Element types, as numbered by fastconv/_separable.py (_DTYPE_CODES).
cdef enum:
    T_UINT8 = 0      # bool is stored as its byte, as SciPy's C cast does
    T_INT8 = 1
    T_UINT16 = 2
    T_INT16 = 3
    T_UINT32 = 4
    T_INT32 = 5
    T_UINT64 = 6
    T_INT64 = 7
    T_FLOAT32 = 8
    T_FLOAT64 = 9

# Boundary modes, SciPy's NI_ExtendMode numbering for filters.
cdef enum:
    M_NEAREST = 0
    M_WRAP = 1
    M_REFLECT = 2
    M_MIRROR = 3
    M_CONSTANT = 4

# What a pass computes.
cdef enum:
    K_CORRELATE = 0      # taps, general order
    K_SYMMETRIC = 1      # odd length, w[c - j] == w[c + j]: (x[-j] + x[j]) * w[c - j]
    K_ANTISYMMETRIC = 2  # odd length, w[c - j] == -w[c + j]: (x[-j] - x[j]) * w[c - j]
    K_UNIFORM = 3        # running sum / size

ctypedef fused work_t:
    float
    double

ctypedef fused elem_t:
    uint8_t
    int8_t
    uint16_t
    int16_t
    uint32_t
    int32_t
    uint64_t
    int64_t
    float
    double


ctypedef struct Pass:
    const char* src
    char* dst
    int src_type, dst_type
    Py_ssize_t src_size, dst_size      # bytes per element
    # lines: a (P, Q) grid; blocks of B lines run along Q
    Py_ssize_t P, Q, B
    Py_ssize_t length                  # source line length
    Py_ssize_t l0, rows                # output rows [l0, l0 + rows) of each line
    Py_ssize_t seg                     # rows per job (a line may be split in segments)
    Py_ssize_t sp, sl, sq              # source steps (elements) along P, line, Q
    Py_ssize_t dp, dl, dq              # destination steps (elements)
    int kind, mode
    double cval
    const double* w
    Py_ssize_t k, before               # taps, halo rows before row 0 (k // 2 + origin)


# --------------------------------------------------------------------------- indices

cdef inline Py_ssize_t iabs(Py_ssize_t v) noexcept nogil:
    return -v if v < 0 else v


cdef inline Py_ssize_t boundary(Py_ssize_t i, Py_ssize_t n, int mode) noexcept nogil:
    """Source index of virtual index i (outside [0, n)) under ``mode``; -1 = cval.

    The periodic forms of SciPy's ``NI_ExtendLine``, which fills long halos by
    extending what it already extended: 'reflect' repeats with period 2n,
    'mirror' with period 2n - 2 (a line of 1 behaves as 'nearest'), 'wrap'
    with period n.
    """
    cdef Py_ssize_t period
    if mode == M_CONSTANT:
        return -1
    if mode == M_NEAREST or (mode == M_MIRROR and n == 1):
        return 0 if i < 0 else n - 1
    if mode == M_WRAP:
        i = i % n
        return i + n if i < 0 else i
    if mode == M_REFLECT:
        period = 2 * n
        i = i % period
        if i < 0:
            i += period
        return period - 1 - i if i >= n else i
    period = 2 * n - 2                  # M_MIRROR
    i = i % period
    if i < 0:
        i += period
    return period - i if i >= n else i


# --------------------------------------------------------------------------- conversions

cdef inline void load_typed(work_t* dst, Py_ssize_t dstep, const elem_t* src, Py_ssize_t sstep,
                            Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    if dstep == 1 and sstep == 1:
        for i in range(n):
            dst[i] = <work_t>src[i]
    else:
        for i in range(n):
            dst[i * dstep] = <work_t>src[i * sstep]


cdef void load(work_t* dst, Py_ssize_t dstep, const char* src, Py_ssize_t sstep,
               Py_ssize_t n, int code) noexcept nogil:
    """dst[i * dstep] = src[i * sstep] for i < n, converted from element type ``code``."""
    if code == T_FLOAT32:
        load_typed(dst, dstep, <const float*>src, sstep, n)
    elif code == T_FLOAT64:
        load_typed(dst, dstep, <const double*>src, sstep, n)
    elif code == T_UINT8:
        load_typed(dst, dstep, <const uint8_t*>src, sstep, n)
    elif code == T_UINT16:
        load_typed(dst, dstep, <const uint16_t*>src, sstep, n)
    elif code == T_INT16:
        load_typed(dst, dstep, <const int16_t*>src, sstep, n)
    elif code == T_INT8:
        load_typed(dst, dstep, <const int8_t*>src, sstep, n)
    elif code == T_INT32:
        load_typed(dst, dstep, <const int32_t*>src, sstep, n)
    elif code == T_UINT32:
        load_typed(dst, dstep, <const uint32_t*>src, sstep, n)
    elif code == T_INT64:
        load_typed(dst, dstep, <const int64_t*>src, sstep, n)
    else:
        load_typed(dst, dstep, <const uint64_t*>src, sstep, n)


# Casts to integers as SciPy's line buffers do them (a plain C cast, compiled
# for x86-64): truncation toward zero, and out-of-range values wrap the way
# cvttsd2si and a narrowing store make them wrap.  Going through a signed
# integer first keeps that behaviour when the compiler vectorises the loop.
cdef inline uint8_t to_u8(double v) noexcept nogil:
    return <uint8_t><int32_t>v

cdef inline int8_t to_i8(double v) noexcept nogil:
    return <int8_t><int32_t>v

cdef inline uint16_t to_u16(double v) noexcept nogil:
    return <uint16_t><int32_t>v

cdef inline int16_t to_i16(double v) noexcept nogil:
    return <int16_t><int32_t>v

cdef inline uint32_t to_u32(double v) noexcept nogil:
    return <uint32_t><int64_t>v

cdef inline uint64_t to_u64(double v) noexcept nogil:
    if v < 9223372036854775808.0:
        return <uint64_t><int64_t>v
    return (<uint64_t><int64_t>(v - 9223372036854775808.0)) ^ (<uint64_t>1 << 63)


cdef void store(char* dst, Py_ssize_t dstep, const work_t* src, Py_ssize_t sstep,
                Py_ssize_t n, int code) noexcept nogil:
    """dst[i * dstep] = src[i * sstep] for i < n, converted to element type ``code``."""
    cdef Py_ssize_t i
    if code == T_FLOAT32:
        for i in range(n):
            (<float*>dst)[i * dstep] = <float>src[i * sstep]
    elif code == T_FLOAT64:
        for i in range(n):
            (<double*>dst)[i * dstep] = <double>src[i * sstep]
    elif code == T_UINT8:
        for i in range(n):
            (<uint8_t*>dst)[i * dstep] = to_u8(src[i * sstep])
    elif code == T_UINT16:
        for i in range(n):
            (<uint16_t*>dst)[i * dstep] = to_u16(src[i * sstep])
    elif code == T_INT16:
        for i in range(n):
            (<int16_t*>dst)[i * dstep] = to_i16(src[i * sstep])
    elif code == T_INT8:
        for i in range(n):
            (<int8_t*>dst)[i * dstep] = to_i8(src[i * sstep])
    elif code == T_INT32:
        for i in range(n):
            (<int32_t*>dst)[i * dstep] = <int32_t>src[i * sstep]
    elif code == T_UINT32:
        for i in range(n):
            (<uint32_t*>dst)[i * dstep] = to_u32(src[i * sstep])
    elif code == T_INT64:
        for i in range(n):
            (<int64_t*>dst)[i * dstep] = <int64_t>src[i * sstep]
    else:
        for i in range(n):
            (<uint64_t*>dst)[i * dstep] = to_u64(src[i * sstep])


# --------------------------------------------------------------------------- one block

cdef void gather(const Pass* ps, work_t* buf, Py_ssize_t p, Py_ssize_t q0, Py_ssize_t nb,
                 Py_ssize_t r0, Py_ssize_t n) noexcept nogil:
    """buf[r * B + b] = line (p, q0 + b) at index l0 + r0 + r - before, boundary
    included, for the n + k - 1 rows that output rows r0 .. r0 + n - 1 read."""
    cdef Py_ssize_t B = ps.B, R = n + ps.k - 1
    cdef Py_ssize_t first = ps.l0 + r0 - ps.before     # source index of buffer row 0
    cdef Py_ssize_t ra = max(0, -first), rb = min(R, ps.length - first)
    cdef const char* base = ps.src + (p * ps.sp + q0 * ps.sq) * ps.src_size
    cdef Py_ssize_t r, b, s
    cdef work_t c = <work_t>ps.cval
    if ra < rb:
        if iabs(ps.sl) < iabs(ps.sq):
            # lines are the contiguous direction (filtering the last axis): one
            # line at a time into a buffer column
            for b in range(nb):
                load(buf + ra * B + b, B, base + (b * ps.sq + (first + ra) * ps.sl) * ps.src_size,
                     ps.sl, rb - ra, ps.src_type)
        else:
            for r in range(ra, rb):
                load(buf + r * B, 1, base + (first + r) * ps.sl * ps.src_size, ps.sq, nb,
                     ps.src_type)
    for r in range(R):
        if ra <= r < rb:
            continue
        s = boundary(first + r, ps.length, ps.mode)
        if s < 0:
            for b in range(nb):
                buf[r * B + b] = c
        else:
            load(buf + r * B, 1, base + s * ps.sl * ps.src_size, ps.sq, nb, ps.src_type)


cdef void correlate_rows(const Pass* ps, const work_t* buf, work_t* out,
                         const work_t* w, Py_ssize_t nb, Py_ssize_t n) noexcept nogil:
    """out[i * B + b] = sum over taps, in SciPy's order of operations."""
    cdef Py_ssize_t B = ps.B, k = ps.k, c = ps.k // 2
    cdef Py_ssize_t i, j, b, t
    cdef work_t* o
    cdef const work_t* x
    cdef const work_t* xm
    cdef const work_t* xp
    cdef work_t wt
    for i in range(n):
        o = out + i * B
        if ps.kind == K_CORRELATE:
            # x[k - 1] * w[k - 1] first, then taps 0 .. k - 2 (NI_Correlate1D)
            x = buf + (i + k - 1) * B
            wt = w[k - 1]
            for b in range(nb):
                o[b] = x[b] * wt
            for t in range(k - 1):
                x = buf + (i + t) * B
                wt = w[t]
                for b in range(nb):
                    o[b] = o[b] + x[b] * wt
        else:
            # centre tap, then the pairs from the outermost in
            x = buf + (i + c) * B
            wt = w[c]
            for b in range(nb):
                o[b] = x[b] * wt
            for j in range(c, 0, -1):
                xm = x - j * B
                xp = x + j * B
                wt = w[c - j]
                if ps.kind == K_SYMMETRIC:
                    for b in range(nb):
                        o[b] = o[b] + (xm[b] + xp[b]) * wt
                else:
                    for b in range(nb):
                        o[b] = o[b] + (xm[b] - xp[b]) * wt


cdef void correlate_line(const Pass* ps, const work_t* x, work_t* o,
                         const work_t* w, Py_ssize_t n) noexcept nogil:
    """A single line (B = 1): the same operations per element, taps outermost so
    that the loops run along the line."""
    cdef Py_ssize_t k = ps.k, c = ps.k // 2
    cdef Py_ssize_t i, j, t
    cdef const work_t* xm
    cdef const work_t* xp
    cdef work_t wt
    if ps.kind == K_CORRELATE:
        wt = w[k - 1]
        xp = x + k - 1
        for i in range(n):
            o[i] = xp[i] * wt
        for t in range(k - 1):
            wt = w[t]
            xm = x + t
            for i in range(n):
                o[i] = o[i] + xm[i] * wt
        return
    wt = w[c]
    for i in range(n):
        o[i] = x[i + c] * wt
    for j in range(c, 0, -1):
        xm = x + c - j
        xp = x + c + j
        wt = w[c - j]
        if ps.kind == K_SYMMETRIC:
            for i in range(n):
                o[i] = o[i] + (xm[i] + xp[i]) * wt
        else:
            for i in range(n):
                o[i] = o[i] + (xm[i] - xp[i]) * wt


cdef void uniform_rows(const Pass* ps, const work_t* buf, work_t* out, double* acc,
                       Py_ssize_t nb) noexcept nogil:
    """Running mean along the lines, as NI_UniformFilter1D: the sum of the first
    window, then ``sum += x[new] - x[old]``, each output ``sum / size``, in
    float64 whatever the work type (a float32 running sum would drift)."""
    cdef Py_ssize_t B = ps.B, k = ps.k, i, t, b
    cdef double size = <double>k
    cdef const work_t* xn
    cdef const work_t* xo
    cdef work_t* o
    for b in range(nb):
        acc[b] = 0.0
    for t in range(k):
        xn = buf + t * B
        for b in range(nb):
            acc[b] = acc[b] + <double>xn[b]
    for b in range(nb):
        out[b] = <work_t>(acc[b] / size)
    for i in range(1, ps.rows):        # never segmented: the sum runs from row 0
        xn = buf + (i + k - 1) * B
        xo = buf + (i - 1) * B
        o = out + i * B
        for b in range(nb):
            acc[b] = acc[b] + (<double>xn[b] - <double>xo[b])
            o[b] = <work_t>(acc[b] / size)


cdef void scatter(const Pass* ps, const work_t* out, Py_ssize_t p, Py_ssize_t q0,
                  Py_ssize_t nb, Py_ssize_t r0, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t B = ps.B, r, b
    cdef char* base = ps.dst + (p * ps.dp + q0 * ps.dq + r0 * ps.dl) * ps.dst_size
    if iabs(ps.dl) < iabs(ps.dq):
        for b in range(nb):
            store(base + b * ps.dq * ps.dst_size, ps.dl, out + b, B, n, ps.dst_type)
    else:
        for r in range(n):
            store(base + r * ps.dl * ps.dst_size, ps.dq, out + r * B, 1, nb, ps.dst_type)


cdef void run_block(const Pass* ps, work_t* buf, work_t* out, const work_t* w, double* acc,
                    Py_ssize_t job) noexcept nogil:
    cdef Py_ssize_t nqb = (ps.Q + ps.B - 1) // ps.B
    cdef Py_ssize_t nseg = (ps.rows + ps.seg - 1) // ps.seg
    cdef Py_ssize_t r0 = (job % nseg) * ps.seg
    cdef Py_ssize_t n = min(ps.seg, ps.rows - r0)
    job = job // nseg
    cdef Py_ssize_t p = job // nqb
    cdef Py_ssize_t q0 = (job % nqb) * ps.B
    cdef Py_ssize_t nb = min(ps.B, ps.Q - q0)
    gather(ps, buf, p, q0, nb, r0, n)
    if ps.kind == K_UNIFORM:
        uniform_rows(ps, buf, out, acc, nb)
    elif ps.B == 1:
        correlate_line(ps, buf, out, w, n)
    else:
        correlate_rows(ps, buf, out, w, nb, n)
    scatter(ps, out, p, q0, nb, r0, n)


cdef int run_pass(const Pass* ps, work_t* wdummy, int num_threads) noexcept nogil:
    """Every block in parallel; returns 1 if a buffer could not be allocated."""
    cdef Py_ssize_t nqb = (ps.Q + ps.B - 1) // ps.B
    cdef Py_ssize_t nseg = (ps.rows + ps.seg - 1) // ps.seg
    cdef Py_ssize_t njobs = ps.P * nqb * nseg, job, t
    cdef Py_ssize_t R = ps.seg + ps.k - 1
    cdef work_t* buf
    cdef work_t* out
    cdef work_t* w
    cdef double* acc
    cdef int failed[1]
    cdef int stop = 0
    cdef double last = fc_monotonic()
    failed[0] = 0           # an array: written from inside the parallel block, shared
    if njobs == 0:
        return 0
    if num_threads > njobs:
        num_threads = <int>njobs
    with parallel(num_threads=num_threads):
        # calloc: columns past a partial block are computed on zeros, never on
        # uninitialised memory
        buf = <work_t*>calloc(R * ps.B, sizeof(work_t))
        out = <work_t*>calloc(ps.seg * ps.B, sizeof(work_t))
        w = <work_t*>calloc(ps.k, sizeof(work_t))
        acc = <double*>calloc(ps.B, sizeof(double))
        if buf == NULL or out == NULL or w == NULL or acc == NULL:
            failed[0] = 1
        else:
            for t in range(ps.k):
                w[t] = <work_t>ps.w[t]
        for job in prange(njobs, schedule="dynamic", chunksize=1):
            if threadid() == 0:
                fc_poll_signals(&stop, &last)
            if buf == NULL or out == NULL or w == NULL or acc == NULL or fc_stopped(&stop):
                pass
            else:
                run_block(ps, buf, out, w, acc, job)
        free(buf)
        free(out)
        free(w)
        free(acc)
    if stop:
        return -1
    return failed[0]


def filter_pass(cnp.ndarray src, cnp.ndarray dst, int src_type, int dst_type, bint double_work,
                tuple grid, Py_ssize_t seg, tuple src_steps, tuple dst_steps, Py_ssize_t length,
                Py_ssize_t l0, Py_ssize_t rows, int kind, const double[::1] weights,
                Py_ssize_t before, int mode, double cval, int num_threads):
    """One 1-D pass along the lines of ``src`` into ``dst`` (IN: src; OUT: dst).

    Parameters
    ----------
    src, dst : ndarray
        Only their data pointers are used; the layout comes from the steps.
        ``dst`` may be ``src`` itself (same pointer and steps).
    src_type, dst_type : int
        Element type codes (T_*).
    double_work : bool
        Compute in float64 (else float32).
    grid : (P, Q, B)
        Lines form a P x Q grid; a job filters B neighbouring lines along Q.
    seg : int
        Output rows per job (>= rows for K_UNIFORM, whose running sum starts at row 0).
    src_steps, dst_steps : (along P, along the line, along Q), in elements
    length : int
        Source line length.
    l0, rows : int
        Output rows [l0, l0 + rows) of each line go to rows 0 .. rows - 1 of dst.
    kind : int
        K_CORRELATE, K_SYMMETRIC, K_ANTISYMMETRIC or K_UNIFORM.
    weights : float64, (k,)
        Taps (for K_UNIFORM: any k values, only the size is used).
    before : int
        Halo rows before row 0: k // 2 + origin.
    mode : int
        M_* boundary mode; ``cval`` for M_CONSTANT.
    """
    cdef Pass ps
    cdef int status
    ps.src = <const char*>cnp.PyArray_DATA(src)
    ps.dst = <char*>cnp.PyArray_DATA(dst)
    ps.src_type, ps.dst_type = src_type, dst_type
    ps.src_size, ps.dst_size = src.itemsize, dst.itemsize
    ps.P, ps.Q, ps.B = grid
    ps.sp, ps.sl, ps.sq = src_steps
    ps.dp, ps.dl, ps.dq = dst_steps
    ps.length, ps.l0, ps.rows, ps.seg = length, l0, rows, seg
    ps.kind, ps.mode, ps.cval = kind, mode, cval
    ps.w = &weights[0]
    ps.k = weights.shape[0]
    ps.before = before
    if ps.B < 1 or ps.k < 1 or ps.length < 1 or ps.rows < 0 or ps.seg < 1 or \
            (kind == K_UNIFORM and ps.seg < ps.rows):
        raise ValueError(f"filter_pass: bad geometry B={ps.B} k={ps.k} length={ps.length} "
                         f"rows={ps.rows} seg={ps.seg}")
    with nogil:
        if double_work:
            status = run_pass(&ps, <double*>NULL, num_threads)
        else:
            status = run_pass(&ps, <float*>NULL, num_threads)
    if status < 0:
        reraise()
    if status > 0:
        raise MemoryError("filter_pass: could not allocate the per-thread line buffers")
