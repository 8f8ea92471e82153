"""The recommender transform: a Pinpoint event in, the same endpoints with Recommendations out."""

from __future__ import annotations

import functools
import logging
from typing import Any

from aiohttp import web

from service import json_codec
from service.adapters import pinpoint
from service.adapters.raw_event import RawEvent, read_raw_event
from service.enrichment.recommender_lookup import Recommender
from service.enrichment.recommenders import APPLICATION_ID_PATTERN, check_recommender_name
from service.resolution.resolver import ItemResolver
from service.web.access import requires
from service.web.app_keys import (
    DEADLINE,
    METRICS,
    PRINCIPAL,
    RECOMMENDERS,
    REQUEST_ID,
    RESOLVER,
    SETTINGS,
)
from service.web.request_body import parse_json, read_json_body
from service.web.responses import json_bytes_response, json_response

log = logging.getLogger(__name__)

MALFORMED_HEADER = "X-Malformed-Endpoints"
UNRESOLVED_HEADER = "X-Unresolved-Endpoints"
DEGRADED_HEADER = "X-Degraded"
MAX_LOGGED_PROBLEMS = 10


@requires("transform")
async def transform(request: web.Request) -> web.Response:
    name = check_recommender_name(request.match_info["recommender"])
    recommender = await request.app[RECOMMENDERS].get(
        request[PRINCIPAL].tenant_id, name, request[DEADLINE]
    )
    body = await read_json_body(request, request.app[SETTINGS].max_body_bytes)
    return await transform_event(request, recommender, body)


@requires("transform")
async def transform_by_application(request: web.Request) -> web.Response:
    """One shim for many Pinpoint projects: the event's ApplicationId picks the recommender."""
    body = await read_json_body(request, request.app[SETTINGS].max_body_bytes)
    event: object = read_raw_event(body, _limits(request))
    application_id = event.application_id if isinstance(event, RawEvent) else None
    if application_id is None or not APPLICATION_ID_PATTERN.match(application_id):
        event = parse_json(body)  # the general path, which says what is wrong with it
        application_id = pinpoint.event_application_id(event)
    recommender = await request.app[RECOMMENDERS].for_application(
        request[PRINCIPAL].tenant_id, application_id, request[DEADLINE]
    )
    return await transform_event(request, recommender, body, event)


def _limits(request: web.Request) -> pinpoint.EventLimits:
    settings = request.app[SETTINGS]
    return _event_limits(settings.max_endpoints, settings.max_items_per_endpoint)


@functools.lru_cache(maxsize=8)
def _event_limits(max_endpoints: int, max_items_per_endpoint: int) -> pinpoint.EventLimits:
    return pinpoint.EventLimits(max_endpoints, max_items_per_endpoint)  # one object, not one a call


def _kept_rows_by_locale(
    resolver: ItemResolver, recommender: Recommender, parsed: pinpoint.ParsedEvent,
) -> tuple[dict[str | None, tuple[dict[str, Any], dict[str, None]]], list[str]]:
    """Per locale of the event, the rows L1 keeps for it (`derived_table`: read only, `{}` for
    none) and the IDs its endpoints want; and the IDs wanted in a locale whose rows lack them,
    to resolve."""
    catalog_id, enricher = recommender.catalog_id, recommender.enricher
    tables: dict[str | None, tuple[dict[str, Any], dict[str, None]]] = {}
    unfound: dict[str, None] = {}
    for locale, ids in pinpoint.ids_by_locale(parsed).items():
        table = resolver.local.derived_table(catalog_id, enricher.derived_key(locale)) or {}
        tables[locale] = (table, ids)
        if table.keys() >= ids.keys():  # every row at hand (a subset test in C)
            resolver.table_hits(catalog_id, list(ids))
            continue
        found = [item_id for item_id in ids if item_id in table]
        if found:
            resolver.table_hits(catalog_id, found)
        unfound.update(dict.fromkeys(item_id for item_id in ids if item_id not in table))
    return tables, list(unfound)


async def transform_event(
    request: web.Request, recommender: Recommender, body: bytes, event: object = None
) -> web.Response:
    """Serve the event in `body`; `event` is what a caller already read of it, if anything (read
    before the recommender was known, a raw read serves only a policy that takes it)."""
    enricher = recommender.enricher
    limits = _limits(request)
    if isinstance(event, RawEvent) and not enricher.serves_json:
        event = None
    if event is None:
        event = (read_raw_event(body, limits) if enricher.serves_json else None) \
            or parse_json(body)
    parsed = event if isinstance(event, RawEvent) else pinpoint.parse_event(event, limits)
    # Serialised rows where the answer can be assembled from them: not for an event holding
    # integers beyond 64 bits, read and written by the standard library, which takes no fragments.
    as_json = enricher.serves_json and not json_codec.is_exact(event)
    resolver = request.app[RESOLVER]
    # Rows kept on L1 entries: not when L1 is off (ENRICHER_CACHE_MAX_ENTRIES=0).
    derived_key = (pinpoint.fast_path_key(parsed, enricher)
                   if as_json and resolver.local.enabled else None)
    wanted = parsed.item_ids
    tables = rendered_by_locale = None
    if as_json and derived_key is None and resolver.local.enabled and len(parsed.locales) > 1:
        # An event of several locales (users of several countries): each locale's rows that L1
        # keeps are used as they are, and only the IDs without one are resolved and rendered.
        tables, wanted = _kept_rows_by_locale(resolver, recommender, parsed)
        rendered_by_locale = {}
    resolved = await resolver.resolve(
        recommender.catalog_id, wanted, deadline=request[DEADLINE],
        derived_key=derived_key, checked=True,
    )
    if resolved:  # items to render (none on the warm path): their locales' CLDR data first
        await enricher.prepare_locales(parsed.locales, resolved)
    if as_json:
        answer, unresolved, rendered = pinpoint.enrich_event_json(
            parsed, enricher, resolved, raw=isinstance(parsed, RawEvent),
            tables=tables, rendered_by_locale=rendered_by_locale,
        )
    else:
        (answer, unresolved), rendered = pinpoint.enrich_event(parsed, enricher, resolved), {}
    if derived_key is not None and rendered:
        resolver.attach(recommender.catalog_id, derived_key, rendered, resolved.missed)
    for locale, rows in (rendered_by_locale or {}).items():
        if rows:
            resolver.attach(recommender.catalog_id, enricher.derived_key(locale), rows,
                            resolved.missed)
    headers = {}
    if parsed.malformed:
        headers[MALFORMED_HEADER] = str(len(parsed.malformed))
        log.warning(
            "endpoints left out as malformed",
            extra={
                "request_id": request[REQUEST_ID],
                "recommender": recommender.name,
                "malformed": len(parsed.malformed),
                "problems": [e.as_json() for e in parsed.malformed[:MAX_LOGGED_PROBLEMS]],
            },
        )
    if unresolved:
        headers[UNRESOLVED_HEADER] = str(unresolved)
    if resolved.degraded:
        # Answered from the caches (stale included) and the missing-item policy, in time.
        headers[DEGRADED_HEADER] = resolved.degraded
        request.app[METRICS].degraded.labels("transform", resolved.degraded).inc()
    if isinstance(answer, bytes):
        return json_bytes_response(answer, headers=headers)
    return json_response(answer, headers=headers)
