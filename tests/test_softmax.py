"""softmax, log_softmax and logsumexp on every backend.

Every compiled backend is compared with the NumPy reference on an edge-case
generator; the reference itself is checked against SciPy on random input
and against mpmath on a few rows; hypothesis checks the mathematical
properties on every backend.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.special
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastdiv as fd
from tests.conftest import assert_bit_identical, assert_same, call_or_error

TOPIC = "softmax"
KERNELS = (
    "softmax_rows",
    "log_softmax_rows",
    "logsumexp_rows",
    "logsumexp_weighted_rows",
)

F32_MAX = float(np.finfo(np.float32).max)
F32_TINY = float(np.finfo(np.float32).tiny)  # 1.1754944e-38
INF, NAN = np.inf, np.nan


# --------------------------------------------------------------------------
# The edge-case generator.
# --------------------------------------------------------------------------
def edge_cases():
    """Yield (description, x, temperature, axis) for hard inputs.

    x is whatever a user may pass: any dtype the API accepts, any layout,
    views and non-native byte order.
    """
    rng = np.random.default_rng(7)
    base = rng.standard_normal((5, 7)) * 4.0

    special_rows = {
        "one-hot": [0.0, 0.0, 1.0, 0.0],
        "constant": [3.0, 3.0, 3.0, 3.0],
        "-inf entries": [-INF, 1.0, 2.0, -INF],
        "single +inf": [1.0, INF, -2.0, 0.5],
        "+inf with -inf": [-INF, INF, -INF, 0.0],
        "two +inf": [INF, 0.0, INF, 1.0],
        "all -inf": [-INF, -INF, -INF, -INF],
        "NaN": [1.0, NAN, 2.0, 3.0],
        "NaN with +inf": [NAN, INF, 0.0, 1.0],
        "NaN with all -inf": [-INF, NAN, -INF, -INF],
        "huge 1e30": [1e30, -1e30, 1e30 - 1e15, 0.0],
        "huge 1e300": [1e300, 1e300, -1e300, 0.0],
        "near max": [1.7e308, -1.7e308, 1.6e308, 1.7e308],
        "float32 max": [F32_MAX, F32_MAX, -F32_MAX, 0.0],
        "tiny differences": [1.0, 1.0 + 1e-15, 1.0 - 1e-15, 1.0],
        "large spread": [0.0, -40.0, -745.0, -1e5],
    }
    temperatures = (1.0, 1e-300, 1e-30, 0.37, 2.5, 1e30, 1e300, F32_TINY)
    for name, row in special_rows.items():
        x = np.array([row, base[0, :4], row[::-1]])
        for t in temperatures:
            yield f"{name}, T={t:g}", x, t, -1
        with np.errstate(over="ignore"):  # 1e300 becomes inf in float32
            x32 = x.astype(np.float32)
        yield f"{name} float32", x32, 1.0, -1
        yield f"{name} float32 T=f32 tiny", x32, F32_TINY, -1
        yield f"{name} float32 T=3e38", x32, 3e38, -1

    # Shapes: empty, single column, 1-D, 3-D on every axis.
    yield "empty (0, 4)", np.zeros((0, 4)), 1.0, -1
    yield "empty (3, 0)", np.zeros((3, 0)), 1.0, -1
    yield "empty (3, 0) axis 0", np.zeros((3, 0)), 1.0, 0
    yield "empty (0, 0)", np.zeros((0, 0)), 1.0, -1
    yield "single column", base[:, :1].copy(), 1.0, -1
    yield "single column -inf", np.array([[-INF], [0.0], [INF], [NAN]]), 1.0, -1
    yield "single row", base[:1], 0.5, -1
    yield "1-D", base[0], 1.0, -1
    yield "1-D length 1", np.array([5.0]), 1.0, 0
    yield "1-D empty", np.zeros(0), 1.0, -1
    yield "0-d scalar", np.array(2.0), 1.0, -1
    yield "axis None", base, 1.3, None
    cube = rng.standard_normal((3, 4, 5)) * 2.0
    for ax in (0, 1, 2, -1, -2, -3):
        yield f"3-D axis {ax}", cube, 0.8, ax
    yield "2-D axis 0", base, 2.0, 0

    # Layouts and views.
    big = rng.standard_normal((12, 16)) * 3.0
    yield "strided view", big[::3, ::2], 1.0, -1
    yield "strided view axis 0", big[1::4, ::3], 1.0, 0
    yield "negative strides", big[::-2, ::-1], 1.0, -1
    yield "transpose", big.T, 1.0, -1
    yield "transpose axis 0", big.T, 1.0, 0
    yield "Fortran order", np.asfortranarray(big), 0.7, -1
    yield "Fortran order axis 0", np.asfortranarray(big), 0.7, 0
    yield "Fortran float32", np.asfortranarray(big, dtype=np.float32), 1.0, -1
    yield "big-endian >f8", big.astype(">f8"), 1.0, -1
    yield "big-endian >f4", big.astype(">f4"), 1.0, -1
    yield "big-endian >f8 with inf", np.array([[1.0, INF]], dtype=">f8"), 1.0, -1

    # Dtypes that are converted.
    ints = rng.integers(-50, 50, size=(4, 6))
    yield "int64", ints, 1.0, -1
    yield "int8", ints.astype(np.int8), 3.0, -1
    yield "uint64 large", np.array([[2**63, 2**63 + 2**40, 0]], np.uint64), 1e10, -1
    yield "bool", ints > 0, 1.0, -1
    yield "float16", big.astype(np.float16), 1.0, -1
    yield "float16 inf", np.array([[1.0, np.inf, 0.0]], np.float16), 1.0, -1
    yield "float16 max", np.array([[65504.0, -65504.0, 1.0]], np.float16), 1.0, -1
    yield "list input", [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], 1.0, -1

    # Random rows of float32 and float64 at assorted temperatures.
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal((9, 33)) * 5.0).astype(dtype)
        for t in (1e-3, 1.0, 1e3):
            yield f"random {np.dtype(dtype)} T={t:g}", x, t, -1


EDGE_CASES = list(edge_cases())
EDGE_IDS = [c[0] for c in EDGE_CASES]


def _weights(x, axis, rng):
    """Weights for ``b=``: both signs and zeros, broadcastable to x."""
    shape = np.shape(x)
    b = rng.standard_normal(shape)
    if b.size:
        b.reshape(-1)[::3] = 0.0
    return b


def _variants(x, axis):
    """(label, function, extra kwargs) to run for one edge case."""
    rng = np.random.default_rng(3)
    yield "softmax", fd.softmax, {}
    yield "log_softmax", fd.log_softmax, {}
    yield "logsumexp", fd.logsumexp, {}
    yield "logsumexp keepdims", fd.logsumexp, {"keepdims": True}
    yield "logsumexp return_sign", fd.logsumexp, {"return_sign": True}
    if np.ndim(x) > 0:
        b = _weights(x, axis, rng)
        yield "logsumexp b", fd.logsumexp, {"b": b}
        yield "logsumexp b return_sign", fd.logsumexp, {"b": b, "return_sign": True}
        yield "logsumexp b keepdims", fd.logsumexp, {"b": np.abs(b), "keepdims": True}
        if np.ndim(x) >= 1 and axis is not None:
            # A weight vector broadcast along the reduced axis only.
            k = np.shape(x)[axis]
            shape = [1] * np.ndim(x)
            shape[axis] = k
            bb = np.linspace(-1.0, 2.0, k).reshape(shape)
            yield "logsumexp broadcast b", fd.logsumexp, {"b": bb, "return_sign": True}


@pytest.mark.parametrize("case", EDGE_CASES, ids=EDGE_IDS)
def test_edge_cases_match_reference(case, backend):
    desc, x, temperature, axis = case
    before = np.array(x, copy=True)
    for label, fn, extra in _variants(x, axis):
        kwargs = dict(temperature=temperature, axis=axis, **extra)
        got, err = call_or_error(fn, x, backend=backend, **kwargs)
        want, want_err = call_or_error(fn, x, backend="numpy", **kwargs)
        what = f"{label} of {desc} on {backend}"
        assert (err is None) == (want_err is None), (
            f"{what}: one raised and the other did not: {err!r} vs {want_err!r}"
        )
        if err is not None:
            assert type(err) is type(want_err), what
            continue
        assert_same(got, want, what=what)
        # The input is never modified, whatever the backend.
        np.testing.assert_array_equal(np.asarray(x), before, err_msg=what)


@pytest.mark.parametrize("case", EDGE_CASES, ids=EDGE_IDS)
def test_edge_cases_emit_no_warning(case, backend):
    # Overflow to inf and 0 * inf are expected inside these functions: they
    # are silenced where they happen, never passed on to the caller.
    desc, x, temperature, axis = case
    for label, fn, extra in _variants(x, axis):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _, err = call_or_error(fn, x, temperature, axis, backend=backend, **extra)
        assert not isinstance(err, Warning), f"{label} of {desc}: {err!r}"


@pytest.mark.parametrize("case", EDGE_CASES, ids=EDGE_IDS)
def test_edge_case_output_dtype(case):
    # Checked once on the reference; the backends must match it (above).
    desc, x, temperature, axis = case
    given = np.asarray(x).dtype
    small = given.kind == "f" and given.itemsize <= 4
    want = np.dtype(np.float32) if small else np.dtype(np.float64)
    assert fd.softmax(x, temperature, axis, backend="numpy").dtype == want
    assert np.asarray(fd.logsumexp(x, temperature, axis, backend="numpy")).dtype == want


# --------------------------------------------------------------------------
# Conventions of DESIGN.md, pinned on the reference and on every backend.
# --------------------------------------------------------------------------
def test_infinities_and_nan_rows(backend):
    x = np.array(
        [
            [1.0, INF, 0.0],  # one +inf: one-hot limit
            [INF, INF, 0.0],  # two +inf: NaN row
            [-INF, -INF, -INF],  # all -inf: NaN softmax, -inf logsumexp
            [1.0, NAN, 2.0],  # NaN: NaN row
            [-INF, 0.0, -INF],  # masked classes: probability 0
        ]
    )
    p = fd.softmax(x, backend=backend)
    np.testing.assert_array_equal(p[0], [0.0, 1.0, 0.0])
    assert np.isnan(p[1:4]).all()
    np.testing.assert_array_equal(p[4], [0.0, 1.0, 0.0])
    lp = fd.log_softmax(x, backend=backend)
    np.testing.assert_array_equal(lp[0], [-INF, 0.0, -INF])
    np.testing.assert_array_equal(lp[4], [-INF, 0.0, -INF])
    assert np.isnan(lp[1:4]).all()
    lse, sgn = fd.logsumexp(x, backend=backend, return_sign=True)
    np.testing.assert_array_equal(lse, [INF, INF, -INF, NAN, 0.0])
    np.testing.assert_array_equal(sgn, [1.0, 1.0, 0.0, NAN, 1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    # 2**-1074 and 2**-1030: subnormal powers of two, whose reciprocal is
    # inf (Numba multiplied by it and gave NaN).
    "temperature",
    [1e-300, F32_TINY, 1e-8, 1e8, 1e300, 2.0**-1074, 2.0**-1030],
)
def test_extreme_temperatures_do_not_overflow(backend, dtype, temperature):
    x = np.array([[2.0, 4.0, 3.0], [4.0, 4.0, 1.0], [-3e38, 3e38, 0.0]], dtype)
    # Neither the kernels nor the reference may overflow (underflow to 0 is
    # the right answer for the small probabilities).
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        p = fd.softmax(x, temperature, backend=backend)
    assert p.dtype == dtype
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=4 * np.finfo(dtype).eps)
    if temperature <= 1e-8:
        np.testing.assert_array_equal(p[0], [0.0, 1.0, 0.0])
        np.testing.assert_array_equal(p[1], [0.5, 0.5, 0.0])
    if temperature >= 1e300:
        np.testing.assert_allclose(p, 1.0 / 3.0, rtol=4 * np.finfo(dtype).eps)


def test_empty_reductions(backend):
    assert fd.softmax(np.zeros((3, 0)), backend=backend).shape == (3, 0)
    assert fd.log_softmax(np.zeros((0, 5)), backend=backend).shape == (0, 5)
    np.testing.assert_array_equal(
        fd.logsumexp(np.zeros((2, 0)), backend=backend), [-INF, -INF]
    )
    assert fd.logsumexp(np.zeros(0), backend=backend) == -INF
    assert fd.logsumexp(np.zeros((0, 3)), backend=backend).shape == (0,)


def test_logsumexp_keeps_small_terms(backend):
    # log(1 + e^-40) = 4.248354255291589e-18 (mpmath); rounding 1 + e^-40
    # first gives 0.
    got = fd.logsumexp(np.array([0.0, -40.0]), backend=backend)
    assert got == pytest.approx(4.248354255291589e-18, rel=1e-14)
    lp = fd.log_softmax(np.array([40.0, 0.0]), backend=backend)
    assert lp[0] == pytest.approx(-4.248354255291589e-18, rel=1e-14)


# --------------------------------------------------------------------------
# Threads: each row is reduced by one thread in a fixed order.
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 2, 5, 15, 16, 17])
@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.0, 1.7])
def test_many_short_rows_with_special_rows_match_reference(
    backend, dtype, k, temperature
):
    # Short rows are processed many to a task, in flat loops; every row
    # must still follow its own rules, whatever its neighbours hold.
    rng = np.random.default_rng(k)
    x = (rng.standard_normal((3001, k)) * 8.0).astype(dtype)
    x[5::211] = -INF  # all -inf rows
    x[7::223, 0] = INF  # one +inf: the one-hot limit
    x[9::227, :] = INF  # several +inf (all of them when k == 1)
    x[11::229, -1] = NAN
    x[13::233] = np.finfo(dtype).max / 3  # huge equal logits
    x[17::239, 0] = -np.finfo(dtype).max
    for fn in FUNCTIONS:
        got = fn(x, temperature, backend=backend)
        want = fn(x, temperature, backend="numpy")
        assert_same(got, want, what=f"{fn.__name__} k={k} T={temperature}")


@pytest.mark.parametrize(
    "temperature", [2.0**-100, 2.0**-20, 0.5, 1.0, 2.0, 2.0**30, 2.0**126, 2.0**127]
)
def test_float32_power_of_two_temperatures_match_reference(backend, temperature):
    # For float32 rows and a power-of-two T the compiled kernels may form
    # the shifted logits in float arithmetic, exact as a sum hi + lo. Long
    # rows (that path) with entries that stress it: -inf, the largest and
    # smallest floats, subnormals, entries one ulp from the maximum.
    rng = np.random.default_rng(7)
    fi = np.finfo(np.float32)
    x = (rng.standard_normal((64, 300)) * 30.0).astype(np.float32)
    x[1, ::7] = -INF
    x[2, 3] = fi.max
    x[2, 4] = np.nextafter(fi.max, np.float32(0))
    x[3, :] = fi.smallest_subnormal * rng.integers(-3, 4, 300)
    x[4, ::2] = -fi.max
    x[5, :] = 1e30 + rng.standard_normal(300).astype(np.float32) * 1e24
    x[6, 10] = np.nextafter(x[6].max(), np.float32(-INF))
    x[7, :] = x[7, 0]  # constant row: every entry at the maximum
    x[8, 5] = NAN
    for fn in FUNCTIONS:
        got = fn(x, temperature, backend=backend)
        want = fn(x, temperature, backend="numpy")
        assert_same(got, want, what=f"{fn.__name__} T=2**{np.log2(temperature):g}")


def test_fallback_exp_loops_match_the_reference(exp8_off):
    # On a CPU with AVX-512F the Cython exp passes take the inline exps of
    # fastdiv_exp8.h; the loops that other CPUs run get the same tests here.
    for case in EDGE_CASES:
        test_edge_cases_match_reference(case, "cython")
    for dtype in (np.float32, np.float64):
        for k in (1, 5, 15, 17):
            test_many_short_rows_with_special_rows_match_reference(
                "cython", dtype, k, 0.3
            )
            test_many_short_rows_with_special_rows_match_reference(
                "cython", dtype, k, 1.0
            )
    for temperature in (2.0**-20, 1.0, 2.0**126):
        test_float32_power_of_two_temperatures_match_reference("cython", temperature)
    test_logsumexp_keeps_small_terms("cython")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [7, 257])  # short rows take a path of their own
def test_one_and_two_threads_bit_identical(compiled_backend, dtype, k):
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((4000, k)) * 6.0).astype(dtype)
    x[::97, 3] = -INF
    x[::101, 5] = NAN
    b = rng.standard_normal(x.shape).astype(dtype)
    calls = [
        (fd.softmax, {"temperature": 0.7}),
        (fd.log_softmax, {"temperature": 1.9}),
        (fd.logsumexp, {"temperature": 0.3}),
        (fd.logsumexp, {"temperature": 1.1, "b": b, "return_sign": True}),
    ]
    for fn, kwargs in calls:
        with fd.options(threads=1):
            one = fn(x, backend=compiled_backend, **kwargs)
        with fd.options(threads=2):
            two = fn(x, backend=compiled_backend, **kwargs)
        assert_bit_identical(two, one, f"{fn.__name__} {kwargs.keys()}")


# --------------------------------------------------------------------------
# out=
# --------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [fd.softmax, fd.log_softmax], ids=lambda f: f.__name__)
@pytest.mark.parametrize("axis", [-1, 0])
def test_out_is_written_and_returned(backend, fn, axis):
    x = np.random.default_rng(1).standard_normal((6, 5))
    out = np.full_like(x, 99.0)
    res = fn(x, 1.5, axis, out=out, backend=backend)
    assert res is out
    assert_same(out, fn(x, 1.5, axis, backend="numpy"))


@pytest.mark.parametrize("fn", [fd.softmax, fd.log_softmax], ids=lambda f: f.__name__)
def test_out_non_contiguous(backend, fn):
    x = np.random.default_rng(2).standard_normal((6, 5)).astype(np.float32)
    holder = np.full((12, 10), 99.0, np.float32)
    out = holder[::2, ::2]
    res = fn(x, out=out, backend=backend)
    assert res is out
    assert_same(out, fn(x, backend="numpy"))
    # Nothing outside the view was touched.
    mask = np.ones(holder.shape, bool)
    mask[::2, ::2] = False
    assert (holder[mask] == 99.0).all()
    fortran = np.asfortranarray(np.full((6, 5), 99.0, np.float32))
    assert fn(x, out=fortran, backend=backend) is fortran
    assert_same(fortran, fn(x, backend="numpy"))


def test_out_logsumexp(backend):
    x = np.random.default_rng(3).standard_normal((4, 6, 3))
    out = np.full((4, 3), 99.0)
    res = fd.logsumexp(x, axis=1, out=out, backend=backend)
    assert res is out
    assert_same(out, fd.logsumexp(x, axis=1, backend="numpy"))
    out = np.full((4, 1, 3), 99.0)
    assert fd.logsumexp(x, axis=1, keepdims=True, out=out, backend=backend) is out
    assert_same(out, fd.logsumexp(x, axis=1, keepdims=True, backend="numpy"))
    b = np.random.default_rng(4).standard_normal(x.shape)
    out = np.full((4, 3), 99.0)
    res, sgn = fd.logsumexp(x, axis=1, b=b, return_sign=True, out=out, backend=backend)
    assert res is out
    assert_same(
        (out, sgn), fd.logsumexp(x, axis=1, b=b, return_sign=True, backend="numpy")
    )


def test_out_may_be_the_input(backend):
    # Aliasing: writing the result over the input still gives the right rows.
    x = np.random.default_rng(5).standard_normal((5, 8))
    want = fd.softmax(x, 0.5, backend="numpy")
    y = x.copy()
    assert fd.softmax(y, 0.5, out=y, backend=backend) is y
    assert_same(y, want)
    yt = x.T.copy()
    assert fd.softmax(yt, 0.5, axis=0, out=yt, backend=backend) is yt
    assert_same(yt, want.T)


@pytest.mark.parametrize(
    "out",
    [
        np.full((4, 6), 99.0),  # wrong shape
        np.full((5, 4), 99.0),  # transposed shape
        np.full((4, 5), 99.0, np.float32),  # wrong dtype
        np.full((4, 5), 99, np.int64),  # wrong dtype
    ],
    ids=["shape", "transposed", "float32", "int64"],
)
def test_out_wrong_shape_or_dtype_raises_untouched(backend, out):
    x = np.zeros((4, 5))
    before = out.copy()
    for fn in (fd.softmax, fd.log_softmax):
        with pytest.raises(ValueError, match="out"):
            fn(x, out=out, backend=backend)
    with pytest.raises(ValueError, match="out"):
        fd.logsumexp(x, axis=0, out=out, backend=backend)
    np.testing.assert_array_equal(out, before)


def test_out_untouched_when_input_is_bad(backend):
    out = np.full((2, 3), 99.0)
    with pytest.raises(ValueError, match="temperature"):
        fd.softmax(np.zeros((2, 3)), 0.0, out=out, backend=backend)
    with pytest.raises(TypeError, match="x"):
        fd.softmax(np.zeros((2, 3), complex), out=out, backend=backend)
    out1 = np.full(2, 99.0)
    with pytest.raises(ValueError, match="b"):
        fd.logsumexp(np.zeros((2, 3)), b=np.ones(4), out=out1, backend=backend)
    assert (out == 99.0).all() and (out1 == 99.0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_read_only_inputs(backend, dtype, tmp_path):
    # A frozen array, np.load(..., mmap_mode="r") and a broadcast (read-only)
    # view give the bits of the same call on a writeable copy, as x and b.
    x = np.random.default_rng(3).standard_normal((6, 7)).astype(dtype)
    b = np.linspace(-1.0, 1.0, 7).astype(dtype)
    frozen, frozen_b = x.copy(), b.copy()
    frozen.flags.writeable = frozen_b.flags.writeable = False
    np.save(tmp_path / "x.npy", x)
    inputs = {
        "frozen": (frozen, np.broadcast_to(b, x.shape)),
        "mmap": (np.load(tmp_path / "x.npy", mmap_mode="r"), frozen_b[None, :]),
    }
    calls = [
        lambda x, b: fd.softmax(x, 1.3, backend=backend),
        lambda x, b: fd.log_softmax(x, 0.6, axis=0, backend=backend),
        lambda x, b: fd.logsumexp(x, 2.0, backend=backend),
        lambda x, b: fd.logsumexp(x, 0.7, b=b, return_sign=True, backend=backend),
    ]
    for i, call in enumerate(calls):
        want = call(x, np.broadcast_to(b, x.shape).copy())
        for kind, (ro_x, ro_b) in inputs.items():
            assert not (ro_x.flags.writeable or ro_b.flags.writeable)
            assert_bit_identical(call(ro_x, ro_b), want, f"call {i} {kind}")
    np.testing.assert_array_equal(inputs["mmap"][0], x)


def test_out_read_only_raises(backend):
    out = np.zeros((2, 3))
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        fd.softmax(np.zeros((2, 3)), out=out, backend=backend)


# --------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------
FUNCTIONS = [fd.softmax, fd.log_softmax, fd.logsumexp]


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    "x",
    [
        np.array([1 + 2j, 3.0]),
        np.array([1.0, "a"], dtype=object),
        np.array(["a", "b"]),
        np.array([1.0], dtype=np.longdouble)
        if np.dtype(np.longdouble).itemsize > 8
        else np.array([1.0], dtype=np.complex64),
    ],
    ids=["complex", "object", "str", "longdouble"],
)
def test_bad_dtype_raises_type_error_naming_x(backend, fn, x):
    with pytest.raises(TypeError, match=r"\bx\b"):
        fn(x, backend=backend)


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    "temperature, exc",
    [
        (0.0, ValueError),
        (-1.0, ValueError),
        (-0.0, ValueError),
        (NAN, ValueError),
        (INF, ValueError),
        (-INF, ValueError),
        ("1.0", TypeError),
        (None, TypeError),
        (1j, TypeError),
        (np.array([1.0, 2.0]), TypeError),
    ],
)
def test_bad_temperature_names_it(backend, fn, temperature, exc):
    with pytest.raises(exc, match="temperature"):
        fn(np.zeros((2, 3)), temperature, backend=backend)


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_ragged_x_is_a_value_error_naming_x(fn):
    with pytest.raises(ValueError, match=r"^x cannot be converted"):
        fn([[1, 2], [3]], backend="numpy")


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_temperature_too_large_for_a_float_is_a_value_error(fn):
    # float(10**400) raises OverflowError, which used to escape as is.
    with pytest.raises(ValueError, match="temperature.*too large"):
        fn(np.zeros((2, 3)), temperature=10**400, backend="numpy")
    # A 0-d array is refused like any array, with a hint.
    with pytest.raises(TypeError, match=r"temperature.*float\(t\)"):
        fn(np.zeros((2, 3)), temperature=np.array(2.0), backend="numpy")


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("axis", [2, -3, 10])
def test_axis_out_of_range(backend, fn, axis):
    with pytest.raises(ValueError, match="axis"):
        fn(np.zeros((2, 3)), axis=axis, backend=backend)


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_axis_not_an_integer(backend, fn):
    with pytest.raises(TypeError, match="axis"):
        fn(np.zeros((2, 3)), axis=1.0, backend=backend)


def test_b_that_does_not_broadcast(backend):
    with pytest.raises(ValueError, match="b"):
        fd.logsumexp(np.zeros((2, 3)), b=np.ones((2, 2)), backend=backend)
    with pytest.raises(TypeError, match=r"\bb\b"):
        fd.logsumexp(np.zeros((2, 3)), b=np.ones(3, complex), backend=backend)


def test_nan_never_raises(backend):
    x = np.array([[NAN, NAN], [1.0, 2.0]])
    with np.errstate(all="raise"):
        p = fd.softmax(x, backend=backend)
    assert np.isnan(p[0]).all() and np.isfinite(p[1]).all()


# --------------------------------------------------------------------------
# Agreement with SciPy.
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("temperature", [0.25, 1.0, 7.0])
@pytest.mark.parametrize("axis", [-1, 0, None])
def test_agrees_with_scipy(backend, dtype, temperature, axis):
    rng = np.random.default_rng(12)
    x = (rng.standard_normal((30, 17)) * 4.0).astype(dtype)
    # SciPy works in the input dtype; compare in float64 so that its float32
    # rounding does not count against us.
    z = x.astype(np.float64) / temperature
    ref = {
        "softmax": scipy.special.softmax(z, axis=axis),
        "log_softmax": scipy.special.log_softmax(z, axis=axis),
        "logsumexp": scipy.special.logsumexp(z, axis=axis),
    }
    for fn in FUNCTIONS:
        got = fn(x, temperature, axis, backend=backend)
        assert got.dtype == dtype
        assert_same(got, ref[fn.__name__].astype(dtype), what=fn.__name__)

    b = rng.standard_normal(x.shape)
    got = fd.logsumexp(
        x.astype(np.float64), temperature, axis, b=b, return_sign=True, backend=backend
    )
    want = scipy.special.logsumexp(z, axis=axis, b=b, return_sign=True)
    # A signed sum near zero loses relative precision in any order of terms.
    assert_same(got, want, rtol=1e-10, atol=1e-12, what="logsumexp b")
    got = fd.logsumexp(
        x.astype(np.float64),
        temperature,
        axis,
        b=np.abs(b),
        keepdims=True,
        backend=backend,
    )
    want = scipy.special.logsumexp(z, axis=axis, b=np.abs(b), keepdims=True)
    assert_same(got, want, what="logsumexp b keepdims")


def test_agrees_with_scipy_negative_sum_without_sign(backend):
    x = np.array([[1.0, 2.0], [1.0, 0.0]])
    b = np.array([[1.0, -3.0], [1.0, 1.0]])
    got = fd.logsumexp(x, b=b, backend=backend)
    with np.errstate(invalid="ignore"):
        want = scipy.special.logsumexp(x, b=b, axis=-1)
    assert_same(got, want)


# Weighted sums whose every term b_j exp(x_j / T) underflows to 0 (x / T
# below -DBL_MAX with T < 1): log|sum| = -inf with sign 0, as in SciPy;
# numba once gave the sign of the weights at the maximum. (x, b, T)
UNDERFLOWING_WEIGHTED_SUMS = [
    ([-1e308], [-0.5], 0.013),
    ([-1e308, -1e308], [2.0, -3.0], 0.013),
    ([-1e308, 1.0], [-1.0, 0.0], 0.013),  # b = 0: x = 1 takes no part
    ([-1e308, -np.inf], [-1.0, 2.0], 0.5),
    ([-1e300, -1e308], [3.0, -1.0], 1e-10),
    # Finite in float32 too.
    ([-3e38], [-2.0], 1e-300),
    ([-3e38, -1e38], [1.0, -1.0], 1e-290),
]


def test_weighted_nan_has_nan_sign(backend):
    # +inf entries with weights of both signs: inf - inf, NaN, and its sign
    # NaN as in SciPy (it was 0).
    x = np.array([[np.inf, np.inf], [1.0, np.nan], [0.0, 1.0]])
    b = np.array([[1.0, -1.0], [1.0, 1.0], [1.0, 1.0]])
    value, sign = fd.logsumexp(x, b=b, return_sign=True, backend=backend)
    want_value, want_sign = scipy.special.logsumexp(x, axis=-1, b=b, return_sign=True)
    np.testing.assert_array_equal(np.isnan(value), np.isnan(want_value))
    np.testing.assert_array_equal(sign, want_sign)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weighted_sum_that_underflows_has_sign_zero(backend, dtype):
    for x, b, temperature in UNDERFLOWING_WEIGHTED_SUMS:
        with np.errstate(over="ignore"):  # -1e308 is -inf in float32
            xs, bs = np.array([x], dtype), np.array([b], dtype)
        got = fd.logsumexp(xs, temperature, b=bs, return_sign=True, backend=backend)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            want = scipy.special.logsumexp(
                xs.astype(np.float64) / temperature, axis=-1, b=bs, return_sign=True
            )
        assert_same(got, tuple(v.astype(dtype) for v in want), what=f"{x} {b}")
        np.testing.assert_array_equal(got[1], [0.0])
    # Beside them, a sum whose log is finite keeps the sign of its terms.
    got = fd.logsumexp(
        [[-1e308, -5e307]], 0.5, b=[[2.0, -3.0]], return_sign=True, backend=backend
    )
    assert_same(got, (np.array([-1e308 + np.log(3.0)]), np.array([-1.0])))


# --------------------------------------------------------------------------
# The reference against high precision.
# --------------------------------------------------------------------------
MP_ROWS = [
    ([1.0, 2.0, 3.0], 1.0),
    ([0.0, -40.0, -700.0], 1.0),
    ([1e-3, 2e-3, -5e-4, 0.0], 1e-4),
    ([123.25, -17.5, 99.0, 123.0], 13.0),
    ([3.0, 3.0, 3.0 - 2**-40], 1e-12),
]


@pytest.mark.parametrize("row, temperature", MP_ROWS)
def test_reference_against_mpmath(row, temperature):
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(60):
        z = [mpmath.mpf(v) / mpmath.mpf(temperature) for v in row]
        s = mpmath.fsum(mpmath.exp(v) for v in z)
        lse = mpmath.log(s)
        p = [mpmath.exp(v) / s for v in z]
        lp = [v - lse for v in z]
    x = np.array(row)
    got_p = fd.softmax(x, temperature, backend="numpy")
    got_lp = fd.log_softmax(x, temperature, backend="numpy")
    got_lse = fd.logsumexp(x, temperature, backend="numpy")
    # The reference works in float64 throughout: a few ulp at most (exp of
    # a rounded x / T, a rounded sum, a division).
    rtol = 8 * np.finfo(np.float64).eps
    np.testing.assert_allclose(got_p, [float(v) for v in p], rtol=rtol, atol=0)
    np.testing.assert_allclose(got_lp, [float(v) for v in lp], rtol=rtol, atol=0)
    assert got_lse == pytest.approx(float(lse), rel=rtol, abs=0)


# --------------------------------------------------------------------------
# Properties (hypothesis), on every backend.
# --------------------------------------------------------------------------
finite_logits = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64]),
    shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
    elements=st.floats(-1e4, 1e4, width=32),
)
temperatures = st.floats(1e-3, 1e3)


@given(x=finite_logits, temperature=temperatures)
def test_property_rows_sum_to_one(backend, x, temperature):
    p = fd.softmax(x, temperature, backend=backend)
    k = x.shape[1]
    eps = np.finfo(x.dtype).eps
    np.testing.assert_allclose(
        p.sum(axis=1, dtype=np.float64), 1.0, atol=(k + 2) * eps, rtol=0
    )
    assert (p >= 0).all() and (p <= 1).all()


@given(
    x=finite_logits, temperature=temperatures, shift=st.floats(-100.0, 100.0, width=32)
)
def test_property_shift_invariance(backend, x, temperature, shift):
    # The shift is exact in the input dtype only if no rounding happens.
    y = x + np.asarray(shift, x.dtype)
    assume(np.array_equal(y - np.asarray(shift, x.dtype), x))
    p = fd.softmax(x, temperature, backend=backend)
    q = fd.softmax(y, temperature, backend=backend)
    # x + c rounds nothing (assumed above), but (x + c) / T does: each
    # shifted logit may move by |x + c| / T * eps, and exp by as much.
    scale = float(np.abs(y).max() / temperature) + 1.0
    eps = float(np.finfo(x.dtype).eps)
    np.testing.assert_allclose(q, p, rtol=8 * scale * eps, atol=8 * scale * eps)


@given(x=finite_logits, temperature=temperatures)
def test_property_temperature_divides_logits(backend, x, temperature):
    z = x.astype(np.float64) / temperature
    assume(np.isfinite(z).all())
    p = fd.softmax(x.astype(np.float64), temperature, backend=backend)
    q = fd.softmax(z, backend=backend)
    scale = float(np.abs(z).max()) + 1.0
    # x / T is rounded once on one side and the shift by the maximum on the
    # other: a relative error of |z| eps in each exponent.
    np.testing.assert_allclose(p, q, rtol=8 * scale * 2.3e-16, atol=1e-300)


@given(x=finite_logits, temperature=temperatures)
def test_property_log_softmax_is_log_of_softmax(backend, x, temperature):
    x = x.astype(np.float64)
    lp = fd.log_softmax(x, temperature, backend=backend)
    p = fd.softmax(x, temperature, backend=backend)
    finite = p > 1e-300  # log of an underflowed probability is not comparable
    np.testing.assert_allclose(lp[finite], np.log(p[finite]), rtol=1e-13, atol=1e-15)
    assert (lp[~finite] < -690).all()


@given(x=finite_logits, temperature=temperatures)
def test_property_logsumexp_matches_log_softmax(backend, x, temperature):
    x = x.astype(np.float64)
    lse = fd.logsumexp(x, temperature, backend=backend)
    lp = fd.log_softmax(x, temperature, backend=backend)
    # log_softmax = x / T - logsumexp, so x / T - log_softmax is constant.
    recovered = x / temperature - lp
    scale = np.abs(x / temperature).max(axis=1) + np.abs(lse) + 1.0
    assert (np.abs(recovered - lse[:, None]) <= 8 * 2.3e-16 * scale[:, None]).all()


def test_softmax_of_scalar_and_one_element(backend):
    assert fd.softmax(np.array(3.0), backend=backend) == 1.0
    assert fd.logsumexp(3.0, 2.0, backend=backend) == 1.5
    assert math.isnan(fd.softmax([NAN], backend=backend)[0])
