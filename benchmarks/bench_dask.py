"""nearest on a Dask cluster against the in-memory function (issue 6).

- nearest(P, Q, k=10, metric="js") on (20_000, 20_000, 64) float32: the
  in-memory :func:`fastdiv.nearest` on 2 threads (``fastdiv:in-memory``)
  against :func:`fastdiv.dask.nearest` on a ``distributed.LocalCluster`` of
  2 worker processes with 1 thread each (``fastdiv.dask:2x1``). Target: the
  cluster takes at most 1.5 times the in-memory time; the Dask row records
  its ratio to the in-memory row of the same run (``ratio_to_in_memory``).
  P and Q are split into ``ROW_BLOCKS`` row chunks each and held by the
  workers before the timing starts (``client.persist``), as data that
  already lives on a cluster would be; the timing covers building the
  graph, the block tasks, the merge tree and gathering the (n, k) results.
- The scheduler's cost per task on the same cluster (``overhead:task``):
  ``TASKS`` independent no-op tasks, timed as a whole; ``per_task_s`` is the
  time divided by their number, the cost to set against each block task.

The cluster starts once for the module (a few seconds, untimed).
``FASTDIV_BENCH_QUICK=1`` and ``--bench-scale`` shrink n and m as in the
other suites; the number of chunks stays the same, so smaller shapes give
smaller tasks and a larger share of overhead.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from _bench import (
    DataCache,
    case_id,
    random_probabilities,
    rows,
    run_row,
)

import fastdiv

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
fdd = pytest.importorskip("fastdiv.dask")

SHAPE = (20_000, 20_000, 64)
DTYPE = "float32"
NEIGHBOURS = 10
OP = f"nearest k={NEIGHBOURS} dask"
# 8 x 8 = 64 block tasks, 8 merges (split_every=8), 16 tasks that check
# the chunks and 16 getters: about 100 tasks. At full size a block task
# compares 2500 x 2500 rows (6.25 M pairs of 64 categories, about 0.5 s on
# one core here), far above the scheduler's milliseconds per task.
ROW_BLOCKS = 8
WORKERS = 2
TASKS = 400

_CACHE = DataCache()
_TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=WORKERS,
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


def _inputs():
    n, m, k = rows(SHAPE[0]), rows(SHAPE[1]), SHAPE[2]
    return _CACHE.get(
        (n, m, k),
        lambda: (
            random_probabilities((n, k), DTYPE, seed=0),
            random_probabilities((m, k), DTYPE, seed=1),
        ),
    )


def _on_cluster(client, x):
    """``x`` in ROW_BLOCKS row chunks, held by the workers."""
    step = max(1, -(-x.shape[0] // ROW_BLOCKS))
    arr = client.persist(da.from_array(x, chunks=(step, -1)))
    distributed.wait(arr)
    return arr


def _record(benchmark, key):
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        _TIMES[key] = stats.stats.median


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(k, id=case_id(OP, DTYPE, SHAPE, k))
        for k in ("fastdiv:in-memory", "fastdiv.dask:2x1")
    ],
)
def test_nearest_dask(benchmark, client, key):
    P, Q = _inputs()
    n = P.shape[0]
    extra = {"workers": WORKERS, "threads_per_worker": 1, "row_blocks": ROW_BLOCKS}
    if key == "fastdiv:in-memory":

        def make(r):
            Ps = P[:r]

            def run():
                with fastdiv.options(threads=WORKERS):
                    return fastdiv.nearest(Ps, Q, k=NEIGHBOURS, metric="js")

            return run

    else:
        Qd = _on_cluster(client, Q)

        def make(r):
            Pd = _on_cluster(client, P[:r])

            def run():
                idx, val = fdd.nearest(Pd, Qd, k=NEIGHBOURS, metric="js")
                return client.compute([idx, val], sync=True)

            return run

        ref = _TIMES.get("fastdiv:in-memory")
        if ref:
            extra["in_memory_s"] = ref
            extra["target"] = "at most 1.5 x fastdiv:in-memory"

    result = run_row(
        benchmark,
        op=OP,
        dtype=DTYPE,
        nominal=SHAPE,
        role="ours",
        key=key,
        make=make,
        full_rows=n,
        work_bytes=P.nbytes + Q.nbytes,
        extra=extra,
    )
    _record(benchmark, key)
    ref = _TIMES.get("fastdiv:in-memory")
    if key != "fastdiv:in-memory" and ref and key in _TIMES:
        benchmark.extra_info["ratio_to_in_memory"] = _TIMES[key] / ref
    # The cluster's answer is the in-memory one.
    if key == "fastdiv.dask:2x1":
        with fastdiv.options(threads=WORKERS):
            exp = fastdiv.nearest(P, Q, k=NEIGHBOURS, metric="js")
        np.testing.assert_array_equal(result[0], exp[0])
        np.testing.assert_array_equal(result[1], exp[1])


def _noop(i):
    return i


@pytest.mark.parametrize(
    "key", [pytest.param("overhead:task", id=case_id(OP, DTYPE, SHAPE, "overhead"))]
)
def test_task_overhead(benchmark, client, key):
    def make(r):
        def run():
            tasks = [dask.delayed(_noop, pure=False)(i) for i in range(TASKS)]
            t0 = time.perf_counter()
            out = dask.compute(*tasks)
            benchmark.extra_info["per_task_s"] = (time.perf_counter() - t0) / TASKS
            return out

        return run

    run_row(
        benchmark,
        op=OP,
        dtype=DTYPE,
        nominal=SHAPE,
        role="floor",
        key=key,
        make=make,
        full_rows=TASKS,
        work_bytes=0,
        extra={"tasks": TASKS, "workers": WORKERS},
    )
