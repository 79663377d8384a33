"""Losses on logits: nll, soft_cross_entropy and distill_loss, with gradients.

Every backend is compared with the NumPy reference on random and adversarial
inputs; the reference with plain NumPy formulas and (where installed)
PyTorch; the gradients of every backend with central finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax as sp_log_softmax
from scipy.special import softmax as sp_softmax

import fastdiv as fd
from tests.conftest import assert_bit_identical

TOPIC = "losses"
KERNELS = ("nll_rows", "soft_ce_rows", "distill_rows")

# Compiled kernels compute in float64 like the reference, with a vectorised
# exp/log of about 1 ulp and sums in another order; float32 results are
# rounded once. atol is relative to the largest value of the result: a
# gradient entry p - t is a difference of numbers of that size.
_TOL = {np.dtype(np.float32): (2e-6, 1e-6), np.dtype(np.float64): (1e-12, 1e-14)}


def assert_close(actual, expected, what="result"):
    """Same type, dtype and shape; NaN and infinities in the same places;
    finite values within the dtype's tolerance."""
    assert isinstance(actual, np.ndarray) == isinstance(expected, np.ndarray), what
    a, e = np.asarray(actual), np.asarray(expected)
    assert a.dtype == e.dtype and a.shape == e.shape, (what, a.dtype, a.shape)
    assert np.array_equal(np.isnan(a), np.isnan(e)), f"{what}: NaN differ"
    inf = np.isinf(e)
    assert np.array_equal(np.isinf(a), inf), f"{what}: inf differ"
    assert np.array_equal(a[inf], e[inf]), f"{what}: inf signs differ"
    fin = np.isfinite(e)
    if not fin.any():
        return
    rtol, atol = _TOL[e.dtype]
    a64, e64 = a[fin].astype(np.float64), e[fin].astype(np.float64)
    scale = max(1.0, float(np.abs(e64).max()))
    err = np.abs(a64 - e64) - rtol * np.abs(e64)
    assert (err <= atol * scale).all(), (
        f"{what}: max error {np.abs(a64 - e64).max():.3g} (scale {scale:.3g})"
    )


def assert_pair(actual, expected, what):
    assert isinstance(actual, tuple) and len(actual) == 2, what
    assert_close(actual[0], expected[0], f"{what} loss")
    assert_close(actual[1], expected[1], f"{what} grad")


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------
def random_logits(rng, n, k, dtype, scale=3.0):
    return (rng.standard_normal((n, k)) * scale).astype(dtype)


def random_probs(rng, n, k, dtype, zeros=True):
    t = rng.random((n, k))
    if zeros:
        t[:, ::3] = 0.0  # exact zeros, also where logits are -inf below
    t /= t.sum(axis=1, keepdims=True)
    return t.astype(dtype)


def adversarial_logits(rng, dtype):
    """Rows with -inf, +inf (one and two), NaN, all -inf, huge and constant
    logits, among random ones. Label 2 is finite in every row but row 3."""
    big = np.finfo(dtype).max
    z = random_logits(rng, 12, 6, dtype)
    z[0, 0] = -np.inf  # a masked class
    z[1, :] = -np.inf  # all masked: NaN row
    z[2, 4] = np.inf  # one +inf: the one-hot limit
    z[3, 1:3] = np.inf  # two +inf: NaN row
    z[4, 5] = np.nan
    z[5] = [big, -big, 0.0, big / 2, -1.0, 1.0]
    z[6] = 7.0  # constant row
    z[7, :3] = [1e30, -1e30, 1e30]  # huge, tied maximum
    return z


TEMPERATURES = [1.0, 0.37, 4.0, 1e-300, 1e300, 5e-324]


# --------------------------------------------------------------------------
# Every backend agrees with the reference
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_random_matches_reference(backend, rng, dtype, reduction):
    z = random_logits(rng, 37, 11, dtype)
    y = rng.integers(0, 11, 37)
    y[::5] = -100
    for kwargs in [
        {},
        {"temperature": 2.5, "label_smoothing": 0.1, "ignore_index": -100},
        {"temperature": 0.3, "label_smoothing": 1.0, "ignore_index": -100},
    ]:
        labels = y if kwargs.get("ignore_index") is not None else np.abs(y) % 11
        got = fd.nll(
            z, labels, reduction=reduction, return_grad=True, backend=backend, **kwargs
        )
        want = fd.nll(
            z, labels, reduction=reduction, return_grad=True, backend="numpy", **kwargs
        )
        assert_pair(got, want, f"nll {kwargs}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_nll_adversarial_matches_reference(backend, rng, dtype, temperature):
    z = adversarial_logits(rng, dtype)
    y = np.full(12, 2)
    y[8] = -1
    for eps in (0.0, 0.25, 1.0):
        for reduction in ("none", "sum", "mean"):
            got = fd.nll(
                z,
                y,
                temperature,
                ignore_index=-1,
                label_smoothing=eps,
                reduction=reduction,
                return_grad=True,
                backend=backend,
            )
            want = fd.nll(
                z,
                y,
                temperature,
                ignore_index=-1,
                label_smoothing=eps,
                reduction=reduction,
                return_grad=True,
                backend="numpy",
            )
            assert_pair(got, want, f"nll T={temperature} eps={eps} {reduction}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_soft_cross_entropy_matches_reference(backend, rng, dtype, temperature):
    for z in (random_logits(rng, 21, 9, dtype), adversarial_logits(rng, dtype)):
        t = random_probs(rng, *z.shape, dtype)
        for reduction in ("none", "sum", "mean"):
            got = fd.soft_cross_entropy(
                z,
                t,
                temperature,
                reduction=reduction,
                return_grad=True,
                backend=backend,
            )
            want = fd.soft_cross_entropy(
                z,
                t,
                temperature,
                reduction=reduction,
                return_grad=True,
                backend="numpy",
            )
            assert_pair(got, want, f"soft_ce T={temperature} {reduction}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_distill_loss_matches_reference(backend, rng, dtype, temperature):
    for s in (random_logits(rng, 21, 6, dtype), adversarial_logits(rng, dtype)):
        t = random_logits(rng, *s.shape, dtype)
        t[1, 3] = -np.inf  # a class the teacher masks
        y = np.full(s.shape[0], 2)
        for labels in (None, y):
            for alpha in (0.0, 0.9, 1.0):
                for reduction in ("none", "sum", "batchmean"):
                    args = (s, t, labels, temperature, alpha, reduction, True)
                    got = fd.distill_loss(*args, backend=backend)
                    want = fd.distill_loss(*args, backend="numpy")
                    assert_pair(got, want, f"distill T={temperature} a={alpha}")


def test_large_rows_match_reference(backend, rng):
    # Rows longer than any chunk or vector width, with an odd tail.
    z = random_logits(rng, 5, 1037, np.float32)
    t = random_logits(rng, 5, 1037, np.float32)
    y = rng.integers(0, 1037, 5)
    p = random_probs(rng, 5, 1037, np.float32)
    assert_pair(
        fd.distill_loss(z, t, y, return_grad=True, backend=backend),
        fd.distill_loss(z, t, y, return_grad=True, backend="numpy"),
        "kd",
    )
    assert_pair(
        fd.nll(z, y, 1.5, label_smoothing=0.1, return_grad=True, backend=backend),
        fd.nll(z, y, 1.5, label_smoothing=0.1, return_grad=True, backend="numpy"),
        "nll",
    )
    assert_pair(
        fd.soft_cross_entropy(z, p, 0.5, return_grad=True, backend=backend),
        fd.soft_cross_entropy(z, p, 0.5, return_grad=True, backend="numpy"),
        "soft_ce",
    )


# --------------------------------------------------------------------------
# The reference against plain formulas and PyTorch
# --------------------------------------------------------------------------
def test_nll_matches_plain_numpy(backend, rng):
    z = random_logits(rng, 30, 8, np.float64)
    y = rng.integers(0, 8, 30)
    y[::4] = -100
    keep = y != -100
    eps, T = 0.15, 1.7
    logp = sp_log_softmax(z / T, axis=1)
    rows = -(1 - eps) * logp[keep, y[keep]] - eps / 8 * logp[keep].sum(axis=1)
    target = np.full((keep.sum(), 8), eps / 8)
    target[np.arange(keep.sum()), y[keep]] += 1 - eps
    grad = np.zeros_like(z)
    grad[keep] = (np.exp(logp[keep]) - target) / T / keep.sum()
    loss, g = fd.nll(
        z,
        y,
        T,
        ignore_index=-100,
        label_smoothing=eps,
        return_grad=True,
        backend=backend,
    )
    np.testing.assert_allclose(loss, rows.mean(), rtol=1e-13)
    np.testing.assert_allclose(g, grad, rtol=1e-12, atol=1e-16)


def test_soft_cross_entropy_and_distill_match_plain_numpy(backend, rng):
    z = random_logits(rng, 10, 7, np.float64)
    w = random_logits(rng, 10, 7, np.float64)
    t = random_probs(rng, 10, 7, np.float64)
    y = rng.integers(0, 7, 10)
    T, a = 3.0, 0.7
    ce = -(t * sp_log_softmax(z / T, axis=1)).sum(axis=1)
    np.testing.assert_allclose(
        fd.soft_cross_entropy(z, t, T, reduction="none", backend=backend),
        ce,
        rtol=1e-13,
    )
    qt, qs = sp_softmax(w / T, axis=1), sp_softmax(z / T, axis=1)
    kl = (qt * (np.log(qt) - np.log(qs))).sum(axis=1)
    hard = -sp_log_softmax(z, axis=1)[np.arange(10), y]
    want = (a * T * T * kl + (1 - a) * hard).mean()
    onehot = np.eye(7)[y]
    grad = (a * T * (qs - qt) + (1 - a) * (sp_softmax(z, axis=1) - onehot)) / 10
    loss, g = fd.distill_loss(z, w, y, T, a, return_grad=True, backend=backend)
    np.testing.assert_allclose(loss, want, rtol=1e-12)
    np.testing.assert_allclose(g, grad, rtol=1e-11, atol=1e-16)


@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_matches_torch(backend, rng, eps, reduction):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    z = random_logits(rng, 16, 5, np.float64)
    y = rng.integers(0, 5, 16)
    y[[1, 7]] = -100
    zt = torch.tensor(z, requires_grad=True)
    out = F.cross_entropy(
        zt, torch.tensor(y), ignore_index=-100, label_smoothing=eps, reduction=reduction
    )
    out.backward(torch.ones_like(out))
    loss, g = fd.nll(
        z,
        y,
        ignore_index=-100,
        label_smoothing=eps,
        reduction=reduction,
        return_grad=True,
        backend=backend,
    )
    np.testing.assert_allclose(loss, out.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(g, zt.grad.numpy(), rtol=1e-10, atol=1e-16)


def test_soft_targets_and_distill_match_torch(backend, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    z = random_logits(rng, 12, 6, np.float64)
    w = random_logits(rng, 12, 6, np.float64)
    t = random_probs(rng, 12, 6, np.float64, zeros=False)
    y = rng.integers(0, 6, 12)
    T, a = 4.0, 0.9

    zt = torch.tensor(z, requires_grad=True)
    ce = F.cross_entropy(zt / T, torch.tensor(t))
    ce.backward()
    loss, g = fd.soft_cross_entropy(z, t, T, return_grad=True, backend=backend)
    np.testing.assert_allclose(loss, ce.item(), rtol=1e-12)
    np.testing.assert_allclose(g, zt.grad.numpy(), rtol=1e-10, atol=1e-16)

    zt = torch.tensor(z, requires_grad=True)
    kd = F.kl_div(
        F.log_softmax(zt / T, dim=1),
        F.log_softmax(torch.tensor(w) / T, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    total = a * T * T * kd + (1 - a) * F.cross_entropy(zt, torch.tensor(y))
    total.backward()
    loss, g = fd.distill_loss(z, w, y, T, a, return_grad=True, backend=backend)
    np.testing.assert_allclose(loss, total.item(), rtol=1e-12)
    np.testing.assert_allclose(g, zt.grad.numpy(), rtol=1e-10, atol=1e-16)


# --------------------------------------------------------------------------
# Gradients against central finite differences (float64)
# --------------------------------------------------------------------------
def finite_difference(f, z, h=1e-6):
    g = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        g[idx] = (f(zp) - f(zm)) / (2 * h)
    return g


def assert_grad_matches(f, z, grad):
    fd_grad = finite_difference(f, z)
    rel = np.linalg.norm(grad - fd_grad) / np.linalg.norm(fd_grad)
    assert rel < 1e-6, f"relative gradient error {rel:.2g}"


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nll_gradient_finite_differences(backend, rng, reduction):
    z = random_logits(rng, 6, 5, np.float64, scale=1.0)
    y = np.array([0, 4, -100, 2, 2, 1])
    kwargs = dict(
        temperature=1.3,
        ignore_index=-100,
        label_smoothing=0.2,
        reduction=reduction,
        backend=backend,
    )
    _, grad = fd.nll(z, y, return_grad=True, **kwargs)
    assert_grad_matches(lambda v: float(fd.nll(v, y, **kwargs)), z, grad)


def test_soft_cross_entropy_gradient_finite_differences(backend, rng):
    z = random_logits(rng, 5, 6, np.float64, scale=1.0)
    t = random_probs(rng, 5, 6, np.float64)
    kwargs = dict(temperature=0.8, backend=backend)
    _, grad = fd.soft_cross_entropy(z, t, return_grad=True, **kwargs)
    f = lambda v: float(fd.soft_cross_entropy(v, t, **kwargs))  # noqa: E731
    assert_grad_matches(f, z, grad)


@pytest.mark.parametrize("with_labels", [False, True])
@pytest.mark.parametrize("reduction", ["batchmean", "sum"])
def test_distill_gradient_finite_differences(backend, rng, with_labels, reduction):
    s = random_logits(rng, 5, 6, np.float64, scale=1.0)
    t = random_logits(rng, 5, 6, np.float64, scale=1.0)
    y = rng.integers(0, 6, 5) if with_labels else None
    kwargs = dict(temperature=2.0, alpha=0.6, reduction=reduction, backend=backend)
    _, grad = fd.distill_loss(s, t, y, return_grad=True, **kwargs)
    f = lambda v: float(fd.distill_loss(v, t, y, **kwargs))  # noqa: E731
    assert_grad_matches(f, s, grad)


def test_grad_is_finite_where_target_probability_is_zero(backend):
    z = np.array([[-np.inf, 0.0, 1.0], [0.5, -np.inf, 2.0]])
    t = np.array([[0.0, 0.3, 0.7], [1.0, 0.0, 0.0]])
    loss, g = fd.soft_cross_entropy(
        z, t, reduction="none", return_grad=True, backend=backend
    )
    assert np.isfinite(loss).all() and np.isfinite(g).all()
    teacher = np.array([[-np.inf, 1.0, 0.0], [0.0, -np.inf, 3.0]])
    loss, g = fd.distill_loss(
        z, teacher, [1, 2], return_grad=True, reduction="none", backend=backend
    )
    assert np.isfinite(loss).all() and np.isfinite(g).all()
    # A target > 0 on a -inf logit: infinite loss, finite gradient.
    loss, g = fd.soft_cross_entropy(
        z, t[::-1], reduction="none", return_grad=True, backend=backend
    )
    assert np.isinf(loss[0]) and np.isfinite(g).all()


# --------------------------------------------------------------------------
# Reductions and shapes
# --------------------------------------------------------------------------
def test_all_rows_ignored(backend):
    z = np.ones((3, 4), np.float32)
    y = np.full(3, -100)
    kw = dict(ignore_index=-100, label_smoothing=0.3, return_grad=True, backend=backend)
    loss, g = fd.nll(z, y, **kw)
    assert np.isnan(loss) and loss.dtype == np.float32
    assert (g == 0).all() and g.dtype == np.float32
    assert fd.nll(z, y, reduction="sum", **kw)[0] == 0.0
    none, _ = fd.nll(z, y, reduction="none", **kw)
    assert none.dtype == np.float32 and (none == 0).all()


def test_ignored_rows_take_no_part(backend, rng):
    z = random_logits(rng, 6, 4, np.float64)
    z[2] = [np.nan, np.inf, np.inf, -np.inf]  # ignored: even this is no harm
    y = np.array([1, 0, -5, 3, -5, 2])
    kw = dict(ignore_index=-5, label_smoothing=0.3, backend=backend)
    kept = y != -5
    full, g = fd.nll(z, y, return_grad=True, **kw)
    part, gp = fd.nll(z[kept], y[kept], return_grad=True, **kw)
    np.testing.assert_allclose(full, part, rtol=1e-14)
    np.testing.assert_allclose(g[kept], gp * kept.sum() / kept.sum(), rtol=1e-14)
    assert (g[~kept] == 0).all()


def test_empty_batch(backend):
    z = np.zeros((0, 5))
    # [] is a float64 array to NumPy; no rows need no labels of any type.
    assert np.isnan(fd.nll(z, [], backend=backend))
    assert np.isnan(fd.nll(z, np.zeros(0, int), backend=backend))
    assert fd.nll(z, np.zeros(0, int), reduction="sum", backend=backend) == 0.0
    assert np.isnan(fd.soft_cross_entropy(z, z, backend=backend))
    loss, g = fd.distill_loss(z, z, return_grad=True, backend=backend)
    assert np.isnan(loss) and g.shape == (0, 5)


def test_single_row_and_return_types(backend):
    z = np.array([1.0, 2.0, 3.0], np.float32)
    loss, g = fd.nll(z, 2, return_grad=True, backend=backend)
    assert type(loss) is np.float32 and g.shape == (3,) and g.dtype == np.float32
    two = fd.nll(z[None], [2], reduction="none", backend=backend)
    assert isinstance(two, np.ndarray) and two.shape == (1,)
    np.testing.assert_allclose(loss, two[0], rtol=1e-7)
    one = fd.nll(z, 2, reduction="none", backend=backend)
    assert not isinstance(one, np.ndarray) and one == two[0]
    t = np.array([0.2, 0.3, 0.5])
    loss, g = fd.soft_cross_entropy(z, t, return_grad=True, backend=backend)
    assert loss.dtype == np.float32 and g.shape == (3,)
    loss, g = fd.distill_loss(z, z[::-1], 0, return_grad=True, backend=backend)
    assert type(loss) is np.float32 and g.shape == (3,) and g.dtype == np.float32


def test_c17_distill_value(backend):
    # shared/cases C17 (pytorch/pytorch PR #14457): mpmath value
    # 0.355913081901228548948185408636.
    s = [[1.0, 2.0, 0.5], [0.2, -1.0, 3.0]]
    t = [[2.0, 1.0, 0.1], [0.0, 0.5, 2.5]]
    got = fd.distill_loss(s, t, [1, 2], temperature=4.0, alpha=0.9, backend=backend)
    np.testing.assert_allclose(got, 0.35591308190122856, rtol=1e-13)


def _distill_mpmath(student, teacher, temperature):
    """T^2 KL(softmax(t / T) || softmax(s / T)) averaged over the rows, and
    its gradient, in mpmath with enough digits that q_s - q_t (of size 1 / T)
    keeps 30 of them, also where z / T is huge (its integer digits added)."""
    import mpmath

    top = max(
        float(np.abs(np.asarray(a, np.float64)).max()) for a in (student, teacher)
    )
    digits = 40 + 2 * int(np.log10(max(temperature, 1.0)))
    digits += int(np.log10(max(top / temperature, 1.0)))
    with mpmath.workdps(digits):
        big_t = mpmath.mpf(temperature)
        n = len(student)
        total, grad = mpmath.mpf(0), []
        for srow, trow in zip(student, teacher, strict=True):
            a = [mpmath.mpf(float(v)) / big_t for v in trow]
            b = [mpmath.mpf(float(v)) / big_t for v in srow]
            lse_a = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in a))
            lse_b = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in b))
            p = [mpmath.exp(v - lse_a) for v in a]
            q = [mpmath.exp(v - lse_b) for v in b]
            kl = mpmath.fsum(
                pj * ((aj - lse_a) - (bj - lse_b))
                for pj, aj, bj in zip(p, a, b, strict=True)
            )
            total += big_t**2 * kl
            grad.append(
                [float(big_t * (qj - pj) / n) for pj, qj in zip(p, q, strict=True)]
            )
        return float(total / n), np.array(grad)


@pytest.mark.parametrize("temperature", [1.0, 4.0, 1e4, 1e8, 1e16, 1e100, 1e300])
def test_distill_large_temperature_matches_mpmath(backend, temperature):
    # T^2 KL tends to Var(t - s) / 2 as T grows; the plain difference of
    # log-sum-exps keeps no digit of it past T = 1e8 (see reference.py).
    rng = np.random.default_rng(7)
    s, t = rng.standard_normal((2, 3, 7))
    value, grad = _distill_mpmath(s, t, temperature)
    got, g = fd.distill_loss(
        s, t, temperature=temperature, alpha=1.0, return_grad=True, backend=backend
    )
    np.testing.assert_allclose(got, value, rtol=1e-13)
    np.testing.assert_allclose(g, grad, rtol=0, atol=1e-13 * np.abs(grad).max())


@pytest.mark.parametrize("temperature", [10.0, 100.0, 1e3, 1e6, 1e21, 1e30])
def test_distill_large_temperature_float32_matches_mpmath(backend, temperature):
    # In float32 the exponentials carry 6e-8 of error, so the plain
    # difference of log-sum-exps (of size M) keeps no digit of KL once it
    # has cancelled below about 1e-6 M: at T = 100 the compiled backends
    # switched to the cancellation-free form only at KL < 2e-7 M and were
    # 3e-3 off. They now switch at the float64 ratio, 2e-2 M.
    rng = np.random.default_rng(9)
    s = rng.standard_normal((3, 2)).astype(np.float32)
    t = (s + 0.3 * rng.standard_normal((3, 2))).astype(np.float32)
    value, grad = _distill_mpmath(s, t, temperature)
    got, g = fd.distill_loss(
        s, t, temperature=temperature, alpha=1.0, return_grad=True, backend=backend
    )
    assert got.dtype == g.dtype == np.float32
    np.testing.assert_allclose(got, value, rtol=1e-6)
    np.testing.assert_allclose(g, grad, rtol=0, atol=1e-6 * np.abs(grad).max())


def test_distill_float32_cancelled_and_spread_matches_mpmath(backend):
    # Large logits, a teacher within 5% of the student, T = 30: KL has
    # cancelled to 2e-6 of the terms it is the difference of, and the gap
    # spreads over more than T, so the cancellation-free form does not
    # apply; float32 exponentials left 4.5e-4 relative error (found by a
    # new user). Such rows are redone in float64.
    s = np.array([[485.28006, -335.58694, -77.961136, 505.80594]], np.float32)
    t = np.array([[475.54327, -309.12753, -61.905193, 496.73676]], np.float32)
    rng = np.random.default_rng(12)
    s2 = (300 * rng.standard_normal((6, 40))).astype(np.float32)
    t2 = (s2 * (1 + 0.05 * rng.standard_normal(s2.shape))).astype(np.float32)
    for student, teacher, temperature in ((s, t, 30.0), (s2, t2, 100.0)):
        value, grad = _distill_mpmath(student, teacher, temperature)
        got, g = fd.distill_loss(
            student, teacher, None, temperature, 1.0, return_grad=True, backend=backend
        )
        np.testing.assert_allclose(got, value, rtol=2e-6)
        np.testing.assert_allclose(g, grad, rtol=0, atol=2e-6 * np.abs(grad).max())


@pytest.mark.parametrize("offset", [0.0, 123.0])
def test_distill_near_equal_student_matches_mpmath(backend, offset):
    # A student within 1e-7 of its teacher (up to a constant shift, which
    # changes no softmax): KL is about 1e-14, below the rounding of the
    # log-sum-exps it is the difference of.
    rng = np.random.default_rng(8)
    t = rng.standard_normal((3, 7))
    s = t + offset + 1e-7 * rng.standard_normal((3, 7))
    value, grad = _distill_mpmath(s, t, 4.0)
    got, g = fd.distill_loss(
        s, t, temperature=4.0, alpha=1.0, return_grad=True, backend=backend
    )
    np.testing.assert_allclose(got, value, rtol=1e-8)
    np.testing.assert_allclose(g, grad, rtol=0, atol=1e-8 * np.abs(grad).max())


# Rows of one class: both softmaxes are 1, so KL, the cross-entropy and
# every gradient entry are exactly 0, whatever the logits and T. Numba once
# fused the maximum's shift x / T - max / T into an FMA, which left the
# rounding error of max / T instead of 0: 1e7 for [0] against [-150] at
# T = 1e21, 6.6e-8 at T = 1e8, NaN for logits of 1e20 and more.
SINGLE_CLASS_ROWS = [
    (0.0, -150.0),
    (3e30, -1e30),
    (1.0, 1e30),
    (-7.0, 2.5),
    (1e20, 1e20),
    (1e30, 5.0),
    (0.1, 1e25),
    (-3e38, 3e38),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "temperature", [5e-324, 1e-300, 0.37, 1.0, 4.0, 1e8, 1e21, 1e300, 1.7e308]
)
def test_distill_single_class_is_exactly_zero(backend, dtype, temperature):
    s, t = np.array(SINGLE_CLASS_ROWS, dtype).T[:, :, None]
    y = np.zeros(len(s), np.int64)
    for labels, alpha in ((None, 1.0), (y, 0.5), (y, 0.0)):
        loss, g = fd.distill_loss(
            s, t, labels, temperature, alpha, "none", True, backend=backend
        )
        np.testing.assert_array_equal(loss, np.zeros(len(s), dtype))
        np.testing.assert_array_equal(g, np.zeros(s.shape, dtype))


# Logits far apart (|z| >= 1e18): one class takes all of the student's
# softmax, and T^2 KL grows like T times a logit. The FMA above made the
# maximum's exponential overflow here: inf, -inf or NaN gradients where
# the true value is finite, and -inf where it is +inf. (student, teacher, T);
# the values come from mpmath.
HUGE_SPREAD_ROWS = [
    # The tester's row: 2.65999335e34, gradient -+49999.875.
    ([-4.5e29, 8.2e28], [0.0, 0.5], 1e5),
    # 3.756868141839168e19 (numba gave -inf).
    ([0.0, 3e19], [0.0, 1.0], 3.0),
    # Both softmaxes one-hot on the same class: exactly 0 (numba: -inf).
    ([0.0, 3e19], [0.0, 1e18], 41.0),
    # T^2 KL = T^2 (max / T - log 2) / 2 = 4.9999999999999993e22.
    ([5e18, -5e18], [0.0, 0.0], 1e4),
    ([2e22, 1.7e22, 1.9e22], [0.0, 1e17, -5e16], 1e3),
    ([1e19, 0.0, -1e19], [1.0, 3.0, 2.0], 30.0),
    # 41 * 3e307 / 2 overflows: +inf (numba gave -inf), a finite gradient.
    ([0.0, 3e307], [0.0, 0.0], 41.0),
]


@pytest.mark.parametrize(("student", "teacher", "temperature"), HUGE_SPREAD_ROWS)
def test_distill_huge_logit_spreads_match_mpmath(
    backend, student, teacher, temperature
):
    s, t = np.array([student]), np.array([teacher])
    value, grad = _distill_mpmath(s, t, temperature)
    got, g = fd.distill_loss(
        s, t, temperature=temperature, alpha=1.0, return_grad=True, backend=backend
    )
    np.testing.assert_allclose(got, value, rtol=1e-13)
    np.testing.assert_allclose(g, grad, rtol=0, atol=1e-13 * np.abs(grad).max())
    if max(np.abs(s).max(), np.abs(t).max()) < 3e38:
        # The same rows in float32, with the float32 rounding of the result.
        s32, t32 = s.astype(np.float32), t.astype(np.float32)
        value, grad = _distill_mpmath(s32, t32, temperature)
        got, g = fd.distill_loss(
            s32, t32, None, temperature, 1.0, return_grad=True, backend=backend
        )
        assert got.dtype == g.dtype == np.float32
        np.testing.assert_allclose(got, value, rtol=1e-6)
        np.testing.assert_allclose(g, grad, rtol=0, atol=1e-6 * np.abs(grad).max())


def test_distill_extreme_rows_match_reference(backend):
    # Huge logits and spreads at huge and tiny T, with labels, alpha < 1
    # and the gradient: every backend against the reference, both dtypes.
    rows = [row[:2] for row in HUGE_SPREAD_ROWS[:-1]] + [
        ([1e20, -1e20], [-1e20, 1e20]),
        ([0.0, -1e300], [0.0, -1e300]),
        ([-1e308, 1e308], [1e308, -1e308]),
        ([1e30, 1e30 * (1 + 2**-52)], [1e30, 0.0]),
    ]
    temperatures = [5e-324, 1e-300, 0.37, 1.0, 4.0, 1e5, 1e300]
    # float32 leaves out T = 1e21, where these spreads are 1e-2 of T: the
    # compiled backends keep the plain KL there, and its float32 scratch
    # exponentials leave it about 1e-4 of relative error (both alike).
    for dtype, more in ((np.float32, []), (np.float64, [1e21])):
        for student, teacher in rows:
            with np.errstate(over="ignore"):  # 1e300 is +-inf in float32
                s = np.array([student, student[::-1]], dtype)
                t = np.array([teacher, teacher], dtype)
            y = np.array([0, 1])
            for temperature in temperatures + more:
                for labels, alpha in ((None, 1.0), (y, 0.9), (y, 0.0)):
                    args = (s, t, labels, temperature, alpha, "none", True)
                    got = fd.distill_loss(*args, backend=backend)
                    want = fd.distill_loss(*args, backend="numpy")
                    what = f"{dtype.__name__} {student} {teacher} T={temperature}"
                    assert_pair(got, want, f"{what} a={alpha}")


def test_zero_target_on_masked_logit_contributes_zero(backend):
    # shared/cases C16 (google-deepmind/optax#896): 0 * log 0 = 0.
    z = np.array([[-np.inf, 0.0], [0.0, 0.0]])
    t = np.array([[0.0, 1.0], [0.5, 0.5]])
    got = fd.soft_cross_entropy(z, t, reduction="none", backend=backend)
    np.testing.assert_array_equal(got, [0.0, np.log(2.0)])
    t2 = np.array([[0.5, 0.5], [0.5, 0.5]])
    assert fd.soft_cross_entropy(z, t2, reduction="none", backend=backend)[0] == np.inf


def test_tiny_differences_are_kept(backend):
    # -log softmax([40, 0])[0] = log1p(e^-40) = 4.248354255291589e-18.
    got = fd.nll(np.array([[40.0, 0.0]]), [0], backend=backend)
    np.testing.assert_allclose(got, 4.248354255291589e-18, rtol=1e-14)


# --------------------------------------------------------------------------
# Threads, inputs, errors
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_and_two_threads_bit_identical(compiled_backend, rng, dtype):
    z = random_logits(rng, 301, 129, dtype)
    w = random_logits(rng, 301, 129, dtype)
    p = random_probs(rng, 301, 129, dtype)
    y = rng.integers(0, 129, 301)
    calls = [
        lambda: fd.nll(
            z,
            y,
            1.3,
            label_smoothing=0.1,
            return_grad=True,
            reduction="none",
            backend=compiled_backend,
        ),
        lambda: fd.soft_cross_entropy(
            z, p, 0.7, return_grad=True, reduction="none", backend=compiled_backend
        ),
        lambda: fd.distill_loss(
            z, w, y, return_grad=True, reduction="none", backend=compiled_backend
        ),
    ]
    for call in calls:
        with fd.options(threads=1):
            one = call()
        with fd.options(threads=2):
            two = call()
        assert_bit_identical(two, one)


def test_inputs_unchanged(backend, rng):
    z = random_logits(rng, 9, 5, np.float32)
    w = random_logits(rng, 9, 5, np.float32)
    p = random_probs(rng, 9, 5, np.float64)
    y = rng.integers(0, 5, 9)
    copies = [a.copy() for a in (z, w, p, y)]
    fd.nll(z, y, label_smoothing=0.1, return_grad=True, backend=backend)
    fd.soft_cross_entropy(z, p, return_grad=True, backend=backend)
    fd.distill_loss(z, w, y, return_grad=True, backend=backend)
    for a, c in zip((z, w, p, y), copies, strict=True):
        np.testing.assert_array_equal(a, c)


def test_views_and_read_only_inputs(backend, rng):
    big = random_logits(rng, 20, 12, np.float64)
    z = big[::2, 1::2]  # a strided view
    ro = np.ascontiguousarray(z)
    ro.flags.writeable = False
    y = rng.integers(0, 6, 10)
    want = fd.nll(np.ascontiguousarray(z), y, return_grad=True, backend="numpy")
    assert_pair(fd.nll(z, y, return_grad=True, backend=backend), want, "view")
    assert_pair(fd.nll(ro, y, return_grad=True, backend=backend), want, "ro")
    assert_pair(
        fd.distill_loss(ro, ro[::-1], y, return_grad=True, backend=backend),
        fd.distill_loss(z, z[::-1], y, return_grad=True, backend="numpy"),
        "ro distill",
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_read_only_inputs_of_every_loss(backend, rng, dtype, tmp_path):
    # Logits, targets and labels frozen or from np.load(..., mmap_mode="r")
    # give the bits of the same call on writeable copies.
    z = random_logits(rng, 9, 6, dtype)
    w = random_logits(rng, 9, 6, dtype)
    p = random_probs(rng, 9, 6, dtype)
    y = rng.integers(0, 6, 9)
    calls = {
        "nll": lambda z, w, p, y: fd.nll(
            z, y, 1.5, label_smoothing=0.1, return_grad=True, backend=backend
        ),
        "soft_ce": lambda z, w, p, y: fd.soft_cross_entropy(
            z, p, 0.7, return_grad=True, backend=backend
        ),
        "distill": lambda z, w, p, y: fd.distill_loss(
            z, w, y, 3.0, 0.6, return_grad=True, backend=backend
        ),
        "distill soft": lambda z, w, p, y: fd.distill_loss(
            z, w, None, 3.0, return_grad=True, backend=backend
        ),
    }
    arrays = {"z": z, "w": w, "p": p, "y": y}
    frozen, mapped = {}, {}
    for name, a in arrays.items():
        frozen[name] = a.copy()
        frozen[name].flags.writeable = False
        np.save(tmp_path / f"{name}.npy", a)
        mapped[name] = np.load(tmp_path / f"{name}.npy", mmap_mode="r")
    for name, call in calls.items():
        want = call(**arrays)
        for kind, inputs in (("frozen", frozen), ("mmap", mapped)):
            assert_bit_identical(call(**inputs), want, f"{name} {kind}")


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda z, y, p: fd.nll(z, [0, 1, 5]), ValueError, r"labels row 2 .*5"),
        (lambda z, y, p: fd.nll(z, [0, -1, 1]), ValueError, r"labels row 1"),
        (lambda z, y, p: fd.nll(z, [0, 1]), ValueError, "labels has shape"),
        (lambda z, y, p: fd.nll(z, [0.0, 1.0, 1.0]), TypeError, "labels must be"),
        (lambda z, y, p: fd.nll(z, y, 0.0), ValueError, "temperature"),
        (lambda z, y, p: fd.nll(z, y, np.nan), ValueError, "temperature"),
        (
            lambda z, y, p: fd.nll(z, y, label_smoothing=1.5),
            ValueError,
            "label_smoothing",
        ),
        (lambda z, y, p: fd.nll(z, y, reduction="avg"), ValueError, "reduction"),
        (
            lambda z, y, p: fd.nll(z, y, reduction=np.array(["mean"])),
            ValueError,
            "reduction",
        ),
        (lambda z, y, p: fd.nll(z, y, ignore_index=1.5), TypeError, "ignore_index"),
        (lambda z, y, p: fd.nll(z[None], y), ValueError, "logits must be"),
        (lambda z, y, p: fd.nll(z.astype(complex), y), TypeError, "logits"),
        (
            lambda z, y, p: fd.soft_cross_entropy(z, p[:, :2]),
            ValueError,
            "target_probs has shape",
        ),
        (
            lambda z, y, p: fd.soft_cross_entropy(z, p * 2),
            ValueError,
            r"target_probs row 0 sums to",
        ),
        (
            lambda z, y, p: fd.soft_cross_entropy(z, -p),
            ValueError,
            r"target_probs row 0 has a negative",
        ),
        (
            lambda z, y, p: fd.distill_loss(z, z[:2], y),
            ValueError,
            "teacher_logits has shape",
        ),
        (lambda z, y, p: fd.distill_loss(z, z, y, alpha=1.1), ValueError, "alpha"),
        (
            lambda z, y, p: fd.distill_loss(z, z, y, temperature=-1),
            ValueError,
            "temperature",
        ),
        (
            lambda z, y, p: fd.distill_loss(z, z, y, reduction="mean"),
            ValueError,
            "reduction",
        ),
        (lambda z, y, p: fd.distill_loss(z, z, [0, 1, 3]), ValueError, "labels row 2"),
    ],
)
def test_bad_input(call, exc, match):
    z = np.zeros((3, 3))
    y = np.array([0, 1, 2])
    p = np.full((3, 3), 1 / 3)
    with pytest.raises(exc, match=match):
        call(z, y, p)


def test_ignore_index_rows_may_hold_any_label(backend):
    # A valid class used as ignore_index is ignored like any other value.
    z = np.array([[0.0, 1.0], [2.0, 0.0]])
    got = fd.nll(z, [1, 0], ignore_index=1, reduction="none", backend=backend)
    np.testing.assert_allclose(got, [0.0, np.log1p(np.exp(-2.0))], rtol=1e-14)


def test_unchecked_targets_keep_the_formula(backend):
    # check=False: the loss is still -sum t log p, the gradient sum(t) p - t.
    z = np.array([[0.0, 1.0, 2.0]])
    t = np.array([[0.5, 0.5, 1.0]])
    loss, g = fd.soft_cross_entropy(
        z, t, check=False, return_grad=True, backend=backend
    )
    logp = sp_log_softmax(z, axis=1)
    np.testing.assert_allclose(loss, -(t * logp).sum(), rtol=1e-14)
    np.testing.assert_allclose(g, 2.0 * np.exp(logp) - t, rtol=1e-14)
