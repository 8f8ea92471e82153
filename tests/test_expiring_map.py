"""ExpiringMap's loads: shared by concurrent callers, waited for (not cancelled) up to a deadline,
and still filling the map when they land after it."""

from __future__ import annotations

import asyncio

import pytest

from service.resolution.expiring_map import ExpiringMap

pytestmark = pytest.mark.timing


async def test_concurrent_callers_share_one_load():
    loads = 0

    async def load() -> str:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)  # a load in progress while the other four callers arrive
        return "value"

    cache: ExpiringMap[str, str] = ExpiringMap(60)
    results = await asyncio.gather(*(cache.get_or_load("k", load, within=1) for _ in range(5)))
    assert results == ["value"] * 5
    assert loads == 1


async def test_a_slow_load_is_left_running_and_fills_the_map():
    release = asyncio.Event()

    async def load() -> str:
        await release.wait()
        return "late"

    cache: ExpiringMap[str, str] = ExpiringMap(60, stale_seconds=60)
    cache.put("k", "old")
    cache.expire_all()
    # Past its deadline the caller gets the stale value; the load goes on.
    assert await cache.get_or_load("k", load, within=0.05) == "old"
    with pytest.raises(TimeoutError):  # nothing stale to fall back on
        await cache.get_or_load("other", load, within=0.05)
    release.set()
    for _ in range(1000):  # the load left running fills the map once released
        if cache.get("k") == "late":
            break
        await asyncio.sleep(0.001)  # paces the poll
    assert cache.get("k") == "late"
