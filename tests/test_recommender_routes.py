"""Recommender routes: CRUD and the list, the `:preview` dry run, and Personalize decoration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest

from service.runtime.settings import Settings
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender
from tests.support.tcp_proxy import TcpProxy

MOVIES = [
    {"id": "1", "title": "One", "genre": "Drama", "price": {"amount": "9.99", "currency": "USD"}},
    {"id": "2", "title": "Two", "locales": {"es": {"title": "Dos"}}},
    {"id": "3", "title": "Three", "genre": "Comedy"},
    {"id": "hidden", "title": "Hidden", "available": False},
]


@pytest.fixture
async def movies(admin: Api) -> Api:
    await load_catalog(admin, "movies", MOVIES)
    await put_recommender(admin, "movies", "movies", ("Title", "title"), ("Genre", "genre"))
    return admin


class TestCrud:
    """PUT, GET, DELETE and the list, each in the tenant of the key."""

    async def test_put_get_delete(self, movies: Api):
        status, stored, _ = await movies.get("/v1/recommenders/movies")
        assert (status, stored["name"]) == (200, "movies")
        status, _, _ = await movies.call("DELETE", "/v1/recommenders/movies")
        assert status == 204
        status, problem, _ = await movies.get("/v1/recommenders/movies")
        assert (status, problem["field"]) == (404, "recommender")
        status, problem, _ = await movies.call("DELETE", "/v1/recommenders/movies")
        assert (status, problem["field"]) == (404, "recommender")

    async def test_deleted_recommender_stops_transforming_at_once(self, movies: Api):
        event = {"Endpoints": {"a": {"RecommendationItems": ["1"]}}}
        status, _, _ = await movies.post("/v1/recommenders/movies/transform", event)
        assert status == 200  # now cached in this process
        await movies.call("DELETE", "/v1/recommenders/movies")
        status, _, _ = await movies.post("/v1/recommenders/movies/transform", event)
        assert status == 404

    async def test_list_pages_in_name_order(self, movies: Api, make_key):
        for name in ("b-recs", "a-recs"):
            await put_recommender(movies, name, "movies", ("Title", "title"))
        status, page, _ = await movies.get("/v1/recommenders?limit=2")
        assert status == 200
        assert [r["name"] for r in page["recommenders"]] == ["a-recs", "b-recs"]
        assert page["recommenders"][0]["attributes"] == [{"name": "Title", "field": "title"}]
        status, last, _ = await movies.get(page["next"])
        assert [r["name"] for r in last["recommenders"]] == ["movies"]
        assert last["next"] is None
        other = Api(movies.client, await make_key("globex", "catalog:read"))
        _, theirs, _ = await other.get("/v1/recommenders")
        assert theirs == {"recommenders": [], "next": None}

    @pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=x", "after=%20bad"])
    async def test_list_bad_query_named(self, movies: Api, query):
        status, problem, _ = await movies.get(f"/v1/recommenders?{query}")
        assert (status, problem["field"]) == (422, query.split("=")[0])

    async def test_scopes(self, movies: Api, make_key):
        reader = Api(movies.client, await make_key("acme", "catalog:read"))
        assert (await reader.get("/v1/recommenders"))[0] == 200
        assert (await reader.call("DELETE", "/v1/recommenders/movies"))[0] == 403
        assert (await reader.put("/v1/recommenders/x", {}))[0] == 403


def event(**endpoints):
    return {"Endpoints": endpoints}


class TestPreviewRoute:
    """`{recommender}:preview` is its own route; the plain routes keep working beside it."""

    async def test_colon_route_and_neighbours(self, movies: Api):
        body = event(a={"RecommendationItems": ["1"]})
        assert (await movies.post("/v1/recommenders/movies:preview", body))[0] == 200
        # A client that percent-encodes the colon reaches it too.
        assert (await movies.post("/v1/recommenders/movies%3Apreview", body))[0] == 200
        assert (await movies.get("/v1/recommenders/movies"))[0] == 200
        status, problem, _ = await movies.post("/v1/recommenders/nope:preview", body)
        assert (status, problem["field"]) == (404, "recommender")
        status, _, _ = await movies.post("/v1/recommenders/a:b:preview", body)
        assert status in (404, 405)
        status, problem, _ = await movies.post("/v1/recommenders/movies", body)
        assert (status, problem["field"]) == (405, "method")


class TestPreview:
    """A dry run answers what the transform would, with notes on every item ID."""

    async def test_same_answer_as_transform_with_notes(self, movies: Api):
        await put_recommender(movies, "two", "movies", ("Title", "title"), ("Genre", "genre"),
                              recommendations_per_message=2)
        body = event(
            a={"RecommendationItems": ["nope", "hidden", "2", "1", "3"],
               "Demographic": {"Locale": "es_MX"}},
            b={"RecommendationItems": ["nope"]},
            c={"RecommendationItems": []},
        )
        status, transformed, _ = await movies.post("/v1/recommenders/two/transform", body)
        assert status == 200
        status, preview, _ = await movies.post("/v1/recommenders/two:preview", body)
        assert status == 200, preview
        assert preview["answer"] == transformed
        assert preview["answer"]["a"]["Recommendations"] == {"Title": ["Dos", "One"],
                                                             "Genre": ["", "Drama"]}
        a = preview["endpoints"]["a"]
        assert a["served"] is True
        assert a["locale_chain"] == ["es_MX", "es", "en_US", "en"]
        assert [(n["id"], n["status"]) for n in a["items"]] == [
            ("nope", "unknown"), ("hidden", "unavailable"), ("2", "used"), ("1", "used"),
            ("3", "over_limit")]
        assert a["items"][2]["empty_fields"] == ["Genre"]
        assert "empty_fields" not in a["items"][3]
        assert "not in catalog 'movies'" in a["items"][0]["note"]
        b = preview["endpoints"]["b"]
        assert b["served"] is False
        assert "none of its items" in b["reason"]
        assert preview["malformed"] == [{"field": "Endpoints.c.RecommendationItems",
                                         "reason": "is empty"}]
        assert preview["unresolved"] == 1

    async def test_notes_follow_the_policy(self, movies: Api):
        await put_recommender(movies, "strict", "movies", ("Title", "title"),
                              missing_items="drop_endpoint")
        _, preview, _ = await movies.post("/v1/recommenders/strict:preview",
                                          event(a={"RecommendationItems": ["1", "nope"]}))
        assert preview["answer"] == {}
        assert preview["endpoints"]["a"]["reason"] == \
            "an item is missing and missing_items is drop_endpoint"
        assert "endpoint is left out" in preview["endpoints"]["a"]["items"][1]["note"]

    async def test_needs_catalog_read(self, movies: Api, make_key):
        transformer = Api(movies.client, await make_key("acme", "transform"))
        status, _, _ = await transformer.post("/v1/recommenders/movies:preview",
                                              event(a={"RecommendationItems": ["1"]}))
        assert status == 403


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(database_url)
    if not parts.hostname:
        pytest.skip("the test Postgres is reached through a socket path, not TCP")
    proxy = await TcpProxy(parts.hostname, parts.port or 5432).start()
    yield proxy
    await proxy.stop()


class TestPreviewLeavesCachesAlone:
    """A preview reads Postgres every time and warms nothing the live transform relies on."""

    @pytest.fixture
    def settings(self, database_url: str, proxy: TcpProxy) -> Settings:
        parts = urlsplit(database_url)
        netloc = f"{parts.username}@127.0.0.1:{proxy.port}"
        # One connection, so every statement is the request's own and counted in order.
        return Settings(
            database_url=urlunsplit(parts._replace(netloc=netloc, query="sslmode=disable")),
            db_pool_min=1, db_pool_max=1,
        )

    async def test_statements_per_call(self, movies: Api, proxy: TcpProxy):
        body = event(a={"RecommendationItems": ["1", "2"]})
        proxy.statements = 0
        status, _, _ = await movies.post("/v1/recommenders/movies:preview", body)
        assert status == 200
        assert proxy.statements == 2  # the recommender and the items, read now

        proxy.statements = 0
        await movies.post("/v1/recommenders/movies/transform", body)
        # Nothing was cached by the preview: the transform reads both itself.
        assert proxy.statements == 2

        proxy.statements = 0
        await movies.post("/v1/recommenders/movies:preview", body)
        assert proxy.statements == 2  # and a warm transform cache is not read by a preview


PERSONALIZE = {
    "itemList": [
        {"itemId": "3", "score": 0.0487172},
        {"itemId": "nope", "score": 0.0211},
        {"itemId": "1", "score": 1e-05, "promotionName": "summer"},
        {"itemId": "hidden", "score": 0.003},
        {"itemId": "3", "score": 0.001},
    ],
    "recommendationId": "RID-e3b0c442-98fc-1c14",
    "ResponseMetadata": {"HTTPStatusCode": 200},
}


class TestDecorate:
    """A Personalize response keeps order, scores and keys; each known item gets `metadata`."""

    async def test_order_scores_and_metadata(self, movies: Api):
        raw = orjson.dumps(PERSONALIZE)
        status, answer, headers = await movies.post("/v1/recommenders/movies/decorate", raw=raw)
        assert status == 200, answer
        assert [e["itemId"] for e in answer["itemList"]] == ["3", "nope", "1", "hidden", "3"]
        assert [e["score"] for e in answer["itemList"]] == [0.0487172, 0.0211, 1e-05, 0.003,
                                                           0.001]
        assert answer["itemList"][0] == {"itemId": "3", "score": 0.0487172,
                                         "metadata": {"Title": "Three", "Genre": "Comedy"}}
        assert answer["itemList"][2]["promotionName"] == "summer"
        assert answer["itemList"][2]["metadata"] == {"Title": "One", "Genre": "Drama"}
        # Unknown and unavailable items are kept as sent, without metadata (missing_items: skip).
        assert answer["itemList"][1] == PERSONALIZE["itemList"][1]
        assert answer["itemList"][3] == PERSONALIZE["itemList"][3]
        assert answer["recommendationId"] == PERSONALIZE["recommendationId"]
        assert answer["ResponseMetadata"] == PERSONALIZE["ResponseMetadata"]
        assert headers["X-Unresolved-Items"] == "2"

    async def test_policies(self, movies: Api):
        await put_recommender(movies, "ph", "movies", ("Title", "title"),
                              missing_items="placeholder")
        await movies.put("/v1/recommenders/ph", {
            "catalog": "movies", "missing_items": "placeholder",
            "attributes": [{"name": "Title", "field": "title", "placeholder": "?"}]})
        _, answer, _ = await movies.post("/v1/recommenders/ph/decorate", PERSONALIZE)
        assert [e.get("metadata") for e in answer["itemList"]] == [
            {"Title": "Three"}, {"Title": "?"}, {"Title": "One"}, {"Title": "?"},
            {"Title": "Three"}]
        await put_recommender(movies, "drop", "movies", ("Title", "title"),
                              missing_items="drop_endpoint")
        _, answer, _ = await movies.post("/v1/recommenders/drop/decorate", PERSONALIZE)
        assert [(e["itemId"], e["score"]) for e in answer["itemList"]] == [
            ("3", 0.0487172), ("1", 1e-05), ("3", 0.001)]

    async def test_locale_and_existing_metadata(self, movies: Api):
        body = {"itemList": [{"itemId": "2", "metadata": {"GENRES": "Comedy"}}]}
        _, answer, _ = await movies.post("/v1/recommenders/movies/decorate?locale=es_MX", body)
        assert answer["itemList"][0]["metadata"] == {"GENRES": "Comedy", "Title": "Dos",
                                                     "Genre": ""}

    @pytest.mark.parametrize(("body", "field"), [
        ({"recommendationId": "x"}, "itemList"),
        ({"itemList": {"itemId": "1"}}, "itemList"),
        ({"itemList": [{"itemId": "1"}, {"score": 1}]}, "itemList[1].itemId"),
        ({"itemList": [{"itemId": 1815}]}, "itemList[0].itemId"),
        ({"itemList": ["1"]}, "itemList[0]"),
        ({"itemList": [{"itemId": "1", "metadata": "x"}]}, "itemList[0].metadata"),
        ([], "body"),
    ])
    async def test_bad_responses_named(self, movies: Api, body, field):
        status, problem, _ = await movies.post("/v1/recommenders/movies/decorate", body)
        assert (status, problem["field"]) == (422, field)

    async def test_bad_locale_named(self, movies: Api):
        status, problem, _ = await movies.post("/v1/recommenders/movies/decorate?locale=no%20way",
                                               {"itemList": []})
        assert (status, problem["field"]) == (422, "locale")
