"""The generic core: item IDs plus resolved items become a recommender's attribute values.

Nothing here knows about Pinpoint. `Enricher.recommendations(ids, resolved, locale)` applies the
recommender's missing-item policy and per-message cap, then renders each attribute for each kept
item: field value (localized), then format (currency), then truncate, then template. Rendered rows
are memoized per (item, locale) for the life of one Enricher (one request), so an item recommended
to many endpoints is rendered once.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import orjson
from babel import Locale, UnknownLocaleError
from babel.numbers import format_currency

from service.recommenders import AttributeSpec, RecommenderSpec

ELLIPSIS = "…"
LOCALIZABLE = frozenset(("title", "genre", "image_url", "url"))

Recommendations = dict[str, str | list[str]]


def locale_chain(tag: str | None) -> tuple[str, ...]:
    """`es-MX` → (`es_MX`, `es`): the override keys to try, most specific first."""
    if not tag or not isinstance(tag, str):
        return ()
    parts = [part for part in tag.replace("-", "_").split("_") if part]
    return tuple("_".join(parts[:n]) for n in range(len(parts), 0, -1))


@functools.lru_cache(maxsize=512)
def babel_locale(tag: str) -> Locale | None:
    try:
        return Locale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return None


def format_price(amount: str, currency: str, locale_tag: str, fallback_tag: str) -> str:
    """`19.99 USD` as the locale writes money: `$19.99`, `19,99 $`, `￥2,000`."""
    locale = babel_locale(locale_tag) or babel_locale(fallback_tag) or babel_locale("en_US")
    return format_currency(Decimal(amount), currency, locale=locale)


def truncate_words(text: str, limit: int) -> str:
    """At most `limit` characters, cut on a word boundary where one is near, with an ellipsis."""
    if len(text) <= limit:
        return text
    if limit == 1:
        return ELLIPSIS
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space >= (limit - 1) // 2:  # a boundary in the second half: cut there
        cut = cut[:space]
    return cut.rstrip(" ,;:.-\u2013\u2014") + ELLIPSIS  # also en and em dashes


_PLACEHOLDER = re.compile(r"\{(value|id)\}")


def fill_template(template: str, value: str, item_id: str) -> str:
    """Put values into a template; inside a URL they are percent-encoded for where they stand."""
    is_url = bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^/", template))

    def replace(match: re.Match[str]) -> str:
        raw = value if match.group(1) == "value" else item_id
        if not is_url:
            return raw
        in_query = "?" in template[: match.start()] or "#" in template[: match.start()]
        return quote(raw, safe="" if in_query else "/")

    return _PLACEHOLDER.sub(replace, template)


def field_text(item: Mapping[str, Any], field: str, chain: Sequence[str]) -> str | None:
    """The raw text of one item field (None when the item has no value there)."""
    if field in LOCALIZABLE and chain:
        overrides = item["locales"]
        if overrides:
            for tag in chain:
                localized = overrides.get(tag)
                if localized and field in localized:
                    return localized[field]
    if field == "price":
        return item["price_amount"]
    if field == "available":
        return "true" if item["available"] else "false"
    if field.startswith("attributes."):
        value = item["attributes"].get(field[len("attributes."):])
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        return orjson.dumps(value).decode()
    return item[field]


class Enricher:
    """Renders one recommender's attributes; make one per request."""

    def __init__(self, spec: RecommenderSpec) -> None:
        self.spec = spec
        self._rows: dict[tuple[str, str | None], tuple[str, ...]] = {}

    def recommendations(
        self, ids: Sequence[str], resolved: Mapping[str, Any], locale: str | None
    ) -> Recommendations | None:
        """The Recommendations object for one recipient, or None to leave the recipient out."""
        spec = self.spec
        cap = spec.recommendations_per_message
        slots: list[Any] = []
        found = 0
        for item_id in ids:
            item = resolved.get(item_id)
            usable = item is not None and item["available"]
            if usable:
                found += 1
                slots.append(item)
            elif spec.missing_items == "drop_endpoint":
                return None
            elif spec.missing_items == "placeholder":
                slots.append(None)
            if len(slots) == cap:
                break
        if found == 0:
            return None
        rows = [self._row(item, locale) if item is not None else None for item in slots]
        result: Recommendations = {}
        for index, attribute in enumerate(spec.attributes):
            values = [row[index] if row is not None else attribute.placeholder for row in rows]
            result[attribute.name] = values[0] if attribute.first else values
        return result

    def _row(self, item: Mapping[str, Any], locale: str | None) -> tuple[str, ...]:
        key = (item["id"], locale)
        row = self._rows.get(key)
        if row is None:
            chain = locale_chain(locale) or locale_chain(self.spec.locale)
            row = tuple(self._render(a, item, chain, locale) for a in self.spec.attributes)
            self._rows[key] = row
        return row

    def _render(
        self, attribute: AttributeSpec, item: Mapping[str, Any], chain: Sequence[str],
        locale: str | None,
    ) -> str:
        text = field_text(item, attribute.field, chain)
        if text is None:
            return attribute.placeholder
        if attribute.format == "currency":
            text = format_price(text, item["price_currency"], locale or self.spec.locale,
                                self.spec.locale)
        elif attribute.field == "price" and item["price_currency"]:
            text = f"{text} {item['price_currency']}"
        if attribute.truncate:
            text = truncate_words(text, attribute.truncate)
        if attribute.template:
            text = fill_template(attribute.template, text, item["id"])
        return text
