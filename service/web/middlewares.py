"""The one middleware every request passes: request ID, one log line, and errors as problems.

Domain errors become their problem+json; aiohttp's own HTTP errors (unknown route, wrong method,
body too large) are rewritten the same way; Postgres being unreachable, or read-only after a
failover (SQLSTATE 25006), is a 503; anything else is logged with its traceback and answered with
a 500 that names only the request ID.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time

from aiohttp import web

from service.errors import (
    BadRequest,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    Unavailable,
    UnsupportedMedia,
)
from service.runtime import tracing
from service.runtime.logs import write_info
from service.storage.db_faults import DATABASE_UNAVAILABLE, READ_ONLY
from service.web.app_keys import (
    METRICS,
    PRINCIPAL,
    READS,
    REQUEST_ID,
    REQUESTS_IN_FLIGHT,
    SETTINGS,
)
from service.web.responses import problem_response

log = logging.getLogger("service.requests")

REQUEST_ID_HEADER = "X-Request-Id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
# Request IDs need to be unique, not secret: a random prefix per process and a counter, 32 hex
# digits, instead of os.urandom's system call on every request (~2 % of a small one).
_ID_PREFIX = ""
_ID_COUNTER = itertools.count()


def _new_id_prefix() -> None:
    """A new prefix (and counter) for this process, also in a forked child."""
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX = os.urandom(8).hex()
    _ID_COUNTER = itertools.count(int.from_bytes(os.urandom(4), "big"))


_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


# Client disconnects (also OSError) are turned into ClientGone where the body is read, so they never
# land here as "database down".
_DATABASE_DOWN = DATABASE_UNAVAILABLE


def _http_problem(exc: web.HTTPException) -> ProblemError:
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("no such route; see /openapi.json", field="path")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return MethodNotAllowed(f"{exc.method} is not allowed here (allowed: {allowed})",
                                field="method", headers={"Allow": allowed})
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge("the request body is too large", field="body")
    if isinstance(exc, web.HTTPUnsupportedMediaType):
        return UnsupportedMedia(exc.text or "unsupported media type", field="Content-Type")
    problem = BadRequest(exc.reason or "bad request")
    problem.status = exc.status
    return problem


def _count_request(request: web.Request, route: str | None, status: int, seconds: float) -> None:
    count, timing = request.app[METRICS].request_series(route or "unmatched", request.method,
                                                        status)
    count.inc()
    timing.observe(seconds)


# Methods a client may send twice to the same effect (RFC 9110 9.2.2): a write of theirs refused as
# read-only wrote nothing, and is run once more on a fresh connection.
_IDEMPOTENT_WRITES = frozenset({"PUT", "DELETE"})


async def _replace_primary_connections(request: web.Request) -> None:
    """A failover demoted the primary under us: its pooled connections are replaced (new ones
    find the writable server)."""
    reads = request.app.get(READS)
    if reads is not None:
        await reads.primary_read_only()


async def _handle(request: web.Request, handler) -> web.StreamResponse:
    """The handler; a PUT or DELETE refused as read-only (a connection made to a primary that a
    failover has since demoted) runs once more, on the replaced connections."""
    try:
        return await handler(request)
    except READ_ONLY:
        if request.method not in _IDEMPOTENT_WRITES:
            raise
        await _replace_primary_connections(request)
    return await handler(request)


@web.middleware
async def request_context(request: web.Request, handler) -> web.StreamResponse:
    incoming = request.headers.get(REQUEST_ID_HEADER)
    request_id = incoming if incoming and _VALID_REQUEST_ID.match(incoming) else new_request_id()
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    tracker = request.app[REQUESTS_IN_FLIGHT]
    tracker.started()
    try:
        response = await _handle(request, handler)
    except ProblemError as exc:
        response = problem_response(exc, request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp keeps a routing failure (404, 405) on the request's match info, and its
        # traceback holds this frame, which holds the request: a cycle per such request, left
        # for the collector's oldest generation (service/runtime/gc_tuning.py). Not logged, so
        # its traceback can go.
        exc.__traceback__ = None
        response = problem_response(_http_problem(exc), request.path)
    except READ_ONLY:
        # Refused again: no writable server yet. The client retries.
        await _replace_primary_connections(request)
        response = problem_response(
            Unavailable("the catalog database is read-only just now (a failover?); retry shortly",
                        field="postgres", headers={"Retry-After": "1"}), request.path,
        )
    except _DATABASE_DOWN as exc:
        log.error("database unavailable", extra={"request_id": request_id,
                                                 "error": type(exc).__name__})
        response = problem_response(
            Unavailable("the catalog database is unavailable; retry shortly",
                        headers={"Retry-After": "1"}),
            request.path,
        )
    except Exception:
        log.exception("unhandled error", extra={"request_id": request_id})
        response = problem_response(
            InternalError(f"an unexpected error occurred; quote request ID {request_id}"),
            request.path,
        )
    finally:
        tracker.finished()
    response.headers[REQUEST_ID_HEADER] = request_id
    if tracker.draining:  # shutting down: this connection's next request belongs elsewhere
        response.force_close()
    route = request.match_info.route.name  # a chain of properties: read once
    _count_request(request, route, response.status, time.perf_counter() - started)
    if request.app[SETTINGS].access_log and log.isEnabledFor(logging.INFO):
        principal = request.get(PRINCIPAL)
        write_info(
            log, "request",
            {
                "request_id": request_id,
                "method": request.method,
                "route": route,
                "path": request.path,
                "status": response.status,
                "ms": round((time.perf_counter() - started) * 1000, 2),
                "tenant": principal.tenant_name if principal else None,
                "key": principal.key_prefix if principal else None,
            },
        )
    return response


@web.middleware
async def traced_request_context(request: web.Request, handler) -> web.StreamResponse:
    """`request_context` inside the request's server span (traces on): named by the route's
    template, never the path (a user route's path holds a user ID) nor the query string (item
    IDs); the tenant and the recommender as attributes, never a key."""
    resource = request.match_info.route.resource
    template = resource.canonical if resource is not None else "unmatched"
    attributes = {"http.request.method": request.method, "http.route": template}
    recommender = request.match_info.get("recommender")
    if recommender is not None:
        attributes["enricher.recommender"] = recommender
    with tracing.server_span(f"{request.method} {template}", request.headers, attributes) as span:
        response = await request_context(request, handler)
        span.set_attribute("http.response.status_code", response.status)
        principal = request.get(PRINCIPAL)
        if principal is not None:
            span.set_attribute("enricher.tenant", principal.tenant_name)
        if response.status >= 500:
            tracing.set_error(span, RuntimeError(f"HTTP {response.status}"))
    return response
