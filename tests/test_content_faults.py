"""The content route with Postgres stalled behind the test proxy and no X-Deadline-Ms: its own
default budget (ENRICHER_CONTENT_DEADLINE_MS, 1,500 ms) holds; cached IDs are answered, degraded,
within Braze's 2 s; only when nothing can be shown is it a 503 with Retry-After. The Connect
route, with the shim's budget, answers every profile: from the caches, or send false saying
why."""

from __future__ import annotations

import dataclasses

import pytest

from service.runtime.settings import Settings
from service.web.app import create_app
from service.web.app_keys import AUTHENTICATOR, RECOMMENDERS, RESOLVER
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender
from tests.support.fake_connect import FakeConnect
from tests.support.loop_stalls import timed
from tests.support.metrics_reader import sample
from tests.support.tcp_proxy import TcpProxy, url_through

pytestmark = [pytest.mark.timing, pytest.mark.timeout(60)]

CONTENT = "/v1/recommenders/movies/content"


@pytest.fixture
async def api(database_url, proxy: TcpProxy, aiohttp_client, make_key, settings: Settings) -> Api:
    app = create_app(dataclasses.replace(
        settings, database_url=url_through(database_url, proxy), db_command_timeout=5.0,
        cache_ttl=3600, auth_cache_seconds=3600))
    api = Api(await aiohttp_client(app), await make_key("acme", "admin"))
    await load_catalog(api, "movies", [{"id": str(i), "title": f"Movie {i}"} for i in range(5)])
    await put_recommender(api, "movies", "movies", ("Title", "title"),
                          connect={"ids_from": "Attributes.recommended_items"})
    assert (await api.get(CONTENT + "?ids=1,2"))[0] == 200  # key, recommender, items 1 and 2
    return api


async def timed_get(api: Api, query: str, headers: dict[str, str] | None = None):
    """The answer and how long it took, less the time the machine kept this process's loop from
    running (tests/support/loop_stalls.py): what a budget can be held to here."""
    (status, answer, answered_headers), took = await timed(api.get(CONTENT + query,
                                                                   headers=headers))
    return status, answer, answered_headers, took


class TestStalledPostgres:
    """Postgres stops answering: what the caches know is served within the route's budget."""

    async def test_cached_and_uncached_ids(self, api: Api, proxy: TcpProxy):
        with proxy.stalled():
            status, answer, headers, took = await timed_get(api, "?ids=1,3,2")
        assert took < 1.6, f"answered after {took:.3f} s"
        assert status == 200
        assert headers["X-Degraded"] == "postgres-timeout"
        assert headers["Cache-Control"] == "no-store" and "ETag" not in headers
        assert [i["id"] for i in answer["items"]] == ["1", "2"]
        assert answer["missing"] == ["3"]
        assert sample(api.client.app, "enricher_degraded_responses_total",
                      route="get_content", reason="postgres-timeout") == 1

    async def test_stale_ids_and_stale_key_and_recommender(self, api: Api, proxy: TcpProxy):
        # A lost invalidation channel: every cache demoted to stale, so each must be asked for
        # again, and Postgres does not answer.
        app = api.client.app
        with proxy.stalled():
            app[RESOLVER].flush_all()
            app[AUTHENTICATOR].expire_all()
            app[RECOMMENDERS].expire_all()
            status, answer, headers, took = await timed_get(api, "?ids=1,2")
        assert took < 1.6, f"answered after {took:.3f} s"
        assert status == 200
        assert headers["X-Degraded"] == "postgres-timeout"
        assert answer["Recommendations"] == {"Title": ["Movie 1", "Movie 2"]}

    async def test_nothing_cached_is_a_503_with_retry_after(self, api: Api, proxy: TcpProxy):
        with proxy.stalled():
            status, problem, headers, took = await timed_get(api, "?ids=3,4")
        assert took < 2.0, f"answered after {took:.3f} s"
        assert status == 503
        assert headers["Content-Type"].startswith("application/problem+json")
        assert headers["Retry-After"] == "1"
        assert problem["field"] == "ids"

    async def test_unknown_key_with_postgres_stalled_is_a_503_in_time(self, api: Api,
                                                                       proxy: TcpProxy,
                                                                       make_key):
        other = await make_key("acme", "transform")  # never seen by this process
        with proxy.stalled():
            status, _, headers, took = await timed_get(
                api, "?ids=1", headers={"Authorization": f"Bearer {other}"})
        assert took < 2.0
        assert status == 503
        assert headers["Retry-After"] == "1"

    async def test_deadline_header_still_wins(self, api: Api, proxy: TcpProxy):
        with proxy.stalled():
            status, _, headers, took = await timed_get(api, "?ids=1,3",
                                                       headers={"X-Deadline-Ms": "300"})
        assert took < 0.3
        assert (status, headers["X-Degraded"]) == (200, "postgres-timeout")


async def test_a_connect_batch_is_answered_whole_past_a_stalled_postgres(api: Api,
                                                                         proxy: TcpProxy):
    connect = FakeConnect()
    event = connect.event([connect.profile(connect.customer_data(ids=ids))
                           for ids in (["1", "3"], ["3", "4"], ["2"])])
    with proxy.stalled():
        (status, answer, headers), took = await timed(connect.send_to_service(
            api, "movies", event, headers={"X-Deadline-Ms": "1000"}))
    assert took < 1.5, f"answered after {took:.3f} s of the loop's time"
    assert status == 200 and headers["X-Degraded"] == "postgres-timeout"
    cached, uncached, other = connect.check(event, answer)
    assert [i["id"] for i in cached["items"]] == ["1"] and cached["missing"] == ["3"]
    assert uncached["send"] is False
    assert "the catalog database is unavailable (postgres-timeout)" in uncached["reason"]
    assert other["items"][0]["Title"] == "Movie 2"
    assert sample(api.client.app, "enricher_degraded_responses_total", route="connect",
                  reason="postgres-timeout") == 1
