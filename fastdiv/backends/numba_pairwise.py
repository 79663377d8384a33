"""Numba kernels for pairwise Jensen-Shannon matrices, dense and CSR.

Twins of ``js_pairwise`` and ``js_pairwise_csr`` in
:mod:`fastdiv.backends.reference` (same names, same arguments).

The dense kernel computes, for a scalar p = P[i, c] against a tile of Q
rows held transposed (so that consecutive j are consecutive in memory),

    p (log(2p) - log(p + q)) + q (log(2q) - log(p + q))

which is the per-element form p log(2p / (p + q)) + q log(2q / (p + q)) of
DESIGN.md with the logarithm of the quotient taken as a difference. log(2p)
is one scalar per (i, c) and log(2q) is computed once per tile, so the
inner loop over j needs one logarithm and no division. The difference is
not the H(m) form: nothing large cancels, each term keeps an error of a few
ulp of p |log p|, so the sum is off by at most a few eps * (H(p) + 1) (below
1e-13 for k up to 1e6). Where q == p the term is set to exactly 0, so equal
rows give exactly 0 whatever the logarithm's rounding.

Each (i, j) is a sum over c in increasing order into its own float64
accumulator (the vector lanes run over j, not over c), so the result does
not depend on the tile sizes, the vector width or the thread count.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba import prange

from fastdiv.backends.numba_math import log_f64

_LN2 = math.log(2.0)


@nb.njit(inline="always")
def _log(x):
    # The polynomial log of numba_math: inlined, it vectorises (math.log,
    # a libm call, does not), and it keeps log(0) = -inf and NaN exact.
    return log_f64(x)


@nb.njit(cache=True, nogil=True)
def _js_tile(P, Q, out, diag, i0, i1, tile_q, tile_k):
    """Rows i0:i1 of the JS matrix, block by block over Q and the categories.

    Working set per thread: a (tile_k, tile_q) block of Q transposed and its
    log(2q), float64, plus the (i1 - i0, tile_q) accumulators; the caller
    sizes the tiles to stay in L2 (2 MB per core here).
    """
    k = P.shape[1]
    m = Q.shape[0]
    tp = i1 - i0
    acc = np.empty((tp, tile_q))
    qb = np.empty((tile_k, tile_q))
    lb = np.empty((tile_k, tile_q))
    jstart = 0 if diag < 0 else i0 + diag
    for j0 in range(jstart, m, tile_q):
        j1 = min(m, j0 + tile_q)
        jn = j1 - j0
        acc[:, :jn] = 0.0
        for c0 in range(0, k, tile_k):
            c1 = min(k, c0 + tile_k)
            # Transpose the block, then take its logs in a loop over j that
            # vectorises. log(2q) is replaced by 0 where q == 0 so that the
            # q-term q (0 - log s) is exactly 0 there.
            for j in range(jn):
                for c in range(c0, c1):
                    qb[c - c0, j] = Q[j0 + j, c]
            for cc in range(c1 - c0):
                for j in range(jn):
                    q = qb[cc, j]
                    lb[cc, j] = _log(2.0 * q) if q > 0.0 else 0.0
            for ii in range(tp):
                i = i0 + ii
                if diag >= 0 and j1 <= i + diag + 1:
                    continue  # this tile holds no entry j > i + diag
                a = acc[ii]
                for c in range(c0, c1):
                    p = np.float64(P[i, c])
                    qrow = qb[c - c0]
                    lrow = lb[c - c0]
                    if p == 0.0:
                        # p = 0: only the q-term q log(2q / q) = q log 2.
                        for j in range(jn):
                            a[j] += qrow[j] * _LN2
                    else:
                        lp = _log(2.0 * p)
                        for j in range(jn):
                            q = qrow[j]
                            ls = _log(p + q)
                            t = p * (lp - ls) + q * (lrow[j] - ls)
                            a[j] += 0.0 if q == p else t
        for ii in range(tp):
            i = i0 + ii
            for j in range(jn):
                jj = j0 + j
                if diag >= 0:
                    if jj < i + diag:
                        continue
                    if jj == i + diag:
                        out[i, jj] = 0.0
                        continue
                v = 0.5 * acc[ii, j]
                # Never negative; a NaN from NaN input stays NaN.
                out[i, jj] = 0.0 if v < 0.0 else v


def _in2(f):
    # P and Q are typed read-only, so that read-only arrays (a frozen array,
    # np.load(..., mmap_mode="r")) are accepted without a copy; a writeable
    # array converts to this type safely, and one signature per dtype keeps
    # one compiled _js_tile per dtype.
    return nb.types.Array(f, 2, "C", readonly=True)


_DENSE_SIGS = [
    nb.void(_in2(f), _in2(f), f[:, ::1], nb.int64, nb.int64, nb.int64, nb.int64)
    for f in (nb.float32, nb.float64)
]


@nb.njit(_DENSE_SIGS, parallel=True, cache=True, nogil=True)
def js_pairwise(P, Q, out, diag, tile_p, tile_q, tile_k):
    """out[i, j] = JS(P[i], Q[j]); ``diag`` as in the reference twin."""
    n = P.shape[0]
    ntiles = (n + tile_p - 1) // tile_p
    for t in prange(ntiles):
        # Interleave first and last tiles: with diag >= 0 the work of a tile
        # shrinks down the triangle, and static chunks of this order balance.
        tile = t // 2 if t % 2 == 0 else ntiles - 1 - t // 2
        i0 = tile * tile_p
        _js_tile(P, Q, out, diag, i0, min(n, i0 + tile_p), tile_q, tile_k)


@nb.njit(inline="always")
def _js_term(p, q):
    """p log(2p / (p + q)) + q log(2q / (p + q)) for scalars p, q >= 0."""
    if p == q:
        return 0.0  # equal terms cancel exactly (NaN is never equal)
    if p == 0.0:
        return q * _LN2
    if q == 0.0:
        return p * _LN2
    ls = _log(p + q)
    return p * (_log(2.0 * p) - ls) + q * (_log(2.0 * q) - ls)


_CSR_SIGS = [
    f"void(int64[::1], int64[::1], {t}[::1], int64[::1], int64[::1], {t}[::1],"
    f" {t}[:, ::1], int64)"
    for t in ("float32", "float64")
]


@nb.njit(_CSR_SIGS, parallel=True, cache=True, nogil=True)
def js_pairwise_csr(
    p_indptr, p_indices, p_data, qt_indptr, qt_indices, qt_data, out, diag
):
    """JS between CSR rows of P and the rows of Q given as CSC arrays.

    Walks, for each row i, the columns of Q at the categories where P[i] is
    non-zero, accumulating per j the shared terms and masses in increasing
    category order; then 2 JS = S + log 2 (sum p - P_s + sum q - Q_s).
    """
    n, m = out.shape
    k = qt_indptr.shape[0] - 1
    # Row sums of Q in increasing category order, the order in which the
    # shared masses are accumulated: rows with equal support cancel exactly.
    q_sums = np.zeros(m)
    for c in range(k):
        for r in range(qt_indptr[c], qt_indptr[c + 1]):
            q_sums[qt_indices[r]] += qt_data[r]
    nchunks = min(n, 64)
    for ch in prange(nchunks):
        s_acc = np.empty(m)
        p_acc = np.empty(m)
        q_acc = np.empty(m)
        # Rows ch, ch + nchunks, ...: with diag >= 0 the work per row shrinks
        # with i, and interleaved rows balance the static chunks.
        for i in range(ch, n, nchunks):
            lo = 0 if diag < 0 else i + diag + 1
            for j in range(lo, m):
                s_acc[j] = 0.0
                p_acc[j] = 0.0
                q_acc[j] = 0.0
            p_sum = 0.0
            for idx in range(p_indptr[i], p_indptr[i + 1]):
                c = p_indices[idx]
                p = np.float64(p_data[idx])
                p_sum += p
                r0 = qt_indptr[c]
                r1 = qt_indptr[c + 1]
                if lo > 0:
                    # Row indices are sorted: skip to the first j >= lo.
                    a, b = r0, r1
                    while a < b:
                        mid = (a + b) // 2
                        if qt_indices[mid] < lo:
                            a = mid + 1
                        else:
                            b = mid
                    r0 = a
                for r in range(r0, r1):
                    j = qt_indices[r]
                    q = np.float64(qt_data[r])
                    s_acc[j] += _js_term(p, q)
                    p_acc[j] += p
                    q_acc[j] += q
            for j in range(lo, m):
                outside = (p_sum - p_acc[j]) + (q_sums[j] - q_acc[j])
                v = 0.5 * (s_acc[j] + _LN2 * outside)
                out[i, j] = 0.0 if v < 0.0 else v
            if diag >= 0 and i + diag < m:
                out[i, i + diag] = 0.0
