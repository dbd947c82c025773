/* Inner loop of the separable filters: one output row from k input rows.
 *
 *   o[e] = sum over taps t of w[t] * rows[t][e],   e in [0, n)
 *
 * in SciPy's order of operations (NI_Correlate1D), element by element:
 *   general:        o = x[k-1] * w[k-1];  then o += x[t] * w[t] for t = 0 .. k-2
 *   symmetric:      o = x[c] * w[c];      then o += (x[c-j] + x[c+j]) * w[c-j], j = c .. 1
 *   antisymmetric:  o = x[c] * w[c];      then o += (x[c-j] - x[c+j]) * w[c-j], j = c .. 1
 *
 * The rows are whatever the caller points at: rows of a block of lines (the
 * vector runs across lines), or one line shifted by t (the vector runs along
 * it).  GCC vector extensions of 32 bytes (64 with AVX-512; two SSE
 * registers on the baseline build), eight of them per step so the
 * accumulators stay in registers across all the taps.  Every lane does the
 * scalar operations above, so vector, tail and any block size give the same
 * bits.  No fused multiply-add here (see the pragma): in float64 the results
 * must equal SciPy's bit for bit.
 */
#ifndef FASTCONV_SEPARABLE_H
#define FASTCONV_SEPARABLE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <immintrin.h>

#define FC_K_CORRELATE 0
#define FC_K_SYMMETRIC 1
#define FC_K_ANTISYMMETRIC 2

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize ("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

/* Vector width: a full AVX-512 register where the build has it. */
#if defined(__AVX512F__)
#define FC_VBYTES 64
#else
#define FC_VBYTES 32
#endif

/* Eight independent accumulators: each output element is one dependency
 * chain of adds (SciPy's order, no reassociation), so throughput comes from
 * having many elements in flight. */
#define FC_DEFINE_ROWS(T, NAME)                                                        \
typedef T NAME##_vec __attribute__((vector_size(FC_VBYTES)));                          \
                                                                                       \
static inline NAME##_vec NAME##_ld(const T *p) {                                       \
    NAME##_vec v;                                                                      \
    memcpy(&v, p, sizeof v);                                                           \
    return v;                                                                          \
}                                                                                      \
                                                                                       \
static inline void NAME##_st(T *p, NAME##_vec v) { memcpy(p, &v, sizeof v); }         \
                                                                                       \
static void NAME(const T *const *rows, T *o, ptrdiff_t n, const T *w, ptrdiff_t k,     \
                 int kind) {                                                           \
    enum { V = (int)(sizeof(NAME##_vec) / sizeof(T)) };                                \
    const ptrdiff_t c = k / 2;                                                         \
    ptrdiff_t e = 0, j, t;                                                             \
    for (; e + 8 * V <= n; e += 8 * V) {                                               \
        NAME##_vec a0, a1, a2, a3, a4, a5, a6, a7;                                     \
        const T *x, *xm, *xp;                                                          \
        T wt;                                                                          \
        if (kind == FC_K_CORRELATE) {                                                  \
            x = rows[k - 1] + e;                                                       \
            wt = w[k - 1];                                                             \
            a0 = NAME##_ld(x) * wt;          a1 = NAME##_ld(x + V) * wt;               \
            a2 = NAME##_ld(x + 2 * V) * wt;  a3 = NAME##_ld(x + 3 * V) * wt;           \
            a4 = NAME##_ld(x + 4 * V) * wt;  a5 = NAME##_ld(x + 5 * V) * wt;           \
            a6 = NAME##_ld(x + 6 * V) * wt;  a7 = NAME##_ld(x + 7 * V) * wt;           \
            for (t = 0; t < k - 1; t++) {                                              \
                x = rows[t] + e;                                                       \
                wt = w[t];                                                             \
                a0 = a0 + NAME##_ld(x) * wt;          a1 = a1 + NAME##_ld(x + V) * wt; \
                a2 = a2 + NAME##_ld(x + 2 * V) * wt;  a3 = a3 + NAME##_ld(x + 3 * V) * wt; \
                a4 = a4 + NAME##_ld(x + 4 * V) * wt;  a5 = a5 + NAME##_ld(x + 5 * V) * wt; \
                a6 = a6 + NAME##_ld(x + 6 * V) * wt;  a7 = a7 + NAME##_ld(x + 7 * V) * wt; \
            }                                                                          \
        } else {                                                                       \
            x = rows[c] + e;                                                           \
            wt = w[c];                                                                 \
            a0 = NAME##_ld(x) * wt;          a1 = NAME##_ld(x + V) * wt;               \
            a2 = NAME##_ld(x + 2 * V) * wt;  a3 = NAME##_ld(x + 3 * V) * wt;           \
            a4 = NAME##_ld(x + 4 * V) * wt;  a5 = NAME##_ld(x + 5 * V) * wt;           \
            a6 = NAME##_ld(x + 6 * V) * wt;  a7 = NAME##_ld(x + 7 * V) * wt;           \
            if (kind == FC_K_SYMMETRIC) {                                              \
                for (j = c; j > 0; j--) {                                              \
                    xm = rows[c - j] + e;                                              \
                    xp = rows[c + j] + e;                                              \
                    wt = w[c - j];                                                     \
                    a0 = a0 + (NAME##_ld(xm) + NAME##_ld(xp)) * wt;                    \
                    a1 = a1 + (NAME##_ld(xm + V) + NAME##_ld(xp + V)) * wt;            \
                    a2 = a2 + (NAME##_ld(xm + 2 * V) + NAME##_ld(xp + 2 * V)) * wt;    \
                    a3 = a3 + (NAME##_ld(xm + 3 * V) + NAME##_ld(xp + 3 * V)) * wt;    \
                    a4 = a4 + (NAME##_ld(xm + 4 * V) + NAME##_ld(xp + 4 * V)) * wt;    \
                    a5 = a5 + (NAME##_ld(xm + 5 * V) + NAME##_ld(xp + 5 * V)) * wt;    \
                    a6 = a6 + (NAME##_ld(xm + 6 * V) + NAME##_ld(xp + 6 * V)) * wt;    \
                    a7 = a7 + (NAME##_ld(xm + 7 * V) + NAME##_ld(xp + 7 * V)) * wt;    \
                }                                                                      \
            } else {                                                                   \
                for (j = c; j > 0; j--) {                                              \
                    xm = rows[c - j] + e;                                              \
                    xp = rows[c + j] + e;                                              \
                    wt = w[c - j];                                                     \
                    a0 = a0 + (NAME##_ld(xm) - NAME##_ld(xp)) * wt;                    \
                    a1 = a1 + (NAME##_ld(xm + V) - NAME##_ld(xp + V)) * wt;            \
                    a2 = a2 + (NAME##_ld(xm + 2 * V) - NAME##_ld(xp + 2 * V)) * wt;    \
                    a3 = a3 + (NAME##_ld(xm + 3 * V) - NAME##_ld(xp + 3 * V)) * wt;    \
                    a4 = a4 + (NAME##_ld(xm + 4 * V) - NAME##_ld(xp + 4 * V)) * wt;    \
                    a5 = a5 + (NAME##_ld(xm + 5 * V) - NAME##_ld(xp + 5 * V)) * wt;    \
                    a6 = a6 + (NAME##_ld(xm + 6 * V) - NAME##_ld(xp + 6 * V)) * wt;    \
                    a7 = a7 + (NAME##_ld(xm + 7 * V) - NAME##_ld(xp + 7 * V)) * wt;    \
                }                                                                      \
            }                                                                          \
        }                                                                              \
        NAME##_st(o + e, a0);          NAME##_st(o + e + V, a1);                       \
        NAME##_st(o + e + 2 * V, a2);  NAME##_st(o + e + 3 * V, a3);                   \
        NAME##_st(o + e + 4 * V, a4);  NAME##_st(o + e + 5 * V, a5);                   \
        NAME##_st(o + e + 6 * V, a6);  NAME##_st(o + e + 7 * V, a7);                   \
    }                                                                                  \
    for (; e + V <= n; e += V) {                                                       \
        NAME##_vec a;                                                                  \
        if (kind == FC_K_CORRELATE) {                                                  \
            a = NAME##_ld(rows[k - 1] + e) * w[k - 1];                                 \
            for (t = 0; t < k - 1; t++)                                                \
                a = a + NAME##_ld(rows[t] + e) * w[t];                                 \
        } else {                                                                       \
            a = NAME##_ld(rows[c] + e) * w[c];                                         \
            for (j = c; j > 0; j--) {                                                  \
                if (kind == FC_K_SYMMETRIC)                                            \
                    a = a + (NAME##_ld(rows[c - j] + e) + NAME##_ld(rows[c + j] + e))  \
                        * w[c - j];                                                    \
                else                                                                   \
                    a = a + (NAME##_ld(rows[c - j] + e) - NAME##_ld(rows[c + j] + e))  \
                        * w[c - j];                                                    \
            }                                                                          \
        }                                                                              \
        NAME##_st(o + e, a);                                                           \
    }                                                                                  \
    for (; e < n; e++) {                                                               \
        T a;                                                                           \
        if (kind == FC_K_CORRELATE) {                                                  \
            a = rows[k - 1][e] * w[k - 1];                                             \
            for (t = 0; t < k - 1; t++)                                                \
                a = a + rows[t][e] * w[t];                                             \
        } else {                                                                       \
            a = rows[c][e] * w[c];                                                     \
            for (j = c; j > 0; j--) {                                                  \
                if (kind == FC_K_SYMMETRIC)                                            \
                    a = a + (rows[c - j][e] + rows[c + j][e]) * w[c - j];              \
                else                                                                   \
                    a = a + (rows[c - j][e] - rows[c + j][e]) * w[c - j];              \
            }                                                                          \
        }                                                                              \
        o[e] = a;                                                                      \
    }                                                                                  \
}

FC_DEFINE_ROWS(float, fc_rows_f)
FC_DEFINE_ROWS(double, fc_rows_d)

/* Box sums along a line: o[e] = (rows[0][e] + ... + rows[k-1][e]) / size,
 * added in that order in float32, then divided (not multiplied by 1/size:
 * for integer data the sum is exact and the division then truncates as
 * SciPy's float64 division does, see fastconv/_exact32.py).  Eight vector
 * accumulators, as FC_DEFINE_ROWS; every lane does the scalar operations. */
static void fc_box_f(const float *const *rows, float *o, ptrdiff_t n, ptrdiff_t k,
                     float size) {
    enum { V = (int)(sizeof(fc_rows_f_vec) / sizeof(float)) };
    ptrdiff_t e = 0, t;
    for (; e + 8 * V <= n; e += 8 * V) {
        fc_rows_f_vec a0, a1, a2, a3, a4, a5, a6, a7;
        const float *x = rows[0] + e;
        a0 = fc_rows_f_ld(x);          a1 = fc_rows_f_ld(x + V);
        a2 = fc_rows_f_ld(x + 2 * V);  a3 = fc_rows_f_ld(x + 3 * V);
        a4 = fc_rows_f_ld(x + 4 * V);  a5 = fc_rows_f_ld(x + 5 * V);
        a6 = fc_rows_f_ld(x + 6 * V);  a7 = fc_rows_f_ld(x + 7 * V);
        for (t = 1; t < k; t++) {
            x = rows[t] + e;
            a0 = a0 + fc_rows_f_ld(x);          a1 = a1 + fc_rows_f_ld(x + V);
            a2 = a2 + fc_rows_f_ld(x + 2 * V);  a3 = a3 + fc_rows_f_ld(x + 3 * V);
            a4 = a4 + fc_rows_f_ld(x + 4 * V);  a5 = a5 + fc_rows_f_ld(x + 5 * V);
            a6 = a6 + fc_rows_f_ld(x + 6 * V);  a7 = a7 + fc_rows_f_ld(x + 7 * V);
        }
        fc_rows_f_st(o + e, a0 / size);          fc_rows_f_st(o + e + V, a1 / size);
        fc_rows_f_st(o + e + 2 * V, a2 / size);  fc_rows_f_st(o + e + 3 * V, a3 / size);
        fc_rows_f_st(o + e + 4 * V, a4 / size);  fc_rows_f_st(o + e + 5 * V, a5 / size);
        fc_rows_f_st(o + e + 6 * V, a6 / size);  fc_rows_f_st(o + e + 7 * V, a7 / size);
    }
    for (; e + V <= n; e += V) {
        fc_rows_f_vec a = fc_rows_f_ld(rows[0] + e);
        for (t = 1; t < k; t++)
            a = a + fc_rows_f_ld(rows[t] + e);
        fc_rows_f_st(o + e, a / size);
    }
    for (; e < n; e++) {
        float a = rows[0][e];
        for (t = 1; t < k; t++)
            a = a + rows[t][e];
        o[e] = a / size;
    }
}

/* Box sums along one line in about log2(k) sweeps instead of k - 1 adds:
 * buf holds the line (n + k - 1 cells) and is overwritten.  After the sweep
 * for span s, buf[e] is the sum of the 2s cells from e (a tree of adds fixed
 * by k, the same for every e); o[e] adds the spans of k's binary digits,
 * lowest first, the digit for span s starting at cell (k mod s).  The
 * float32 error is at most (log2 k + popcount k) 2**-24 of the sum of
 * magnitudes; integer sums below 2**24 are exact, whatever the order. */
static void fc_box_tree_f(float *buf, float *o, ptrdiff_t n, ptrdiff_t k, float size) {
    enum { V = (int)(sizeof(fc_rows_f_vec) / sizeof(float)) };
    const ptrdiff_t L = n + k - 1;
    ptrdiff_t span, e, m;
    int first = 1;
    for (span = 1; span <= k; span *= 2) {
        if (k & span) {
            const float *x = buf + (k & (span - 1));
            if (first) {
                memmove(o, x, (size_t)n * sizeof(float));
                first = 0;
            } else {
                for (e = 0; e + V <= n; e += V)
                    fc_rows_f_st(o + e, fc_rows_f_ld(o + e) + fc_rows_f_ld(x + e));
                for (; e < n; e++)
                    o[e] = o[e] + x[e];
            }
        }
        if (2 * span <= k) {                    /* buf[e] += buf[e + span], ascending */
            m = L - 2 * span + 1;
            for (e = 0; e + V <= m; e += V)
                fc_rows_f_st(buf + e, fc_rows_f_ld(buf + e) + fc_rows_f_ld(buf + e + span));
            for (; e < m; e++)
                buf[e] = buf[e] + buf[e + span];
        }
    }
    for (e = 0; e + V <= n; e += V)
        fc_rows_f_st(o + e, fc_rows_f_ld(o + e) / size);
    for (; e < n; e++)
        o[e] = o[e] / size;
}

/* Integer passes in float32 with SciPy's float64 results (fastconv/_exact32.py
 * has the error bound and the argument).
 *
 * fc_exact_row_f computes one output row o[0, n) from rows of integers
 * (exact in float32): first in float32; a cell whose value lies within
 * err = rel * |o[e]| + abs of an integer might truncate to another integer
 * than SciPy's float64 sum, so it is recomputed in float64 by SciPy's
 * sequence of operations on the same values (fc_cell_d, or fc_rows_fd for a
 * whole row), and o[e] is set to the truncated float64 result, an integer
 * exact in float32 that the caller's cast to the output type stores
 * unchanged.  Other cells keep their float32 value: it truncates (and wraps)
 * as SciPy's does: no integer lies within err of it, so the float64 sum, within
 * err too, is in the same open interval (n, n + 1).  |o[e]| < 2**22, so the
 * casts to int32 are defined and the distance to the nearest integer exact.
 *
 * Cells are tested 8 at a time (one vector test).  Data whose sums are
 * large (full-range 16-bit) flag many cells; a row (of 64 cells or more)
 * with more than one in FC_HEAVY_BLOCKS blocks of 8 flagged is finished in
 * float64 (vectorised), and the next FC_HEAVY_ROWS rows of the job go
 * straight to float64.  Every route gives SciPy's integers, so this choice, which
 * depends on the job, never changes a result. */
#define FC_HEAVY_BLOCKS 4
#define FC_HEAVY_ROWS 15

typedef float fc_v8f __attribute__((vector_size(32)));
typedef int fc_v8i __attribute__((vector_size(32)));
typedef float fc_v4f __attribute__((vector_size(16)));
typedef double fc_v4d __attribute__((vector_size(32)));

static double fc_cell_d(const float *const *rows, ptrdiff_t e, const double *w,
                        ptrdiff_t k, int kind) {
    const ptrdiff_t c = k / 2;
    ptrdiff_t j, t;
    double a;
    if (kind == FC_K_CORRELATE) {
        a = (double)rows[k - 1][e] * w[k - 1];
        for (t = 0; t < k - 1; t++)
            a = a + (double)rows[t][e] * w[t];
    } else {
        a = (double)rows[c][e] * w[c];
        for (j = c; j > 0; j--) {
            if (kind == FC_K_SYMMETRIC)
                a = a + ((double)rows[c - j][e] + (double)rows[c + j][e]) * w[c - j];
            else
                a = a + ((double)rows[c - j][e] - (double)rows[c + j][e]) * w[c - j];
        }
    }
    return a;
}

/* Four floats widened to doubles (the intrinsics: GCC's generic conversion of
 * a 16-byte vector is scalarised). */
static inline fc_v4d fc_ld4(const float *p) {
    fc_v4d v;
#if defined(__AVX__)
    __m256d d = _mm256_cvtps_pd(_mm_loadu_ps(p));
    memcpy(&v, &d, sizeof v);
#else
    __m128 f = _mm_loadu_ps(p);
    __m128d lo = _mm_cvtps_pd(f), hi = _mm_cvtps_pd(_mm_movehl_ps(f, f));
    memcpy(&v, &lo, sizeof lo);
    memcpy((char *)&v + sizeof lo, &hi, sizeof hi);
#endif
    return v;
}

/* fc_cell_d for cells [0, n), four lanes at a time (the same operations per
 * lane); eight named accumulators in flight, as FC_DEFINE_ROWS, since each
 * is a chain of dependent adds (an array of them would live on the stack). */
#define FC_FD_STEP(OP, XM, XP)                                                         \
    do {                                                                               \
        a0 = a0 + (fc_ld4(XM) OP fc_ld4(XP)) * wt;                                     \
        a1 = a1 + (fc_ld4(XM + 4) OP fc_ld4(XP + 4)) * wt;                             \
        a2 = a2 + (fc_ld4(XM + 8) OP fc_ld4(XP + 8)) * wt;                             \
        a3 = a3 + (fc_ld4(XM + 12) OP fc_ld4(XP + 12)) * wt;                           \
        a4 = a4 + (fc_ld4(XM + 16) OP fc_ld4(XP + 16)) * wt;                           \
        a5 = a5 + (fc_ld4(XM + 20) OP fc_ld4(XP + 20)) * wt;                           \
        a6 = a6 + (fc_ld4(XM + 24) OP fc_ld4(XP + 24)) * wt;                           \
        a7 = a7 + (fc_ld4(XM + 28) OP fc_ld4(XP + 28)) * wt;                           \
    } while (0)

static void fc_rows_fd(const float *const *rows, double *o, ptrdiff_t n, const double *w,
                       ptrdiff_t k, int kind) {
    const ptrdiff_t c = k / 2;
    ptrdiff_t e = 0, j, t;
    for (; e + 32 <= n; e += 32) {
        fc_v4d a0, a1, a2, a3, a4, a5, a6, a7;
        const float *x, *xm, *xp;
        double wt;
        x = rows[kind == FC_K_CORRELATE ? k - 1 : c] + e;
        wt = w[kind == FC_K_CORRELATE ? k - 1 : c];
        a0 = fc_ld4(x) * wt;       a1 = fc_ld4(x + 4) * wt;
        a2 = fc_ld4(x + 8) * wt;   a3 = fc_ld4(x + 12) * wt;
        a4 = fc_ld4(x + 16) * wt;  a5 = fc_ld4(x + 20) * wt;
        a6 = fc_ld4(x + 24) * wt;  a7 = fc_ld4(x + 28) * wt;
        if (kind == FC_K_CORRELATE) {
            for (t = 0; t < k - 1; t++) {
                x = rows[t] + e;
                wt = w[t];
                a0 = a0 + fc_ld4(x) * wt;       a1 = a1 + fc_ld4(x + 4) * wt;
                a2 = a2 + fc_ld4(x + 8) * wt;   a3 = a3 + fc_ld4(x + 12) * wt;
                a4 = a4 + fc_ld4(x + 16) * wt;  a5 = a5 + fc_ld4(x + 20) * wt;
                a6 = a6 + fc_ld4(x + 24) * wt;  a7 = a7 + fc_ld4(x + 28) * wt;
            }
        } else if (kind == FC_K_SYMMETRIC) {
            for (j = c; j > 0; j--) {
                xm = rows[c - j] + e;
                xp = rows[c + j] + e;
                wt = w[c - j];
                FC_FD_STEP(+, xm, xp);
            }
        } else {
            for (j = c; j > 0; j--) {
                xm = rows[c - j] + e;
                xp = rows[c + j] + e;
                wt = w[c - j];
                FC_FD_STEP(-, xm, xp);
            }
        }
        memcpy(o + e, &a0, sizeof a0);       memcpy(o + e + 4, &a1, sizeof a1);
        memcpy(o + e + 8, &a2, sizeof a2);   memcpy(o + e + 12, &a3, sizeof a3);
        memcpy(o + e + 16, &a4, sizeof a4);  memcpy(o + e + 20, &a5, sizeof a5);
        memcpy(o + e + 24, &a6, sizeof a6);  memcpy(o + e + 28, &a7, sizeof a7);
    }
    for (; e < n; e++)
        o[e] = fc_cell_d(rows, e, w, k, kind);
}

static inline int fc_near_integer(float v, float rel, float abs_) {
    const float magic = 12582912.0f;            /* as fc_near_mask8 */
    float d = v - ((v + magic) - magic);
    d = d < 0 ? -d : d;
    return d <= v * rel + abs_;
}

/* |v|: clear the sign bits (a vector cast reinterprets the bits). */
static inline fc_v8f fc_abs8(fc_v8f v) {
    return (fc_v8f)((fc_v8i)v & 0x7fffffff);
}

static inline int fc_movemask8(fc_v8i bad) {
#if defined(__AVX__)
    return _mm256_movemask_ps((__m256)bad);
#else
    __m128 lo, hi;
    memcpy(&lo, &bad, sizeof lo);
    memcpy(&hi, (const char *)&bad + sizeof lo, sizeof hi);
    return _mm_movemask_ps(lo) | (_mm_movemask_ps(hi) << 4);
#endif
}

/* Bit l set where cell l of the 8 at o lies within err of an integer (one
 * vector test, as fc_near_integer).  v - rint(v) is exact; rint through
 * 1.5 * 2**23, valid for |v| < 2**22.  A relative bound is given only for
 * non-negative sums (fastconv/_exact32.py), and rel is 0 otherwise, so
 * v * rel + abs needs no |v|. */
static inline int fc_near_mask8(const float *o, float rel, float abs_) {
    const float magic = 12582912.0f;            /* 1.5 * 2**23 */
    fc_v8f v, d;
    memcpy(&v, o, sizeof v);
    d = fc_abs8(v - ((v + magic) - magic));
    return fc_movemask8(d <= v * rel + abs_);
}

static void fc_trunc_rows(float *o, const double *d, ptrdiff_t n) {
    ptrdiff_t e;
    for (e = 0; e < n; e++)
        o[e] = (float)(int)d[e];
}

static void fc_exact_row_f(const float *const *rows, float *o, ptrdiff_t n, const float *wf,
                           const double *w, ptrdiff_t k, int kind, float rel, float abs_,
                           double *scratch, int *heavy) {
    ptrdiff_t e, i, blocks = 0;
    if (*heavy > 0) {
        (*heavy)--;
        fc_rows_fd(rows, scratch, n, w, k, kind);
        fc_trunc_rows(o, scratch, n);
        return;
    }
    fc_rows_f(rows, o, n, wf, k, kind);
    if (rel == 0.0f && abs_ == 0.0f)
        return;                                 /* float32 is exact */
    for (e = 0; e + 8 <= n; e += 8) {
        int mask = fc_near_mask8(o + e, rel, abs_);
        if (!mask)
            continue;
        if (++blocks * FC_HEAVY_BLOCKS > n / 8 && n >= 64) {
            /* many cells to redo: the rest of the row, and the next rows, in float64 */
            fc_rows_fd(rows, scratch, n, w, k, kind);
            fc_trunc_rows(o + e, scratch + e, n - e);
            *heavy = FC_HEAVY_ROWS;
            return;
        }
        for (; mask; mask &= mask - 1) {
            i = e + __builtin_ctz(mask);
            o[i] = (float)(int)fc_cell_d(rows, i, w, k, kind);
        }
    }
    for (i = e; i < n; i++)
        if (fc_near_integer(o[i], rel, abs_))
            o[i] = (float)(int)fc_cell_d(rows, i, w, k, kind);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

#endif
