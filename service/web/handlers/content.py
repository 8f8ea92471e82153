"""Send-time content for per-recipient callers (Braze Connected Content, Iterable data feeds, ...).

`GET /v1/recommenders/{recommender}/content?ids=1815,2009&locale=de_DE`, or the same as a POST
with `{"ids": [...], "locale": "de_DE"}`. The answer's shape is in service/adapters/content.py.

These callers wait 2 s (Braze) to 10 s (Iterable), so the budget without `X-Deadline-Ms` is
`ENRICHER_CONTENT_DEADLINE_MS` (1,500 ms). Past it, or with Postgres failing, the answer is made
from what the caches know (stale entries included) and flagged `X-Degraded`: a 200 whenever
anything can be shown. Only when nothing can be shown and Postgres could not be asked is it a 503
with `Retry-After`, which Braze's `:retry` retries and a template can abort on.

Answers carry a strong `ETag` (a hash of the body, so it changes exactly when the content does:
an item, the recommender or the locale) and `Cache-Control: private, max-age=<content_max_age>`;
`If-None-Match` gets a 304. A degraded answer is `no-store`, without an ETag: no cache should keep
it past the outage.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from service.adapters import content
from service.enrichment.recommender_lookup import Recommender
from service.enrichment.recommenders import check_recommender_name
from service.errors import Unavailable
from service.web.access import requires
from service.web.app_keys import (
    CONTENT_ANSWERS,
    DEADLINE,
    METRICS,
    PRINCIPAL,
    RECOMMENDERS,
    RESOLVER,
    SETTINGS,
)
from service.web.conditional_requests import cache_control, not_modified
from service.web.request_body import read_json
from service.web.responses import json_bytes_response

DEGRADED_HEADER = "X-Degraded"
RETRY_AFTER_SECONDS = "1"


@requires("transform", default_deadline="content_deadline_ms")
async def get_content(request: web.Request) -> web.Response:
    query = request.query
    wanted = content.query_from_params(query.getall("ids", ()), query.get("locale"),
                                       request.app[SETTINGS].max_content_ids)
    return await content_response(request, await recommender_of(request), wanted)


@requires("transform", default_deadline="content_deadline_ms")
async def post_content(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = await read_json(request, settings.max_body_bytes)
    wanted = content.query_from_body(body, settings.max_content_ids)
    return await content_response(request, await recommender_of(request), wanted)


async def recommender_of(request: web.Request) -> Recommender:
    name = check_recommender_name(request.match_info["recommender"])
    return await request.app[RECOMMENDERS].get(request[PRINCIPAL].tenant_id, name,
                                               request[DEADLINE])


async def content_response(
    request: web.Request, recommender: Recommender, wanted: content.ContentQuery, *,
    extras: Sequence[Mapping[str, Any]] | None = None, fields: Mapping[str, Any] | None = None,
    degraded: str | None = None,
) -> web.Response:
    """Resolve `wanted` through the caches and answer it. `extras` adds fields to each ID's item
    (by position), `fields` to the answer object; `degraded` is a reason known before (a source
    of IDs that failed), flagged like a slow Postgres."""
    enricher = recommender.enricher
    resolver = request.app[RESOLVER]
    as_json = content.serves_json(enricher)
    # Rows kept on L1 entries, shared with the transform: not when L1 is off.
    derived_key = enricher.derived_key(wanted.locale) if as_json and resolver.local.enabled \
        else None
    # A plain answer (no extras, nothing known degraded) may be one kept from before, checked
    # against the rows L1 holds now (adapters/content.py AnswerCache).
    answers = request.app[CONTENT_ANSWERS] if derived_key is not None and extras is None \
        and fields is None and degraded is None else None
    if answers is not None:
        kept = answers.get(derived_key, wanted,
                           resolver.local.derived_table(recommender.catalog_id, derived_key))
        if kept is not None:
            body, etag, ids = kept
            resolver.table_hits(recommender.catalog_id, ids)
            return _current_answer(request, recommender, body, etag)
    resolved = await resolver.resolve(
        recommender.catalog_id, wanted.distinct_ids(), deadline=request[DEADLINE], checked=True,
        derived_key=derived_key,
    )
    if resolved:  # items to render (none on the warm path): their locales' CLDR data first
        await enricher.prepare_locales((wanted.locale,), resolved)
    body, send, rendered = content.answer_bytes(recommender.name, enricher, wanted, resolved,
                                                extras, fields)
    if derived_key is not None and rendered:
        resolver.attach(recommender.catalog_id, derived_key, rendered, resolved.missed)
    if resolved.degraded:
        route = request.match_info.route.name or "content"
        request.app[METRICS].degraded.labels(route, resolved.degraded).inc()
        if not send:
            raise Unavailable(
                f"the catalog database is unavailable ({resolved.degraded}) and none of these "
                "IDs is cached; retry shortly", field="ids",
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            )
    reason = ", ".join(filter(None, (degraded, resolved.degraded)))
    if reason:
        return json_bytes_response(body, headers={DEGRADED_HEADER: reason,
                                                  "Cache-Control": "no-store"})
    etag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
    if answers is not None:
        answers.put(derived_key, wanted, body, etag, resolved.derived, rendered,
                    resolver.local.derived_table(recommender.catalog_id, derived_key))
    return _current_answer(request, recommender, body, etag)


def _current_answer(request: web.Request, recommender: Recommender, body: bytes,
                    etag: str) -> web.Response:
    """A current (not degraded) answer: with its ETag and Cache-Control, or a 304."""
    headers = {"ETag": etag, "Cache-Control": cache_control(recommender.spec.content_max_age)}
    if not_modified(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    return json_bytes_response(body, headers=headers)
