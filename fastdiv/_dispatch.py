"""Backend registry: which kernel runs an operation, and on how many threads.

Every operation exists three times, under the same kernel name, in three
places that are found by convention from the operation's *topic* (the
public module it belongs to):

========  =============================================
backend   module holding the kernels of topic ``t``
========  =============================================
numpy     ``fastdiv.backends.reference``
numba     ``fastdiv.backends.numba_<t>``
cython    ``fastdiv.backends._cython._<t>``
========  =============================================

Nothing here imports Numba or a compiled extension until a kernel is first
asked for, so ``import fastdiv`` stays fast and never fails because a
backend is missing. ``"auto"`` falls back to the next usable backend (and
says so at debug level); a backend asked for by name that is not usable
raises :class:`BackendUnavailableError` with the reason.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import logging
import os
from collections.abc import Callable
from typing import NamedTuple

from fastdiv._checks import shown

logger = logging.getLogger(__name__)

BACKENDS = ("numpy", "numba", "cython")
_CHOICES = ("auto",) + BACKENDS

_MODULE_OF = {
    "numpy": "fastdiv.backends.reference",
    "numba": "fastdiv.backends.numba_{topic}",
    "cython": "fastdiv.backends._cython._{topic}",
}


class BackendUnavailableError(RuntimeError):
    """A backend was asked for by name but cannot run here."""


class BackendStatus(NamedTuple):
    """Whether a backend can run here, and if not, why."""

    usable: bool
    reason: str | None


# --------------------------------------------------------------------------
# "auto": which backend runs an operation of a given size.
#
# Each entry maps a kernel name to (threshold, small, large): inputs with
# fewer than ``threshold`` elements go to ``small`` (where the fixed cost of
# a call dominates), others to ``large``. The figures come from
# benchmarks/ (``pytest benchmarks --benchmark-group-by=group``) on the
# 2-core project machine; the comment beside each entry records them.
# A backend that is not usable is replaced by the next in _FALLBACK.
# --------------------------------------------------------------------------
AUTO_POLICY: dict[str, tuple[int, str, str]] = {
    # softmax family: no entry, cython throughout. On one core (thread
    # time, out= given, 2026-12-04 after both backends had their short-row
    # paths) cython / numba was 0.57-0.85 at 10 and 100 classes and
    # 0.85-1.07 at 1000 and 100_000, float32 and float64, for softmax,
    # log_softmax and logsumexp alike.
    # pairwise JS, side by side (bench_pairwise.py, 2026-12-04, AMD EPYC
    # 2 vCPUs with AVX-512, once the Cython kernel had the inline log of
    # fastdiv_log8.h): numba / cython 868 / 530 ms in float64 and 726 / 432
    # ms in float32 at (2000, 2000, 256); 1.89 / 1.09 s and 2.08 / 1.26 s at
    # (500, 500, 10_000); 2.70 / 2.04 s and 3.15 / 1.90 s at (10_000,
    # 10_000, 32). On one core (float64 and float32, all three shapes):
    # numba / cython 1.39-1.52 / 0.81-0.85 ns per triple. Intel's Xeon
    # (model 207) gave cython the lead even with libmvec's log. (CPUs
    # without AVX-512F differ: see _CPU_POLICY.)
    "js_pairwise": (0, "cython", "cython"),
    "js_pairwise_csr": (0, "cython", "cython"),
    # row-wise divergences: no entry, cython throughout. On one core
    # (thread time, check=False, 2026-12-04, once the AVX2 and AVX-512
    # clones of its sums vectorised) cython / numba was 0.78-0.99 for
    # entropy, cross-entropy and KL and 0.84-1.02 for JS at (100_000, 100)
    # and (1000, 10_000), float32 and float64.
}

# Entries that replace those of AUTO_POLICY on one kind of CPU (cpu_kind():
# the vendor_id of /proc/cpuinfo, with " avx512f" where the CPU has it).
# Without AVX-512F the dense Cython JS kernel falls back to libmvec's log
# call, and on AMD that made it the slower one.
_CPU_POLICY: dict[str, dict[str, tuple[int, str, str]]] = {
    # pairwise JS, side by side (bench_pairwise.py, 2026-12-04, AMD EPYC
    # 2 vCPUs, the Cython kernel on libmvec's log): numba / cython 1.44 /
    # 2.23 s in float64 and 0.87 / 1.35 s in float32 at (2000, 2000, 256);
    # 3.3 / 5.9 s and 3.1 / 4.6 s at (10_000, 10_000, 32). That CPU had
    # AVX-512F, which the kernel did not use yet; an AMD CPU without it
    # runs the same kernel on 256-bit vectors, and so does Numba.
    "AuthenticAMD": {"js_pairwise": (0, "numba", "numba")},
}

# Preference order when the chosen backend is not usable: the compiled
# backends first, the reference last because it is the slowest.
_FALLBACK = ("cython", "numba", "numpy")

# The default policy for kernels without an entry: compiled from the start.
_DEFAULT_POLICY = (0, "cython", "cython")

_requested_backend: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fastdiv_backend", default=None
)
_requested_threads: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "fastdiv_threads", default=None
)

_status_cache: dict[str, BackendStatus] = {}
_kernel_cache: dict[tuple[str, str, str], Callable] = {}


def backends() -> dict[str, BackendStatus]:
    """Tell which backends can run here and, for each that cannot, why.

    Returns
    -------
    dict
        Maps ``"numpy"``, ``"numba"`` and ``"cython"`` to a
        :class:`BackendStatus` ``(usable, reason)``; ``reason`` is None for
        a usable backend.

    Examples
    --------
    >>> import fastdiv as fd
    >>> fd.backends()["numpy"]
    BackendStatus(usable=True, reason=None)
    """
    return {name: _status(name) for name in BACKENDS}


def _status(name: str) -> BackendStatus:
    if name not in _status_cache:
        _status_cache[name] = _probe(name)
    return _status_cache[name]


def _probe(name: str) -> BackendStatus:
    # A gate answers yes or no without raising: any failure becomes a reason.
    if name == "numpy":
        return BackendStatus(True, None)
    if name == "numba":
        try:
            import numba  # noqa: F401
        except Exception as exc:  # ImportError, or a broken llvmlite
            return BackendStatus(False, f"numba cannot be imported: {exc}")
        return BackendStatus(True, None)
    try:
        importlib.import_module("fastdiv.backends._cython._omp")
    except Exception as exc:
        return BackendStatus(
            False,
            "the Cython extensions are not built (reinstall fastdiv with "
            f"`pip install .` from its source): {exc}",
        )
    return BackendStatus(True, None)


@contextlib.contextmanager
def options(backend: str | None = None, threads: int | None = None):
    """Set the default backend and thread count inside a ``with`` block.

    Parameters
    ----------
    backend : {"auto", "numpy", "numba", "cython"}, optional
        Backend for every call in the block that does not pass ``backend=``.
    threads : int, optional
        Number of threads the compiled backends use (at least 1). More than
        the machine's cores is allowed and capped at the cores this process
        may run on (for Numba, also at the size of its thread pool).
        Anything else, a string such as "2" included (digit strings are
        only for FASTDIV_NUM_THREADS), raises ValueError.

    Examples
    --------
    >>> import numpy as np, fastdiv as fd
    >>> with fd.options(backend="numpy", threads=1):
    ...     fd.softmax(np.zeros(2))
    array([0.5, 0.5])
    """
    tokens = []
    if backend is not None:
        tokens.append(
            (
                _requested_backend,
                _requested_backend.set(_check_backend_name(backend, "backend")),
            )
        )
    if threads is not None:
        tokens.append(
            (
                _requested_threads,
                _requested_threads.set(_check_threads(threads, "threads")),
            )
        )
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def _check_backend_name(name, where: str) -> str:
    if not isinstance(name, str) or name.lower() not in _CHOICES:
        raise ValueError(
            f"{where} must be one of {', '.join(map(repr, _CHOICES))}, "
            f"got {shown(name)}"
        )
    return name.lower()


def _check_threads(threads, where: str) -> int:
    """An int (not a bool, nor a string: see :func:`_parse_threads`) >= 1.

    Every bad value is a ValueError, as in fastdiv.dask, whatever its type.
    """
    if isinstance(threads, str):
        raise ValueError(
            f"{where} must be a positive integer, got the string {shown(threads)} "
            "(strings are read only from FASTDIV_NUM_THREADS)"
        )
    if isinstance(threads, bool) or not hasattr(threads, "__index__"):
        value = 0
    else:
        value = threads.__index__()
    if value < 1:
        raise ValueError(f"{where} must be a positive integer, got {shown(threads)}")
    return value


def _parse_threads(text: str, where: str) -> int:
    """The thread count an environment variable spells in digits."""
    # isdecimal, not isdigit: int() refuses digits such as "²".
    if not text.strip().isdecimal() or int(text) < 1:
        raise ValueError(f"{where} must be a positive integer, got {text!r}")
    return int(text)


def _getenv(name: str) -> str | None:
    """os.environ.get(name), read through the mapping's own dictionary.

    os.environ.get raises and catches a KeyError inside for a variable that
    is not set, the usual case: 0.76 us, and every call of a kernel reads
    two variables (a softmax of 10 numbers takes 8 us). The dictionary
    behind os.environ (CPython's ``_data``, keyed by the encoded name) is
    what os.environ reads and writes itself, so it sees every change made
    through os.environ; where it is missing, os.environ.get serves.
    """
    data = getattr(os.environ, "_data", None)
    if data is None:
        return os.environ.get(name)
    try:
        key = os.environ.encodekey(name)
    except AttributeError:
        return os.environ.get(name)
    raw = data.get(key)
    return None if raw is None else os.environ.decodevalue(raw)


def requested_backend(backend: str | None) -> str:
    """The backend a call asked for: argument, then options(), then env."""
    if backend is not None:
        return _check_backend_name(backend, "backend")
    scoped = _requested_backend.get()
    if scoped is not None:
        return scoped
    env = _getenv("FASTDIV_BACKEND")
    if env:
        return _check_backend_name(env, "the environment variable FASTDIV_BACKEND")
    return "auto"


def num_threads() -> int:
    """Threads the compiled kernels use: options(), then env, then all cores.

    ``FASTDIV_NUM_THREADS`` sets the default; the cores this process may run
    on (its CPU affinity) are the last resort.
    """
    scoped = _requested_threads.get()
    if scoped is not None:
        return scoped
    env = _getenv("FASTDIV_NUM_THREADS")
    if env:
        return _parse_threads(env, "the environment variable FASTDIV_NUM_THREADS")
    return usable_cores()


@functools.cache
def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity).

    Read once: it is asked on every call of a compiled kernel, and the
    system call was a tenth of the cost of a softmax of 10 numbers.
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_kind() -> str:
    """The CPU's vendor_id from /proc/cpuinfo ("GenuineIntel", ...), followed
    by " avx512f" where its flags have AVX-512F; "" where there is no such
    file or line."""
    vendor, flags = "", ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id") and not vendor:
                    vendor = line.partition(":")[2].strip()
                elif line.startswith("flags") and not flags:
                    flags = line.partition(":")[2]
                if vendor and flags:
                    break
    except OSError:
        pass
    return f"{vendor} avx512f" if vendor and "avx512f" in flags.split() else vendor


@functools.cache
def _cpu_policy() -> dict[str, tuple[int, str, str]]:
    """The entries of _CPU_POLICY for this kind of CPU (read once)."""
    kind = cpu_kind()
    policy = _CPU_POLICY.get(kind, {})
    logger.debug("auto: CPU %r, policy entries %s", kind, policy)
    return policy


def choose_backend(kernel: str, size: int, backend: str | None = None) -> str:
    """Resolve ``backend`` (possibly "auto") to a usable backend name.

    Parameters
    ----------
    kernel : str
        Kernel name, the key of :data:`AUTO_POLICY`.
    size : int
        Number of elements the kernel will read; "auto" uses it.
    backend : str, optional
        What the caller passed as ``backend=``.
    """
    wanted = requested_backend(backend)
    if wanted != "auto":
        status = _status(wanted)
        if not status.usable:
            raise BackendUnavailableError(
                f"backend {wanted!r} is not usable: {status.reason}"
            )
        return wanted
    policy = _cpu_policy().get(kernel) or AUTO_POLICY.get(kernel, _DEFAULT_POLICY)
    threshold, small, large = policy
    preferred = small if size < threshold else large
    # The usual case first: building the fallback order cost a microsecond,
    # an eighth of a softmax of 10 numbers.
    if _status(preferred).usable:
        logger.debug("auto: %s on %s for %d elements", kernel, preferred, size)
        return preferred
    for name in _FALLBACK:
        if name != preferred and _status(name).usable:
            logger.debug(
                "auto: %s preferred %s for %d elements, which is not usable "
                "(%s); using %s",
                kernel,
                preferred,
                size,
                _status(preferred).reason,
                name,
            )
            return name
    raise AssertionError("the numpy backend is always usable")  # pragma: no cover


def get_kernel(
    topic: str, kernel: str, backend: str, *, threads: int | None = None
) -> Callable:
    """The kernel ``kernel`` of ``topic`` on a resolved backend.

    The returned callable sets the thread count of its backend before it
    runs: ``threads``, or :func:`num_threads` at call time when None.
    """
    key = (topic, kernel, backend)
    loaded = _kernel_cache.get(key)
    if loaded is None:
        module = importlib.import_module(_MODULE_OF[backend].format(topic=topic))
        raw = getattr(module, kernel)
        setter = None if backend == "numpy" else _thread_setter(backend)
        loaded = _kernel_cache[key] = (raw, setter)
    raw, setter = loaded
    if setter is None:
        return raw
    return functools.partial(_run_on_threads, raw, setter, threads)


def _run_on_threads(raw, setter, threads, *args):
    setter(num_threads() if threads is None else threads)
    return raw(*args)


# Below this many elements a kernel runs on one thread: starting a parallel
# region costs more than the work. On the 2-core machine a softmax of
# (1, 10) took 28 us through a 2-thread OpenMP region and 2 us on one
# thread, and splitting rows only paid off above a few 10_000 elements.
PARALLEL_MIN_SIZE = 32_768


def kernel_for(
    topic: str, kernel: str, size: int, backend: str | None = None
) -> Callable:
    """Resolve the backend for ``size`` elements and return its kernel.

    Inputs of fewer than :data:`PARALLEL_MIN_SIZE` elements run on one
    thread. Under "auto", a backend whose module for this topic cannot be
    loaded (an extension left out of a partial build, say) is skipped like
    an unusable backend; asked for by name, it raises
    BackendUnavailableError.
    """
    chosen = choose_backend(kernel, size, backend)
    threads = num_threads()  # read (and checked) even when not used
    if size < PARALLEL_MIN_SIZE:
        threads = 1
    try:
        return get_kernel(topic, kernel, chosen, threads=threads)
    except (ImportError, AttributeError) as exc:
        if requested_backend(backend) != "auto":
            raise BackendUnavailableError(
                f"backend {chosen!r} has no kernel {kernel!r}: {exc}"
            ) from exc
        logger.debug(
            "auto: %s on %s failed to load (%s); using numpy", kernel, chosen, exc
        )
        return get_kernel(topic, kernel, "numpy")


def _thread_setter(backend: str) -> Callable[[int], None]:
    if backend == "numba":
        import numba

        def set_numba_threads(n: int) -> None:
            # Numba refuses more threads than its pool was started with.
            numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))

        return set_numba_threads
    omp = importlib.import_module("fastdiv.backends._cython._omp")

    def set_openmp_threads(n: int) -> None:
        # OpenMP starts every thread it is asked for: 100_000 of them ran
        # the process out of its thread limit and crashed it. More threads
        # than cores cannot speed up these loops, so the cores cap them.
        omp.set_num_threads(min(n, usable_cores()))

    return set_openmp_threads
