"""Accuracy and special values of the vectorised exp/log in numba_math.

Errors are measured in units in the last place (ulp) of the correctly
rounded result, against np.exp/np.log evaluated in a wider type: x86 long
double (64-bit significand) for float64, float64 for float32.
"""

from __future__ import annotations

import numpy as np
import pytest

numba = pytest.importorskip("numba")

from fastdiv.backends.numba_math import (  # noqa: E402
    exp_f32,
    exp_f32_nonpositive,
    exp_f32_of_f64,
    exp_f64,
    exp_f64_nonpositive,
    exp_nonpositive_like,
    log_f32,
    log_f64,
    log_of,
    maxnum,
)

# The measured maxima are 1.07 ulp (exp) and 0.84 ulp (log); the bounds
# leave room for points the random samples did not hit.
MAX_ULP = {"exp": 1.5, "log": 1.2}

WIDE = {np.float64: np.longdouble, np.float32: np.float64}


@numba.njit(parallel=True)
def _map(fn, x, out):
    # Parallel and vectorised: the way the kernels call these functions.
    for i in numba.prange(x.shape[0]):
        out[i] = fn(x[i])


def _apply(fn, x):
    out = np.empty_like(x)
    _map(fn, x, out)
    return out


def _ulp_error(got, x, func, dtype):
    """Largest |got - exact| / ulp(exact) over the finite, nonzero results."""
    wide = WIDE[dtype]
    with np.errstate(all="ignore"):
        exact = func(x.astype(wide))
        rounded = exact.astype(dtype)
    keep = np.isfinite(rounded) & (rounded != 0)
    if not keep.any():
        return 0.0
    ulp = np.spacing(np.abs(rounded[keep])).astype(wide)
    return float(np.max(np.abs(got[keep].astype(wide) - exact[keep]) / ulp))


def _fns(dtype):
    return (exp_f64, log_f64) if dtype is np.float64 else (exp_f32, log_f32)


needs_long_double = pytest.mark.skipif(
    np.finfo(np.longdouble).nmant < 63, reason="long double is not wider here"
)


@pytest.mark.parametrize(
    "dtype", [pytest.param(np.float64, marks=needs_long_double), np.float32]
)
def test_exp_accuracy_over_whole_range(dtype):
    rng = np.random.default_rng(10)
    fexp, _ = _fns(dtype)
    lo, hi = (-745.2, 709.8) if dtype is np.float64 else (-104.0, 88.8)
    x = np.concatenate(
        [
            rng.uniform(lo, hi, 400_000),
            rng.uniform(-1, 1, 100_000) * 10.0 ** rng.integers(-20, 1, 100_000),
            # results in the subnormal range, rounded once
            rng.uniform(lo, lo + 40, 100_000),
        ]
    ).astype(dtype)
    assert _ulp_error(_apply(fexp, x), x, np.exp, dtype) <= MAX_ULP["exp"]


@pytest.mark.parametrize(
    "dtype", [pytest.param(np.float64, marks=needs_long_double), np.float32]
)
def test_log_accuracy_over_whole_range(dtype):
    rng = np.random.default_rng(11)
    _, flog = _fns(dtype)
    # Every positive finite float is reachable: random bit patterns cover
    # all exponents, subnormals included.
    if dtype is np.float64:
        bits = rng.integers(1, 0x7FF0000000000000, 400_000, dtype=np.int64)
    else:
        bits = rng.integers(1, 0x7F800000, 400_000, dtype=np.int32)
    x = np.concatenate(
        [
            bits.view(dtype),
            rng.uniform(0.5, 2.0, 100_000).astype(dtype),
            (1.0 + rng.uniform(-1e-3, 1e-3, 100_000)).astype(dtype),
        ]
    )
    assert _ulp_error(_apply(flog, x), x, np.log, dtype) <= MAX_ULP["log"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exp_special_values(dtype):
    fexp, _ = _fns(dtype)
    fi = np.finfo(dtype)
    x = np.array(
        [
            0.0,
            -0.0,
            np.inf,
            -np.inf,
            np.nan,
            fi.max,
            -fi.max,
            fi.tiny,
            -fi.tiny,
            fi.smallest_subnormal,
        ],
        dtype=dtype,
    )
    got = _apply(fexp, x)
    expected = np.array(
        [1.0, 1.0, np.inf, 0.0, np.nan, np.inf, 0.0, 1.0, 1.0, 1.0], dtype=dtype
    )
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exp_overflow_and_underflow_thresholds(dtype):
    fexp, _ = _fns(dtype)
    # The largest x with a finite exp, and the smallest with a nonzero one,
    # agree with NumPy; one step beyond, inf and 0.
    big = np.log(np.finfo(dtype).max.astype(np.longdouble)).astype(dtype)
    small = np.log(np.finfo(dtype).smallest_subnormal.astype(np.longdouble) / 2).astype(
        dtype
    )
    x = np.array(
        [
            np.nextafter(big, dtype(-np.inf)),
            np.nextafter(big, dtype(np.inf)) + dtype(1e-3),
            np.nextafter(small, dtype(np.inf)) + dtype(1e-3),
            small - dtype(1e-2),
        ],
        dtype=dtype,
    )
    got = _apply(fexp, x)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got, np.exp(x))
    assert np.isfinite(got[0]) and got[1] == np.inf
    assert got[2] > 0 and got[3] == 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exp_subnormal_results_are_rounded_once(dtype):
    fexp, _ = _fns(dtype)
    rng = np.random.default_rng(12)
    lo = -745.0 if dtype is np.float64 else -103.0
    hi = -708.5 if dtype is np.float64 else -87.5
    x = rng.uniform(lo, hi, 20_000).astype(dtype)
    got = _apply(fexp, x)
    exact = np.exp(x.astype(WIDE[dtype]))
    # At most one subnormal ulp away from the exact value.
    step = np.finfo(dtype).smallest_subnormal
    assert np.all(np.abs(got.astype(WIDE[dtype]) - exact) <= step)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log_special_values(dtype):
    _, flog = _fns(dtype)
    fi = np.finfo(dtype)
    x = np.array(
        [0.0, -0.0, np.inf, -np.inf, np.nan, -1.0, -fi.smallest_subnormal, 1.0],
        dtype=dtype,
    )
    got = _apply(flog, x)
    expected = np.array(
        [-np.inf, -np.inf, np.inf, np.nan, np.nan, np.nan, np.nan, 0.0], dtype=dtype
    )
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log_of_subnormals_and_powers_of_two_is_exact(dtype):
    _, flog = _fns(dtype)
    fi = np.finfo(dtype)
    # log(2**e) = e log 2, the reference rounded once; these cover every
    # exponent of the subnormal and normal ranges.
    e = np.arange(np.log2(fi.smallest_subnormal.astype(np.float64)), fi.maxexp).astype(
        int
    )
    x = np.ldexp(np.ones(e.size, dtype), e)
    got = _apply(flog, x)
    expected = (e.astype(WIDE[dtype]) * np.log(WIDE[dtype](2))).astype(dtype)
    assert (
        np.max(
            np.abs(got.astype(np.float64) - expected)
            / np.spacing(np.abs(expected) + fi.tiny)
        )
        <= 1.0
    )
    assert flog(fi.smallest_subnormal) < flog(fi.tiny) < 0


def test_float32_functions_keep_float32():
    x = np.linspace(-5, 5, 9, dtype=np.float32)
    assert _apply(exp_f32, x).dtype == np.float32
    assert _apply(log_f32, np.abs(x) + 1).dtype == np.float32
    # A scalar call returns a Python float holding the float32 value.
    assert exp_f32(np.float32(1.0)) == float(np.float32(np.e))


def test_parallel_loop_matches_serial_calls():
    # The parallel, vectorised loop computes what each scalar call computes.
    rng = np.random.default_rng(13)
    x = rng.uniform(-50, 50, 10_001)
    ex = _apply(exp_f64, x)
    lg = _apply(log_f64, np.abs(x))
    assert all(ex[i] == exp_f64(x[i]) for i in range(0, x.size, 97))
    assert all(lg[i] == log_f64(abs(x[i])) for i in range(0, x.size, 97))
    np.testing.assert_allclose(ex, np.exp(x), rtol=3e-16)
    np.testing.assert_allclose(lg, np.log(np.abs(x)), rtol=3e-16)


@numba.njit
def _max_of(x):
    m = -np.inf
    for v in x:
        m = maxnum(m, v)
    return m


def test_maxnum_ignores_nan():
    assert _max_of(np.array([1.0, np.nan, 3.0, -np.inf])) == 3.0
    assert _max_of(np.array([np.nan, np.nan])) == -np.inf
    assert _max_of(np.array([-np.inf, np.inf, np.nan])) == np.inf


def _exp_mixed_error(x):
    """ulp error of exp_f32_of_f64 on float64 x, against long double exp."""
    got = _apply_mixed(x)
    with np.errstate(all="ignore"):
        exact = np.exp(x.astype(np.longdouble))
        rounded = exact.astype(np.float32)
    keep = np.isfinite(rounded) & (rounded != 0)
    ulp = np.spacing(np.abs(rounded[keep])).astype(np.longdouble)
    return float(np.max(np.abs(got[keep].astype(np.longdouble) - exact[keep]) / ulp))


def _apply_mixed(x):
    out = np.empty(x.shape, np.float32)
    _map(exp_f32_of_f64, x, out)
    return out


@needs_long_double
def test_exp_of_float64_to_float32_keeps_the_argument_accurate():
    # Arguments that are not float32 numbers: rounding them to float32
    # first would cost up to |x| * 2**-24 relative, 5e-6 (80 ulp) at -80.
    rng = np.random.default_rng(13)
    x = np.concatenate(
        [
            rng.uniform(-104.0, 88.7, 400_000),
            rng.uniform(-1, 1, 100_000) * 10.0 ** rng.integers(-20, 1, 100_000),
            rng.uniform(-104.0, -64.0, 100_000),
        ]
    )
    assert _exp_mixed_error(x) <= MAX_ULP["exp"]
    rounded_first = _apply(exp_f32, x.astype(np.float32))
    assert np.max(np.abs(rounded_first / np.exp(x) - 1)[x > -80]) > 1e-6


def test_exp_of_float64_to_float32_special_values():
    x = np.array(
        [0.0, -0.0, np.inf, -np.inf, np.nan, 1e300, -1e300, 88.72, 88.73, -104.0]
    )
    got = _apply_mixed(x)
    with np.errstate(over="ignore"):
        expected = np.exp(x).astype(np.float32)
    np.testing.assert_array_equal(got[:9], expected[:9])
    # exp(-104) = 6.8e-46 rounds to 0 or to the smallest subnormal.
    assert got[9] in (0.0, np.finfo(np.float32).smallest_subnormal)


@numba.njit
def _log_of_each(x):
    out = np.empty(x.shape[0], np.float64)
    for i in range(x.shape[0]):
        out[i] = log_of(x[i])
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log_of_takes_the_log_in_the_entry_dtype(dtype):
    # float64 results either way: log_f32 widened for float32 entries,
    # log_f64 for float64 ones; special values as in log itself.
    fi = np.finfo(dtype)
    x = np.array(
        [0.0, -1.0, np.inf, np.nan, fi.smallest_subnormal, fi.tiny, 0.3, 1.0, 7.5],
        dtype=dtype,
    )
    got = _log_of_each(x)
    assert got.dtype == np.float64
    _, flog = _fns(dtype)
    np.testing.assert_array_equal(got, _apply(flog, x).astype(np.float64))
    # The plain Python body agrees to rounding.
    plain = np.array([log_of(v) for v in x])
    np.testing.assert_allclose(got, plain, rtol=2 * float(fi.eps), atol=0)


@numba.njit
def _exp_nonpositive_of_f64_as_f32(s):
    return exp_nonpositive_like(s, np.empty(0, np.float32))


@numba.njit
def _exp_f32_of_f64_scalar(s):
    return exp_f32_of_f64(s)


@pytest.mark.parametrize(
    "general, special, dtype",
    [
        (exp_f64, exp_f64_nonpositive, np.float64),
        (exp_f32, exp_f32_nonpositive, np.float32),
        (_exp_f32_of_f64_scalar, _exp_nonpositive_of_f64_as_f32, np.float64),
    ],
    ids=["f64", "f32", "f32_of_f64"],
)
def test_nonpositive_exps_have_the_bits_of_the_general_ones(general, special, dtype):
    # The softmax kernels take the exps of shifted logits (never above 0)
    # through the variants with a fixed split of 2**n; same bits everywhere
    # on x <= 0: normal and subnormal results, 0, the clamps, -inf, NaN.
    rng = np.random.default_rng(31)
    lo = -760.0 if dtype is np.float64 else -110.0
    x = np.concatenate(
        [
            rng.uniform(lo, 0.0, 300_000),
            -np.abs(rng.standard_normal(10_000)) * 1e-6,
            [0.0, -0.0, -np.inf, np.nan, lo, -745.13, -708.4, -103.3, -87.3],
        ]
    ).astype(dtype)
    np.testing.assert_array_equal(_apply(special, x), _apply(general, x))
