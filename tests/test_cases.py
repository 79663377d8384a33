"""The hard cases of public bug reports, as our own test data, on every backend.

tests/data/cases.json holds each case with the public report it came from,
our function and keyword arguments, its inputs and the expected value (see
the file's "about"). A case runs through the runner of its function in
:data:`RUNNERS`; every function of the data must have one, and
``test_every_case_has_a_runner`` fails, naming the waiting case ids, for any
function that has none yet.

Adding a runner: decorate a function ``run(case, backend)`` that calls the
public function and returns its result with ``@runner("name", "topic")``.
:func:`decode` turns the JSON inputs into arrays of the case's dtype.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

import fastdiv as fd
from tests.conftest import assert_same, require_backend

DATA = json.loads((Path(__file__).parent / "data" / "cases.json").read_text())
CASES = DATA["cases"]
CASE_IDS = [c["id"] for c in CASES]


def decode(value, dtype=None) -> np.ndarray:
    """A JSON input or expected value as an array.

    "inf", "-inf" and "nan" are the non-finite numbers; {"full": shape,
    "value": v} is an array of that shape filled with v. ``dtype`` None keeps
    what NumPy infers (integer labels stay integers).
    """
    if isinstance(value, dict):
        return np.full(tuple(value["full"]), float(value["value"]), dtype or float)

    def num(v):
        if isinstance(v, list):
            return [num(u) for u in v]
        return float(v) if isinstance(v, str) else v

    return np.array(num(value), dtype=dtype)


class Runner(NamedTuple):
    """How to run the cases of one function: the topic of its kernels (for
    the backend skip rule) and ``run(case, backend) -> result``."""

    topic: str
    run: Callable


RUNNERS: dict[str, Runner] = {}


def runner(name: str, topic: str):
    """Register ``run(case, backend)`` as the runner of function ``name``."""

    def register(run):
        if name in RUNNERS:
            raise ValueError(f"a runner for {name!r} exists already")
        RUNNERS[name] = Runner(topic, run)
        return run

    return register


def _float_inputs(case, *names):
    return [decode(case["inputs"][n], case["dtype"]) for n in names]


@runner("softmax", "softmax")
def _run_softmax(case, backend):
    (x,) = _float_inputs(case, "x")
    return fd.softmax(x, **case["kwargs"], backend=backend)


@runner("log_softmax", "softmax")
def _run_log_softmax(case, backend):
    (x,) = _float_inputs(case, "x")
    return fd.log_softmax(x, **case["kwargs"], backend=backend)


@runner("logsumexp", "softmax")
def _run_logsumexp(case, backend):
    (x,) = _float_inputs(case, "x")
    kwargs = dict(case["kwargs"])
    if "b" in case["inputs"]:
        (kwargs["b"],) = _float_inputs(case, "b")
    return fd.logsumexp(x, **kwargs, backend=backend)


# losses on logits (fastdiv/losses.py)
@runner("nll", "losses")
def _run_nll(case, backend):
    (logits,) = _float_inputs(case, "logits")
    labels = decode(case["inputs"]["labels"])
    return fd.nll(logits, labels, **case["kwargs"], backend=backend)


@runner("soft_cross_entropy", "losses")
def _run_soft_cross_entropy(case, backend):
    logits, target = _float_inputs(case, "logits", "target_probs")
    return fd.soft_cross_entropy(logits, target, **case["kwargs"], backend=backend)


@runner("distill_loss", "losses")
def _run_distill_loss(case, backend):
    student, teacher = _float_inputs(case, "student_logits", "teacher_logits")
    labels = case["inputs"].get("labels")
    labels = None if labels is None else decode(labels)
    return fd.distill_loss(student, teacher, labels, **case["kwargs"], backend=backend)


# divergences of probabilities (fastdiv/divergence.py)
@runner("entropy", "divergence")
def _run_entropy(case, backend):
    (p,) = _float_inputs(case, "p")
    return fd.entropy(p, **case["kwargs"], backend=backend)


def _two_distributions(name):
    def run(case, backend):
        p, q = _float_inputs(case, "p", "q")
        return getattr(fd, name)(p, q, **case["kwargs"], backend=backend)

    return run


for _name in ("cross_entropy", "kl_div", "js_div", "js_distance"):
    runner(_name, "divergence")(_two_distributions(_name))


# --------------------------------------------------------------------------
# Comparing a result with the expected value of a case.
# --------------------------------------------------------------------------
def expected_like(case, got):
    """The case's expected value in the shape and type a result should have:
    a tuple for several outputs, a NumPy scalar for a scalar result."""
    dtype = np.dtype(case["dtype"])
    want = case["expected"]
    if isinstance(got, tuple):
        return tuple(
            expected_like({**case, "expected": w}, g)
            for w, g in zip(want, got, strict=True)
        )
    arr = decode(want, dtype)
    return arr[()] if arr.ndim == 0 and not isinstance(got, np.ndarray) else arr


def check_case(case, got):
    want = expected_like(case, got)
    tol = case["tolerance"]
    if tol.get("exact"):
        assert_same(got, want, rtol=0.0, atol=0.0, what=case["id"])
    else:
        assert_same(
            got,
            want,
            rtol=tol.get("rtol", 0.0),
            atol=tol.get("atol", 0.0),
            what=case["id"],
        )


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_case(case, backend):
    entry = RUNNERS.get(case["function"])
    if entry is None:
        pytest.skip(
            f"no runner for {case['function']} yet: see test_every_case_has_a_runner"
        )
    require_backend(backend, entry.topic)
    if case.get("raises"):
        exc = getattr(builtins, case["raises"])
        with pytest.raises(exc):
            entry.run(case, backend)
        return
    check_case(case, entry.run(case, backend))


# --------------------------------------------------------------------------
# Nothing is left out silently.
# --------------------------------------------------------------------------
FUNCTIONS = sorted({c["function"] for c in CASES})


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_case_has_a_runner(function):
    """Fails for each function of the data that has no runner yet, listing
    the cases that wait on it; add the runner to RUNNERS above."""
    waiting = [c["id"] for c in CASES if c["function"] == function]
    assert function in RUNNERS, (
        f"cases {', '.join(waiting)} wait on a runner for fastdiv.{function}"
    )


def test_case_data_is_well_formed():
    assert len(set(CASE_IDS)) == len(CASE_IDS), "duplicate case ids"
    for c in CASES:
        assert c["source"] and c["source_urls"], c["id"]
        assert all(u.startswith("https://") for u in c["source_urls"]), c["id"]
        assert np.dtype(c["dtype"]).kind == "f", c["id"]
        tol = c["tolerance"]
        assert tol.get("exact") or {"rtol", "atol"} <= set(tol), c["id"]
        assert (c.get("raises") is None) != (c["expected"] is None), c["id"]
        if c.get("raises"):
            assert issubclass(getattr(builtins, c["raises"]), Exception), c["id"]


def test_every_source_case_is_translated():
    # The shared file is beside the repository on the project machine only.
    shared = Path(__file__).resolve().parents[2] / "shared" / "cases" / "cases.json"
    if not shared.exists():
        pytest.skip(f"{shared} is not here")
    source_ids = {c["id"] for c in json.loads(shared.read_text())}
    translated = {i.split("-")[0] for i in CASE_IDS}
    assert source_ids <= translated, sorted(source_ids - translated)
