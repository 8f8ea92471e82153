"""The serving process's collector settings (service/runtime/gc_tuning.py): under a load that keeps
promoting long-lived objects (what a cold load does to L1), no full collection runs by itself,
while young cycles are still collected. Each case runs in a child interpreter: the collector's
state is the whole process's."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timing

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


async def test_requests_leave_no_cycles_behind(client, make_key):
    # A serving process collects its oldest generation only every few minutes: what a request
    # leaves in a reference cycle stays until then. A cold transform's batch of rows was such a
    # cycle (a flight and its answer), and so was every 404's request (through its traceback).
    from tests.support.api import Api
    from tests.support.catalogs import load_catalog, put_recommender

    api = Api(client, await make_key("acme", "admin"))
    stranger = Api(client, "ce_" + "A" * 43)
    await load_catalog(api, "movies", [{"id": str(i), "title": f"Movie {i}"} for i in range(60)])
    await put_recommender(api, "movies", "movies", ("Title", "title"))
    path = "/v1/recommenders/movies/transform"

    def event(k: int) -> dict:
        return {"Endpoints": {f"e{j}": {"RecommendationItems": [str((k + j) % 60), "nope"]}
                              for j in range(5)}}

    async def requests(k: int) -> None:
        assert (await api.post(path, event(k)))[0] == 200  # cold the first times, then warm
        assert (await api.post(path, raw=b"{not json"))[0] == 400
        assert (await api.post(path, {"Endpoints": {"x": {"RecommendationItems": 5}}}))[0] == 422
        assert (await stranger.post(path, event(k)))[0] == 401
        assert (await api.get("/v1/no-such-route"))[0] == 404
        assert (await api.get(f"/v1/recommenders/movies/content?ids={k},{k + 1}"))[0] == 200
        assert (await api.get(f"/v1/catalogs/movies/items/{k}"))[0] == 200

    await requests(0)  # first-use caches (keys, recommender, routes) out of the way
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for k in range(1, 25):
            await requests(k)
        gc.collect()
        left = {type(o).__name__ for o in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not left & {"Flight", "FlightAnswer", "Request", "frame", "Record"}, left


SETTLING = textwrap.dedent("""
    import asyncio, gc
    from service.runtime import gc_tuning
    from service.runtime.loop_lag import SAMPLE_SECONDS, LoopLagMonitor

    def young() -> int:  # objects in the collector's generations (not settled out of them)
        return sum(len(gc.get_objects(generation)) for generation in range(3))

    async def main():
        gc_tuning.tune_for_serving()
        monitor = LoopLagMonitor(lambda lag: None, lambda lag: None)
        monitor.start()
        kept = [[n] for n in range(50_000)]      # long-lived, as new L1 entries are
        ring = []; ring.append(ring)             # a cycle, alive for now
        before = young()
        await asyncio.sleep(4 * SAMPLE_SECONDS)  # the sampler settles what survived
        after = young()
        del ring                                 # garbage now, and out of the young scans
        missed = gc.collect(1)
        found, _ = gc_tuning.collect_everything()
        print(before, after, missed, found, gc.get_freeze_count() >= len(kept))
        await monitor.close()

    asyncio.run(main())
""")


def test_what_survives_is_settled_out_of_young_scans_and_still_collected():
    done = subprocess.run([sys.executable, "-c", SETTLING], capture_output=True, text=True,
                          timeout=120, check=True)
    before, after, missed, found, refrozen = done.stdout.split()
    # The sampler moved the long-lived objects out of the generations collections scan...
    assert int(before) >= 50_000 and int(after) < 5_000
    # ...and a cycle among them that became garbage waits for the periodic full collection,
    # which finds it, then settles the survivors again.
    assert int(missed) == 0 and int(found) >= 1
    assert refrozen == "True"
