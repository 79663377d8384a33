"""Accuracy of the log inside the dense pairwise JS kernel of Cython.

On a CPU with AVX-512F that is the inline log of fastdiv_log8.h; elsewhere
libm's, and these tests hold for it as well. Errors are measured against
np.log in x86 long double (a 64-bit significand), rounded to float64.
"""

from __future__ import annotations

import numpy as np
import pytest

_pairwise = pytest.importorskip("fastdiv.backends._cython._pairwise")

# Bound of fastdiv_log8.h: 2 ulp everywhere (measured maximum 2.0 ulp, at
# x near 1.03 where log c and r have opposite signs), and no absolute
# allowance near 1, where c = 1 keeps the error relative.
MAX_ULP = 2.0


def _kernel_log(x):
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty_like(x)
    _pairwise.kernel_log(x, out)
    return out


def _ulp_error(x, got):
    exact = _exact(x)
    ulp = np.spacing(np.abs(exact.astype(np.float64))).astype(np.longdouble)
    return np.abs(got.astype(np.longdouble) - exact) / ulp


def _exact(x):
    with np.errstate(all="ignore"):
        return np.log(x.astype(np.longdouble))


def _random_positive(rng, size):
    """Bit patterns spread over every exponent, subnormals included."""
    bits = rng.integers(1, 0x7FF0000000000000, size=size, dtype=np.int64)
    return bits.view(np.float64)


def test_within_two_ulp_over_every_exponent():
    rng = np.random.default_rng(8)
    x = np.concatenate(
        [
            _random_positive(rng, 400_000),
            rng.uniform(0.0, 2.0, 200_000),  # p + q of the JS terms
            # subnormals: every exponent of the scaling inside getexp/getmant
            rng.integers(1, 2**52, 50_000).view(np.float64),
        ]
    )
    err = _ulp_error(x, _kernel_log(x))
    assert err.max() <= MAX_ULP, x[np.argmax(err)]


def test_within_two_ulp_near_one_and_at_the_table_boundaries():
    rng = np.random.default_rng(9)
    eps = np.finfo(np.float64).eps
    cuts = (
        np.concatenate([np.linspace(0.75, 1.0, 9), np.linspace(1.0, 1.5, 9)]) - 1.0 / 64
    )  # m + 1/32 crosses a cut of 1/16 or 1/32 here
    cuts = np.concatenate([cuts, cuts + 1.0 / 32, [31 / 32, 33 / 32]])
    x = np.concatenate(
        [
            rng.uniform(np.exp(-0.04), np.exp(0.04), 300_000),
            1.0 + rng.integers(-2000, 2000, 4000) * eps,
            np.nextafter(cuts, 0.0),
            cuts,
            np.nextafter(cuts, 2.0),
            rng.uniform(0.75, 1.5, 100_000) * 2.0 ** rng.integers(-60, 60, 100_000),
        ]
    )
    x = x[x != 1.0]  # log 1 = 0 has no ulp; checked below
    err = _ulp_error(x, _kernel_log(x))
    assert err.max() <= MAX_ULP, x[np.argmax(err)]
    assert _kernel_log(np.ones(13)).tolist() == [0.0] * 13


def test_every_length_and_tail():
    # the masked tail lanes of a length that is not a multiple of 8
    rng = np.random.default_rng(10)
    for n in range(0, 20):
        x = rng.uniform(0.01, 3.0, n)
        np.testing.assert_allclose(_kernel_log(x), np.log(x), rtol=5e-16)


def test_special_values():
    tiny = np.float64(5e-324)
    big = np.finfo(np.float64).max
    x = np.array([0.0, -0.0, np.inf, np.nan, -1.0, -np.inf, tiny, big])
    with np.errstate(all="ignore"):
        want = np.log(x)
    got = _kernel_log(x)
    np.testing.assert_array_equal(got[:6], want[:6])  # NaN matches NaN
    np.testing.assert_allclose(got[6:], want[6:], rtol=2.5e-16)


def test_lengths_must_match():
    with pytest.raises(ValueError, match="differ in length"):
        _pairwise.kernel_log(np.ones(5), np.empty(6))
