"""The C extension (service/_speedups.c) against what it replaces and against a JSON parser.

The reader is held to orjson: whatever it accepts is JSON, and what it reports of each endpoint
(its ID, its text, its items, its locale) is what orjson reads there; whatever orjson refuses, it
refuses. The writer is held to the pure-Python loop it replaces (service/adapters/pinpoint.py),
answer for answer. The app-level tests of the transform run on both paths (the `transform_paths`
fixture), so every event they send is answered by each.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from service.adapters import pinpoint, raw_event
from service.adapters.pinpoint import EventLimits
from service.enrichment.enrich import Enricher
from service.enrichment.recommenders import AttributeSpec, RecommenderSpec
from service.items import MAX_ID_LENGTH
from service.json_codec import MAX_DEPTH
from service.resolution.resolver import Resolved
from service.speedups import native

LIMITS = EventLimits(max_endpoints=20, max_items_per_endpoint=5)

needs_native = pytest.mark.skipif(native is None, reason="the C extension is not built here")


def a_compiler_is_here() -> bool:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(compiler) is not None


def test_the_extension_is_built_where_a_compiler_is():
    """`pip install` (make test's, the Dockerfile's) builds it wherever a C compiler is found;
    a build that failed silently would leave every service on the slower path."""
    if os.environ.get("CATALOG_ENRICHER_NO_EXTENSIONS"):
        pytest.skip("CATALOG_ENRICHER_NO_EXTENSIONS turns it off")
    if not a_compiler_is_here():
        pytest.skip("no C compiler here: the pure-Python path serves")
    assert native is not None, "the C extension was not built: run `pip install -e .` again"


def test_the_environment_turns_it_off():
    found = subprocess.run(
        [sys.executable, "-c", "from service.speedups import native; print(native)"],
        env={**os.environ, "CATALOG_ENRICHER_NO_EXTENSIONS": "1"}, capture_output=True,
        text=True, check=True, timeout=60)
    assert found.stdout.strip() == "None"


# --- the reader -----------------------------------------------------------------------------

def scan(body: bytes) -> raw_event.RawEvent | None:
    return raw_event._scanned(body, LIMITS)


def as_read(event: raw_event.RawEvent) -> tuple:
    """What a reader found, with each endpoint's text as bytes (a Raw or a memoryview)."""
    return (event.application_id,
            [(endpoint_id, bytes(text), items, locale)
             for endpoint_id, text, items, locale in event.endpoints],
            event.item_ids, event.locales)


def what_orjson_reads(body: bytes) -> tuple | None:
    """The same, from orjson's reading of the body, for an event the transform's fast path may
    take (else None)."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    endpoints = event.get("Endpoints") if isinstance(event, dict) else None
    if not isinstance(endpoints, dict) or not endpoints:
        return None
    found, every_id, locales = [], {}, set()
    for endpoint_id, endpoint in endpoints.items():
        items = endpoint.get("RecommendationItems") if isinstance(endpoint, dict) else None
        if not isinstance(items, list) or not items:
            return None
        demographic = endpoint.get("Demographic")
        locale = demographic.get("Locale") if isinstance(demographic, dict) else None
        locales.add(locale or None)
        every_id.update(dict.fromkeys(items))
        found.append((endpoint_id, endpoint, items, locale or None))
    application_id = event.get("ApplicationId")
    return (application_id or None, found, list(every_id), locales)


IDS = st.one_of(
    st.sampled_from(["1815", "2009", "6579c22f-be2b-444c-a52b-0116dd82df6c", "é🎬", "a b"]),
    st.text(min_size=1, max_size=12).filter(lambda t: "\x00" not in t))
WORDS = st.text(max_size=12)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                    st.floats(allow_nan=False, allow_infinity=False), WORDS)
NESTED = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(WORDS, inner, max_size=3)), max_leaves=8)


@st.composite
def endpoints(draw) -> dict:
    endpoint = draw(st.dictionaries(
        st.sampled_from(["ChannelType", "Address", "Attributes", "User", "OptOut", "x"]),
        NESTED, max_size=4))
    endpoint["RecommendationItems"] = draw(st.lists(IDS, min_size=1, max_size=5))
    demographic = draw(st.one_of(
        st.none(), st.just({}),
        st.fixed_dictionaries({"Locale": st.one_of(st.none(), st.sampled_from(
            ["en_US", "de_DE", "", "pt-BR"]))}, optional={"Timezone": WORDS})))
    if demographic is not None or draw(st.booleans()):
        endpoint["Demographic"] = demographic
    return endpoint


EVENTS = st.fixed_dictionaries(
    {"Endpoints": st.dictionaries(st.text(max_size=10), endpoints(), min_size=1, max_size=6)},
    optional={"ApplicationId": st.sampled_from(["app-1", "x_y"]), "CampaignId": WORDS,
              "Extra": NESTED})


# A `\uXXXX` escape: a backslash and `u` preceded by an even number of backslashes (`\\u` is
# an escaped backslash and a plain `u`).
UNICODE_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u")


def escaped(text: str) -> bool:
    """Whether JSON writes `text` with an escape (a quote, a backslash, a control character)."""
    return any(c in '"\\' or ord(c) < 0x20 for c in text)


def ids_and_locales(event: dict) -> list[str]:
    found = []
    for endpoint in event["Endpoints"].values():
        found += endpoint["RecommendationItems"]
        demographic = endpoint.get("Demographic")
        if isinstance(demographic, dict) and isinstance(demographic.get("Locale"), str):
            found.append(demographic["Locale"])
    return found


@needs_native
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=EVENTS, indent=st.booleans())
def test_what_it_reads_is_what_orjson_reads(event: dict, indent: bool):
    body = orjson.dumps(event, option=orjson.OPT_INDENT_2 if indent else 0)
    read = scan(body)
    expected = what_orjson_reads(body)
    if any(len(i) > MAX_ID_LENGTH for e in event["Endpoints"].values()
           for i in e["RecommendationItems"]) or UNICODE_ESCAPE.search(body):
        assert read is None
        return
    if read is None:
        # An escaped item ID or locale is the general path's by design (see read_items).
        assert any(escaped(text) for text in ids_and_locales(event))
        return
    assert expected is not None
    application_id, found, item_ids, locales = as_read(read)
    assert (application_id, item_ids, locales) == (expected[0], expected[2], expected[3])
    assert [(i, orjson.loads(text), items, locale) for i, text, items, locale in found] \
        == expected[1]


@needs_native
@settings(max_examples=300, deadline=None)
@given(event=EVENTS)
def test_it_reads_what_the_python_reader_reads(event: dict):
    body = orjson.dumps(event)
    by_c, by_python = scan(body), raw_event.read_in_python(body, LIMITS)
    if by_c is not None and by_python is not None:
        assert as_read(by_c) == as_read(by_python)


@needs_native
@settings(max_examples=500, deadline=None)
@given(event=EVENTS, cut=st.integers(0, 10_000), byte=st.integers(0, 255),
       where=st.integers(0, 10_000))
def test_what_is_not_json_it_refuses(event: dict, cut: int, byte: int, where: int):
    body = bytearray(orjson.dumps(event))
    mutated = [bytes(body[: cut % len(body)])]
    flipped = bytearray(body)
    flipped[where % len(body)] = byte
    mutated.append(bytes(flipped))
    for text in mutated:
        try:
            orjson.loads(text)
        except orjson.JSONDecodeError:
            assert scan(text) is None, text


@needs_native
@pytest.mark.parametrize("body", [
    b'{"Endpoints":{"e":{"RecommendationItems":["1"]}}',  # unclosed
    b'{"Endpoints":{"e":{"RecommendationItems":["1"]}}} x',  # trailing text
    b'\xef\xbb\xbf{"Endpoints":{"e":{"RecommendationItems":["1"]}}}',  # a byte order mark
    b'{"Endpoints":{"e":{"RecommendationItems":["\\u0031"]}}}',  # \u: the general path's
    b'{"Endpoints":{"e":{"RecommendationItems":["1"],"Recommendations":{}}}}',
    b'{"Endpoints":{"e":{"RecommendationItems":[]}}}',
    b'{"Endpoints":{"e":{"RecommendationItems":[""]}}}',
    b'{"Endpoints":{"e":{"RecommendationItems":["1","2","3","4","5","6"]}}}',  # > 5
    b'{"Endpoints":{"e":{"RecommendationItems":[1]}}}',
    b'{"Endpoints":{"e":{"RecommendationItems":"1"}}}',
    b'{"Endpoints":{"e":{}}}',
    b'{"Endpoints":{"e":[]}}',
    b'{"Endpoints":{}}',
    b'{"Endpoints":[]}',
    b'{"endpoints":{"e":{"RecommendationItems":["1"]}}}',
    b'{"Endpoints":{"e":{"RecommendationItems":["1"]},"e":{"RecommendationItems":["2"]}}}',
    b'{"Endpoints":{"e":{"RecommendationItems":["1"],"Demographic":"en_US"}}}',
    b'{"Endpoints":{"e":{"RecommendationItems":["1"],"Demographic":{"Locale":5}}}}',
    b'{"ApplicationId":5,"Endpoints":{"e":{"RecommendationItems":["1"]}}}',
    b'{"Endpoints":{"e":{"RecommendationItems":["\xff"]}}}',  # not UTF-8
    b'{"Endpoints":{"e":{"RecommendationItems":["\xed\xa0\x80"]}}}',  # a surrogate
    b'{"Endpoints":{"e":{"RecommendationItems":["\xc0\xaf"]}}}',  # overlong
    b'{"Endpoints":{"e":{"RecommendationItems":["a\tb"]}}}',  # a raw control character
    b'{"Endpoints":{"e":{"RecommendationItems":["1"],"x":01}}}',
    b'{"Endpoints":{"e":{"RecommendationItems":["1"],"x":1.}}}',
    b'{"Endpoints":{"e":{"RecommendationItems":["1"],"x":tru}}}',
    b'{"Endpoints":{"e":{"RecommendationItems":["1"],"x":[1,]}}}',
    b'{"Endpoints":{"e":{"RecommendationItems":["1"],"x":"\\q"}}}',
    ("x" * (MAX_ID_LENGTH + 1)).join([b'{"Endpoints":{"e":{"RecommendationItems":["'.decode(),
                                      '"]}}}']).encode(),
])
def test_what_the_general_path_must_explain_it_leaves_to_it(body: bytes):
    assert scan(body) is None


@needs_native
def test_nesting_is_held_to_the_limit():
    def event(depth: int) -> bytes:
        # The event is 3 levels down to the endpoint; its "x" member nests the rest.
        inner = "[" * (depth - 3) + "]" * (depth - 3)
        return f'{{"Endpoints":{{"e":{{"RecommendationItems":["1"],"x":{inner}}}}}}}'.encode()

    assert scan(event(MAX_DEPTH)) is not None
    assert scan(event(MAX_DEPTH + 1)) is None
    assert raw_event.read_in_python(event(MAX_DEPTH), LIMITS) is not None
    assert raw_event.read_in_python(event(MAX_DEPTH + 1), LIMITS) is None


@needs_native
def test_an_id_of_the_longest_length_in_characters_not_bytes():
    longest = "é" * MAX_ID_LENGTH  # 512 bytes
    body = orjson.dumps({"Endpoints": {"e": {"RecommendationItems": [longest]}}})
    assert scan(body).item_ids == [longest]  # type: ignore[union-attr]


# --- the writer -----------------------------------------------------------------------------

def enricher(attributes: int, first: tuple[bool, ...], cap: int) -> Enricher:
    return Enricher(RecommenderSpec(
        "c", tuple(AttributeSpec(f"A{n}", "title", first=first[n]) for n in range(attributes)),
        recommendations_per_message=cap))


@st.composite
def answers_to_splice(draw):
    attributes = draw(st.integers(1, 4))
    first = tuple(draw(st.lists(st.booleans(), min_size=attributes, max_size=attributes)))
    cap = draw(st.integers(1, 5))
    ids = [str(n) for n in range(8)]
    values = st.text(max_size=6).map(lambda t: orjson.dumps(t))
    rows = st.one_of(st.just(False), st.tuples(*[values] * attributes))
    table = draw(st.dictionaries(st.sampled_from(ids), rows))
    own = draw(st.dictionaries(st.sampled_from(ids), rows))
    event = draw(st.dictionaries(
        st.text(max_size=6),
        st.fixed_dictionaries({"RecommendationItems": st.lists(st.sampled_from(ids), min_size=1,
                                                                max_size=5)},
                              optional={"x": NESTED}),
        min_size=1, max_size=6))
    return enricher(attributes, first, cap), table, own, event


@needs_native
@settings(max_examples=300, deadline=None)
@given(case=answers_to_splice())
def test_its_answers_are_the_python_loops(case, monkeypatch_module):
    enricher_, table, own, event = case
    body = orjson.dumps({"Endpoints": event})
    parsed = scan(body)
    assume(parsed is not None)  # an ID or key orjson wrote with \u (a control character)
    by_c = native.splice_answer(  # type: ignore[union-attr]
        parsed.endpoints, table, own, enricher_.endpoint_pieces, enricher_.first_flags,
        enricher_.spec.recommendations_per_message)
    # The Python loop, with the same rows at hand (kept rows first, as the C one takes them).
    resolved = Resolved()
    resolved.derived = {**own, **table}
    monkeypatch_module.setattr(pinpoint, "native", None)
    try:
        answer, unresolved, _ = pinpoint.enrich_event_json(
            raw_event.read_in_python(body, LIMITS), enricher_, resolved, raw=True)
    finally:
        monkeypatch_module.undo()
    assert by_c == (answer, unresolved)
    orjson.loads(by_c[0])


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch
