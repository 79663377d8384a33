# cython: language_level=3
"""Vectorised exp and log for the Cython kernels (fastdiv_math.h).

``cimport fastdiv.backends._cython._math as fm`` (or ``from ... cimport``)
includes the header in the module that cimports it. The header declares
glibc's exp, log, expf and logf as SIMD-callable, so loops in its row
helpers call libmvec's vector versions, and compiles those helpers twice
(AVX2 and baseline x86-64) with the best chosen at load time. NaN, +-inf and
subnormals keep their IEEE meaning; no fast-math flag is involved.

All helpers are nogil, take C-contiguous rows as pointers and a length, and
sum in double in a fixed order (the same result for any thread count).
"""

cdef extern from "fastdiv_math.h" nogil:
    # 1 when the header's vector path (GCC, x86-64, glibc libmvec) is on.
    const int FD_LIBMVEC

    # fastdiv_log8.h: fd_log8_init() sets fd_use_log8 where the CPU has
    # AVX-512F; the divergence term sums then use its inline log. Each
    # module that calls those sums runs fd_log8_init() at import.
    int fd_use_log8
    void fd_log8_init()
    void fd_log8_enable(int on)

    # fastdiv_exp8.h: fd_exp8_init() sets fd_use_exp8 where the CPU has
    # AVX-512F; the exp passes (fd_exp_shift_sum, fd_short_exps) then use
    # its inline exps. Each module that calls them runs fd_exp8_init() at
    # import.
    int fd_use_exp8
    void fd_exp8_init()
    void fd_exp8_enable(int on)

    # e[j] = exp(s[j]) (e may be s); e[j] = exp(hi[j]) (1 + lo[j]) in float.
    void fd_exps_f64(const double *s, Py_ssize_t n, double *e)
    void fd_expf_hilo(const float *hi, const float *lo, Py_ssize_t n,
                      float *e)

    # Largest entry, skipping NaN; -inf for an empty or all-NaN/-inf row.
    double fd_max_f64(const double *x, Py_ssize_t n)
    double fd_max_f32(const float *x, Py_ssize_t n)

    # Fixed-order sum in double.
    double fd_sum_f64(const double *x, Py_ssize_t n)
    double fd_sum_f32(const float *x, Py_ssize_t n)

    # e_j = exp(s_j), s_j = (x_j - m) * a - c (divide == 0) or
    # (x_j - m) / a - c (divide != 0), s_j in double, written to out (or to
    # a stack buffer when out is NULL). Returns the sum of the e_j != 1 and
    # stores in ones[0] how many e_j == 1 (so log of the total is
    # log1p((ones - 1) + rest) without losing a tiny rest); with ones NULL,
    # the plain sum of all e_j. NaN propagates into the returned sum.
    # float: exp in float (~1 ulp), sum in double.
    double fd_exp_shift_sum_f64(const double *x, Py_ssize_t k, double m,
                                double a, double c, int divide, double *out,
                                double *ones)
    double fd_exp_shift_sum_f32(const float *x, Py_ssize_t k, double m,
                                double a, double c, int divide, float *out,
                                double *ones)

    # The exp pass of nr short rows at x (k < 16 entries each, one after the
    # other) in flat vector loops: per row its maximum, its top (m scaled),
    # and the split sums (ones, rest) of its exps; s and e receive every
    # s_j and exp(s_j), entry for entry as fd_exp_shift_sum computes them.
    # first: T >= 1 (scale, then shift).
    void fd_short_exps_f64(const double *x, Py_ssize_t nr, Py_ssize_t k,
                           double a, int divide, int first, double *maxima,
                           double *tops, double *ones, double *rest,
                           double *s, double *e)
    void fd_short_exps_f32(const float *x, Py_ssize_t nr, Py_ssize_t k,
                           double a, int divide, int first, double *maxima,
                           double *tops, double *ones, double *rest,
                           double *s, float *e)
    # lse[r] = top[r] + log1p((ones[r] - 1) + rest[r]), vectorised; top may
    # be NULL (no top).
    void fd_short_lse(const double *top, const double *ones,
                      const double *rest, Py_ssize_t nr, double *lse)

    # out_j = s_j - shift, s_j as above, computed in double.
    void fd_shift_sub_f64(const double *x, Py_ssize_t k, double m, double a,
                          double c, int divide, double shift, double *out)
    void fd_shift_sub_f32(const float *x, Py_ssize_t k, double m, double a,
                          double c, int divide, double shift, float *out)

    # out_j *= factor in place (product in double).
    void fd_scale_f64(double *out, Py_ssize_t k, double factor)
    void fd_scale_f32(float *out, Py_ssize_t k, double factor)

    # Element-wise exp/log of n values in the array's own dtype; out may be
    # x itself.
    void fd_exp_f64(const double *x, Py_ssize_t n, double *out)
    void fd_log_f64(const double *x, Py_ssize_t n, double *out)
    void fd_exp_f32(const float *x, Py_ssize_t n, float *out)
    void fd_log_f32(const float *x, Py_ssize_t n, float *out)

    # The probability check of a row: returns its sum (as fd_sum) and
    # stores in negatives[0] the number of entries < 0.
    double fd_check_row_f64(const double *x, Py_ssize_t n,
                            long long *negatives)
    double fd_check_row_f32(const float *x, Py_ssize_t n, long long *negatives)

    # Divergence sums, terms in double, 0 log 0 = 0 (a term whose weight is
    # exactly 0 contributes 0, whatever its log):
    #   fd_xlogy_sum(x, y)    = sum x_j log y_j
    #   fd_rel_entr_sum(p, q) = sum p_j log(p_j / q_j)  (+inf where q_j = 0 < p_j)
    #   fd_js_sum(p, q)       = sum p_j log(2p_j / (p_j + q_j))
    #                              + q_j log(2q_j / (p_j + q_j))  (= 2 JS)
    double fd_xlogy_sum_f64(const double *x, const double *y, Py_ssize_t n)
    double fd_xlogy_sum_f32(const float *x, const float *y, Py_ssize_t n)
    double fd_rel_entr_sum_f64(const double *x, const double *y, Py_ssize_t n)
    double fd_rel_entr_sum_f32(const float *x, const float *y, Py_ssize_t n)
    double fd_js_sum_f64(const double *x, const double *y, Py_ssize_t n)
    double fd_js_sum_f32(const float *x, const float *y, Py_ssize_t n)
    # The same sums with the checks of both rows in the same pass:
    # stats[0], stats[1] = the sums of x and y; negatives[0], negatives[1] =
    # how many of their entries are < 0.
    double fd_xlogy_sum_checked_f64(const double *x, const double *y,
                                    Py_ssize_t n, double *stats,
                                    long long *negatives)
    double fd_xlogy_sum_checked_f32(const float *x, const float *y, Py_ssize_t n,
                                    double *stats, long long *negatives)
    double fd_rel_entr_sum_checked_f64(const double *x, const double *y,
                                       Py_ssize_t n, double *stats,
                                       long long *negatives)
    double fd_rel_entr_sum_checked_f32(const float *x, const float *y,
                                       Py_ssize_t n, double *stats,
                                       long long *negatives)
    double fd_js_sum_checked_f64(const double *x, const double *y, Py_ssize_t n,
                                 double *stats, long long *negatives)
    double fd_js_sum_checked_f32(const float *x, const float *y, Py_ssize_t n,
                                 double *stats, long long *negatives)
    # sum x_j log x_j with the check of x: stats, negatives of that row only.
    double fd_xlogx_sum_checked_f64(const double *x, Py_ssize_t n, double *sum,
                                    long long *negatives)
    double fd_xlogx_sum_checked_f32(const float *x, Py_ssize_t n, double *sum,
                                    long long *negatives)
