"""fastdiv on Dask arrays: batch softmax, pairwise matrices and nearest rows.

Every function here builds a lazy Dask graph whose tasks call fastdiv's
in-memory functions on one chunk (or one pair of chunks) each, so the
results equal those of :mod:`fastdiv` on the whole arrays. Nothing is
computed until the caller asks (``.compute()``, :func:`dask.compute`,
``client.compute``); the graph runs on whatever scheduler Dask picks: the
threaded scheduler of a laptop by default, or the active
``distributed.Client`` of a cluster.

Layout the functions require, checked before any work is sent:

* :func:`softmax`, :func:`log_softmax`, :func:`logsumexp`: the reduced axis
  in one chunk (``x.rechunk({axis: -1})``); any chunking of the other axes.
* :func:`pairwise`, :func:`nearest`: P and Q chunked by rows only, the
  category axis in one chunk (``P.rechunk({1: -1})``). Chunks may be NumPy
  arrays or SciPy sparse matrices (``da.from_array(csr, chunks=(r, -1))``
  or ``P.map_blocks(scipy.sparse.csr_matrix)``).

Threads. Dask already runs one task per worker thread (and the threaded
scheduler one per core), so each task runs fastdiv's kernels on a single
thread by default (``fastdiv.options(threads=1)`` around the task): more
would oversubscribe the cores, two kernels of two tasks competing for each
core. ``threads=`` changes that, for a cluster whose workers have one
thread each but several cores. The BLAS products of "kl" and
"cross_entropy" follow the BLAS library's own setting, which
``distributed``'s nanny sets to one thread in worker processes.
"""

from __future__ import annotations

import math
import numbers
import operator
import re

import numpy as np

try:
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "fastdiv.dask needs Dask: pip install 'fastdiv[dask]' (dask[array] and "
        "distributed)"
    ) from exc

import fastdiv
from fastdiv._checks import (
    as_float_array,
    check_temperature,
    normalize_axis,
    shown,
)
from fastdiv.divergence import _log_base
from fastdiv.pairwise import (
    _check_metric,
    _is_sparse,
    _prepare_dense,
    _prepare_sparse,
)

__all__ = ["softmax", "log_softmax", "logsumexp", "pairwise", "nearest"]

# Merge tasks of the nearest-neighbour tree take this many candidate lists
# at a time: each holds (rows, k) values, so a merge holds at most
# SPLIT_EVERY * k values per row, whatever the number of blocks of Q.
SPLIT_EVERY = 8


# --------------------------------------------------------------------------
# softmax, log_softmax, logsumexp
# --------------------------------------------------------------------------


def softmax(x, temperature=1.0, axis=-1, *, threads=None, backend=None):
    r"""Softmax of ``x / temperature`` along an axis of a Dask array.

    .. math::

        \mathrm{softmax}(z, T)_i = \frac{e^{z_i / T}}{\sum_j e^{z_j / T}}

    Each chunk is computed by :func:`fastdiv.softmax`, so the result equals
    the in-memory one (same dtype rules, infinities and NaN handling).

    Parameters
    ----------
    x : dask.array.Array
        Logits. The axis ``axis`` must lie in one chunk; other axes may be
        chunked freely.
    temperature : float, default 1.0
        T > 0 and finite (checked now, before any work).
    axis : int or None, default -1
        Axis along which the entries sum to 1; None means the whole array,
        which must then be one chunk.
    threads : int, optional
        Threads of fastdiv's kernels within each task; 1 by default (see
        the module's notes).
    backend : {"auto", "numpy", "numba", "cython"}, optional
        Backend of the kernels in every task.

    Returns
    -------
    dask.array.Array
        Lazy; same shape and chunks as ``x``, dtype as :func:`fastdiv.softmax`.

    Raises
    ------
    ValueError
        ``axis`` split over several chunks (the message gives the
        ``rechunk`` call that fixes it), a bad temperature.
    TypeError
        A dtype fastdiv does not compute in (complex, object).

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastdiv.dask as fdd
    >>> x = da.from_array(np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]), chunks=(1, 3))
    >>> fdd.softmax(x, temperature=2.0).compute().round(4)
    array([[0.1863, 0.3072, 0.5065],
           [0.3333, 0.3333, 0.3333]])
    """
    return _map_softmax(fastdiv.softmax, x, temperature, axis, threads, backend)


def log_softmax(x, temperature=1.0, axis=-1, *, threads=None, backend=None):
    r"""Log-softmax of ``x / temperature`` along an axis of a Dask array.

    .. math::

        \log \mathrm{softmax}(z, T)_i = \frac{z_i}{T}
            - \log \sum_j e^{z_j / T}

    Chunk by chunk with :func:`fastdiv.log_softmax`; parameters, layout
    and errors as in :func:`softmax`.

    Returns
    -------
    dask.array.Array
        Lazy; same shape and chunks as ``x``.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastdiv.dask as fdd
    >>> x = da.zeros((4, 2), chunks=(2, 2))
    >>> fdd.log_softmax(x).compute()[0]
    array([-0.69314718, -0.69314718])
    """
    return _map_softmax(fastdiv.log_softmax, x, temperature, axis, threads, backend)


def logsumexp(
    x,
    temperature=1.0,
    axis=-1,
    *,
    b=None,
    keepdims=False,
    return_sign=False,
    threads=None,
    backend=None,
):
    r"""Log-sum-exp of ``x / temperature`` over an axis of a Dask array.

    .. math::

        \mathrm{logsumexp}(z, T) = \log \sum_j b_j e^{z_j / T}

    Chunk by chunk with :func:`fastdiv.logsumexp`: the reduced axis must be
    in one chunk, and it disappears from the result (kept with length 1
    when ``keepdims``).

    Parameters
    ----------
    x : dask.array.Array
        Values; the axis ``axis`` in one chunk.
    temperature : float, default 1.0
        T > 0 and finite.
    axis : int or None, default -1
        Axis to reduce; None reduces everything (``x`` must be one chunk).
    b : array_like or dask.array.Array, optional
        Weights broadcastable to ``x``, as in :func:`fastdiv.logsumexp`;
        rechunked like ``x``.
    keepdims : bool, default False
        Keep the reduced axis with length 1.
    return_sign : bool, default False
        Also return the sign of the sum (a second lazy array).
    threads, backend
        As in :func:`softmax`.

    Returns
    -------
    res : dask.array.Array
        ``log|sum|``, lazy.
    sgn : dask.array.Array
        Only with ``return_sign``.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastdiv.dask as fdd
    >>> x = da.from_array(np.array([[1.0, 2.0, 3.0]] * 4), chunks=(2, 3))
    >>> fdd.logsumexp(x).compute()
    array([3.40760596, 3.40760596, 3.40760596, 3.40760596])
    """
    x = _as_dask(x, "x")
    dtype = _float_dtype(x.dtype, "x")
    t = check_temperature(temperature)
    threads = _check_task_threads(threads)
    ndim = x.ndim
    if ndim == 0:
        x = x.reshape(1)
    ax = _reduced_axis(x, axis, "x")
    wb = None
    if b is not None:
        b = _as_dask(b, "b", chunks=None)
        dtype = np.promote_types(dtype, _float_dtype(b.dtype, "b"))
        try:
            wb = da.broadcast_to(b, x.shape)
        except ValueError:
            raise ValueError(
                f"b of shape {b.shape} does not broadcast to x of shape {x.shape}"
            ) from None
        wb = wb.rechunk(x.chunks)

    # One task per chunk computes value and sign in one kernel call; the
    # value and the sign are taken from it by a cheap getter task each.
    token = tokenize(x, wb, t, ax, keepdims, bool(return_sign), threads, backend)
    core = f"fastdiv-logsumexp-{token}"
    names = (f"fastdiv-logsumexp-value-{token}", f"fastdiv-logsumexp-sign-{token}")
    kept = [i for i in range(x.ndim) if ax is not None and i != ax]
    layer = {}
    getters = ({}, {})
    for idx in np.ndindex(*x.numblocks):
        weights = None if wb is None else (wb.name, *idx)
        layer[(core, *idx)] = (
            _apply,
            _logsumexp_task,
            [(x.name, *idx), weights],
            dict(
                t=t,
                axis=ax,
                keepdims=keepdims,
                return_sign=bool(return_sign),
                threads=threads,
                backend=backend,
            ),
        )
        if keepdims:
            out_idx = idx
        else:
            out_idx = tuple(idx[i] for i in kept)
        for part in (0, 1):
            getters[part][(names[part], *out_idx)] = (
                operator.getitem,
                (core, *idx),
                part,
            )
    if keepdims:
        chunks = tuple(
            (1,) if ax is None or i == ax else c for i, c in enumerate(x.chunks)
        )
    else:
        chunks = tuple(x.chunks[i] for i in kept)
    deps = [x] if wb is None else [x, wb]
    base_graph = HighLevelGraph.from_collections(core, layer, dependencies=deps)
    res, sgn = (
        da.Array(
            _with_layer(base_graph, core, nm, getters[part]), nm, chunks, dtype=dtype
        )
        for part, nm in enumerate(names)
    )
    return (res, sgn) if return_sign else res


def _map_softmax(fn, x, temperature, axis, threads, backend):
    x = _as_dask(x, "x")
    dtype = _float_dtype(x.dtype, "x")
    t = check_temperature(temperature)
    threads = _check_task_threads(threads)
    shape = x.shape
    if x.ndim == 0:
        x = x.reshape(1)
    ax = _reduced_axis(x, axis, "x")
    res = x.map_blocks(
        _softmax_task,
        fn=fn,
        t=t,
        axis=ax,
        threads=threads,
        backend=backend,
        dtype=dtype,
        meta=np.empty((0,) * x.ndim, dtype),
        name=f"fastdiv-{fn.__name__}-" + tokenize(x, t, ax, backend, threads),
    )
    return res.reshape(shape) if res.shape != shape else res


def _reduced_axis(x, axis, name):
    """The axis to reduce (None: all), after checking it is one chunk."""
    if axis is None:
        split = [i for i, nb in enumerate(x.numblocks) if nb > 1]
        if split:
            raise ValueError(
                f"axis=None reduces all of {name}, which must then be one "
                f"chunk, but it is split along axes {split}; rechunk it with "
                f"{name}.rechunk(-1) (or reduce one axis at a time)"
            )
        return None
    ax = normalize_axis(axis, x.ndim)
    if x.numblocks[ax] > 1:
        raise ValueError(
            f"{name} is split into {x.numblocks[ax]} chunks along axis {ax}, "
            "the axis fastdiv reduces, which must be one chunk; rechunk it "
            f"first: {name}.rechunk({{{ax}: -1}})"
        )
    return ax


def _softmax_task(block, fn, t, axis, threads, backend):
    with fastdiv.options(threads=threads):
        return fn(block, t, axis=axis, backend=backend)


def _logsumexp_task(block, b, *, t, axis, keepdims, return_sign, threads, backend):
    with fastdiv.options(threads=threads):
        res = fastdiv.logsumexp(
            block,
            t,
            axis=axis,
            b=b,
            keepdims=keepdims,
            return_sign=return_sign,
            backend=backend,
        )
    # Without return_sign only the value is asked for (a negative sum is
    # NaN there, as in memory).
    res, sgn = res if return_sign else (res, None)
    return np.asarray(res), None if sgn is None else np.asarray(sgn)


def _with_layer(graph, dep, name, layer):
    """``graph`` plus ``layer`` (named ``name``), which depends on ``dep``."""
    return HighLevelGraph(
        {**graph.layers, name: layer}, {**graph.dependencies, name: {dep}}
    )


# --------------------------------------------------------------------------
# pairwise
# --------------------------------------------------------------------------


def pairwise(
    P,
    Q=None,
    metric="js",
    *,
    base=None,
    normalize=False,
    check=True,
    threads=None,
    backend=None,
):
    r"""Lazy divergence matrix between the rows of two Dask arrays.

    .. math::

        D[i, j] = d(P_i, Q_j)

    as in :func:`fastdiv.pairwise`, for the same metrics. Block (I, J) of
    the result is computed by :func:`fastdiv.pairwise` on row chunk I of P
    and row chunk J of Q, in one task; the result's chunks are P's row
    chunks by Q's.

    Parameters
    ----------
    P : dask.array.Array, shape (n, k)
        Distributions, chunked by rows only (the k categories in one
        chunk). Chunks are NumPy arrays or SciPy sparse matrices. A NumPy
        array or a sparse matrix is wrapped with ``da.from_array`` in row
        chunks of Dask's default size.
    Q : dask.array.Array, shape (m, k), optional
        The same for Q. None compares P with itself: then for "js" and
        "js_distance" only the blocks I <= J are computed, and block (J, I)
        is the transpose of block (I, J).
    metric : {"js", "js_distance", "kl", "cross_entropy"}, default "js"
    base, normalize, check
        As in :func:`fastdiv.pairwise`. Each row chunk is checked (or
        normalised) once, in a task of its own; an error names the row's
        global index.
    threads : int, optional
        Threads of fastdiv's kernels in each task; 1 by default.
    backend : {"auto", "numpy", "numba", "cython"}, optional

    Returns
    -------
    dask.array.Array, shape (n, m)
        Lazy, dense chunks; float32 when P and Q are float32, else float64.

    Raises
    ------
    ValueError
        Unknown metric, P or Q not 2-D, split along the category axis or
        of unknown chunk sizes, different numbers of categories: all before
        any work. Bad rows raise ValueError at compute time.

    Notes
    -----
    If either array has sparse chunks, the other's chunks are made CSR as
    well, as :func:`fastdiv.pairwise` does with mixed input. "kl" and
    "cross_entropy" are not symmetric: with Q=None all blocks are computed.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastdiv.dask as fdd
    >>> P = da.from_array(np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]),
    ...                   chunks=(2, 2))
    >>> fdd.pairwise(P, metric="js").compute().round(4)
    array([[0.    , 0.2158, 0.6931],
           [0.2158, 0.    , 0.2158],
           [0.6931, 0.2158, 0.    ]])
    """
    metric = _check_metric(metric)
    _log_base(base, sqrt=metric == "js_distance")
    threads = _check_task_threads(threads)
    A, B, dtype = _prepared_operands(P, Q, normalize, check, threads, backend)
    symmetric = Q is None
    if symmetric:
        B = A
    nb_p, nb_q = A.numblocks[0], B.numblocks[0]

    token = tokenize(A, B, metric, base, threads, backend, symmetric)
    name = f"fastdiv-pairwise-{metric}-{token}"
    kw = dict(metric=metric, base=base, threads=threads, backend=backend)
    mirror = symmetric and metric in ("js", "js_distance")
    layer = {}
    for i in range(nb_p):
        for j in range(nb_q):
            if symmetric and i == j:
                layer[(name, i, j)] = (_apply, _pairwise_task, [(A.name, i, 0)], kw)
            elif mirror and j < i:
                layer[(name, i, j)] = (_transpose, (name, j, i))
            else:
                layer[(name, i, j)] = (
                    _apply,
                    _pairwise_task,
                    [(A.name, i, 0), (B.name, j, 0)],
                    kw,
                )
    deps = [A] if symmetric else [A, B]
    graph = HighLevelGraph.from_collections(name, layer, dependencies=deps)
    chunks = (A.chunks[0], A.chunks[0] if symmetric else B.chunks[0])
    return da.Array(graph, name, chunks, dtype=dtype)


def _pairwise_task(Pb, Qb=None, *, metric, base, threads, backend):
    with fastdiv.options(threads=threads):
        return fastdiv.pairwise(Pb, Qb, metric, base=base, check=False, backend=backend)


def _transpose(block):
    return np.ascontiguousarray(block.T)


def _apply(fn, args, kwargs):
    return fn(*args, **kwargs)


# --------------------------------------------------------------------------
# nearest
# --------------------------------------------------------------------------


def nearest(
    P,
    Q=None,
    k=10,
    metric="js",
    *,
    base=None,
    normalize=False,
    check=True,
    split_every=SPLIT_EVERY,
    memory_budget=256 * 2**20,
    threads=None,
    backend=None,
):
    r"""The k rows of Q closest to each row of P, on Dask arrays.

    Each pair of row chunks (P_I, Q_J) is one task that keeps, with
    :func:`fastdiv.nearest`, the k best rows of Q_J for every row of P_I
    (their indices shifted to rows of the whole Q). The candidate lists of
    one P_I are then merged ``split_every`` at a time, in a tree, down to
    one: no task holds more than ``split_every * k`` candidates per row,
    and no row of the full n x m matrix is ever held anywhere.

    Parameters
    ----------
    P : dask.array.Array, shape (n, c)
        Queries, chunked by rows only (see :func:`pairwise`).
    Q : dask.array.Array, shape (m, c), optional
        Rows to search; None searches P itself, a row never being its own
        neighbour.
    k : int, default 10
        Neighbours per row, 1 <= k <= m (m - 1 with Q=None), checked now.
    metric, base, normalize, check
        As in :func:`fastdiv.nearest`.
    split_every : int, default 8
        Candidate lists merged per task of the tree (at least 2).
    memory_budget : int, default 256 MiB
        Working memory of :func:`fastdiv.nearest` in each task.
    threads : int, optional
        Threads of fastdiv's kernels in each task; 1 by default.
    backend : {"auto", "numpy", "numba", "cython"}, optional

    Returns
    -------
    indices : dask.array.Array of int64, shape (n, k)
        Rows of Q, closest first; equal values ordered by index.
    values : dask.array.Array, shape (n, k)
        The divergences. Both lazy and sharing one graph: compute them
        together, ``dask.compute(indices, values)``.

    Notes
    -----
    The result equals :func:`fastdiv.nearest` on the whole arrays: the
    values are the same numbers ("kl" and "cross_entropy" up to the last
    bits of BLAS rounding, as there), and the merge orders candidates by
    value (NaN last), then by index.

    Examples
    --------
    >>> import numpy as np, dask, dask.array as da, fastdiv.dask as fdd
    >>> P = da.from_array(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]),
    ...                   chunks=(1, 2))
    >>> idx, val = dask.compute(*fdd.nearest(P, k=1))
    >>> idx.ravel()
    array([1, 0, 1])
    """
    metric = _check_metric(metric)
    _log_base(base, sqrt=metric == "js_distance")
    threads = _check_task_threads(threads)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be a positive integer, got {shown(k)}")
    k = int(k)
    if (
        isinstance(split_every, bool)
        or not isinstance(split_every, numbers.Integral)
        or split_every < 2
    ):
        raise ValueError(
            f"split_every must be an integer >= 2, got {shown(split_every)}"
        )
    A, B, dtype = _prepared_operands(P, Q, normalize, check, threads, backend)
    symmetric = Q is None
    m = A.shape[0] if symmetric else B.shape[0]
    avail = m - 1 if symmetric else m
    # No query rows: empty (0, k) results, as fastdiv.nearest gives.
    if k > avail and A.shape[0] > 0:
        raise ValueError(
            f"k={k} is larger than the {avail} rows of "
            f"{'P other than the row itself' if symmetric else 'Q'}"
        )
    if symmetric:
        B = A

    token = tokenize(
        A, B, k, metric, base, split_every, memory_budget, threads, backend, symmetric
    )
    core = f"fastdiv-nearest-blocks-{token}"
    kw = dict(
        k=k,
        metric=metric,
        base=base,
        memory_budget=memory_budget,
        threads=threads,
        backend=backend,
    )
    offsets = np.concatenate([[0], np.cumsum(B.chunks[0])]).astype(int)
    layer = {}
    finals = []
    for i in range(A.numblocks[0]):
        keys = []
        for j in range(B.numblocks[0]):
            width = B.chunks[0][j] - (1 if symmetric and i == j else 0)
            if width <= 0 or A.chunks[0][i] == 0:
                continue
            args = (
                [(A.name, i, 0)]
                if symmetric and i == j
                else [(A.name, i, 0), (B.name, j, 0)]
            )
            key = (core, 0, i, j)
            layer[key] = (
                _apply,
                _nearest_task,
                args,
                dict(kw, offset=int(offsets[j])),
            )
            keys.append(key)
        # The tree: lists of candidates merged split_every at a time.
        if not keys:  # P_I has no rows
            keys = [(core, 1, i, 0)]
            layer[keys[0]] = (_merge_candidates, [], k, A.chunks[0][i], dtype)
        level = 0
        while len(keys) > 1:
            level += 1
            merged = []
            for g in range(0, len(keys), split_every):
                key = (core, level, i, g // split_every)
                layer[key] = (
                    _merge_candidates,
                    keys[g : g + split_every],
                    k,
                    A.chunks[0][i],
                    dtype,
                )
                merged.append(key)
            keys = merged
        finals.append(keys[0])

    name_idx = f"fastdiv-nearest-indices-{token}"
    name_val = f"fastdiv-nearest-values-{token}"
    layers_idx = {
        (name_idx, i, 0): (operator.getitem, f, 0) for i, f in enumerate(finals)
    }
    layers_val = {
        (name_val, i, 0): (operator.getitem, f, 1) for i, f in enumerate(finals)
    }
    deps = [A] if symmetric else [A, B]
    base_graph = HighLevelGraph.from_collections(core, layer, dependencies=deps)
    chunks = (A.chunks[0], (k,))
    indices = da.Array(
        _with_layer(base_graph, core, name_idx, layers_idx),
        name_idx,
        chunks,
        dtype=np.int64,
    )
    values = da.Array(
        _with_layer(base_graph, core, name_val, layers_val),
        name_val,
        chunks,
        dtype=dtype,
    )
    return indices, values


def _nearest_task(
    Pb, Qb=None, *, k, offset, metric, base, memory_budget, threads, backend
):
    avail = Pb.shape[0] - 1 if Qb is None else Qb.shape[0]
    with fastdiv.options(threads=threads):
        idx, val = fastdiv.nearest(
            Pb,
            Qb,
            k=min(k, avail),
            metric=metric,
            base=base,
            check=False,
            memory_budget=memory_budget,
            backend=backend,
        )
    idx += offset
    return idx, val


def _merge_candidates(parts, k, n, dtype):
    """The k best of several (indices, values) lists of the same rows:
    by value, NaN last, then by index."""
    if not parts:
        return np.empty((n, k), np.int64), np.empty((n, k), dtype)
    idx = np.concatenate([p[0] for p in parts], axis=1)
    val = np.concatenate([p[1] for p in parts], axis=1)
    if len(parts) == 1 and idx.shape[1] <= k:
        return idx, val
    order = np.lexsort((idx, val, np.isnan(val)), axis=-1)[:, :k]
    return (
        np.take_along_axis(idx, order, axis=1),
        np.take_along_axis(val, order, axis=1),
    )


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------


def _as_dask(x, name, chunks="rows"):
    """``x`` as a Dask array; NumPy arrays and sparse matrices are wrapped."""
    if isinstance(x, da.Array):
        return x
    if _is_sparse(x):
        return da.from_array(x, chunks=("auto", -1), asarray=False)
    arr = np.asarray(x)
    if chunks == "rows" and arr.ndim == 2:
        return da.from_array(arr, chunks=("auto", -1))
    return da.from_array(arr, chunks=-1)


def _float_dtype(dtype, name):
    """The dtype fastdiv computes ``dtype`` in (TypeError if none)."""
    return as_float_array(np.empty(0, dtype), name).dtype


def _check_task_threads(threads):
    if threads is None:
        return 1
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral):
        raise ValueError(f"threads must be a positive integer, got {shown(threads)}")
    if threads < 1:
        raise ValueError(f"threads must be a positive integer, got {shown(threads)}")
    return int(threads)


def _check_rows_layout(x, name):
    """A 2-D Dask array chunked by rows only, with known chunk sizes."""
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (rows of distributions), got shape {x.shape}"
        )
    if any(math.isnan(c) for c in x.chunks[0]) or math.isnan(x.shape[1]):
        raise ValueError(
            f"{name} has unknown chunk sizes; call {name}.compute_chunk_sizes() first"
        )
    if x.numblocks[1] > 1:
        raise ValueError(
            f"{name} is split into {x.numblocks[1]} chunks along the category "
            "axis (axis 1), which must be one chunk: each task needs whole "
            f"rows. Rechunk it by rows only: {name}.rechunk({{1: -1}})"
        )


def _prepared_operands(P, Q, normalize, check, threads, backend):
    """P and Q checked for layout now, and converted, checked or normalised
    chunk by chunk in lazy tasks; the result dtype."""
    A = _as_dask(P, "P")
    _check_rows_layout(A, "P")
    B = None
    if Q is not None:
        B = _as_dask(Q, "Q")
        _check_rows_layout(B, "Q")
        if A.shape[1] != B.shape[1]:
            raise ValueError(
                f"P has {A.shape[1]} categories (columns) but Q has "
                f"{B.shape[1]}; both must have the same number"
            )
    dtypes = [_float_dtype(A.dtype, "P")]
    if B is not None:
        dtypes.append(_float_dtype(B.dtype, "Q"))
    dtype = np.result_type(*dtypes)
    sparse = _is_sparse_array(A) or (B is not None and _is_sparse_array(B))
    A = _prepare(A, "P", sparse, dtypes[0], normalize, check, threads, backend)
    if B is not None:
        B = _prepare(B, "Q", sparse, dtypes[1], normalize, check, threads, backend)
    return A, B, dtype


def _is_sparse_array(x):
    return _is_sparse(getattr(x, "_meta", None))


def _prepare(x, name, sparse, dtype, normalize, check, threads, backend):
    offsets = np.concatenate([[0], np.cumsum(x.chunks[0])]).astype(int)
    if sparse:
        import scipy.sparse as sp

        meta = sp.csr_matrix((0, x.shape[1]), dtype=dtype)
    else:
        meta = np.empty((0, x.shape[1]), dtype)
    token = tokenize(x, name, sparse, normalize, check, threads, backend)
    prep = f"fastdiv-prepare-{name}-{token}"
    layer = {
        (prep, i, 0): (
            _prepare_chunk,
            (x.name, i, 0),
            name,
            int(offsets[i]),
            sparse,
            normalize,
            check,
            threads,
            backend,
        )
        for i in range(x.numblocks[0])
    }
    graph = HighLevelGraph.from_collections(prep, layer, dependencies=[x])
    return da.Array(graph, prep, x.chunks, meta=meta)


_ROW_IN_MESSAGE = re.compile(r"\b(P|Q) row (\d+)")


def _prepare_chunk(block, name, offset, sparse, normalize, check, threads, backend):
    """One row chunk made kernel-ready (CSR or C-contiguous float) and
    checked or normalised, with errors naming the row of the whole array."""
    prepare = _prepare_sparse if sparse else _prepare_dense
    if not sparse and _is_sparse(block):
        block = block.toarray()
    with fastdiv.options(threads=threads):
        try:
            return prepare(block, name, normalize, check, backend)
        except ValueError as exc:
            msg = _ROW_IN_MESSAGE.sub(
                lambda mt: f"{mt.group(1)} row {int(mt.group(2)) + offset}",
                str(exc),
            )
            raise ValueError(msg) from None
