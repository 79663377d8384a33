"""NumPy reference kernels: the readable truth every backend is tested against.

Each function here has a compiled twin of the same name and signature in
``numba_<topic>.py`` and ``_cython/_<topic>.pyx``. A kernel takes 2-D
C-contiguous float32 or float64 arrays, reduces along the last axis, writes
into the ``out`` arrays it is given and returns nothing. The references
compute in float64 whatever the input dtype and round once when they store,
so they are the most accurate of the three backends, not the fastest.
"""

from __future__ import annotations

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
    rows = np.isposinf(top) & ~np.isnan(x).any(axis=1)
    return rows, posinf, posinf.sum(axis=1)


def softmax_rows(x: np.ndarray, temperature: float, out: np.ndarray) -> None:
    """out[i] = softmax(x[i] / temperature), row by row."""
    s, top = _shifted(x, temperature)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.exp(s) / np.exp(_log_normaliser(s))[:, None]
    # The +inf rows: a one-hot limit for a single +inf, undefined otherwise.
    rows, posinf, count = _posinf_rows(x, top)
    p[rows] = np.where(count[rows, None] == 1, posinf[rows].astype(float), np.nan)
    out[...] = p


def log_softmax_rows(x: np.ndarray, temperature: float, out: np.ndarray) -> None:
    """out[i] = log_softmax(x[i] / temperature), row by row."""
    s, top = _shifted(x, temperature)
    with np.errstate(invalid="ignore", divide="ignore"):
        logp = s - _log_normaliser(s)[:, None]
        rows, posinf, count = _posinf_rows(x, top)
        limit = np.log(posinf[rows].astype(float))
    logp[rows] = np.where(count[rows, None] == 1, limit, np.nan)
    out[...] = logp


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
    out[...] = lse


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
    out[...] = log_abs
    sign[...] = total_sign
