"""Fairness between tenants: a cap on each tenant's requests in flight in this process, while
another tenant is using it.

One process has one event loop and one pool. Without a cap, a tenant that floods (within its rate
limit or without one) has as many handlers running as it has connections open, and every other
tenant's request waits behind all of them for the loop and for pooled connections. With a cap of
N, at most N of a tenant's requests run at once; its others wait in a queue of their own (FIFO,
up to `max_queued`, each at most until its deadline), costing nothing but a parked coroutine, so
another tenant's request competes with at most N of the flood's, not hundreds.

The cap is work-conserving: it holds only while some other tenant has sent a request to this
process within `contention_seconds`. A tenant alone (one Pinpoint project's 256 concurrent
batches, the usual case) runs uncapped, so its concurrent cold requests still share their
queries (the batcher merges the misses of requests in flight together; capped to N, they would
meet Postgres in many small waves instead). Once the others have been quiet that long, its
waiters are let in at the next request it finishes.

The fast path (a free slot) is a clock read, a dict lookup and an increment. A finished request
hands its slot straight to the first of its tenant's waiters, so a queue never starves, and while
tenants contend the cap is never exceeded by new admissions.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

CONTENTION_SECONDS = 1.0


class NoSlot(Exception):
    """The tenant's queue is full, or its slot did not come within the request's time."""


class TenantSlots:
    def __init__(self, cap: int, max_queued: int, *,
                 contention_seconds: float = CONTENTION_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cap = cap  # 0: no cap
        self.max_queued = max_queued
        self.contention_seconds = contention_seconds
        self.clock = clock
        self._running: dict[int, int] = {}
        self._waiting: dict[int, deque[asyncio.Future[None]]] = {}
        # The tenant seen last, and the last other tenant seen before it: enough to tell in O(1)
        # whether a tenant has company, whatever the number of tenants.
        self._last: tuple[int | None, float] = (None, float("-inf"))
        self._other: tuple[int | None, float] = (None, float("-inf"))

    def _see(self, tenant_id: int, now: float) -> None:
        if self._last[0] != tenant_id:
            self._other = self._last
        self._last = (tenant_id, now)

    def contended(self, tenant_id: int, now: float | None = None) -> bool:
        """Has another tenant sent a request here within `contention_seconds`?"""
        now = self.clock() if now is None else now
        other, seen = self._other if self._last[0] == tenant_id else self._last
        return other is not None and now - seen < self.contention_seconds

    def running(self, tenant_id: int) -> int:
        return self._running.get(tenant_id, 0)

    def waiting(self, tenant_id: int) -> int:
        return len(self._waiting.get(tenant_id, ()))

    async def take(self, tenant_id: int, within: float | None) -> None:
        """A slot for one of the tenant's requests; NoSlot if none comes within `within` s."""
        now = self.clock()
        self._see(tenant_id, now)  # also without a cap: the loop's turns ask `contended`
        if self.cap <= 0:
            return
        running = self._running.get(tenant_id, 0)
        if tenant_id not in self._waiting and (running < self.cap
                                               or not self.contended(tenant_id, now)):
            self._running[tenant_id] = running + 1
            return
        queue = self._waiting.setdefault(tenant_id, deque())
        if len(queue) >= self.max_queued:
            raise NoSlot(f"{len(queue)} requests already wait")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            async with asyncio.timeout(within):
                await waiter
        except BaseException as exc:  # timed out or cancelled while waiting
            if waiter.done() and not waiter.cancelled():
                self.give_back(tenant_id)  # handed over just as the wait ended: pass it on
            else:
                self._forget(tenant_id, waiter)
            if isinstance(exc, TimeoutError):
                raise NoSlot(f"no slot within {within:.3f} s") from None
            raise

    def give_back(self, tenant_id: int) -> None:
        """The request finished: its slot goes to the tenant's first waiter, or is freed."""
        if self.cap <= 0:
            return
        queue = self._waiting.get(tenant_id)
        if queue and not self.contended(tenant_id):
            self._admit_all(tenant_id, queue)
            return
        # Admitted uncapped before company came, a tenant may run more than the cap: its
        # waiters wait until it is back under it.
        while queue and self._running[tenant_id] <= self.cap:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not queue:
                    del self._waiting[tenant_id]
                return
        if queue is not None and not queue:
            del self._waiting[tenant_id]
        running = self._running[tenant_id] - 1
        if running:
            self._running[tenant_id] = running
        else:
            del self._running[tenant_id]

    def _admit_all(self, tenant_id: int, queue: deque[asyncio.Future[None]]) -> None:
        """Nobody else is here any more: every waiter runs (the finishing request's slot goes to
        the first of them)."""
        del self._waiting[tenant_id]
        admitted = 0
        for waiter in queue:
            if not waiter.done():
                waiter.set_result(None)
                admitted += 1
        running = self._running[tenant_id] - 1 + admitted
        if running:
            self._running[tenant_id] = running
        else:
            del self._running[tenant_id]

    def _forget(self, tenant_id: int, waiter: asyncio.Future[None]) -> None:
        queue = self._waiting.get(tenant_id)
        if queue is None:
            return
        with contextlib.suppress(ValueError):
            queue.remove(waiter)
        if not queue:
            del self._waiting[tenant_id]
