"""Prometheus exposition of the metrics (service/runtime/metrics.py): this process's, or with
`serve --workers N` the sum over every worker's."""

from __future__ import annotations

import asyncio
import struct

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.web.app_keys import METRICS

# With --workers N a scrape reads every worker's files. A dead worker's files go while they are
# read, and a worker's file being sized as it is read is short of its header: both pass in
# microseconds, so the scrape is read again rather than answered 500. (An empty file, created and
# not sized yet, or left so by a worker killed then, is skipped: runtime/metrics.py.)
_RACES = (struct.error, FileNotFoundError)
ATTEMPTS = 5  # waiting 10, 20, 40 and 80 ms between them


async def metrics(request: web.Request) -> web.Response:
    """Unauthenticated, like /healthz: bind the port privately or filter /metrics at the proxy."""
    exposition = request.app[METRICS].exposition
    for attempt in range(1, ATTEMPTS + 1):
        try:
            body = generate_latest(exposition)
            break
        except _RACES:
            if attempt == ATTEMPTS:
                raise
            await asyncio.sleep(0.01 * 2 ** (attempt - 1))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
