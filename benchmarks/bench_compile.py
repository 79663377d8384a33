"""First-call cost of the Numba kernels, apart from the steady state.

The steady-state benchmarks warm every kernel up before timing. Here each
topic's first call runs in a fresh process (``_first_call.py``), once with
an empty Numba cache (a cold compile) and once more with the cache that run
filled (a load from the cache). ``extra_info`` holds import_s, first_s,
second_s and compile_s = first_s - second_s; the timed figure is the whole
process, interpreter start included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from _bench import SETTINGS, need, need_backend

# One operation per topic: the first call compiles the whole topic module.
TOPICS = {"softmax": 2, "kl_div": 3, "distill_loss": 3, "pairwise": 4}

_SCRIPT = os.path.join(os.path.dirname(__file__), "_first_call.py")


@pytest.fixture(scope="module")
def cache_dirs(tmp_path_factory):
    return {op: tmp_path_factory.mktemp(f"numba-cache-{op}") for op in TOPICS}


@pytest.mark.parametrize("cache", ["cold", "cached"])
@pytest.mark.parametrize("op", list(TOPICS))
def test_numba_first_call(benchmark, cache_dirs, op, cache):
    need(op, TOPICS[op])
    need_backend("numba")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dirs[op]))
    cmd = [sys.executable, _SCRIPT, op, "--backend=numba"]

    def run():
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            if "BackendUnavailableError" in done.stderr and not SETTINGS.strict:
                pytest.skip(f"{op} on numba: {done.stderr.strip()[-300:]}")
            pytest.fail(f"{' '.join(cmd)} failed:\n{done.stderr}", pytrace=False)
        return json.loads(done.stdout.strip().splitlines()[-1])

    benchmark.group = "numba first call (fresh process)"
    benchmark.extra_info.update(
        op=f"{op} first call", role="info", key=f"numba:{cache}", backend="numba"
    )
    if cache == "cached" and not any(cache_dirs[op].iterdir()):
        # The cached run needs the cold run's cache (run alone: fill it).
        subprocess.run(cmd, capture_output=True, env=env)
    found = benchmark.pedantic(run, rounds=1, iterations=1)
    found["compile_s"] = found["first_s"] - found["second_s"]
    benchmark.extra_info.update(found)
