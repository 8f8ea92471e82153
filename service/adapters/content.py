"""Send-time content: the per-recipient hooks of Braze, Iterable, SFMC, Airship and OneSignal.

These platforms call one HTTP endpoint per recipient (GET, or POST with a JSON body) and put the
JSON object they get into the message. In: item IDs (in order, duplicates kept) and an optional
locale. Out: one object, never a top-level array (Iterable requires an object; Braze's template
sees `__http_status_code__` only in one):

    {"recommender": "movies", "locale": "de_DE", "send": true,
     "items": [{"id": "1815", "Title": "Fleabag", "Price": "19,99 $"}, ...],
     "Recommendations": {"Title": ["Fleabag", ...], "Price": [...]},
     "missing": ["unknown-id"]}

`Recommendations` is what the Pinpoint transform would add to an endpoint with these IDs and
locale: it comes from the same `Enricher.recommendations` (the transform's general path, which
tests hold equal to its serialised one), so formats, locale chain, missing-item policy and cap are
the transform's own. `items` holds one object per ID the catalog can show (unknown and unavailable
ones left out; not capped), `id` plus one key per attribute, each rendered as the Recommendations
values are. `missing` names the IDs that could not be shown, each once. `send` is false when the
transform would leave the endpoint out (nothing resolves, or `drop_endpoint` with one missing):
then `items` is empty and `Recommendations` is `{}`, so a template can abort on `send` alone.

For the usual recommender (`skip`, no attribute named `id`) the answer is assembled from the
serialised rows the transform keeps on L1 entries (`content_answer_json`: the same bytes as
`content_answer` serialised, without building the objects), since a per-recipient request is
small and its fixed cost is what counts.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from service import json_codec
from service.enrichment.enrich import Enricher, JsonRow, is_usable
from service.enrichment.locales import TAG_PATTERN, normalize_tag
from service.errors import FieldError, ValidationFailed
from service.items import all_item_ids_valid, item_id_problem, json_type

MAX_LOCALE_LENGTH = 64
BODY_FIELDS = ("ids", "locale")


@dataclass(frozen=True)
class ContentQuery:
    """What a caller asked for: IDs in request order (duplicates kept, each valid) and the
    locale as sent (None: the recommender's default)."""

    ids: list[str]
    locale: str | None

    def distinct_ids(self) -> list[str]:
        return list(dict.fromkeys(self.ids))


def query_from_params(values: Sequence[str], locale: str | None, max_ids: int) -> ContentQuery:
    """From the query string: `ids=a,b,c` (one value, split on commas) or `ids=a&ids=b` (each
    value one whole ID, so IDs holding commas can be sent), and `locale`."""
    if len(values) == 1:
        values = values[0].split(",")
    return ContentQuery(_checked_ids(list(values), max_ids), query_locale(locale))


def query_from_body(body: object, max_ids: int) -> ContentQuery:
    """From a POST body: `{"ids": [...], "locale": "de_DE"}`."""
    if not isinstance(body, dict):
        raise ValidationFailed.of("body", f"must be a JSON object like {{\"ids\": [\"1815\"]}}, "
                                  f"got {json_type(body)}")
    unknown = [FieldError(key, "is not a field here (expected: ids, locale)")
               for key in body if key not in BODY_FIELDS]
    if unknown:
        raise ValidationFailed.of_many(unknown)
    ids = body.get("ids")
    if not isinstance(ids, list):
        raise ValidationFailed.of("ids", "is required: an array of item IDs"
                                  if ids is None else f"must be an array, got {json_type(ids)}")
    locale = body.get("locale")
    if locale is not None and not isinstance(locale, str):
        raise ValidationFailed.of("locale", f"must be a string, got {json_type(locale)}")
    return ContentQuery(_checked_ids(ids, max_ids), query_locale(locale))


def _checked_ids(ids: list[Any], max_ids: int) -> list[str]:
    if ids and ids[-1] == "":
        del ids[-1]  # what a template loop that writes `{{id}},` leaves
    if not ids:
        raise ValidationFailed.of("ids", "is required: 1 or more item IDs (ids=1815,2009 or "
                                  "ids=1815&ids=2009)")
    if len(ids) > max_ids:
        raise ValidationFailed.of("ids", f"at most {max_ids} IDs per request, got {len(ids)}")
    if all_item_ids_valid(ids):  # the usual case, in a few C-speed passes
        return ids
    raise ValidationFailed.of_many([
        FieldError(f"ids[{index}]", problem) for index, item_id in enumerate(ids)
        if (problem := item_id_problem(item_id))
    ])


def query_locale(locale: str | None) -> str | None:
    """The `locale` asked for, checked (None: the recommender's default)."""
    if not locale:
        return None  # an empty `locale=`: a template whose recipient has no language set
    if len(locale) > MAX_LOCALE_LENGTH or not TAG_PATTERN.match(locale):
        raise ValidationFailed.of("locale", "must be a locale tag like en_US, de or es-MX")
    return locale


def content_answer(
    recommender: str, enricher: Enricher, query: ContentQuery, resolved: Mapping[str, Any],
    extras: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The answer object for `query`, its items resolved in `resolved`. `extras`, one mapping
    per ID of the query (by position), adds fields to that ID's item (a score, say)."""
    ids, locale = query.ids, query.locale
    recommendations = enricher.recommendations(ids, resolved, locale)
    items: list[dict[str, Any]] = []
    missing: dict[str, None] = {}
    for position, item_id in enumerate(ids):
        item = resolved.get(item_id)
        if not is_usable(item):
            missing[item_id] = None
            continue
        if recommendations is None:
            continue
        shown = {"id": item_id}
        shown.update(enricher.attributes_of(item, locale))  # type: ignore[arg-type]
        shown["id"] = item_id  # an attribute named `id` does not hide the item's ID
        if extras is not None:
            shown.update(extras[position])
        items.append(shown)
    return {
        "recommender": recommender,
        "locale": normalize_tag(locale) if locale else enricher.spec.locale,
        "send": recommendations is not None,
        "items": items,
        "Recommendations": recommendations or {},
        "missing": list(missing),
    }


def answer_bytes(
    recommender: str, enricher: Enricher, query: ContentQuery, resolved: Any,
    extras: Sequence[Mapping[str, Any]] | None = None, fields: Mapping[str, Any] | None = None,
) -> tuple[bytes, bool, dict[str, tuple[Any, JsonRow | bool]]]:
    """The answer to `query` (plus `fields`) serialised, as every caller of this contract sends
    it: (the body, send, rows rendered for the caller's L1 entries; see content_answer_json)."""
    if serves_json(enricher):
        return content_answer_json(recommender, enricher, query, resolved, extras, fields)
    answer = content_answer(recommender, enricher, query, resolved, extras)
    if fields:
        answer.update(fields)
    return json_codec.dumps(answer), answer["send"], {}


def serves_json(enricher: Enricher) -> bool:
    """Can `content_answer_json` answer for this recommender?"""
    return enricher.serves_json and enricher.item_template is not None


def content_answer_json(
    recommender: str, enricher: Enricher, query: ContentQuery, resolved: Any,
    extras: Sequence[Mapping[str, Any]] | None = None, fields: Mapping[str, Any] | None = None,
) -> tuple[bytes, bool, dict[str, tuple[Any, JsonRow | bool]]]:
    """`content_answer` (plus `fields`) serialised, for a recommender `serves_json` accepts:
    (the body, send, the rows rendered here for items resolved as items, for the caller to keep
    on their L1 entries). Rows already kept are read from `resolved.derived`."""
    locale = query.locale
    kept = resolved.derived.get
    json_row = enricher.json_row
    template = enricher.item_template
    dumps = orjson.dumps
    rendered: dict[str, tuple[Any, JsonRow | bool]] = {}
    rows: list[JsonRow] = []
    items: list[bytes] = []
    missing: dict[str, None] = {}
    for position, item_id in enumerate(query.ids):
        row = kept(item_id)
        if row is None:
            item = resolved.get(item_id)
            row = json_row(item, locale)
            if item is not None:
                rendered[item_id] = (item, row)
        if not row:
            missing[item_id] = None
            continue
        rows.append(row)
        shown = template % (dumps(item_id), *row)  # type: ignore[operator]
        if extras is not None and extras[position]:
            shown = shown[:-1] + b"," + dumps(extras[position])[1:]
        items.append(shown)
    send = bool(rows)
    body = b"".join((
        b'{"recommender":', dumps(recommender),
        b',"locale":', dumps(normalize_tag(locale) if locale else enricher.spec.locale),
        b',"send":true,"items":[' if send else b',"send":false,"items":[',
        b",".join(items) if send else b"",
        b'],"Recommendations":', enricher.recommendations_json(rows) if send else b"{}",
        b',"missing":', dumps(list(missing)),
        b"," + dumps(fields)[1:] if fields else b"}",
    ))
    return body, send, rendered


class AnswerCache:
    """Serialised content answers, kept while every row they were made of is still L1's.

    An answer (`content_answer_json`, no extras or added fields) depends only on the recommender
    (its derived key names its version and the locale) and on the rows L1 keeps for the IDs
    under that key. So it is kept with those rows, and served again only while L1's derived
    table holds each of them, the very same objects: a row leaves the table when its item
    changes, is evicted or flushed, or its TTL passes (service/resolution/local_cache.py), so an
    answer is served exactly as long as a rebuilt one would be the same bytes, and no longer.
    Answers with an ID the table cannot vouch for (unknown to the catalog, or not admitted into
    L1) are not kept. Bounded by entries and bytes; emptied when full, as RenderCache is.
    """

    def __init__(self, max_entries: int = 32_768, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._answers: dict[tuple[Any, str | None, tuple[str, ...]],
                            tuple[bytes, str, tuple[str, ...], tuple[Any, ...]]] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, derived_key: Any, query: ContentQuery,
            table: Mapping[str, Any] | None) -> tuple[bytes, str, tuple[str, ...]] | None:
        """(body, ETag, distinct IDs) of the answer to `query`, if kept and every row it was
        made of is still in `table` (L1's derived table for `derived_key`)."""
        if table is None:
            return None
        kept = self._answers.get((derived_key, query.locale, tuple(query.ids)))
        if kept is None:
            return None
        body, etag, ids, rows = kept
        if all(map(operator.is_, map(table.get, ids), rows)):
            return body, etag, ids
        return None

    def put(self, derived_key: Any, query: ContentQuery, body: bytes, etag: str,
            derived: Mapping[str, Any], rendered: Mapping[str, tuple[Any, Any]],
            table: Mapping[str, Any] | None) -> None:
        """Keep `body` (with its ETag), made of rows kept in L1 (`derived`, Resolved.derived)
        and rows rendered for it (`rendered`, id → (item, row)), if `table` (L1's derived table
        for `derived_key`, after the rendered rows were attached) holds each of them now."""
        if table is None:
            return
        ids = tuple(dict.fromkeys(query.ids))
        rows = []
        for item_id in ids:
            row = derived.get(item_id)
            if row is None:
                made = rendered.get(item_id)
                if made is None:
                    return  # unknown to the catalog: nothing in L1 says when that changes
                row = made[1]
            if table.get(item_id) is not row:
                return  # not admitted into L1, or replaced meanwhile
            rows.append(row)
        size = len(body) + 200 + 60 * len(ids)  # the tuples, the key, the dict slot
        if len(self._answers) >= self.max_entries or self._bytes + size > self.max_bytes:
            self._answers.clear()
            self._bytes = 0
        self._answers[(derived_key, query.locale, tuple(query.ids))] = (body, etag, ids,
                                                                         tuple(rows))
        self._bytes += size
