"""The Pinpoint transform contract, end to end through HTTP and Postgres."""

from __future__ import annotations

import orjson
import pytest

from tests.support.api import Api
from tests.support.catalogs import load_catalog, load_ndjson, put_recommender

# Each test on the C extension's hot loops and on the pure-Python ones (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("transform_paths")

MOVIES = [
    {"id": "1", "title": "One", "genre": "Drama"},
    {"id": "2", "title": "Two", "genre": "Comedy"},
    {"id": "3", "title": "Three"},
    {"id": "hidden", "title": "Hidden", "available": False},
]


@pytest.fixture
async def movies(admin: Api) -> Api:
    await load_catalog(admin, "movies", MOVIES)
    await put_recommender(admin, "movies", "movies", ("Title", "title"), ("Genre", "genre"))
    return admin


def event(**endpoints):
    return {"Endpoints": {name: {"ChannelType": "EMAIL", "RecommendationItems": items}
                          for name, items in endpoints.items()}}


class TestSeedFixture:
    """The developer guide's worked example gives exactly the documented answer."""

    async def test_seed_event_gives_expected_response(self, admin: Api, shared_dir):
        folder = shared_dir / "fixtures" / "pinpoint"
        await load_ndjson(admin, "seed", folder / "seed-catalog.ndjson")
        await put_recommender(admin, "seed", "seed", ("Title", "title"), ("Genre", "genre"))
        raw = (folder / "seed-event.json").read_bytes()
        status, answer, _ = await admin.post("/v1/recommenders/seed/transform", raw=raw)
        assert status == 200, answer
        expected = orjson.loads((folder / "seed-expected-response.json").read_bytes())
        assert answer == expected
        assert "LastName " in answer["endpointIDexample-2"]["User"]["UserAttributes"]


class TestSkipPolicy:
    """Default resolution: unknown IDs skipped, order and duplicates kept, arrays aligned."""

    async def test_unknown_skipped_order_and_duplicates_kept(self, movies: Api):
        status, answer, headers = await movies.post(
            "/v1/recommenders/movies/transform", event(a=["2", "nope", "1", "2"])
        )
        assert status == 200
        recs = answer["a"]["Recommendations"]
        assert recs == {"Title": ["Two", "One", "Two"], "Genre": ["Comedy", "Drama", "Comedy"]}
        assert "X-Unresolved-Endpoints" not in headers

    async def test_missing_field_gives_empty_string_keeping_alignment(self, movies: Api):
        _, answer, _ = await movies.post("/v1/recommenders/movies/transform", event(a=["3", "1"]))
        assert answer["a"]["Recommendations"] == {"Title": ["Three", "One"], "Genre": ["", "Drama"]}

    async def test_unavailable_item_counts_as_missing(self, movies: Api):
        _, answer, _ = await movies.post("/v1/recommenders/movies/transform",
                                         event(a=["hidden", "1"]))
        assert answer["a"]["Recommendations"]["Title"] == ["One"]

    async def test_endpoint_with_nothing_resolved_is_left_out(self, movies: Api):
        status, answer, headers = await movies.post(
            "/v1/recommenders/movies/transform", event(a=["x", "y"], b=["1"])
        )
        assert status == 200
        assert list(answer) == ["b"]
        assert headers["X-Unresolved-Endpoints"] == "1"

    async def test_capped_at_recommendations_per_message(self, movies: Api):
        await put_recommender(movies, "two", "movies", ("Title", "title"),
                              recommendations_per_message=2)
        _, answer, _ = await movies.post("/v1/recommenders/two/transform",
                                         event(a=["x", "1", "2", "3"]))
        assert answer["a"]["Recommendations"]["Title"] == ["One", "Two"]

    async def test_empty_endpoints_gives_empty_map(self, movies: Api):
        status, answer, _ = await movies.post("/v1/recommenders/movies/transform",
                                              {"Endpoints": {}})
        assert (status, answer) == (200, {})


class TestEndpointsUntouched:
    """Everything but Recommendations comes back exactly as sent."""

    async def test_other_keys_and_unicode_kept(self, movies: Api):
        endpoint = {
            "RecommendationItems": ["1"],
            "User": {"UserAttributes": {"Nom ": ["Élodie"], "emoji": ["🎬"]}},
            "Attributes": {"n": [1, 2.5, True, None]},
            "Unknown": {"deep": {"er": []}},
        }
        body = {"ApplicationId": "x", "Extra": 1, "Endpoints": {"é 1": endpoint}}
        _, answer, _ = await movies.post("/v1/recommenders/movies/transform", body)
        returned = dict(answer["é 1"])
        returned.pop("Recommendations")
        assert orjson.dumps(returned) == orjson.dumps(endpoint)

    async def test_huge_integers_survive_exactly(self, movies: Api):
        raw = (b'{"Endpoints":{"a":{"RecommendationItems":["1"],'
               b'"Attributes":{"big":[123456789012345678901234567890]}}}}')
        status, _, _ = await movies.post("/v1/recommenders/movies/transform", raw=raw)
        assert status == 200
        async with movies.client.post("/v1/recommenders/movies/transform", data=raw,
                                      headers=movies.headers()) as response:
            text = await response.text()
        assert "123456789012345678901234567890" in text


class TestMalformedEndpoints:
    """A malformed endpoint is left out and counted; the others are served."""

    @pytest.mark.parametrize("items", [None, [], "1", [1], ["1", None], ["x" * 257], ["a\x00"], [""]])
    async def test_left_out_others_served(self, movies: Api, items):
        endpoints = {"good": {"RecommendationItems": ["1"]}, "bad": {"RecommendationItems": items}}
        if items is None:
            del endpoints["bad"]["RecommendationItems"]
        status, answer, headers = await movies.post(
            "/v1/recommenders/movies/transform", {"Endpoints": endpoints}
        )
        assert status == 200
        assert list(answer) == ["good"]
        assert headers["X-Malformed-Endpoints"] == "1"

    async def test_endpoint_not_an_object_left_out(self, movies: Api):
        status, answer, headers = await movies.post(
            "/v1/recommenders/movies/transform",
            {"Endpoints": {"good": {"RecommendationItems": ["1"]}, "bad": None}},
        )
        assert status == 200 and list(answer) == ["good"]
        assert headers["X-Malformed-Endpoints"] == "1"
