/*
 * fastdiv_math.h: vectorised exp and log for the Cython kernels, keeping
 * IEEE semantics (NaN, +-inf and subnormals pass through unchanged).
 *
 * How the vectorisation works, and why no fast-math flag is needed:
 *
 * 1. exp, log, expf and logf are re-declared below with GCC's
 *    simd("notinbranch") attribute. It tells the vectoriser that glibc's
 *    libmvec has vector versions (_ZGVbN2v_exp for SSE2, _ZGVdN4v_exp for
 *    AVX2, ...), which handle every special value like the scalar
 *    functions do. With -fno-math-errno and -fno-trapping-math (set by
 *    setup.py) a loop calling them is vectorised, selects included;
 *    -ffast-math, which would also assume that no NaN or inf exists, is
 *    never used.
 * 2. The hot row loops carry FD_HOT = target_clones("avx512f", "avx2",
 *    "default"): GCC compiles an AVX-512, an AVX2 and a baseline x86-64
 *    version of each and picks one when the module is loaded, so one build
 *    runs on any x86-64 CPU and uses the widest libmvec calls it can:
 *    8-wide double (16-wide float) with AVX-512, which setup.py allows with
 *    -mprefer-vector-width=512 (GCC otherwise keeps to 256-bit vectors),
 *    4-wide (8-wide) with AVX2. On the project's AMD EPYC the AVX-512
 *    clone made the float32 softmax kernels 1.2-1.4x and the float64 ones
 *    1.0-1.2x faster than the AVX2 one on a core.
 * 3. Floating-point sums are never left to the vectoriser (it may not
 *    reorder them without -fassociative-math, so it would not vectorise
 *    the loop). They are written with GCC vector types and a fixed lane
 *    layout instead: the order of additions depends only on the length of
 *    the row, never on the thread count or on the clone that runs, so
 *    results are reproducible on every machine and thread count.
 * 4. On a CPU with AVX-512F the divergence term sums (and the dense
 *    pairwise JS kernel) take their logs from fastdiv_log8.h instead, an
 *    inline log of eight doubles within 2 ulp: libmvec's is a call, which
 *    clobbers every vector register. fd_log8_init(), run by each module at
 *    import, decides; the sums of the terms keep the order of point 3.
 *
 * Elsewhere (clang, MSVC, non-x86-64 or non-glibc), the same C compiles to
 * plain scalar loops with the same results up to the accuracy of exp/log.
 *
 * Everything is static: each Cython module that includes this header (via
 * `cimport fastdiv.backends._cython._math`) gets its own copy. Lengths are
 * ptrdiff_t (Py_ssize_t on every platform CPython supports). Sums are
 * accumulated in double also for float input.
 */
#ifndef FASTDIV_MATH_H
#define FASTDIV_MATH_H

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "fastdiv_exp8.h"
#include "fastdiv_log8.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) &&     \
    defined(__GLIBC__) &&                                                    \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 22))
/* libmvec (glibc >= 2.22) has these four on x86-64 for every ISA class. */
#define FD_LIBMVEC 1
__attribute__((simd("notinbranch"))) extern double exp(double);
__attribute__((simd("notinbranch"))) extern double log(double);
__attribute__((simd("notinbranch"))) extern float expf(float);
__attribute__((simd("notinbranch"))) extern float logf(float);
#define FD_HOT                                                               \
    __attribute__((target_clones("avx512f", "avx2", "default"), unused,   \
                   noinline))
/* Hide a value from constant folding (no instruction is emitted). */
#define FD_OPAQUE(v) __asm__("" : "+x"(v))
#else
#define FD_LIBMVEC 0
#define FD_HOT __attribute__((unused))
#define FD_OPAQUE(v) ((void)0)
#endif

/* Values per chunk of a row whose exps or logs go through a stack buffer
 * before being summed: 4 KB of doubles, well inside L1. */
#define FD_CHUNK 512

/* Rows of a block of short rows whose maxima are kept on the stack. */
#define FD_SHORT_ROWS 256

/* ------------------------------------------------------------------------
 * Fixed-order sums and maxima with GCC vector types.
 * ---------------------------------------------------------------------- */

typedef double fd_v4d __attribute__((vector_size(32)));
typedef long long fd_v4l __attribute__((vector_size(32)));
typedef float fd_v4f __attribute__((vector_size(16)));
typedef float fd_v8f __attribute__((vector_size(32)));
typedef int fd_v8i __attribute__((vector_size(32)));

/* Macros rather than functions: passing 32-byte vectors by value would
 * make GCC warn about an ABI that differs between the clones. */
#define FD_LOAD4D(v, p) memcpy(&(v), (p), sizeof(fd_v4d))
#define FD_LOAD4F_AS_D(v, p)                                                 \
    do {                                                                     \
        fd_v4f fd_tmp_;                                                      \
        memcpy(&fd_tmp_, (p), sizeof fd_tmp_);                               \
        (v) = __builtin_convertvector(fd_tmp_, fd_v4d);                      \
    } while (0)
#define FD_HSUM4(v) (((v)[0] + (v)[1]) + ((v)[2] + (v)[3]))

/* Sum of e_j over the entries with e_j != 1, and (in *ones) how many equal 1.
 *
 * The split keeps terms far below the rounding of the entries at the
 * maximum: with c ones and rest r, log(c + r) = log1p((c - 1) + r) loses
 * nothing of r even when r < 2^-53. A NaN lands in the rest, so it
 * propagates. Order: 8 lanes, chunk by chunk, then the tail in sequence. */
static inline double fd_split_sum_f64(const double *e, ptrdiff_t n,
                                      double *ones) {
    const fd_v4d one = {1.0, 1.0, 1.0, 1.0};
    fd_v4d r0 = {0.0, 0.0, 0.0, 0.0}, r1 = r0;
    fd_v4l c0 = {0, 0, 0, 0}, c1 = c0;
    ptrdiff_t j = 0;
    for (; j + 8 <= n; j += 8) {
        fd_v4d v0, v1;
        FD_LOAD4D(v0, e + j);
        FD_LOAD4D(v1, e + j + 4);
        fd_v4l m0 = v0 == one, m1 = v1 == one;
        c0 -= m0;
        c1 -= m1;
        r0 += (fd_v4d)((fd_v4l)v0 & ~m0);
        r1 += (fd_v4d)((fd_v4l)v1 & ~m1);
    }
    double rest = FD_HSUM4(r0 + r1);
    long long count = (c0[0] + c0[1] + c0[2] + c0[3]) +
                      (c1[0] + c1[1] + c1[2] + c1[3]);
    for (; j < n; j++) {
        if (e[j] == 1.0)
            count++;
        else
            rest += e[j];
    }
    *ones += (double)count;
    return rest;
}

static inline double fd_split_sum_f32(const float *e, ptrdiff_t n,
                                      double *ones) {
    const fd_v4d one = {1.0, 1.0, 1.0, 1.0};
    fd_v4d r0 = {0.0, 0.0, 0.0, 0.0}, r1 = r0;
    fd_v4l c0 = {0, 0, 0, 0}, c1 = c0;
    ptrdiff_t j = 0;
    for (; j + 8 <= n; j += 8) {
        fd_v4d v0, v1;
        FD_LOAD4F_AS_D(v0, e + j);
        FD_LOAD4F_AS_D(v1, e + j + 4);
        fd_v4l m0 = v0 == one, m1 = v1 == one;
        c0 -= m0;
        c1 -= m1;
        r0 += (fd_v4d)((fd_v4l)v0 & ~m0);
        r1 += (fd_v4d)((fd_v4l)v1 & ~m1);
    }
    double rest = FD_HSUM4(r0 + r1);
    long long count = (c0[0] + c0[1] + c0[2] + c0[3]) +
                      (c1[0] + c1[1] + c1[2] + c1[3]);
    for (; j < n; j++) {
        if (e[j] == 1.0f)
            count++;
        else
            rest += (double)e[j];
    }
    *ones += (double)count;
    return rest;
}

/* Plain fixed-order sum in double: 16 lanes in four chains (one chain
 * of 4 would wait on the latency of each addition: four keep the adders
 * busy, 2.5x faster on a row of 100 floats), then 4 lanes, then the tail
 * in sequence. */
#define FD_SUM(NAME, TX, LOAD)                                               \
    static FD_HOT double NAME(const TX *x, ptrdiff_t n) {                    \
        fd_v4d a0 = {0.0, 0.0, 0.0, 0.0}, a1 = a0, a2 = a0, a3 = a0;         \
        ptrdiff_t j = 0;                                                     \
        for (; j + 16 <= n; j += 16) {                                       \
            fd_v4d v0, v1, v2, v3;                                           \
            LOAD(v0, x + j);                                                 \
            LOAD(v1, x + j + 4);                                             \
            LOAD(v2, x + j + 8);                                             \
            LOAD(v3, x + j + 12);                                            \
            a0 += v0;                                                        \
            a1 += v1;                                                        \
            a2 += v2;                                                        \
            a3 += v3;                                                        \
        }                                                                    \
        for (; j + 4 <= n; j += 4) {                                         \
            fd_v4d v0;                                                       \
            LOAD(v0, x + j);                                                 \
            a0 += v0;                                                        \
        }                                                                    \
        double s = FD_HSUM4((a0 + a1) + (a2 + a3));                          \
        for (; j < n; j++)                                                   \
            s += (double)x[j];                                               \
        return s;                                                            \
    }

FD_SUM(fd_sum_f64, double, FD_LOAD4D)
FD_SUM(fd_sum_f32, float, FD_LOAD4F_AS_D)

#undef FD_SUM

/* Largest entry of x[0..n), skipping NaN (a NaN never compares greater);
 * -inf when n == 0 or every entry is NaN or -inf. Callers that must see a
 * NaN detect it elsewhere (it propagates through the exp sums).
 *
 * Four accumulators: the running maximum is a chain of a compare and a
 * blend, and with fewer chains the loop waits on their latency. A maximum
 * does not depend on the order of its comparisons, so the lanes change no
 * result. On a core here (Intel Xeon, rows in L1), against two chains:
 * float 0.13 -> 0.077 ns per entry at 848 entries, double 0.26 -> 0.16;
 * the same at 8 to 30 entries. Four 64-byte chains were faster still on
 * long rows (0.050 and 0.094) but 2x slower below 50 entries, where the
 * lanes of one zmm register cost more to fold than the row to scan. */

/* m = v where v > m, lane by lane (a NaN in v never is). */
#define FD_MAX_STEP(VX, VI, m, p)                                            \
    do {                                                                     \
        VX v_;                                                               \
        memcpy(&v_, (p), sizeof v_);                                         \
        VI g_ = v_ > (m);                                                    \
        (m) = (VX)(((VI)v_ & g_) | ((VI)(m) & ~g_));                         \
    } while (0)

#define FD_MAX(NAME, TX, VX, VI, LANES, NINF)                                \
    static FD_HOT double NAME(const TX *x, ptrdiff_t n) {                    \
        VX a0;                                                               \
        for (int l = 0; l < LANES; l++)                                      \
            a0[l] = NINF;                                                    \
        VX a1 = a0, a2 = a0, a3 = a0;                                        \
        ptrdiff_t j = 0;                                                     \
        for (; j + 4 * LANES <= n; j += 4 * LANES) {                         \
            FD_MAX_STEP(VX, VI, a0, x + j);                                  \
            FD_MAX_STEP(VX, VI, a1, x + j + LANES);                          \
            FD_MAX_STEP(VX, VI, a2, x + j + 2 * LANES);                      \
            FD_MAX_STEP(VX, VI, a3, x + j + 3 * LANES);                      \
        }                                                                    \
        for (; j + LANES <= n; j += LANES)                                   \
            FD_MAX_STEP(VX, VI, a0, x + j);                                  \
        /* The accumulators hold no NaN: fold them as vectors, then the  \
         * lanes. */                                                         \
        FD_MAX_STEP(VX, VI, a0, &a1);                                        \
        FD_MAX_STEP(VX, VI, a2, &a3);                                        \
        FD_MAX_STEP(VX, VI, a0, &a2);                                        \
        TX m = NINF;                                                         \
        for (int l = 0; l < LANES; l++)                                      \
            if (a0[l] > m)                                                   \
                m = a0[l];                                                   \
        for (; j < n; j++)                                                   \
            if (x[j] > m)                                                    \
                m = x[j];                                                    \
        return (double)m;                                                    \
    }

FD_MAX(fd_max_f64, double, fd_v4d, fd_v4l, 4, -HUGE_VAL)
FD_MAX(fd_max_f32, float, fd_v8f, fd_v8i, 8, -HUGE_VALF)

#undef FD_MAX
#undef FD_MAX_STEP

/* ------------------------------------------------------------------------
 * Shifted exponentials of a row: the core of softmax and logsumexp.
 *
 * With divide == 0:  s_j = (x_j - m) * a - c
 * with divide != 0:  s_j = (x_j - m) / a - c
 * computed in double (float input is widened first). Both forms are
 * offered because softmax must order "divide by T" and "subtract the
 * maximum" to avoid overflow, and must divide exactly like the NumPy
 * reference unless 1/T is exact: m = 0, c = max/T for T >= 1; m = max,
 * c = 0 for T < 1.
 * ---------------------------------------------------------------------- */

/* e[j] = exp(s[j]) for j < n, e possibly s: fd_exp8 (fastdiv_exp8.h)
 * where the CPU has AVX-512F, libmvec or libm otherwise. The exp passes
 * below first write s_j for a chunk of a row (in L1) and then take the
 * exps there, so that s_j has one definition on both paths. */
static FD_HOT void fd_exp_libm_f64(const double *s, ptrdiff_t n, double *e) {
    for (ptrdiff_t j = 0; j < n; j++)
        e[j] = exp(s[j]);
}

static inline void fd_exps_f64(const double *s, ptrdiff_t n, double *e) {
#if FD_LOG8
    if (fd_use_exp8) {
        fd_exp8_array(s, n, e);
        return;
    }
#endif
    fd_exp_libm_f64(s, n, e);
}

/* e[j] = exp(hi[j] + lo[j]) ~ expf(hi[j]) (1 + lo[j]) for j < n, to about
 * a float ulp, for |lo| <= 2^-24 |hi|; e possibly hi. fd_exp16 where the
 * CPU has AVX-512F, libmvec or libm otherwise. */
static FD_HOT void fd_expf_hilo_libm(const float *hi, const float *lo,
                                     ptrdiff_t n, float *e) {
    for (ptrdiff_t j = 0; j < n; j++)
        e[j] = expf(hi[j]) * (1.0f + lo[j]);
}

static inline void fd_expf_hilo(const float *hi, const float *lo, ptrdiff_t n,
                                float *e) {
#if FD_LOG8
    if (fd_use_exp8) {
        fd_exp16_hilo_array(hi, lo, n, e);
        return;
    }
#endif
    fd_expf_hilo_libm(hi, lo, n, e);
}

/* float exp of a double argument s <= 0 (or NaN), one at a time (the loss
 * kernels), as fd_expf_of_double_array below has it with libmvec. */
static inline float fd_expf_of_double(double s, double lim) {
    s = s < lim ? lim : s;
    float hi = (float)s;
    float lo = (float)(s - (double)hi);
    return expf(hi) * (1.0f + lo);
}

/* e[j] = float exp of the double s[j] <= 0 (or NaN), j < n: exp(s) =
 * exp(hi) exp(lo) ~ exp(hi) (1 + lo) with hi = (float)s and lo = s - hi,
 * |lo| <= 2^-24 |s|. Below -160 the float exp is 0 anyway: s is clamped
 * at lim = -160 so that hi and lo stay finite (-inf gives 0, not 0 * inf);
 * a NaN stays NaN (the comparison is false for it).
 *
 * lim is passed in, laundered by FD_OPAQUE, rather than written as a
 * constant: with a constant GCC folds (float)lim into one arm of the
 * select, the other arm keeps a conversion that may trap, and the loop is
 * then not if-converted, so not vectorised. */
static FD_HOT void fd_expf_of_double_array(const double *s, ptrdiff_t n,
                                           double lim, float *e) {
    float lo[FD_CHUNK];
    for (ptrdiff_t j0 = 0; j0 < n; j0 += FD_CHUNK) {
        ptrdiff_t len = n - j0 < FD_CHUNK ? n - j0 : FD_CHUNK;
        for (ptrdiff_t j = 0; j < len; j++) {
            double v = s[j0 + j] < lim ? lim : s[j0 + j];
            float hi = (float)v;
            e[j0 + j] = hi;
            lo[j] = (float)(v - (double)hi);
        }
        fd_expf_hilo(e + j0, lo, len, e + j0);
    }
}

/* e_j = exp(s_j) into out[0..k) (or a stack buffer when out is NULL).
 * Returns the sum of the e_j that are not 1 and adds to *ones how many are;
 * ones + returned value is the sum of all e_j. With ones NULL it returns
 * the plain sum of all e_j: softmax divides by the sum and needs no split
 * (the split costs twice the plain sum). NaN propagates into the returned
 * value. */
static FD_HOT double fd_exp_shift_sum_f64(const double *x, ptrdiff_t k,
                                          double m, double a, double c,
                                          int divide, double *out,
                                          double *ones) {
    double buf[FD_CHUNK];
    double rest = 0.0;
    if (ones)
        *ones = 0.0;
#if FD_LOG8
    /* softmax's exps go to out in one pass over the row, then their sum
     * (see fd_exp16_exact_array for why not chunk by chunk). */
    if (fd_use_exp8 && out) {
        fd_exp8_shift_array(x, k, m, a, c, divide, out);
        return fd_sum_f64(out, k);
    }
#endif
    for (ptrdiff_t j0 = 0; j0 < k; j0 += FD_CHUNK) {
        ptrdiff_t len = k - j0 < FD_CHUNK ? k - j0 : FD_CHUNK;
        const double *xs = x + j0;
        double *e = out ? out + j0 : buf;
        if (divide)
            for (ptrdiff_t j = 0; j < len; j++)
                e[j] = (xs[j] - m) / a - c;
        else
            for (ptrdiff_t j = 0; j < len; j++)
                e[j] = (xs[j] - m) * a - c;
        fd_exps_f64(e, len, e);
        rest += ones ? fd_split_sum_f64(e, len, ones) : fd_sum_f64(e, len);
    }
    return rest;
}

/* Whether s_j = (x_j - m) * a - c can be formed in float as an exact sum
 * hi + lo (fd_exps_f32_exact below): a is a power of two within float's
 * normal range, m and c are floats, and one of them is 0. That is T = 1,
 * and every power-of-two T, for float input. */
static inline int fd_shift_is_float_exact(double m, double a, double c,
                                          int divide) {
    int expo;
    if (divide || frexp(a, &expo) != 0.5 || !(a >= 0x1p-126 && a <= 0x1p126))
        return 0;
    if ((double)(float)m != m || (double)(float)c != c)
        return 0;
    return m == 0.0 || c == 0.0;
}

/* e_j = exp(s_j) for s_j = (x_j - m) a - c on the conditions above, in
 * float arithmetic alone (2.2x faster on a core than going through double,
 * which float's 16 lanes to a vector against double's 8 explain): with
 * one of m, c zero, s_j = u - v with floats u, v (x_j a and c, or x_j and
 * m), and Knuth's two-sum gives hi = fl(u - v) and its exact error lo. a
 * scales both exactly (a product that overflows or underflows stays as
 * harmless as in double: -inf, or an error below 2^-149). Then exp(s_j)
 * ~ exp(hi) (1 + lo), as fd_expf_of_double_array has it: the same hi and lo as
 * the double path wherever its s_j is exact, so the same results. Below
 * lim the result is exp(lim) = 0 (and -inf, whose two-sum error is NaN,
 * lands there); a NaN stays NaN. hi goes to e, lo to the buffer lo. */
static inline void fd_exps_f32_exact(const float *x, ptrdiff_t len, float m,
                                     float a, float c, float lim, float *e,
                                     float *lo) {
    if (m == 0.0f) {
        for (ptrdiff_t j = 0; j < len; j++) {
            float u = x[j] * a, v = c;
            float hi = u - v, back = hi - u;
            float l = (u - (hi - back)) - (v + back);
            lo[j] = hi < lim ? 0.0f : l;
            e[j] = hi < lim ? lim : hi;
        }
    } else {
        for (ptrdiff_t j = 0; j < len; j++) {
            float u = x[j], v = m;
            float hi = u - v, back = hi - u;
            float l = (u - (hi - back)) - (v + back);
            hi *= a;
            l *= a;
            lo[j] = hi < lim ? 0.0f : l;
            e[j] = hi < lim ? lim : hi;
        }
    }
    fd_expf_hilo(e, lo, len, e);
}

/* Same for float input and output; s_j is computed in double and the
 * exponential in float (fd_expf_of_double_array), the sum in double; or all in
 * float where fd_shift_is_float_exact allows. */
static FD_HOT double fd_exp_shift_sum_f32(const float *x, ptrdiff_t k,
                                          double m, double a, double c,
                                          int divide, float *out,
                                          double *ones) {
    float buf[FD_CHUNK], lo[FD_CHUNK];
    double s[FD_CHUNK];
    double rest = 0.0, lim = -160.0;
    float limf = -160.0f;
    int exact = fd_shift_is_float_exact(m, a, c, divide);
    FD_OPAQUE(lim);
    FD_OPAQUE(limf);
    if (ones)
        *ones = 0.0;
#if FD_LOG8
    /* softmax's exps go to out in one pass over the row, then their sum
     * (see fd_exp16_exact_array for why not chunk by chunk). */
    if (fd_use_exp8 && exact && out) {
        fd_exp16_exact_array(x, k, (float)m, (float)a, (float)c, limf, out);
        return fd_sum_f32(out, k);
    }
#endif
    for (ptrdiff_t j0 = 0; j0 < k; j0 += FD_CHUNK) {
        ptrdiff_t len = k - j0 < FD_CHUNK ? k - j0 : FD_CHUNK;
        const float *xs = x + j0;
        float *e = out ? out + j0 : buf;
        if (exact) {
            fd_exps_f32_exact(xs, len, (float)m, (float)a, (float)c, limf, e,
                              lo);
        } else {
            if (divide)
                for (ptrdiff_t j = 0; j < len; j++)
                    s[j] = ((double)xs[j] - m) / a - c;
            else
                for (ptrdiff_t j = 0; j < len; j++)
                    s[j] = ((double)xs[j] - m) * a - c;
            fd_expf_of_double_array(s, len, lim, e);
        }
        rest += ones ? fd_split_sum_f32(e, len, ones) : fd_sum_f32(e, len);
    }
    return rest;
}

/* ------------------------------------------------------------------------
 * Short rows. A loop over a row of fewer than 16 entries never reaches the
 * vector code, so each of its exps would run scalar (about 3 ns each). A
 * block of nr such rows, stored one after the other, is handled at once:
 * the maxima across the rows, each row's shift spread over its entries, then
 * s and exp(s) of the whole block in one vector loop each, with the same
 * arithmetic as fd_exp_shift_sum entry for entry (so both paths give the
 * same exps). Per row r: maxima[r], tops[r] = m (* or /) a, and the split
 * sums of its exps (ones[r], rest[r]); s[r k + j] = s_j, e[r k + j] =
 * exp(s_j). first: T >= 1, s_j = x_j (* or /) a - top; else (x_j - m)
 * (* or /) a.
 * ---------------------------------------------------------------------- */
#define FD_SHORT_EXPS(NAME, TX, ONE, EXP)                                    \
    static FD_HOT void NAME(const TX *x, ptrdiff_t nr, ptrdiff_t k,          \
                            double a, int divide, int first, double *maxima, \
                            double *tops, double *ones, double *rest,        \
                            double *s, TX *e) {                              \
        ptrdiff_t nk = nr * k;                                               \
        double lim = -160.0;                                                 \
        TX mt[FD_SHORT_ROWS];                                                \
        FD_OPAQUE(lim);                                                      \
        (void)lim;                                                           \
        /* Maxima and sums run across the rows, column by column: one      \
         * accumulator per row, so each row keeps its sequential order     \
         * while the loop over rows vectorises (strided loads). Row by row,  \
         * a call per row and a scalar loop of k cost 3x (maxima) and 1.5x \
         * (sums) as much on a core. */                                     \
        for (ptrdiff_t r0 = 0; r0 < nr; r0 += FD_SHORT_ROWS) {               \
            ptrdiff_t r1 = nr - r0 < FD_SHORT_ROWS ? nr : r0 + FD_SHORT_ROWS; \
            for (ptrdiff_t r = r0; r < r1; r++)                              \
                mt[r - r0] = (TX)-HUGE_VAL;                                  \
            for (ptrdiff_t j = 0; j < k; j++)                                \
                for (ptrdiff_t r = r0; r < r1; r++) {                        \
                    TX v = x[r * k + j], cur = mt[r - r0];                   \
                    mt[r - r0] = v > cur ? v : cur;                          \
                }                                                            \
            for (ptrdiff_t r = r0; r < r1; r++)                              \
                maxima[r] = (double)mt[r - r0];                              \
        }                                                                    \
        for (ptrdiff_t r = 0; r < nr; r++) {                                 \
            double m = maxima[r];                                            \
            double top = divide ? m / a : m * a;                             \
            double v = first ? top : m;                                      \
            tops[r] = top;                                                   \
            for (ptrdiff_t j = 0; j < k; j++)                                \
                s[r * k + j] = v;                                            \
        }                                                                    \
        if (first && divide)                                                 \
            for (ptrdiff_t u = 0; u < nk; u++)                               \
                s[u] = (double)x[u] / a - s[u];                              \
        else if (first)                                                      \
            for (ptrdiff_t u = 0; u < nk; u++)                               \
                s[u] = (double)x[u] * a - s[u];                              \
        else if (divide)                                                     \
            for (ptrdiff_t u = 0; u < nk; u++)                               \
                s[u] = ((double)x[u] - s[u]) / a;                            \
        else                                                                 \
            for (ptrdiff_t u = 0; u < nk; u++)                               \
                s[u] = ((double)x[u] - s[u]) * a;                            \
        EXP;                                                                 \
        for (ptrdiff_t r = 0; r < nr; r++) {                                 \
            ones[r] = 0.0;                                                   \
            rest[r] = 0.0;                                                   \
        }                                                                    \
        for (ptrdiff_t j = 0; j < k; j++)                                    \
            for (ptrdiff_t r = 0; r < nr; r++) {                             \
                TX v = e[r * k + j];                                         \
                int one = v == ONE;                                          \
                rest[r] += one ? 0.0 : (double)v;                            \
                ones[r] += one ? 1.0 : 0.0;                                  \
            }                                                                \
    }

FD_SHORT_EXPS(fd_short_exps_f64, double, 1.0, fd_exps_f64(s, nk, e))
FD_SHORT_EXPS(fd_short_exps_f32, float, 1.0f,
              fd_expf_of_double_array(s, nk, lim, e))

#undef FD_SHORT_EXPS

/* lse[r] = top[r] + log1p((ones[r] - 1) + rest[r]) for nr rows (top NULL:
 * no top). log1p(z) = log(u) - ((u - 1) - z) / u with u = 1 + z, to an
 * ulp: (u - 1) - z is the rounding error of u exactly. Unlike log1p, this
 * vectorises (through libmvec's log), which matters at one per short row.
 * NaN propagates. */
static FD_HOT void fd_short_lse(const double *top, const double *ones,
                                const double *rest, ptrdiff_t nr,
                                double *lse) {
    for (ptrdiff_t r = 0; r < nr; r++) {
        double z = (ones[r] - 1.0) + rest[r];
        double u = 1.0 + z;
        lse[r] = log(u) - ((u - 1.0) - z) / u;
    }
    if (top)
        for (ptrdiff_t r = 0; r < nr; r++)
            lse[r] += top[r];
}

/* out_j = s_j - shift (the log-softmax pass), s_j as above, in double. */
static FD_HOT void fd_shift_sub_f64(const double *x, ptrdiff_t k, double m,
                                    double a, double c, int divide,
                                    double shift, double *out) {
    if (divide)
        for (ptrdiff_t j = 0; j < k; j++)
            out[j] = ((x[j] - m) / a - c) - shift;
    else
        for (ptrdiff_t j = 0; j < k; j++)
            out[j] = ((x[j] - m) * a - c) - shift;
}

static FD_HOT void fd_shift_sub_f32(const float *x, ptrdiff_t k, double m,
                                    double a, double c, int divide,
                                    double shift, float *out) {
    if (divide)
        for (ptrdiff_t j = 0; j < k; j++)
            out[j] = (float)((((double)x[j] - m) / a - c) - shift);
    else
        for (ptrdiff_t j = 0; j < k; j++)
            out[j] = (float)((((double)x[j] - m) * a - c) - shift);
}

/* out_j *= factor in place (the product is formed in double). */
static FD_HOT void fd_scale_f64(double *out, ptrdiff_t k, double factor) {
    for (ptrdiff_t j = 0; j < k; j++)
        out[j] *= factor;
}

static FD_HOT void fd_scale_f32(float *out, ptrdiff_t k, double factor) {
    for (ptrdiff_t j = 0; j < k; j++)
        out[j] = (float)((double)out[j] * factor);
}

/* ------------------------------------------------------------------------
 * Element-wise exp and log of arrays (out may be x itself), in the dtype
 * of the array: float arrays use the 8-wide float functions.
 * ---------------------------------------------------------------------- */

static FD_HOT void fd_exp_f64(const double *x, ptrdiff_t n, double *out) {
    for (ptrdiff_t j = 0; j < n; j++)
        out[j] = exp(x[j]);
}

static FD_HOT void fd_log_f64(const double *x, ptrdiff_t n, double *out) {
    for (ptrdiff_t j = 0; j < n; j++)
        out[j] = log(x[j]);
}

static FD_HOT void fd_exp_f32(const float *x, ptrdiff_t n, float *out) {
    for (ptrdiff_t j = 0; j < n; j++)
        out[j] = expf(x[j]);
}

static FD_HOT void fd_log_f32(const float *x, ptrdiff_t n, float *out) {
    for (ptrdiff_t j = 0; j < n; j++)
        out[j] = logf(x[j]);
}

/* The probability check of one row: returns the sum of fd_sum and stores
 * in *negatives how many entries are < 0. Compiled in the clones, where
 * the count vectorises (a compare and a popcount per vector); the row is
 * in cache for the second loop. */
#define FD_CHECK_ROW(NAME, TX, SUM)                                          \
    static FD_HOT double NAME(const TX *x, ptrdiff_t n,                      \
                              long long *negatives) {                        \
        long long count = 0;                                                 \
        for (ptrdiff_t j = 0; j < n; j++)                                    \
            count += x[j] < 0;                                               \
        *negatives = count;                                                  \
        return SUM(x, n);                                                    \
    }

FD_CHECK_ROW(fd_check_row_f64, double, fd_sum_f64)
FD_CHECK_ROW(fd_check_row_f32, float, fd_sum_f32)

#undef FD_CHECK_ROW

/* ------------------------------------------------------------------------
 * Sums of x log y terms for the divergences, with 0 log 0 = 0: a term whose
 * weight is exactly 0 contributes 0, whatever its log (-inf, NaN). Terms
 * are computed in double (float input is widened: the float results stay
 * accurate where the divergence is near 0) and summed in double in a fixed
 * order.
 * ---------------------------------------------------------------------- */

/* The terms eight at a time with fd_log8 (fastdiv_log8.h), on a CPU with
 * AVX-512F. Each lane computes what the scalar TERM below computes, with
 * fd_log8's log (within 2 ulp) for libmvec's (within 4): weights of exactly
 * 0 are masked to +0.0 (maskz) where the scalar code selects 0.0, a NaN
 * weight compares unequal to 0 and stays. On the project's AMD EPYC
 * (Zen 4), one core, checks included, rows of 100 (two builds side by side,
 * three alternating runs): js_div 4.4-5.7 -> 3.5-3.8 ns per entry
 * in float64 and 5.5-7.6 -> 3.6-4.1 in float32, kl_div 2.4-3.3 -> 2.2-2.5
 * and 3.1-4.0 -> 1.8-2.5; entropy and cross-entropy within the noise in
 * float32 (fd_log8 in double against logf in float) and 1.3x faster in
 * float64. */
/* |d| up to which fd_js_term sums the series (see there). */
#define FD_JS_NEAR 0.0625

#if FD_LOG8
FD_T512 static inline __mmask8 fd_nonzero8(__m512d w) {
    return _mm512_cmp_pd_mask(w, _mm512_setzero_pd(), _CMP_NEQ_UQ);
}

/* x log y */
FD_T512 static inline __m512d fd_xlogy8(__m512d x, __m512d y,
                                        const fd_log8_tables *t) {
    return _mm512_maskz_mul_pd(fd_nonzero8(x), x, fd_log8(y, t));
}

/* p log(p / q) */
FD_T512 static inline __m512d fd_rel_entr8(__m512d p, __m512d q,
                                           const fd_log8_tables *t) {
    __m512d l = fd_log8(_mm512_div_pd(p, q), t);
    return _mm512_maskz_mul_pd(fd_nonzero8(p), p, l);
}

/* fd_js_term, below, eight at a time. */
FD_T512 static inline __m512d fd_js8(__m512d p, __m512d q,
                                     const fd_log8_tables *t) {
    const __m512d one = _mm512_set1_pd(1.0);
    __m512d s = _mm512_add_pd(p, q);
    __m512d d = _mm512_div_pd(_mm512_sub_pd(p, q), s);
    __m512d z = _mm512_mul_pd(d, d);
    __m512d c = _mm512_set1_pd(1.0 / 66);
    c = _mm512_fmadd_pd(c, z, _mm512_set1_pd(1.0 / 45));
    c = _mm512_fmadd_pd(c, z, _mm512_set1_pd(1.0 / 28));
    c = _mm512_fmadd_pd(c, z, _mm512_set1_pd(1.0 / 15));
    c = _mm512_fmadd_pd(c, z, _mm512_set1_pd(1.0 / 6));
    c = _mm512_fmadd_pd(c, z, one);
    __m512d series = _mm512_mul_pd(_mm512_mul_pd(_mm512_set1_pd(0.5), s),
                                   _mm512_mul_pd(z, c));
    /* |d| <= 1/16 is false for a NaN d: t_log, NaN or the 0 of p = q = 0 */
    __mmask8 near = _mm512_cmp_pd_mask(_mm512_abs_pd(d),
                                       _mm512_set1_pd(FD_JS_NEAR), _CMP_LE_OQ);
    /* Rows of near-identical distributions (a student close to its
     * teacher) need no log at all; the branch is predictable on them and
     * on unrelated rows (where some lane is almost always far). */
    if (near == 0xFF)
        return series;
    /* 1 + d or 1 - d is 0 where d rounds to -1 or 1: 2p / s or 2q / s
     * instead, as in fd_js_term */
    __m512d ap = _mm512_add_pd(one, d), aq = _mm512_sub_pd(one, d);
    __m512d zero = _mm512_setzero_pd();
    __mmask8 zp = _mm512_cmp_pd_mask(ap, zero, _CMP_EQ_OQ);
    __mmask8 zq = _mm512_cmp_pd_mask(aq, zero, _CMP_EQ_OQ);
    /* rare, and a masked division costs a whole one: only when needed */
    if (zp | zq) {
        ap = _mm512_mask_div_pd(ap, zp, _mm512_add_pd(p, p), s);
        aq = _mm512_mask_div_pd(aq, zq, _mm512_add_pd(q, q), s);
    }
    __m512d lp = fd_log8(ap, t);
    __m512d lq = fd_log8(aq, t);
    __m512d t_log = _mm512_add_pd(_mm512_maskz_mul_pd(fd_nonzero8(p), p, lp),
                                  _mm512_maskz_mul_pd(fd_nonzero8(q), q, lq));
    return _mm512_mask_blend_pd(near, t_log, series);
}

/* The vector loops below ask for the lines 1 KB ahead of their rows. On
 * this Intel Xeon the hardware prefetchers did not keep them fed: float32
 * entropy of 50M entries on a core took 1.9-2.0 ns per entry in rows of
 * 256 to 10_000 (0.85 in rows of 100), 0.65-0.7 in cache; with these
 * hints, 0.69-0.74 at every row length. 1 KB is about 20 lines of float
 * input, some 100-200 ns ahead at these loops' pace, a memory latency. A
 * hint past the end of an array is harmless: prefetches never fault. */
#define FD_PREFETCH(p) _mm_prefetch((const char *)(p) + 1024, _MM_HINT_T0)

/* buf[j] = VTERM(x_j, y_j) for j < n, the rows of TX widened to double. */
#define FD_TERMS8(NAME, TX, LOAD8, VTERM)                                    \
    FD_T512 static void NAME(const TX *x, const TX *y, ptrdiff_t n,          \
                             double *buf) {                                  \
        fd_log8_tables t = fd_log8_load();                                   \
        for (ptrdiff_t j = 0; j < n; j += 8) {                               \
            __mmask8 live = fd_lanes8(j, n);                                 \
            FD_PREFETCH(x + j);                                              \
            FD_PREFETCH(y + j);                                              \
            __m512d p = LOAD8(x + j, live), q = LOAD8(y + j, live);          \
            _mm512_mask_storeu_pd(buf + j, live, VTERM(p, q, &t));           \
        }                                                                    \
    }

FD_TERMS8(fd_xlogy_terms8_f64, double, fd_load8_f64, fd_xlogy8)
FD_TERMS8(fd_xlogy_terms8_f32, float, fd_load8_f32, fd_xlogy8)
FD_TERMS8(fd_rel_entr_terms8_f64, double, fd_load8_f64, fd_rel_entr8)
FD_TERMS8(fd_rel_entr_terms8_f32, float, fd_load8_f32, fd_rel_entr8)
FD_TERMS8(fd_js_terms8_f64, double, fd_load8_f64, fd_js8)
FD_TERMS8(fd_js_terms8_f32, float, fd_load8_f32, fd_js8)

#undef FD_TERMS8

/* One vector of a row into its check: the lanes added to *sum, the
 * entries < 0 counted into *negatives. */
FD_T512 static inline void fd_tally8(__m512d v, __m512d *sum,
                                     long long *negatives) {
    *sum = _mm512_add_pd(*sum, v);
    *negatives += __builtin_popcount(
        _mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_LT_OQ));
}

/* The sum of VTERM over two rows with their checks (see FD_CHECKED_SUM
 * below) in the same vector loop: the sums of x and y in eight lanes,
 * added across them at the end (a fixed order, as every sum here), the
 * negative entries counted from compare masks. The terms go through buf
 * and fd_sum_f64 as in FD_TERM_SUM, so the result is the unchecked sum's,
 * bit for bit. */
#define FD_CHECKED_TERMS8(NAME, TX, LOAD8, VTERM)                            \
    FD_T512 static double NAME(const TX *x, const TX *y, ptrdiff_t n,        \
                               double *stats, long long *negatives) {        \
        fd_log8_tables t = fd_log8_load();                                   \
        double buf[FD_CHUNK];                                                \
        double total = 0.0;                                                  \
        __m512d sx = _mm512_setzero_pd(), sy = sx;                           \
        long long nx = 0, ny = 0;                                            \
        for (ptrdiff_t j0 = 0; j0 < n; j0 += FD_CHUNK) {                     \
            ptrdiff_t len = n - j0 < FD_CHUNK ? n - j0 : FD_CHUNK;           \
            for (ptrdiff_t j = 0; j < len; j += 8) {                         \
                __mmask8 live = fd_lanes8(j, len);                           \
                FD_PREFETCH(x + j0 + j);                                     \
                FD_PREFETCH(y + j0 + j);                                     \
                __m512d p = LOAD8(x + j0 + j, live);                         \
                __m512d q = LOAD8(y + j0 + j, live);                         \
                _mm512_mask_storeu_pd(buf + j, live, VTERM(p, q, &t));       \
                fd_tally8(p, &sx, &nx);                                      \
                fd_tally8(q, &sy, &ny);                                      \
            }                                                                \
            total += fd_sum_f64(buf, len);                                   \
        }                                                                    \
        stats[0] = _mm512_reduce_add_pd(sx);                                 \
        stats[1] = _mm512_reduce_add_pd(sy);                                 \
        negatives[0] = nx;                                                   \
        negatives[1] = ny;                                                   \
        return total;                                                        \
    }

FD_CHECKED_TERMS8(fd_xlogy_checked8_f64, double, fd_load8_f64, fd_xlogy8)
FD_CHECKED_TERMS8(fd_xlogy_checked8_f32, float, fd_load8_f32, fd_xlogy8)
FD_CHECKED_TERMS8(fd_rel_entr_checked8_f64, double, fd_load8_f64, fd_rel_entr8)
FD_CHECKED_TERMS8(fd_rel_entr_checked8_f32, float, fd_load8_f32, fd_rel_entr8)
FD_CHECKED_TERMS8(fd_js_checked8_f64, double, fd_load8_f64, fd_js8)
FD_CHECKED_TERMS8(fd_js_checked8_f32, float, fd_load8_f32, fd_js8)

#undef FD_CHECKED_TERMS8

/* sum x log x with the check of x: fd_xlogy_checked8 of (x, x) with one
 * load, sum and count per entry instead of two (entropy). */
#define FD_SELF_CHECKED8(NAME, TX, LOAD8)                                    \
    FD_T512 static double NAME(const TX *x, ptrdiff_t n, double *sum,        \
                               long long *negatives) {                       \
        fd_log8_tables t = fd_log8_load();                                   \
        double buf[FD_CHUNK];                                                \
        double total = 0.0;                                                  \
        __m512d sx = _mm512_setzero_pd();                                    \
        long long nx = 0;                                                    \
        for (ptrdiff_t j0 = 0; j0 < n; j0 += FD_CHUNK) {                     \
            ptrdiff_t len = n - j0 < FD_CHUNK ? n - j0 : FD_CHUNK;           \
            for (ptrdiff_t j = 0; j < len; j += 8) {                         \
                __mmask8 live = fd_lanes8(j, len);                           \
                FD_PREFETCH(x + j0 + j);                                     \
                __m512d p = LOAD8(x + j0 + j, live);                         \
                _mm512_mask_storeu_pd(buf + j, live, fd_xlogy8(p, p, &t));   \
                fd_tally8(p, &sx, &nx);                                      \
            }                                                                \
            total += fd_sum_f64(buf, len);                                   \
        }                                                                    \
        *sum = _mm512_reduce_add_pd(sx);                                     \
        *negatives = nx;                                                     \
        return total;                                                        \
    }

FD_SELF_CHECKED8(fd_xlogx_checked8_f64, double, fd_load8_f64)
FD_SELF_CHECKED8(fd_xlogx_checked8_f32, float, fd_load8_f32)

#undef FD_SELF_CHECKED8
#undef FD_PREFETCH

/* FD_IF_LOG8(CALL) stmt: CALL where fd_log8 runs, stmt otherwise. */
#define FD_IF_LOG8(CALL)                                                     \
    if (fd_use_log8)                                                         \
        CALL;                                                                \
    else
#else
#define FD_IF_LOG8(CALL)
#endif

/* One sum of terms in double over two rows x, y of TX. Per entry, xf and
 * yf are the entries, p and q the same widened to double, and lq = LOGQ a
 * logarithm, computed unconditionally (a select afterwards, never a
 * branch around a call) so that the loop vectorises; TERM may use them
 * all. The terms of a chunk go through buf and fd_sum_f64; where fd_log8
 * runs, TERMS8 computes them instead. */
#define FD_TERM_SUM(NAME, TX, LOGQ, TERM, TERMS8)                            \
    static FD_HOT double NAME(const TX *x, const TX *y, ptrdiff_t n) {       \
        double buf[FD_CHUNK];                                                \
        double total = 0.0;                                                  \
        for (ptrdiff_t j0 = 0; j0 < n; j0 += FD_CHUNK) {                     \
            ptrdiff_t len = n - j0 < FD_CHUNK ? n - j0 : FD_CHUNK;           \
            FD_IF_LOG8(TERMS8(x + j0, y + j0, len, buf))                     \
            for (ptrdiff_t j = 0; j < len; j++) {                            \
                TX xf = x[j0 + j], yf = y[j0 + j];                           \
                double p = (double)xf, q = (double)yf;                       \
                double lq = LOGQ;                                            \
                (void)yf;                                                    \
                (void)q;                                                     \
                (void)q;                                                     \
                (void)lq;                                                    \
                buf[j] = TERM;                                               \
            }                                                                \
            total += fd_sum_f64(buf, len);                                   \
        }                                                                    \
        return total;                                                        \
    }

/* sum_j x_j log y_j, 0 where x_j == 0 (entropy: -fd_xlogy_sum(p, p);
 * cross-entropy: -fd_xlogy_sum(p, q)). */
FD_TERM_SUM(fd_xlogy_sum_f64, double, log(q), p == 0.0 ? 0.0 : p * lq,
            fd_xlogy_terms8_f64)

/* The float32 twin takes log y_j in float (logf, 16 lanes where log has
 * 8: 2.3x faster on a core). The exception to widening above: the terms
 * of entropy and cross-entropy all have one sign (log y <= 0 for y <= 1),
 * so the sum keeps each term's relative error of an ulp of float; nothing
 * cancels. Where fd_log8 runs, the log is taken in double after all: as
 * fast as logf there, and exact to double. */
FD_TERM_SUM(fd_xlogy_sum_f32, float, (double)logf(yf),
            p == 0.0 ? 0.0 : p * lq, fd_xlogy_terms8_f32)

/* sum_j p_j log(p_j / q_j), 0 where p_j == 0, +inf where p_j > 0 = q_j:
 * KL(p || q). Called with x = p, y = q. */
FD_TERM_SUM(fd_rel_entr_sum_f64, double, log(p / q), p == 0.0 ? 0.0 : p * lq,
            fd_rel_entr_terms8_f64)
FD_TERM_SUM(fd_rel_entr_sum_f32, float, log(p / q), p == 0.0 ? 0.0 : p * lq,
            fd_rel_entr_terms8_f32)

/* One entry of twice JS(p, q): p log(2p / s) + q log(2q / s), s = p + q.
 *
 * With d = (p - q) / s, 2p / s = 1 + d and 2q / s = 1 - d, and the term is
 * (s / 2) ((1 + d) log(1 + d) + (1 - d) log(1 - d))
 *   = (s / 2) sum_{n >= 1} d^(2n) / (n (2n - 1)).
 * For near-identical entries the two logs are +-d and cancel to d^2: each
 * keeps an error of an ulp of d, so the difference would be off by about
 * eps / d^2 relative (1e-4 at d = 1e-6). Up to |d| = 1/16 the series is
 * used instead (six terms leave under 4e-17 relative); beyond, the logs
 * lose at most eps / d. A weight of exactly 0 contributes 0 (so p = q = 0,
 * where d is NaN, gives 0), p == q gives d = 0 and exactly 0, and NaN
 * stays NaN. Both forms are computed and one is selected, so the loop
 * vectorises. The reference and the Numba kernel compute the same. */
static inline double fd_js_term(double p, double q) {
    double s = p + q;
    double d = (p - q) / s;
    /* Where q < 2^-54 s, d rounds to 1 and 1 - d to 0 although 2q / s is
     * not: the log is taken of 2q / s then (of 2p / s where d is -1). */
    double ap = d != -1.0 ? 1.0 + d : (p + p) / s;
    double aq = d != 1.0 ? 1.0 - d : (q + q) / s;
    double lp = log(ap), lq = log(aq);
    double t_log = (p == 0.0 ? 0.0 : p * lp) + (q == 0.0 ? 0.0 : q * lq);
    double z = d * d;
    double series =
        1.0 + z * (1.0 / 6 + z * (1.0 / 15 + z * (1.0 / 28 + z * (1.0 / 45 +
                                                        z * (1.0 / 66)))));
    return fabs(d) <= FD_JS_NEAR ? (0.5 * s) * (z * series) : t_log;
}

/* Twice JS(p, q), the sum of fd_js_term; not clamped at 0 (the caller
 * does). */
FD_TERM_SUM(fd_js_sum_f64, double, 0.0, fd_js_term(p, q), fd_js_terms8_f64)
FD_TERM_SUM(fd_js_sum_f32, float, 0.0, fd_js_term(p, q), fd_js_terms8_f32)

#undef FD_TERM_SUM

/* ------------------------------------------------------------------------
 * Divergence sums with the probability checks of both rows in the same
 * pass, the check of each entry done while it is in a register: a check
 * pass of its own cost about 0.35 ns per entry and row on a core here,
 * against 2-3.5 ns for the whole term. Where fd_log8 runs, CHECKED8 (see
 * FD_CHECKED_TERMS8) does the row; otherwise each chunk's entries, widened
 * to double in the term loop, are summed by fd_sum_f64: for rows of up to
 * FD_CHUNK entries in the order of fd_check_row over the row, beyond it
 * chunk by chunk. stats gets the sums of x and y, negatives the counts of
 * their entries < 0. LOGQ and TERM are those of FD_TERM_SUM, so the terms
 * are the unchecked sums', bit for bit.
 * ---------------------------------------------------------------------- */
#define FD_CHECKED_SUM(NAME, TX, LOGQ, TERM, CHECKED8)                       \
    static FD_HOT double NAME(const TX *x, const TX *y, ptrdiff_t n,         \
                              double *stats, long long *negatives) {         \
        FD_IF_LOG8(return CHECKED8(x, y, n, stats, negatives)) {             \
            double buf[FD_CHUNK], bx[FD_CHUNK], by[FD_CHUNK];                \
            double total = 0.0, sx = 0.0, sy = 0.0;                          \
            long long nx = 0, ny = 0;                                        \
            for (ptrdiff_t j0 = 0; j0 < n; j0 += FD_CHUNK) {                 \
                ptrdiff_t len = n - j0 < FD_CHUNK ? n - j0 : FD_CHUNK;       \
                const TX *xs = x + j0, *ys = y + j0;                         \
                for (ptrdiff_t j = 0; j < len; j++) {                        \
                    TX xf = xs[j], yf = ys[j];                               \
                    double p = (double)xf, q = (double)yf;                   \
                    double lq = LOGQ;                                        \
                    (void)yf;                                                \
                    (void)q;                                                 \
                    (void)lq;                                                \
                    bx[j] = p;                                               \
                    by[j] = q;                                               \
                    buf[j] = TERM;                                           \
                }                                                            \
                for (ptrdiff_t j = 0; j < len; j++) {                        \
                    nx += xs[j] < 0;                                         \
                    ny += ys[j] < 0;                                         \
                }                                                            \
                total += fd_sum_f64(buf, len);                               \
                sx += fd_sum_f64(bx, len);                                   \
                sy += fd_sum_f64(by, len);                                   \
            }                                                                \
            stats[0] = sx;                                                   \
            stats[1] = sy;                                                   \
            negatives[0] = nx;                                               \
            negatives[1] = ny;                                               \
            return total;                                                    \
        }                                                                    \
    }

/* The sums of FD_TERM_SUM above with the checks. */
FD_CHECKED_SUM(fd_xlogy_sum_checked_f64, double, log(q),
               p == 0.0 ? 0.0 : p * lq, fd_xlogy_checked8_f64)
FD_CHECKED_SUM(fd_xlogy_sum_checked_f32, float, (double)logf(yf),
               p == 0.0 ? 0.0 : p * lq, fd_xlogy_checked8_f32)
FD_CHECKED_SUM(fd_rel_entr_sum_checked_f64, double, log(p / q),
               p == 0.0 ? 0.0 : p * lq, fd_rel_entr_checked8_f64)
FD_CHECKED_SUM(fd_rel_entr_sum_checked_f32, float, log(p / q),
               p == 0.0 ? 0.0 : p * lq, fd_rel_entr_checked8_f32)
FD_CHECKED_SUM(fd_js_sum_checked_f64, double, 0.0, fd_js_term(p, q),
               fd_js_checked8_f64)
FD_CHECKED_SUM(fd_js_sum_checked_f32, float, 0.0, fd_js_term(p, q),
               fd_js_checked8_f32)

#undef FD_CHECKED_SUM

/* sum_j x_j log x_j with the check of x (entropy: minus this); the sum of
 * x in *sum, its negative entries counted in *negatives. The same value
 * as fd_xlogy_sum_checked of (x, x), bit for bit. */
#define FD_XLOGX_SUM_CHECKED(NAME, TX, XLOGY, SELF8)                         \
    static inline double NAME(const TX *x, ptrdiff_t n, double *sum,         \
                              long long *negatives) {                        \
        double stats[2];                                                     \
        long long counts[2];                                                 \
        double total;                                                        \
        FD_IF_LOG8(return SELF8(x, n, sum, negatives))                       \
        total = XLOGY(x, x, n, stats, counts);                               \
        *sum = stats[0];                                                     \
        *negatives = counts[0];                                              \
        return total;                                                        \
    }

FD_XLOGX_SUM_CHECKED(fd_xlogx_sum_checked_f64, double,
                     fd_xlogy_sum_checked_f64, fd_xlogx_checked8_f64)
FD_XLOGX_SUM_CHECKED(fd_xlogx_sum_checked_f32, float,
                     fd_xlogy_sum_checked_f32, fd_xlogx_checked8_f32)

#undef FD_XLOGX_SUM_CHECKED

#endif /* FASTDIV_MATH_H */
