"""Every bad input gets a 4xx application/problem+json naming what is wrong; none gets a 500."""

from __future__ import annotations

import orjson
import pytest

from service.runtime.settings import Settings
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender

TRANSFORM = "/v1/recommenders/movies/transform"
GOOD_ENDPOINT = {"RecommendationItems": ["1"]}


@pytest.fixture
def settings(database_url: str) -> Settings:
    # Small limits, so the limit cases stay small requests.
    return Settings(database_url=database_url, db_pool_min=1, db_pool_max=5,
                    max_body_bytes=64 * 1024, max_endpoints=5, max_items_per_endpoint=3)


@pytest.fixture
async def movies(admin: Api, make_key) -> dict[str, Api]:
    await load_catalog(admin, "movies", [{"id": "1", "title": "One"}])
    await put_recommender(admin, "movies", "movies", ("Title", "title"))
    return {
        "transform": Api(admin.client, await make_key("acme", "transform")),
        "reader": Api(admin.client, await make_key("acme", "catalog:read")),
        "anonymous": Api(admin.client, None),
        "wrong": Api(admin.client, "ce_" + "A" * 43),
    }


# (case, caller, path, raw body, extra headers, status, field named)
CASES = [
    ("not JSON", "transform", TRANSFORM, b"{not json", {}, 400, "body"),
    ("empty body", "transform", TRANSFORM, b"", {}, 400, "body"),
    ("wrong content type", "transform", TRANSFORM, b'{"Endpoints":{}}',
     {"Content-Type": "text/plain"}, 415, "Content-Type"),
    ("non-UTF-8 charset", "transform", TRANSFORM, b'{"Endpoints":{}}',
     {"Content-Type": "application/json; charset=latin-1"}, 415, "Content-Type"),
    ("event not an object", "transform", TRANSFORM, b"[1,2]", {}, 422, "body"),
    ("Endpoints missing", "transform", TRANSFORM, b'{"ApplicationId":"x"}', {}, 422, "Endpoints"),
    ("Endpoints not an object", "transform", TRANSFORM, b'{"Endpoints":[1]}', {}, 422,
     "Endpoints"),
    ("oversized body", "transform", TRANSFORM,
     orjson.dumps({"Endpoints": {"a": GOOD_ENDPOINT}, "pad": "x" * 70_000}), {}, 413, "body"),
    ("too many endpoints", "transform", TRANSFORM,
     orjson.dumps({"Endpoints": {str(i): GOOD_ENDPOINT for i in range(6)}}), {}, 422,
     "Endpoints"),
    ("too many items", "transform", TRANSFORM,
     orjson.dumps({"Endpoints": {"a": {"RecommendationItems": ["1", "2", "3", "4"]}}}), {}, 422,
     "Endpoints.a.RecommendationItems"),
    ("non-string IDs", "transform", TRANSFORM,
     orjson.dumps({"Endpoints": {"a": {"RecommendationItems": [1815]}}}), {}, 422,
     "Endpoints.a.RecommendationItems[0]"),
    ("overlong IDs", "transform", TRANSFORM,
     orjson.dumps({"Endpoints": {"a": {"RecommendationItems": ["x" * 300]}}}), {}, 422,
     "Endpoints.a.RecommendationItems[0]"),
    # (1e999 is valid JSON, kept as written: tests/test_deep_and_hostile_json.py.)
    ("Infinity literal", "transform", TRANSFORM, b'{"Endpoints":{},"x":Infinity}', {}, 400, "body"),
    ("NaN literal", "transform", TRANSFORM, b'{"Endpoints":{},"x":NaN}', {}, 400, "body"),
    ("no key", "anonymous", TRANSFORM, b'{"Endpoints":{}}', {}, 401, "Authorization"),
    ("bad key", "wrong", TRANSFORM, b'{"Endpoints":{}}', {}, 401, "Authorization"),
    ("not a bearer key", "transform", TRANSFORM, b'{"Endpoints":{}}',
     {"Authorization": "Basic dXNlcjpwYXNz"}, 401, "Authorization"),
    ("wrong scope", "reader", TRANSFORM, b'{"Endpoints":{}}', {}, 403, "Authorization"),
    ("unknown recommender", "transform", "/v1/recommenders/nope/transform",
     b'{"Endpoints":{}}', {}, 404, "recommender"),
    ("bad recommender name", "transform", "/v1/recommenders/%20bad/transform",
     b'{"Endpoints":{}}', {}, 422, "recommender"),
    ("unknown route", "transform", "/v1/nothing-here", b"{}", {}, 404, "path"),
    ("wrong method", "transform", "/v1/recommenders/movies/transform", None,
     {"X-Method": "GET"}, 405, "method"),
]


@pytest.mark.parametrize(("case", "caller", "path", "raw", "headers", "status", "field"), CASES,
                         ids=[c[0] for c in CASES])
async def test_bad_input_answered_with_problem(movies, case, caller, path, raw, headers, status,
                                               field):
    api = movies[caller]
    method = headers.pop("X-Method", "POST") if headers else "POST"
    async with api.client.request(method, path, data=raw, headers=api.headers(headers)) as resp:
        body = await resp.read()
        assert resp.status == status, body
        assert resp.content_type == "application/problem+json"
        problem = orjson.loads(body)
    assert problem["status"] == status
    assert problem["field"] == field
    assert problem["title"] and problem["detail"] and problem["type"].startswith("urn:")
    assert "X-Request-Id" in resp.headers


async def test_unauthorized_says_how_to_authenticate(movies):
    async with movies["anonymous"].client.post(TRANSFORM, data=b"{}") as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_wrong_method_lists_allowed(movies):
    async with movies["transform"].client.get(TRANSFORM) as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST"


async def test_secrets_never_echoed(movies):
    key = "ce_" + "B" * 43
    async with movies["anonymous"].client.post(
        TRANSFORM, data=b"{}", headers={"Authorization": f"Bearer {key}"}
    ) as resp:
        assert key not in await resp.text()
