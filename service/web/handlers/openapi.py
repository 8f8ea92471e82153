"""`GET /openapi.json`: the OpenAPI 3.1 document of every route, kept in the repository as
service/web/openapi.json (tests/test_openapi.py fails when it and the route table drift apart)."""

from __future__ import annotations

import functools
from pathlib import Path

from aiohttp import web

OPENAPI_PATH = Path(__file__).resolve().parents[1] / "openapi.json"


@functools.cache
def openapi_document() -> bytes:
    """The document as stored, read once per process."""
    return OPENAPI_PATH.read_bytes()


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=openapi_document(), content_type="application/json",
                        headers={"Cache-Control": "public, max-age=300"})
