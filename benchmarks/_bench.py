"""Shared machinery of the fastdiv benchmarks (pytest-benchmark).

The options below are declared in conftest.py, which fills in SETTINGS.

Every benchmark is one *row* of a *group*; a group is one operation, dtype
and shape, so that our backends, the peers and the floor line up in
pytest-benchmark's table and in ``benchmarks/report.py``. Each row records
in ``extra_info`` what it is (``role``: ours, peer or floor; a stable
``key`` the report's targets refer to) and, where it was timed on a subset
of the rows and scaled, by how much (``scale_to_full``).

Options (also readable from the environment, so CI needs no flags):

``--bench-scale=F`` / ``FASTDIV_BENCH_SCALE``
    Multiply every row count by F. ``FASTDIV_BENCH_QUICK=1`` means 0.01:
    the whole suite then runs in a few minutes with ``--benchmark-disable``
    as a smoke test. The full size (F = 1) is for people on a quiet machine.
``--bench-max-call=S`` / ``FASTDIV_BENCH_MAX_CALL``
    A row whose single call would take longer than S seconds (estimated
    from a probe on 1/50 of the work) is timed on a subset of rows and scaled;
    default 8 s. ``inf`` times everything at full size.
``--bench-compile``
    Also time cold Numba compiles in a quick run (they always run at full
    scale).
``--bench-strict`` / ``FASTDIV_BENCH_STRICT=1`` (or ``FASTDIV_REQUIRE_ALL=1``)
    A backend that is not usable, or lacks the kernel of a row, fails the
    row instead of skipping it (CI builds every backend: nothing may skip).
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastdiv
from fastdiv import _dispatch
from fastdiv._dispatch import BackendUnavailableError

OUR_BACKENDS = ("numpy", "numba", "cython")
COMPILED = ("numba", "cython")
DTYPES = ("float32", "float64")

# Threads given to every peer and floor: the machine has 2 cores.
PEER_THREADS = 2


class Settings:
    """Run-wide options, filled in by pytest_configure."""

    scale = 1.0
    max_call = 8.0
    strict = False
    compile = False


SETTINGS = Settings()


# --------------------------------------------------------------------------
# Shapes and groups
# --------------------------------------------------------------------------
def rows(n: int) -> int:
    """``n`` rows scaled by --bench-scale (at least 1)."""
    return max(1, int(round(n * SETTINGS.scale)))


def shape_label(shape) -> str:
    return "x".join(f"{d:_}" for d in shape)


def group_name(op: str, dtype: str, nominal: tuple) -> str:
    """The pytest-benchmark group of one operation, dtype and shape."""
    name = f"{op} {dtype} {shape_label(nominal)}"
    if rows(nominal[0]) != nominal[0]:
        name += f" [rows x{SETTINGS.scale:g}]"
    return name


def case_id(op: str, dtype: str, nominal: tuple, key: str) -> str:
    return f"{op}-{dtype}-{shape_label(nominal)}-{key}"


class DataCache:
    """Keeps the arrays of the most recent group only, to bound memory.

    The benchmarks are parametrised so that the rows of one group run one
    after the other: the inputs are built once per group.
    """

    def __init__(self):
        self._key = None
        self._value = None

    def get(self, key, build):
        if key != self._key:
            self._key = self._value = None  # free the old arrays first
            self._value = build()
            self._key = key
        return self._value


def random_logits(shape, dtype, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape, dtype=np.dtype(dtype))
    x *= 3
    return x


def random_probabilities(shape, dtype, seed=0) -> np.ndarray:
    """Strictly positive rows summing to 1 within the dtype's rounding.

    Normalised in float64 and rounded once, so a float32 row sums to 1 within
    half an ulp of 1 (well inside fastdiv's check).
    """
    rng = np.random.default_rng(seed)
    p = rng.random(shape, dtype=np.float64)
    p += 1e-3
    p /= p.sum(axis=-1, keepdims=True)
    return p.astype(dtype, copy=False)


# --------------------------------------------------------------------------
# Resolving our functions, backends and peers
# --------------------------------------------------------------------------
def need(name: str, issue: int):
    """The public function ``fastdiv.<name>``; a failing row if it is absent.

    A missing function is an error, not a skip: the suite must not pass
    silently while a benchmarked function does not exist.
    """
    fn = getattr(fastdiv, name, None)
    if fn is None:
        pytest.fail(
            f"fastdiv.{name} does not exist yet (issue {issue}); this benchmark "
            "needs it",
            pytrace=False,
        )
    return fn


def need_backend(backend: str) -> None:
    """Skip the row when ``backend`` cannot run here, saying why (fail it
    under --bench-strict)."""
    status = _dispatch.backends()[backend]
    if not status.usable:
        msg = f"backend {backend!r} is not usable: {status.reason}"
        if SETTINGS.strict:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


def torch_module():
    """PyTorch on 2 CPU threads, or skip the row where it is absent."""
    torch = pytest.importorskip("torch")
    if torch.get_num_threads() != PEER_THREADS:
        torch.set_num_threads(PEER_THREADS)
    return torch


def _kernel_missing(exc: Exception) -> None:
    msg = f"the backend has no kernel for this row: {exc}"
    if SETTINGS.strict:
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


# --------------------------------------------------------------------------
# The floors, on 2 threads: NumPy's copy and sum release the GIL, so two
# Python threads that each handle half of the rows use both cores.
# --------------------------------------------------------------------------
_POOL = ThreadPoolExecutor(max_workers=PEER_THREADS)


def _halves(n: int):
    h = n // 2
    return slice(0, h), slice(h, n)


def two_threads(fn, n: int):
    """Run ``fn(slice)`` on the two halves of ``range(n)`` on two threads."""
    return list(_POOL.map(fn, _halves(n)))


def floor_alloc_copy(x: np.ndarray) -> np.ndarray:
    """Allocate an output like ``x`` and copy ``x`` into it, 2 threads.

    The first touch of the fresh pages (the page faults) happens inside the
    threads, as it does inside a kernel writing a fresh output.
    """
    out = np.empty_like(x)
    two_threads(lambda s: np.copyto(out[s], x[s]), x.shape[0])
    return out


def floor_copy_into(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Copy ``x`` into the existing ``out``, 2 threads."""
    two_threads(lambda s: np.copyto(out[s], x[s]), x.shape[0])
    return out


def floor_read(*arrays: np.ndarray) -> float:
    """Read every array once (a sum of each half), 2 threads."""
    n = arrays[0].shape[0]

    def part(s):
        return sum(float(a[s].sum()) for a in arrays)

    return sum(two_threads(part, n))


# --------------------------------------------------------------------------
# Memory: the VM hands memory that stays free for a second or two back to
# its host, and touching it again costs up to ~1 s per 800 MB. Allocate and
# touch about twice the working set right before timing, then free it, so
# that a row which allocates big temporaries gets pages the guest holds.
# --------------------------------------------------------------------------
def touch_memory(nbytes: int) -> None:
    if nbytes <= 0:
        return
    page = 4096
    buf = np.empty(int(nbytes), dtype=np.uint8)
    buf[::page] = 1  # one write per page faults it in
    del buf


# --------------------------------------------------------------------------
# Running one row
# --------------------------------------------------------------------------
def run_row(
    benchmark,
    *,
    op: str,
    dtype: str,
    nominal: tuple,
    role: str,
    key: str,
    make,
    full_rows: int,
    work_bytes: int,
    scalable: bool = False,
    row_power: int = 1,
    backend: str | None = None,
    extra: dict | None = None,
):
    """Time one row of a group and return the result of its last call.

    ``make(r)`` prepares the inputs for the first ``r`` rows (outside the
    timing) and returns the zero-argument function to time. It is first
    called with 2 rows as a warm-up: that compiles Numba kernels, loads the
    extensions, and turns a missing kernel into a skip (or a failure with
    --bench-strict) before anything big runs.

    With ``scalable``, a row whose full call is estimated to take longer
    than --bench-max-call is timed on ``r`` rows only and its time is
    scaled by ``(full_rows / r) ** row_power`` in the report (recorded as
    ``scale_to_full``; the row's name says so).
    """
    benchmark.group = group_name(op, dtype, nominal)
    info = benchmark.extra_info
    info.update(
        op=op,
        dtype=dtype,
        shape=list(nominal),
        scale=SETTINGS.scale,
        role=role,
        key=key,
        backend=backend,
        full_rows=full_rows,
        timed_rows=full_rows,
        scale_to_full=1.0,
    )
    if extra:
        info.update(extra)

    try:
        make(min(full_rows, 2))()
    except BackendUnavailableError as exc:
        _kernel_missing(exc)

    timed_rows = full_rows
    if scalable and benchmark.enabled and math.isfinite(SETTINGS.max_call):
        # A probe costing about 1/50 of the full call: large enough that the
        # fixed cost of a call is not multiplied into the estimate.
        probe = max(1, int(full_rows * 50 ** (-1 / row_power)))
        fn = make(probe)
        t0 = time.perf_counter()
        fn()
        probe_s = time.perf_counter() - t0
        estimate = probe_s * (full_rows / probe) ** row_power
        if estimate > SETTINGS.max_call:
            # Aim at a quarter of the budget per call.
            ratio = (SETTINGS.max_call / 4 / estimate) ** (1 / row_power)
            timed_rows = min(full_rows, max(probe, int(full_rows * ratio)))
        del fn
    scale_to_full = (full_rows / timed_rows) ** row_power
    if timed_rows != full_rows:
        info.update(timed_rows=timed_rows, scale_to_full=scale_to_full)
        benchmark.name += (
            f" [timed on {timed_rows} of {full_rows} rows, x{scale_to_full:.4g}]"
        )

    fn = make(timed_rows)
    if benchmark.enabled:
        touch_memory(2 * work_bytes / scale_to_full)
        # Slow rows get 3 rounds (a median of 3), fast ones pytest-benchmark's
        # own calibration.
        t0 = time.perf_counter()
        result = fn()
        once = time.perf_counter() - t0
        if once > 1.0:
            del result
            return benchmark.pedantic(fn, rounds=3, iterations=1)
        del result
    return benchmark(fn)
