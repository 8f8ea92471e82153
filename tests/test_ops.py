"""Health, readiness, request IDs and the per-request log line."""

from __future__ import annotations

import dataclasses
import logging
import os

import orjson
import pytest

from service.runtime.settings import Settings
from service.web.app import create_app
from service.web.app_keys import REQUESTS_IN_FLIGHT
from service.web.middlewares import new_request_id
from tests.support.databases import create_database, drop_database, with_database
from tests.support.tcp_proxy import proxy_to_database, url_through


class TestHealth:
    """Orchestrators can tell a live process from a ready one."""

    async def test_healthz(self, client):
        async with client.get("/healthz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}

    async def test_readyz_when_current(self, client):
        async with client.get("/readyz") as response:
            assert response.status == 200
            assert (await response.json())["migrations"] == "current"

    async def test_readyz_refuses_once_draining(self, client):
        """From the stop signal on (ServingApp.begin_draining): not ready, and each answer asks
        its client to close the connection; liveness is unaffected."""
        client.app[REQUESTS_IN_FLIGHT].begin_draining()
        async with client.get("/readyz") as response:
            assert response.status == 503
            assert response.headers["Connection"] == "close"
            problem = orjson.loads(await response.read())
        assert problem["field"] == "server"
        async with client.get("/healthz") as response:
            assert response.status == 200

    async def test_readyz_refuses_when_migrations_pending(self, aiohttp_client, pg_server_url):
        name = await create_database(pg_server_url)
        try:
            app = create_app(Settings(database_url=with_database(pg_server_url, name),
                                      db_pool_min=1))
            client = await aiohttp_client(app)
            async with client.get("/readyz") as response:
                assert response.status == 503
                problem = orjson.loads(await response.read())
            assert problem["field"] == "migrations" and "0001" in problem["detail"]
            await client.close()
        finally:
            await drop_database(pg_server_url, name)

    @pytest.mark.slow
    async def test_stays_ready_through_a_postgres_outage(self, aiohttp_client, settings):
        """Once ready, a process is not taken out by Postgres going silent: an outage reaches
        every process at once, and a load balancer left with no server answers errors of its own
        (the soak saw HAProxy's HTML 503 during a failover), where the processes still answer
        from their caches. The body says Postgres is unreachable."""
        proxy = await proxy_to_database(settings.database_url)
        try:
            app = create_app(dataclasses.replace(
                settings, database_url=url_through(settings.database_url, proxy)))
            client = await aiohttp_client(app)
            async with client.get("/readyz") as response:
                assert response.status == 200
            with proxy.stalled():
                async with client.get("/readyz") as response:
                    assert response.status == 200
                    assert (await response.json())["postgres"] == "unreachable"
            client.app[REQUESTS_IN_FLIGHT].begin_draining()  # draining still says not ready
            async with client.get("/readyz") as response:
                assert response.status == 503
        finally:
            await proxy.stop()


class TestRequestIds:
    """Every answer carries a request ID; a caller's own is kept."""

    async def test_incoming_id_is_echoed(self, client):
        async with client.get("/healthz", headers={"X-Request-Id": "pinpoint-abc-123"}) as r:
            assert r.headers["X-Request-Id"] == "pinpoint-abc-123"

    async def test_generated_when_absent_or_unsafe(self, client):
        async with client.get("/healthz", headers={"X-Request-Id": "bad id\twith tab"}) as r:
            assert r.headers["X-Request-Id"] != "bad id\twith tab"
            assert len(r.headers["X-Request-Id"]) == 32

    async def test_one_log_line_per_request(self, admin, caplog: pytest.LogCaptureFixture):
        with caplog.at_level(logging.INFO, logger="service.requests"):
            await admin.get("/v1/catalogs/none", headers={"X-Request-Id": "trace-1"})
        lines = [r for r in caplog.records if r.name == "service.requests"]
        assert len(lines) == 1
        line = lines[0]
        assert (line.request_id, line.status, line.route, line.tenant) == (
            "trace-1", 404, "get_catalog", "acme")
        assert admin.key not in caplog.text


def test_generated_request_ids_are_unique_across_forks():
    ids = {new_request_id() for _ in range(1000)}
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # a forked worker must not repeat its parent's IDs
        os.write(write, "\n".join(new_request_id() for _ in range(1000)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        from_child = set(pipe.read().split("\n"))
    os.waitpid(child, 0)
    assert len(ids) == len(from_child) == 1000
    assert not ids & from_child
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids | from_child)
