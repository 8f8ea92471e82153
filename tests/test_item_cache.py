"""The two cache tiers through the real app: L1 hits, L2 hits across instances, negative entries,
TTLs, and the L1 bound, on the real Postgres and Redis."""

from __future__ import annotations

import dataclasses

import pytest

from service.runtime.settings import Settings
from service.web.app import create_app
from service.web.app_keys import RESOLVER
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender
from tests.support.imports import NDJSON, ndjson
from tests.support.metrics_reader import item_queries, sample
from tests.support.redis_keys import key_ttl

TRANSFORM = "/v1/recommenders/movies/transform"


def event(*ids: str) -> dict:
    return {"Endpoints": {"e1": {"RecommendationItems": list(ids)}}}


@pytest.fixture
def start(database_url, aiohttp_client):
    """Starts an app instance; asks for the database first, so it outlives every instance."""

    async def start(settings: Settings, key: str) -> Api:
        return Api(await aiohttp_client(create_app(settings)), key)

    return start


async def seed(api: Api, count: int = 10) -> None:
    await load_catalog(api, "movies", [{"id": str(i), "title": f"Movie {i}"}
                                       for i in range(count)])
    await put_recommender(api, "movies", "movies", ("Title", "title"))


def titles(answer: dict) -> list[str]:
    return answer["e1"]["Recommendations"]["Title"]


class TestL1:
    """A process answers what it has seen from memory, known-absent IDs included."""

    async def test_second_transform_is_an_l1_hit(self, start, settings, make_key):
        api = await start(settings, await make_key("acme", "admin"))
        await seed(api)
        app = api.client.app
        status, first, _ = await api.post(TRANSFORM, event("1", "2"))
        assert status == 200
        assert titles(first) == ["Movie 1", "Movie 2"]
        queries = item_queries(app)
        hits = sample(app, "enricher_cache_lookups_total", tier="l1", result="hit")
        status, second, _ = await api.post(TRANSFORM, event("2", "1"))
        assert status == 200
        assert titles(second) == ["Movie 2", "Movie 1"]
        assert item_queries(app) == queries
        assert sample(app, "enricher_cache_lookups_total", tier="l1", result="hit") == hits + 2

    async def test_unknown_ids_are_cached_as_absent(self, start, settings, make_key):
        api = await start(settings, await make_key("acme", "admin"))
        await seed(api)
        app = api.client.app
        assert (await api.post(TRANSFORM, event("1", "nope")))[0] == 200
        queries = item_queries(app)
        status, answer, _ = await api.post(TRANSFORM, event("nope", "1"))
        assert status == 200
        assert titles(answer) == ["Movie 1"]
        assert item_queries(app) == queries
        assert sample(app, "enricher_cache_lookups_total", tier="l1",
                      result="negative_hit") == 1

    async def test_item_lookup_goes_through_the_cache(self, start, settings, make_key):
        api = await start(settings, await make_key("acme", "admin"))
        await seed(api)
        assert (await api.post(TRANSFORM, event("3")))[0] == 200
        queries = item_queries(api.client.app)
        status, item, _ = await api.get("/v1/catalogs/movies/items/3")
        assert status == 200
        assert item["title"] == "Movie 3"
        assert item_queries(api.client.app) == queries

    async def test_a_write_is_read_back_at_once(self, start, settings, make_key):
        api = await start(settings, await make_key("acme", "admin"))
        await seed(api)
        assert titles((await api.post(TRANSFORM, event("4")))[1]) == ["Movie 4"]
        assert (await api.put("/v1/catalogs/movies/items/4", {"title": "Renamed"}))[0] == 200
        assert titles((await api.post(TRANSFORM, event("4")))[1]) == ["Renamed"]
        assert (await api.get("/v1/catalogs/movies/items/4"))[1]["title"] == "Renamed"

    async def test_a_batch_bigger_than_one_part_is_kept_whole(self, start, settings, make_key):
        """A cold batch of 2,500 IDs is kept in L1 in parts (the loop gets turns between them):
        every ID is answered, and a second event of the same IDs needs no query at all."""
        api = await start(settings, await make_key("acme", "admin"))
        await seed(api, 2_400)
        app = api.client.app
        ids = [str(i) for i in range(2_500)]  # 100 of them unknown: kept as absent
        many = {"Endpoints": {f"e{n}": {"RecommendationItems": ids[n * 50:(n + 1) * 50]}
                              for n in range(50)}}
        status, first, _ = await api.post(TRANSFORM, many)
        assert status == 200
        assert first["e3"]["Recommendations"]["Title"][0] == "Movie 150"
        queries = item_queries(app)
        status, second, _ = await api.post(TRANSFORM, many)
        assert status == 200 and second == first
        assert item_queries(app) == queries

    async def test_bound_is_never_exceeded(self, start, settings, make_key):
        bounded = dataclasses.replace(settings, cache_max_entries=50)
        api = await start(bounded, await make_key("acme", "admin"))
        await seed(api, 0)
        await load_catalog(api, "movies", [{"id": f"m{i}", "title": "x"} for i in range(60)])
        resolver = api.client.app[RESOLVER]
        for batch in range(4):
            ids = [f"m{i}" for i in range(batch * 15, batch * 15 + 40)] + [f"gone{batch}"]
            many = {"Endpoints": {f"e{n}": {"RecommendationItems": ids[n * 5:n * 5 + 5]}
                                  for n in range(9)}}
            assert (await api.post(TRANSFORM, many))[0] == 200
            assert len(resolver.local) <= 50
        assert sample(api.client.app, "enricher_l1_entries") == 50


class TestL1Bytes:
    """Through the app: transforms for many recommenders x locales over the same items keep L1's
    accounted bytes (the gauge enricher_cache_bytes on /metrics) within ENRICHER_CACHE_MAX_BYTES,
    rows kept on the entries included, and still answer right."""

    RECOMMENDERS = 20
    LOCALES = tuple(f"{language}_{country}" for language in ("en", "de", "fr", "es", "it", "pt")
                    for country in ("US", "GB", "DE", "FR", "BR"))
    BOUND = 256 * 1024

    async def test_many_recommenders_and_locales_stay_within_the_bytes(
        self, start, settings, make_key,
    ):
        bounded = dataclasses.replace(settings, cache_max_entries=100_000,
                                      cache_max_bytes=self.BOUND)
        api = await start(bounded, await make_key("acme", "admin"))
        items = [{"id": f"m{i}", "title": f"Film numéro {i}", "genre": "Drame",
                  "price": {"amount": "19.99", "currency": "EUR"},
                  "image_url": f"https://images.example.com/catalog/{i:06d}/large.jpg?w=640"}
                 for i in range(120)]
        assert (await api.put("/v1/catalogs/movies", {}))[0] in (200, 201)
        status, answer, _ = await api.call("POST", "/v1/catalogs/movies/items:import",
                                           raw=ndjson(items), headers={"Content-Type": NDJSON})
        assert status == 200, answer
        for r in range(self.RECOMMENDERS):
            await put_recommender(api, f"r{r}", "movies", ("Title", "title"),
                                  ("Image", "image_url"), ("Price", "price"))
        app = api.client.app
        highest = 0.0
        for r in range(self.RECOMMENDERS):
            for n, locale in enumerate(self.LOCALES):
                ids = [f"m{(n * 7 + k) % 120}" for k in range(40)]
                body = {"Endpoints": {f"e{e}": {"RecommendationItems": ids[e * 4:e * 4 + 4],
                                                "Demographic": {"Locale": locale}}
                                      for e in range(10)}}
                status, answer, _ = await api.post(f"/v1/recommenders/r{r}/transform", body)
                assert status == 200, answer
                assert answer["e3"]["Recommendations"]["Title"] == [
                    f"Film numéro {(n * 7 + k) % 120}" for k in range(12, 16)]
                highest = max(highest, sample(app, "enricher_cache_bytes"))
        local = app[RESOLVER].local
        assert highest <= self.BOUND
        assert self.BOUND / 2 < local.accounted_bytes <= self.BOUND
        assert len(local) < 120  # the bytes bound evicted entries the entry bound would keep
        async with api.client.get("/metrics") as response:
            text = await response.text()
        line = next(x for x in text.splitlines() if x.startswith("enricher_cache_bytes "))
        assert float(line.split()[1]) == local.accounted_bytes


class TestL2:
    """Redis is shared: what one instance read from Postgres, another reads from Redis."""

    async def test_second_instance_hits_l2(self, start, redis_settings, make_key):
        key = await make_key("acme", "admin")
        first = await start(redis_settings, key)
        await seed(first)
        assert titles((await first.post(TRANSFORM, event("1", "2", "nope")))[1]) == [
            "Movie 1", "Movie 2"]
        await first.client.app[RESOLVER].settled()

        second = await start(redis_settings, key)
        app = second.client.app
        status, answer, _ = await second.post(TRANSFORM, event("2", "nope", "1"))
        assert status == 200
        assert titles(answer) == ["Movie 2", "Movie 1"]
        assert item_queries(app) == 0
        assert sample(app, "enricher_cache_lookups_total", tier="l2", result="hit") == 2
        assert sample(app, "enricher_cache_lookups_total", tier="l2", result="negative_hit") == 1
        # Now in the second instance's L1 as well: no Redis round trip either.
        await second.post(TRANSFORM, event("1"))
        assert sample(app, "enricher_cache_lookups_total", tier="l1", result="hit") == 1

    async def test_entries_carry_their_ttls(self, start, redis_settings, make_key):
        settings = dataclasses.replace(redis_settings, cache_ttl=120, cache_negative_ttl=7)
        api = await start(settings, await make_key("acme", "admin"))
        await seed(api)
        await api.post(TRANSFORM, event("1", "nope"))
        await api.client.app[RESOLVER].settled()
        catalog_id = await catalog_row_id(api)
        prefix = settings.redis_prefix
        found = await key_ttl(settings.redis_url, f"{prefix}:v:{catalog_id}:1")
        absent = await key_ttl(settings.redis_url, f"{prefix}:v:{catalog_id}:nope")
        assert 110_000 < found <= 120_000
        assert 0 < absent <= 7_000

    async def test_a_write_evicts_l2_for_every_instance(
        self, start, redis_settings, make_key
    ):
        key = await make_key("acme", "admin")
        first = await start(redis_settings, key)
        await seed(first)
        await first.post(TRANSFORM, event("5"))
        await first.client.app[RESOLVER].settled()
        assert (await first.put("/v1/catalogs/movies/items/5", {"title": "Fresh"}))[0] == 200
        second = await start(redis_settings, key)
        assert titles((await second.post(TRANSFORM, event("5")))[1]) == ["Fresh"]


async def catalog_row_id(api: Api) -> int:
    """The catalog's row ID, as the cache keys use it."""
    pool = api.client.app[RESOLVER].batcher.pool
    return await pool.fetchval("SELECT id FROM catalogs WHERE name = 'movies'")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Long TTLs: nothing here may pass because an entry expired."""
    return dataclasses.replace(settings, cache_ttl=3600, cache_negative_ttl=3600)
