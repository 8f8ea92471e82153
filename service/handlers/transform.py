"""The recommender transform: a Pinpoint event in, the same endpoints with Recommendations out."""

from __future__ import annotations

import logging

from aiohttp import web

from service import pinpoint
from service.access import requires
from service.app_keys import (
    DEADLINE,
    METRICS,
    PRINCIPAL,
    RECOMMENDERS,
    REQUEST_ID,
    RESOLVER,
    SETTINGS,
)
from service.enrich import Enricher
from service.recommender_lookup import Recommender
from service.recommenders import check_recommender_name
from service.request_body import read_json
from service.responses import json_response

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
    event = await read_json(request, request.app[SETTINGS].max_body_bytes)
    return await transform_event(request, recommender, event)


@requires("transform")
async def transform_by_application(request: web.Request) -> web.Response:
    """One shim for many Pinpoint projects: the event's ApplicationId picks the recommender."""
    event = await read_json(request, request.app[SETTINGS].max_body_bytes)
    application_id = pinpoint.event_application_id(event)
    recommender = await request.app[RECOMMENDERS].for_application(
        request[PRINCIPAL].tenant_id, application_id, request[DEADLINE]
    )
    return await transform_event(request, recommender, event)


async def transform_event(
    request: web.Request, recommender: Recommender, event: object
) -> web.Response:
    settings = request.app[SETTINGS]
    parsed = pinpoint.parse_event(
        event, pinpoint.EventLimits(settings.max_endpoints, settings.max_items_per_endpoint)
    )
    resolved = await request.app[RESOLVER].resolve(
        recommender.catalog_id, parsed.item_ids, deadline=request[DEADLINE]
    )
    enricher = Enricher(recommender.spec, recommender.renders)
    answer, unresolved = pinpoint.enrich_event(parsed, enricher, resolved)
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
    return json_response(answer, headers=headers)
