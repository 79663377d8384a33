"""Losses on logits, fused so that no softmax array is ever stored.

:func:`nll` (integer labels), :func:`soft_cross_entropy` (a target
distribution per row) and :func:`distill_loss` (Hinton et al.'s knowledge
distillation loss) each run one kernel that makes, per row, a pass for the
maximum, a pass for the sums of exponentials and the loss, and (with
``return_grad=True``) a pass that writes the gradient with respect to the
logits. Sums are accumulated in float64 whatever the input dtype.

Shapes: logits are ``(n, k)``, a batch of n rows over k classes (the class
axis is the last one, unlike PyTorch's axis 1), or ``(k,)``, a single row.
"""

from __future__ import annotations

import numbers

import numpy as np

from fastdiv._checks import (
    as_float_array,
    check_probabilities,
    check_temperature,
    shown,
)
from fastdiv._dispatch import kernel_for

__all__ = ["nll", "soft_cross_entropy", "distill_loss"]

_TOPIC = "losses"
_REDUCTIONS = ("mean", "sum", "none")
_DISTILL_REDUCTIONS = ("batchmean", "sum", "none")


def nll(
    logits,
    labels,
    temperature=1.0,
    *,
    ignore_index=None,
    label_smoothing=0.0,
    reduction="mean",
    return_grad=False,
    backend=None,
):
    r"""Softmax cross-entropy of logits with integer class labels.

    For a row z with label y, p = softmax(z / T) over k classes and the
    smoothing eps:

    .. math::

        \ell = (1 - \varepsilon)\,(-\log p_y)
            + \frac{\varepsilon}{k} \sum_{j=1}^{k} (-\log p_j)

    the semantics of PyTorch's ``F.cross_entropy`` with ``label_smoothing``.

    Parameters
    ----------
    logits : array_like, shape (n, k) or (k,)
        Logits, classes along the last axis; a 1-D array is one row. float32
        and float64 keep their dtype; float16 is computed in float32;
        integers and booleans in float64.
    labels : array_like of int, shape (n,) or ()
        Class of each row, in ``[0, k)`` unless equal to ``ignore_index``.
    temperature : float, default 1.0
        T > 0 and finite; the logits are divided by T (overflow-free).
    ignore_index : int, optional
        Rows with this label take no part in any term, smoothing included:
        their loss and gradient are 0 and "mean" does not count them.
    label_smoothing : float, default 0.0
        eps in [0, 1].
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" over the kept rows (NaN when no row is kept), "sum" (0 over
        no rows), or "none": the loss of each row (0 for ignored rows).
    return_grad : bool, default False
        Also return the gradient with respect to ``logits``.
    backend : {"auto", "numpy", "numba", "cython"}, optional
        Force a backend; by default :func:`fastdiv.options` or "auto".

    Returns
    -------
    loss : float or ndarray
        A NumPy scalar of the logits' dtype for "mean" and "sum"; an array
        of shape (n,) (a scalar for 1-D logits) for "none".
    grad : ndarray
        Only with ``return_grad``: d loss / d logits, the logits' shape and
        dtype, ``(softmax(z / T) - (1 - eps) onehot(y) - eps / k) / T`` per
        kept row, divided by the number of kept rows for "mean". For "none"
        it is the gradient of the sum of the per-row losses.

    Raises
    ------
    ValueError
        A label outside ``[0, k)`` that is not ``ignore_index`` (the message
        names the row), a temperature or smoothing out of range, an unknown
        reduction, or shapes that do not match.
    TypeError
        Labels that are not integers; complex or object logits.

    Notes
    -----
    No probability is clipped: a label whose logit is ``-inf`` gives an
    infinite loss, and so does any ``-inf`` logit when eps > 0; a NaN in a
    row makes its loss and gradient NaN. The gradient stays finite where a
    probability is 0.

    Examples
    --------
    >>> import numpy as np, fastdiv as fd
    >>> z = np.array([[2.0, 0.5, -1.0], [-0.5, 1.5, 0.0]])
    >>> float(fd.nll(z, [0, 1]))
    0.27383350444315174
    >>> loss, grad = fd.nll(z, [0, 1], label_smoothing=0.2, return_grad=True)
    >>> grad.shape
    (2, 3)
    """
    z, single = _logits(logits, "logits")
    n, k = z.shape
    t = check_temperature(temperature)
    eps = _unit_interval(label_smoothing, "label_smoothing")
    _check_reduction(reduction, _REDUCTIONS)
    if ignore_index is not None:
        ignore_index = _integer(ignore_index, "ignore_index")
        if not -(2**63) <= ignore_index < 2**63:
            ignore_index = None  # no int64 label can equal it
    y = _labels(labels, n, k, single, ignore_index)

    kept = n if ignore_index is None else int(np.count_nonzero(y != ignore_index))
    # With no ignore_index, -1 never matches a (checked) label.
    ignore = -1 if ignore_index is None else ignore_index
    scale = _grad_scale(reduction, kept)
    per_row, grad = _run(
        "nll_rows",
        z,
        return_grad,
        backend,
        lambda fn, loss, g: fn(z, y, t, eps, ignore, scale, loss, g),
        skip=k == 0,
    )
    return _finish(per_row, grad, reduction, kept, z.dtype, single, return_grad)


def soft_cross_entropy(
    logits,
    target_probs,
    temperature=1.0,
    *,
    reduction="mean",
    check=True,
    return_grad=False,
    backend=None,
):
    r"""Cross-entropy of softmax(logits / T) against target distributions.

    .. math::

        \ell = -\sum_{j} t_j \log \mathrm{softmax}(z / T)_j

    Parameters
    ----------
    logits : array_like, shape (n, k) or (k,)
        Logits, classes along the last axis; dtypes as in :func:`nll`.
    target_probs : array_like, same shape as ``logits``
        One distribution per row: finite, >= 0, summing to 1 within the
        dtype's tolerance. Converted to the logits' dtype after the check.
    temperature : float, default 1.0
        T > 0 and finite.
    reduction : {"mean", "sum", "none"}, default "mean"
        Mean over rows (NaN for no rows), sum, or the loss of each row.
    check : bool, default True
        Validate ``target_probs``; False skips it for trusted data.
    return_grad : bool, default False
        Also return the gradient with respect to ``logits``.
    backend : {"auto", "numpy", "numba", "cython"}, optional
        Force a backend.

    Returns
    -------
    loss : float or ndarray
        As in :func:`nll`.
    grad : ndarray
        Only with ``return_grad``: ``(sum(t) softmax(z / T) - t) / T`` per
        row (``sum(t)`` is 1 for checked targets), divided by n for "mean".

    Raises
    ------
    ValueError
        A target row that is negative, non-finite or does not sum to 1 (the
        message names ``target_probs``, the row and its sum), shapes that
        differ, a bad temperature or reduction.

    Notes
    -----
    An entry with target probability exactly 0 contributes 0, even where
    its logit is ``-inf`` (a masked class); a target > 0 on a ``-inf`` logit
    gives ``+inf``. The gradient is finite in both cases.

    Examples
    --------
    >>> import numpy as np, fastdiv as fd
    >>> z = np.array([[-np.inf, 0.0], [0.0, 0.0]])
    >>> t = np.array([[0.0, 1.0], [0.5, 0.5]])
    >>> fd.soft_cross_entropy(z, t, reduction="none")
    array([0.        , 0.69314718])
    """
    z, single = _logits(logits, "logits")
    n, k = z.shape
    target = _same_shape(target_probs, "target_probs", z, single)
    target = check_probabilities(target, "target_probs", check=check)
    target = np.ascontiguousarray(target, dtype=z.dtype)
    t = check_temperature(temperature)
    _check_reduction(reduction, _REDUCTIONS)

    scale = _grad_scale(reduction, n)
    per_row, grad = _run(
        "soft_ce_rows",
        z,
        return_grad,
        backend,
        lambda fn, loss, g: fn(z, target, t, scale, loss, g),
        skip=k == 0,
    )
    return _finish(per_row, grad, reduction, n, z.dtype, single, return_grad)


def distill_loss(
    student_logits,
    teacher_logits,
    labels=None,
    temperature=4.0,
    alpha=0.9,
    reduction="batchmean",
    return_grad=False,
    backend=None,
):
    r"""Knowledge-distillation loss of Hinton et al. (2015), on logits.

    With q_t = softmax(teacher / T), q_s = softmax(student / T) and
    p = softmax(student) (T = 1), per row:

    .. math::

        \ell = \alpha\, T^2\, \mathrm{KL}(q_t \,\|\, q_s)
            + (1 - \alpha)\,(-\log p_y)

    The KL term is summed over the classes and, with "batchmean", averaged
    over the rows (PyTorch's ``kl_div(..., reduction="batchmean")``), not
    over rows x classes. T^2 keeps the soft term's gradient on the scale of
    the hard one as T changes.

    Parameters
    ----------
    student_logits : array_like, shape (n, k) or (k,)
        Logits of the model being trained; the result and gradient take
        their dtype (dtypes as in :func:`nll`).
    teacher_logits : array_like, same shape
        Logits of the teacher; converted to the student's dtype.
    labels : array_like of int, shape (n,) or (), optional
        Hard labels in ``[0, k)``; None leaves the hard term out.
    temperature : float, default 4.0
        T > 0 and finite, for the soft term only.
    alpha : float, default 0.9
        Weight of the soft term, in [0, 1]. A term whose weight is 0 is
        left out (an infinite KL or label loss times 0 is not NaN here).
    reduction : {"batchmean", "sum", "none"}, default "batchmean"
        Mean over rows (NaN for no rows), sum, or the loss of each row.
    return_grad : bool, default False
        Also return the gradient with respect to ``student_logits``:
        ``alpha T (q_s - q_t) + (1 - alpha) (p - onehot(y))`` per row,
        divided by n for "batchmean".
    backend : {"auto", "numpy", "numba", "cython"}, optional
        Force a backend.

    Returns
    -------
    loss : float or ndarray
        A NumPy scalar for "batchmean" and "sum", an array for "none".
    grad : ndarray
        Only with ``return_grad``.

    Raises
    ------
    ValueError
        Shapes that differ, labels out of range, a temperature that is not
        finite and > 0, alpha outside [0, 1], an unknown reduction.

    Notes
    -----
    KL sums q_t (log q_t - log q_s) over the classes where q_t != 0: a
    teacher logit of ``-inf`` contributes nothing, a student logit of
    ``-inf`` where q_t > 0 makes the loss ``+inf`` (the gradient stays
    finite). T^2 KL is evaluated as T (T KL), which cannot overflow where
    the product is finite. Where the logit differences t_j - s_j spread over
    at most T (every row at a large T, and a student close to its teacher at
    any T) the KL is taken in a form without cancellation: T^2 KL tends to
    Var(t - s) / 2 under q_s as T grows, and stays accurate to a few ulps up
    to T = 1e300, where the plain difference of logs would lose every digit
    past T = 1e8.

    Examples
    --------
    >>> import numpy as np, fastdiv as fd
    >>> s = np.array([[1.0, 2.0, 0.5], [0.2, -1.0, 3.0]])
    >>> t = np.array([[2.0, 1.0, 0.1], [0.0, 0.5, 2.5]])
    >>> round(float(fd.distill_loss(s, t, [1, 2], temperature=4.0, alpha=0.9)), 12)
    0.355913081901
    """
    z, single = _logits(student_logits, "student_logits")
    n, k = z.shape
    teacher = _same_shape(teacher_logits, "teacher_logits", z, single)
    teacher = np.ascontiguousarray(teacher, dtype=z.dtype)
    t = check_temperature(temperature)
    a = _unit_interval(alpha, "alpha")
    _check_reduction(reduction, _DISTILL_REDUCTIONS)
    if labels is None:
        y = np.empty(0, np.int64)
    else:
        y = _labels(labels, n, k, single, None)

    scale = _grad_scale(reduction, n)
    per_row, grad = _run(
        "distill_rows",
        z,
        return_grad,
        backend,
        lambda fn, loss, g: fn(z, teacher, y, t, a, scale, loss, g),
        skip=k == 0,
    )
    return _finish(per_row, grad, reduction, n, z.dtype, single, return_grad)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _run(kernel, z, return_grad, backend, call, *, skip):
    """Allocate the per-row losses (float64) and the gradient, run the
    kernel; ``skip`` (no classes) leaves every loss and gradient at 0."""
    n, k = z.shape
    fn = kernel_for(_TOPIC, kernel, z.size, backend)
    loss = np.zeros(n, np.float64)
    # Every kernel writes every gradient entry (ignored rows included), and
    # with no rows or no classes there is none: no need to clear the pages.
    grad = np.empty((n, k) if return_grad else (0, k), z.dtype)
    if n and not skip:
        call(fn, loss, grad)
    return loss, grad


def _finish(per_row, grad, reduction, count, dtype, single, return_grad):
    """Reduce the per-row losses and shape the results."""
    if reduction == "none":
        # float64 losses beyond float32's range are inf in float32.
        with np.errstate(over="ignore"):
            loss = per_row.astype(dtype)
        if single:
            loss = loss[0]
    else:
        total = per_row.sum()
        # A mean over no rows is NaN, without a warning.
        if reduction != "sum":
            total = total / count if count else np.nan
        with np.errstate(over="ignore"):
            loss = dtype.type(total)
    if not return_grad:
        return loss
    return loss, grad[0] if single else grad


def _grad_scale(reduction: str, count: int) -> float:
    """The factor of each row's gradient: 1 / count for a mean."""
    if reduction in ("mean", "batchmean"):
        return 1.0 / count if count else 0.0
    return 1.0


def _logits(x, name: str):
    """A C-contiguous (n, k) float array and whether the input was 1-D."""
    arr = as_float_array(x, name)
    if arr.ndim not in (1, 2):
        raise ValueError(
            f"{name} must be 1-D (one row) or 2-D (rows x classes), got shape "
            f"{arr.shape}"
        )
    single = arr.ndim == 1
    return np.ascontiguousarray(arr.reshape(1, -1) if single else arr), single


def _same_shape(x, name: str, z: np.ndarray, single: bool) -> np.ndarray:
    """``x`` as a float (n, k) array, which must have the logits' shape."""
    arr = as_float_array(x, name)
    want = z.shape[1:] if single else z.shape
    if arr.shape != want:
        raise ValueError(
            f"{name} has shape {arr.shape}, but the logits have shape {want}"
        )
    return arr.reshape(z.shape)


def _labels(labels, n: int, k: int, single: bool, ignore_index) -> np.ndarray:
    """Integer labels as a contiguous int64 (n,) array, checked against k."""
    arr = np.asarray(labels)
    if arr.size == 0 and arr.dtype.kind in "fb":
        # np.asarray([]) is float64: no rows have no labels of any type.
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got an array of dtype {arr.dtype}")
    want = () if single else (n,)
    if single and arr.shape == (1,):
        arr = arr.reshape(())
    if arr.shape != want:
        raise ValueError(
            f"labels has shape {arr.shape}, but the logits have {n} row(s): "
            f"expected shape {want}"
        )
    flat = arr.reshape(-1)
    # Values beyond int64 can only be out of range; reject them before the
    # conversion could wrap them into range.
    if flat.dtype.kind == "u" and flat.size and flat.max() > np.iinfo(np.int64).max:
        row = int(np.argmax(flat > np.iinfo(np.int64).max))
        raise ValueError(f"labels row {row} has label {flat[row]}, outside [0, {k})")
    y = np.ascontiguousarray(flat, dtype=np.int64)
    bad = (y < 0) | (y >= k)
    if ignore_index is not None:
        bad &= y != ignore_index
    if bad.any():
        row = int(np.argmax(bad))
        extra = (
            "" if ignore_index is None else f" and is not ignore_index={ignore_index}"
        )
        raise ValueError(
            f"labels row {row} has label {y[row]}, outside [0, {k}){extra}"
        )
    return y


def _integer(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer or None, got {value!r}")
    return int(value)


def _unit_interval(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not 0.0 <= v <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def _check_reduction(reduction, allowed: tuple) -> None:
    # A string first: an array such as np.array(["mean"]) compares equal.
    if not isinstance(reduction, str) or reduction not in allowed:
        raise ValueError(
            f"reduction must be one of {', '.join(map(repr, allowed))}, "
            f"got {shown(reduction)}"
        )
