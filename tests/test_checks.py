"""Unit tests of fastdiv._checks: conversion and validation."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.sparse

import fastdiv as fd
from fastdiv._checks import (
    as_float_array,
    check_out,
    check_probabilities,
    check_temperature,
    kernel_target,
    normalize_axis,
    shown,
    sum_tolerance,
    to_rows,
)

# --------------------------------------------------------------------------
# as_float_array: the dtype conversion table of DESIGN.md.
# --------------------------------------------------------------------------
CONVERSIONS = [
    (np.float64, np.float64),
    (np.float32, np.float32),
    (np.float16, np.float32),
    (">f8", np.float64),
    (">f4", np.float32),
    (np.bool_, np.float64),
    (np.int8, np.float64),
    (np.int32, np.float64),
    (np.int64, np.float64),
    (np.uint8, np.float64),
    (np.uint64, np.float64),
]


@pytest.mark.parametrize("given, want", CONVERSIONS, ids=lambda d: np.dtype(d).str)
def test_as_float_array_dtypes(given, want):
    x = np.arange(6).reshape(2, 3).astype(given)
    got = as_float_array(x, "x")
    assert got.dtype == np.dtype(want)
    assert got.dtype.isnative
    np.testing.assert_array_equal(got, x.astype(np.float64))


def test_as_float_array_keeps_native_floats_without_copy():
    for dtype in (np.float32, np.float64):
        x = np.ones((3, 4), dtype)[:, ::2]
        assert as_float_array(x, "x") is x


def test_as_float_array_lists_and_scalars():
    assert as_float_array([1, 2], "x").dtype == np.float64
    assert as_float_array([1.5, 2], "x").dtype == np.float64
    assert as_float_array(3, "x").shape == ()
    assert as_float_array(np.float32(3), "x").dtype == np.float32


def test_as_float_array_big_endian_values_and_no_write():
    x = np.array([1.5, -np.inf, np.nan], dtype=">f8")
    before = x.copy()
    got = as_float_array(x, "x")
    assert got.dtype == np.dtype("<f8") or got.dtype == np.dtype("=f8")
    np.testing.assert_array_equal(got, before)
    np.testing.assert_array_equal(x, before)
    assert x.dtype == np.dtype(">f8")


@pytest.mark.parametrize(
    "x",
    [
        np.array([1 + 1j]),
        np.array([1.0], np.complex64),
        np.array([1.0, None], dtype=object),
        np.array(["1.0"]),
        np.array([b"1"]),
        np.array(["2020-01-01"], dtype="datetime64[D]"),
        np.array([1], dtype="timedelta64[s]"),
        np.zeros(2, dtype=[("a", "f8")]),
    ],
    ids=[
        "complex128",
        "complex64",
        "object",
        "str",
        "bytes",
        "datetime",
        "timedelta",
        "structured",
    ],
)
def test_as_float_array_rejects_non_real(x):
    with pytest.raises(TypeError, match=r"^probs\b"):
        as_float_array(x, "probs")


@pytest.mark.skipif(
    np.dtype(np.longdouble).itemsize <= 8, reason="long double is double here"
)
@pytest.mark.parametrize("x", [[[1, 2], [3]], [[1.0], [2.0, [3.0]]]])
def test_as_float_array_ragged_input_is_a_value_error_naming_it(x):
    with pytest.raises(ValueError, match=r"^logits cannot be converted.*shape"):
        as_float_array(x, "logits")


def test_as_float_array_rejects_long_double():
    with pytest.raises(TypeError, match=r"^x\b.*float64"):
        as_float_array(np.ones(2, np.longdouble), "x")


# --------------------------------------------------------------------------
# check_temperature
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "t",
    [
        1,
        1.0,
        0.5,
        1e-300,
        5e-324,
        1e300,
        np.float32(2.0),
        np.int64(3),
        np.float64(1e-30),
    ],
)
def test_check_temperature_accepts(t):
    got = check_temperature(t)
    assert type(got) is float
    assert got == float(t)


def test_check_temperature_keeps_tiny_float_exactly():
    # Never rounded through float32: 1e-300 stays 1e-300.
    assert check_temperature(1e-300) == 1e-300


@pytest.mark.parametrize(
    "t", [0, 0.0, -0.0, -1.0, np.nan, np.inf, -np.inf, np.float32(0.0)]
)
def test_check_temperature_rejects_values(t):
    with pytest.raises(ValueError, match=r"^temperature\b"):
        check_temperature(t)


@pytest.mark.parametrize("t", ["1.0", None, True, False, 1j, [1.0], np.array(1.0)])
def test_check_temperature_rejects_types(t):
    with pytest.raises(TypeError, match=r"^temperature\b"):
        check_temperature(t)


@pytest.mark.parametrize("t", [10**400, -(10**400), Fraction(10**400, 3)])
def test_check_temperature_too_large_for_a_float_is_a_value_error(t):
    # float(10**400) raises OverflowError; the check names the argument.
    with pytest.raises(ValueError, match=r"^temperature\b.*too large"):
        check_temperature(t)


@pytest.mark.parametrize("t", [np.array(2.0), np.array(3), np.array([2.0])])
def test_check_temperature_arrays_are_a_type_error_saying_float(t):
    with pytest.raises(TypeError, match=r"^temperature\b.*array.*float\(t\)"):
        check_temperature(t)


def test_check_temperature_custom_name():
    with pytest.raises(ValueError, match=r"^T_teacher\b"):
        check_temperature(-2.0, "T_teacher")


# --------------------------------------------------------------------------
# normalize_axis
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "axis, ndim, want",
    [(0, 1, 0), (-1, 1, 0), (-1, 3, 2), (1, 3, 1), (-3, 3, 0), (np.int64(2), 3, 2)],
)
def test_normalize_axis(axis, ndim, want):
    assert normalize_axis(axis, ndim) == want


@pytest.mark.parametrize(
    "axis, ndim", [(1, 1), (-2, 1), (3, 3), (-4, 3), (0, 0), (2**70, 2), (-(2**70), 2)]
)
def test_normalize_axis_out_of_range(axis, ndim):
    with pytest.raises(ValueError, match="axis"):
        normalize_axis(axis, ndim)


@pytest.mark.parametrize("axis", [1.0, "0", True, None, (0,)])
def test_normalize_axis_type(axis):
    with pytest.raises(TypeError, match="axis"):
        normalize_axis(axis, 2)


# --------------------------------------------------------------------------
# to_rows
# --------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_to_rows_moves_axis_last(axis):
    x = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)
    rows = to_rows(x, axis)
    k = x.shape[axis]
    assert rows.shape == (x.size // k, k)
    assert rows.flags.c_contiguous
    np.testing.assert_array_equal(rows, np.moveaxis(x, axis, -1).reshape(-1, k))


def test_to_rows_is_a_view_when_possible():
    x = np.ones((5, 6))
    assert np.shares_memory(to_rows(x, 1), x)
    y = np.ones((5, 6))[:, ::2]
    assert not np.shares_memory(to_rows(y, 1), y)


def test_to_rows_empty_shapes():
    assert to_rows(np.zeros((0, 3)), 1).shape == (0, 3)
    assert to_rows(np.zeros((3, 0)), 1).shape == (3, 0)
    assert to_rows(np.zeros((3, 0)), 0).shape == (0, 3)
    assert to_rows(np.zeros(4), 0).shape == (1, 4)


# --------------------------------------------------------------------------
# check_out and kernel_target
# --------------------------------------------------------------------------
def test_check_out_none_and_valid():
    assert check_out(None, (2, 3), np.dtype(np.float64)) is None
    out = np.empty((2, 3))
    assert check_out(out, (2, 3), np.dtype(np.float64)) is out
    strided = np.empty((4, 6))[::2, ::2]
    assert check_out(strided, (2, 3), np.dtype(np.float64)) is strided


@pytest.mark.parametrize(
    "out, exc, pattern",
    [
        ([[0.0] * 3] * 2, TypeError, "out must be a numpy array"),
        (np.empty((3, 2)), ValueError, r"out has shape \(3, 2\)"),
        (np.empty(6), ValueError, "out has shape"),
        (np.empty((2, 3), np.float32), ValueError, "out has dtype float32"),
        (np.empty((2, 3), ">f8"), ValueError, "out has dtype"),
    ],
    ids=["list", "shape", "flat", "dtype", "byte-order"],
)
def test_check_out_rejects(out, exc, pattern):
    keep = np.array(out, copy=True)
    with pytest.raises(exc, match=pattern):
        check_out(out, (2, 3), np.dtype(np.float64))
    np.testing.assert_array_equal(np.asarray(out), keep)


def test_check_out_byte_order_is_named():
    out = np.empty(3, ">f8" if np.little_endian else "<f8")
    with pytest.raises(ValueError, match="in the machine's byte order"):
        check_out(out, (3,), np.dtype(np.float64))


def test_check_out_read_only():
    out = np.zeros((2, 3))
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        check_out(out, (2, 3), np.dtype(np.float64))


def test_kernel_target_uses_out_when_it_can():
    out = np.empty((2, 3))
    x = np.zeros((2, 3))
    assert np.shares_memory(kernel_target(out, (2, 3), out.dtype, x), out)
    # A (2, 3) result written as 6 values: reshaping keeps the memory.
    assert np.shares_memory(kernel_target(out, (6,), out.dtype, x), out)


def test_kernel_target_fresh_when_it_must():
    x = np.zeros((2, 3))
    strided = np.empty((4, 6))[::2, ::2]
    got = kernel_target(strided, (2, 3), x.dtype, x)
    assert not np.shares_memory(got, strided) and got.flags.c_contiguous
    # Aliasing the input: the kernel must not overwrite what it still reads.
    got = kernel_target(x, (2, 3), x.dtype, x)
    assert not np.shares_memory(got, x)
    assert kernel_target(None, (2, 3), np.dtype(np.float32)).dtype == np.float32


# --------------------------------------------------------------------------
# Probabilities
# --------------------------------------------------------------------------
def test_sum_tolerance():
    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    assert sum_tolerance(f32, 2) == 1e-6
    assert sum_tolerance(f64, 2) == 1e-12
    # Long rows widen it to 4 sqrt(k) eps.
    k = 10**8
    assert sum_tolerance(f64, k) == pytest.approx(4e4 * np.finfo(f64).eps)
    assert sum_tolerance(f32, k) > 1e-6
    assert sum_tolerance(f32, 4) >= sum_tolerance(f64, 4)


def test_check_probabilities_valid_is_returned_unchanged():
    p = np.array([[0.25, 0.75], [1.0, 0.0], [0.5, 0.5]])
    assert check_probabilities(p, "p") is p
    p32 = np.array([[0.1, 0.2, 0.7]], np.float32)
    assert check_probabilities(p32, "q") is p32


@pytest.mark.parametrize(
    "row, pattern",
    [
        ([0.5, -0.1, 0.6], r"p row 2 has a negative entry .*column 1"),
        ([0.5, np.nan, 0.5], r"p row 2 has a non-finite entry .*column 1"),
        ([np.inf, 0.0, 0.0], r"p row 2 has a non-finite entry .*column 0"),
        ([0.5, 0.5, 0.1], r"p row 2 sums to 1\.1"),
        ([0.3, 0.3, 0.3], r"p row 2 sums to 0\.89.*normalize=True"),
    ],
)
def test_check_probabilities_names_first_bad_row(row, pattern):
    p = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], row, [0.5, 0.6, 0.7]])
    with pytest.raises(ValueError, match=pattern):
        check_probabilities(p, "p")


def test_check_probabilities_row_label_in_batch_shape():
    p = np.full((6, 2), 0.5)
    p[4] = [0.9, 0.9]
    with pytest.raises(ValueError, match=r"q row \(2, 0\) sums to"):
        check_probabilities(p, "q", batch_shape=(3, 2))
    with pytest.raises(ValueError, match=r"q row 4 sums to"):
        check_probabilities(p, "q", batch_shape=(6,))


def test_check_probabilities_sum_tolerance_by_dtype():
    k = 2
    ok64 = np.array([[0.5, 0.5 + 0.5e-12]])
    check_probabilities(ok64, "p")
    bad64 = np.array([[0.5, 0.5 + 4e-12]])
    with pytest.raises(ValueError, match="tolerance"):
        check_probabilities(bad64, "p")
    # The same offset is fine in float32, whose tolerance is 1e-6.
    ok32 = np.array([[0.5, 0.5 + 5e-7]], np.float32)
    assert sum_tolerance(ok32.dtype, k) == 1e-6
    check_probabilities(ok32, "p")
    bad32 = np.array([[0.5, 0.5 + 4e-6]], np.float32)
    with pytest.raises(ValueError, match="sums to"):
        check_probabilities(bad32, "p")


def test_check_probabilities_normalize():
    p = np.array([[1.0, 3.0], [2.0, 2.0]], np.float32)
    got = check_probabilities(p, "p", normalize=True)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [[0.25, 0.75], [0.5, 0.5]])
    np.testing.assert_array_equal(p, [[1.0, 3.0], [2.0, 2.0]])  # untouched


def test_normalize_a_row_whose_sum_overflows(backend):
    # 1e308 + 1e308 is inf in float64: dividing by it once gave a row of
    # zeros, and so an entropy of 0 instead of log 2.
    big = [[1e308, 1e308, 0.0], [1.0, 1.0, 2.0]]
    got = check_probabilities(np.array(big), "p", normalize=True, backend=backend)
    np.testing.assert_array_equal(got, [[0.5, 0.5, 0.0], [0.25, 0.25, 0.5]])
    assert fd.entropy(big, normalize=True, backend=backend)[0] == math.log(2)
    uniform = [[1 / 3, 1 / 3, 1 / 3]]
    want = fd.pairwise([[0.5, 0.5, 0.0]], uniform, backend=backend)
    for P in (np.array(big)[:1], scipy.sparse.csr_matrix(big)[:1]):
        got = fd.pairwise(P, uniform, normalize=True, backend=backend)
        np.testing.assert_allclose(got, want, rtol=1e-15)


def test_check_probabilities_normalize_zero_row():
    p = np.array([[1.0, 1.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match=r"p row 1 sums to 0"):
        check_probabilities(p, "p", normalize=True)


def test_check_probabilities_normalize_still_checks_entries():
    with pytest.raises(ValueError, match="negative"):
        check_probabilities(np.array([[2.0, -1.0]]), "p", normalize=True)


def test_check_probabilities_check_false_skips():
    bad = np.array([[0.5, np.nan], [2.0, -1.0]])
    assert check_probabilities(bad, "p", check=False) is bad
    got = check_probabilities(np.array([[1.0, 1.0]]), "p", normalize=True, check=False)
    np.testing.assert_array_equal(got, [[0.5, 0.5]])


def test_check_probabilities_empty():
    assert check_probabilities(np.zeros((0, 3)), "p").shape == (0, 3)
    # A row of no entries has nothing to sum: it is not rejected.
    assert check_probabilities(np.zeros((2, 0)), "p").shape == (2, 0)


@pytest.mark.parametrize(
    "value, want",
    [
        (np.float64(-0.0336), "-0.0336"),
        (np.float32(0.5), "0.5"),
        (np.int8(0), "0"),
        (np.str_("gpu"), "'gpu'"),
        (-0.0336, "-0.0336"),
        ([1], "[1]"),
    ],
)
def test_shown_writes_numpy_scalars_as_python_values(value, want):
    assert shown(value) == want


def test_messages_show_no_numpy_scalar_reprs():
    p = np.array([[0.5, 0.5], [1.0336, -0.0336]])
    with pytest.raises(ValueError) as info:
        check_probabilities(p, "p")
    assert "(-0.0336 in column 1)" in str(info.value)
    with pytest.raises(ValueError) as info:
        check_temperature(np.float32(0.0))
    with pytest.raises(TypeError) as info2:
        normalize_axis(np.float64(1.0), 2)
    for err in (info.value, info2.value):
        assert "np." not in str(err), str(err)
