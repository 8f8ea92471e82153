"""Concurrent misses share database work: one query per ID in flight, one ANY query per burst.

Statements are counted on the wire, by a TCP proxy between the app and Postgres.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from service.runtime.settings import Settings
from service.web.app import create_app
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender
from tests.support.tcp_proxy import TcpProxy, url_through

pytestmark = pytest.mark.timing

TRANSFORM = "/v1/recommenders/movies/transform"
REQUESTS = 50


@pytest.fixture
async def counted(aiohttp_client, database_url, proxy, make_key, settings: Settings) -> Api:
    # Loop slices off: a slice is wall-clock time, so on a busy machine fewer of a burst's
    # requests fit in one and the burst's misses spread over more loop turns (more batches).
    # What is counted here is how misses that reach the batcher together are coalesced.
    proxied = dataclasses.replace(settings, database_url=url_through(database_url, proxy),
                                  db_pool_max=10, loop_slice_ms=0)
    api = Api(await aiohttp_client(create_app(proxied)), await make_key("acme", "admin"))
    await load_catalog(api, "movies", [{"id": str(i), "title": f"Movie {i}"}
                                       for i in range(REQUESTS * 5)])
    await put_recommender(api, "movies", "movies", ("Title", "title"))
    # Warm the key and recommender caches: from here on, only item queries reach Postgres.
    assert (await api.post(TRANSFORM, {"Endpoints": {"w": {"RecommendationItems": ["w"]}}}))[0] \
        == 200
    return api


async def burst(api: Api, events: list[dict]) -> list[tuple[int, dict]]:
    """Send every event at the same moment (released together by a barrier)."""
    barrier = asyncio.Barrier(len(events))

    async def send(event: dict) -> tuple[int, dict]:
        await barrier.wait()
        status, answer, _ = await api.post(TRANSFORM, event)
        return status, answer

    return await asyncio.gather(*(send(e) for e in events))


class TestCoalescing:
    """Requests that miss together cost one query, not one each."""

    async def test_same_cold_ids_cost_one_query(self, counted: Api, proxy: TcpProxy):
        ids = ["1", "2", "3", "4", "nope"]
        event = {"Endpoints": {"e": {"RecommendationItems": ids}}}
        before = proxy.statements
        answers = await burst(counted, [event] * REQUESTS)
        queries = proxy.statements - before
        print(f"{REQUESTS} concurrent transforms of the same cold IDs: {queries} query")
        assert all(status == 200 for status, _ in answers)
        assert {tuple(a["e"]["Recommendations"]["Title"]) for _, a in answers} == {
            ("Movie 1", "Movie 2", "Movie 3", "Movie 4")}
        assert queries == 1

    async def test_disjoint_cold_ids_cost_far_fewer_queries(self, counted: Api, proxy: TcpProxy):
        events = [{"Endpoints": {"e": {"RecommendationItems": [str(n * 5 + k) for k in range(5)]}}}
                  for n in range(REQUESTS)]
        before = proxy.statements
        answers = await burst(counted, events)
        queries = proxy.statements - before
        print(f"{REQUESTS} concurrent transforms of disjoint cold IDs: {queries} queries")
        for n, (status, answer) in enumerate(answers):
            assert status == 200
            assert answer["e"]["Recommendations"]["Title"] == [
                f"Movie {n * 5 + k}" for k in range(5)]
        assert queries <= REQUESTS // 5

    async def test_a_lone_transform_still_costs_one_statement(self, counted: Api, proxy: TcpProxy):
        before = proxy.statements
        event = {"Endpoints": {f"e{n}": {"RecommendationItems": [str(n), str(n + 100), "x"]}
                               for n in range(100)}}
        status, answer, _ = await counted.post(TRANSFORM, event)
        assert status == 200
        assert len(answer) == 100
        assert proxy.statements - before == 1
