/*
 * fastdiv_log8.h: an AVX-512 log of eight doubles, inline, for the loops
 * whose speed is that of their logs: the pairwise JS kernel (one log per
 * (i, j, category) triple) and the divergence term sums of fastdiv_math.h.
 *
 * Why not libmvec's _ZGVeN8v_log: it is a call (every zmm register is
 * clobbered, so the loop's constants are reloaded around it) and it checks
 * for special inputs. The inline version made the JS inner loop 1.6-2.0x
 * faster on a core of the project's Xeon (0.67-0.84 against 1.17-1.44 ns
 * per triple in a C micro-benchmark of the loop, 256 lanes; 1.4 -> 0.9 ns
 * per triple for a whole pairwise call on a core). On the AMD EPYC (Zen 4)
 * the whole call went from 1.39-1.44 to 0.82-0.88 ns per triple on a core
 * (use_log8(False) against True, float64, rows of 32, 256 and 10_000).
 *
 * The method, for x = 2**e * m with m in [0.75, 1.5):
 *
 *     log x = e log 2 + log c + log1p(r),   r = m / c - 1,
 *
 * - vgetexppd and vgetmantpd give e and m, subnormals included (they are
 *   normalised), with m in [0.75, 1.5) and e raised by one where the
 *   mantissa was halved into [0.75, 1);
 * - c is the centre of one of 16 intervals of m, picked by the top four
 *   bits of the significand of u = m + 1/32 (rounding there only moves a
 *   boundary by an ulp): 9 intervals of width 1/16 centred on 1, 1 + 1/16,
 *   ..., 1.5 (u >= 1, the last cut at m = 1.5) and 7 of width 1/32 below
 *   (u < 1, whose significands start with 1001 to 1111, so the two sets of
 *   indices do not meet). 1/c and log c come from two in-register tables
 *   through vpermt2pd, and |r| <= 1/32;
 * - around 1 (m in [31/32, 33/32)) c = 1: r = m - 1 exactly, log c = 0,
 *   and the result keeps its relative accuracy however close x is to 1;
 * - elsewhere r = fma(m, 1/c, -1) with 1/c rounded to double, and log c is
 *   the log of that rounded reciprocal, so no error of 1/c enters;
 * - log1p(r) = r + r**2 P(r), P of degree 7 interpolating
 *   (log1p(r) - r) / r**2 at the Chebyshev nodes of [-1/32, 1/32]: within
 *   2.3e-17 of log1p(r), relatively.
 *
 * Accuracy (tests/test_kernel_log.py, against a long double log): within
 * 2 ulp everywhere, subnormals included (the 2 ulp where log c and r have
 * opposite signs, around x = 1.03); log 0 = -inf, log inf = inf, and NaN
 * and x < 0 give NaN.
 *
 * The tables and coefficients were computed with mpmath at 60 digits:
 * c_t = 1 + t / 16 for t <= 8 and 1/2 + (t - 1/2) / 32 for t > 8,
 * FD_INVC[t] = 1 / c_t rounded to double (1 exactly for t = 0),
 * FD_LOGC[t] = -log(FD_INVC[t]) rounded to double.
 *
 * Only GCC or clang on x86-64 compile it (FD_LOG8 is 1). fd_log8_init(),
 * called by each module at import, sets fd_use_log8 when the CPU has
 * AVX-512F; the callers fall back to libmvec or libm otherwise.
 */
#ifndef FASTDIV_LOG8_H
#define FASTDIV_LOG8_H

#if defined(__GNUC__) && defined(__x86_64__)
#define FD_LOG8 1
#include <immintrin.h>

#define FD_T512 __attribute__((target("avx512f"), unused))

static const double FD_INVC[16] = {
    0x1.0000000000000p+0, 0x1.e1e1e1e1e1e1ep-1, 0x1.c71c71c71c71cp-1,
    0x1.af286bca1af28p-1, 0x1.999999999999ap-1, 0x1.8618618618618p-1,
    0x1.745d1745d1746p-1, 0x1.642c8590b2164p-1, 0x1.5555555555555p-1,
    0x1.4e5e0a72f0539p+0, 0x1.4141414141414p+0, 0x1.3521cfb2b78c1p+0,
    0x1.29e4129e4129ep+0, 0x1.1f7047dc11f70p+0, 0x1.15b1e5f75270dp+0,
    0x1.0c9714fbcda3bp+0};

static const double FD_LOGC[16] = {
    0x0.0p+0,              0x1.f0a30c01162a8p-5,  0x1.e27076e2af2eap-4,
    0x1.5ff3070a793d6p-3,  0x1.c8ff7c79a9a20p-3,  0x1.1675cababa60fp-2,
    0x1.4618bc21c5ec2p-2,  0x1.739d7f6bbd007p-2,  0x1.9f323ecbf984dp-2,
    -0x1.1178e8227e47ap-2, -0x1.d1037f2655e7bp-3, -0x1.823c16551a3c0p-3,
    -0x1.365fcb0159014p-3, -0x1.da7276384469ep-4, -0x1.4d3115d207eacp-4,
    -0x1.894aa149fb34bp-5};

/* The two tables, each in two registers (entries 0-7 and 8-15). */
typedef struct {
    __m512d invc_lo, invc_hi, logc_lo, logc_hi;
} fd_log8_tables;

FD_T512 static inline fd_log8_tables fd_log8_load(void) {
    fd_log8_tables t;
    t.invc_lo = _mm512_loadu_pd(FD_INVC);
    t.invc_hi = _mm512_loadu_pd(FD_INVC + 8);
    t.logc_lo = _mm512_loadu_pd(FD_LOGC);
    t.logc_hi = _mm512_loadu_pd(FD_LOGC + 8);
    return t;
}

FD_T512 static inline __m512d fd_log8(__m512d x, const fd_log8_tables *t) {
    __m512d e = _mm512_getexp_pd(x);
    /* _MM_MANT_SIGN_nan: a negative x gives a NaN mantissa, so log NaN. */
    __m512d m = _mm512_getmant_pd(x, _MM_MANT_NORM_p75_1p5, _MM_MANT_SIGN_nan);
    __mmask8 halved = _mm512_cmp_pd_mask(m, _mm512_set1_pd(1.0), _CMP_LT_OQ);
    e = _mm512_mask_add_pd(e, halved, e, _mm512_set1_pd(1.0));
    /* vpermt2pd reads the low four bits of each index: bits 48-51 of u,
     * the top of its significand. */
    __m512d u = _mm512_add_pd(m, _mm512_set1_pd(0.03125));
    __m512i idx = _mm512_srli_epi64(_mm512_castpd_si512(u), 48);
    __m512d invc = _mm512_permutex2var_pd(t->invc_lo, idx, t->invc_hi);
    __m512d logc = _mm512_permutex2var_pd(t->logc_lo, idx, t->logc_hi);
    __m512d r = _mm512_fmadd_pd(m, invc, _mm512_set1_pd(-1.0));
    __m512d p = _mm512_set1_pd(0x1.c7d6d68803094p-4);
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(-0x1.006683c32b3adp-3));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0x1.24923a9363f54p-3));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(-0x1.5555454f53a61p-3));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0x1.9999999a5415cp-3));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(-0x1.0000000066907p-2));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0x1.555555555554ap-2));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(-0x1.ffffffffffff3p-2));
    /* log 2 = LN2_HI + LN2_LO; the small parts are added first. */
    __m512d lo = _mm512_fmadd_pd(_mm512_mul_pd(r, r), p,
                                 _mm512_mul_pd(e, _mm512_set1_pd(0x1.abc9e3b39803fp-56)));
    __m512d hi = _mm512_fmadd_pd(e, _mm512_set1_pd(0x1.62e42fefa39efp-1), logc);
    return _mm512_add_pd(hi, _mm512_add_pd(r, lo));
}

/* The lanes j0, ..., j0 + 7 of a row of n entries that exist. */
FD_T512 static inline __mmask8 fd_lanes8(ptrdiff_t j0, ptrdiff_t n) {
    return n - j0 >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << (n - j0)) - 1u);
}

/* Eight entries of a row as doubles, 0 in the lanes that do not exist.
 *
 * A masked load only where a lane is missing (the tail of a row): on this
 * Intel Xeon, rows read with masked loads alone ran at memory's pace far
 * below its bandwidth, as if the prefetchers did not follow them. Entropy
 * of (1_000_000, 100) on a core: 2.37 -> 0.77 ns per entry in float32,
 * 2.38 -> 0.96 in float64; KL 2.42 -> 0.94; rows that fit in cache were
 * 0.88 -> 0.74. */
FD_T512 static inline __m512d fd_load8_f64(const double *x, __mmask8 live) {
    if (live == 0xFF)
        return _mm512_loadu_pd(x);
    return _mm512_maskz_loadu_pd(live, x);
}

FD_T512 static inline __m512d fd_load8_f32(const float *x, __mmask8 live) {
    if (live == 0xFF)
        return _mm512_cvtps_pd(_mm256_loadu_ps(x));
    __m512 v = _mm512_maskz_loadu_ps((__mmask16)live, x);
    return _mm512_cvtps_pd(_mm512_castps512_ps256(v));
}

/* out[j] = log(x[j]) for j < n. */
FD_T512 static void fd_log8_array(const double *x, ptrdiff_t n, double *out) {
    fd_log8_tables t = fd_log8_load();
    for (ptrdiff_t j = 0; j < n; j += 8) {
        __mmask8 live = fd_lanes8(j, n);
        _mm512_mask_storeu_pd(out + j, live, fd_log8(fd_load8_f64(x + j, live), &t));
    }
}

/* Set by fd_log8_init: whether the fd_log8 paths run on this CPU. */
static int fd_use_log8 = 0;

/* Turn the fd_log8 paths on (where the CPU has AVX-512F) or off; the
 * tests turn them off to check the fallback on a CPU that has it. */
__attribute__((unused)) static void fd_log8_enable(int on) {
    fd_use_log8 = on && __builtin_cpu_supports("avx512f") != 0;
}
#else
#define FD_LOG8 0
static const int fd_use_log8 = 0;
__attribute__((unused)) static void fd_log8_enable(int on) { (void)on; }
#endif

__attribute__((unused)) static void fd_log8_init(void) { fd_log8_enable(1); }

#endif /* FASTDIV_LOG8_H */
