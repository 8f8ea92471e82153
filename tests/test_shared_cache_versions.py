"""L2 writes are compare-and-set on the real Redis: no older row over a newer one, tombstones for
notified changes; and the REDIS_URL forms that name sentinels."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from service.errors import SettingsError
from service.resolution.local_cache import ABSENT
from service.resolution.shared_cache import SharedCache
from service.runtime.metrics import Metrics
from service.runtime.settings import Settings, mask_url
from service.storage.redis_urls import is_sentinel_url, sentinel_options
from tests.support.redis_keys import delete_prefix

EPOCH = (0, 0)


def row(version: int, title: str = "t") -> dict:
    return {"id": "a", "title": title, "version": version,
            "updated_at": datetime(2026, 11, 22, tzinfo=UTC)}


@pytest.fixture
async def cache(redis_server_url: str):
    prefix = f"ce-test-{uuid.uuid4().hex[:10]}"
    shared = SharedCache(redis_server_url, ttl=60, negative_ttl=60, timeout=1.0,
                         metrics=Metrics(), prefix=prefix, tombstone_ttl=60)
    yield shared
    await shared.close()
    await delete_prefix(redis_server_url, prefix)


async def held(cache: SharedCache, item_id: str = "a"):
    _, found = await cache.lookup(1, [item_id], 1.0)
    value = found.get(item_id)
    return value if value is None or value is ABSENT else value["version"]


class TestOnlyIfNewer:
    """Whatever order writes reach Redis in, the newest row stays."""

    async def test_an_older_row_never_replaces_a_newer_one(self, cache):
        await cache.store(1, EPOCH, {"a": row(5)})
        await cache.store(1, EPOCH, {"a": row(4)})
        assert await held(cache) == 5
        await cache.store(1, EPOCH, {"a": row(6)})
        assert await held(cache) == 6

    async def test_a_negative_entry_never_replaces_a_row(self, cache):
        await cache.store(1, EPOCH, {"a": row(5), "b": ABSENT})
        await cache.store(1, EPOCH, {"a": ABSENT})
        assert await held(cache) == 5
        assert await held(cache, "b") is ABSENT

    async def test_a_new_epoch_rewrites_the_same_version(self, cache):
        await cache.store(1, EPOCH, {"a": row(5)})
        await cache.flush_catalog(1)
        epoch, found = await cache.lookup(1, ["a"], 1.0)
        assert found == {}
        await cache.store(1, epoch, {"a": row(5)})
        assert await held(cache) == 5


class TestTombstones:
    """A notified change leaves its version behind: rows from before it are refused."""

    async def test_an_update_refuses_the_row_it_replaced(self, cache):
        await cache.store(1, EPOCH, {"a": row(5)})
        await cache.forget(1, ["a"], {"a": 7})
        assert await held(cache) is None
        await cache.store(1, EPOCH, {"a": row(5)})  # a slow write of the old row
        assert await held(cache) is None
        await cache.store(1, EPOCH, {"a": row(7)})
        assert await held(cache) == 7

    async def test_a_late_tombstone_keeps_the_row_of_its_own_version(self, cache):
        await cache.store(1, EPOCH, {"a": row(7)})  # another process read the change first
        await cache.forget(1, ["a"], {"a": 7})
        assert await held(cache) == 7
        await cache.forget(1, ["a"], {"a": 8})
        assert await held(cache) is None

    async def test_a_deletion_refuses_the_deleted_row_and_stale_negatives(self, cache):
        await cache.store(1, EPOCH, {"a": row(5)})
        await cache.forget(1, ["a"], {"a": -5})
        await cache.store(1, EPOCH, {"a": row(5)})
        await cache.store(1, EPOCH, {"a": ABSENT})
        assert await held(cache) is None
        await cache.store(1, EPOCH, {"a": row(6)})  # created again
        assert await held(cache) == 6

    async def test_forgetting_without_a_version_unlinks(self, cache):
        await cache.store(1, EPOCH, {"a": row(5)})
        await cache.forget(1, ["a"])
        assert await held(cache) is None
        await cache.store(1, EPOCH, {"a": row(3)})
        assert await held(cache) == 3


class TestUrls:
    """`REDIS_URL` may name sentinels and their service, the database URLs several hosts; a
    malformed one stops the start, and none is ever shown with its password."""

    def test_addresses_service_db_and_password(self):
        url = "redis+sentinel://:s3cret@h1:26380,h2,[::1]:26381/mymaster/2"
        assert is_sentinel_url(url)
        addresses, service, options = sentinel_options(url)
        assert addresses == [("h1", 26380), ("h2", 26379), ("::1", 26381)]
        assert service == "mymaster"
        assert options["db"] == 2
        assert options["password"] == "s3cret"
        assert options["connection_pool_kwargs"]["ssl"] is False
        assert sentinel_options("rediss+sentinel://h1/svc")[2]["connection_pool_kwargs"]["ssl"]
        assert not is_sentinel_url("redis://h1:6379/0")

    def test_settings_accept_sentinel_urls_and_mask_them(self):
        url = "redis+sentinel://:s3cret@h1:26379,h2:26379/mymaster/0"
        settings = Settings.from_env({"REDIS_URL": url})
        assert settings.redis_url == url
        assert "s3cret" not in repr(settings)
        assert mask_url(url) == "redis+sentinel://:***@h1:26379,h2:26379/mymaster/0"

    @pytest.mark.parametrize("url", ["redis+sentinel://h1:26379", "redis+sentinel:///mymaster"])
    def test_settings_refuse_a_sentinel_url_without_its_parts(self, url):
        with pytest.raises(SettingsError, match="REDIS_URL"):
            Settings.from_env({"REDIS_URL": url})

    def test_a_bad_read_url_is_refused_by_name(self):
        with pytest.raises(SettingsError, match="DATABASE_READ_URL"):
            Settings.from_env({"DATABASE_READ_URL": "mysql://replica/db"})
        with pytest.raises(SettingsError, match="ENRICHER_REPLICA_MAX_LAG_SECONDS"):
            Settings.from_env({"ENRICHER_REPLICA_MAX_LAG_SECONDS": "0"})

    def test_multi_host_database_urls_are_masked(self):
        url = "postgresql://app:pw@db1:5432,db2:5432/catalog?target_session_attrs=read-write"
        settings = Settings.from_env({"DATABASE_URL": url, "DATABASE_READ_URL": url})
        assert ":pw@" not in repr(settings)
        assert mask_url(url) == ("postgresql://app:***@db1:5432,db2:5432/catalog"
                                 "?target_session_attrs=read-write")
