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
#include <string.h>

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

/* Integer passes in float32 with SciPy's float64 results (fastconv/_exact32.py
 * has the error bound and the argument).
 *
 * o[e] holds the float32 sum of cell e, computed from rows of integers exact
 * in float32.  A cell whose value lies within err = rel * |o[e]| + abs of an
 * integer might truncate to another integer than SciPy's float64 sum: it is
 * recomputed here in float64, by SciPy's sequence of operations (the scalar
 * loop of FC_DEFINE_ROWS on the same values), and o[e] is set to the
 * truncated result, an integer exact in float32, which the caller's cast to
 * the output type then stores unchanged.  Other cells keep their float32
 * value: it truncates (and wraps) as SciPy's does.  |o[e]| < 2**22, so the
 * casts to int32 are defined and d = v - trunc(v) is exact.  Returns the
 * number of cells recomputed. */
typedef float fc_v8f __attribute__((vector_size(32)));
typedef int fc_v8i __attribute__((vector_size(32)));

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

static inline int fc_near_integer(float v, float rel, float abs_) {
    float d = v - (float)(int)v;
    float err = (v < 0 ? -v : v) * rel + abs_;
    d = d < 0 ? -d : d;
    return !(d > err && 1.0f - d > err);
}

static inline fc_v8f fc_abs8(fc_v8f v) {        /* clear the sign bits */
    fc_v8i bits;
    memcpy(&bits, &v, sizeof v);
    bits &= 0x7fffffff;
    memcpy(&v, &bits, sizeof v);
    return v;
}

static ptrdiff_t fc_fix_trunc_f(const float *const *rows, float *o, ptrdiff_t n,
                                const double *w, ptrdiff_t k, int kind, float rel,
                                float abs_) {
    ptrdiff_t e, i, fixed = 0;
    if (rel == 0.0f && abs_ == 0.0f)
        return 0;                               /* float32 is exact */
    for (e = 0; e < n; e += 8) {
        const ptrdiff_t len = n - e < 8 ? n - e : 8;
        if (len == 8) {                         /* most blocks: one vector test */
            fc_v8f v, a, d, err;
            fc_v8i bad;
            int any = 0, l;
            memcpy(&v, o + e, sizeof v);
            d = v - __builtin_convertvector(__builtin_convertvector(v, fc_v8i), fc_v8f);
            a = fc_abs8(v);
            d = fc_abs8(d);
            err = a * rel + abs_;
            bad = (d <= err) | ((1.0f - d) <= err);
            for (l = 0; l < 8; l++)
                any |= bad[l];
            if (!any)
                continue;
        }
        for (i = e; i < e + len; i++) {
            if (fc_near_integer(o[i], rel, abs_)) {
                o[i] = (float)(int)fc_cell_d(rows, i, w, k, kind);
                fixed++;
            }
        }
    }
    return fixed;
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

#endif
