"""Attribute formats and locales: what each attribute shows, checked value by value.

The rendering core is exercised directly (it is pure: items in, strings out), and the same rules
end to end through a transform, where the endpoint's `Demographic.Locale` picks the locale.
"""

from __future__ import annotations

import decimal
from typing import Any

import pytest
from babel.numbers import get_currency_precision
from hypothesis import given
from hypothesis import strategies as st

from service.enrichment.enrich import Enricher, fill_template, plain_price, truncate_words
from service.enrichment.locales import fallback_chain, normalize_tag
from service.enrichment.recommenders import parse_recommender
from tests.support.api import Api
from tests.support.catalogs import load_catalog


def item(item_id: str = "1", **fields: Any) -> dict[str, Any]:
    """An item as the resolver returns it (the stored columns)."""
    price = fields.pop("price", None)
    return {
        "id": item_id, "title": "Title", "genre": None, "image_url": None, "url": None,
        "available": True, "attributes": {}, "locales": {},
        "price_amount": price[0] if price else None,
        "price_currency": price[1] if price else None,
        **fields,
    }


def enricher(*attributes: dict[str, Any], **extra: Any) -> Enricher:
    return Enricher(parse_recommender({"catalog": "c", "attributes": list(attributes), **extra},
                                      "r"))


def render(attribute: dict[str, Any], the_item: dict[str, Any],
           endpoint_locale: str | None = None, **extra: Any) -> str:
    recs = enricher({"name": "A", **attribute}, **extra).recommendations(
        [the_item["id"]], {the_item["id"]: the_item}, endpoint_locale
    )
    assert recs is not None
    return recs["A"][0]


class TestCurrency:
    """`currency` formats the price with Babel (CLDR) for the endpoint's locale."""

    @pytest.mark.parametrize(("locale", "amount", "currency", "shown"), [
        ("en_US", "19.990000", "USD", "$19.99"),
        ("de_DE", "19.990000", "EUR", "19,99\xa0€"),
        ("ja_JP", "2000.000000", "JPY", "￥2,000"),
        ("fr_CA", "19.990000", "CAD", "19,99\xa0$"),
        # The currency stays the item's; only the way of writing it follows the locale.
        ("de_DE", "1234.500000", "USD", "1.234,50\xa0$"),
        ("en_US", "2000.000000", "JPY", "¥2,000"),
    ])
    def test_babel_output_per_locale(self, locale, amount, currency, shown):
        attribute = {"field": "price", "format": "currency"}
        assert render(attribute, item(price=(amount, currency)), locale) == shown

    def test_endpoint_without_locale_uses_recommender_default(self):
        attribute = {"field": "price", "format": "currency"}
        assert render(attribute, item(price=("19.99", "EUR")), None, locale="de_DE") == "19,99\xa0€"

    def test_locale_unknown_to_cldr_falls_back_along_the_chain(self):
        attribute = {"field": "price", "format": "currency"}
        # `de_ZZ` is not a CLDR locale; its language `de` is.
        assert render(attribute, item(price=("19.99", "EUR")), "de_ZZ") == "19,99\xa0€"
        assert render(attribute, item(price=("19.99", "EUR")), "zz_ZZ") == "€19.99"

    def test_item_without_price_gets_the_placeholder(self):
        attribute = {"field": "price", "format": "currency", "placeholder": "n/a"}
        assert render(attribute, item()) == "n/a"

    def test_unformatted_price_reads_as_money_not_as_stored(self):
        assert render({"field": "price"}, item(price=("19.900000", "USD"))) == "19.90 USD"
        assert plain_price("2000.000000", "JPY") == "2000 JPY"
        assert plain_price("0.123400", "USD") == "0.1234 USD"

    @given(amount=st.decimals(allow_nan=False, allow_infinity=False, places=6,
                              min_value=-10**12, max_value=10**12),
           currency=st.sampled_from(["USD", "JPY", "BHD", "CLF", "EUR", "XXX"]))
    def test_unformatted_price_is_the_exact_amount_at_the_currency_decimals(
        self, amount, currency
    ):
        """Whatever the stored text: the amount itself (never rounded), with the currency's
        decimals or more, as Decimal would write it at a precision that loses nothing."""
        for text in (f"{amount:f}", f"{amount:.6f}"):
            with decimal.localcontext(prec=100):
                value = decimal.Decimal(text)
                places = max(get_currency_precision(currency),
                             -value.normalize().as_tuple().exponent)
                expected = f"{value.quantize(decimal.Decimal(1).scaleb(-places)):f} {currency}"
            assert plain_price(text, currency) == expected, text


class TestTemplate:
    """`template` puts `{value}` and `{id}` into a string, URL-encoded where they stand."""

    def test_path_value_keeps_slashes_query_value_encodes_everything(self):
        assert fill_template("https://cdn.example.com/{value}?w=600", "posters/a b.jpg", "1") == \
            "https://cdn.example.com/posters/a%20b.jpg?w=600"
        assert fill_template("https://x.example/watch?id={id}&t={value}", "Tom & Jerry/2", "é 1") \
            == "https://x.example/watch?id=%C3%A9%201&t=Tom%20%26%20Jerry%2F2"
        assert fill_template("myapp://item/{id}#{value}", "a/b", "1") == "myapp://item/1#a%2Fb"

    def test_text_template_takes_values_as_they_are(self):
        assert fill_template("{value}?w=600", "https://img.example/1.jpg", "1") == \
            "https://img.example/1.jpg?w=600"
        assert fill_template("Watch {value} now", "Tom & Jerry", "1") == "Watch Tom & Jerry now"
        assert fill_template("Watch: {value}", "A/B", "1") == "Watch: A/B"  # not a scheme

    def test_applied_to_the_field_value_per_item(self):
        attribute = {"field": "image_url", "template": "https://cdn.example.com/{value}?id={id}"}
        assert render(attribute, item("a/1", image_url="p/1.jpg")) == \
            "https://cdn.example.com/p/1.jpg?id=a%2F1"

    def test_not_applied_to_a_placeholder(self):
        attribute = {"field": "image_url", "template": "https://cdn/{value}",
                     "placeholder": "https://cdn/none.jpg"}
        assert render(attribute, item()) == "https://cdn/none.jpg"


class TestTruncate:
    """`truncate` keeps at most N characters, cut on a word boundary, with an ellipsis."""

    @pytest.mark.parametrize(("text", "limit", "shown"), [
        ("Short", 10, "Short"),
        ("Exactly ten", 11, "Exactly ten"),
        ("The Grand Budapest Hotel", 15, "The Grand…"),
        ("The Grand Budapest Hotel", 10, "The Grand…"),
        ("Supercalifragilistic", 8, "Superca…"),  # no boundary near: cut mid-word
        ("Hello, world and more", 8, "Hello…"),  # no dangling comma
        ("Anything", 1, "…"),
    ])
    def test_cuts(self, text, limit, shown):
        assert truncate_words(text, limit) == shown
        assert len(truncate_words(text, limit)) <= limit

    def test_applied_before_the_template(self):
        attribute = {"field": "title", "truncate": 9, "template": "Watch: {value}"}
        assert render(attribute, item(title="Fleabag season two")) == "Watch: Fleabag…"


class TestFirst:
    """`first` makes the attribute one string (the first shown item) instead of an array."""

    def test_first_is_a_string_others_stay_arrays(self):
        e = enricher({"name": "Top", "field": "title", "first": True},
                     {"name": "All", "field": "title"})
        items = {i: item(i, title=f"T{i}") for i in ("1", "2")}
        assert e.recommendations(["x", "2", "1"], items, None) == {"Top": "T2",
                                                                   "All": ["T2", "T1"]}


class TestLocaleChain:
    """An endpoint's locale picks item overrides: es_MX, then es, then the default, then base."""

    LOCALIZED = item("1", title="Base", genre="Drama", locales={
        "es_MX": {"title": "Título MX"},
        "es": {"title": "Título", "genre": "Drama ES"},
        "de": {"title": "Titel"},
    })

    @pytest.mark.parametrize(("locale", "title", "genre"), [
        ("es_MX", "Título MX", "Drama ES"),  # genre falls through es_MX to es
        ("es_ES", "Título", "Drama ES"),
        ("es-mx", "Título MX", "Drama ES"),  # spelled the other way
        ("fr_FR", "Base", "Drama"),
        (None, "Base", "Drama"),
    ])
    def test_chain(self, locale, title, genre):
        e = enricher({"name": "T", "field": "title"}, {"name": "G", "field": "genre"})
        recs = e.recommendations(["1"], {"1": self.LOCALIZED}, locale)
        assert recs == {"T": [title], "G": [genre]}

    def test_recommender_default_locale_comes_before_base_fields(self):
        e = enricher({"name": "T", "field": "title"}, locale="de_DE")
        assert e.recommendations(["1"], {"1": self.LOCALIZED}, "fr_FR") == {"T": ["Titel"]}
        assert e.recommendations(["1"], {"1": self.LOCALIZED}, "es_MX") == {"T": ["Título MX"]}

    def test_override_keys_match_however_written(self):
        written_oddly = item("1", title="Base", locales={"ES-mx": {"title": "MX"}})
        e = enricher({"name": "T", "field": "title"})
        assert e.recommendations(["1"], {"1": written_oddly}, "es_MX") == {"T": ["MX"]}

    def test_chain_and_normalization(self):
        assert fallback_chain("es_MX", "en_US") == ("es_MX", "es", "en_US", "en")
        assert fallback_chain(None, "de") == ("de",)
        assert fallback_chain("not a locale!", "de") == ("de",)
        assert normalize_tag("zh-hant-tw") == "zh_Hant_TW"
        assert normalize_tag("es-419") == "es_419"


class TestFormatsThroughTransform:
    """The same formats through HTTP: each endpoint's Demographic.Locale picks its own."""

    async def test_each_endpoint_in_its_own_locale(self, admin: Api):
        await load_catalog(admin, "shop", [
            {"id": "p1", "title": "Boots", "price": {"amount": "19.99", "currency": "EUR"},
             "image_url": "img/p 1.jpg", "locales": {"de": {"title": "Stiefel"}}},
            {"id": "p2", "title": "A very long product title indeed",
             "price": {"amount": "2000", "currency": "JPY"}},
        ])
        status, body, _ = await admin.put("/v1/recommenders/shop", {
            "catalog": "shop",
            "attributes": [
                {"name": "Title", "field": "title", "truncate": 12},
                {"name": "Price", "field": "price", "format": "currency"},
                {"name": "Image", "field": "image_url",
                 "template": "https://cdn.example.com/{value}?w=600", "placeholder": "none"},
                {"name": "Hero", "field": "title", "first": True},
            ],
        })
        assert status == 201, body
        event = {"Endpoints": {
            "us": {"RecommendationItems": ["p1", "p2"], "Demographic": {"Locale": "en_US"}},
            "de": {"RecommendationItems": ["p1", "p2"], "Demographic": {"Locale": "de_DE"}},
            "jp": {"RecommendationItems": ["p2"], "Demographic": {"Locale": "ja_JP"}},
        }}
        status, answer, _ = await admin.post("/v1/recommenders/shop/transform", event)
        assert status == 200, answer
        assert answer["us"]["Recommendations"] == {
            "Title": ["Boots", "A very long…"],
            "Price": ["€19.99", "¥2,000"],
            "Image": ["https://cdn.example.com/img/p%201.jpg?w=600", "none"],
            "Hero": "Boots",
        }
        assert answer["de"]["Recommendations"]["Title"] == ["Stiefel", "A very long…"]
        assert answer["de"]["Recommendations"]["Price"] == ["19,99\xa0€", "2.000\xa0¥"]
        assert answer["de"]["Recommendations"]["Hero"] == "Stiefel"
        assert answer["jp"]["Recommendations"]["Price"] == ["￥2,000"]


class TestPolicies:
    """missing_items and recommendations_per_message, through a transform."""

    @pytest.fixture
    async def shop(self, admin: Api) -> Api:
        await load_catalog(admin, "shop", [
            {"id": "1", "title": "One", "genre": "Drama"},
            {"id": "2", "title": "Two"},
            {"id": "3", "title": "Three", "genre": "Comedy"},
            {"id": "gone", "title": "Gone", "available": False},
        ])
        return admin

    async def transform(self, api: Api, policy: str, per_message: int = 5, **endpoints):
        status, body, _ = await api.put(f"/v1/recommenders/{policy}", {
            "catalog": "shop", "missing_items": policy,
            "recommendations_per_message": per_message,
            "attributes": [{"name": "Title", "field": "title", "placeholder": "?"},
                           {"name": "Genre", "field": "genre", "placeholder": "-"},
                           {"name": "Top", "field": "title", "first": True}]})
        assert status in (200, 201), body
        status, answer, _ = await api.post(
            f"/v1/recommenders/{policy}/transform",
            {"Endpoints": {k: {"RecommendationItems": v} for k, v in endpoints.items()}})
        assert status == 200, answer
        return {k: v["Recommendations"] for k, v in answer.items()}

    async def test_skip(self, shop: Api):
        answer = await self.transform(shop, "skip", a=["x", "2", "gone", "1"], b=["x"])
        assert answer == {"a": {"Title": ["Two", "One"], "Genre": ["-", "Drama"], "Top": "Two"}}

    async def test_placeholder_keeps_positions(self, shop: Api):
        answer = await self.transform(shop, "placeholder", a=["x", "2", "gone", "1"], b=["x"])
        # `first` is the first resolved item, not the placeholder before it.
        assert answer == {"a": {"Title": ["?", "Two", "?", "One"],
                                "Genre": ["-", "-", "-", "Drama"], "Top": "Two"}}

    async def test_drop_endpoint(self, shop: Api):
        answer = await self.transform(shop, "drop_endpoint", a=["1", "gone"], b=["1", "x"],
                                      c=["3", "1"])
        assert answer == {"c": {"Title": ["Three", "One"], "Genre": ["Comedy", "Drama"],
                                "Top": "Three"}}

    @pytest.mark.parametrize(("policy", "titles"), [
        ("skip", ["One", "Two"]),  # a skipped ID does not use up a place
        ("placeholder", ["?", "One"]),  # a placeholder does
        ("drop_endpoint", ["One", "Two"]),  # IDs past the cap are not looked at
    ])
    async def test_cap(self, shop: Api, policy, titles):
        items = ["x", "1", "2", "3", "y"] if policy != "drop_endpoint" else ["1", "2", "x"]
        answer = await self.transform(shop, policy, per_message=2, a=items)
        assert answer["a"]["Title"] == titles
