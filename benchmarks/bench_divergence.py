"""Row-wise kl_div, js_div and entropy on probabilities (issue 3).

Groups: each operation x dtype x shape, with a row per fastdiv backend
(default arguments, so the probability check is timed; the compiled
backends also with ``check=False``), the peers scipy.stats.entropy,
scipy.spatial.distance.jensenshannon and a plain NumPy version, and the
floor: reading the inputs once on 2 threads.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.stats
from _bench import (
    COMPILED,
    DTYPES,
    OUR_BACKENDS,
    DataCache,
    case_id,
    floor_read,
    need,
    need_backend,
    random_probabilities,
    rows,
    run_row,
)

SHAPES = [(1_000_000, 100), (10_000, 10_000)]
OPS = ("kl_div", "js_div", "entropy")


def _scipy_kl(p, q):
    return scipy.stats.entropy(p, q, axis=1)


def _scipy_js(p, q):
    return scipy.spatial.distance.jensenshannon(p, q, axis=1)


def _scipy_entropy(p):
    return scipy.stats.entropy(p, axis=1)


def _numpy_kl(p, q):
    return np.sum(p * np.log(p / q), axis=1)


def _numpy_js(p, q):
    m = (p + q) / 2
    return (np.sum(p * np.log(p / m), axis=1) + np.sum(q * np.log(q / m), axis=1)) / 2


def _numpy_entropy(p):
    return -np.sum(p * np.log(p), axis=1)


# op -> (number of inputs, scipy peer, plain NumPy peer)
_PEERS = {
    "kl_div": (2, _scipy_kl, _numpy_kl),
    "js_div": (2, _scipy_js, _numpy_js),
    "entropy": (1, _scipy_entropy, _numpy_entropy),
}

# Input-sized arrays each row touches besides its inputs (temporaries).
_TEMPS = {"ours": 0, "scipy": 5, "numpy": 4, "floor": 0}

_KEYS = (
    [f"fastdiv:{b}" for b in OUR_BACKENDS]
    + [f"fastdiv:{b}:check=False" for b in COMPILED]
    + ["scipy", "numpy", "floor"]
)

_CACHE = DataCache()


def _inputs(dtype, nominal):
    shape = (rows(nominal[0]), nominal[1])
    return _CACHE.get(
        (dtype, shape),
        lambda: (
            random_probabilities(shape, dtype, seed=0),
            random_probabilities(shape, dtype, seed=1),
        ),
    )


@pytest.mark.parametrize(
    "op, dtype, nominal, key",
    [
        pytest.param(op, dtype, shape, key, id=case_id(op, dtype, shape, key))
        for op in OPS
        for dtype in DTYPES
        for shape in SHAPES
        for key in _KEYS
    ],
)
def test_divergence_rows(benchmark, op, dtype, nominal, key):
    n_inputs, scipy_peer, numpy_peer = _PEERS[op]
    p, q = _inputs(dtype, nominal)
    arrays = (p, q)[:n_inputs]
    backend = None

    if key.startswith("fastdiv:"):
        parts = key.split(":")
        backend = parts[1]
        kwargs = {"backend": backend}
        if len(parts) > 2:
            kwargs["check"] = False
        fn = need(op, 3)
        need_backend(backend)
        role, temps = "ours", _TEMPS["ours"]

        def call(*xs):
            return fn(*xs, **kwargs)

    else:
        role = "floor" if key == "floor" else "peer"
        temps = _TEMPS[key]
        call = {"scipy": scipy_peer, "numpy": numpy_peer, "floor": floor_read}[key]

    def make(r):
        xs = tuple(a[:r] for a in arrays)
        return lambda: call(*xs)

    run_row(
        benchmark,
        op=op,
        dtype=dtype,
        nominal=nominal,
        role=role,
        key=key,
        backend=backend,
        make=make,
        full_rows=p.shape[0],
        work_bytes=(n_inputs + temps) * p.nbytes,
        scalable=True,
    )
