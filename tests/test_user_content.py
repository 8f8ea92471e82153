"""Personalize in the loop, through real HTTP against a fake Personalize runtime (a real aiohttp
server speaking its protocol, tests/support/fake_personalize.py): the user's items in
Personalize's order with scores and the transform's Recommendations; a signed call carrying what
was asked; per-user caching and single flight; every fault answered in time with the fallback."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from service.runtime.settings import Settings
from service.web.app import create_app
from service.web.app_keys import USER_RECOMMENDATIONS
from tests.support.api import Api
from tests.support.catalogs import load_catalog
from tests.support.fake_personalize import ACCESS_KEY, REGION, FakePersonalize
from tests.support.loop_stalls import timed as timed_call
from tests.support.metrics_reader import sample

pytestmark = [pytest.mark.timing, pytest.mark.timeout(60)]

CAMPAIGN = "arn:aws:personalize:us-east-1:123456789012:campaign/movies"
FILTER = "arn:aws:personalize:us-east-1:123456789012:filter/by-genre"
USER = "/v1/recommenders/movies/users/{}/content"
ITEMS = [{"id": str(n), "title": f"Movie {n}", "genre": "Drama" if n % 2 else "Comedy",
          "price": {"amount": f"{n}.99", "currency": "EUR"},
          "locales": {"de": {"title": f"Film {n}"}}} for n in range(1, 10)]
ATTRIBUTES = [{"name": "Title", "field": "title"},
              {"name": "Price", "field": "price", "format": "currency"}]
PERSONALIZE = {"campaign_arn": CAMPAIGN, "filter_arn": FILTER, "num_results": 4,
               "cache_seconds": 60, "fallback_ids": ["8", "9"]}


@pytest.fixture
async def fake(aws_env):
    fake = FakePersonalize(
        users={"u1": [("3", 0.91), ("1", 0.52), ("unknown-item", 0.3), ("2", 0.1), ("5", 0.05)]},
        popular=[("7", 0.2), ("6", 0.1)])
    await fake.start()
    yield fake
    await fake.stop()


# The route's budget in these tests: one a loaded machine cannot use up, so that what a test
# counts (Personalize's calls, their outcomes) does not depend on how busy the machine is. The
# tests of the budget itself (TestFaults) keep the default, ENRICHER_CONTENT_DEADLINE_MS.
UNHURRIED_MS = 60_000


async def start_app(aiohttp_client, settings: Settings, fake: FakePersonalize, make_key,
                    deadline_ms: int = UNHURRIED_MS, **personalize: object) -> Api:
    app = create_app(dataclasses.replace(settings, personalize_endpoint_url=fake.url,
                                         content_deadline_ms=deadline_ms))
    api = Api(await aiohttp_client(app), await make_key("acme", "admin"))
    if (await api.get("/v1/catalogs/movies"))[0] != 200:
        await load_catalog(api, "movies", ITEMS)
    status, body, _ = await api.put("/v1/recommenders/movies", {
        "catalog": "movies", "attributes": ATTRIBUTES, "recommendations_per_message": 3,
        "personalize": {**PERSONALIZE, **personalize}})
    assert status in (200, 201), body
    return api


@pytest.fixture
async def api(aiohttp_client, settings, fake, make_key) -> Api:
    return await start_app(aiohttp_client, settings, fake, make_key)


async def timed(api: Api, path: str):
    """The answer and how long it took, less the time the machine kept this process's loop from
    running (tests/support/loop_stalls.py)."""
    (status, answer, headers), took = await timed_call(api.get(path))
    return status, answer, headers, took


class TestTheUsersItems:
    """Personalize's items, in its order, with scores; Recommendations as the transform's."""

    async def test_order_scores_and_recommendations(self, api: Api, fake: FakePersonalize):
        status, answer, headers = await api.get(USER.format("u1") + "?locale=de")
        assert status == 200, answer
        assert [(i["id"], i["score"]) for i in answer["items"]] == [
            ("3", 0.91), ("1", 0.52), ("2", 0.1)]  # num_results 4: 5 is not asked for
        assert answer["missing"] == ["unknown-item"]
        assert answer["recommendation_id"] == "RID-u1"
        assert "X-Degraded" not in headers and "ETag" in headers
        ids = ["3", "1", "unknown-item", "2"]
        _, transformed, _ = await api.post("/v1/recommenders/movies/transform", {
            "Endpoints": {"e": {"RecommendationItems": ids, "Demographic": {"Locale": "de"}}}})
        assert answer["Recommendations"] == transformed["e"]["Recommendations"]
        _, content, _ = await api.get("/v1/recommenders/movies/content?locale=de&ids="
                                      + ",".join(ids))
        assert {k: v for k, v in answer.items() if k != "recommendation_id"} == {
            **content, "items": [{**i, "score": s} for i, s in
                                 zip(content["items"], (0.91, 0.52, 0.1), strict=True)]}

    async def test_the_call_is_signed_and_carries_what_was_asked(self, api: Api,
                                                                  fake: FakePersonalize):
        status, _, _ = await api.get(USER.format("u1") + "?context.DEVICE=mobile&context.TIME=am"
                                     "&filter.GENRE=%22Comedy%22&locale=de&other=x")
        assert status == 200
        [call] = fake.requests
        assert call.signature_valid
        assert call.headers["Authorization"].startswith(
            f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
        assert f"/{REGION}/personalize/aws4_request" in call.headers["Authorization"]
        assert call.body == {"campaignArn": CAMPAIGN, "userId": "u1", "numResults": 4,
                             "filterArn": FILTER, "filterValues": {"GENRE": '"Comedy"'},
                             "context": {"DEVICE": "mobile", "TIME": "am"}}

    async def test_a_user_personalize_does_not_know_gets_what_it_returns(self, api: Api):
        status, answer, _ = await api.get(USER.format("new-user"))
        assert status == 200
        assert [(i["id"], i["score"]) for i in answer["items"]] == [("7", 0.2), ("6", 0.1)]

    async def test_recommender_arn_instead_of_campaign(self, aiohttp_client, settings, fake,
                                                        make_key):
        arn = "arn:aws:personalize:us-east-1:123456789012:recommender/top-picks"
        api = await start_app(aiohttp_client, settings, fake, make_key, campaign_arn=None,
                              recommender_arn=arn, filter_arn=None)
        assert (await api.get(USER.format("u1")))[0] == 200
        assert fake.requests[-1].body == {"recommenderArn": arn, "userId": "u1", "numResults": 4}

    async def test_no_personalize_block_is_a_404(self, api: Api):
        await api.put("/v1/recommenders/plain", {"catalog": "movies", "attributes": ATTRIBUTES})
        status, problem, _ = await api.get("/v1/recommenders/plain/users/u1/content")
        assert (status, problem["field"]) == (404, "recommender")

    @pytest.mark.parametrize(("query", "field"), [
        ("?context.bad-key=1", "context.bad-key"),
        ("?filter.GENRE=" + "x" * 1001, "filter.GENRE"),
        ("?locale=not%20a%20locale", "locale"),
    ])
    async def test_bad_query_is_a_422(self, api: Api, fake: FakePersonalize, query: str,
                                      field: str):
        status, problem, _ = await api.get(USER.format("u1") + query)
        assert (status, problem["field"]) == (422, field)
        assert fake.requests == []


class TestCachingAndSingleFlight:
    """Results are kept per user for cache_seconds; concurrent renders make one call."""

    async def test_a_second_render_makes_no_call(self, api: Api, fake: FakePersonalize):
        first = await api.get(USER.format("u1"))
        second = await api.get(USER.format("u1"))
        assert second[:2] == first[:2]
        assert len(fake.requests) == 1
        # Another context is another key.
        await api.get(USER.format("u1") + "?context.DEVICE=tv")
        assert len(fake.requests) == 2

    async def test_an_item_change_is_seen_without_a_new_call(self, api: Api,
                                                             fake: FakePersonalize):
        assert (await api.get(USER.format("u1")))[1]["items"][0]["Title"] == "Movie 3"
        await api.patch("/v1/catalogs/movies/items/3", {"title": "Renamed"})
        assert (await api.get(USER.format("u1")))[1]["items"][0]["Title"] == "Renamed"
        assert len(fake.requests) == 1

    async def test_ten_concurrent_renders_make_one_call(self, api: Api, fake: FakePersonalize):
        fake.mode = "hold"
        renders = [asyncio.ensure_future(api.get(USER.format("u1"))) for _ in range(10)]
        await asyncio.wait_for(fake.arrived.wait(), 10)
        app = api.client.app
        # Until the other nine have joined the held call. Joining is visible only in the
        # metric, so it is polled (bounded); the call itself is held by an Event.
        async with asyncio.timeout(10):
            while sample(app, "enricher_personalize_cache_lookups_total",  # noqa: ASYNC110
                         tier="l1", result="joined") < 9:
                await asyncio.sleep(0.01)  # paces the poll
        fake.release.set()
        answers = await asyncio.gather(*renders)
        assert len(fake.requests) == 1
        assert all(a[0] == 200 and a[1] == answers[0][1] for a in answers)

    async def test_cache_seconds_zero_asks_every_time(self, aiohttp_client, settings, fake,
                                                      make_key):
        api = await start_app(aiohttp_client, settings, fake, make_key, cache_seconds=0)
        await api.get(USER.format("u1"))
        await api.get(USER.format("u1"))
        assert len(fake.requests) == 2

    async def test_l2_shares_results_between_processes(self, aiohttp_client, redis_settings,
                                                       fake, make_key):
        a = await start_app(aiohttp_client, redis_settings, fake, make_key)
        assert (await a.get(USER.format("u1")))[0] == 200
        await a.client.app[USER_RECOMMENDATIONS].close()  # its L2 write has landed
        b = await start_app(aiohttp_client, redis_settings, fake, make_key)
        status, answer, _ = await b.get(USER.format("u1"))
        assert status == 200 and answer["items"][0]["id"] == "3"
        assert len(fake.requests) == 1
        assert sample(b.client.app, "enricher_personalize_cache_lookups_total", tier="l2",
                      result="hit") == 1

    async def test_a_garbled_l2_entry_is_a_miss(self, aiohttp_client, redis_settings, fake,
                                                make_key):
        import redis.asyncio as redis_client

        a = await start_app(aiohttp_client, redis_settings, fake, make_key)
        assert (await a.get(USER.format("u1")))[0] == 200
        await a.client.app[USER_RECOMMENDATIONS].close()
        client = redis_client.Redis.from_url(redis_settings.redis_url)
        try:
            keys = [k async for k in client.scan_iter(match=f"{redis_settings.redis_prefix}:v:p:*")]
            assert len(keys) == 1
            await client.set(keys[0], b'[["\\u0000"], "not scores", 3]')
        finally:
            await client.aclose()
        b = await start_app(aiohttp_client, redis_settings, fake, make_key)
        status, answer, _ = await b.get(USER.format("u1"))
        assert status == 200 and answer["items"][0]["id"] == "3"
        assert len(fake.requests) == 2  # asked Personalize again


class TestFaults:
    """Personalize slow, throttling, failing, closing, refusing or down: the fallback items, in
    time, flagged and counted; without fallback IDs, send false."""

    @pytest.fixture
    async def api(self, aiohttp_client, settings, fake, make_key) -> Api:
        return await start_app(aiohttp_client, settings, fake, make_key,
                               deadline_ms=Settings().content_deadline_ms)

    @pytest.mark.parametrize(("mode", "outcome"), [
        ("slow", "timeout"), ("throttle", "throttled"), ("fail", "server_error"),
        ("close", "unreachable"), ("deny", "denied"), ("down", "unreachable"),
    ])
    async def test_fallback_in_time(self, api: Api, fake: FakePersonalize, mode: str,
                                    outcome: str):
        if mode == "down":
            await fake.stop()
        else:
            fake.mode = mode
        status, answer, headers, took = await timed(api, USER.format("u1"))
        assert took < 2.0, f"answered after {took:.3f} s"
        assert status == 200
        assert headers["X-Degraded"] == "personalize-unavailable"
        assert headers["Cache-Control"] == "no-store"
        assert [(i["id"], i["score"]) for i in answer["items"]] == [("8", None), ("9", None)]
        assert answer["send"] is True and answer["recommendation_id"] is None
        app = api.client.app
        assert sample(app, "enricher_degraded_responses_total", route="get_user_content",
                      reason="personalize-unavailable") == 1
        assert sample(app, "enricher_personalize_calls_total", outcome=outcome) == 1
        # A failure is not cached: once Personalize is back, the user's own items come.
        if mode == "down":
            await fake.start(port=fake.port)
        fake.mode = "ok"
        fake.release.set()
        status, answer, headers = await api.get(USER.format("u1"),
                                                headers={"X-Deadline-Ms": str(UNHURRIED_MS)})
        assert "X-Degraded" not in headers and answer["items"][0]["id"] == "3"

    async def test_without_fallback_ids_send_is_false(self, aiohttp_client, settings, fake,
                                                      make_key):
        api = await start_app(aiohttp_client, settings, fake, make_key,
                              deadline_ms=Settings().content_deadline_ms, fallback_ids=[])
        fake.mode = "fail"
        status, answer, headers = await api.get(USER.format("u1"))
        assert status == 200
        assert (answer["send"], answer["items"]) == (False, [])
        assert headers["X-Degraded"] == "personalize-unavailable"

    async def test_no_region_serves_the_fallback(self, aiohttp_client, settings, fake, make_key,
                                                 monkeypatch):
        monkeypatch.delenv("AWS_DEFAULT_REGION")
        api = await start_app(aiohttp_client, settings, fake, make_key)
        status, answer, headers = await api.get(USER.format("u1"))
        assert (status, headers["X-Degraded"]) == (200, "personalize-unavailable")
        assert [i["id"] for i in answer["items"]] == ["8", "9"]


class TestBadPersonalizeBlocks:
    """A bad block is a 422 naming the field, and nothing is stored."""

    @pytest.mark.parametrize(("block", "field"), [
        ({"campaign_arn": CAMPAIGN,
          "recommender_arn": "arn:aws:personalize:us-east-1:123456789012:recommender/r"},
         "personalize.recommender_arn"),
        ({}, "personalize.campaign_arn"),
        ({"campaign_arn": "arn:aws:s3:::bucket"}, "personalize.campaign_arn"),
        ({"campaign_arn": CAMPAIGN.replace("campaign/", "filter/")}, "personalize.campaign_arn"),
        ({"campaign_arn": CAMPAIGN, "filter_arn": CAMPAIGN}, "personalize.filter_arn"),
        ({"campaign_arn": CAMPAIGN, "num_results": 0}, "personalize.num_results"),
        ({"campaign_arn": CAMPAIGN, "num_results": 51}, "personalize.num_results"),
        ({"campaign_arn": CAMPAIGN, "cache_seconds": 3601}, "personalize.cache_seconds"),
        ({"campaign_arn": CAMPAIGN, "fallback_ids": [str(n) for n in range(51)]},
         "personalize.fallback_ids"),
        ({"campaign_arn": CAMPAIGN, "fallback_ids": ["x" * 257]}, "personalize.fallback_ids[0]"),
        ({"campaign_arn": CAMPAIGN, "extra": 1}, "personalize.extra"),
        ("arn", "personalize"),
    ])
    async def test_refused(self, api: Api, block: object, field: str):
        before = (await api.get("/v1/recommenders/movies"))[1]
        status, problem, _ = await api.put("/v1/recommenders/movies", {
            "catalog": "movies", "attributes": ATTRIBUTES, "personalize": block})
        assert status == 422
        assert field in [e["field"] for e in problem["errors"]], problem
        assert (await api.get("/v1/recommenders/movies"))[1] == before

    async def test_round_trip_and_defaults(self, api: Api):
        status, stored, _ = await api.put("/v1/recommenders/movies", {
            "catalog": "movies", "attributes": ATTRIBUTES, "recommendations_per_message": 2,
            "personalize": {"campaign_arn": CAMPAIGN}})
        assert status == 200
        assert stored["personalize"] == {"campaign_arn": CAMPAIGN, "num_results": 2,
                                         "cache_seconds": 60, "fallback_ids": []}
        assert (await api.put("/v1/recommenders/movies", stored))[1] == {
            **stored, "updated_at": (await api.get("/v1/recommenders/movies"))[1]["updated_at"]}
