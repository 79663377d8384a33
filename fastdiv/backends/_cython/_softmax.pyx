# cython: language_level=3
"""Cython kernels of the softmax family: softmax, log_softmax, logsumexp.

Twins of the functions of the same name in ``fastdiv/backends/reference.py``
(read its comments for the mathematics). Each kernel takes C-contiguous
float32 or float64 rows, runs its rows in parallel with OpenMP (the thread
count comes from :mod:`fastdiv.backends._cython._omp`) and writes into the
``out`` arrays it is given. One thread reduces a row, in a fixed order, so
the results do not depend on the number of threads.

A row with a finite maximum takes the fast path, three passes over a row
that stays in cache: the maximum, the shifted exponentials (written to
``out`` and summed in double), and the scaling. The exp is the inline
AVX-512 one of ``fastdiv_exp8.h`` where the CPU has AVX-512F, libmvec's
vector exp through ``fastdiv_math.h`` elsewhere. A row whose maximum is not
finite, or whose sum turns out NaN, is redone by a scalar branch that
applies the rules for +inf, all -inf and NaN rows. Rows of fewer than 16
entries are handled many at a time (``_short_rows``), since a loop over one
of them never reaches the vector code: 1.3-3.3x faster at 3 to 15 entries.
"""

from cython.parallel cimport prange

from cython cimport floating
from libc.math cimport INFINITY, NAN, exp, fabs, frexp, isfinite, log, log1p

from fastdiv.backends._cython cimport _math as fm

# The exp passes take the inline AVX-512 exps where the CPU has AVX-512F.
fm.fd_exp8_init()


def exp8_in_use():
    """Whether the exp passes take the AVX-512 exps of fastdiv_exp8.h."""
    return bool(fm.fd_use_exp8)


def use_exp8(bint on):
    """Let the exp passes use the AVX-512 exps (where the CPU has them) or
    not; for the tests of the fallback loops. Returns whether they were in
    use."""
    cdef bint was = fm.fd_use_exp8
    fm.fd_exp8_enable(on)
    return was


# How s = z / T - max(z / T) is formed for one call: see _make_plan.
cdef struct Plan:
    double a       # the multiplier 1 / T, or the divisor T when divide
    bint divide    # divide by T (exactly like the reference) or multiply
    bint first     # T >= 1: scale first, then subtract the maximum


cdef Plan _make_plan(double temperature, bint single):
    """Choose the order and form of the scaling by the temperature.

    For T >= 1 the logits are divided by T and then shifted; for T < 1 they
    are shifted and then divided, so that neither step overflows. The
    division is replaced by a product with 1 / T where that gives the same
    result: always when 1 / T is exact (T a power of two, T = 1 first of
    all), and for float32 input whenever 1 / T is finite (the one rounding
    of 1 / T is far below float32's precision). Elsewhere the kernel
    divides, so that float64 results match the reference's rounding even
    for huge logits, whose shifts cancel most of their digits.
    """
    cdef Plan plan
    cdef int expo
    cdef double inv = 1.0 / temperature
    cdef bint exact = frexp(temperature, &expo) == 0.5 and isfinite(inv)
    plan.first = temperature >= 1.0
    plan.divide = not (exact or (single and isfinite(inv)))
    plan.a = temperature if plan.divide else inv
    return plan


cdef inline double _scaled(double v, const Plan *plan) noexcept nogil:
    """v / T, by the plan's form."""
    return v / plan.a if plan.divide else v * plan.a


cdef inline void _shift(double m, const Plan *plan, double *msub, double *c,
                        double *top) noexcept nogil:
    """From the row maximum m: s_j = (x_j - msub) (* or /) a - c, top = m / T.

    T >= 1: msub = 0, c = top; T < 1: msub = m, c = 0. Either way the
    entries equal to m get s == 0 exactly.
    """
    top[0] = _scaled(m, plan)
    if plan.first:
        msub[0] = 0.0
        c[0] = top[0]
    else:
        msub[0] = m
        c[0] = 0.0


cdef inline double _row_max(const floating *x, Py_ssize_t k) noexcept nogil:
    if floating is double:
        return fm.fd_max_f64(x, k)
    else:
        return fm.fd_max_f32(x, k)


cdef inline double _exp_sum(const floating *x, Py_ssize_t k, double msub,
                            const Plan *plan, double c, floating *out,
                            double *ones) noexcept nogil:
    if floating is double:
        return fm.fd_exp_shift_sum_f64(x, k, msub, plan.a, c, plan.divide, out,
                                       ones)
    else:
        return fm.fd_exp_shift_sum_f32(x, k, msub, plan.a, c, plan.divide, out,
                                       ones)


cdef inline bint _has_nan(const floating *x, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(k):
        if x[j] != x[j]:
            return True
    return False


cdef int _check_shape(str name, Py_ssize_t rows, Py_ssize_t cols,
                      Py_ssize_t want_rows, Py_ssize_t want_cols) except -1:
    """Refuse an array whose shape does not match the rows of x.

    The public functions never pass one; the check keeps a wrong call from
    reading or writing past the end of an array.
    """
    if rows != want_rows or cols != want_cols:
        raise ValueError(
            f"{name} has shape ({rows}, {cols}) but the rows of x need "
            f"({want_rows}, {want_cols})"
        )
    return 0


# --------------------------------------------------------------------------
# softmax and log_softmax
# --------------------------------------------------------------------------

cdef void _softmax_row(const floating *x, Py_ssize_t k, const Plan *plan,
                       floating *out, bint log_out) noexcept nogil:
    """One row of softmax (log_out false) or log_softmax (log_out true)."""
    cdef double m = _row_max(x, k)
    cdef double msub, c, top, ones, rest
    if isfinite(m):
        _shift(m, plan, &msub, &c, &top)
        if not log_out:
            # exp(s_j) goes to out; the normaliser, their plain sum (no
            # split: a division needs no tiny rest kept apart), is >= 1.
            rest = _exp_sum(x, k, msub, plan, c, out, NULL)
            if rest == rest:
                if floating is double:
                    fm.fd_scale_f64(out, k, 1.0 / rest)
                else:
                    fm.fd_scale_f32(out, k, 1.0 / rest)
                return
        else:
            # log S = log1p((ones - 1) + rest) keeps a rest below 2^-53;
            # out_j = s_j - log S is recomputed from x in one rounding.
            rest = _exp_sum(x, k, msub, plan, c, <floating *>NULL, &ones)
            if rest == rest:
                if floating is double:
                    fm.fd_shift_sub_f64(x, k, msub, plan.a, c, plan.divide,
                                        log1p((ones - 1.0) + rest), out)
                else:
                    fm.fd_shift_sub_f32(x, k, msub, plan.a, c, plan.divide,
                                        log1p((ones - 1.0) + rest), out)
                return
    _special_softmax_row(x, k, m, out, log_out)


cdef void _special_softmax_row(const floating *x, Py_ssize_t k, double m,
                               floating *out, bint log_out) noexcept nogil:
    """A row with a NaN, a +inf maximum, or only -inf entries.

    NaN anywhere: all NaN. One +inf (and no NaN): the one-hot limit, whose
    log is 0 and -inf. Two or more +inf, or every entry -inf: all NaN.
    """
    cdef Py_ssize_t j, count = 0
    if m == INFINITY and not _has_nan(x, k):
        for j in range(k):
            if x[j] == INFINITY:
                count += 1
        if count == 1:
            for j in range(k):
                if x[j] == INFINITY:
                    out[j] = 0.0 if log_out else 1.0
                else:
                    out[j] = -INFINITY if log_out else 0.0
            return
    for j in range(k):
        out[j] = NAN


# Rows shorter than _SHORT go through _short_rows: blocks of at most
# _SHORT_ROWS rows and _SHORT_BLOCK entries, in flat vector loops (see
# fd_short_exps in fastdiv_math.h); the buffers of a block take 36 KB of
# stack.
cdef enum:
    _SHORT = 16
    _SHORT_BLOCK = 2048
    _SHORT_ROWS = 256

# What a block of short rows computes.
cdef enum:
    _SOFTMAX = 0
    _LOG_SOFTMAX = 1
    _LOGSUMEXP = 2


cdef void _short_block(const floating *x, Py_ssize_t nr, Py_ssize_t k,
                       const Plan *plan, floating *out, int mode) noexcept nogil:
    """nr short rows at x (one after the other) into out: nr * k entries
    for softmax and log_softmax, nr for logsumexp. The rules for rows with
    NaN, +inf or only -inf are those of the row-by-row path."""
    cdef double s[_SHORT_BLOCK]
    cdef floating e[_SHORT_BLOCK]
    cdef double maxima[_SHORT_ROWS]
    cdef double tops[_SHORT_ROWS]
    cdef double ones[_SHORT_ROWS]
    cdef double rest[_SHORT_ROWS]
    cdef double lse[_SHORT_ROWS]
    cdef Py_ssize_t r, j
    cdef double m, inv
    if floating is double:
        fm.fd_short_exps_f64(x, nr, k, plan.a, plan.divide, plan.first, maxima,
                             tops, ones, rest, s, e)
    else:
        fm.fd_short_exps_f32(x, nr, k, plan.a, plan.divide, plan.first, maxima,
                             tops, ones, rest, s, e)
    if mode == _LOG_SOFTMAX:
        # s_j is shifted already: subtract log S alone.
        fm.fd_short_lse(NULL, ones, rest, nr, lse)
    elif mode == _LOGSUMEXP:
        fm.fd_short_lse(tops, ones, rest, nr, lse)
    for r in range(nr):
        m = maxima[r]
        if mode == _LOGSUMEXP:
            if isfinite(m):
                out[r] = <floating>lse[r]
            elif _has_nan(x + r * k, k):
                out[r] = NAN
            else:
                out[r] = <floating>m
            continue
        if isfinite(m) and rest[r] == rest[r]:
            if mode == _SOFTMAX:
                inv = 1.0 / (ones[r] + rest[r])
                for j in range(k):
                    out[r * k + j] = <floating>(e[r * k + j] * inv)
            else:
                for j in range(k):
                    out[r * k + j] = <floating>(s[r * k + j] - lse[r])
        else:
            _special_softmax_row(x + r * k, k, m, out + r * k,
                                 mode == _LOG_SOFTMAX)


cdef void _short_rows(const floating *x, Py_ssize_t n, Py_ssize_t k,
                      const Plan *plan, floating *out, int mode) noexcept nogil:
    """All n rows (1 <= k < _SHORT) in blocks, the blocks in parallel."""
    cdef Py_ssize_t rows = _SHORT_BLOCK // k
    cdef Py_ssize_t b, r0, nr, nblocks
    cdef Py_ssize_t width = 1 if mode == _LOGSUMEXP else k
    if rows > _SHORT_ROWS:
        rows = _SHORT_ROWS
    nblocks = (n + rows - 1) // rows
    for b in prange(nblocks, schedule="static"):
        r0 = b * rows
        nr = n - r0 if n - r0 < rows else rows
        _short_block(x + r0 * k, nr, k, plan, out + r0 * width, mode)


def softmax_rows(const floating[:, ::1] x, double temperature,
                 floating[:, ::1] out):
    """out[i] = softmax(x[i] / temperature), row by row (k >= 1)."""
    cdef Py_ssize_t i, n = x.shape[0], k = x.shape[1]
    cdef Plan plan = _make_plan(temperature, floating is float)
    _check_shape("out", out.shape[0], out.shape[1], n, k)
    if k == 0 or n == 0:
        return
    if k < _SHORT:
        with nogil:
            _short_rows(&x[0, 0], n, k, &plan, &out[0, 0], _SOFTMAX)
        return
    for i in prange(n, schedule="static", nogil=True):
        _softmax_row(&x[i, 0], k, &plan, &out[i, 0], False)


def log_softmax_rows(const floating[:, ::1] x, double temperature,
                     floating[:, ::1] out):
    """out[i] = log_softmax(x[i] / temperature), row by row (k >= 1)."""
    cdef Py_ssize_t i, n = x.shape[0], k = x.shape[1]
    cdef Plan plan = _make_plan(temperature, floating is float)
    _check_shape("out", out.shape[0], out.shape[1], n, k)
    if k == 0 or n == 0:
        return
    if k < _SHORT:
        with nogil:
            _short_rows(&x[0, 0], n, k, &plan, &out[0, 0], _LOG_SOFTMAX)
        return
    for i in prange(n, schedule="static", nogil=True):
        _softmax_row(&x[i, 0], k, &plan, &out[i, 0], True)


# --------------------------------------------------------------------------
# logsumexp
# --------------------------------------------------------------------------

cdef double _logsumexp_row(const floating *x, Py_ssize_t k,
                           const Plan *plan) noexcept nogil:
    """log sum_j exp(x_j / T) = top + log1p((ones - 1) + rest).

    NaN in the row gives NaN (through rest, or by the scan below). A
    maximum of +inf gives +inf; an empty or all -inf row gives -inf. A
    finite maximum whose top = m / T overflows gives +-inf, as it should.
    """
    cdef double m = _row_max(x, k)
    cdef double msub, c, top, ones, rest
    if isfinite(m):
        _shift(m, plan, &msub, &c, &top)
        rest = _exp_sum(x, k, msub, plan, c, <floating *>NULL, &ones)
        return top + log1p((ones - 1.0) + rest)
    if _has_nan(x, k):
        return NAN
    return m


def logsumexp_rows(const floating[:, ::1] x, double temperature,
                   floating[::1] out):
    """out[i] = log(sum_j exp(x[i, j] / temperature)); -inf for k == 0."""
    cdef Py_ssize_t i, n = x.shape[0], k = x.shape[1]
    cdef Plan plan = _make_plan(temperature, floating is float)
    _check_shape("out", out.shape[0], 1, n, 1)
    if 0 < k < _SHORT and n > 0:
        with nogil:
            _short_rows(&x[0, 0], n, k, &plan, &out[0], _LOGSUMEXP)
        return
    for i in prange(n, schedule="static", nogil=True):
        out[i] = <floating>_logsumexp_row(&x[i, 0], k, &plan)


cdef inline double _sign(double v) noexcept nogil:
    """np.sign: -1, 0 or 1, and NaN for NaN."""
    if v > 0.0:
        return 1.0
    if v < 0.0:
        return -1.0
    if v == 0.0:
        return 0.0
    return v  # NaN


# Terms of the weighted sum buffered before summing (4 KB, in L1).
cdef enum:
    _WEIGHTED_CHUNK = 512


cdef void _weighted_row(const floating *x, const floating *b, Py_ssize_t k,
                        const Plan *plan, floating *res,
                        floating *sgn) noexcept nogil:
    """log|sum_j b_j exp(x_j / T)| and its sign, as the reference computes it.

    Entries with b_j == 0 take no part. Among the others, with amax their
    largest x_j / T, the entries at amax add their weights w exactly and
    the rest r = sum b_j exp(s_j); log|w + r| = amax + log|w| + log1p(r / w)
    (w != 0) or amax + log|r| (w == 0). This branchy path runs serially per
    row; it is not the hot path of any public function.
    """
    cdef Py_ssize_t j
    cdef double m = -INFINITY, v, bj, s, msub, c, top, t
    cdef double w = 0.0, r = 0.0
    cdef double buf[_WEIGHTED_CHUNK]
    cdef Py_ssize_t used
    cdef bint posinf, at_max
    for j in range(k):
        if b[j] != 0:  # a NaN weight counts as used
            v = x[j]
            if v != v:
                res[0] = NAN
                sgn[0] = NAN
                return
            if v > m:
                m = v
    _shift(m, plan, &msub, &c, &top)
    if top == -INFINITY:
        # No used entry, all used entries -inf, or a sum that underflows.
        res[0] = -INFINITY
        sgn[0] = 0.0
        return
    # The terms of r go through a buffer summed by fd_sum_f64 (8 lanes):
    # with weights of both signs the sum may cancel, and lane sums lose
    # far less than one running sum (about like NumPy's pairwise sum).
    posinf = top == INFINITY and m == INFINITY
    used = 0
    for j in range(k):
        bj = b[j]
        if bj == 0:
            continue
        v = x[j]
        if posinf:
            # The +inf entries are the ones at the maximum; the others
            # have s = -inf.
            at_max = v == INFINITY
            s = -INFINITY
        else:
            if plan.divide:
                s = (v - msub) / plan.a - c
            else:
                s = (v - msub) * plan.a - c
            at_max = s == 0.0
        if at_max:
            w += bj
        else:
            buf[used] = bj * exp(s)
            used += 1
            if used == _WEIGHTED_CHUNK:
                r += fm.fd_sum_f64(buf, used)
                used = 0
    if used:
        r += fm.fd_sum_f64(buf, used)
    if w != 0:
        t = r / w
        # |1 + t| for 1 + t < 0 is 1 + (-t - 2): log1p takes it without
        # cancellation.
        res[0] = <floating>(top + log(fabs(w))
                            + log1p(-t - 2.0 if t < -1.0 else t))
        sgn[0] = <floating>(_sign(w) * _sign(1.0 + t))
    else:
        res[0] = <floating>(top + log(fabs(r)))
        sgn[0] = <floating>_sign(r)


def logsumexp_weighted_rows(const floating[:, ::1] x, const floating[:, ::1] b,
                            double temperature, floating[::1] out,
                            floating[::1] sign):
    """out[i] = log|sum_j b[i, j] exp(x[i, j] / T)|, sign[i] = its sign.

    As in SciPy, an entry whose weight is 0 takes no part, even if it is
    infinite or NaN; a zero sum gives -inf with sign 0, NaN gives NaN.
    """
    cdef Py_ssize_t i, n = x.shape[0], k = x.shape[1]
    cdef Plan plan = _make_plan(temperature, floating is float)
    _check_shape("b", b.shape[0], b.shape[1], n, k)
    _check_shape("out", out.shape[0], 1, n, 1)
    _check_shape("sign", sign.shape[0], 1, n, 1)
    for i in prange(n, schedule="static", nogil=True):
        _weighted_row(&x[i, 0], &b[i, 0], k, &plan, &out[i], &sign[i])


def kernel_exp(const floating[::1] s, floating[::1] out):
    """out[j] = exp(s[j]) by the exp of the exp passes, for the accuracy
    tests (float: the float exp of hi = s[j] with a low part of 0)."""
    cdef Py_ssize_t j, n = s.shape[0]
    _check_shape("out", out.shape[0], 1, n, 1)
    if n == 0:
        return
    if floating is double:
        fm.fd_exps_f64(&s[0], n, &out[0])
    else:
        # out is the zero low part first: each lane reads it before its
        # result goes there.
        for j in range(n):
            out[j] = 0.0
        fm.fd_expf_hilo(&s[0], &out[0], n, &out[0])
