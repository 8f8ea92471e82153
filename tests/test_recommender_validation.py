"""Every invalid recommender is refused with a problem+json naming the field; nothing is saved."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api import Api
from tests.support.catalogs import load_catalog

TITLE = {"name": "Title", "field": "title"}


def attrs(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"catalog": "movies", "attributes": list(entries)}


# (case, body, field named)
INVALID = [
    ("11 attributes", attrs(*({"name": f"A{i}", "field": "title"} for i in range(11))),
     "attributes"),
    ("no attributes", attrs(), "attributes"),
    ("name with a space", attrs({"name": "Bad Name", "field": "title"}), "attributes[0].name"),
    ("name starting with _", attrs({"name": "_x", "field": "title"}), "attributes[0].name"),
    ("name of 51 characters", attrs({"name": "N" * 51, "field": "title", "display_name": "N"}),
     "attributes[0].name"),
    ("name with a dot", attrs({"name": "Title.Short", "field": "title"}), "attributes[0].name"),
    ("duplicate name", attrs(TITLE, {"name": "Title", "field": "genre"}), "attributes[1].name"),
    ("unknown item field", attrs({"name": "D", "field": "director"}), "attributes[0].field"),
    ("empty attributes key", attrs({"name": "D", "field": "attributes."}),
     "attributes[0].field"),
    ("unknown attribute key", attrs({**TITLE, "colour": "red"}), "attributes[0].colour"),
    ("template with an unknown placeholder", attrs({**TITLE, "template": "x/{title}"}),
     "attributes[0].template"),
    ("template without a placeholder", attrs({**TITLE, "template": "https://cdn/x.jpg"}),
     "attributes[0].template"),
    ("template with an unbalanced brace", attrs({**TITLE, "template": "{value}}"}),
     "attributes[0].template"),
    ("template not a string", attrs({**TITLE, "template": ["{value}"]}),
     "attributes[0].template"),
    ("per message 0", {**attrs(TITLE), "recommendations_per_message": 0},
     "recommendations_per_message"),
    ("per message 6", {**attrs(TITLE), "recommendations_per_message": 6},
     "recommendations_per_message"),
    ("per message as text", {**attrs(TITLE), "recommendations_per_message": "5"},
     "recommendations_per_message"),
    ("per message true", {**attrs(TITLE), "recommendations_per_message": True},
     "recommendations_per_message"),
    ("display name of 26", attrs({**TITLE, "display_name": "D" * 26}),
     "attributes[0].display_name"),
    ("display name with punctuation", attrs({**TITLE, "display_name": "Title!"}),
     "attributes[0].display_name"),
    ("long name, no display name", attrs({"name": "N" * 26, "field": "title"}),
     "attributes[0].display_name"),
    ("unknown format", attrs({**TITLE, "format": "bold"}), "attributes[0].format"),
    ("truncate written as a format", attrs({**TITLE, "format": "truncate"}),
     "attributes[0].format"),
    ("currency of a title", attrs({**TITLE, "format": "currency"}), "attributes[0].format"),
    ("truncate 0", attrs({**TITLE, "truncate": 0}), "attributes[0].truncate"),
    ("first not a boolean", attrs({**TITLE, "first": "yes"}), "attributes[0].first"),
    ("placeholder not a string", attrs({**TITLE, "placeholder": 5}),
     "attributes[0].placeholder"),
    ("attribute not an object", attrs("Title"), "attributes[0]"),
    ("unknown policy", {**attrs(TITLE), "missing_items": "ignore"}, "missing_items"),
    ("locale unknown to CLDR", {**attrs(TITLE), "locale": "xx_YY"}, "locale"),
    ("locale not a tag", {**attrs(TITLE), "locale": "English"}, "locale"),
    ("application_ids not an array", {**attrs(TITLE), "application_ids": "abc"},
     "application_ids"),
    ("empty application ID", {**attrs(TITLE), "application_ids": [""]}, "application_ids[0]"),
    ("repeated application ID", {**attrs(TITLE), "application_ids": ["a1", "a1"]},
     "application_ids[1]"),
    ("no catalog", {"attributes": [TITLE]}, "catalog"),
    ("unknown catalog", {"catalog": "books", "attributes": [TITLE]}, "catalog"),
    ("unknown recommender key", {**attrs(TITLE), "policy": "skip"}, "policy"),
    ("name differs from the path", {**attrs(TITLE), "name": "other"}, "name"),
    ("not an object", [TITLE], "body"),
]


@pytest.fixture
async def movies(admin: Api) -> Api:
    await load_catalog(admin, "movies", [{"id": "1", "title": "One"}])
    status, body, _ = await admin.put("/v1/recommenders/r", attrs(TITLE))
    assert status == 201, body
    return admin


class TestInvalidRecommenders:
    """Each invalid body is a 422 problem naming its field; the stored recommender is unchanged."""

    @pytest.mark.parametrize(("case", "body", "field"), INVALID, ids=[c[0] for c in INVALID])
    async def test_refused_naming_the_field(self, movies: Api, case, body, field):
        async with movies.client.put("/v1/recommenders/r", json=body,
                                     headers=movies.headers()) as response:
            assert response.status == 422, await response.text()
            assert response.content_type == "application/problem+json"
            problem = await response.json(content_type=None)
        assert problem["field"] == field, problem
        assert field in {error["field"] for error in problem["errors"]}
        assert problem["detail"].startswith(field)
        _, stored, _ = await movies.get("/v1/recommenders/r")
        assert stored["attributes"] == [TITLE]

    async def test_every_bad_field_is_named_at_once(self, movies: Api):
        body = {**attrs({"name": "Bad Name", "field": "director"}),
                "recommendations_per_message": 9}
        status, problem, _ = await movies.put("/v1/recommenders/r", body)
        assert status == 422
        assert {e["field"] for e in problem["errors"]} == {
            "attributes[0].name", "attributes[0].field", "recommendations_per_message"}

    async def test_bad_recommender_name_in_path(self, movies: Api):
        status, problem, _ = await movies.put("/v1/recommenders/bad%20name", attrs(TITLE))
        assert (status, problem["field"]) == (422, "recommender")


class TestValidRecommenders:
    """What Pinpoint accepts is accepted: the limits themselves, case-sensitive names."""

    async def test_limits_accepted(self, movies: Api):
        body = {
            "catalog": "movies",
            "attributes": [
                {"name": "N" * 50, "field": "title", "display_name": "Long one"},
                {"name": "title", "field": "title", "display_name": "D" * 25},
                {"name": "Title", "field": "title"},  # differs from `title` by case only
                {"name": "0-x_Y", "field": "attributes.some key"},
                *({"name": f"A{i}", "field": "genre"} for i in range(6)),
            ],
            "recommendations_per_message": 1,
            "locale": "es-mx",
        }
        status, stored, _ = await movies.put("/v1/recommenders/edge", body)
        assert status == 201, stored
        assert len(stored["attributes"]) == 10
        assert stored["locale"] == "es_MX"  # stored in one spelling

    async def test_get_answer_can_be_put_back_unchanged(self, movies: Api):
        body = {**attrs({**TITLE, "truncate": 20, "first": True, "placeholder": "-"},
                        {"name": "Price", "field": "price", "format": "currency",
                         "display_name": "Price now"}),
                "missing_items": "placeholder", "recommendations_per_message": 3,
                "locale": "de_DE", "application_ids": ["abc123"]}
        status, first, _ = await movies.put("/v1/recommenders/r", body)
        assert status == 200, first
        status, second, _ = await movies.put("/v1/recommenders/r", first)
        assert status == 200, second
        assert {k: v for k, v in second.items() if k != "updated_at"} == \
            {k: v for k, v in first.items() if k != "updated_at"}
        assert {k: first[k] for k in body} == body
