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
    TypeError naming the argument.
    """
    arr = np.asarray(x)
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


def check_temperature(temperature, name: str = "temperature") -> float:
    """Return the temperature as a Python float after checking it is a finite
    real number greater than 0."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(
            f"{name} must be a real number, got {type(temperature).__name__} "
            f"{temperature!r}"
        )
    value = float(temperature)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be finite and > 0, got {temperature!r}")
    return value


def normalize_axis(axis, ndim: int, name: str = "axis") -> int:
    """A non-negative axis index; AxisError (a ValueError) if out of range."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {axis!r}")
    return normalize_axis_index(int(axis), ndim, msg_prefix=name)


def to_rows(x: np.ndarray, axis: int) -> np.ndarray:
    """Move ``axis`` last and flatten the rest: a C-contiguous (n, k) array.

    The result is a view of ``x`` when ``x`` is already laid out that way and
    a copy otherwise; callers must never write to it.
    """
    moved = np.moveaxis(x, axis, -1)
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
        raise ValueError(
            f"{name} has dtype {out.dtype}, but the result has dtype {dtype}"
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
