"""``fastdiv pairwise|nearest --scheduler ADDRESS``: the command on a cluster.

The command reads its input files as usual, cuts them into row chunks and
hands them to :mod:`fastdiv.dask`, connected to the ``distributed``
scheduler at ADDRESS. A pairwise matrix comes back one row of blocks at a
time (the next one is computed while the current one is written), so the
command never holds more than two of them; nearest comes back as its
(n, k) results.
"""

from __future__ import annotations

import contextlib

import numpy as np

from fastdiv._cli.errors import InputError

# Rows per chunk: at most 2048, so that a float64 block of the pairwise
# matrix is at most 32 MB, and fewer for wide rows (a chunk of input at
# most 16 MB).
MAX_CHUNK_ROWS = 2048
CHUNK_BYTES = 16 * 2**20

# Seconds to wait for the scheduler to answer: a scheduler on a network
# answers well within this, and a user who mistyped the port waits no longer.
CONNECT_TIMEOUT = 10


@contextlib.contextmanager
def connect(address: str):
    """A ``distributed.Client`` of the scheduler at ``address``, closed at the
    end; InputError when Dask is missing or nothing answers there."""
    try:
        import distributed
    except ImportError:
        raise InputError(
            None,
            "--scheduler needs Dask's distributed package: pip install 'fastdiv[dask]'",
        ) from None
    # A Client whose constructor raises is left half made, its event loop
    # still running; at exit its __del__ then waits twice the timeout for a
    # close that cannot finish and prints a TimeoutError (distributed closes
    # it itself only after an OSError). Making the object before running its
    # __init__ keeps a reference, so that it is closed here and at once.
    client = distributed.Client.__new__(distributed.Client)
    try:
        client.__init__(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except Exception as exc:  # ValueError for a malformed address, TypeError
        # for tls:// without a TLS configuration, OSError when none answers
        with contextlib.suppress(Exception):
            client.close(timeout=2)
        raise InputError(
            None, f"cannot connect to the Dask scheduler at {address!r}: {exc}"
        ) from None
    try:
        yield client
    finally:
        client.close()


def row_chunks(x):
    """``x`` (array, memory map or CSR matrix) as a Dask array of row chunks;
    each chunk is read from ``x`` when the graph is sent."""
    import dask.array as da

    width = max(1, x.shape[1]) * x.dtype.itemsize
    rows = max(1, min(MAX_CHUNK_ROWS, CHUNK_BYTES // width))
    sparse = hasattr(x, "tocsr")
    return da.from_array(x, chunks=(rows, -1), asarray=not sparse)


def pairwise_row_blocks(client, P, Q, **kwargs):
    """Yield the pairwise matrix one row of blocks at a time, in order."""
    import fastdiv.dask as fdd

    res = _library(fdd.pairwise, row_chunks(P), _chunks_or_none(Q), **kwargs)
    rows = [res.blocks[i] for i in range(res.numblocks[0])]
    if not rows:
        return
    pending = client.compute(rows[0])
    for nxt in rows[1:] + [None]:
        following = None if nxt is None else client.compute(nxt)
        yield _library(pending.result)
        pending = following


def nearest(client, P, Q, **kwargs):
    """``fastdiv.dask.nearest`` on the cluster: (indices, values) arrays."""
    import fastdiv.dask as fdd

    idx, val = _library(fdd.nearest, row_chunks(P), _chunks_or_none(Q), **kwargs)
    futures = client.compute([idx, val])
    indices, values = _library(client.gather, futures)
    return np.asarray(indices), np.asarray(values)


def _chunks_or_none(Q):
    return None if Q is None else row_chunks(Q)


def _library(fn, *args, **kwargs):
    """Call ``fn``; the library's argument errors become InputError."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        raise InputError(None, str(exc)) from None
