"""Fairness between tenants: each tenant's requests in flight in a process are capped, the rest
wait in a queue of their own (FIFO, bounded, up to their deadline); another tenant never waits
for them. Also the in-process GCRA the rate limits fall back on."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import asyncpg
import pytest

from service.runtime.settings import Settings
from service.storage.rate_counter import LocalRates
from service.web.app import create_app
from service.web.app_keys import TENANT_GATE
from service.web.tenant_slots import NoSlot, TenantSlots
from tests.support.api import Api

pytestmark = pytest.mark.timing


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def contended_slots(cap: int, max_queued: int) -> TenantSlots:
    """Slots whose tenant 1 has company: tenant 99 sent a request just now (and the clock stands
    still, so it stays so)."""
    slots = TenantSlots(cap=cap, max_queued=max_queued, clock=Clock())
    slots._see(99, slots.clock())
    return slots


class TestSlots:
    """While tenants contend, the cap is never exceeded, waiters are served in order, a timed-out
    waiter leaves."""

    async def test_cap_and_order(self):
        slots = contended_slots(cap=2, max_queued=10)
        running, most, order = 0, 0, []
        release, two_in = asyncio.Event(), asyncio.Event()

        async def request(n: int) -> None:
            nonlocal running, most
            await slots.take(1, within=5)
            running += 1
            most = max(most, running)
            order.append(n)
            if len(order) == 2:
                two_in.set()
            await release.wait()
            running -= 1
            slots.give_back(1)

        tasks = [asyncio.ensure_future(request(n)) for n in range(6)]
        await two_in.wait()
        # An absence, so a look of bounded length: a third request wrongly let in would be in.
        await asyncio.sleep(0.01)
        assert order == [0, 1] and slots.waiting(1) == 4
        await slots.take(2, within=0)  # another tenant: no wait at all
        slots.give_back(2)
        release.set()
        await asyncio.gather(*tasks)
        assert most == 2 and order == [0, 1, 2, 3, 4, 5]
        assert slots.running(1) == 0 and slots.waiting(1) == 0

    async def test_full_queue_and_deadline(self):
        slots = contended_slots(cap=1, max_queued=1)
        await slots.take(1, within=1)
        waiter = asyncio.ensure_future(slots.take(1, within=5))
        await asyncio.sleep(0)  # one turn: the new task runs up to its wait (no timing)
        with pytest.raises(NoSlot, match="already wait"):
            await slots.take(1, within=5)  # the queue (1) is full
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert slots.waiting(1) == 0
        with pytest.raises(NoSlot, match="no slot within"):
            await slots.take(1, within=0.01)
        assert slots.waiting(1) == 0
        slots.give_back(1)
        assert slots.running(1) == 0

    async def test_a_tenant_alone_is_not_capped_until_another_comes(self):
        clock = Clock()
        slots = TenantSlots(cap=2, max_queued=10, contention_seconds=1.0, clock=clock)
        for _ in range(5):  # alone: its concurrent requests all run (and share their queries)
            await slots.take(1, within=0)
        assert slots.running(1) == 5
        await slots.take(2, within=0)  # company: tenant 1 is held to its cap from now on
        waiter = asyncio.ensure_future(slots.take(1, within=5))
        await asyncio.sleep(0)  # one turn: the new task runs up to its wait (no timing)
        assert slots.waiting(1) == 1 and not waiter.done()
        slots.give_back(1)  # 4 still run, above the cap: the waiter waits on
        await asyncio.sleep(0)  # one turn: the new task runs up to its wait (no timing)
        assert not waiter.done() and slots.running(1) == 4
        clock.now += 1.5  # tenant 2 has been quiet for longer than the window
        slots.give_back(1)  # nobody else here any more: every waiter runs
        await waiter
        assert slots.running(1) == 4 and slots.waiting(1) == 0
        for _ in range(4):
            slots.give_back(1)
        slots.give_back(2)
        assert slots.running(1) == slots.running(2) == 0

    async def test_cap_zero_is_no_cap(self):
        slots = TenantSlots(cap=0, max_queued=0)
        for _ in range(100):
            await slots.take(1, within=0)
        assert slots.running(1) == 0


class TestOverHttp:
    """A tenant at its cap waits or is refused (429 "in-flight"); another tenant goes through."""

    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return dataclasses.replace(settings, tenant_max_in_flight=1, tenant_max_queued=1)

    # Both tenants send a request first, so each has company for the test's whole second.

    async def test_one_tenant_held_another_served(self, settings, aiohttp_client, make_key,
                                                  database_url):
        client = await aiohttp_client(create_app(settings))
        flood = Api(client, await make_key("acme", "catalog:write", "catalog:read"))
        other = Api(client, await make_key("globex", "catalog:read"))
        assert (await flood.get("/v1/catalogs"))[0] == 200  # both keys cached, slots free
        assert (await other.get("/v1/catalogs"))[0] == 200
        acme = await tenant_id(database_url, "acme")
        slots = client.app[TENANT_GATE].slots
        body_may_end = asyncio.Event()

        async def slow_body():  # holds acme's one slot while its body is read
            yield b'{"description": '
            await body_may_end.wait()
            yield b'"slow"}'

        holder = asyncio.ensure_future(client.put(
            "/v1/catalogs/held", data=slow_body(),
            headers={"Authorization": f"Bearer {flood.key}", "Content-Type": "application/json"}))
        await until(lambda: slots.running(acme) == 1)
        queued = asyncio.ensure_future(flood.get("/v1/catalogs"))  # waits in acme's queue
        await until(lambda: slots.waiting(acme) == 1)
        status, problem, headers = await flood.get("/v1/catalogs")  # the queue (1) is full
        assert status == 429 and problem["violated-policies"] == ["in-flight"]
        assert headers["Retry-After"] == "1"
        assert headers["RateLimit-Policy"] == '"in-flight";q=1;qu="concurrent-requests"'
        assert (await other.get("/v1/catalogs"))[0] == 200  # globex does not wait for acme
        assert not queued.done()
        body_may_end.set()
        assert (await holder).status == 201
        assert (await queued)[0] == 200
        assert slots.running(acme) == 0 and slots.waiting(acme) == 0


async def tenant_id(database_url: str, name: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT id FROM tenants WHERE name = $1", name)
    finally:
        await conn.close()


async def until(check, within: float = 5.0) -> None:
    """Until `check()` holds: the state of the slots, which the requests change as they run."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, "not reached"
        await asyncio.sleep(0.005)  # paces the poll


class TestLocalRates:
    """GCRA: rps + burst at once, then one every 1/rps seconds, with exact retry times."""

    def test_bucket(self):
        rates = LocalRates()
        first = [rates.hit(7, 10, 5) for _ in range(15)]
        assert all(d.admitted for d in first)
        assert [d.remaining for d in first] == list(range(14, -1, -1))
        refused = rates.hit(7, 10, 5)
        assert not refused.admitted and 0 < refused.retry_after <= 0.1
        assert rates.hit(8, 10, 5).admitted  # another tenant has its own bucket

    def test_spent_buckets_admit_one(self):
        rates = LocalRates()
        rates.spend_all()
        assert rates.hit(7, 10, 5).admitted
        assert not rates.hit(7, 10, 5).admitted
