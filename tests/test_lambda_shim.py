"""The Lambda shim, run as Lambda would run it (its own interpreter, standard library only),
against the real service on a real port."""

from __future__ import annotations

import socket
import zipfile
from pathlib import Path

import pytest
from aiohttp import web

from service.cli import write_shim_zip
from service.web.app import create_app
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender
from tests.support.shim_process import SERVICE_DIR, Shim
from tests.support.tcp_proxy import TcpProxy

EVENT = {"Endpoints": {"e1": {"ChannelType": "EMAIL", "RecommendationItems": ["1", "2"]}}}


@pytest.fixture
async def shim():
    shim = await Shim.start()
    yield shim
    await shim.stop()


@pytest.fixture
async def served(settings, admin: Api, make_key):
    """The real service on a real port, behind a proxy that counts TCP connections."""
    await load_catalog(admin, "movies", [{"id": "1", "title": "One"}, {"id": "2", "title": "Two"}])
    await put_recommender(admin, "movies", "movies", ("Title", "title"))
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    proxy = await TcpProxy("127.0.0.1", port).start()
    key = await make_key("acme", "transform")
    env = {"ENRICHER_URL": f"http://127.0.0.1:{proxy.port}/v1/recommenders/movies/transform",
           "ENRICHER_API_KEY": key}
    yield proxy, env
    await proxy.stop()
    await runner.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TestWarmContainer:
    """Warm invocations reuse one keep-alive connection."""

    async def test_second_call_reuses_the_connection(self, shim: Shim, served):
        proxy, env = served
        first = await shim.invoke(EVENT, **env)
        second = await shim.invoke(EVENT, **env)
        assert first["result"]["e1"]["Recommendations"] == {"Title": ["One", "Two"]}
        assert second["result"] == first["result"]
        assert proxy.connections == 1
        assert first["modules_outside_stdlib"] == []

    async def test_reopens_once_when_the_server_closed_it(self, shim: Shim, served):
        proxy, env = served
        assert "result" in await shim.invoke(EVENT, **env)
        proxy.cut()  # the server side drops the idle keep-alive connection
        answer = await shim.invoke(EVENT, **env)
        assert "result" in answer, answer
        assert proxy.connections == 2


class TestFailures:
    """Failures raise an error naming the URL and the cause, before the Lambda's time runs out."""

    async def test_stopped_service(self, shim: Shim):
        url = f"http://127.0.0.1:{free_port()}/v1/recommenders/movies/transform"
        answer = await shim.invoke(EVENT, 3000, ENRICHER_URL=url, ENRICHER_API_KEY="ce_x")
        assert answer["error"] == "EnricherError"
        assert url in answer["message"] and "connection refused" in answer["message"]
        assert answer["elapsed_ms"] < 3000

    async def test_stalled_service_gives_up_before_the_deadline(self, shim: Shim, served):
        proxy, env = served
        proxy.stall()
        answer = await shim.invoke(EVENT, 1500, **env)
        proxy.resume()
        assert answer["error"] == "EnricherError"
        assert env["ENRICHER_URL"] in answer["message"] and "timed out" in answer["message"]
        assert answer["elapsed_ms"] < 1500

    async def test_refused_event_is_not_retried_and_hides_the_key(self, shim: Shim, served):
        _, env = served
        bad_key = "ce_" + "Z" * 43
        answer = await shim.invoke(EVENT, **{**env, "ENRICHER_API_KEY": bad_key})
        assert "HTTP 401" in answer["message"] and bad_key not in answer["message"]

    async def test_missing_configuration(self, shim: Shim):
        answer = await shim.invoke(EVENT, ENRICHER_URL="", ENRICHER_API_KEY="")
        assert "ENRICHER_URL is not set" in answer["message"]


class TestRetry:
    """A 5xx is retried once within the budget, with the remaining budget as X-Deadline-Ms."""

    async def test_retries_once_after_a_server_error(self, shim: Shim):
        seen: list[int] = []

        async def flaky(request: web.Request) -> web.Response:
            seen.append(int(request.headers["X-Deadline-Ms"]))
            if len(seen) == 1:
                return web.json_response({"detail": "warming up"}, status=503)
            return web.json_response({"e1": {"Recommendations": {"T": ["ok"]}}})

        app = web.Application()
        app.router.add_post("/t", flaky)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            answer = await shim.invoke(EVENT, 4000, ENRICHER_URL=f"http://127.0.0.1:{port}/t",
                                       ENRICHER_API_KEY="ce_k", ENRICHER_MARGIN_MS="300")
        finally:
            await runner.cleanup()
        assert answer["result"] == {"e1": {"Recommendations": {"T": ["ok"]}}}
        assert len(seen) == 2
        assert seen[0] <= 3700 and seen[1] <= seen[0]


def test_zip_holds_only_the_shim(tmp_path: Path):
    out = tmp_path / "shim.zip"
    assert write_shim_zip(out) == 0
    with zipfile.ZipFile(out) as archive:
        assert archive.namelist() == ["lambda_shim.py"]
        assert archive.read("lambda_shim.py") == (SERVICE_DIR / "lambda_shim.py").read_bytes()
