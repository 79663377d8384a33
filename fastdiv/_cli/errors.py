"""The one exception the command turns into a one-line message and exit 2."""

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
