"""A recommender round-trips: what is PUT is what GET answers, and GET answers can be PUT."""

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


class TestNames:
    """Attribute names are case-sensitive, as in Pinpoint."""

    async def test_names_are_case_sensitive(self, catalog: Api):
        status, _, _ = await catalog.put("/v1/recommenders/recs",
                                         {"catalog": "movies", "attributes": attrs("Title", "title")})
        assert status == 201
