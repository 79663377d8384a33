"""NumPy reference kernels: the readable truth every backend is tested against.

Each function here has a compiled twin of the same name and signature in
``numba_<topic>.py`` and ``_cython/_<topic>.pyx``. A kernel takes 2-D
C-contiguous float32 or float64 arrays, reduces along the last axis, writes
into the ``out`` arrays it is given and returns nothing. The references
compute in float64 whatever the input dtype and round once when they store,
so they are the most accurate of the three backends, not the fastest.
"""

from __future__ import annotations

import math

import numpy as np

# ==========================================================================
# softmax, log_softmax, logsumexp
# ==========================================================================
#
# For a row z and a temperature T every function works on the shifted,
# scaled row s = z / T - max(z / T), computed without overflow:
#
# * T >= 1: divide first, then subtract the maximum (z / T cannot overflow);
# * T < 1: subtract the maximum first, then divide; a shifted value that
#   overflows to -inf has a true exponential that underflows to 0 anyway.
#
# Every entry equal to the maximum has s == 0 exactly. With c such entries
# and r the sum of exp(s) over the others, the normaliser is S = c + r and
# log S = log1p((c - 1) + r), which keeps r even when it is below the
# rounding of 1 (logsumexp([0, -40]) = 4.25e-18, not 0).
#
# Rows that are not finite follow DESIGN.md:
# * a NaN anywhere: every output of the row is NaN;
# * no NaN and the maximum is +inf: logsumexp is +inf; softmax is the
#   one-hot limit when exactly one entry is +inf, and NaN for two or more;
# * every entry -inf (k > 0): logsumexp is -inf, softmax is NaN;
# * k == 0: logsumexp is -inf and softmax writes nothing.


def _store(out: np.ndarray, values: np.ndarray) -> None:
    """Round float64 results into ``out``; a float32 result beyond the float32
    range is legitimately +-inf, so the cast's overflow warning is silenced."""
    with np.errstate(over="ignore"):
        out[...] = values


def _shifted(x: np.ndarray, temperature: float):
    """Return (s, top) in float64: s as above, top = max(z) / T per row.

    Rows whose maximum is not finite get s = NaN and are fixed by the
    callers; ``top`` keeps the maximum (NaN, +inf or -inf) for them.
    """
    z = x.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        if temperature >= 1.0:
            z = z / temperature
            top = z.max(axis=1, initial=-np.inf)
            s = z - top[:, None]
        else:
            top = z.max(axis=1, initial=-np.inf)
            s = (z - top[:, None]) / temperature
            top = top / temperature
    return s, top


def _log_normaliser(s: np.ndarray) -> np.ndarray:
    """log sum_j exp(s_j) per row, with the log1p split described above."""
    at_max = s == 0.0
    count = at_max.sum(axis=1)
    rest = np.where(at_max, 0.0, np.exp(s)).sum(axis=1)
    with np.errstate(divide="ignore"):  # an empty row: log 0 = -inf
        return np.log1p((count - 1.0) + rest)


def _posinf_rows(x: np.ndarray, top: np.ndarray):
    """Rows without NaN whose maximum is +inf, and their count of +inf."""
    posinf = np.isposinf(x)
    # From x, not top: a finite maximum whose max / T overflows (T < 1) is
    # not a +inf logit.
    rows = posinf.any(axis=1) & ~np.isnan(x).any(axis=1)
    return rows, posinf, posinf.sum(axis=1)


def softmax_rows(x: np.ndarray, temperature: float, out: np.ndarray) -> None:
    """out[i] = softmax(x[i] / temperature), row by row."""
    s, top = _shifted(x, temperature)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.exp(s) / np.exp(_log_normaliser(s))[:, None]
    # The +inf rows: a one-hot limit for a single +inf, undefined otherwise.
    rows, posinf, count = _posinf_rows(x, top)
    p[rows] = np.where(count[rows, None] == 1, posinf[rows].astype(float), np.nan)
    _store(out, p)


def log_softmax_rows(x: np.ndarray, temperature: float, out: np.ndarray) -> None:
    """out[i] = log_softmax(x[i] / temperature), row by row."""
    s, top = _shifted(x, temperature)
    with np.errstate(invalid="ignore", divide="ignore"):
        logp = s - _log_normaliser(s)[:, None]
        rows, posinf, count = _posinf_rows(x, top)
        limit = np.log(posinf[rows].astype(float))
    logp[rows] = np.where(count[rows, None] == 1, limit, np.nan)
    _store(out, logp)


def logsumexp_rows(x: np.ndarray, temperature: float, out: np.ndarray) -> None:
    """out[i] = log(sum_j exp(x[i, j] / temperature))."""
    s, top = _shifted(x, temperature)
    with np.errstate(invalid="ignore"):
        lse = top + _log_normaliser(s)
    # A finite top leaves the formula exact; otherwise top says it all:
    # +inf or -inf (all -inf, or an empty row), or NaN from a NaN entry.
    finite = np.isfinite(top)
    lse[~finite] = top[~finite]
    lse[np.isnan(x).any(axis=1)] = np.nan
    _store(out, lse)


def logsumexp_weighted_rows(
    x: np.ndarray,
    b: np.ndarray,
    temperature: float,
    out: np.ndarray,
    sign: np.ndarray,
) -> None:
    """out[i] = log|sum_j b[i, j] exp(x[i, j] / T)|, sign[i] = its sign.

    As in SciPy, an entry whose weight is 0 takes no part, even if it is
    infinite or NaN. Among the others, with a = x / T and amax their
    maximum, the entries equal to amax contribute their weights w exactly
    and the rest r = sum b exp(a - amax), so that

        log|sum| = amax + log|w| + log1p(r / w)       (w != 0)
        log|sum| = amax + log|r|                      (w == 0)

    A zero sum gives -inf with sign 0; a row with no usable entry is a
    zero sum. NaN in a used entry or weight gives NaN and sign NaN.
    """
    x = np.where(b == 0, -np.inf, x).astype(x.dtype)
    s, top = _shifted(x, temperature)
    bb = b.astype(np.float64)
    used = bb != 0
    # With a +inf maximum the shift is NaN at the +inf entries: they are the
    # entries at the maximum all the same.
    at_max = used & ((s == 0.0) | (np.isposinf(top)[:, None] & np.isposinf(x)))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        w = np.where(at_max, bb, 0.0).sum(axis=1)
        r = np.where(used & ~at_max, bb * np.exp(s), 0.0).sum(axis=1)
        # |w + r| = |w| |1 + t| with t = r / w; for 1 + t < 0 the magnitude
        # |1 + t| = 1 + (-t - 2), which log1p takes without cancellation.
        t = r / w
        log_abs = np.where(
            w != 0,
            top + np.log(np.abs(w)) + np.log1p(np.where(t < -1.0, -t - 2.0, t)),
            top + np.log(np.abs(r)),
        )
        total_sign = np.where(w != 0, np.sign(w) * np.sign(1.0 + t), np.sign(r))
    # Rows whose used entries are all -inf (or that have none) sum to 0.
    empty = np.isneginf(top)
    log_abs[empty] = -np.inf
    total_sign[empty] = 0.0
    _store(out, log_abs)
    sign[...] = total_sign


# ==========================================================================
# divergences: entropy, cross-entropy, KL and JS of rows of probabilities
# ==========================================================================
#
# p and q are (n, k) or (1, k): a single row stands for every row (an
# (n, k) batch against one distribution), and ``out`` is a float64 (n,)
# array whatever the input dtype; the public functions apply base= and the
# square root of js_distance, then round once to the output dtype.
#
# The conventions of DESIGN.md: a term whose weight p is 0 is 0 even where
# its log is -inf or NaN (0 log 0 = 0, 0 log(0 / 0) = 0); p > 0 where q = 0
# makes KL and cross-entropy +inf; a NaN entry makes its row NaN; empty rows
# give 0. All logs are taken in float64.

_TINY = np.finfo(np.float64).tiny
_HUGE = np.finfo(np.float64).max


def _f64(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float64, copy=False)


def _weighted(w: np.ndarray, log_term: np.ndarray) -> np.ndarray:
    """w * log_term, with 0 wherever w == 0 (NaN weights stay NaN)."""
    return np.where(w == 0.0, 0.0, w * log_term)


def entropy_rows(p: np.ndarray, out: np.ndarray) -> None:
    """out[i] = -sum_j p[i, j] log p[i, j]."""
    p = _f64(p)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = _weighted(p, np.log(p))
    # 0.0 - sum keeps +0.0 for empty and one-hot rows.
    out[...] = 0.0 - terms.sum(axis=1)


def cross_entropy_rows(p: np.ndarray, q: np.ndarray, out: np.ndarray) -> None:
    """out[i] = -sum_j p[i, j] log q[i, j]."""
    p, q = _f64(p), _f64(q)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = _weighted(p, np.log(q))
    out[...] = 0.0 - terms.sum(axis=1)


def log_ratio(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """log(p / q) elementwise, also where p / q overflows or underflows.

    The ratio is taken first (one rounding, exact near p == q); where it is
    not a normal number the difference of the logs is used instead, which
    gives +inf for q == 0 < p and the right finite value for a subnormal q
    (2 * log(2 / 2.2e-308) = 1418.18, where 2 / q would be 9e307).
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        r = p / q
        normal = (r >= _TINY) & (r <= _HUGE)
        return np.where(normal, np.log(np.where(normal, r, 1.0)), np.log(p) - np.log(q))


def kl_rows(p: np.ndarray, q: np.ndarray, out: np.ndarray) -> None:
    """out[i] = sum_j p[i, j] log(p[i, j] / q[i, j])."""
    p, q = np.broadcast_arrays(_f64(p), _f64(q))
    with np.errstate(invalid="ignore"):
        terms = _weighted(p, log_ratio(p, q))
    out[...] = terms.sum(axis=1)


# Up to this |d| = |p - q| / (p + q) a JS term comes from its series.
_JS_NEAR = 0.0625


def js_rows(p: np.ndarray, q: np.ndarray, out: np.ndarray) -> None:
    """out[i] = JS(p[i], q[i]), clamped at 0.

    Each entry contributes (p log(2p / s) + q log(2q / s)) / 2 with s = p + q,
    never computed through m = s / 2. With d = (p - q) / s that is
    (s / 4) ((1 + d) log(1 + d) + (1 - d) log(1 - d)), and for |d| <= 1/16
    it is taken from the series of the bracket, sum_{n >= 1} d^(2n) /
    (n (2n - 1)), to six terms (under 4e-17 relative): there the two logs
    are +-d and would cancel to d^2, leaving eps / d^2 of relative error
    (1e-4 at d = 1e-6). An entry with p == q contributes exactly 0, so
    JS(p, p) == 0.
    """
    p, q = np.broadcast_arrays(_f64(p), _f64(q))
    with np.errstate(divide="ignore", invalid="ignore"):
        s = p + q
        d = (p - q) / s
        # Where q / s < 2^-54, d rounds to 1 and log(1 - d) to -inf although
        # 2q / s > 0: the log is then taken of 2q / s itself (and of 2p / s
        # where d rounds to -1). Elsewhere 1 -+ d is exact (Sterbenz) and d
        # carries its 1.5 ulp, an error of eps s in the term.
        lp = np.where(d == -1.0, np.log((p + p) / s), np.log1p(d))
        lq = np.where(d == 1.0, np.log((q + q) / s), np.log1p(-d))
        terms = _weighted(p, lp) + _weighted(q, lq)
        z = d * d
        series = 1.0 + z * (
            1.0 / 6 + z * (1.0 / 15 + z * (1.0 / 28 + z * (1.0 / 45 + z * (1.0 / 66))))
        )
        terms = np.where(np.abs(d) <= _JS_NEAR, (0.5 * s) * (z * series), terms)
        terms = np.where(p == q, 0.0, terms)
        total = 0.5 * terms.sum(axis=1)
    # Rounding can leave a tiny negative total; NaN must stay NaN.
    out[...] = np.where(total < 0.0, 0.0, total)


def probability_check_rows(x: np.ndarray, sums: np.ndarray, negatives: np.ndarray):
    """sums[i] = sum_j x[i, j] in float64; negatives[i] = #{j : x[i, j] < 0}."""
    # A row of finite entries may sum to inf; the caller handles that.
    with np.errstate(over="ignore"):
        sums[...] = x.sum(axis=1, dtype=np.float64)
    negatives[...] = (x < 0).sum(axis=1)


# The same kernels with the probability check of their inputs: the sums and
# negative counts of probability_check_rows, for each row of p (and of q),
# stored in the given arrays (of p's and q's own number of rows). The
# compiled twins check each row in the pass that reads it for the
# divergence; here the checks simply come first.


def entropy_rows_checked(p, out, p_sums, p_negatives) -> None:
    """entropy_rows, with the check of p into p_sums and p_negatives."""
    probability_check_rows(p, p_sums, p_negatives)
    entropy_rows(p, out)


def cross_entropy_rows_checked(
    p, q, out, p_sums, p_negatives, q_sums, q_negatives
) -> None:
    """cross_entropy_rows, with the checks of p and q."""
    probability_check_rows(p, p_sums, p_negatives)
    probability_check_rows(q, q_sums, q_negatives)
    cross_entropy_rows(p, q, out)


def kl_rows_checked(p, q, out, p_sums, p_negatives, q_sums, q_negatives) -> None:
    """kl_rows, with the checks of p and q."""
    probability_check_rows(p, p_sums, p_negatives)
    probability_check_rows(q, q_sums, q_negatives)
    kl_rows(p, q, out)


def js_rows_checked(p, q, out, p_sums, p_negatives, q_sums, q_negatives) -> None:
    """js_rows, with the checks of p and q."""
    probability_check_rows(p, p_sums, p_negatives)
    probability_check_rows(q, q_sums, q_negatives)
    js_rows(p, q, out)


# ==========================================================================
# losses on logits: nll, soft cross-entropy, distillation (+ gradients)
# ==========================================================================
#
# Every loss kernel writes one float64 loss per row into ``loss`` (the
# caller reduces them) and, when ``grad`` has rows (it is (0, k) when no
# gradient is wanted), the gradient of ``grad_scale * sum(loss)`` with
# respect to the logits, in the logits' dtype. The probabilities come from
# the softmax section above, so every loss inherits its conventions for
# -inf, +inf and NaN logits and its overflow-free temperature handling.
#
# A term whose weight is exactly 0 (label_smoothing 0 or 1, alpha 0 or 1, a
# target probability 0) is left out rather than multiplied by 0, so that an
# infinite factor cannot turn it into NaN.


def _log_probs(x: np.ndarray, temperature: float) -> np.ndarray:
    """log_softmax(x / temperature) per row, in float64."""
    logp = np.empty(x.shape, np.float64)
    log_softmax_rows(x, temperature, logp)
    return logp


def _scaled(d: np.ndarray, temperature: float, grad_scale: float) -> np.ndarray:
    # d / T first: grad_scale / T can overflow where d / T is still finite.
    return d / temperature * grad_scale


def nll_rows(
    x: np.ndarray,
    labels: np.ndarray,
    temperature: float,
    smoothing: float,
    ignore_index: int,
    grad_scale: float,
    loss: np.ndarray,
    grad: np.ndarray,
) -> None:
    """loss[i] = (1 - eps) (-log p_y) + eps / k sum_j (-log p_j), p the
    softmax of x[i] / T, y = labels[i]; 0 where labels[i] == ignore_index.

    grad[i] = grad_scale (p - (1 - eps) onehot(y) - eps / k) / T, 0 for
    ignored rows. Labels other than ignore_index lie in [0, k).
    """
    n, k = x.shape
    keep = labels != ignore_index
    rows = np.flatnonzero(keep)
    logp = _log_probs(x[rows], temperature)
    y = labels[rows]
    result = np.zeros(n, np.float64)
    part = np.zeros(rows.size, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        if smoothing != 1.0:
            part += (1.0 - smoothing) * -logp[np.arange(rows.size), y]
        if smoothing != 0.0:
            part += smoothing / k * (-logp).sum(axis=1)
    result[rows] = part
    loss[...] = result
    if grad.shape[0]:
        target = np.full(logp.shape, smoothing / k)
        target[np.arange(rows.size), y] += 1.0 - smoothing
        g = np.zeros(x.shape, np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            g[rows] = _scaled(np.exp(logp) - target, temperature, grad_scale)
            grad[...] = g


def soft_ce_rows(
    x: np.ndarray,
    target: np.ndarray,
    temperature: float,
    grad_scale: float,
    loss: np.ndarray,
    grad: np.ndarray,
) -> None:
    """loss[i] = -sum_j t_j log p_j over the t_j != 0, p the softmax of
    x[i] / T and t = target[i]; grad[i] = grad_scale (sum(t) p - t) / T.
    """
    logp = _log_probs(x, temperature)
    t = target.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        loss[...] = np.where(t != 0.0, t * -logp, 0.0).sum(axis=1)
    if grad.shape[0]:
        with np.errstate(invalid="ignore", over="ignore"):
            d = t.sum(axis=1)[:, None] * np.exp(logp) - t
            grad[...] = _scaled(d, temperature, grad_scale)


# Near-equal distributions: the cancellation-free KL of distill_loss.
#
# T^2 KL(p || q) is about Var(t - s) / 2, while the plain form
# E_p[a - b] - lse_a + lse_b subtracts numbers of size log k (and 1 / T):
# at T = 1e8 or for a student within 1e-6 of its teacher it keeps no digit.
# With D_j = (t_j - max t) - (s_j - max s) the difference of the logits
# (raw, not divided by T; 0 lies between its extremes), R = max D - min D,
# C = E_q[D] and
# v_j = (D_j - C) / R, u_j = (D_j - C) / T = lam v_j (lam = R / T), every
# term below is a sum of non-negative parts of the second order:
#
#     p_j = q_j e^{u_j} / (1 + W),  E_q[u] = 0,
#     W = E_q[e^u - 1 - u] = lam^2 E_q[v^2 g(u)],
#     E_p[u] = E_q[u (e^u - 1)] / (1 + W) = lam^2 E_q[v^2 h(u)] / (1 + W),
#     T^2 KL = T^2 (E_p[u] - log1p(W))
#            = R^2 (E_q[v^2 h] / (1 + W) - E_q[v^2 g] log1p(W) / W),
#     T (q_j - p_j) = R q_j (lam E_q[v^2 g] - v_j h(u_j)) / (1 + W),
#
# with g(u) = (e^u - 1 - u) / u^2 and h(u) = (e^u - 1) / u = 1 + u g(u).
# It is used on the rows where |u| <= 1 (R <= T, both maxima finite, no
# NaN), where g is its Taylor polynomial below; the others keep the plain
# form, whose error is then small beside the loss. Entries with q_j = 0
# take no part (there p_j = 0 too, as |u_j| <= 1).

# 1 / (n + 2)! for n = 16 .. 0: g(u) = sum_n u^n / (n + 2)!, whose tail
# past u^16 is below 1e-17 g(u) on [-1, 1].
EXPM1_RATIO_COEFFS = tuple(1.0 / math.factorial(n + 2) for n in range(16, -1, -1))
# log1p(W) / W by its series below this W (error < W^5 / 6).
LOG1P_RATIO_SERIES = 1e-4


def expm1_ratio(u):
    """g(u) = (e^u - 1 - u) / u^2 for |u| <= 1 (Horner, no cancellation)."""
    g = EXPM1_RATIO_COEFFS[0]
    for c in EXPM1_RATIO_COEFFS[1:]:
        g = g * u + c
    return g


def log1p_ratio(w):
    """log1p(w) / w for w >= 0 (1 at w = 0)."""
    if w < LOG1P_RATIO_SERIES:
        return 1.0 - w * (0.5 - w * (1.0 / 3.0 - w * (0.25 - w * 0.2)))
    return math.log1p(w) / w


def two_diff(a, b):
    """(h, l) with h = fl(a - b) and h + l = a - b exactly (Knuth)."""
    h = a - b
    z = h - a
    return h, (a - (h - z)) - (b + z)


def _near_rows(student, teacher, temperature):
    """Rows where the cancellation-free KL applies, with D and R there.

    D_j = (t_j - s_j) - (max t - max s), each difference taken exactly as a
    pair (two_diff) so that a student within 1e-12 of its teacher, or one
    offset from it by a constant, still gives D to a few ulps; R is the
    spread of the plain (t_j - s_j) - (max t - max s), NaN skipped.
    """
    s = student.astype(np.float64)
    t = teacher.astype(np.float64)
    # np.max propagates NaN: a NaN anywhere makes the maximum NaN.
    ms = s.max(axis=1)
    mt = t.max(axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        rows = np.isfinite(ms) & np.isfinite(mt)
        gap, gap_lo = two_diff(t, s)
        top, top_lo = two_diff(mt, ms)
        d = gap - top[:, None]
        spread = np.fmax.reduce(d, axis=1) - np.fmin.reduce(d, axis=1)
        rows &= spread <= temperature
        d += gap_lo - top_lo[:, None]
    return np.flatnonzero(rows), d, spread


def _near_kl(q, d, spread, temperature):
    """(T^2 KL(p || q), T (q - p)) per row of the near rows (see above)."""
    keep = q != 0.0
    qd = np.where(keep, q * d, 0.0)
    centre = qd.sum(axis=1) / np.where(keep, q, 0.0).sum(axis=1)
    r = np.where(spread > 0.0, spread, 1.0)  # R = 0: every v_j = 0
    with np.errstate(invalid="ignore"):
        v = np.where(keep, (d - centre[:, None]) / r[:, None], 0.0)
    lam = spread / temperature
    g = expm1_ratio(v * lam[:, None])
    h = 1.0 + (v * lam[:, None]) * g
    qv2 = q * (v * v)
    big_v = (qv2 * h).sum(axis=1)
    big_w = (qv2 * g).sum(axis=1)
    w = lam * (lam * big_w)
    ratio = np.array([log1p_ratio(x) for x in w])
    kl = spread * (spread * (big_v / (1.0 + w) - big_w * ratio))
    diff = (spread / (1.0 + w))[:, None] * (q * (lam * big_w)[:, None] - q * v * h)
    return kl, diff


def distill_rows(
    student: np.ndarray,
    teacher: np.ndarray,
    labels: np.ndarray,
    temperature: float,
    alpha: float,
    grad_scale: float,
    loss: np.ndarray,
    grad: np.ndarray,
) -> None:
    """loss[i] = alpha T (T KL(q_t || q_s)) + (1 - alpha) (-log p_y).

    q_t and q_s are the softmax of teacher[i] / T and student[i] / T, p the
    softmax of student[i] at T = 1 and y = labels[i]. ``labels`` of length 0
    leaves the hard term out. KL sums q_t (log q_t - log q_s) over the
    entries where q_t != 0; rows whose logit differences spread over at most
    T take the cancellation-free form above. The gradient with respect to
    the student is grad_scale (alpha T (q_s - q_t) + (1 - alpha) (p -
    onehot(y))).
    """
    n, k = student.shape
    soft = alpha != 0.0
    hard = labels.shape[0] != 0 and alpha != 1.0
    result = np.zeros(n, np.float64)
    g = np.zeros(student.shape, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        if soft:
            la = _log_probs(teacher, temperature)
            lb = _log_probs(student, temperature)
            qt = np.exp(la)
            qs = np.exp(lb)
            kl = np.where(qt != 0.0, qt * (la - lb), 0.0).sum(axis=1)
            # T^2 KL as T (T KL): T * T alone may overflow.
            part = alpha * temperature * (temperature * kl)
            diff = alpha * temperature * (qs - qt)
            rows, d, spread = _near_rows(student, teacher, temperature)
            if rows.size:
                kl, near = _near_kl(qs[rows], d[rows], spread[rows], temperature)
                part[rows] = alpha * kl
                diff[rows] = alpha * near
            result += part
            g += diff
        if hard:
            l1 = _log_probs(student, 1.0)
            result += (1.0 - alpha) * -l1[np.arange(n), labels]
            p1 = np.exp(l1)
            p1[np.arange(n), labels] -= 1.0
            g += (1.0 - alpha) * p1
    loss[...] = result
    if grad.shape[0]:
        with np.errstate(over="ignore"):  # beyond float32's range: inf
            grad[...] = g * grad_scale


# ==========================================================================
# pairwise: Jensen-Shannon matrices between the rows of P and Q
# ==========================================================================
#
# out[i, j] = JS(P[i], Q[j]) = 1/2 sum_c [p log(2p / (p + q)) + q log(2q / (p + q))]
# with a term that is exactly 0 where its p (or q) is 0, clamped at 0.
#
# ``diag`` selects the symmetric mode used for P against itself: with
# diag >= 0, row i of P is row i + diag of Q, only the entries j > i + diag
# are computed, out[i, i + diag] is set to exactly 0 and the entries
# j < i + diag are left untouched (the caller mirrors them). diag < 0 fills
# the whole rectangle. The tile sizes only matter to the compiled twins
# (they size their cache blocks); here they bound the temporaries.


def _js_terms(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Elementwise p log(2p / (p + q)) + q log(2q / (p + q)) in float64."""
    s = p + q
    with np.errstate(divide="ignore", invalid="ignore"):
        # (p / s) * 2 rounds once, and p / s <= 1 cannot overflow.
        a = np.where(p > 0, p * np.log((p / s) * 2.0), 0.0)
        b = np.where(q > 0, q * np.log((q / s) * 2.0), 0.0)
    t = a + b
    # NaN input (possible with check=False) propagates.
    return np.where(np.isnan(p) | np.isnan(q), np.nan, t)


def js_pairwise(
    P: np.ndarray,
    Q: np.ndarray,
    out: np.ndarray,
    diag: int,
    tile_p: int,
    tile_q: int,
    tile_k: int,
) -> None:
    """out[i, j] = JS(P[i], Q[j]); see the section comment for ``diag``."""
    n, k = P.shape
    m = Q.shape[0]
    Q64 = Q.astype(np.float64)
    step = max(1, (1 << 20) // max(k, 1))  # about 8 MB of float64 per step
    for i in range(n):
        p = P[i].astype(np.float64)
        lo = 0 if diag < 0 else i + diag + 1
        for j0 in range(lo, m, step):
            j1 = min(m, j0 + step)
            v = 0.5 * _js_terms(p[None, :], Q64[j0:j1]).sum(axis=1)
            out[i, j0:j1] = np.where(v < 0, 0.0, v)
        if diag >= 0 and i + diag < m:
            out[i, i + diag] = 0.0


def js_pairwise_csr(
    p_indptr: np.ndarray,
    p_indices: np.ndarray,
    p_data: np.ndarray,
    qt_indptr: np.ndarray,
    qt_indices: np.ndarray,
    qt_data: np.ndarray,
    out: np.ndarray,
    diag: int,
) -> None:
    """out[i, j] = JS(P[i], Q[j]) for sparse rows (a documented exception to
    the 2-D contract: the arrays are 1-D).

    P comes as CSR arrays (indptr over its n rows, sorted int64 column
    indices, data), Q as CSC arrays (indptr over the k categories, sorted
    int64 row indices, data); neither holds explicit zeros. Only the
    categories where both rows are non-zero are visited: where q = 0 the
    p-term is p log 2, so with S the sum of the two-log terms over the
    shared support and P_s, Q_s the masses of p and q there,

        2 JS = S + log 2 (sum p - P_s) + log 2 (sum q - Q_s).

    ``diag`` has the meaning of :func:`js_pairwise`.
    """
    import scipy.sparse as sp

    n = out.shape[0]
    m = out.shape[1]
    k = len(qt_indptr) - 1
    Qc = sp.csc_matrix((qt_data.astype(np.float64), qt_indices, qt_indptr), (m, k))
    q_sums = np.asarray(Qc.sum(axis=1)).ravel()
    ln2 = np.log(2.0)
    for i in range(n):
        cols = p_indices[p_indptr[i] : p_indptr[i + 1]]
        p = p_data[p_indptr[i] : p_indptr[i + 1]].astype(np.float64)
        lo = 0 if diag < 0 else i + diag + 1
        if lo < m:
            Qd = Qc[lo:, :][:, cols].toarray()
            shared = Qd > 0
            s = np.where(shared, _js_terms(p[None, :], Qd), 0.0).sum(axis=1)
            p_out = p.sum() - (shared * p[None, :]).sum(axis=1)
            q_out = q_sums[lo:] - Qd.sum(axis=1)
            v = 0.5 * (s + ln2 * p_out + ln2 * q_out)
            out[i, lo:] = np.where(v < 0, 0.0, v)
        if diag >= 0 and i + diag < m:
            out[i, i + diag] = 0.0
