"""Fused losses on logits: distill_loss with its gradient, and nll (issue 3).

distill_loss (65_536 x 1000, float32, T = 4, alpha = 0.9, with labels and
the gradient with respect to the student logits) against the same loss and
gradient in PyTorch on 2 CPU threads (log_softmax, kl_div and cross_entropy
with autograd) and in plain NumPy. Its floor reads both logit arrays and
writes a fresh gradient array (allocate + copy) on 2 threads.

nll (forward, mean over the batch) against torch.nn.functional.cross_entropy
and plain NumPy; its floor reads the logits once.
"""

from __future__ import annotations

import numpy as np
import pytest
from _bench import (
    OUR_BACKENDS,
    DataCache,
    case_id,
    floor_read,
    need,
    need_backend,
    random_logits,
    rows,
    run_row,
    torch_module,
    two_threads,
)

SHAPE = (65_536, 1000)
DTYPE = "float32"
T = 4.0
ALPHA = 0.9

_CACHE = DataCache()


def _inputs():
    shape = (rows(SHAPE[0]), SHAPE[1])

    def build():
        student = random_logits(shape, DTYPE, seed=0)
        teacher = random_logits(shape, DTYPE, seed=1)
        labels = np.random.default_rng(2).integers(0, shape[1], shape[0])
        return student, teacher, labels

    return _CACHE.get(shape, build)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    return z


def numpy_distill(student, teacher, labels, temperature, alpha):
    """Distillation loss and its gradient written plainly in NumPy."""
    n = student.shape[0]
    log_qs = _log_softmax(student / temperature)
    log_pt = _log_softmax(teacher / temperature)
    pt = np.exp(log_pt)
    kl = np.sum(pt * (log_pt - log_qs)) / n
    log_q1 = _log_softmax(student)
    hard = -np.mean(log_q1[np.arange(n), labels])
    loss = alpha * temperature**2 * kl + (1 - alpha) * hard
    # d/dz of T^2 KL(pt || softmax(z/T)) is T (softmax(z/T) - pt).
    grad = (alpha * temperature / n) * (np.exp(log_qs) - pt)
    q1 = np.exp(log_q1)
    q1[np.arange(n), labels] -= 1
    grad += ((1 - alpha) / n) * q1
    return loss, grad


def torch_distill(torch):
    functional = torch.nn.functional

    def run(student, teacher, labels, temperature, alpha):
        student.grad = None
        log_qs = functional.log_softmax(student / temperature, dim=1)
        log_pt = functional.log_softmax(teacher / temperature, dim=1)
        kl = functional.kl_div(log_qs, log_pt, reduction="batchmean", log_target=True)
        hard = functional.cross_entropy(student, labels)
        loss = alpha * temperature**2 * kl + (1 - alpha) * hard
        loss.backward()
        return loss.item(), student.grad

    return run


def floor_distill(student, teacher):
    """Read both logit arrays and write a fresh gradient, on 2 threads."""
    grad = np.empty_like(student)

    def part(s):
        np.copyto(grad[s], student[s])
        return float(teacher[s].sum())

    two_threads(part, student.shape[0])
    return grad


_KEYS = [f"fastdiv:{b}" for b in OUR_BACKENDS] + ["torch", "numpy", "floor"]


@pytest.mark.parametrize(
    "key",
    [pytest.param(k, id=case_id("distill_loss+grad", DTYPE, SHAPE, k)) for k in _KEYS],
)
def test_distill_loss_grad(benchmark, key):
    student, teacher, labels = _inputs()
    backend = None
    if key.startswith("fastdiv:"):
        backend = key.split(":")[1]
        fn = need("distill_loss", 3)
        need_backend(backend)
        role, temps = "ours", 1

        def make(r):
            s, t, y = student[:r], teacher[:r], labels[:r]
            return lambda: fn(
                s, t, y, temperature=T, alpha=ALPHA, return_grad=True, backend=backend
            )

    elif key == "torch":
        torch = torch_module()
        run = torch_distill(torch)
        role, temps = "peer", 8

        def make(r):
            s = torch.from_numpy(student[:r].copy()).requires_grad_()
            t = torch.from_numpy(teacher[:r])
            y = torch.from_numpy(labels[:r])
            return lambda: run(s, t, y, T, ALPHA)

    elif key == "numpy":
        role, temps = "peer", 8

        def make(r):
            s, t, y = student[:r], teacher[:r], labels[:r]
            return lambda: numpy_distill(s, t, y, T, ALPHA)

    else:
        role, temps = "floor", 1

        def make(r):
            s, t = student[:r], teacher[:r]
            return lambda: floor_distill(s, t)

    run_row(
        benchmark,
        op="distill_loss+grad",
        dtype=DTYPE,
        nominal=SHAPE,
        role=role,
        key=key,
        backend=backend,
        make=make,
        full_rows=student.shape[0],
        work_bytes=(2 + temps) * student.nbytes,
    )


def numpy_nll(logits, labels):
    n = logits.shape[0]
    top = logits.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return np.mean(lse - logits[np.arange(n), labels])


_NLL_KEYS = [f"fastdiv:{b}" for b in OUR_BACKENDS] + ["torch", "numpy", "floor"]


@pytest.mark.parametrize(
    "key", [pytest.param(k, id=case_id("nll", DTYPE, SHAPE, k)) for k in _NLL_KEYS]
)
def test_nll(benchmark, key):
    logits, _, labels = _inputs()
    backend = None
    if key.startswith("fastdiv:"):
        backend = key.split(":")[1]
        fn = need("nll", 3)
        need_backend(backend)
        role, temps = "ours", 0

        def make(r):
            x, y = logits[:r], labels[:r]
            return lambda: fn(x, y, backend=backend)

    elif key == "torch":
        torch = torch_module()
        cross_entropy = torch.nn.functional.cross_entropy
        role, temps = "peer", 2

        def make(r):
            x, y = torch.from_numpy(logits[:r]), torch.from_numpy(labels[:r])
            return lambda: float(cross_entropy(x, y))

    elif key == "numpy":
        role, temps = "peer", 2

        def make(r):
            x, y = logits[:r], labels[:r]
            return lambda: numpy_nll(x, y)

    else:
        role, temps = "floor", 0

        def make(r):
            x = logits[:r]
            return lambda: floor_read(x)

    run_row(
        benchmark,
        op="nll",
        dtype=DTYPE,
        nominal=SHAPE,
        role=role,
        key=key,
        backend=backend,
        make=make,
        full_rows=logits.shape[0],
        work_bytes=(1 + temps) * logits.nbytes,
    )
