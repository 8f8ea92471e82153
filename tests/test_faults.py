"""Real faults on a Postgres and a Redis each test starts and owns: stopped, frozen, restarted.

Cached items are still answered, uncached ones by the recommender's missing-item policy, flagged
degraded, within the deadline; after a restart no request fails; Redis is never needed to answer,
and is used again once it is back.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator

import pytest

from service.runtime.settings import Settings
from service.web.app import create_app
from service.web.app_keys import RESOLVER
from tests.conftest import KeyMaker
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender
from tests.support.loop_stalls import timed as timed_call
from tests.support.metrics_reader import sample
from tests.support.owned_servers import OwnedPostgres, migrated, pg_available, scratch_folder

pytestmark = [
    pytest.mark.timing,
    pytest.mark.slow,
    pytest.mark.skipif(not pg_available(), reason="needs the Postgres binaries (initdb, pg_ctl)"),
    pytest.mark.timeout(60),
]

TRANSFORM = "/v1/recommenders/movies/transform"
PADDED = "/v1/recommenders/padded/transform"


def event(*ids: str) -> dict:
    return {"Endpoints": {"e1": {"RecommendationItems": list(ids)}}}


@pytest.fixture(scope="module")
def migrated_cluster() -> Iterator[OwnedPostgres]:
    """A stopped, migrated cluster that each test copies (initdb once per module)."""
    with scratch_folder("ce-pg-template-") as folder:
        yield from migrated(OwnedPostgres(folder / "cluster"))


@pytest.fixture
def owned_pg(migrated_cluster: OwnedPostgres) -> Iterator[OwnedPostgres]:
    with scratch_folder("ce-pg-") as folder:
        cluster = migrated_cluster.copy_to(folder / "cluster")
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.thaw()
            cluster.stop("immediate")


def fault_settings(url: str, **extra: object) -> Settings:
    return Settings(
        database_url=url, db_pool_min=1, db_pool_max=4, db_connect_timeout=1.0,
        db_command_timeout=3.0, db_acquire_timeout=1.0, cache_ttl=3600,
        cache_negative_ttl=3600, auth_cache_seconds=3600, default_deadline_ms=2000,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def start(owned_pg, aiohttp_client):
    """Start an app instance on the owned Postgres (it outlives every instance)."""
    key_maker = KeyMaker(owned_pg.url)
    keys: list[str] = []

    async def start(settings: Settings) -> Api:
        if not keys:
            keys.append(await key_maker("acme", "admin"))
        return Api(await aiohttp_client(create_app(settings)), keys[0])

    return start


async def seed(api: Api) -> None:
    await load_catalog(api, "movies", [{"id": str(i), "title": f"Movie {i}"} for i in range(10)])
    await put_recommender(api, "movies", "movies", ("Title", "title"))
    await put_recommender(api, "padded", "movies", ("Title", "title"),
                          missing_items="placeholder")
    # Warm both recommenders, the key and items 1 and 2; 8 and 9 stay cold.
    for path in (TRANSFORM, PADDED):
        assert (await api.post(path, event("1", "2")))[0] == 200


async def timed(api: Api, path: str, body: dict, deadline_ms: int):
    """The answer and how long it took, less the time the machine kept this process's loop from
    running (tests/support/loop_stalls.py): what a deadline can be held to here."""
    (status, answer, headers), took = await timed_call(
        api.post(path, body, headers={"X-Deadline-Ms": str(deadline_ms)}))
    return status, answer, headers, took


class TestPostgresDown:
    """Postgres stopped or frozen: answers from the caches, by policy, degraded, in time."""

    async def test_stopped(self, owned_pg, start):
        api = await start(fault_settings(owned_pg.url))
        await seed(api)
        owned_pg.stop()
        status, answer, headers, took = await timed(api, TRANSFORM, event("1", "9", "2"), 1500)
        assert status == 200
        assert took < 1.5
        assert answer["e1"]["Recommendations"]["Title"] == ["Movie 1", "Movie 2"]
        assert headers["X-Degraded"] == "postgres-unavailable"
        status, answer, headers, took = await timed(api, PADDED, event("1", "9", "2"), 1500)
        assert status == 200
        assert took < 1.5
        assert answer["e1"]["Recommendations"]["Title"] == ["Movie 1", "", "Movie 2"]
        assert headers["X-Degraded"] == "postgres-unavailable"
        # Only uncached IDs: the endpoint cannot be served (skip policy), but the answer comes.
        status, answer, headers, _ = await timed(api, TRANSFORM, event("8"), 1500)
        assert (status, answer) == (200, {})
        assert "X-Degraded" in headers
        assert sample(api.client.app, "enricher_degraded_responses_total",
                      route="transform", reason="postgres-unavailable") == 3

    async def test_frozen(self, owned_pg, start):
        api = await start(fault_settings(owned_pg.url))
        await seed(api)
        owned_pg.freeze()
        try:
            status, answer, headers, took = await timed(api, TRANSFORM, event("1", "8"), 400)
            assert status == 200
            assert took < 0.4
            assert answer["e1"]["Recommendations"]["Title"] == ["Movie 1"]
            assert headers["X-Degraded"] == "postgres-timeout"
            # Fully cached: no need to wait for Postgres, so not degraded.
            status, _, headers, took = await timed(api, TRANSFORM, event("2"), 400)
            assert status == 200
            assert took < 0.4
            assert "X-Degraded" not in headers
        finally:
            owned_pg.thaw()

    async def test_restarted(self, owned_pg, start):
        api = await start(fault_settings(owned_pg.url))
        await seed(api)
        owned_pg.restart()
        results = [await api.post(TRANSFORM, event("1", str(n))) for n in range(3, 7)]
        results += await asyncio.gather(*(api.post(TRANSFORM, event(str(n), "2"))
                                          for n in (7, 8, 9)))
        for status, answer, headers in results:
            assert status == 200, answer
            assert "X-Degraded" not in headers
        assert results[0][1]["e1"]["Recommendations"]["Title"] == ["Movie 1", "Movie 3"]
        assert (await api.get("/v1/catalogs/movies/items/5"))[0] == 200


class TestRedisDown:
    """Redis is a speed-up: its loss fails no request, and its return puts L2 back in use."""

    async def test_stopped_then_back(self, owned_pg, owned_redis, start):
        settings = fault_settings(owned_pg.url, redis_url=owned_redis.url)
        a = await start(settings)
        await seed(a)
        b = await start(settings)

        owned_redis.stop()
        for api in (a, b):
            for ids in (("1", "2"), ("3",), ("4", "nope")):
                status, answer, headers, took = await timed(api, TRANSFORM, event(*ids), 1000)
                assert status == 200
                assert "X-Degraded" not in headers
                assert took < 1.0
                assert len(answer["e1"]["Recommendations"]["Title"]) == len(ids) - ("nope" in ids)
        assert sample(a.client.app, "enricher_l2_errors_total", operation="get") >= 1

        await owned_redis.start()  # same port, empty
        hits = sample(b.client.app, "enricher_cache_lookups_total", tier="l2", result="hit")
        started = time.monotonic()
        for n in range(100):  # each round a new item: read by A (fills L2), then by B
            item = f"back{n}"
            await a.put(f"/v1/catalogs/movies/items/{item}", {"title": item})
            assert (await a.post(TRANSFORM, event(item)))[0] == 200
            await a.client.app[RESOLVER].settled()
            assert (await b.post(TRANSFORM, event(item)))[1]["e1"]["Recommendations"] == {
                "Title": [item]}
            if sample(b.client.app, "enricher_cache_lookups_total", tier="l2", result="hit") > hits:
                break
            assert time.monotonic() - started < 10, "L2 not used again after Redis came back"
            await asyncio.sleep(0.1)  # paces the poll

    async def test_frozen_redis_costs_no_deadline(self, owned_pg, owned_redis, start):
        api = await start(fault_settings(owned_pg.url, redis_url=owned_redis.url))
        await seed(api)
        owned_redis.process.send_signal(signal.SIGSTOP)
        try:
            for ids in (("5",), ("6", "1")):
                status, answer, headers, took = await timed(api, TRANSFORM, event(*ids), 500)
                assert status == 200
                assert took < 0.5
                assert "X-Degraded" not in headers
                assert len(answer["e1"]["Recommendations"]["Title"]) == len(ids)
        finally:
            owned_redis.process.send_signal(signal.SIGCONT)
