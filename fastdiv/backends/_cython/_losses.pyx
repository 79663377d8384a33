# cython: language_level=3
"""Cython kernels for the losses on logits (twins of the "losses" section of
``reference.py``, same names and signatures), fused over float and double.

Each row is handled by one OpenMP thread (``prange`` over rows, static
schedule); no probability is ever stored in memory the caller sees. The
shifted, scaled logit s = z / T - max(z / T) is formed as in the softmax
section of ``reference.py``: divided first for T >= 1 (as a product with
1 / T, which cannot overflow there), subtracted first for T < 1. The row
maximum maps to exactly 0. With c entries whose exponential is 1 and r the
sum of the others, log sum exp(s) is log1p((c - 1) + r), exact even where r
is below the rounding of 1.

Fast path (every row whose maxima are finite): per row, a vectorised
maximum (``fd_max``), then one pass per softmax that writes e_j = exp(s_j)
into a per-thread scratch row in the logits' dtype (C helpers below, whose
loops GCC turns into libmvec vector calls; float logits get a float exp of
the double shift, to about 1 float ulp), the sums of those rows in double
in fixed vector lanes, and the gradient from the scratch rows: no
exponential is evaluated twice, and the logs are taken once per row.
distill_loss with labels costs three exponentials per entry, the least it
can.

Slow path (a row with a +inf or all -inf maximum, or a failed scratch
allocation): the scalar routines ``_*_row``, which recompute each
exponential and apply the rules of DESIGN.md for +inf, -inf and NaN (a
single +inf logit is the one-hot limit; two +inf or an all -inf row give a
NaN row). NaN inside an otherwise finite row propagates on the fast path.

Sums are double whatever the input dtype, and their order depends only on
the row length, so a row's result does not depend on the thread count.
"""

from cython.parallel cimport parallel, prange
from libc.math cimport INFINITY, NAN, exp, fabs, isfinite, log1p
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from fastdiv.backends._cython._math cimport fd_max_f32, fd_max_f64

cdef extern from * nogil:
    """
    /* Row helpers of the loss kernels, on top of fastdiv_math.h (included
     * before this block by the cimport above). FD_HOT compiles each of them
     * for AVX2 and for baseline x86-64; the exp calls in their loops become
     * libmvec vector calls; sums go through the header's fixed-lane helpers.
     *
     * The shift: s = (x - m) * a - c (divide == 0) or (x - m) / a - c
     * (divide != 0), in double, as in fd_exp_shift_sum_f64. T >= 1 is
     * m = 0, a = 1 / T, c = max / T; T < 1 is m = max, a = T, c = 0; the
     * hard term of distill_loss (T = 1) is m = max, a = 1, c = 0. */

    /* v where w != 0, else +0 (w = 0 with v = 0 * inf = NaN included): the
     * 0 log 0 = 0 rule. A bit mask rather than w != 0 ? v : 0, which GCC may
     * turn back into a product computed under a condition: that may trap, so
     * under the default -ftrapping-math the loop would not be vectorised. */
    static inline double fdl_keep(double w, double v) {
        long long bits;
        memcpy(&bits, &v, sizeof bits);
        bits &= -(long long)(w != 0.0);
        memcpy(&v, &bits, sizeof v);
        return v;
    }

    /* for j in [0, len): s = shift of xs[j]; BODY. The test of divide sits
     * outside the loop, so that no division is evaluated where it is not
     * wanted. */
    #define FDL_FOR_SHIFT(s, xs, len, m, a, c, divide, ...)                      \\
        if (divide) {                                                            \\
            for (ptrdiff_t j = 0; j < (len); j++) {                              \\
                double s = ((double)(xs)[j] - (m)) / (a) - (c);                  \\
                __VA_ARGS__                                                      \\
            }                                                                    \\
        } else {                                                                 \\
            for (ptrdiff_t j = 0; j < (len); j++) {                              \\
                double s = ((double)(xs)[j] - (m)) * (a) - (c);                  \\
                __VA_ARGS__                                                      \\
            }                                                                    \\
        }

    /* The exponential of a shift s <= 0 in the scratch type: double, or
     * float from fd_expf_of_double (about 1 float ulp at a third of the cost
     * of a double exp) for float input, whose loss and gradient are rounded
     * to float; the sums stay double either way. lim: see fd_expf_of_double
     * (as a constant it would stop the vectoriser). */
    /* (h, l) with h = fl(a - b) and h + l = a - b exactly (Knuth's two-sum;
     * -ffp-contract=off and no -ffast-math keep it exact). */
    #define FDL_TWO_DIFF(h, l, a, b)                                             \\
        do {                                                                     \\
            double fdl_a = (a), fdl_b = (b);                                     \\
            (h) = fdl_a - fdl_b;                                                 \\
            double fdl_z = (h) - fdl_a;                                          \\
            (l) = (fdl_a - ((h) - fdl_z)) - (fdl_b + fdl_z);                     \\
        } while (0)

    /* g(u) = (e^u - 1 - u) / u^2 for |u| <= 1: its Taylor polynomial to
     * u^16, coefficients 1 / (n + 2)! (the factorials are exact doubles, so
     * these are reference.EXPM1_RATIO_COEFFS bit for bit), by Horner. */
    #define FDL_EXPM1_RATIO(u)                                                   \\
        (((((((((((((((((1.0 / 6402373705728000.0) * (u) +                       \\
        1.0 / 355687428096000.0) * (u) + 1.0 / 20922789888000.0) * (u) +         \\
        1.0 / 1307674368000.0) * (u) + 1.0 / 87178291200.0) * (u) +              \\
        1.0 / 6227020800.0) * (u) + 1.0 / 479001600.0) * (u) +                   \\
        1.0 / 39916800.0) * (u) + 1.0 / 3628800.0) * (u) + 1.0 / 362880.0) *     \\
        (u) + 1.0 / 40320.0) * (u) + 1.0 / 5040.0) * (u) + 1.0 / 720.0) * (u) +  \\
        1.0 / 120.0) * (u) + 1.0 / 24.0) * (u) + 1.0 / 6.0) * (u) + 0.5)

    #define FDL_EXP_f64(s, lim) exp(s)
    #define FDL_EXP_f32(s, lim) fd_expf_of_double(s, lim)

    /* Each helper exists for TX = double (_f64) and float (_f32), the dtype
     * of the logits and of the scratch rows. */
    #define FDL_DEFINE(SFX, TX)                                                  \\
                                                                                 \\
    /* e_j = exp(s_j) into e[0..k); returns the sum of the e_j != 1 and sets     \\
     * *ones to how many are 1 (NaN lands in the returned sum). */               \\
    static FD_HOT double fdl_exp_rest_##SFX(const TX *x, ptrdiff_t k,            \\
                                            double m, double a, double c,        \\
                                            int divide, TX *e, double *ones) {   \\
        double lim = -160.0;                                                     \\
        FD_OPAQUE(lim);                                                          \\
        FDL_FOR_SHIFT(s, x, k, m, a, c, divide,                                  \\
                      e[j] = FDL_EXP_##SFX(s, lim);)                             \\
        *ones = 0.0;                                                             \\
        return fd_split_sum_##SFX(e, k, ones);                                   \\
    }                                                                            \\
                                                                                 \\
    /* The teacher's pass of distill_loss: as fdl_exp_rest for t (shift          \\
     * mt, a, ct), and *cross = sum_j e_j (s_j - u_j) over the e_j != 0, u_j     \\
     * the student's shift (ms, a, cs): the cross term of KL. A student logit    \\
     * of -inf under e_j > 0 makes it +inf. */                                   \\
    static FD_HOT double fdl_exp_rest_cross_##SFX(                               \\
        const TX *t, const TX *x, ptrdiff_t k, double mt, double ct, double ms,  \\
        double cs, double a, int divide, TX *e, double *ones, double *cross) {   \\
        double d[FD_CHUNK], rest = 0.0, lim = -160.0;                            \\
        FD_OPAQUE(lim);                                                          \\
        *ones = 0.0;                                                             \\
        *cross = 0.0;                                                            \\
        for (ptrdiff_t j0 = 0; j0 < k; j0 += FD_CHUNK) {                         \\
            ptrdiff_t len = k - j0 < FD_CHUNK ? k - j0 : FD_CHUNK;               \\
            const TX *ts = t + j0, *xs = x + j0;                                 \\
            TX *es = e + j0;                                                     \\
            if (divide) {                                                        \\
                for (ptrdiff_t j = 0; j < len; j++) {                            \\
                    double sa = ((double)ts[j] - mt) / a - ct;                   \\
                    double sb = ((double)xs[j] - ms) / a - cs;                   \\
                    TX ea = FDL_EXP_##SFX(sa, lim);                              \\
                    es[j] = ea;                                                  \\
                    d[j] = fdl_keep(ea, (double)ea * (sa - sb));                 \\
                }                                                                \\
            } else {                                                             \\
                for (ptrdiff_t j = 0; j < len; j++) {                            \\
                    double sa = ((double)ts[j] - mt) * a - ct;                   \\
                    double sb = ((double)xs[j] - ms) * a - cs;                   \\
                    TX ea = FDL_EXP_##SFX(sa, lim);                              \\
                    es[j] = ea;                                                  \\
                    d[j] = fdl_keep(ea, (double)ea * (sa - sb));                 \\
                }                                                                \\
            }                                                                    \\
            rest += fd_split_sum_##SFX(es, len, ones);                           \\
            *cross += fd_sum_f64(d, len);                                        \\
        }                                                                        \\
        return rest;                                                             \\
    }                                                                            \\
                                                                                 \\
    /* R = max - min of the gap (t_j - x_j) - top, NaN skipped (top = max t -   \\
     * max x). Its own pass, made only on the rows that need it, so that the     \\
     * exp loops stay as they were. */                                          \\
    static FD_HOT double fdl_gap_spread_##SFX(const TX *t, const TX *x,          \\
                                              ptrdiff_t k, double top) {         \\
        double up[FD_CHUNK], down[FD_CHUNK], hi = -HUGE_VAL, lo = -HUGE_VAL;     \\
        for (ptrdiff_t j0 = 0; j0 < k; j0 += FD_CHUNK) {                         \\
            ptrdiff_t len = k - j0 < FD_CHUNK ? k - j0 : FD_CHUNK;               \\
            for (ptrdiff_t j = 0; j < len; j++) {                                \\
                up[j] = ((double)t[j0 + j] - (double)x[j0 + j]) - top;           \\
                down[j] = -up[j];                                                \\
            }                                                                    \\
            double h = fd_max_f64(up, len), l = fd_max_f64(down, len);           \\
            hi = h > hi ? h : hi;                                                \\
            lo = l > lo ? l : lo;                                                \\
        }                                                                        \\
        return hi + lo;                                                          \\
    }                                                                            \\
                                                                                 \\
    /* The cancellation-free KL of distill_loss on a row whose gap spreads      \\
     * over R <= T (see reference.py, above expm1_ratio): D_j = (t_j - x_j) -    \\
     * (max t - max x) from exact pairs, C = E_q[D] with q = eb / total,         \\
     * v = (D - C) / R, u = lam v (lam = R / T). Returns E_q[v^2 h(u)], sets     \\
     * *big_w = E_q[v^2 g(u)], writes out_j = eb_j v_j h(u_j); entries with     \\
     * eb_j = 0 take no part (their D may be NaN). */                            \\
    static FD_HOT double fdl_near_sums_##SFX(                                    \\
        const TX *t, const TX *x, ptrdiff_t k, double mt, double ms,             \\
        const TX *eb, double total, double spread, double lam, TX *out,          \\
        double *big_w) {                                                         \\
        double a[FD_CHUNK], b[FD_CHUNK], ht, lt, centre = 0.0, big_v = 0.0;      \\
        double scale = spread > 0.0 ? spread : 1.0; /* R = 0: every v is 0 */    \\
        FDL_TWO_DIFF(ht, lt, mt, ms);                                            \\
        for (ptrdiff_t j0 = 0; j0 < k; j0 += FD_CHUNK) {                         \\
            ptrdiff_t len = k - j0 < FD_CHUNK ? k - j0 : FD_CHUNK;               \\
            for (ptrdiff_t j = 0; j < len; j++) {                                \\
                double h, l, e = (double)eb[j0 + j];                             \\
                FDL_TWO_DIFF(h, l, (double)t[j0 + j], (double)x[j0 + j]);        \\
                a[j] = fdl_keep(e, e * ((h - ht) + (l - lt)));                   \\
            }                                                                    \\
            centre += fd_sum_f64(a, len);                                        \\
        }                                                                        \\
        centre /= total;                                                         \\
        *big_w = 0.0;                                                            \\
        for (ptrdiff_t j0 = 0; j0 < k; j0 += FD_CHUNK) {                         \\
            ptrdiff_t len = k - j0 < FD_CHUNK ? k - j0 : FD_CHUNK;               \\
            for (ptrdiff_t j = 0; j < len; j++) {                                \\
                double h, l, e = (double)eb[j0 + j];                             \\
                FDL_TWO_DIFF(h, l, (double)t[j0 + j], (double)x[j0 + j]);        \\
                double v = (((h - ht) + (l - lt)) - centre) / scale;             \\
                double u = v * lam, g = FDL_EXPM1_RATIO(u);                      \\
                double hu = 1.0 + u * g, vv = v * v;                             \\
                a[j] = fdl_keep(e, e * (vv * hu));                               \\
                b[j] = fdl_keep(e, e * (vv * g));                                \\
                out[j0 + j] = (TX)fdl_keep(e, e * (v * hu));                     \\
            }                                                                    \\
            big_v += fd_sum_f64(a, len);                                         \\
            *big_w += fd_sum_f64(b, len);                                        \\
        }                                                                        \\
        *big_w /= total;                                                         \\
        return big_v / total;                                                    \\
    }                                                                            \\
                                                                                 \\
    /* sum_j s_j (the smoothing term of nll). */                                 \\
    static FD_HOT double fdl_shift_sum_##SFX(const TX *x, ptrdiff_t k,           \\
                                             double m, double a, double c,       \\
                                             int divide) {                       \\
        double buf[FD_CHUNK], total = 0.0;                                       \\
        for (ptrdiff_t j0 = 0; j0 < k; j0 += FD_CHUNK) {                         \\
            ptrdiff_t len = k - j0 < FD_CHUNK ? k - j0 : FD_CHUNK;               \\
            FDL_FOR_SHIFT(s, x + j0, len, m, a, c, divide, buf[j] = s;)          \\
            total += fd_sum_f64(buf, len);                                       \\
        }                                                                        \\
        return total;                                                            \\
    }                                                                            \\
                                                                                 \\
    /* sum_j t_j s_j over the t_j != 0 (an s_j of -inf under t_j = 0 takes       \\
     * no part), and *t_sum = sum_j t_j (soft cross-entropy). */                 \\
    static FD_HOT double fdl_target_dot_##SFX(const TX *x, const TX *t,          \\
                                              ptrdiff_t k, double m, double a,   \\
                                              double c, int divide,              \\
                                              double *t_sum) {                   \\
        double buf[FD_CHUNK], total = 0.0;                                       \\
        *t_sum = 0.0;                                                            \\
        for (ptrdiff_t j0 = 0; j0 < k; j0 += FD_CHUNK) {                         \\
            ptrdiff_t len = k - j0 < FD_CHUNK ? k - j0 : FD_CHUNK;               \\
            const TX *ts = t + j0;                                               \\
            FDL_FOR_SHIFT(s, x + j0, len, m, a, c, divide,                       \\
                          double tj = (double)ts[j];                             \\
                          buf[j] = fdl_keep(tj, tj * s);)                        \\
            total += fd_sum_f64(buf, len);                                       \\
            *t_sum += fd_sum_##SFX(ts, len);                                     \\
        }                                                                        \\
        return total;                                                            \\
    }                                                                            \\
                                                                                 \\
    /* g_j = d_j * factor (finite) or d_j / T * scale, with d_j = pre (e_j mul)  \\
     * - sub (t == NULL) or pre (e_j mul) - t_j: the nll and soft                \\
     * cross-entropy gradients (the caller fixes the label's entry). */          \\
    static FD_HOT void fdl_grad_one_##SFX(TX *g, ptrdiff_t k, const TX *e,       \\
                                          double mul, double pre, double sub,    \\
                                          const TX *t, double factor, int finite, \\
                                          double temperature, double scale) {    \\
        if (t == NULL && finite)                                                 \\
            for (ptrdiff_t j = 0; j < k; j++)                                    \\
                g[j] = (TX)((pre * ((double)e[j] * mul) - sub) * factor);        \\
        else if (t == NULL)                                                      \\
            for (ptrdiff_t j = 0; j < k; j++)                                    \\
                g[j] = (TX)((pre * ((double)e[j] * mul) - sub) / temperature *   \\
                            scale);                                              \\
        else if (finite)                                                         \\
            for (ptrdiff_t j = 0; j < k; j++)                                    \\
                g[j] = (TX)((pre * ((double)e[j] * mul) - (double)t[j]) *        \\
                            factor);                                             \\
        else                                                                     \\
            for (ptrdiff_t j = 0; j < k; j++)                                    \\
                g[j] = (TX)((pre * ((double)e[j] * mul) - (double)t[j]) /        \\
                            temperature * scale);                                \\
    }                                                                            \\
                                                                                 \\
    /* g_j = ks (eb_j ib - ea_j ia) + kh (e1_j i1) for distill_loss, i* the      \\
     * inverse normalisers: a NULL eb leaves the soft term out, a NULL e1 the    \\
     * hard one, both NULL gives 0 (the caller fixes the label's entry). */      \\
    static FD_HOT void fdl_grad_distill_##SFX(TX *g, ptrdiff_t k,                \\
                                              const TX *eb, double ib,           \\
                                              const TX *ea, double ia, double ks, \\
                                              const TX *e1, double i1,           \\
                                              double kh) {                       \\
        if (eb != NULL && e1 != NULL)                                            \\
            for (ptrdiff_t j = 0; j < k; j++)                                    \\
                g[j] = (TX)(ks * ((double)eb[j] * ib - (double)ea[j] * ia) +     \\
                            kh * ((double)e1[j] * i1));                          \\
        else if (eb != NULL)                                                     \\
            for (ptrdiff_t j = 0; j < k; j++)                                    \\
                g[j] = (TX)(ks * ((double)eb[j] * ib - (double)ea[j] * ia));     \\
        else if (e1 != NULL)                                                     \\
            for (ptrdiff_t j = 0; j < k; j++)                                    \\
                g[j] = (TX)(kh * ((double)e1[j] * i1));                          \\
        else                                                                     \\
            for (ptrdiff_t j = 0; j < k; j++)                                    \\
                g[j] = 0;                                                        \\
    }

    FDL_DEFINE(f64, double)
    FDL_DEFINE(f32, float)
    """
    double fdl_exp_rest_f64(const double *x, Py_ssize_t k, double m, double a,
                            double c, int divide, double *e, double *ones)
    double fdl_exp_rest_f32(const float *x, Py_ssize_t k, double m, double a,
                            double c, int divide, float *e, double *ones)
    double fdl_shift_sum_f64(const double *x, Py_ssize_t k, double m, double a,
                             double c, int divide)
    double fdl_shift_sum_f32(const float *x, Py_ssize_t k, double m, double a,
                             double c, int divide)
    double fdl_target_dot_f64(const double *x, const double *t, Py_ssize_t k,
                              double m, double a, double c, int divide,
                              double *t_sum)
    double fdl_target_dot_f32(const float *x, const float *t, Py_ssize_t k,
                              double m, double a, double c, int divide,
                              double *t_sum)
    double fdl_exp_rest_cross_f64(const double *t, const double *x, Py_ssize_t k,
                                  double mt, double ct, double ms, double cs,
                                  double a, int divide, double *e, double *ones,
                                  double *cross)
    double fdl_exp_rest_cross_f32(const float *t, const float *x, Py_ssize_t k,
                                  double mt, double ct, double ms, double cs,
                                  double a, int divide, float *e, double *ones,
                                  double *cross)
    double fdl_gap_spread_f64(const double *t, const double *x, Py_ssize_t k,
                              double top)
    double fdl_gap_spread_f32(const float *t, const float *x, Py_ssize_t k,
                              double top)
    double fdl_near_sums_f64(const double *t, const double *x, Py_ssize_t k,
                             double mt, double ms, const double *eb,
                             double total, double spread, double lam,
                             double *out, double *big_w)
    double fdl_near_sums_f32(const float *t, const float *x, Py_ssize_t k,
                             double mt, double ms, const float *eb,
                             double total, double spread, double lam,
                             float *out, double *big_w)
    void fdl_grad_one_f64(double *g, Py_ssize_t k, const double *e, double mul,
                          double pre, double sub, const double *t, double factor,
                          int finite, double temperature, double scale)
    void fdl_grad_one_f32(float *g, Py_ssize_t k, const float *e, double mul,
                          double pre, double sub, const float *t, double factor,
                          int finite, double temperature, double scale)
    void fdl_grad_distill_f64(double *g, Py_ssize_t k, const double *eb,
                              double ib, const double *ea, double ia, double ks,
                              const double *e1, double i1, double kh)
    void fdl_grad_distill_f32(float *g, Py_ssize_t k, const float *eb,
                              double ib, const float *ea, double ia, double ks,
                              const float *e1, double i1, double kh)

ctypedef fused real:
    float
    double


# --------------------------------------------------------------------------
# Slow path: scalar rows, for the rows the fast path does not take
# --------------------------------------------------------------------------
cdef inline double _row_max(const real* row, Py_ssize_t k) noexcept nogil:
    """The row maximum as double, or NaN where the row has no usable one:
    all -inf (or all NaN), or more than one +inf."""
    cdef double m = -INFINITY, v
    cdef Py_ssize_t j, count = 0
    for j in range(k):
        v = row[j]
        if v > m:
            m = v
    if m == INFINITY:
        for j in range(k):
            if row[j] == INFINITY:
                count += 1
        if count > 1:
            m = NAN
    elif m == -INFINITY:
        m = NAN
    return m


cdef inline double _top(double m, double temperature) noexcept nogil:
    """max(z) / T for T >= 1 (what _shift subtracts), else max(z)."""
    if temperature >= 1.0:
        return m * (1.0 / temperature)
    return m


cdef inline double _shift(double v, double m, double top, double temperature,
                          double inv_t) noexcept nogil:
    """s = z / T - max(z / T) for one entry, without overflow."""
    if v == m:
        return 0.0
    if temperature >= 1.0:
        return v * inv_t - top
    return (v - m) / temperature


cdef inline double _grad(double d, double factor, bint finite, double temperature,
                         double grad_scale) noexcept nogil:
    """grad_scale * d / T; the division runs only where grad_scale / T
    overflows (a subnormal T), so that d == 0 stays 0 instead of NaN."""
    if finite:
        return d * factor
    return d / temperature * grad_scale


# --------------------------------------------------------------------------
# One row of each loss (slow path)
# --------------------------------------------------------------------------
cdef void _nll_row(const real* row, Py_ssize_t k, int64_t y, double temperature,
                   double inv_t, double smoothing, double factor, bint finite,
                   double grad_scale, double* loss, real* grad) noexcept nogil:
    cdef double m = _row_max(row, k)
    cdef double top = _top(m, temperature)
    cdef double c = 0.0, r = 0.0, total = 0.0, s, lse, value, d
    cdef double per_class = smoothing / k
    cdef Py_ssize_t j

    # Sums of exp(s) (as c + r) and of s, the latter for the smoothing.
    for j in range(k):
        s = _shift(row[j], m, top, temperature, inv_t)
        c += 1.0 if s == 0.0 else 0.0
        r += 0.0 if s == 0.0 else exp(s)
        total += s
    lse = log1p((c - 1.0) + r)

    # -log p_y = lse - s_y and sum_j -log p_j = k lse - sum_j s_j, both sums
    # of terms >= 0 (s <= 0 <= lse): no cancellation.
    value = 0.0
    if smoothing != 1.0:
        value += (1.0 - smoothing) * (lse - _shift(row[y], m, top, temperature,
                                                   inv_t))
    if smoothing != 0.0:
        value += per_class * (k * lse - total)
    loss[0] = value

    if grad != NULL:
        for j in range(k):
            s = _shift(row[j], m, top, temperature, inv_t)
            d = exp(s - lse) - per_class
            if j == y:
                d -= 1.0 - smoothing
            grad[j] = <real>_grad(d, factor, finite, temperature, grad_scale)


cdef void _soft_ce_row(const real* row, const real* t, Py_ssize_t k,
                       double temperature, double inv_t, double factor,
                       bint finite, double grad_scale, double* loss,
                       real* grad) noexcept nogil:
    cdef double m = _row_max(row, k)
    cdef double top = _top(m, temperature)
    cdef double c = 0.0, r = 0.0, t_sum = 0.0, ts = 0.0, s, tj, lse, d
    cdef Py_ssize_t j

    # loss = sum_j t_j (lse - s_j) = sum(t) lse - sum_j t_j s_j, where a t_j
    # of 0 is left out even if s_j is -inf.
    for j in range(k):
        s = _shift(row[j], m, top, temperature, inv_t)
        tj = t[j]
        c += 1.0 if s == 0.0 else 0.0
        r += 0.0 if s == 0.0 else exp(s)
        t_sum += tj
        ts += 0.0 if tj == 0.0 else tj * s
    lse = log1p((c - 1.0) + r)
    loss[0] = t_sum * lse - ts if t_sum != 0.0 else 0.0

    if grad != NULL:
        for j in range(k):
            s = _shift(row[j], m, top, temperature, inv_t)
            d = t_sum * exp(s - lse) - t[j]
            grad[j] = <real>_grad(d, factor, finite, temperature, grad_scale)


cdef void _distill_row(const real* srow, const real* trow, Py_ssize_t k,
                       int64_t y, bint soft, bint hard, double temperature,
                       double inv_t, double alpha, double k_soft, double k_hard,
                       double* loss, real* grad) noexcept nogil:
    cdef double ms = _row_max(srow, k)
    cdef double mt = _row_max(trow, k) if soft else 0.0
    cdef double top_s = _top(ms, temperature), top_t = _top(mt, temperature)
    cdef double cb = 0.0, rb = 0.0, ca = 0.0, ra = 0.0, w = 0.0
    cdef double c1 = 0.0, r1 = 0.0
    cdef double v, a, b, ea, s1, kl, g, p, value = 0.0
    cdef double lse_a = 0.0, lse_b = 0.0, lse_1 = 0.0
    cdef Py_ssize_t j

    # One pass: the normalisers of student and teacher at T, of the student
    # at T = 1, and w = sum_j e^{a_j} (a_j - b_j) over e^{a_j} != 0, so that
    # KL = w / S_a - log S_a + log S_b.
    for j in range(k):
        v = srow[j]
        if soft:
            b = _shift(v, ms, top_s, temperature, inv_t)
            a = _shift(trow[j], mt, top_t, temperature, inv_t)
            ea = exp(a)
            cb += 1.0 if b == 0.0 else 0.0
            rb += 0.0 if b == 0.0 else exp(b)
            ca += 1.0 if a == 0.0 else 0.0
            ra += 0.0 if a == 0.0 else ea
            w += 0.0 if ea == 0.0 else ea * (a - b)
        if hard:
            s1 = 0.0 if v == ms else v - ms
            c1 += 1.0 if s1 == 0.0 else 0.0
            r1 += 0.0 if s1 == 0.0 else exp(s1)
    if soft:
        lse_a = log1p((ca - 1.0) + ra)
        lse_b = log1p((cb - 1.0) + rb)
        kl = w / (ca + ra) - lse_a + lse_b
        value += alpha * temperature * (temperature * kl)
    if hard:
        lse_1 = log1p((c1 - 1.0) + r1)
        v = srow[y]
        value += (1.0 - alpha) * (lse_1 - (0.0 if v == ms else v - ms))
    loss[0] = value

    if grad != NULL:
        for j in range(k):
            v = srow[j]
            g = 0.0
            if soft:
                b = _shift(v, ms, top_s, temperature, inv_t)
                a = _shift(trow[j], mt, top_t, temperature, inv_t)
                g += k_soft * (exp(b - lse_b) - exp(a - lse_a))
            if hard:
                s1 = 0.0 if v == ms else v - ms
                p = exp(s1 - lse_1)
                if j == y:
                    p -= 1.0
                g += k_hard * p
            grad[j] = <real>g


# --------------------------------------------------------------------------
# --------------------------------------------------------------------------
# Fast path: vectorised rows with scratch rows of exponentials
# --------------------------------------------------------------------------
cdef inline double _max(const real* row, Py_ssize_t k) noexcept nogil:
    if real is float:
        return fd_max_f32(row, k)
    else:
        return fd_max_f64(row, k)


cdef inline double _exp_rest(const real* x, Py_ssize_t k, double m, double a,
                             double c, int divide, real* e,
                             double* ones) noexcept nogil:
    if real is float:
        return fdl_exp_rest_f32(x, k, m, a, c, divide, e, ones)
    else:
        return fdl_exp_rest_f64(x, k, m, a, c, divide, e, ones)


cdef inline double _shift_sum(const real* x, Py_ssize_t k, double m, double a,
                              double c, int divide) noexcept nogil:
    if real is float:
        return fdl_shift_sum_f32(x, k, m, a, c, divide)
    else:
        return fdl_shift_sum_f64(x, k, m, a, c, divide)


cdef inline double _target_dot(const real* x, const real* t, Py_ssize_t k,
                               double m, double a, double c, int divide,
                               double* t_sum) noexcept nogil:
    if real is float:
        return fdl_target_dot_f32(x, t, k, m, a, c, divide, t_sum)
    else:
        return fdl_target_dot_f64(x, t, k, m, a, c, divide, t_sum)


cdef inline double _exp_rest_cross(const real* t, const real* x, Py_ssize_t k,
                                   double mt, double ct, double ms, double cs,
                                   double a, int divide, real* e, double* ones,
                                   double* cross) noexcept nogil:
    if real is float:
        return fdl_exp_rest_cross_f32(t, x, k, mt, ct, ms, cs, a, divide, e, ones,
                                      cross)
    else:
        return fdl_exp_rest_cross_f64(t, x, k, mt, ct, ms, cs, a, divide, e, ones,
                                      cross)


cdef inline double _gap_spread(const real* t, const real* x, Py_ssize_t k,
                               double top) noexcept nogil:
    if real is float:
        return fdl_gap_spread_f32(t, x, k, top)
    else:
        return fdl_gap_spread_f64(t, x, k, top)


cdef inline double _near_sums(const real* t, const real* x, Py_ssize_t k,
                              double mt, double ms, const real* eb, double total,
                              double spread, double lam, real* out,
                              double* big_w) noexcept nogil:
    if real is float:
        return fdl_near_sums_f32(t, x, k, mt, ms, eb, total, spread, lam, out,
                                 big_w)
    else:
        return fdl_near_sums_f64(t, x, k, mt, ms, eb, total, spread, lam, out,
                                 big_w)


cdef inline double _log1p_ratio(double w) noexcept nogil:
    """log1p(w) / w for w >= 0, by its series below 1e-4 (1 at w = 0)."""
    if w < 1e-4:
        return 1.0 - w * (0.5 - w * (1.0 / 3.0 - w * (0.25 - w * 0.2)))
    return log1p(w) / w


cdef inline void _grad_one(real* g, Py_ssize_t k, const real* e, double mul,
                           double pre, double sub, const real* t, double factor,
                           bint finite, double temperature,
                           double scale) noexcept nogil:
    if real is float:
        fdl_grad_one_f32(g, k, e, mul, pre, sub, t, factor, finite, temperature,
                         scale)
    else:
        fdl_grad_one_f64(g, k, e, mul, pre, sub, t, factor, finite, temperature,
                         scale)


cdef inline void _grad_distill(real* g, Py_ssize_t k, const real* eb,
                               double ib, const real* ea, double ia, double ks,
                               const real* e1, double i1,
                               double kh) noexcept nogil:
    if real is float:
        fdl_grad_distill_f32(g, k, eb, ib, ea, ia, ks, e1, i1, kh)
    else:
        fdl_grad_distill_f64(g, k, eb, ib, ea, ia, ks, e1, i1, kh)


cdef struct Shift:
    # s = (x - m) * a - c, or (x - m) / a - c when divide (see the C block).
    double m
    double a
    double c
    int divide


cdef inline Shift _shift_of(double mx, double temperature,
                            double inv_t) noexcept nogil:
    """The shift of a row with (finite) maximum mx, in the order of _shift:
    s = x / T - max / T for T >= 1, (x - max) / T for T < 1."""
    cdef Shift sh
    if temperature >= 1.0:
        sh.m, sh.a, sh.c, sh.divide = 0.0, inv_t, mx * inv_t, 0
    else:
        sh.m, sh.a, sh.c, sh.divide = mx, temperature, 0.0, 1
    return sh


cdef inline double _apply(Shift sh, double v) noexcept nogil:
    if sh.divide:
        return (v - sh.m) / sh.a - sh.c
    return (v - sh.m) * sh.a - sh.c


cdef bint _nll_fast(const real* row, Py_ssize_t k, int64_t y, double temperature,
                    double inv_t, double smoothing, double factor, bint finite,
                    double grad_scale, double* loss, real* grad,
                    real* e) noexcept nogil:
    """One row of nll on the fast path; False (nothing written) when the
    row's maximum is not finite."""
    cdef double mx = _max(row, k)
    if not isfinite(mx):
        return False
    cdef Shift sh = _shift_of(mx, temperature, inv_t)
    cdef double ones, rest, lse, mul, value = 0.0
    cdef double per_class = smoothing / k
    rest = _exp_rest(row, k, sh.m, sh.a, sh.c, sh.divide, e, &ones)
    lse = log1p((ones - 1.0) + rest)

    # -log p_y = lse - s_y and sum_j -log p_j = k lse - sum_j s_j, both sums
    # of terms >= 0 (s <= 0 <= lse): no cancellation.
    if smoothing != 1.0:
        value += (1.0 - smoothing) * (lse - _apply(sh, row[y]))
    if smoothing != 0.0:
        value += per_class * (
            k * lse - _shift_sum(row, k, sh.m, sh.a, sh.c, sh.divide))
    loss[0] = value

    if grad != NULL:
        # p_j = e_j e^{-lse} from the scratch row: e^{-lse} rather than
        # 1 / sum(e) gives the reference's exp(s_j - lse) exactly where
        # e_j = 1 (tied maxima), so a p - eps / k that rounds to a tiny
        # nonzero there does so here too (divided by a tiny T it is inf).
        mul = exp(-lse)
        _grad_one(grad, k, e, mul, 1.0, per_class, NULL, factor, finite,
                  temperature, grad_scale)
        grad[y] = <real>_grad(e[y] * mul - per_class - (1.0 - smoothing),
                              factor, finite, temperature, grad_scale)
    return True


cdef bint _soft_ce_fast(const real* row, const real* t, Py_ssize_t k,
                        double temperature, double inv_t, double factor,
                        bint finite, double grad_scale, double* loss, real* grad,
                        real* e) noexcept nogil:
    """One row of soft_cross_entropy on the fast path (see _nll_fast)."""
    cdef double mx = _max(row, k)
    if not isfinite(mx):
        return False
    cdef Shift sh = _shift_of(mx, temperature, inv_t)
    cdef double ones, rest, lse, t_sum, ts
    rest = _exp_rest(row, k, sh.m, sh.a, sh.c, sh.divide, e, &ones)
    lse = log1p((ones - 1.0) + rest)
    # loss = sum_j t_j (lse - s_j) = sum(t) lse - sum_j t_j s_j.
    ts = _target_dot(row, t, k, sh.m, sh.a, sh.c, sh.divide, &t_sum)
    loss[0] = t_sum * lse - ts if t_sum != 0.0 else 0.0
    if grad != NULL:
        _grad_one(grad, k, e, exp(-lse), t_sum, 0.0, t, factor, finite,
                  temperature, grad_scale)
    return True


cdef bint _distill_fast(const real* srow, const real* trow, Py_ssize_t k,
                        int64_t y, bint soft, bint hard, double temperature,
                        double inv_t, double alpha, double grad_scale,
                        double k_soft, double k_hard, double* loss, real* grad,
                        real* buf) noexcept nogil:
    """One row of distill_loss on the fast path (see _nll_fast); buf holds
    3 k values: exp of the student's and the teacher's shifts at T, and of
    the student's at T = 1."""
    cdef double ms = _max(srow, k)
    cdef double mt = _max(trow, k) if soft else 0.0
    if not (isfinite(ms) and isfinite(mt)):
        return False
    cdef real* eb = buf
    cdef real* ea = buf + k
    cdef real* e1 = buf + 2 * k
    cdef Shift sb, sa
    cdef double cb = 0.0, rb = 0.0, ca = 0.0, ra = 0.0, c1 = 0.0, r1 = 0.0
    cdef double w, kl, lse_a, lse_b, lse_1, g, value = 0.0
    cdef double ib = 0.0, ia = 0.0, i1 = 0.0
    cdef double cross, spread, lam, big_v, big_w, wq
    # The cancellation past which the plain KL is not kept: its error, a few
    # ulps of M, stays below 1e-13 of kl in float64. float32 uses the same
    # ratio: its exponentials carry 6e-8 of error, so the plain KL is off by
    # about 1e-7 M there (see _NEAR_RATIO in numba_losses.py).
    cdef double near_ratio = 2e-2

    # KL = w / S_a - log S_a + log S_b with w = sum_j e^{a_j} (a_j - b_j)
    # over e^{a_j} != 0, a the teacher's shift and b the student's.
    if soft:
        sb = _shift_of(ms, temperature, inv_t)
        sa = _shift_of(mt, temperature, inv_t)
        rb = _exp_rest(srow, k, sb.m, sb.a, sb.c, sb.divide, eb, &cb)
        ra = _exp_rest_cross(trow, srow, k, sa.m, sa.c, sb.m, sb.c, sa.a,
                             sa.divide, ea, &ca, &w)
        cross = w / (ca + ra)
        lse_a = log1p((ca - 1.0) + ra)
        lse_b = log1p((cb - 1.0) + rb)
        kl = cross - lse_a + lse_b
        ib = exp(-lse_b)
        ia = exp(-lse_a)
        # The plain KL is a difference of terms of size M: where it has
        # cancelled past what the dtype shows (kl <= near_ratio M) and the
        # gap spreads over at most T (|u| <= 1), the cancellation-free form
        # takes over. A NaN kl fails the test.
        spread = INFINITY
        if kl <= near_ratio * (fabs(cross) + fabs(lse_a) + fabs(lse_b)):
            spread = _gap_spread(trow, srow, k, mt - ms)
            if real is float and spread > temperature:
                # Cancelled, but too spread for that form: float32
                # exponentials would leave the plain KL off by up to 4e-3
                # relative. The slow path redoes the row in double.
                return False
        if spread <= temperature:
            # |u| <= 1: the cancellation-free form; ea becomes eb v h(u), and
            # T (q - p) = R (eb ib lam E[v^2 g] - ea ib) / (1 + W).
            lam = spread / temperature
            big_v = _near_sums(trow, srow, k, mt, ms, eb, cb + rb, spread, lam,
                               ea, &big_w)
            wq = lam * (lam * big_w)
            kl = spread * (spread * (big_v / (1.0 + wq)
                                     - big_w * _log1p_ratio(wq)))
            value += alpha * kl
            k_soft = alpha * grad_scale * spread
            ia = ib / (1.0 + wq)
            ib = ia * (lam * big_w)
        else:
            value += alpha * temperature * (temperature * kl)
    if hard:
        r1 = _exp_rest(srow, k, ms, 1.0, 0.0, 0, e1, &c1)
        lse_1 = log1p((c1 - 1.0) + r1)
        value += (1.0 - alpha) * (lse_1 - (srow[y] - ms))
        i1 = exp(-lse_1)
    loss[0] = value

    if grad != NULL:
        # d loss / d student = k_soft (q_s - q_t) + k_hard (p - onehot(y)).
        _grad_distill(grad, k, eb if soft else NULL, ib, ea, ia, k_soft,
                      e1 if hard else NULL, i1, k_hard)
        if hard:
            g = k_hard * (e1[y] * i1 - 1.0)
            if soft:
                g = k_soft * (eb[y] * ib - ea[y] * ia) + g
            grad[y] = <real>g
    return True


# --------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------
# Each thread of the parallel block allocates its scratch rows once; where
# that fails, its rows take the slow path (same results, more exps).
def nll_rows(const real[:, ::1] x, const int64_t[::1] labels, double temperature,
             double smoothing, int64_t ignore_index, double grad_scale,
             double[::1] loss, real[:, ::1] grad):
    cdef Py_ssize_t n = x.shape[0], k = x.shape[1], i, j
    cdef bint want_grad = grad.shape[0] != 0
    cdef double inv_t = 1.0 / temperature
    cdef double factor = grad_scale / temperature
    cdef bint finite = isfinite(factor)
    cdef real* g
    cdef real* e = NULL
    if n == 0 or k == 0:
        return
    with nogil, parallel():
        e = <real*>malloc(k * sizeof(real))
        for i in prange(n, schedule="static"):
            g = &grad[i, 0] if want_grad else NULL
            if labels[i] == ignore_index:
                loss[i] = 0.0
                if want_grad:
                    for j in range(k):
                        g[j] = 0
            elif e == NULL or not _nll_fast(
                &x[i, 0], k, labels[i], temperature, inv_t, smoothing, factor,
                finite, grad_scale, &loss[i], g, e
            ):
                _nll_row(&x[i, 0], k, labels[i], temperature, inv_t, smoothing,
                         factor, finite, grad_scale, &loss[i], g)
        free(e)


def soft_ce_rows(const real[:, ::1] x, const real[:, ::1] target,
                 double temperature, double grad_scale, double[::1] loss,
                 real[:, ::1] grad):
    cdef Py_ssize_t n = x.shape[0], k = x.shape[1], i
    cdef bint want_grad = grad.shape[0] != 0
    cdef double inv_t = 1.0 / temperature
    cdef double factor = grad_scale / temperature
    cdef bint finite = isfinite(factor)
    cdef real* g
    cdef real* e = NULL
    if n == 0 or k == 0:
        return
    with nogil, parallel():
        e = <real*>malloc(k * sizeof(real))
        for i in prange(n, schedule="static"):
            g = &grad[i, 0] if want_grad else NULL
            if e == NULL or not _soft_ce_fast(
                &x[i, 0], &target[i, 0], k, temperature, inv_t, factor, finite,
                grad_scale, &loss[i], g, e
            ):
                _soft_ce_row(&x[i, 0], &target[i, 0], k, temperature, inv_t,
                             factor, finite, grad_scale, &loss[i], g)
        free(e)


def distill_rows(const real[:, ::1] student, const real[:, ::1] teacher,
                 const int64_t[::1] labels, double temperature, double alpha,
                 double grad_scale, double[::1] loss, real[:, ::1] grad):
    cdef Py_ssize_t n = student.shape[0], k = student.shape[1], i
    cdef bint want_grad = grad.shape[0] != 0
    cdef bint soft = alpha != 0.0
    cdef bint hard = labels.shape[0] != 0 and alpha != 1.0
    cdef double inv_t = 1.0 / temperature
    # d loss / d student = k_soft (q_s - q_t) + k_hard (p - onehot(y)).
    cdef double k_soft = alpha * temperature * grad_scale
    cdef double k_hard = (1.0 - alpha) * grad_scale
    cdef int64_t y
    cdef real* g
    cdef real* buf = NULL
    if n == 0 or k == 0:
        return
    with nogil, parallel():
        buf = <real*>malloc(3 * k * sizeof(real))
        for i in prange(n, schedule="static"):
            g = &grad[i, 0] if want_grad else NULL
            y = labels[i] if hard else 0
            if buf == NULL or not _distill_fast(
                &student[i, 0], &teacher[i, 0], k, y, soft, hard, temperature,
                inv_t, alpha, grad_scale, k_soft, k_hard, &loss[i], g, buf
            ):
                _distill_row(&student[i, 0], &teacher[i, 0], k, y, soft, hard,
                             temperature, inv_t, alpha, k_soft, k_hard,
                             &loss[i], g)
        free(buf)
