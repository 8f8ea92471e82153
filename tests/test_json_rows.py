"""The transform's serialised rows (Enricher.json_row) against the general renderer.

json_row has a shortcut for recommenders whose attributes are plain fields and items without
per-locale texts; whatever path it takes, a row must be the general renderer's values, serialised.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.enrichment import enrich
from service.enrichment.enrich import Enricher
from service.enrichment.recommenders import parse_recommender

PLAIN = parse_recommender({"catalog": "c", "attributes": [
    {"name": "Title", "field": "title", "placeholder": "n/a"},
    {"name": "Genre", "field": "genre"},
    {"name": "Price", "field": "price", "placeholder": "?"},
    {"name": "Image", "field": "image_url"},
    {"name": "Id", "field": "id", "first": True},
]}, "plain")
FORMATTED = parse_recommender({"catalog": "c", "locale": "de_DE", "attributes": [
    {"name": "Title", "field": "title", "truncate": 8},
    {"name": "Price", "field": "price", "format": "currency"},
    {"name": "Url", "field": "url", "template": "https://x.example/{value}?id={id}"},
    {"name": "Mood", "field": "attributes.mood"},
]}, "formatted")
# Two attributes read from `attributes` (parsed once for both), one number among them.
FROM_ATTRIBUTES = parse_recommender({"catalog": "c", "attributes": [
    {"name": "Mood", "field": "attributes.mood", "placeholder": "-"},
    {"name": "Stock", "field": "attributes.stock"},
    {"name": "Title", "field": "title"},
]}, "from-attributes")


def as_bulk_query_reads_it(item: dict) -> dict:
    """The item as the bulk item query hands it over: its JSON fields as their stored text, or
    None when empty (service/storage/items.py)."""
    return {**item, **{field: orjson.dumps(item[field]).decode() if item[field] else None
                       for field in ("attributes", "locales")}}

texts = st.none() | st.text(max_size=20)
amounts = st.none() | st.decimals(min_value=0, max_value=10**6, places=2,
                                  allow_nan=False, allow_infinity=False).map(str)
items = st.builds(
    lambda title, genre, amount, image, mood, localized: {
        "id": "id-1", "title": title, "genre": genre, "price_amount": amount,
        "price_currency": None if amount is None else "EUR", "image_url": image, "url": "p/1",
        "available": True, "attributes": {"mood": mood} if mood is not None else {},
        "locales": {"de_DE": {"title": localized}} if localized is not None else {},
        "version": 1,
    },
    texts, texts, amounts, texts, texts, st.none() | st.text(min_size=1, max_size=10),
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(item=items, locale=st.sampled_from([None, "de_DE", "en_US", "fr"]))
def test_json_row_is_the_general_render_serialised(item, locale):
    for spec in (PLAIN, FORMATTED):
        enricher = Enricher(spec)
        general = tuple(orjson.dumps(value) for value in enricher.attributes_of(item, locale).values())
        assert enricher.json_row(item, locale) == general


@settings(max_examples=200, deadline=None, derandomize=True)
@given(item=items, stock=st.none() | st.integers(-2**63, 2**63 - 1),
       locale=st.sampled_from([None, "de_DE", "en_US"]))
def test_json_fields_read_as_text_render_as_parsed(item, stock, locale):
    """A row whose attributes and locales came as text (or None) renders exactly as the same row
    with them parsed: a recommender that shows them parses them, one that does not never does."""
    if stock is not None:
        item = {**item, "attributes": {**item["attributes"], "stock": stock}}
    for spec in (PLAIN, FORMATTED, FROM_ATTRIBUTES):
        enricher = Enricher(spec)
        assert enricher.json_row(as_bulk_query_reads_it(item), locale) == \
            enricher.json_row(item, locale)
        assert enricher.attributes_of(as_bulk_query_reads_it(item), locale) == \
            enricher.attributes_of(item, locale)


TEXTS_ONLY = parse_recommender({"catalog": "c", "attributes": [
    {"name": "Title", "field": "title", "placeholder": "n/a"},
    {"name": "Genre", "field": "genre"},
    {"name": "Image", "field": "image_url", "placeholder": "https://x.example/none.png"},
    {"name": "Id", "field": "id", "first": True},
]}, "texts-only")
any_text = st.none() | st.text(max_size=30) | st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0x7f), max_size=10)


@pytest.mark.skipif(enrich.native is None, reason="the C extension is not built here")
@settings(max_examples=300, deadline=None, derandomize=True)
@given(title=any_text, genre=any_text, image=any_text)
def test_the_c_row_writer_writes_what_python_writes(title, genre, image):
    """A recommender of plain text fields has its rows written by the C extension: the same
    bytes as the Python path (control characters, quotes, non-ASCII, placeholders, nulls)."""
    item = {"id": "id-1", "title": title, "genre": genre, "image_url": image,
            "available": True, "locales": None, "attributes": None}
    in_c = Enricher(TEXTS_ONLY)
    assert in_c._plain_fields is not None  # the C path is the one taken
    python = Enricher(TEXTS_ONLY)
    python._plain_fields = None
    assert in_c.json_row(item, None) == python.json_row(item, None)
    assert all(type(value) is bytes for value in in_c.json_row(item, None))


@pytest.mark.skipif(enrich.native is None, reason="the C extension is not built here")
def test_what_the_c_writer_leaves_to_python():
    """A value that is not a str (a number a client wrote as a title) or a str orjson refuses
    (a lone surrogate) goes to the Python path, which answers or fails exactly as before."""
    enricher = Enricher(TEXTS_ONLY)
    item = {"id": "id-1", "title": 1234, "genre": "g", "image_url": None, "available": True,
            "locales": None, "attributes": None}
    assert enricher.json_row(item, None)[0] == b"1234"
    with pytest.raises(orjson.JSONEncodeError):
        enricher.json_row({**item, "title": "\ud800"}, None)


def test_a_missing_or_unavailable_item_has_no_row():
    enricher = Enricher(PLAIN)
    assert enricher.json_row(None, None) is False
    assert enricher.json_row({"id": "x", "available": False}, None) is False
