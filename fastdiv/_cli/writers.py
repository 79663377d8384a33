"""Write results so that no run ever leaves a half-written or lost file.

Everything goes to a temporary file in the destination's folder (so that the
final rename stays on one file system and is atomic) and is renamed over the
destination with :func:`os.replace` only once complete. An exception, Ctrl-C
or SIGTERM (which :mod:`fastdiv.cli` turns into an exception) removes the
temporary file instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile

import numpy as np

from fastdiv._cli.errors import InputError
from fastdiv._cli.readers import file_format, split_key


def check_destination(out, inputs, force: bool) -> None:
    """Refuse an OUT that is one of the inputs, or exists without --force."""
    out = os.fspath(out)
    for spec in inputs:
        if spec is None:
            continue
        path, _ = split_key(os.fspath(spec))
        if os.path.abspath(path) == os.path.abspath(out) or (
            os.path.exists(out) and os.path.exists(path) and os.path.samefile(path, out)
        ):
            raise InputError(
                out, "is also an input file; write the result somewhere else"
            )
    if os.path.isdir(out):
        raise InputError(out, "is a directory")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise InputError(out, f"cannot be written: no folder {folder}")
    if os.path.exists(out) and not force:
        raise InputError(out, "already exists; pass --force to replace it")


@contextlib.contextmanager
def atomic_output(out):
    """Yield a temporary path beside ``out``; rename it to ``out`` on success.

    On any exception, including KeyboardInterrupt and SystemExit, the
    temporary file is removed and ``out`` is left as it was.

    An OSError in creating the temporary file or renaming it, or one of
    :data:`_OUTPUT_ERRNOS` while writing it (a full disk, say), becomes an
    InputError naming ``out`` and the system's reason, so that every
    subcommand reports an unwritable destination as one line and exit 2.
    """
    shown = os.fspath(out)
    out = os.path.abspath(shown)
    folder, name = os.path.split(out)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
    except OSError as exc:
        raise _unwritable(shown, exc) from None
    os.close(fd)
    try:
        yield tmp
    except BaseException as exc:
        _discard(tmp)
        if isinstance(exc, OSError) and exc.errno in _OUTPUT_ERRNOS:
            raise _unwritable(shown, exc) from None
        raise
    try:
        # mkstemp makes the file private (0600); give it the permissions a
        # plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out)
    except BaseException as exc:
        _discard(tmp)
        if isinstance(exc, OSError):
            raise _unwritable(shown, exc) from None
        raise


# Errors while the body writes that can only be about the destination's file
# system. Not EACCES or EIO: the body may still read an input (a streamed
# .npy), and such an error must not be blamed on the output.
_OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def _unwritable(out: str, exc: OSError) -> InputError:
    """The one-line error for an OSError on the output file ``out``."""
    reason = exc.strerror or str(exc)
    code = errno.errorcode.get(exc.errno) if exc.errno else None
    return InputError(
        out, f"cannot be written: {reason}" + (f" ({code})" if code else "")
    )


def _discard(tmp: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def _number_format(dtype: np.dtype) -> str:
    # Enough digits to read back the same float: 9 for float32, 17 for float64.
    return "%.9g" if np.dtype(dtype) == np.float32 else "%.17g"


class RowWriter:
    """Write a 2-D array block of rows at a time to .npy, .csv, .parquet or
    .npz.

    .npy, .csv and .parquet are streamed (only the current block is held);
    .npz keeps the blocks and writes them on :meth:`close`.
    """

    def __init__(self, path, fmt: str, shape: tuple, dtype, *, name: str):
        self.path, self.fmt = path, fmt
        self.shape, self.dtype, self.name = tuple(shape), np.dtype(dtype), name
        self._blocks = []
        self._parquet = None
        if fmt == "npy":
            self._file = open(path, "wb")
            header = {
                "descr": np.lib.format.dtype_to_descr(self.dtype),
                "fortran_order": False,
                "shape": self.shape,
            }
            np.lib.format.write_array_header_2_0(self._file, header)
        elif fmt == "csv":
            self._file = open(path, "w", newline="")
        else:
            self._file = None

    def write(self, block: np.ndarray) -> None:
        """Append rows (an array of the output's trailing shape)."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if self.fmt == "npy":
            # memoryview refuses to cast an array with a zero in its shape,
            # and an empty block has no bytes to write anyway.
            if block.size:
                self._file.write(memoryview(block).cast("B"))
        elif self.fmt == "csv":
            if block.size:
                np.savetxt(
                    self._file,
                    block.reshape(len(block), -1),
                    fmt=_number_format(self.dtype),
                    delimiter=",",
                )
        elif self.fmt == "parquet":
            self._write_parquet(block.reshape(len(block), -1))
        else:
            self._blocks.append(block.copy())

    def _write_parquet(self, block):
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = [f"{self.name}_{j}" for j in range(block.shape[1])]
        table = pa.table({n: block[:, j] for j, n in enumerate(names)})
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.path, table.schema)
        self._parquet.write_table(table)

    def close(self) -> None:
        """Finish the file (the caller then renames it into place)."""
        if self.fmt == "npz":
            data = (
                np.concatenate(self._blocks)
                if self._blocks
                else np.empty(self.shape, self.dtype)
            )
            with open(self.path, "wb") as f:
                np.savez(f, **{self.name: data.reshape(self.shape)})
        elif self.fmt == "parquet":
            if self._parquet is None:  # no rows: an empty table of the columns
                self._write_parquet(np.empty((0,) + self.shape[1:], self.dtype))
            self._parquet.close()
        else:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def abort(self) -> None:
        """Release the file after a failure (the caller deletes it)."""
        if self._file is not None and not self._file.closed:
            self._file.close()
        if self._parquet is not None:
            with contextlib.suppress(Exception):
                self._parquet.close()


def output_format(out, allowed: tuple) -> str:
    """The format of OUT, checked against what the command can write."""
    formats = {
        ext: f
        for ext, f in {
            ".npy": "npy",
            ".npz": "npz",
            ".csv": "csv",
            ".parquet": "parquet",
            ".pq": "parquet",
        }.items()
        if f in allowed
    }
    fmt = file_format(out, formats)
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise InputError(
                out, "writing Parquet needs pyarrow: pip install 'fastdiv[parquet]'"
            ) from None
    return fmt
