"""Validation of arguments and conversion to kernel-ready arrays.

Kernels see only 2-D, C-contiguous, native-order float32 or float64 arrays
and reduce along the last axis. Everything that turns what a user passed
into that shape, and every error message about bad input, lives here, so
that all backends raise the same errors before any kernel runs.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from numpy.lib.array_utils import normalize_axis_index

_COMPUTE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_array(x, name: str) -> np.ndarray:
    """Convert ``x`` to a native-order float32 or float64 array, never copying
    more than needed.

    float32 and float64 are kept; float16 becomes float32; booleans and
    integers become float64. Complex, object, string and other dtypes raise
    TypeError naming the argument; nested sequences NumPy cannot make an
    array of (rows of different lengths) raise ValueError naming it.
    """
    try:
        arr = np.asarray(x)
    except ValueError as exc:
        # NumPy's "inhomogeneous shape" message says what, not which argument.
        raise ValueError(f"{name} cannot be converted to an array: {exc}") from None
    kind = arr.dtype.kind
    if kind == "f":
        if arr.dtype.itemsize <= 4:
            dtype = np.dtype(np.float32)
        elif arr.dtype.itemsize == 8:
            dtype = np.dtype(np.float64)
        else:
            raise TypeError(
                f"{name} has dtype {arr.dtype}, which fastdiv does not compute "
                "in; convert it to float64 first"
            )
    elif kind in "biu":
        dtype = np.dtype(np.float64)
    else:
        raise TypeError(
            f"{name} must hold real numbers, got an array of dtype {arr.dtype}"
        )
    # astype with copy=False keeps the array when it already has the native
    # dtype; a non-native byte order is converted here, once.
    return arr.astype(dtype, copy=False)


def shown(value) -> str:
    """``repr(value)`` for a message, a NumPy scalar shown as the Python
    number (or string) it holds: NumPy 2 writes ``np.float64(-0.03)``."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def check_temperature(temperature, name: str = "temperature") -> float:
    """Return the temperature as a Python float after checking it is a finite
    real number greater than 0.

    Accepted: Python and NumPy real scalars (ints and floats, not bools).
    Any other type raises TypeError, arrays included, even 0-d ones: the
    message says to pass ``float(t)``, so that a temperature is never an
    array by accident (one whose shape would broadcast against the rows). A
    value that is not finite, not > 0, or too large for a float64 (an int
    such as ``10**400``) raises ValueError. Both name ``name``.
    """
    if type(temperature) is float:
        # The usual call, without the abstract-class checks below (0.4 us
        # of the 8 us of a softmax of 10 numbers).
        if math.isfinite(temperature) and temperature > 0.0:
            return temperature
        raise ValueError(f"{name} must be finite and > 0, got {temperature!r}")
    if isinstance(temperature, np.ndarray):
        raise TypeError(
            f"{name} must be a real number, got a {temperature.ndim}-d array of "
            f"shape {temperature.shape}; pass a scalar such as float(t)"
        )
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(
            f"{name} must be a real number, got {type(temperature).__name__} "
            f"{shown(temperature)}"
        )
    try:
        value = float(temperature)
    except OverflowError:
        raise ValueError(
            f"{name} must be finite and > 0, got a value of type "
            f"{type(temperature).__name__} too large for a float64"
        ) from None
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return value


def normalize_axis(axis, ndim: int, name: str = "axis") -> int:
    """A non-negative axis index; AxisError (a ValueError) if out of range."""
    if type(axis) is int and -ndim <= axis < ndim:
        # The usual call, without the abstract-class check (0.6 us).
        return axis + ndim if axis < 0 else axis
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {shown(axis)}")
    if not -ndim <= axis < max(ndim, 1):
        # Also for values beyond a C long, which normalize_axis_index cannot
        # take (it raises a bare OverflowError).
        raise np.exceptions.AxisError(
            f"{name} {shown(axis)} is out of bounds for an array of dimension {ndim}"
        )
    return normalize_axis_index(int(axis), ndim, msg_prefix=name)


def to_rows(x: np.ndarray, axis: int) -> np.ndarray:
    """Move ``axis`` last and flatten the rest: a C-contiguous (n, k) array.

    The result is a view of ``x`` when ``x`` is already laid out that way and
    a copy otherwise; callers must never write to it.
    """
    # The common case - reducing the last axis - skips moveaxis, whose cost
    # dominates a call on a small array.
    moved = x if axis == x.ndim - 1 else np.moveaxis(x, axis, -1)
    k = moved.shape[-1]
    n = math.prod(moved.shape[:-1])
    return np.ascontiguousarray(moved).reshape(n, k)


def check_out(out, shape: tuple, dtype: np.dtype, name: str = "out"):
    """Check a caller's ``out=`` array; return it (or None if not given).

    It must be a writeable ndarray of exactly ``shape`` and ``dtype``; it may
    have any memory layout. Nothing is written to it here.
    """
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(
            f"{name} has shape {out.shape}, but the result has shape {tuple(shape)}"
        )
    if out.dtype != dtype:
        swapped = out.dtype.newbyteorder() == dtype
        raise ValueError(
            f"{name} has dtype {out.dtype}, but the result has dtype {dtype}"
            + (" in the machine's byte order" if swapped else "")
        )
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return out


def kernel_target(out, shape: tuple, dtype: np.dtype, *inputs) -> np.ndarray:
    """An array a kernel can write a (n, k) or (n,) result into.

    That is ``out`` itself when it is C-contiguous with the kernel's shape and
    shares no memory with an input; otherwise a fresh array, which the caller
    copies into ``out`` once the kernel has succeeded.
    """
    if (
        out is not None
        and out.flags.c_contiguous
        and out.dtype.isnative
        and not any(np.may_share_memory(out, a) for a in inputs)
    ):
        return out.reshape(shape)
    return np.empty(shape, dtype)


# --------------------------------------------------------------------------
# Probability distributions
# --------------------------------------------------------------------------

# |row sum - 1| allowed before a row is rejected: 1e-6 in float32 and 1e-12
# in float64, widened for long rows to 4 sqrt(k) eps, the rounding a correctly
# normalised row of k entries can carry.
_SUM_ATOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}


def sum_tolerance(dtype: np.dtype, k: int) -> float:
    """How far from 1 a row of ``k`` entries of ``dtype`` may sum."""
    return max(_SUM_ATOL[np.dtype(dtype)], 4.0 * math.sqrt(k) * np.finfo(dtype).eps)


def check_probabilities(
    rows: np.ndarray,
    name: str,
    *,
    normalize: bool = False,
    check: bool = True,
    batch_shape: tuple | None = None,
    backend: str | None = None,
) -> np.ndarray:
    """Validate (or normalise) a (n, k) array of distributions, one per row.

    Returns ``rows`` unchanged when it passes, or a new normalised array
    when ``normalize`` is set. Raises ValueError naming ``name``, the first
    offending row (as an index into ``batch_shape`` when given) and what is
    wrong with it: a non-finite or negative entry, or a sum away from 1.
    ``check=False`` skips everything but the normalisation.

    The data are read once, by the ``probability_check_rows`` kernel of
    ``backend`` (float64 row sums and counts of negative entries); only an
    offending row is looked at again, to say what is wrong with it.
    """
    n, k = rows.shape
    if not check and not normalize:
        return rows
    sums, negatives = _row_stats(rows, backend)
    if check:
        _reject_bad_entries(rows, name, sums, negatives, batch_shape)
    if normalize:
        if check and k and (sums <= 0).any():
            i = int(np.argmax(sums <= 0))
            raise ValueError(
                f"{name} row {_row_label(i, batch_shape)} sums to 0 and cannot "
                "be normalized"
            )
        # Divide in float64 and round once into the input's dtype, without
        # a float64 copy of the whole array.
        scaled = np.empty(rows.shape, rows.dtype)
        with np.errstate(invalid="ignore", divide="ignore"):
            np.divide(rows, sums[:, None], out=scaled, casting="same_kind")
        for i in np.flatnonzero(np.isinf(sums)):
            scaled[i] = normalized_overflowing(rows[i])
        return scaled
    reject_bad_sums(name, sums, rows.dtype, rows.shape[1], batch_shape)
    return rows


def validate_row_stats(
    rows: np.ndarray,
    name: str,
    sums: np.ndarray,
    negatives: np.ndarray,
    batch_shape: tuple | None = None,
) -> None:
    """The checks of :func:`check_probabilities` from row statistics that a
    kernel has already gathered (float64 ``sums``, counts of ``negatives``),
    with the same errors in the same order."""
    k = rows.shape[1]
    # The common case in one pass over the statistics: every sum within
    # tolerance (NaN and inf are not) and no negative entry. This costs as
    # much as the kernel's own check for rows of 100 entries otherwise.
    if k:
        tolerance = sum_tolerance(rows.dtype, k)
        if np.all((np.abs(sums - 1.0) <= tolerance) & (negatives == 0)):
            return
    _reject_bad_entries(rows, name, sums, negatives, batch_shape)
    reject_bad_sums(name, sums, rows.dtype, k, batch_shape)


def _reject_bad_entries(rows, name, sums, negatives, batch_shape) -> None:
    # A NaN or infinite entry makes the row sum non-finite; a row of finite
    # entries whose sum overflows is left to the sum test.
    for i in np.flatnonzero(~np.isfinite(sums) | (negatives > 0)):
        row = rows[i]
        bad = ~np.isfinite(row) | (row < 0)
        if bad.any():
            j = int(np.argmax(bad))
            what = "a negative entry" if row[j] < 0 else "a non-finite entry"
            raise ValueError(
                f"{name} row {_row_label(i, batch_shape)} has {what} "
                f"({float(row[j])!r} in column {j}); probabilities must be finite "
                "and >= 0"
            )


def reject_bad_sums(name, sums, dtype, k: int, batch_shape=None) -> None:
    """Raise for the first row of ``name`` whose sum is not 1 within the
    tolerance of ``dtype`` for rows of ``k`` entries (none when k is 0)."""
    if not k:
        return
    tolerance = sum_tolerance(dtype, k)
    off = np.abs(sums - 1.0) > tolerance
    if off.any():
        i = int(np.argmax(off))
        raise ValueError(
            f"{name} row {_row_label(i, batch_shape)} sums to {float(sums[i])!r}, "
            f"not 1 (tolerance {tolerance:.1e}); pass normalize=True to divide "
            "each row by its sum"
        )


def normalized_overflowing(row: np.ndarray) -> np.ndarray:
    """``row / row.sum()`` for a row whose float64 sum overflows.

    Finite entries such as [1e308, 1e308] sum to inf, and dividing by that
    would turn the row into zeros; dividing by the largest entry first keeps
    the sum finite. A row holding inf or NaN (``check=False``) becomes NaN.
    """
    with np.errstate(invalid="ignore"):
        shrunk = row / np.max(row)
    return shrunk / shrunk.sum(dtype=np.float64)


def _row_stats(rows: np.ndarray, backend: str | None):
    """Row sums (float64) and counts of negative entries, in one pass."""
    from fastdiv._dispatch import kernel_for

    n = rows.shape[0]
    sums = np.empty(n, np.float64)
    negatives = np.empty(n, np.int64)
    if n:
        if rows.dtype not in _COMPUTE_DTYPES:
            rows = as_float_array(rows, "rows")
        rows = np.ascontiguousarray(rows)
        kernel = kernel_for("divergence", "probability_check_rows", rows.size, backend)
        kernel(rows, sums, negatives)
    return sums, negatives


def _row_label(i: int, batch_shape: tuple | None) -> str:
    """Row ``i`` of the flattened batch, as an index of the batch shape."""
    if batch_shape is None or len(batch_shape) <= 1:
        return str(int(i))
    return str(tuple(int(v) for v in np.unravel_index(i, batch_shape)))
