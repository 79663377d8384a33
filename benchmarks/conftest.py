"""pytest hooks of the fastdiv benchmarks; the machinery is in _bench.py.

Run the suites with ``pytest benchmarks --benchmark-enable`` (the project's
pytest configuration disables benchmarking by default, so that a smoke run
is ``FASTDIV_BENCH_QUICK=1 pytest benchmarks``). See _bench.py for the
options and benchmarks/README.md for the full procedure.
"""

from __future__ import annotations

import os

import pytest
from _bench import SETTINGS

from fastdiv import _dispatch


# --------------------------------------------------------------------------
# pytest hooks
# --------------------------------------------------------------------------
def pytest_addoption(parser):
    group = parser.getgroup("fastdiv benchmarks")
    group.addoption(
        "--bench-scale",
        type=float,
        default=None,
        help="multiply every benchmark row count by this (FASTDIV_BENCH_QUICK=1 "
        "means 0.01)",
    )
    group.addoption(
        "--bench-max-call",
        type=float,
        default=None,
        help="seconds one call may take before a row is timed on a subset of "
        "rows and scaled (default 8; inf: never)",
    )
    group.addoption(
        "--bench-compile",
        action="store_true",
        default=False,
        help="time cold Numba compiles in a quick run too",
    )
    group.addoption(
        "--bench-strict",
        action="store_true",
        default=False,
        help="fail, rather than skip, a usable backend that lacks a kernel",
    )


def pytest_configure(config):
    scale = config.getoption("--bench-scale")
    if scale is None:
        env = os.environ.get("FASTDIV_BENCH_SCALE")
        if env:
            scale = float(env)
        elif os.environ.get("FASTDIV_BENCH_QUICK", "") not in ("", "0"):
            scale = 0.01
        else:
            scale = 1.0
    if not 0 < scale <= 1:
        raise pytest.UsageError(f"--bench-scale must be in (0, 1], got {scale}")
    max_call = config.getoption("--bench-max-call")
    if max_call is None:
        max_call = float(os.environ.get("FASTDIV_BENCH_MAX_CALL", "8"))
    SETTINGS.scale = scale
    SETTINGS.max_call = max_call
    SETTINGS.compile = config.getoption("--bench-compile")
    SETTINGS.strict = (
        config.getoption("--bench-strict")
        or os.environ.get("FASTDIV_BENCH_STRICT", "") not in ("", "0")
        or os.environ.get("FASTDIV_REQUIRE_ALL", "") == "1"
    )


def pytest_collect_file(file_path, parent):
    # The suites are named bench_*.py so that a plain `pytest` (testpaths =
    # tests) never picks them up; collect them here when asked for.
    # A file named on the command line is collected by pytest itself.
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_report_header(config):
    lines = [
        f"fastdiv benchmarks: scale={SETTINGS.scale:g} "
        f"max-call={SETTINGS.max_call:g}s strict={SETTINGS.strict}",
        "fastdiv backends: "
        + ", ".join(
            f"{name}={'yes' if st.usable else 'no (' + str(st.reason) + ')'}"
            for name, st in _dispatch.backends().items()
        ),
    ]
    # These two slow current NumPy/OpenBLAS: unset them for benchmark runs.
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            lines.append(f"WARNING: {var} is set; unset it for benchmark runs")
    return lines
