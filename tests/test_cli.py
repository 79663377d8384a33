"""The ``fastdiv`` command, run as a subprocess on files written here.

Every test starts ``python -m fastdiv`` the way a user would, so what is
checked is the whole path: argument parsing, reading, the kernels, writing,
exit codes and messages.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

import fastdiv

# The compiled backends may be slow to compile on a first run; the command
# tests check files and messages, and use the reference backend unless a
# test says otherwise.
ENV = {**os.environ, "FASTDIV_BACKEND": "numpy", "FASTDIV_NUM_THREADS": "1"}


def run(*args, cwd=None, env=None, check=True, timeout=120):
    proc = subprocess.run(
        [sys.executable, "-m", "fastdiv", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env or ENV,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def assert_bad_input(proc, *fragments):
    """Exit 2, one line on stderr holding every fragment, no traceback."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def leftovers(folder):
    """Temporary files a run left behind (ours start with a dot)."""
    return [f for f in os.listdir(folder) if f.startswith(".")]


@pytest.fixture
def logits():
    return np.random.default_rng(0).standard_normal((53, 7)) * 4


@pytest.fixture
def probs():
    rng = np.random.default_rng(1)
    p = rng.random((9, 6)) ** 3
    p[0, 2] = 0.0  # an exact zero
    return p / p.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------
# help and info
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sub", ["", "softmax", "pairwise", "nearest", "bench", "info", "demo"]
)
def test_every_subcommand_has_help(sub):
    proc = run(*([sub] if sub else []), "--help")
    assert "Usage: fastdiv" in proc.stdout


def test_info_reports_backends_threads_and_cpu():
    proc = run("info")
    for word in ("backends:", "numpy", "threads:", "OpenMP", "ISA", "log:", "exp:"):
        assert word in proc.stdout
    data = json.loads(run("info", "--json").stdout)
    assert data["backends"]["numpy"]["usable"] is True
    assert data["threads"] == 1  # FASTDIV_NUM_THREADS in ENV
    assert data["fastdiv"] == fastdiv.__version__
    if data["backends"]["cython"]["usable"]:
        has_avx512f = "avx512f" in data["vector_extensions"]
        assert data["cython_log"].startswith("inline AVX-512") == has_avx512f
        assert data["cython_exp"].startswith("inline AVX-512") == has_avx512f


@pytest.mark.parametrize(
    "variable, value", [("FASTDIV_NUM_THREADS", "abc"), ("FASTDIV_BACKEND", "bogus")]
)
@pytest.mark.parametrize(
    "sub",
    [
        ("softmax", "x.npy", "-o", "y.npy"),
        ("pairwise", "x.npy", "-o", "d.npy"),
        ("nearest", "x.npy", "-k", "1", "-o", "n.csv"),
        ("info",),
        ("bench", "--quick"),
        ("demo",),
        ("demo", "distill", "--quick"),
    ],
    ids=" ".join,
)
def test_bad_environment_variable_is_one_line(tmp_path, sub, variable, value):
    # softmax once showed FASTDIV_NUM_THREADS=abc as a ValueError traceback.
    np.save(tmp_path / "x.npy", np.full((3, 4), 0.25))
    env = {**ENV, variable: value}
    proc = run(*sub, cwd=tmp_path, env=env, check=False, timeout=60)
    assert_bad_input(proc, f"environment variable {variable}", repr(value))
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]


def test_options_given_win_over_bad_environment_variables(tmp_path):
    # As in fastdiv.options: a variable stands in only for an option not given.
    np.save(tmp_path / "x.npy", np.full((3, 4), 0.25))
    env = {**ENV, "FASTDIV_NUM_THREADS": "abc", "FASTDIV_BACKEND": "bogus"}
    for sub, out in (("softmax", "y.npy"), ("pairwise", "d.npy")):
        run(
            sub,
            tmp_path / "x.npy",
            "-o",
            tmp_path / out,
            "--backend",
            "numpy",
            "--threads",
            1,
            env=env,
        )
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), np.full((3, 4), 0.25))


def test_no_subcommand_and_unknown_option_are_usage_errors():
    assert run("softmax", check=False).returncode == 2
    assert run("softmax", "a.npy", "--nope", check=False).returncode == 2


# --------------------------------------------------------------------------
# softmax: formats, blocks, options
# --------------------------------------------------------------------------


def test_softmax_npy_in_many_blocks_matches_the_function(tmp_path, logits):
    x = logits.astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    run(
        "softmax",
        tmp_path / "x.npy",
        "-o",
        tmp_path / "y.npy",
        "--block-rows",
        5,
        "-T",
        2.5,
    )
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.float32
    # Row-wise results do not depend on the block size: bit-identical.
    np.testing.assert_array_equal(y, fastdiv.softmax(x, 2.5, backend="numpy"))
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("path", ["sync_file_range", "fadvise", "none"])
def test_npy_writer_write_behind_keeps_every_byte(tmp_path, monkeypatch, path):
    # The write-behind sends blocks to disk and drops them from the page
    # cache; with a window of a few bytes every block goes through it, by
    # sync_file_range, by posix_fadvise alone or (no such call) not at all.
    from fastdiv._cli import writers

    monkeypatch.setattr(writers._WriteBehind, "WINDOW_BYTES", 100)
    if path != "sync_file_range":
        monkeypatch.setattr(writers, "_sync_file_range", None)
    if path == "none":
        monkeypatch.delattr(writers.os, "posix_fadvise", raising=False)
    x = np.random.default_rng(5).standard_normal((41, 9)).astype(np.float32)
    out = tmp_path / "y.npy"
    writer = writers.RowWriter(out, "npy", x.shape, x.dtype, name="softmax")
    for start in range(0, len(x), 4):
        writer.write(x[start : start + 4])
    # No call failed and switched the write-behind off on the way.
    assert writer._behind._on == (path != "none")
    writer.close()
    np.testing.assert_array_equal(np.load(out), x)


def test_npy_writer_write_behind_raises_a_failed_write(tmp_path, monkeypatch):
    # A write error found while waiting for the writeback is reported to
    # that call only; the final fsync would not see it again.
    import errno

    from fastdiv._cli import writers

    def failing(fd, offset, length, flags):
        if flags == writers._SFR_WAIT:
            raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(writers._WriteBehind, "WINDOW_BYTES", 100)
    monkeypatch.setattr(writers, "_sync_file_range", failing)
    monkeypatch.setattr(writers, "_sync_range", failing)
    x = np.zeros((41, 9), np.float32)
    writer = writers.RowWriter(tmp_path / "y.npy", "npy", x.shape, x.dtype, name="s")
    with pytest.raises(OSError, match="Input/output"):
        for start in range(0, len(x), 4):
            writer.write(x[start : start + 4])
    writer.abort()


def test_log_softmax_of_3d_npy_streams_on_last_axis(tmp_path):
    x = np.random.default_rng(2).standard_normal((4, 6, 5))
    np.save(tmp_path / "x.npy", x)
    run(
        "softmax",
        tmp_path / "x.npy",
        "-o",
        tmp_path / "y.npy",
        "--log",
        "--block-rows",
        7,
    )
    np.testing.assert_array_equal(
        np.load(tmp_path / "y.npy"), fastdiv.log_softmax(x, backend="numpy")
    )


def test_softmax_on_another_axis_and_fortran_order(tmp_path, logits):
    np.save(tmp_path / "x.npy", np.asfortranarray(logits))
    run("softmax", tmp_path / "x.npy", "-o", tmp_path / "y.npy", "--axis", 0)
    y = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(y.sum(axis=0), 1.0)
    np.testing.assert_array_equal(y, fastdiv.softmax(logits, axis=0, backend="numpy"))


def test_softmax_csv_with_header_to_csv(tmp_path, logits):
    names = ",".join(f"c{j}" for j in range(logits.shape[1]))
    np.savetxt(tmp_path / "x.csv", logits, delimiter=",", header=names, comments="")
    run("softmax", tmp_path / "x.csv", "-o", tmp_path / "y.csv", "-T", 0.5)
    y = np.loadtxt(tmp_path / "y.csv", delimiter=",")
    np.testing.assert_array_equal(y, fastdiv.softmax(logits, 0.5, backend="numpy"))


def test_softmax_npz_in_by_key_and_npz_out(tmp_path, logits):
    np.savez(tmp_path / "x.npz", logits=logits, other=np.zeros(3))
    proc = run("softmax", tmp_path / "x.npz", "-o", tmp_path / "y.npz", check=False)
    assert_bad_input(proc, "x.npz", "logits", "other")
    run("softmax", f"{tmp_path / 'x.npz'}:logits", "-o", tmp_path / "y.npz")
    with np.load(tmp_path / "y.npz") as out:
        np.testing.assert_array_equal(
            out["softmax"], fastdiv.softmax(logits, backend="numpy")
        )


def test_softmax_parquet_in_and_out(tmp_path, logits):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({f"z{j}": logits[:, j] for j in range(logits.shape[1])})
    pq.write_table(table, tmp_path / "x.parquet")
    run("softmax", tmp_path / "x.parquet", "-o", tmp_path / "y.parquet")
    back = pq.read_table(tmp_path / "y.parquet")
    y = np.column_stack([c.to_numpy() for c in back.columns])
    np.testing.assert_array_equal(y, fastdiv.softmax(logits, backend="numpy"))


def test_softmax_npy_to_csv_keeps_float32_digits(tmp_path, logits):
    x = logits.astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    run("softmax", tmp_path / "x.npy", "-o", tmp_path / "y.csv", "--block-rows", 10)
    y = np.loadtxt(tmp_path / "y.csv", delimiter=",", dtype=np.float32)
    np.testing.assert_array_equal(y, fastdiv.softmax(x, backend="numpy"))


@pytest.mark.parametrize("backend", ["numba", "cython"])
def test_softmax_compiled_backend_agrees(tmp_path, logits, backend):
    if not fastdiv._dispatch.backends()[backend].usable:
        pytest.skip(f"{backend} not usable")
    np.save(tmp_path / "x.npy", logits)
    run(
        "softmax",
        tmp_path / "x.npy",
        "-o",
        tmp_path / "y.npy",
        "--backend",
        backend,
        "--threads",
        2,
        "--block-rows",
        16,
        timeout=600,
    )
    np.testing.assert_allclose(
        np.load(tmp_path / "y.npy"),
        fastdiv.softmax(logits, backend="numpy"),
        rtol=1e-13,
        atol=1e-300,
    )


def test_quiet_and_non_terminal_runs_print_nothing_on_stderr(tmp_path):
    x = np.zeros((3_000, 3), np.float32)
    np.save(tmp_path / "x.npy", x)
    for extra in ([], ["--quiet"]):
        proc = run(
            "softmax",
            tmp_path / "x.npy",
            "-o",
            tmp_path / "y.npy",
            "--block-rows",
            10,
            "--force",
            *extra,
        )
        assert proc.stderr == ""
        assert proc.stdout == ""


@pytest.mark.parametrize("shape", [(3, 0), (0, 5), (0, 0), (2, 3, 0)])
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("ext", ["npy", "npz"])
def test_softmax_of_an_empty_array_writes_the_empty_result(tmp_path, shape, log, ext):
    # Softmax of an (n, 0) array is an (n, 0) array (DESIGN.md); writing it
    # once made memoryview refuse to cast a shape holding a zero.
    np.save(tmp_path / "z.npy", np.zeros(shape))
    flag = ["--log"] if log else []
    run("softmax", tmp_path / "z.npy", "-o", tmp_path / f"o.{ext}", *flag)
    fn = fastdiv.log_softmax if log else fastdiv.softmax
    expected = fn(np.zeros(shape), backend="numpy")
    if ext == "npy":
        got = np.load(tmp_path / "o.npy")
    else:
        with np.load(tmp_path / "o.npz") as f:
            got = f["log_softmax" if log else "softmax"]
    assert got.shape == expected.shape == shape and got.dtype == expected.dtype
    assert leftovers(tmp_path) == []


def test_bad_temperature_and_axis(tmp_path, logits):
    np.save(tmp_path / "x.npy", logits)
    proc = run(
        "softmax", tmp_path / "x.npy", "-o", tmp_path / "y.npy", "-T", 0, check=False
    )
    assert_bad_input(proc, "temperature")
    proc = run(
        "softmax",
        tmp_path / "x.npy",
        "-o",
        tmp_path / "y.npy",
        "--axis",
        2,
        check=False,
    )
    assert_bad_input(proc, "x.npy", "--axis 2")
    assert not (tmp_path / "y.npy").exists()


# --------------------------------------------------------------------------
# safe writing
# --------------------------------------------------------------------------


def test_existing_output_needs_force(tmp_path, logits):
    np.save(tmp_path / "x.npy", logits)
    (tmp_path / "y.npy").write_bytes(b"precious")
    proc = run("softmax", tmp_path / "x.npy", "-o", tmp_path / "y.npy", check=False)
    assert_bad_input(proc, "y.npy", "--force")
    assert (tmp_path / "y.npy").read_bytes() == b"precious"
    run("softmax", tmp_path / "x.npy", "-o", tmp_path / "y.npy", "--force")
    assert np.load(tmp_path / "y.npy").shape == logits.shape
    assert leftovers(tmp_path) == []


def test_output_is_never_the_input(tmp_path, logits):
    np.save(tmp_path / "x.npy", logits)
    before = (tmp_path / "x.npy").read_bytes()
    proc = run(
        "softmax", tmp_path / "x.npy", "-o", tmp_path / "x.npy", "--force", check=False
    )
    assert_bad_input(proc, "x.npy", "input")
    os.link(tmp_path / "x.npy", tmp_path / "alias.npy")
    proc = run(
        "softmax",
        tmp_path / "x.npy",
        "-o",
        tmp_path / "alias.npy",
        "--force",
        check=False,
    )
    assert_bad_input(proc, "alias.npy", "input")
    assert (tmp_path / "x.npy").read_bytes() == before


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_interrupted_run_leaves_no_output_and_no_temporary(tmp_path, sig, code):
    # One row per block makes the run slow enough to stop it midway; the
    # old OUT (with --force) must survive untouched.
    np.save(tmp_path / "x.npy", np.zeros((400_000, 4), np.float32))
    (tmp_path / "y.npy").write_bytes(b"old result")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fastdiv",
            "softmax",
            str(tmp_path / "x.npy"),
            "-o",
            str(tmp_path / "y.npy"),
            "--block-rows",
            "1",
            "--force",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    deadline = time.monotonic() + 60
    while not leftovers(tmp_path) and time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be stopped"
        time.sleep(0.01)
    assert leftovers(tmp_path), "no temporary file appeared"
    time.sleep(0.2)  # well inside the writing loop
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "no output was written" in err and "Traceback" not in err
    assert leftovers(tmp_path) == []
    assert (tmp_path / "y.npy").read_bytes() == b"old result"


def test_failure_midway_leaves_no_output(tmp_path):
    # A file truncated after its header was checked fails while streaming.
    x = np.zeros((1000, 4))
    np.save(tmp_path / "x.npy", x)
    proc = run(
        "softmax", tmp_path / "x.npy", "-o", tmp_path / "missing/y.npy", check=False
    )
    assert_bad_input(proc, "y.npy", "no folder")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "sub, out, reason",
    [
        # /proc refuses new files (ENOENT) and /sys denies them (EACCES),
        # even to root, for whom a chmod-ed folder would still be writable.
        ("softmax", "/proc/fastdiv-test-out.npy", "No such file"),
        ("nearest", "/sys/fastdiv-test-out.csv", "Permission denied"),
    ],
)
def test_unwritable_output_folder_is_one_line_and_exit_2(tmp_path, sub, out, reason):
    np.save(tmp_path / "x.npy", np.full((3, 4), 0.25))
    args = ("-k", "1") if sub == "nearest" else ()
    proc = run(sub, tmp_path / "x.npy", *args, "-o", out, check=False)
    assert_bad_input(proc, out, "cannot be written", reason)
    assert leftovers(tmp_path) == []


def test_write_errors_of_the_output_file_system_name_the_output(tmp_path, monkeypatch):
    import errno

    from fastdiv._cli.errors import InputError
    from fastdiv._cli.writers import atomic_output

    # A read-only mount fails when the temporary file is created.
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    with monkeypatch.context() as m:
        m.setattr("tempfile.mkstemp", read_only)
        with pytest.raises(InputError, match="y.npy: cannot be written: .*EROFS"):
            with atomic_output(tmp_path / "y.npy"):
                raise AssertionError("the body must not run")
    # A full disk fails while writing: the temporary file goes too.
    with pytest.raises(InputError, match="y.npy: cannot be written: .*ENOSPC"):
        with atomic_output(tmp_path / "y.npy"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert os.listdir(tmp_path) == []
    # Other errors of the body (reading an input, say) pass through.
    with pytest.raises(PermissionError):
        with atomic_output(tmp_path / "y.npy"):
            raise PermissionError(errno.EACCES, "an input")
    assert os.listdir(tmp_path) == []


def test_a_lost_sigterm_still_stops_the_output(tmp_path):
    # SIGTERM's exception can be swallowed (raised inside a ctypes callback
    # while Numba compiles): the flag it left still keeps the output from
    # being renamed into place, and the command from exiting 0.
    from fastdiv import cli
    from fastdiv._cli import errors
    from fastdiv._cli.writers import atomic_output

    try:
        with pytest.raises(errors.Terminated):
            with atomic_output(tmp_path / "y.npy") as tmp:
                with open(tmp, "wb") as f:
                    f.write(b"partial")
                try:
                    errors.request_termination()
                except errors.Terminated:
                    pass  # what the callback did with it
        assert os.listdir(tmp_path) == []
        code = cli.main(["info"])  # main clears the flag: a normal run
        assert code == 0
    finally:
        errors.clear_termination()


@pytest.mark.parametrize(
    "request_name, code", [("termination", 143), ("interrupt", 130)]
)
def test_a_lost_signal_stops_the_block_loop(tmp_path, monkeypatch, request_name, code):
    # A signal whose exception was swallowed (inside a __del__ of an
    # unmapped block, say) stops the streamed run at its next block, not at
    # the end of the run, and leaves no output and no temporary file.
    from fastdiv import cli
    from fastdiv._cli import errors, readers

    np.save(tmp_path / "x.npy", np.zeros((50, 4), np.float32))
    real_rows = readers.npy_rows
    blocks = []

    def rows_then_signal(path, header, start, stop):
        blocks.append(start)
        if len(blocks) == 3:
            try:
                getattr(errors, f"request_{request_name}")()
            except (errors.Terminated, KeyboardInterrupt):
                pass  # lost
        return real_rows(path, header, start, stop)

    monkeypatch.setattr(readers, "npy_rows", rows_then_signal)
    try:
        out = tmp_path / "y.npy"
        got = cli.main(
            [
                "softmax",
                str(tmp_path / "x.npy"),
                "-o",
                str(out),
                "--block-rows",
                "1",
                "--quiet",
            ]
        )
        assert got == code
        assert len(blocks) == 3
        assert sorted(os.listdir(tmp_path)) == ["x.npy"]
    finally:
        errors.clear_termination()


# --------------------------------------------------------------------------
# bad input: one line, exit code 2
# --------------------------------------------------------------------------


def test_missing_file(tmp_path):
    proc = run("softmax", tmp_path / "nope.npy", "-o", tmp_path / "y.npy", check=False)
    assert_bad_input(proc, "nope.npy", "no such file")


def test_unknown_input_and_output_formats(tmp_path, logits):
    (tmp_path / "x.txt").write_text("1,2\n")
    proc = run("softmax", tmp_path / "x.txt", "-o", tmp_path / "y.npy", check=False)
    assert_bad_input(proc, "x.txt", "unknown format")
    np.save(tmp_path / "x.npy", logits)
    proc = run("softmax", tmp_path / "x.npy", "-o", tmp_path / "y.h5", check=False)
    assert_bad_input(proc, "y.h5", "unknown format")


def test_pickled_npy_is_never_loaded(tmp_path):
    marker = tmp_path / "pwned"
    # An object array whose unpickling would create a file.
    evil = np.empty(1, dtype=object)
    evil[0] = _Evil(str(marker))
    np.save(tmp_path / "x.npy", evil, allow_pickle=True)
    proc = run("softmax", tmp_path / "x.npy", "-o", tmp_path / "y.npy", check=False)
    assert_bad_input(proc, "x.npy", "pickle")
    # A bare pickle with a .npy name.
    (tmp_path / "p.npy").write_bytes(pickle.dumps(_Evil(str(marker))))
    proc = run("softmax", tmp_path / "p.npy", "-o", tmp_path / "y.npy", check=False)
    assert_bad_input(proc, "p.npy", "not a .npy file")
    assert not marker.exists()


def test_npy_of_version_3_is_read_and_damaged_headers_are_one_line(tmp_path):
    x = np.arange(12.0).reshape(4, 3)
    with open(tmp_path / "v3.npy", "wb") as f:
        np.lib.format.write_array(f, x, version=(3, 0))
    run("softmax", tmp_path / "v3.npy", "-o", tmp_path / "y.npy")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), fastdiv.softmax(x))
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    proc = run("softmax", tmp_path / "bad.npy", "-o", tmp_path / "z.npy", check=False)
    assert_bad_input(proc, "bad.npy", "version")
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (4, 3"  # cut short
    (tmp_path / "cut.npy").write_bytes(
        b"\x93NUMPY\x03\x00" + len(header).to_bytes(4, "little") + header
    )
    proc = run("softmax", tmp_path / "cut.npy", "-o", tmp_path / "z.npy", check=False)
    assert_bad_input(proc, "cut.npy", "damaged .npy header")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_out_that_is_not_a_regular_file_is_refused_even_with_force(tmp_path):
    # The atomic rename would replace the node itself: as root, -o /dev/null
    # --force would have replaced /dev/null with a regular file.
    np.save(tmp_path / "x.npy", np.zeros((2, 3)))
    fifo = tmp_path / "out.npy"
    os.mkfifo(fifo)
    for extra in ((), ("--force",)):
        proc = run("softmax", tmp_path / "x.npy", "-o", fifo, *extra, check=False)
        assert_bad_input(proc, "out.npy", "not a regular file")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert leftovers(tmp_path) == []


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_softmax_of_a_dtype_fastdiv_does_not_compute_in(tmp_path):
    # np.longdouble (float128 on x86-64 Linux) was once a TypeError traceback.
    if np.dtype(np.longdouble).itemsize <= 8:
        pytest.skip("long double is float64 here")
    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.longdouble))
    proc = run("softmax", tmp_path / "x.npy", "-o", tmp_path / "y.npy", check=False)
    assert_bad_input(proc, "x.npy", str(np.dtype(np.longdouble)), "float64")
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]


def test_csv_first_line_byte_order_mark_and_no_data(tmp_path):
    # A first line with a number in it is data: its bad field is reported,
    # never the line dropped as a header.
    (tmp_path / "m.csv").write_text("1,2,x\n4,5,6\n")
    proc = run("softmax", tmp_path / "m.csv", "-o", tmp_path / "y.npy", check=False)
    assert_bad_input(proc, "m.csv", "line 1, column 2", "'x'")
    # A spreadsheet's byte-order mark does not turn the first row into names.
    (tmp_path / "b.csv").write_bytes(b"\xef\xbb\xbf0.5,0.5\n0.25,0.75\n")
    run("pairwise", tmp_path / "b.csv", "-o", tmp_path / "d.npy")
    assert np.load(tmp_path / "d.npy").shape == (2, 2)
    # Names only, or one line that is not comma-separated: no data rows.
    (tmp_path / "h.csv").write_text("a,b,c\n")
    proc = run("softmax", tmp_path / "h.csv", "-o", tmp_path / "y.npy", check=False)
    assert_bad_input(proc, "h.csv", "no data rows")
    (tmp_path / "t.csv").write_text("1\t2\t3\n")
    proc = run("softmax", tmp_path / "t.csv", "-o", tmp_path / "y.npy", check=False)
    assert_bad_input(proc, "t.csv", "no data rows", "commas")
    assert not (tmp_path / "y.npy").exists()


def test_ragged_and_non_numeric_csv(tmp_path):
    (tmp_path / "r.csv").write_text("1,2,3\n4,5,6\n7,8\n")
    proc = run("softmax", tmp_path / "r.csv", "-o", tmp_path / "y.npy", check=False)
    assert_bad_input(proc, "r.csv", "line 3", "ragged")
    (tmp_path / "w.csv").write_text("1,2\n3,abc\n")
    proc = run("softmax", tmp_path / "w.csv", "-o", tmp_path / "y.npy", check=False)
    assert_bad_input(proc, "w.csv", "line 2", "abc")


def test_bad_entry_is_shown_as_a_plain_number(tmp_path, probs):
    # NumPy 2 would write np.float64(-0.0336); the message shows the number.
    probs[4, 1] = -0.0336
    np.save(tmp_path / "p.npy", probs)
    proc = run("nearest", tmp_path / "p.npy", "-o", tmp_path / "n.csv", check=False)
    assert_bad_input(proc, "p.npy", "row 4", "negative entry (-0.0336) in column 1")
    assert "np." not in proc.stderr


@pytest.mark.parametrize("value, word", [(np.nan, "NaN"), (-0.25, "negative")])
def test_bad_probabilities_name_the_row(tmp_path, probs, value, word):
    p = probs.copy()
    p[4, 1] = value
    np.savetxt(tmp_path / "p.csv", p, delimiter=",")
    for sub in ("pairwise", "nearest"):
        out = tmp_path / ("d.npy" if sub == "pairwise" else "n.csv")
        proc = run(sub, tmp_path / "p.csv", "-o", out, "--normalize", check=False)
        assert_bad_input(proc, "p.csv", "row 4", word)
        assert not out.exists()


def test_sparse_negative_and_unnormalized_rows(tmp_path):
    import scipy.sparse

    counts = scipy.sparse.csr_array(np.array([[1.0, 0, 2], [0, 3, 0], [0, 0, -1]]))
    scipy.sparse.save_npz(tmp_path / "c.npz", counts)
    proc = run(
        "pairwise",
        tmp_path / "c.npz",
        "-o",
        tmp_path / "d.npy",
        "--normalize",
        check=False,
    )
    assert_bad_input(proc, "c.npz", "row 2", "negative")
    np.savetxt(tmp_path / "u.csv", np.array([[0.5, 0.5], [0.5, 0.6]]), delimiter=",")
    proc = run("pairwise", tmp_path / "u.csv", "-o", tmp_path / "d.npy", check=False)
    assert_bad_input(proc, "u.csv", "row 1", "--normalize")


def test_p_and_q_of_different_widths(tmp_path, probs):
    np.save(tmp_path / "p.npy", probs)
    np.save(tmp_path / "q.npy", probs[:, :4] / probs[:, :4].sum(1, keepdims=True))
    for sub, out in (("pairwise", "d.npy"), ("nearest", "n.csv")):
        proc = run(
            sub,
            tmp_path / "p.npy",
            tmp_path / "q.npy",
            "-o",
            tmp_path / out,
            check=False,
        )
        assert_bad_input(proc, "q.npy", "4 columns", "6")


# --------------------------------------------------------------------------
# pairwise and nearest
# --------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["js", "kl", "js_distance", "cross_entropy"])
def test_pairwise_npy_against_the_function(tmp_path, probs, metric):
    q = probs[::-1] + 0.01
    q /= q.sum(axis=1, keepdims=True)
    np.save(tmp_path / "p.npy", probs)
    np.save(tmp_path / "q.npy", q)
    run(
        "pairwise",
        tmp_path / "p.npy",
        tmp_path / "q.npy",
        "-m",
        metric,
        "-o",
        tmp_path / "d.npy",
    )
    expected = fastdiv.pairwise(probs, q, metric=metric, backend="numpy")
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), expected)


def test_pairwise_sparse_counts_to_csv(tmp_path):
    import scipy.sparse
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(3)
    dense = rng.poisson(0.7, size=(12, 30)).astype(np.float64)
    dense[:, 0] += 1  # no empty row
    scipy.sparse.save_npz(tmp_path / "c.npz", scipy.sparse.csr_array(dense))
    run("pairwise", tmp_path / "c.npz", "--normalize", "-o", tmp_path / "d.csv")
    got = np.loadtxt(tmp_path / "d.csv", delimiter=",")
    p = dense / dense.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got, cdist(p, p, "jensenshannon") ** 2, atol=1e-13)
    assert np.all(np.diag(got) == 0)


@pytest.mark.parametrize("kind", ["array", "matrix"])
@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "bsr", "dia"])
def test_every_format_save_npz_writes_is_read_as_sparse(tmp_path, probs, fmt, kind):
    # Only CSR's keys were once recognised: a COO file was taken for an
    # archive of dense arrays ("holds row, col, format, shape, data").
    import scipy.sparse

    counts = probs * 7
    mat = getattr(scipy.sparse, f"{fmt}_{kind}")(counts)
    scipy.sparse.save_npz(tmp_path / "c.npz", mat)
    run("pairwise", tmp_path / "c.npz", "--normalize", "-o", tmp_path / "d.npy")
    expected = fastdiv.pairwise(
        scipy.sparse.csr_array(counts), normalize=True, backend="numpy"
    )
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), expected)
    np.save(tmp_path / "p.npy", probs[:3])
    run(
        "nearest",
        tmp_path / "p.npy",
        tmp_path / "c.npz",
        "--normalize",
        "-k",
        2,
        "-o",
        tmp_path / "n.npz",
    )
    idx, _ = fastdiv.nearest(probs[:3], probs, k=2, backend="numpy")
    with np.load(tmp_path / "n.npz") as out:
        np.testing.assert_array_equal(out["indices"], idx)


def test_sparse_arrays_not_of_two_dimensions(tmp_path):
    import scipy.sparse

    try:  # COO arrays of other than 2 dimensions need a recent SciPy
        vector = scipy.sparse.coo_array(np.array([1.0, 0, 3]))
        cube = scipy.sparse.coo_array(np.ones((2, 2, 2)))
    except (TypeError, ValueError):
        pytest.skip("this SciPy has only 2-D sparse arrays")
    # A 1-D sparse array is one distribution, as a 1-D dense one is.
    scipy.sparse.save_npz(tmp_path / "v.npz", vector)
    run("pairwise", tmp_path / "v.npz", "--normalize", "-o", tmp_path / "d.npy")
    assert np.load(tmp_path / "d.npy").shape == (1, 1)
    scipy.sparse.save_npz(tmp_path / "c.npz", cube)
    proc = run("pairwise", tmp_path / "c.npz", "-o", tmp_path / "e.npy", check=False)
    assert_bad_input(proc, "c.npz", "3-D sparse")
    assert not (tmp_path / "e.npy").exists()


def test_sparse_file_with_a_column_index_out_of_range(tmp_path):
    # save_npz's keys, written by hand: column 7 of a 3-column matrix. It was
    # an IndexError traceback here, and out-of-bounds reads in compiled code.
    np.savez(
        tmp_path / "c.npz",
        format=np.bytes_(b"csr"),
        shape=np.array([2, 3]),
        data=np.array([0.5, 0.5, 1.0]),
        indices=np.array([0, 7, 1]),
        indptr=np.array([0, 2, 3]),
    )
    for sub, out in (("pairwise", "d.npy"), ("nearest", "n.csv")):
        proc = run(sub, tmp_path / "c.npz", "-o", tmp_path / out, check=False)
        assert_bad_input(proc, "c.npz", "not a readable sparse matrix", "< 3")
    assert sorted(os.listdir(tmp_path)) == ["c.npz"]


def test_pairwise_large_output_goes_through_a_memory_map(tmp_path, probs):
    np.save(tmp_path / "p.npy", probs)
    env = {**ENV, "FASTDIV_CLI_MEMMAP_BYTES": "0"}
    run("pairwise", tmp_path / "p.npy", "-o", tmp_path / "d.npy", env=env)
    np.testing.assert_array_equal(
        np.load(tmp_path / "d.npy"), fastdiv.pairwise(probs, backend="numpy")
    )
    assert leftovers(tmp_path) == []


def test_pairwise_refuses_a_matrix_too_large_before_any_work(tmp_path):
    # 1,000,000 rows: an 8 TB matrix; the input file is only 16 MB.
    p = np.full((1_000_000, 2), 0.5)
    np.save(tmp_path / "p.npy", p)
    t0 = time.monotonic()
    proc = run("pairwise", tmp_path / "p.npy", "-o", tmp_path / "d.npy", check=False)
    assert_bad_input(proc, "d.npy", "1000000 x 1000000", "fastdiv nearest")
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "d.npy").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "sub, args, fragment",
    [
        ("pairwise", ("--base", "1"), "!= 1, got 1.0"),
        ("pairwise", ("--base", "nan"), "finite"),
        ("nearest", ("-m", "js_distance", "--base", "0.5", "-k", "1"), "> 1"),
    ],
)
def test_bad_base_names_the_option(tmp_path, probs, sub, args, fragment):
    np.save(tmp_path / "p.npy", probs)
    out = tmp_path / ("o.npy" if sub == "pairwise" else "o.csv")
    proc = run(sub, tmp_path / "p.npy", "-o", out, *args, check=False)
    assert_bad_input(proc, "--base must be", fragment)
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "p_shape, q_shape",
    [((3, 0), None), ((0, 5), None), ((0, 0), None), ((3, 2), (0, 2))],
)
def test_pairwise_of_empty_arrays_writes_what_the_library_gives(
    tmp_path, p_shape, q_shape
):
    # Rows over zero categories, or no rows at all: the matrix the library
    # gives, written without a traceback (memoryview refused the zero shapes).
    p = np.zeros(p_shape) if p_shape[1] == 0 else np.full(p_shape, 1 / p_shape[1])
    np.save(tmp_path / "p.npy", p)
    args = [tmp_path / "p.npy"]
    q = None
    if q_shape is not None:
        q = np.zeros(q_shape)
        np.save(tmp_path / "q.npy", q)
        args.append(tmp_path / "q.npy")
    expected = fastdiv.pairwise(p, q, backend="numpy")
    run("pairwise", *args, "-o", tmp_path / "d.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), expected)
    assert np.load(tmp_path / "d.npy").shape == expected.shape
    run("pairwise", *args, "-o", tmp_path / "d.csv")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("shape", [(3, 0), (0, 5), (0, 0)])
def test_nearest_of_empty_arrays_writes_the_library_result(tmp_path, shape):
    np.save(tmp_path / "p.npy", np.zeros(shape))
    run("nearest", tmp_path / "p.npy", "-k", 2, "-o", tmp_path / "n.npz")
    idx, val = fastdiv.nearest(np.zeros(shape), k=2, backend="numpy")
    with np.load(tmp_path / "n.npz") as f:
        np.testing.assert_array_equal(f["indices"], idx)
        np.testing.assert_array_equal(f["values"], val)
    # One row too few for k = 3 neighbours other than the row itself.
    proc = run(
        "nearest", tmp_path / "p.npy", "-k", 3, "-o", tmp_path / "n.csv", check=False
    )
    if shape[0]:
        assert_bad_input(proc, "k=3")
        assert "p.npy" in proc.stderr  # the file whose rows are too few
    else:
        assert proc.returncode == 0, proc.stderr
    assert leftovers(tmp_path) == []


def test_nearest_of_an_empty_file_writes_only_the_header(tmp_path):
    np.save(tmp_path / "empty.npy", np.empty((0, 4)))
    run("nearest", tmp_path / "empty.npy", "-k", 1, "-o", tmp_path / "nn.csv")
    assert (tmp_path / "nn.csv").read_text() == "row,rank,neighbour,value\n"
    run("nearest", tmp_path / "empty.npy", "-k", 2, "-o", tmp_path / "nn.npz")
    with np.load(tmp_path / "nn.npz") as f:
        assert f["indices"].shape == (0, 2) and f["values"].shape == (0, 2)


def test_nearest_csv_against_the_function(tmp_path, probs):
    np.savetxt(tmp_path / "p.csv", probs, delimiter=",")
    run("nearest", tmp_path / "p.csv", "-k", 3, "-o", tmp_path / "n.csv")
    lines = (tmp_path / "n.csv").read_text().splitlines()
    assert lines[0] == "row,rank,neighbour,value"
    table = np.loadtxt(tmp_path / "n.csv", delimiter=",", skiprows=1)
    idx, val = fastdiv.nearest(probs, k=3, backend="numpy")
    n = len(probs)
    np.testing.assert_array_equal(table[:, 0], np.repeat(np.arange(n), 3))
    np.testing.assert_array_equal(table[:, 1], np.tile([1, 2, 3], n))
    np.testing.assert_array_equal(table[:, 2], idx.ravel())
    np.testing.assert_array_equal(table[:, 3], val.ravel())


def test_nearest_sparse_query_against_dense_npz_output(tmp_path, probs):
    import scipy.sparse

    scipy.sparse.save_npz(tmp_path / "q.npz", scipy.sparse.csr_array(probs * 7))
    np.save(tmp_path / "p.npy", probs[:4] * 3)
    run(
        "nearest",
        tmp_path / "p.npy",
        tmp_path / "q.npz",
        "--normalize",
        "-k",
        2,
        "-o",
        tmp_path / "n.npz",
    )
    with np.load(tmp_path / "n.npz") as out:
        idx, val = fastdiv.nearest(probs[:4], probs, k=2, backend="numpy")
        np.testing.assert_array_equal(out["indices"], idx)
        np.testing.assert_allclose(out["values"], val, atol=1e-15)


@pytest.mark.parametrize("sub", ["pairwise", "nearest"])
@pytest.mark.parametrize(
    "address, fragment",
    [
        ("notanaddress", "missing port"),
        ("foo://host:8786", "unknown address scheme"),
        ("tls://127.0.0.1:1", "TLS"),  # a TypeError in distributed
    ],
)
def test_malformed_scheduler_address_exits_at_once(
    tmp_path, probs, sub, address, fragment
):
    # The half-made Client once stayed behind: 20 s at exit, then "Exception
    # ignored in Client.__del__ ... TimeoutError" under the one line.
    pytest.importorskip("distributed")
    np.save(tmp_path / "p.npy", probs)
    out = tmp_path / ("d.npy" if sub == "pairwise" else "n.csv")
    t0 = time.monotonic()
    proc = run(sub, tmp_path / "p.npy", "-o", out, "--scheduler", address, check=False)
    assert time.monotonic() - t0 < 10
    assert_bad_input(proc, "Dask scheduler", repr(address), fragment)
    assert sorted(os.listdir(tmp_path)) == ["p.npy"]


# --------------------------------------------------------------------------
# bench and demo
# --------------------------------------------------------------------------


def test_bench_quick_prints_table_and_saves_json_and_plot(tmp_path):
    proc = run(
        "bench",
        "--quick",
        "--scale",
        0.01,
        "--json",
        tmp_path / "b.json",
        "--plot",
        tmp_path / "b.png",
        env={**ENV, "FASTDIV_BACKEND": "auto"},
        timeout=600,
    )
    assert "x floor" in proc.stdout and "softmax" in proc.stdout
    data = json.loads((tmp_path / "b.json").read_text())
    impls = {r["impl"] for r in data["results"]}
    assert "floor" in impls and "fastdiv[numpy]" in impls
    assert "scipy" in impls
    assert all(r["median_s"] > 0 for r in data["results"])
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert leftovers(tmp_path) == []


def test_demo_neighbours_agree_with_scipy_cdist(tmp_path):
    import scipy.sparse
    from scipy.spatial.distance import cdist

    proc = run(
        "demo",
        "--vocabulary",
        2000,
        "--json",
        tmp_path / "d.json",
        "--save-counts",
        tmp_path / "c.npz",
        env={**ENV, "FASTDIV_BACKEND": "auto"},
        timeout=600,
    )
    assert "nearest modules" in proc.stdout and "cdist" in proc.stdout
    data = json.loads((tmp_path / "d.json").read_text())
    counts = scipy.sparse.load_npz(tmp_path / "c.npz").toarray()
    assert counts.shape == tuple(data["shape"]) and counts.shape[1] == 2000
    assert len(data["names"]) > 100  # the whole library, not a sample
    assert data["max_abs_diff"] < 1e-12
    p = counts / counts.sum(axis=1, keepdims=True)
    ref = cdist(p, p, "jensenshannon") ** 2
    names = data["names"]
    assert {"json", "os", "re"} <= set(data["neighbours"])
    for query, near in data["neighbours"].items():
        i = names.index(query)
        order = [j for j in np.argsort(ref[i], kind="stable") if j != i][:5]
        got_values = [v for _, v in near]
        np.testing.assert_allclose(got_values, ref[i, order], atol=1e-12)
        # Names must match wherever the distance is not tied.
        for (name, _), j in zip(near, order, strict=True):
            tied = np.sum(np.abs(ref[i] - ref[i, j]) < 1e-12) > 1
            assert tied or name == names[j]


def test_demo_report_says_what_each_figure_is(tmp_path):
    # Once "(nats, of 5)" and "(first call 0.00 s)" beside the timed call:
    # the unit and range of the values and what the warm-up is are spelt out.
    proc = run("demo", "--vocabulary", 300, "--no-scipy", cwd=tmp_path)
    out = proc.stdout
    assert "first call" not in out and "nats, of" not in out
    assert "each module's 5 nearest modules by the Jensen-Shannon" in out
    assert "in nats: 0 for the same frequencies, up to ln 2 = 0.693" in out
    assert "time to compute the" in out
    assert "leaves out a warm-up call on 2 rows" in " ".join(out.split())
    assert max(map(len, out.splitlines()[-2:])) <= 79


def test_an_unwritable_folder_is_refused_before_any_work(tmp_path, monkeypatch):
    # `fastdiv bench --json DIR/x.json` on a read-only mount ran the whole
    # benchmark before failing; the destination check now makes a file there.
    import errno
    import tempfile

    from fastdiv._cli import writers
    from fastdiv._cli.errors import InputError

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(InputError, match="cannot be written: Read-only file system"):
        writers.check_destination(tmp_path / "x.json", [], force=False)
