"""Accuracy of the log inside the dense pairwise JS kernel of Cython.

On a CPU with AVX-512F that is the inline log of fastdiv_log8.h; elsewhere
libm's, and these tests hold for it as well. Errors are measured against
np.log in x86 long double (a 64-bit significand), rounded to float64.
"""

from __future__ import annotations

import numpy as np
import pytest

_pairwise = pytest.importorskip("fastdiv.backends._cython._pairwise")

# Bounds of fastdiv_log8.h (the measured maxima are 1.0 ulp, and 8.9e-18 =
# 1.3 ulp of 0.04 where |log x| <= 0.04).
MAX_ULP = 1.5
NEAR_ONE = 0.04  # |log x| below this: bounded absolutely instead
MAX_ABS_NEAR_ONE = 1.5 * np.spacing(NEAR_ONE)


def _kernel_log(x):
    x = np.ascontiguousarray(x, dtype=np.float64)
    pad = -len(x) % 8
    xp = np.concatenate([x, np.ones(pad)])
    out = np.empty_like(xp)
    _pairwise.kernel_log(xp, out)
    return out[: len(x)]


def _exact(x):
    with np.errstate(all="ignore"):
        return np.log(x.astype(np.longdouble))


def _random_positive(rng, size):
    """Bit patterns spread over every exponent, subnormals included."""
    bits = rng.integers(1, 0x7FF0000000000000, size=size, dtype=np.int64)
    return bits.view(np.float64)


def test_within_an_ulp_away_from_one():
    rng = np.random.default_rng(8)
    x = np.concatenate(
        [
            _random_positive(rng, 400_000),
            rng.uniform(0.0, 2.0, 200_000),  # p + q of the JS terms
            # subnormals: every exponent of the scaling inside getexp/getmant
            rng.integers(1, 2**52, 50_000).view(np.float64),
        ]
    )
    got = _kernel_log(x)
    exact = _exact(x)
    far = np.abs(exact) > NEAR_ONE
    ulp = np.spacing(np.abs(exact[far].astype(np.float64))).astype(np.longdouble)
    err = np.abs(got[far].astype(np.longdouble) - exact[far]) / ulp
    assert err.max() <= MAX_ULP, x[far][np.argmax(err)]


def test_absolute_error_near_one():
    rng = np.random.default_rng(9)
    x = np.concatenate(
        [
            rng.uniform(np.exp(-NEAR_ONE), np.exp(NEAR_ONE), 300_000),
            1.0 + rng.integers(-2000, 2000, 4000) * np.finfo(np.float64).eps,
            # every boundary of the 16 intervals of the table
            np.nextafter(np.linspace(0.75, 1.5, 25), 0.0),
            np.linspace(0.75, 1.5, 25),
        ]
    )
    got = _kernel_log(x)
    err = np.abs(got.astype(np.longdouble) - _exact(x))
    near = np.abs(_exact(x)) <= NEAR_ONE
    assert err[near].max() <= MAX_ABS_NEAR_ONE
    assert got[x == 1.0].tolist() == [0.0] * int((x == 1.0).sum())


def test_special_values():
    tiny = np.float64(5e-324)
    big = np.finfo(np.float64).max
    x = np.array([0.0, -0.0, np.inf, np.nan, -1.0, -np.inf, tiny, big])
    with np.errstate(all="ignore"):
        want = np.log(x)
    got = _kernel_log(x)
    np.testing.assert_array_equal(got[:6], want[:6])  # NaN matches NaN
    np.testing.assert_allclose(got[6:], want[6:], rtol=2.5e-16)


def test_length_must_be_whole_lanes():
    with pytest.raises(ValueError, match="multiple of 8"):
        _pairwise.kernel_log(np.ones(5), np.empty(5))
