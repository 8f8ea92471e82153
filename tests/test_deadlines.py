"""Deadlines: X-Deadline-Ms is checked and honoured even when Postgres stops answering (a stalled
TCP proxy); degraded answers are flagged and counted; GET /metrics shows it all."""

from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit

import pytest

from service.runtime.settings import Settings
from service.web.app import create_app
from service.web.app_keys import AUTHENTICATOR, RECOMMENDERS
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender
from tests.support.loop_stalls import timed
from tests.support.tcp_proxy import TcpProxy, url_through

pytestmark = pytest.mark.timing

TRANSFORM = "/v1/recommenders/movies/transform"


def event(*ids: str) -> dict:
    return {"Endpoints": {"e1": {"RecommendationItems": list(ids)}}}


@pytest.fixture
async def proxy(database_url: str):
    parts = urlsplit(database_url)
    if not parts.hostname:
        pytest.skip("the stalling proxy needs a TCP Postgres")
    proxy = TcpProxy(parts.hostname, parts.port or 5432)
    await proxy.start()
    yield proxy
    proxy.resume()
    await proxy.stop()


@pytest.fixture
async def api(database_url, proxy, aiohttp_client, make_key, settings: Settings) -> Api:
    proxied = url_through(database_url, proxy)
    app = create_app(dataclasses.replace(settings, database_url=proxied, db_command_timeout=3.0,
                                         cache_ttl=3600, auth_cache_seconds=3600))
    api = Api(await aiohttp_client(app), await make_key("acme", "admin"))
    await load_catalog(api, "movies", [{"id": str(i), "title": f"Movie {i}"} for i in range(5)])
    await put_recommender(api, "movies", "movies", ("Title", "title"))
    assert (await api.post(TRANSFORM, event("1")))[0] == 200
    return api


class TestDeadlineHeader:
    """A budget the service cannot use is refused, naming the header."""

    @pytest.mark.parametrize("value", ["0", "-5", "soon", "1.5", "600001", ""])
    async def test_bad_values(self, admin: Api, value: str):
        status, problem, _ = await admin.post(TRANSFORM, event("1"),
                                              headers={"X-Deadline-Ms": value})
        assert status == 422
        assert problem["field"] == "X-Deadline-Ms"


class TestStalledDatabase:
    """Postgres stops answering mid-flight (a stalled proxy): the deadline still holds.

    Answers are timed in this process, which also runs the service: less the time the machine
    kept the loop from running (tests/support/loop_stalls.py), and nothing else."""

    @pytest.mark.parametrize("budget_ms", [150, 400])
    async def test_answer_before_the_deadline(self, api: Api, proxy: TcpProxy, budget_ms: int):
        # Resumed at the end of the block: the query the deadline cut short finishes before teardown.
        with proxy.stalled():
            (status, answer, headers), took = await timed(
                api.post(TRANSFORM, event("1", "2"), headers={"X-Deadline-Ms": str(budget_ms)}))
        assert took < budget_ms / 1000, f"answered after {took:.3f} s of the loop's time"
        assert status == 200
        assert answer["e1"]["Recommendations"]["Title"] == ["Movie 1"]
        assert headers["X-Degraded"] == "postgres-timeout"

    async def test_deadline_holds_when_key_and_recommender_must_be_read_again(
        self, api: Api, proxy: TcpProxy
    ):
        # A lost invalidation channel demotes the key and recommender caches; reading them again
        # from a stalled Postgres must not hold the request past its deadline (a cancelled
        # asyncpg query once held it until the command timeout, 3 s here).
        app = api.client.app
        with proxy.stalled():
            app[AUTHENTICATOR].expire_all()
            app[RECOMMENDERS].expire_all()
            (status, answer, _), took = await timed(
                api.post(TRANSFORM, event("1"), headers={"X-Deadline-Ms": "300"}))
        assert took < 0.3, f"answered after {took:.3f} s of the loop's time"
        assert status == 200  # the stale key and recommender, the cached item
        assert answer["e1"]["Recommendations"]["Title"] == ["Movie 1"]

    async def test_default_deadline_applies(self, database_url, proxy, aiohttp_client, make_key,
                                            settings: Settings):
        proxied = url_through(database_url, proxy)
        app = create_app(dataclasses.replace(settings, database_url=proxied,
                                             default_deadline_ms=300, auth_cache_seconds=3600))
        api = Api(await aiohttp_client(app), await make_key("acme", "admin"))
        await load_catalog(api, "movies", [{"id": "1", "title": "Movie 1"}])
        await put_recommender(api, "movies", "movies", ("Title", "title"))
        assert (await api.post(TRANSFORM, event("1")))[0] == 200
        with proxy.stalled():
            (status, _, headers), took = await timed(api.post(TRANSFORM, event("1", "2")))
        assert took < 0.3
        assert status == 200
        assert headers["X-Degraded"] == "postgres-timeout"

    async def test_metrics_count_the_degraded_answer(self, api: Api, proxy: TcpProxy):
        proxy.stall()
        await api.post(TRANSFORM, event("3"), headers={"X-Deadline-Ms": "100"})
        proxy.resume()
        status, text = await metrics_text(api)
        assert status == 200
        assert ('enricher_degraded_responses_total{reason="postgres-timeout",route="transform"} '
                '1.0') in text


async def metrics_text(api: Api) -> tuple[int, str]:
    async with api.client.get("/metrics") as response:
        return response.status, await response.text()


class TestMetricsRoute:
    """GET /metrics speaks the Prometheus text format and covers every tier."""

    async def test_exposition(self, admin: Api):
        await load_catalog(admin, "movies", [{"id": "1", "title": "Movie 1"}])
        await put_recommender(admin, "movies", "movies", ("Title", "title"))
        for _ in range(2):
            assert (await admin.post(TRANSFORM, event("1", "nope")))[0] == 200
        async with admin.client.get("/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
        for line in (
            'enricher_http_requests_total{method="POST",route="transform",status="200"} 2.0',
            'enricher_cache_lookups_total{result="hit",tier="l1"} 1.0',
            'enricher_cache_lookups_total{result="negative_hit",tier="l1"} 1.0',
            'enricher_db_queries_total{outcome="ok"} 1.0',
            "enricher_l1_entries 2.0",
            'enricher_http_request_duration_seconds_count{route="transform"} 2.0',
        ):
            assert line in text, line
        assert "enricher_invalidation_notifications_total" in text
