"""Turn the files the command is given into arrays, or say what is wrong.

Formats are told apart by the file name's extension: ``.npy`` (memory
mapped, never unpickled), ``.npz`` (one dense array, or a SciPy sparse
matrix saved by :func:`scipy.sparse.save_npz`), ``.csv`` (numbers separated
by commas, an optional header line of names) and ``.parquet``/``.pq``
(numeric columns; needs pyarrow). Every problem becomes an
:class:`~fastdiv._cli.errors.InputError` naming the file.
"""

from __future__ import annotations

import ast
import csv
import math
import os
import struct
import warnings
from dataclasses import dataclass

import numpy as np

from fastdiv._cli.errors import InputError

FORMATS = {
    ".npy": "npy",
    ".npz": "npz",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}

# The keys scipy.sparse.save_npz writes: format, shape and data always, then
# indices and indptr (csr, csc, bsr), row and col or coords (coo), offsets
# (dia), and _is_array for a sparse array rather than a matrix. An archive
# whose keys are the first three and some of the others holds a sparse
# matrix rather than dense arrays.
_SPARSE_REQUIRED = {"format", "shape", "data"}
_SPARSE_KEYS = _SPARSE_REQUIRED | {
    "indices",
    "indptr",
    "row",
    "col",
    "coords",
    "offsets",
    "_is_array",
}


def file_format(path, formats=FORMATS) -> str:
    """The format of ``path`` from its extension, or InputError."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in formats:
        known = ", ".join(sorted(formats))
        raise InputError(
            path, f"unknown format {ext or '(no extension)'!r}; use one of {known}"
        )
    return formats[ext]


def split_key(spec: str) -> tuple[str, str | None]:
    """``"a.npz:logits"`` -> ``("a.npz", "logits")``: an array in an archive.

    A name that exists as a file is never split, so paths holding colons
    still work.
    """
    if os.path.exists(spec) or ":" not in spec:
        return spec, None
    path, key = spec.rsplit(":", 1)
    if path.lower().endswith(".npz") and key:
        return path, key
    return spec, None


def _require_file(path) -> None:
    if not os.path.exists(path):
        raise InputError(path, "no such file")
    if os.path.isdir(path):
        raise InputError(path, "is a directory, not a file")


# --------------------------------------------------------------------------
# .npy
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class NpyHeader:
    """What the header of a .npy file says, read without touching the data."""

    shape: tuple
    dtype: np.dtype
    fortran_order: bool
    offset: int


def read_npy_header(path) -> NpyHeader:
    """Read and check the header of a .npy file.

    A file whose dtype holds Python objects would need unpickling, which can
    run arbitrary code: it is refused here and its data never read.
    """
    _require_file(path)
    fmt = np.lib.format
    with open(path, "rb") as f:
        try:
            version = fmt.read_magic(f)
        except ValueError:
            raise InputError(
                path,
                "is not a .npy file (no NumPy magic string); a pickle is never loaded",
            ) from None
        try:
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(f)
            elif version == (3, 0):
                shape, fortran, dtype = _read_header_3_0(f)
            else:
                raise InputError(
                    path,
                    f"is a .npy file of version {version}, which NumPy "
                    "does not define (1.0, 2.0 and 3.0 are read)",
                )
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - any damage to untrusted bytes
            raise InputError(path, f"has a damaged .npy header ({exc})") from None
        offset = f.tell()
    if dtype.hasobject:
        raise InputError(
            path,
            f"holds pickled Python objects (dtype {dtype}); "
            "fastdiv never loads pickles",
        )
    _check_numeric(path, dtype)
    need = offset + math.prod(shape) * dtype.itemsize
    if os.path.getsize(path) < need:
        raise InputError(
            path,
            f"is truncated: the header promises {need} bytes "
            f"but the file has {os.path.getsize(path)}",
        )
    return NpyHeader(tuple(shape), dtype, bool(fortran), offset)


def _read_header_3_0(f):
    """(shape, fortran_order, dtype) from a version 3.0 header: that of 2.0
    (a 4-byte little-endian length, then a Python dict literal), encoded in
    UTF-8 instead of Latin-1. NumPy has no public reader for it."""
    (length,) = struct.unpack("<I", f.read(4))
    header = ast.literal_eval(f.read(length).decode("utf-8"))
    if not isinstance(header, dict) or set(header) != {
        "descr",
        "fortran_order",
        "shape",
    }:
        raise ValueError(
            f"the header is not a dict of descr, fortran_order, shape: {header!r}"
        )
    shape = tuple(int(v) for v in header["shape"])
    if any(v < 0 for v in shape) or not isinstance(header["fortran_order"], bool):
        raise ValueError(f"bad shape or fortran_order in {header!r}")
    return shape, header["fortran_order"], np.lib.format.descr_to_dtype(header["descr"])


def _check_numeric(path, dtype: np.dtype) -> None:
    if dtype.kind not in "biuf" or dtype.fields is not None:
        raise InputError(path, f"holds dtype {dtype}, not real numbers")


def npy_rows(path, header: NpyHeader, start: int, stop: int) -> np.memmap:
    """Rows ``start:stop`` of a C-order .npy file as a fresh read-only memmap.

    A row runs along the last axis; all leading axes are flattened.

    Mapping only the block and dropping the map afterwards keeps the pages
    of rows already done out of the resident set, so a file larger than
    memory streams through.
    """
    k = header.shape[-1] if header.shape else 1
    rows = stop - start
    offset = header.offset + start * k * header.dtype.itemsize
    if rows == 0 or k == 0:
        return np.empty((rows, k), header.dtype)
    return np.memmap(path, header.dtype, "r", offset=offset, shape=(rows, k))


# --------------------------------------------------------------------------
# Whole arrays
# --------------------------------------------------------------------------


def read_array(spec: str, *, allow_sparse: bool = False):
    """The array in file ``spec`` (``path`` or ``path.npz:key``).

    .npy files come back memory-mapped (read-only). With ``allow_sparse``,
    a :func:`scipy.sparse.save_npz` archive of any format (csr, csc, coo,
    bsr, dia; array or matrix) gives a CSR matrix.
    """
    path, key = split_key(spec)
    fmt = file_format(path)
    _require_file(path)
    if key is not None and fmt != "npz":
        raise InputError(path, "only a .npz archive has named arrays")
    if fmt == "npy":
        header = read_npy_header(path)
        if math.prod(header.shape) == 0:
            return np.empty(header.shape, header.dtype)
        return np.load(path, mmap_mode="r", allow_pickle=False)
    if fmt == "npz":
        return _read_npz(path, key, allow_sparse)
    if fmt == "csv":
        return read_csv(path)
    return read_parquet(path)


def _read_npz(path, key, allow_sparse):
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # BadZipFile, OSError, ValueError
        raise InputError(path, f"is not a readable .npz archive ({exc})") from None
    with archive:
        names = list(archive.files)
        if key is None and _SPARSE_REQUIRED <= set(names) <= _SPARSE_KEYS:
            if not allow_sparse:
                raise InputError(
                    path, "holds a sparse matrix; this command needs a dense array"
                )
            return _read_sparse(path)
        if key is None:
            if len(names) != 1:
                listed = ", ".join(names) or "nothing"
                raise InputError(
                    path, f"holds {listed}; name one array as {os.fspath(path)}:NAME"
                )
            key = names[0]
        if key not in names:
            raise InputError(
                path, f"has no array {key!r} (it holds {', '.join(names)})"
            )
        try:
            arr = archive[key]
        except ValueError as exc:
            # allow_pickle=False refuses object arrays before unpickling.
            raise InputError(
                path,
                f"array {key!r} holds pickled Python "
                f"objects, which fastdiv never loads ({exc})",
            ) from None
    _check_numeric(path, arr.dtype)
    return arr


def _read_sparse(path):
    """Any format save_npz writes, as CSR; a 1-D array is one row."""
    import scipy.sparse

    try:
        mat = scipy.sparse.load_npz(path)
    except Exception as exc:
        raise InputError(path, f"is not a readable sparse matrix ({exc})") from None
    _check_numeric(path, mat.dtype)
    if mat.ndim > 2:  # an n-D COO array
        raise InputError(
            path,
            f"holds a {mat.ndim}-D sparse array; distributions are the rows "
            "of a 2-D one",
        )
    if mat.ndim == 1:
        mat = mat.reshape((1, -1))
    try:
        csr = mat.tocsr()
        # load_npz checks a CSR file's index arrays only in part; a column
        # index beyond the shape would make the compiled kernels read or
        # write out of bounds (a wrong result, or a crash).
        csr.check_format(full_check=True)
    except ValueError as exc:
        raise InputError(path, f"is not a readable sparse matrix ({exc})") from None
    return csr


# utf-8-sig reads plain UTF-8 too, and drops the byte-order mark that
# spreadsheets put first (it would make the first line's number a name).
_CSV_ENCODING = "utf-8-sig"


def read_csv(path) -> np.ndarray:
    """A CSV file of numbers as a 2-D float64 array.

    A first line none of whose fields is a number is taken as a header of
    names and skipped; a first line with some numbers and some other text is
    data, so its bad field is reported rather than the line dropped. A UTF-8
    byte-order mark (as spreadsheets write) is ignored. A file with no data
    rows is an error. NumPy's fast parser reads the file; only when it fails
    is the file read again line by line to say where and what is wrong.
    """
    _require_file(path)
    with open(path, newline="", encoding=_CSV_ENCODING, errors="replace") as f:
        first = next(csv.reader(f), None)
    if first is None:
        raise InputError(path, "is empty")
    header = bool(first) and not any(_is_number(field) for field in first)
    try:
        with warnings.catch_warnings():
            # "input contained no data": said below, as one line of ours.
            warnings.simplefilter("ignore", UserWarning)
            arr = np.loadtxt(
                path,
                delimiter=",",
                dtype=np.float64,
                ndmin=2,
                skiprows=int(header),
                comments=None,
                encoding=_CSV_ENCODING,
            )
    except (ValueError, UnicodeDecodeError) as exc:
        _diagnose_csv(path, header)
        raise InputError(path, f"cannot be read as numbers ({exc})") from None
    if arr.shape[0] == 0:
        line = ",".join(first)
        hint = (
            "; fields are separated by commas (this line holds a tab or ';')"
            if "\t" in line or ";" in line
            else ""
        )
        raise InputError(path, f"has no data rows, only the line {line!r}{hint}")
    return arr


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _diagnose_csv(path, header: bool) -> None:
    """Raise InputError at the first ragged row or field that is no number."""
    width = None
    with open(path, newline="", encoding=_CSV_ENCODING, errors="replace") as f:
        for line, fields in enumerate(csv.reader(f), start=1):
            if header and line == 1:
                width = len(fields)
                continue
            if not fields:  # blank lines are skipped, as NumPy does
                continue
            if width is None:
                width = len(fields)
            if len(fields) != width:
                raise InputError(
                    path,
                    f"line {line} has {len(fields)} fields but "
                    f"the lines before it have {width} "
                    "(ragged rows)",
                )
            for col, field in enumerate(fields):
                if not _is_number(field):
                    raise InputError(
                        path, f"line {line}, column {col}: {field!r} is not a number"
                    )


def read_parquet(path) -> np.ndarray:
    """The numeric columns of a Parquet file, side by side, as a 2-D array."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(
            path, "reading Parquet needs pyarrow: pip install 'fastdiv[parquet]'"
        ) from None
    _require_file(path)
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid and OSError
        raise InputError(path, f"is not a readable Parquet file ({exc})") from None
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        if column.null_count:
            raise InputError(
                path, f"column {name!r} has {column.null_count} missing values"
            )
        values = column.to_numpy()
        if values.dtype.kind not in "biuf":
            raise InputError(path, f"column {name!r} holds {column.type}, not numbers")
        columns.append(values)
    if not columns:
        return np.empty((table.num_rows, 0))
    return np.column_stack(columns)
