"""The machinery behind the ``fastdiv`` command (:mod:`fastdiv.cli`).

One job per module: :mod:`.readers` turns files into arrays,
:mod:`.writers` writes results atomically, :mod:`.resources` says whether a
result fits in memory and on disk, :mod:`.bench`, :mod:`.demo` and
:mod:`.sysinfo` are the subcommands that need no input file. Nothing here
is public API; the command line is.
"""
