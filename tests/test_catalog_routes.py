"""Catalog and item routes: create, read, validate."""

from __future__ import annotations

import pytest

from tests.support.api import Api

FLEABAG = {
    "title": "Fleabag", "genre": "Comedy", "price": {"amount": "19.99", "currency": "USD"},
    "image_url": "https://img.example.com/1815.jpg", "url": "https://example.com/1815",
    "available": True, "attributes": {"style": "dark", "seasons": 2},
    "locales": {"de_DE": {"title": "Fleabag (DE)"}, "es": {"title": "Fleabag"}},
}


@pytest.fixture
async def catalog(admin: Api) -> Api:
    status, body, _ = await admin.put("/v1/catalogs/movies", {"description": "Films"})
    assert status == 201, body
    return admin


class TestCatalogs:
    """A catalog is created once, then updated."""

    async def test_create_then_update_then_get(self, catalog: Api):
        status, body, _ = await catalog.put("/v1/catalogs/movies", {"description": "All films"})
        assert status == 200 and body["description"] == "All films"
        status, body, _ = await catalog.get("/v1/catalogs/movies")
        assert status == 200 and body["name"] == "movies"

    async def test_bad_name(self, admin: Api):
        status, problem, _ = await admin.put("/v1/catalogs/-bad", {})
        assert status == 422 and problem["field"] == "catalog"


class TestItems:
    """Items round-trip exactly; bad items are refused naming the field."""

    async def test_put_then_get_round_trips(self, catalog: Api):
        status, created, _ = await catalog.put("/v1/catalogs/movies/items/1815", FLEABAG)
        assert status == 201
        status, fetched, _ = await catalog.get("/v1/catalogs/movies/items/1815")
        assert status == 200 and fetched == created
        assert {k: v for k, v in fetched.items() if k not in ("id", "updated_at")} == FLEABAG
        assert fetched["id"] == "1815" and fetched["updated_at"].endswith("Z")
        # A GET answer can be PUT back as it is.
        status, _, _ = await catalog.put("/v1/catalogs/movies/items/1815", fetched)
        assert status == 200

    async def test_unicode_id(self, catalog: Api):
        status, body, _ = await catalog.put("/v1/catalogs/movies/items/caf%C3%A9%20%F0%9F%8E%AC",
                                            {"title": "Café"})
        assert status == 201 and body["id"] == "café 🎬"

    @pytest.mark.parametrize(("body", "field"), [
        ({}, "title"),
        ({"title": ""}, "title"),
        ({"title": 5}, "title"),
        ({"title": "x", "price": {"amount": 19.99, "currency": "USD"}}, "price.amount"),
        ({"title": "x", "price": {"amount": "19,99", "currency": "USD"}}, "price.amount"),
        ({"title": "x", "price": {"amount": "1", "currency": "usd"}}, "price.currency"),
        ({"title": "x", "price": "19.99"}, "price"),
        ({"title": "x", "available": "yes"}, "available"),
        ({"title": "x", "attributes": []}, "attributes"),
        ({"title": "x", "attributes": {"a": "nul\u0000"}}, "attributes.a"),
        ({"title": "x", "locales": {"not a locale": {}}}, "locales.not a locale"),
        ({"title": "x", "colour": "red"}, "colour"),
        ({"title": "x", "id": "other"}, "id"),
    ])
    async def test_invalid_item_refused(self, catalog: Api, body, field):
        status, problem, _ = await catalog.put("/v1/catalogs/movies/items/1", body)
        assert status == 422, problem
        assert problem["field"] == field
        status, _, _ = await catalog.get("/v1/catalogs/movies/items/1")
        assert status == 404  # nothing half-written

    async def test_float_price_explains_why(self, catalog: Api):
        _, problem, _ = await catalog.put("/v1/catalogs/movies/items/1",
                                          {"title": "x", "price": {"amount": 1.1, "currency": "EUR"}})
        assert "float" in problem["detail"]

    async def test_overlong_id(self, catalog: Api):
        status, problem, _ = await catalog.put(f"/v1/catalogs/movies/items/{'x' * 257}",
                                               {"title": "x"})
        assert status == 422 and problem["field"] == "item_id"

    async def test_item_in_unknown_catalog(self, admin: Api):
        status, problem, _ = await admin.put("/v1/catalogs/none/items/1", {"title": "x"})
        assert status == 404 and problem["field"] == "catalog"
