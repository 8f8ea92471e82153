"""The transform's fast reader (service/adapters/raw_event.py) against the general path.

The fast path returns each endpoint's own bytes; the general path parses and re-serialises. For any
event both can serve, the two answers must mean the same, and the fast one must hold every endpoint
byte for byte. Anything the fast reader does not take must reach the general path and its errors.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.adapters.pinpoint import EventLimits
from service.adapters.raw_event import read_raw_event
from service.storage import tenants as tenant_store
from service.web.app_keys import POOL, RECOMMENDERS, RESOLVER
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender

# Each test on the C extension's hot loops and on the pure-Python ones (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("transform_paths")

PATH = "/v1/recommenders/raw/transform"
LIMITS = EventLimits(max_endpoints=100, max_items_per_endpoint=5)
CATALOG = {"1": ("One", "Drama"), "2": ("Twö", "Comedy"), "3": ("Three", None)}
# Any `\u` escape sends an event down the general path: the same event, served the other way.
GENERAL_PATH_MARK = b'"_":"\\u0041",'


@pytest.fixture
async def api(admin: Api) -> Api:
    items = [{"id": i, "title": t, "genre": g} for i, (t, g) in CATALOG.items()]
    items.append({"id": "gone", "title": "Gone", "available": False})
    await load_catalog(admin, "raw", items)
    await put_recommender(admin, "raw", "raw", ("Title", "title"), ("Genre", "genre"))
    return admin


async def post_bytes(api: Api, body: bytes) -> tuple[int, bytes]:
    async with api.client.post(PATH, data=body, headers=api.headers()) as response:
        return response.status, await response.read()


def both_paths(body: bytes) -> tuple[bytes, bytes]:
    """The event as sent, and the same event marked for the general path."""
    assert body.startswith(b"{")
    return body, b"{" + GENERAL_PATH_MARK + body[1:]


json_leaves = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
               | st.floats(allow_nan=False, allow_infinity=False)
               | st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=8))
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=6,
)
endpoint_strategy = st.builds(
    lambda extra, items, locale: {
        **extra, "RecommendationItems": items,
        **({"Demographic": {"Locale": locale}} if locale else {}),
    },
    st.dictionaries(st.sampled_from(["ChannelType", "Address", "Attributes", "User", "Odd"]),
                    json_values, max_size=4),
    st.lists(st.sampled_from([*CATALOG, "gone", "unknown"]), min_size=1, max_size=5),
    st.sampled_from([None, "en_US", "de_DE"]),
)


def exact(body: bytes) -> Any:
    """Parse keeping integers exact (orjson would read those beyond 64 bits as floats)."""
    return json.loads(body)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(endpoints=st.dictionaries(st.text(min_size=1, max_size=8), endpoint_strategy,
                                 min_size=1, max_size=20))
async def test_fast_and_general_paths_answer_alike(api: Api, endpoints: dict[str, Any]):
    # The stdlib writes integers beyond 64 bits, which orjson refuses; ensure_ascii=False keeps
    # text raw, so that only the mark below sends an event down the general path.
    body = json.dumps({"Endpoints": endpoints}, ensure_ascii=False,
                      separators=(",", ":")).encode()
    fast_body, general_body = both_paths(body)
    fast_status, fast = await post_bytes(api, fast_body)
    general_status, general = await post_bytes(api, general_body)
    assert fast_status == general_status == 200, (fast, general)
    assert exact(fast) == exact(general)
    sent = exact(body)["Endpoints"]
    for endpoint_id, endpoint in exact(fast).items():
        endpoint.pop("Recommendations")
        assert endpoint == sent[endpoint_id]


async def test_endpoints_come_back_byte_for_byte(api: Api):
    # Number spellings, key order, a duplicate key, spaces and an integer beyond 64 bits: a
    # re-serialising server would change each of these; the contract says nothing changes.
    endpoint = (b'{ "Score" : 1.0, "Big": 123456789012345678901234567890, "Exp": 1E2, '
                b'"Neg": -0, "Dup": 1, "Dup": 2, "Text": "caf\xc3\xa9",\n'
                b'"RecommendationItems": ["2", "1"] }')
    body = b'{"Endpoints": {"e1": ' + endpoint + b'}}'
    status, answer = await post_bytes(api, body)
    assert status == 200, answer
    expected_recommendations = b'{"Title":["Tw\xc3\xb6","One"],"Genre":["Comedy","Drama"]}'
    assert answer == (b'{"e1":' + endpoint[:-1] + b',"Recommendations":'
                      + expected_recommendations + b"}}")


async def test_an_endpoint_with_recommendations_already_is_answered_on_the_general_path(api: Api):
    body = b'{"Endpoints":{"e":{"Recommendations":{"Old":["x"]},"RecommendationItems":["1"]}}}'
    assert read_raw_event(body, LIMITS) is None
    status, answer = await post_bytes(api, body)
    assert status == 200
    assert orjson.loads(answer) == {"e": {"Recommendations": {"Title": ["One"], "Genre": ["Drama"]},
                                          "RecommendationItems": ["1"]}}


@pytest.mark.parametrize(("body", "why"), [
    (b'{"Endpoints":{"e":{"RecommendationItems":["1"],"Name":"\\u00e9"}}}', "a \\u escape"),
    (b'{"Endpoints":{"e":{"RecommendationItems":["1"],"Name":"\xff"}}}', "not UTF-8"),
    (b'{"Endpoints":{"e":{"RecommendationItems":["1"]},"f":{}}}', "a malformed endpoint"),
    (b'{"Endpoints":{"e":{"RecommendationItems":[""]}}}', "an empty ID"),
    (b'{"Endpoints":{"e":{"RecommendationItems":["1","2","3","1","2","3"]}}}', "six IDs"),
    (b'{"Endpoints":{"e":{"RecommendationItems":["1"],"Demographic":{"Locale":7}}}}',
     "a Locale that is not text"),
    (b'{"Endpoints":{}}', "no endpoints"),
    (b'{"Endpoints":{"e":{"RecommendationItems":["1"]}}', "not JSON"),
    (b'{"Endpoints":[]}', "Endpoints not an object"),
])
def test_unusual_events_are_left_to_the_general_path(body: bytes, why: str):
    assert read_raw_event(body, LIMITS) is None, why


async def test_general_path_errors_still_name_the_problem(api: Api):
    status, answer = await post_bytes(
        api, b'{"Endpoints":{"e":{"RecommendationItems":["1"],"Name":"\xff"}}}'
    )
    assert status == 400
    assert orjson.loads(answer)["field"] == "body"
    too_many = orjson.dumps({"Endpoints": {"e": {"RecommendationItems": ["1"] * 51}}})
    assert read_raw_event(too_many, EventLimits(1000, 50)) is None
    status, answer = await post_bytes(api, too_many)
    assert status == 422
    assert orjson.loads(answer)["errors"][0]["field"] == "Endpoints.e.RecommendationItems"


def test_the_fast_reader_collects_what_the_transform_needs():
    body = (b'{"ApplicationId":"app-1","Endpoints":{'
            b'"a":{"RecommendationItems":["1","2"],"Demographic":{"Locale":"de_DE"}},'
            b'"b":{"RecommendationItems":["2","3"],"Demographic":{"Locale":""}}}}')
    event = read_raw_event(body, LIMITS)
    assert event is not None
    assert event.application_id == "app-1"
    assert event.item_ids == ["1", "2", "3"]
    assert event.locales == {"de_DE", None}
    assert [(e[0], bytes(e[1]), e[2], e[3]) for e in event.endpoints] == [
        ("a", b'{"RecommendationItems":["1","2"],"Demographic":{"Locale":"de_DE"}}', ["1", "2"],
         "de_DE"),
        ("b", b'{"RecommendationItems":["2","3"],"Demographic":{"Locale":""}}', ["2", "3"], None),
    ]


async def test_rendered_rows_outlive_reloads_of_an_unchanged_recommender(api: Api):
    """The recommender cache reloads definitions every few seconds; rows rendered for one must
    survive that (or every reload renders the catalog anew), and must not survive a change."""
    app = api.client.app
    async with app[POOL].acquire() as conn:
        tenant_id = (await tenant_store.find_tenant(conn, "acme")).id
    lookup = app[RECOMMENDERS]
    first = await lookup.get(tenant_id, "raw")
    lookup.expire_all()
    reloaded = await lookup.get(tenant_id, "raw")
    assert reloaded is not first  # read again from Postgres...
    assert reloaded.renders is first.renders  # ...with its rendered rows kept
    await put_recommender(api, "raw", "raw", ("Title", "title"))  # a new definition
    changed = await lookup.get(tenant_id, "raw")
    assert changed.spec != first.spec
    assert changed.renders is not first.renders
    status, answer = await post_bytes(
        api, b'{"Endpoints":{"e":{"RecommendationItems":["1"]}}}'
    )
    assert (status, orjson.loads(answer)) == (200, {"e": {"RecommendationItems": ["1"],
                                                          "Recommendations": {"Title": ["One"]}}})


async def test_endpoint_ids_that_need_escaping_come_back_as_sent(api: Api):
    ids = ['a","b', "back\\slash", '"', "", "é🎬", 'x":{"y', "tab\there"]
    body = orjson.dumps({"Endpoints": {i: {"RecommendationItems": ["1"]} for i in ids}})
    assert read_raw_event(body, LIMITS) is not None  # escapes other than \u stay on the fast path
    status, answer = await post_bytes(api, body)
    assert status == 200
    assert list(orjson.loads(answer)) == ids


async def test_rows_are_kept_from_an_items_second_use_on_once_l1_is_full(api: Api):
    """While L1 has room, a row read from Postgres is kept on its item's L1 entry at once. Once L1
    is full (a catalog bigger than L1 evicts most items unused), it is rendered for its answer but
    kept only when the item is asked for again; from then on events find it rendered. Answers
    are the same every time."""
    app = api.client.app
    async with app[POOL].acquire() as conn:
        tenant_id = (await tenant_store.find_tenant(conn, "acme")).id
    recommender = await app[RECOMMENDERS].get(tenant_id, "raw")
    local = app[RESOLVER].local
    derived_key = recommender.enricher.derived_key(None)

    def kept() -> set[str]:
        return set(local.derived_table(recommender.catalog_id, derived_key) or ())

    room = local.max_entries
    local.max_entries = 2  # full once it holds 1 and 2: a new item then evicts the oldest

    body = b'{"Endpoints":{"e":{"RecommendationItems":["1","2"]}}}'
    expected = {"e": {"RecommendationItems": ["1", "2"],
                      "Recommendations": {"Title": ["One", "Twö"], "Genre": ["Drama", "Comedy"]}}}
    answers = []
    for _ in range(3):
        status, answer = await post_bytes(api, body)
        assert status == 200
        answers.append(orjson.loads(answer))
        if len(answers) == 1:
            assert kept() == set()  # read from Postgres into a full L1: answered, not kept
        else:
            assert kept() == {"1", "2"}  # found in L1 and used again: kept
    assert answers == [expected] * 3
    # One of them new to a full L1: seen once, it is answered but not admitted (admission on a
    # second miss), so nothing is evicted; one kept already.
    status, _ = await post_bytes(api, b'{"Endpoints":{"e":{"RecommendationItems":["3","1"]}}}')
    assert status == 200 and kept() == {"1", "2"}
    # Its second miss admits it, evicting one of the others (the LRU order is sampled on the
    # table's path); 3's row is kept from its next use on.
    status, _ = await post_bytes(api, b'{"Endpoints":{"e":{"RecommendationItems":["3"]}}}')
    assert status == 200 and len(kept()) == 1 and kept() < {"1", "2"}
    [evicted] = {"1", "2"} - kept()
    local.max_entries = room  # room again: the evicted one, read anew, is kept at its first use
    status, _ = await post_bytes(
        api, b'{"Endpoints":{"e":{"RecommendationItems":["%s"]}}}' % evicted.encode())
    assert status == 200 and kept() == {"1", "2"}


async def test_an_event_of_several_locales_keeps_and_uses_each_locales_rows(api: Api):
    """An event of users of several countries renders each (item, locale) once: its rows are kept
    on L1 per locale and used by the next event, and a changed item is rendered anew in each."""
    app = api.client.app
    async with app[POOL].acquire() as conn:
        tenant_id = (await tenant_store.find_tenant(conn, "acme")).id
    recommender = await app[RECOMMENDERS].get(tenant_id, "raw")
    local = app[RESOLVER].local

    def kept(locale: str | None) -> dict[str, Any]:
        key = recommender.enricher.derived_key(locale)
        return dict(local.derived_table(recommender.catalog_id, key) or {})

    body = (b'{"Endpoints":{"a":{"RecommendationItems":["1","2","unknown"],'
            b'"Demographic":{"Locale":"de_DE"}},"b":{"RecommendationItems":["2","3","gone"]}}}')
    status, first = await post_bytes(api, body)
    assert status == 200
    assert orjson.loads(first)["a"]["Recommendations"] == {"Title": ["One", "Twö"],
                                                           "Genre": ["Drama", "Comedy"]}
    assert set(kept("de_DE")) == {"1", "2"} and set(kept(None)) == {"2", "3", "gone"}
    rows = kept("de_DE")
    status, again = await post_bytes(api, body)
    assert (status, again) == (200, first)
    assert all(kept("de_DE")[i] is rows[i] for i in rows)  # used, not rendered again

    status, _, _ = await api.put("/v1/catalogs/raw/items/2", {"title": "Zwei", "genre": "Comedy"})
    assert status == 200
    status, changed = await post_bytes(api, body)
    assert status == 200
    answer = orjson.loads(changed)
    assert answer["a"]["Recommendations"]["Title"] == ["One", "Zwei"]
    assert answer["b"]["Recommendations"]["Title"] == ["Zwei", "Three"]
