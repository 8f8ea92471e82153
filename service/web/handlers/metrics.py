"""Prometheus exposition of the metrics (service/runtime/metrics.py): this process's, or with
`serve --workers N` the sum over every worker's."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.web.app_keys import METRICS


async def metrics(request: web.Request) -> web.Response:
    """Unauthenticated, like /healthz: bind the port privately or filter /metrics at the proxy."""
    body = generate_latest(request.app[METRICS].exposition)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
