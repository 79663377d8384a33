"""Whether a result fits in this machine's memory and on its disk."""

from __future__ import annotations

import os
import shutil

from fastdiv._cli.errors import InputError


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation, or None if unknown.

    Linux's ``MemAvailable`` counts the page cache that can be dropped,
    which is what a large allocation can really get; ``SC_AVPHYS_PAGES``
    (free pages only) is the fallback elsewhere.
    """
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def free_disk(path) -> int:
    """Bytes free on the file system that holds ``path``'s folder."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    return shutil.disk_usage(folder).free


def human(nbytes: float) -> str:
    """1234567 -> '1.2 MB' (powers of 1000, as disk sizes are sold)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(nbytes) < 1000 or unit == "PB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def check_fits(what: str, memory: int, disk: int, out, hint: str) -> None:
    """Raise InputError, before any work, if ``memory`` bytes of RAM or
    ``disk`` bytes beside ``out`` are not available. ``hint`` says what to
    do instead."""
    avail = available_memory()
    if avail is not None and memory > avail:
        raise InputError(
            out,
            f"{what} needs {human(memory)} of memory but only "
            f"{human(avail)} is available; {hint}",
        )
    free = free_disk(out)
    if disk > free:
        raise InputError(
            out,
            f"{what} needs {human(disk)} on disk but only "
            f"{human(free)} is free there; {hint}",
        )
