"""Catalogs of the calling key's tenant: create or update, read, list, delete."""

from __future__ import annotations

from aiohttp import web

from service.enrichment.recommenders import NAME_PATTERN
from service.errors import ValidationFailed
from service.items import format_timestamp, json_type
from service.storage import catalogs as catalog_store
from service.web.access import requires
from service.web.app_keys import POOL, PRINCIPAL, SETTINGS
from service.web.audit import audited
from service.web.paging import check_known_params, next_link, page_limit
from service.web.request_body import read_json
from service.web.responses import json_response

MAX_DESCRIPTION = 2000


def catalog_name(request: web.Request) -> str:
    name = request.match_info["catalog"]
    if not NAME_PATTERN.match(name):
        raise ValidationFailed.of(
            "catalog", "must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return name


def catalog_json(catalog: catalog_store.Catalog) -> dict[str, object]:
    return {
        "name": catalog.name,
        "description": catalog.description,
        "created_at": format_timestamp(catalog.created_at),
        "updated_at": format_timestamp(catalog.updated_at),
    }


@audited("catalog.put", target="catalog")
@requires("catalog:write")
async def put_catalog(request: web.Request) -> web.Response:
    name = catalog_name(request)
    body = await read_json(request, request.app[SETTINGS].max_body_bytes)
    if not isinstance(body, dict):
        raise ValidationFailed.of("body", f"must be a JSON object, got {json_type(body)}")
    unknown = [k for k in body if k not in ("name", "description", "created_at", "updated_at")]
    if unknown:
        raise ValidationFailed.of(unknown[0], "is not a catalog field (expected description)")
    if "name" in body and body["name"] != name:
        raise ValidationFailed.of("name", f"must match the catalog name in the path ({name!r})")
    description = body.get("description")
    if description is not None and (
        not isinstance(description, str) or len(description) > MAX_DESCRIPTION
        or "\x00" in description
    ):
        raise ValidationFailed.of("description", f"must be a string of at most {MAX_DESCRIPTION} "
                                  "characters")
    principal = request[PRINCIPAL]
    catalog, created = await catalog_store.upsert_catalog(
        request.app[POOL], principal.tenant_id, name, description
    )
    return json_response(catalog_json(catalog), status=201 if created else 200)


@requires("catalog:read")
async def get_catalog(request: web.Request) -> web.Response:
    catalog = await catalog_store.get_catalog(
        request.app[POOL], request[PRINCIPAL].tenant_id, catalog_name(request)
    )
    return json_response(catalog_json(catalog))


@audited("catalog.delete", target="catalog")
@requires("catalog:write")
async def delete_catalog(request: web.Request) -> web.Response:
    """Delete a catalog with all its items (refused with 409 while a recommender uses it)."""
    await catalog_store.delete_catalog(
        request.app[POOL], request[PRINCIPAL].tenant_id, catalog_name(request)
    )
    return web.Response(status=204)


@requires("catalog:read")
async def list_catalogs(request: web.Request) -> web.Response:
    query = request.query
    check_known_params(query, ("limit", "after"))
    limit = page_limit(query)
    after = query.get("after")
    if after is not None and not NAME_PATTERN.match(after):
        raise ValidationFailed.of("after", "must be a catalog name (from a previous page)")
    found = await catalog_store.list_catalogs(
        request.app[POOL], request[PRINCIPAL].tenant_id, after=after, limit=limit + 1
    )
    page = found[:limit]
    more = len(found) > limit
    return json_response({
        "catalogs": [catalog_json(c) for c in page],
        "next": next_link(request, {"limit": str(limit)}, page[-1].name) if more else None,
    })
