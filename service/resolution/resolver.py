"""Resolution of many (catalog, item ID) pairs into items: the one path every lookup takes.

IDs are deduplicated, then looked up tier by tier: L1 (this process, service/resolution/local_cache.py), L2
(Redis, service/resolution/shared_cache.py, when configured), and Postgres for what is left, through the
batcher (service/resolution/item_batcher.py) that shares queries between concurrent requests. What a slower
tier answers is kept in the faster ones, negative answers included.

The resolver waits for Postgres only until the request's deadline. Past it, or when Postgres
fails, the answer is made of what the caches know, entries past their TTL (stale) included, and
is marked `degraded` with the reason; the caller applies the recommender's missing-item policy to
the rest. A query cut short by a deadline goes on in the background and fills the caches for the
next request.

Invalidation (service/resolution/invalidation.py, and writes made through this process) comes in through
`forget`, `flush_catalog` and `flush_all`. With a read replica, each also notes what changed in
`notified` (service/resolution/notified_versions.py), so that the batcher never caches a replica's
row older than a change this process was told of.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg

from service.items import all_item_ids_valid, item_id_problem
from service.resolution.deadline import Deadline
from service.resolution.item_batcher import Flight, FlightAnswer, ItemBatcher
from service.resolution.local_cache import ABSENT, LocalCache
from service.resolution.notified_versions import NotifiedVersions
from service.resolution.shared_cache import SharedCache
from service.runtime import tracing
from service.runtime.loop_slices import LoopSlicer
from service.runtime.metrics import Metrics
from service.storage.db_faults import DATABASE_UNAVAILABLE
from service.storage.read_routing import ReadRouting

log = logging.getLogger(__name__)

DEGRADED_TIMEOUT = "postgres-timeout"
DEGRADED_UNAVAILABLE = "postgres-unavailable"
TOUCH_EVERY = 16


class Resolved(dict[str, Any]):
    """Item ID → item for the IDs that exist. `degraded` says why some IDs could not be checked
    (Postgres failed or was too slow): those are answered from stale entries or left out.

    Asked with a `derived_key`, IDs whose fresh L1 entry already holds a value derived under that
    key (see `ItemResolver.attach`) are answered in `derived` instead, item or not. `derived` may
    be L1's own table, shared by requests: read it, never change it."""

    degraded: str | None = None
    derived: dict[str, Any] = {}  # noqa: RUF012 - never mutated: replaced per instance
    # The IDs L1 did not hold (read from L2 or Postgres for this request); see `attach`.
    missed: list[str] = []  # noqa: RUF012 - never mutated: replaced per instance


class ItemResolver:
    def __init__(
        self, pool: asyncpg.Pool, *, query_timeout: float, local: LocalCache,
        shared: SharedCache | None, metrics: Metrics, batch_window_ms: float = 0.0,
        default_deadline_ms: int = 10_000, acquire_timeout: float = 5.0,
        reads: ReadRouting | None = None, notified: NotifiedVersions | None = None,
        slicer: LoopSlicer | None = None,
    ) -> None:
        self.local = local
        self.slicer = slicer
        self.shared = shared
        self.metrics = metrics
        self.default_deadline_ms = default_deadline_ms
        # Without a replica every read is the primary's, and nothing needs noting.
        self.reads = reads or ReadRouting(pool, acquire_timeout=acquire_timeout)
        self.notified = notified
        self.batcher = ItemBatcher(
            self.reads, query_timeout=query_timeout, window_ms=batch_window_ms, metrics=metrics,
            remember=self._remember, generation=local.generation, notified=notified,
            slicer=slicer,
        )
        self._background: set[asyncio.Task] = set()
        self._table_hits = 0
        # Bound once: the hot path bumps counters without label lookups.
        lookups = metrics.cache_lookups
        self._count = {
            (tier, result): lookups.labels(tier, result)
            for tier in ("l1", "l2") for result in ("hit", "negative_hit", "miss", "stale_served")
        }
        # Rows a replica had behind a notified change, served past the deadline (degraded).
        self._count["replica", "stale_served"] = lookups.labels("replica", "stale_served")
        metrics.l1_entries.set_function(lambda: len(local))
        metrics.l1_bytes.set_function(lambda: local.accounted_bytes)

    async def resolve(
        self, catalog_id: int, ids: Iterable[str], *, deadline: Deadline | None = None,
        derived_key: Any = None, checked: bool = False,
    ) -> Resolved:
        """Map each ID that exists in the catalog to its item; unknown IDs are absent.

        `checked`: the caller passes distinct, valid IDs (the transform's parser made sure).
        `derived_key`: answer IDs whose L1 entry holds a value derived under it in `derived`."""
        if checked:
            wanted = ids if isinstance(ids, list) else list(ids)
        else:
            # IDs that cannot be stored (too long, NUL) cannot exist; NUL would fail the query.
            wanted = list(dict.fromkeys(ids))
            if wanted and not all_item_ids_valid(wanted):
                wanted = [i for i in wanted if item_id_problem(i) is None]
        resolved = Resolved()
        if not wanted:
            return resolved
        if derived_key is None:
            fresh, stale, missing = self.local.lookup(catalog_id, wanted)
        else:
            table = self.local.derived_table(catalog_id, derived_key)
            if table is None:
                derived, fresh, stale, missing = self.local.lookup_derived(
                    catalog_id, wanted, derived_key
                )
            elif table.keys() >= set(wanted):
                # The warm transform: every row at hand, found without a loop over the IDs. One
                # request in TOUCH_EVERY records its hits in L1's LRU order: an entry used
                # often stays recent, at a fraction of the cost (a touch is ~0.25 µs an ID).
                self._table_hits += 1
                if self._table_hits % TOUCH_EVERY == 0:
                    self.local.touch(catalog_id, wanted)
                self._count["l1", "hit"].inc(len(wanted))
                resolved.derived = table
                return resolved
            else:
                # Some rows at hand: the others alone take the per-ID path. The rows from the
                # table are touched as the whole-table path touches them (the per-ID path
                # touches what it finds).
                self._table_hits += 1
                if self._table_hits % TOUCH_EVERY == 0:
                    self.local.touch(catalog_id, [i for i in wanted if i in table])
                derived, fresh, stale, missing = self.local.lookup_through_table(
                    catalog_id, wanted, table, derived_key
                )
            resolved.derived = derived
            if derived:
                self._count["l1", "hit"].inc(len(derived))
        self._take(resolved, fresh, "l1")
        self._count["l1", "miss"].inc(len(missing))
        if not missing:
            return resolved
        resolved.missed = missing
        deadline = deadline or Deadline.after(self.default_deadline_ms)
        if tracing.tracer is None:
            return await self._resolve_missed(resolved, catalog_id, missing, stale, deadline)
        # Traced: the tiers past L1 as spans (an L1 hit makes none: the warm path stays bare).
        # Counts only, never the IDs.
        with tracing.span("resolve", {"enricher.ids": len(wanted),
                                      "enricher.l1_misses": len(missing)}) as span:
            resolved = await self._resolve_missed(resolved, catalog_id, missing, stale, deadline)
            if resolved.degraded:
                span.set_attribute("enricher.degraded", resolved.degraded)
            return resolved

    async def _resolve_missed(self, resolved: Resolved, catalog_id: int, missing: list[str],
                              stale: Any, deadline: Deadline) -> Resolved:
        """L2, then Postgres, for the IDs L1 did not have fresh."""
        epoch = None
        if self.shared is not None:
            generation = self.local.generation()
            if tracing.tracer is None:
                epoch, found = await self.shared.lookup(catalog_id, missing, deadline.remaining())
            else:
                with tracing.span("l2 lookup", {"enricher.ids": len(missing)}) as span:
                    epoch, found = await self.shared.lookup(catalog_id, missing,
                                                            deadline.remaining())
                    span.set_attribute("enricher.hits", len(found))
            if found and self.notified is not None:
                # A row older than a change this process was told of (its tombstone lost to a
                # Redis timeout or failover) is a miss: read again, as a lagging replica's is.
                for item_id in self.notified.behind(catalog_id, found):
                    del found[item_id]
            if found:
                self.local.store(catalog_id, found, generation)
                self._take(resolved, found, "l2")
                missing = [i for i in missing if i not in found]
            self._count["l2", "miss"].inc(len(missing))
            if not missing:
                return resolved
        if tracing.tracer is None:
            waits = self.batcher.fetch(catalog_id, missing, epoch)
            done, _ = await asyncio.wait(waits, timeout=max(deadline.remaining(), 0))
        else:
            # The batch's query is sent from a callback scheduled in this span's context: when
            # this request opens the batch, the Postgres statement is this span's child.
            with tracing.span("postgres lookup", {"enricher.ids": len(missing)}):
                waits = self.batcher.fetch(catalog_id, missing, epoch)
                done, _ = await asyncio.wait(waits, timeout=max(deadline.remaining(), 0))
        # A batch's rows wake all its waiters at once, and each then renders its items: without
        # a turn they would all run in one loop iteration (runtime/loop_slices.py).
        waiter = self.slicer.turn() if self.slicer is not None else None
        if waiter is not None:
            await waiter
        unanswered: list[str] = []
        provisional: dict[str, Any] = {}
        for future, future_ids in waits.items():
            if future not in done:
                resolved.degraded = resolved.degraded or DEGRADED_TIMEOUT
                unanswered.extend(future_ids)
                self._provisional(future, future_ids, provisional)
                continue
            failure = None if future.cancelled() else future.exception()
            if failure is not None or future.cancelled():
                if failure is not None and not isinstance(failure, DATABASE_UNAVAILABLE):
                    raise failure
                resolved.degraded = DEGRADED_UNAVAILABLE
                unanswered.extend(future_ids)
                self._provisional(future, future_ids, provisional)
                continue
            values = future.result()
            answered = map(values.__getitem__, future_ids)
            self._take(resolved, dict(zip(future_ids, answered, strict=True)), None)
        if unanswered:
            self._fall_back(resolved, stale, unanswered, provisional)
        return resolved

    def table_hits(self, catalog_id: int, ids: list[str] | tuple[str, ...]) -> None:
        """A caller answered `ids` from rows of L1's derived table (a kept content answer
        checked against it): counted and touched as `resolve`'s table path does."""
        self._table_hits += 1
        if self._table_hits % TOUCH_EVERY == 0:
            self.local.touch(catalog_id, ids)
        self._count["l1", "hit"].inc(len(ids))

    @staticmethod
    def _provisional(future: asyncio.Future, ids: list[str], into: dict[str, Any]) -> None:
        """What a replica answered for `ids` of an unanswered flight (see Flight.provisional)."""
        held = future.flight.provisional if isinstance(future, FlightAnswer) else None
        if held:
            into.update((i, held[i]) for i in ids if i in held)

    def attach(self, catalog_id: int, derived_key: Any,
               values: dict[str, tuple[Any, Any]], missed: Sequence[str] = ()) -> None:
        """Keep values derived from resolved items (id → (item, derived)) with their L1 entries,
        for `resolve(..., derived_key=...)` to answer next time.

        Once L1 is full, not for the IDs of `missed` (Resolved.missed: L1 did not hold them;
        they are taken out of `values`): a value is then kept from its item's second use on.
        Where the catalog is bigger than L1, most items read are evicted before anyone asks for
        them again, and keeping their values (an entry's dict, a table row, the accounting,
        taking them out again on eviction) cost more than the rendering a second use does
        again; a hot item pays that rendering once. While L1 has room nothing is evicted, and
        a value kept at the first use saves the second its rendering (a catalog that fits, or
        the minutes after a start)."""
        if missed and not self.local.has_room():
            pop = values.pop
            for item_id in missed:
                pop(item_id, None)
        if values:
            self.local.attach(catalog_id, values, derived_key)

    async def forget(self, catalog_id: int, ids: list[str],
                     versions: Mapping[str, Any] | None = None) -> None:
        """Items changed: drop them from every tier now (a write through this process, or a
        notification). `versions`: item ID → its new version (minus the old one for a deletion),
        where known; a replica's older rows of them are then never cached."""
        if self.notified is not None:
            if versions:
                self.notified.note(catalog_id, versions)
            if not versions or len(versions) < len(ids):
                self.notified.note_unknown(
                    catalog_id, [i for i in ids if not versions or i not in versions]
                )
        self.local.forget(catalog_id, ids)
        self.batcher.taint(catalog_id, ids)
        if self.shared is not None:
            await self.shared.forget(catalog_id, ids, versions)

    async def flush_catalog(self, catalog_id: int) -> None:
        """Many items of a catalog changed: demote L1 entries to stale, invalidate L2."""
        if self.notified is not None:
            self.notified.note_catalog(catalog_id)
        self.local.flush_catalog(catalog_id)
        if self.shared is not None:
            await self.shared.flush_catalog(catalog_id)

    def flush_all(self) -> None:
        """Changes may have been missed (the invalidation channel dropped): demote all of L1."""
        if self.notified is not None:
            self.notified.note_everything()
        self.local.flush_all()

    async def flush_everywhere(self) -> None:
        """Every catalog changed (a TRUNCATE): demote all of L1, invalidate all of L2."""
        if self.notified is not None:
            self.notified.note_everything()
        self.local.flush_all()
        if self.shared is not None:
            await self.shared.flush_catalog(None)

    async def settled(self) -> None:
        """Until the L2 writes started so far have finished (tests, benches, shutdown)."""
        await asyncio.gather(*self._background, return_exceptions=True)

    async def close(self) -> None:
        await self.batcher.close()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def _take(self, resolved: Resolved, values: dict[str, Any], tier: str | None) -> None:
        """Put the items of `values` (id → item or ABSENT) into `resolved`; count the hits of a
        cache tier (None: Postgres, counted by the batcher)."""
        if not values:
            return
        resolved.update(values)
        negative = 0
        if ABSENT in values.values():  # drop the negative entries again
            for item_id, value in values.items():
                if value is ABSENT:
                    negative += 1
                    del resolved[item_id]
        if tier is None:
            return
        if negative:
            self._count[tier, "negative_hit"].inc(negative)
        if len(values) > negative:
            self._count[tier, "hit"].inc(len(values) - negative)

    def _fall_back(self, resolved: Resolved, stale: dict[str, Any], ids: list[str],
                   provisional: dict[str, Any]) -> None:
        served = from_replica = 0
        for item_id in ids:
            value = provisional.get(item_id, ABSENT)
            if value is not ABSENT:
                resolved[item_id] = value
                from_replica += 1
                continue
            if item_id in provisional:
                continue  # the replica, current for it, says it does not exist
            value = stale.get(item_id, ABSENT)
            if value is not ABSENT:
                resolved[item_id] = value
                served += 1
        if served:
            self._count["l1", "stale_served"].inc(served)
        if from_replica:
            self._count["replica", "stale_served"].inc(from_replica)

    def _remember(self, flight: Flight, values: dict[str, Any]) -> None:
        """Keep a query's answer in L1 now and in L2 in the background (minus tainted IDs)."""
        if flight.tainted:
            values = {k: v for k, v in values.items() if k not in flight.tainted}
        self.local.store(flight.catalog_id, values, flight.generation)
        if self.shared is not None and values:
            task = asyncio.ensure_future(
                self.shared.store(flight.catalog_id, flight.epoch, values)
            )
            self._background.add(task)
            task.add_done_callback(self._background.discard)
