"""The HTTP layer under the app: the parser's limits, and what the parser refuses as problems.

aiohttp parses each request before any middleware runs. Its limits are derived here from ours
(`parser_limits`, which the app factory hands aiohttp as `handler_args`, so they hold wherever the
app is served: `serve`, each worker of `--workers N`, the test client). What the parser refuses
(a request line or a header field past those limits, a malformed request line or header, a
broken chunked body) aiohttp answers on its own, as plain text quoting the bytes it refused and
with its version in `Server`; `ServiceRunner` serves the app through `ProblemRequestHandler`,
which answers those as the same application/problem+json as the middleware's.

The request line has to hold the content route's documented maximum as a GET: up to
ENRICHER_MAX_CONTENT_IDS IDs of up to 256 characters in the query, each character up to 12 bytes
once percent-encoded (four UTF-8 bytes, each `%XX`), their separators, and the path and other
parameters. Past it: 414, pointing at the POST, which takes the IDs in its body. Header fields
keep the usual 8,190 bytes each (aiohttp's default, Apache's LimitRequestFieldSize), and 128 of
them; past either: 431.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import http_exceptions, web, web_response
from aiohttp.web_protocol import RequestHandler

from service.errors import (
    BadRequest,
    HeaderFieldsTooLarge,
    InternalError,
    ProblemError,
    UriTooLong,
)
from service.items import MAX_ID_LENGTH
from service.runtime.settings import Settings
from service.web.middlewares import REQUEST_ID_HEADER, new_request_id
from service.web.request_body import unreadable_body
from service.web.responses import problem_response

log = logging.getLogger("service.requests")

# One character of an ID in a URL: up to four bytes of UTF-8, each written `%XX`.
ESCAPED_BYTES_PER_CHARACTER = 12
# Between two IDs: `&ids=` when repeated (a `,` or `%2C` is shorter).
ID_SEPARATOR_BYTES = len("&ids=")
# The rest of the request target: the path (a user ID of the user route, 256 characters, takes up
# to 3 KiB percent-encoded), `locale`, and what a template adds to vary a platform's URL cache.
OTHER_TARGET_BYTES = 8192
MAX_HEADER_FIELD_BYTES = 8190
MAX_HEADER_FIELDS = 128
# What `Server` says on every answer: no versions for a scanner to match.
SERVER_NAME = "catalog-enricher"

# The messages aiohttp's parsers (C and Python alike) give a count past `max_headers`.
_TOO_MANY_HEADERS = "Too many headers received"
# Words in a parser's reason that make it a header's fault (`chunk`: the body's).
_HEADER_WORDS = ("header", "content-length", "transfer-encoding")
# The longest part of a parser's message repeated in a problem (llhttp's reasons are shorter).
_MAX_REASON_CHARS = 120


def max_request_target_bytes(settings: Settings) -> int:
    """The longest request target (path and query) served: the content route's most IDs as a
    GET, each of the longest ID percent-encoded at its widest, plus the rest of the target."""
    per_id = MAX_ID_LENGTH * ESCAPED_BYTES_PER_CHARACTER + ID_SEPARATOR_BYTES
    return settings.max_content_ids * per_id + OTHER_TARGET_BYTES


def parser_limits(settings: Settings) -> dict[str, int]:
    """aiohttp's parser limits (RequestHandler's keyword arguments), the one place they are set.
    aiohttp's C parser holds `max_line_size` to the request target; its pure-Python fallback
    (AIOHTTP_NO_EXTENSIONS) to the whole line, method and version included."""
    return {
        "max_line_size": max_request_target_bytes(settings),
        "max_field_size": MAX_HEADER_FIELD_BYTES,
        "max_headers": MAX_HEADER_FIELDS,
    }


class ProblemRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol, its own error answers made problems.

    Every answer aiohttp makes itself goes through `RequestHandler.handle_error`: a request its
    parser refused (queued as an error in place of the request), and an exception that escaped
    every middleware. No middleware sees these, nor the `on_response_prepare` signal (aiohttp
    #3287, #6463: the request has no app), so this method is the one hook that reaches all of
    them, and the narrowest: a request that parses never calls it, so the hot path is unchanged;
    and the rest of aiohttp's handling stays, the connection closed after the answer (the parser
    cannot find the next request in the bytes after a refused one)."""

    __slots__ = ()

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # As aiohttp: part of an answer went out already, so no other can follow.
            raise ConnectionError("an answer was partly sent; cannot send the error's")
        request_id = new_request_id()
        if isinstance(exc, http_exceptions.HttpProcessingError):
            problem = self.refusal(exc)
            log.info("request refused by the HTTP parser",
                     extra={"request_id": request_id, "status": problem.status,
                            "error": type(exc).__name__, "field": problem.field})
        else:
            problem = InternalError(f"an unexpected error occurred; quote request ID {request_id}")
            log.error("unhandled error outside the middleware",
                      extra={"request_id": request_id, "status": status}, exc_info=exc)
        # The request's path is unknown (the parser gave none): the instance names the request.
        response = problem_response(problem, f"urn:catalog-enricher:request:{request_id}")
        response.headers[REQUEST_ID_HEADER] = request_id
        response.force_close()
        return response

    def refusal(self, exc: http_exceptions.HttpProcessingError) -> ProblemError:
        """The problem for what the parser refused. The parser's own message is not repeated
        where it quotes the request's bytes (an Authorization header, say)."""
        if isinstance(exc, http_exceptions.LineTooLong):
            # The one exception for both lines; the limit it names tells which.
            if exc.args[1:2] == (self.max_line_size,):
                return UriTooLong(
                    f"the URL (path and query) is longer than {self.max_line_size} bytes, the "
                    "limit; the content route takes the same IDs as a POST to the same path, "
                    '{"ids": [...]} in the body', field="url")
            return HeaderFieldsTooLarge(
                f"a header field is longer than {self.max_field_size} bytes, the limit",
                field="headers")
        if exc.message == _TOO_MANY_HEADERS:
            return HeaderFieldsTooLarge(
                f"more than {self.max_headers} header fields, the limit", field="headers")
        if isinstance(exc, http_exceptions.BadHttpMethod):
            return BadRequest("the request line's method is not an HTTP method (or this is TLS "
                              "sent to a plain HTTP port)", field="method")
        if isinstance(exc, http_exceptions.BadStatusLine):
            return BadRequest("the request line is malformed; expected "
                              "`METHOD /path HTTP/1.1`", field="request-line")
        if isinstance(exc, http_exceptions.InvalidURLError):
            return BadRequest("the URL in the request line is not valid", field="url")
        if isinstance(exc, http_exceptions.InvalidHeader):
            return BadRequest("a header field is malformed", field="headers")
        if isinstance(exc, http_exceptions.PayloadEncodingError):
            return unreadable_body(exc)
        return malformed_request(exc.message)


def malformed_request(message: str) -> BadRequest:
    """Any other refusal: the parser's reason, without the bytes it quotes after it (llhttp's
    messages are `reason:\\n\\n  b'the bytes'\\n  ^`; aiohttp's own are fixed sentences)."""
    reason = message.split(":\n", 1)[0].strip()[:_MAX_REASON_CHARS] or "malformed"
    lowered = reason.lower()
    field = ("body" if "chunk" in lowered
             else "headers" if any(word in lowered for word in _HEADER_WORDS) else "request")
    return BadRequest(f"the request is not valid HTTP/1.1: {reason}", field=field)


class ProblemServer(web.Server):
    """aiohttp's low-level server, serving each connection with a ProblemRequestHandler."""

    def __call__(self) -> RequestHandler:
        return ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class ServiceRunner(web.AppRunner):
    """`web.AppRunner` serving through ProblemServer, with no version in `Server`.

    AppRunner has aiohttp's Server made by the app (its startup run, `handler_args` merged into
    the handler's keyword arguments); the same server is made again as a ProblemServer, with
    the same request handler, request factory and keyword arguments.

    aiohttp has no setting for the protocol class, so this leans on three of its internals:
    this hook, and the Server's `_loop` and `_kwargs` (all there since aiohttp 3.0). The
    alternatives lean on more: replacing `RequestHandler.handle_error` for the whole process
    would change every aiohttp server in it (the tests' fakes of remote services too), and
    aiohttp deprecates subclassing Application. tests/test_http_limits.py fails if a release
    breaks it."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        hide_server_version()
        return ProblemServer(
            made.request_handler, request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation, loop=asyncio.get_running_loop(),
            **made._kwargs,
        )


def hide_server_version(name: str = SERVER_NAME) -> None:
    """`Server: catalog-enricher` on every answer, not `Python/3.x aiohttp/3.y.z`.

    aiohttp fills `Server` in as each answer is prepared, with `headers.setdefault(SERVER,
    SERVER_SOFTWARE)` from this module-level default. Setting the default costs nothing per
    request and covers every answer (304s, aiohttp's own errors); a header set per response
    (a middleware, on_response_prepare) would cost each request and miss aiohttp's own answers.
    tests/test_http_limits.py fails if an aiohttp release stops reading it."""
    web_response.SERVER_SOFTWARE = name
