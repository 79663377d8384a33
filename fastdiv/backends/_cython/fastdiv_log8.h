/*
 * fastdiv_log8.h: an AVX-512 log of eight doubles for the pairwise JS
 * kernel, whose speed is the speed of one log per (i, j, category) triple.
 *
 * Why not libmvec's _ZGVeN8v_log: it is a call (every zmm register is
 * clobbered, so the loop's constants are reloaded around it) and it checks
 * for special inputs; the inline version below made the JS inner loop
 * 1.7-2.0x faster on a core of the project's Xeon (0.67-0.84 against
 * 1.21-1.44 ns per triple in a C micro-benchmark of the loop, 256 lanes;
 * 1.4 -> 0.9 ns per triple for a whole pairwise call on a core).
 *
 * The method, for x = 2**e * m with m in [0.75, 1.5):
 *
 *     log x = e log 2 + log c + log1p(r),   r = m / c - 1,
 *
 * - vgetexppd and vgetmantpd give e and m, subnormals included (they are
 *   normalised), with m in [0.75, 1.5) and e raised by one where the
 *   mantissa was halved into [0.75, 1);
 * - c is the middle of one of 16 intervals of m picked by the top four bits
 *   of m's significand (8 of width 1/16 over [1, 1.5), 8 of width 1/32 over
 *   [0.75, 1)); 1/c and log c come from two in-register tables through
 *   vpermt2pd, so |r| < 0.0304;
 * - r = fma(m, 1/c, -1) with 1/c rounded to double, and log c is the log
 *   of that rounded reciprocal, so no error of 1/c enters the sum;
 * - log1p(r) = r + r**2 P(r), P of degree 7 interpolating
 *   (log1p(r) - r) / r**2 at the Chebyshev nodes of [-0.0304, 0.0304]:
 *   at most 5.3e-19 from log1p(r).
 *
 * Accuracy (tests/test_kernel_log.py): within 1 ulp of the correctly
 * rounded log where |log x| > 0.04, and within 8.9e-18 (1.3 ulp of 0.04)
 * absolutely where |log x| <= 0.04 (log c and r nearly cancel there, so
 * the relative error grows near x = 1). The JS terms p (log 2p - log(p + q)) need the log to
 * an absolute, not relative, accuracy, so this is enough there; it is not
 * a general-purpose log. log 0 = -inf, log inf = inf, NaN and x < 0 give
 * NaN.
 *
 * The tables were computed with mpmath at 60 digits: c_t = 1 + (t + 1/2) /
 * 16 for t < 8 and 1/2 + (t + 1/2) / 32 for t >= 8, INVC[t] = 1 / c_t
 * rounded to double, LOGC[t] = -log(INVC[t]) rounded to double; the
 * coefficients of P likewise (lowest degree first).
 *
 * Only GCC or clang on x86-64 compile it (FDP_LOG8 is 1); fdp_log8_usable()
 * tells at run time whether the CPU has AVX-512F.
 */
#ifndef FASTDIV_LOG8_H
#define FASTDIV_LOG8_H

#if defined(__GNUC__) && defined(__x86_64__)
#define FDP_LOG8 1
#include <immintrin.h>

#define FDP_T512 __attribute__((target("avx512f")))

static const double FDP_INVC[16] = {
    0x1.f07c1f07c1f08p-1, 0x1.d41d41d41d41dp-1, 0x1.bacf914c1bad0p-1,
    0x1.a41a41a41a41ap-1, 0x1.8f9c18f9c18fap-1, 0x1.7d05f417d05f4p-1,
    0x1.6c16c16c16c17p-1, 0x1.5c9882b931057p-1, 0x1.4e5e0a72f0539p+0,
    0x1.4141414141414p+0, 0x1.3521cfb2b78c1p+0, 0x1.29e4129e4129ep+0,
    0x1.1f7047dc11f70p+0, 0x1.15b1e5f75270dp+0, 0x1.0c9714fbcda3bp+0,
    0x1.0410410410410p+0};

static const double FDP_LOGC[16] = {
    0x1.f829b0e7832f8p-6,  0x1.6f0d28ae56b4ep-4,  0x1.29552f81ff521p-3,
    0x1.9525a9cf456b6p-3,  0x1.fb9186d5e3e29p-3,  0x1.2e8e2bae11d31p-2,
    0x1.5d1bdbf5809cap-2,  0x1.89a3386c1425bp-2,  -0x1.1178e8227e47ap-2,
    -0x1.d1037f2655e7bp-3, -0x1.823c16551a3c0p-3, -0x1.365fcb0159014p-3,
    -0x1.da7276384469ep-4, -0x1.4d3115d207eacp-4, -0x1.894aa149fb34bp-5,
    -0x1.0205658935837p-6};

/* The two tables, each in two registers (entries 0-7 and 8-15). */
typedef struct {
    __m512d invc_lo, invc_hi, logc_lo, logc_hi;
} fdp_log8_tables;

FDP_T512 static inline fdp_log8_tables fdp_log8_load(void) {
    fdp_log8_tables t;
    t.invc_lo = _mm512_loadu_pd(FDP_INVC);
    t.invc_hi = _mm512_loadu_pd(FDP_INVC + 8);
    t.logc_lo = _mm512_loadu_pd(FDP_LOGC);
    t.logc_hi = _mm512_loadu_pd(FDP_LOGC + 8);
    return t;
}

FDP_T512 static inline __m512d fdp_log8(__m512d x, const fdp_log8_tables *t) {
    __m512d e = _mm512_getexp_pd(x);
    /* _MM_MANT_SIGN_nan: a negative x gives a NaN mantissa, so log NaN. */
    __m512d m = _mm512_getmant_pd(x, _MM_MANT_NORM_p75_1p5, _MM_MANT_SIGN_nan);
    __mmask8 halved = _mm512_cmp_pd_mask(m, _mm512_set1_pd(1.0), _CMP_LT_OQ);
    e = _mm512_mask_add_pd(e, halved, e, _mm512_set1_pd(1.0));
    /* vpermt2pd reads the low four bits of each index: bits 48-51 of m,
     * the top of its significand. */
    __m512i idx = _mm512_srli_epi64(_mm512_castpd_si512(m), 48);
    __m512d invc = _mm512_permutex2var_pd(t->invc_lo, idx, t->invc_hi);
    __m512d logc = _mm512_permutex2var_pd(t->logc_lo, idx, t->logc_hi);
    __m512d r = _mm512_fmadd_pd(m, invc, _mm512_set1_pd(-1.0));
    __m512d p = _mm512_set1_pd(0x1.c7cc0d403664bp-4);
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(-0x1.0060951be1d25p-3));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0x1.24923c365a8e6p-3));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(-0x1.5555471c2bd4dp-3));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0x1.9999999a35905p-3));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(-0x1.0000000055c73p-2));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0x1.555555555554cp-2));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(-0x1.ffffffffffff6p-2));
    /* log 2 = LN2_HI + LN2_LO; the small parts are added first. */
    __m512d lo = _mm512_fmadd_pd(_mm512_mul_pd(r, r), p,
                                 _mm512_mul_pd(e, _mm512_set1_pd(0x1.abc9e3b39803fp-56)));
    __m512d hi = _mm512_fmadd_pd(e, _mm512_set1_pd(0x1.62e42fefa39efp-1), logc);
    return _mm512_add_pd(hi, _mm512_add_pd(r, lo));
}

/* out[j] = log(x[j]) for j < n, n a multiple of 8 (the accuracy tests). */
FDP_T512 static void fdp_log8_array(const double *x, ptrdiff_t n, double *out) {
    fdp_log8_tables t = fdp_log8_load();
    for (ptrdiff_t j = 0; j < n; j += 8)
        _mm512_storeu_pd(out + j, fdp_log8(_mm512_loadu_pd(x + j), &t));
}

static inline int fdp_log8_usable(void) {
    return __builtin_cpu_supports("avx512f");
}
#else
#define FDP_LOG8 0
static inline int fdp_log8_usable(void) { return 0; }
#endif

#endif /* FASTDIV_LOG8_H */
