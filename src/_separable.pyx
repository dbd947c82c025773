"""Separable filters: one 1-D pass along one axis of a strided array.

The array is seen as lines along the filtered axis, a (P, Q) grid of them.
Three layouts (fastconv/_ndfilters.py, choose_separable, picks one from the
shape alone):

* ROWS (any axis but the contiguous one): a job takes B neighbouring lines,
  which lie side by side in memory; boundary rows are read first through
  SciPy's index rule (no padded copy of the volume), the other rows are
  streamed through a ring of k + 1 contiguous rows, and every multiply-add
  runs across the B lines: "output row += w[t] * input row t".
* LINE (the contiguous axis): each line is copied with its halo into a
  buffer and filtered along itself, tap t reading the buffer shifted by t.
* TRANSPOSED (running sums along the contiguous axis): B whole lines loaded
  side by side, so that the running sum is vectorised across them.

Every output element is computed by the same sequence of operations whatever
the block size, the job split and the thread count, so results are
bit-identical for any number of threads.  In float64 that sequence is
SciPy's (``NI_Correlate1D``: the symmetric / antisymmetric pairing of taps,
the running sum of ``NI_UniformFilter1D``), and so is the C cast to integer
outputs, which is how integer inputs give SciPy's results exactly.  The
multiply-add loop itself is in ``_separable.h`` (no fused multiply-add).

A job reads every input row before it overwrites it (the ring loads a row
before the output row of the same index is written; boundary rows are read
first), and jobs own disjoint lines, so a pass may write over its own input
(``input is output``, whole lines per job), as the later passes of a
multi-axis filter do.
"""
cimport numpy as cnp
from cython.parallel cimport parallel, prange
from libc.stdint cimport (int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t,
                          uint64_t)
from libc.stdlib cimport calloc, free

from _parallel cimport Driver, finish, proceed, start

cnp.import_array()

cdef extern from "_separable.h":
    # the multiply-add loop (no fused multiply-add: see the header)
    void fc_rows_f(const float** rows, float* o, Py_ssize_t n, const float* w, Py_ssize_t k,
                   int kind) nogil
    void fc_rows_d(const double** rows, double* o, Py_ssize_t n, const double* w,
                   Py_ssize_t k, int kind) nogil
    # box sums along a line, in float32
    void fc_box_f(const float** rows, float* o, Py_ssize_t n, Py_ssize_t k, float size) nogil
    void fc_box_tree_f(float* buf, float* o, Py_ssize_t n, Py_ssize_t k, float size) nogil
    # integer passes in float32: cells near an integer redone in float64
    void fc_exact_row_f(const float** rows, float* o, Py_ssize_t n, const float* wf,
                        const double* w, Py_ssize_t k, int kind, float rel, float abs_,
                        double* scratch, int* heavy) nogil

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

# How lines are laid out in the per-thread buffers (fastconv/_ndfilters.py,
# choose_separable, names them 'single-line', 'across-lines', 'transposed-lines').
cdef enum:
    LAYOUT_LINE = 0          # one line at a time, vectorised along it
    LAYOUT_ROWS = 1          # B lines side by side in memory, vectorised across them
    LAYOUT_TRANSPOSED = 2    # B contiguous lines loaded side by side (running sums)

# What a pass computes.
cdef enum:
    K_CORRELATE = 0      # taps, general order
    K_SYMMETRIC = 1      # odd length, w[c - j] == w[c + j]: (x[-j] + x[j]) * w[c - j]
    K_ANTISYMMETRIC = 2  # odd length, w[c - j] == -w[c + j]: (x[-j] - x[j]) * w[c - j]
    K_UNIFORM = 3        # running sum / size
    K_BOX = 4            # sum of the k taps / size, each output on its own (LAYOUT_LINE, float32)

# Box sums of at least this many taps go by doubling spans (fc_box_tree_f),
# shorter ones tap by tap (fc_box_f).
cdef enum:
    BOX_TREE_TAPS = 8

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
    int layout                         # LAYOUT_*
    Py_ssize_t sp, sl, sq              # source steps (elements) along P, line, Q
    Py_ssize_t dp, dl, dq              # destination steps (elements)
    int kind, mode
    double cval
    const double* w
    Py_ssize_t k, before               # taps, halo rows before row 0 (k // 2 + origin)
    # integer data in float32 work (fastconv/_exact32.py): cells whose float32
    # sum lies within err_rel * |sum| + err_abs of an integer are redone in float64;
    # box means (K_UNIFORM, K_BOX) divide their exact sums instead of multiplying
    bint checked
    float err_rel, err_abs


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
    # within one period of the line (every halo shorter than the line): no
    # division, which costs more than the rest of a short line's halo
    if mode == M_REFLECT and -n <= i < 2 * n:
        return -1 - i if i < 0 else (2 * n - 1 - i if i >= n else i)
    if mode == M_MIRROR and -(n - 1) <= i < 2 * n - 1:
        return -i if i < 0 else (2 * n - 2 - i if i >= n else i)
    if mode == M_WRAP and -n <= i < 2 * n:
        return i + n if i < 0 else (i - n if i >= n else i)
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


# --------------------------------------------------------------------------- one job

cdef inline void correlate(const work_t** rows, work_t* o, Py_ssize_t n, const work_t* w,
                           Py_ssize_t k, int kind) noexcept nogil:
    if work_t is float:
        fc_rows_f(rows, o, n, w, k, kind)
    else:
        fc_rows_d(rows, o, n, w, k, kind)


cdef inline int work_code(work_t* dummy) noexcept nogil:
    return T_FLOAT32 if work_t is float else T_FLOAT64


cdef inline void fill_row(const Pass* ps, work_t* row, const char* base, Py_ssize_t s,
                          Py_ssize_t nb) noexcept nogil:
    """row[b] = line b at source index s, or cval for s = -1."""
    cdef Py_ssize_t b
    cdef work_t c
    if s < 0:
        c = <work_t>ps.cval
        for b in range(nb):
            row[b] = c
    else:
        load(row, 1, base + s * ps.sl * ps.src_size, ps.sq, nb, ps.src_type)


cdef inline void uniform_first(double* acc, const work_t** rows, Py_ssize_t k,
                               Py_ssize_t nb) noexcept nogil:
    """acc = x[0] + x[1] + ... + x[k - 1], added in that order from 0.0."""
    cdef Py_ssize_t t, b
    cdef const work_t* x
    for b in range(nb):
        acc[b] = 0.0
    for t in range(k):
        x = rows[t]
        for b in range(nb):
            acc[b] = acc[b] + <double>x[b]


cdef inline void uniform_next(double* acc, const work_t* xn, const work_t* xo,
                              Py_ssize_t nb) noexcept nogil:
    """acc += x[new] - x[old] (NI_UniformFilter1D; the difference first)."""
    cdef Py_ssize_t b
    for b in range(nb):
        acc[b] = acc[b] + (<double>xn[b] - <double>xo[b])


cdef inline void uniform_out(work_t* o, const double* acc, double size,
                             Py_ssize_t nb, bint divide) noexcept nogil:
    """o = acc / size: a division in float64 work (SciPy's bits), and for integer
    data in float32 work (``divide``: the exact sum divided as SciPy divides it,
    then rounded to float32, which truncates alike, see fastconv/_exact32.py);
    otherwise in float32 work a product with 1 / size, whose float64 error
    vanishes in the rounding to float32 (divisions are several times slower)."""
    cdef Py_ssize_t b
    cdef double inv = 1.0 / size
    if work_t is double or divide:
        for b in range(nb):
            o[b] = <work_t>(acc[b] / size)
    else:
        for b in range(nb):
            o[b] = <float>(acc[b] * inv)


# Running sums of integer data in float32 work (checked box means): every sum
# is an integer below 2**24, exact in float32 whatever the order, and the
# float32 quotient truncates as SciPy's float64 one (fastconv/_exact32.py).
cdef inline void int_sum_first(float* acc, const float** rows, Py_ssize_t k,
                               Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t t, b
    cdef const float* x
    for b in range(nb):
        acc[b] = 0
    for t in range(k):
        x = rows[t]
        for b in range(nb):
            acc[b] = acc[b] + x[b]


cdef inline void int_sum_next(float* acc, const float* xn, const float* xo,
                              Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t b
    for b in range(nb):
        acc[b] = acc[b] + (xn[b] - xo[b])


cdef inline void int_mean_out(float* o, const float* acc, float size,
                              Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t b
    for b in range(nb):
        o[b] = acc[b] / size


cdef void run_rows(const Pass* ps, work_t* halo, work_t* ring, work_t* out,
                   const work_t** rows, const work_t* w, double* acc,
                   Py_ssize_t job) noexcept nogil:
    """ROWS layout: output rows [r0, r0 + n) of the lines (p, q0 .. q0 + nb - 1),
    vectorised across the lines.

    Boundary rows are read first, into ``halo`` (they may map onto rows this
    job overwrites when it filters in place).  Rows inside the line are then
    streamed through a ring of k + 1 contiguous rows, each loaded (converted)
    just before the first output row that needs it and so before that row of
    the output is written.  Contiguous copies also keep the k rows under the
    kernel from mapping to the same cache sets, as rows of a volume a power of
    two apart do.
    """
    cdef Py_ssize_t nqb = (ps.Q + ps.B - 1) // ps.B
    cdef Py_ssize_t nseg = (ps.rows + ps.seg - 1) // ps.seg
    cdef Py_ssize_t r0 = (job % nseg) * ps.seg
    cdef Py_ssize_t n = min(ps.seg, ps.rows - r0)
    job = job // nseg
    cdef Py_ssize_t p = job // nqb
    cdef Py_ssize_t q0 = (job % nqb) * ps.B
    cdef Py_ssize_t nb = min(ps.B, ps.Q - q0)
    cdef Py_ssize_t B = ps.B, k = ps.k, R = n + ps.k - 1, slots = ps.k + 1
    cdef Py_ssize_t first = ps.l0 + r0 - ps.before      # source index of virtual row 0
    cdef Py_ssize_t ra = max(0, -first), rb = min(R, ps.length - first)
    cdef const char* base = ps.src + (p * ps.sp + q0 * ps.sq) * ps.src_size
    cdef char* dbase = ps.dst + (p * ps.dp + q0 * ps.dq + r0 * ps.dl) * ps.dst_size
    cdef bint direct_out = ps.dst_type == work_code(out) and ps.dq == 1
    cdef Py_ssize_t r, h = 0, nxt, i, upto
    cdef double size = <double>k
    cdef work_t* o
    cdef work_t* slot
    cdef int heavy = 0                  # checked passes: rows left to do in float64
    for r in range(R):
        if r < ra or r >= rb:
            fill_row(ps, halo + h * B, base, boundary(first + r, ps.length, ps.mode), nb)
            rows[r] = halo + h * B
            h += 1
    nxt = ra
    for i in range(n):
        # bring in the rows output row i reads
        upto = min(i + k, rb)
        while nxt < upto:
            slot = ring + (nxt % slots) * B
            load(slot, 1, base + (first + nxt) * ps.sl * ps.src_size, ps.sq, nb, ps.src_type)
            rows[nxt] = slot
            nxt += 1
        o = <work_t*>(dbase + i * ps.dl * ps.dst_size) if direct_out else out
        if work_t is float and ps.kind == K_UNIFORM and ps.checked:
            if i == 0:
                int_sum_first(<float*>acc, rows, k, nb)
            else:
                int_sum_next(<float*>acc, rows[i + k - 1], rows[i - 1], nb)
            int_mean_out(o, <float*>acc, <float>k, nb)
        elif ps.kind == K_UNIFORM:
            if i == 0:
                uniform_first(acc, rows, k, nb)
            else:
                uniform_next(acc, rows[i + k - 1], rows[i - 1], nb)
            uniform_out(o, acc, size, nb, ps.checked)
        elif work_t is float and ps.checked:
            fc_exact_row_f(rows + i, o, nb, w, ps.w, k, ps.kind, ps.err_rel, ps.err_abs, acc,
                           &heavy)
        else:
            correlate(rows + i, o, nb, w, k, ps.kind)
        if not direct_out:
            store(dbase + i * ps.dl * ps.dst_size, ps.dq, out, 1, nb, ps.dst_type)


cdef void run_transposed(const Pass* ps, work_t* buf, work_t* out, const work_t** rows,
                         double* acc, Py_ssize_t job) noexcept nogil:
    """TRANSPOSED layout (running sums along the contiguous axis): whole lines
    (p, q0 .. q0 + nb - 1) loaded one by one into the columns of ``buf``, the
    running sum vectorised across them, the result stored line by line."""
    cdef Py_ssize_t nqb = (ps.Q + ps.B - 1) // ps.B
    cdef Py_ssize_t p = job // nqb
    cdef Py_ssize_t q0 = (job % nqb) * ps.B
    cdef Py_ssize_t nb = min(ps.B, ps.Q - q0)
    cdef Py_ssize_t B = ps.B, k = ps.k, n = ps.rows, R = ps.rows + ps.k - 1
    cdef Py_ssize_t first = ps.l0 - ps.before
    cdef Py_ssize_t ra = max(0, -first), rb = min(R, ps.length - first)
    cdef const char* base = ps.src + (p * ps.sp + q0 * ps.sq) * ps.src_size
    cdef char* dbase = ps.dst + (p * ps.dp + q0 * ps.dq) * ps.dst_size
    cdef Py_ssize_t r, b, i, s
    cdef double size = <double>k
    if ra < rb:
        for b in range(nb):
            load(buf + ra * B + b, B, base + (b * ps.sq + (first + ra) * ps.sl) * ps.src_size,
                 ps.sl, rb - ra, ps.src_type)
    for r in range(R):
        rows[r] = buf + r * B
        if ra <= r < rb:
            continue
        s = boundary(first + r, ps.length, ps.mode)
        if s >= 0 and ra <= s - first < rb:       # already loaded: copy the row
            for b in range(nb):
                buf[r * B + b] = buf[(s - first) * B + b]
        else:
            fill_row(ps, buf + r * B, base, s, nb)
    uniform_first(acc, rows, k, nb)
    uniform_out(out, acc, size, nb, ps.checked)
    for i in range(1, n):
        uniform_next(acc, rows[i + k - 1], rows[i - 1], nb)
        uniform_out(out + i * B, acc, size, nb, ps.checked)
    for b in range(nb):
        store(dbase + b * ps.dq * ps.dst_size, ps.dl, out + b, B, n, ps.dst_type)


cdef inline void line_halo(const Pass* ps, work_t* buf, const char* base, Py_ssize_t first,
                           Py_ssize_t ra, Py_ssize_t rb, Py_ssize_t r) noexcept nogil:
    """buf[r] = the line's value at virtual index first + r, outside the line."""
    cdef Py_ssize_t s = boundary(first + r, ps.length, ps.mode)
    if s < 0:
        buf[r] = <work_t>ps.cval
    elif ra <= s - first < rb:
        buf[r] = buf[s - first]                     # already loaded
    else:
        load(buf + r, 1, base + s * ps.sl * ps.src_size, 1, 1, ps.src_type)


cdef void run_lines(const Pass* ps, work_t* buf, work_t* out, const work_t** rows,
                    const work_t* w, double* scratch, Py_ssize_t job) noexcept nogil:
    """LINE layout: output rows [r0, r0 + n) of up to B lines, one after the
    other, each copied with its halo into ``buf`` (so a line may be filtered in
    place) and filtered along itself: tap t reads the buffer shifted by t."""
    cdef Py_ssize_t nqb = (ps.Q + ps.B - 1) // ps.B
    cdef Py_ssize_t nseg = (ps.rows + ps.seg - 1) // ps.seg
    cdef Py_ssize_t r0 = (job % nseg) * ps.seg
    cdef Py_ssize_t n = min(ps.seg, ps.rows - r0)
    job = job // nseg
    cdef Py_ssize_t p = job // nqb
    cdef Py_ssize_t q0 = (job % nqb) * ps.B
    cdef Py_ssize_t nl = min(ps.B, ps.Q - q0)
    cdef Py_ssize_t k = ps.k, R = n + ps.k - 1
    cdef Py_ssize_t first = ps.l0 + r0 - ps.before
    cdef Py_ssize_t ra = max(0, -first), rb = min(R, ps.length - first)
    cdef bint direct_out = ps.dst_type == work_code(out) and ps.dl == 1
    cdef Py_ssize_t hb = ra if ra < rb else R          # halo rows before the line
    cdef Py_ssize_t ha = rb if ra < rb else R          # halo rows from here on
    cdef Py_ssize_t q, r, t
    cdef const char* base
    cdef char* dbase
    cdef work_t* o
    cdef int heavy = 0                  # checked passes: lines left to do in float64
    for t in range(k):
        rows[t] = buf + t
    for q in range(q0, q0 + nl):
        base = ps.src + (p * ps.sp + q * ps.sq) * ps.src_size
        dbase = ps.dst + (p * ps.dp + q * ps.dq + r0 * ps.dl) * ps.dst_size
        if ra < rb:
            load(buf + ra, 1, base + (first + ra) * ps.sl * ps.src_size, ps.sl, rb - ra,
                 ps.src_type)
        # the halo: [0, ra) and [rb, R) (everything when no row is inside)
        for r in range(hb):
            line_halo(ps, buf, base, first, ra, rb, r)
        for r in range(ha, R):
            line_halo(ps, buf, base, first, ra, rb, r)
        o = <work_t*>dbase if direct_out else out
        if work_t is float and ps.kind == K_BOX and k >= BOX_TREE_TAPS:
            fc_box_tree_f(buf, o, n, k, <float>k)          # overwrites the line's copy
        elif work_t is float and ps.kind == K_BOX:
            fc_box_f(rows, o, n, k, <float>k)
        elif work_t is float and ps.checked:
            fc_exact_row_f(rows, o, n, w, ps.w, k, ps.kind, ps.err_rel, ps.err_abs, scratch,
                           &heavy)
        else:
            correlate(rows, o, n, w, k, ps.kind)
        if not direct_out:
            store(dbase, ps.dl, out, 1, n, ps.dst_type)


cdef Py_ssize_t pass_jobs(const Pass* ps) noexcept nogil:
    """Jobs of a pass: (P, block of B lines along Q, segment of rows)."""
    return ps.P * ((ps.Q + ps.B - 1) // ps.B) * ((ps.rows + ps.seg - 1) // ps.seg)


cdef void run_pass(const Pass* ps, work_t* wdummy, Driver* d) noexcept nogil:
    """Every job in parallel, on the shared driver (scratch, Ctrl-C, failures)."""
    cdef Py_ssize_t njobs = pass_jobs(ps), job, t
    cdef Py_ssize_t R = ps.seg + ps.k - 1
    # per-thread scratch, by layout (elements of the work type)
    cdef Py_ssize_t buf_size, out_size
    if ps.layout == LAYOUT_ROWS:
        buf_size = (ps.k - 1 + ps.k + 1) * ps.B       # halo rows + ring
        out_size = ps.B
    elif ps.layout == LAYOUT_TRANSPOSED:
        buf_size = R * ps.B
        out_size = ps.seg * ps.B
    else:
        buf_size = R
        out_size = ps.seg
    cdef work_t* buf
    cdef work_t* out
    cdef const work_t** rows
    cdef work_t* w
    cdef double* acc
    cdef bint scratch_ok
    if njobs == 0:
        return
    with parallel(num_threads=d.threads, use_threads_if=d.threads > 1):
        # calloc: lanes past a partial block are computed on zeros, never on
        # uninitialised memory
        buf = <work_t*>calloc(buf_size, sizeof(work_t))
        out = <work_t*>calloc(out_size, sizeof(work_t))
        rows = <const work_t**>calloc(R, sizeof(work_t*))
        w = <work_t*>calloc(ps.k, sizeof(work_t))
        # running sums' accumulators; a checked pass's float64 row
        acc = <double*>calloc(max(ps.B, ps.seg) if ps.checked else ps.B, sizeof(double))
        scratch_ok = buf != NULL and out != NULL and rows != NULL and w != NULL and acc != NULL
        if scratch_ok:
            for t in range(ps.k):
                w[t] = <work_t>ps.w[t]
        for job in prange(njobs, schedule="dynamic", chunksize=1):
            if not proceed(d, scratch_ok):
                pass
            elif ps.layout == LAYOUT_ROWS:
                run_rows(ps, buf, buf + (ps.k - 1) * ps.B, out, rows, w, acc, job)
            elif ps.layout == LAYOUT_TRANSPOSED:
                run_transposed(ps, buf, out, rows, acc, job)
            else:
                run_lines(ps, buf, out, rows, w, acc, job)
        free(buf)
        free(out)
        free(<void*>rows)
        free(w)
        free(acc)


def filter_pass(cnp.ndarray src, cnp.ndarray dst, int src_type, int dst_type, bint double_work,
                tuple grid, Py_ssize_t seg, int layout, tuple src_steps, tuple dst_steps,
                Py_ssize_t length, Py_ssize_t l0, Py_ssize_t rows, int kind,
                const double[::1] weights, Py_ssize_t before, int mode, double cval,
                int num_threads, bint checked=False, float err_rel=0, float err_abs=0):
    """One 1-D pass along the lines of ``src`` into ``dst`` (IN: src; OUT: dst).

    Parameters
    ----------
    src, dst : ndarray
        Only their data pointers are used; the layout comes from the steps.
        ``dst`` may be ``src`` itself (same pointer and steps) if ``seg >= rows``;
        any other overlap is the caller's to avoid.
    src_type, dst_type : int
        Element type codes (T_*).
    double_work : bool
        Compute in float64 (else float32).
    grid : (P, Q, B)
        Lines form a P x Q grid; a job filters B neighbouring lines along Q.
    seg : int
        Output rows per job (>= rows for K_UNIFORM, whose running sum starts at row 0).
    layout : int
        LAYOUT_LINE, LAYOUT_ROWS or LAYOUT_TRANSPOSED.
    src_steps, dst_steps : (along P, along the line, along Q), in elements
    length : int
        Source line length.
    l0, rows : int
        Output rows [l0, l0 + rows) of each line go to rows 0 .. rows - 1 of dst.
    kind : int
        K_CORRELATE, K_SYMMETRIC, K_ANTISYMMETRIC, K_UNIFORM (running sum) or K_BOX
        (each output its own sum: LAYOUT_LINE in float32 work only).
    weights : float64, (k,)
        Taps (for K_UNIFORM and K_BOX: any k values, only the size is used).
    before : int
        Halo rows before row 0: k // 2 + origin.
    mode : int
        M_* boundary mode; ``cval`` for M_CONSTANT.
    checked : bool
        Integer data into an integer output, computed in float32 (``double_work``
        false): a cell whose float32 sum lies within ``err_rel * |sum| + err_abs``
        of an integer is recomputed in float64, so that every cell truncates as
        SciPy's float64 sum (bounds from ``fastconv._exact32.checked_float32``).
        For box means (K_UNIFORM, K_BOX) of integer data: the exact sums are divided
        by the size (not multiplied by its inverse), so that they truncate as SciPy's.
    """
    cdef Pass ps
    ps.src = <const char*>cnp.PyArray_DATA(src)
    ps.dst = <char*>cnp.PyArray_DATA(dst)
    ps.src_type, ps.dst_type = src_type, dst_type
    ps.src_size, ps.dst_size = src.itemsize, dst.itemsize
    ps.P, ps.Q, ps.B = grid
    ps.sp, ps.sl, ps.sq = src_steps
    ps.dp, ps.dl, ps.dq = dst_steps
    ps.length, ps.l0, ps.rows, ps.seg = length, l0, rows, seg
    ps.layout = layout
    ps.kind, ps.mode, ps.cval = kind, mode, cval
    ps.w = &weights[0]
    ps.k = weights.shape[0]
    ps.before = before
    ps.checked, ps.err_rel, ps.err_abs = checked, err_rel, err_abs
    if checked and (double_work or dst_type >= T_FLOAT32 or src_type > T_INT16 or
                    not (err_rel >= 0 and err_abs >= 0)):
        raise ValueError(f"filter_pass: a checked float32 pass needs 8- or 16-bit integer "
                         f"data, an integer output and bounds >= 0; got src_type={src_type} "
                         f"dst_type={dst_type} kind={kind} double_work={double_work} "
                         f"bounds=({err_rel}, {err_abs})")
    if ps.B < 1 or ps.k < 1 or ps.length < 1 or ps.rows < 0 or ps.seg < 1 or \
            layout not in (LAYOUT_LINE, LAYOUT_ROWS, LAYOUT_TRANSPOSED) or \
            kind not in (K_CORRELATE, K_SYMMETRIC, K_ANTISYMMETRIC, K_UNIFORM, K_BOX) or \
            (kind == K_UNIFORM and (ps.seg < ps.rows or layout == LAYOUT_LINE)) or \
            (kind == K_BOX and (layout != LAYOUT_LINE or double_work)) or \
            (layout == LAYOUT_TRANSPOSED and ps.seg < ps.rows):
        raise ValueError(f"filter_pass: bad geometry B={ps.B} k={ps.k} length={ps.length} "
                         f"rows={ps.rows} seg={ps.seg} layout={layout}")
    cdef Driver d = start(pass_jobs(&ps), num_threads)
    with nogil:
        if double_work:
            run_pass(&ps, <double*>NULL, &d)
        else:
            run_pass(&ps, <float*>NULL, &d)
    finish(&d, "per-thread line buffers of filter_pass")
