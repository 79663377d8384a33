"""First-call cost of the Numba kernels, apart from the steady state.

The steady-state benchmarks warm every kernel up before timing. Here each
topic's first call runs in a fresh process (``_first_call.py``):

- "cold": with an empty Numba cache directory, so the first call compiles
  the topic's kernels. A cold compile takes tens of seconds per topic, so
  these rows run at full scale only, or with --bench-compile (skipped in a
  quick run, where they would take most of the smoke test's time);
- "cached": with the project's own cache (filled by an untimed run first if
  needed), so the first call loads the compiled kernels.

``extra_info`` holds import_s, first_s, second_s and compile_s = first_s -
second_s; the timed figure is the whole process, interpreter start included.
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
def cold_cache_dirs(tmp_path_factory):
    return {op: tmp_path_factory.mktemp(f"numba-cache-{op}") for op in TOPICS}


@pytest.mark.parametrize("cache", ["cold", "cached"])
@pytest.mark.parametrize("op", list(TOPICS))
def test_numba_first_call(benchmark, cold_cache_dirs, op, cache):
    need(op, TOPICS[op])
    need_backend("numba")
    if cache == "cold" and SETTINGS.scale != 1 and not SETTINGS.compile:
        pytest.skip("a cold Numba compile is not quick: use --bench-compile")
    env = dict(os.environ)
    if cache == "cold":
        env["NUMBA_CACHE_DIR"] = str(cold_cache_dirs[op])
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
        op="numba first call", role="info", key=f"{op}:{cache}", backend="numba"
    )
    if cache == "cached":
        run()  # untimed: compiles into the cache if it was not there yet
    found = benchmark.pedantic(run, rounds=1, iterations=1)
    found["compile_s"] = found["first_s"] - found["second_s"]
    benchmark.extra_info.update(found)
