"""Hostile JSON on every route that reads it: deep nesting, numbers orjson cannot hold, NaN, lone
surrogates, a BOM, duplicate keys, NUL, long strings. Each gets a 4xx problem (or a rejected
import line) or an answer, never a 5xx, and the transform's two readers agree on every one. On the
Connect route, hostile pieces anywhere in a batch (in a profile, in its CustomerData, in its IDs)
never give a 5xx nor leave a profile unanswered."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.adapters.pinpoint import EventLimits
from service.adapters.raw_event import read_raw_event
from service.json_codec import MAX_DEPTH, nesting_exceeds
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender
from tests.support.fake_connect import FakeConnect

# Each test on the C extension's hot loops and on the pure-Python ones (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("transform_paths")

PROJECT = "0123456789abcdef0123456789abcdef"
ESCAPE = b'"Note":"caf\\u00e9",'  # a `\u` escape: the event takes the general path


def deep_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def deep_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.fixture
async def api(admin: Api) -> Api:
    await load_catalog(admin, "movies", [{"id": "1", "title": "One", "genre": "Drama"},
                                         {"id": "2", "title": "Two"}])
    await put_recommender(admin, "movies", "movies", ("Title", "title"), ("Genre", "genre"),
                          application_ids=[PROJECT],
                          connect={"ids_from": "Attributes.ids", "locale_from": "Attributes.l"})
    return admin


async def send(api: Api, method: str, path: str, body: bytes,
               content_type: str = "application/json") -> tuple[int, bytes, str]:
    async with api.client.request(method, path, data=body,
                                  headers=api.headers({"Content-Type": content_type})) as response:
        return response.status, await response.read(), response.content_type


def route_bodies(deep: bytes, escape: bytes) -> list[tuple[str, str, bytes]]:
    """(method, path, body) for each JSON route, `deep` inside a value it reads."""
    endpoint = b'{' + escape + b'"RecommendationItems":["1"],"Deep":' + deep + b"}"
    return [
        ("POST", "/v1/recommenders/movies/transform", b'{"Endpoints":{"e":' + endpoint + b"}}"),
        ("POST", "/v1/transform",
         b'{"ApplicationId":"' + PROJECT.encode() + b'","Endpoints":{"e":' + endpoint + b"}}"),
        ("POST", "/v1/recommenders/movies:preview", b'{"Endpoints":{"e":' + endpoint + b"}}"),
        ("POST", "/v1/recommenders/movies/decorate",
         b'{' + escape + b'"itemList":[{"itemId":"1","Deep":' + deep + b"}]}"),
        ("POST", "/v1/catalogs/movies/items:batchGet",
         b'{' + escape + b'"ids":["1"],"fields":' + deep + b"}"),
        ("PUT", "/v1/catalogs/movies/items/deep",
         b'{' + escape + b'"title":"Deep","attributes":{"a":' + deep + b"}}"),
        ("PATCH", "/v1/catalogs/movies/items/1",
         b'{' + escape + b'"attributes":{"a":' + deep + b"}}"),
        ("PUT", "/v1/recommenders/deep",
         b'{' + escape + b'"catalog":"movies","attributes":[{"name":"T","field":"title","x":'
         + deep + b"}]}"),
        ("PUT", "/v1/catalogs/deep", b'{' + escape + b'"x":' + deep + b"}"),
        ("POST", "/v1/recommenders/movies/connect",
         b'{"Items":{"CustomerProfiles":[{' + escape + b'"ProfileId":"p","CustomerData":"{}",'
         b'"Deep":' + deep + b"}]}}"),
    ]


class TestDeepBodies:
    """Nesting past MAX_DEPTH is a 400 naming the body on every route, at any depth."""

    @pytest.mark.parametrize("escape", [b"", ESCAPE], ids=["plain", "with-u-escape"])
    @pytest.mark.parametrize("depth", [5_000, 100_000])
    @pytest.mark.parametrize("shape", [deep_arrays, deep_objects], ids=["arrays", "objects"])
    async def test_every_json_route_refuses_it(self, api: Api, shape, depth: int, escape: bytes):
        for method, path, body in route_bodies(shape(depth), escape):
            status, answer, content_type = await send(api, method, path, body)
            assert status == 400, (path, answer[:300])
            assert content_type == "application/problem+json", path
            problem = orjson.loads(answer)
            assert problem["field"] == "body", (path, problem)
            assert f"deeper than {MAX_DEPTH} levels" in problem["detail"], (path, problem)
        # Nothing was written, and the service goes on serving.
        status, item, _ = await api.get("/v1/catalogs/movies/items/1")
        assert status == 200 and item["attributes"] == {}
        status, _, _ = await api.get("/v1/catalogs/movies/items/deep")
        assert status == 404
        status, answer, _ = await api.post("/v1/recommenders/movies/transform",
                                           {"Endpoints": {"e": {"RecommendationItems": ["1"]}}})
        assert status == 200 and answer["e"]["Recommendations"]["Title"] == ["One"]

    @pytest.mark.parametrize("depth", [5_000, 100_000])
    async def test_an_import_line_is_rejected_and_the_others_land(self, api: Api, depth: int):
        lines = [b'{"id":"a","title":"A"}',
                 b'{"id":"b","title":"B","attributes":{"x":' + deep_arrays(depth) + b"}}",
                 b'{"id":"c","title":"C","attributes":{"x":' + deep_objects(depth) + b"}}",
                 b'{"id":"d","title":"D"}']
        status, answer, _ = await send(api, "POST", "/v1/catalogs/movies/items:import",
                                       b"\n".join(lines), "application/x-ndjson")
        assert status == 200, answer
        summary = orjson.loads(answer)
        assert (summary["inserted"], summary["rejected"]) == (2, 2)
        assert [e["line"] for e in summary["errors"]] == [2, 3]
        assert all(f"deeper than {MAX_DEPTH} levels" in e["reason"] for e in summary["errors"])

    @pytest.mark.parametrize("escape", [b"", ESCAPE], ids=["fast-path", "general-path"])
    async def test_the_limit_itself_is_served_and_one_more_level_is_not(self, api: Api,
                                                                         escape: bytes):
        # The event and its Endpoints are two levels, the endpoint a third.
        inner = MAX_DEPTH - 3
        for depth, expected in ((inner, 200), (inner + 1, 400)):
            endpoint = (b'{' + escape + b'"RecommendationItems":["1"],"Deep":'
                        + deep_arrays(depth) + b"}")
            body = b'{"Endpoints":{"e":' + endpoint + b"}}"
            assert nesting_exceeds(body) is (expected == 400)
            status, answer, _ = await send(api, "POST", "/v1/recommenders/movies/transform", body)
            assert status == expected, answer[:200]
            if status == 200:
                assert json.loads(answer)["e"]["Deep"] == json.loads(deep_arrays(depth))

    async def test_an_item_at_the_limit_reads_back(self, api: Api):
        deep = deep_objects(MAX_DEPTH - 2)  # the item body, its attributes, then this
        body = b'{"title":"Deep","attributes":{"a":' + deep + b"}}"
        status, answer, _ = await send(api, "PUT", "/v1/catalogs/movies/items/deep", body)
        assert status == 201, answer[:200]
        status, item, _ = await api.get("/v1/catalogs/movies/items/deep")
        assert status == 200 and item["attributes"]["a"] == json.loads(deep)
        status, answer, _ = await api.post("/v1/catalogs/movies/items:batchGet", {"ids": ["deep"]})
        assert status == 200 and answer["items"][0]["attributes"]["a"] == json.loads(deep)


class TestNumbersOrjsonCannotHold:
    """Valid JSON numbers beyond 64-bit integers or a double's range."""

    @pytest.mark.parametrize("escape", [b"", ESCAPE], ids=["fast-path", "general-path"])
    @pytest.mark.parametrize("number", [b"1e400", b"-1E+999", b"123456789012345678901234567890",
                                        b"1" + b"0" * 400 + b".5e-3"])
    async def test_a_transform_returns_them_as_written(self, api: Api, escape: bytes,
                                                       number: bytes):
        body = (b'{"Endpoints":{"e":{' + escape + b'"RecommendationItems":["1"],"N":' + number
                + b',"L":[' + number + b"]}}}")
        status, answer, _ = await send(api, "POST", "/v1/recommenders/movies/transform", body)
        assert status == 200, answer[:300]
        assert answer.count(number) == 2
        assert json.loads(answer)["e"]["Recommendations"]["Title"] == ["One"]

    @pytest.mark.parametrize("number", [b"1e400", b"123456789012345678901234567890"])
    async def test_an_item_refuses_them_naming_the_field(self, api: Api, number: bytes):
        body = b'{"title":"X","attributes":{"n":[1,' + number + b"]}}"
        status, answer, _ = await send(api, "PUT", "/v1/catalogs/movies/items/x", body)
        assert status == 422, answer
        assert orjson.loads(answer)["field"] == "attributes.n[1]"
        status, _, _ = await api.get("/v1/catalogs/movies/items/x")
        assert status == 404

    async def test_a_price_given_as_such_a_number_is_refused_as_a_number(self, api: Api):
        body = b'{"title":"X","price":{"amount":1e400,"currency":"USD"}}'
        status, answer, _ = await send(api, "PUT", "/v1/catalogs/movies/items/x", body)
        assert status == 422
        assert "not a JSON number" in orjson.loads(answer)["detail"]


class TestOtherHostileBodies:
    """Each refused the same way wherever it is read, or read as the RFC allows."""

    @pytest.mark.parametrize(("body", "why"), [
        (b'{"Endpoints":{"e":{"RecommendationItems":["1"],"x":NaN}}}', "NaN"),
        (b'{"Endpoints":{"e":{"RecommendationItems":["1"],"x":-Infinity}}}', "Infinity"),
        (b'{"Endpoints":{"e":{"RecommendationItems":["1"],"x":"\\ud800"}}}', "a lone surrogate"),
        (b'{"Endpoints":{"e":{"RecommendationItems":["1"],"x":"\xed\xa0\x80"}}}',
         "a surrogate written as UTF-8 bytes"),
        (b'{"Endpoints":{"e":{"RecommendationItems":["1"],"x":"a\x00b"}}}', "a raw NUL"),
        (b'{"Endpoints":{"e":{"RecommendationItems":["1"],"x":"\\ud800"},"n":'
         + b"1" * 30 + b"}}", "a lone surrogate in a body read exactly"),
        (b'{"Endpoints":{"e":{"RecommendationItems":["1"],"x":"\xed\xa0\x80"},"n":'
         + b"1" * 30 + b"}}", "surrogate bytes in a body read exactly"),
    ])
    async def test_refused_with_a_400_naming_the_body(self, api: Api, body: bytes, why: str):
        for path in ("/v1/recommenders/movies/transform", "/v1/transform",
                     "/v1/recommenders/movies:preview", "/v1/recommenders/movies/connect"):
            status, answer, content_type = await send(api, "POST", path, body)
            assert status == 400, (why, path, answer)
            assert content_type == "application/problem+json"
            assert orjson.loads(answer)["field"] == "body"

    async def test_a_leading_bom_is_ignored(self, api: Api):
        event = (b'{"ApplicationId":"' + PROJECT.encode()
                 + b'","Endpoints":{"e":{"RecommendationItems":["1"]}}}')
        for path in ("/v1/recommenders/movies/transform", "/v1/transform"):
            status, answer, _ = await send(api, "POST", path, b"\xef\xbb\xbf" + event)
            assert status == 200, answer
            assert orjson.loads(answer)["e"]["Recommendations"]["Title"] == ["One"]
        status, _, _ = await send(api, "PUT", "/v1/catalogs/movies/items/b",
                                  b'\xef\xbb\xbf{"title":"B"}')
        assert status == 201
        status, answer, _ = await send(api, "POST", "/v1/catalogs/movies/items:import",
                                       b'\xef\xbb\xbf{"id":"c","title":"C"}\n',
                                       "application/x-ndjson")
        assert orjson.loads(answer)["inserted"] == 1, answer


# Hostile pieces the fast reader passes over without parsing, the general path parses.
HOSTILE_VALUES = [
    b"1e400", b"-1e400", b"1E+309", b"1e-400", b"123456789012345678901234567890",
    b"-0", b"0.1e1", b"NaN", b"Infinity", b'"\\ud800"', b'"\\udc00\\ud800"', b'"\\ud83d\\ude00"',
    b'"\xed\xa0\x80"', b'"\xef\xbb\xbf"', b'"a\x00b"', b'"\\u0000"', b'"x\x1f"', b"01", b"1.",
    b'"' + b"long " * 20_000 + b'"', deep_arrays(MAX_DEPTH - 3), deep_arrays(MAX_DEPTH - 2),
    deep_objects(MAX_DEPTH - 3), deep_objects(MAX_DEPTH), deep_arrays(3_000),
    b'{"k":1,"k":2}', b"[1,]", b"tru", b"\xff",
]
hostile = st.sampled_from(HOSTILE_VALUES)
pieces = st.lists(hostile, min_size=1, max_size=3)


def exact(body: bytes) -> Any:
    return json.loads(body)


def hostile_event(values: list[bytes], items: list[str], duplicate_items: list[str] | None,
                  at_top: bool, bom: bool) -> bytes:
    fields = b",".join(b'"H%d":' % i + value for i, value in enumerate(values))
    items_json = orjson.dumps(items)
    endpoint = b'{"RecommendationItems":' + items_json + b"," + fields
    if duplicate_items is not None:
        endpoint += b',"RecommendationItems":' + orjson.dumps(duplicate_items)
    endpoint += b"}"
    top = (b'"Top":' + values[0] + b",") if at_top else b""
    return (b"\xef\xbb\xbf" if bom else b"") + b"{" + top + b'"Endpoints":{"e":' + endpoint + b"}}"


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(values=pieces, items=st.lists(st.sampled_from(["1", "2", "none"]), min_size=1, max_size=3),
       duplicate_items=st.none() | st.lists(st.sampled_from(["1", "2"]), min_size=1, max_size=2),
       at_top=st.booleans(), bom=st.booleans())
async def test_fast_and_general_paths_give_the_same_outcome(api: Api, values, items,
                                                           duplicate_items, at_top, bom):
    body = hostile_event(values, items, duplicate_items, at_top, bom)
    general = body.replace(b'{"Endpoints":', b'{"_":"\\u0041","Endpoints":', 1)
    # The reader itself never raises, whatever it is given.
    read_raw_event(body.removeprefix(b"\xef\xbb\xbf"), EventLimits(100, 5))
    outcomes = []
    for sent in (body, general):
        status, answer, content_type = await send(api, "POST", "/v1/recommenders/movies/transform",
                                                  sent)
        assert status < 500, answer[:300]
        if status == 200:
            outcomes.append((status, exact(answer)))
        else:
            assert content_type == "application/problem+json"
            outcomes.append((status, orjson.loads(answer)["field"]))
    assert outcomes[0] == outcomes[1], (body[:300], outcomes)


def hostile_profile(value: bytes, where: str, index: int) -> bytes:
    """One Connect profile with a hostile piece: as a value of the profile entry, as the whole
    CustomerData text, as a value in it, or as its item IDs."""
    profile_id = b'"p%d"' % index
    if where == "entry":
        return (b'{"ProfileId":' + profile_id + b',"CustomerData":' + value
                + b',"IdempotencyToken":' + value + b',"X":' + value + b"}")
    inner = {"data": value, "value": b'{"Attributes":{"ids":"1","x":' + value + b"}}",
             "ids": b'{"Attributes":{"ids":' + value + b',"l":' + value + b"}}"}[where]
    # As Connect sends it: the profile's JSON text as a JSON string (escaped, whatever it holds;
    # bytes no text holds become lone surrogates, which the event itself may not carry).
    try:
        decoded = inner.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        decoded = inner.decode("utf-8", "surrogateescape")
    text = json.dumps(decoded, ensure_ascii=True).encode()
    return b'{"ProfileId":' + profile_id + b',"CustomerData":' + text + b"}"


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(profiles=st.lists(st.tuples(hostile, st.sampled_from(["entry", "data", "value", "ids"])),
                         min_size=1, max_size=5),
       top=st.none() | hostile, good_first=st.booleans())
async def test_connect_batches_are_answered_whatever_they_hold(api: Api, profiles, top,
                                                               good_first: bool):
    parts = [hostile_profile(value, where, n) for n, (value, where) in enumerate(profiles)]
    if good_first:
        parts.insert(0, b'{"ProfileId":"good","CustomerData":"{\\"Attributes\\":{\\"ids\\"'
                        b':\\"1,2\\"}}"}')
    body = (b'{"InvocationMetadata":' + (top or b"{}") + b',"Items":{"CustomerProfiles":['
            + b",".join(parts) + b"]}}")
    status, answer, content_type = await send(api, "POST", "/v1/recommenders/movies/connect",
                                              body)
    assert status < 500, answer[:300]
    if status != 200:
        assert content_type == "application/problem+json"
        assert orjson.loads(answer)["field"], answer[:300]
        return
    event = exact(body.removeprefix(b"\xef\xbb\xbf"))
    results = FakeConnect.check(event, exact(answer))
    if good_first:
        assert results[0]["send"] is True and results[0]["Recommendations"]["Title"] == \
            ["One", "Two"]
