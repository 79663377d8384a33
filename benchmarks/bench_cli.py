"""``fastdiv softmax`` on a large .npy file against the in-memory function
(issue 5).

- ``fastdiv softmax IN.npy -o OUT.npy -T 2`` on a (500_000, 1000) float32
  file, 2 GB (``fastdiv softmax``): the command in a fresh process, as a
  user runs it, Python's start and fastdiv's import included. Its peak
  resident memory is the child's VmHWM at exit (``peak_rss_mb``).
  Target: under 500 MB.
- :func:`fastdiv.softmax` of the same array already in memory, into a fresh
  output (``fastdiv:in-memory``), the row the command is measured against:
  target, the command reaches at least half its throughput, i.e. takes at
  most twice its time.
- The command on a 2-row file (``fastdiv softmax start``): its fixed cost
  (Python's start, imports, loading the cached kernels), which the report
  subtracts to give the throughput of the streaming itself as well.

The input file is written once before the rows run, so the command reads it
from the page cache (as a file just produced by an earlier step would be);
its output goes to the same folder. The command writes its output through
to the disk before renaming it into place (``fsync``), so the figure holds
the disk's write bandwidth, as a user's run does.

Both rows start from the same state (see ``_fresh_round``): memory touched
beforehand as for every row of the suite, and for the command no output
file yet, as in the target's ``fastdiv softmax IN.npy -o OUT.npy``.
``FASTDIV_BENCH_QUICK=1`` and ``--bench-scale`` shrink the row count.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from _bench import group_name, random_logits, rows, touch_memory

import fastdiv

SHAPE = (500_000, 1000)
DTYPE = "float32"
TEMPERATURE = 2.0
OP = "fastdiv softmax .npy"


@pytest.fixture(scope="module")
def logits_file():
    n, k = rows(SHAPE[0]), SHAPE[1]
    with tempfile.TemporaryDirectory(prefix="fastdiv-bench-cli-") as folder:
        path = os.path.join(folder, "logits.npy")
        # Built in blocks of rows, so that building it never holds 2 GB twice.
        out = np.lib.format.open_memmap(path, "w+", np.dtype(DTYPE), (n, k))
        step = 50_000
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            out[r0:r1] = random_logits((r1 - r0, k), DTYPE, seed=r0)
        out.flush()
        del out
        yield path, (n, k), folder


def _info(benchmark, role, key, extra=None):
    benchmark.group = group_name(OP, DTYPE, SHAPE)
    benchmark.extra_info.update(
        op=OP, dtype=DTYPE, shape=list(SHAPE), role=role, key=key, backend=None
    )
    benchmark.extra_info.update(extra or {})


def test_in_memory(benchmark, logits_file):
    path, shape, _ = logits_file
    _info(benchmark, "floor", "fastdiv:in-memory")
    x = np.load(path)  # in memory, not mapped
    fastdiv.softmax(x[:2], TEMPERATURE)  # load the kernels, untimed
    if benchmark.enabled:
        touch_memory(4 * x.nbytes)
    benchmark.pedantic(lambda: fastdiv.softmax(x, TEMPERATURE), rounds=3, iterations=1)


# Runs the command as ``python -m fastdiv`` does and, at exit, reports the
# process's peak resident memory. VmHWM belongs to the address space the
# exec made, so it leaves out the benchmark's own pages; getrusage's
# ru_maxrss of a child does not (the forked copy of this process, whose
# arrays are gigabytes, counts towards it until the exec).
_PEAK_WRAPPER = """
import atexit, sys
def report():
    with open("/proc/self/status") as f:
        hwm = [line.split()[1] for line in f if line.startswith("VmHWM:")]
    sys.stderr.write("VmHWM_kB=" + hwm[0] + "\\n")
atexit.register(report)
sys.argv = ["fastdiv"] + sys.argv[1:]
from fastdiv.cli import main
sys.exit(main())
"""


def _run_command(path, target) -> int:
    """Run the command once; return its peak resident memory in kB."""
    argv = [sys.executable, "-c", _PEAK_WRAPPER, "softmax", path, "-o", target]
    argv += ["-T", str(TEMPERATURE), "--quiet"]
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return int(done.stderr.rsplit("VmHWM_kB=", 1)[1].split()[0])


# Memory touched before each round of the command: twice its working set
# (its peak RSS target of 500 MB, the page cache of its output staying far
# below that), as the in-memory row touches twice its own before it runs.
COMMAND_TOUCH_BYTES = 2 * 500 * 2**20


def _fresh_round(benchmark, target):
    """Untimed, before each round of the command: the state the in-memory
    row starts from, and the target's command line.

    - The previous round's output is deleted and the file system synced.
      With ``--force`` each round timed the deletion of the last 2 GB
      result as well (0.25-0.9 s measured in os.replace on this VM), which
      the target's command, writing a new OUT, does not do; the sync lets
      the file system finish freeing those blocks before the clock starts.
    - Memory is touched and freed, as the in-memory row does before it
      runs: this VM hands memory left free back to its host, and without it
      the command's first touches would measure the VM, not the code
      (PERF-NOTES.md, "Memory").

    The command itself still runs whole in a fresh process: Python's start,
    imports, reading, the kernels, the writes, the fsync and the rename.
    """

    def setup():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
        os.sync()
        if benchmark.enabled:
            touch_memory(COMMAND_TOUCH_BYTES)

    return setup


def test_command_start(benchmark, logits_file):
    # The same command on a file of 2 rows: what it costs to start Python,
    # import fastdiv and load the kernels, whatever the size of the file.
    path, shape, folder = logits_file
    small = os.path.join(folder, "two-rows.npy")
    np.save(small, np.load(path, mmap_mode="r")[:2])
    target = os.path.join(folder, "two-probs.npy")
    _info(benchmark, "ours", "fastdiv softmax start")
    _fresh_round(benchmark, target)()
    _run_command(small, target)
    benchmark.pedantic(
        lambda: _run_command(small, target),
        setup=_fresh_round(benchmark, target),
        rounds=3,
        iterations=1,
    )


def test_command(benchmark, logits_file):
    path, shape, folder = logits_file
    target = os.path.join(folder, "probs.npy")
    peaks = []
    _info(benchmark, "ours", "fastdiv softmax")
    _fresh_round(benchmark, target)()
    _run_command(path, target)  # compile or load the Numba cache, untimed
    benchmark.pedantic(
        lambda: peaks.append(_run_command(path, target)),
        setup=_fresh_round(benchmark, target),
        rounds=3,
        iterations=1,
    )
    benchmark.extra_info["peak_rss_mb"] = max(peaks) / 1024
    got = np.load(target, mmap_mode="r")
    assert got.shape == shape and got.dtype == np.dtype(DTYPE)
    x = np.load(path, mmap_mode="r")
    np.testing.assert_allclose(
        got[-3:], fastdiv.softmax(np.asarray(x[-3:]), TEMPERATURE), rtol=1e-6
    )
