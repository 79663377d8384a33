"""fastdiv.dask: the in-memory results, computed chunk by chunk on Dask.

Every result is compared with the in-memory function on the whole arrays,
on the threaded scheduler and on a real cluster of two one-thread worker
processes (started once for the module). Layout errors must come before
any task runs; a worker lost in the middle of ``nearest`` must not change
the result.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import scipy.sparse as sp

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

import dask.array as da  # noqa: E402

import fastdiv as fd  # noqa: E402
import fastdiv.dask as fdd  # noqa: E402
from tests.conftest import assert_same  # noqa: E402

METRICS = ("js", "js_distance", "kl", "cross_entropy")
DTYPES = (np.float32, np.float64)


@pytest.fixture(scope="module")
def client():
    """Two worker processes with one thread each, for the whole module."""
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
    )
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def distributions(n, k, dtype, seed, zeros=0.0):
    """Rows of a random distribution; a fraction ``zeros`` of exact zeros
    (at least one non-zero entry per row)."""
    rng = np.random.default_rng(seed)
    p = rng.random((n, k)) + 1e-3
    if zeros:
        p[rng.random((n, k)) < zeros] = 0.0
        p[np.arange(n), rng.integers(0, k, n)] = 1.0
    p /= p.sum(axis=1, keepdims=True)
    return p.astype(dtype)


def as_chunks(x, rows, kind):
    """``x`` as a Dask array of row chunks: dense, or CSR made from a CSR
    matrix (``from_array``) or chunk by chunk (``map_blocks``)."""
    if kind == "dense":
        return da.from_array(x, chunks=(rows, -1))
    if kind == "csr":
        return da.from_array(sp.csr_matrix(x), chunks=(rows, -1), asarray=False)
    dense = da.from_array(x, chunks=(rows, -1))
    return dense.map_blocks(sp.csr_matrix, meta=sp.csr_matrix((0, 0), dtype=x.dtype))


class CountingArray:
    """A Dask array whose chunks count how often they are computed."""

    def __init__(self, x, chunks):
        self.calls = 0
        self.lock = threading.Lock()
        base = da.from_array(x, chunks=chunks)
        # meta given, so that Dask does not call _count to find it.
        self.array = base.map_blocks(self._count, meta=np.empty((0, 0), x.dtype))

    def _count(self, block):
        with self.lock:
            self.calls += 1
        return block


# --------------------------------------------------------------------------
# softmax, log_softmax, logsumexp (threaded scheduler)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_family_equals_in_memory(name, dtype, axis):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((12, 7, 5)) * 4).astype(dtype)
    x[0, 0, 0] = -np.inf
    chunks = {0: 5, 1: 3, 2: 2}
    chunks[axis % 3] = -1
    dx = da.from_array(x, chunks=chunks)
    got = getattr(fdd, name)(dx, 0.7, axis=axis)
    assert got.chunks == dx.chunks
    assert got.dtype == dtype
    expected = getattr(fd, name)(x, 0.7, axis=axis)
    assert_same(got.compute(scheduler="threads"), expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp_drops_the_axis(dtype, keepdims):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((9, 4, 6)) * 3).astype(dtype)
    dx = da.from_array(x, chunks=(4, 3, -1))
    got = fdd.logsumexp(dx, 2.0, axis=-1, keepdims=keepdims)
    expected = fd.logsumexp(x, 2.0, axis=-1, keepdims=keepdims)
    assert got.shape == expected.shape
    assert got.dtype == expected.dtype
    assert_same(got.compute(scheduler="threads"), expected)


def test_logsumexp_weights_and_sign():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((10, 5))
    b = rng.standard_normal(5)  # broadcast over the rows, some negative
    dx = da.from_array(x, chunks=(3, -1))
    res, sgn = fdd.logsumexp(dx, axis=1, b=b, return_sign=True)
    got = dask.compute(res, sgn, scheduler="threads")
    assert_same(tuple(got), fd.logsumexp(x, axis=1, b=b, return_sign=True))
    # Without return_sign a negative sum is NaN, as in memory.
    assert_same(
        fdd.logsumexp(dx, axis=1, b=b).compute(scheduler="threads"),
        fd.logsumexp(x, axis=1, b=b),
    )


def test_logsumexp_axis_none_on_one_chunk():
    x = np.linspace(-3, 3, 24).reshape(4, 6)
    got = fdd.logsumexp(da.from_array(x, chunks=-1), axis=None)
    assert got.shape == ()
    assert_same(got.compute(scheduler="threads")[()], fd.logsumexp(x, axis=None))


def test_softmax_reduced_axis_split_is_refused_before_work():
    counting = CountingArray(np.zeros((8, 6)), chunks=(4, 3))
    for fn in (fdd.softmax, fdd.log_softmax, fdd.logsumexp):
        with pytest.raises(ValueError, match=r"x\.rechunk\(\{1: -1\}\)"):
            fn(counting.array, axis=1)
    with pytest.raises(ValueError, match=r"x\.rechunk\(-1\)"):
        fdd.softmax(counting.array, axis=None)
    with pytest.raises(ValueError, match="temperature"):
        fdd.softmax(counting.array.rechunk({1: -1}), temperature=0.0)
    with pytest.raises(TypeError, match="x"):
        fdd.softmax(da.zeros((2, 2), dtype=complex))
    assert counting.calls == 0


# --------------------------------------------------------------------------
# pairwise and nearest on the threaded scheduler
# --------------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("with_q", [False, True])
def test_pairwise_threads(metric, with_q):
    P = distributions(23, 7, np.float64, seed=4, zeros=0.3)
    Q = distributions(17, 7, np.float64, seed=5, zeros=0.3) if with_q else None
    dq = None if Q is None else as_chunks(Q, 5, "dense")
    got = fdd.pairwise(as_chunks(P, 6, "dense"), dq, metric)
    assert got.chunks[0] == (6, 6, 6, 5)
    assert_same(got.compute(scheduler="threads"), fd.pairwise(P, Q, metric))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("with_q", [False, True])
def test_nearest_threads(metric, with_q):
    P = distributions(29, 6, np.float32, seed=6)
    Q = distributions(31, 6, np.float32, seed=7) if with_q else None
    dq = None if Q is None else as_chunks(Q, 4, "dense")
    # split_every=2 makes a tree of several levels over the 8 blocks of Q.
    idx, val = fdd.nearest(
        as_chunks(P, 7, "dense"), dq, k=5, metric=metric, split_every=2
    )
    got = dask.compute(idx, val, scheduler="threads")
    exp = fd.nearest(P, Q, k=5, metric=metric)
    assert_same(got[0], exp[0])
    assert_same(got[1], exp[1])


def test_symmetric_blocks_are_computed_once():
    P = distributions(20, 4, np.float64, seed=8)
    dp = as_chunks(P, 5, "dense")
    for metric, computed in (("js", 4 * 5 // 2), ("kl", 16)):
        res = fdd.pairwise(dp, metric=metric)
        layer = res.dask.layers[res.name]
        calls = [t for t in dict(layer).values() if t[0] is fdd._apply]
        mirrors = [t for t in dict(layer).values() if t[0] is fdd._transpose]
        assert len(calls) == computed
        assert len(mirrors) == 16 - computed
        assert_same(res.compute(scheduler="threads"), fd.pairwise(P, metric=metric))


def test_nearest_ties_by_lower_index_across_blocks():
    # Every row of Q is the same: all values tie, and the neighbours must be
    # the k lowest indices although they lie in different blocks of Q.
    P = distributions(5, 3, np.float64, seed=9)
    Q = np.full((12, 3), 1 / 3)
    idx, val = fdd.nearest(as_chunks(P, 2, "dense"), as_chunks(Q, 3, "dense"), k=4)
    got = idx.compute(scheduler="threads")
    assert (got == np.arange(4)).all()


def test_nearest_of_empty_p_is_empty():
    # As fastdiv.nearest: no query rows give (0, k) results, even though P
    # itself has too few rows for k.
    P = da.from_array(np.empty((0, 4)), chunks=(1, -1))
    idx, val = fdd.nearest(P, k=5)
    assert idx.compute(scheduler="threads").shape == (0, 5)
    assert val.compute(scheduler="threads").shape == (0, 5)


def test_errors_name_the_global_row():
    P = distributions(12, 4, np.float64, seed=10)
    P[9, 0] += 0.5
    dp = as_chunks(P, 4, "dense")
    with pytest.raises(ValueError, match="P row 9 sums to"):
        fdd.pairwise(dp).compute(scheduler="threads")
    # normalize=True divides each row by its sum instead, as in memory.
    assert_same(
        fdd.pairwise(dp, normalize=True).compute(scheduler="threads"),
        fd.pairwise(P, normalize=True),
    )


def test_pairwise_layout_errors_before_any_work():
    P = distributions(10, 6, np.float64, seed=11)
    split = CountingArray(P, chunks=(5, 3))
    rows = CountingArray(P, chunks=(5, -1))
    with pytest.raises(ValueError, match=r"P\.rechunk\(\{1: -1\}\)"):
        fdd.pairwise(split.array)
    with pytest.raises(ValueError, match=r"Q\.rechunk\(\{1: -1\}\)"):
        fdd.nearest(rows.array, split.array, k=2)
    with pytest.raises(ValueError, match="same number"):
        fdd.pairwise(rows.array, rows.array[:, :4])
    with pytest.raises(ValueError, match="k=10 is larger than the 9 rows"):
        fdd.nearest(rows.array, k=10)
    with pytest.raises(ValueError, match="unknown metric"):
        fdd.pairwise(rows.array, metric="hellinger")
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        fdd.pairwise(rows.array[rows.array[:, 0] > 0])
    with pytest.raises(ValueError, match="2-D"):
        fdd.nearest(rows.array[0], k=1)
    assert split.calls == rows.calls == 0


def test_numpy_and_sparse_inputs_are_wrapped():
    P = distributions(9, 5, np.float64, seed=12, zeros=0.4)
    got = fdd.pairwise(P, sp.csr_matrix(P)).compute(scheduler="threads")
    assert_same(got, fd.pairwise(P, sp.csr_matrix(P)))


def test_tasks_use_one_thread_by_default():
    seen = []

    def record(block):
        seen.append(fd._dispatch.num_threads())
        return block

    with fd.options(threads=2):
        x = da.zeros((4, 3), chunks=(2, 3)).map_blocks(record)
        fdd.softmax(x).compute(scheduler="threads")
        assert (
            fdd._softmax_task(np.zeros((1, 2)), fd.softmax, 1.0, -1, 1, None)[0, 0]
            == 0.5
        )
    with pytest.raises(ValueError, match="threads"):
        fdd.softmax(x, threads=0)


# --------------------------------------------------------------------------
# On a cluster of two worker processes
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dense", "csr", "map_blocks"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_q", [False, True])
def test_pairwise_on_cluster(client, kind, dtype, with_q):
    P = distributions(26, 8, dtype, seed=13, zeros=0.4)
    Q = distributions(19, 8, dtype, seed=14, zeros=0.4) if with_q else None
    dq = None if Q is None else as_chunks(Q, 10, kind)
    mem_p = P if kind == "dense" else sp.csr_matrix(P)
    mem_q = None if Q is None else (Q if kind == "dense" else sp.csr_matrix(Q))
    for metric in METRICS:
        res = fdd.pairwise(as_chunks(P, 13, kind), dq, metric)
        got = client.compute(res).result()
        assert_same(got, fd.pairwise(mem_p, mem_q, metric), what=metric)


@pytest.mark.parametrize("kind", ["dense", "csr"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_q", [False, True])
def test_nearest_on_cluster(client, kind, dtype, with_q):
    P = distributions(40, 8, dtype, seed=15, zeros=0.3)
    Q = distributions(33, 8, dtype, seed=16, zeros=0.3) if with_q else None
    dq = None if Q is None else as_chunks(Q, 12, kind)
    mem_p = P if kind == "dense" else sp.csr_matrix(P)
    mem_q = None if Q is None else (Q if kind == "dense" else sp.csr_matrix(Q))
    for metric in ("js", "kl"):
        idx, val = fdd.nearest(
            as_chunks(P, 20, kind), dq, k=4, metric=metric, split_every=2
        )
        # Plain dask.compute: the active client runs it.
        got = dask.compute(idx, val)
        exp = fd.nearest(mem_p, mem_q, k=4, metric=metric)
        assert_same(got[0], exp[0], what=f"{metric} indices")
        assert_same(got[1], exp[1], what=f"{metric} values")


def test_mixed_dense_and_sparse_on_cluster(client):
    P = distributions(15, 6, np.float64, seed=17, zeros=0.5)
    Q = distributions(11, 6, np.float64, seed=18, zeros=0.5)
    res = fdd.pairwise(as_chunks(P, 4, "dense"), as_chunks(Q, 4, "csr"))
    assert_same(client.compute(res).result(), fd.pairwise(P, sp.csr_matrix(Q)))


def _slow_copy(block):
    time.sleep(0.2)
    return block.copy()


def _crash():
    os._exit(1)


def test_worker_lost_during_nearest(client):
    P = distributions(64, 8, np.float64, seed=19)
    Q = distributions(80, 8, np.float64, seed=20)
    # Slow chunks of Q spread the work over about a second, so that a
    # worker dies while it holds results the rest of the graph still needs.
    dq = as_chunks(Q, 10, "dense").map_blocks(_slow_copy, dtype=Q.dtype)
    idx, val = fdd.nearest(as_chunks(P, 16, "dense"), dq, k=7, split_every=2)
    futures = client.compute([idx, val])

    deadline = time.monotonic() + 30
    victim = None
    while victim is None and time.monotonic() < deadline:
        busy = [w for w, keys in client.has_what().items() if keys]
        if busy:
            victim = busy[0]
        else:
            time.sleep(0.02)
    assert victim is not None, "no worker held any result"
    assert not all(f.done() for f in futures), "finished before the kill"
    # The worker process exits at once, as in a crash; its nanny starts a
    # new one, and the scheduler recomputes what was lost.
    outcome = client.run(_crash, workers=[victim], on_error="return")
    assert isinstance(outcome[victim], OSError), outcome

    got = client.gather(futures)
    exp = fd.nearest(P, Q, k=7)
    assert_same(got[0], exp[0])
    assert_same(got[1], exp[1])
    # The result came although the victim is gone from the cluster.
    assert victim not in client.scheduler_info()["workers"]


# --------------------------------------------------------------------------
# The command: --scheduler ADDRESS
# --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["npy", "csv"])
def test_command_pairwise_with_scheduler(client, tmp_path, fmt, monkeypatch):
    from fastdiv import _dask_cli
    from fastdiv.cli import main

    # Small chunks, so that the matrix comes back in several rows of blocks.
    monkeypatch.setattr(_dask_cli, "MAX_CHUNK_ROWS", 7)
    P = distributions(30, 5, np.float32, seed=21, zeros=0.3)
    Q = distributions(12, 5, np.float32, seed=22)
    np.save(tmp_path / "p.npy", P)
    np.save(tmp_path / "q.npy", Q)
    address = client.scheduler.address
    for q, exp in (("q.npy", fd.pairwise(P, Q)), (None, fd.pairwise(P))):
        out = tmp_path / f"d.{fmt}"
        args = ["pairwise", str(tmp_path / "p.npy")]
        args += [] if q is None else [str(tmp_path / q)]
        args += ["-o", str(out), "-f", "--scheduler", address]
        assert main(args) == 0
        if fmt == "npy":
            got = np.load(out)
            assert_same(got, exp)
        else:
            # CSV rows of float32 values with 9 significant digits.
            got = np.loadtxt(out, delimiter=",", ndmin=2)
            assert got.shape == exp.shape
            np.testing.assert_allclose(got, exp, rtol=1e-8, atol=1e-9)


def test_command_nearest_with_scheduler(client, tmp_path, monkeypatch):
    from fastdiv import _dask_cli
    from fastdiv.cli import main

    monkeypatch.setattr(_dask_cli, "MAX_CHUNK_ROWS", 9)
    counts = np.random.default_rng(23).integers(0, 5, (40, 6))
    counts[:, 0] += 1  # no all-zero row
    sp.save_npz(tmp_path / "c.npz", sp.csr_matrix(counts))
    out = tmp_path / "nn.npz"
    address = client.scheduler.address
    args = ["nearest", str(tmp_path / "c.npz"), "--normalize", "-k", "3"]
    assert main(args + ["-o", str(out), "--scheduler", address]) == 0
    with np.load(out) as f:
        got = (f["indices"], f["values"])
    exp = fd.nearest(sp.csr_matrix(counts), k=3, normalize=True)
    assert_same(got[0], exp[0])
    assert_same(got[1], exp[1])


def test_command_scheduler_unreachable(tmp_path, capsys):
    from fastdiv.cli import main

    np.save(tmp_path / "p.npy", distributions(4, 3, np.float64, seed=24))
    args = ["nearest", str(tmp_path / "p.npy"), "-k", "1", "-o"]
    args += [str(tmp_path / "nn.npz"), "--scheduler", "tcp://127.0.0.1:9"]
    assert main(args) == 2
    assert "cannot connect to the Dask scheduler" in capsys.readouterr().err
    assert not (tmp_path / "nn.npz").exists()
