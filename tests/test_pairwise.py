"""pairwise and nearest: against row-wise loops, SciPy, and themselves under
other block sizes, thread counts, layouts and sparse input."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.spatial.distance import cdist

import fastdiv as fd
from tests.conftest import require_backend

# The module (fastdiv.pairwise the attribute is the function).
pw_module = importlib.import_module("fastdiv.pairwise")

TOPIC = "pairwise"
KERNELS = ("js_pairwise", "js_pairwise_csr")

METRICS = ("kl", "cross_entropy", "js", "js_distance")
ROWWISE = {
    "kl": fd.kl_div,
    "cross_entropy": fd.cross_entropy,
    "js": fd.js_div,
    "js_distance": fd.js_distance,
}
# Absolute tolerance of a result against the float64 reference: the issue
# asks for 1e-12 on JS; float32 results are rounded once to float32.
ATOL = {np.float64: 1e-12, np.float32: 2e-7}


def _dists(rng, n, k, zeros=0.3, dtype=np.float64):
    x = rng.random((n, k))
    x[rng.random((n, k)) < zeros] = 0.0
    x[np.arange(n), rng.integers(0, k, n)] += 0.5  # no all-zero row
    return (x / x.sum(axis=1, keepdims=True)).astype(dtype)


def _loop(metric, P, Q):
    """The matrix as a loop over the row-wise function."""
    fn = ROWWISE[metric]
    P64, Q64 = np.asarray(P, np.float64), np.asarray(Q, np.float64)
    # float32 rows widened to float64 sum to 1 only within float32's
    # tolerance: the checks were done on the original rows.
    return np.array([fn(np.broadcast_to(p, Q64.shape), Q64, check=False) for p in P64])


def _assert_matrix(actual, expected, atol):
    inf = np.isinf(expected)
    assert (np.isinf(actual) == inf).all()
    np.testing.assert_allclose(actual[~inf], expected[~inf], rtol=0, atol=atol)


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles that do not divide the shapes, so every edge path runs."""
    monkeypatch.setattr(pw_module, "TILE_P", 3)
    monkeypatch.setattr(pw_module, "TILE_Q", 5)
    monkeypatch.setattr(pw_module, "TILE_K", 7)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_equals_loop_over_rowwise(backend, metric, dtype, rng):
    P = _dists(rng, 13, 11, dtype=dtype)
    Q = _dists(rng, 9, 11, dtype=dtype)
    Q[2] = P[4]  # an identical pair
    res = fd.pairwise(P, Q, metric, backend=backend)
    assert res.dtype == dtype and res.shape == (13, 9)
    scale = 1 + np.abs(res[np.isfinite(res)]).max()
    _assert_matrix(res, _loop(metric, P, Q), ATOL[dtype] * scale)
    if metric.startswith("js"):
        assert res[4, 2] == 0.0


def test_js_distance_equals_scipy_cdist(backend, rng):
    P = _dists(rng, 20, 33)
    Q = _dists(rng, 17, 33)
    res = fd.pairwise(P, Q, "js_distance", backend=backend)
    np.testing.assert_allclose(res, cdist(P, Q, "jensenshannon"), rtol=0, atol=1e-12)
    res2 = fd.pairwise(P, Q, "js_distance", base=2, backend=backend)
    ref2 = cdist(P, Q, lambda u, v: _scipy_js(u, v, 2.0))
    np.testing.assert_allclose(res2, ref2, rtol=0, atol=1e-12)


def _scipy_js(u, v, base):
    from scipy.spatial.distance import jensenshannon

    return jensenshannon(u, v, base=base)


@pytest.mark.parametrize("metric", METRICS)
def test_zeros_in_every_combination(backend, metric):
    # Rows covering p = 0 / q = 0 / both / neither in one column each.
    P = np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5], [1.0, 0, 0, 0]])
    Q = np.array([[0.5, 0.0, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25], [0, 0, 0, 1.0]])
    res = fd.pairwise(P, Q, metric, backend=backend)
    expected = _loop(metric, P, Q)
    _assert_matrix(res, expected, 1e-15)
    assert not np.isnan(res).any()
    if metric in ("kl", "cross_entropy"):
        assert np.isinf(res[0, 0]) and np.isinf(res[2, 2])  # p > 0 meets q = 0
        assert np.isfinite(res[0, 1])
    elif metric == "js":  # disjoint supports: the maximum, log 2
        assert res[2, 2] == pytest.approx(np.log(2.0), abs=1e-15)


@pytest.mark.parametrize("metric", ["js", "js_distance", "kl"])
def test_self_symmetric_with_exact_zero_diagonal(backend, metric, rng):
    P = _dists(rng, 21, 10)
    res = fd.pairwise(P, metric=metric, backend=backend)
    assert (np.diag(res) == 0.0).all()
    if metric != "kl":
        assert (res == res.T).all()
    _assert_matrix(res, fd.pairwise(P, P.copy(), metric, backend=backend), 1e-15)


def test_js_kernels_invariant_to_tiles_and_threads(compiled_backend, rng, monkeypatch):
    P = _dists(rng, 31, 40)
    Q = _dists(rng, 27, 40)
    results = []
    for tiles in [(64, 256, 256), (3, 5, 7), (1, 8, 1)]:
        monkeypatch.setattr(pw_module, "TILE_P", tiles[0])
        monkeypatch.setattr(pw_module, "TILE_Q", tiles[1])
        monkeypatch.setattr(pw_module, "TILE_K", tiles[2])
        for threads in (1, 2):
            with fd.options(threads=threads):
                results.append(fd.pairwise(P, Q, "js", backend=compiled_backend))
                results.append(fd.pairwise(P, metric="js", backend=compiled_backend))
    for r in results[2::2]:
        np.testing.assert_array_equal(r, results[0])
    for r in results[3::2]:
        np.testing.assert_array_equal(r, results[1])


def test_backends_agree(compiled_backend, rng, small_tiles):
    P = _dists(rng, 15, 30, dtype=np.float32)
    ref = fd.pairwise(P, metric="js", backend="numpy")
    res = fd.pairwise(P, metric="js", backend=compiled_backend)
    np.testing.assert_allclose(res, ref, rtol=0, atol=1e-7)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sparse_equals_dense(backend, metric, dtype, rng, small_tiles):
    P = _dists(rng, 12, 25, zeros=0.7, dtype=dtype)
    Q = _dists(rng, 10, 25, zeros=0.7, dtype=dtype)
    Q[3] = P[1]
    dense = fd.pairwise(P, Q, metric, backend=backend)
    for a, b in [(sp.csr_matrix(P), sp.csr_matrix(Q)), (sp.coo_matrix(P), Q)]:
        res = fd.pairwise(a, b, metric, backend=backend)
        assert res.dtype == dtype
        _assert_matrix(res, dense, ATOL[dtype])
    sym = fd.pairwise(sp.csr_matrix(P), metric=metric, backend=backend)
    _assert_matrix(sym, fd.pairwise(P, metric=metric, backend=backend), ATOL[dtype])


def test_sparse_counts_with_normalize(backend, rng):
    counts = sp.random(30, 200, density=0.05, random_state=3, format="csr") * 10
    counts = (counts.ceil() + sp.eye(30, 200)).tocsr()  # no empty row
    res = fd.pairwise(counts, metric="js", normalize=True, backend=backend)
    dense = counts.toarray()
    ref = cdist(dense, dense, "jensenshannon") ** 2  # cdist normalises too
    np.testing.assert_allclose(res, ref, rtol=0, atol=1e-12)


def test_layouts_and_views(rng):
    P = _dists(rng, 9, 14)
    Q = _dists(rng, 8, 14)
    ref = fd.pairwise(P, Q, "js")
    np.testing.assert_array_equal(fd.pairwise(np.asfortranarray(P), Q, "js"), ref)
    big = np.zeros((18, 28))
    big[::2, ::2] = P
    np.testing.assert_array_equal(fd.pairwise(big[::2, ::2], Q, "js"), ref)
    swapped = P.astype(P.dtype.newbyteorder())
    np.testing.assert_array_equal(fd.pairwise(swapped, Q, "js"), ref)


def _read_only_variants(a, path):
    """(writeable, read-only) pairs of a: a frozen copy, np.load(...,
    mmap_mode="r"), and a CSR matrix whose arrays are frozen."""
    frozen = a.copy()
    frozen.flags.writeable = False
    np.save(path, a)
    csr = sp.csr_matrix(a)
    for part in (csr.data, csr.indices, csr.indptr):
        part.flags.writeable = False
    return {
        "frozen": (a, frozen),
        "mmap": (a, np.load(path, mmap_mode="r")),
        "csr": (sp.csr_matrix(a), csr),
    }


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_read_only_inputs(backend, metric, dtype, rng, tmp_path):
    # Numba's dense JS kernel once had signatures for writeable arrays only
    # (TypeError: No matching definition ... readonly array). Each call on
    # read-only input gives the bits of the same call on writeable input.
    P = _dists(rng, 7, 9, dtype=dtype)
    Q = _dists(rng, 5, 9, dtype=dtype)
    ro_p = _read_only_variants(P, tmp_path / "p.npy")
    ro_q = _read_only_variants(Q, tmp_path / "q.npy")
    calls = {
        "pairwise": lambda p, q: fd.pairwise(p, q, metric, backend=backend),
        "pairwise self": lambda p, q: fd.pairwise(p, metric=metric, backend=backend),
        "nearest": lambda p, q: fd.nearest(p, q, k=2, metric=metric, backend=backend),
        "nearest self": lambda p, q: fd.nearest(p, k=2, metric=metric, backend=backend),
    }
    for name, call in calls.items():
        for kind, (p, ro) in ro_p.items():
            q, ro_other = ro_q[kind]
            want = call(p, q)
            got = call(ro, ro_other)
            for g, w in zip(np.atleast_1d(got), np.atleast_1d(want), strict=True):
                np.testing.assert_array_equal(g, w, err_msg=f"{name} {kind}")
    np.testing.assert_array_equal(ro_p["mmap"][1], P)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rowwise_functions_accept_read_only_inputs(backend, dtype, rng, tmp_path):
    # The row-wise functions the matrices are loops over, on the same
    # read-only inputs and on a read-only broadcast row (as in _loop).
    require_backend(backend, "divergence", ("entropy_rows", "kl_rows", "js_rows"))
    P = _dists(rng, 7, 9, dtype=dtype)
    Q = _dists(rng, 7, 9, dtype=dtype)
    ro_p = _read_only_variants(P, tmp_path / "p.npy")
    ro_q = _read_only_variants(Q, tmp_path / "q.npy")
    row = np.broadcast_to(P[0], Q.shape)
    assert not row.flags.writeable
    for kind in ("frozen", "mmap"):
        ro, ro_other = ro_p[kind][1], ro_q[kind][1]
        want = fd.entropy(P, base=2, backend=backend)
        got = fd.entropy(ro, base=2, backend=backend)
        np.testing.assert_array_equal(got, want, err_msg=f"entropy {kind}")
        for name, fn in ROWWISE.items():
            want = fn(P, Q, backend=backend)
            got = fn(ro, ro_other, backend=backend)
            np.testing.assert_array_equal(got, want, err_msg=f"{name} {kind}")
            want = fn(np.array(row), Q, backend=backend)
            got = fn(row, ro_other, backend=backend)
            np.testing.assert_array_equal(got, want, err_msg=f"{name} {kind} row")


@pytest.mark.parametrize("metric", ["js", "kl"])
def test_memmap_out_in_blocks(tmp_path, rng, monkeypatch, metric):
    monkeypatch.setattr(pw_module, "BLOCK_BYTES", 3 * 8 * 11)  # 3 rows a block
    P = _dists(rng, 11, 6)
    path = tmp_path / "m.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(11, 11))
    res = fd.pairwise(P, metric=metric, out=mm)
    assert res is mm
    mm.flush()
    np.testing.assert_array_equal(np.load(path), fd.pairwise(P, metric=metric))


def test_out_argument(rng):
    P = _dists(rng, 5, 4, dtype=np.float32)
    out = np.empty((5, 5), np.float32)
    assert fd.pairwise(P, out=out) is out
    np.testing.assert_array_equal(out, fd.pairwise(P))
    fortran = np.empty((5, 5), np.float32, order="F")
    fd.pairwise(P, out=fortran)
    np.testing.assert_array_equal(fortran, out)
    with pytest.raises(ValueError, match="shape"):
        fd.pairwise(P, out=np.empty((5, 4), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        fd.pairwise(P, out=np.empty((5, 5)))


def test_bad_input_errors(rng):
    P = _dists(rng, 4, 3)
    with pytest.raises(ValueError, match="'kl', 'cross_entropy', 'js'"):
        fd.pairwise(P, metric="euclidean")
    with pytest.raises(ValueError, match="categories"):
        fd.pairwise(P, _dists(rng, 4, 5))
    # The widths are compared before the rows are checked: a cut-off Q is
    # reported as such, not as rows that do not sum to 1.
    for Q in (P[:, :2], P[:, :2].tolist(), sp.csr_matrix(P[:, :2])):
        with pytest.raises(ValueError, match="P has 3 categories .* Q has 2"):
            fd.pairwise(P, Q)
        with pytest.raises(ValueError, match="P has 3 categories .* Q has 2"):
            fd.nearest(P, Q, k=1)
    bad = P.copy()
    bad[2, 1] = -0.1
    with pytest.raises(ValueError, match="Q row 2"):
        fd.pairwise(P, bad)
    bad = P.copy()
    bad[3] *= 2
    with pytest.raises(ValueError, match="P row 3 sums to"):
        fd.pairwise(bad)
    with pytest.raises(ValueError, match="P row 3 sums to"):
        fd.pairwise(sp.csr_matrix(bad), P)
    with pytest.raises(ValueError, match="2-D"):
        fd.pairwise(P[0])
    with pytest.raises(TypeError):
        fd.pairwise(P.astype(complex))
    before = P.copy()
    fd.pairwise(P, normalize=True)
    np.testing.assert_array_equal(P, before)  # inputs never modified


def _reference_nearest(full, k):
    order = np.argsort(full, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(full, order, axis=1)


@pytest.mark.parametrize("metric", ["js", "kl"])
@pytest.mark.parametrize("budget", [1, 256 * 2**20])
def test_nearest_equals_argsort_with_ties(metric, budget, rng):
    # Rounded values make many exact ties; tiny budget means 1-row blocks.
    P = np.round(_dists(rng, 17, 4, zeros=0.5) * 4) + 1
    Q = np.round(_dists(rng, 40, 4, zeros=0.5) * 4) + 1
    full = fd.pairwise(P, Q, metric, normalize=True)
    idx, val = fd.nearest(
        P, Q, k=6, metric=metric, normalize=True, memory_budget=budget
    )
    ref_idx, ref_val = _reference_nearest(full, 6)
    if metric == "js":
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(val, ref_val)
    else:
        # BLAS rounds a product differently for other block shapes, so
        # exact ties may split: the values and the chosen rows must agree.
        np.testing.assert_allclose(val, ref_val, rtol=0, atol=1e-14)
        chosen = np.take_along_axis(full, idx, axis=1)
        np.testing.assert_allclose(chosen, ref_val, rtol=0, atol=1e-14)


def test_nearest_self_excludes_the_row(rng, monkeypatch):
    P = _dists(rng, 30, 5)
    P[7] = P[3]  # a duplicate: its neighbour at distance 0
    full = fd.pairwise(P, metric="js")
    np.fill_diagonal(full, np.inf)
    for budget in (1, 2**20):
        idx, val = fd.nearest(P, k=4, memory_budget=budget)
        assert not (idx == np.arange(30)[:, None]).any()
        ref_idx, ref_val = _reference_nearest(full, 4)
        np.testing.assert_array_equal(idx, ref_idx)
        assert idx[3, 0] == 7 and val[3, 0] == 0.0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k", [1, 5])
def test_nearest_over_wide_blocks_with_ties_and_self(rng, dtype, k):
    # Blocks of thousands of columns: the first is selected in pieces and
    # the rest filtered by the k-th values so far (_TopK.push), with exact
    # ties (rounded rows, duplicated rows) and, against P itself, the
    # diagonal excluded wherever a block crosses it.
    P = np.round(_dists(rng, 300, 6, zeros=0.3) * 3) + 1
    P = (P / P.sum(axis=1, keepdims=True)).astype(dtype)
    P[150:200] = P[:50]
    for Q in (None, P[::-1].copy()):
        # nearest computes P against itself block by block, as against a
        # copy (the symmetric matrix mirrors one triangle instead, and the
        # last bit of a value may differ from its mirror's, splitting ties).
        full = fd.pairwise(P, P.copy() if Q is None else Q, "js")
        if Q is None:
            np.fill_diagonal(full, np.inf)
        ref_idx, ref_val = _reference_nearest(full, k)
        for budget in (2**20, 2**28):
            idx, val = fd.nearest(P, Q, k=k, memory_budget=budget)
            np.testing.assert_array_equal(idx, ref_idx)
            np.testing.assert_array_equal(val, ref_val)


def test_sparse_nonzero_equals_numpy(rng):
    from fastdiv.pairwise import _sparse_nonzero

    for shape in [(1, 1), (3, 5), (7, 13), (50, 4096), (0, 5)]:
        for fraction in (0.0, 0.002, 0.5, 1.0):
            mask = rng.random(shape) < fraction
            got, want = _sparse_nonzero(mask), np.nonzero(mask)
            for g, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(g, w)


def test_nearest_sparse_and_float32(rng):
    P = _dists(rng, 12, 30, zeros=0.8, dtype=np.float32)
    idx, val = fd.nearest(sp.csr_matrix(P), k=3, metric="js_distance")
    assert val.dtype == np.float32 and idx.dtype == np.int64
    full = fd.pairwise(P, metric="js_distance").astype(np.float64)
    np.fill_diagonal(full, np.inf)
    np.testing.assert_allclose(val, np.sort(full, axis=1)[:, :3], atol=1e-6)


def test_nearest_k_errors(rng):
    P = _dists(rng, 5, 3)
    with pytest.raises(ValueError, match="k=5"):
        fd.nearest(P, k=5)  # only 4 other rows
    with pytest.raises(ValueError, match="k=6"):
        fd.nearest(P, P, k=6)
    with pytest.raises(ValueError, match="positive"):
        fd.nearest(P, k=0)
    idx, _ = fd.nearest(P, P, k=5)
    assert idx.shape == (5, 5)


@pytest.mark.parametrize("budget", [0, -5])
def test_nearest_memory_budget_must_be_positive(budget, rng):
    P = _dists(rng, 5, 3)
    with pytest.raises(ValueError, match="memory_budget must be a positive"):
        fd.nearest(P, P, k=2, memory_budget=budget)
    with pytest.raises(TypeError, match="memory_budget"):
        fd.nearest(P, P, k=2, memory_budget=1.5)


def test_nearest_budget_below_one_block_uses_the_smallest_block(rng):
    # 1 byte cannot hold one row of a block: the documented clamp to one row
    # of P per block gives the same answer as an ample budget.
    P, Q = _dists(rng, 6, 3), _dists(rng, 9, 3)
    small = fd.nearest(P, Q, k=2, memory_budget=1)
    ample = fd.nearest(P, Q, k=2)
    np.testing.assert_array_equal(small[0], ample[0])
    np.testing.assert_array_equal(small[1], ample[1])


def test_nearest_of_empty_p_is_empty(rng):
    # No query rows: (0, k) results, as for an empty query in SciPy's KDTree,
    # even though P itself has too few rows for k.
    for Q in (None, _dists(rng, 3, 4), np.empty((0, 4))):
        idx, val = fd.nearest(np.empty((0, 4)), Q, k=5)
        assert idx.shape == val.shape == (0, 5)
        assert idx.dtype == np.int64 and val.dtype == np.float64
    idx, val = fd.nearest(sp.csr_matrix((0, 4), dtype=np.float32), k=1)
    assert idx.shape == (0, 1) and val.dtype == np.float32
    with pytest.raises(ValueError, match="positive"):
        fd.nearest(np.empty((0, 4)), k=0)


@pytest.mark.parametrize("which", ["P", "Q"])
def test_damaged_csr_is_a_value_error_naming_it(backend, which):
    # A column index past k once made the Cython kernel write out of bounds
    # and the Numba one return a wrong matrix.
    good = sp.csr_matrix(np.full((2, 3), 1 / 3))
    bad = sp.csr_matrix(np.full((2, 3), 1 / 3))
    bad.indices[1] = 7
    P, Q = (bad, good) if which == "P" else (good, bad)
    for metric in ("js", "kl"):
        with pytest.raises(ValueError, match=f"^{which} is not a valid CSR matrix"):
            fd.pairwise(P, Q, metric=metric, backend=backend)
    with pytest.raises(ValueError, match=f"^{which} is not a valid CSR matrix"):
        fd.nearest(P, Q, k=1, backend=backend)


def test_ragged_rows_are_a_value_error_naming_the_argument(rng):
    P = _dists(rng, 3, 2)
    with pytest.raises(ValueError, match=r"^P cannot be converted"):
        fd.pairwise([[1.0, 0.0], [1.0]])
    with pytest.raises(ValueError, match=r"^Q cannot be converted"):
        fd.nearest(P, [[1.0, 0.0], [1.0]], k=1)


def test_messages_show_no_numpy_scalar_reprs(rng):
    P = _dists(rng, 4, 3)
    bad = P.copy()
    bad[2, 1] = -0.0336
    for arg in (bad, sp.csr_matrix(bad)):
        with pytest.raises(ValueError, match=r"row 2 has a negative entry \(-0.0336 "):
            fd.pairwise(arg)
    for kwargs in (
        dict(k=np.int64(0)),
        dict(k=1, memory_budget=np.int64(-5)),
        dict(k=1, base=np.float64(1.0)),
        dict(k=1, metric=np.str_("euclid")),
    ):
        with pytest.raises(ValueError) as info:
            fd.nearest(P, **kwargs)
        assert "np." not in str(info.value), str(info.value)


def test_base_too_large_for_a_float_is_a_value_error(rng):
    # float(10**400) overflows; a base that large is refused like inf.
    with pytest.raises(ValueError, match="base must be finite"):
        fd.pairwise(_dists(rng, 3, 2), base=10**400)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_of_no_categories_give_zeros(metric, dtype):
    # Empty distributions: every divergence is an empty sum, 0 (the row-wise
    # functions agree), and a +0.0 at that.
    P, Q = np.empty((2, 0), dtype), np.empty((3, 0), dtype)
    for Qx, shape in ((Q, (2, 3)), (None, (2, 2))):
        res = fd.pairwise(P, Qx, metric=metric)
        assert res.shape == shape and res.dtype == dtype
        assert not np.signbit(res).any() and not res.any()


@pytest.mark.parametrize("metric", ["kl", "cross_entropy"])
def test_kl_and_ce_give_plus_zero_where_exact(metric):
    # One-hot against q = 1 in that category: no term is non-zero, the result
    # is +0.0 along both paths (the row term added to the product or in it).
    for reps in (1, 4):  # m <= k, then m > k: the two paths
        P = np.tile(np.eye(3), (reps, 1))
        res = fd.pairwise(P, P.copy(), metric=metric)
        np.testing.assert_array_equal(np.diag(res), 0.0)
        assert not np.signbit(np.diag(res)).any()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_js_fallback_loop_matches_the_reference(rng, log8_off, dtype):
    # The dense JS kernel's loop with libmvec's log, as CPUs without
    # AVX-512F run it.
    log8_off("_pairwise")
    P = _dists(rng, 13, 21, dtype=dtype)
    Q = _dists(rng, 9, 21, dtype=dtype)
    Q[2] = P[4]
    P[1, :5] = 0.0
    P[1] /= P[1].sum()
    for metric in ("js", "js_distance"):
        res = fd.pairwise(P, Q, metric, backend="cython")
        _assert_matrix(res, _loop(metric, P, Q), ATOL[dtype])
        assert res[4, 2] == 0.0
    self_js = fd.pairwise(P, metric="js", backend="cython")
    assert (np.diag(self_js) == 0.0).all() and (self_js == self_js.T).all()
