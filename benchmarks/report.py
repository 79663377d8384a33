"""Ratio report of a fastdiv benchmark run, and the issues' targets.

Reads the JSON that ``pytest benchmarks --benchmark-json=FILE`` wrote and
prints, for each group (one operation, dtype and shape), every row's median
time, its ratio to the group's floor, and how many times faster than the
best peer it is; then checks the performance targets of issues 2 to 5
and prints PASS, FAIL or MISSING for each. It is a report, not a test: the
exit status is 0 whatever the targets say (1 only for an unreadable file).

A row timed on a subset of rows carries ``scale_to_full`` in its
extra_info; its median is multiplied by it here and marked ``~``.

Usage::

    python benchmarks/report.py bench.json
    python benchmarks/report.py bench.json --targets-only
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass

OUR_DEFAULT = re.compile(r"^fastdiv:(numpy|numba|cython)$")


@dataclass
class Row:
    group: str
    name: str
    key: str
    role: str
    backend: str | None
    seconds: float  # median, scaled to the full shape where timed on a subset
    scaled: bool
    info: dict


@dataclass
class Group:
    name: str
    op: str
    dtype: str
    shape: tuple
    rows: list

    def get(self, key: str) -> Row | None:
        found = [r for r in self.rows if r.key == key]
        return min(found, key=lambda r: r.seconds) if found else None

    def floor(self) -> Row | None:
        floors = [r for r in self.rows if r.role == "floor"]
        return min(floors, key=lambda r: r.seconds) if floors else None

    def best_peer(self) -> Row | None:
        peers = [r for r in self.rows if r.role == "peer"]
        return min(peers, key=lambda r: r.seconds) if peers else None

    def best_ours(self, pattern=OUR_DEFAULT) -> Row | None:
        ours = [r for r in self.rows if r.role == "ours" and pattern.match(r.key)]
        return min(ours, key=lambda r: r.seconds) if ours else None


def load(path: str) -> tuple[dict, list[Group]]:
    with open(path) as f:
        data = json.load(f)
    groups: dict[str, Group] = {}
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        stats = bench.get("stats") or {}
        if "median" not in stats:
            continue
        factor = float(info.get("scale_to_full", 1.0))
        row = Row(
            group=bench["group"],
            name=bench["name"],
            key=info.get("key", bench["name"]),
            role=info.get("role", "?"),
            backend=info.get("backend"),
            seconds=stats["median"] * factor,
            scaled=factor != 1.0,
            info=info,
        )
        g = groups.get(row.group)
        if g is None:
            g = groups[row.group] = Group(
                name=row.group,
                op=info.get("op", row.group),
                dtype=info.get("dtype", ""),
                shape=tuple(info.get("shape", ())),
                rows=[],
            )
        g.rows.append(row)
    return data, sorted(groups.values(), key=_group_rank)


# The order of the issues: softmax family, row-wise, losses, pairwise.
_OP_ORDER = (
    "softmax",
    "log_softmax",
    "logsumexp",
    "softmax out=",
    "log_softmax out=",
    "kl_div",
    "js_div",
    "entropy",
    "distill_loss+grad",
    "nll",
    "pairwise js",
    "pairwise js_distance",
    "pairwise kl",
    "pairwise cross_entropy",
    "nearest k=10",
    "nearest k=10 peak memory",
    "pairwise js self, CSR 1% non-zeros",
    "numba first call",
    "fastdiv softmax .npy",
)


def _group_rank(g: Group):
    # A stable sort: within one operation and dtype, the run's order stays.
    rank = _OP_ORDER.index(g.op) if g.op in _OP_ORDER else len(_OP_ORDER)
    return (rank, g.dtype)


def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"


def _notes(row: Row) -> str:
    notes = []
    if row.scaled:
        notes.append(
            f"timed on {row.info.get('timed_rows')} of {row.info.get('full_rows')} "
            f"rows, x{row.info['scale_to_full']:.3g}"
        )
    if "max_abs_err" in row.info:
        notes.append(f"max abs err {row.info['max_abs_err']:.2g}")
    if "peak_extra_mb" in row.info:
        notes.append(
            f"peak {row.info['peak_extra_mb']:.0f} MB above inputs "
            f"({row.info.get('method', '')})"
        )
    if "peak_rss_mb" in row.info:
        notes.append(f"peak resident {row.info['peak_rss_mb']:.0f} MB")
    if "compile_s" in row.info:
        notes.append(
            f"import {row.info['import_s']:.2f} s, first call "
            f"{row.info['first_s']:.2f} s, then {row.info['second_s'] * 1e3:.2g} ms"
        )
    return "; ".join(notes)


def print_groups(groups: list[Group], out=sys.stdout) -> None:
    for g in groups:
        floor, peer = g.floor(), g.best_peer()
        print(f"\n== {g.name}", file=out)
        header = f"  {'row':<34} {'median':>10} {'x floor':>8} {'peer/row':>9}  notes"
        print(header, file=out)
        for r in sorted(
            g.rows,
            key=lambda r: (
                ("ours", "floor", "peer").index(r.role)
                if r.role in ("ours", "floor", "peer")
                else 3
            ),
        ):
            x_floor = f"{r.seconds / floor.seconds:.2f}" if floor else "-"
            vs_peer = f"{peer.seconds / r.seconds:.2f}" if peer else "-"
            mark = "~" if r.scaled else " "
            print(
                f"  {r.key:<34}{mark}{fmt_time(r.seconds):>10} {x_floor:>8} "
                f"{vs_peer:>9}  {_notes(r)}",
                file=out,
            )
        if floor or peer:
            legend = []
            if floor:
                legend.append(f"floor = {floor.key}")
            if peer:
                legend.append(f"best peer = {peer.key}")
            print("  (" + "; ".join(legend) + ")", file=out)


# --------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------
class Checker:
    def __init__(self, groups: list[Group]):
        self.by = {(g.op, g.dtype, tuple(g.shape)): g for g in groups}
        self.results: list[tuple[str, str, str]] = []

    def group(self, op, dtype, shape) -> Group | None:
        return self.by.get((op, dtype, tuple(shape)))

    def add(self, status: str, what: str, measured: str) -> None:
        self.results.append((status, what, measured))

    def ratio(
        self,
        what,
        num: Row | None,
        den: Row | None,
        *,
        at_most=None,
        at_least=None,
        describe="",
    ) -> None:
        """Check num / den against a bound; a missing row is MISSING."""
        if num is None or den is None:
            missing = [
                n for n, r in (("numerator", num), ("denominator", den)) if r is None
            ]
            self.add("MISSING", what, "no row for the " + " and ".join(missing))
            return
        value = num.seconds / den.seconds
        ok = (at_most is None or value <= at_most) and (
            at_least is None or value >= at_least
        )
        bound = f"<= {at_most}" if at_most is not None else f">= {at_least}"
        self.add(
            "PASS" if ok else "FAIL",
            what,
            f"{value:.2f} ({bound}); {num.key} {fmt_time(num.seconds)} / "
            f"{den.key} {fmt_time(den.seconds)}{describe}",
        )

    def value(self, what, row: Row | None, field: str, *, at_most, unit="") -> None:
        if row is None or field not in row.info:
            self.add("MISSING", what, f"no {field} measured")
            return
        v = row.info[field]
        status = "PASS" if v <= at_most else "FAIL"
        self.add(status, what, f"{v:.3g}{unit} (<= {at_most:g}{unit}) [{row.key}]")


def _label(op, dtype, shape):
    return f"{op} {dtype} {'x'.join(f'{d:_}' for d in shape)}"


def check_targets(groups: list[Group]) -> Checker:
    c = Checker(groups)
    dtypes = ("float32", "float64")
    sm_shapes = [(1_000_000, 10), (100_000, 1000), (1000, 100_000)]

    # Issue 2 -------------------------------------------------------------
    for op in ("softmax", "log_softmax"):
        for shape in sm_shapes[1:]:
            for dt in dtypes:
                g = c.group(op, dt, shape)
                lab = _label(op, dt, shape)
                best = g.best_ours() if g else None
                c.ratio(
                    f"#2 {lab}: best <= 1.3x floor",
                    best,
                    g.floor() if g else None,
                    at_most=1.3,
                )
                c.ratio(
                    f"#2 {lab}: >= 2.5x faster than torch",
                    g and g.get("torch"),
                    best,
                    at_least=2.5,
                )
                c.ratio(
                    f"#2 {lab}: >= 5x faster than scipy",
                    g and g.get("scipy"),
                    best,
                    at_least=5,
                )
    for shape in sm_shapes:
        for dt in dtypes:
            g = c.group("logsumexp", dt, shape)
            c.ratio(
                f"#2 {_label('logsumexp', dt, shape)}: >= 3x faster than torch",
                g and g.get("torch"),
                g and g.best_ours(),
                at_least=3,
            )
    for op in ("softmax out=", "log_softmax out="):
        for shape in sm_shapes:
            for dt in dtypes:
                g = c.group(op, dt, shape)
                c.ratio(
                    f"#2 {_label(op, dt, shape)}: best <= 1.5x copy into out",
                    g and g.best_ours(),
                    g and g.floor(),
                    at_most=1.5,
                )
    for op in (
        "softmax",
        "log_softmax",
        "logsumexp",
        "softmax out=",
        "log_softmax out=",
    ):
        for shape in sm_shapes:
            for dt in dtypes:
                g = c.group(op, dt, shape)
                a = g and g.get("fastdiv:numba")
                b = g and g.get("fastdiv:cython")
                if a and b:
                    slow, fast = (a, b) if a.seconds >= b.seconds else (b, a)
                else:
                    slow, fast = a, b
                c.ratio(
                    f"#2 {_label(op, dt, shape)}: numba and cython within 1.5x",
                    slow,
                    fast,
                    at_most=1.5,
                )
    g = c.group("softmax", "float64", (1, 10))
    c.ratio(
        "#2 softmax float64 1x10: auto no slower than scipy",
        g and g.get("fastdiv:auto"),
        g and g.get("scipy"),
        at_most=1.0,
    )

    # Issue 3 -------------------------------------------------------------
    for op in ("kl_div", "js_div", "entropy"):
        for shape in [(1_000_000, 100), (10_000, 10_000)]:
            for dt in dtypes:
                g = c.group(op, dt, shape)
                lab = _label(op, dt, shape)
                best = g and g.best_ours()
                fast = g and g.best_ours(re.compile(r"^fastdiv:.*check=False$"))
                extra = f"; check=False best {fmt_time(fast.seconds)}" if fast else ""
                c.ratio(
                    f"#3 {lab}: >= 5x faster than scipy",
                    g and g.get("scipy"),
                    best,
                    at_least=5,
                    describe=extra,
                )
                c.ratio(
                    f"#3 {lab}: best <= 3x read floor",
                    best,
                    g and g.floor(),
                    at_most=3,
                    describe=extra,
                )
    g = c.group("distill_loss+grad", "float32", (65_536, 1000))
    lab = _label("distill_loss+grad", "float32", (65_536, 1000))
    c.ratio(
        f"#3 {lab}: >= 3x faster than torch autograd",
        g and g.get("torch"),
        g and g.best_ours(),
        at_least=3,
    )
    c.ratio(
        f"#3 {lab}: >= 5x faster than plain NumPy",
        g and g.get("numpy"),
        g and g.best_ours(),
        at_least=5,
    )

    # Issue 4 -------------------------------------------------------------
    pw_shapes = [(2000, 2000, 256), (500, 500, 10_000), (10_000, 10_000, 32)]
    for shape in pw_shapes:
        for dt in dtypes:
            g = c.group("pairwise js", dt, shape)
            lab = _label("pairwise js", dt, shape)
            best = g and g.best_ours()
            c.ratio(
                f"#4 {lab}: >= 20x faster than cdist",
                g and g.get("cdist"),
                best,
                at_least=20,
            )
            if dt == "float64":
                worst = None
                for r in g.rows if g else []:
                    if (
                        r.role == "ours"
                        and "max_abs_err" in r.info
                        and (
                            worst is None
                            or r.info["max_abs_err"] > worst.info["max_abs_err"]
                        )
                    ):
                        worst = r
                c.value(
                    f"#4 {lab}: abs error <= 1e-12 (worst backend)",
                    worst,
                    "max_abs_err",
                    at_most=1e-12,
                )
            for metric in ("kl", "cross_entropy"):
                gm = c.group(f"pairwise {metric}", dt, shape)
                c.ratio(
                    f"#4 {_label('pairwise ' + metric, dt, shape)}: best <= 1.5x "
                    "P @ log(Q).T",
                    gm and gm.best_ours(),
                    gm and gm.floor(),
                    at_most=1.5,
                )
    shape = (50_000, 50_000, 32)
    g = c.group("nearest k=10", "float32", shape)
    lab = _label("nearest k=10", "float32", shape)
    c.ratio(
        f"#4 {lab}: best <= 1.3x the pairwise blocks",
        g and g.best_ours(),
        g and g.floor(),
        at_most=1.3,
    )
    gm = c.group("nearest k=10 peak memory", "float32", shape)
    mem_rows = [r for r in gm.rows] if gm else []
    if not mem_rows:
        c.add("MISSING", f"#4 {lab}: peak memory <= 300 MB above inputs", "no row")
    for r in mem_rows:
        c.value(
            f"#4 {lab} on {r.backend}: peak memory <= 300 MB above inputs",
            r,
            "peak_extra_mb",
            at_most=300,
            unit=" MB",
        )
    g = c.group("pairwise js self, CSR 1% non-zeros", "float64", (5000, 50_000))
    sparse = g and g.best_ours(re.compile(r"^fastdiv:sparse:"))
    dense = g and g.best_ours(re.compile(r"^fastdiv:dense:"))
    c.ratio(
        "#4 sparse JS 5000x50_000 1%: >= 10x faster than dense",
        dense,
        sparse,
        at_least=10,
    )

    # Issue 5 -------------------------------------------------------------
    shape = (500_000, 1000)
    g = c.group("fastdiv softmax .npy", "float32", shape)
    lab = _label("fastdiv softmax .npy", "float32", shape)
    cmd = g and g.get("fastdiv softmax")
    start = g and g.get("fastdiv softmax start")
    c.ratio(
        f"#5 {lab}: the command takes <= 2x the in-memory function",
        cmd,
        g and g.get("fastdiv:in-memory"),
        at_most=2.0,
        describe=(
            f"; start-up {fmt_time(start.seconds)}, streaming alone "
            f"{fmt_time(cmd.seconds - start.seconds)}"
            if cmd and start
            else ""
        ),
    )
    c.value(
        f"#5 {lab}: peak resident memory of the command < 500 MB",
        cmd,
        "peak_rss_mb",
        at_most=500,
        unit=" MB",
    )
    return c


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="file written by --benchmark-json")
    parser.add_argument("--targets-only", action="store_true")
    args = parser.parse_args(argv)
    try:
        data, groups = load(args.json)
    except (OSError, ValueError) as exc:
        print(f"cannot read {args.json}: {exc}", file=sys.stderr)
        return 1

    machine = data.get("machine_info", {})
    commit = data.get("commit_info", {})
    print(
        f"run: {data.get('datetime', '?')}  commit {str(commit.get('id', '?'))[:10]}"
        f"{' (dirty)' if commit.get('dirty') else ''}  "
        f"cpu {machine.get('cpu', {}).get('brand_raw', '?')}"
    )
    scales = {r.info.get("scale") for g in groups for r in g.rows} - {None}
    if scales - {1.0}:
        print(
            f"NOTE: rows were scaled by {sorted(scales)} (a quick run): the "
            "ratios below are not measured at the targets' shapes."
        )
    print(
        "Times are medians; '~' marks a row timed on a subset of rows and "
        "scaled; 'x floor' = row / floor; 'peer/row' = best peer / row "
        "(how many times faster than the best peer)."
    )

    if not args.targets_only:
        print_groups(groups)

    checker = check_targets(groups)
    print("\n== targets (issues 2, 3, 4, 5)")
    counts = defaultdict(int)
    for status, what, measured in checker.results:
        counts[status] += 1
        print(f"  {status:<7} {what}: {measured}")
    print("\n  " + ", ".join(f"{counts[s]} {s}" for s in ("PASS", "FAIL", "MISSING")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
