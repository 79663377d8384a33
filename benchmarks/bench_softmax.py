"""softmax, log_softmax and logsumexp with a temperature (issue 2).

Groups: each operation x dtype x shape, with a row per fastdiv backend, the
peers (scipy.special and PyTorch on 2 CPU threads, both given ``x / T`` as a
user would write it) and the floor: allocating the output and copying the
input into it on 2 threads (reading the input once for logsumexp). The
``out=`` groups compare against a 2-thread copy into an existing array.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
from _bench import (
    DTYPES,
    OUR_BACKENDS,
    DataCache,
    case_id,
    floor_alloc_copy,
    floor_copy_into,
    floor_read,
    need,
    need_backend,
    random_logits,
    rows,
    run_row,
    torch_module,
)

T = 2.0
SHAPES = [(1_000_000, 10), (100_000, 1000), (1000, 100_000)]
OPS = ("softmax", "log_softmax", "logsumexp")

_SCIPY = {
    "softmax": scipy.special.softmax,
    "log_softmax": scipy.special.log_softmax,
    "logsumexp": scipy.special.logsumexp,
}

# Input-sized arrays each row touches (inputs, outputs, temporaries): twice
# this is allocated and touched before timing (see conftest.touch_memory).
_WORK = {"ours": 2, "scipy": 4, "torch": 3, "floor": 2}

_CACHE = DataCache()


def _logits(dtype, nominal):
    shape = (rows(nominal[0]), nominal[1])
    return _CACHE.get((dtype, shape), lambda: random_logits(shape, dtype))


def _cases(ops, keys):
    return [
        pytest.param(op, dtype, shape, key, id=case_id(op, dtype, shape, key))
        for op in ops
        for dtype in DTYPES
        for shape in SHAPES
        for key in keys
    ]


_KEYS = [f"fastdiv:{b}" for b in OUR_BACKENDS] + ["scipy", "torch", "floor"]


@pytest.mark.parametrize("op, dtype, nominal, key", _cases(OPS, _KEYS))
def test_softmax_family(benchmark, op, dtype, nominal, key):
    x = _logits(dtype, nominal)
    reduction = op == "logsumexp"

    if key.startswith("fastdiv:"):
        backend = key.split(":")[1]
        fn = need(op, 2)
        need_backend(backend)
        role, work = "ours", _WORK["ours"]

        def make(r):
            xs = x[:r]
            return lambda: fn(xs, T, backend=backend)

    elif key == "scipy":
        backend, role, work = None, "peer", _WORK["scipy"]
        peer = _SCIPY[op]

        def make(r):
            xs = x[:r]
            return lambda: peer(xs / T, axis=1)

    elif key == "torch":
        torch = torch_module()
        backend, role, work = None, "peer", _WORK["torch"]
        peer = {
            "softmax": torch.softmax,
            "log_softmax": torch.log_softmax,
            "logsumexp": torch.logsumexp,
        }[op]

        def make(r):
            xt = torch.from_numpy(x[:r])
            return lambda: peer(xt / T, dim=1)

    else:
        backend, role, work = None, "floor", _WORK["floor"]
        floor = floor_read if reduction else floor_alloc_copy

        def make(r):
            xs = x[:r]
            return lambda: floor(xs)

    run_row(
        benchmark,
        op=op,
        dtype=dtype,
        nominal=nominal,
        role=role,
        key=key,
        backend=backend,
        make=make,
        full_rows=x.shape[0],
        work_bytes=work * x.nbytes,
    )


_OUT_KEYS = [f"fastdiv:{b}" for b in OUR_BACKENDS] + ["floor"]


@pytest.mark.parametrize(
    "op, dtype, nominal, key", _cases(("softmax", "log_softmax"), _OUT_KEYS)
)
def test_softmax_family_out(benchmark, op, dtype, nominal, key):
    """``out=``: the floor is a 2-thread copy into an existing array."""
    x = _logits(dtype, nominal)

    if key.startswith("fastdiv:"):
        backend = key.split(":")[1]
        fn = need(op, 2)
        need_backend(backend)
        role = "ours"

        def make(r):
            xs, out = x[:r], np.empty_like(x[:r])
            return lambda: fn(xs, T, out=out, backend=backend)

    else:
        backend, role = None, "floor"

        def make(r):
            xs, out = x[:r], np.empty_like(x[:r])
            return lambda: floor_copy_into(xs, out)

    run_row(
        benchmark,
        op=f"{op} out=",
        dtype=dtype,
        nominal=nominal,
        role=role,
        key=key,
        backend=backend,
        make=make,
        full_rows=x.shape[0],
        work_bytes=2 * x.nbytes,
    )


_TINY_KEYS = ["fastdiv:auto"] + [f"fastdiv:{b}" for b in OUR_BACKENDS] + ["scipy"]


@pytest.mark.parametrize(
    "key",
    [pytest.param(k, id=case_id("softmax", "float64", (1, 10), k)) for k in _TINY_KEYS],
)
def test_softmax_tiny(benchmark, key):
    """A (1, 10) array: the fixed cost of a call, where "auto" matters."""
    x = random_logits((1, 10), "float64")
    if key.startswith("fastdiv:"):
        backend = key.split(":")[1]
        fn = need("softmax", 2)
        if backend != "auto":
            need_backend(backend)
        role = "ours"

        def make(r):
            return lambda: fn(x, backend=backend)

    else:
        backend, role = None, "peer"

        def make(r):
            return lambda: scipy.special.softmax(x, axis=-1)

    run_row(
        benchmark,
        op="softmax",
        dtype="float64",
        nominal=(1, 10),
        role=role,
        key=key,
        backend=backend,
        make=make,
        full_rows=1,
        work_bytes=0,
    )
