"""The catalog API other teams use: item validators and conditional requests, merge patch,
deletes, batch get, keyset listing, and the catalog list."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest

from service.items import format_timestamp
from service.runtime.settings import Settings
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender

ITEM = "/v1/catalogs/movies/items/1815"
FLEABAG = {"title": "Fleabag", "genre": "Comedy",
           "price": {"amount": "19.99", "currency": "USD"},
           "attributes": {"style": "dark", "seasons": 2}}


@pytest.fixture
async def movies(admin: Api) -> Api:
    await load_catalog(admin, "movies", [{"id": "1815", **FLEABAG}])
    return admin


class TestValidators:
    """GET answers carry an ETag and Cache-Control; If-None-Match turns a repeat into a 304."""

    async def test_get_has_etag_and_cache_control(self, movies: Api):
        status, _, headers = await movies.get(ITEM)
        assert status == 200
        assert headers["ETag"].startswith('"')
        assert headers["ETag"].endswith('"')
        assert headers["Cache-Control"] == "private, no-cache"

    async def test_if_none_match_current_is_304_without_body(self, movies: Api):
        _, _, headers = await movies.get(ITEM)
        etag = headers["ETag"]
        for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            status, body, answer_headers = await movies.get(ITEM,
                                                            headers={"If-None-Match": sent})
            assert status == 304, sent
            assert body is None
            assert answer_headers["ETag"] == etag

    async def test_if_none_match_stale_gets_the_new_item(self, movies: Api):
        _, _, headers = await movies.get(ITEM)
        old = headers["ETag"]
        await movies.put(ITEM, {**FLEABAG, "genre": "Drama"})
        status, body, headers = await movies.get(ITEM, headers={"If-None-Match": old})
        assert status == 200
        assert body["genre"] == "Drama"
        assert headers["ETag"] != old

    @pytest.mark.parametrize("moment", [
        datetime(2026, 11, 22, 9, 0, tzinfo=UTC), datetime(2026, 11, 22, 9, 0, 0, 1, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), datetime(1960, 1, 1, tzinfo=UTC),
    ])
    def test_updated_at_reads_the_same_from_a_datetime_and_from_microseconds(self, moment):
        # Rows the resolver reads carry microseconds since the epoch; writes answer a datetime.
        micros = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        assert format_timestamp(micros) == format_timestamp(moment)

    async def test_identical_put_keeps_version_and_updated_at(self, movies: Api):
        _, before, headers = await movies.get(ITEM)
        status, after, put_headers = await movies.put(ITEM, FLEABAG)
        assert status == 200
        assert after["updated_at"] == before["updated_at"]
        assert put_headers["ETag"] == headers["ETag"]

    async def test_price_scale_counts_as_a_change(self, movies: Api):
        _, _, headers = await movies.get(ITEM)
        _, body, put_headers = await movies.put(
            ITEM, {**FLEABAG, "price": {"amount": "19.990", "currency": "USD"}})
        assert body["price"]["amount"] == "19.990"
        assert put_headers["ETag"] != headers["ETag"]



class TestMaxAge:
    """ENRICHER_ITEM_MAX_AGE lets clients reuse an item without asking."""

    @pytest.fixture
    def settings(self, database_url: str) -> Settings:
        return Settings(database_url=database_url, db_pool_min=1, db_pool_max=5,
                        item_max_age=60)

    async def test_max_age_is_configurable(self, movies: Api):
        _, _, headers = await movies.get(ITEM)
        assert headers["Cache-Control"] == "private, max-age=60"


class TestConditionalWrites:
    """If-Match guards PUT, PATCH and DELETE against lost updates: a stale version gets 412."""

    async def etag(self, api: Api) -> str:
        return (await api.get(ITEM))[2]["ETag"]

    async def test_put_with_current_etag_succeeds(self, movies: Api):
        etag = await self.etag(movies)
        status, body, headers = await movies.put(ITEM, {**FLEABAG, "genre": "Drama"},
                                                 headers={"If-Match": etag})
        assert status == 200
        assert body["genre"] == "Drama"
        assert headers["ETag"] != etag

    async def test_put_with_stale_etag_is_412_and_writes_nothing(self, movies: Api):
        stale = await self.etag(movies)
        await movies.put(ITEM, {**FLEABAG, "genre": "Drama"})
        status, problem, headers = await movies.put(ITEM, {**FLEABAG, "genre": "Horror"},
                                                    headers={"If-Match": stale})
        assert status == 412
        assert problem["field"] == "If-Match"
        assert headers["Content-Type"].startswith("application/problem+json")
        assert (await movies.get(ITEM))[1]["genre"] == "Drama"

    async def test_weak_etag_never_matches_a_write(self, movies: Api):
        etag = await self.etag(movies)
        status, _, _ = await movies.put(ITEM, FLEABAG, headers={"If-Match": f"W/{etag}"})
        assert status == 412

    async def test_if_match_on_absent_item_is_412(self, movies: Api):
        status, problem, _ = await movies.put("/v1/catalogs/movies/items/new", FLEABAG,
                                              headers={"If-Match": "*"})
        assert status == 412
        assert problem["field"] == "If-Match"
        assert (await movies.get("/v1/catalogs/movies/items/new"))[0] == 404

    async def test_if_none_match_star_creates_only(self, movies: Api):
        status, _, _ = await movies.put("/v1/catalogs/movies/items/new", FLEABAG,
                                        headers={"If-None-Match": "*"})
        assert status == 201
        status, problem, _ = await movies.put(ITEM, {**FLEABAG, "genre": "Drama"},
                                              headers={"If-None-Match": "*"})
        assert status == 412
        assert problem["field"] == "If-None-Match"
        assert (await movies.get(ITEM))[1]["genre"] == "Comedy"

    async def test_concurrent_creators_one_wins(self, movies: Api):
        # Both start before either commits; the loser must learn that the item now exists.
        results = await asyncio.gather(*[
            movies.put("/v1/catalogs/movies/items/race", {"title": f"T{n}"},
                       headers={"If-None-Match": "*"}) for n in range(2)
        ])
        assert sorted(status for status, _, _ in results) == [201, 412]

    async def test_malformed_if_match_is_400(self, movies: Api):
        status, problem, _ = await movies.put(ITEM, FLEABAG, headers={"If-Match": "12"})
        assert status == 400
        assert problem["field"] == "If-Match"

    async def test_patch_and_delete_with_stale_etag_are_412(self, movies: Api):
        stale = await self.etag(movies)
        await movies.patch(ITEM, {"genre": "Drama"})
        status, _, _ = await movies.patch(ITEM, {"genre": "Horror"}, headers={"If-Match": stale})
        assert status == 412
        status, _, _ = await movies.delete(ITEM, headers={"If-Match": stale})
        assert status == 412
        assert (await movies.get(ITEM))[1]["genre"] == "Drama"
        status, _, _ = await movies.delete(ITEM, headers={"If-Match": await self.etag(movies)})
        assert status == 204


class TestMergePatch:
    """PATCH applies an RFC 7396 merge patch and validates the result like a PUT."""

    async def test_changes_only_what_is_sent(self, movies: Api):
        status, body, headers = await movies.patch(ITEM, {"genre": "Drama"},
                                                   headers={"Content-Type":
                                                            "application/merge-patch+json"})
        assert status == 200
        assert headers["ETag"]
        assert body["genre"] == "Drama"
        assert body["title"] == "Fleabag"
        assert body["price"] == FLEABAG["price"]

    async def test_null_removes_and_objects_merge(self, movies: Api):
        _, body, _ = await movies.patch(ITEM, {
            "genre": None, "price": {"amount": "5.00"},
            "attributes": {"style": None, "rating": "18"},
        })
        assert body["genre"] is None
        assert body["price"] == {"amount": "5.00", "currency": "USD"}
        assert body["attributes"] == {"seasons": 2, "rating": "18"}

    async def test_invalid_result_is_422_and_nothing_changes(self, movies: Api):
        for patch, field in (({"title": None}, "title"),
                             ({"price": {"amount": 5}}, "price.amount"),
                             ({"id": "other"}, "id"),
                             ({"colour": "red"}, "colour")):
            status, problem, _ = await movies.patch(ITEM, patch)
            assert status == 422, patch
            assert problem["field"] == field
        assert (await movies.get(ITEM))[1]["title"] == "Fleabag"

    async def test_patch_must_be_an_object(self, movies: Api):
        status, problem, _ = await movies.patch(ITEM, ["title"])
        assert status == 422
        assert problem["field"] == "body"

    async def test_unknown_item_is_404(self, movies: Api):
        status, problem, _ = await movies.patch("/v1/catalogs/movies/items/nope", {"genre": "x"})
        assert status == 404
        assert problem["field"] == "item_id"


class TestDeletes:
    """Items and catalogs can be deleted; a catalog a recommender uses cannot."""

    async def test_delete_item(self, movies: Api):
        assert (await movies.delete(ITEM))[0] == 204
        assert (await movies.get(ITEM))[0] == 404
        status, problem, _ = await movies.delete(ITEM)
        assert status == 404
        assert problem["field"] == "item_id"

    async def test_delete_catalog_takes_its_items(self, movies: Api):
        assert (await movies.delete("/v1/catalogs/movies"))[0] == 204
        assert (await movies.get("/v1/catalogs/movies"))[0] == 404
        await movies.put("/v1/catalogs/movies", {})
        assert (await movies.get(ITEM))[0] == 404

    async def test_catalog_in_use_is_409(self, movies: Api):
        await put_recommender(movies, "picks", "movies", ("Title", "title"))
        status, problem, _ = await movies.delete("/v1/catalogs/movies")
        assert status == 409
        assert "picks" in problem["detail"]
        assert (await movies.get(ITEM))[0] == 200

    async def test_reader_cannot_write(self, movies: Api, make_key):
        reader = Api(movies.client, await make_key("acme", "catalog:read"))
        assert (await reader.get(ITEM))[0] == 200
        assert (await reader.delete(ITEM))[0] == 403
        assert (await reader.patch(ITEM, {"genre": "x"}))[0] == 403
        assert (await reader.delete("/v1/catalogs/movies"))[0] == 403


class TestBatchGet:
    """batchGet answers many IDs at once, in request order, each once, with `missing`."""

    @pytest.fixture
    def settings(self, database_url: str) -> Settings:
        return Settings(database_url=database_url, db_pool_min=1, db_pool_max=5,
                        max_batch_ids=50)

    @pytest.fixture
    async def shop(self, admin: Api) -> Api:
        await load_catalog(admin, "shop", [
            {"id": str(n), "title": f"Item {n}", "genre": "g"} for n in range(1, 6)
        ])
        return admin

    async def test_order_duplicates_and_missing(self, shop: Api):
        status, body, _ = await shop.post("/v1/catalogs/shop/items:batchGet",
                                          {"ids": ["3", "x", "1", "3", "y", "x", "5"]})
        assert status == 200
        assert [item["id"] for item in body["items"]] == ["3", "1", "5"]
        assert body["missing"] == ["x", "y"]
        assert body["items"][0]["title"] == "Item 3"
        assert "updated_at" in body["items"][0]

    async def test_field_projection_keeps_id(self, shop: Api):
        _, body, _ = await shop.post("/v1/catalogs/shop/items:batchGet",
                                     {"ids": ["2"], "fields": ["title"]})
        assert body["items"] == [{"id": "2", "title": "Item 2"}]

    async def test_empty_ids(self, shop: Api):
        _, body, _ = await shop.post("/v1/catalogs/shop/items:batchGet", {"ids": []})
        assert body == {"items": [], "missing": []}

    async def test_limit_is_the_configured_one(self, shop: Api):
        status, _, _ = await shop.post("/v1/catalogs/shop/items:batchGet",
                                       {"ids": [str(n) for n in range(50)]})
        assert status == 200
        status, problem, _ = await shop.post("/v1/catalogs/shop/items:batchGet",
                                             {"ids": [str(n) for n in range(51)]})
        assert status == 422
        assert problem["field"] == "ids"
        assert "50" in problem["detail"]

    @pytest.mark.parametrize(("body", "field"), [
        ({}, "ids"),
        ({"ids": "1"}, "ids"),
        ({"ids": ["1", 2]}, "ids[1]"),
        ({"ids": ["x" * 257]}, "ids[0]"),
        ({"ids": ["1"], "fields": ["title", "colour"]}, "fields[1]"),
        ({"ids": ["1"], "fields": "title"}, "fields"),
        ({"ids": ["1"], "limit": 3}, "limit"),
        ([1], "body"),
    ])
    async def test_bad_requests_name_the_field(self, shop: Api, body, field):
        status, problem, _ = await shop.post("/v1/catalogs/shop/items:batchGet", body)
        assert status == 422, problem
        assert problem["field"] == field

    async def test_other_tenants_catalog_does_not_exist(self, shop: Api, make_key):
        other = Api(shop.client, await make_key("globex", "catalog:read"))
        status, problem, _ = await other.post("/v1/catalogs/shop/items:batchGet", {"ids": ["1"]})
        assert status == 404
        assert problem["field"] == "catalog"


class TestListing:
    """Keyset pages in ID order with a `next` link, filters by genre and updated_since."""

    @pytest.fixture
    async def shop(self, admin: Api) -> Api:
        await load_catalog(admin, "shop", [
            {"id": f"{n:03d}", "title": f"Item {n}", "genre": "even" if n % 2 == 0 else "odd"}
            for n in range(25)
        ])
        return admin

    async def walk(self, api: Api, path: str) -> tuple[list[str], int]:
        ids: list[str] = []
        pages = 0
        while path:
            status, body, headers = await api.get(path)
            assert status == 200, body
            assert headers["Cache-Control"] == "private, no-cache"
            ids += [item["id"] for item in body["items"]]
            pages += 1
            path = body["next"]
        return ids, pages

    async def test_pages_cover_everything_once_in_order(self, shop: Api):
        ids, pages = await self.walk(shop, "/v1/catalogs/shop/items?limit=10")
        assert ids == [f"{n:03d}" for n in range(25)]
        assert pages == 3

    async def test_exact_multiple_ends_with_null_next(self, shop: Api):
        _, body, _ = await shop.get("/v1/catalogs/shop/items?limit=25")
        assert len(body["items"]) == 25
        assert body["next"] is None

    async def test_default_page_and_after(self, shop: Api):
        _, body, _ = await shop.get("/v1/catalogs/shop/items?after=020")
        assert [i["id"] for i in body["items"]] == ["021", "022", "023", "024"]

    async def test_genre_filter_is_kept_in_next(self, shop: Api):
        ids, pages = await self.walk(shop, "/v1/catalogs/shop/items?limit=5&genre=odd")
        assert ids == [f"{n:03d}" for n in range(1, 25, 2)]
        assert pages == 3

    async def test_updated_since(self, shop: Api):
        await shop.put("/v1/catalogs/shop/items/003", {"title": "Changed"})
        _, changed, _ = await shop.get("/v1/catalogs/shop/items/003")
        since = changed["updated_at"]
        ids, _ = await self.walk(shop, f"/v1/catalogs/shop/items?updated_since={since}&limit=1")
        assert ids == ["003"]

    @pytest.mark.parametrize(("query", "field"), [
        ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=ten", "limit"),
        ("limit=1&limit=2", "limit"), ("limt=5", "limt"),
        ("updated_since=yesterday", "updated_since"),
        ("updated_since=2026-01-01T00:00:00", "updated_since"),
        (f"after={'x' * 300}", "after"),
    ])
    async def test_bad_parameters(self, shop: Api, query, field):
        status, problem, _ = await shop.get(f"/v1/catalogs/shop/items?{query}")
        assert status == 422, problem
        assert problem["field"] == field

    async def test_ids_with_reserved_characters_page_correctly(self, admin: Api):
        odd_ids = ["a b", "a&b", "a/b", "a?b", "é"]
        await admin.put("/v1/catalogs/odd", {})
        for item_id in odd_ids:
            status, body, _ = await admin.put(f"/v1/catalogs/odd/items/{quote(item_id, safe='')}",
                                              {"title": item_id})
            assert status == 201
            assert body["id"] == item_id
        ids, pages = await self.walk(admin, "/v1/catalogs/odd/items?limit=1")
        assert sorted(ids) == sorted(odd_ids)
        assert pages == len(odd_ids)


class TestCatalogList:
    """A key lists its own tenant's catalogs, in pages, and never another tenant's."""

    async def test_lists_own_catalogs_in_pages(self, admin: Api, make_key):
        for name in ("c", "a", "b"):
            await admin.put(f"/v1/catalogs/{name}", {"description": name.upper()})
        other = Api(admin.client, await make_key("globex", "admin"))
        await other.put("/v1/catalogs/z", {})
        status, body, _ = await admin.get("/v1/catalogs?limit=2")
        assert status == 200
        assert [c["name"] for c in body["catalogs"]] == ["a", "b"]
        _, rest, _ = await admin.get(body["next"])
        assert [c["name"] for c in rest["catalogs"]] == ["c"]
        assert rest["next"] is None
        _, theirs, _ = await other.get("/v1/catalogs")
        assert [c["name"] for c in theirs["catalogs"]] == ["z"]
