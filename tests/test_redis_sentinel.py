"""L2 behind Redis Sentinel, on servers the test owns: a master, its replica and three sentinels.
A failover under load (`SENTINEL FAILOVER`) fails no request, and L2 hits resume on the new master
within 10 s (issue 16)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from service.runtime.settings import Settings
from service.web.app import create_app
from service.web.app_keys import RESOLVER
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender
from tests.support.metrics_reader import sample
from tests.support.owned_servers import SENTINEL_SERVICE, OwnedRedis, OwnedSentinel

pytestmark = [pytest.mark.timing, pytest.mark.slow, pytest.mark.timeout(90)]

TRANSFORM = "/v1/recommenders/movies/transform"
IDS = [str(i) for i in range(5)]


@pytest.fixture
async def sentinels(tmp_path: Path):
    """(master, replica, three sentinels watching the master), all on 127.0.0.1."""
    master = OwnedRedis(tmp_path / "master")
    replica = OwnedRedis(tmp_path / "replica", replica_of=master)
    watchers = [OwnedSentinel(tmp_path / f"sentinel{n}", master) for n in range(3)]
    started: list[OwnedRedis | OwnedSentinel] = []
    try:
        for server in (master, replica, *watchers):
            await server.start()
            started.append(server)
        for watcher in watchers:
            await watcher.wait_knows_replicas(1)
        yield master, replica, watchers
    finally:
        for server in reversed(started):
            server.stop()


async def keyspace_hits(server: OwnedRedis) -> int:
    client = server.client()
    try:
        return int((await client.info("stats"))["keyspace_hits"])
    finally:
        await client.aclose()


class TestSentinelFailover:
    """L2 follows the master the sentinels name."""

    async def test_failover_under_load(self, sentinels, settings: Settings, aiohttp_client,
                                       make_key):
        _master, replica, watchers = sentinels
        url = ("redis+sentinel://" + ",".join(f"127.0.0.1:{w.port}" for w in watchers)
               + f"/{SENTINEL_SERVICE}/0")
        # L1 off: every request asks L2 (and Postgres for what L2 misses).
        api = Api(await aiohttp_client(create_app(dataclasses.replace(
            settings, redis_url=url, cache_max_entries=0, cache_ttl=3600,
            redis_timeout=0.2, access_log=False,
        ))), await make_key("acme", "admin"))
        await load_catalog(api, "movies", [{"id": i, "title": f"Movie {i}"} for i in IDS])
        await put_recommender(api, "movies", "movies", ("Title", "title"))
        body = {"Endpoints": {"e1": {"RecommendationItems": IDS}}}
        assert (await api.post(TRANSFORM, body))[0] == 200
        await api.client.app[RESOLVER].settled()
        app = api.client.app

        def l2_hits() -> float:
            return sample(app, "enricher_cache_lookups_total", tier="l2", result="hit")

        failures: list[str] = []
        answers = 0
        stop = asyncio.Event()

        async def load() -> None:
            nonlocal answers
            while not stop.is_set():
                status, answer, _ = await api.post(TRANSFORM, body,
                                                   headers={"X-Deadline-Ms": "2000"})
                titles = answer["e1"]["Recommendations"]["Title"] if status == 200 else None
                if titles != [f"Movie {i}" for i in IDS]:
                    failures.append(f"{status} {answer}")
                answers += 1
                await asyncio.sleep(0.005)  # pacing: a steady load, not a flood

        workers = [asyncio.ensure_future(load()) for _ in range(4)]
        try:
            hits_before = l2_hits()
            for _ in range(100):  # up to 10 s: L2 serves the load on the first master
                if l2_hits() > hits_before:
                    break
                await asyncio.sleep(0.1)  # paces the poll
            assert l2_hits() > hits_before
            await watchers[0].failover()
            failed_over = time.monotonic()
            new_master_hits = await keyspace_hits(replica)
            resumed_after = None
            while time.monotonic() - failed_over < 10:
                if (await watchers[1].master_port() == replica.port
                        and await keyspace_hits(replica) > new_master_hits):
                    resumed_after = time.monotonic() - failed_over
                    break
                await asyncio.sleep(0.1)  # paces the poll
            # And the service's own count of L2 hits goes on (an error met while the master
            # moved pauses L2 for a second: wait out that pause, under load).
            hits_after = l2_hits()
            for _ in range(50):  # up to 5 s
                if l2_hits() > hits_after:
                    break
                await asyncio.sleep(0.1)  # paces the poll
        finally:
            stop.set()
            await asyncio.gather(*workers)
        print(f"{answers} answers; L2 hits on the new master {resumed_after} s after the failover")
        assert failures == []
        assert resumed_after is not None, "no L2 hit on the new master within 10 s"
        assert l2_hits() > hits_after


class TestRateLimitsBehindSentinels:
    """The rate counter reaches Redis the way L2 does: a sentinel URL names the master."""

    async def test_a_limit_is_counted_on_the_master(self, sentinels, settings: Settings,
                                                    aiohttp_client, make_key, database_url):
        from tests.test_rate_limits import set_limit

        master, _replica, watchers = sentinels
        url = ("redis+sentinel://" + ",".join(f"127.0.0.1:{w.port}" for w in watchers)
               + f"/{SENTINEL_SERVICE}/0")
        api = Api(await aiohttp_client(create_app(dataclasses.replace(
            settings, redis_url=url, redis_prefix="rl-sentinel", access_log=False,
        ))), await make_key("acme", "admin"))
        await set_limit(database_url, "acme", 5)
        statuses = [(await api.get("/v1/catalogs"))[0] for _ in range(20)]
        assert 200 in statuses and 429 in statuses, statuses
        client = master.client()
        try:
            # Counted in Redis (the master), not in the process: the tenant's bucket is there.
            assert [k async for k in client.scan_iter("rl-sentinel:rl:*")]
        finally:
            await client.aclose()
