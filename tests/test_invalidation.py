"""Writes reach every process within a second through NOTIFY, with TTLs of an hour; a lost
listening connection flushes the cache and listens again."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable

import asyncpg
import orjson
import pytest

from service.runtime.settings import Settings
from service.web.app import create_app
from service.web.app_keys import LISTENER, RESOLVER
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender
from tests.support.metrics_reader import item_queries, sample
from tests.support.tcp_proxy import TcpProxy, proxy_to_database, url_through

pytestmark = pytest.mark.timing

TRANSFORM = "/v1/recommenders/movies/transform"
SEEN_WITHIN = 1.0


def event(*ids: str) -> dict:
    return {"Endpoints": {"e1": {"RecommendationItems": list(ids)}}}


async def seen_within(seconds: float, check: Callable[[], Awaitable[bool]]) -> float:
    """How long until `check` holds; fails the test if it does not within `seconds`."""
    started = time.monotonic()
    while not await check():
        elapsed = time.monotonic() - started
        assert elapsed < seconds, f"not seen within {seconds} s"
        await asyncio.sleep(0.01)  # paces the poll
    return time.monotonic() - started


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """TTLs of an hour: whatever changes here changes because of a notification."""
    return dataclasses.replace(settings, cache_ttl=3600, cache_negative_ttl=3600,
                               auth_cache_seconds=3600)


@pytest.fixture
async def pair(database_url, aiohttp_client, settings, make_key) -> tuple[Api, Api]:
    """Instances A and B of the service on one database, each with its own caches."""
    key = await make_key("acme", "admin")
    a = Api(await aiohttp_client(create_app(settings)), key)
    b = Api(await aiohttp_client(create_app(settings)), key)
    await load_catalog(a, "movies", [{"id": str(i), "title": f"Movie {i}"} for i in range(10)])
    await put_recommender(a, "movies", "movies", ("Title", "title"))
    return a, b


async def title_of(api: Api, item_id: str) -> str | None:
    status, answer, _ = await api.post(TRANSFORM, event(item_id))
    assert status == 200, answer
    return answer["e1"]["Recommendations"]["Title"][0] if answer else None


class TestAcrossInstances:
    """What one instance writes, the other serves within a second."""

    async def test_item_update_through_a_is_served_by_b(self, pair):
        a, b = pair
        assert await title_of(b, "1") == "Movie 1"
        assert (await a.put("/v1/catalogs/movies/items/1", {"title": "Sequel"}))[0] == 200

        async def b_serves_new() -> bool:
            return await title_of(b, "1") == "Sequel"

        print(f"B served the update after {await seen_within(SEEN_WITHIN, b_serves_new):.3f} s")

    async def test_an_item_admitted_to_a_full_l1_is_current_and_invalidated(
            self, database_url, aiohttp_client, settings, make_key, pair):
        a, _ = pair
        key = await make_key("acme", "admin")
        b = Api(await aiohttp_client(create_app(
            dataclasses.replace(settings, cache_max_entries=2))), key)
        local = b.client.app[RESOLVER].local
        assert await title_of(b, "2") == "Movie 2"
        assert await title_of(b, "3") == "Movie 3"  # L1 full now
        assert await title_of(b, "1") == "Movie 1"
        assert local.refused == 1  # read, not kept
        assert (await a.put("/v1/catalogs/movies/items/1", {"title": "Sequel"}))[0] == 200
        # B had no entry to invalidate; its next read of the item is its second: kept, and new.
        assert await title_of(b, "1") == "Sequel"
        assert local.refused == 1  # this time kept
        assert (await a.put("/v1/catalogs/movies/items/1", {"title": "Sequel 2"}))[0] == 200

        async def b_serves_newer() -> bool:
            return await title_of(b, "1") == "Sequel 2"

        await seen_within(SEEN_WITHIN, b_serves_newer)

    async def test_delete_is_seen(self, pair, database_url):
        _a, b = pair
        assert await title_of(b, "2") == "Movie 2"
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("DELETE FROM items WHERE id = '2'")
        finally:
            await conn.close()

        async def b_forgot() -> bool:
            return (await b.post(TRANSFORM, event("2")))[1] == {}

        await seen_within(SEEN_WITHIN, b_forgot)

    async def test_bulk_statement_sends_one_notification(self, pair, database_url):
        _a, b = pair
        await title_of(b, "3")
        before = sample(b.client.app, "enricher_invalidation_notifications_total", kind="items")
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "INSERT INTO items (catalog_id, id, title) SELECT c.id, 'bulk' || g, 'Bulk'"
                " FROM catalogs c, generate_series(1, 600) g WHERE c.name = 'movies'"
            )
            await conn.execute("UPDATE items SET title = title || ' (remastered)'")
        finally:
            await conn.close()

        async def b_serves_new() -> bool:
            return await title_of(b, "3") == "Movie 3 (remastered)"

        await seen_within(SEEN_WITHIN, b_serves_new)
        after = sample(b.client.app, "enricher_invalidation_notifications_total", kind="items")
        assert after - before == 2  # two statements, 1,210 rows

    async def test_revoked_key_is_refused_everywhere(self, pair, database_url, make_key):
        _, b = pair
        key = await make_key("acme", "transform")
        user = Api(b.client, key)
        assert (await user.post(TRANSFORM, event("1")))[0] == 200
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE prefix = $1",
                               key[:11])
        finally:
            await conn.close()

        async def refused() -> bool:
            return (await user.post(TRANSFORM, event("1")))[0] == 401

        await seen_within(SEEN_WITHIN, refused)

    async def test_changed_recommender_is_seen_everywhere(self, pair):
        a, b = pair
        assert await title_of(b, "1") == "Movie 1"
        await put_recommender(a, "movies", "movies", ("Name", "title"))

        async def b_uses_new_definition() -> bool:
            answer = (await b.post(TRANSFORM, event("1")))[1]
            return answer["e1"]["Recommendations"] == {"Name": ["Movie 1"]}

        await seen_within(SEEN_WITHIN, b_uses_new_definition)


class TestListenerLoss:
    """A killed listening connection: the cache is flushed and a new listener takes over."""

    async def test_terminated_listener_flushes_and_relistens(self, pair, database_url):
        a, b = pair
        assert await title_of(b, "1") == "Movie 1"
        assert await title_of(b, "2") == "Movie 2"
        listener = b.client.app[LISTENER]
        conn = await asyncpg.connect(database_url)
        try:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", listener.backend_pid)
        finally:
            await conn.close()
        await listener.wait_connected(2, within=5)

        # Flushed: item 2, unchanged and cached for an hour, is read from Postgres again.
        queries = item_queries(b.client.app)
        assert await title_of(b, "2") == "Movie 2"
        assert item_queries(b.client.app) == queries + 1

        # The new listener hears later writes.
        assert (await a.put("/v1/catalogs/movies/items/1", {"title": "After"}))[0] == 200

        async def b_serves_new() -> bool:
            return await title_of(b, "1") == "After"

        await seen_within(SEEN_WITHIN, b_serves_new)
        assert sample(b.client.app, "enricher_listener_reconnects_total") == 1

    async def test_silent_listener_connection_is_noticed_and_replaced(
        self, listen_proxy: TcpProxy, aiohttp_client, settings, database_url, make_key,
    ):
        """The LISTEN connection goes silent without closing (stalled behind the proxy, as a
        half-open connection is): the ping notices, the caches are flushed, a new connection
        listens, and a later write is seen. Default ping settings."""
        key = await make_key("acme", "admin")
        a = Api(await aiohttp_client(create_app(settings)), key)
        proxied = dataclasses.replace(settings, database_url=url_through(database_url, listen_proxy))
        b = Api(await aiohttp_client(create_app(proxied)), key)
        await load_catalog(a, "movies", [{"id": str(i), "title": f"Movie {i}"} for i in range(10)])
        await put_recommender(a, "movies", "movies", ("Title", "title"))
        assert await title_of(b, "1") == "Movie 1"
        assert await title_of(b, "2") == "Movie 2"
        listener = b.client.app[LISTENER]
        silenced_backend = listener.backend_pid

        assert listen_proxy.stall_listening() == 1
        started = time.monotonic()
        await listener.wait_connected(2, within=10)
        print(f"silent LISTEN connection replaced after {time.monotonic() - started:.2f} s")
        assert listener.backend_pid != silenced_backend

        # Flushed: item 2, unchanged and cached for an hour, is read from Postgres again.
        queries = item_queries(b.client.app)
        assert await title_of(b, "2") == "Movie 2"
        assert item_queries(b.client.app) == queries + 1

        assert (await a.put("/v1/catalogs/movies/items/1", {"title": "Heard"}))[0] == 200

        async def b_serves_new() -> bool:
            return await title_of(b, "1") == "Heard"

        await seen_within(SEEN_WITHIN, b_serves_new)
        assert sample(b.client.app, "enricher_listener_reconnects_total") == 1


@pytest.fixture
async def listen_proxy(database_url):
    """A proxy in front of the test database; set up before the apps, so torn down after them."""
    proxy = await proxy_to_database(database_url)
    yield proxy
    await proxy.stop()


class TestNotificationPayload:
    """One notification per statement, naming the items, or the catalog when they are too many."""

    async def test_payloads(self, database_url, make_key):
        await make_key("acme", "admin")
        conn = await asyncpg.connect(database_url)
        heard: asyncio.Queue[dict] = asyncio.Queue()
        await conn.add_listener("catalog_enricher",
                                lambda *args: heard.put_nowait(orjson.loads(args[-1])))
        try:
            catalog = await conn.fetchval(
                "INSERT INTO catalogs (tenant_id, name) SELECT id, 'c' FROM tenants RETURNING id")
            inserted = dict(await conn.fetch(
                "INSERT INTO items (catalog_id, id, title) VALUES ($1, 'a', 'A'), ($1, 'b', 'B')"
                " RETURNING id, version", catalog))
            await conn.execute("INSERT INTO items (catalog_id, id, title) SELECT $1,"
                               " repeat('x', 200) || g, 't' FROM generate_series(1, 100) g",
                               catalog)
            await conn.execute("UPDATE items SET title = 'none' WHERE id = 'absent'")
            updated = await conn.fetchval(
                "UPDATE items SET title = 'B2' WHERE id = 'b' RETURNING version")
            # An ID changed: the old ID is gone (minus its last version), the new one exists.
            renamed = await conn.fetchval(
                "UPDATE items SET id = 'b3' WHERE id = 'b' RETURNING version")
            await conn.execute("DELETE FROM items WHERE id = 'a'")
            messages = [await asyncio.wait_for(heard.get(), 5) for _ in range(5)]
        finally:
            await conn.close()
        # Each item with its new version (migration 0008); a deletion as minus the old one.
        assert messages[0] == {"items": {str(catalog): inserted}}
        assert messages[1] == {"items": {str(catalog): None}}  # over NOTIFY's 8000 bytes
        assert updated > inserted["b"]
        assert messages[2] == {"items": {str(catalog): {"b": updated}}}  # the empty one: nothing
        assert messages[3] == {"items": {str(catalog): {"b3": renamed, "b": -updated}}}
        assert messages[4] == {"items": {str(catalog): {"a": -inserted["a"]}}}
        assert heard.empty()
