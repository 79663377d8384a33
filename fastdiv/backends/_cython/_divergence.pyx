# cython: language_level=3
"""Cython kernels for the divergences of probability rows (twins of the
"divergences" section of ``reference.py``, same names and signatures).

``p`` and ``q`` are (n, k) or (1, k): a single row is used for every row
of the other, so an (n, k) batch against one distribution is never copied
n times. ``out`` is float64 whatever the input dtype. Rows are spread over
the OpenMP threads, one row per thread, and each row's terms are computed
in double with the vector log of ``fastdiv_math.h`` (float32 entropy and
cross-entropy take float logs: their terms do not cancel) and summed there
in a fixed order, so the result does not depend on the thread count. The
``*_checked`` kernels gather each row's sum and negative count in the same
pass; for two float32 batches, in the loop of the terms itself.
"""

from cython.parallel cimport prange
from libc.math cimport isfinite, log

from fastdiv.backends._cython._math cimport (
    fd_check_row_f32,
    fd_check_row_f64,
    fd_js_sum_checked_f32,
    fd_js_sum_checked_f64,
    fd_js_sum_f32,
    fd_js_sum_f64,
    fd_rel_entr_sum_checked_f32,
    fd_rel_entr_sum_checked_f64,
    fd_rel_entr_sum_f32,
    fd_rel_entr_sum_f64,
    fd_xlogy_sum_checked_f32,
    fd_xlogy_sum_checked_f64,
    fd_xlogx_sum_checked_f32,
    fd_xlogx_sum_checked_f64,
    fd_xlogy_sum_f32,
    fd_log8_enable,
    fd_log8_init,
    fd_use_log8,
    fd_xlogy_sum_f64,
)

ctypedef fused real:
    float
    double

cdef double _TINY = 2.2250738585072014e-308
cdef double _HUGE = 1.7976931348623157e308

# The term sums take the inline AVX-512 log where the CPU has AVX-512F.
fd_log8_init()


def log8_in_use():
    """Whether the term sums take the AVX-512 log of fastdiv_log8.h."""
    return bool(fd_use_log8)


def use_log8(bint on):
    """Let the term sums use the AVX-512 log (where the CPU has it) or not.

    For the tests of the fallback loops; returns whether it was in use.
    """
    cdef bint was = fd_use_log8
    fd_log8_enable(on)
    return was


cdef inline double _xlogy(const real *x, const real *y, Py_ssize_t k) noexcept nogil:
    if real is float:
        return fd_xlogy_sum_f32(x, y, k)
    else:
        return fd_xlogy_sum_f64(x, y, k)


cdef double _kl_careful(const real *p, const real *q, Py_ssize_t k) noexcept nogil:
    """KL where p / q overflows or underflows: log p - log q there.

    Only rows whose fast sum came out +-inf or NaN come here (a subnormal q,
    or p > 0 = q, whose +inf this reproduces). Summed in the order of the
    fast path's lanes is not needed: the row is rare and the result differs
    from it only where the fast one was wrong.
    """
    cdef double total = 0.0, a, b, r, t
    cdef Py_ssize_t j
    for j in range(k):
        a = p[j]
        b = q[j]
        if a == 0.0:
            continue
        r = a / b
        if r >= _TINY and r <= _HUGE:
            t = a * log(r)
        else:
            t = a * (log(a) - log(b))
        total += t
    return total


cdef inline double _kl_from(double total, const real *p, const real *q,
                            Py_ssize_t k) noexcept nogil:
    """KL from the fast sum of its terms: kept where finite, redone else."""
    if isfinite(total):
        return total
    return _kl_careful(p, q, k)


cdef inline double _js_from(double twice) noexcept nogil:
    """JS from the sum of fd_js_term (twice JS)."""
    cdef double total = 0.5 * twice
    # Clamp a rounding below 0; NaN fails the test and stays NaN.
    return 0.0 if total < 0.0 else total


cdef inline double _kl(const real *p, const real *q, Py_ssize_t k) noexcept nogil:
    if real is float:
        return _kl_from(fd_rel_entr_sum_f32(p, q, k), p, q, k)
    else:
        return _kl_from(fd_rel_entr_sum_f64(p, q, k), p, q, k)


cdef inline double _js(const real *p, const real *q, Py_ssize_t k) noexcept nogil:
    if real is float:
        return _js_from(fd_js_sum_f32(p, q, k))
    else:
        return _js_from(fd_js_sum_f64(p, q, k))


def entropy_rows(const real[:, ::1] p, double[::1] out):
    """out[i] = -sum_j p[i, j] log p[i, j]."""
    cdef Py_ssize_t n = out.shape[0], k = p.shape[1], i
    for i in prange(n, schedule="static", nogil=True):
        # 0.0 - sum keeps +0.0 for empty and one-hot rows.
        out[i] = 0.0 - _xlogy(&p[i, 0], &p[i, 0], k)


def cross_entropy_rows(const real[:, ::1] p, const real[:, ::1] q, double[::1] out):
    """out[i] = -sum_j p[i, j] log q[i, j]; p or q may be a single row."""
    cdef Py_ssize_t n = out.shape[0], k = p.shape[1], i
    cdef Py_ssize_t sp = p.shape[0] > 1, sq = q.shape[0] > 1
    for i in prange(n, schedule="static", nogil=True):
        out[i] = 0.0 - _xlogy(&p[i * sp, 0], &q[i * sq, 0], k)


def kl_rows(const real[:, ::1] p, const real[:, ::1] q, double[::1] out):
    """out[i] = sum_j p[i, j] log(p[i, j] / q[i, j]); p or q may be one row."""
    cdef Py_ssize_t n = out.shape[0], k = p.shape[1], i
    cdef Py_ssize_t sp = p.shape[0] > 1, sq = q.shape[0] > 1
    for i in prange(n, schedule="static", nogil=True):
        out[i] = _kl(&p[i * sp, 0], &q[i * sq, 0], k)


def js_rows(const real[:, ::1] p, const real[:, ::1] q, double[::1] out):
    """out[i] = JS(p[i], q[i]), clamped at 0; p or q may be a single row."""
    cdef Py_ssize_t n = out.shape[0], k = p.shape[1], i
    cdef Py_ssize_t sp = p.shape[0] > 1, sq = q.shape[0] > 1
    for i in prange(n, schedule="static", nogil=True):
        out[i] = _js(&p[i * sp, 0], &q[i * sq, 0], k)


# --------------------------------------------------------------------------
# The same with the probability check of each row in the pass that reads it
# (the sums and negative counts of probability_check_rows, into arrays of
# p's and q's own number of rows): each row is checked while it is in cache
# for its divergence, so the inputs are read from memory once, not twice.
# --------------------------------------------------------------------------

cdef enum:
    _CROSS_ENTROPY = 0
    _KL = 1
    _JS = 2


cdef inline void _check_row(const real *x, Py_ssize_t k, double *sums,
                            long long *negatives) noexcept nogil:
    if real is float:
        sums[0] = fd_check_row_f32(x, k, negatives)
    else:
        sums[0] = fd_check_row_f64(x, k, negatives)


cdef inline double _two_input_term(int kind, const real *p, const real *q,
                                   Py_ssize_t k) noexcept nogil:
    if kind == _CROSS_ENTROPY:
        return 0.0 - _xlogy(p, q, k)
    if kind == _KL:
        return _kl(p, q, k)
    return _js(p, q, k)


cdef double _two_input_term_checked(int kind, const real *p, const real *q,
                                    Py_ssize_t k, double *p_sum,
                                    long long *p_neg, double *q_sum,
                                    long long *q_neg) noexcept nogil:
    """_two_input_term with both rows' checks in the pass of its terms."""
    cdef double stats[2]
    cdef long long negatives[2]
    cdef double total
    if kind == _CROSS_ENTROPY:
        if real is float:
            total = fd_xlogy_sum_checked_f32(p, q, k, stats, negatives)
        else:
            total = fd_xlogy_sum_checked_f64(p, q, k, stats, negatives)
        total = 0.0 - total
    elif kind == _KL:
        if real is float:
            total = fd_rel_entr_sum_checked_f32(p, q, k, stats, negatives)
        else:
            total = fd_rel_entr_sum_checked_f64(p, q, k, stats, negatives)
        total = _kl_from(total, p, q, k)
    else:
        if real is float:
            total = fd_js_sum_checked_f32(p, q, k, stats, negatives)
        else:
            total = fd_js_sum_checked_f64(p, q, k, stats, negatives)
        total = _js_from(total)
    p_sum[0] = stats[0]
    q_sum[0] = stats[1]
    p_neg[0] = negatives[0]
    q_neg[0] = negatives[1]
    return total


cdef void _two_inputs_checked(int kind, const real[:, ::1] p,
                              const real[:, ::1] q, double[::1] out,
                              double[::1] p_sums, long long[::1] p_negatives,
                              double[::1] q_sums,
                              long long[::1] q_negatives) noexcept:
    cdef Py_ssize_t n = out.shape[0], k = p.shape[1], i
    cdef Py_ssize_t sp = p.shape[0] > 1, sq = q.shape[0] > 1
    if sp and sq:
        # Two batches: the checks in the term loops.
        for i in prange(n, schedule="static", nogil=True):
            out[i] = _two_input_term_checked(
                kind, &p[i, 0], &q[i, 0], k, &p_sums[i], &p_negatives[i],
                &q_sums[i], &q_negatives[i])
        return
    for i in prange(n, schedule="static", nogil=True):
        # A single row (broadcast against all of the other) is checked once.
        if sp or i == 0:
            _check_row(&p[i * sp, 0], k, &p_sums[i * sp], &p_negatives[i * sp])
        if sq or i == 0:
            _check_row(&q[i * sq, 0], k, &q_sums[i * sq], &q_negatives[i * sq])
        out[i] = _two_input_term(kind, &p[i * sp, 0], &q[i * sq, 0], k)


cdef inline double _entropy_checked(const real *p, Py_ssize_t k, double *p_sum,
                                    long long *p_neg) noexcept nogil:
    if real is float:
        return 0.0 - fd_xlogx_sum_checked_f32(p, k, p_sum, p_neg)
    else:
        return 0.0 - fd_xlogx_sum_checked_f64(p, k, p_sum, p_neg)


def entropy_rows_checked(const real[:, ::1] p, double[::1] out,
                         double[::1] p_sums, long long[::1] p_negatives):
    """entropy_rows, with the check of each row of p in the same pass."""
    cdef Py_ssize_t n = out.shape[0], k = p.shape[1], i
    for i in prange(n, schedule="static", nogil=True):
        # The check of the row in the vector loop of its terms.
        out[i] = _entropy_checked(&p[i, 0], k, &p_sums[i], &p_negatives[i])


def cross_entropy_rows_checked(const real[:, ::1] p, const real[:, ::1] q,
                               double[::1] out, double[::1] p_sums,
                               long long[::1] p_negatives, double[::1] q_sums,
                               long long[::1] q_negatives):
    """cross_entropy_rows, with the checks of p and q in the same pass."""
    _two_inputs_checked(_CROSS_ENTROPY, p, q, out, p_sums, p_negatives, q_sums,
                        q_negatives)


def kl_rows_checked(const real[:, ::1] p, const real[:, ::1] q,
                    double[::1] out, double[::1] p_sums,
                    long long[::1] p_negatives, double[::1] q_sums,
                    long long[::1] q_negatives):
    """kl_rows, with the checks of p and q in the same pass."""
    _two_inputs_checked(_KL, p, q, out, p_sums, p_negatives, q_sums, q_negatives)


def js_rows_checked(const real[:, ::1] p, const real[:, ::1] q,
                    double[::1] out, double[::1] p_sums,
                    long long[::1] p_negatives, double[::1] q_sums,
                    long long[::1] q_negatives):
    """js_rows, with the checks of p and q in the same pass."""
    _two_inputs_checked(_JS, p, q, out, p_sums, p_negatives, q_sums, q_negatives)


def probability_check_rows(const real[:, ::1] x, double[::1] sums,
                           long long[::1] negatives):
    """sums[i] = sum_j x[i, j] in double; negatives[i] = #{j : x[i, j] < 0}."""
    cdef Py_ssize_t n = x.shape[0], k = x.shape[1], i
    for i in prange(n, schedule="static", nogil=True):
        if real is float:
            sums[i] = fd_check_row_f32(&x[i, 0], k, &negatives[i])
        else:
            sums[i] = fd_check_row_f64(&x[i, 0], k, &negatives[i])
