"""The serving process's collector settings (service/runtime/gc_tuning.py): under a load that keeps
promoting long-lived objects (what a cold load does to L1), no full collection runs by itself,
while young cycles are still collected. Each case runs in a child interpreter: the collector's
state is the whole process's."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent("""
    import collections, gc, sys
    from service.runtime import gc_tuning
    if sys.argv[1] == "tuned":
        gc_tuning.tune_for_serving()
    full = []
    gc.callbacks.append(lambda phase, info: phase == "stop" and info["generation"] == 2
                        and full.append(1))
    kept = collections.deque()
    for n in range(600_000):           # long-lived entries, as L1 fills and churns
        kept.append([n])
        if len(kept) > 200_000:
            kept.popleft()
        if n % 10 == 0:                # and cycles that die young
            a = []; a.append(a)
    found, seconds = gc_tuning.collect_everything()
    print(len(full), gc_tuning.serving_tuned())
""")


def run(mode: str) -> tuple[int, bool]:
    done = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True,
                          timeout=120, check=True)
    full, tuned = done.stdout.split()
    return int(full), tuned == "True"


def test_no_full_collection_runs_by_itself_when_serving():
    full, tuned = run("tuned")
    assert tuned
    assert full == 1  # only the explicit one at the end (the sampler's periodic one)


def test_the_defaults_would_have_run_full_collections():
    # What the setting is for: the same load with CPython's defaults scans everything repeatedly.
    full, tuned = run("defaults")
    assert not tuned and full > 1
