"""Recommenders of the calling key's tenant: define, read, list, delete."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from service.enrichment.recommender_lookup import Recommender, recommender_from_row
from service.enrichment.recommenders import NAME_PATTERN, check_recommender_name, parse_recommender
from service.errors import NotFound, ValidationFailed
from service.items import format_timestamp
from service.storage import catalogs as catalog_store
from service.storage import recommenders as recommender_store
from service.web.access import requires
from service.web.app_keys import POOL, PRINCIPAL, RECOMMENDERS, SETTINGS
from service.web.audit import audited
from service.web.request_body import read_json
from service.web.responses import json_response

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def recommender_json(recommender: Recommender) -> dict[str, object]:
    return {
        "name": recommender.name,
        **recommender.spec.as_json(),
        "updated_at": format_timestamp(recommender.updated_at),
    }


@audited("recommender.put", target="recommender")
@requires("admin")
async def put_recommender(request: web.Request) -> web.Response:
    name = check_recommender_name(request.match_info["recommender"])
    settings = request.app[SETTINGS]
    body = await read_json(request, settings.max_body_bytes)
    spec = parse_recommender(body, name)
    pool = request.app[POOL]
    tenant_id = request[PRINCIPAL].tenant_id
    catalog = await catalog_store.find_catalog(pool, tenant_id, spec.catalog)
    if catalog is None:
        raise ValidationFailed.of("catalog", f"no catalog named {spec.catalog!r}")
    created = await recommender_store.save_recommender(
        pool, tenant_id, name, catalog.id, spec.stored_json(), list(spec.application_ids),
        acquire_timeout=settings.db_acquire_timeout,
    )
    lookup = request.app[RECOMMENDERS]
    lookup.forget(tenant_id, name)
    recommender = await lookup.load(tenant_id, name)
    return json_response(recommender_json(recommender), status=201 if created else 200)


@requires("catalog:read")
async def get_recommender(request: web.Request) -> web.Response:
    name = check_recommender_name(request.match_info["recommender"])
    # A GET reads the stored truth, not this process's cache.
    recommender = await request.app[RECOMMENDERS].load(request[PRINCIPAL].tenant_id, name)
    return json_response(recommender_json(recommender))


@requires("catalog:read")
async def list_recommenders(request: web.Request) -> web.Response:
    """`{"recommenders": [...], "next": url | null}`: pages in name order."""
    limit = _page_limit(request.query.get("limit"))
    after = request.query.get("after", "")
    if after and not NAME_PATTERN.match(after):
        raise ValidationFailed.of("after", "must be a recommender name (the last of a page)")
    tenant_id = request[PRINCIPAL].tenant_id
    rows = await recommender_store.fetch_recommender_page(
        request.app[POOL], tenant_id, after, limit + 1
    )
    page = [recommender_json(recommender_from_row(tenant_id, row)) for row in rows[:limit]]
    following = None
    if len(rows) > limit:
        following = "/v1/recommenders?" + urlencode({"limit": limit, "after": page[-1]["name"]})
    return json_response({"recommenders": page, "next": following})


def _page_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE:
        raise ValidationFailed.of("limit", f"must be an integer from 1 to {MAX_PAGE}")
    return int(raw)


@audited("recommender.delete", target="recommender")
@requires("admin")
async def delete_recommender(request: web.Request) -> web.Response:
    """Delete a recommender and its application-ID bindings; 204, or 404 if there was none."""
    name = check_recommender_name(request.match_info["recommender"])
    tenant_id = request[PRINCIPAL].tenant_id
    deleted = await recommender_store.delete_recommender(request.app[POOL], tenant_id, name)
    request.app[RECOMMENDERS].forget(tenant_id, name)
    if not deleted:
        raise NotFound(f"no recommender named {name!r}", field="recommender")
    return web.Response(status=204)
