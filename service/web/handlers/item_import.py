"""`POST /v1/catalogs/{catalog}/items:import`: a streamed NDJSON or CSV body into the catalog.

The body is never read whole (aiohttp's body size limit applies only to whole reads): it is fed to
the import chunk by chunk. Each import runs on a connection of its own, not one of the pool, so a
long import cannot starve transforms of connections; at most ENRICHER_MAX_CONCURRENT_IMPORTS run
at once in a process (more are answered 503 with Retry-After).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import http_exceptions, web

from service.catalog.import_formats import CSV_TYPES, NDJSON_TYPES, reader_for
from service.catalog.item_import import ImportOptions, import_items
from service.errors import BadRequest, Unavailable, UnsupportedMedia, ValidationFailed
from service.runtime.settings import Settings
from service.storage import catalogs as catalog_store
from service.storage.db import connect
from service.web.access import requires
from service.web.app_keys import IMPORT_SLOTS, POOL, PRINCIPAL, REQUEST_ID, RESOLVER, SETTINGS
from service.web.audit import audited
from service.web.handlers.catalogs import catalog_name
from service.web.paging import check_known_params
from service.web.request_body import unreadable_body
from service.web.responses import json_response

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
MODES = ("upsert", "replace")
BOOLEANS = {"true": True, "false": False}


def import_options(query, settings: Settings) -> ImportOptions:
    check_known_params(query, ("mode", "atomic"))
    mode = query.get("mode", "upsert")
    if mode not in MODES:
        raise ValidationFailed.of("mode", "must be upsert (the default) or replace")
    atomic = query.get("atomic", "false").lower()
    if atomic not in BOOLEANS:
        raise ValidationFailed.of("atomic", "must be true or false")
    return ImportOptions(
        replace=mode == "replace", atomic=BOOLEANS[atomic],
        batch_rows=settings.import_batch_rows, max_errors=settings.import_max_errors,
        timeout=settings.import_timeout,
    )


async def _body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.content.iter_chunked(CHUNK_BYTES):
            yield chunk
    except (ConnectionResetError, http_exceptions.HttpProcessingError) as exc:
        # The client went away (or broke the framing) mid-body: the import is rolled back.
        raise BadRequest("the request body ended before it was complete; nothing was imported",
                         field="body") from exc
    except web.RequestPayloadError as exc:  # a broken chunk, a gzip body that does not inflate
        raise unreadable_body(exc.__cause__) from exc


@audited("catalog.import", target="catalog")
# Not among the tenant's slots in flight: an import may run for minutes, and has slots of its own.
@requires("catalog:write", in_flight=False)
async def import_catalog_items(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    name = catalog_name(request)
    options = import_options(request.query, settings)
    reader = reader_for(request.content_type, settings.import_max_line_bytes)
    if reader is None:
        raise UnsupportedMedia(
            "send the items as " + " or ".join((NDJSON_TYPES[0], CSV_TYPES[0]))
            + f" (got {request.content_type!r})", field="Content-Type",
        )
    charset = request.charset
    if charset and charset.lower().replace("-", "") != "utf8":
        raise UnsupportedMedia(f"imports must be UTF-8 (got charset {charset!r})",
                               field="Content-Type")
    catalog = await catalog_store.get_catalog(
        request.app[POOL], request[PRINCIPAL].tenant_id, name
    )
    slots: asyncio.Semaphore = request.app[IMPORT_SLOTS]
    if slots.locked():
        raise Unavailable(
            f"{settings.max_concurrent_imports} import(s) already running in this process; "
            "retry shortly", field="body", headers={"Retry-After": "5"},
        )
    async with slots:
        conn = await connect(settings)
        try:
            summary = await import_items(conn, catalog.id, _body_chunks(request), reader,
                                         options)
        except BaseException:
            # The connection may be mid-statement: drop it (Postgres rolls back what is open).
            conn.terminate()
            raise
        await conn.close()
    # Read-your-writes in this process at once; other processes hear of it through NOTIFY.
    await request.app[RESOLVER].flush_catalog(catalog.id)
    # One line per import for operators: what landed where (the errors stay in the answer).
    log.info("import done", extra={
        "request_id": request[REQUEST_ID], "tenant": request[PRINCIPAL].tenant_name,
        "catalog": name, "mode": "replace" if options.replace else "upsert",
        **{k: v for k, v in summary.as_json().items() if k != "errors"},
    })
    return json_response(summary.as_json())
