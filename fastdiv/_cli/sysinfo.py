"""What ``fastdiv info`` reports: versions, backends, threads, CPU."""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import sys

# CPU feature flags that matter for vectorised exp and log, by prefix.
_VECTOR_PREFIXES = (
    "sse",
    "ssse3",
    "avx",
    "fma",
    "f16c",
    "amx",
    "asimd",
    "neon",
    "sve",
    "vsx",
    "altivec",
)

_PACKAGES = (
    "numpy",
    "scipy",
    "numba",
    "llvmlite",
    "Cython",
    "click",
    "tqdm",
    "torch",
    "scikit-learn",
    "matplotlib",
    "pyarrow",
)


def package_versions() -> dict[str, str | None]:
    """Installed version of each package fastdiv uses or compares with."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def vector_extensions() -> tuple[list[str], str]:
    """The CPU's vector instruction sets and where they were read from.

    Linux lists them in /proc/cpuinfo (``flags`` on x86, ``Features`` on
    ARM); elsewhere LLVM's view of the host, through llvmlite, is used.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return _vector_only(value.split()), "/proc/cpuinfo"
    except OSError:
        pass
    try:
        from llvmlite import binding

        features = binding.get_host_cpu_features()
        names = [f for f, on in features.items() if on]
        return _vector_only(names), f"LLVM ({binding.get_host_cpu_name()})"
    except Exception:  # llvmlite missing or unable to probe the host
        return [], "unknown"


def _vector_only(flags) -> list[str]:
    return sorted({f for f in flags if f.lower().startswith(_VECTOR_PREFIXES)})


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def openmp_status() -> str:
    """Whether the Cython backend was compiled with OpenMP."""
    try:
        omp = importlib.import_module("fastdiv.backends._cython._omp")
    except ImportError as exc:
        return f"unknown (Cython extensions not built: {exc})"
    if omp.has_openmp():
        return f"yes (up to {omp.max_threads()} threads)"
    return "no (the Cython kernels run on one thread)"


def _cython_inline(module: str, probe: str, header: str) -> str:
    """Whether a Cython module runs its inline AVX-512 function here (its
    ``probe`` says) or glibc's."""
    try:
        mod = importlib.import_module(f"fastdiv.backends._cython.{module}")
    except ImportError:
        return "n/a (the Cython extension is not built)"
    if getattr(mod, probe)():
        return f"inline AVX-512 ({header})"
    return "glibc's libmvec or libm (no AVX-512F here)"


def cython_log() -> str:
    """Which log the Cython divergence and pairwise JS kernels take here."""
    return _cython_inline("_divergence", "log8_in_use", "fastdiv_log8.h")


def cython_exp() -> str:
    """Which exp the Cython softmax-family kernels take here."""
    return _cython_inline("_softmax", "exp8_in_use", "fastdiv_exp8.h")


def report() -> dict:
    """Everything ``fastdiv info`` prints, as a dict."""
    import fastdiv
    from fastdiv import _dispatch
    from fastdiv._dispatch import num_threads

    numba_threads = None
    try:
        import numba

        numba_threads = numba.config.NUMBA_NUM_THREADS
    except Exception:  # numba not importable: backends() says why
        pass
    flags, source = vector_extensions()
    return {
        "fastdiv": fastdiv.__version__,
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "platform": platform.platform(),
        "packages": package_versions(),
        "backends": {
            name: {"usable": status.usable, "reason": status.reason}
            for name, status in _dispatch.backends().items()
        },
        "threads": num_threads(),
        "numba_threads": numba_threads,
        "openmp": openmp_status(),
        "cpu": cpu_name(),
        "vector_extensions": flags,
        "vector_extensions_source": source,
        "cython_log": cython_log(),
        "cython_exp": cython_exp(),
    }


def format_report(info: dict) -> str:
    """The report as aligned lines of text."""
    lines = [
        f"fastdiv {info['fastdiv']} on {info['python']}, {info['platform']}",
        "",
        "packages:",
    ]
    for name, version in info["packages"].items():
        lines.append(f"  {name:<14} {version or 'not installed'}")
    lines += ["", "backends:"]
    for name, status in info["backends"].items():
        text = "usable" if status["usable"] else f"not usable: {status['reason']}"
        lines.append(f"  {name:<14} {text}")
    lines += [
        "",
        f"threads:         {info['threads']} (FASTDIV_NUM_THREADS, or --threads "
        "of the computing subcommands, changes it)",
        f"numba threads:   {info['numba_threads'] or 'n/a'}",
        f"OpenMP (Cython): {info['openmp']}",
        f"CPU:             {info['cpu']}",
        f"vector ISA:      {' '.join(info['vector_extensions']) or 'none found'}"
        f" (from {info['vector_extensions_source']})",
        f"Cython log:      {info['cython_log']}",
        f"Cython exp:      {info['cython_exp']}",
    ]
    return "\n".join(lines)
