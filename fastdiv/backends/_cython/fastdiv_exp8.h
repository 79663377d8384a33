/*
 * fastdiv_exp8.h: inline AVX-512 exps of eight doubles (fd_exp8) and of
 * sixteen floats (fd_exp16), for the exp passes of the softmax kernels.
 *
 * Why not libmvec's _ZGVeN8v_exp and _ZGVeN16v_expf: each is a call, so
 * every zmm register is clobbered and the loop reloads its constants around
 * it, and both check for special inputs on the way. On a core of the
 * project's AMD EPYC (Zen 5), in a C micro-benchmark of the exp pass of
 * fd_exp_shift_sum over rows in cache (4096 and 100_000 entries), the
 * float64 pass took 0.40 instead of 0.72 ns per entry, the float32 one
 * (shift formed in float, see fd_exps_f32_exact) 0.29 instead of 0.37.
 *
 * The method, the one of numba_math.exp_f64 and exp_f32, so that both
 * compiled backends take the same polynomials:
 *
 *     exp x = 2**n exp(r),   n = round(x / ln 2),   r = x - n ln 2,
 *
 * - x is clamped to [-746, 710] (float: at most 89; the float callers have
 *   clamped below already) with vminpd/vmaxpd ordered so that a NaN
 *   passes through (they return their second operand when either is NaN);
 *   exp of the clamped ends is 0 and +inf, as for anything beyond them;
 * - n comes from vrndscale, r from two fused steps with ln 2 split in a
 *   high part (n times it is exact) and a low one, so |r| <= ln 2 / 2 with
 *   an error far below an ulp of exp(r);
 * - exp(r) = 1 + (r + r**2 P(r)), P of degree 9 in double and 4 in float
 *   (the coefficients of numba_math);
 * - vscalefpd/ps multiplies by 2**n in one rounding: it overflows to +inf
 *   and underflows gradually to subnormals and 0 on its own, which no
 *   power of two built from the exponent bits does for every n.
 *
 * Accuracy (tests/test_kernel_exp.py, against a long double exp): double
 * within 1.07 ulp over [-708, 709.78] (glibc's exp: 0.51), float within
 * 1.07 ulp (glibc's expf: 0.50); results in the subnormal range within an
 * ulp of their spacing; exp(NaN) = NaN, exp(+inf) = +inf, exp(-inf) = 0.
 *
 * Only GCC or clang on x86-64 compile it (FD_LOG8 of fastdiv_log8.h is 1).
 * fd_exp8_init(), called by each module that uses the exp passes at
 * import, sets fd_use_exp8 when the CPU has AVX-512F; fastdiv_math.h falls
 * back to libmvec or libm otherwise.
 */
#ifndef FASTDIV_EXP8_H
#define FASTDIV_EXP8_H

#include <stddef.h>

#include "fastdiv_log8.h"

#if FD_LOG8

FD_T512 static inline __m512d fd_exp8(__m512d x) {
    x = _mm512_min_pd(_mm512_set1_pd(710.0), x);
    x = _mm512_max_pd(_mm512_set1_pd(-746.0), x);
    __m512d n = _mm512_roundscale_pd(
        _mm512_mul_pd(x, _mm512_set1_pd(0x1.71547652b82fep+0)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512d r = _mm512_fnmadd_pd(n, _mm512_set1_pd(0x1.62e42fefa39efp-1), x);
    r = _mm512_fnmadd_pd(n, _mm512_set1_pd(0x1.abc9e3b39803fp-56), r);
    __m512d p = _mm512_fmadd_pd(r, _mm512_set1_pd(0x1.af6339bf6e0c8p-26),
                                _mm512_set1_pd(0x1.28918ee3d4a72p-22));
    p = _mm512_fmadd_pd(r, p, _mm512_set1_pd(0x1.71ddf6abfcf99p-19));
    p = _mm512_fmadd_pd(r, p, _mm512_set1_pd(0x1.a019b90516c06p-16));
    p = _mm512_fmadd_pd(r, p, _mm512_set1_pd(0x1.a01a01b00f00ap-13));
    p = _mm512_fmadd_pd(r, p, _mm512_set1_pd(0x1.6c16c1788df49p-10));
    p = _mm512_fmadd_pd(r, p, _mm512_set1_pd(0x1.111111110f7fdp-7));
    p = _mm512_fmadd_pd(r, p, _mm512_set1_pd(0x1.5555555553d5dp-5));
    p = _mm512_fmadd_pd(r, p, _mm512_set1_pd(0x1.5555555555558p-3));
    p = _mm512_fmadd_pd(r, p, _mm512_set1_pd(0x1.0000000000001p-1));
    __m512d e = _mm512_add_pd(_mm512_set1_pd(1.0),
                              _mm512_fmadd_pd(_mm512_mul_pd(r, r), p, r));
    return _mm512_scalef_pd(e, n);
}

FD_T512 static inline __m512 fd_exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), x);
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
    __m512 n = _mm512_roundscale_ps(
        _mm512_mul_ps(x, _mm512_set1_ps(0x1.715476p+0f)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.62e430p-1f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-0x1.05c61p-29f), r);
    __m512 p = _mm512_fmadd_ps(r, _mm512_set1_ps(0x1.6d755ep-10f),
                               _mm512_set1_ps(0x1.120b8p-7f));
    p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(0x1.5554b8p-5f));
    p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(0x1.5554dcp-3f));
    p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(0.5f));
    __m512 e = _mm512_add_ps(_mm512_set1_ps(1.0f),
                             _mm512_fmadd_ps(_mm512_mul_ps(r, r), p, r));
    return _mm512_scalef_ps(e, n);
}

/* The lanes j0, ..., j0 + 15 of an array of n entries that exist. */
FD_T512 static inline __mmask16 fd_lanes16(ptrdiff_t j0, ptrdiff_t n) {
    return n - j0 >= 16 ? (__mmask16)0xFFFF
                        : (__mmask16)((1u << (n - j0)) - 1u);
}

/* Sixteen floats of an array (0 in the lanes that do not exist), and the
 * stores of eight doubles and sixteen floats to the lanes that do. Masked
 * only at an array's tail, as fd_load8_f64 (fastdiv_log8.h) has it for
 * loads: a masked access to every vector kept rows read from memory far
 * below bandwidth on the project's Intel Xeon. */
FD_T512 static inline __m512 fd_load16_f32(const float *x, __mmask16 live) {
    if (live == 0xFFFF)
        return _mm512_loadu_ps(x);
    return _mm512_maskz_loadu_ps(live, x);
}

FD_T512 static inline void fd_store8_f64(double *e, __mmask8 live, __m512d v) {
    if (live == 0xFF)
        _mm512_storeu_pd(e, v);
    else
        _mm512_mask_storeu_pd(e, live, v);
}

FD_T512 static inline void fd_store16_f32(float *e, __mmask16 live, __m512 v) {
    if (live == 0xFFFF)
        _mm512_storeu_ps(e, v);
    else
        _mm512_mask_storeu_ps(e, live, v);
}

/* e[j] = exp(s[j]) for j < n; e may be s. */
FD_T512 __attribute__((noinline)) static void
fd_exp8_array(const double *s, ptrdiff_t n, double *e) {
    for (ptrdiff_t j = 0; j < n; j += 8) {
        __mmask8 live = fd_lanes8(j, n);
        fd_store8_f64(e + j, live, fd_exp8(fd_load8_f64(s + j, live)));
    }
}

/* e[j] = exp(hi[j]) (1 + lo[j]) for j < n (e may be hi): the float exp of
 * an exponent held as the unevaluated sum hi + lo, |lo| < ulp(hi). */
FD_T512 __attribute__((noinline)) static void
fd_exp16_hilo_array(const float *hi, const float *lo, ptrdiff_t n, float *e) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (ptrdiff_t j = 0; j < n; j += 16) {
        __mmask16 live = fd_lanes16(j, n);
        __m512 h = fd_load16_f32(hi + j, live), l = fd_load16_f32(lo + j, live);
        fd_store16_f32(e + j, live,
                       _mm512_mul_ps(fd_exp16(h), _mm512_add_ps(one, l)));
    }
}

/* e[j] = exp(s_j) for j < n, s_j = (x_j - m) a - c (divide == 0) or
 * (x_j - m) / a - c, the double shift of fd_exp_shift_sum_f64 with the same
 * operations, and the exp in registers: one pass over the row that writes
 * e once, for softmax's exps into out (see fd_exp16_exact_array). */
FD_T512 __attribute__((noinline)) static void
fd_exp8_shift_array(const double *x, ptrdiff_t n, double m, double a,
                    double c, int divide, double *e) {
    const __m512d vm = _mm512_set1_pd(m), va = _mm512_set1_pd(a);
    const __m512d vc = _mm512_set1_pd(c);
    for (ptrdiff_t j = 0; j < n; j += 8) {
        __mmask8 live = fd_lanes8(j, n);
        __m512d d = _mm512_sub_pd(fd_load8_f64(x + j, live), vm);
        d = divide ? _mm512_div_pd(d, va) : _mm512_mul_pd(d, va);
        fd_store8_f64(e + j, live, fd_exp8(_mm512_sub_pd(d, vc)));
    }
}

/* e[j] = exp(s_j) for j < n, s_j = (x_j - m) a - c in float as the exact
 * sum hi + lo of fd_exps_f32_exact (fastdiv_math.h), with the same
 * operations (so the same hi and lo), and the exp in registers: one pass
 * over the whole row that writes e once, for softmax's exps into out.
 *
 * Through fd_exps_f32_exact's chunks of 512 (hi written to out, then the
 * exps over it, then the chunk's sum), float32 softmax took 0.55-0.59 ns
 * per entry on a core of the AMD EPYC at rows of 4000 to 100_000 (out
 * fresh from memory), against Numba's 0.43-0.46 for the same passes; this
 * way 0.46-0.50. Variants that wrote out once per chunk, from a buffer or
 * by the exps, were slower still (0.62-0.73). */
FD_T512 __attribute__((noinline)) static void
fd_exp16_exact_array(const float *x, ptrdiff_t n, float m, float a, float c,
                     float lim, float *e) {
    const __m512 va = _mm512_set1_ps(a), vlim = _mm512_set1_ps(lim);
    const __m512 one = _mm512_set1_ps(1.0f);
    const int scale_first = m == 0.0f;
    const __m512 v = _mm512_set1_ps(scale_first ? c : m);
    for (ptrdiff_t j = 0; j < n; j += 16) {
        __mmask16 live = fd_lanes16(j, n);
        __m512 u = fd_load16_f32(x + j, live);
        if (scale_first)
            u = _mm512_mul_ps(u, va);
        __m512 hi = _mm512_sub_ps(u, v);
        __m512 back = _mm512_sub_ps(hi, u);
        __m512 lo = _mm512_sub_ps(_mm512_sub_ps(u, _mm512_sub_ps(hi, back)),
                                  _mm512_add_ps(v, back));
        if (!scale_first) {
            hi = _mm512_mul_ps(hi, va);
            lo = _mm512_mul_ps(lo, va);
        }
        __mmask16 below = _mm512_cmp_ps_mask(hi, vlim, _CMP_LT_OQ);
        lo = _mm512_mask_blend_ps(below, lo, _mm512_setzero_ps());
        hi = _mm512_mask_blend_ps(below, hi, vlim);
        fd_store16_f32(e + j, live,
                       _mm512_mul_ps(fd_exp16(hi), _mm512_add_ps(one, lo)));
    }
}

/* Set by fd_exp8_init: whether fastdiv_math.h's exp passes use these. */
static int fd_use_exp8 = 0;

/* Turn the inline exps on (where the CPU has AVX-512F) or off; the tests
 * turn them off to check the fallback on a CPU that has it. */
__attribute__((unused)) static void fd_exp8_enable(int on) {
    fd_use_exp8 = on && __builtin_cpu_supports("avx512f") != 0;
}
#else
static const int fd_use_exp8 = 0;
__attribute__((unused)) static void fd_exp8_enable(int on) { (void)on; }
#endif

__attribute__((unused)) static void fd_exp8_init(void) { fd_exp8_enable(1); }

#endif /* FASTDIV_EXP8_H */
