"""A pooled connection asyncpg can no longer drive (`InternalClientError`: "cannot switch to state
12; another operation (2) is in progress"), which the soak met on a write right after the primary
was stopped in a failover: a read is run again on another connection, and a request that meets
it is a 503 to retry, never a 500."""

from __future__ import annotations

import asyncpg
import orjson
from aiohttp import web

from service.storage.db_faults import read_retrying
from service.web.app import create_app

STUCK = "cannot switch to state 12; another operation (2) is in progress"


async def test_a_read_meeting_a_stuck_connection_runs_again(settings):
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    runs: list[int] = []
    retried: list[bool] = []

    async def read() -> int:
        async with pool.acquire() as conn:
            runs.append(1)
            if len(runs) == 1:  # what asyncpg raises before sending the statement
                raise asyncpg.exceptions.InternalClientError(STUCK)
            return await conn.fetchval("SELECT 41 + 1")

    try:
        assert await read_retrying(read, on_retry=lambda: retried.append(True)) == 42
    finally:
        await pool.close()
    assert len(runs) == 2 and retried == [True]


async def test_a_request_meeting_a_stuck_connection_is_a_503(aiohttp_client, settings):
    async def stuck(request: web.Request) -> web.Response:
        raise asyncpg.exceptions.InternalClientError(STUCK)

    app = create_app(settings)
    app.router.add_get("/stuck", stuck)
    client = await aiohttp_client(app)
    async with client.get("/stuck") as response:
        assert response.status == 503
        assert response.headers["Content-Type"].startswith("application/problem+json")
        assert response.headers["Retry-After"] == "1"
        problem = orjson.loads(await response.read())
    assert problem["type"] == "urn:catalog-enricher:problem:unavailable"
    assert "state 12" not in problem["detail"]  # asyncpg's words stay in the log
