"""Row-wise entropy, cross-entropy, KL and JS divergences of distributions."""

from __future__ import annotations

import math
import numbers

import numpy as np

from fastdiv._checks import (
    as_float_array,
    check_out,
    check_probabilities,
    normalize_axis,
    shown,
    to_rows,
    validate_row_stats,
)
from fastdiv._dispatch import kernel_for

__all__ = ["entropy", "cross_entropy", "kl_div", "js_div", "js_distance"]

_TOPIC = "divergence"


def entropy(
    p,
    *,
    axis=-1,
    base=None,
    keepdims=False,
    normalize=False,
    check=True,
    out=None,
    backend=None,
):
    r"""Shannon entropy of each distribution along an axis.

    .. math::

        H(p) = -\sum_i p_i \log p_i

    Parameters
    ----------
    p : array_like
        Probabilities; every slice along ``axis`` is one distribution.
        float32 stays float32; float16 is computed in float32; integers and
        booleans in float64.
    axis : int or None, default -1
        Axis of the distributions; None makes the whole array one.
    base : float, optional
        Base of the logarithm (> 0, != 1); natural log by default.
    keepdims : bool, default False
        Keep the reduced axis with length 1.
    normalize : bool, default False
        Divide each distribution by its sum first (an all-zero one is then
        an error) instead of requiring it to sum to 1.
    check : bool, default True
        Check that entries are finite and >= 0 and that each distribution
        sums to 1 within the tolerance of its dtype (1e-6 for float32,
        1e-12 for float64, wider for very long rows). ``check=False`` skips
        that pass for callers who know their data: a NaN entry then makes
        its result NaN.
    out : ndarray, optional
        Array of the result's shape and dtype to write into.
    backend : {"auto", "numpy", "numba", "cython"}, optional
        Force a backend; by default :func:`fastdiv.options` or "auto".

    Returns
    -------
    ndarray or scalar
        The entropies, of the input's dtype (float32 or float64); a NumPy
        scalar when the result has no dimensions.

    Raises
    ------
    ValueError
        A distribution with a negative or non-finite entry, or that does not
        sum to 1; the message names the row and its sum. A bad ``base``.
    TypeError
        Complex or non-numeric input.

    Notes
    -----
    ``0 log 0 = 0``: zero entries contribute nothing. An empty distribution
    has entropy 0. Logarithms are summed in float64, in a fixed order, even
    for float32 input, and the result is rounded once.

    Examples
    --------
    >>> import numpy as np, fastdiv as fd
    >>> float(fd.entropy(np.array([0.5, 0.5]), base=2))
    1.0
    >>> fd.entropy(np.array([[1.0, 0.0], [0.25, 0.75]])).round(4)
    array([0.    , 0.5623])
    """
    return _reduce(
        "entropy_rows",
        {"p": p},
        axis,
        base,
        keepdims,
        normalize,
        check,
        out,
        backend,
    )


def cross_entropy(
    p,
    q,
    *,
    axis=-1,
    base=None,
    keepdims=False,
    normalize=False,
    check=True,
    out=None,
    backend=None,
):
    r"""Cross-entropy of ``q`` relative to ``p``, distribution by distribution.

    .. math::

        H(p, q) = -\sum_i p_i \log q_i = H(p) + \mathrm{KL}(p \,\|\, q)

    Parameters
    ----------
    p, q : array_like
        Probabilities that broadcast against each other (an (n, k) batch
        against one (k,) distribution, say). The result is float32 when
        both are float32, float64 otherwise.
    axis, base, keepdims, normalize, check, out, backend
        As in :func:`entropy`; ``normalize`` and ``check`` apply to both.

    Returns
    -------
    ndarray or scalar
        The cross-entropies.

    Notes
    -----
    A term with ``p_i = 0`` is 0 even where ``q_i = 0``; ``p_i > 0`` where
    ``q_i = 0`` makes the result ``+inf``. No epsilon is added anywhere.
    With a one-hot ``p`` this is the negative log-likelihood
    :math:`-\log q_y`.

    Examples
    --------
    >>> import numpy as np, fastdiv as fd
    >>> float(fd.cross_entropy(np.array([0.0, 1.0]), np.array([0.5, 0.5])))
    0.6931471805599453
    """
    return _reduce(
        "cross_entropy_rows",
        {"p": p, "q": q},
        axis,
        base,
        keepdims,
        normalize,
        check,
        out,
        backend,
    )


def kl_div(
    p,
    q,
    *,
    axis=-1,
    base=None,
    keepdims=False,
    normalize=False,
    check=True,
    out=None,
    backend=None,
):
    r"""Kullback-Leibler divergence of ``q`` from ``p``, row by row.

    .. math::

        \mathrm{KL}(p \,\|\, q) = \sum_i p_i \log \frac{p_i}{q_i}

    Parameters
    ----------
    p, q : array_like
        Probabilities that broadcast against each other; dtypes as in
        :func:`cross_entropy`.
    axis, base, keepdims, normalize, check, out, backend
        As in :func:`entropy`.

    Returns
    -------
    ndarray or scalar
        The divergences, >= 0 for valid distributions: with ``check`` or
        ``normalize``, a sum that rounding leaves a few ulp below 0 (rows
        that are nearly equal) is returned as 0.

    Notes
    -----
    ``0 log(0 / q) = 0`` for every ``q``, 0 included; ``p_i > 0`` where
    ``q_i = 0`` gives ``+inf``. Each term is ``p log(p / q)`` with the ratio
    taken first, which is exact where ``p`` and ``q`` are close; where the
    ratio would overflow or underflow (a subnormal ``q``) the difference of
    the logarithms is used. Unlike :func:`scipy.stats.entropy`, ``q`` is
    never silently renormalised: ``normalize=True`` asks for it.

    Examples
    --------
    >>> import numpy as np, fastdiv as fd
    >>> p = np.array([[0.5, 0.5, 0.0], [0.0, 0.1, 0.9]])
    >>> q = np.array([[0.5, 0.5, 0.0], [0.1, 0.1, 0.8]])
    >>> fd.kl_div(p, q).round(6)
    array([0.      , 0.106005])
    """
    return _reduce(
        "kl_rows",
        {"p": p, "q": q},
        axis,
        base,
        keepdims,
        normalize,
        check,
        out,
        backend,
    )


def js_div(
    p,
    q,
    *,
    axis=-1,
    base=None,
    keepdims=False,
    normalize=False,
    check=True,
    out=None,
    backend=None,
):
    r"""Jensen-Shannon divergence between ``p`` and ``q``, row by row.

    .. math::

        \mathrm{JS}(p, q) = \frac{1}{2} \sum_i \left(
            p_i \log \frac{2 p_i}{p_i + q_i}
            + q_i \log \frac{2 q_i}{p_i + q_i} \right)

    which is :math:`\tfrac12 \mathrm{KL}(p \| m) + \tfrac12 \mathrm{KL}(q \| m)`
    with :math:`m = (p + q) / 2`, in :math:`[0, \log 2]`. Where
    :math:`|p_i - q_i| \le (p_i + q_i) / 16` the term comes from its series
    in :math:`d = (p_i - q_i) / (p_i + q_i)`, whose two logarithms would
    otherwise cancel to :math:`d^2`: the divergence of near-identical rows
    keeps its relative accuracy (about 1e-14, where the logarithms alone
    leave 1e-4 at :math:`d = 10^{-6}`). JS(p, p) is exactly 0.

    Parameters
    ----------
    p, q : array_like
        Probabilities that broadcast against each other; dtypes as in
        :func:`cross_entropy`.
    axis, base, keepdims, normalize, check, out, backend
        As in :func:`entropy`.

    Returns
    -------
    ndarray or scalar
        The divergences, never negative.

    Notes
    -----
    Computed per entry from the formula above, never through ``m``; an
    entry with ``p_i = q_i`` contributes exactly 0, so ``JS(p, p) == 0``.
    Rounding can leave a sum a few ulp below 0: it is clamped to 0 (NaN
    stays NaN). Symmetric in ``p`` and ``q`` up to rounding.

    Examples
    --------
    >>> import numpy as np, fastdiv as fd
    >>> float(fd.js_div(np.array([1.0, 0.0]), np.array([0.0, 1.0]), base=2))
    1.0
    """
    return _reduce(
        "js_rows",
        {"p": p, "q": q},
        axis,
        base,
        keepdims,
        normalize,
        check,
        out,
        backend,
    )


def js_distance(
    p,
    q,
    *,
    axis=-1,
    base=None,
    keepdims=False,
    normalize=False,
    check=True,
    out=None,
    backend=None,
):
    r"""Jensen-Shannon distance: the square root of :func:`js_div`.

    .. math::

        d_{JS}(p, q) = \sqrt{\mathrm{JS}(p, q)}

    a metric on distributions, in :math:`[0, 1]` with ``base=2``.

    Parameters
    ----------
    p, q : array_like
        Probabilities that broadcast against each other; dtypes as in
        :func:`cross_entropy`.
    axis, base, keepdims, normalize, check, out, backend
        As in :func:`entropy`, except that ``base`` must be > 1 (a smaller
        base makes the divergence negative).

    Returns
    -------
    ndarray or scalar
        The distances.

    Notes
    -----
    The divergence is clamped at 0 before the square root, so two almost
    identical distributions give a tiny distance, never NaN (SciPy's
    ``jensenshannon`` can return NaN there). Unlike SciPy, the inputs are
    not silently normalised.

    Examples
    --------
    >>> import numpy as np, fastdiv as fd
    >>> p = np.array([0.49999999999999994, 0.5])
    >>> fd.js_distance(p, p[::-1]) < 1e-7
    np.True_
    """
    return _reduce(
        "js_rows",
        {"p": p, "q": q},
        axis,
        base,
        keepdims,
        normalize,
        check,
        out,
        backend,
        sqrt=True,
    )


# --------------------------------------------------------------------------
# The shared driver
# --------------------------------------------------------------------------


def _log_base(base, sqrt: bool, name: str = "base") -> float | None:
    """log(base) as a Python float, or None for the natural logarithm.

    ``name`` is the argument the messages name (the command line's --base).
    """
    if base is None:
        return None
    if isinstance(base, bool) or not isinstance(base, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {shown(base)}")
    try:
        value = float(base)
    except OverflowError:  # an int such as 10**400
        value = math.inf
    if not (math.isfinite(value) and value > 0.0 and value != 1.0):
        raise ValueError(f"{name} must be finite, > 0 and != 1, got {shown(base)}")
    if sqrt and value < 1.0:
        raise ValueError(
            f"{name} must be > 1 for js_distance (got {shown(base)}): in a base below "
            "1 the divergence is negative and has no square root"
        )
    return math.log(value)


# Kernels whose result is >= 0 for any pair of distributions.
_NON_NEGATIVE = frozenset({"kl_rows"})


def _reduce(
    kernel, inputs, axis, base, keepdims, normalize, check, out, backend, sqrt=False
):
    """Check and lay out the inputs, run one row kernel, finish the result.

    Each input is validated on its own rows, before broadcasting, so an
    error names the row of that argument. An input that is a single
    distribution (after broadcasting the other axes) is passed to the
    kernel as one (1, k) row instead of n copies of it.
    """
    names = list(inputs)
    arrays = [as_float_array(inputs[name], name) for name in names]
    dtype = np.result_type(*arrays)
    log_base = _log_base(base, sqrt)
    try:
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError:
        raise ValueError(
            " and ".join(
                f"{n} of shape {a.shape}" for n, a in zip(names, arrays, strict=True)
            )
            + " do not broadcast together"
        ) from None

    ndim = len(shape)
    if axis is None:
        # The whole (broadcast) array is one distribution.
        arrays = [np.broadcast_to(a, shape).reshape(-1) for a in arrays]
        shape, ax = (math.prod(shape),), 0
        out_shape = (1,) * ndim if keepdims else ()
    else:
        if ndim == 0:
            arrays = [a.reshape(1) for a in arrays]
            shape, ndim = (1,), 1
        ax = normalize_axis(axis, ndim)
        kept = shape[:ax] + ((1,) if keepdims else ()) + shape[ax + 1 :]
        out_shape = kept
    out = check_out(out, out_shape, dtype)

    k = shape[ax]
    batch = shape[:ax] + shape[ax + 1 :]
    n = math.prod(batch)
    res = np.empty(n, np.float64)
    own = [_own_rows(a, ax, shape) for a in arrays]
    if check and not normalize and n and all(r.shape[0] in (n, 1) for r, _ in own):
        # Each input is one row or a row per result: the kernel checks each
        # row in the pass that reads it for the divergence (one read of the
        # data, not two), and the checks are judged before any result is.
        rows = [r.astype(dtype, copy=False) for r, _ in own]
        stats = [
            (np.empty(r.shape[0], np.float64), np.empty(r.shape[0], np.int64))
            for r in rows
        ]
        fn = kernel_for(_TOPIC, kernel + "_checked", n * k, backend)
        fn(*rows, res, *(a for pair in stats for a in pair))
        # Judged on each input's own rows: a float32 input keeps float32's
        # tolerance for its sums when the other input makes the work float64.
        for (r, own_batch), name, (sums, negatives) in zip(
            own, names, stats, strict=True
        ):
            validate_row_stats(r, name, sums, negatives, own_batch)
    else:
        rows = [
            _checked_rows(r, own_batch, name, batch, dtype, normalize, check, backend)
            for (r, own_batch), name in zip(own, names, strict=True)
        ]
        if n:
            fn = kernel_for(_TOPIC, kernel, n * k, backend)
            fn(*rows, res)
    if kernel in _NON_NEGATIVE and (check or normalize):
        # Gibbs' inequality for distributions that were checked or made so:
        # a sum that rounding leaves a few ulp below 0 (near-identical rows)
        # is 0. Unchecked input keeps its sign, which may tell of rows that
        # do not sum to 1. NaN stays NaN.
        np.maximum(res, 0.0, out=res)
    if log_base is not None:
        res /= log_base
    if sqrt:
        np.sqrt(res, out=res)

    res = res.astype(dtype, copy=False).reshape(out_shape)
    if out is not None:
        out[...] = res
        return out
    return res[()] if res.ndim == 0 else res


def _own_rows(a, ax, shape):
    """``a`` as rows of its own batch (before broadcasting against the
    other input), and that batch's shape."""
    ndim = len(shape)
    a = a.reshape((1,) * (ndim - a.ndim) + a.shape)
    k = shape[ax]
    if a.shape[ax] != k:
        # Broadcast along the distributions' own axis: materialise it, since
        # that is the distribution that has to be checked.
        a = np.broadcast_to(a, a.shape[:ax] + (k,) + a.shape[ax + 1 :])
    return to_rows(a, ax), a.shape[:ax] + a.shape[ax + 1 :]


def _checked_rows(rows, own_batch, name, batch, dtype, normalize, check, backend):
    """Checked (or normalised) rows of one input as kernel rows: (n, k), or
    (1, k) when it is one distribution."""
    k = rows.shape[1]
    if normalize:
        # Normalised rows stay in float64 even for float32 input: rounding
        # them back to float32 would move p - q by an ulp, which matters for
        # near-identical rows (JS ~ (p - q)^2); the result is still float32.
        dtype = np.dtype(np.float64)
        rows = rows.astype(dtype, copy=False)
    rows = check_probabilities(
        rows,
        name,
        normalize=normalize,
        check=check,
        batch_shape=own_batch,
        backend=backend,
    )
    rows = rows.astype(dtype, copy=False)

    n = math.prod(batch)
    if rows.shape[0] == n or rows.shape[0] == 1:
        return rows
    full = np.broadcast_to(rows.reshape(own_batch + (k,)), batch + (k,))
    return np.ascontiguousarray(full).reshape(n, k)
