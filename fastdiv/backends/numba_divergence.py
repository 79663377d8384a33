"""Numba kernels for the divergences of probability rows (twins of the
"divergences" section of ``reference.py``, same names and signatures).

``p`` and ``q`` are (n, k) or (1, k): a single row is used for every row
of the other, so an (n, k) batch against one distribution is never copied
n times. ``out`` is float64 whatever the input dtype.

Speed comes from two things (PERF-NOTES.md): the vectorisable ``log_f64``
of ``numba_math`` instead of ``math.log``, and sums that LLVM can turn into
vector code without reassociation. A row is cut into chunks of ``_CHUNK``
entries; the terms of a chunk are written to a small buffer by a loop with
no loop-carried dependence (so the logs vectorise), then added up in eight
fixed lanes. The chunk is read through a slice of the row, indexed from 0:
an index written ``j0 + j`` is not known to be >= 0, and the wraparound
test Numba then adds kept LLVM from vectorising the loop (3.5 ns per entry
instead of 1.5 for the entropy, on one core of the project machine).
The order of the additions depends only on k, never on the thread count.
The terms of KL and JS are computed in float64, also for float32 input:
the divergences of near-identical rows are differences of nearly equal
terms, and float32 logs would lose them. Entropy and cross-entropy take the
logs of float32 rows in float32 (``log_of``, twice the lanes): their terms
all have one sign, so the sum keeps each term's relative error of an ulp.
"""

from __future__ import annotations

import numpy as np
from numba import float32, float64, int64, njit, prange, types, void

from fastdiv.backends.numba_math import log_f64, log_of

# No flag that assumes away NaN or inf, and no reassociation (it would
# reorder the sums and fold the range reduction inside log_f64); no "nsz"
# either, which turns 0.0 - 0.0 into -0.0 for an empty row.
_FASTMATH = {"arcp", "contract", "afn"}
# error_model="numpy": a division by zero gives inf or NaN instead of a
# check that raises, which would keep the term loops from vectorising.
_KERNEL = dict(
    parallel=True, cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy"
)
_INLINE = dict(inline="always", fastmath=_FASTMATH, error_model="numpy")

# Entries per chunk: the float64 buffer (4 KB) stays in L1 next to the
# rows being read.
_CHUNK = 512
# Rows per task: one buffer is allocated per task, not per row.
_ROWS_PER_TASK = 64

_TINY = np.finfo(np.float64).tiny
_HUGE = np.finfo(np.float64).max


# --------------------------------------------------------------------------
# Row helpers
# --------------------------------------------------------------------------
@njit(**_INLINE)
def _lane_sum(buf, m):
    """sum(buf[:m]) in float64 in eight fixed lanes, then the tail in order
    (float32 entries are widened first)."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    j = 0
    while j + 8 <= m:
        a0 += float64(buf[j])
        a1 += float64(buf[j + 1])
        a2 += float64(buf[j + 2])
        a3 += float64(buf[j + 3])
        a4 += float64(buf[j + 4])
        a5 += float64(buf[j + 5])
        a6 += float64(buf[j + 6])
        a7 += float64(buf[j + 7])
        j += 8
    s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
    while j < m:
        s += float64(buf[j])
        j += 1
    return s


@njit(**_INLINE)
def _xlogy_row(x, y, buf):
    """sum_j x_j log y_j with 0 where x_j == 0 (NaN stays NaN)."""
    k = x.shape[0]
    total = 0.0
    for j0 in range(0, k, _CHUNK):
        m = min(_CHUNK, k - j0)
        xc = x[j0 : j0 + m]
        yc = y[j0 : j0 + m]
        for j in range(m):
            a = float64(xc[j])
            t = a * log_of(yc[j])
            buf[j] = 0.0 if a == 0.0 else t
        total += _lane_sum(buf, m)
    return total


@njit(**_INLINE)
def _kl_row(p, q, buf):
    """sum_j p_j log(p_j / q_j) with 0 where p_j == 0.

    The ratio is formed first (exact near p == q). Where it overflows or
    underflows the sum comes out +-inf or NaN; only then is the row redone
    with log p - log q at those entries, which also yields the true +inf
    of p > 0 = q.
    """
    k = p.shape[0]
    total = 0.0
    for j0 in range(0, k, _CHUNK):
        m = min(_CHUNK, k - j0)
        pc = p[j0 : j0 + m]
        qc = q[j0 : j0 + m]
        for j in range(m):
            a = float64(pc[j])
            t = a * log_f64(a / float64(qc[j]))
            buf[j] = 0.0 if a == 0.0 else t
        total += _lane_sum(buf, m)
    if np.isfinite(total):
        return total
    total = 0.0
    for j0 in range(0, k, _CHUNK):
        m = min(_CHUNK, k - j0)
        pc = p[j0 : j0 + m]
        qc = q[j0 : j0 + m]
        for j in range(m):
            a = float64(pc[j])
            b = float64(qc[j])
            r = a / b
            if r >= _TINY and r <= _HUGE:
                t = a * log_f64(r)
            else:
                t = a * (log_f64(a) - log_f64(b))
            buf[j] = 0.0 if a == 0.0 else t
        total += _lane_sum(buf, m)
    return total


# Up to this |d| = |p - q| / (p + q) a JS term comes from its series.
_JS_NEAR = 0.0625


@njit(**_INLINE)
def _js_term(a, b):
    """a log(2a / s) + b log(2b / s), s = a + b: one entry of twice JS.

    With d = (a - b) / s the term is (s / 2) ((1 + d) log(1 + d) + (1 - d)
    log(1 - d)) = (s / 2) sum_{n >= 1} d^(2n) / (n (2n - 1)). For
    near-identical entries the two logs are +-d and cancel to d^2, each with
    an ulp of d of error: off by eps / d^2 relative (1e-4 at d = 1e-6). Up
    to |d| = 1/16 the series serves (six terms, under 4e-17 relative);
    beyond, the logs lose at most eps / d. A zero weight contributes 0 (so
    a = b = 0, where d is NaN, gives 0); a == b gives exactly 0; NaN stays
    NaN. Both forms are computed and one selected, so the loop vectorises.
    The reference and the Cython kernel compute the same.
    """
    s = a + b
    d = (a - b) / s
    # d rounds to +-1 where one weight is below 2^-54 of s: 1 -+ d is then 0
    # although 2b / s (2a / s) is not, and the log is taken of that instead.
    ta = a * log_f64(1.0 + d if d != -1.0 else (a + a) / s)
    tb = b * log_f64(1.0 - d if d != 1.0 else (b + b) / s)
    t_log = (0.0 if a == 0.0 else ta) + (0.0 if b == 0.0 else tb)
    z = d * d
    series = 1.0 + z * (
        1.0 / 6 + z * (1.0 / 15 + z * (1.0 / 28 + z * (1.0 / 45 + z * (1.0 / 66))))
    )
    return (0.5 * s) * (z * series) if abs(d) <= _JS_NEAR else t_log


@njit(**_INLINE)
def _js_row(p, q, buf):
    """JS(p, q) per the two-log formula, an entry with p == q adding 0."""
    k = p.shape[0]
    total = 0.0
    for j0 in range(0, k, _CHUNK):
        m = min(_CHUNK, k - j0)
        pc = p[j0 : j0 + m]
        qc = q[j0 : j0 + m]
        for j in range(m):
            buf[j] = _js_term(float64(pc[j]), float64(qc[j]))
        total += _lane_sum(buf, m)
    total *= 0.5
    # Clamp a rounding below 0; NaN fails the test and stays NaN.
    return 0.0 if total < 0.0 else total


# --------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------
def _rows(f, readonly):
    return types.Array(f, 2, "C", readonly=readonly)


# Every input may be read-only (a broadcast row, a user's frozen array): one
# signature per dtype and read-only pattern, so nothing is ever copied.
_OUT = float64[::1]
_ONE_INPUT = [
    void(_rows(f, ro), _OUT) for f in (float32, float64) for ro in (False, True)
]
_TWO_INPUTS = [
    void(_rows(f, ro_p), _rows(f, ro_q), _OUT)
    for f in (float32, float64)
    for ro_p in (False, True)
    for ro_q in (False, True)
]
_CHECK = [
    void(_rows(f, ro), _OUT, int64[::1])
    for f in (float32, float64)
    for ro in (False, True)
]


@njit(**_INLINE)
def _check_row(row):
    """(sum, number of negative entries) of one row, the sum in float64."""
    k = row.shape[0]
    s = _lane_sum(row, k)
    # A separate counting loop: an integer sum of comparisons, which
    # vectorises on its own; the row is still in cache.
    neg = 0
    for j in range(k):
        neg += 1 if row[j] < 0 else 0
    return s, neg


@njit(_CHECK, **_KERNEL)
def probability_check_rows(x, sums, negatives):
    for i in prange(x.shape[0]):
        s, neg = _check_row(x[i])
        sums[i] = s
        negatives[i] = neg


# The kernels with the probability check of each row in the pass that reads
# it (the sums and negative counts of probability_check_rows, into arrays of
# p's and q's own number of rows): each row is checked while it is in cache
# for its divergence, so the inputs are read from memory once, not twice.
# Read-only signatures only: they accept writeable arrays as well.
_COUNTS = int64[::1]
_ONE_CHECKED = [void(_rows(f, True), _OUT, _OUT, _COUNTS) for f in (float32, float64)]
_TWO_CHECKED = [
    void(_rows(f, True), _rows(f, True), _OUT, _OUT, _COUNTS, _OUT, _COUNTS)
    for f in (float32, float64)
]


@njit(**_INLINE)
def _check_into(x, i, sums, negatives):
    s, neg = _check_row(x[i])
    sums[i] = s
    negatives[i] = neg


# What _divergence_rows computes for each row.
_CROSS_ENTROPY, _KL, _JS, _ENTROPY = 0, 1, 2, 3


@njit(**_INLINE)
def _divergence_rows(kind, check, p, q, out, p_sums, p_negatives, q_sums, q_negatives):
    """The loop of every kernel here: out[i] for each row, p or q possibly
    a single row; with ``check`` (a constant), the statistics of each input
    row first, a single row's once. For the entropy q is p and unused."""
    n = out.shape[0]
    sp = 1 if p.shape[0] > 1 else 0
    sq = 1 if q.shape[0] > 1 else 0
    tasks = (n + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    for t in prange(tasks):
        buf = np.empty(_CHUNK)
        for i in range(t * _ROWS_PER_TASK, min(n, (t + 1) * _ROWS_PER_TASK)):
            if check and (sp == 1 or i == 0):
                _check_into(p, i * sp, p_sums, p_negatives)
            if check and kind != _ENTROPY and (sq == 1 or i == 0):
                _check_into(q, i * sq, q_sums, q_negatives)
            if kind == _ENTROPY:
                # 0.0 - sum keeps +0.0 for empty and one-hot rows.
                out[i] = 0.0 - _xlogy_row(p[i], p[i], buf)
            elif kind == _CROSS_ENTROPY:
                out[i] = 0.0 - _xlogy_row(p[i * sp], q[i * sq], buf)
            elif kind == _KL:
                out[i] = _kl_row(p[i * sp], q[i * sq], buf)
            else:
                out[i] = _js_row(p[i * sp], q[i * sq], buf)


@njit(**_INLINE)
def _unchecked_rows(kind, p, q, out):
    """_divergence_rows without the checks (empty statistics arrays)."""
    none, no_counts = np.empty(0), np.empty(0, np.int64)
    _divergence_rows(kind, False, p, q, out, none, no_counts, none, no_counts)


@njit(_ONE_INPUT, **_KERNEL)
def entropy_rows(p, out):
    _unchecked_rows(_ENTROPY, p, p, out)


@njit(_TWO_INPUTS, **_KERNEL)
def cross_entropy_rows(p, q, out):
    _unchecked_rows(_CROSS_ENTROPY, p, q, out)


@njit(_TWO_INPUTS, **_KERNEL)
def kl_rows(p, q, out):
    _unchecked_rows(_KL, p, q, out)


@njit(_TWO_INPUTS, **_KERNEL)
def js_rows(p, q, out):
    _unchecked_rows(_JS, p, q, out)


@njit(_ONE_CHECKED, **_KERNEL)
def entropy_rows_checked(p, out, p_sums, p_negatives):
    _divergence_rows(
        _ENTROPY, True, p, p, out, p_sums, p_negatives, p_sums, p_negatives
    )


@njit(_TWO_CHECKED, **_KERNEL)
def cross_entropy_rows_checked(p, q, out, p_sums, p_negatives, q_sums, q_negatives):
    _divergence_rows(
        _CROSS_ENTROPY, True, p, q, out, p_sums, p_negatives, q_sums, q_negatives
    )


@njit(_TWO_CHECKED, **_KERNEL)
def kl_rows_checked(p, q, out, p_sums, p_negatives, q_sums, q_negatives):
    _divergence_rows(_KL, True, p, q, out, p_sums, p_negatives, q_sums, q_negatives)


@njit(_TWO_CHECKED, **_KERNEL)
def js_rows_checked(p, q, out, p_sums, p_negatives, q_sums, q_negatives):
    _divergence_rows(_JS, True, p, q, out, p_sums, p_negatives, q_sums, q_negatives)
