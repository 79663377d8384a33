"""The exceptions the command turns into a one-line message and an exit code:
InputError (exit 2), Terminated (SIGTERM, exit 143) and KeyboardInterrupt
(SIGINT, exit 130), with the flags that outlive a lost signal exception."""

from __future__ import annotations

import os


class InputError(Exception):
    """Bad input or a refused request: shown as one line, exit code 2.

    Parameters
    ----------
    path : str or os.PathLike or None
        The file the message is about; it starts the line when given.
    message : str
        What is wrong, in words a user can act on.
    """

    def __init__(self, path, message: str):
        self.path = None if path is None else os.fspath(path)
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.path is None:
            return self.message
        return f"{self.path}: {self.message}"


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM arrives, so cleanup runs."""


# Set by the SIGTERM and SIGINT handlers. The exception a handler raises can
# be lost: raised while Numba compiles, inside one of llvmlite's ctypes
# callbacks, or inside a __del__ (an unmapped block of a streamed .npy), it
# is printed as "Exception ignored" and the command went on, to the end of
# a long run and to writing its output. The block loops (stop_if_signalled),
# atomic_output and the entry point look at the flag as well.
_signalled: dict[str, str | None] = {"by": None}


def request_termination() -> None:
    """Note that SIGTERM arrived and raise Terminated."""
    _signalled["by"] = "SIGTERM"
    raise Terminated()


def request_interrupt() -> None:
    """Note that SIGINT arrived and raise KeyboardInterrupt."""
    _signalled["by"] = "SIGINT"
    raise KeyboardInterrupt()


def termination_requested() -> bool:
    """Whether SIGTERM or SIGINT arrived during this run."""
    return _signalled["by"] is not None


def stop_if_signalled() -> None:
    """Raise again the exception of a signal that arrived (if it was lost)."""
    if _signalled["by"] == "SIGTERM":
        raise Terminated()
    if _signalled["by"] == "SIGINT":
        raise KeyboardInterrupt()


def clear_termination() -> None:
    _signalled["by"] = None
