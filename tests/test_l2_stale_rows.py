"""An L2 row older than a change this process was told of is never served as current.

The soak found processes serving an item's price from before a write acknowledged seconds
earlier, for as long as 30 s, while the other processes showed the new one: an L2 entry that
outlived its write (its tombstone lost: the writer's Redis call timed out under load, or a
failover dropped it) was taken as a hit and kept in L1 as fresh. The test loses the tombstone on
purpose (the entry as it was before the write, put back in Redis) and asks again.
"""

from __future__ import annotations

import dataclasses

import pytest
import redis.asyncio as redis_client

from service.web.app import create_app
from service.web.app_keys import RESOLVER
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender

pytestmark = [pytest.mark.slow]

CONTENT = "/v1/recommenders/movies/content?ids=1"


@pytest.mark.parametrize("with_replica", [True, False], ids=["replica", "no-replica"])
async def test_a_stale_l2_row_is_read_again(redis_settings, aiohttp_client, make_key,
                                            with_replica):
    # L1 off: every lookup asks L2. The "replica" is the primary itself (a replica 0 s behind).
    settings = dataclasses.replace(
        redis_settings, cache_max_entries=0, cache_ttl=3600,
        database_read_url=redis_settings.database_url if with_replica else None)
    api = Api(await aiohttp_client(create_app(settings)), await make_key("acme", "admin"))
    await load_catalog(api, "movies", [{"id": "1", "title": "Fleabag",
                                        "price": {"amount": "1.00", "currency": "USD"}}])
    await put_recommender(api, "movies", "movies", ("Price", "price"))
    status, body, _ = await api.get(CONTENT)
    assert status == 200 and body["items"][0]["Price"] == "1.00 USD"
    await api.client.app[RESOLVER].settled()

    redis = redis_client.Redis.from_url(settings.redis_url)
    try:
        keys = [k async for k in redis.scan_iter(f"{settings.redis_prefix}*")]
        held = {k: await redis.get(k) for k in keys}
        item_keys = [k for k, v in held.items() if v and b"Fleabag" in v]
        assert len(item_keys) == 1, held
        before = held[item_keys[0]]

        status, _, _ = await api.patch("/v1/catalogs/movies/items/1",
                                       {"price": {"amount": "2.00", "currency": "USD"}})
        assert status == 200
        await api.client.app[RESOLVER].settled()
        await redis.set(item_keys[0], before)  # the tombstone lost: the old row is back
    finally:
        await redis.aclose()

    status, body, headers = await api.get(CONTENT)
    assert status == 200 and "X-Degraded" not in headers
    assert body["items"][0]["Price"] == "2.00 USD"
