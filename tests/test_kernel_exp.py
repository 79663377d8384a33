"""Accuracy of the exp inside the Cython softmax kernels.

On a CPU with AVX-512F that is the inline exp of fastdiv_exp8.h; elsewhere
(and here with it switched off) libmvec's, and these tests hold for both.
Errors are measured against np.exp in x86 long double (a 64-bit
significand).
"""

from __future__ import annotations

import numpy as np
import pytest

_softmax = pytest.importorskip("fastdiv.backends._cython._softmax")

# Bounds: fastdiv_exp8.h, measured maximum 1.07 ulp in double and in float
# over a dense sweep of each range; libmvec's vector exps are documented
# within 4 ulp (measured here: 2.5 in float).
MAX_ULP = {True: 1.5, False: 4.0}


@pytest.fixture(params=[True, False], ids=["exp8", "libmvec"])
def inline_exp(request):
    was = _softmax.use_exp8(request.param)
    yield request.param
    _softmax.use_exp8(was)


def _kernel_exp(x):
    out = np.empty_like(x)
    _softmax.kernel_exp(np.ascontiguousarray(x), out)
    return out


def _exact(x):
    with np.errstate(all="ignore"):
        return np.exp(x.astype(np.longdouble))


def _ulp_error(x, got):
    exact = _exact(x)
    spacing = np.spacing(exact.astype(got.dtype)).astype(np.longdouble)
    return np.abs(got.astype(np.longdouble) - exact) / spacing


@pytest.mark.parametrize(
    "dtype, lo, hi",
    # Results that are normal numbers: exp(x) >= the smallest normal.
    [(np.float64, -708.39, 709.78), (np.float32, -87.33, 88.72)],
)
def test_within_the_bound_where_results_are_normal(inline_exp, dtype, lo, hi):
    rng = np.random.default_rng(21)
    x = np.concatenate(
        [
            rng.uniform(lo, hi, 500_000),
            rng.uniform(-1.0, 1.0, 100_000),
            # round(x / ln 2) changes here: the edges of the reduction
            np.arange(-40, 41) * np.log(2.0) + 1e-7 * rng.standard_normal(81),
            rng.standard_normal(10_000) * 1e-12,
        ]
    ).astype(dtype)
    err = _ulp_error(x, _kernel_exp(x))
    assert err.max() <= MAX_ULP[inline_exp], (x[np.argmax(err)], err.max())


@pytest.mark.parametrize(
    "dtype, lo, hi", [(np.float64, -745.2, -708.4), (np.float32, -103.98, -87.34)]
)
def test_subnormal_results_within_one_spacing(inline_exp, dtype, lo, hi):
    x = np.linspace(lo, hi, 200_001).astype(dtype)
    got = _kernel_exp(x).astype(np.longdouble)
    tiny = np.finfo(dtype).smallest_subnormal
    assert np.abs(got - _exact(x)).max() <= tiny


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_special_values(inline_exp, dtype):
    fi = np.finfo(dtype)
    x = np.array(
        [np.nan, np.inf, -np.inf, 0.0, -0.0, fi.max, -fi.max, 1e4, -1e4], dtype
    )
    got = _kernel_exp(x)
    assert np.isnan(got[0])
    np.testing.assert_array_equal(got[1:], [np.inf, 0, 1, 1, np.inf, 0, np.inf, 0])
    # Every row length reaches the masked tail of the vector loop.
    for n in range(1, 40):
        y = np.linspace(-5, 5, n).astype(dtype)
        np.testing.assert_allclose(
            _kernel_exp(y), np.exp(y), rtol=4 * np.finfo(dtype).eps
        )
