"""The examples in the docstrings of every module of fastdiv run and hold.

They are what a reader copies first, so a wrong value there (an ``nll``
example once showed a loss the function never returns) is a bug.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import fastdiv

# The command's modules print to a terminal; their behaviour is in test_cli.
SKIP = ("fastdiv._cli", "fastdiv.cli", "fastdiv.__main__")
MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(fastdiv.__path__, "fastdiv.")
    if not info.name.startswith(SKIP)
    and not info.name.startswith("fastdiv.backends._cython")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"
