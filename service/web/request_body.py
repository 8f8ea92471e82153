"""Reading a JSON request body: content type, size limit, and parse errors, each a clear problem."""

from __future__ import annotations

from typing import Any

from aiohttp import http_exceptions, web

from service import json_codec
from service.errors import BadRequest, ClientGone, PayloadTooLarge, UnsupportedMedia

UTF8_BOM = b"\xef\xbb\xbf"


def is_json_type(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    length = request.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(
            f"the body is {length} bytes; the limit is {max_bytes} bytes", field="body"
        )
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(
            f"the body is larger than the limit of {max_bytes} bytes", field="body"
        ) from exc
    except OSError as exc:  # aiohttp's ClientConnectionResetError and friends
        raise ClientGone("the connection closed before the whole body arrived",
                         field="body") from exc
    except web.RequestPayloadError as exc:  # the parser refused the body after its headers
        raise unreadable_body(exc.__cause__) from exc


def unreadable_body(cause: BaseException | None) -> BadRequest:
    """The problem of a body aiohttp's parser refused (`cause`: its error). Its message is not
    repeated: it may quote the body's bytes."""
    if isinstance(cause, http_exceptions.ContentEncodingError):
        return BadRequest("the body cannot be decoded as its Content-Encoding says",
                          field="Content-Encoding")
    if isinstance(cause, http_exceptions.TransferEncodingError):
        return BadRequest("the chunked body is malformed (Transfer-Encoding: chunked)",
                          field="body")
    return BadRequest("the body does not match its framing (Content-Length or chunked "
                      "Transfer-Encoding)", field="body")


async def read_json(request: web.Request, max_bytes: int) -> Any:
    """The parsed body of a request that must be `application/json`."""
    return parse_json(await read_json_body(request, max_bytes))


async def read_json_body(request: web.Request, max_bytes: int) -> bytes:
    """The body of a request that must be `application/json`, unparsed (but not empty)."""
    content_type = request.content_type
    if not is_json_type(content_type):
        raise UnsupportedMedia(
            f"send the body as application/json (got {content_type!r})", field="Content-Type"
        )
    charset = request.charset
    if charset and charset.lower().replace("-", "") != "utf8":
        raise UnsupportedMedia(f"JSON must be UTF-8 (got charset {charset!r})",
                               field="Content-Type")
    body = await read_body(request, max_bytes)
    if body.startswith(UTF8_BOM):
        body = body[len(UTF8_BOM):]  # RFC 8259 8.1: a parser may ignore one; Windows tools add it
    if not body.strip():
        raise BadRequest("the request body is empty; send a JSON document", field="body")
    return body


def parse_json(body: bytes, *, read_only: bool = False) -> Any:
    """The parsed body; `read_only` for one nothing is written back from (json_codec's
    loads_read_only)."""
    try:
        return (json_codec.loads_read_only if read_only else json_codec.loads)(body)
    except json_codec.TooDeep as exc:
        raise BadRequest(f"the body is refused: {exc}", field="body") from exc
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", field="body") from exc
