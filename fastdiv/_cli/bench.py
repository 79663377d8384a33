"""``fastdiv bench``: every operation, every backend, every installed peer.

Each case (an operation on one shape and dtype) is timed for each usable
fastdiv backend, for each installed peer (SciPy, PyTorch on the CPU,
scikit-learn) and for its *floor*: the least work any implementation must
do, measured in the same run:

- shape-preserving maps (softmax, log_softmax): allocate the output and
  copy the input into it (``np.copy``);
- row reductions (logsumexp, entropy, KL, JS): read every input once
  (``np.sum`` along the rows);
- pairwise and nearest JS: one logarithm per (i, j, category) triple, timed
  with ``np.log`` on up to 4 M values and scaled;
- pairwise KL: the matrix product ``P @ Q.T`` it reduces to.

A first untimed call compiles and warms caches; then the median of up to
``repeats`` calls is kept, stopping early once the case's time budget is
spent. Before each case about twice its working set is allocated and
touched, because this kind of virtual machine hands idle memory back to its
host and the first implementation would otherwise pay to get it back.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

import fastdiv
from fastdiv import _dispatch

# (rows, classes) of the row-wise operations, and (n, m, categories) of the
# pairwise ones. Full mode mirrors PERF-NOTES.md; quick mode is ~50x less
# (scikit-learn's JS needs a Python callable: ~10 us a pair).
FULL_ROWS = ((100_000, 1000), (1_000_000, 10))
QUICK_ROWS = ((2000, 1000), (20_000, 10))
FULL_PAIRS = ((1000, 1000, 256),)
QUICK_PAIRS = ((100, 100, 256),)


@dataclass
class Case:
    """One operation on one shape and dtype, with everything that runs it."""

    op: str
    shape: tuple
    dtype: str
    fastdiv: Callable  # fastdiv(backend) runs the operation once
    floor: Callable
    peers: dict = field(default_factory=dict)
    nbytes: int = 0


def _timeit(fn, repeats: int, budget: float, compiles: bool = True):
    """Median of up to ``repeats`` timed calls after a first untimed one.

    Without ``compiles`` (a peer: nothing to compile on first call), a first
    call that alone overruns the budget is the measurement, so that a slow
    peer costs one call instead of two.
    """
    t0 = time.perf_counter()
    fn()  # compile, warm caches
    first = time.perf_counter() - t0
    if not compiles and first > budget:
        return first, 1
    times = []
    spent = 0.0
    while len(times) < repeats and (not times or spent < budget):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        spent += times[-1]
    return statistics.median(times), len(times)


def _touch(nbytes: int) -> None:
    scratch = np.ones(max(1, 2 * nbytes // 8))
    del scratch


def _peers_available() -> dict:
    found = {}
    for name in ("scipy", "torch", "sklearn"):
        try:
            found[name] = __import__(name)
        except ImportError:
            continue
    return found


def _logits(rng, shape, dtype):
    return (3.0 * rng.standard_normal(shape)).astype(dtype)


def _probs(rng, shape, dtype):
    p = rng.random(shape) ** 4  # skewed, with many near-zero entries
    return (p / p.sum(axis=-1, keepdims=True)).astype(dtype)


def cases(quick: bool, scale: float = 1.0) -> list[Case]:
    """The benchmark cases for the operations this fastdiv has."""
    rng = np.random.default_rng(0)
    peers = _peers_available()
    torch = peers.get("torch")
    dtypes = ("float64",) if quick else ("float32", "float64")
    T = 2.0
    out = []
    for rows, classes in QUICK_ROWS if quick else FULL_ROWS:
        shape = (max(2, round(rows * scale)), classes)
        for dt in dtypes:
            x = _logits(rng, shape, dt)
            p, q = _probs(rng, shape, dt), _probs(rng, shape, dt)
            out += _row_cases(x, p, q, T, shape, dt, peers, torch)
    for n, m, k in QUICK_PAIRS if quick else FULL_PAIRS:
        n, m = max(11, round(n * scale)), max(11, round(m * scale))
        for dt in dtypes:
            P, Q = _probs(rng, (n, k), dt), _probs(rng, (m, k), dt)
            out += _pair_cases(P, Q, (n, m, k), dt, peers, torch)
    return [c for c in out if c is not None]


def _row_cases(x, p, q, T, shape, dt, peers, torch):
    def floor_map():
        return np.copy(x)

    def floor_read():
        return x.sum(axis=-1)

    def floor_read2():
        return p.sum(axis=-1) + q.sum(axis=-1)

    res = []
    if "scipy" in peers:
        import scipy.spatial.distance
        import scipy.special
        import scipy.stats
    tx = tp = tq = None
    if torch is not None:
        tx, tp, tq = (torch.from_numpy(a) for a in (x, p, q))

    def add(op, fn, floor, peer_fns, nbytes):
        if not hasattr(fastdiv, op):
            return
        res.append(
            Case(
                op,
                shape,
                dt,
                fn,
                floor,
                {k: v for k, v in peer_fns.items() if v is not None},
                nbytes,
            )
        )

    have = set(peers)
    add(
        "softmax",
        lambda b: fastdiv.softmax(x, T, backend=b),
        floor_map,
        {
            "scipy": (lambda: scipy.special.softmax(x / T, axis=-1))
            if "scipy" in have
            else None,
            "torch": (lambda: torch.softmax(tx / T, -1)) if torch else None,
            "sklearn": (lambda: _sklearn_softmax(x / T)) if "sklearn" in have else None,
        },
        2 * x.nbytes,
    )
    add(
        "log_softmax",
        lambda b: fastdiv.log_softmax(x, T, backend=b),
        floor_map,
        {
            "scipy": (lambda: scipy.special.log_softmax(x / T, axis=-1))
            if "scipy" in have
            else None,
            "torch": (lambda: torch.log_softmax(tx / T, -1)) if torch else None,
        },
        2 * x.nbytes,
    )
    add(
        "logsumexp",
        lambda b: fastdiv.logsumexp(x, T, backend=b),
        floor_read,
        {
            "scipy": (lambda: scipy.special.logsumexp(x / T, axis=-1))
            if "scipy" in have
            else None,
            "torch": (lambda: torch.logsumexp(tx / T, -1)) if torch else None,
        },
        x.nbytes,
    )
    add(
        "entropy",
        lambda b: fastdiv.entropy(p, backend=b),
        lambda: p.sum(axis=-1),
        {
            "scipy": (lambda: scipy.stats.entropy(p, axis=-1))
            if "scipy" in have
            else None,
            "torch": (lambda: torch.special.entr(tp).sum(-1)) if torch else None,
        },
        p.nbytes,
    )
    add(
        "kl_div",
        lambda b: fastdiv.kl_div(p, q, backend=b),
        floor_read2,
        {
            "scipy": (lambda: scipy.special.rel_entr(p, q).sum(axis=-1))
            if "scipy" in have
            else None,
            "torch": (
                lambda: torch.nn.functional.kl_div(tq.log(), tp, reduction="none").sum(
                    -1
                )
            )
            if torch
            else None,
        },
        2 * p.nbytes,
    )
    add(
        "js_div",
        lambda b: fastdiv.js_div(p, q, backend=b),
        floor_read2,
        {
            "scipy": (lambda: scipy.spatial.distance.jensenshannon(p, q, axis=-1) ** 2)
            if "scipy" in have
            else None,
        },
        2 * p.nbytes,
    )
    return res


def _sklearn_softmax(z):
    from sklearn.utils.extmath import softmax

    return softmax(z, copy=False)


def _pair_cases(P, Q, shape, dt, peers, torch):
    n, m, k = shape
    have = set(peers)
    if "scipy" in have:
        from scipy.spatial.distance import cdist
    sample = np.random.default_rng(1).random(min(n * m * k, 4 * 2**20)) + 0.5
    sample = sample.astype(dt)
    scale = n * m * k / sample.size

    def floor_logs():
        t0 = time.perf_counter()
        np.log(sample)
        # Stand in for the full count of logarithms by waiting out the
        # difference: the floor is then timed like every other entry.
        _sleep_until(t0 + (time.perf_counter() - t0) * scale)

    def floor_matmul():
        return P @ Q.T

    def sk_js():
        from scipy.spatial.distance import jensenshannon
        from sklearn.metrics import pairwise_distances

        # scikit-learn has no JS metric of its own: users pass a callable.
        return pairwise_distances(P, Q, metric=jensenshannon) ** 2

    def sk_nearest():
        from scipy.spatial.distance import jensenshannon
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(
            n_neighbors=10, metric=jensenshannon, algorithm="brute"
        ).fit(Q)
        return nn.kneighbors(P)

    def scipy_nearest():
        d = cdist(P, Q, "jensenshannon")
        idx = np.argpartition(d, 9, axis=1)[:, :10]
        return idx, np.take_along_axis(d, idx, axis=1) ** 2

    def torch_kl():
        tp, tq = torch.from_numpy(P), torch.from_numpy(Q)
        ent = torch.special.entr(tp).sum(-1, keepdim=True)
        return -ent - tp @ tq.log().T

    nbytes = P.nbytes + Q.nbytes + n * m * P.itemsize
    res = []
    if hasattr(fastdiv, "pairwise"):
        res.append(
            Case(
                "pairwise js",
                shape,
                dt,
                lambda b: fastdiv.pairwise(P, Q, "js", backend=b),
                floor_logs,
                {
                    "scipy": (lambda: cdist(P, Q, "jensenshannon") ** 2)
                    if "scipy" in have
                    else None,
                    "sklearn": sk_js if "sklearn" in have else None,
                },
                nbytes,
            )
        )
        res.append(
            Case(
                "pairwise kl",
                shape,
                dt,
                lambda b: fastdiv.pairwise(P, Q, "kl", backend=b),
                floor_matmul,
                {"torch": torch_kl if torch else None},
                nbytes,
            )
        )
    if hasattr(fastdiv, "nearest"):
        res.append(
            Case(
                "nearest js k=10",
                shape,
                dt,
                lambda b: fastdiv.nearest(P, Q, k=10, metric="js", backend=b),
                floor_logs,
                {
                    "scipy": scipy_nearest if "scipy" in have else None,
                    "sklearn": sk_nearest if "sklearn" in have else None,
                },
                nbytes,
            )
        )
    for case in res:
        case.peers = {k: v for k, v in case.peers.items() if v is not None}
    return res


def _sleep_until(deadline: float) -> None:
    while (left := deadline - time.perf_counter()) > 0:
        time.sleep(min(left, 0.05))


def run(
    quick: bool = False,
    scale: float = 1.0,
    backend: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run every case; return the machine, the settings and one row per
    (case, implementation) with its median and ratios."""
    from fastdiv._cli.sysinfo import report
    from fastdiv._dispatch import num_threads

    repeats, budget = (3, 0.5) if quick else (7, 5.0)
    threads = num_threads()
    try:
        import torch

        torch.set_num_threads(threads)  # the same cores as fastdiv
    except ImportError:
        pass
    names = (
        [backend]
        if backend not in (None, "auto")
        else [name for name, status in _dispatch.backends().items() if status.usable]
    )
    rows = []
    for case in cases(quick, scale):
        label = f"{case.op} {'x'.join(map(str, case.shape))} {case.dtype}"
        if progress:
            progress(f"bench: {label}")
        _touch(case.nbytes)
        floor, _ = _timeit(case.floor, repeats, budget, compiles=False)
        timed = []
        for name in names:
            try:
                t, runs = _timeit(partial(case.fastdiv, name), repeats, budget)
            except fastdiv.BackendUnavailableError:
                continue  # this backend has no kernel for the operation yet
            timed.append((f"fastdiv[{name}]", "fastdiv", t, runs))
        for name, fn in case.peers.items():
            try:
                t, runs = _timeit(fn, repeats, budget, compiles=False)
            except Exception as exc:  # a peer's version may lack an option
                if progress:
                    progress(f"bench: {label}: {name} failed ({exc}); left out")
                continue
            timed.append((name, "peer", t, runs))
        peer_times = [t for _, kind, t, _ in timed if kind == "peer"]
        best_peer = min(peer_times) if peer_times else None
        rows.append(_row(case, "floor", "floor", floor, repeats, floor, best_peer))
        for impl, kind, t, runs in timed:
            rows.append(_row(case, impl, kind, t, runs, floor, best_peer))
    info = report()
    return {
        "quick": quick,
        "threads": threads,
        "machine": {
            k: info[k]
            for k in (
                "fastdiv",
                "python",
                "platform",
                "cpu",
                "vector_extensions",
                "packages",
            )
        },
        "results": rows,
    }


def _row(case, impl, kind, t, runs, floor, best_peer) -> dict:
    return {
        "op": case.op,
        "shape": list(case.shape),
        "dtype": case.dtype,
        "impl": impl,
        "kind": kind,
        "median_s": t,
        "runs": runs,
        "vs_floor": t / floor if floor > 0 else None,
        "vs_best_peer": t / best_peer if best_peer else None,
    }


def format_table(results: dict) -> str:
    """The results as a text table, one line per implementation."""
    head = (
        f"{'operation':<16} {'shape':<17} {'dtype':<8} {'implementation':<16}"
        f" {'median':>10} {'x floor':>8} {'x best peer':>11}"
    )
    lines = [
        f"fastdiv bench ({'quick' if results['quick'] else 'full'}, "
        f"{results['threads']} threads) on {results['machine']['cpu']}",
        head,
        "-" * len(head),
    ]
    previous = None
    for r in results["results"]:
        case = (r["op"], tuple(r["shape"]), r["dtype"])
        if previous is not None and case != previous:
            lines.append("")
        previous = case
        ratio = "" if r["vs_best_peer"] is None else f"{r['vs_best_peer']:.2f}"
        lines.append(
            f"{r['op']:<16} {'x'.join(map(str, r['shape'])):<17} {r['dtype']:<8} "
            f"{r['impl']:<16} {_ms(r['median_s']):>10} "
            f"{r['vs_floor']:>8.2f} {ratio:>11}"
        )
    return "\n".join(lines)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms" if seconds < 10 else f"{seconds:.1f} s"


def plot(results: dict, path) -> None:
    """A horizontal bar chart of the ratio to the floor, one group per case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["results"] if r["kind"] != "floor"]
    labels = [
        f"{r['op']} {'x'.join(map(str, r['shape']))} {r['dtype']} | {r['impl']}"
        for r in rows
    ]
    ratios = [r["vs_floor"] for r in rows]
    colours = ["tab:blue" if r["kind"] == "fastdiv" else "tab:grey" for r in rows]
    fig, ax = plt.subplots(figsize=(10, 1.0 + 0.22 * len(rows)))
    ax.barh(range(len(rows)), ratios, color=colours)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("median time / floor (lower is better; blue: fastdiv, grey: peers)")
    ax.set_title(
        f"fastdiv bench on {results['machine']['cpu']}, {results['threads']} threads"
    )
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
