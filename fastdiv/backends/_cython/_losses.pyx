# cython: language_level=3
"""Cython kernels for the losses on logits (twins of the "losses" section of
``reference.py``, same names and signatures), fused over float and double.

Each row is handled by one OpenMP thread (``prange`` over rows, static
schedule) in three passes that never store a probability: the maximum, the
sums of exponentials together with the loss terms, and (when ``grad`` has
rows) the gradient, which recomputes each exponential. Sums are double
whatever the input dtype and run in a fixed order, so a row's result does
not depend on the thread count.

The shifted, scaled logit s = z / T - max(z / T) is formed as in the softmax
section of ``reference.py``: divided first for T >= 1 (as a product with
1 / T, which cannot overflow there), subtracted first for T < 1. The row
maximum maps to exactly 0, which also makes a single +inf logit the one-hot
limit; two +inf, an all -inf row or NaN give a NaN row. With c entries at 0
and r the sum of the other exponentials, log sum exp(s) is
log1p((c - 1) + r), exact even where r is below the rounding of 1.
"""

from cython.parallel cimport prange
from libc.math cimport INFINITY, NAN, exp, isfinite, log1p
from libc.stdint cimport int64_t

ctypedef fused real:
    float
    double


# --------------------------------------------------------------------------
# Row helpers
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
# One row of each loss
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
# Kernels
# --------------------------------------------------------------------------
def nll_rows(const real[:, ::1] x, const int64_t[::1] labels, double temperature,
             double smoothing, int64_t ignore_index, double grad_scale,
             double[::1] loss, real[:, ::1] grad):
    cdef Py_ssize_t n = x.shape[0], k = x.shape[1], i, j
    cdef bint want_grad = grad.shape[0] != 0
    cdef double inv_t = 1.0 / temperature
    cdef double factor = grad_scale / temperature
    cdef bint finite = isfinite(factor)
    cdef real* g
    if n == 0 or k == 0:
        return
    for i in prange(n, schedule="static", nogil=True):
        g = &grad[i, 0] if want_grad else NULL
        if labels[i] == ignore_index:
            loss[i] = 0.0
            if want_grad:
                for j in range(k):
                    g[j] = 0
        else:
            _nll_row(&x[i, 0], k, labels[i], temperature, inv_t, smoothing,
                     factor, finite, grad_scale, &loss[i], g)


def soft_ce_rows(const real[:, ::1] x, const real[:, ::1] target,
                 double temperature, double grad_scale, double[::1] loss,
                 real[:, ::1] grad):
    cdef Py_ssize_t n = x.shape[0], k = x.shape[1], i
    cdef bint want_grad = grad.shape[0] != 0
    cdef double inv_t = 1.0 / temperature
    cdef double factor = grad_scale / temperature
    cdef bint finite = isfinite(factor)
    if n == 0 or k == 0:
        return
    for i in prange(n, schedule="static", nogil=True):
        _soft_ce_row(&x[i, 0], &target[i, 0], k, temperature, inv_t, factor,
                     finite, grad_scale, &loss[i],
                     &grad[i, 0] if want_grad else NULL)


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
    if n == 0 or k == 0:
        return
    for i in prange(n, schedule="static", nogil=True):
        _distill_row(&student[i, 0], &teacher[i, 0], k,
                     labels[i] if hard else 0, soft, hard, temperature, inv_t,
                     alpha, k_soft, k_hard, &loss[i],
                     &grad[i, 0] if want_grad else NULL)
