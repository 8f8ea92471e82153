"""The Amazon Connect route through real HTTP, driven by a local "Connect" (tests/support/
fake_connect.py): each profile's ResultData is the content route's answer for its IDs and locale
(the user route's, where Personalize gives the IDs); every profile answered once, in order, a bad
one with send false and a reason; ResultData within 32 KB; an IdempotencyToken's first answer
replayed, in this process and through Redis; the connect block validated."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.adapters.connect import NOTHING_SHOWN, Profile, ProfileReader
from service.adapters.connect_replay import ConnectReplay, replay_key
from service.enrichment.recommenders import ConnectSpec
from service.resolution.shared_cache import SharedCache
from service.runtime.metrics import Metrics
from service.web.app import create_app
from tests.support.api import Api
from tests.support.catalogs import load_catalog
from tests.support.fake_connect import RESULT_DATA_LIMIT, FakeConnect, result_data_size
from tests.support.fake_personalize import FakePersonalize
from tests.support.metrics_reader import sample

pytestmark = pytest.mark.timeout(120)

CAMPAIGN = "arn:aws:personalize:us-east-1:123456789012:campaign/movies"
ITEMS = [{"id": str(n), "title": f"Film {n}: Ünïcode 渡辺", "genre": "Drama" if n % 2 else "Comedy",
          "price": {"amount": f"{n}.99", "currency": "EUR"},
          "locales": {"de": {"title": f"Der Film {n}"}}} for n in range(1, 41)]
ATTRIBUTES = [{"name": "Title", "field": "title"},
              {"name": "Price", "field": "price", "format": "currency"},
              {"name": "Genre", "field": "genre", "first": True}]
CONNECT = {"ids_from": "Attributes.recommended_items", "locale_from": "Attributes.locale"}
LOCALES = [None, "de_DE", "en_US", "fr", "es-mx"]


async def put_movies(api: Api, **extra: object) -> None:
    status, body, _ = await api.put("/v1/recommenders/movies", {
        "catalog": "movies", "attributes": ATTRIBUTES, "recommendations_per_message": 3,
        "connect": CONNECT, **extra})
    assert status in (200, 201), body


@pytest.fixture
async def api(admin: Api) -> Api:
    await load_catalog(admin, "movies", ITEMS)
    await put_movies(admin)
    return admin


@pytest.fixture
def connect() -> FakeConnect:
    return FakeConnect(seed=7)


async def content_answer(api: Api, ids: list[str], locale: str | None,
                         recommender: str = "movies") -> dict:
    """The content route's answer, as a profile gets it: where nothing can be shown, with the
    reason why."""
    query = "&".join(f"ids={quote(i, safe='')}" for i in ids)
    if locale:
        query += f"&locale={quote(locale)}"
    status, answer, _ = await api.get(f"/v1/recommenders/{recommender}/content?{query}")
    assert status == 200, answer
    return answer if answer["send"] else {**answer, "reason": NOTHING_SHOWN}


async def send(api: Api, connect: FakeConnect, event: dict, recommender: str = "movies",
               status: int = 200):
    got, answer, headers = await connect.send_to_service(api, recommender, event)
    assert got == status, answer
    return (connect.check(event, answer), headers) if status == 200 else (answer, headers)


class TestTheContentRoutesAnswer:
    """Each profile's ResultData is exactly the content route's answer for its IDs and locale."""

    async def test_a_batch_of_100_profiles_of_5_ids(self, api: Api, connect: FakeConnect):
        rng = random.Random(3)
        asked = [(rng.sample([*map(str, range(1, 41)), "unknown-1"], 5), rng.choice(LOCALES))
                 for _ in range(100)]
        event = connect.event([connect.profile(connect.customer_data(ids=ids, locale=locale))
                               for ids, locale in asked])
        results, headers = await send(api, connect, event)
        assert len(results) == 100 and "X-Degraded" not in headers
        for (ids, locale), data in zip(asked, results, strict=True):
            assert data == await content_answer(api, ids, locale)
        assert sum(r["send"] for r in results) == 100
        assert sample(api.client.app, "enricher_connect_profiles_total", outcome="sent") == 100

    async def test_ids_as_an_array_or_a_comma_separated_string(self, api: Api,
                                                               connect: FakeConnect):
        expected = await content_answer(api, ["3", "1", "2"], None)
        shapes = [["3", "1", "2"], "3,1,2", " 3 , 1,2,", "3,1,,2"]
        event = connect.event([connect.profile(connect.customer_data(ids=s)) for s in shapes]
                              + [connect.profile(connect.customer_data(ids=["3", "1", "2"]))])
        event["Items"]["CustomerProfiles"][0]["CustomerData"] = json.dumps(
            {"Attributes": {"recommended_items": ["3", "1", "2"]}})
        results, _ = await send(api, connect, event)
        assert all(r == expected for r in results), results

    async def test_batches_of_1_to_100_answer_every_profile_in_order(self, api: Api,
                                                                     connect: FakeConnect):
        for size in (1, 2, 17, 100):
            profiles = [connect.profile(connect.customer_data(ids=[str(n % 40 + 1)]))
                        for n in range(size)]
            profiles[-1] = {**profiles[-1], "ProfileId": profiles[0]["ProfileId"]}  # a repeat
            results, _ = await send(api, connect, connect.event(profiles))
            assert len(results) == size and all(r["send"] for r in results)

    async def test_the_general_path_too(self, api: Api, connect: FakeConnect):
        """A recommender answered without serialised rows (placeholders): the same equality."""
        await put_movies(api, missing_items="placeholder")
        asked = [(["1", "nope", "2"], "de"), (["nope"], None)]
        event = connect.event([connect.profile(connect.customer_data(ids=i, locale=loc))
                               for i, loc in asked])
        results, _ = await send(api, connect, event)
        for (ids, locale), data in zip(asked, results, strict=True):
            assert data == await content_answer(api, ids, locale)

    async def test_an_empty_batch(self, api: Api, connect: FakeConnect):
        results, _ = await send(api, connect, connect.event([]))
        assert results == []


class TestBadProfiles:
    """A profile that cannot be served gets send false and a reason; the others are served."""

    async def test_a_mixed_batch(self, api: Api, connect: FakeConnect):
        good = connect.customer_data(ids=["1", "2"])
        huge = connect.customer_data(ids=["3"], blurb="Ω" * 1_000_000)
        cases = [
            (good, None),
            ("{not json", "CustomerData is not valid JSON"),
            ('["a", "list"]', "CustomerData must hold a JSON object"),
            ("", "CustomerData is not valid JSON"),
            (connect.customer_data(), "no item IDs at Attributes.recommended_items"),
            (connect.customer_data(ids=""), "(it is empty)"),
            (connect.customer_data(ids=" , ,"), "(it is empty)"),
            (connect.customer_data(ids=["1", 2]), "Attributes.recommended_items[1] must be a "
                                                  "string"),
            (connect.customer_data(ids=[]), "(it is empty)"),
            ({**good, "Attributes": {"recommended_items": {"a": 1}}},
             "must be an array of strings or a comma-separated string, got an object"),
            ({**good, "Attributes": "flat"}, "no item IDs at Attributes.recommended_items"),
            (connect.customer_data(ids=[str(n) for n in range(51)]), "at most 50 item IDs"),
            (connect.customer_data(ids=["1", "x" * 257]), "[1] must be at most 256 characters"),
            (connect.customer_data(ids=["1\x00"]), "[0] must not contain the NUL character"),
            (connect.customer_data(ids=["1"], locale="not a locale"), "not a locale tag"),
            ({**good, "Attributes": {**good["Attributes"], "locale": 7}},
             "Attributes.locale must be a string, got a number"),
            (connect.customer_data(ids=["unknown", "gone"]), "none of the profile's item IDs"),
            (huge, None),
            (connect.customer_data(ids=["1"], locale=""), None),  # no locale: the default
            ('{"Attributes": {"recommended_items": "1", "n": 1e400}}', None),
        ]
        event = connect.event([connect.profile(data) for data, _ in cases])
        event["Items"]["CustomerProfiles"].append({"ProfileId": "no-data"})
        event["Items"]["CustomerProfiles"].append({"ProfileId": "number", "CustomerData": 5})
        results, _ = await send(api, connect, event)
        expected = [why for _, why in cases] + ["CustomerData is missing",
                                                "CustomerData must be the profile as a JSON "
                                                "string, got a number"]
        for data, why in zip(results, expected, strict=True):
            if why is None:
                assert data["send"] is True and "reason" not in data, data
            else:
                assert data["send"] is False and why in data["reason"], (why, data)
        unknown = results[16]
        assert unknown["missing"] == ["unknown", "gone"] and unknown["items"] == []
        app = api.client.app
        assert sample(app, "enricher_connect_profiles_total", outcome="sent") == 4
        assert sample(app, "enricher_connect_profiles_total", outcome="not_sent") == 18

    async def test_an_unknown_recommender_answers_every_profile(self, api: Api,
                                                                connect: FakeConnect):
        event = connect.event([connect.profile(connect.customer_data(ids=["1"]))] * 3)
        results, _ = await send(api, connect, event, recommender="nope")
        assert results == [{"send": False, "reason": "no recommender named 'nope'"}] * 3

    async def test_a_recommender_that_says_nowhere(self, api: Api, connect: FakeConnect):
        status, _, _ = await api.put("/v1/recommenders/plain", {"catalog": "movies",
                                                                "attributes": ATTRIBUTES})
        assert status == 201
        event = connect.event([connect.profile(connect.customer_data(ids=["1"]))])
        [data], _ = await send(api, connect, event, recommender="plain")
        assert data["send"] is False and "connect.ids_from" in data["reason"]

    @pytest.mark.parametrize(("event", "status", "field"), [
        ([], 422, "body"),
        ({"InvocationMetadata": {}}, 422, "Items"),
        ({"Items": []}, 422, "Items"),
        ({"Items": {}}, 422, "Items.CustomerProfiles"),
        ({"Items": {"CustomerProfiles": {"p": {}}}}, 422, "Items.CustomerProfiles"),
        ({"Items": {"CustomerProfiles": [{"ProfileId": "a"}, "b"]}}, 422,
         "Items.CustomerProfiles[1]"),
        ({"Items": {"CustomerProfiles": [{"CustomerData": "{}"}]}}, 422,
         "Items.CustomerProfiles[0].ProfileId"),
        ({"Items": {"CustomerProfiles": [{"ProfileId": ""}]}}, 422,
         "Items.CustomerProfiles[0].ProfileId"),
        ({"Items": {"CustomerProfiles": [{"ProfileId": 12}]}}, 422,
         "Items.CustomerProfiles[0].ProfileId"),
        ({"Items": {"CustomerProfiles": [{"ProfileId": str(n)} for n in range(1001)]}}, 422,
         "Items.CustomerProfiles"),
    ])
    async def test_a_malformed_event_is_refused_naming_the_field(self, api: Api, event: object,
                                                                  status: int, field: str):
        got, problem, headers = await api.post("/v1/recommenders/movies/connect", event)
        assert (got, problem["field"]) == (status, field), problem
        assert headers["Content-Type"] == "application/problem+json"

    async def test_not_json_is_a_400(self, api: Api):
        status, problem, _ = await api.post("/v1/recommenders/movies/connect", raw=b"{nope")
        assert (status, problem["field"]) == (400, "body")

    async def test_the_key_needs_the_transform_scope(self, api: Api, connect: FakeConnect,
                                                     make_key):
        reader = Api(api.client, await make_key("acme", "catalog:read"))
        event = connect.event([connect.profile()])
        status, problem, _ = await reader.post("/v1/recommenders/movies/connect", event)
        assert (status, problem["field"]) == (403, "Authorization")


@st.composite
def huge_items(draw) -> list[tuple[int, str]]:
    """Items as (blurb length, one character the blurb is made of): from none to far past
    32 KB, in characters whose escapes are 1 to 12 bytes."""
    return draw(st.lists(st.tuples(st.integers(0, 30_000), st.sampled_from("a\n\"é渡😀")),
                         min_size=1, max_size=8))


class TestResultDataLimit:
    """No ResultData is over 32 KB as the runtime writes it: trailing items are dropped, never
    a value cut, with truncated: true; what fits is the content route's answer."""

    @settings(max_examples=20, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(items=huge_items(), unknown_at=st.integers(0, 8), per_message=st.integers(1, 5),
           profile_attribute=st.integers(0, 300_000))
    async def test_huge_attribute_values(self, admin: Api, items, unknown_at: int,
                                         per_message: int, profile_attribute: int):
        if (await admin.get("/v1/catalogs/big"))[0] != 200:
            await load_catalog(admin, "big", [])
        for n, (length, char) in enumerate(items):
            status, body, _ = await admin.put(f"/v1/catalogs/big/items/b{n}", {
                "title": f"B{n}", "attributes": {"blurb": char * length}})
            assert status in (200, 201), body
        status, body, _ = await admin.put("/v1/recommenders/big", {
            "catalog": "big", "recommendations_per_message": per_message,
            "attributes": [{"name": "Title", "field": "title"},
                           {"name": "Blurb", "field": "attributes.blurb"}],
            "connect": {"ids_from": "Attributes.ids"}})
        assert status in (200, 201), body
        ids = [f"b{n}" for n in range(len(items))]
        ids.insert(min(unknown_at, len(ids)), "unknown")
        connect = FakeConnect(seed=None)  # new tokens: no replay of an earlier example's answer
        event = connect.event([connect.profile({"Attributes": {
            "ids": ",".join(ids), "huge": "ü" * profile_attribute}})])
        [data], _ = await send(admin, connect, event, recommender="big")
        assert result_data_size(data) <= RESULT_DATA_LIMIT

        async def answer_for(count: int) -> dict:
            status, answer, _ = await admin.post("/v1/recommenders/big/content",
                                                 {"ids": ids[:count]})
            assert status == 200, answer
            return answer

        full = await answer_for(len(ids))
        if result_data_size(full) <= RESULT_DATA_LIMIT:
            assert data == (full if full["send"] else {**full, "reason": NOTHING_SHOWN})
            return
        assert data["truncated"] is True
        if "items" not in data:  # not even the first ID's answer fits
            assert data["send"] is False and "over the" in data["reason"]
            count = 0
        else:  # the answer for the leading IDs: those shown and those missing, each once
            count = len(data["items"]) + len(data["missing"])
            kept = {k: v for k, v in data.items() if k not in ("truncated", "reason")}
            assert kept == await answer_for(count)  # whole values: nothing cut
            assert data["items"] == full["items"][:len(data["items"])]
        # ... and as many as fit: one more would not.
        one_more = await answer_for(count + 1)
        assert result_data_size({**one_more, "truncated": True}) > RESULT_DATA_LIMIT

    async def test_one_item_over_the_limit(self, admin: Api, connect: FakeConnect):
        await load_catalog(admin, "big", [{"id": "b", "title": "B",
                                           "attributes": {"blurb": "😀" * 20_000}}])
        status, body, _ = await admin.put("/v1/recommenders/big", {
            "catalog": "big", "attributes": [{"name": "Blurb", "field": "attributes.blurb"}],
            "connect": {"ids_from": "Attributes.ids"}})
        assert status == 201, body
        event = connect.event([connect.profile({"Attributes": {"ids": "b"}})])
        [data], _ = await send(admin, connect, event, recommender="big")
        assert data["send"] is False and data["truncated"] is True
        assert "even the first item's content is over" in data["reason"]


class TestIdempotencyTokens:
    """A repeated token gets the first answer, even after an item changed; a new token, or no
    token, sees the change."""

    async def test_a_retry_replays_the_first_answer(self, api: Api, connect: FakeConnect):
        event = connect.event([connect.profile(connect.customer_data(ids=["1", "2"]))
                               for _ in range(3)])
        first, _ = await send(api, connect, event)
        status, _, _ = await api.patch("/v1/catalogs/movies/items/1", {"title": "Renamed"})
        assert status == 200
        again, _ = await send(api, connect, connect.retry(event))
        assert again == first and first[0]["items"][0]["Title"] != "Renamed"
        fresh = connect.event([{**p, "IdempotencyToken": p["IdempotencyToken"] + "-new"}
                               for p in event["Items"]["CustomerProfiles"]])
        changed, _ = await send(api, connect, fresh)
        assert all(r["items"][0]["Title"] == "Renamed" for r in changed)
        untokened = connect.event([{k: v for k, v in p.items() if k != "IdempotencyToken"}
                                   for p in event["Items"]["CustomerProfiles"]])
        assert (await send(api, connect, untokened))[0] == changed
        assert sample(api.client.app, "enricher_connect_profiles_total",
                      outcome="replayed") == 3

    async def test_a_token_is_per_profile(self, api: Api, connect: FakeConnect):
        """One token on every profile of a batch (the guide does not say it cannot be): each
        profile still gets its own answer."""
        event = connect.event([connect.profile(connect.customer_data(ids=[str(n)]),
                                               token="one-token") for n in (1, 2)])
        first, _ = await send(api, connect, event)
        again, _ = await send(api, connect, connect.retry(event))
        assert [r["items"][0]["id"] for r in again] == ["1", "2"] and again == first

    async def test_redis_replays_across_processes(self, aiohttp_client, redis_settings,
                                                  make_key, connect: FakeConnect):
        # Redis answering past its 50 ms counts as a miss (the answer computed here stands): a
        # loaded machine's Redis must not make this test one of that instead.
        redis_settings = dataclasses.replace(redis_settings, redis_timeout=5.0)
        a = Api(await aiohttp_client(create_app(redis_settings)), await make_key("acme"))
        await load_catalog(a, "movies", ITEMS)
        await put_movies(a)
        event = connect.event([connect.profile(connect.customer_data(ids=["1", "2"]))])
        first, _ = await send(a, connect, event)
        await a.patch("/v1/catalogs/movies/items/1", {"title": "Renamed"})
        b = Api(await aiohttp_client(create_app(redis_settings)), a.key)
        again, _ = await send(b, connect, connect.retry(event))
        assert again == first
        assert sample(b.client.app, "enricher_connect_profiles_total", outcome="replayed") == 1

    async def test_the_first_answer_stored_wins(self, redis_settings):
        """Two processes answering one token at once both give the one Redis kept first."""
        def shared() -> SharedCache:
            return SharedCache(redis_settings.redis_url, ttl=60, negative_ttl=5, timeout=1.0,
                               metrics=Metrics(), prefix=redis_settings.redis_prefix)

        caches = [shared(), shared()]
        try:
            a, b = (ConnectReplay(cache, 900, 1 << 20) for cache in caches)
            key = replay_key(1, 2, "profile", "token")
            assert await a.keep({key: b'{"send":true}'}) == {key: b'{"send":true}'}
            assert await b.keep({key: b'{"send":false}'}) == {key: b'{"send":true}'}
            assert await b.recall([key], 1.0) == {key: b'{"send":true}'}
        finally:
            for cache in caches:
                await cache.close()

    async def test_l1_is_bounded_and_entries_expire(self):
        replay = ConnectReplay(None, 900, max_bytes=10_000)
        keys = [replay_key(1, 1, f"p{n}", "t") for n in range(100)]
        for key in keys:
            await replay.keep({key: b"x" * 500})
        assert replay.accounted_bytes <= 10_000 and len(replay) < 100
        found = await replay.recall(keys, 1.0)
        assert keys[-1] in found and keys[0] not in found  # the oldest went first
        off = ConnectReplay(None, 900, max_bytes=0)
        await off.keep({keys[0]: b"x"})
        assert len(off) == 0
        expiring = ConnectReplay(None, 0, max_bytes=10_000)
        await expiring.keep({keys[0]: b"x"})
        assert await expiring.recall([keys[0]], 1.0) == {}
        assert expiring.accounted_bytes == 0


@pytest.fixture
async def fake(aws_env):
    fake = FakePersonalize(users={f"user-{n}": [(str(n + k), 0.9 - k / 10) for k in range(4)]
                                  for n in range(1, 11)},
                           popular=[("40", 0.5)])
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def with_personalize(aiohttp_client, settings, make_key, fake: FakePersonalize) -> Api:
    app = create_app(dataclasses.replace(settings, personalize_endpoint_url=fake.url))
    api = Api(await aiohttp_client(app), await make_key("acme", "admin"))
    await load_catalog(api, "movies", ITEMS)
    await put_movies(api, personalize={"campaign_arn": CAMPAIGN, "num_results": 4,
                                       "fallback_ids": ["39", "40"]},
                     connect={"user_id_from": "Attributes.user", "locale_from": "Attributes.locale"})
    return api


class TestItemsFromPersonalize:
    """Without ids_from, Personalize gives each profile's items through the user route's cache:
    the answer is the user route's."""

    async def test_the_user_routes_answer_and_one_call_per_user(
            self, with_personalize: Api, fake: FakePersonalize, connect: FakeConnect):
        users = [f"user-{n % 10 + 1}" for n in range(100)]
        event = connect.event([connect.profile(connect.customer_data(user=u, locale="de"))
                               for u in users])
        results, headers = await send(with_personalize, connect, event)
        assert "X-Degraded" not in headers
        assert len(fake.requests) == 10  # each user once: concurrent profiles share the call
        for user, data in zip(users, results, strict=True):
            status, expected, _ = await with_personalize.get(
                f"/v1/recommenders/movies/users/{user}/content?locale=de")
            assert status == 200 and data == expected
            assert data["items"][0]["score"] == 0.9
        assert len(fake.requests) == 10

    async def test_the_profile_id_is_the_default_user(self, with_personalize: Api,
                                                      fake: FakePersonalize,
                                                      connect: FakeConnect):
        await put_movies(with_personalize, personalize={"campaign_arn": CAMPAIGN},
                         connect={"user_id_from": "ProfileId"})
        event = connect.event([connect.profile({"Attributes": {}}, profile_id="user-3")])
        [data], _ = await send(with_personalize, connect, event)
        assert [i["id"] for i in data["items"]][:3] == ["3", "4", "5"]
        assert fake.requests[-1].body["userId"] == "user-3"

    async def test_personalize_failing_serves_the_fallback(self, with_personalize: Api,
                                                           fake: FakePersonalize,
                                                           connect: FakeConnect):
        fake.mode = "fail"
        event = connect.event([connect.profile(connect.customer_data(user="user-1")),
                               connect.profile(connect.customer_data())])
        results, headers = await send(with_personalize, connect, event)
        assert headers["X-Degraded"] == "personalize-unavailable"
        assert [i["id"] for i in results[0]["items"]] == ["39", "40"]
        assert results[0]["recommendation_id"] is None
        assert results[1]["send"] is False and "no user ID at Attributes.user" in \
            results[1]["reason"]
        assert sample(with_personalize.client.app, "enricher_degraded_responses_total",
                      route="connect", reason="personalize-unavailable") == 1

    async def test_no_fallback_says_why(self, with_personalize: Api, fake: FakePersonalize,
                                        connect: FakeConnect):
        await put_movies(with_personalize, personalize={"campaign_arn": CAMPAIGN},
                         connect={"user_id_from": "Attributes.user"})
        fake.mode = "throttle"
        event = connect.event([connect.profile(connect.customer_data(user="user-1"))])
        [data], _ = await send(with_personalize, connect, event)
        assert data == {"send": False, "reason": "Amazon Personalize could not answer in time "
                        "(throttled) and the recommender has no personalize.fallback_ids"}


# JSON pieces for the values a profile's paths lead to, and for what lies around them.
PIECES = st.sampled_from([
    '"1,2"', '["1", "2"]', '[]', '""', "null", "7", "1e400", "123456789012345678901234567890",
    '{"x": 1}', '"de_DE"', '"not a tag"', '"\\ud800"', '"\\u0000"', "[" * 300 + "]" * 300,
    "NaN", '"a', '"user-1"', "true", '"Zoë 渡辺 😀"',
])


@st.composite
def profile_texts(draw) -> str:
    """A CustomerData text: the block's paths through objects (or not), hostile pieces at the
    ends and beside them, sometimes not JSON or not an object at all."""
    def value() -> str:
        return draw(PIECES)

    attributes = {"recommended_items": value(), "locale": value(), "user": value(),
                  "other": value()}
    shown = {k: v for k, v in attributes.items() if draw(st.booleans())}
    inner = "{" + ", ".join(f'"{k}": {v}' for k, v in shown.items()) + "}"
    around = draw(st.sampled_from(["", '"Attributes": "flat", ', '"Extra": ' + value() + ", "]))
    text = "{" + around + '"FirstName": "Łukasz", "Attributes": ' + (
        inner if draw(st.booleans()) else value()) + "}"
    return draw(st.sampled_from([text, text, text, value(), text[:-1], " " + text + " "]))


class TestProfileReading:
    """The reading made for a block's paths and the whole parse say the same of every profile."""

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(text=profile_texts(), personalize=st.booleans(),
           block=st.sampled_from([
               ConnectSpec(ids_from="Attributes.recommended_items"),
               ConnectSpec(ids_from="Attributes.recommended_items",
                           locale_from="Attributes.locale"),
               ConnectSpec(user_id_from="Attributes.user", locale_from="Attributes.locale"),
               ConnectSpec(),
               ConnectSpec(ids_from="Attributes", locale_from="Attributes.locale"),
           ]))
    def test_both_readings_agree(self, text: str, personalize: bool, block: ConnectSpec):
        partial = ProfileReader(block, personalize, 50)
        whole = ProfileReader(block, personalize, 50)
        whole._decoder = None  # the whole parse only
        profile = Profile("user-9", text, None)
        assert partial.wanted(profile) == whole.wanted(profile)


class TestConnectBlock:
    """The recommender's connect block: validated field by field, kept as written."""

    @pytest.mark.parametrize(("block", "field"), [
        ("Attributes.ids", "connect"),
        ({"ids_from": ""}, "connect.ids_from"),
        ({"ids_from": "Attributes..ids"}, "connect.ids_from"),
        ({"ids_from": ".ids"}, "connect.ids_from"),
        ({"ids_from": "a\nb"}, "connect.ids_from"),
        ({"ids_from": ".".join("k" * 11)}, "connect.ids_from"),
        ({"ids_from": "k" * 256}, "connect.ids_from"),
        ({"ids_from": 5}, "connect.ids_from"),
        ({"ids_from": "Attributes.ids", "locale_from": ["x"]}, "connect.locale_from"),
        ({"ids_from": "Attributes.ids", "user_id_from": ""}, "connect.user_id_from"),
        ({"ids_from": "Attributes.ids", "idsFrom": "x"}, "connect.idsFrom"),
        ({"locale_from": "Attributes.locale"}, "connect.ids_from"),  # nor personalize
    ])
    async def test_refused_naming_the_field(self, api: Api, block: object, field: str):
        before = (await api.get("/v1/recommenders/movies"))[1]
        status, problem, _ = await api.put("/v1/recommenders/movies", {
            "catalog": "movies", "attributes": ATTRIBUTES, "connect": block})
        assert status == 422, problem
        assert field in [e["field"] for e in problem["errors"]], problem
        assert (await api.get("/v1/recommenders/movies"))[1] == before

    async def test_round_trip(self, api: Api):
        status, stored, _ = await api.get("/v1/recommenders/movies")
        assert status == 200
        assert stored["connect"] == {**CONNECT, "user_id_from": "ProfileId"}
        assert (await api.put("/v1/recommenders/movies", stored))[0] == 200
        without = {k: v for k, v in stored.items() if k != "connect"}
        status, answer, _ = await api.put("/v1/recommenders/movies", without)
        assert status == 200 and "connect" not in answer


async def test_many_batches_at_once(api: Api, connect: FakeConnect):
    """Concurrent batches (Connect invokes many at a time) each get their own answers."""
    events = [connect.event([connect.profile(connect.customer_data(ids=[str(n), str(n + 1)]))
                             for _ in range(20)]) for n in range(1, 11)]
    answers = await asyncio.gather(*(send(api, connect, e) for e in events))
    for n, (results, _) in enumerate(answers, start=1):
        assert {r["items"][0]["id"] for r in results} == {str(n)}
