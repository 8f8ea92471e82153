"""Item reads on a read replica (DATABASE_READ_URL), with a replica that never catches up: a copy of
the test's database taken before the changes, so every row it answers after a change is old.

What it shows: reads go to the replica and nothing else does; after a change no process ever
caches the replica's old row (updates, creations, deletions, bulk changes), with or without a shared
L2; past the deadline the old row is served degraded and not kept; a write on a read-only primary is
a 503 and the pool recovers. tests/test_read_replicas.py does the same with a real standby.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import asyncpg
import pytest

from service.runtime.settings import Settings
from service.web.app import create_app
from service.web.app_keys import LISTENER, POOL, READS
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender
from tests.support.databases import create_database, drop_database, with_database
from tests.support.metrics_reader import sample
from tests.support.tcp_proxy import TcpProxy, url_through

pytestmark = pytest.mark.timing

TRANSFORM = "/v1/recommenders/movies/transform"
ITEM = "/v1/catalogs/movies/items/"


def event(*ids: str) -> dict:
    return {"Endpoints": {"e1": {"RecommendationItems": list(ids)}}}


def reads(api: Api, server: str) -> float:
    return sample(api.client.app, "enricher_db_reads_total", server=server)


async def title(api: Api, item_id: str) -> str | None:
    status, body, _ = await api.get(ITEM + item_id)
    assert status in (200, 404), body
    return body["title"] if status == 200 else None


async def within(seconds: float, check: Callable[[], Awaitable[bool]]) -> None:
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < seconds, f"not seen within {seconds} s"
        await asyncio.sleep(0.01)  # paces the poll


@pytest.fixture
async def replica_url(database_url, pg_server_url, aiohttp_client, make_key, settings):
    """The key, and a copy of the database seeded through the API: the replica that never
    replays anything (it reports no lag: it is no standby)."""
    seeding = Api(await aiohttp_client(create_app(settings)), await make_key("acme", "admin"))
    await load_catalog(seeding, "movies", [{"id": str(i), "title": f"Movie {i}"}
                                           for i in range(10)])
    await put_recommender(seeding, "movies", "movies", ("Title", "title"))
    await seeding.client.close()
    source = urlsplit(database_url).path.lstrip("/")
    for attempt in range(50):  # the seeding app's connections may still be closing
        try:
            name = await create_database(pg_server_url, template=source)
            break
        except asyncpg.ObjectInUseError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.1)  # paces the retries
    yield seeding.key, with_database(pg_server_url, name)
    await drop_database(pg_server_url, name)


@pytest.fixture
def start(replica_url, aiohttp_client, settings):
    """Start an instance reading items from the replica; TTLs of an hour."""
    key, url = replica_url

    async def start(base: Settings | None = None, **overrides: object) -> Api:
        chosen = dataclasses.replace(
            base or settings, database_read_url=url, cache_ttl=3600, cache_negative_ttl=3600,
            auth_cache_seconds=3600, **overrides,  # type: ignore[arg-type]
        )
        return Api(await aiohttp_client(create_app(chosen)), key)

    return start


class TestWhereReadsGo:
    """Item reads run on the replica; the listener and everything else on DATABASE_URL."""

    async def test_item_reads_run_on_the_replica(self, start):
        api = await start()
        assert await title(api, "1") == "Movie 1"
        status, body, _ = await api.post("/v1/catalogs/movies/items:batchGet", {"ids": ["2", "x"]})
        assert (status, body["missing"]) == (200, ["x"])
        status, body, _ = await api.get("/v1/catalogs/movies/items?limit=3")
        assert [item["id"] for item in body["items"]] == ["0", "1", "2"]
        status, body, _ = await api.post(TRANSFORM, event("4"))
        assert body["e1"]["Recommendations"]["Title"] == ["Movie 4"]
        assert (reads(api, "replica"), reads(api, "primary")) == (4, 0)
        assert sample(api.client.app, "enricher_replica_in_use") == 1
        assert sample(api.client.app, "enricher_replica_lag_seconds") == 0
        assert (await api.get("/readyz"))[0] == 200

    async def test_the_listener_connects_to_database_url_only(self, start, replica_url,
                                                             database_url):
        api = await start()
        listener = api.client.app[LISTENER]
        conn = await asyncpg.connect(database_url)
        try:
            found = await conn.fetch(
                "SELECT datname, application_name FROM pg_stat_activity WHERE pid = $1",
                listener.backend_pid)
            on_replica = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
                " AND application_name = 'catalog-enricher-listener'",
                urlsplit(replica_url[1]).path.lstrip("/"))
        finally:
            await conn.close()
        assert [tuple(r) for r in found] == [(urlsplit(database_url).path.lstrip("/"),
                                              "catalog-enricher-listener")]
        assert on_replica == 0


@pytest.fixture(params=["l1", "l1+l2"])
def tiers(request, settings, redis_settings_factory) -> Settings:
    if request.param == "l1":
        return settings
    # What these tests show is which rows the tiers keep, not Redis's timeout: on a loaded
    # machine a lookup past the default 50 ms is a miss, and an instance that has heard of no
    # change then reads this replica, which never replays any (a real standby is held until it
    # has: tests/test_read_replicas.py).
    return dataclasses.replace(redis_settings_factory(), redis_timeout=2.0)


@pytest.fixture
def redis_settings_factory(request, settings):
    """`redis_settings`, asked for only when a test needs Redis."""
    return lambda: request.getfixturevalue("redis_settings")


class TestNoStaleRefill:
    """After a change, no instance caches (or serves again) the replica's old row."""

    async def test_an_update(self, start, tiers):
        a, b = await start(tiers), await start(tiers)
        assert await title(a, "1") == await title(b, "1") == "Movie 1"
        assert (await a.put(ITEM + "1", {"title": "Sequel"}))[0] == 200
        # A's own write is noted at once; B hears of it through NOTIFY.
        assert await title(a, "1") == "Sequel"

        async def b_serves_new() -> bool:
            return await title(b, "1") == "Sequel"

        await within(1.0, b_serves_new)
        for _ in range(5):  # and from then on only the new row, from every path
            for api in (a, b):
                assert await title(api, "1") == "Sequel"
                answer = (await api.post(TRANSFORM, event("1")))[1]
                assert answer["e1"]["Recommendations"]["Title"] == ["Sequel"]
        # The replica's old row was read (by A, and by B unless A's answer reached L2 first).
        assert sum(sample(api.client.app, "enricher_replica_rows_behind_total")
                   for api in (a, b)) >= 1
        if tiers.redis_url:
            # A third instance, started after the change, finds the new row in L2.
            c = await start(tiers)
            assert await title(c, "1") == "Sequel"
            assert sample(c.client.app, "enricher_cache_lookups_total", tier="l2",
                          result="hit") == 1

    async def test_a_creation(self, start, tiers):
        a, b = await start(tiers), await start(tiers)
        assert await title(b, "new") is None  # a negative entry for an hour, from the replica
        assert (await a.put(ITEM + "new", {"title": "Fresh"}))[0] == 201

        async def b_serves_it() -> bool:
            return await title(b, "new") == "Fresh"

        await within(1.0, b_serves_it)
        assert await title(b, "new") == "Fresh"

    async def test_a_deletion(self, start, tiers):
        a, b = await start(tiers), await start(tiers)
        assert await title(b, "2") == "Movie 2"
        assert (await a.delete(ITEM + "2"))[0] == 204
        assert await title(a, "2") is None

        async def b_forgets_it() -> bool:
            return await title(b, "2") is None

        await within(1.0, b_forgets_it)
        assert await title(b, "2") is None
        answer = (await b.post(TRANSFORM, event("2", "3")))[1]
        assert answer["e1"]["Recommendations"]["Title"] == ["Movie 3"]

    async def test_a_bulk_change_gates_the_catalog(self, start, database_url):
        a = await start()
        assert await title(a, "1") == "Movie 1"
        conn = await asyncpg.connect(database_url)
        try:  # more than 500 rows: the notification names only the catalog
            await conn.execute(
                "INSERT INTO items (catalog_id, id, title) SELECT c.id, 'bulk' || g, 'Bulk'"
                " FROM catalogs AS c, generate_series(1, 501) AS g WHERE c.name = 'movies'")
            await conn.execute("UPDATE items SET title = 'Renamed' WHERE id = '5'")
        finally:
            await conn.close()

        async def gated() -> bool:
            return await title(a, "bulk7") == "Bulk"

        await within(1.0, gated)
        before = reads(a, "replica")
        assert await title(a, "5") == "Renamed"
        listed = (await a.get("/v1/catalogs/movies/items?limit=2&after=4"))[1]["items"]
        assert [item["title"] for item in listed] == ["Renamed", "Movie 6"]
        assert reads(a, "replica") == before


@pytest.fixture
async def primary_proxy(database_url: str):
    parts = urlsplit(database_url)
    if not parts.hostname:
        pytest.skip("the stalling proxy needs a TCP Postgres")
    proxy = TcpProxy(parts.hostname, parts.port or 5432)
    await proxy.start()
    yield proxy
    proxy.resume()
    await proxy.stop()


class TestPastTheDeadline:
    """The primary too slow to re-read a row the replica has behind: the old row is answered,
    flagged degraded, and never kept."""

    async def test_the_replica_row_is_served_degraded_not_cached(
        self, start, database_url, primary_proxy
    ):
        api = await start(database_url=url_through(database_url, primary_proxy),
                          db_command_timeout=3.0)
        assert (await api.post(TRANSFORM, event("1")))[0] == 200  # key, recommender, item warm
        assert (await api.put(ITEM + "1", {"title": "Sequel"}))[0] == 200
        with primary_proxy.stalled():
            status, answer, headers = await api.post(TRANSFORM, event("1"),
                                                     headers={"X-Deadline-Ms": "300"})
        assert status == 200
        assert answer["e1"]["Recommendations"]["Title"] == ["Movie 1"]
        assert headers["X-Degraded"] == "postgres-timeout"
        assert sample(api.client.app, "enricher_cache_lookups_total", tier="replica",
                      result="stale_served") == 1
        # The primary's answer lands and is kept; the replica's row never was.
        status, answer, headers = await api.post(TRANSFORM, event("1"))
        assert answer["e1"]["Recommendations"]["Title"] == ["Sequel"]
        assert "X-Degraded" not in headers


class TestReadOnlyPrimary:
    """A write meeting a read-only primary (SQLSTATE 25006) is a 503 naming Postgres, and the
    pool is refreshed: once the server takes writes again, so does the service."""

    async def test_503_then_recovers(self, start, database_url):
        api = await start()
        listener = api.client.app[LISTENER]
        database = urlsplit(database_url).path.lstrip("/")
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
            # The pool's connections are replaced (as after a failover): new ones are read-only.
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1"
                " AND application_name = 'catalog-enricher' AND pid <> pg_backend_pid()",
                database)
            statuses = []
            for _ in range(3):
                status, problem, headers = await api.put(ITEM + "1", {"title": "Ro"})
                statuses.append(status)
                if status == 503 and problem["field"] == "postgres":
                    assert headers["Retry-After"] == "1"
                    assert "read-only" in problem["detail"]
                    break
            assert statuses[-1] == 503, statuses
            await conn.execute(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')
        finally:
            await conn.close()

        async def writes_again() -> bool:
            return (await api.put(ITEM + "1", {"title": "Rw"}))[0] == 200

        await within(5.0, writes_again)
        assert await title(api, "1") == "Rw"
        await listener.wait_connected(2, within=5)  # it listened again, on a writable server

    async def test_an_idempotent_write_refused_by_an_old_connection_runs_again(
            self, start, database_url):
        """Pooled connections made while the server was read-only (as to a primary a failover
        has demoted), new ones writable (as to the promoted standby): a PUT refused on an old
        one runs once more on a fresh one and succeeds; a PATCH (not idempotent) is a 503."""
        api = await start()
        pool = api.client.app[POOL]
        database = urlsplit(database_url).path.lstrip("/")
        conn = await asyncpg.connect(database_url)
        # The once-a-second sample would also find a read-only connection and replace them all
        # (the healing of the test above), so that the PATCH could meet a new, writable one.
        # Paused here: this test is about what a request does on the connection it is given.
        async def sample_nothing() -> None:
            return None

        api.client.app[READS].sample = sample_nothing  # type: ignore[method-assign]

        async def fill_pool_with_read_only_connections() -> None:
            await conn.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
            try:
                await pool.expire_connections()
                # New connections, read-only from their start (RESET ALL on release keeps that).
                held = [await pool.acquire() for _ in range(pool.get_max_size())]
                assert all([await c.fetchval("SHOW transaction_read_only") == "on" for c in held])
                for held_conn in held:
                    await pool.release(held_conn)
            finally:
                await conn.execute(
                    f'ALTER DATABASE "{database}" RESET default_transaction_read_only')

        try:
            await fill_pool_with_read_only_connections()
            status, body, _ = await api.put(ITEM + "1", {"title": "Put after failover"})
            assert status == 200, body
            assert await title(api, "1") == "Put after failover"

            await fill_pool_with_read_only_connections()
            status, problem, headers = await api.patch(ITEM + "1", {"title": "Patched"})
            assert (status, problem["field"], headers["Retry-After"]) == (503, "postgres", "1")
            assert await title(api, "1") == "Put after failover"
        finally:
            await conn.close()
