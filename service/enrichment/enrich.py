"""The generic core: item IDs plus resolved items become a recommender's attribute values.

Nothing here knows about Pinpoint or Personalize (their adapters are service/adapters/pinpoint.py and
service/adapters/personalize.py). `Enricher.recommendations(ids, resolved, locale)` applies the
recommender's missing-item policy and per-message cap, then renders each attribute for each kept
item: field value (localized through the locale chain), then format (currency), then truncate,
then template. Rendered rows are memoized per (item, locale) for the life of one Enricher (one
request), so an item recommended to many endpoints is rendered once. A caller that passes a
`notes` list gets one `ItemNote` per item ID saying what became of it (the preview route does).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import orjson
from babel.numbers import get_currency_precision as babel_currency_precision

from service.enrichment.locales import babel_locale, fallback_chain, normalized_overrides
from service.enrichment.money_format import format_money
from service.enrichment.recommenders import AttributeSpec, RecommenderSpec
from service.json_codec import stored_object
from service.speedups import native

ELLIPSIS = "…"
LOCALIZABLE = frozenset(("title", "genre", "image_url", "url"))

Recommendations = dict[str, str | list[str]]


@dataclass(frozen=True)
class ItemNote:
    """What became of one recommended item ID, for people writing message templates."""

    id: str
    status: str  # used | unknown | unavailable | over_limit
    note: str
    empty_fields: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "status": self.status, "note": self.note}
        if self.empty_fields:
            data["empty_fields"] = list(self.empty_fields)
        return data


# Babel takes ~140 µs a call, most of a transform's time; prices and locales repeat a lot, so
# each (amount, currency, locale chain) is formatted once per process.
@functools.lru_cache(maxsize=65_536)
def format_price(amount: str, currency: str, chain: tuple[str, ...]) -> str:
    """`19.99 USD` as the first locale of the chain that CLDR knows writes money: `$19.99`,
    `19,99 €`, `￥2,000`."""
    locale = next((found for tag in chain if (found := babel_locale(tag))), None)
    return format_money(Decimal(amount), currency, locale or babel_locale("en_US"))


# Locale chains whose money formatting this process has prepared (see prepare_money_locales);
# emptied when it holds this many (any well-formed tag makes a chain), as fallback_chain's cache.
_prepared_chains: set[tuple[str, ...]] = set()
_MAX_PREPARED_CHAINS = 4096


def prepare_money_locales(chains: Sequence[tuple[str, ...]],
                          items: Iterable[Mapping[str, Any]]) -> None:
    """Format a price once in each chain, in each currency of `items` (USD when none has one).

    The first price a process formats in a locale loads its CLDR data from disk (3-4 ms), and each
    (currency, locale) has its layout checked against Babel once (~0.7 ms): an event of 30 locales
    new to the process held the event loop ~100 ms. Callers run this in a thread, off the loop,
    before they render (Enricher.unprepared_chains says when). Only a warm-up: what fails here
    (a currency Babel does not know) fails again, and is handled, where the price is rendered."""
    currencies = {c for item in items if (c := item.get("price_currency"))} or {"USD"}
    if len(_prepared_chains) + len(chains) > _MAX_PREPARED_CHAINS:
        _prepared_chains.clear()
    for chain in chains:
        for currency in currencies:
            with contextlib.suppress(Exception):  # see the docstring
                format_price("0", currency, chain)
        _prepared_chains.add(chain)


# Postgres writes numeric as plain digits: the common case needs no Decimal at all.
_PLAIN_NUMERIC = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")


# Babel looks the currency up in its CLDR tables on every call (~0.4 µs): as much as the rest of
# a plain price not in plain_price's cache (a catalog of many distinct prices). Currencies are
# few; unknown codes are kept too (bounded).
get_currency_precision = functools.lru_cache(maxsize=1024)(babel_currency_precision)


@functools.lru_cache(maxsize=65_536)
def plain_price(amount: str, currency: str | None) -> str:
    """`19.990000` (as stored) → `19.99 USD`: the currency's own decimals, more only if needed."""
    if currency and _PLAIN_NUMERIC.fullmatch(amount):
        # The same text as the Decimal way below, by string: trailing zeros dropped, then padded
        # to the currency's decimals (a catalog of 500k distinct prices misses the cache on
        # nearly every cold row, and this costs a third of it).
        whole, _, fraction = amount.partition(".")
        fraction = fraction.rstrip("0").ljust(get_currency_precision(currency), "0")
        return f"{whole}.{fraction} {currency}" if fraction else f"{whole} {currency}"
    value = Decimal(amount)
    if not currency:
        return _plain_decimal(value)
    digits = get_currency_precision(currency)
    exact = value.normalize()
    places = max(digits, -exact.as_tuple().exponent)  # type: ignore[operator]
    return f"{value.quantize(Decimal(1).scaleb(-places)):f} {currency}"


def _plain_decimal(value: Decimal) -> str:
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def truncate_words(text: str, limit: int) -> str:
    """At most `limit` characters, cut on a word boundary where one is near, with an ellipsis."""
    if len(text) <= limit:
        return text
    if limit == 1:
        return ELLIPSIS
    cut = text[: limit - 1]
    if not text[limit - 1].isspace():  # the cut falls inside a word
        space = cut.rfind(" ")
        if space >= (limit - 1) // 2:  # a boundary in the second half: cut there instead
            cut = cut[:space]
    return cut.rstrip(" ,;:.-\u2013\u2014") + ELLIPSIS  # no dangling punctuation or dash


_PLACEHOLDER = re.compile(r"\{(value|id)\}")
# A URL has no whitespace and starts with a scheme (`https:`, `myapp:`) or a `/`.
_URL_TEMPLATE = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|/)\S*$")


def fill_template(template: str, value: str, item_id: str) -> str:
    """Put values into a template. In a URL template (a scheme or `/` first, no whitespace) they
    are percent-encoded for where they stand: a path keeps its `/`, a query or fragment value
    keeps nothing. Any other template (`{value}?w=600`, `Watch: {value}`) takes them as they are."""
    if not _URL_TEMPLATE.match(template):
        return _PLACEHOLDER.sub(
            lambda m: value if m.group(1) == "value" else item_id, template
        )

    def replace(match: re.Match[str]) -> str:
        raw = value if match.group(1) == "value" else item_id
        before = template[: match.start()]
        return quote(raw, safe="" if "?" in before or "#" in before else "/")

    return _PLACEHOLDER.sub(replace, template)


def field_text(item: Mapping[str, Any], field: str,
               overrides: Sequence[Mapping[str, Any]]) -> str | None:
    """The raw text of one item field (None when the item has no value there); `overrides` are
    the item's per-locale texts along the locale chain, most specific first."""
    if field in LOCALIZABLE:
        for localized in overrides:
            if field in localized:
                return localized[field]
    if field == "price":
        amount = item["price_amount"]
        return None if amount is None else plain_price(amount, item["price_currency"])
    if field == "available":
        return "true" if item["available"] else "false"
    if field.startswith("attributes."):
        value = stored_object(item["attributes"]).get(field[len("attributes."):])
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        return orjson.dumps(value).decode()
    return item[field]


def is_usable(item: Mapping[str, Any] | None) -> bool:
    """Present in the catalog and available: an item a message may show."""
    return item is not None and bool(item["available"])


# Fields whose text is the stored value itself, when no format, truncate or template applies.
_PLAIN_TEXT_FIELDS = frozenset(("id", "title", "genre", "image_url", "url"))


def _price_text(item: Mapping[str, Any]) -> str | None:
    amount = item["price_amount"]
    return None if amount is None else plain_price(amount, item["price_currency"])


def _plain_getters(spec: RecommenderSpec) -> tuple[tuple[Callable, str], ...] | None:
    """(value getter, placeholder) per attribute, if every attribute is a plain field (as
    `field_text` reads it for an item without per-locale texts), else None."""
    getters = []
    for a in spec.attributes:
        if a.format or a.truncate or a.template:
            return None
        if a.field in _PLAIN_TEXT_FIELDS:
            getters.append((operator.itemgetter(a.field), a.placeholder))
        elif a.field == "price":
            getters.append((_price_text, a.placeholder))
        else:
            return None
    return tuple(getters)


def _plain_text_fields(spec: RecommenderSpec) -> tuple[tuple[str, ...], tuple[Any, ...]] | None:
    """(fields, placeholders) for the C row writer, if every attribute of a recommender with
    plain getters (`_plain_getters`) is a text field (not the price)."""
    if any(a.field not in _PLAIN_TEXT_FIELDS for a in spec.attributes):
        return None
    return tuple(a.field for a in spec.attributes), tuple(a.placeholder for a in spec.attributes)


RenderKey = tuple[str, Any, str | None]
RenderedRow = tuple[str | None, ...]
# A rendered row as JSON: each attribute's value serialised (b'"$19.99"'), ready to be joined.
JsonRow = tuple[bytes, ...]

_render_cache_ids = itertools.count(1)
# orjson answers even a 10-byte value in a buffer of about 4 KB that it never shrinks (3.12; the
# size Python reports is the value's): a row kept on L1 entries for minutes would hold 4 KB per
# attribute. So a kept value is joined with nothing (a join of two parts always copies) into a
# bytes object of its own size: about half a microsecond a row.
_dumps = orjson.dumps
_join = b"".join
_NOTHING = b""



class RenderCache:
    """Rendered attribute rows of one recommender, shared by all its requests.

    Keyed by item ID, the item's `version` (a new one for every content change, migration 0006) and
    the endpoint locale, so a changed item is simply rendered anew; a changed recommender comes with
    a new cache. Bounded by entries; when full it
    is emptied rather than kept in LRU order, which would cost bookkeeping on every hit.
    """

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        # Names this cache's renders where they are kept elsewhere (on L1 entries, with a locale).
        self.id = next(_render_cache_ids)
        self._rows: dict[RenderKey, RenderedRow] = {}
        # The dict's own `get`, bound once: called for every item of every endpoint, a Python
        # method around it cost a fifth of the enrichment. `put` only ever clears this same dict.
        self.get: Callable[[RenderKey], RenderedRow | None] = self._rows.get

    def put(self, key: RenderKey, row: RenderedRow) -> None:
        if len(self._rows) >= self.max_entries:
            self._rows.clear()
        self._rows[key] = row

    def __len__(self) -> int:
        return len(self._rows)


class Enricher:
    """Renders one recommender's attributes. Give it the recommender's RenderCache to share rows
    across requests; without one (a dry run) it keeps its own for the request."""

    def __init__(self, spec: RecommenderSpec, renders: RenderCache | None = None) -> None:
        self.spec = spec
        self._rows = renders if renders is not None else RenderCache()
        self._names = tuple(a.name for a in spec.attributes)
        self._placeholders = tuple(a.placeholder for a in spec.attributes)
        self._columns = tuple((index, a.name, a.first) for index, a in enumerate(spec.attributes))
        self._plain = _plain_getters(spec)
        # Every attribute a plain text field: the C extension writes the whole row at once.
        self._plain_fields = _plain_text_fields(spec) \
            if native is not None and self._plain is not None else None
        self._formats_money = any(a.format == "currency" for a in spec.attributes)
        self._attribute_fields = sum(a.field.startswith("attributes.") for a in spec.attributes)
        # Serialised answers are bytes templates, filled per endpoint with each attribute's
        # values joined by commas (or, for a `first` attribute, the first item's value).
        self.first_indexes = tuple(index for index, a in enumerate(spec.attributes) if a.first)
        self.first_flags = tuple(a.first for a in spec.attributes)
        self.recommendations_template = b"{" + b",".join(
            orjson.dumps(a.name).replace(b"%", b"%%") + (b":%b" if a.first else b":[%b]")
            for a in spec.attributes
        ) + b"}"
        # A raw endpoint (service/adapters/raw_event.py) as an answer member, after the comma
        # that parts it from the one before: its ID (JSON string contents, without the quotes),
        # then its own text without the closing brace, then Recommendations. As the constant
        # pieces between those values, for one b"".join over the whole answer: bytes formatting
        # copies a raw endpoint (a buffer, not bytes) once more, and parses its template each
        # time.
        names = [orjson.dumps(a.name) for a in spec.attributes]
        between = [b",%b:%b" % (name, b"" if a.first else b"[")
                   for name, a in zip(names, spec.attributes, strict=True)]
        closing = [b"" if a.first else b"]" for a in spec.attributes]
        self.endpoint_pieces: tuple[bytes, ...] = (
            b',"', b'":', b',"Recommendations":{' + between[0][1:],
            *(close + after for close, after in zip(closing, between[1:], strict=False)),
            closing[-1] + b"}}",
        )
        # One item as a JSON object (the content route's `items`): its ID serialised, then each
        # attribute's value. None when an attribute is named `id` (the item's ID must win).
        self.item_template = None if "id" in self._names else b'{"id":%b' + b"".join(
            b"," + orjson.dumps(a.name).replace(b"%", b"%%") + b":%b" for a in spec.attributes
        ) + b"}"

    def unprepared_chains(self, locales: Iterable[str | None]) -> list[tuple[str, ...]]:
        """The locale chains of `locales` (endpoint locales) this recommender formats money in
        and the process has not prepared yet (prepare_money_locales); empty when it formats none."""
        if not self._formats_money:
            return []
        default = self.spec.locale
        return [chain for chain in {fallback_chain(locale, default) for locale in locales}
                if chain not in _prepared_chains]

    async def prepare_locales(self, locales: Iterable[str | None],
                              items: Mapping[str, Any]) -> None:
        """Before `items` (id → item) are rendered in `locales`: the chains `unprepared_chains`
        names are prepared in a thread (prepare_money_locales), off the event loop."""
        chains = self.unprepared_chains(locales)
        if chains and items:
            await asyncio.to_thread(prepare_money_locales, chains, list(items.values()))

    @property
    def serves_json(self) -> bool:
        """Can `json_row` and the templates serve this recommender's transform? Yes for
        missing_items `skip`, where a message shows its usable items and nothing stands in."""
        return self.spec.missing_items == "skip"

    def derived_key(self, locale: str | None) -> tuple[int, str | None]:
        """What this recommender's JSON rows for `locale` are kept under on L1 entries."""
        return (self._rows.id, locale)

    def json_row(self, item: Mapping[str, Any] | None, locale: str | None) -> JsonRow | bool:
        """One item's attribute values serialised, or False when a message may not show it.

        Not kept in the RenderCache: the transform keeps these rows on L1 entries, and a cache
        of its own would mostly hold items seen once (it cost a fifth of a cold event). Each
        value is a bytes object of its own size (see `_join`), as it may be kept for minutes."""
        if item is None or not item["available"]:
            return False
        plain = self._plain
        if plain is not None and not item["locales"]:
            # Every attribute a field as stored (no format, truncate or template) and no texts
            # per locale: the values are the item's own, without the general renderer.
            if self._plain_fields is not None:
                row = native.plain_row(item, *self._plain_fields)  # type: ignore[union-attr]
                if row is not None:  # else a value only Python writes (or refuses) as orjson
                    return row
            return tuple([
                _join((_dumps(placeholder if (value := get(item)) is None else value), _NOTHING))
                for get, placeholder in plain
            ])
        return tuple([_join((_dumps(value), _NOTHING)) for value in self._filled_row(item, locale)])

    def recommendations_json(self, rows: Sequence[JsonRow]) -> bytes:
        """The Recommendations object, serialised, from the JSON rows of the usable items in
        order (the `skip` policy's; at least one): capped, each attribute's values joined, a
        `first` attribute the first item's value. The same assembly as the transform's
        (pinpoint.enrich_event_json, which keeps it inline in its per-endpoint loop)."""
        rows = rows[: self.spec.recommendations_per_message]
        columns: Any = [*map(b",".join, zip(*rows, strict=True))]
        for index in self.first_indexes:
            columns[index] = rows[0][index]
        return self.recommendations_template % tuple(columns)

    def recommendations(
        self, ids: Sequence[str], resolved: Mapping[str, Any], locale: str | None,
        notes: list[ItemNote] | None = None,
    ) -> Recommendations | None:
        """The Recommendations object for one recipient, or None to leave the recipient out."""
        slots = self._select(ids, resolved, notes)
        if slots is None:
            return None
        # Rows come from the render cache (inlined: this runs for every item of every endpoint).
        cached = self._rows.get
        placeholders = self._placeholders
        rows = []
        first_row = None
        for item in slots:
            if item is None:
                rows.append(placeholders)
                continue
            row = cached((item["id"], item.get("version"), locale)) or self._row(item, locale)
            rows.append(row)
            # `first` shows the first resolved item, even where placeholders stand before it.
            if first_row is None:
                first_row = row
        columns = list(zip(*rows, strict=True))
        result: Recommendations = {
            name: first_row[index] if first else list(columns[index])  # type: ignore[index]
            for index, name, first in self._columns
        }
        if notes is not None:
            self._note_empty_fields(notes, resolved, locale)
        return result

    def attributes_of(self, item: Mapping[str, Any], locale: str | None) -> dict[str, str]:
        """One item's attribute values, each a single string (as Personalize metadata is)."""
        return dict(zip(self._names, self._row(item, locale), strict=True))

    def placeholders(self) -> dict[str, str]:
        return {a.name: a.placeholder for a in self.spec.attributes}

    def _select(
        self, ids: Sequence[str], resolved: Mapping[str, Any], notes: list[ItemNote] | None
    ) -> list[Any] | None:
        """The items a message shows (None marks a placeholder), or None to leave it out."""
        spec = self.spec
        cap = spec.recommendations_per_message
        if notes is None and spec.missing_items == "skip":
            # The transform's common case, kept tight: usable items in order, up to the cap.
            kept = []
            for item_id in ids:
                item = resolved.get(item_id)
                if item is not None and item["available"]:
                    kept.append(item)
                    if len(kept) == cap:
                        break
            return kept or None
        slots: list[Any] = []
        found = 0
        dropped = False
        for item_id in ids:
            if len(slots) == cap:
                if notes is None:
                    break
                notes.append(ItemNote(item_id, "over_limit", "not used: the message already "
                                      f"holds recommendations_per_message ({cap}) items"))
                continue
            item = resolved.get(item_id)
            if is_usable(item):
                found += 1
                slots.append(item)
                if notes is not None:
                    notes.append(ItemNote(item_id, "used", f"shown at position {len(slots)}"))
                continue
            if spec.missing_items == "drop_endpoint":
                dropped = True
                if notes is None:
                    return None
                outcome = "the endpoint is left out (missing_items: drop_endpoint)"
            elif spec.missing_items == "placeholder":
                slots.append(None)
                outcome = (f"placeholders shown at position {len(slots)} "
                           "(missing_items: placeholder)")
            else:
                outcome = "skipped (missing_items: skip)"
            if notes is not None:
                status, why = (("unknown", f"not in catalog {spec.catalog!r}") if item is None
                               else ("unavailable", "marked unavailable"))
                notes.append(ItemNote(item_id, status, f"{why}; {outcome}"))
        if dropped or found == 0:
            return None
        return slots

    def _note_empty_fields(
        self, notes: list[ItemNote], resolved: Mapping[str, Any], locale: str | None
    ) -> None:
        """Say which attributes of each used item fell back to their placeholder."""
        for index, note in enumerate(notes):
            if note.status != "used":
                continue
            row = self._raw_row(resolved[note.id], locale)
            empty = tuple(a.name for a, value in zip(self.spec.attributes, row, strict=True)
                          if value is None)
            if empty:
                notes[index] = ItemNote(note.id, note.status, note.note, empty)

    def _row(self, item: Mapping[str, Any], locale: str | None) -> RenderedRow:
        """One item's attribute values, placeholders filled in, through the render cache."""
        key = (item["id"], item.get("version"), locale)
        row = self._rows.get(key)
        if row is None:
            row = self._filled_row(item, locale)
            self._rows.put(key, row)
        return row

    def _filled_row(self, item: Mapping[str, Any], locale: str | None) -> RenderedRow:
        """One item's attribute values, placeholders filled in (not cached)."""
        return tuple(self._placeholders[i] if value is None else value
                     for i, value in enumerate(self._raw_row(item, locale)))

    def _raw_row(self, item: Mapping[str, Any], locale: str | None) -> RenderedRow:
        """One item's attribute values, None where the item has nothing (not cached)."""
        chain = fallback_chain(locale, self.spec.locale)
        if self._attribute_fields > 1 and item["attributes"].__class__ is str:
            # Parsed once for all the attributes that read it, not once each.
            item = {**item, "attributes": stored_object(item["attributes"])}
        by_tag = normalized_overrides(stored_object(item["locales"]))
        overrides = [by_tag[tag] for tag in chain if tag in by_tag]
        return tuple(self._render(a, item, chain, overrides) for a in self.spec.attributes)

    def _render(
        self, attribute: AttributeSpec, item: Mapping[str, Any], chain: Sequence[str],
        overrides: Sequence[Mapping[str, Any]],
    ) -> str | None:
        """The attribute's value for one item, or None when the item has nothing there."""
        if attribute.format == "currency":
            amount = item["price_amount"]
            if amount is None:
                return None
            text = format_price(amount, item["price_currency"], chain)
        else:
            text = field_text(item, attribute.field, overrides)
            if text is None:
                return None
        if attribute.truncate:
            text = truncate_words(text, attribute.truncate)
        if attribute.template:
            text = fill_template(attribute.template, text, item["id"])
        return text

