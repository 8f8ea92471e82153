"""Items of a catalog: read (with ETag and 304), create or replace, merge-patch, delete, batch get,
and keyset-paged listing. Writes honour If-Match / If-None-Match (412 on a stale version)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from aiohttp import web

from service.catalog.merge_patch import apply_merge_patch
from service.errors import NotFound, PreconditionFailed, Unavailable, ValidationFailed
from service.items import (
    ITEM_FIELDS,
    MAX_TEXT_LENGTH,
    check_item_id,
    item_as_json,
    json_type,
    parse_item,
)
from service.storage import catalogs as catalog_store
from service.storage import items as item_store
from service.web.access import requires
from service.web.app_keys import DEADLINE, METRICS, POOL, PRINCIPAL, READS, RESOLVER, SETTINGS
from service.web.conditional_requests import (
    cache_control,
    check_write,
    has_write_preconditions,
    item_etag,
    not_modified,
)
from service.web.handlers.catalogs import catalog_name
from service.web.paging import check_known_params, next_link, page_limit
from service.web.request_body import read_json
from service.web.responses import json_response

PROJECTABLE_FIELDS = ("id", *ITEM_FIELDS, "updated_at")
LIST_PARAMS = ("limit", "after", "genre", "updated_since")


def _item_id(request: web.Request) -> str:
    return check_item_id(request.match_info["item_id"])


async def _catalog_id(request: web.Request) -> int:
    catalog = await catalog_store.get_catalog(
        request.app[POOL], request[PRINCIPAL].tenant_id, catalog_name(request)
    )
    return catalog.id


def _validators(request: web.Request, row: asyncpg.Record) -> dict[str, str]:
    return {"ETag": item_etag(row["version"]),
            "Cache-Control": cache_control(request.app[SETTINGS].item_max_age)}


async def _written(request: web.Request, catalog_id: int, item_id: str, version: int) -> None:
    """Read-your-writes in this process at once; other processes hear of it through NOTIFY.
    `version` is the item's new one (minus the old one for a deletion), as NOTIFY sends it: a
    read replica's older row is then never served here, even before the notification comes."""
    await request.app[RESOLVER].forget(catalog_id, [item_id], {item_id: version})


def _preconditions(request: web.Request) -> tuple[str | None, str | None]:
    return request.headers.get("If-Match"), request.headers.get("If-None-Match")


@requires("catalog:read")
async def get_item(request: web.Request) -> web.Response:
    """One item, through the same resolver and caches as the transform (writes evict at once)."""
    catalog_name(request)
    item_id = _item_id(request)
    catalog_id = await _catalog_id(request)
    resolved = await request.app[RESOLVER].resolve(catalog_id, [item_id],
                                                   deadline=request[DEADLINE])
    row = resolved.get(item_id)
    if row is None and resolved.degraded:
        raise Unavailable(f"the catalog database is unavailable ({resolved.degraded}); retry "
                          "shortly", field="item_id")
    if row is None:
        raise NotFound(f"no item {item_id!r} in catalog {request.match_info['catalog']!r}",
                       field="item_id")
    headers = _validators(request, row)
    if resolved.degraded:
        # Served from a cache past its TTL because Postgres could not answer in time: say so.
        headers["X-Degraded"] = resolved.degraded
        request.app[METRICS].degraded.labels("get_item", resolved.degraded).inc()
    if not_modified(request.headers.get("If-None-Match"), headers["ETag"]):
        return web.Response(status=304, headers=headers)
    return json_response(item_as_json(row), headers=headers)


@requires("catalog:write")
async def put_item(request: web.Request) -> web.Response:
    """Create or replace. With If-Match the item must still be at that version; with
    If-None-Match: * it must not exist yet."""
    catalog_name(request)
    item_id = _item_id(request)
    body = await read_json(request, request.app[SETTINGS].max_body_bytes)
    item = parse_item(body, item_id)
    catalog_id = await _catalog_id(request)
    pool = request.app[POOL]
    if_match, if_none_match = _preconditions(request)
    if not has_write_preconditions(if_match, if_none_match):
        row, created = await item_store.upsert_item(pool, catalog_id, item)
    else:
        async with pool.acquire() as conn, conn.transaction():
            current = await item_store.lock_item(conn, catalog_id, item_id)
            check_write(if_match, if_none_match,
                        None if current is None else item_etag(current["version"]))
            if current is None:
                # An absent row cannot be locked: insert-if-absent decides a race between two
                # creators, and the loser is told the item now exists.
                row = await item_store.insert_new_item(conn, catalog_id, item)
                if row is None:
                    raise PreconditionFailed("the item was created meanwhile by another request",
                                             field="If-None-Match" if if_none_match else "If-Match")
                created = True
            else:
                row, created = await item_store.upsert_item(conn, catalog_id, item)
    await _written(request, catalog_id, item_id, row["version"])
    return json_response(item_as_json(row), status=201 if created else 200,
                         headers=_validators(request, row))


@requires("catalog:write")
async def patch_item(request: web.Request) -> web.Response:
    """JSON Merge Patch (RFC 7396) of a stored item; the result is validated like a PUT body."""
    catalog_name(request)
    item_id = _item_id(request)
    patch = await read_json(request, request.app[SETTINGS].max_body_bytes)
    if not isinstance(patch, dict):
        raise ValidationFailed.of("body", f"a merge patch must be a JSON object, got "
                                  f"{json_type(patch)}")
    catalog_id = await _catalog_id(request)
    if_match, if_none_match = _preconditions(request)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        current = await item_store.lock_item(conn, catalog_id, item_id)
        check_write(if_match, if_none_match,
                    None if current is None else item_etag(current["version"]))
        if current is None:
            raise NotFound(f"no item {item_id!r} in catalog {request.match_info['catalog']!r}",
                           field="item_id")
        merged = apply_merge_patch(item_as_json(current), patch)
        row, _ = await item_store.upsert_item(conn, catalog_id, parse_item(merged, item_id))
    await _written(request, catalog_id, item_id, row["version"])
    return json_response(item_as_json(row), headers=_validators(request, row))


@requires("catalog:write")
async def delete_item(request: web.Request) -> web.Response:
    catalog_name(request)
    item_id = _item_id(request)
    catalog_id = await _catalog_id(request)
    pool = request.app[POOL]
    if_match, if_none_match = _preconditions(request)
    if not has_write_preconditions(if_match, if_none_match):
        deleted = await item_store.delete_item(pool, catalog_id, item_id)
    else:
        async with pool.acquire() as conn, conn.transaction():
            current = await item_store.lock_item(conn, catalog_id, item_id)
            check_write(if_match, if_none_match,
                        None if current is None else item_etag(current["version"]))
            deleted = None if current is None else await item_store.delete_item(
                conn, catalog_id, item_id
            )
    if deleted is None:
        raise NotFound(f"no item {item_id!r} in catalog {request.match_info['catalog']!r}",
                       field="item_id")
    await _written(request, catalog_id, item_id, -deleted)
    return web.Response(status=204)


def _batch_request(body: Any, max_ids: int) -> tuple[list[str], tuple[str, ...] | None]:
    if not isinstance(body, dict):
        raise ValidationFailed.of("body", f"must be a JSON object, got {json_type(body)}")
    for key in body:
        if key not in ("ids", "fields"):
            raise ValidationFailed.of(key, "is not a batchGet field (expected ids and fields)")
    ids = body.get("ids")
    if not isinstance(ids, list):
        raise ValidationFailed.of("ids", "is required: an array of item IDs")
    if len(ids) > max_ids:
        raise ValidationFailed.of("ids", f"must hold at most {max_ids} IDs, got {len(ids)}")
    for index, item_id in enumerate(ids):
        check_item_id(item_id, f"ids[{index}]")
    fields = body.get("fields")
    if fields is None:
        return ids, None
    if not isinstance(fields, list):
        raise ValidationFailed.of("fields", "must be an array of item field names")
    for index, name in enumerate(fields):
        if name not in PROJECTABLE_FIELDS:
            raise ValidationFailed.of(
                f"fields[{index}]",
                "is not an item field (expected one of: " + ", ".join(PROJECTABLE_FIELDS) + ")",
            )
    # The ID always comes back: without it a caller could not tell the items apart.
    return ids, tuple(dict.fromkeys(["id", *fields]))


@requires("catalog:read")
async def batch_get_items(request: web.Request) -> web.Response:
    """Many items by ID through the same resolver (and cache) as the transform: found items in
    the order of their first appearance in `ids`, each once, and the unknown IDs likewise."""
    catalog_name(request)
    settings = request.app[SETTINGS]
    body = await read_json(request, settings.max_body_bytes)
    ids, fields = _batch_request(body, settings.max_batch_ids)
    catalog_id = await _catalog_id(request)
    resolved = await request.app[RESOLVER].resolve(catalog_id, ids, deadline=request[DEADLINE])
    items: list[dict[str, Any]] = []
    missing: list[str] = []
    for item_id in dict.fromkeys(ids):
        record = resolved.get(item_id)
        if record is None:
            missing.append(item_id)
            continue
        item = item_as_json(record)
        items.append(item if fields is None else {name: item[name] for name in fields})
    headers = {}
    if resolved.degraded:
        # Postgres could not answer in time: what the caches knew, and the rest listed missing.
        headers["X-Degraded"] = resolved.degraded
        request.app[METRICS].degraded.labels("batch_get", resolved.degraded).inc()
    return json_response({"items": items, "missing": missing}, headers=headers)


def _updated_since(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValidationFailed.of(
            "updated_since", "must be an RFC 3339 timestamp with a time zone, like "
            "2026-11-22T09:00:00Z"
        )
    return moment


@requires("catalog:read")
async def list_items(request: web.Request) -> web.Response:
    """A page of items in ID order; `next` is the link to the following page (null on the last)."""
    catalog_name(request)
    query = request.query
    check_known_params(query, LIST_PARAMS)
    limit = page_limit(query)
    after = query.get("after")
    if after is not None:
        check_item_id(after, "after")
    genre = query.get("genre")
    if genre is not None and (len(genre) > MAX_TEXT_LENGTH or "\x00" in genre):
        raise ValidationFailed.of("genre", f"must be at most {MAX_TEXT_LENGTH} characters, "
                                  "without NUL")
    updated_since = _updated_since(query.get("updated_since"))
    catalog_id = await _catalog_id(request)
    # On the read replica, unless this process heard of a change to the catalog recently enough
    # that the replica may not have it yet (a page would then miss this process's own writes).
    notified = request.app[RESOLVER].notified
    rows, _ = await request.app[READS].read(
        lambda conn: item_store.fetch_page(conn, catalog_id, after=after, limit=limit + 1,
                                           genre=genre, updated_since=updated_since),
        replica=notified is None or not notified.changed_recently(catalog_id),
        on_retry=request.app[METRICS].db_retries.inc,
    )
    page = rows[:limit]
    next_page = None
    if len(rows) > limit:
        filters = {"limit": str(limit), "genre": genre,
                   "updated_since": query.get("updated_since")}
        next_page = next_link(request, filters, page[-1]["id"])
    return json_response(
        {"items": [item_as_json(row) for row in page], "next": next_page},
        headers={"Cache-Control": cache_control(0)},
    )
