"""A real S3-compatible server for the tests: moto in server mode on 127.0.0.1, behind a small
aiohttp proxy on 127.0.0.1 that passes every request through and injects the faults a test asks
for (a GetObject answered 500, a GetObject body cut halfway, an UploadPart answered 500)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from moto.server import ThreadedMotoServer

S3_ERROR = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
            b"<Message>injected by the test proxy</Message></Error>")
HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


@dataclass
class Faults:
    """How many of each request still fail (counted down as they are served)."""

    get_errors: int = 0  # GetObject answered 500 (botocore retries these)
    get_cuts: int = 0  # GetObject bodies cut halfway (the reader takes up from where it stopped)
    part_errors: int = 0  # UploadPart answered 500
    seen: dict[str, int] = field(default_factory=dict)


def _kind(request: web.Request) -> str:
    key = request.path.strip("/").partition("/")[2]
    if request.method == "GET" and key:
        return "get_object"
    if request.method == "PUT" and "partNumber" in request.query:
        return "upload_part"
    return request.method.lower()


@contextlib.asynccontextmanager
async def s3_server() -> AsyncIterator[tuple[str, Faults]]:
    """(the proxy's URL, its faults)."""
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    upstream = f"http://{host}:{port}"
    faults = Faults()
    session = aiohttp.ClientSession(auto_decompress=False)

    async def relay(request: web.Request) -> web.StreamResponse:
        kind = _kind(request)
        faults.seen[kind] = faults.seen.get(kind, 0) + 1
        body = await request.read()
        is_probe = request.headers.get("Range") == "bytes=0-1"
        if kind == "get_object" and not is_probe and faults.get_errors:
            faults.get_errors -= 1
            return web.Response(status=500, body=S3_ERROR, content_type="application/xml")
        if kind == "upload_part" and faults.part_errors:
            faults.part_errors -= 1
            return web.Response(status=500, body=S3_ERROR, content_type="application/xml")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        headers["Host"] = request.headers.get("Host", "")
        async with session.request(request.method, upstream + request.rel_url.path_qs,
                                   headers=headers, data=body) as answer:
            payload = await answer.read()
            out_headers = {k: v for k, v in answer.headers.items()
                           if k.lower() not in HOP_HEADERS}
        if kind == "get_object" and not is_probe and faults.get_cuts and len(payload) > 1:
            faults.get_cuts -= 1
            response = web.StreamResponse(status=answer.status, headers=out_headers)
            response.content_length = len(payload)
            await response.prepare(request)
            await response.write(payload[:len(payload) // 2])
            request.transport.close()  # type: ignore[union-attr]  # the body ends early
            return response
        return web.Response(status=answer.status, body=payload, headers=out_headers)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", relay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    proxy_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{proxy_port}", faults
    finally:
        await runner.cleanup()
        await session.close()
        moto.stop()
