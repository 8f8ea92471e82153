"""The Amazon Pinpoint recommender-transformer contract, as an adapter over the generic core.

In: an event whose `Endpoints` maps endpoint IDs to Pinpoint endpoint definitions, each with an
ordered `RecommendationItems` array of item IDs. Out: a flat map of endpoint ID to the same endpoint,
untouched but for an added `Recommendations` object. Endpoints that cannot be served are left out,
which Pinpoint reads as "do not send to this one":

- malformed: `RecommendationItems` missing, empty, not an array of strings, or holding an ID that
  cannot exist (over 256 characters, NUL); counted and reported, the others are served;
- unresolved: none of its items exists (or the recommender's policy drops it).

Limits that make the whole event unusable (too many endpoints, too many items for one endpoint) are
a 422; so is an event none of whose endpoints is well formed although some are malformed, because
then nothing at all can be served and the caller should hear why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any

import orjson

from service.enrichment.enrich import Enricher, ItemNote, JsonRow
from service.enrichment.locales import fallback_chain
from service.enrichment.recommenders import APPLICATION_ID_PATTERN
from service.errors import FieldError, ValidationFailed
from service.items import all_item_ids_valid, item_id_problem, json_type
from service.resolution.resolver import Resolved
from service.speedups import native


@dataclass(frozen=True)
class EventLimits:
    max_endpoints: int
    max_items_per_endpoint: int


@dataclass
class ParsedEvent:
    """The endpoints to serve, in event order, and what was left out as malformed.

    `item_ids` holds every ID of the served endpoints once, in first-seen order, all valid;
    `locales` every endpoint locale that occurs (None: the endpoint names none)."""

    # (endpoint ID, endpoint, its item IDs, its locale)
    endpoints: list[tuple[str, Any, list[str], str | None]] = field(default_factory=list)
    malformed: list[FieldError] = field(default_factory=list)
    item_ids: list[str] = field(default_factory=list)
    locales: set[str | None] = field(default_factory=set)


def endpoint_locale(endpoint: Mapping[str, Any]) -> str | None:
    demographic = endpoint.get("Demographic")
    if isinstance(demographic, dict):
        locale = demographic.get("Locale")
        if isinstance(locale, str) and locale:
            return locale
    return None


def event_application_id(event: object) -> str:
    """The event's `ApplicationId` (the Pinpoint project), which picks a bound recommender."""
    if not isinstance(event, dict):
        raise ValidationFailed.of("body",
                                  f"the event must be a JSON object, got {json_type(event)}")
    application_id = event.get("ApplicationId")
    if application_id is None:
        raise ValidationFailed.of(
            "ApplicationId", "is required here: it picks the recommender bound to the project "
            "(or call /v1/recommenders/{recommender}/transform)",
        )
    if not isinstance(application_id, str) or not APPLICATION_ID_PATTERN.match(application_id):
        raise ValidationFailed.of(
            "ApplicationId", "must be a Pinpoint application (project) ID: 1-64 letters, digits, "
            "'_' or '-'",
        )
    return application_id


def parse_event(event: object, limits: EventLimits) -> ParsedEvent:
    """Check the event's shape and collect every item ID once, in first-seen order."""
    if not isinstance(event, dict):
        raise ValidationFailed.of("body", f"the event must be a JSON object, got {json_type(event)}")
    endpoints = event.get("Endpoints")
    if endpoints is None:
        raise ValidationFailed.of("Endpoints", "is required: a map of endpoint ID to endpoint")
    if not isinstance(endpoints, dict):
        raise ValidationFailed.of("Endpoints", f"must be an object, got {json_type(endpoints)}")
    if len(endpoints) > limits.max_endpoints:
        raise ValidationFailed.of(
            "Endpoints", f"at most {limits.max_endpoints} endpoints per event, got {len(endpoints)}"
        )

    # Every ID of the event is checked at once (a few C-speed passes); only when one is bad are
    # the endpoints gone through again, one by one, to set aside those holding it.
    parsed = _collect(endpoints, limits, check_each=False)
    if parsed.item_ids and not all_item_ids_valid(parsed.item_ids):
        parsed = _collect(endpoints, limits, check_each=True)
    if not parsed.endpoints and parsed.malformed:
        raise ValidationFailed.of_many(parsed.malformed)
    parsed.item_ids = list(dict.fromkeys(parsed.item_ids))
    return parsed


def _collect(endpoints: dict[str, Any], limits: EventLimits, *, check_each: bool) -> ParsedEvent:
    """The well-formed endpoints, in order, with their IDs (repeats kept) and locales."""
    parsed = ParsedEvent()
    every_id = parsed.item_ids
    max_items = limits.max_items_per_endpoint
    for endpoint_id, endpoint in endpoints.items():
        # The common case first, in a few cheap checks, before any error message is built.
        items = endpoint.get("RecommendationItems") if type(endpoint) is dict else None
        if (type(items) is not list or not 0 < len(items) <= max_items
                or (check_each and not all_item_ids_valid(items))):
            if not isinstance(endpoint, dict):
                parsed.malformed.append(FieldError(
                    f"Endpoints.{endpoint_id}", f"must be an object, got {json_type(endpoint)}"
                ))
                continue
            items = endpoint.get("RecommendationItems")
            problem = _items_problem(items, limits, endpoint_id)
            if problem:
                parsed.malformed.append(problem)
                continue
        locale = endpoint_locale(endpoint)
        parsed.endpoints.append((endpoint_id, endpoint, items, locale))
        every_id += items
        parsed.locales.add(locale)
    return parsed


def _items_problem(items: object, limits: EventLimits, endpoint_id: str) -> FieldError | None:
    # The common case first, before any string is built for an error message.
    if (isinstance(items, list) and 0 < len(items) <= limits.max_items_per_endpoint
            and all_item_ids_valid(items)):
        return None
    where = f"Endpoints.{endpoint_id}.RecommendationItems"
    if items is None:
        return FieldError(where, "is missing")
    if not isinstance(items, list):
        return FieldError(where, f"must be an array of item IDs, got {json_type(items)}")
    if not items:
        return FieldError(where, "is empty")
    if len(items) > limits.max_items_per_endpoint:
        # Not a malformed endpoint but a limit: the whole event is refused, loudly.
        raise ValidationFailed.of(
            where, f"at most {limits.max_items_per_endpoint} item IDs per endpoint, got {len(items)}"
        )
    for index, item_id in enumerate(items):
        problem = item_id_problem(item_id)
        if problem:
            return FieldError(f"{where}[{index}]", problem)
    return None


def enrich_event(
    parsed: ParsedEvent, enricher: Enricher, resolved: Mapping[str, Any],
    explain: dict[str, Any] | None = None,
) -> tuple[dict[str, dict[str, Any]], int]:
    """The transformer's answer, and how many well-formed endpoints were left out unresolved.

    With `explain` (a dry run), each endpoint's resolution notes are added to it by endpoint ID.
    """
    answer: dict[str, dict[str, Any]] = {}
    unresolved = 0
    for endpoint_id, endpoint, items, locale in parsed.endpoints:
        notes: list[ItemNote] | None = [] if explain is not None else None
        recommendations = enricher.recommendations(items, resolved, locale, notes)
        if explain is not None and notes is not None:
            explain[endpoint_id] = _explanation(enricher, locale, notes, recommendations)
        if recommendations is None:
            unresolved += 1
            continue
        # A shallow copy: every other key and value is the caller's own object, unchanged.
        answer[endpoint_id] = {**endpoint, "Recommendations": recommendations}
    return answer, unresolved


def fast_path_key(parsed: ParsedEvent, enricher: Enricher) -> tuple[int, str | None] | None:
    """The derived key to resolve this event's IDs under, when `enrich_event_json` can serve it
    from rows kept on L1 entries: one locale for the whole event (the usual batch)."""
    if len(parsed.locales) == 1:
        return enricher.derived_key(next(iter(parsed.locales)))
    return None


def enrich_event_json(
    parsed: ParsedEvent, enricher: Enricher, resolved: Resolved, *, raw: bool = False,
    tables: Mapping[str | None, tuple[Mapping[str, JsonRow | bool], dict[str, None]]]
    | None = None,
    rendered_by_locale: dict[str | None, dict[str, tuple[Any, JsonRow | bool]]] | None = None,
) -> tuple[dict[str, Any] | bytes, int, dict[str, tuple[Any, JsonRow | bool]]]:
    """`enrich_event` for the transform's common case (missing_items `skip`: the caller checks
    `enricher.serves_json`), with each
    endpoint's Recommendations assembled from serialised rows instead of built as objects and
    serialised again. Each distinct (item, locale) is rendered once, or not at all when
    `resolved.derived` holds its row already (resolved under `fast_path_key`).

    The answer: for an event whose endpoints are raw JSON (`raw`, service/adapters/raw_event.py), the
    serialised answer, each endpoint's own text with Recommendations added last; otherwise the
    answer object, each endpoint (parsed for this request alone) with Recommendations set where
    `{**endpoint, ...}` would have put it, as an orjson Fragment.

    Also returns the rows rendered here for items resolved as items (id → (item, row)), for the
    caller to keep on their L1 entries when it resolved under a derived key.

    An event of several locales (a batch of users of several countries) has no derived key to
    resolve under; `tables` gives, per locale, the rows L1 keeps for it (`derived_table`: read
    only) and the IDs its endpoints want (`ids_by_locale`), and only the rows missing are
    rendered here, into `rendered_by_locale` (locale → id → (item, row)) for the caller to
    keep."""
    json_row = enricher.json_row
    # Rows found ready on L1 (maybe L1's own table, shared: only read here), and rows rendered
    # here, per locale. Kept rows exist only for an event of one locale (`fast_path_key`).
    kept = resolved.derived.get
    own: dict[str | None, dict[str, JsonRow | bool]] = {}
    kept_for: dict[str | None, Mapping[str, JsonRow | bool]] = {}  # L1's rows, several locales
    rendered: dict[str, tuple[Any, JsonRow | bool]] = {}
    if len(parsed.locales) == 1:
        locale = next(iter(parsed.locales))
        mine = own[locale] = {}
        for item_id, item in resolved.items():
            mine[item_id] = row = json_row(item, locale)
            rendered[item_id] = (item, row)
        if raw and native is not None:
            # The per-endpoint work in C: every row is kept or rendered above, and an ID found
            # in neither is not in the catalog (the row json_row gives None: skipped).
            answer, unresolved = native.splice_answer(
                parsed.endpoints, resolved.derived, mine, enricher.endpoint_pieces,
                enricher.first_flags, enricher.spec.recommendations_per_message)
            return answer, unresolved, rendered

    elif tables is not None and rendered_by_locale is not None:
        by_locale = _rows_by_locale(json_row, resolved, tables, rendered_by_locale)
        if raw and native is not None:
            answer, unresolved = native.splice_answer(
                parsed.endpoints, _NO_ROWS, None, enricher.endpoint_pieces,
                enricher.first_flags, enricher.spec.recommendations_per_message, by_locale)
            return answer, unresolved, rendered
        for locale, (table, mine) in by_locale.items():
            own[locale] = mine
            kept_for[locale] = table

    def row_of(item_id: str, locale: str | None) -> JsonRow | bool:
        mine = own.setdefault(locale, {})
        row = mine.get(item_id)
        if row is None:
            row = kept_for.get(locale, _NO_ROWS).get(item_id)
        if row is None:
            row = mine[item_id] = json_row(resolved.get(item_id), locale)
        return row

    # The loop below runs for every endpoint: what it calls is bound once. The serialised answer
    # is one b"".join of every endpoint's pieces (the raw case) or one bytes formatting per
    # endpoint.
    cap = enricher.spec.recommendations_per_message
    first_indexes = enricher.first_indexes
    template = enricher.recommendations_template
    join = b",".join
    # One attribute (a single column): its values joined straight from the rows, which costs a
    # third of transposing them with zip.
    single = itemgetter(0) if len(enricher.spec.attributes) == 1 and not first_indexes else None
    fragment = orjson.Fragment
    # Endpoint IDs as JSON string contents, all serialised at once: a `","` can only stand between
    # two strings of orjson's output, since a quote inside one is always escaped.
    keys = (orjson.dumps([e[0] for e in parsed.endpoints])[2:-2].split(b'","') if raw
            else repeat(None))
    # An endpoint's pieces, its values (ID, text, columns) between the constant ones.
    member: list[bytes | memoryview | None] = []
    if raw:
        pieces = enricher.endpoint_pieces
        member = [None] * (2 * len(pieces) - 1)
        member[0::2] = pieces
    parts: list[bytes | memoryview | None] = []
    extend = parts.extend
    answer: dict[str, Any] = {}
    unresolved = 0
    for (endpoint_id, endpoint, items, locale), key in zip(parsed.endpoints, keys, strict=False):
        rows = [*filter(None, map(kept, items))]
        if len(rows) < len(items):  # rendered here, not yet, or not usable (False: skipped)
            rows = [*filter(None, [kept(i) or row_of(i, locale) for i in items])]
            if not rows:
                unresolved += 1
                continue
        if len(rows) > cap:
            del rows[cap:]
        columns: Any = ([join(map(single, rows))] if single is not None
                        else map(join, zip(*rows, strict=True)))
        if first_indexes:
            columns = [*columns]
            for index in first_indexes:  # one value, the first item's, not an array
                columns[index] = rows[0][index]
        if raw:
            member[1::2] = (key, memoryview(endpoint)[:-1], *columns)
            extend(member)
        else:
            endpoint["Recommendations"] = fragment(template % tuple(columns))
            answer[endpoint_id] = endpoint
    if raw:
        if not parts:
            return b"{}", unresolved, rendered
        parts[0] = b'{"'  # the first member has no comma before it
        parts.append(b"}")
        return b"".join(parts), unresolved, rendered  # type: ignore[arg-type]
    return answer, unresolved, rendered


_NO_ROWS: dict[str, Any] = {}


def ids_by_locale(parsed: ParsedEvent) -> dict[str | None, dict[str, None]]:
    """Each locale of the event → the IDs its endpoints want, once each, in order."""
    wanted: dict[str | None, dict[str, None]] = {}
    for _, _, items, locale in parsed.endpoints:
        ids = wanted.get(locale)
        if ids is None:
            ids = wanted[locale] = {}
        ids.update(dict.fromkeys(items))
    return wanted


def _rows_by_locale(
    json_row: Any, resolved: Resolved,
    tables: Mapping[str | None, tuple[Mapping[str, JsonRow | bool], dict[str, None]]],
    rendered_by_locale: dict[str | None, dict[str, tuple[Any, JsonRow | bool]]],
) -> dict[str | None, tuple[Mapping[str, JsonRow | bool], dict[str, JsonRow | bool]]]:
    """Per locale of the event: (the rows L1 keeps for it, the rows rendered here for the
    others of its endpoints' items). An ID resolved to nothing is not in the catalog: no row."""
    by_locale = {}
    for locale, (table, ids) in tables.items():
        mine: dict[str, JsonRow | bool] = {}
        if not table.keys() >= ids.keys():  # (a subset test in C: the warm case ends here)
            rendered = rendered_by_locale.setdefault(locale, {})
            for item_id in ids:
                if item_id not in table and (item := resolved.get(item_id)) is not None:
                    mine[item_id] = row = json_row(item, locale)
                    rendered[item_id] = (item, row)
        by_locale[locale] = (table, mine)
    return by_locale


def _explanation(
    enricher: Enricher, locale: str | None, notes: list[ItemNote], served: object
) -> dict[str, Any]:
    spec = enricher.spec
    explanation: dict[str, Any] = {
        "served": served is not None,
        "locale": locale,
        "locale_chain": list(fallback_chain(locale, spec.locale)),
        "items": [note.as_json() for note in notes],
    }
    if served is None:
        if spec.missing_items == "drop_endpoint" and any(
            n.status in ("unknown", "unavailable") for n in notes
        ):
            explanation["reason"] = "an item is missing and missing_items is drop_endpoint"
        else:
            explanation["reason"] = "none of its items is in the catalog and available"
    return explanation
