"""Pairwise divergence matrices and nearest distributions, dense and sparse.

:func:`pairwise` fills the (n, m) matrix of a divergence between the rows of
P (n x k) and the rows of Q (m x k); :func:`nearest` keeps only the k
closest rows of Q for each row of P, in bounded memory. Both take NumPy
arrays or SciPy sparse matrices (any format; computed as CSR).

How each metric is computed:

* "kl" and "cross_entropy" through the matrix product identity
  KL[i, j] = -H(P_i) - (P @ log(Q).T)[i, j], in float64 with NumPy's BLAS.
  log Q is -inf where q = 0; it is replaced by 0 for the product (so that a
  p = 0 meeting it contributes 0, not NaN), and the pairs where some p > 0
  meets a q = 0 are found by a second, small product of (P > 0) against
  (Q == 0), restricted to the rows and columns of Q that hold zeros; those
  pairs are +inf.
* "js" and "js_distance" by the tiled kernels ``js_pairwise`` (dense) and
  ``js_pairwise_csr`` (sparse) of the backends, one fixed-order float64 sum
  per pair.
"""

from __future__ import annotations

import contextlib
import math
import numbers

import numpy as np

from fastdiv._checks import (
    as_float_array,
    check_out,
    check_probabilities,
    normalized_overflowing,
    shown,
    validate_row_stats,
)
from fastdiv._dispatch import kernel_for, num_threads, options
from fastdiv.divergence import _log_base

__all__ = ["pairwise", "nearest"]

_TOPIC = "pairwise"
METRICS = ("kl", "cross_entropy", "js", "js_distance")

# Tiles of the dense JS kernels, in rows of P, rows of Q and categories. A
# thread holds a (TILE_K, TILE_Q) float64 block of Q and its logs (2 x 512
# KB) and TILE_P x TILE_Q float64 accumulators (128 KB): 1.1 MB, inside the
# 2 MB L2 of a core here (the reported L3 is not real, see PERF-NOTES).
# Results do not depend on these numbers; tests change them.
TILE_P = 64
TILE_Q = 256
TILE_K = 256

# Rows of P per step when the matrix is written through a temporary (out=
# a memory map or another layout) and per step of the KL/CE products: the
# temporary stays below BLOCK_BYTES.
BLOCK_BYTES = 64 * 2**20


def pairwise(
    P,
    Q=None,
    metric="js",
    *,
    base=None,
    normalize=False,
    check=True,
    out=None,
    backend=None,
):
    r"""Divergence matrix between the rows of P and the rows of Q.

    .. math::

        D[i, j] = d(P_i, Q_j), \quad
        d \in \{\mathrm{KL}, H(\cdot, \cdot), \mathrm{JS}, \sqrt{\mathrm{JS}}\}

    with KL(p || q) = sum p log(p / q), H(p, q) = -sum p log q and
    JS(p, q) = 1/2 sum [p log(2p / (p + q)) + q log(2q / (p + q))].

    Parameters
    ----------
    P : array_like or scipy.sparse matrix, shape (n, k)
        One distribution per row. float32 stays float32; integers and
        booleans become float64 (counts with ``normalize=True``).
    Q : array_like or scipy.sparse matrix, shape (m, k), optional
        Distributions to compare with; None compares P with itself, and
        then the symmetric metrics compute each pair once and the diagonal
        of "js", "js_distance" and "kl" is exactly 0.
    metric : {"js", "js_distance", "kl", "cross_entropy"}, default "js"
        "kl" is KL(P_i || Q_j), "cross_entropy" is H(P_i, Q_j).
    base : float, optional
        Base of the logarithm (natural by default); "js_distance" is the
        square root of JS in that base, as in SciPy (base > 1 there).
    normalize : bool, default False
        Divide each row by its sum first (an all-zero row is an error).
    check : bool, default True
        Check that entries are finite and >= 0 and rows sum to 1 (within
        the dtype's tolerance); the error names "P" or "Q" and the row.
    out : ndarray, optional
        (n, m) array of the result dtype to write into; a ``np.memmap`` is
        written block by block, so the matrix never has to fit in memory.
    backend : {"auto", "numpy", "numba", "cython"}, optional
        Force a backend for the JS kernels; by default "auto".

    Returns
    -------
    ndarray, shape (n, m)
        float32 when both inputs are float32, else float64. Sums are
        accumulated in float64 (also the matrix products of KL and CE).

    Raises
    ------
    ValueError
        Unknown metric (the known ones are listed), P and Q with different
        numbers of categories, ``out`` of the wrong shape or dtype, a row
        that fails the probability checks, a bad ``base``.

    Notes
    -----
    Where p = 0 a term is 0 (also against q = 0); where p > 0 meets q = 0,
    KL and cross-entropy are +inf. JS never is: it lies in [0, log 2] and is
    clamped at 0 against rounding. JS depends only on the categories where
    both rows are non-zero plus the two rows' masses elsewhere, which is
    how sparse rows are computed: their cost follows the shared non-zeros,
    not k. Sparse and dense input give equal results (to rounding).

    Each JS entry is one float64 sum in increasing category order, so the
    matrix does not depend on the thread count or on the tile sizes. KL and
    cross-entropy come from BLAS, whose rounding may change in the last
    bits with the shape of a block (and so with ``out=`` or
    :func:`nearest`'s budget).

    KL is computed as ``-H(P_i) - (P @ log(Q).T)[i, j]``, a difference of
    two sums of size ~H: its error is absolute, a few ulps of H(P_i) + H(P_i,
    Q_j), not relative to KL. For near-identical rows (KL ~ 1e-15 and below)
    an entry may be a few 1e-16 off, negative included, and the ranking of
    :func:`nearest` among near-duplicates follows that rounding; use
    :func:`kl_div` on the pairs that matter, which sums p log(p / q) per
    entry. With Q=None the diagonal is exactly 0.

    Examples
    --------
    >>> import numpy as np, fastdiv as fd
    >>> P = np.array([[1.0, 0.0], [0.5, 0.5]])
    >>> fd.pairwise(P, metric="js").round(4)
    array([[0.    , 0.2158],
           [0.2158, 0.    ]])
    >>> fd.pairwise(P, P[::-1], metric="kl")
    array([[0.69314718, 0.        ],
           [0.        ,        inf]])
    """
    metric = _check_metric(metric)
    logb = _log_base(base, sqrt=metric == "js_distance")
    ops = _Operands(P, Q, metric, normalize, check, backend)
    n, m = ops.n, ops.m
    out = check_out(out, (n, m), ops.dtype)

    direct = (
        out is not None
        and not isinstance(out, np.memmap)
        and out.flags.c_contiguous
        and out.dtype.isnative
        and not any(np.may_share_memory(out, a) for a in ops.arrays())
    )
    res = out if direct else (np.empty((n, m), ops.dtype) if out is None else out)
    if n and m:
        if res is out and not direct:
            # Through a temporary of at most BLOCK_BYTES, block by block.
            step = _rows_per_block(m, 8)
            for r0 in range(0, n, step):
                r1 = min(n, r0 + step)
                tmp = np.empty((r1 - r0, m), ops.dtype)
                ops.rows(r0, r1, tmp)
                _finish(tmp, metric, logb)
                res[r0:r1] = tmp
        else:
            ops.rows(0, n, res)
            _finish(res, metric, logb)
        if ops.symmetric and metric in ("js", "js_distance"):
            _mirror_lower(res)
    return res


def nearest(
    P,
    Q=None,
    k=10,
    metric="js",
    *,
    base=None,
    normalize=False,
    check=True,
    memory_budget=256 * 2**20,
    backend=None,
):
    r"""The k rows of Q closest to each row of P, in bounded memory.

    Parameters
    ----------
    P : array_like or scipy.sparse matrix, shape (n, c)
        Query distributions, one per row.
    Q : array_like or scipy.sparse matrix, shape (m, c), optional
        Distributions to search; None searches P itself, and then a row is
        never its own neighbour.
    k : int, default 10
        Neighbours per row, 1 <= k <= m (m - 1 with Q=None); a larger k
        raises ValueError, as ``torch.topk`` does. When P has no rows the
        results are empty (0, k) arrays, whatever the number of rows of Q.
    metric, base, normalize, check, backend
        As in :func:`pairwise`.
    memory_budget : int, default 256 MiB
        Bytes of working memory: P and Q are processed in blocks sized so
        that the block matrix and its temporaries stay within it (besides
        the inputs, the (n, k) results and, for "kl" and "cross_entropy",
        log Q). The n x m matrix is never held. It must be >= 1 (ValueError
        otherwise). A budget smaller than the smallest block, one row of P
        against min(m, max(k + 1, 4096)) rows of Q, is not an error: that
        smallest block is used, so the memory used may exceed the budget.

    Returns
    -------
    indices : ndarray of int64, shape (n, k)
        Rows of Q, closest first; equal values are ordered by index.
    values : ndarray, shape (n, k)
        The divergences, of the dtype :func:`pairwise` would return.

    Notes
    -----
    Each block of rows of P keeps a running top k: a block of Q adds only
    the entries below the current k-th value (after the first block, few),
    so the cost is close to that of computing the blocks. NaN values, which
    only ``check=False`` can produce, rank after every number.

    Examples
    --------
    >>> import numpy as np, fastdiv as fd
    >>> P = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> idx, val = fd.nearest(P, k=1)
    >>> idx.ravel()
    array([1, 0, 1])
    """
    metric = _check_metric(metric)
    logb = _log_base(base, sqrt=metric == "js_distance")
    ops = _Operands(P, Q, metric, normalize, check, backend)
    n, m = ops.n, ops.m
    avail = m - 1 if ops.symmetric else m
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be a positive integer, got {shown(k)}")
    k = int(k)
    # With no query rows there is nothing to search for: empty results, as
    # SciPy's KDTree and scikit-learn give for an empty query, even when the
    # rows to search (P itself) are too few for k.
    if k > avail and n > 0:
        raise ValueError(
            f"k={k} is larger than the {avail} rows of "
            f"{'P other than the row itself' if ops.symmetric else 'Q'}"
        )
    if isinstance(memory_budget, bool) or not isinstance(
        memory_budget, numbers.Integral
    ):
        raise TypeError(f"memory_budget must be an integer, got {shown(memory_budget)}")
    if memory_budget < 1:
        raise ValueError(
            "memory_budget must be a positive integer number of bytes, got "
            f"{int(memory_budget)}"
        )

    # About 40 bytes per entry of a block: the float64 values, the int64
    # candidate indices and the masks of the selection.
    per_entry = 40
    cells = max(int(memory_budget) - ops.fixed_bytes(), 0) // per_entry
    bm = int(min(m, max(k + 1, 4096, cells // 1024)))
    bn = int(min(n, max(1, cells // max(bm, 1))))

    idx_out = np.empty((n, k), np.int64)
    val_out = np.empty((n, k), ops.dtype)
    if n == 0:
        return idx_out, val_out
    for r0 in range(0, n, bn):
        r1 = min(n, r0 + bn)
        top = _TopK(r1 - r0, k)
        # One buffer for the blocks of these rows (the last, narrower one
        # gets its own: the kernels write whole C-ordered blocks).
        block = np.empty((r1 - r0, bm), ops.dtype)
        for c0 in range(0, m, bm):
            c1 = min(m, c0 + bm)
            vals = block if c1 - c0 == bm else np.empty((r1 - r0, c1 - c0), ops.dtype)
            ops.rect(r0, r1, c0, c1, vals)
            _finish(vals, metric, logb)
            self_cols = None
            if ops.symmetric:
                rows = np.arange(max(r0, c0), min(r1, c1))
                self_cols = (rows - r0, rows - c0)
            top.push(vals, c0, self_cols)
        idx_out[r0:r1], val_out[r0:r1] = top.result()
    return idx_out, val_out


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------


def _check_metric(metric) -> str:
    if not isinstance(metric, str) or metric not in METRICS:
        raise ValueError(
            f"unknown metric {shown(metric)}; the known metrics are "
            f"{', '.join(map(repr, METRICS))}"
        )
    return metric


def _is_sparse(x) -> bool:
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy is a dependency
        return False
    return sp.issparse(x)


def _width(x) -> int | None:
    """The number of columns of a 2-D input, or None if it is not known
    without converting it (the conversion then says what is wrong)."""
    try:
        shape = x.shape if hasattr(x, "shape") else np.shape(x)
    except ValueError:  # ragged nested lists
        return None
    return shape[1] if len(shape) == 2 else None


def _check_widths(kp, kq) -> None:
    if kp is not None and kq is not None and kp != kq:
        raise ValueError(
            f"P has {kp} categories (columns) but Q has {kq}; both must have "
            "the same number"
        )


class _Operands:
    """P and Q checked, converted and ready for the kernels of one metric."""

    def __init__(self, P, Q, metric, normalize, check, backend):
        self.metric = metric
        self.backend = backend
        self.symmetric = Q is None
        sparse = _is_sparse(P) or (Q is not None and _is_sparse(Q))
        self.sparse = sparse
        prep = _prepare_sparse if sparse else _prepare_dense
        if Q is not None:
            # Before the row checks, whose errors would hide this one.
            _check_widths(_width(P), _width(Q))
        self._h = None  # -sum p log p of each row of P, for dense KL
        with _beside_blas(metric):
            if metric == "kl" and not sparse:
                A, self._h = _prepare_dense_entropy(P, "P", normalize, check, backend)
            else:
                A = prep(P, "P", normalize, check, backend)
            B = A if Q is None else prep(Q, "Q", normalize, check, backend)
        _check_widths(A.shape[1], B.shape[1])
        self.dtype = np.result_type(A.dtype, B.dtype)
        self.A = _astype(A, self.dtype)
        self.B = self.A if Q is None else _astype(B, self.dtype)
        self.n, self.m = self.A.shape[0], self.B.shape[0]
        self._kl = None
        self._csc = None

    def arrays(self):
        if self.sparse:
            return (self.A.data, self.B.data)
        return (self.A, self.B)

    def fixed_bytes(self) -> int:
        """Memory held for the whole run besides the blocks."""
        if self.metric in ("kl", "cross_entropy"):
            return self.m * self.A.shape[1] * 8
        return 0

    def rows(self, r0, r1, target):
        """Rows r0:r1 of the matrix into target; with P against itself, JS
        fills only j >= i (the caller mirrors)."""
        diag = r0 if self.symmetric and self.metric in ("js", "js_distance") else -1
        self._rect(r0, r1, 0, self.m, target, diag)
        if self.symmetric and self.metric == "kl":
            i = np.arange(r0, min(r1, self.m))
            target[i - r0, i] = 0.0

    def rect(self, r0, r1, c0, c1, target):
        """The full rectangle [r0:r1, c0:c1] into target."""
        self._rect(r0, r1, c0, c1, target, -1)

    def _rect(self, r0, r1, c0, c1, target, diag):
        if self.metric in ("js", "js_distance"):
            if self.sparse:
                self._js_sparse(r0, r1, c0, c1, target, diag)
            else:
                self._js_dense(r0, r1, c0, c1, target, diag)
        else:
            self._kl_ce(r0, r1, c0, c1, target)

    # JS ------------------------------------------------------------------

    def _js_dense(self, r0, r1, c0, c1, target, diag):
        Pb = self.A[r0:r1]
        Qb = self.B[c0:c1]
        fn = kernel_for(_TOPIC, "js_pairwise", Pb.size * Qb.shape[0], self.backend)
        # Enough tiles of P for every thread, whatever the block.
        threads = max(1, num_threads())
        tp = max(1, min(TILE_P, -(-Pb.shape[0] // (2 * threads))))
        buf = (
            target if target.dtype == self.dtype else np.empty(target.shape, self.dtype)
        )
        fn(Pb, Qb, buf, int(diag), tp, TILE_Q, TILE_K)
        if buf is not target:
            target[...] = buf

    def _js_sparse(self, r0, r1, c0, c1, target, diag):
        Pb = self.A[r0:r1]
        if self._csc is None or self._csc[0] != (c0, c1):
            Qt = self.B[c0:c1].tocsc()
            Qt.sort_indices()
            self._csc = (
                (c0, c1),
                Qt.indptr.astype(np.int64),
                Qt.indices.astype(np.int64),
                Qt.data,
            )
        _, qp, qi, qd = self._csc
        fn = kernel_for(_TOPIC, "js_pairwise_csr", Pb.nnz + qd.size, self.backend)
        buf = (
            target if target.dtype == self.dtype else np.empty(target.shape, self.dtype)
        )
        fn(
            Pb.indptr.astype(np.int64),
            Pb.indices.astype(np.int64),
            Pb.data,
            qp,
            qi,
            qd,
            buf,
            int(diag),
        )
        if buf is not target:
            target[...] = buf

    # KL and cross-entropy ---------------------------------------------------

    def _kl_setup(self):
        """log Q (0 where q = 0) in float64, and where Q has zeros."""
        if self._kl is not None:
            return self._kl
        B = self.B
        if self.sparse:
            L = B.astype(np.float64)
            L.data = np.log(L.data)
            ones = B.astype(np.float64)
            ones.data[:] = 1.0
            self._kl = (L.T.tocsc(), ones.T.tocsc())
            return self._kl
        # log q in float64 (0 where q = 0), and a last column of ones that
        # multiplies a column of sum p log p appended to -P (see _kl_ce_dense).
        m, k = B.shape
        L = np.empty((m, k + 1))
        L[:, k] = 1.0
        with np.errstate(divide="ignore"):
            np.log(B, out=L[:, :k], dtype=np.float64)
        # Rows of Q with a zero, found in the logs (-inf) by one reduction.
        zrows = np.flatnonzero(np.min(L[:, :k], axis=1, initial=np.inf) == -np.inf)
        zero = B[zrows] == 0.0
        L[zrows, :k] = np.where(zero, 0.0, L[zrows, :k])
        zcols = np.flatnonzero(zero.any(axis=0))
        # Counts of p > 0 against q == 0: float32 is exact below 2**24.
        cdt = np.float32 if len(zcols) < 2**24 else np.float64
        Z = np.ascontiguousarray(zero[:, zcols].T, dtype=cdt)
        # L.T is read by BLAS in place (a transposed operand, no copy).
        self._kl = (L.T, zrows, zcols, Z)
        return self._kl

    def _kl_ce(self, r0, r1, c0, c1, target):
        step = _rows_per_block(c1 - c0, 8)
        for a0 in range(r0, r1, step):
            a1 = min(r1, a0 + step)
            tgt = target[a0 - r0 : a1 - r0]
            if self.sparse:
                self._kl_ce_sparse(a0, a1, c0, c1, tgt)
            else:
                self._kl_ce_dense(a0, a1, c0, c1, tgt)

    def _kl_ce_dense(self, r0, r1, c0, c1, target):
        LT, zrows, zcols, Z = self._kl_setup()
        Pb = self.A[r0:r1]
        k = Pb.shape[1]
        kl = self.metric == "kl"
        direct = target.dtype == np.float64 and target.flags.c_contiguous
        res = target if direct else np.empty(target.shape, np.float64)
        # KL = sum p log p - sum p log q. When the (n, m) result is larger
        # than P, the row term rides in the product: [-P | sum p log p] @
        # [log Q | 1].T; otherwise a float64 P is used as it is and the row
        # term is one pass over the result.
        if Pb.dtype == np.float64 and res.shape[1] <= k:
            np.matmul(Pb, LT[:k, c0:c1], out=res)
            # 0.0 - x, not -x: a zero result is +0.0, as from the product.
            h = 0.0 if not kl else (0.0 - self._h[r0:r1])[:, None]
            np.subtract(h, res, out=res)
        else:
            Pa = np.empty((r1 - r0, k + kl))
            np.negative(Pb, out=Pa[:, :k])
            if kl:
                Pa[:, k] = -self._h[r0:r1]
            np.matmul(Pa, LT[: k + kl, c0:c1], out=res)
        # Pairs where some p > 0 meets q = 0: only rows of Q with a zero,
        # only columns where one of them is zero.
        lo, hi = np.searchsorted(zrows, [c0, c1])
        if hi > lo:
            hits = (Pb[:, zcols] > 0).astype(Z.dtype) @ Z[:, lo:hi]
            ii, jj = np.nonzero(hits > 0)
            res[ii, zrows[lo:hi][jj] - c0] = np.inf
        if res is not target:
            target[...] = res
        if self.symmetric and self.metric == "kl":
            i = np.arange(max(r0, c0), min(r1, c1))
            target[i - r0, i - c0] = 0.0

    def _kl_ce_sparse(self, r0, r1, c0, c1, target):
        LT, onesT = self._kl_setup()
        Pb = self.A[r0:r1].astype(np.float64)
        cross = (Pb @ LT[:, c0:c1]).toarray()
        pbin = Pb.copy()
        pbin.data[:] = 1.0
        shared = (pbin @ onesT[:, c0:c1]).toarray()
        nnz = np.diff(Pb.indptr).astype(np.float64)
        cross[shared < nnz[:, None]] = -np.inf
        if self.metric == "kl":
            xlx = Pb.copy()
            xlx.data = xlx.data * np.log(xlx.data)
            negh = np.asarray(xlx.sum(axis=1)).ravel()
            cross = negh[:, None] - cross
        else:
            cross = -cross
        target[...] = cross
        if self.symmetric and self.metric == "kl":
            i = np.arange(max(r0, c0), min(r1, c1))
            target[i - r0, i - c0] = 0.0


def _dense_rows(x, name):
    """x as a 2-D C-contiguous float array."""
    # Converted first, so that ragged rows are reported by as_float_array.
    arr = as_float_array(x, name)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (rows of distributions), got shape {arr.shape}"
        )
    return np.ascontiguousarray(arr)


def _prepare_dense(x, name, normalize, check, backend):
    return check_probabilities(
        _dense_rows(x, name), name, normalize=normalize, check=check, backend=backend
    )


def _prepare_sparse(x, name, normalize, check, backend):
    """A canonical CSR copy: float data, sorted int64 indices, no zeros."""
    import scipy.sparse as sp

    if not sp.issparse(x):
        x = sp.csr_matrix(_prepare_dense(x, name, normalize, check, backend))
    elif x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {x.shape}")
    csr = sp.csr_matrix(x, copy=True)
    try:
        # Index bounds and monotone pointers: the kernels trust them, and a
        # column index past k made the Cython kernel write out of bounds.
        csr.check_format(full_check=True)
    except ValueError as exc:
        raise ValueError(f"{name} is not a valid CSR matrix: {exc}") from None
    csr.data = as_float_array(csr.data, name)
    csr.sum_duplicates()
    n = csr.shape[0]
    rows = np.repeat(np.arange(n), np.diff(csr.indptr))
    data = csr.data
    if check:
        bad = ~np.isfinite(data) | (data < 0)
        if bad.any():
            pos = int(np.argmax(bad))
            what = "a negative entry" if data[pos] < 0 else "a non-finite entry"
            raise ValueError(
                f"{name} row {int(rows[pos])} has {what} ({float(data[pos])!r} in "
                f"column {int(csr.indices[pos])}); probabilities must be finite "
                "and >= 0"
            )
    sums = np.bincount(rows, weights=data.astype(np.float64), minlength=n)
    k = csr.shape[1]
    if normalize:
        if check and k and (sums <= 0).any():
            i = int(np.argmax(sums <= 0))
            raise ValueError(f"{name} row {i} sums to 0 and cannot be normalized")
        with np.errstate(invalid="ignore", divide="ignore"):
            scaled = data / sums[rows]
        for i in np.flatnonzero(np.isinf(sums)):
            row = slice(csr.indptr[i], csr.indptr[i + 1])
            scaled[row] = normalized_overflowing(data[row])
        csr.data = scaled.astype(data.dtype)
    elif check:
        from fastdiv._checks import reject_bad_sums

        reject_bad_sums(name, sums, data.dtype, k)
    csr.eliminate_zeros()
    csr.sort_indices()
    csr.indices = csr.indices.astype(np.int64)
    csr.indptr = csr.indptr.astype(np.int64)
    return csr


def _astype(x, dtype):
    if x.dtype == dtype:
        return x
    if _is_sparse(x):
        y = x.copy()
        y.data = y.data.astype(dtype)
        return y
    return x.astype(dtype)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _rows_per_block(m: int, itemsize: int) -> int:
    return max(1, BLOCK_BYTES // max(1, m * itemsize))


def _prepare_dense_entropy(x, name, normalize, check, backend):
    """:func:`_prepare_dense`, and the entropy -sum p log p of each row
    (float64, 0 log 0 = 0): in the pass of the checks when there are checks
    and no normalisation."""
    if normalize or not check:
        arr = _prepare_dense(x, name, normalize, check, backend)
        h = np.empty(arr.shape[0])
        kernel_for("divergence", "entropy_rows", arr.size, backend)(arr, h)
        return arr, h
    arr = _dense_rows(x, name)
    n = arr.shape[0]
    h, sums = np.empty(n), np.empty(n)
    negatives = np.empty(n, np.int64)
    fn = kernel_for("divergence", "entropy_rows_checked", arr.size, backend)
    fn(arr, h, sums, negatives)
    validate_row_stats(arr, name, sums, negatives)
    return arr, h


def _beside_blas(metric):
    """One thread for the compiled kernels around the matrix products of
    KL and cross-entropy, as-is otherwise.

    OpenBLAS's threads keep spinning for a while after a product. A 2-thread
    OpenMP region started then (the checks of the next call's inputs, say)
    shares the cores with them: on the 2-core machine the checks of two
    2000 x 256 inputs took 19 ms instead of 0.3.
    """
    if metric in ("kl", "cross_entropy"):
        return options(threads=1)
    return contextlib.nullcontext()


def _finish(res: np.ndarray, metric: str, logb: float | None) -> None:
    """Change of base and the square root of js_distance, in place.

    The lower triangle of a symmetric JS block is not written yet (it is
    mirrored afterwards) and may hold anything: invalid operations on it
    are silenced.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        _finish_values(res, metric, logb)


def _finish_values(res, metric, logb):
    if logb is not None:
        res /= res.dtype.type(logb) if res.dtype == np.float32 else logb
    if metric == "js_distance":
        np.sqrt(res, out=res)


def _mirror_lower(res: np.ndarray) -> None:
    """res[i, j] = res[j, i] for j < i, in blocks of rows (res may be a
    memory map): the kernels filled the upper triangle."""
    n = res.shape[0]
    step = max(1, int(math.sqrt(BLOCK_BYTES // max(res.itemsize, 1))))
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        src = np.array(res[:r1, r0:r1].T)  # (r1 - r0, r1), upper part
        i = np.arange(r0, r1)[:, None]
        j = np.arange(r1)[None, :]
        np.copyto(res[r0:r1, :r1], src, where=j < i)


def _sparse_nonzero(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows and columns of the True entries of a C-ordered 2-d boolean
    mask that has few, in row-major order.

    np.nonzero reads every entry; this reads the mask as 8-byte words and
    looks inside the few that are not zero (after the first blocks of
    nearest, about k per row of several thousand entries pass): 3-4x less
    time on such masks.
    """
    flat = mask.reshape(-1)
    whole = flat.size // 8 * 8
    words = flat[:whole].view(np.uint64)
    pos = (np.flatnonzero(words)[:, None] * 8 + np.arange(8)).reshape(-1)
    pos = np.concatenate([pos[flat[pos]], whole + np.flatnonzero(flat[whole:])])
    return np.divmod(pos, mask.shape[1])


class _TopK:
    """Running k smallest (value, index) per row; ties by lower index."""

    def __init__(self, n: int, k: int):
        self.k = k
        self.val = np.full((n, k), np.inf)
        self.idx = np.full((n, k), np.iinfo(np.int64).max, np.int64)
        # 1 marks a placeholder (no candidate yet): it ranks after all.
        self.flag = np.ones((n, k), np.int8)

    def push(self, vals: np.ndarray, c0: int, self_cols) -> None:
        """Merge in a block of values (modified: self entries become NaN)
        whose columns start at index c0."""
        n, w = vals.shape
        k = self.k
        # A full selection (argpartition, some 10 ns per entry) runs on
        # pieces of at most 2 * head columns; wider ones are split, and each
        # part after the first is filtered by the k-th values the parts
        # before it gave (a fraction of about k / width of the columns seen
        # passes; the rest costs a comparison).
        head = 8 * (k + 1)
        if self_cols is not None and len(self_cols[0]):
            vals[self_cols] = np.nan  # excluded below
        if self.flag[:, -1].any():
            if w > 2 * head:
                self._push_split(vals, c0, self_cols, head)
            else:
                self._merge_dense(vals, c0, self_cols)
            return
        # The k-th values are values of this dtype (or inf, or NaN), so the
        # comparison in the block's own dtype is exact.
        kth = self.val[:, -1].astype(vals.dtype)
        nan_kth = np.isnan(kth)
        with np.errstate(invalid="ignore"):
            cand = vals < kth[:, None]
            if nan_kth.any():
                cand |= nan_kth[:, None] & ~np.isnan(vals)
        if self_cols is not None and len(self_cols[0]):
            cand[self_cols] = False
        count = np.count_nonzero(cand)
        if count > 2 * n * k:
            if w > 2 * head:
                self._push_split(vals, c0, self_cols, w // 2)
            else:
                self._merge_dense(vals, c0, self_cols)
            return
        if count == 0:
            return
        ri, ci = _sparse_nonzero(cand)
        self._merge(
            ri,
            vals[ri, ci],
            (ci + c0).astype(np.int64),
            np.zeros(len(ri), np.int8),
        )

    def _push_split(self, vals, c0, self_cols, at):
        """push of vals[:, :at], then of vals[:, at:]."""
        parts = []
        for lo, hi in ((0, at), (at, vals.shape[1])):
            cols = None
            if self_cols is not None:
                keep = (self_cols[1] >= lo) & (self_cols[1] < hi)
                cols = (self_cols[0][keep], self_cols[1][keep] - lo)
            parts.append((vals[:, lo:hi], c0 + lo, cols))
        for part in parts:
            self.push(*part)

    def _merge_dense(self, vals, c0, self_cols):
        n, w = vals.shape
        kk = min(self.k + 1, w)
        sel = np.argpartition(vals, kk - 1, axis=1)[:, :kk]
        sv = np.take_along_axis(vals, sel, axis=1)
        # argpartition breaks ties arbitrarily: where the kk-th value has
        # more copies in the block than were selected, sort that row.
        t = sv.max(axis=1)
        with np.errstate(invalid="ignore"):
            fix = (vals == t[:, None]).sum(axis=1) > (sv == t[:, None]).sum(axis=1)
        for r in np.flatnonzero(fix):
            sel[r] = np.argsort(vals[r], kind="stable")[:kk]
        sv = np.take_along_axis(vals, sel, axis=1)
        flags = np.zeros(sel.shape, np.int8)
        if self_cols is not None and len(self_cols[0]):
            is_self = np.zeros(vals.shape, bool)
            is_self[self_cols] = True
            flags[np.take_along_axis(is_self, sel, axis=1)] = 1
        ri = np.repeat(np.arange(n), kk)
        self._merge(ri, sv.ravel(), (sel + c0).ravel().astype(np.int64), flags.ravel())

    def _merge(self, ri, v, ix, fl):
        n, k = self.val.shape
        rows = np.concatenate([np.repeat(np.arange(n), k), ri])
        vals = np.concatenate([self.val.ravel(), v])
        idx = np.concatenate([self.idx.ravel(), ix])
        flags = np.concatenate([self.flag.ravel(), fl])
        # Group by row; in a row: real before placeholder, then value (NaN
        # last), then index.
        order = np.lexsort((idx, vals, flags, rows))
        counts = np.bincount(rows, minlength=n)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        take = order[(starts[:, None] + np.arange(k)[None, :]).ravel()]
        self.val = vals[take].reshape(n, k)
        self.idx = idx[take].reshape(n, k)
        self.flag = flags[take].reshape(n, k)

    def result(self):
        return self.idx, self.val
