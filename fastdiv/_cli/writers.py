"""Write results so that no run ever leaves a half-written or lost file.

Everything goes to a temporary file in the destination's folder (so that the
final rename stays on one file system and is atomic) and is renamed over the
destination with :func:`os.replace` only once complete. An exception, Ctrl-C
or SIGTERM (which :mod:`fastdiv.cli` turns into an exception) removes the
temporary file instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import sys
import tempfile

import numpy as np

from fastdiv._cli.errors import InputError, stop_if_signalled, termination_requested
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
    if os.path.exists(out) and not os.path.isfile(out):
        # A device (/dev/null), FIFO or socket: the atomic write would rename
        # a regular file over it, replacing the node itself (as root, even
        # /dev/null), so it is refused, --force or not.
        raise InputError(
            out,
            "is not a regular file (a device, FIFO or socket); fastdiv writes "
            "its results to regular files only",
        )
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise InputError(out, f"cannot be written: no folder {folder}")
    try:
        # Before any work (a bench run takes minutes): can a file be made
        # there? Permissions, a read-only mount, a full disk all show here.
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise _unwritable(out, exc) from None
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
    if termination_requested():
        # SIGTERM or SIGINT came while the body ran, and its exception was
        # lost.
        _discard(tmp)
        stop_if_signalled()
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
        self._behind = None
        if fmt == "npy":
            self._file = open(path, "wb")
            header = {
                "descr": np.lib.format.dtype_to_descr(self.dtype),
                "fortran_order": False,
                "shape": self.shape,
            }
            np.lib.format.write_array_header_2_0(self._file, header)
            self._file.flush()
            self._behind = _WriteBehind(self._file.fileno(), self._file.tell())
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
                self._file.flush()
                self._behind.wrote(self._file.tell())
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
            # The data must be on disk before the caller renames the file
            # over an existing OUT, or a crash could leave neither. After
            # the write-behind of a .npy, little is left for fsync to do.
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


class _WriteBehind:
    """Send a file that is written front to back to disk as it grows, and
    drop what is on disk from the page cache.

    Measured on the project's VM, ``fastdiv softmax`` of 2 GB of float32
    (phases timed in the command, several runs on a shared machine): the
    writes into new page-cache pages took 2.3-5.4 s, since the host takes
    back memory left free and hands each page out again slowly (about 1 s
    per 800 MB), and the fsync after them 0.7-0.8 s. With the writeback
    started after each block and the pages :data:`WINDOW_BYTES` behind
    dropped once on disk, the same pages come back while still backed by
    the host: 0.7-1.5 s for the writes, the writeback's 0.2-0.4 s
    included, and under 20 ms for the fsync. The page cache the command
    leaves behind is small too.

    Only an optimisation: where the system lacks a call, or the file
    system refuses one, it stops and the file is written as before. Any
    other error (a failed write, a full disk) is raised like one from the
    writes or the final fsync.
    """

    # How far behind the write position the pages are waited for and
    # dropped: two 32 MB blocks of ``fastdiv softmax``, enough for the disk
    # to finish one block while the next is computed.
    WINDOW_BYTES = 64 * 2**20

    def __init__(self, fd: int, start: int):
        self._fd = fd
        self._started = start  # writeback asked for up to here
        self._dropped = start  # dropped from the page cache up to here
        self._on = hasattr(os, "posix_fadvise")

    def wrote(self, end: int) -> None:
        """The file is now written up to byte ``end``."""
        if not self._on:
            return
        try:
            self._start(self._started, end - self._started)
            self._started = end
            stop = end - self.WINDOW_BYTES
            if stop > self._dropped:
                self._wait(self._dropped, stop - self._dropped)
                os.posix_fadvise(
                    self._fd, self._dropped, stop - self._dropped, _DONTNEED
                )
                self._dropped = stop
        except OSError as exc:
            # A failed write found by the wait is reported once per file:
            # the final fsync would not see it again, so it is raised here.
            if exc.errno not in _UNSUPPORTED_ERRNOS:
                raise
            self._on = False

    def _start(self, offset: int, length: int) -> None:
        if _sync_file_range is not None:
            _sync_range(self._fd, offset, length, _SFR_WRITE)
        else:
            # Linux starts writeback of dirty pages for DONTNEED too; the
            # pages still dirty then are not dropped.
            os.posix_fadvise(self._fd, offset, length, _DONTNEED)

    def _wait(self, offset: int, length: int) -> None:
        if _sync_file_range is not None:
            _sync_range(self._fd, offset, length, _SFR_WAIT)


def _load_sync_file_range():
    """Linux's sync_file_range(2) through ctypes, or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _sync_range(fd: int, offset: int, length: int, flags: int) -> None:
    if _sync_file_range(fd, offset, length, flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


# What a system or file system without the calls answers.
_UNSUPPORTED_ERRNOS = frozenset(
    {errno.ENOSYS, errno.EINVAL, errno.ESPIPE, errno.EOPNOTSUPP, errno.ENOTSUP}
)
_sync_file_range = _load_sync_file_range()
_DONTNEED = getattr(os, "POSIX_FADV_DONTNEED", 4)
# SYNC_FILE_RANGE_WRITE starts the writeback of dirty pages; with
# WAIT_BEFORE and WAIT_AFTER as well it returns once they are on disk.
_SFR_WRITE = 2
_SFR_WAIT = 1 | 2 | 4


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
