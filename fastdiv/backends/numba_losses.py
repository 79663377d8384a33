"""Numba kernels for the losses on logits (twins of the "losses" section of
``reference.py``, same names and signatures).

Each row is handled by one thread (``prange`` over rows) in three passes
that never store a probability: the maximum, then the sums of exponentials
together with the loss terms, then (when ``grad`` has rows) the gradient,
which recomputes each exponential instead of keeping a softmax row. Sums
are float64 whatever the input dtype and run in a fixed order, so a row's
result does not depend on the thread count.

The shifted, scaled logit s = z / T - max(z / T) is formed as in the
softmax section of ``reference.py``: divided first for T >= 1 (as a product
with 1 / T, which cannot overflow there), subtracted first for T < 1. The
row maximum itself maps to exactly 0, which also makes a single +inf logit
the one-hot limit; two +inf, an all -inf row or NaN give a NaN row. With c
entries at 0 and r the sum of the other exponentials, log sum exp(s) is
log1p((c - 1) + r), exact even where r is below the rounding of 1.
"""

from __future__ import annotations

import math

import numpy as np
from numba import float32, float64, int64, njit, prange, types, void

from fastdiv.backends.numba_math import exp_f64, exp_like, maxnum

# No flag that assumes away NaN or inf, and no reassociation (it would
# change the order of the sums and the exp range reduction). No "arcp"
# either: x / T as x * (1 / T) is 0 * inf = NaN for a subnormal T.
_FASTMATH = {"nsz", "contract", "afn"}
_KERNEL = dict(parallel=True, cache=True, nogil=True, fastmath=_FASTMATH)
_INLINE = dict(inline="always", fastmath=_FASTMATH)

# Entries per chunk of a row whose terms are buffered before they are
# summed: four float64 buffers of 4 KB each stay in L1 beside the rows.
_CHUNK = 512
# Rows per parallel task: the buffers are allocated once per task.
_ROWS_PER_TASK = 16


# --------------------------------------------------------------------------
# Row helpers
# --------------------------------------------------------------------------
@njit(**_INLINE)
def _exp(x):
    # The polynomial exp of numba_math: LLVM vectorises it (math.exp is a
    # call into libm that it cannot), with the same IEEE special values.
    return exp_f64(x)


@njit(**_INLINE)
def _log1p(x):
    return math.log1p(x)


@njit(**_INLINE)
def _lane_max(row):
    """max(row) skipping NaN (-inf if none), in eight independent lanes so
    that the comparisons vectorise; the maximum does not depend on order."""
    k = row.shape[0]
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = -math.inf
    j = 0
    while j + 8 <= k:
        v0 = float64(row[j])
        v1 = float64(row[j + 1])
        v2 = float64(row[j + 2])
        v3 = float64(row[j + 3])
        v4 = float64(row[j + 4])
        v5 = float64(row[j + 5])
        v6 = float64(row[j + 6])
        v7 = float64(row[j + 7])
        m0 = v0 if v0 > m0 else m0
        m1 = v1 if v1 > m1 else m1
        m2 = v2 if v2 > m2 else m2
        m3 = v3 if v3 > m3 else m3
        m4 = v4 if v4 > m4 else m4
        m5 = v5 if v5 > m5 else m5
        m6 = v6 if v6 > m6 else m6
        m7 = v7 if v7 > m7 else m7
        j += 8
    m = max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))
    while j < k:
        v = float64(row[j])
        m = v if v > m else m
        j += 1
    return m


@njit(**_INLINE)
def _lane_sum(buf, count):
    """sum(buf[:count]) in eight fixed lanes, then the tail in order: the
    order depends on count only, and the lanes vectorise."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    j = 0
    while j + 8 <= count:
        a0 += buf[j]
        a1 += buf[j + 1]
        a2 += buf[j + 2]
        a3 += buf[j + 3]
        a4 += buf[j + 4]
        a5 += buf[j + 5]
        a6 += buf[j + 6]
        a7 += buf[j + 7]
        j += 8
    total = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
    while j < count:
        total += buf[j]
        j += 1
    return total


@njit(**_INLINE)
def _row_max(row):
    """The row maximum as float64, or NaN where the row has no usable one:
    all -inf (or empty, or all NaN), or more than one +inf."""
    m = _lane_max(row)
    if m == math.inf:
        count = 0
        for j in range(row.shape[0]):
            if row[j] == math.inf:
                count += 1
        if count > 1:
            m = math.nan
    elif m == -math.inf:
        m = math.nan
    return m


@njit(**_INLINE)
def _top(m, temperature):
    """max(z) / T for T >= 1 (what _shift subtracts), else max(z)."""
    if temperature >= 1.0:
        return m * (1.0 / temperature)
    return m


@njit(**_INLINE)
def _shift(v, m, top, temperature, inv_t):
    """s = z / T - max(z / T) for one entry, without overflow."""
    if v == m:
        return 0.0
    if temperature >= 1.0:
        return v * inv_t - top
    return (v - m) / temperature


@njit(**_INLINE)
def _grad(d, factor, finite, temperature, grad_scale):
    """grad_scale * d / T; the division runs only where grad_scale / T
    overflows (a subnormal T), so that d == 0 stays 0 instead of NaN."""
    if finite:
        return d * factor
    return d / temperature * grad_scale


@njit(**_INLINE)
def _distill_slow(
    srow,
    trow,
    y,
    soft,
    hard,
    temperature,
    inv_t,
    alpha,
    k_soft,
    k_hard,
    want_grad,
    grow,
    buf,
):
    """One row of distill_loss by the scalar rules (any row): returns the
    loss and writes the gradient row; each exponential is recomputed in the
    gradient pass."""
    k = srow.shape[0]
    ms = _row_max(srow)
    mt = _row_max(trow) if soft else 0.0
    top_s = _top(ms, temperature)
    top_t = _top(mt, temperature)

    # One pass: the normalisers of student and teacher at T, of the
    # student at T = 1, and w = sum_j e^{a_j} (a_j - b_j) over e^{a_j}
    # != 0, so that KL = w / S_a - log S_a + log S_b. The terms of a
    # chunk go to buf (a loop without carried sums, which vectorises)
    # and are added in fixed lanes; the counts are integers.
    nb = 0
    na = 0
    n1 = 0
    rb = 0.0
    ra = 0.0
    w = 0.0
    r1 = 0.0
    for start in range(0, k, _CHUNK):
        size = min(_CHUNK, k - start)
        for jj in range(size):
            v = float64(srow[start + jj])
            if soft:
                b = _shift(v, ms, top_s, temperature, inv_t)
                a = _shift(float64(trow[start + jj]), mt, top_t, temperature, inv_t)
                ea = _exp(a)
                nb += 1 if b == 0.0 else 0
                na += 1 if a == 0.0 else 0
                buf[0, jj] = 0.0 if b == 0.0 else _exp(b)
                buf[1, jj] = 0.0 if a == 0.0 else ea
                buf[2, jj] = 0.0 if ea == 0.0 else ea * (a - b)
            if hard:
                s1 = 0.0 if v == ms else v - ms
                n1 += 1 if s1 == 0.0 else 0
                buf[3, jj] = 0.0 if s1 == 0.0 else _exp(s1)
        if soft:
            rb += _lane_sum(buf[0], size)
            ra += _lane_sum(buf[1], size)
            w += _lane_sum(buf[2], size)
        if hard:
            r1 += _lane_sum(buf[3], size)
    cb = float64(nb)
    ca = float64(na)
    c1 = float64(n1)
    value = 0.0
    lse_a = 0.0
    lse_b = 0.0
    lse_1 = 0.0
    if soft:
        lse_a = _log1p((ca - 1.0) + ra)
        lse_b = _log1p((cb - 1.0) + rb)
        kl = w / (ca + ra) - lse_a + lse_b
        value += alpha * temperature * (temperature * kl)
    if hard:
        lse_1 = _log1p((c1 - 1.0) + r1)
        s_y = 0.0 if float64(srow[y]) == ms else float64(srow[y]) - ms
        value += (1.0 - alpha) * (lse_1 - s_y)

    if want_grad:
        for j in range(k):
            v = float64(srow[j])
            g = 0.0
            if soft:
                b = _shift(v, ms, top_s, temperature, inv_t)
                a = _shift(float64(trow[j]), mt, top_t, temperature, inv_t)
                g += k_soft * (_exp(b - lse_b) - _exp(a - lse_a))
            if hard:
                s1 = 0.0 if v == ms else v - ms
                p = _exp(s1 - lse_1)
                if j == y:
                    p -= 1.0
                g += k_hard * p
            grow[j] = g
    return value


# --------------------------------------------------------------------------
# Fast path of distill_loss: scratch rows of exponentials
# --------------------------------------------------------------------------
# Rows whose maxima are finite (nearly all) take this path: a vectorised
# maximum, one pass per softmax writing e_j = exp(s_j) into a scratch row,
# the sums of those rows, and the gradient from them, three exponentials
# per entry in all. These helpers are compiled apart from the kernels (LLVM
# inlines them, keeping their own flags): no fast-math flag at all, so the
# shift (x - m) * a - c is not contracted into a fused multiply-add and
# stays exactly 0 at the maximum, and error_model="numpy" keeps division
# checks out of the loops.
#
# fastmath=False must be spelled out: a Numba function that leaves it unset
# inherits the flags of the kernel that first compiles it, "contract" among
# them. The maximum's shift then became fma(max, 1 / T, -fl(max / T)), the
# rounding error of max / T instead of 0: T^2 times that was a loss of 1e7
# for a single class at T = 1e21, and with logits of 1e20 its exponential
# overflowed (inf or -inf losses, NaN gradients). The Cython helpers are
# built with -ffp-contract=off for the same reason; the FMA saved about 2%.
_FAST = dict(cache=True, nogil=True, error_model="numpy", fastmath=False)
_FAST_SUM = dict(_FAST, fastmath={"reassoc"})


# exp_like (numba_math) gives each exponential in the dtype of the scratch
# row it goes to: float64 range reduction and a float32 polynomial for
# float32 rows, exp_f64 for float64 ones.


@njit(**_FAST)
def _vmax(row):
    """max(row) skipping NaN (-inf if none): llvm.maxnum, whose reduction
    LLVM vectorises."""
    m = row.dtype.type(-np.inf)
    for j in range(row.shape[0]):
        m = maxnum(m, row[j])
    return np.float64(m)


@njit(**_FAST_SUM)
def _split_sum(e):
    """(c, r): how many e_j == 1 and the sum of the others, in float64.

    reassoc lets LLVM keep vector partial sums; the order is fixed by the
    compiled loop, not by the thread count, and no exp or log is near.
    """
    r = 0.0
    c = 0
    for j in range(e.shape[0]):
        v = np.float64(e[j])
        r += 0.0 if v == 1.0 else v
        c += v == 1.0
    return np.float64(c), r


@njit(**_FAST_SUM)
def _plain_sum(d):
    """sum(d) with vector partial sums (see _split_sum)."""
    r = 0.0
    for j in range(d.shape[0]):
        r += d[j]
    return r


@njit(**_FAST)
def _exp_pass(x, m, a, c, divide, e):
    """e_j = exp(s_j), s_j = (x_j - m) / a - c (divide) or (x_j - m) a - c;
    returns (count of e_j == 1, sum of the others)."""
    k = x.shape[0]
    if divide:
        for j in range(k):
            e[j] = exp_like((np.float64(x[j]) - m) / a - c, e)
    else:
        for j in range(k):
            e[j] = exp_like((np.float64(x[j]) - m) * a - c, e)
    return _split_sum(e)


@njit(**_FAST)
def _exp_cross_pass(t, x, mt, ct, ms, cs, a, divide, e, d):
    """The teacher's pass: as _exp_pass for t (mt, a, ct), plus the cross
    term of KL, sum_j e_j (s_j - u_j) over the e_j != 0, u_j the student's
    shift (ms, a, cs). Returns (count, rest, cross)."""
    k = t.shape[0]
    if divide:
        for j in range(k):
            sa = (np.float64(t[j]) - mt) / a - ct
            sb = (np.float64(x[j]) - ms) / a - cs
            ea = exp_like(sa, e)
            e[j] = ea
            d[j] = 0.0 if ea == 0.0 else np.float64(ea) * (sa - sb)
    else:
        for j in range(k):
            sa = (np.float64(t[j]) - mt) * a - ct
            sb = (np.float64(x[j]) - ms) * a - cs
            ea = exp_like(sa, e)
            e[j] = ea
            d[j] = 0.0 if ea == 0.0 else np.float64(ea) * (sa - sb)
    c, r = _split_sum(e)
    return c, r, _plain_sum(d)


@njit(**_FAST)
def _gap_spread(t, x, top, d):
    """R = max - min of the logit gap (t_j - x_j) - top, NaN skipped (top =
    max t - max x); d is float64 room. Its own pass, made only on the rows
    that need it, so that the exp loops stay vectorised."""
    k = t.shape[0]
    for j in range(k):
        d[j] = (np.float64(t[j]) - np.float64(x[j])) - top
    hi = _vmax(d)
    for j in range(k):
        d[j] = -d[j]
    return hi + _vmax(d)


# Rows whose logit gap spreads over at most T take the cancellation-free
# KL of reference.py (see the comment above its expm1_ratio): D_j = (t_j -
# x_j) - (max t - max x) from exact pairs, C = E_q[D], v = (D - C) / R,
# u = v R / T, and sums of q v^2 h(u), q v^2 g(u) whose terms are >= 0.


@njit(**_FAST)
def _two_diff(a, b):
    """(h, l): h = fl(a - b), h + l = a - b exactly (no fast-math here)."""
    h = a - b
    z = h - a
    return h, (a - (h - z)) - (b + z)


# The cancellation past which the plain KL is not kept: its error, a few
# ulps of M in float64, stays below 1e-13 of kl. The same ratio serves
# float32: its logits are summed in float64 but its exponentials are float32
# (6e-8 of error each), so the plain KL is off by about 1e-7 M; a ratio of
# 2e-7 left 3e-3 relative errors at T = 100 (tests/test_losses.py). The
# Cython kernel uses the same ratio.
_NEAR_RATIO = 2e-2


@njit(**_FAST)
def _expm1_ratio(u):
    """g(u) = (e^u - 1 - u) / u^2 for |u| <= 1: its Taylor polynomial to
    u^16, 1 / (n + 2)! (factorials exact in float64), by Horner."""
    g = 1.0 / 6402373705728000.0
    g = g * u + 1.0 / 355687428096000.0
    g = g * u + 1.0 / 20922789888000.0
    g = g * u + 1.0 / 1307674368000.0
    g = g * u + 1.0 / 87178291200.0
    g = g * u + 1.0 / 6227020800.0
    g = g * u + 1.0 / 479001600.0
    g = g * u + 1.0 / 39916800.0
    g = g * u + 1.0 / 3628800.0
    g = g * u + 1.0 / 362880.0
    g = g * u + 1.0 / 40320.0
    g = g * u + 1.0 / 5040.0
    g = g * u + 1.0 / 720.0
    g = g * u + 1.0 / 120.0
    g = g * u + 1.0 / 24.0
    g = g * u + 1.0 / 6.0
    return g * u + 0.5


@njit(**_FAST)
def _log1p_ratio(w):
    """log1p(w) / w for w >= 0, by its series below 1e-4 (1 at w = 0)."""
    if w < 1e-4:
        return 1.0 - w * (0.5 - w * (1.0 / 3.0 - w * (0.25 - w * 0.2)))
    return math.log1p(w) / w


@njit(**_FAST)
def _near_gap(t, x, hi_top, lo_top, j):
    """D_j = (t_j - x_j) - (max t - max x) from exact pairs."""
    hi, lo = _two_diff(np.float64(t[j]), np.float64(x[j]))
    return (hi - hi_top) + (lo - lo_top)


@njit(**_FAST)
def _near_sums(t, x, mt, ms, eb, total, spread, lam, out, buf):
    """(E_q[v^2 h(u)], E_q[v^2 g(u)]) with q = eb / total; writes
    out_j = eb_j v_j h(u_j), the student's part of T (q - p) up to scalars.
    Entries with eb_j = 0 take no part (their D may be NaN)."""
    k = t.shape[0]
    hi_top, lo_top = _two_diff(mt, ms)
    a = buf[0]
    b = buf[1]
    for j in range(k):
        e = np.float64(eb[j])
        a[j] = 0.0 if e == 0.0 else e * _near_gap(t, x, hi_top, lo_top, j)
    centre = _plain_sum(a) / total
    scale = spread if spread > 0.0 else 1.0  # R = 0: every v_j is 0
    for j in range(k):
        e = np.float64(eb[j])
        v = (_near_gap(t, x, hi_top, lo_top, j) - centre) / scale
        u = v * lam
        g = _expm1_ratio(u)
        h = 1.0 + u * g
        vv = v * v
        keep = e != 0.0
        a[j] = e * (vv * h) if keep else 0.0
        b[j] = e * (vv * g) if keep else 0.0
        out[j] = e * (v * h) if keep else 0.0
    return _plain_sum(a) / total, _plain_sum(b) / total


@njit(**_FAST)
def _distill_grad(g, eb, ib, ea, ia, ks, e1, i1, kh, soft, hard):
    """g_j = ks (eb_j ib - ea_j ia) + kh e1_j i1, a term left out where it
    does not apply (the caller fixes the label's entry)."""
    k = g.shape[0]
    if soft and hard:
        for j in range(k):
            g[j] = ks * (np.float64(eb[j]) * ib - np.float64(ea[j]) * ia) + kh * (
                np.float64(e1[j]) * i1
            )
    elif soft:
        for j in range(k):
            g[j] = ks * (np.float64(eb[j]) * ib - np.float64(ea[j]) * ia)
    elif hard:
        for j in range(k):
            g[j] = kh * (np.float64(e1[j]) * i1)
    else:
        for j in range(k):
            g[j] = 0.0


@njit(**_FAST)
def _distill_fast(
    srow,
    trow,
    y,
    soft,
    hard,
    temperature,
    inv_t,
    alpha,
    grad_scale,
    k_soft,
    k_hard,
    near_ratio,
    want_grad,
    g,
    scratch,
    cross,
):
    """One row of distill_loss on the fast path: (True, loss), gradient
    written; (False, 0) with nothing written when a maximum is not finite
    or a float32 KL has cancelled where only float64 keeps it.
    scratch holds the exponentials of the student's and the teacher's
    shifts at T and of the student's at T = 1; cross is two float64 rows
    of room."""
    ms = _vmax(srow)
    mt = _vmax(trow) if soft else 0.0
    if not (math.isfinite(ms) and math.isfinite(mt)):
        return False, 0.0
    eb = scratch[0]
    ea = scratch[1]
    e1 = scratch[2]
    value = 0.0
    ib = 0.0
    ia = 0.0
    i1 = 0.0
    if soft:
        # The order of _shift: x / T - max / T for T >= 1, else (x - max) / T.
        divide = temperature < 1.0
        if divide:
            a, m_s, c_s, m_t, c_t = temperature, ms, 0.0, mt, 0.0
        else:
            a, m_s, c_s, m_t, c_t = inv_t, 0.0, ms * inv_t, 0.0, mt * inv_t
        cb, rb = _exp_pass(srow, m_s, a, c_s, divide, eb)
        ca, ra, w = _exp_cross_pass(
            trow, srow, m_t, c_t, m_s, c_s, a, divide, ea, cross[0]
        )
        # KL = w / S_a - log S_a + log S_b.
        cross_term = w / (ca + ra)
        lse_a = math.log1p((ca - 1.0) + ra)
        lse_b = math.log1p((cb - 1.0) + rb)
        kl = cross_term - lse_a + lse_b
        # e^{-lse} rather than 1 / S: the reference's exp(s - lse) exactly
        # where e_j = 1.
        ib = math.exp(-lse_b)
        ia = math.exp(-lse_a)
        # The plain KL is a difference of terms of size M: where it has
        # cancelled past what the dtype shows (kl <= near_ratio M) and the
        # gap spreads over at most T (|u| <= 1), the cancellation-free form
        # takes over; ea becomes eb v h(u), and T (q - p) = R (eb ib lam
        # E[v^2 g] - ea ib) / (1 + W). A NaN kl fails the test.
        big_m = abs(cross_term) + abs(lse_a) + abs(lse_b)
        spread = np.inf
        if kl <= near_ratio * big_m:
            spread = _gap_spread(trow, srow, mt - ms, cross[0])
            if spread > temperature and srow.itemsize == 4:
                # Cancelled, but too spread for that form: float32
                # exponentials would leave the plain KL off by up to 4e-3
                # relative. The slow path redoes the row in float64.
                return False, 0.0
        if spread <= temperature:
            lam = spread / temperature
            big_v, big_w = _near_sums(
                trow, srow, mt, ms, eb, cb + rb, spread, lam, ea, cross
            )
            wq = lam * (lam * big_w)
            kl = spread * (spread * (big_v / (1.0 + wq) - big_w * _log1p_ratio(wq)))
            value += alpha * kl
            k_soft = alpha * grad_scale * spread
            ia = ib / (1.0 + wq)
            ib = ia * (lam * big_w)
        else:
            value += alpha * temperature * (temperature * kl)
    if hard:
        c1, r1 = _exp_pass(srow, ms, 1.0, 0.0, False, e1)
        lse_1 = math.log1p((c1 - 1.0) + r1)
        value += (1.0 - alpha) * (lse_1 - (np.float64(srow[y]) - ms))
        i1 = math.exp(-lse_1)
    if want_grad:
        _distill_grad(g, eb, ib, ea, ia, k_soft, e1, i1, k_hard, soft, hard)
        if hard:
            gy = k_hard * (np.float64(e1[y]) * i1 - 1.0)
            if soft:
                gy = k_soft * (np.float64(eb[y]) * ib - np.float64(ea[y]) * ia) + gy
            g[y] = gy
    return True, value


# --------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------
def _sigs(make):
    return [make(f) for f in (float32, float64)]


def _in2(f):
    # Inputs are typed read-only so that read-only arrays are accepted (a
    # writeable array converts to this type safely).
    return types.Array(f, 2, "C", readonly=True)


_LABELS = types.Array(int64, 1, "C", readonly=True)


@njit(
    _sigs(
        lambda f: void(
            _in2(f),
            _LABELS,
            float64,
            float64,
            int64,
            float64,
            float64[::1],
            f[:, ::1],
        )
    ),
    **_KERNEL,
)
def nll_rows(x, labels, temperature, smoothing, ignore_index, grad_scale, loss, grad):
    n, k = x.shape
    want_grad = grad.shape[0] != 0
    inv_t = 1.0 / temperature
    factor = grad_scale / temperature
    finite = math.isfinite(factor)
    per_class = smoothing / k
    for i in prange(n):
        y = labels[i]
        if y == ignore_index:
            loss[i] = 0.0
            if want_grad:
                for j in range(k):
                    grad[i, j] = 0.0
            continue
        row = x[i]
        m = _row_max(row)
        top = _top(m, temperature)

        # Sums of exp(s) (as c + r) and of s, the latter for the smoothing.
        c = 0.0
        r = 0.0
        total = 0.0
        for j in range(k):
            s = _shift(float64(row[j]), m, top, temperature, inv_t)
            c += 1.0 if s == 0.0 else 0.0
            r += 0.0 if s == 0.0 else _exp(s)
            total += s
        lse = _log1p((c - 1.0) + r)

        # -log p_y = lse - s_y and sum_j -log p_j = k lse - sum_j s_j, both
        # sums of terms >= 0 (s <= 0 <= lse): no cancellation.
        value = 0.0
        if smoothing != 1.0:
            s_y = _shift(float64(row[y]), m, top, temperature, inv_t)
            value += (1.0 - smoothing) * (lse - s_y)
        if smoothing != 0.0:
            value += per_class * (k * lse - total)
        loss[i] = value

        if want_grad:
            for j in range(k):
                s = _shift(float64(row[j]), m, top, temperature, inv_t)
                d = _exp(s - lse) - per_class
                if j == y:
                    d -= 1.0 - smoothing
                grad[i, j] = _grad(d, factor, finite, temperature, grad_scale)


@njit(
    _sigs(lambda f: void(_in2(f), _in2(f), float64, float64, float64[::1], f[:, ::1])),
    **_KERNEL,
)
def soft_ce_rows(x, target, temperature, grad_scale, loss, grad):
    n, k = x.shape
    want_grad = grad.shape[0] != 0
    inv_t = 1.0 / temperature
    factor = grad_scale / temperature
    finite = math.isfinite(factor)
    for i in prange(n):
        row = x[i]
        t = target[i]
        m = _row_max(row)
        top = _top(m, temperature)

        # loss = sum_j t_j (lse - s_j) = sum(t) lse - sum_j t_j s_j, where
        # a t_j of 0 is left out even if s_j is -inf.
        c = 0.0
        r = 0.0
        t_sum = 0.0
        ts = 0.0
        for j in range(k):
            s = _shift(float64(row[j]), m, top, temperature, inv_t)
            tj = float64(t[j])
            c += 1.0 if s == 0.0 else 0.0
            r += 0.0 if s == 0.0 else _exp(s)
            t_sum += tj
            ts += 0.0 if tj == 0.0 else tj * s
        lse = _log1p((c - 1.0) + r)
        loss[i] = t_sum * lse - ts if t_sum != 0.0 else 0.0

        if want_grad:
            for j in range(k):
                s = _shift(float64(row[j]), m, top, temperature, inv_t)
                d = t_sum * _exp(s - lse) - float64(t[j])
                grad[i, j] = _grad(d, factor, finite, temperature, grad_scale)


@njit(
    _sigs(
        lambda f: void(
            _in2(f),
            _in2(f),
            _LABELS,
            float64,
            float64,
            float64,
            float64[::1],
            f[:, ::1],
        )
    ),
    **_KERNEL,
)
def distill_rows(student, teacher, labels, temperature, alpha, grad_scale, loss, grad):
    n, k = student.shape
    want_grad = grad.shape[0] != 0
    soft = alpha != 0.0
    hard = labels.shape[0] != 0 and alpha != 1.0
    inv_t = 1.0 / temperature
    # d loss / d student = k_soft (q_s - q_t) + k_hard (p - onehot(y)).
    k_soft = alpha * temperature * grad_scale
    k_hard = (1.0 - alpha) * grad_scale
    near_ratio = _NEAR_RATIO
    tasks = (n + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    for task in prange(tasks):
        # Scratch rows of exponentials (in the logits' dtype) for the fast
        # path, float64 chunk buffers for the slow one.
        scratch = np.empty((3, k), student.dtype)
        cross = np.empty((2, k), np.float64)
        buf = np.empty((4, _CHUNK))
        no_grad = np.empty(0, grad.dtype)
        for i in range(task * _ROWS_PER_TASK, min(n, (task + 1) * _ROWS_PER_TASK)):
            y = labels[i] if hard else 0
            g = grad[i] if want_grad else no_grad
            done, value = _distill_fast(
                student[i],
                teacher[i],
                y,
                soft,
                hard,
                temperature,
                inv_t,
                alpha,
                grad_scale,
                k_soft,
                k_hard,
                near_ratio,
                want_grad,
                g,
                scratch,
                cross,
            )
            if not done:
                value = _distill_slow(
                    student[i],
                    teacher[i],
                    y,
                    soft,
                    hard,
                    temperature,
                    inv_t,
                    alpha,
                    k_soft,
                    k_hard,
                    want_grad,
                    g,
                    buf,
                )
            loss[i] = value
