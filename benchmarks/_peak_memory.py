"""Peak memory of one fastdiv.nearest call, measured in a fresh process.

tracemalloc does not see what Numba or C code allocates, so the resident
set size of the whole process is used: after the inputs are built and the
kernels warmed up, the kernel's high-water mark (VmHWM in
/proc/self/status) is reset by writing 5 to /proc/self/clear_refs, and the
peak during the call is compared with the resident size just before it.
Where that reset is not allowed, getrusage's ru_maxrss is the fallback (it
cannot be reset, so it is only right when the call sets a new peak).

Prints one JSON object: peak_extra_mb, baseline_mb, seconds, method.
Used by bench_pairwise.py; run by hand as
``python benchmarks/_peak_memory.py --n 50000 --m 50000 --k 32``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _probabilities(shape, dtype, seed):
    p = np.random.default_rng(seed).random(shape)
    p += 1e-3
    p /= p.sum(axis=1, keepdims=True)
    return p.astype(dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--m", type=int, required=True)
    parser.add_argument("--k", type=int, required=True)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--neighbours", type=int, default=10)
    parser.add_argument("--metric", default="js")
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()

    import fastdiv

    P = _probabilities((args.n, args.k), args.dtype, 0)
    Q = _probabilities((args.m, args.k), args.dtype, 1)
    kwargs = dict(k=args.neighbours, metric=args.metric, backend=args.backend)
    # Warm up on a slice: compiles or loads the kernels, whose memory then
    # counts as part of the baseline, not of the call.
    fastdiv.nearest(P[:2], Q[: max(args.neighbours, 2)], **kwargs)

    reset = _reset_peak()
    baseline_kb = _status_kb("VmRSS")
    rusage_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    result = fastdiv.nearest(P, Q, **kwargs)
    seconds = time.perf_counter() - t0
    if reset:
        peak_kb, method = _status_kb("VmHWM"), "VmHWM after clear_refs"
    else:
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        method = "ru_maxrss" + (
            "" if peak_kb > rusage_before else " (no new peak: upper bound)"
        )
    del result
    print(
        json.dumps(
            {
                "peak_extra_mb": (peak_kb - baseline_kb) / 1024,
                "baseline_mb": baseline_kb / 1024,
                "inputs_mb": (P.nbytes + Q.nbytes) / 2**20,
                "seconds": seconds,
                "method": method,
            }
        )
    )


if __name__ == "__main__":
    main()
