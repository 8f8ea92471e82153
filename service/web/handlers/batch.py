"""`POST /v1/recommenders/{recommender}/batch`: enrich-batch over HTTP, for pipelines.

An NDJSON body of batch lines (service/adapters/batch.py: Personalize batch inference output or
generic `{"key", "ids", "locale"}` lines) is answered with NDJSON, one answer line per line in
order, streamed (chunked) a chunk of lines at a time as the body arrives, so a Step Functions or
Airflow task can call it without the CLI and neither side holds the whole night in memory. The
body is never read whole (the body limit applies only to whole reads); a line over the line limit
is answered as malformed, like the CLI's.

`?locale=` sets the locale of lines that name none, `?locale_from=input.locale` where each line
holds its own. Malformed lines are answered `send: false` with the reason and never stop the
stream. The first chunk is enriched before the answer starts, so an unknown recommender or a
database down is a problem+json; past that, a failure can only cut the stream short (the chunked
answer then ends without its last chunk, which an HTTP client reports as an error).

Like an import, not among the tenant's slots in flight: one batch may run for minutes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from aiohttp import http_exceptions, web

from service.adapters.batch import MAX_LINE_BYTES, BatchEnricher, LineRules, RawLine, split_lines
from service.adapters.content import query_locale
from service.catalog.import_formats import NDJSON_TYPES
from service.errors import BadRequest, UnsupportedMedia
from service.web.access import requires
from service.web.app_keys import REQUEST_ID, RESOLVER
from service.web.handlers.content import recommender_of
from service.web.paging import check_known_params

log = logging.getLogger(__name__)

CHUNK_LINES = 500  # smaller than the CLI's: answers start sooner
BODY_BLOCK_BYTES = 256 * 1024
QUERY_PARAMS = ("locale", "locale_from")


async def _body_blocks(request: web.Request) -> AsyncIterator[bytes]:
    try:
        async for block in request.content.iter_chunked(BODY_BLOCK_BYTES):
            yield block
    except (ConnectionResetError, http_exceptions.HttpProcessingError) as exc:
        raise BadRequest("the request body ended before it was complete", field="body") from exc


@requires("transform", in_flight=False)
async def batch(request: web.Request) -> web.StreamResponse:
    query = request.query
    check_known_params(query, QUERY_PARAMS)
    if request.content_type not in NDJSON_TYPES:
        raise UnsupportedMedia("the body must be NDJSON (Content-Type: application/x-ndjson), "
                               f"got {request.content_type!r}", field="Content-Type")
    rules = LineRules(locale=query_locale(query.get("locale")),
                      locale_from=tuple(query["locale_from"].split("."))
                      if query.get("locale_from") else None,
                      max_line_bytes=MAX_LINE_BYTES)
    enricher = BatchEnricher(await recommender_of(request), request.app[RESOLVER], rules)
    # Headers the middleware adds after the handler are too late for a streamed answer.
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                           "X-Request-Id": request[REQUEST_ID]})
    response.enable_chunked_encoding()
    started, counts = time.monotonic(), {"lines": 0, "enriched": 0, "input_errors": 0}
    chunk: list[RawLine] = []
    number = 1

    async def answer(lines: list[RawLine]) -> None:
        result = await enricher.enrich(lines, number)
        if not response.prepared:
            await response.prepare(request)
        await response.write(result.output)
        counts["lines"] += result.lines
        counts["enriched"] += result.enriched
        counts["input_errors"] += result.input_errors

    async for raw, _ in split_lines(_body_blocks(request), MAX_LINE_BYTES):
        chunk.append(raw)
        if len(chunk) == CHUNK_LINES:
            await answer(chunk)
            number += len(chunk)
            chunk = []
    if chunk:
        await answer(chunk)
    if not response.prepared:
        await response.prepare(request)  # an empty body: an empty answer
    await response.write_eof()
    log.info("batch answered", extra={**counts,
                                      "seconds": round(time.monotonic() - started, 3)})
    return response
