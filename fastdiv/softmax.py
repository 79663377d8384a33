"""softmax, log_softmax and logsumexp with a temperature, on any axis."""

from __future__ import annotations

import numpy as np

from fastdiv._checks import (
    as_float_array,
    check_out,
    check_temperature,
    kernel_target,
    normalize_axis,
    to_rows,
)
from fastdiv._dispatch import kernel_for

__all__ = ["softmax", "log_softmax", "logsumexp"]

_TOPIC = "softmax"


def softmax(x, temperature=1.0, axis=-1, *, out=None, backend=None):
    r"""Softmax of ``x / temperature`` along an axis.

    .. math::

        \mathrm{softmax}(z, T)_i = \frac{e^{z_i / T}}{\sum_j e^{z_j / T}}

    Parameters
    ----------
    x : array_like
        Logits. float32 and float64 keep their dtype; float16 is computed and
        returned in float32; integers and booleans in float64.
    temperature : float, default 1.0
        T > 0 and finite. Large T flattens the distribution towards uniform,
        small T sharpens it towards the one-hot argmax; neither overflows.
    axis : int or None, default -1
        Axis along which the entries sum to 1; None means the whole array.
    out : ndarray, optional
        Array of the result's shape and dtype to write into.
    backend : {"auto", "numpy", "numba", "cython"}, optional
        Force a backend; by default :func:`fastdiv.options` or "auto".

    Returns
    -------
    ndarray
        Same shape as ``x``; each slice along ``axis`` sums to 1.

    Notes
    -----
    The row maximum is subtracted before exponentiating; for T >= 1 the
    logits are divided by T first, for T < 1 after the subtraction, so no
    step can overflow. ``-inf`` logits get probability 0. A row with one
    ``+inf`` is the one-hot limit; two or more ``+inf``, all ``-inf``, or any
    NaN make the whole row NaN. Sums are accumulated in float64.

    Examples
    --------
    >>> import numpy as np, fastdiv as fd
    >>> fd.softmax(np.array([1.0, 2.0, 3.0]), temperature=2.0).round(4)
    array([0.1863, 0.3072, 0.5065])
    """
    return _map_rows("softmax_rows", x, temperature, axis, out, backend)


def log_softmax(x, temperature=1.0, axis=-1, *, out=None, backend=None):
    r"""Logarithm of the softmax of ``x / temperature`` along an axis.

    .. math::

        \log \mathrm{softmax}(z, T)_i = \frac{z_i}{T}
            - \log \sum_j e^{z_j / T}

    Parameters
    ----------
    x : array_like
        Logits; dtypes as in :func:`softmax`.
    temperature : float, default 1.0
        T > 0 and finite.
    axis : int or None, default -1
        Axis of the distribution; None means the whole array.
    out : ndarray, optional
        Array of the result's shape and dtype to write into.
    backend : {"auto", "numpy", "numba", "cython"}, optional
        Force a backend.

    Returns
    -------
    ndarray
        Same shape as ``x``.

    Notes
    -----
    Computed directly as ``s - log1p(...)`` of the shifted logits ``s``, not
    as ``log(softmax(x))``: small probabilities keep their full precision
    (``log_softmax([40, 0])`` is ``[-4.25e-18, -40]``, not ``[0, -40]``).
    Infinities and NaN follow :func:`softmax`: the one-hot limit gives 0 and
    ``-inf``.

    Examples
    --------
    >>> import numpy as np, fastdiv as fd
    >>> fd.log_softmax(np.array([0.0, 0.0]))
    array([-0.69314718, -0.69314718])
    """
    return _map_rows("log_softmax_rows", x, temperature, axis, out, backend)


def logsumexp(
    x,
    temperature=1.0,
    axis=-1,
    *,
    b=None,
    keepdims=False,
    return_sign=False,
    out=None,
    backend=None,
):
    r"""Logarithm of the sum of exponentials of ``x / temperature``.

    .. math::

        \mathrm{logsumexp}(z, T) = \log \sum_j b_j e^{z_j / T}

    Parameters
    ----------
    x : array_like
        Input values; dtypes as in :func:`softmax`.
    temperature : float, default 1.0
        T > 0 and finite.
    axis : int or None, default -1
        Axis to reduce; None reduces the whole array.
    b : array_like, optional
        Weights broadcastable to ``x``, possibly negative, as in
        :func:`scipy.special.logsumexp`. An entry whose weight is 0 takes no
        part in the sum even when it is infinite or NaN.
    keepdims : bool, default False
        Keep the reduced axis with length 1.
    return_sign : bool, default False
        Also return the sign of the sum. Without it a negative sum gives NaN.
    out : ndarray, optional
        Array of the result's shape and dtype for the value (not the sign).
    backend : {"auto", "numpy", "numba", "cython"}, optional
        Force a backend.

    Returns
    -------
    res : ndarray or float
        ``log|sum|``; a NumPy scalar when the result has no dimensions.
    sgn : ndarray or float
        Only with ``return_sign``: +1 or -1, 0 for a zero (empty or all
        ``-inf``) sum, NaN where ``res`` is NaN.

    Notes
    -----
    An empty reduction gives ``-inf``. Terms below the rounding of the
    largest one still count (``logsumexp([0, -40])`` is ``4.25e-18``).

    Examples
    --------
    >>> import numpy as np, fastdiv as fd
    >>> round(float(fd.logsumexp(np.array([1.0, 2.0, 3.0]))), 12)
    3.407605964444
    >>> value, sign = fd.logsumexp(np.array([1.0, 2.0]),
    ...                            b=np.array([1.0, -3.0]), return_sign=True)
    >>> round(float(value), 12), float(sign)
    (2.96778981744, -1.0)
    """
    arr = as_float_array(x, "x")
    weights = None
    if b is not None:
        weights = as_float_array(b, "b")
        dtype = np.promote_types(arr.dtype, weights.dtype)
        arr = arr.astype(dtype, copy=False)
        try:
            weights = np.broadcast_to(weights.astype(dtype, copy=False), arr.shape)
        except ValueError:
            raise ValueError(
                f"b of shape {np.shape(b)} does not broadcast to x of shape {arr.shape}"
            ) from None
    t = check_temperature(temperature)
    x_ndim = arr.ndim
    arr, ax = _rows_axis(arr, axis)
    if weights is not None:
        weights = weights.reshape(arr.shape)  # flattened like x for axis=None
    shape = arr.shape[:ax] + arr.shape[ax + 1 :]
    if keepdims:
        shape = arr.shape[:ax] + (1,) + arr.shape[ax + 1 :]
    if axis is None:
        shape = (1,) * x_ndim if keepdims else ()
    out = check_out(out, shape, arr.dtype)

    rows = to_rows(arr, ax)
    n = rows.shape[0]
    fn = kernel_for(
        _TOPIC,
        "logsumexp_rows" if weights is None else "logsumexp_weighted_rows",
        rows.size,
        backend,
    )
    res = kernel_target(out, (n,), arr.dtype, arr, rows)
    if weights is None:
        if n:
            fn(rows, t, res)
        # The sum of exponentials is positive unless it is 0 (empty or all
        # -inf) or the row holds NaN.
        with np.errstate(invalid="ignore"):
            sgn = np.where(res == -np.inf, 0.0, 1.0).astype(arr.dtype)
        sgn[np.isnan(res)] = np.nan
    else:
        brows = to_rows(weights, ax)
        sgn = np.empty((n,), arr.dtype)
        if n:
            fn(rows, brows, t, res, sgn)
        # A NaN value has a NaN sign, as in SciPy: inf - inf (weights of
        # both signs at +inf entries) left the kernels' sign of a zero sum.
        sgn[np.isnan(res)] = np.nan
        if not return_sign:
            res[sgn < 0] = np.nan

    res = res.reshape(shape)
    sgn = sgn.reshape(shape)
    if out is not None:
        if res is not out and not np.shares_memory(res, out):
            out[...] = res
        res = out
    if res.ndim == 0:
        res, sgn = res[()], sgn[()]
    return (res, sgn) if return_sign else res


def _rows_axis(arr: np.ndarray, axis):
    """The array and the axis to reduce: None flattens, a scalar is one row."""
    if axis is None:
        return arr.reshape(-1), 0
    if arr.ndim == 0:
        arr = arr.reshape(1)
    return arr, normalize_axis(axis, arr.ndim)


def _map_rows(kernel, x, temperature, axis, out, backend):
    """Run a shape-preserving row kernel along ``axis`` of ``x``."""
    arr = as_float_array(x, "x")
    t = check_temperature(temperature)
    shape = arr.shape
    out = check_out(out, shape, arr.dtype)
    flat, ax = _rows_axis(arr, axis)

    rows = to_rows(flat, ax)
    fn = kernel_for(_TOPIC, kernel, rows.size, backend)
    # The kernel writes straight into ``out`` only when the reduced axis is
    # already the last one, so that out's layout is the kernel's.
    direct = out if ax == flat.ndim - 1 or axis is None else None
    res = kernel_target(direct, rows.shape, arr.dtype, arr, rows)
    if res.size:
        fn(rows, t, res)

    if ax == flat.ndim - 1:
        res = res.reshape(shape)
    else:
        moved = np.moveaxis(flat, ax, -1).shape
        res = np.moveaxis(res.reshape(moved), -1, ax).reshape(shape)
    if out is None:
        return res
    if not np.shares_memory(res, out):
        out[...] = res
    return out
