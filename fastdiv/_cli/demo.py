"""``fastdiv demo``: which standard-library modules use the same words?

The input is real text nobody here wrote: the Python source of the
standard library of the interpreter that runs the demo. Each top-level
module (a ``.py`` file, or a package with all its ``.py`` files) becomes a
distribution over a shared vocabulary of words; the counts form a SciPy
sparse CSR matrix that goes to :func:`fastdiv.pairwise` as it is, with
``normalize=True``. The same matrix, made dense and normalised, goes to
:func:`scipy.spatial.distance.cdist` with ``"jensenshannon"`` to compare
both values and time.

cdist computes every one of the n * n * V terms in plain C on one thread
(about 12 ns each here), so the vocabulary is cut to the ``VOCABULARY``
most frequent words: with about 200 modules and 5000 words it takes a few
seconds. Every word is kept by passing a larger ``--vocabulary``.
"""

from __future__ import annotations

import collections
import re
import sysconfig
import textwrap
import time
from pathlib import Path

import numpy as np

import fastdiv

VOCABULARY = 5000
NEIGHBOURS = 5

# Modules whose neighbours are printed, those of them that exist.
WELL_KNOWN = (
    "json",
    "os",
    "re",
    "asyncio",
    "csv",
    "http",
    "logging",
    "unittest",
    "email",
    "typing",
)

# Folders that are not library modules: the test suite (larger than the
# library itself), IDLE, demos, bundled wheels, installed packages.
_SKIP = {
    "test",
    "tests",
    "idle_test",
    "idlelib",
    "turtledemo",
    "ensurepip",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "lib-dynload",
}

# Words are runs of two or more letters in the lower-cased text, so that
# snake_case identifiers split into their words.
_WORD = re.compile(r"[a-z]{2,}")


def stdlib_modules(root=None) -> dict[str, list[Path]]:
    """Map each top-level standard-library module to its source files.

    Parameters
    ----------
    root : path, optional
        The standard library's folder; by default that of the running
        Python, ``sysconfig.get_paths()["stdlib"]``.
    """
    root = Path(root or sysconfig.get_paths()["stdlib"])
    modules = {}
    for entry in sorted(root.iterdir()):
        if entry.name in _SKIP or entry.name.startswith((".", "_")):
            continue
        if entry.is_file() and entry.suffix == ".py":
            modules[entry.stem] = [entry]
        elif entry.is_dir() and (entry / "__init__.py").is_file():
            files = [
                f
                for f in sorted(entry.rglob("*.py"))
                if not _SKIP.intersection(f.relative_to(root).parts)
            ]
            modules[entry.name] = files
    return modules


def count_words(modules: dict[str, list[Path]], vocabulary: int = VOCABULARY):
    """Word counts per module over the most frequent words of all modules.

    Returns
    -------
    names : list of str
        Modules with at least one word of the vocabulary, in sorted order.
    words : list of str
        The vocabulary, most frequent first (ties alphabetically).
    counts : scipy.sparse.csr_array
        ``counts[i, j]`` is how often ``words[j]`` occurs in ``names[i]``.
    """
    import scipy.sparse

    per_module = {}
    total = collections.Counter()
    for name, files in modules.items():
        counter = collections.Counter()
        for path in files:
            text = path.read_text(encoding="utf-8", errors="replace")
            counter.update(_WORD.findall(text.lower()))
        per_module[name] = counter
        total.update(counter)
    ranked = sorted(total.items(), key=lambda item: (-item[1], item[0]))
    words = [w for w, _ in ranked[:vocabulary]]
    column = {w: j for j, w in enumerate(words)}

    names, indptr, indices, data = [], [0], [], []
    for name in sorted(per_module):
        row = sorted((column[w], c) for w, c in per_module[name].items() if w in column)
        if not row:  # a module with none of the words has no distribution
            continue
        names.append(name)
        indices.extend(j for j, _ in row)
        data.extend(c for _, c in row)
        indptr.append(len(indices))
    counts = scipy.sparse.csr_array(
        (
            np.array(data, np.float64),
            np.array(indices, np.int32),
            np.array(indptr, np.int64),
        ),
        shape=(len(names), len(words)),
    )
    return names, words, counts


def neighbours(
    matrix: np.ndarray, names: list[str], query: str, k: int = NEIGHBOURS
) -> list[tuple[str, float]]:
    """The ``k`` rows nearest to ``query`` in a square divergence matrix,
    itself excluded, nearest first (ties in name order)."""
    i = names.index(query)
    order = np.argsort(matrix[i], kind="stable")
    return [(names[j], float(matrix[i, j])) for j in order if j != i][:k]


def run(vocabulary: int = VOCABULARY, compare_scipy: bool = True) -> dict:
    """Read the library, compute the JS matrix, time fastdiv and SciPy."""
    started = time.perf_counter()
    modules = stdlib_modules()
    names, words, counts = count_words(modules, vocabulary)
    read_s = time.perf_counter() - started

    # A first call on two rows compiles what needs compiling, so that the
    # timed call measures the computation, as cdist's does.
    t0 = time.perf_counter()
    fastdiv.pairwise(counts[:2], metric="js", normalize=True)
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    js = fastdiv.pairwise(counts, metric="js", normalize=True)
    fastdiv_s = time.perf_counter() - t0

    result = {
        "python": sysconfig.get_paths()["stdlib"],
        "names": names,
        "words": words,
        "counts": counts,
        "files": sum(len(f) for f in modules.values()),
        "read_s": read_s,
        "warmup_s": warmup_s,
        "fastdiv_s": fastdiv_s,
        "js": js,
        "neighbours": {q: neighbours(js, names, q) for q in WELL_KNOWN if q in names},
        "scipy_s": None,
        "max_abs_diff": None,
    }
    if compare_scipy:
        from scipy.spatial.distance import cdist

        t0 = time.perf_counter()
        dense = counts.toarray()
        dense /= dense.sum(axis=1, keepdims=True)
        # cdist gives the JS distance, the square root of the divergence.
        reference = cdist(dense, dense, "jensenshannon") ** 2
        result["scipy_s"] = time.perf_counter() - t0
        result["max_abs_diff"] = float(np.max(np.abs(reference - js)))
    return result


def format_result(result: dict) -> str:
    """The report the demo prints.

    Every figure says what it is: the divergences are in nats between 0 (the
    same word frequencies) and ln 2 (no word in common); fastdiv's time is of
    the call after the warm-up (see :func:`run`), whose time is shown apart.
    """
    n, v = result["counts"].shape
    lines = [
        f"{n} modules ({result['files']} files) of {result['python']}, "
        f"{v} most frequent words, {result['counts'].nnz} non-zero counts "
        f"(read in {result['read_s']:.2f} s)",
        "",
        f"each module's {NEIGHBOURS} nearest modules by the Jensen-Shannon "
        "divergence of their word frequencies",
        f"(in nats: 0 for the same frequencies, up to ln 2 = {np.log(2):.3f} "
        "for no word in common):",
    ]
    for query, near in result["neighbours"].items():
        listed = ", ".join(f"{m} {d:.3f}" for m, d in near)
        lines.append(f"  {query:<9} {listed}")
    lines += [
        "",
        f"time to compute the {n} x {n} matrix:",
        f"  fastdiv.pairwise(sparse counts, normalize=True)  "
        f"{result['fastdiv_s']:8.3f} s",
    ]
    if result["scipy_s"] is not None:
        ratio = result["scipy_s"] / max(result["fastdiv_s"], 1e-9)
        lines.append(
            f"  scipy cdist(dense, dense, 'jensenshannon') ** 2  "
            f"{result['scipy_s']:8.3f} s ({ratio:.1f}x fastdiv's time)"
        )
    # Prose rather than a column of figures, wrapped to fit a terminal.
    note = (
        "The fastdiv time leaves out a warm-up call on 2 rows just before it "
        f"({result['warmup_s']:.3f} s), which loads the kernels and compiles "
        "any that need it."
    )
    if result["scipy_s"] is not None:
        note += (
            " The SciPy time includes making the counts dense and normalising "
            "them; the two matrices differ by at most "
            f"{result['max_abs_diff']:.1e}."
        )
    lines += textwrap.wrap(note, width=79)
    return "\n".join(lines)


def to_json(result: dict) -> dict:
    """What ``--json`` saves: everything but the matrices."""
    skip = {"counts", "js"}
    out = {k: v for k, v in result.items() if k not in skip}
    out["neighbours"] = {
        q: [[m, d] for m, d in near] for q, near in result["neighbours"].items()
    }
    out["shape"] = list(result["counts"].shape)
    return out
