"""Catalogs and their items, for the tenant of the calling key."""

from __future__ import annotations

from aiohttp import web

from service.access import requires
from service.app_keys import DEADLINE, POOL, PRINCIPAL, RESOLVER, SETTINGS
from service.errors import NotFound, Unavailable, ValidationFailed
from service.items import check_item_id, format_timestamp, item_as_json, json_type, parse_item
from service.recommenders import NAME_PATTERN
from service.request_body import read_json
from service.responses import json_response
from service.storage import catalogs as catalog_store
from service.storage import items as item_store

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


@requires("catalog:write")
async def put_item(request: web.Request) -> web.Response:
    name = catalog_name(request)
    item_id = check_item_id(request.match_info["item_id"])
    body = await read_json(request, request.app[SETTINGS].max_body_bytes)
    item = parse_item(body, item_id)
    pool = request.app[POOL]
    catalog = await catalog_store.get_catalog(pool, request[PRINCIPAL].tenant_id, name)
    row, created = await item_store.upsert_item(pool, catalog.id, item)
    # Read-your-writes here at once; other processes hear of it through NOTIFY.
    await request.app[RESOLVER].forget(catalog.id, [item_id])
    return json_response(item_as_json(row), status=201 if created else 200)


@requires("catalog:read")
async def get_item(request: web.Request) -> web.Response:
    name = catalog_name(request)
    item_id = check_item_id(request.match_info["item_id"])
    pool = request.app[POOL]
    catalog = await catalog_store.get_catalog(pool, request[PRINCIPAL].tenant_id, name)
    resolved = await request.app[RESOLVER].resolve(
        catalog.id, [item_id], deadline=request[DEADLINE]
    )
    row = resolved.get(item_id)
    if row is None and resolved.degraded:
        raise Unavailable(f"the catalog database is unavailable ({resolved.degraded}); retry "
                          "shortly", field="item_id")
    if row is None:
        raise NotFound(f"no item {item_id!r} in catalog {name!r}", field="item_id")
    # Served from a cache past its TTL because Postgres could not answer in time: say so.
    headers = {"X-Degraded": resolved.degraded} if resolved.degraded else None
    return json_response(item_as_json(row), headers=headers)
