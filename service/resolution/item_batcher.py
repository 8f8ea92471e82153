"""Coalescing of cache misses into shared `= ANY` queries: the only road from the resolver to SQL.

Two rules keep database work proportional to distinct IDs rather than to requests:

- at most one query in flight per (catalog, item ID): a request missing an ID that another request
  already asked for waits for that query's answer instead of sending its own;
- the misses of requests arriving together join one pending batch per catalog, sent as a single
  `= ANY($2::text[])` query when the batching window closes. With a window of 0 (the default) the
  batch leaves on the event loop's next turn, so it gathers what arrived in the same turn and adds
  no wait; a positive window (`ENRICHER_BATCH_WINDOW_MS`) trades that much latency for bigger
  batches. bench/cache_bench.py measures both; the README has the numbers.

One request's misses therefore go out in at most one new statement of its own. A query's answer is
shared by everyone who waited for it; a query that fails fails every waiter (who then degrades to
stale entries), and the next request asks again.
"""

from __future__ import annotations

import asyncio
import operator
import time
from collections import deque
from collections.abc import Callable
from itertools import repeat
from typing import Any

import asyncpg

from service.resolution.local_cache import ABSENT
from service.resolution.shared_cache import Epoch
from service.runtime.metrics import Metrics
from service.storage import items as item_store
from service.storage.db_faults import read_retrying


class Flight:
    """One batch of IDs of one catalog: pending until sent, then in flight until answered."""

    __slots__ = ("catalog_id", "epoch", "future", "generation", "ids", "tainted")

    def __init__(self, catalog_id: int, future: asyncio.Future[dict[str, Any]]) -> None:
        self.catalog_id = catalog_id
        self.ids: dict[str, None] = {}
        self.future = future
        # The L2 epoch the joining requests saw (the newest one), and the L1 generation at send.
        self.epoch: Epoch | None = None
        self.generation = 0
        # IDs changed by a write while the query ran: answered to the waiters, never cached.
        self.tainted: set[str] = set()


_item_id = operator.itemgetter("id")

# Called once per answered flight, to keep its values in the cache tiers.
Remember = Callable[[Flight, dict[str, Any]], None]


def _consume(future: asyncio.Future) -> None:
    """Mark a failure as seen: waiters may all have given up on their deadlines."""
    if not future.cancelled():
        future.exception()


class ItemBatcher:
    def __init__(
        self, pool: asyncpg.Pool, *, query_timeout: float, window_ms: float, metrics: Metrics,
        remember: Remember, generation: Callable[[], int], acquire_timeout: float = 5.0,
    ) -> None:
        self.pool = pool
        self.query_timeout = query_timeout
        self.acquire_timeout = acquire_timeout
        self.window = window_ms / 1000
        self.metrics = metrics
        self.remember = remember
        self.generation = generation
        self._pending: dict[int, Flight] = {}
        self._in_flight: dict[tuple[int, str], Flight] = {}
        self._tasks: set[asyncio.Task] = set()

    def fetch(
        self, catalog_id: int, ids: list[str], epoch: Epoch | None
    ) -> dict[asyncio.Future[dict[str, Any]], list[str]]:
        """Ask for `ids`; returns each future answer (id → row or ABSENT) with the IDs it holds."""
        waits: dict[asyncio.Future[dict[str, Any]], list[str]] = {}
        pending = self._pending.get(catalog_id)
        in_flight = self._in_flight
        keys = list(zip(repeat(catalog_id), ids))
        if in_flight.keys().isdisjoint(keys):
            # The usual case, none of the IDs asked for already: all join the pending batch, in
            # a few C-speed steps instead of a Python loop over the IDs.
            if pending is None:
                pending = self._open(catalog_id)
            pending.ids.update(dict.fromkeys(ids))
            in_flight.update(zip(keys, repeat(pending)))
            if epoch is not None:
                pending.epoch = epoch if pending.epoch is None else max(pending.epoch, epoch)
            return {pending.future: list(ids)}
        joined = 0
        for item_id in ids:
            flight = self._in_flight.get((catalog_id, item_id))
            if flight is None:
                if pending is None:
                    pending = self._open(catalog_id)
                flight = pending
                flight.ids[item_id] = None
                self._in_flight[(catalog_id, item_id)] = flight
            else:
                joined += 1
            waits.setdefault(flight.future, []).append(item_id)
        if pending is not None and epoch is not None:
            pending.epoch = epoch if pending.epoch is None else max(pending.epoch, epoch)
        if joined:
            self.metrics.coalesced.inc(joined)
        return waits

    def taint(self, catalog_id: int, ids: list[str]) -> None:
        """A write changed `ids`: answers of queries already sent must not be cached."""
        for item_id in ids:
            flight = self._in_flight.get((catalog_id, item_id))
            if flight is not None and flight is not self._pending.get(catalog_id):
                flight.tainted.add(item_id)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _open(self, catalog_id: int) -> Flight:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        future.add_done_callback(_consume)
        flight = Flight(catalog_id, future)
        self._pending[catalog_id] = flight
        if self.window > 0:
            loop.call_later(self.window, self._send, flight)
        else:
            loop.call_soon(self._send, flight)
        return flight

    def _send(self, flight: Flight) -> None:
        del self._pending[flight.catalog_id]
        flight.generation = self.generation()
        task = asyncio.ensure_future(self._query(flight))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(self, catalog_id: int, ids: list[str]) -> list[asyncpg.Record]:
        # Both waits are bounded: for a pooled connection, then for the query itself.
        async with self.pool.acquire(timeout=self.acquire_timeout) as conn:
            return await item_store.fetch_items(conn, catalog_id, ids, timeout=self.query_timeout)

    async def _query(self, flight: Flight) -> None:
        ids = list(flight.ids)
        started = time.perf_counter()
        try:
            rows = await read_retrying(
                lambda: self._fetch(flight.catalog_id, ids), on_retry=self.metrics.db_retries.inc
            )
        except BaseException as exc:
            self._land(flight, ids)
            self.metrics.db_queries.labels("error").inc()
            if isinstance(exc, asyncio.CancelledError):
                flight.future.cancel()
                raise
            flight.future.set_exception(exc)
            return
        self.metrics.db_query_seconds.observe(time.perf_counter() - started)
        self.metrics.db_queries.labels("ok").inc()
        self.metrics.db_query_ids.observe(len(ids))
        values: dict[str, Any] = dict.fromkeys(ids, ABSENT)
        values.update(zip(map(_item_id, rows), rows, strict=True))
        self._land(flight, ids)
        flight.future.set_result(values)
        self.remember(flight, values)

    def _land(self, flight: Flight, ids: list[str]) -> None:
        # Every ID of a flight maps to it until it lands: `fetch` claims only unclaimed IDs, and
        # only here are claims released. So its keys can go without checking each one.
        deque(map(self._in_flight.pop, zip(repeat(flight.catalog_id), ids), repeat(None)),
              maxlen=0)
