"""The ``fastdiv`` command (also ``python -m fastdiv``).

Subcommands: ``softmax`` (batch scoring of a logits file), ``pairwise``
(the matrix of divergences between rows of distribution files),
``nearest`` (each row's k closest rows), ``bench`` (a benchmark report),
``info`` (versions, backends, CPU) and ``demo`` (pairwise JS between the
modules of Python's own standard library; ``demo distill``: knowledge
distillation on scikit-learn's digits). ``fastdiv SUBCOMMAND --help``
tells the details.

Exit codes: 0 on success, 2 for bad input or a refused request (one line on
stderr naming the file and what is wrong, no traceback), 130 after Ctrl-C
and 143 after SIGTERM (in both cases no output file is left behind).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys

import click
import numpy as np

import fastdiv
from fastdiv._cli.errors import (
    InputError,
    Terminated,
    clear_termination,
    request_interrupt,
    request_termination,
    stop_if_signalled,
    termination_requested,
)
from fastdiv._cli.readers import read_array, read_npy_header, split_key
from fastdiv._cli.resources import check_fits
from fastdiv._cli.writers import (
    RowWriter,
    atomic_output,
    check_destination,
    output_format,
)

# Rows per block when a .npy file is streamed through ``fastdiv softmax``:
# blocks of about 32 MB keep the resident set small while each kernel call
# is long enough for its fixed cost not to matter.
BLOCK_BYTES = 32 * 2**20

# A pairwise matrix larger than this is written through a memory map, so
# that the kernel's output pages can be written back to disk as it goes
# (the environment variable FASTDIV_CLI_MEMMAP_BYTES overrides it, for tests).
MEMMAP_BYTES = 64 * 2**20

METRICS = ("js", "js_distance", "kl", "cross_entropy")

_NEAREST_HINT = "use `fastdiv nearest` to keep only the k nearest rows of each row"


def _on_sigterm(signum, frame):
    request_termination()


def _on_sigint(signum, frame):
    request_interrupt()


def _options(fn):
    """Options every computing subcommand shares."""
    fn = click.option(
        "--backend",
        type=click.Choice(["auto", "numpy", "numba", "cython"]),
        default=None,
        help="Force a backend (default: FASTDIV_BACKEND or auto).",
    )(fn)
    fn = click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        help="Threads for the compiled backends "
        "(default: FASTDIV_NUM_THREADS or all cores).",
    )(fn)
    return fn


def _check_environment(backend=None, threads=None) -> None:
    """Refuse a bad FASTDIV_BACKEND or FASTDIV_NUM_THREADS before any work.

    The library raises ValueError naming the variable only when a call first
    reads it, which may be after the input was read (or, outside a call
    wrapped in `_call`, as a traceback). An option given on the command line
    wins over its variable, as ``fastdiv.options`` does, so the variable is
    then not checked.
    """
    from fastdiv._dispatch import num_threads, requested_backend

    with fastdiv.options(backend=backend, threads=threads):
        try:
            requested_backend(None)
            num_threads()
        except ValueError as exc:
            raise InputError(None, str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(fastdiv.__version__, prog_name="fastdiv")
def cli():
    """Fast, exact softmax with temperature and divergences between
    probability distributions, on files.

    Rows are counted from 0 in every message and output.
    """


# --------------------------------------------------------------------------
# softmax
# --------------------------------------------------------------------------


@cli.command()
@click.argument("logits")
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    help="Result file: .npy, .npz, .csv or .parquet.",
)
@click.option(
    "-T",
    "--temperature",
    type=float,
    default=1.0,
    show_default=True,
    help="Divide the logits by T > 0 first.",
)
@click.option("--log", "log", is_flag=True, help="Write log-softmax instead.")
@click.option(
    "--axis",
    type=int,
    default=-1,
    show_default=True,
    help="Axis along which the result sums to 1.",
)
@click.option(
    "--block-rows",
    type=click.IntRange(min=1),
    default=None,
    help="Rows per block when streaming a .npy file (default: about 32 MB of input).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("-f", "--force", is_flag=True, help="Replace OUT if it exists.")
@_options
def softmax(
    logits, out, temperature, log, axis, block_rows, quiet, force, backend, threads
):
    """Softmax (or log-softmax) of LOGITS / T, written to OUT.

    LOGITS is a .npy, .npz (one array, or FILE.npz:NAME), .csv or .parquet
    file. A .npy file is memory-mapped and processed in blocks of rows, so
    it may be larger than memory; a progress bar shows on long runs when
    stderr is a terminal. float32 input gives float32 output.

    Example: fastdiv softmax logits.npy -T 2 -o probs.npy
    """
    _check_environment(backend, threads)
    fmt_out = output_format(out, ("npy", "npz", "csv", "parquet"))
    check_destination(out, [logits], force)
    try:
        fastdiv._checks.check_temperature(temperature, "-T/--temperature")
    except (TypeError, ValueError) as exc:
        raise InputError(None, str(exc)) from None
    fn = fastdiv.log_softmax if log else fastdiv.softmax
    name = "log_softmax" if log else "softmax"

    path, _ = split_key(logits)
    header = None
    if path.lower().endswith(".npy"):
        header = read_npy_header(path)
        shape, dtype = header.shape, header.dtype
    else:
        data = read_array(logits)
        shape, dtype = data.shape, data.dtype
    ndim = max(len(shape), 1)
    if not -ndim <= axis < ndim:
        raise InputError(
            logits, f"has {ndim} dimensions; --axis {axis} is out of range"
        )
    if fmt_out in ("csv", "parquet") and len(shape) > 2:
        raise InputError(
            out,
            f"a {len(shape)}-D result cannot be written as {fmt_out}; use .npy or .npz",
        )
    # The library's own dtype rule decides the output dtype; inside the
    # options, so that an environment variable they override is not read.
    with fastdiv.options(backend=backend, threads=threads):
        try:
            out_dtype = fastdiv.softmax(np.zeros((1, 1), dtype)).dtype
        except TypeError:  # float128, say: refused before any is read
            raise InputError(
                logits,
                f"holds dtype {dtype}, which fastdiv does not compute in; "
                "convert it to float64 first",
            ) from None
    streamable = (
        header is not None
        and not header.fortran_order
        and len(shape) >= 1
        and axis % ndim == ndim - 1
    )

    with fastdiv.options(backend=backend, threads=threads), atomic_output(out) as tmp:
        writer = RowWriter(tmp, fmt_out, shape, out_dtype, name=name)
        try:
            if streamable:
                _softmax_blocks(
                    fn, path, header, temperature, writer, block_rows, quiet, out_dtype
                )
            else:
                if header is not None:
                    data = read_array(logits)
                res = _call(fn, np.asarray(data), temperature, axis=axis)
                writer.write(res.reshape((1,) + res.shape) if res.ndim == 1 else res)
            writer.close()
        except BaseException:
            writer.abort()
            raise


def _softmax_blocks(
    fn, path, header, temperature, writer, block_rows, quiet, out_dtype
):
    """Stream a C-order .npy through ``fn`` block by block of rows."""
    from tqdm import tqdm

    from fastdiv._cli.readers import npy_rows

    shape = header.shape
    k = shape[-1] if shape else 1
    n = math.prod(shape[:-1]) if len(shape) > 1 else 1
    if block_rows is None:
        block_rows = max(1, BLOCK_BYTES // max(1, k * header.dtype.itemsize))
    block_rows = min(block_rows, max(n, 1))
    # One output buffer, reused: a fresh array per block would pay the page
    # faults of first touch every time.
    buf = np.empty((block_rows, k), out_dtype)
    bar = tqdm(
        total=n,
        unit="rows",
        unit_scale=True,
        desc=writer.name,
        file=sys.stderr,
        delay=1.0,
        disable=quiet or not sys.stderr.isatty(),
    )
    with bar:
        for start in range(0, n, block_rows):
            stop_if_signalled()
            stop = min(n, start + block_rows)
            block = npy_rows(path, header, start, stop)
            target = buf[: stop - start]
            _call(fn, block, temperature, out=target)
            del block  # unmaps the rows just done
            writer.write(target)
            bar.update(stop - start)


def _call(fn, *args, **kwargs):
    """Call a library function, turning its argument errors into InputError."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError, fastdiv.BackendUnavailableError) as exc:
        raise InputError(None, str(exc)) from None


# --------------------------------------------------------------------------
# pairwise and nearest
# --------------------------------------------------------------------------


def _read_distributions(spec: str, normalize: bool):
    """Read a distribution file and check its rows, naming the file."""
    data = read_array(spec, allow_sparse=True)
    if not hasattr(data, "tocsr"):
        data = np.asarray(data)
        if data.ndim == 1:
            data = data.reshape(1, -1)
        if data.ndim != 2:
            raise InputError(
                spec,
                f"has {data.ndim} dimensions; distributions "
                "are the rows of a 2-D array",
            )
    _check_rows(spec, data, normalize)
    return data


def _check_rows(spec, data, normalize: bool) -> None:
    """NaN, infinite or negative entries, and rows that do not sum to 1
    (or, with --normalize, sum to 0), with the row number."""
    from fastdiv._checks import sum_tolerance

    if hasattr(data, "tocsr"):
        values, indptr = data.data, data.indptr
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            pos = int(np.argmax(bad))
            row = int(np.searchsorted(indptr, pos, side="right")) - 1
            raise InputError(
                spec,
                f"row {row} has {_describe(values[pos])}; "
                "probabilities must be finite and >= 0",
            )
        sums = (
            np.add.reduceat(np.append(values.astype(np.float64), 0.0), indptr[:-1])
            if len(values)
            else None
        )
        if sums is not None:
            sums[np.diff(indptr) == 0] = 0.0
        else:
            sums = np.zeros(data.shape[0])
        dtype = np.float32 if data.dtype == np.float32 else np.float64
    else:
        # Row by row in blocks, so that a memory-mapped file is not read
        # into memory whole for the check.
        rows = data.shape[0]
        step = max(1, 2**24 // max(1, data.shape[1]))
        sums = np.empty(rows)
        for start in range(0, rows, step):
            stop_if_signalled()
            block = np.asarray(data[start : start + step])
            bad = ~np.isfinite(block) | (block < 0)
            if bad.any():
                i, j = np.argwhere(bad)[0]
                raise InputError(
                    spec,
                    f"row {start + i} has "
                    f"{_describe(block[i, j])} in column {j}; "
                    "probabilities must be finite and >= 0",
                )
            sums[start : start + step] = block.sum(axis=1, dtype=np.float64)
        dtype = np.float32 if data.dtype == np.float32 else np.float64
    k = data.shape[1]
    if k == 0:
        return
    if normalize:
        if (sums <= 0).any():
            row = int(np.argmax(sums <= 0))
            raise InputError(spec, f"row {row} sums to 0 and cannot be normalized")
        return
    off = np.abs(sums - 1.0) > sum_tolerance(dtype, k)
    if off.any():
        row = int(np.argmax(off))
        raise InputError(
            spec,
            f"row {row} sums to {sums[row]:.17g}, not 1; "
            "pass --normalize to divide each row by its sum",
        )


def _describe(value) -> str:
    if np.isnan(value):
        return "a NaN"
    if np.isinf(value):
        return f"an infinite entry ({float(value)})"
    return f"a negative entry ({float(value)!r})"


def _check_base(base, metric) -> None:
    """Refuse a bad --base before any input is read, naming the option."""
    from fastdiv.divergence import _log_base

    try:
        _log_base(base, sqrt=metric == "js_distance", name="--base")
    except (TypeError, ValueError) as exc:
        raise InputError(None, str(exc)) from None


def _read_pair(p, q, normalize):
    P = _read_distributions(p, normalize)
    Q = None if q is None else _read_distributions(q, normalize)
    if Q is not None and P.shape[1] != Q.shape[1]:
        raise InputError(
            q,
            f"has {Q.shape[1]} columns but {p} has "
            f"{P.shape[1]}; P and Q must be distributions over "
            "the same categories",
        )
    return P, Q


def _result_dtype(P, Q) -> np.dtype:
    dtypes = [P.dtype] + ([] if Q is None else [Q.dtype])
    if all(d == np.float32 for d in dtypes):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _shared_metric_options(fn):
    fn = click.option(
        "-m",
        "--metric",
        type=click.Choice(METRICS),
        default="js",
        show_default=True,
        help="Divergence between rows.",
    )(fn)
    fn = click.option(
        "--normalize", is_flag=True, help="Divide each row by its sum (for counts)."
    )(fn)
    fn = click.option(
        "--base", type=float, default=None, help="Logarithm base (default: e, nats)."
    )(fn)
    fn = click.option("-f", "--force", is_flag=True, help="Replace OUT if it exists.")(
        fn
    )
    return fn


def _scheduler_option(fn):
    return click.option(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="Compute on the Dask cluster whose distributed scheduler is at "
        "ADDRESS (e.g. tcp://host:8786), reading the input in row chunks; "
        "--threads is then per task (default 1).",
    )(fn)


@cli.command()
@click.argument("p")
@click.argument("q", required=False)
@click.option("-o", "--output", "out", required=True, help="Result file: .npy or .csv.")
@_shared_metric_options
@_scheduler_option
@_options
def pairwise(p, q, out, metric, normalize, base, force, backend, threads, scheduler):
    """The matrix D[i, j] = metric(P[i], Q[j]) (Q defaults to P).

    P and Q are dense (.npy, .csv, .npz, .parquet) or sparse (.npz written
    by scipy.sparse.save_npz) files with one distribution per row. A matrix
    that would not fit in memory or on disk is refused before any work:
    `fastdiv nearest` keeps only the k nearest rows instead.

    Example: fastdiv pairwise counts.npz --normalize -m js -o js.npy
    """
    _check_environment(backend, threads)
    fmt_out = output_format(out, ("npy", "csv"))
    check_destination(out, [p, q], force)
    _check_base(base, metric)
    P, Q = _read_pair(p, q, normalize)
    n, m = P.shape[0], (P if Q is None else Q).shape[0]
    dtype = _result_dtype(P, Q)
    nbytes = n * m * dtype.itemsize
    # A CSV value takes at most 16 (float32) or 25 (float64) characters.
    disk = (
        nbytes + 128
        if fmt_out == "npy"
        else n * m * (16 if dtype == np.float32 else 25)
    )
    check_fits(f"the {n} x {m} {dtype} matrix", nbytes, disk, out, _NEAREST_HINT)

    kwargs = dict(metric=metric, base=base, normalize=normalize, check=False)
    if scheduler is not None:
        _pairwise_on_cluster(
            scheduler, P, Q, out, fmt_out, (n, m), dtype, kwargs, backend, threads
        )
        return
    with fastdiv.options(backend=backend, threads=threads), atomic_output(out) as tmp:
        memmap_above = int(os.environ.get("FASTDIV_CLI_MEMMAP_BYTES", MEMMAP_BYTES))
        if fmt_out == "npy" and nbytes > memmap_above:
            res = np.lib.format.open_memmap(tmp, "w+", dtype, (n, m))
            try:
                _call(fastdiv.pairwise, P, Q, out=res, **kwargs)
                res.flush()
            finally:
                del res
            return
        res = _call(fastdiv.pairwise, P, Q, **kwargs)
        writer = RowWriter(tmp, fmt_out, res.shape, res.dtype, name=metric)
        try:
            step = max(1, 2**22 // max(1, m))
            for start in range(0, n, step):
                stop_if_signalled()
                writer.write(res[start : start + step])
            writer.close()
        except BaseException:
            writer.abort()
            raise


@cli.command()
@click.argument("p")
@click.argument("q", required=False)
@click.option(
    "-k",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Neighbours per row.",
)
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    help="Result file: .csv (row,rank,neighbour,value) or .npz "
    "(arrays indices and values).",
)
@_shared_metric_options
@_scheduler_option
@_options
def nearest(p, q, k, out, metric, normalize, base, force, backend, threads, scheduler):
    """For each row of P, its k nearest rows of Q (Q defaults to P).

    Memory stays bounded: the n x m matrix is never held. The CSV output
    has one line per (row, rank): row of P, rank from 1 (nearest first),
    neighbour (row of Q) and the metric's value.

    Example: fastdiv nearest docs.npz --normalize -k 5 -o nn.csv
    """
    _check_environment(backend, threads)
    fmt_out = output_format(out, ("csv", "npz"))
    check_destination(out, [p, q], force)
    _check_base(base, metric)
    P, Q = _read_pair(p, q, normalize)
    kwargs = dict(k=k, metric=metric, base=base, normalize=normalize, check=False)
    if scheduler is not None:
        from fastdiv import _dask_cli

        with _dask_cli.connect(scheduler) as client:
            indices, values = _dask_cli.nearest(
                client, P, Q, threads=threads, backend=backend, **kwargs
            )
    else:
        _check_k(k, P, Q, p, q)
        with fastdiv.options(backend=backend, threads=threads):
            indices, values = _call(fastdiv.nearest, P, Q, **kwargs)
    with atomic_output(out) as tmp:
        if fmt_out == "npz":
            with open(tmp, "wb") as f:
                np.savez(f, indices=indices, values=values)
            return
        _write_neighbours_csv(tmp, indices, values)


def _check_k(k, P, Q, p_path, q_path):
    """A k the rows to search cannot give, as an error naming their file."""
    if P.shape[0] == 0:
        return
    if Q is None and k > P.shape[0] - 1:
        raise InputError(
            p_path,
            f"has {P.shape[0]} rows, too few for k={k} neighbours (a row is "
            "not its own neighbour); pass a smaller -k",
        )
    if Q is not None and k > Q.shape[0]:
        raise InputError(
            q_path, f"has {Q.shape[0]} rows, fewer than k={k}; pass a smaller -k"
        )


def _pairwise_on_cluster(
    address, P, Q, out, fmt_out, shape, dtype, kwargs, backend, threads
):
    """`fastdiv pairwise --scheduler`: the matrix computed by fastdiv.dask
    on the cluster, written one row of blocks at a time."""
    from fastdiv import _dask_cli

    with _dask_cli.connect(address) as client, atomic_output(out) as tmp:
        writer = RowWriter(tmp, fmt_out, shape, dtype, name=kwargs["metric"])
        try:
            for block in _dask_cli.pairwise_row_blocks(
                client, P, Q, backend=backend, threads=threads, **kwargs
            ):
                writer.write(block)
            writer.close()
        except BaseException:
            writer.abort()
            raise


def _write_neighbours_csv(path, indices, values) -> None:
    n, k = indices.shape
    fmt = ["%d", "%d", "%d", "%.9g" if values.dtype == np.float32 else "%.17g"]
    with open(path, "w", newline="") as f:
        f.write("row,rank,neighbour,value\n")
        step = max(1, 2**18 // max(1, k))
        for start in range(0, n, step):
            stop_if_signalled()
            stop = min(n, start + step)
            block = np.empty((stop - start, k, 4))
            block[:, :, 0] = np.arange(start, stop)[:, None]
            block[:, :, 1] = np.arange(1, k + 1)[None, :]
            block[:, :, 2] = indices[start:stop]
            block[:, :, 3] = values[start:stop]
            np.savetxt(f, block.reshape(-1, 4), fmt=fmt, delimiter=",")
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------
# bench, info, demo
# --------------------------------------------------------------------------


@cli.command()
@click.option(
    "--quick",
    is_flag=True,
    help="Small shapes and few repeats (seconds, once the first run has compiled "
    "and cached the Numba kernels, which takes a few minutes).",
)
@click.option(
    "--json",
    "json_path",
    default=None,
    help="Also save the results as JSON to this file.",
)
@click.option(
    "--plot",
    "plot_path",
    default=None,
    help="Also draw them as a bar chart (PNG; needs matplotlib).",
)
@click.option("-f", "--force", is_flag=True, help="Replace existing files.")
@click.option(
    "--scale",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    hidden=True,
    help="Multiply the number of rows of every shape (for tests).",
)
@_options
def bench(quick, json_path, plot_path, force, scale, backend, threads):
    """Time every operation on standard shapes, for every usable backend and
    every installed peer (SciPy, PyTorch on the CPU, scikit-learn).

    Prints the median time of each and its ratio to the floor (the cost of
    just reading and writing the data, measured in the same run) and to the
    fastest peer. Timings on a shared machine are noisy: compare ratios.
    """
    _check_environment(backend, threads)
    from fastdiv._cli import bench as bench_mod

    for path, fmt in ((json_path, ".json"), (plot_path, ".png")):
        if path is not None:
            if not path.lower().endswith(fmt):
                raise InputError(path, f"must end in {fmt}")
            check_destination(path, [], force)
    if plot_path is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise InputError(
                plot_path, "plotting needs matplotlib: pip install 'fastdiv[plot]'"
            ) from None
    with fastdiv.options(threads=threads):
        results = bench_mod.run(
            quick=quick,
            scale=scale,
            backend=backend,
            progress=lambda s: click.echo(s, err=True),
        )
    click.echo(bench_mod.format_table(results))
    if json_path is not None:
        with atomic_output(json_path) as tmp, open(tmp, "w") as f:
            json.dump(results, f, indent=1)
    if plot_path is not None:
        with atomic_output(plot_path) as tmp:
            bench_mod.plot(results, tmp)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead.")
def info(as_json):
    """Versions, usable backends (and why others are not), thread count,
    OpenMP, and the CPU's vector extensions."""
    from fastdiv._cli import sysinfo

    _check_environment()
    report = sysinfo.report()
    click.echo(
        json.dumps(report, indent=1) if as_json else sysinfo.format_report(report)
    )


@cli.group(invoke_without_command=True, subcommand_metavar="[distill ...]")
@click.option(
    "--vocabulary",
    type=click.IntRange(min=2),
    default=None,
    help="Keep the N most frequent words (default 5000) so that "
    "SciPy's cdist, which is slow, finishes in seconds.",
)
@click.option(
    "--json",
    "json_path",
    default=None,
    help="Save modules, neighbours and timings as JSON.",
)
@click.option(
    "--save-counts",
    default=None,
    help="Save the sparse count matrix (scipy.sparse .npz).",
)
@click.option("--no-scipy", is_flag=True, help="Skip the cdist comparison.")
@click.option("-f", "--force", is_flag=True, help="Replace existing files.")
@_options
@click.pass_context
def demo(ctx, vocabulary, json_path, save_counts, no_scipy, force, backend, threads):
    """Pairwise Jensen-Shannon divergence between the word frequencies of
    the modules of this Python's standard library, from sparse counts.

    Prints the 5 nearest modules of a few well-known ones and how long
    fastdiv took beside scipy.spatial.distance.cdist on the same matrix.

    `fastdiv demo distill` is the other demo: knowledge distillation on
    scikit-learn's handwritten digits (see `fastdiv demo distill --help`).
    """
    if ctx.invoked_subcommand is not None:
        # The options above belong to the word demo: refuse them rather
        # than ignore them before a subcommand.
        given = [
            p.opts[0]
            for p in ctx.command.params
            if ctx.get_parameter_source(p.name)
            is click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            raise click.UsageError(
                f"{', '.join(given)} before {ctx.invoked_subcommand!r} "
                f"belongs to the word demo; put options after the subcommand"
            )
        return
    _check_environment(backend, threads)
    from fastdiv._cli import demo as demo_mod

    for path, ext in ((json_path, ".json"), (save_counts, ".npz")):
        if path is not None:
            if not path.lower().endswith(ext):
                raise InputError(path, f"must end in {ext}")
            check_destination(path, [], force)
    with fastdiv.options(backend=backend, threads=threads):
        result = demo_mod.run(
            vocabulary=vocabulary or demo_mod.VOCABULARY, compare_scipy=not no_scipy
        )
    click.echo(demo_mod.format_result(result))
    if save_counts is not None:
        import scipy.sparse

        with atomic_output(save_counts) as tmp, open(tmp, "wb") as f:
            scipy.sparse.save_npz(f, result["counts"])
    if json_path is not None:
        with atomic_output(json_path) as tmp, open(tmp, "w") as f:
            json.dump(demo_mod.to_json(result), f, indent=1)


@demo.command("distill")
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Epochs of every training run (default 60; 8 with --quick).",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=None,
    help="Repetitions with other initial weights (default 5; 1 with --quick).",
)
@click.option("--quick", is_flag=True, help="Few epochs and one seed (seconds).")
@click.option(
    "--plot",
    "plot_path",
    default=None,
    help="Also draw test accuracy against T (PNG; needs matplotlib).",
)
@click.option("-f", "--force", is_flag=True, help="Replace an existing plot.")
@_options
def demo_distill(epochs, seeds, quick, plot_path, force, backend, threads):
    """Knowledge distillation on scikit-learn's handwritten digits.

    A NumPy teacher (64-256-10) learns with fastdiv.nll; a small student
    (64-8-10) learns on the labels alone and with fastdiv.distill_loss on
    the teacher's logits at T = 2, 4 and 8 (alpha = 0.9). Prints the test
    accuracy of each over seeds and the time spent in fastdiv's losses.
    Needs scikit-learn: pip install 'fastdiv[examples]'. --threads defaults
    to 1 here: the batches are far too small to share.
    """
    from fastdiv import _distill

    # A malformed FASTDIV_NUM_THREADS is refused here too, although the
    # default is 1: the user who set it should hear that it is wrong.
    _check_environment(backend, threads)

    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise InputError(
            None, "this demo needs scikit-learn: pip install 'fastdiv[examples]'"
        ) from None
    if plot_path is not None:
        if not plot_path.lower().endswith(".png"):
            raise InputError(plot_path, "must end in .png")
        check_destination(plot_path, [], force)
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise InputError(
                plot_path, "plotting needs matplotlib: pip install 'fastdiv[plot]'"
            ) from None
    epochs, seeds = _distill.settings(quick, epochs, seeds)
    with fastdiv.options(backend=backend):
        result = _distill.run(
            epochs,
            seeds,
            threads=threads or 1,
            progress=lambda line: click.echo(line, err=True),
        )
    click.echo(_distill.format_table(result))
    if plot_path is not None:
        with atomic_output(plot_path) as tmp:
            _distill.plot(result, tmp)


# --------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------


def main(argv=None) -> int:
    """Run the command; return its exit code (the console script's)."""
    clear_termination()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    previous_int = signal.signal(signal.SIGINT, _on_sigint)
    try:
        try:
            cli.main(args=argv, prog_name="fastdiv", standalone_mode=False)
            if termination_requested():  # its exception was lost on the way
                stop_if_signalled()
        except KeyboardInterrupt:  # raised outside click's own handling
            raise click.exceptions.Abort() from None
        return 0
    except InputError as exc:
        msg = " ".join(str(exc).split())
        click.echo(f"fastdiv: error: {msg}", err=True)
        return 2
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:  # Ctrl-C; click turns it into Abort
        click.echo("fastdiv: interrupted; no output was written", err=True)
        return 130
    except Terminated:
        click.echo("fastdiv: terminated; no output was written", err=True)
        return 143
    except click.exceptions.Exit as exc:
        return exc.exit_code
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
