"""Numba kernels of softmax, log_softmax and logsumexp with a temperature.

Twins of the functions of the same names in ``reference.py``, whose
comments define the semantics: the overflow-free order of division and
subtraction, the count-of-max + log1p split of the normaliser, and the
rules for +inf, -inf, NaN and empty rows. Each kernel takes C-contiguous
float32 or float64 rows, runs rows in parallel (one row per thread, in a
fixed order, so one or two threads give the same bits) and writes ``out``.

A row of k logits is handled in three passes over data that stays in the
L1/L2 cache after the first:

1. the row maximum m;
2. s_j = x_j / T - m / T (T >= 1) or (x_j - m) / T (T < 1) in float64,
   and e_j = exp(s_j), written to a buffer of the row's dtype (softmax:
   to ``out``): for float64 rows from the vectorised
   :func:`numba_math.exp_f64_nonpositive` (the bits of exp_f64 for
   s <= 0, with less work); for float32 rows from the same range
   reduction in float64 and a polynomial in float32 (twice the lanes per
   vector, 1.6x faster), so that s_j loses no accuracy to float32; where
   1 / T is a power of two (T = 1 first of all) a float32 row's s_j is
   formed in float32 alone as an exact sum hi + lo (:func:`_exps_float`);
3. the sums c = #{j : e_j = 1} and r = sum of the other e_j, in float64
   with vector partial sums, then the scaled output.

Since s_j <= 0, e_j = 1 exactly where s_j rounds to 0, and counting those
entries apart keeps r even when it is below the rounding of 1:
log S = log1p((c - 1) + r). A NaN in the row, a +inf maximum or an all
-inf row makes r NaN (NaN - NaN or inf - inf in s); such rare rows are
redone by a scalar routine that applies the rules of DESIGN.md.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange, types
from numba.extending import overload

from fastdiv.backends.numba_math import (
    exp_f32_nonpositive,
    exp_f64,
    exp_f64_nonpositive,
    exp_nonpositive_like,
    exps_nonpositive_like,
    log_f64,
    maxnum,
)

__all__ = [
    "softmax_rows",
    "log_softmax_rows",
    "logsumexp_rows",
    "logsumexp_weighted_rows",
]

# Rows per parallel task: one scratch buffer is allocated per task, so the
# allocation is paid once per 16 rows, and the static split of tasks over
# threads stays even.
_ROWS_PER_TASK = 16
# Rows shorter than this take the flat path of _short_rows_exps, in chunks
# of about _SHORT_TASK entries (whose buffers stay in L1), _SHORT_CHUNKS
# chunks to a parallel task that allocates its buffers once: nine
# allocations per chunk of 204 rows of 10 cost 0.17 of 2.0 ns per entry
# on a core.
_SHORT = 16
_SHORT_TASK = 2048
_SHORT_CHUNKS = 16

_OPTS = dict(cache=True, nogil=True, error_model="numpy")
_ROWS_OPTS = dict(_OPTS, parallel=True)

# Inputs are typed read-only: a read-only signature also accepts writable
# arrays, while callers may pass read-only views (np.broadcast_to for b).
_F64_2D_IN = types.Array(types.float64, 2, "C", readonly=True)
_F32_2D_IN = types.Array(types.float32, 2, "C", readonly=True)
_F64_2D = types.float64[:, ::1]
_F32_2D = types.float32[:, ::1]
_F64_1D = types.float64[::1]
_F32_1D = types.float32[::1]


# ==========================================================================
# Row helpers (inlined by LLVM into the kernels)
# ==========================================================================


@numba.njit(**_OPTS)
def _row_max(x):
    """max of a row, NaN ignored; -inf for an empty or all-NaN row.

    llvm.maxnum ignores NaN and, unlike a compare-and-select, LLVM
    vectorises its reduction without assuming the absence of NaN.
    """
    m = x.dtype.type(-np.inf)
    for j in range(x.shape[0]):
        m = maxnum(m, x[j])
    return np.float64(m)


@numba.njit(**_OPTS)
def _exact_reciprocal(temperature):
    """Whether x * (1 / T) == x / T for every x: T is a power of two whose
    reciprocal is finite (not a subnormal T such as 2**-1074)."""
    return math.frexp(temperature)[0] == 0.5 and math.isfinite(1.0 / temperature)


def _multiplies(temperature, x):
    """Whether s_j may use x_j * (1 / T) in place of x_j / T (the Python
    body of the overload below, for code run without the JIT)."""
    if x.dtype == np.float32:
        return math.isfinite(1.0 / temperature)
    return _exact_reciprocal.py_func(temperature)


@overload(_multiplies, jit_options=_OPTS)
def _multiplies_impl(temperature, x):
    # For float32 rows the one rounding of 1 / T (2**-53) is far below
    # float32's precision, so the product serves whenever 1 / T is finite;
    # a vector division costs about as much as the exp. float64 rows
    # divide unless T is a power of two, to round like the reference.
    if x.dtype == types.float32:
        return lambda temperature, x: math.isfinite(1.0 / temperature)
    return lambda temperature, x: _exact_reciprocal(temperature)


@numba.njit(**_OPTS)
def _exp_shifted(x, m, temperature, buf):
    """buf[j] = exp(s_j), s_j the shifted and scaled x_j; returns m / T.

    The two orders of DESIGN.md: for T >= 1, x / T cannot overflow and the
    maximum of x / T is m / T; for T < 1 the subtraction comes first. When
    :func:`_multiplies` allows it (T = 1 above all) the division is a
    multiplication by the reciprocal. Every s_j is <= 0 (x_j <= m and the
    rounding is monotonic), as the exps of :func:`numba_math.
    exp_nonpositive_like` require.
    """
    k = x.shape[0]
    inv = 1.0 / temperature
    multiply = _multiplies(temperature, x)
    # The maximum's own s must be exactly 0 (a positive one would make its
    # exp overflow for huge logits), so top is scaled like the entries.
    top = m * inv if multiply else m / temperature
    if _float_exact(x, inv, top, temperature):
        _exps_float(x, inv, top if temperature >= 1.0 else m, temperature >= 1.0, buf)
    elif temperature >= 1.0:
        if multiply:
            for j in range(k):
                buf[j] = exp_nonpositive_like(np.float64(x[j]) * inv - top, buf)
        else:
            for j in range(k):
                buf[j] = exp_nonpositive_like(np.float64(x[j]) / temperature - top, buf)
    elif multiply:
        for j in range(k):
            buf[j] = exp_nonpositive_like((np.float64(x[j]) - m) * inv, buf)
    else:
        for j in range(k):
            buf[j] = exp_nonpositive_like((np.float64(x[j]) - m) / temperature, buf)
    return top


@numba.njit(**_OPTS)
def _float_shift_exact(inv, top, temperature):
    """Whether s_j of a float32 row is an exact float32 sum hi + lo (see
    :func:`_exps_float`): 1 / T is a power of two in float32's normal
    range (T = 1 first of all) and, for T >= 1, the subtracted top = m / T
    is a float32 (for T < 1 it is m, an entry)."""
    if math.frexp(inv)[0] != 0.5 or not 2.0**-126 <= inv <= 2.0**126:
        return False
    return temperature < 1.0 or np.float64(np.float32(top)) == top


def _float_exact(x, inv, top, temperature):
    """:func:`_float_shift_exact` for float32 rows, never for float64 ones
    (the Python body, for code run without the JIT)."""
    return x.dtype == np.float32 and _float_shift_exact(inv, top, temperature)


@overload(_float_exact, jit_options=_OPTS)
def _float_exact_impl(x, inv, top, temperature):
    if x.dtype != types.float32:
        return lambda x, inv, top, temperature: False
    return lambda x, inv, top, temperature: _float_shift_exact(inv, top, temperature)


# Below this s, exp(s) is 0 in float32 (exp_f32 clamps at -104 anyway):
# hi is clamped here so that hi and lo stay finite (-inf, whose two-sum
# error is NaN, lands here and gives 0).
_FLOAT_LIM = np.float32(-160.0)


@numba.njit(**_OPTS)
def _exp_hi_lo(hi, lo):
    """exp(hi + lo) ~ exp_f32(hi) (1 + lo) for float32 hi, lo with |lo| at
    most an ulp of hi; 0 below _FLOAT_LIM, NaN for NaN."""
    lo = np.float32(0.0) if hi < _FLOAT_LIM else lo
    hi = _FLOAT_LIM if hi < _FLOAT_LIM else hi
    return exp_f32_nonpositive(hi) * (np.float32(1.0) + lo)


def _exps_float(x, inv, v, scale_first, buf):
    """buf[j] = exp(s_j) of a float32 row in float32 arithmetic alone, on
    the conditions of :func:`_float_exact`; the Python body, for code run
    without the JIT, goes through float64."""
    for j in range(x.shape[0]):
        xj = float(x[j])
        sj = xj * inv - v if scale_first else (xj - v) * inv
        buf[j] = math.exp(max(sj, -160.0))


@overload(_exps_float, jit_options=_OPTS)
def _exps_float_impl(x, inv, v, scale_first, buf):
    # The float-only twin of the float64 shift: with one of the two
    # subtracted values 0, s_j = u - w for floats u, w (x_j / T and top,
    # or x_j and m), Knuth's two-sum gives hi = fl(u - w) and its exact
    # error lo, and 1 / T, a power of two, scales both exactly. Then
    # exp(s_j) = exp(hi) exp(lo) ~ exp_f32(hi) (1 + lo), to about a
    # float32 ulp, at twice the lanes of a float64 shift and exponent
    # (the Cython kernels do the same: fd_exps_f32_exact).
    if buf.dtype != types.float32:
        # Never called (_float_exact is False for float64 rows), but typed.
        def impl64(x, inv, v, scale_first, buf):
            for j in range(x.shape[0]):
                sj = x[j] * inv - v if scale_first else (x[j] - v) * inv
                buf[j] = exp_f64_nonpositive(sj)

        return impl64

    def impl(x, inv, v, scale_first, buf):
        a = np.float32(inv)
        w = np.float32(v)
        # T >= 1: u = x_j a and no scaling after; T < 1: u = x_j, and hi,
        # lo are scaled by a (exactly, a power of two).
        b = np.float32(1.0) if scale_first else a
        for j in range(x.shape[0]):
            u = x[j] * a if scale_first else x[j]
            hi = u - w
            back = hi - u
            lo = (u - (hi - back)) - (w + back)
            buf[j] = _exp_hi_lo(hi * b, lo * b)

    return impl


@numba.njit(fastmath={"reassoc"}, **_OPTS)
def _count_and_rest(buf, k):
    """(c, r): the number of buf[j] == 1 and the sum of the others.

    The only place with a reassociation flag: it lets LLVM keep vector
    partial sums (a single running sum is a chain of dependent additions,
    several times slower than the exp pass; interleaved scalar sums were
    not vectorised). The order is fixed by the compiled loop, not by the
    thread count, and the function holds no exp or log whose range
    reduction the flag could fold.
    """
    r = 0.0
    c = 0
    for j in range(k):
        e = buf[j]
        r += 0.0 if e == 1.0 else e
        c += e == 1.0
    return np.float64(c), r


@numba.njit(fastmath={"reassoc"}, **_OPTS)
def _plain_sum(e):
    """The sum of the e_j in float64: softmax divides by it, and needs no
    split of its ones (:func:`_count_and_rest`, which costs twice as much).
    The flag keeps vector partial sums, as there; NaN propagates."""
    r = 0.0
    for j in range(e.shape[0]):
        r += e[j]
    return r


@numba.njit(**_OPTS)
def _log_normaliser(c, r):
    """log(c + r) without losing r next to c (c >= 1)."""
    return math.log1p((c - 1.0) + r)


# ==========================================================================
# Rows that are not finite: scalar, by the rules of DESIGN.md
# ==========================================================================


@numba.njit(**_OPTS)
def _special_row(x):
    """Classify a row whose fast path gave NaN.

    Returns (kind, count): kind 0 = the row holds NaN, 1 = its maximum is
    +inf (count = number of +inf entries), 2 = every entry is -inf.
    """
    posinf = 0
    for j in range(x.shape[0]):
        v = x[j]
        if v != v:
            return 0, 0
        if v == np.inf:
            posinf += 1
    if posinf > 0:
        return 1, posinf
    return 2, 0


@numba.njit(**_OPTS)
def _softmax_special(x, out):
    kind, count = _special_row(x)
    for j in range(x.shape[0]):
        if kind == 1 and count == 1:
            out[j] = 1.0 if x[j] == np.inf else 0.0
        else:
            out[j] = np.nan


@numba.njit(**_OPTS)
def _log_softmax_special(x, out):
    kind, count = _special_row(x)
    for j in range(x.shape[0]):
        if kind == 1 and count == 1:
            out[j] = 0.0 if x[j] == np.inf else -np.inf
        else:
            out[j] = np.nan


@numba.njit(**_OPTS)
def _logsumexp_special(x):
    kind, count = _special_row(x)
    if kind == 0:
        return np.nan
    if kind == 1:
        return np.inf
    return -np.inf


# ==========================================================================
# Kernels
# ==========================================================================


@numba.njit(**_OPTS)
def _short_tasks(n, k):
    """(rows per chunk, rows per task, number of tasks) for n short rows:
    chunks of about _SHORT_TASK entries (at least _ROWS_PER_TASK rows),
    _SHORT_CHUNKS chunks to a task."""
    rows = max(_ROWS_PER_TASK, _SHORT_TASK // max(k, 1))
    per_task = rows * _SHORT_CHUNKS
    return rows, per_task, (n + per_task - 1) // per_task


@numba.njit(**_OPTS)
def _short_rows_exps(x, temperature, r0, r1, s, e, work, mt, maxima, tops, ones, rest):
    """The shift, exp and sum passes of rows r0:r1 of short rows.

    For k below _SHORT a loop over one row never reaches the vector code
    (LLVM's vector loop takes 16 to 64 entries at a time): each exp runs
    scalar, about 3 ns each. Here each row's shift is spread over its
    entries and s and the exps of all the rows come from one vector loop
    each; the maxima and sums run across the rows. Same arithmetic as
    :func:`_exp_shifted` and :func:`_count_and_rest`, entry for entry. Row
    r0 + ii has its s_j in s[ii * k + j], exp(s_j) in e[ii * k + j], and
    the (c, r) of its exps in ones[ii] and rest[ii]; mt (the maxima in the
    dtype of x) and work (see :func:`numba_math.exps_nonpositive_like`) are scratch.
    """
    n, k = x.shape
    nr = r1 - r0
    inv = 1.0 / temperature
    multiply = _multiplies(temperature, x)
    first = temperature >= 1.0
    # The maxima and sums run across the rows, column by column through a
    # strided view of each column (one view per column, not per row: a
    # view of a short row costs more than its maximum), with one
    # accumulator per row, so each row keeps its sequential order while the
    # loop over rows vectorises: float32 maxima 0.57 -> 0.38 and sums
    # 0.99 -> 0.75 ns per entry on a core against row-by-row loops.
    xs = x.reshape(n * k)[r0 * k : r1 * k]
    mt[:] = -np.inf
    for j in range(k):
        col = xs[j::k]
        for ii in range(nr):
            mt[ii] = maxnum(mt[ii], col[ii])
    for ii in range(nr):
        m = np.float64(mt[ii])
        maxima[ii] = m
        top = m * inv if multiply else m / temperature
        tops[ii] = top
        v = top if first else m
        for j in range(k):
            s[ii * k + j] = v
    if first and multiply:
        for u in range(nr * k):
            s[u] = np.float64(xs[u]) * inv - s[u]
    elif first:
        for u in range(nr * k):
            s[u] = np.float64(xs[u]) / temperature - s[u]
    elif multiply:
        for u in range(nr * k):
            s[u] = (np.float64(xs[u]) - s[u]) * inv
    else:
        for u in range(nr * k):
            s[u] = (np.float64(xs[u]) - s[u]) / temperature
    exps_nonpositive_like(s, e, work)
    ones[:nr] = 0.0
    rest[:nr] = 0.0
    for j in range(k):
        col = e[j : nr * k : k]
        for ii in range(nr):
            v = col[ii]
            one = v == 1.0
            rest[ii] += 0.0 if one else np.float64(v)
            ones[ii] += 1.0 if one else 0.0


@numba.njit(**_OPTS)
def _log1p(z):
    """log(1 + z) for z >= 0 or NaN, from the vectorisable log_f64.

    u = 1 + z rounds; (u - 1) - z is that rounding error exactly, and
    log(1 + z) = log(u) - ((u - 1) - z) / u to within an ulp. Used where a
    loop over short rows takes one per row: math.log1p is a library call
    that a loop cannot vectorise, and it cost a third of a 10-entry row.
    """
    u = 1.0 + z
    return log_f64(u) - ((u - 1.0) - z) / u


@numba.njit(**_OPTS)
def _short_normalisers(ones, rest, maxima, tops, with_tops, lse):
    """lse[ii] = log(ones[ii] + rest[ii]), plus tops[ii] if with_tops, for
    each short row, or NaN where the row needs the special rules."""
    nr = maxima.shape[0]
    for ii in range(nr):
        lse[ii] = (ones[ii] - 1.0) + rest[ii]
    for ii in range(nr):
        lse[ii] = _log1p(lse[ii])
    if with_tops:
        for ii in range(nr):
            lse[ii] = tops[ii] + lse[ii]
    for ii in range(nr):
        if not (rest[ii] == rest[ii] and math.isfinite(maxima[ii])):
            lse[ii] = np.nan


@numba.njit(**_OPTS)
def _short_out(v, w, scale, spread, flat):
    """flat[u] = v[u] * w[ii] (scale) or v[u] - w[ii] (else) for the entries
    u of row ii (flat holds the rows of a chunk, v their s or exps).

    w is first spread over the entries of its row, so that the last loop
    runs over entries as one vector loop: a loop of k per row stays scalar
    and took 0.52 of 2.0 ns per entry of float32 softmax on a core.
    """
    nk = flat.shape[0]
    k = nk // w.shape[0]
    for ii in range(w.shape[0]):
        for j in range(k):
            spread[ii * k + j] = w[ii]
    if scale:
        for u in range(nk):
            flat[u] = v[u] * spread[u]
    else:
        for u in range(nk):
            flat[u] = v[u] - spread[u]


@numba.njit(**_OPTS)
def _short_scratch(x, rows):
    """Buffers for chunks of up to ``rows`` short rows of x:
    (wide, per_row, narrow, work), for :func:`_short_chunk`."""
    nk = rows * x.shape[1]
    wide = np.empty(2 * nk)
    per_row = np.empty(5 * rows)
    narrow = np.empty(nk + rows, x.dtype)
    work = np.empty(nk if x.itemsize == 4 else 0, np.float32)
    return wide, per_row, narrow, work


@numba.njit(**_OPTS)
def _short_chunk(x, temperature, r0, r1, scratch):
    """The exp pass of short rows r0:r1 in the buffers of scratch
    (:func:`_short_scratch`): views (s, e, maxima, tops, ones, rest, lse,
    spread), lse and spread left to the caller."""
    wide, per_row, narrow, work = scratch
    nr = r1 - r0
    nk = nr * x.shape[1]
    s, spread = wide[:nk], wide[nk : 2 * nk]
    maxima, tops = per_row[:nr], per_row[nr : 2 * nr]
    ones, rest = per_row[2 * nr : 3 * nr], per_row[3 * nr : 4 * nr]
    lse = per_row[4 * nr : 5 * nr]
    e, mt = narrow[:nk], narrow[nk : nk + nr]
    w = work[:nk] if x.itemsize == 4 else work
    _short_rows_exps(x, temperature, r0, r1, s, e, w, mt, maxima, tops, ones, rest)
    return s, e, maxima, tops, ones, rest, lse, spread


@numba.njit(**_OPTS)
def _softmax_finish(row, dst, m):
    """dst = dst / sum(dst) in place, dst holding exp(s_j); or the special
    row. The exps go straight to dst and their sum is a plain one, as in
    the Cython kernel: through a buffer and the split sum, softmax with
    out= at (100_000, 1000) took 1.6-1.7x the Cython kernel's time, 1.3x
    this way."""
    r = _plain_sum(dst)
    if not (r == r and math.isfinite(m)):
        _softmax_special(row, dst)
        return
    inv = 1.0 / r
    for j in range(dst.shape[0]):
        dst[j] = dst[j] * inv


@numba.njit(**_OPTS)
def _log_softmax_finish(row, dst, m, top, buf, temperature):
    """dst = s_j - log sum(buf), s_j recomputed as in the exp pass."""
    k = row.shape[0]
    c, r = _count_and_rest(buf, k)
    if not (r == r and math.isfinite(m)):
        _log_softmax_special(row, dst)
        return
    lse = _log_normaliser(c, r)
    # s_j again, with the same result as in the exp pass.
    inv = 1.0 / temperature
    exact = _multiplies(temperature, row)
    if temperature >= 1.0 and exact:
        for j in range(k):
            dst[j] = (np.float64(row[j]) * inv - top) - lse
    elif temperature >= 1.0:
        for j in range(k):
            dst[j] = (np.float64(row[j]) / temperature - top) - lse
    elif exact:
        for j in range(k):
            dst[j] = (np.float64(row[j]) - m) * inv - lse
    else:
        for j in range(k):
            dst[j] = (np.float64(row[j]) - m) / temperature - lse


@numba.njit(**_OPTS)
def _logsumexp_finish(row, m, top, buf):
    """log sum_j exp(x_j / T) of a row from its exps, or the special value."""
    c, r = _count_and_rest(buf, row.shape[0])
    if not (r == r and math.isfinite(m)):
        return _logsumexp_special(row)
    return top + _log_normaliser(c, r)


@numba.njit(
    [
        types.void(_F64_2D_IN, types.float64, _F64_2D),
        types.void(_F32_2D_IN, types.float64, _F32_2D),
    ],
    **_ROWS_OPTS,
)
def softmax_rows(x, temperature, out):
    """out[i] = softmax(x[i] / temperature), row by row (float64 sums)."""
    n, k = x.shape
    if k < _SHORT:
        flat = out.reshape(n * k)
        rows, per_task, ntasks = _short_tasks(n, k)
        for task in prange(ntasks):
            scratch = _short_scratch(x, rows)
            for r0 in range(task * per_task, min(n, (task + 1) * per_task), rows):
                r1 = min(n, r0 + rows)
                _, e, maxima, _, ones, rest, inv, spread = _short_chunk(
                    x, temperature, r0, r1, scratch
                )
                for ii in range(r1 - r0):
                    inv[ii] = 1.0 / (ones[ii] + rest[ii])
                _short_out(e, inv, True, spread, flat[r0 * k : r1 * k])
                for ii in range(r1 - r0):
                    if not (rest[ii] == rest[ii] and math.isfinite(maxima[ii])):
                        _softmax_special(x[r0 + ii], out[r0 + ii])
        return
    ntasks = (n + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    for task in prange(ntasks):
        for i in range(task * _ROWS_PER_TASK, min(n, (task + 1) * _ROWS_PER_TASK)):
            row = x[i]
            m = _row_max(row)
            _exp_shifted(row, m, temperature, out[i])
            _softmax_finish(row, out[i], m)


@numba.njit(
    [
        types.void(_F64_2D_IN, types.float64, _F64_2D),
        types.void(_F32_2D_IN, types.float64, _F32_2D),
    ],
    **_ROWS_OPTS,
)
def log_softmax_rows(x, temperature, out):
    """out[i] = log_softmax(x[i] / temperature), row by row."""
    n, k = x.shape
    if k < _SHORT:
        flat = out.reshape(n * k)
        rows, per_task, ntasks = _short_tasks(n, k)
        for task in prange(ntasks):
            scratch = _short_scratch(x, rows)
            for r0 in range(task * per_task, min(n, (task + 1) * per_task), rows):
                r1 = min(n, r0 + rows)
                s, _, maxima, tops, ones, rest, lse, spread = _short_chunk(
                    x, temperature, r0, r1, scratch
                )
                # s_j - log S; without the tops, which would make lse the
                # log-sum-exp itself, while s_j is already shifted.
                _short_normalisers(ones, rest, maxima, tops, False, lse)
                _short_out(s, lse, False, spread, flat[r0 * k : r1 * k])
                for ii in range(r1 - r0):
                    if lse[ii] != lse[ii]:
                        _log_softmax_special(x[r0 + ii], out[r0 + ii])
        return
    ntasks = (n + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    for task in prange(ntasks):
        buf = np.empty(k, x.dtype)
        for i in range(task * _ROWS_PER_TASK, min(n, (task + 1) * _ROWS_PER_TASK)):
            row = x[i]
            m = _row_max(row)
            top = _exp_shifted(row, m, temperature, buf)
            _log_softmax_finish(row, out[i], m, top, buf, temperature)


@numba.njit(
    [
        types.void(_F64_2D_IN, types.float64, _F64_1D),
        types.void(_F32_2D_IN, types.float64, _F32_1D),
    ],
    **_ROWS_OPTS,
)
def logsumexp_rows(x, temperature, out):
    """out[i] = log(sum_j exp(x[i, j] / temperature)); -inf for k == 0."""
    n, k = x.shape
    if k == 0:
        out[:] = -np.inf
        return
    if k < _SHORT:
        rows, per_task, ntasks = _short_tasks(n, k)
        for task in prange(ntasks):
            scratch = _short_scratch(x, rows)
            for r0 in range(task * per_task, min(n, (task + 1) * per_task), rows):
                r1 = min(n, r0 + rows)
                _, _, maxima, tops, ones, rest, lse, _ = _short_chunk(
                    x, temperature, r0, r1, scratch
                )
                _short_normalisers(ones, rest, maxima, tops, True, lse)
                for ii in range(r1 - r0):
                    if lse[ii] != lse[ii]:
                        out[r0 + ii] = _logsumexp_special(x[r0 + ii])
                    else:
                        out[r0 + ii] = lse[ii]
        return
    ntasks = (n + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    for task in prange(ntasks):
        buf = np.empty(k, x.dtype)
        for i in range(task * _ROWS_PER_TASK, min(n, (task + 1) * _ROWS_PER_TASK)):
            row = x[i]
            m = _row_max(row)
            top = _exp_shifted(row, m, temperature, buf)
            out[i] = _logsumexp_finish(row, m, top, buf)


# ==========================================================================
# Weighted logsumexp (SciPy's b=): scalar per row, as in the reference
# ==========================================================================


@numba.njit(**_OPTS)
def _sign(v):
    if v > 0.0:
        return 1.0
    if v < 0.0:
        return -1.0
    return v  # 0 or NaN


@numba.njit(**_OPTS)
def _weighted_row(x, b, temperature):
    """(log|sum_j b_j exp(x_j / T)|, sign) of one row; see the reference.

    Entries with b_j == 0 take no part. The entries at the maximum
    contribute their weights w exactly, the others r; the result is
    top + log|w| + log1p(r / w), or top + log|r| when w == 0.
    """
    k = x.shape[0]
    scale_first = temperature >= 1.0

    # The maximum of the used entries (of x / T when T >= 1, else of x).
    m = -np.inf
    for j in range(k):
        if b[j] != 0.0:
            v = np.float64(x[j])
            if scale_first:
                v = v / temperature
            if v != v:
                return np.nan, np.nan
            m = v if v > m else m
    top = m if scale_first else m / temperature
    # A zero sum, sign 0 as in SciPy: no used entry, all of them -inf, or
    # (T < 1) a finite maximum whose max / T is below -DBL_MAX, where every
    # term b_j exp(x_j / T) underflows to 0 (the weights at the maximum
    # would otherwise give their sign to a log of -inf).
    if top == -np.inf:
        return -np.inf, 0.0

    w = 0.0
    r = 0.0
    for j in range(k):
        bj = np.float64(b[j])
        if bj == 0.0:
            continue
        xj = np.float64(x[j])
        s = xj / temperature - m if scale_first else (xj - m) / temperature
        # With a +inf maximum, s is NaN at the +inf entries: they are the
        # entries at the maximum all the same.
        if s == 0.0 or (m == np.inf and xj == np.inf):
            w += bj
        else:
            r += bj * exp_f64(s)

    if w != 0.0:
        t = r / w
        # |1 + t| = 1 + (-t - 2) for 1 + t < 0, which log1p takes exactly.
        log_abs = top + log_f64(abs(w)) + math.log1p(-t - 2.0 if t < -1.0 else t)
        return log_abs, _sign(w) * _sign(1.0 + t)
    return top + log_f64(abs(r)), _sign(r)


@numba.njit(
    [
        types.void(_F64_2D_IN, _F64_2D_IN, types.float64, _F64_1D, _F64_1D),
        types.void(_F32_2D_IN, _F32_2D_IN, types.float64, _F32_1D, _F32_1D),
    ],
    **_ROWS_OPTS,
)
def logsumexp_weighted_rows(x, b, temperature, out, sign):
    """out[i] = log|sum_j b[i, j] exp(x[i, j] / T)|, sign[i] = its sign."""
    n = x.shape[0]
    for i in prange(n):
        value, sgn = _weighted_row(x[i], b[i], temperature)
        out[i] = value
        sign[i] = sgn
