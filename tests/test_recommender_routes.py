"""Recommender routes: stored as validated data, refused naming the field otherwise."""

from __future__ import annotations

import pytest

from tests.support.api import Api
from tests.support.catalogs import load_catalog


@pytest.fixture
async def catalog(admin: Api) -> Api:
    await load_catalog(admin, "movies", [{"id": "1", "title": "One"}])
    return admin


def attrs(*names):
    return [{"name": n, "field": "title"} for n in names]


class TestPutGet:
    """What is PUT is what GET answers, defaults filled in."""

    async def test_round_trip(self, catalog: Api):
        body = {"catalog": "movies", "attributes": [{"name": "Title", "field": "title"},
                                                    {"name": "Genre", "field": "genre"}]}
        status, created, _ = await catalog.put("/v1/recommenders/recs", body)
        assert status == 201
        assert created["attributes"] == body["attributes"]
        assert created["missing_items"] == "skip" and created["recommendations_per_message"] == 5
        status, fetched, _ = await catalog.get("/v1/recommenders/recs")
        assert status == 200 and fetched == created
        status, _, _ = await catalog.put("/v1/recommenders/recs", fetched)
        assert status == 200


class TestValidation:
    """Pinpoint's limits are enforced when the recommender is saved."""

    @pytest.mark.parametrize(("body", "field"), [
        ({"catalog": "movies", "attributes": attrs(*[f"A{i}" for i in range(11)])}, "attributes"),
        ({"catalog": "movies", "attributes": []}, "attributes"),
        ({"catalog": "movies", "attributes": attrs("_bad")}, "attributes[0].name"),
        ({"catalog": "movies", "attributes": attrs("x" * 51)}, "attributes[0].name"),
        ({"catalog": "movies", "attributes": attrs("Title", "Title")}, "attributes[1].name"),
        ({"catalog": "movies", "attributes": [{"name": "T", "field": "colour"}]},
         "attributes[0].field"),
        ({"catalog": "movies", "attributes": attrs("T"), "recommendations_per_message": 6},
         "recommendations_per_message"),
        ({"catalog": "nope", "attributes": attrs("T")}, "catalog"),
        ({"attributes": attrs("T")}, "catalog"),
        ({"catalog": "movies", "attributes": attrs("T"), "extra": 1}, "extra"),
    ])
    async def test_refused(self, catalog: Api, body, field):
        status, problem, _ = await catalog.put("/v1/recommenders/recs", body)
        assert status == 422, problem
        assert problem["field"] == field
        status, _, _ = await catalog.get("/v1/recommenders/recs")
        assert status == 404

    async def test_names_are_case_sensitive(self, catalog: Api):
        status, _, _ = await catalog.put("/v1/recommenders/recs",
                                         {"catalog": "movies", "attributes": attrs("Title", "title")})
        assert status == 201
