"""Liveness and readiness for orchestrators and load balancers."""

from __future__ import annotations

import asyncio
import weakref

import asyncpg
from aiohttp import web

from service.errors import Unavailable
from service.storage import migrations
from service.web.app_keys import POOL, REQUESTS_IN_FLIGHT, SETTINGS
from service.web.responses import json_response


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and its event loop answers; says nothing of dependencies."""
    return json_response({"status": "ok"})


# The apps that have been ready once (found Postgres and their migrations current). Such a
# process stays ready while Postgres is unreachable: an outage, a failover or a stall reaches
# every process at once, and a load balancer that took them all out would answer its own errors
# to every caller, where the processes answer from their caches (`X-Degraded`). Kept out of the
# app's own state, which is frozen once it serves.
_READY_ONCE: weakref.WeakSet[web.Application] = weakref.WeakSet()
# How long a process that was ready asks Postgres: well inside a load balancer's check timeout.
OUTAGE_CHECK_SECONDS = 0.5


async def readyz(request: web.Request) -> web.Response:
    """Ready to serve: not shutting down, and, until it has been ready once, Postgres answers
    and every migration this version knows is applied."""
    app = request.app
    if app[REQUESTS_IN_FLIGHT].draining:
        raise Unavailable("shutting down: finishing the requests in flight", field="server")
    was_ready = app in _READY_ONCE
    timeout = OUTAGE_CHECK_SECONDS if was_ready else min(2.0, app[SETTINGS].db_command_timeout)
    try:
        async with asyncio.timeout(timeout), app[POOL].acquire() as conn:
            pending = await migrations.pending_versions(conn, migrations.discover())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        if was_ready:
            return json_response({"status": "ready", "postgres": "unreachable",
                                  "migrations": "current"})
        raise Unavailable(f"Postgres is not reachable ({type(exc).__name__})",
                          field="postgres") from exc
    if pending:
        raise Unavailable(
            "migrations are not current: pending " + ", ".join(f"{v:04d}" for v in pending),
            field="migrations",
        )
    _READY_ONCE.add(app)
    return json_response({"status": "ready", "postgres": "ok", "migrations": "current"})
