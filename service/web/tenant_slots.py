"""Fairness between tenants: a cap on each tenant's requests in flight in this process.

One process has one event loop and one pool. Without a cap, a tenant that floods (within its rate
limit or without one) has as many handlers running as it has connections open, and every other
tenant's request waits behind all of them for the loop and for pooled connections. With a cap of
N, at most N of a tenant's requests run at once; its others wait in a queue of their own (FIFO,
up to `max_queued`, each at most until its deadline), costing nothing but a parked coroutine, so
another tenant's request competes with at most N of the flood's, not hundreds.

The fast path (a free slot) is a dict lookup and an increment. A finished request hands its slot
straight to the first of its tenant's waiters, so a queue never starves and the cap is never
exceeded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class NoSlot(Exception):
    """The tenant's queue is full, or its slot did not come within the request's time."""


class TenantSlots:
    def __init__(self, cap: int, max_queued: int) -> None:
        self.cap = cap  # 0: no cap
        self.max_queued = max_queued
        self._running: dict[int, int] = {}
        self._waiting: dict[int, deque[asyncio.Future[None]]] = {}

    def running(self, tenant_id: int) -> int:
        return self._running.get(tenant_id, 0)

    def waiting(self, tenant_id: int) -> int:
        return len(self._waiting.get(tenant_id, ()))

    async def take(self, tenant_id: int, within: float | None) -> None:
        """A slot for one of the tenant's requests; NoSlot if none comes within `within` s."""
        if self.cap <= 0:
            return
        running = self._running.get(tenant_id, 0)
        if running < self.cap and tenant_id not in self._waiting:
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
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not queue:
                    del self._waiting[tenant_id]
                return
        if queue is not None:
            del self._waiting[tenant_id]
        running = self._running[tenant_id] - 1
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
