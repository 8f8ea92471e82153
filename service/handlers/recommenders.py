"""Recommenders of the calling key's tenant."""

from __future__ import annotations

from aiohttp import web

from service.access import requires
from service.app_keys import POOL, PRINCIPAL, RECOMMENDERS, SETTINGS
from service.errors import ValidationFailed
from service.items import format_timestamp
from service.recommender_lookup import Recommender
from service.recommenders import check_recommender_name, parse_recommender
from service.request_body import read_json
from service.responses import json_response
from service.storage import catalogs as catalog_store
from service.storage import recommenders as recommender_store


def recommender_json(recommender: Recommender) -> dict[str, object]:
    return {
        "name": recommender.name,
        **recommender.spec.as_json(),
        "updated_at": format_timestamp(recommender.updated_at),
    }


@requires("admin")
async def put_recommender(request: web.Request) -> web.Response:
    name = check_recommender_name(request.match_info["recommender"])
    body = await read_json(request, request.app[SETTINGS].max_body_bytes)
    spec = parse_recommender(body, name)
    pool = request.app[POOL]
    tenant_id = request[PRINCIPAL].tenant_id
    catalog = await catalog_store.find_catalog(pool, tenant_id, spec.catalog)
    if catalog is None:
        raise ValidationFailed.of("catalog", f"no catalog named {spec.catalog!r}")
    created = await recommender_store.upsert_recommender(
        pool, tenant_id, name, catalog.id, spec.as_json()
    )
    lookup = request.app[RECOMMENDERS]
    lookup.forget(tenant_id, name)
    recommender = await lookup.get(tenant_id, name)
    return json_response(recommender_json(recommender), status=201 if created else 200)


@requires("catalog:read")
async def get_recommender(request: web.Request) -> web.Response:
    name = check_recommender_name(request.match_info["recommender"])
    lookup = request.app[RECOMMENDERS]
    tenant_id = request[PRINCIPAL].tenant_id
    # A GET reads the stored truth, not this process's cache.
    lookup.forget(tenant_id, name)
    return json_response(recommender_json(await lookup.get(tenant_id, name)))
