"""The send-time content route through real HTTP: its Recommendations are the transform's for the
same IDs and locale; items, missing and send; both auth schemes; tenants; GET and POST; caching
headers; what Braze and Iterable actually send; bad input."""

from __future__ import annotations

import base64
import logging
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from service.web.app_keys import CONTENT_ANSWERS
from tests.support.api import Api
from tests.support.catalogs import load_catalog
from tests.support.metrics_reader import sample

CONTENT = "/v1/recommenders/{}/content"

ITEMS = [
    {"id": "1815", "title": "Fleabag", "genre": "Comedy",
     "price": {"amount": "19.99", "currency": "USD"}, "image_url": "fleabag.jpg",
     "attributes": {"style": "dark"},
     "locales": {"de_DE": {"title": "Fleabag (DE)"}, "es": {"title": "Fleabag ES", "genre": "Comedia"}}},
    {"id": "2009", "title": "The Thick of It", "genre": "Satire",
     "price": {"amount": "2000", "currency": "JPY"}, "locales": {"fr-ca": {"title": "L'Épais"}}},
    {"id": "1527", "title": "A very long title for truncation", "price": {"amount": "5.5",
                                                                          "currency": "EUR"}},
    {"id": "a,b", "title": "Comma, inside", "genre": "Quirk"},
    {"id": "é 🎬+%&=", "title": "Unicode and URL characters", "image_url": "a b/c?.png"},
    {"id": "x" * 256, "title": "Longest ID"},
    {"id": "gone", "title": "Sold out", "available": False},
]
KNOWN = [i["id"] for i in ITEMS if i.get("available", True)]
ATTRIBUTES = [
    {"name": "Title", "field": "title"},
    {"name": "Price", "field": "price", "format": "currency"},
    {"name": "Genre", "field": "genre", "first": True, "placeholder": "-"},
    {"name": "Image", "field": "image_url", "template": "https://cdn.example.com/{value}?w=600"},
    {"name": "Short", "field": "title", "truncate": 8},
    {"name": "Style", "field": "attributes.style", "placeholder": "plain"},
]
POLICIES = {"skips": "skip", "pads": "placeholder", "drops": "drop_endpoint"}
LOCALES = [None, "de_DE", "de", "es_MX", "es-mx", "fr_CA", "ja_JP", "en_GB", "zz"]


def basic(key: str, user: str = "braze") -> str:
    return "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()


@pytest.fixture
async def api(admin: Api) -> Api:
    await load_catalog(admin, "movies", ITEMS)
    for name, policy in POLICIES.items():
        status, body, _ = await admin.put(f"/v1/recommenders/{name}", {
            "catalog": "movies", "attributes": ATTRIBUTES, "missing_items": policy,
            "recommendations_per_message": 3, "locale": "en_US"})
        assert status in (200, 201), body
    return admin


async def get_content(api: Api, recommender: str, ids: list[str], locale: str | None = None,
                      **kw: Any):
    """GET with `ids` repeated (each value one whole ID, whatever it holds; a lone ID holding a
    comma is followed by an empty `ids=`, which makes it repeated)."""
    params = [("ids", i) for i in ids]
    if len(ids) == 1 and "," in ids[0]:
        params.append(("ids", ""))
    params += [("locale", locale)] if locale is not None else []
    return await api.get(str(URL(CONTENT.format(recommender)).with_query(params)), **kw)


async def transform_recommendations(api: Api, recommender: str, ids: list[str],
                                    locale: str | None) -> dict | None:
    endpoint: dict[str, Any] = {"RecommendationItems": ids}
    if locale is not None:
        endpoint["Demographic"] = {"Locale": locale}
    status, answer, _ = await api.post(f"/v1/recommenders/{recommender}/transform",
                                       {"Endpoints": {"e": endpoint}})
    assert status == 200, answer
    return answer["e"]["Recommendations"] if "e" in answer else None


id_lists = st.lists(st.sampled_from([*KNOWN, "gone", "unknown", "ünknown, too"]),
                    min_size=1, max_size=8)


class TestSameAsTheTransform:
    """For any IDs and locale, Recommendations is exactly what the transform adds to an endpoint."""

    @settings(max_examples=60, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(ids=id_lists, locale=st.sampled_from(LOCALES),
           recommender=st.sampled_from(sorted(POLICIES)))
    async def test_generated_ids_and_locales(self, api: Api, ids: list[str], locale: str | None,
                                             recommender: str):
        status, answer, _ = await get_content(api, recommender, ids, locale)
        assert status == 200, answer
        expected = await transform_recommendations(api, recommender, ids, locale)
        assert answer["Recommendations"] == (expected or {})
        assert answer["send"] is (expected is not None)
        assert answer["missing"] == list(dict.fromkeys(i for i in ids if i not in KNOWN))
        if answer["send"]:
            assert [item["id"] for item in answer["items"]] == [i for i in ids if i in KNOWN]
        else:
            assert answer["items"] == []
        # Each item shows the same values the Recommendations arrays hold for it.
        for position, item in enumerate(answer["items"][:3]):
            assert item["Title"] == answer["Recommendations"]["Title"][position] or \
                recommender == "pads"

    async def test_items_carry_each_attribute_rendered(self, api: Api):
        status, answer, headers = await get_content(api, "skips", ["1815", "2009"], "de_DE")
        assert status == 200
        assert headers["Content-Type"].startswith("application/json")
        assert answer == {
            "recommender": "skips", "locale": "de_DE", "send": True,
            "items": [
                {"id": "1815", "Title": "Fleabag (DE)", "Price": "19,99\xa0$", "Genre": "Comedy",
                 "Image": "https://cdn.example.com/fleabag.jpg?w=600", "Short": "Fleabag…",
                 "Style": "dark"},
                {"id": "2009", "Title": "The Thick of It", "Price": "2.000\xa0¥",
                 "Genre": "Satire", "Image": "", "Short": "The…",
                 "Style": "plain"},
            ],
            "Recommendations": {
                "Title": ["Fleabag (DE)", "The Thick of It"], "Price": ["19,99\xa0$", "2.000\xa0¥"],
                "Genre": "Comedy", "Image": ["https://cdn.example.com/fleabag.jpg?w=600", ""],
                "Short": ["Fleabag…", "The…"], "Style": ["dark", "plain"]},
            "missing": [],
        }


class TestBothAssemblies:
    """The answer assembled from serialised rows (the usual recommender) is byte for byte the
    answer object serialised (the general path, for the other policies)."""

    @settings(max_examples=40, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(ids=id_lists, locale=st.sampled_from(LOCALES), scored=st.booleans())
    async def test_same_bytes(self, api: Api, ids: list[str], locale: str | None, scored: bool):
        from service import json_codec
        from service.adapters import content
        from service.resolution.resolver import Resolved
        from service.storage import items as item_store
        from service.storage import tenants as tenant_store
        from service.web.app_keys import POOL, RECOMMENDERS

        app = api.client.app
        tenant = await tenant_store.find_tenant(app[POOL], "acme")
        recommender = await app[RECOMMENDERS].load(tenant.id, "skips")
        rows = await item_store.fetch_items(app[POOL], recommender.catalog_id, list(set(ids)))
        resolved = Resolved({row["id"]: row for row in rows})
        query = content.ContentQuery(ids, locale)
        extras = [{"score": n / 10} for n in range(len(ids))] if scored else None
        fields = {"recommendation_id": "RID-1"} if scored else None
        assert content.serves_json(recommender.enricher)
        body, send, _ = content.content_answer_json("skips", recommender.enricher, query,
                                                    resolved, extras, fields)
        answer = content.content_answer("skips", recommender.enricher, query, resolved, extras)
        answer.update(fields or {})
        assert body == json_codec.dumps(answer)
        assert send is answer["send"]


class TestItemsMissingAndSend:
    """Request order and duplicates are kept; missing IDs are named once; send says whether to."""

    async def test_order_duplicates_and_missing(self, api: Api):
        ids = ["2009", "nope", "1815", "2009", "gone", "nope"]
        status, answer, _ = await get_content(api, "skips", ids)
        assert status == 200
        assert [i["id"] for i in answer["items"]] == ["2009", "1815", "2009"]
        assert answer["missing"] == ["nope", "gone"]
        assert answer["Recommendations"]["Title"] == ["The Thick of It", "Fleabag",
                                                      "The Thick of It"]
        assert answer["send"] is True
        assert answer["locale"] == "en_US"

    async def test_items_are_not_capped_recommendations_are(self, api: Api):
        status, answer, _ = await get_content(api, "skips", KNOWN)
        assert status == 200
        assert len(answer["items"]) == len(KNOWN) == 6
        assert len(answer["Recommendations"]["Title"]) == 3  # recommendations_per_message

    async def test_nothing_known_is_a_200_with_send_false(self, api: Api):
        status, answer, _ = await get_content(api, "skips", ["nope", "gone"])
        assert status == 200
        assert answer["send"] is False
        assert answer["items"] == [] and answer["Recommendations"] == {}
        assert answer["missing"] == ["nope", "gone"]

    async def test_drop_endpoint_with_one_missing_sends_nothing(self, api: Api):
        status, answer, _ = await get_content(api, "drops", ["1815", "nope"])
        assert status == 200
        assert (answer["send"], answer["items"], answer["missing"]) == (False, [], ["nope"])

    async def test_placeholders_stand_in_recommendations_only(self, api: Api):
        status, answer, _ = await get_content(api, "pads", ["nope", "1815"])
        assert status == 200
        assert answer["Recommendations"]["Title"] == ["", "Fleabag"]
        assert [i["id"] for i in answer["items"]] == ["1815"]
        assert answer["missing"] == ["nope"]


class TestQueryForms:
    """Comma-separated or repeated `ids`; POST with a JSON body answers the same."""

    async def test_comma_separated_equals_repeated(self, api: Api):
        _, repeated, _ = await get_content(api, "skips", ["1815", "2009", "1527"])
        status, commas, _ = await api.get(CONTENT.format("skips") + "?ids=1815,2009,1527")
        assert status == 200
        assert commas == repeated

    async def test_repeated_ids_may_hold_commas(self, api: Api):
        status, answer, _ = await api.get(CONTENT.format("skips") + "?ids=a,b&ids=1815")
        assert status == 200
        assert [i["id"] for i in answer["items"]] == ["a,b", "1815"]
        # One value is split on commas: the same text is then two unknown IDs.
        status, answer, _ = await api.get(CONTENT.format("skips") + "?ids=a,b")
        assert answer["missing"] == ["a", "b"]

    async def test_a_trailing_empty_id_is_ignored(self, api: Api):
        status, answer, _ = await api.get(CONTENT.format("skips") + "?ids=1815,2009,")
        assert status == 200
        assert [i["id"] for i in answer["items"]] == ["1815", "2009"]
        status, answer, _ = await api.get(CONTENT.format("skips") + "?ids=a,b&ids=")
        assert [i["id"] for i in answer["items"]] == ["a,b"]

    async def test_post_equals_get(self, api: Api):
        ids = ["é 🎬+%&=", "a,b", "nope", "1815"]
        _, got, get_headers = await get_content(api, "skips", ids, "es_MX")
        status, posted, post_headers = await api.post(CONTENT.format("skips"),
                                                      {"ids": ids, "locale": "es_MX"})
        assert status == 200
        assert posted == got
        assert post_headers["ETag"] == get_headers["ETag"]

    async def test_unknown_query_parameters_are_ignored(self, api: Api):
        status, answer, _ = await api.get(CONTENT.format("skips") + "?ids=1815&cb=12345")
        assert status == 200 and answer["items"][0]["id"] == "1815"


class TestAuth:
    """Bearer or Basic (the key as password, any user); a wrong key is a 401 that repeats no
    secret; another tenant's recommender does not exist."""

    async def test_basic_and_bearer_answer_the_same(self, api: Api, make_key):
        key = await make_key("acme", "transform")
        bearer = await get_content(api, "skips", ["1815"], headers={"Authorization": f"Bearer {key}"})
        for user in ("braze", "", "any user name"):
            answer = await get_content(api, "skips", ["1815"],
                                       headers={"Authorization": basic(key, user)})
            assert answer[:2] == bearer[:2]
            assert answer[0] == 200
        # `curl -u KEY:`, the key as the user name and no password.
        answer = await get_content(api, "skips", ["1815"], headers={
            "Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()})
        assert answer[:2] == bearer[:2]

    @pytest.mark.parametrize("header", [
        "Basic " + base64.b64encode(b"braze:ce_" + b"A" * 43).decode(),
        "Bearer ce_" + "B" * 43,
        "Basic not-base64!",
        "Basic " + base64.b64encode(b"braze-without-a-password").decode(),
        "Basic " + base64.b64encode(b"braze:").decode(),
        "Digest abc",
        "",
    ])
    async def test_a_wrong_credential_is_a_401_naming_no_secret(self, api: Api, header: str,
                                                                caplog):
        with caplog.at_level(logging.INFO):
            status, problem, headers = await get_content(api, "skips", ["1815"],
                                                         headers={"Authorization": header})
        assert status == 401
        assert headers["Content-Type"].startswith("application/problem+json")
        assert problem["field"] == "Authorization"
        secret = header.partition(" ")[2]
        if secret:
            assert secret not in str(problem)
            assert secret not in caplog.text
            assert base64.b64encode(b"braze:ce_" + b"A" * 43).decode() not in caplog.text

    async def test_the_access_log_shows_only_the_key_prefix(self, api: Api, make_key, caplog):
        key = await make_key("acme", "transform")
        with caplog.at_level(logging.INFO, logger="service.requests"):
            status, _, _ = await get_content(api, "skips", ["1815"],
                                             headers={"Authorization": basic(key)})
        assert status == 200
        assert key not in caplog.text and basic(key) not in caplog.text
        assert [r.key for r in caplog.records if getattr(r, "route", None) == "get_content"] == \
            [key[:11]]

    async def test_needs_the_transform_scope(self, api: Api, make_key):
        reader = await make_key("acme", "catalog:read")
        status, problem, _ = await get_content(api, "skips", ["1815"],
                                               headers={"Authorization": basic(reader)})
        assert (status, problem["field"]) == (403, "Authorization")

    async def test_another_tenants_recommender_is_not_found(self, api: Api, make_key):
        other = await make_key("globex", "transform")
        for method in ("GET", "POST"):
            if method == "GET":
                status, problem, _ = await get_content(
                    api, "skips", ["1815"], headers={"Authorization": basic(other)})
            else:
                status, problem, _ = await api.post(
                    CONTENT.format("skips"), {"ids": ["1815"]},
                    headers={"Authorization": f"Bearer {other}"})
            assert status == 404
            assert problem["field"] == "recommender"


class TestCaching:
    """ETag and If-None-Match (304); Cache-Control from the recommender's content_max_age."""

    async def test_etag_and_304(self, api: Api):
        status, _, headers = await get_content(api, "skips", ["1815", "2009"], "de_DE")
        assert status == 200
        etag = headers["ETag"]
        assert headers["Cache-Control"] == "private, max-age=300"
        status, body, again = await get_content(api, "skips", ["1815", "2009"], "de_DE",
                                                headers={"If-None-Match": etag})
        assert (status, body) == (304, None)
        assert again["ETag"] == etag
        # Another locale or another ID list is another answer.
        assert (await get_content(api, "skips", ["1815", "2009"], "es"))[2]["ETag"] != etag
        assert (await get_content(api, "skips", ["2009", "1815"], "de_DE"))[2]["ETag"] != etag

    async def test_a_changed_item_changes_the_etag(self, api: Api):
        _, _, headers = await get_content(api, "skips", ["1527", "2009"])
        etag = headers["ETag"]
        status, _, _ = await api.patch("/v1/catalogs/movies/items/1527", {"title": "New title"})
        assert status == 200
        status, answer, changed = await get_content(api, "skips", ["1527", "2009"],
                                                    headers={"If-None-Match": etag})
        assert status == 200
        assert answer["items"][0]["Title"] == "New title"
        assert changed["ETag"] != etag

    async def test_a_kept_answer_is_served_only_while_its_rows_are_current(self, api: Api):
        answers = api.client.app[CONTENT_ANSWERS]
        first = await get_content(api, "skips", ["1527", "2009", "gone"])
        assert len(answers) == 1  # kept: every ID's row is in L1 (gone's: not shown)
        again = await get_content(api, "skips", ["1527", "2009", "gone"])
        assert again[:2] == first[:2] and again[2]["ETag"] == first[2]["ETag"]
        assert (await api.patch("/v1/catalogs/movies/items/2009", {"title": "Changed"}))[0] == 200
        _, answer, _ = await get_content(api, "skips", ["1527", "2009", "gone"])
        assert [i["Title"] for i in answer["items"]] == [first[1]["items"][0]["Title"], "Changed"]
        assert (await api.patch("/v1/catalogs/movies/items/gone", {"available": True}))[0] == 200
        _, answer, _ = await get_content(api, "skips", ["1527", "2009", "gone"])
        assert [i["id"] for i in answer["items"]] == ["1527", "2009", "gone"]
        spec = (await api.get("/v1/recommenders/skips"))[1]
        spec["attributes"] = [{"name": "Name", "field": "title"}]
        assert (await api.put("/v1/recommenders/skips", spec))[0] == 200
        _, answer, _ = await get_content(api, "skips", ["1527", "2009", "gone"])
        assert answer["items"][1] == {"id": "2009", "Name": "Changed"}

    async def test_an_answer_with_an_unknown_id_is_not_kept(self, api: Api):
        answers = api.client.app[CONTENT_ANSWERS]
        _, answer, _ = await get_content(api, "skips", ["1527", "later"])
        assert answer["missing"] == ["later"] and len(answers) == 0
        assert (await api.put("/v1/catalogs/movies/items/later", {"title": "Later"}))[0] in (
            200, 201)
        _, answer, _ = await get_content(api, "skips", ["1527", "later"])
        assert answer["missing"] == [] and answer["items"][1]["Title"] == "Later"

    async def test_content_max_age_round_trips_and_sets_cache_control(self, api: Api):
        status, recommender, _ = await api.get("/v1/recommenders/skips")
        assert recommender["content_max_age"] == 300  # the default
        recommender["content_max_age"] = 0
        status, saved, _ = await api.put("/v1/recommenders/skips", recommender)
        assert status == 200 and saved["content_max_age"] == 0
        assert (await api.get("/v1/recommenders/skips"))[1] == saved
        _, _, headers = await get_content(api, "skips", ["1815"])
        assert headers["Cache-Control"] == "private, no-cache"
        recommender["content_max_age"] = 86_400
        assert (await api.put("/v1/recommenders/skips", recommender))[0] == 200
        assert (await get_content(api, "skips", ["1815"]))[2]["Cache-Control"] == \
            "private, max-age=86400"

    @pytest.mark.parametrize("value", [-1, 86_401, "300", 1.5, True, None])
    async def test_bad_content_max_age_is_a_422(self, api: Api, value: object):
        status, recommender, _ = await api.get("/v1/recommenders/skips")
        recommender["content_max_age"] = value
        status, problem, _ = await api.put("/v1/recommenders/skips", recommender)
        assert status == 422
        assert problem["field"] == "content_max_age"
        assert (await api.get("/v1/recommenders/skips"))[1]["content_max_age"] == 300


class TestWhatPlatformsSend:
    """Requests shaped exactly as Braze Connected Content and an Iterable data feed send them."""

    async def test_braze_connected_content(self, api: Api, make_key):
        key = await make_key("acme", "transform")
        # {% connected_content https://…/content?ids={{ids | join: ',' | url_param_escape}}
        #    &locale={{${language}}} :basic_auth enricher :save c %}: Liquid's url_param_escape
        # encodes the commas and everything but unreserved characters.
        ids = ",".join(["1815", "é 🎬+%&=", "nope"])
        query = f"ids={quote(ids, safe='')}&locale=es"
        url = f"{api.client.make_url(CONTENT.format('skips'))}?{query}"
        headers = {"Content-Type": "application/json", "Accept": "*/*",
                   "User-Agent": "Braze Sender 75c2ad7", "Authorization": basic(key, "enricher")}
        async with api.client.session.get(URL(url, encoded=True), headers=headers) as answer:
            assert answer.status == 200
            assert answer.content_type == "application/json"
            body = await answer.json()
        assert isinstance(body, dict)
        assert [i["id"] for i in body["items"]] == ["1815", "é 🎬+%&="]
        assert body["missing"] == ["nope"] and body["send"] is True
        assert body["items"][0]["Title"] == "Fleabag ES"

    async def test_iterable_data_feed(self, api: Api, make_key):
        key = await make_key("acme", "transform")
        # https://…/content?ids=[[recommended_ids]]&locale=[[locale]] with a static
        # Authorization header; the user's fields may be empty.
        url = api.client.make_url(CONTENT.format("skips")).with_query("ids=2009,1527&locale=")
        headers = {"Accept": "application/json", "User-Agent": "Iterable",
                   "Authorization": f"Bearer {key}"}
        async with api.client.session.get(url, headers=headers) as answer:
            assert answer.status == 200
            body = await answer.json()
        assert isinstance(body, dict)
        assert body["locale"] == "en_US"
        assert [i["id"] for i in body["items"]] == ["2009", "1527"]


class TestBadInput:
    """Each bad input is a 4xx problem naming the field; none is a 5xx."""

    @pytest.mark.parametrize(("query", "field"), [
        ("", "ids"),
        ("?ids=", "ids"),
        ("?ids=,", "ids[0]"),
        ("?ids=1,,2", "ids[1]"),
        ("?ids=" + ",".join(map(str, range(51))), "ids"),
        ("?ids=" + "y" * 257, "ids[0]"),
        ("?ids=1&ids=" + "y" * 257, "ids[1]"),
        ("?ids=1%00", "ids[0]"),
        ("?ids=1&locale=not a locale", "locale"),
        ("?ids=1&locale=" + "de_" + "x" * 70, "locale"),
        ("?ids=1&locale=de_DE%00", "locale"),
    ])
    async def test_get(self, api: Api, query: str, field: str):
        status, problem, headers = await api.get(CONTENT.format("skips") + query)
        assert status == 422, problem
        assert headers["Content-Type"].startswith("application/problem+json")
        assert problem["field"] == field

    @pytest.mark.parametrize(("body", "status", "field"), [
        (b"not json", 400, "body"),
        (b"", 400, "body"),
        (b"[]", 422, "body"),
        (b'{"ids": "1815"}', 422, "ids"),
        (b'{"ids": []}', 422, "ids"),
        (b'{"locale": "de"}', 422, "ids"),
        (b'{"ids": [1815]}', 422, "ids[0]"),
        (b'{"ids": ["1815"], "locale": 7}', 422, "locale"),
        (b'{"ids": ["1815"], "locale": "x y"}', 422, "locale"),
        (b'{"ids": ["1815"], "extra": 1}', 422, "extra"),
    ])
    async def test_post(self, api: Api, body: bytes, status: int, field: str):
        got, problem, _ = await api.post(CONTENT.format("skips"), raw=body)
        assert (got, problem["field"]) == (status, field), problem

    async def test_post_must_be_json(self, api: Api):
        status, problem, _ = await api.post(CONTENT.format("skips"), raw=b"ids=1815",
                                            headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert (status, problem["field"]) == (415, "Content-Type")

    async def test_limit_follows_the_setting(self, aiohttp_client, settings, make_key):
        import dataclasses

        from service.web.app import create_app

        client = await aiohttp_client(create_app(dataclasses.replace(settings, max_content_ids=2)))
        api = Api(client, await make_key("acme", "admin"))
        await load_catalog(api, "movies", ITEMS[:1])
        await api.put("/v1/recommenders/skips", {"catalog": "movies", "attributes": ATTRIBUTES})
        assert (await api.get(CONTENT.format("skips") + "?ids=1815,1815"))[0] == 200
        status, problem, _ = await api.get(CONTENT.format("skips") + "?ids=1815,1815,1815")
        assert (status, problem["field"]) == (422, "ids")

    async def test_unknown_recommender_and_bad_name(self, api: Api):
        assert (await api.get(CONTENT.format("nobody") + "?ids=1"))[1]["field"] == "recommender"
        status, problem, _ = await api.get(CONTENT.format("bad%20name") + "?ids=1")
        assert (status, problem["field"]) == (422, "recommender")


class TestMetrics:
    """Requests are counted by route, GET and POST apart."""

    async def test_by_route(self, api: Api):
        await get_content(api, "skips", ["1815"])
        await api.post(CONTENT.format("skips"), {"ids": ["1815"]})
        app = api.client.app
        assert sample(app, "enricher_http_requests_total", route="get_content", method="GET",
                      status="200") == 1
        assert sample(app, "enricher_http_requests_total", route="post_content", method="POST",
                      status="200") == 1
