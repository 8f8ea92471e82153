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

With a read replica (DATABASE_READ_URL) a batch is read there (service/storage/read_routing.py)
unless its catalog is gated. Rows the replica answers older than a change this process was notified
of (service/resolution/notified_versions.py) are read again from the primary before the batch is
answered, and never cached; they are kept on the flight as `provisional`, for waiters whose deadline
comes before the primary's answer, who serve them as degraded.
"""

from __future__ import annotations

import asyncio
import operator
import time
from collections import deque
from collections.abc import Awaitable, Callable
from itertools import repeat
from typing import Any

import asyncpg

from service.resolution.local_cache import ABSENT
from service.resolution.notified_versions import NotifiedVersions
from service.resolution.shared_cache import Epoch
from service.runtime.loop_slices import LoopSlicer
from service.runtime.metrics import Metrics
from service.storage import items as item_store
from service.storage.read_routing import ReadRouting


class Flight:
    """One batch of IDs of one catalog: pending until sent, then in flight until answered."""

    __slots__ = ("catalog_id", "epoch", "future", "generation", "ids", "provisional", "tainted")

    def __init__(self, catalog_id: int, future: FlightAnswer) -> None:
        self.catalog_id = catalog_id
        self.ids: dict[str, None] = {}
        self.future = future
        future.flight = self
        # The L2 epoch the joining requests saw (the newest one), and the L1 generation at send.
        self.epoch: Epoch | None = None
        self.generation = 0
        # IDs changed by a write while the query ran: answered to the waiters, never cached.
        self.tainted: set[str] = set()
        # What a replica answered while rows it had behind a notified change are read again from
        # the primary (id → row or ABSENT; ABSENT left out where it is behind): fallbacks only.
        self.provisional: dict[str, Any] | None = None


class FlightAnswer(asyncio.Future):
    """A flight's answer (id → row or ABSENT), which knows its flight (for `provisional`)."""

    flight: Flight


_item_id = operator.itemgetter("id")

# Called for an answered flight's values (in parts, for a big one), to keep them in the caches.
Remember = Callable[[Flight, dict[str, Any]], None]
# The most values kept in one go: what a cold batch answers (thousands of rows when 64 events
# miss together) would hold the event loop 20-40 ms in one step to store them in L1; in parts of
# this size each takes 2-3 ms, and the loop's turns come between them.
KEEP_AT_ONCE = 1_000


def _consume(future: asyncio.Future) -> None:
    """Mark a failure as seen: waiters may all have given up on their deadlines."""
    if not future.cancelled():
        future.exception()


class ItemBatcher:
    def __init__(
        self, reads: ReadRouting, *, query_timeout: float, window_ms: float, metrics: Metrics,
        remember: Remember, generation: Callable[[], int],
        notified: NotifiedVersions | None = None, slicer: LoopSlicer | None = None,
    ) -> None:
        self.reads = reads
        self.slicer = slicer
        self.notified = notified
        self.query_timeout = query_timeout
        self.window = window_ms / 1000
        self.metrics = metrics
        self.remember = remember
        self.generation = generation
        self._pending: dict[int, Flight] = {}
        self._in_flight: dict[tuple[int, str], Flight] = {}
        self._tasks: set[asyncio.Task] = set()

    @property
    def pool(self) -> asyncpg.Pool:
        """The primary's pool."""
        return self.reads.primary

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
        future = FlightAnswer(loop=loop)
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

    def _fetch(self, catalog_id: int, ids: list[str]) -> Callable[[asyncpg.Connection],
                                                                   Awaitable[list[asyncpg.Record]]]:
        return lambda conn: item_store.fetch_items(conn, catalog_id, ids,
                                                   timeout=self.query_timeout)

    async def _read(self, flight: Flight, ids: list[str]) -> dict[str, Any]:
        """id → row or ABSENT for `ids`: from the replica where it is usable and current enough,
        else (or for the rows it has behind a notified change) from the primary."""
        catalog_id = flight.catalog_id
        notified = self.notified
        on_retry = self.metrics.db_retries.inc
        rows, on_replica = await self.reads.read(
            self._fetch(catalog_id, ids), on_retry=on_retry,
            replica=notified is None or not notified.catalog_gated(catalog_id),
        )
        values: dict[str, Any] = dict.fromkeys(ids, ABSENT)
        values.update(zip(map(_item_id, rows), rows, strict=True))
        if not on_replica or notified is None:
            return values
        behind = notified.behind(catalog_id, values)
        if not behind:
            return values
        self.metrics.replica_rows_behind.inc(len(behind))
        flight.provisional = values.copy()
        for item_id in behind:
            if values[item_id] is ABSENT:
                del flight.provisional[item_id]
        try:
            rows, _ = await self.reads.read(self._fetch(catalog_id, behind), on_retry=on_retry,
                                            replica=False)
        except BaseException:
            # The primary cannot answer: keep what the replica had current, and let the waiters
            # serve the rest from `provisional`, degraded.
            lagging = set(behind)
            self.remember(flight, {k: v for k, v in values.items() if k not in lagging})
            raise
        values.update(dict.fromkeys(behind, ABSENT))
        values.update(zip(map(_item_id, rows), rows, strict=True))
        return values

    async def _query(self, flight: Flight) -> None:
        try:
            await self._answer(flight)
        finally:
            # The flight and its answer point at each other (waiters read the flight's
            # `provisional` through the answer): a cycle, which reference counting cannot free,
            # holding a whole batch of rows until a full collection. Once answered, the flight
            # no longer needs its answer; the answer lives as long as its waiters hold it.
            flight.future = None  # type: ignore[assignment]

    async def _answer(self, flight: Flight) -> None:
        ids = list(flight.ids)
        started = time.perf_counter()
        try:
            values = await self._read(flight, ids)
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
        try:
            # Kept before the answer goes out and the IDs land: a request that asks for them
            # meanwhile joins this flight, instead of missing L1 and asking Postgres again.
            await self._keep(flight, values)
        finally:
            self._land(flight, ids)
            if not flight.future.done():  # the answer is right even if keeping it was cut short
                flight.future.set_result(values)

    async def _keep(self, flight: Flight, values: dict[str, Any]) -> None:
        """Keep a flight's values in the caches, KEEP_AT_ONCE at a time, taking a turn on the
        loop between parts."""
        if len(values) <= KEEP_AT_ONCE or self.slicer is None:
            self.remember(flight, values)
            return
        parts = list(values.items())
        for start in range(0, len(parts), KEEP_AT_ONCE):
            if start:
                waiter = self.slicer.turn()
                if waiter is not None:
                    await waiter
            self.remember(flight, dict(parts[start:start + KEEP_AT_ONCE]))

    def _land(self, flight: Flight, ids: list[str]) -> None:
        # Every ID of a flight maps to it until it lands: `fetch` claims only unclaimed IDs, and
        # only here are claims released. So its keys can go without checking each one.
        deque(map(self._in_flight.pop, zip(repeat(flight.catalog_id), ids), repeat(None)),
              maxlen=0)
