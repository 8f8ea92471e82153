"""The primary stopped and its standby promoted under load: every read that needs Postgres waits
for the promoted standby and is answered from it, none a 503 or degraded, none waiting much past
the promotion (about a second in production; the stop and the promotion are timed here, as a
loaded machine stretches them).

A real primary and streaming standby the test owns, each reached through a TCP proxy, as behind a
load balancer or a cloud endpoint, and named together in DATABASE_URL with
`target_session_attrs=read-write` ([failover](../docs/production.md)). When the primary stops, its
proxy still accepts connections and closes them at once, and the primary answers "shutting down"
for a moment before it goes; asyncpg stops at such a host rather than going on to the next one
as libpq does, so the pool's new connections never reached the promoted standby and every read
that needed one failed, its one retry too, until the dead address stopped answering. Without a
proxy, the window between the stop and the promotion failed the same way (the refused host's error
hid the standby's "not writable yet", which the pool waits on); and a read whose connection died
under it spent its one retry on the next pooled connection, as dead. Each render here is of items
in no cache, so it needs Postgres: a degraded answer counts as a failure.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator

import orjson
import pytest

from service.runtime.settings import Settings
from service.web.app import create_app
from tests.conftest import KeyMaker
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender
from tests.support.owned_servers import (
    OwnedPostgres,
    migrated,
    pg_available,
    primary_and_standby,
    scratch_folder,
)
from tests.support.tcp_proxy import TcpProxy

pytestmark = [
    pytest.mark.timing,
    pytest.mark.slow,
    pytest.mark.skipif(not pg_available(), reason="needs the Postgres binaries (initdb, pg_ctl)"),
    pytest.mark.timeout(90),
]

ITEMS = 3000
CONTENT = "/v1/recommenders/movies/content?ids="
READERS = 6
# A budget past any failover here: what is checked is that reads wait for the new primary, not
# how long a loaded machine takes to stop one server and promote the other (timed apart).
BUDGET = {"X-Deadline-Ms": "8000"}
MARGIN = 1.0  # seconds a read may wait past the promotion (the pool's retries are 0.1 s apart)


@pytest.fixture(scope="module")
def migrated_cluster() -> Iterator[OwnedPostgres]:
    with scratch_folder("ce-pg-template-") as folder:
        yield from migrated(OwnedPostgres(folder / "cluster"))


@pytest.fixture
def replicated(migrated_cluster) -> Iterator[tuple[OwnedPostgres, OwnedPostgres]]:
    """A running primary and its hot standby."""
    with primary_and_standby(migrated_cluster) as pair:
        yield pair


@pytest.fixture
async def proxies(replicated) -> Iterator[tuple[TcpProxy, TcpProxy]]:
    primary, standby = replicated
    to_primary = await TcpProxy("127.0.0.1", primary.port).start()
    to_standby = await TcpProxy("127.0.0.1", standby.port).start()
    yield to_primary, to_standby
    await to_primary.stop()
    await to_standby.stop()


async def reads_through_failover(api: Api, primary: OwnedPostgres,
                                 standby: OwnedPostgres) -> tuple[list, float, float, int]:
    """Braze's content GETs of items never read before, from READERS loops while the primary is
    stopped and the standby promoted, until a second after; (failures, the slowest answer, how
    long the stop and the promotion took, answers)."""
    ids = itertools.count()
    failures: list[tuple[float, int, object, object]] = []
    slowest = 0.0
    answers = 0
    stop = asyncio.Event()
    started = time.monotonic()

    async def reader() -> None:
        nonlocal slowest, answers
        while not stop.is_set():
            sent = time.monotonic()
            pair = f"{next(ids) % ITEMS},{next(ids) % ITEMS}"
            status, body, headers = await api.get(CONTENT + pair, headers=BUDGET)
            slowest = max(slowest, time.monotonic() - sent)
            answers += 1
            # A degraded answer would hide the failure: these items are in no cache.
            if status != 200 or "X-Degraded" in headers:
                failures.append((round(sent - started, 3), status, headers.get("X-Degraded"),
                                 body))

    readers = [asyncio.ensure_future(reader()) for _ in range(READERS)]
    try:
        await asyncio.sleep(0.3)
        failing_over = time.monotonic()
        await asyncio.to_thread(primary.stop, "fast")
        await asyncio.to_thread(standby.promote)
        failover = time.monotonic() - failing_over
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*readers)
    return failures, slowest, failover, answers


def settings_for(url: str) -> Settings:
    return Settings(database_url=url, db_pool_min=2, db_pool_max=6, db_connect_timeout=2.0,
                    db_command_timeout=5.0, db_acquire_timeout=3.0, default_deadline_ms=3000,
                    cache_ttl=3600, cache_negative_ttl=3600, auth_cache_seconds=3600,
                    access_log=False)


async def start(aiohttp_client, replicated, url: str) -> Api:
    primary, _ = replicated
    api = Api(await aiohttp_client(create_app(settings_for(url))),
              await KeyMaker(primary.url)("acme", "admin"))
    await load_catalog(api, "movies", [])
    await put_recommender(api, "movies", "movies", ("Title", "title"))
    ndjson = b"".join(orjson.dumps({"id": str(n), "title": f"Movie {n}"}) + b"\n"
                      for n in range(ITEMS))
    status, body, _ = await api.call("POST", "/v1/catalogs/movies/items:import", raw=ndjson,
                                     headers={"Content-Type": "application/x-ndjson"})
    assert status == 200, body
    return api


@pytest.mark.parametrize("through", ["proxies", "direct"])
async def test_no_read_fails_when_the_primary_stops_and_the_standby_is_promoted(
    aiohttp_client, replicated, proxies, through,
):
    primary, standby = replicated
    if through == "proxies":
        hosts = ",".join(f"127.0.0.1:{proxy.port}" for proxy in proxies)
    else:
        hosts = f"127.0.0.1:{primary.port},127.0.0.1:{standby.port}"
    url = f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write&sslmode=disable"
    api = await start(aiohttp_client, replicated, url)
    failures, slowest, failover, answers = await reads_through_failover(api, primary, standby)
    print(f"{answers} reads, the slowest {slowest:.3f} s, {len(failures)} failed; the stop and "
          f"the promotion took {failover:.3f} s")
    assert failures == [], failures[:3]
    assert slowest < failover + MARGIN


def test_each_host_of_a_multi_host_url_alone():
    from service.storage.db import single_host_dsns

    assert single_host_dsns("postgresql://u:p@h1:5432,h2:5433/db?target_session_attrs=read-write"
                            ) == ["postgresql://u:p@h1:5432/db?target_session_attrs=read-write",
                                  "postgresql://u:p@h2:5433/db?target_session_attrs=read-write"]
    assert single_host_dsns("postgresql://h1,[::1]:6000/db") == [
        "postgresql://h1/db", "postgresql://[::1]:6000/db"]
    assert single_host_dsns("postgresql://u@h1:5432/db") == []
    assert single_host_dsns("host=h1 dbname=db") == []
    assert single_host_dsns(None) == []
