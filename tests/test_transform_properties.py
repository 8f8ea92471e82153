"""Property test of the transform contract over generated events.

Events have 0-100 endpoints of 0-5 items, known, unknown, duplicate and malformed IDs, unicode
everywhere and unknown extra keys at every level. For each, an independent oracle says which
endpoints must come back and with which values, and the answer must match it exactly.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender

# Each test on the C extension's hot loops and on the pure-Python ones (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("transform_paths")

CATALOG = {
    "1815": ("Fleabag", "Comedy"),
    "é-1": ("Café société", "Drama"),
    "🎬42": ("Emoji 🎬", None),
    " spaced ": ("Spaced", "Sitcom"),
    "x" * 256: ("Longest ID", "Edge"),
    "LastName ": ("Trailing space", "Quirk"),
}
UNAVAILABLE = "sold-out"
PER_MESSAGE = 5

json_leaves = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
               | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=5,
)
extra_keys = st.dictionaries(st.text(max_size=10).filter(lambda k: k != "RecommendationItems"),
                             json_values, max_size=3)
item_ids = st.one_of(
    st.sampled_from([*CATALOG, UNAVAILABLE]),
    st.text(max_size=12),                                 # unknown (and sometimes "" or NUL)
    st.text(min_size=257, max_size=260),                  # overlong
)
good_items = st.lists(item_ids, min_size=1, max_size=5)
int64 = st.integers(-(2**63), 2**63 - 1)
bad_items = st.one_of(st.just([]), st.none(), st.text(max_size=3), int64,
                      st.lists(int64 | st.none(), min_size=1, max_size=3))


@st.composite
def endpoints(draw) -> Any:
    if draw(st.integers(0, 30)) == 0:
        return draw(json_leaves)  # not even an object
    endpoint = {"ChannelType": draw(st.sampled_from(["EMAIL", "SMS", "PUSH"])),
                "User": {"UserId": draw(st.text(max_size=8)),
                         "UserAttributes": draw(st.dictionaries(
                             st.text(max_size=8), st.lists(st.text(max_size=8), max_size=2),
                             max_size=2)),
                         **draw(extra_keys)},
                **draw(extra_keys)}
    choice = draw(st.integers(0, 9))
    if choice == 0:
        pass  # RecommendationItems missing
    elif choice == 1:
        endpoint["RecommendationItems"] = draw(bad_items)
    else:
        endpoint["RecommendationItems"] = draw(good_items)
    return endpoint


events = st.builds(
    lambda eps, extra: {**extra, "Endpoints": eps},
    st.dictionaries(st.text(max_size=12), endpoints(), max_size=100),
    st.dictionaries(st.text(max_size=10).filter(lambda k: k != "Endpoints"), json_values,
                    max_size=3),
)


def is_storable_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 256 and "\x00" not in value


def well_formed(endpoint: object) -> bool:
    if not isinstance(endpoint, dict):
        return False
    items = endpoint.get("RecommendationItems")
    return isinstance(items, list) and bool(items) and all(is_storable_id(i) for i in items)


def expected_recommendations(items: list[str]) -> dict[str, list[str]] | None:
    found = [CATALOG[i] for i in items if i in CATALOG][:PER_MESSAGE]
    if not found:
        return None
    return {"Title": [t for t, _ in found], "Genre": [g or "" for _, g in found]}


@pytest.fixture
async def api(admin: Api) -> Api:
    items = [{"id": i, "title": t, "genre": g} for i, (t, g) in CATALOG.items()]
    items.append({"id": UNAVAILABLE, "title": "Gone", "available": False})
    await load_catalog(admin, "props", items)
    await put_recommender(admin, "props", "props", ("Title", "title"), ("Genre", "genre"))
    return admin


@settings(max_examples=500, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(event=events)
async def test_transform_holds_the_contract(api: Api, event: dict[str, Any]):
    status, answer, _ = await api.post("/v1/recommenders/props/transform", raw=orjson.dumps(event))
    endpoints = event["Endpoints"]
    served = {eid: ep for eid, ep in endpoints.items() if well_formed(ep)}
    if not served and len(served) != len(endpoints):
        assert status == 422, answer
        return
    assert status == 200, answer

    expected = {eid: recs for eid, ep in served.items()
                if (recs := expected_recommendations(ep["RecommendationItems"])) is not None}
    # Only valid, resolvable endpoints come back, in the event's order.
    assert list(answer) == list(expected)
    for eid, returned in answer.items():
        returned = dict(returned)
        recommendations = returned.pop("Recommendations")
        # Nothing but Recommendations changed: same keys, same order, same values, same types.
        assert orjson.dumps(returned) == orjson.dumps(endpoints[eid])
        assert recommendations == expected[eid]
        lengths = {len(v) for v in recommendations.values()}
        assert len(lengths) == 1 and 1 <= lengths.pop() <= PER_MESSAGE
