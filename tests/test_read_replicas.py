"""Item reads from a real hot standby the test owns: its own primary (initdb) and a standby made
with `pg_basebackup -R` that applies every commit 1.5 s late (`recovery_min_apply_delay`).

What it shows: reads reach the standby; after a change through the API every instance serves the
new value from the moment it is told of it (the writer at once, the others on their notification,
an instance started meanwhile from its start), never the old one again, with TTLs of an hour,
alone or sharing Redis, and reads the standby again once it has caught up; the lag metric shows
the standby's delay; the listener is on the primary and LISTEN never
reaches the standby; the standby stopped under load fails no request (reads go to the primary) and
is read again once back; a promoted standby and a primary turned read-only do not leave the pool
failing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from service.runtime.settings import Settings
from service.web.app import create_app
from service.web.app_keys import LISTENER, POOL, READS
from tests.conftest import KeyMaker
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender
from tests.support.metrics_reader import sample
from tests.support.owned_servers import (
    OwnedPostgres,
    migrated,
    pg_available,
    primary_and_standby,
    scratch_folder,
    wait_for_postgres,
)

pytestmark = [
    pytest.mark.timing,
    pytest.mark.slow,
    pytest.mark.skipif(not pg_available(), reason="needs the Postgres binaries (initdb, pg_ctl)"),
    pytest.mark.timeout(90),
]

LAG = 1.5
TRANSFORM = "/v1/recommenders/movies/transform"
ITEM = "/v1/catalogs/movies/items/"
ITEM_SCANS = ("SELECT coalesce(idx_scan, 0) + seq_scan FROM pg_stat_user_tables"
              " WHERE relname = 'items'")
READ_POOL = ("SELECT count(*) FROM pg_stat_activity"
             " WHERE application_name = 'catalog-enricher-read'")
COMMITS = "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'"
RECEIVED_TO = "SELECT pg_last_wal_receive_lsn() >= $1::text::pg_lsn"
REPLAYED_TO = "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn"


def event(*ids: str) -> dict:
    return {"Endpoints": {"e1": {"RecommendationItems": list(ids)}}}


async def until(seconds: float, check: Callable[[], Awaitable[bool]]) -> float:
    """Seconds until `check` holds (the test fails past `seconds`)."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < seconds, f"not within {seconds} s"
        await asyncio.sleep(0.05)  # paces the poll
    return time.monotonic() - started


@pytest.fixture(scope="module")
def migrated_cluster() -> Iterator[OwnedPostgres]:
    """A stopped, migrated cluster that each test copies (initdb once per module)."""
    with scratch_folder("ce-pg-template-") as folder:
        yield from migrated(OwnedPostgres(folder / "cluster"))


@pytest.fixture
def replicated(migrated_cluster) -> Iterator[tuple[OwnedPostgres, OwnedPostgres]]:
    """A running primary and its hot standby, LAG seconds behind."""
    with primary_and_standby(migrated_cluster, apply_delay_ms=int(LAG * 1000)) as pair:
        yield pair


def replica_settings(primary_url: str, standby_url: str, **extra: object) -> Settings:
    return Settings(
        database_url=primary_url, database_read_url=standby_url, db_pool_min=1, db_pool_max=4,
        db_connect_timeout=2.0, db_command_timeout=3.0, db_acquire_timeout=2.0,
        cache_ttl=3600, cache_negative_ttl=3600, auth_cache_seconds=3600,
        default_deadline_ms=3000, access_log=False, **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def start(replicated, aiohttp_client):
    """Start an instance; asks for the servers first, so they outlive every instance."""
    keys: list[str] = []

    async def start(settings: Settings) -> Api:
        if not keys:
            keys.append(await KeyMaker(settings.database_url)("acme", "admin"))
        return Api(await aiohttp_client(create_app(settings)), keys[0])

    return start


async def seed(api: Api, standby: OwnedPostgres, *others: Api) -> None:
    """Load the catalog through `api`; until the standby has it and every instance reads there
    (its lag sampled once a second, and known once it has replayed a transaction)."""
    await load_catalog(api, "movies", [{"id": str(i), "title": f"Movie {i}"} for i in range(10)])
    await put_recommender(api, "movies", "movies", ("Title", "title"))

    async def replayed() -> bool:
        return await standby.fetchval("SELECT count(*) FROM items") == 10 and all(
            sample(each.client.app, "enricher_replica_in_use") == 1 for each in (api, *others))

    await until(10, replayed)


async def standby_has_keys(standby: OwnedPostgres, count: int) -> bool:
    return await standby.fetchval("SELECT count(*) FROM api_keys") >= count


async def title_of(api: Api, item_id: str) -> str:
    status, body, _ = await api.get(ITEM + item_id)
    assert status == 200, body
    return body["title"]


class TestLaggingStandby:
    """A standby 1.5 s behind: reads go there, and no cache ever keeps its old rows."""

    @pytest.mark.parametrize("shared_redis", [False, True], ids=["l1", "l1+l2"])
    async def test_new_value_once_told_then_never_the_old_one(
        self, replicated, start, owned_redis, shared_redis
    ):
        primary, standby = replicated
        extra = {"redis_url": owned_redis.url} if shared_redis else {}
        a = await start(replica_settings(primary.url, standby.url, **extra))
        b = await start(replica_settings(primary.url, standby.url, **extra))
        await seed(a, standby, b)

        # Item reads reach the standby: its transactions and its scans of `items` rise.
        commits, scans = await standby.fetchval(COMMITS), await standby.fetchval(ITEM_SCANS)
        for api in (a, b):
            for item_id in ("1", "2", "3"):
                assert await title_of(api, item_id) == f"Movie {item_id}"
        assert sample(a.client.app, "enricher_db_reads_total", server="replica") == 3
        # B read the standby too, unless A's rows reached it through L2 first.
        assert (sample(b.client.app, "enricher_db_reads_total", server="replica")
                + sample(b.client.app, "enricher_cache_lookups_total", tier="l2", result="hit")
                ) == 3
        assert await standby.fetchval(READ_POOL) >= 2

        async def counted() -> bool:  # backends report their statistics within a second or so
            return (await standby.fetchval(COMMITS) > commits  # type: ignore[operator]
                    and await standby.fetchval(ITEM_SCANS) > scans)  # type: ignore[operator]

        await until(12, counted)

        # The change, through A's API: A knows of it at once, B once Postgres has told it (its
        # notification), C (started after it, never told) by holding its reads off the standby
        # until the standby has replayed what the primary had when C began to listen. From then
        # on each serves the new row, though the standby still holds the old one: every read
        # below, until the standby has it and the instances read there again.
        told = sample(b.client.app, "enricher_invalidation_notifications_total", kind="items")

        async def b_was_told() -> bool:
            return sample(b.client.app, "enricher_invalidation_notifications_total",
                          kind="items") > told

        status, _, _ = await a.put(ITEM + "1", {"title": "Sequel"})
        assert status == 200
        changed_at = await primary.fetchval("SELECT pg_current_wal_lsn()::text")
        await until(30, b_was_told)
        c = await start(replica_settings(primary.url, standby.url, **extra))

        async def serve_the_new_row_until_the_standby_has_it() -> bool:
            for api in (a, b, c):
                assert await title_of(api, "1") == "Sequel"
                answer = (await api.post(TRANSFORM, event("1")))[1]
                assert answer["e1"]["Recommendations"]["Title"] == ["Sequel"]
            return await standby.fetchval(REPLAYED_TO, changed_at)

        await until(60, serve_the_new_row_until_the_standby_has_it)
        assert await standby.fetchval("SELECT title FROM items WHERE id = '1'") == "Sequel"

        # Past the lag, reads go to the standby again (C's too, once it sees the standby has
        # replayed what it was not told of), and find it current.
        async def all_use_the_standby() -> bool:
            return all(sample(api.client.app, "enricher_replica_in_use") == 1 for api in (a, b, c))

        await until(30, all_use_the_standby)
        for api in (a, b, c):
            before = replica_reads(api)
            assert await title_of(api, "4") == "Movie 4"  # not cached yet anywhere but L2
            assert await title_of(api, "1") == "Sequel"
            assert replica_reads(api) > before or shared_redis

        # The listener is on the primary; the standby never saw a LISTEN (it would have failed
        # there, and been logged).
        for api in (a, b, c):
            pid = api.client.app[LISTENER].backend_pid
            assert await primary.fetchval(
                "SELECT application_name FROM pg_stat_activity WHERE pid = $1", pid
            ) == "catalog-enricher-listener"
        assert await standby.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'catalog-enricher-listener'") == 0
        assert "LISTEN" not in standby.log_text()

    async def test_the_lag_metric_shows_the_delay(self, replicated, start):
        """Sampled while the standby has received a change and not yet replayed it, the lag is
        at least the time since that change (its last replayed commit is older)."""
        primary, standby = replicated
        api = await start(replica_settings(primary.url, standby.url))
        await seed(api, standby)
        reads = api.client.app[READS]
        for attempt in range(1, 6):
            status, _, _ = await api.put(ITEM + "1", {"title": f"Change {attempt}"})
            assert status == 200
            changed = time.monotonic()
            lsn = await primary.fetchval("SELECT pg_current_wal_lsn()::text")
            await until(30, lambda: standby.fetchval(RECEIVED_TO, lsn))  # noqa: B023
            since_change = time.monotonic() - changed
            await reads.sample()
            lag = sample(api.client.app, "enricher_replica_lag_seconds")
            # Taken while behind only if the change is still not replayed: else, this machine
            # kept the test from running for the whole delay; the next change is sampled.
            if not await standby.fetchval(REPLAYED_TO, lsn):
                break
        else:
            pytest.fail("no sample fell within the standby's delay in 5 attempts")
        print(f"lag sampled {lag:.3f} s, {since_change:.3f} s after the change")
        assert lag >= since_change > 0


def replica_reads(api: Api) -> float:
    return sample(api.client.app, "enricher_db_reads_total", server="replica")


class LoadResult:
    def __init__(self) -> None:
        self.answers = 0
        self.failures: list[str] = []


async def batch_get_load(api: Api, stop: asyncio.Event, result: LoadResult) -> None:
    """batchGet in a loop until `stop`: every answer must be whole (200, every item found)."""
    ids = [str(i) for i in range(10)]
    while not stop.is_set():
        status, body, headers = await api.post("/v1/catalogs/movies/items:batchGet",
                                               {"ids": ids}, headers={"X-Deadline-Ms": "2000"})
        if status != 200 or body["missing"] or "X-Degraded" in headers:
            result.failures.append(f"{status} {body} {headers.get('X-Degraded')}")
        result.answers += 1


class TestStandbyDown:
    """The standby stopped under load fails no request; started again, it is read again."""

    async def test_stopped_then_started(self, replicated, start):
        primary, standby = replicated
        # L1 off: every request reads Postgres.
        api = await start(replica_settings(primary.url, standby.url, cache_max_entries=0))
        await seed(api, standby)
        app = api.client.app

        def reads(server: str) -> float:
            return sample(app, "enricher_db_reads_total", server=server)

        async def grows(server: str, by: float = 20) -> None:
            start_at = reads(server)

            async def grown() -> bool:
                return reads(server) >= start_at + by

            await until(10, grown)

        stop, result = asyncio.Event(), LoadResult()
        workers = [asyncio.ensure_future(batch_get_load(api, stop, result)) for _ in range(6)]
        try:
            await grows("replica")
            await asyncio.to_thread(standby.stop, "fast")
            on_primary = reads("primary")
            await grows("primary")
            assert sample(app, "enricher_replica_in_use") == 0
            assert (await api.get("/readyz"))[0] == 200  # a missing replica is no concern of it
            down_replica_reads = reads("replica")
            await asyncio.to_thread(standby.start)
            await wait_for_postgres(standby.url)
            await grows("replica")
        finally:
            stop.set()
            await asyncio.gather(*workers)
        print(f"{result.answers} answers; {reads('primary') - on_primary:.0f} reads on the primary")
        assert result.failures == []
        assert down_replica_reads >= 1
        assert sample(app, "enricher_replica_in_use") == 1


class TestFailover:
    """The standby promoted and the old primary read-only: writes find the new primary, reads
    never fail, and the listener follows."""

    async def test_promoted_standby_and_read_only_primary(self, replicated, start):
        primary, standby = replicated
        # Both servers in DATABASE_URL: the writable one is picked (libpq's target_session_attrs).
        both = (f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}"
                "/postgres?target_session_attrs=read-write")
        api = await start(replica_settings(both, standby.url))
        await seed(api, standby)
        listener = api.client.app[LISTENER]

        stop, result = asyncio.Event(), LoadResult()
        readers = [asyncio.ensure_future(batch_get_load(api, stop, result)) for _ in range(3)]
        try:
            await primary.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            await primary.execute("SELECT pg_reload_conf()")
            await asyncio.to_thread(standby.promote)
            refused: list[int] = []

            async def writes_again() -> bool:
                status, problem, _ = await api.put(ITEM + "1", {"title": "After failover"})
                if status != 200:
                    assert status == 503, problem  # a problem naming Postgres, never a 500
                    refused.append(status)
                return status == 200

            took = await until(15, writes_again)
            for n in range(10):  # and it stays so: the pool is not left failing
                status, body, _ = await api.put(ITEM + "2", {"title": f"Write {n}"})
                assert status == 200, body
        finally:
            stop.set()
            await asyncio.gather(*readers)
        print(f"writes back after {took:.2f} s ({len(refused)} refused meanwhile)")
        assert result.failures == []
        assert await standby.fetchval("SELECT title FROM items WHERE id = '2'") == "Write 9"
        # The listener left the read-only server for the new primary, and hears its writes.
        await listener.wait_connected(2, within=10)
        assert await standby.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'catalog-enricher-listener'") == 1

        async def current() -> bool:
            return await title_of(api, "2") == "Write 9"

        await until(2, current)

    async def test_key_lookup_waits_for_the_promotion(self, replicated, start):
        """In the gap between the old primary turning read-only and the standby's promotion no
        server matches target_session_attrs=read-write: a request whose key and recommender are
        not cached yet needs a new connection then, and gets its answer once the standby is
        promoted, not a 503."""
        primary, standby = replicated
        both = (f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}"
                "/postgres?target_session_attrs=read-write")
        api = await start(replica_settings(both, standby.url))
        await seed(api, standby)
        fresh = Api(api.client, await KeyMaker(primary.url)("acme", "transform"))
        await until(10, lambda: standby_has_keys(standby, 2))

        await primary.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        await primary.execute("SELECT pg_reload_conf()")
        await api.client.app[POOL].expire_connections()  # what a refused write does
        answer = asyncio.ensure_future(fresh.post(TRANSFORM, event("1", "2")))
        # An absence, so a look of bounded length: no answer while no server is writable.
        await asyncio.sleep(0.5)
        assert not answer.done(), answer.result()  # waiting for a writable server
        await asyncio.to_thread(standby.promote)
        status, body, _ = await answer
        assert status == 200, body
        assert body["e1"]["Recommendations"]["Title"] == ["Movie 1", "Movie 2"]
