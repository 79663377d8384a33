"""entropy, cross_entropy, kl_div, js_div and js_distance on every backend.

The NumPy reference kernels are the truth: the edge-case generator feeds
each compiled backend and the reference the same inputs, then the results
must agree within the tolerances of conftest.py (or both must raise). Then
come the mathematical properties (hypothesis), thread invariance, agreement
with SciPy where its conventions are ours, and bad input.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.special
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastdiv as fd
from tests.conftest import (
    assert_bit_identical,
    assert_same,
    call_or_error,
)

TOPIC = "divergence"
KERNELS = (
    "entropy_rows",
    "cross_entropy_rows",
    "kl_rows",
    "js_rows",
    "entropy_rows_checked",
    "cross_entropy_rows_checked",
    "kl_rows_checked",
    "js_rows_checked",
    "probability_check_rows",
)

TWO = ("cross_entropy", "kl_div", "js_div", "js_distance")
ALL = ("entropy",) + TWO
DTYPES = (np.float32, np.float64)

# The divergences are sums of terms of both signs that nearly cancel for
# near-identical rows; the absolute error is a few ulp of the terms, not of
# the (tiny) result.
ATOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-14}


def call(name, p, q=None, **kwargs):
    fn = getattr(fd, name)
    return fn(p, **kwargs) if name == "entropy" else fn(p, q, **kwargs)


def normalized(x, axis=-1):
    return x / x.sum(axis=axis, keepdims=True)


# --------------------------------------------------------------------------
# The edge-case generator.
# --------------------------------------------------------------------------
def edge_cases(dtype):
    """(label, p, q, kwargs): hard but valid inputs of ``dtype``."""
    rng = np.random.default_rng(7)
    n, k = 9, 13

    def rows(n=n, k=k):
        return normalized(rng.random((n, k)) + 0.05).astype(dtype)

    p, q = rows(), rows()
    yield "random", p, q, {}
    yield "base 2", p, q, {"base": 2}
    yield "base 10 keepdims", p, q, {"base": 10.0, "keepdims": True}

    pz = p.astype(np.float64)
    pz[:, ::3] = 0.0
    pz = normalized(pz).astype(dtype)
    qz = q.astype(np.float64)
    qz[:, 1::3] = 0.0
    qz = normalized(qz).astype(dtype)
    both = q.astype(np.float64)
    both[:, ::3] = 0.0
    both = normalized(both).astype(dtype)
    yield "zeros in p", pz, q, {}
    yield "zeros in q (KL, CE inf)", p, qz, {}
    yield "zeros in both, same places", pz, both, {}
    yield "zeros in both, other places", pz, qz, {}

    onehot = np.eye(k, dtype=dtype)[rng.integers(0, k, n)]
    yield "one-hot p", onehot, q, {}
    yield "one-hot both", onehot, onehot[::-1].copy(), {}
    yield "one-hot equal", onehot, onehot.copy(), {}

    near = p.astype(np.float64) * (1.0 + 1e-6 * rng.standard_normal((n, k)))
    near = normalized(near).astype(dtype)
    yield "near-identical", p, near, {}
    yield "identical", p, p.copy(), {}

    tiny = np.finfo(dtype).smallest_subnormal
    sub = p.copy()
    sub[:, 0] = tiny * 3
    sub[:, 1] = np.finfo(dtype).tiny / 4
    subq = q.copy()
    subq[:, 2] = tiny
    yield "subnormal entries", sub, subq, {}
    yield "subnormal q under normal p", p, subq, {}

    one = q[0]
    yield "batch against one row", p, one, {}
    yield "one row against a batch", one, p, {}
    yield "(n, 1, k) against (m, k)", p[:, None, :], q[:4], {}
    yield "single row 1-d", p[0], q[0], {}

    big = rows(2 * n, 2 * k)
    yield "strided views", big[::2, ::2], big[1::2, 1::2], {"normalize": True}
    yield "transposed, axis 0", p.T, q.T, {"axis": 0}
    yield "Fortran order", np.asfortranarray(p), np.asfortranarray(q), {}
    p3 = normalized(rng.random((3, k, 4)), axis=1).astype(dtype)
    q3 = normalized(rng.random((3, k, 4)), axis=1).astype(dtype)
    yield "3-d, axis 1", p3, q3, {"axis": 1}
    yield "3-d, axis 1, out of order", p3, q3[:, :, ::-1], {"axis": 1}
    yield (
        "axis None",
        (p / n).astype(dtype),
        (q / n).astype(dtype),
        {
            "axis": None,
            "normalize": True,
        },
    )
    yield (
        "normalize counts",
        (p * 37).astype(dtype),
        (q * 3).astype(dtype),
        {"normalize": True},
    )
    yield "non-native byte order", p.astype(p.dtype.newbyteorder()), q, {}
    yield "long rows (chunks)", rows(3, 1500), rows(3, 1500), {}
    yield "single column", np.ones((4, 1), dtype), np.ones((4, 1), dtype), {}
    yield "empty rows", np.zeros((4, 0), dtype), np.zeros((4, 0), dtype), {}
    yield "no rows", np.zeros((0, 5), dtype), np.zeros((0, 5), dtype), {}
    nan = p.copy()
    nan[2, 3] = np.nan
    yield "NaN, check=False", nan, q, {"check": False}


def _edge_ids():
    return [label for label, *_ in edge_cases(np.float64)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", _edge_ids())
@pytest.mark.parametrize("name", ALL)
def test_edge_cases_match_reference(name, case, dtype, backend):
    label, p, q, kwargs = next(c for c in edge_cases(dtype) if c[0] == case)
    p0, q0 = p.copy(), q.copy()
    want, want_err = call_or_error(call, name, p, q, backend="numpy", **kwargs)
    got, got_err = call_or_error(call, name, p, q, backend=backend, **kwargs)
    assert (want_err is None) == (got_err is None), (want_err, got_err)
    if want_err is not None:
        assert type(want_err) is type(got_err)
        return
    atol = ATOL[np.asarray(want).dtype]
    if name == "js_distance":
        # sqrt magnifies the rounding of a divergence near 0 (1e-17 becomes
        # 3e-9): compare the divergences, then only the shape and dtype.
        assert_same(got**2, want**2, atol=atol, what=f"{name}^2 {label}")
    assert_same(
        got,
        want,
        rtol=0.1 if name == "js_distance" else None,
        atol=atol,
        what=f"{name} {label} on {backend}",
    )
    # Inputs are never modified.
    np.testing.assert_array_equal(p, p0)
    np.testing.assert_array_equal(q, q0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_values_by_hand(dtype):
    # Small values worked out with the formulas of DESIGN.md.
    p = np.array([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5]], dtype)
    q = np.array([[0.25, 0.25, 0.5], [0.25, 0.25, 0.5]], dtype)
    h = [math.log(2), 1.5 * math.log(2)]
    kl = [math.log(2), 0.0]
    js0 = 0.5 * (0.5 * math.log(4 / 3) * 2) + 0.5 * (
        0.25 * math.log(2 / 3) * 2 + 0.5 * math.log(2)
    )
    for backend in ("numpy",):
        assert_same(fd.entropy(p, backend=backend), np.array(h, dtype))
        assert_same(fd.kl_div(p, q, backend=backend), np.array(kl, dtype))
        assert_same(
            fd.cross_entropy(p, q, backend=backend),
            np.array([h[0] + kl[0], h[1]], dtype),
        )
        assert_same(fd.js_div(p, q, backend=backend), np.array([js0, 0.0], dtype))


# --------------------------------------------------------------------------
# Conventions that every backend must follow exactly.
# --------------------------------------------------------------------------
def test_zero_conventions(backend):
    p = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    q = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    assert_same(fd.kl_div(p, q, backend=backend), np.array([0.0, np.inf, np.inf]))
    assert_same(
        fd.cross_entropy(p, q, backend=backend), np.array([0.0, np.inf, np.inf])
    )
    assert_same(
        fd.js_div(p, q, backend=backend),
        np.array(
            [
                0.0,
                math.log(2),
                0.5 * (0.5 * math.log(2 / 3) + math.log(4 / 3) + 0.5 * math.log(2)),
            ]
        ),
    )
    assert_same(fd.entropy(p, backend=backend), np.array([0.0, 0.0, math.log(2)]))


def test_empty_rows_give_zero(backend):
    for name in ALL:
        got = call(name, np.zeros((3, 0)), np.zeros((3, 0)), backend=backend)
        assert_same(got, np.zeros(3), rtol=0, atol=0, what=name)
        assert not np.signbit(got).any(), name


def test_js_of_identical_rows_is_exactly_zero(backend, rng):
    for dtype in DTYPES:
        p = normalized(rng.random((50, 77))).astype(dtype)
        p[:, ::4] = 0.0
        p = normalized(p.astype(np.float64)).astype(dtype)
        got = fd.js_div(p, p.copy(), backend=backend, check=False)
        assert (got == 0).all() and not np.signbit(got).any()
        assert (fd.js_distance(p, p, backend=backend, check=False) == 0).all()


def test_js_distance_of_almost_identical_rows_is_not_nan(backend):
    # scipy/scipy#20083: the divergence rounds below 0 and sqrt gives NaN.
    p = np.array([0.49999999999999994, 0.5])
    got = fd.js_distance(p, p[::-1], backend=backend)
    assert 0.0 <= got < 1e-7


def _js_mpmath(p, q):
    """JS(p, q) of float64 rows from their exact values, to 40 digits."""
    import mpmath

    with mpmath.workdps(40):
        total = mpmath.mpf(0)
        for a, b in zip(p.tolist(), q.tolist(), strict=True):
            a, b = mpmath.mpf(a), mpmath.mpf(b)
            m = (a + b) / 2
            total += (a * mpmath.log(a / m) if a else 0) + (
                b * mpmath.log(b / m) if b else 0
            )
        return float(total / 2)


@pytest.mark.parametrize("gap", [1e-2, 1e-4, 1e-6, 1e-8, 1e-11])
def test_js_of_near_identical_rows_keeps_its_digits(backend, gap):
    # JS ~ gap^2: the two logs of each term are +-d and cancel to d^2, which
    # left eps / d^2 of relative error (1e-4 at d = 1e-6, all of it at 1e-8)
    # before the terms with |d| <= 1/16 came from their series.
    rng = np.random.default_rng(31)
    p = normalized(rng.uniform(0.1, 1.0, 50))
    q = p * (1.0 + gap * rng.standard_normal(50))
    q[:5] = rng.uniform(0.0, 0.1, 5)  # a few entries far apart as well
    q = normalized(q)
    want = _js_mpmath(p, q)
    got = fd.js_div(p, q, backend=backend)
    assert_same(got, np.float64(want), rtol=1e-12, atol=0)
    near = normalized(p * (1.0 + gap * rng.standard_normal(50)))
    want = _js_mpmath(p, near)
    assert_same(
        fd.js_div(p, near, backend=backend), np.float64(want), rtol=1e-12, atol=0
    )


def test_kl_where_the_ratio_overflows(backend):
    # scipy/scipy#20710: p / q overflows for a subnormal q, the term does
    # not: 1 * log(1 / 5e-324) = 744.44007192138126 (mpmath).
    got = fd.kl_div(np.array([1.0, 0.0]), np.array([5e-324, 1.0]), backend=backend)
    assert_same(got, np.float64(744.4400719213812), rtol=1e-14)


def test_nan_propagates_with_check_false(backend):
    p = np.array([[0.5, np.nan, 0.5], [0.5, 0.25, 0.25]])
    for name in ALL:
        got = call(name, p, p[:, ::-1].copy(), check=False, backend=backend)
        assert np.isnan(got[0]) and np.isfinite(got[1]), name
        got = call(name, p[::-1].copy(), p, check=False, backend=backend)
        assert np.isnan(got[1]), name


def test_broadcast_row_is_not_copied(backend, rng, monkeypatch):
    # The single row reaches the kernel as one (1, k) row.
    import fastdiv.divergence as mod

    seen = []
    real = mod.kernel_for

    def spy(topic, kernel, size, backend=None):
        fn = real(topic, kernel, size, backend)

        def run(*args):
            seen.append((kernel, [a.shape for a in args[:2]]))
            return fn(*args)

        return run

    monkeypatch.setattr(mod, "kernel_for", spy)
    p = normalized(rng.random((40, 6)))
    fd.kl_div(p, p[3], backend=backend)
    # Checked in the kernel's own pass, the single row once.
    assert seen == [("kl_rows_checked", [(40, 6), (1, 6)])]
    seen.clear()
    fd.kl_div(p, p[3], check=False, backend=backend)
    assert seen == [("kl_rows", [(40, 6), (1, 6)])]


# --------------------------------------------------------------------------
# Properties.
# --------------------------------------------------------------------------
def distributions(k_max=12):
    """Pairs of valid float64 distributions of one length, with zeros."""

    def build(k):
        weights = hnp.arrays(
            np.float64,
            k,
            elements=st.one_of(
                st.just(0.0), st.floats(1e-300, 1.0), st.floats(1e-12, 1e-6)
            ),
        ).filter(lambda w: w.sum() > 0)
        return st.tuples(weights, weights).map(
            lambda pq: (normalized(pq[0]), normalized(pq[1]))
        )

    return st.integers(1, k_max).flatmap(build)


@given(pq=distributions())
def test_properties(backend, pq):
    p, q = pq
    kl = fd.kl_div(p, q, backend=backend)
    # Gibbs' inequality holds for rows that sum to exactly 1; these sum to 1
    # only after rounding, and the exact KL of such floats can lie a few
    # ulps below 0 (p = q but for one ulp in one entry). KL is not clamped.
    assert kl >= -len(p) * np.finfo(np.float64).eps
    assert fd.kl_div(p, p, backend=backend) == 0.0 or np.isclose(
        fd.kl_div(p, p, backend=backend), 0.0, atol=1e-15
    )
    js = fd.js_div(p, q, backend=backend)
    assert 0.0 <= js <= math.log(2) * (1 + 1e-12)
    assert_same(fd.js_div(q, p, backend=backend), js, atol=1e-15)
    assert fd.js_div(p, p, backend=backend) == 0.0
    h_pq = fd.cross_entropy(p, q, backend=backend)
    h_p = fd.entropy(p, backend=backend)
    if np.isfinite(kl):
        assert_same(h_pq, h_p + kl, rtol=1e-12, atol=1e-13)
    else:
        assert h_pq == np.inf
    support = p > 0
    if not np.array_equal(p[support], q[support]) and np.isfinite(kl):
        # KL is 0 only where q equals p on p's support up to rounding: a q
        # of [1, 1e-300] against p = [1, 0] has KL 0 exactly in float64, and
        # so have rows that differ by 1e-38 in one entry. By Pinsker's
        # inequality KL >= 2 TV^2 (TV the total variation distance), so a 0
        # needs rows whose 2 TV^2 lies within the rounding of the sum.
        tv = 0.5 * np.abs(p - q).sum()
        assert kl != 0.0 or 2 * tv**2 <= len(p) * np.finfo(np.float64).eps


@given(pq=distributions())
def test_properties_float32(backend, pq):
    p, q = (normalized(x.astype(np.float32)) for x in pq)
    js = fd.js_div(p, q, backend=backend, check=False)
    assert js.dtype == np.float32
    assert 0.0 <= js <= np.float32(math.log(2)) * (1 + 1e-6)
    assert fd.js_div(p, p, backend=backend, check=False) == 0.0
    # As in float64, a few ulps below 0 (of float32 inputs) is exact.
    kl = fd.kl_div(p, q, backend=backend, check=False)
    assert kl >= -len(p) * np.finfo(np.float32).eps


# --------------------------------------------------------------------------
# Thread count invariance.
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL)
def test_one_and_two_threads_bit_identical(name, dtype, compiled_backend, rng):
    p = normalized(rng.random((301, 1030))).astype(dtype)
    q = normalized(rng.random((301, 1030))).astype(dtype)
    with fd.options(threads=1):
        one = call(name, p, q, backend=compiled_backend, check=False)
    with fd.options(threads=2):
        two = call(name, p, q, backend=compiled_backend, check=False)
    assert_bit_identical(two, one, what=name)


# --------------------------------------------------------------------------
# Agreement with SciPy where its conventions are ours (valid, normalised
# rows: SciPy renormalises silently, so only those are comparable).
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_agrees_with_scipy(backend, rng, dtype):
    p = rng.random((20, 30))
    p[:, ::4] = 0.0
    p = normalized(p).astype(dtype)
    q = normalized(rng.random((20, 30))).astype(dtype)
    tol = dict(rtol=1e-5 if dtype == np.float32 else 1e-12)
    got = fd.entropy(p, backend=backend)
    assert_same(got, scipy.stats.entropy(p, axis=1).astype(dtype), **tol)
    got = fd.kl_div(p, q, backend=backend, base=2)
    assert_same(got, scipy.stats.entropy(p, q, axis=1, base=2).astype(dtype), **tol)
    rel = scipy.special.rel_entr(p.astype(np.float64), q).sum(axis=1)
    assert_same(fd.kl_div(p, q, backend=backend), rel.astype(dtype), **tol)
    want = scipy.spatial.distance.jensenshannon(
        p.astype(np.float64), q.astype(np.float64), axis=1, base=2
    )
    assert_same(
        fd.js_distance(p, q, backend=backend, base=2), want.astype(dtype), **tol
    )


# --------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------
def test_rejects_rows_not_summing_to_one(backend):
    p = np.full((4, 3), 1 / 3)
    q = p.copy()
    q[2] = [0.5, 0.3, 0.3]
    with pytest.raises(ValueError, match=r"q row 2 sums to 1\.1"):
        fd.kl_div(p, q, backend=backend)
    p3 = np.full((2, 3, 4), 0.25)
    p3[1, 2, 0] = 0.5
    with pytest.raises(ValueError, match=r"p row \(1, 2\) sums to 1\.25"):
        fd.entropy(p3, backend=backend)


@pytest.mark.parametrize(
    "bad, what",
    [(-0.1, "negative"), (np.nan, "non-finite"), (np.inf, "non-finite")],
)
def test_rejects_negative_and_non_finite(backend, bad, what):
    p = np.full((3, 2), 0.5)
    p[1, 1] = bad
    for name in ALL:
        with pytest.raises(ValueError, match=f"p row 1 has a {what} entry"):
            call(name, p, np.full(2, 0.5), backend=backend)
        if name != "entropy":
            with pytest.raises(ValueError, match=f"q row 1 has a {what} entry"):
                call(name, np.full(2, 0.5), p, backend=backend)


@pytest.mark.parametrize("name", TWO)
def test_checks_in_the_kernel_pass_name_the_argument_and_row(backend, name):
    # The checks run inside the divergence kernel; each input is judged on
    # its own rows and dtype, p before q, as when they ran apart.
    rng = np.random.default_rng(5)
    p = normalized(rng.random((30, 8)))
    q = normalized(rng.random((30, 8)))
    # float32 rows rounded once: within float32's tolerance, not float64's,
    # although the work is float64 because of q.
    p32 = (p * (1 + 3e-8 * rng.standard_normal(p.shape))).astype(np.float32)
    call(name, p32, q, backend=backend)
    bad_p, bad_q = p.copy(), q.copy()
    bad_p[17, 2] = -1e-3
    bad_q[4] *= 1.01
    with pytest.raises(ValueError, match=r"^p row 17 has a negative entry"):
        call(name, bad_p, bad_q, backend=backend)
    with pytest.raises(ValueError, match=r"^q row 4 sums to 1\.01"):
        call(name, p, bad_q, backend=backend)
    with pytest.raises(ValueError, match=r"^q row 0 sums to 1\.01"):
        call(name, p, bad_q[4], backend=backend)  # one row against all of p
    with pytest.raises(ValueError, match=r"^p row \(1, 2\) has a non-finite"):
        nan_p = p.reshape(3, 10, 8).copy()
        nan_p[1, 2, 5] = np.nan
        call(name, nan_p, q.reshape(3, 10, 8), backend=backend)


@pytest.mark.parametrize("name", TWO)
@pytest.mark.parametrize("k", [5, 100, 1300])  # 1300: several chunks of a row
def test_float32_checks_in_the_term_loop(backend, name, k):
    # Two float32 batches: the compiled kernels gather the row sums and
    # negative counts in the loop of the divergence terms. The results equal
    # those of check=False bit for bit, and bad rows of either input are
    # reported by argument and row.
    rng = np.random.default_rng(k)
    p = normalized(rng.random((40, k))).astype(np.float32)
    q = normalized(rng.random((40, k))).astype(np.float32)
    p[3, : k // 2] = 0.0
    p[3] /= p[3].sum(dtype=np.float64)
    q[6, -1] = 0.0
    q[6] /= q[6].sum(dtype=np.float64)
    checked = call(name, p, q, backend=backend)
    unchecked = call(name, p, q, backend=backend, check=False)
    np.testing.assert_array_equal(checked, unchecked)
    assert_same(checked, call(name, p, q, backend="numpy"))
    cases = [
        ("p", 21, -1e-3, r"^p row 21 has a negative entry"),
        ("q", 8, np.nan, r"^q row 8 has a non-finite entry"),
        ("q", 30, "scale", r"^q row 30 sums to 1\.0(1|099)"),
    ]
    for which, row, value, message in cases:
        bad_p, bad_q = p.copy(), q.copy()
        target = bad_p if which == "p" else bad_q
        if value == "scale":
            target[row] *= np.float32(1.01)
        else:
            target[row, k - 1] = value
        with pytest.raises(ValueError, match=message):
            call(name, bad_p, bad_q, backend=backend)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL)
def test_every_row_length_of_the_vector_term_loops(backend, name, dtype):
    # The compiled term loops take 8 (or 16) entries at a time with masked
    # or scalar tails, and chunks of 512: every length up to 20, around a
    # chunk, and zeros where a lane or a tail begins, agree with the
    # reference entry for entry.
    rng = np.random.default_rng(20)
    for k in [*range(1, 21), 511, 512, 513, 1031]:
        p = normalized(rng.random((6, k)))
        q = normalized(rng.random((6, k)))
        if k > 1:  # a row of one entry cannot hold a zero
            p[1, ::8] = 0.0
            q[2, k - 1] = 0.0
            p[3, k - 1] = q[3, k - 1] = 0.0
        q[4] = p[4] * (1.0 + 1e-7 * rng.standard_normal(k))  # near-identical
        p, q = normalized(p).astype(dtype), normalized(q).astype(dtype)
        want = call(name, p, q, backend="numpy", check=False)
        got = call(name, p, q, backend=backend, check=False)
        assert_same(got, want, what=f"{name}, rows of {k} {np.dtype(dtype)}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_js_where_one_weight_is_below_2_to_the_minus_54_of_the_other(backend, dtype):
    # There (p - q) / (p + q) rounds to +-1 and 1 -+ d to 0 although 2q / s
    # is not 0: the two-log form gave -inf, clamped to a JS of 0 (as for a
    # softmax of logits 40 apart against a uniform row).
    tiny = 1e-17 if dtype == np.float64 else 1e-30
    rows = [
        ([tiny, 1.0], [0.5, 0.5]),
        ([0.5, 0.5], [tiny, 1.0]),
        ([1.0 - 1e-3, 1e-3], [tiny, 1.0]),
        ([tiny, 0.25, 0.75 - tiny], [0.5, 0.0, 0.5]),
    ]
    for p, q in rows:
        p = np.array(p, dtype)
        q = np.array(q, dtype)
        want = _js_mpmath(p, q)
        got = fd.js_div(p, q, backend=backend, check=False)
        assert got == pytest.approx(want, rel=1e-6 if dtype == np.float32 else 1e-14)
    logits = np.random.default_rng(12).standard_normal((50, 300)) * 12
    a = fd.softmax(logits).astype(dtype)
    b = fd.softmax(logits[::-1]).astype(dtype)
    want = [_js_mpmath(x, y) for x, y in zip(a, b, strict=True)]
    got = fd.js_div(a, b, backend=backend, normalize=True)
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("name", ALL)
def test_fallback_loops_match_the_reference(name, log8_off):
    # On a CPU with AVX-512F the Cython term sums take the vector loops of
    # fastdiv_log8.h; the loops that other CPUs run get the same tests here.
    log8_off("_divergence")
    for dtype in DTYPES:
        for case in _edge_ids():
            test_edge_cases_match_reference(name, case, dtype, "cython")
        test_every_row_length_of_the_vector_term_loops("cython", name, dtype)
        if name == "js_div":
            test_js_where_one_weight_is_below_2_to_the_minus_54_of_the_other(
                "cython", dtype
            )
    if name in TWO:
        for k in (5, 100, 1300):
            test_float32_checks_in_the_term_loop("cython", name, k)


def test_kl_of_nearly_equal_rows_is_never_negative(backend):
    # Rounding leaves some of these sums a few ulp below 0; checked (or
    # normalised) distributions get 0 there, unchecked input keeps its sign.
    rng = np.random.default_rng(11)
    p = normalized(rng.random((2000, 50)))
    q = normalized(p * (1 + 1e-9 * rng.standard_normal(p.shape)))
    raw = fd.kl_div(p, q, check=False, backend=backend)
    assert raw.min() < 0  # the case this test is about
    checked = fd.kl_div(p, q, backend=backend)
    assert checked.min() >= 0
    np.testing.assert_array_equal(checked, np.maximum(raw, 0.0))
    assert fd.kl_div(p, q, normalize=True, backend=backend).min() >= 0


def test_normalize_of_a_zero_row_is_an_error():
    with pytest.raises(ValueError, match="p row 1 sums to 0"):
        fd.entropy(np.array([[1.0, 1.0], [0.0, 0.0]]), normalize=True)


def test_shapes_that_do_not_broadcast():
    with pytest.raises(ValueError, match=r"p of shape \(3, 4\) and q of shape"):
        fd.kl_div(np.full((3, 4), 0.25), np.full((2, 4), 0.25))


def test_complex_and_object_input():
    with pytest.raises(TypeError, match="q must hold real numbers"):
        fd.js_div(np.full(2, 0.5), np.full(2, 0.5 + 0j))
    with pytest.raises(TypeError, match="p must hold real numbers"):
        fd.entropy(np.array(["a", "b"]))


@pytest.mark.parametrize("base", [0, -2.0, 1, 1.0, np.inf, np.nan])
def test_bad_base(base):
    with pytest.raises(ValueError, match="base must be"):
        fd.entropy(np.full(2, 0.5), base=base)
    with pytest.raises(TypeError, match="base must be a real number"):
        fd.entropy(np.full(2, 0.5), base="2")


def test_js_distance_needs_base_above_one():
    assert fd.js_div(np.array([1.0, 0.0]), np.array([0.0, 1.0]), base=0.5) < 0
    with pytest.raises(ValueError, match="base must be > 1 for js_distance"):
        fd.js_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0]), base=0.5)


def test_out_argument(rng):
    p = normalized(rng.random((5, 4)))
    out = np.full(5, -1.0)
    res = fd.kl_div(p, p[0], out=out)
    assert res is out
    assert_same(out, fd.kl_div(p, p[0]))
    bad = np.full(5, -1.0, np.float32)
    with pytest.raises(ValueError, match="dtype"):
        fd.kl_div(p, p[0], out=bad)
    with pytest.raises(ValueError, match="shape"):
        fd.kl_div(p, p[0], out=np.empty(4))
    # On an error nothing has been written to out.
    bad_p = p.copy()
    bad_p[3, 0] = -1.0
    with pytest.raises(ValueError):
        fd.kl_div(bad_p, p[0], out=out)
    assert_same(out, fd.kl_div(p, p[0]))


def test_dtypes_and_shapes():
    p32 = np.full((2, 4), 0.25, np.float32)
    p64 = np.full(4, 0.25)
    assert fd.entropy(p32).dtype == np.float32
    assert fd.kl_div(p32, p64).dtype == np.float64
    assert fd.kl_div(p32, p32.astype(np.float16)).dtype == np.float32
    assert fd.entropy(np.array([1, 0])).dtype == np.float64
    assert isinstance(fd.entropy(p64), np.float64)
    assert fd.entropy(p32, keepdims=True).shape == (2, 1)
    assert fd.entropy(p32, axis=None, normalize=True, keepdims=True).shape == (1, 1)
    assert_same(fd.entropy(p32, axis=None, normalize=True), np.float32(math.log(8)))
