"""Shared test machinery: the table of operations and backends, the
``backend`` fixture, per-dtype tolerances and the comparison helper.

Adding an operation
-------------------
Append an :class:`Operation` to :data:`OPERATIONS` (or call
:func:`register_operation` from a test module's import) with the public
function, the topic of its kernels (``numba_<topic>.py``,
``_cython/_<topic>.pyx``), the kernel names it calls, and a ``make_args``
that draws a valid random input. The table-driven tests in
``test_dispatch.py`` then run it on every backend against the reference and
check that 1 and 2 threads give bit-identical results.

Skipping
--------
The ``backend`` fixture skips a backend that is not usable here, or whose
kernel module for the test module's ``TOPIC`` (and ``KERNELS``) is not
built. With ``FASTDIV_REQUIRE_ALL=1`` in the environment (CI sets it) that
skip becomes a failure, so a CI run can never pass by skipping a backend.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import fastdiv
from fastdiv import _dispatch

BACKENDS = ("numpy", "numba", "cython")
COMPILED_BACKENDS = ("numba", "cython")

REQUIRE_ALL = os.environ.get("FASTDIV_REQUIRE_ALL", "") == "1"

# A modest number of examples keeps the whole suite fast on 2 cores; the
# edge cases that matter most are enumerated explicitly in the generators.
settings.register_profile(
    "fastdiv",
    max_examples=40,
    deadline=None,  # the first call of a Numba kernel may load its cache
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "thorough",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fastdiv"))


# --------------------------------------------------------------------------
# Tolerances, declared once per output dtype.
#
# A compiled kernel and the float64 reference may differ by the error of a
# vectorised exp or log (1-3 ulp), by the order of a row's sum (about
# sqrt(k) ulp) and, in float32, by computing the shifted logit x - max in
# float32 (an error of |x - max| * eps that exp turns into a relative one).
# rtol covers that with a margin; atol is a few eps of the dtype, the scale
# below which a probability of a row summing to 1 carries no information,
# and it absorbs the cancellation in logsumexp = max + log(sum) near 0.
# --------------------------------------------------------------------------
TOLERANCES: dict[np.dtype, dict[str, float]] = {
    np.dtype(np.float32): {"rtol": 4e-6, "atol": 5e-7},
    np.dtype(np.float64): {"rtol": 1e-13, "atol": 1e-15},
}


def tolerance(dtype) -> dict[str, float]:
    """The tolerances for results of ``dtype`` (as keyword arguments)."""
    return TOLERANCES[np.dtype(dtype)]


def assert_same(actual, expected, *, rtol=None, atol=None, what="result"):
    """Assert two results agree: values within the tolerance of their dtype,
    the same dtype and shape, NaN in the same places, infinities with the
    same sign in the same places.

    Tuples (``logsumexp(..., return_sign=True)``) are compared element by
    element. NumPy scalars and 0-d arrays are compared like arrays, but a
    scalar must stay a scalar.
    """
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple), f"{what}: expected a tuple, got {actual!r}"
        assert len(actual) == len(expected), f"{what}: tuple lengths differ"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, rtol=rtol, atol=atol, what=f"{what}[{i}]")
        return
    assert np.ndim(actual) == np.ndim(expected), (
        f"{what}: ndim {np.ndim(actual)} != {np.ndim(expected)}"
    )
    assert isinstance(actual, np.ndarray) == isinstance(expected, np.ndarray), (
        f"{what}: {type(actual).__name__} where {type(expected).__name__} was expected"
    )
    a = np.asarray(actual)
    e = np.asarray(expected)
    assert a.dtype == e.dtype, f"{what}: dtype {a.dtype} != {e.dtype}"
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    tol = dict(tolerance(e.dtype)) if e.dtype.kind == "f" else {"rtol": 0, "atol": 0}
    if rtol is not None:
        tol["rtol"] = rtol
    if atol is not None:
        tol["atol"] = atol
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    if not np.array_equal(nan_a, nan_e):
        where = np.argwhere(nan_a != nan_e)[:5].tolist()
        raise AssertionError(f"{what}: NaN in different places, first at {where}")
    inf_a, inf_e = np.isinf(a), np.isinf(e)
    if not (np.array_equal(inf_a, inf_e) and np.array_equal(a[inf_a], e[inf_e])):
        where = np.argwhere((inf_a != inf_e) | (inf_e & (a != e)))[:5].tolist()
        raise AssertionError(f"{what}: infinities differ, first at {where}")
    finite = ~(nan_e | inf_e)
    a64 = a[finite].astype(np.float64)
    e64 = e[finite].astype(np.float64)
    err = np.abs(a64 - e64)
    bad = err > tol["atol"] + tol["rtol"] * np.abs(e64)
    if bad.any():
        i = int(np.argmax(bad))
        idx = np.argwhere(finite)[i].tolist()
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {a64.size} values differ beyond "
            f"rtol={tol['rtol']:g}, atol={tol['atol']:g}; first at {idx}: "
            f"{a64[i]!r} != {e64[i]!r}; max abs error {err.max():.3g}"
        )


def assert_bit_identical(actual, expected, what="result"):
    """Assert two results are the same bits (NaN payloads aside)."""
    if isinstance(expected, tuple):
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_bit_identical(a, e, f"{what}[{i}]")
        return
    a, e = np.asarray(actual), np.asarray(expected)
    assert a.dtype == e.dtype and a.shape == e.shape, what
    same = (a == e) | (np.isnan(a) & np.isnan(e))
    # == treats 0.0 and -0.0 as equal; the sign bit must match too.
    same &= np.signbit(a) == np.signbit(e)
    assert same.all(), f"{what}: {int((~same).sum())} values differ"


def call_or_error(fn: Callable, *args, **kwargs):
    """(result, None) or (None, exception): to check both raise or neither."""
    try:
        return fn(*args, **kwargs), None
    except Exception as exc:  # noqa: BLE001 - compared by the caller
        return None, exc


# --------------------------------------------------------------------------
# The table of operations.
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Operation:
    """One public operation as the generic tests see it.

    ``make_args(rng, dtype, n, k)`` returns ``(args, kwargs)``: a valid
    random input of about n rows of k entries in ``dtype``, with every
    keyword the call needs except ``backend``.
    """

    name: str
    func: Callable
    topic: str
    kernels: tuple[str, ...]
    make_args: Callable
    tags: frozenset = field(default_factory=frozenset)

    def __call__(self, *args, backend=None, **kwargs):
        return self.func(*args, backend=backend, **kwargs)


def _logits(rng, dtype, n, k):
    return (rng.standard_normal((n, k)) * 3.0).astype(dtype)


def _softmax_args(rng, dtype, n, k):
    return (_logits(rng, dtype, n, k),), {"temperature": 1.7}


def _logsumexp_weighted_args(rng, dtype, n, k):
    # Weights of both signs and some zeros, as SciPy allows.
    b = rng.standard_normal((n, k)).astype(dtype)
    b[:, ::5] = 0.0
    return (_logits(rng, dtype, n, k),), {
        "temperature": 0.6,
        "b": b,
        "return_sign": True,
    }


OPERATIONS: dict[str, Operation] = {}


def register_operation(op: Operation) -> Operation:
    """Add ``op`` to :data:`OPERATIONS` (its name must be new)."""
    if op.name in OPERATIONS:
        raise ValueError(f"operation {op.name!r} is already in the table")
    OPERATIONS[op.name] = op
    return op


register_operation(
    Operation(
        "softmax",
        fastdiv.softmax,
        "softmax",
        ("softmax_rows",),
        _softmax_args,
    )
)
register_operation(
    Operation(
        "log_softmax",
        fastdiv.log_softmax,
        "softmax",
        ("log_softmax_rows",),
        _softmax_args,
    )
)
register_operation(
    Operation(
        "logsumexp",
        fastdiv.logsumexp,
        "softmax",
        ("logsumexp_rows",),
        _softmax_args,
    )
)
register_operation(
    Operation(
        "logsumexp_weighted",
        fastdiv.logsumexp,
        "softmax",
        ("logsumexp_weighted_rows",),
        _logsumexp_weighted_args,
    )
)


def _distribution(rng, dtype, n, k):
    # Exact zeros in every fifth column, as in real sparse distributions;
    # column 0 stays positive so that a row with k = 1 is still valid.
    x = rng.random((n, k)) + 0.01
    x[:, 1::5] = 0.0
    return (x / x.sum(axis=1, keepdims=True)).astype(dtype)


def _one_distribution_args(rng, dtype, n, k):
    return (_distribution(rng, dtype, n, k),), {"base": 2}


def _two_distributions_args(rng, dtype, n, k):
    return (_distribution(rng, dtype, n, k), _distribution(rng, dtype, n, k)), {}


for _name, _kernel in (
    ("entropy", "entropy_rows"),
    ("cross_entropy", "cross_entropy_rows"),
    ("kl_div", "kl_rows"),
    ("js_div", "js_rows"),
    ("js_distance", "js_rows"),
):
    register_operation(
        Operation(
            _name,
            getattr(fastdiv, _name),
            "divergence",
            (_kernel, _kernel + "_checked", "probability_check_rows"),
            _one_distribution_args if _name == "entropy" else _two_distributions_args,
        )
    )


# --------------------------------------------------------------------------
# Backends.
# --------------------------------------------------------------------------
def backend_problem(backend: str, topic: str | None = None, kernels=()) -> str | None:
    """Why ``backend`` cannot run ``kernels`` of ``topic`` here, or None."""
    # _dispatch.backends: the attribute fastdiv.backends is shadowed by the
    # subpackage fastdiv.backends once a kernel has been imported.
    status = _dispatch.backends()[backend]
    if not status.usable:
        return f"backend {backend!r} is not usable: {status.reason}"
    if topic is None:
        return None
    module_name = _dispatch._MODULE_OF[backend].format(topic=topic)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an unbuilt extension or a broken module
        return f"{module_name} cannot be imported: {exc!r}"
    missing = [k for k in kernels if not hasattr(module, k)]
    if missing:
        return f"{module_name} has no kernel {', '.join(missing)}"
    return None


def require_backend(backend: str, topic: str | None = None, kernels=()) -> None:
    """Skip the test (fail it under FASTDIV_REQUIRE_ALL=1) if ``backend``
    cannot run the given kernels of ``topic``."""
    problem = backend_problem(backend, topic, kernels)
    if problem is None:
        return
    if REQUIRE_ALL:
        pytest.fail(f"FASTDIV_REQUIRE_ALL=1 but {problem}", pytrace=False)
    pytest.skip(problem)


def require_operation(backend: str, op: Operation) -> None:
    """:func:`require_backend` for the kernels of one operation."""
    require_backend(backend, op.topic, op.kernels)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Each backend in turn; skipped (or failed under FASTDIV_REQUIRE_ALL=1)
    when it cannot run the test module's ``TOPIC`` and ``KERNELS``."""
    require_backend(
        request.param,
        getattr(request.module, "TOPIC", None),
        getattr(request.module, "KERNELS", ()),
    )
    return request.param


@pytest.fixture(params=COMPILED_BACKENDS)
def compiled_backend(request) -> str:
    """The compiled backends only, with the same skipping rule."""
    require_backend(
        request.param,
        getattr(request.module, "TOPIC", None),
        getattr(request.module, "KERNELS", ()),
    )
    return request.param


@pytest.fixture
def rng():
    """A fixed-seed generator, so that a failure can be reproduced."""
    return np.random.default_rng(20240601)


@pytest.fixture
def log8_off():
    """log8_off(module) turns the inline AVX-512 log of a Cython module
    (_divergence, _pairwise) off for the test, so that its fallback loops
    (libmvec's log) run on a CPU that has AVX-512F too."""
    undo = []

    def off(module: str) -> None:
        cy = pytest.importorskip(f"fastdiv.backends._cython.{module}")
        undo.append((cy, cy.use_log8(False)))

    yield off
    for cy, was in reversed(undo):
        cy.use_log8(was)


@pytest.fixture
def exp8_off():
    """Turns the inline AVX-512 exps of the Cython softmax kernels off for
    the test, so that their fallback loops (libmvec's exp) run on a CPU that
    has AVX-512F too."""
    cy = pytest.importorskip("fastdiv.backends._cython._softmax")
    was = cy.use_exp8(False)
    yield
    cy.use_exp8(was)
