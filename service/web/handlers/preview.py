"""The dry run of a transform, for people writing message templates.

`POST /v1/recommenders/{recommender}:preview` takes the same event as the transform and answers
what the transform would, plus per-endpoint, per-item notes on how each ID was resolved. It reads
the stored recommender and the items straight from Postgres: no cache is read or filled, so a
preview neither sees stale entries nor warms (or evicts) anything the live traffic relies on.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.adapters import pinpoint
from service.enrichment.enrich import Enricher
from service.enrichment.recommenders import check_recommender_name
from service.storage import items as item_store
from service.web.access import requires
from service.web.app_keys import POOL, PRINCIPAL, RECOMMENDERS, SETTINGS
from service.web.request_body import read_json
from service.web.responses import json_response


@requires("catalog:read")
async def preview(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    name = check_recommender_name(request.match_info["recommender"])
    recommender = await request.app[RECOMMENDERS].load(request[PRINCIPAL].tenant_id, name)
    event = await read_json(request, settings.max_body_bytes)
    parsed = pinpoint.parse_event(
        event, pinpoint.EventLimits(settings.max_endpoints, settings.max_items_per_endpoint)
    )
    rows = await item_store.fetch_items(
        request.app[POOL], recommender.catalog_id, parsed.item_ids,
        timeout=settings.db_command_timeout,
    ) if parsed.item_ids else []
    explained: dict[str, Any] = {}
    answer, unresolved = pinpoint.enrich_event(
        parsed, Enricher(recommender.spec), {row["id"]: row for row in rows}, explain=explained
    )
    return json_response({
        "recommender": recommender.name,
        "catalog": recommender.spec.catalog,
        "answer": answer,
        "endpoints": explained,
        "malformed": [error.as_json() for error in parsed.malformed],
        "unresolved": unresolved,
    })
