"""Liveness and readiness for orchestrators and load balancers."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from service.errors import Unavailable
from service.storage import migrations
from service.web.app_keys import POOL, REQUESTS_IN_FLIGHT, SETTINGS
from service.web.responses import json_response


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and its event loop answers; says nothing of dependencies."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready to serve: not shutting down, Postgres answers, every migration this version knows
    is applied."""
    if request.app[REQUESTS_IN_FLIGHT].draining:
        raise Unavailable("shutting down: finishing the requests in flight", field="server")
    pool = request.app[POOL]
    timeout = min(2.0, request.app[SETTINGS].db_command_timeout)
    try:
        async with pool.acquire(timeout=timeout) as conn:
            pending = await migrations.pending_versions(conn, migrations.discover())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise Unavailable(f"Postgres is not reachable ({type(exc).__name__})",
                          field="postgres") from exc
    if pending:
        raise Unavailable(
            "migrations are not current: pending " + ", ".join(f"{v:04d}" for v in pending),
            field="migrations",
        )
    return json_response({"status": "ready", "postgres": "ok", "migrations": "current"})
