"""L1: the per-process item cache, bounded by entry count, with TTLs and a stale window.

Keys are (catalog ID, item ID); a value is an item (any mapping with the item columns) or
`ABSENT`, a negative entry saying "not in the catalog" (kept for a shorter TTL). An entry is
*fresh* until its TTL passes, then *stale* for `stale_seconds` more: a stale entry is never answered
as if it were current, only handed to the resolver as a fallback for when Postgres fails or is too
slow. Past the stale window it is gone. The least recently used entry is evicted when the bound is
reached, so a large catalog cannot take the process down.

Flushes come in two strengths. `forget` drops entries outright: the item is known to have changed,
and serving the old version even as a fallback would be wrong. `flush_catalog` and `flush_all` (a
bulk write, a lost invalidation channel) only demote every entry to stale, because most of those
entries are probably still right and are the best answer when Postgres is down. Demotion costs O(1):
each entry records the generation it was stored in, and a flush raises the floor generation below
which an entry no longer counts as fresh.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any


class _Absent:
    """The negative entry: the item is known not to exist in its catalog."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()

# (value, fresh until, stale until, generation stored in, derived values by key or None)
_Entry = tuple[Any, float, float, int, dict | None]
# Derived values an entry keeps (recommender versions times locales) before it starts over.
MAX_DERIVED_PER_ENTRY = 8
_NOTHING_DERIVED = object()  # a key no entry holds: `lookup` is `lookup_derived` without any


class LocalCache:
    def __init__(
        self, *, max_entries: int, ttl: float, negative_ttl: float, stale_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.stale_seconds = stale_seconds
        self.clock = clock
        self._entries: OrderedDict[tuple[int, str], _Entry] = OrderedDict()
        self._generation = 1
        self._floor = 0
        self._catalog_floor: dict[int, int] = {}

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    def __len__(self) -> int:
        return len(self._entries)

    def generation(self) -> int:
        """The current generation: take it before a read from a slower tier, pass it to `store`."""
        return self._generation

    def lookup(
        self, catalog_id: int, ids: Iterable[str]
    ) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        """Split `ids` into fresh hits, stale fallbacks (both id → value or ABSENT) and misses."""
        _, fresh, stale, missing = self.lookup_derived(catalog_id, ids, _NOTHING_DERIVED)
        return fresh, stale, missing

    def lookup_derived(
        self, catalog_id: int, ids: Iterable[str], derived_key: Any
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[str]]:
        """`lookup`, but a fresh entry that holds a value derived under `derived_key` answers that
        value (in the first dict) instead of its own: (derived, fresh, stale, missing)."""
        derived: dict[str, Any] = {}
        fresh: dict[str, Any] = {}
        stale: dict[str, Any] = {}
        missing: list[str] = []
        entries = self._entries
        if not entries:
            return derived, fresh, stale, list(ids)
        now = self.clock()
        floor = max(self._floor, self._catalog_floor.get(catalog_id, 0))
        get = entries.get
        touch = entries.move_to_end
        for item_id in ids:
            key = (catalog_id, item_id)
            entry = get(key)
            if entry is None:
                missing.append(item_id)
                continue
            value, fresh_until, stale_until, generation, kept = entry
            if now < fresh_until and generation > floor:
                touch(key)
                if kept is not None and derived_key in kept:
                    derived[item_id] = kept[derived_key]
                else:
                    fresh[item_id] = value
                continue
            missing.append(item_id)
            if now < stale_until:
                stale[item_id] = value
            else:
                del entries[key]
        return derived, fresh, stale, missing

    def attach(self, catalog_id: int, values: Mapping[str, tuple[Any, Any]],
               derived_key: Any) -> None:
        """Keep, for each ID, `derived` under `derived_key` on its entry, where the entry still
        holds the very `value` it was derived from: values is id → (value, derived)."""
        entries = self._entries
        for item_id, (value, derived) in values.items():
            key = (catalog_id, item_id)
            entry = entries.get(key)
            if entry is None or entry[0] is not value:
                continue  # gone, or replaced by a newer value meanwhile
            kept = entry[4]
            if kept is None or len(kept) >= MAX_DERIVED_PER_ENTRY:
                # A new dict in a new tuple; the key keeps its place in the LRU order.
                entries[key] = (*entry[:4], {derived_key: derived})
            else:
                kept[derived_key] = derived

    def store(self, catalog_id: int, values: Mapping[str, Any], generation: int) -> None:
        """Keep `values` (id → item or ABSENT) read at `generation`; older than a flush = stale."""
        if not self.enabled or not values:
            return
        now = self.clock()
        entries = self._entries
        for item_id, value in values.items():
            ttl = self.negative_ttl if value is ABSENT else self.ttl
            key = (catalog_id, item_id)
            entries[key] = (value, now + ttl, now + ttl + self.stale_seconds, generation, None)
            entries.move_to_end(key)
        overflow = len(entries) - self.max_entries
        for _ in range(max(overflow, 0)):
            entries.popitem(last=False)

    def forget(self, catalog_id: int, ids: Iterable[str]) -> None:
        """Drop entries known to be wrong (the items changed)."""
        for item_id in ids:
            self._entries.pop((catalog_id, item_id), None)

    def flush_catalog(self, catalog_id: int) -> None:
        """Demote every entry of one catalog to stale."""
        self._generation += 1
        self._catalog_floor[catalog_id] = self._generation - 1

    def flush_all(self) -> None:
        """Demote every entry to stale."""
        self._generation += 1
        self._floor = self._generation - 1
        self._catalog_floor.clear()
