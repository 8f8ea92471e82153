"""Decorating an Amazon Personalize `GetRecommendations` response with a recommender's attributes.

`POST /v1/recommenders/{recommender}/decorate?locale=de_DE` (locale optional: the recommender's
default otherwise). The shape and the missing-item rules are in service/adapters/personalize.py.
"""

from __future__ import annotations

from aiohttp import web

from service.adapters import personalize
from service.enrichment.locales import TAG_PATTERN
from service.enrichment.recommenders import check_recommender_name
from service.errors import ValidationFailed
from service.web.access import requires
from service.web.app_keys import DEADLINE, METRICS, PRINCIPAL, RECOMMENDERS, RESOLVER, SETTINGS
from service.web.request_body import read_json
from service.web.responses import json_response

UNRESOLVED_ITEMS_HEADER = "X-Unresolved-Items"
DEGRADED_HEADER = "X-Degraded"


@requires("transform")
async def decorate(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    name = check_recommender_name(request.match_info["recommender"])
    locale = request.query.get("locale")
    if locale is not None and not TAG_PATTERN.match(locale):
        raise ValidationFailed.of("locale", "must be a locale tag like en_US or de")
    deadline = request[DEADLINE]
    recommender = await request.app[RECOMMENDERS].get(request[PRINCIPAL].tenant_id, name, deadline)
    body = await read_json(request, settings.max_body_bytes)
    parsed = personalize.parse_response(body, settings.max_batch_ids)
    resolved = await request.app[RESOLVER].resolve(recommender.catalog_id, parsed.item_ids,
                                                   deadline=deadline)
    enricher = recommender.enricher
    if resolved:  # a locale's first prices: its CLDR data loaded off the loop
        await enricher.prepare_locales((locale,), resolved)
    answer, missing = personalize.decorate(parsed, enricher, resolved, locale)
    headers = {UNRESOLVED_ITEMS_HEADER: str(missing)} if missing else {}
    if resolved.degraded:
        headers[DEGRADED_HEADER] = resolved.degraded
        request.app[METRICS].degraded.labels("decorate", resolved.degraded).inc()
    return json_response(answer, headers=headers)
