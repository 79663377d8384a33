"""The backend registry: backends(), options(), environment variables,
unusable backends, "auto" fallback, import cost, and the table-driven
checks that every operation agrees across backends and threads."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest

import fastdiv as fd
from fastdiv import _dispatch
from fastdiv._dispatch import BackendStatus
from tests.conftest import (
    BACKENDS,
    COMPILED_BACKENDS,
    OPERATIONS,
    assert_bit_identical,
    assert_same,
    require_operation,
)


@pytest.fixture
def clean_registry(monkeypatch):
    """Private status and kernel caches for one test, restored afterwards."""
    monkeypatch.setattr(_dispatch, "_status_cache", dict(_dispatch._status_cache))
    monkeypatch.setattr(_dispatch, "_kernel_cache", {})
    monkeypatch.delenv("FASTDIV_BACKEND", raising=False)
    monkeypatch.delenv("FASTDIV_NUM_THREADS", raising=False)


def _unusable(monkeypatch, name, reason):
    monkeypatch.setitem(_dispatch._status_cache, name, BackendStatus(False, reason))


# --------------------------------------------------------------------------
# backends()
# --------------------------------------------------------------------------
def test_backends_shape():
    status = _dispatch.backends()
    assert tuple(status) == BACKENDS
    for name, st in status.items():
        assert isinstance(st, BackendStatus), name
        assert isinstance(st.usable, bool), name
        # A reason exactly when the backend is not usable.
        assert (st.reason is None) == st.usable, name
        if not st.usable:
            assert isinstance(st.reason, str) and st.reason, name
    assert status["numpy"] == BackendStatus(True, None)


def test_public_backends_callable_after_a_kernel_loads():
    # Loading a kernel imports the subpackage fastdiv.backends; the public
    # function fastdiv.backends must not be replaced by that module.
    fd.softmax(np.zeros(3), backend="numpy")
    assert callable(fd.backends), type(fd.backends)
    assert fd.backends()["numpy"].usable


def test_unusable_backend_reports_reason(clean_registry, monkeypatch):
    _unusable(monkeypatch, "cython", "simulated: extension not built")
    assert _dispatch.backends()["cython"] == BackendStatus(
        False, "simulated: extension not built"
    )


def test_numba_probe_without_numba(monkeypatch):
    # None in sys.modules makes `import numba` raise ImportError.
    monkeypatch.setitem(sys.modules, "numba", None)
    st = _dispatch._probe("numba")
    assert not st.usable
    assert "numba" in st.reason


def test_cython_probe_without_extension(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastdiv.backends._cython._omp", None)
    st = _dispatch._probe("cython")
    assert not st.usable
    assert "not built" in st.reason


# --------------------------------------------------------------------------
# options()
# --------------------------------------------------------------------------
def test_options_nest_and_restore(clean_registry):
    assert _dispatch.requested_backend(None) == "auto"
    default_threads = _dispatch.num_threads()
    with fd.options(backend="numpy", threads=1):
        assert _dispatch.requested_backend(None) == "numpy"
        assert _dispatch.num_threads() == 1
        with fd.options(backend="numba"):
            assert _dispatch.requested_backend(None) == "numba"
            assert _dispatch.num_threads() == 1  # not set here: inherited
            with fd.options(threads=3):
                assert _dispatch.num_threads() == 3
                assert _dispatch.requested_backend(None) == "numba"
            assert _dispatch.num_threads() == 1
        assert _dispatch.requested_backend(None) == "numpy"
        # An explicit backend= beats options().
        assert _dispatch.requested_backend("cython") == "cython"
    assert _dispatch.requested_backend(None) == "auto"
    assert _dispatch.num_threads() == default_threads


def test_options_restore_after_exception(clean_registry):
    with pytest.raises(RuntimeError), fd.options(backend="numpy", threads=1):
        raise RuntimeError("boom")
    assert _dispatch.requested_backend(None) == "auto"


def test_options_case_insensitive(clean_registry):
    with fd.options(backend="NumPy"):
        assert _dispatch.requested_backend(None) == "numpy"


@pytest.mark.parametrize("backend", ["gpu", "", 3, "numpy "])
def test_options_bad_backend(backend):
    with pytest.raises(ValueError, match="backend"), fd.options(backend=backend):
        pass


@pytest.mark.parametrize("threads", [0, -1, True, 1.5, "two", np.int8(0)])
def test_options_bad_threads(threads):
    with pytest.raises(ValueError, match="threads"), fd.options(threads=threads):
        pass


@pytest.mark.parametrize("threads", ["2", " 2 ", "1"])
def test_options_threads_refuses_digit_strings(threads):
    # Digit strings are the environment variable's spelling, not options()'s.
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        with fd.options(threads=threads):
            pass


def test_options_messages_show_no_numpy_scalar_reprs():
    for kwargs in (dict(threads=np.int8(0)), dict(backend=np.str_("gpu"))):
        with pytest.raises(ValueError) as info, fd.options(**kwargs):
            pass
        assert "np." not in str(info.value), str(info.value)


def test_options_backend_used_by_calls(clean_registry, monkeypatch):
    _unusable(monkeypatch, "numba", "simulated")
    with fd.options(backend="numba"):
        with pytest.raises(fd.BackendUnavailableError, match="simulated"):
            fd.softmax(np.zeros(3))
        # backend= on the call wins over options().
        fd.softmax(np.zeros(3), backend="numpy")


def test_bad_backend_argument():
    with pytest.raises(ValueError, match="backend"):
        fd.softmax(np.zeros(3), backend="torch")


# --------------------------------------------------------------------------
# Environment variables.
# --------------------------------------------------------------------------
def test_env_backend(clean_registry, monkeypatch):
    monkeypatch.setenv("FASTDIV_BACKEND", "numpy")
    assert _dispatch.requested_backend(None) == "numpy"
    with fd.options(backend="cython"):  # options() beats the environment
        assert _dispatch.requested_backend(None) == "cython"
    _unusable(monkeypatch, "numba", "simulated: env")
    monkeypatch.setenv("FASTDIV_BACKEND", "numba")
    with pytest.raises(fd.BackendUnavailableError, match="simulated: env"):
        fd.softmax(np.zeros(3))


@pytest.mark.parametrize("value", ["gpu", "numpy,numba", "1"])
def test_env_backend_invalid(clean_registry, monkeypatch, value):
    monkeypatch.setenv("FASTDIV_BACKEND", value)
    with pytest.raises(ValueError, match="FASTDIV_BACKEND"):
        fd.softmax(np.zeros(3))


def test_env_threads(clean_registry, monkeypatch):
    monkeypatch.setenv("FASTDIV_NUM_THREADS", "1")
    assert _dispatch.num_threads() == 1
    with fd.options(threads=2):
        assert _dispatch.num_threads() == 2
    monkeypatch.setenv("FASTDIV_NUM_THREADS", " 2 ")
    assert _dispatch.num_threads() == 2


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "\u00b2"])
def test_env_threads_invalid(clean_registry, monkeypatch, value):
    monkeypatch.setenv("FASTDIV_NUM_THREADS", value)
    with pytest.raises(ValueError, match="FASTDIV_NUM_THREADS"):
        _dispatch.num_threads()


def test_env_threads_invalid_reaches_compiled_call(clean_registry, monkeypatch):
    op = OPERATIONS["softmax"]
    for name in COMPILED_BACKENDS:
        if _dispatch.backends()[name].usable:
            try:
                _dispatch.get_kernel(op.topic, op.kernels[0], name)
            except (ImportError, AttributeError):
                continue
            monkeypatch.setenv("FASTDIV_NUM_THREADS", "zero")
            with pytest.raises(ValueError, match="FASTDIV_NUM_THREADS"):
                fd.softmax(np.zeros(3), backend=name)
            return
    pytest.skip("no compiled softmax kernel is built")


def test_more_threads_than_cores_are_capped(compiled_backend):
    # Run apart: asking OpenMP for 100_000 threads once crashed the process.
    code = f"""
import os
import numpy as np, fastdiv as fd
x = np.random.default_rng(0).normal(size=(300, 300))
with fd.options(threads=100_000):
    got = fd.softmax(x, backend={compiled_backend!r})
assert np.allclose(got, fd.softmax(x, backend="numpy"), rtol=1e-12)
if {compiled_backend!r} == "cython":
    from fastdiv.backends._cython import _omp
    assert _omp.max_threads() <= len(os.sched_getaffinity(0))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_default_threads_are_the_cores(clean_registry):
    import os

    assert _dispatch.num_threads() == len(os.sched_getaffinity(0))


# --------------------------------------------------------------------------
# Unusable backends and "auto".
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", COMPILED_BACKENDS)
def test_unusable_backend_by_name_raises_reason(clean_registry, monkeypatch, name):
    _unusable(monkeypatch, name, f"simulated: {name} is broken")
    x = np.zeros((2, 3))
    for fn in (fd.softmax, fd.log_softmax, fd.logsumexp):
        with pytest.raises(fd.BackendUnavailableError, match=f"{name} is broken"):
            fn(x, backend=name)


def test_auto_falls_back_and_logs(clean_registry, monkeypatch, caplog):
    for name in COMPILED_BACKENDS:
        _unusable(monkeypatch, name, f"simulated: no {name}")
    x = np.random.default_rng(0).standard_normal((3, 4))
    with caplog.at_level(logging.DEBUG, logger="fastdiv._dispatch"):
        got = fd.softmax(x, backend="auto")
    assert_same(got, fd.softmax(x, backend="numpy"))
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert all(r.levelno == logging.DEBUG for r in caplog.records)
    assert "not usable" in messages and "simulated: no" in messages
    assert "numpy" in messages


def test_auto_is_silent_above_debug(clean_registry, monkeypatch, caplog):
    for name in COMPILED_BACKENDS:
        _unusable(monkeypatch, name, "simulated")
    with caplog.at_level(logging.INFO, logger="fastdiv._dispatch"):
        fd.softmax(np.zeros(3))
    assert not caplog.records


def test_kernel_module_missing(clean_registry, monkeypatch, caplog):
    # A usable backend whose module for this topic was left out of the build.
    monkeypatch.setitem(
        _dispatch._MODULE_OF, "cython", "fastdiv.backends._cython._absent_{topic}"
    )
    monkeypatch.setitem(_dispatch._status_cache, "cython", BackendStatus(True, None))
    monkeypatch.setitem(_dispatch.AUTO_POLICY, "softmax_rows", (0, "cython", "cython"))
    x = np.random.default_rng(1).standard_normal((3, 4))
    with pytest.raises(fd.BackendUnavailableError, match="softmax_rows"):
        fd.softmax(x, backend="cython")
    with caplog.at_level(logging.DEBUG, logger="fastdiv._dispatch"):
        got = fd.softmax(x)
    assert_same(got, fd.softmax(x, backend="numpy"))
    assert any("_absent_softmax" in r.getMessage() for r in caplog.records)


def _policy_tables():
    yield "AUTO_POLICY", _dispatch.AUTO_POLICY
    yield from _dispatch._CPU_POLICY.items()


def test_auto_policy_entries_are_valid():
    for name, table in _policy_tables():
        for kernel, (threshold, small, large) in table.items():
            assert isinstance(threshold, int) and threshold >= 0, (name, kernel)
            assert small in BACKENDS and large in BACKENDS, (name, kernel)


def test_auto_policy_names_existing_kernels():
    # A typo in the policy table would silently fall back to the default.
    from fastdiv.backends import reference

    for name, table in _policy_tables():
        for kernel in table:
            assert hasattr(reference, kernel), (name, kernel)


@pytest.mark.parametrize(
    "kind",
    [
        "GenuineIntel avx512f",
        "GenuineIntel",
        "AuthenticAMD avx512f",
        "AuthenticAMD",
        "",
    ],
)
def test_auto_policy_follows_the_kind_of_cpu(clean_registry, monkeypatch, kind):
    monkeypatch.setattr(_dispatch, "cpu_kind", lambda: kind)
    _dispatch._cpu_policy.cache_clear()
    try:
        for name in BACKENDS:
            monkeypatch.setitem(
                _dispatch._status_cache, name, BackendStatus(True, None)
            )
        entry = _dispatch._CPU_POLICY.get(kind, {}).get(
            "js_pairwise", _dispatch.AUTO_POLICY["js_pairwise"]
        )
        assert _dispatch.choose_backend("js_pairwise", 10**6) == entry[2]
        want = "numba" if kind == "AuthenticAMD" else "cython"
        assert _dispatch.choose_backend("js_pairwise", 10**6) == want
        # Kernels the table of a kind leaves out keep the common entries.
        assert _dispatch.choose_backend("js_pairwise_csr", 10**6) == "cython"
    finally:
        _dispatch._cpu_policy.cache_clear()


def test_cpu_kind_is_the_vendor_and_avx512f():
    kind = _dispatch.cpu_kind()
    assert isinstance(kind, str)
    if sys.platform.startswith("linux") and os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        vendor = next((x for x in lines if x.startswith("vendor_id")), None)
        flags = next((x for x in lines if x.startswith("flags")), "")
        if vendor is not None:
            assert kind.split()[0] == vendor.partition(":")[2].strip()
            assert kind.endswith(" avx512f") == ("avx512f" in flags.split())


# --------------------------------------------------------------------------
# Importing fastdiv.
# --------------------------------------------------------------------------
IMPORT_PROBE = """
import sys, time
import numpy
t0 = time.perf_counter()
import fastdiv
elapsed = time.perf_counter() - t0
heavy = sorted(m for m in sys.modules
               if m == "numba" or m.startswith("numba.")
               or m.startswith("fastdiv.backends.numba_")
               or m.startswith("fastdiv.backends._cython.")
               or m == "scipy" or m == "torch")
print(repr(heavy))
print(elapsed)
"""


def test_import_is_light_and_fast():
    res = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
    )
    assert res.returncode == 0, res.stderr
    heavy, elapsed = res.stdout.strip().splitlines()
    assert heavy == "[]", f"import fastdiv imported {heavy}"
    # With NumPy already loaded, importing fastdiv is a few Python modules:
    # milliseconds. Half a second leaves room for a busy shared machine.
    assert float(elapsed) < 0.5, f"import fastdiv took {float(elapsed):.3f} s"


def test_import_without_numba():
    # A machine without Numba still imports fastdiv and runs "auto".
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "import numpy as np, fastdiv\n"
        "from fastdiv import _dispatch\n"
        "st = _dispatch.backends()['numba']\n"
        "assert not st.usable and 'numba' in st.reason, st\n"
        "print(fastdiv.softmax(np.zeros(2)))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "0.5" in res.stdout


# --------------------------------------------------------------------------
# Every operation of the table: each backend agrees with the reference, and
# 1 and 2 threads give the same bits.
# --------------------------------------------------------------------------
OP_NAMES = sorted(OPERATIONS)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op_name", OP_NAMES)
def test_operation_agrees_with_reference(op_name, backend, dtype):
    op = OPERATIONS[op_name]
    require_operation(backend, op)
    rng = np.random.default_rng(5)
    for n, k in [(1, 1), (3, 7), (64, 129)]:
        args, kwargs = op.make_args(rng, dtype, n, k)
        copies = [np.array(a, copy=True) for a in args]
        got = op(*args, backend=backend, **kwargs)
        want = op(*args, backend="numpy", **kwargs)
        assert_same(got, want, what=f"{op_name} {n}x{k} {backend}")
        for a, c in zip(args, copies, strict=True):
            np.testing.assert_array_equal(a, c, err_msg="input modified")


@pytest.mark.parametrize("op_name", OP_NAMES)
def test_operation_thread_count_bit_identical(op_name, compiled_backend):
    op = OPERATIONS[op_name]
    require_operation(compiled_backend, op)
    rng = np.random.default_rng(6)
    args, kwargs = op.make_args(rng, np.float64, 600, 65)
    with fd.options(threads=1):
        one = op(*args, backend=compiled_backend, **kwargs)
    with fd.options(threads=2):
        two = op(*args, backend=compiled_backend, **kwargs)
    assert_bit_identical(two, one, op_name)


# --------------------------------------------------------------------------
# The test machinery itself: CI may not pass by skipping a backend.
# --------------------------------------------------------------------------
def test_require_all_turns_a_skip_into_a_failure(monkeypatch):
    import tests.conftest as machinery

    monkeypatch.setattr(machinery, "REQUIRE_ALL", True)
    with pytest.raises(pytest.fail.Exception, match="FASTDIV_REQUIRE_ALL=1"):
        machinery.require_backend("numba", "no_such_topic")
    monkeypatch.setattr(machinery, "REQUIRE_ALL", False)
    with pytest.raises(pytest.skip.Exception, match="no_such_topic"):
        machinery.require_backend("numba", "no_such_topic")
    with pytest.raises(pytest.skip.Exception, match="no kernel not_a_kernel"):
        machinery.require_backend("numpy", "softmax", ("not_a_kernel",))
