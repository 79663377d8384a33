"""The exceptions the command turns into a one-line message and an exit code:
InputError (exit 2) and Terminated (SIGTERM, exit 143)."""

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


# Set by the SIGTERM handler. The exception it raises can be lost: raised
# while Numba compiles, inside one of llvmlite's ctypes callbacks, it is
# printed as "Exception ignored" and the command went on to write its
# output. atomic_output and the entry point look at the flag as well.
_termination = {"requested": False}


def request_termination() -> None:
    """Note that SIGTERM arrived and raise Terminated."""
    _termination["requested"] = True
    raise Terminated()


def termination_requested() -> bool:
    return _termination["requested"]


def clear_termination() -> None:
    _termination["requested"] = False
