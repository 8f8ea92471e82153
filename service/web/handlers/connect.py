"""Amazon Connect outbound campaigns: `POST /v1/recommenders/{recommender}/connect`.

The event a journey's custom action block gives its Lambda function in, one result per customer
profile out (the contract is in service/adapters/connect.py). The Lambda shim forwards it here.

Every profile is answered, so that no profile fails the batch: one that cannot be served gets
`{"send": false, "reason": "..."}`, and so does every profile when the recommender is unknown.
Only a body that is not a Connect event is refused (400/422 naming the field). Answers made while
Personalize or Postgres failed carry `X-Degraded`, as the content routes' do.
"""

from __future__ import annotations

import logging

from aiohttp import web

from service.adapters import connect as connect_adapter
from service.enrichment.recommenders import check_recommender_name
from service.errors import NotFound
from service.web.access import requires
from service.web.app_keys import (
    CONNECT_REPLAY,
    DEADLINE,
    METRICS,
    PRINCIPAL,
    RECOMMENDERS,
    REQUEST_ID,
    RESOLVER,
    SETTINGS,
    USER_RECOMMENDATIONS,
)
from service.web.request_body import parse_json, read_json_body
from service.web.responses import json_bytes_response

log = logging.getLogger(__name__)

DEGRADED_HEADER = "X-Degraded"
MAX_LOGGED_PROBLEMS = 10


@requires("transform")
async def connect(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    # Read, never written back: the answer is made anew (json_codec.loads_read_only).
    body = await read_json_body(request, settings.max_body_bytes)
    event = connect_adapter.parse_event(parse_json(body, read_only=True))
    name = check_recommender_name(request.match_info["recommender"])
    tenant_id = request[PRINCIPAL].tenant_id
    try:
        recommender = await app[RECOMMENDERS].get(tenant_id, name, request[DEADLINE])
    except NotFound as exc:
        answer = connect_adapter.not_served(event, exc.detail)
    else:
        answer = await connect_adapter.answer_event(
            event, recommender, tenant_id=tenant_id, resolver=app[RESOLVER],
            users=app[USER_RECOMMENDATIONS], replay=app[CONNECT_REPLAY],
            deadline=request[DEADLINE], max_ids=settings.max_content_ids,
        )
    metrics = app[METRICS]
    for outcome, count in answer.outcomes.items():
        metrics.connect_profiles.labels(outcome).inc(count)
    headers = {}
    if answer.degraded:
        headers[DEGRADED_HEADER] = ", ".join(answer.degraded)
        for reason in answer.degraded:
            metrics.degraded.labels("connect", reason).inc()
    if answer.problems:
        # What was wrong, never a profile's data (names, addresses) nor its ID.
        log.warning("customer profiles answered send: false", extra={
            "request_id": request[REQUEST_ID], "recommender": name, **event.campaign,
            "not_sent": len(answer.problems),
            "reasons": sorted(set(answer.problems[:MAX_LOGGED_PROBLEMS])),
        })
    return json_bytes_response(answer.body, headers=headers)
