"""Cost of the first call of a fastdiv function, measured in a fresh process.

The first call on the Numba backend imports the topic's kernel module,
which compiles its kernels (or loads them from Numba's cache); the second
call is steady state. Run with NUMBA_CACHE_DIR pointing at an empty
directory to measure a cold compile, and again with the same directory to
measure a load from the cache.

Prints one JSON object: import_s (``import fastdiv``), first_s, second_s.
Used by bench_compile.py; by hand:
``NUMBA_CACHE_DIR=$(mktemp -d) python benchmarks/_first_call.py softmax``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _probabilities(shape, seed):
    p = np.random.default_rng(seed).random(shape) + 1e-3
    return p / p.sum(axis=1, keepdims=True)


def _call(fastdiv, op: str, backend: str):
    """One small call of ``op`` on ``backend``."""
    x = np.random.default_rng(0).standard_normal((64, 16))
    p, q = _probabilities((64, 16), 1), _probabilities((64, 16), 2)
    if op in ("softmax", "log_softmax", "logsumexp"):
        return getattr(fastdiv, op)(x, 2.0, backend=backend)
    if op in ("kl_div", "js_div"):
        return getattr(fastdiv, op)(p, q, backend=backend)
    if op == "entropy":
        return fastdiv.entropy(p, backend=backend)
    if op == "distill_loss":
        labels = np.zeros(64, dtype=np.int64)
        return fastdiv.distill_loss(
            x, x[::-1].copy(), labels, return_grad=True, backend=backend
        )
    if op == "pairwise":
        return fastdiv.pairwise(p, q, metric="js", backend=backend)
    raise SystemExit(f"unknown operation {op!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("op")
    parser.add_argument("--backend", default="numba")
    args = parser.parse_args()

    t0 = time.perf_counter()
    import fastdiv

    t1 = time.perf_counter()
    _call(fastdiv, args.op, args.backend)
    t2 = time.perf_counter()
    _call(fastdiv, args.op, args.backend)
    t3 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "first_s": t2 - t1, "second_s": t3 - t2}))


if __name__ == "__main__":
    main()
