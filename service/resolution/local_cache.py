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

An entry can also carry what callers derived from its value (`attach`, read back by
`lookup_derived`): the transform keeps each item's rendered, serialised attributes there per
recommender and locale. Derived values live and die with the entry: a changed item is a new entry,
with nothing derived yet. Each derived key also has a table of the values derived under it whose
entries are fresh (`derived_table`), so a warm transform finds all its rows with C-speed set and
dict operations instead of a Python loop over its IDs: a row leaves its table when its entry is
forgotten, replaced, evicted or flushed, and the whole table is dropped when its earliest entry's
TTL passes (its rows are then found again, entry by entry, and put back).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from itertools import repeat
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
# Derived tables kept at once (recommender versions times locales in use); past it, all are dropped.
MAX_DERIVED_TABLES = 256


class _DerivedTable:
    """Values derived under one key from fresh entries of one catalog: item ID → derived value."""

    __slots__ = ("catalog_id", "rows", "valid_until")

    def __init__(self, catalog_id: int) -> None:
        self.catalog_id = catalog_id
        self.rows: dict[str, Any] = {}
        self.valid_until = float("inf")  # the earliest TTL end among the rows' entries


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
        self._tables: dict[Any, _DerivedTable] = {}

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
        table = None if derived_key is _NOTHING_DERIVED else self._table(catalog_id, derived_key)
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
                    derived[item_id] = found = kept[derived_key]
                    if table is not None:  # back into the table it was dropped from
                        table.rows[item_id] = found
                        table.valid_until = min(table.valid_until, fresh_until)
                else:
                    fresh[item_id] = value
                continue
            missing.append(item_id)
            if now < stale_until:
                stale[item_id] = value
            else:
                del entries[key]
                self._untable(catalog_id, (item_id,))
        return derived, fresh, stale, missing

    def derived_table(self, catalog_id: int, derived_key: Any) -> dict[str, Any] | None:
        """Item ID → value derived under `derived_key`, for entries of the catalog that are fresh
        now (None: no table yet). Read it, don't change it; `touch` the IDs used from it."""
        table = self._tables.get(derived_key)
        if table is None or table.catalog_id != catalog_id:
            return None
        if self.clock() >= table.valid_until:
            del self._tables[derived_key]  # found again entry by entry, and put back
            return None
        return table.rows

    def touch(self, catalog_id: int, ids: Iterable[str]) -> None:
        """Mark the entries of `ids` (all present) as just used, for the LRU order."""
        deque(map(self._entries.move_to_end, zip(repeat(catalog_id), ids)), maxlen=0)

    def attach(self, catalog_id: int, values: Mapping[str, tuple[Any, Any]],
               derived_key: Any) -> None:
        """Keep, for each ID, `derived` under `derived_key` on its entry, where the entry still
        holds the very `value` it was derived from: values is id → (value, derived)."""
        entries = self._entries
        table = self._table(catalog_id, derived_key)
        now = self.clock()
        floor = max(self._floor, self._catalog_floor.get(catalog_id, 0))
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
            fresh_until = entry[1]
            if now < fresh_until and entry[3] > floor:
                table.rows[item_id] = derived
                table.valid_until = min(table.valid_until, fresh_until)

    def store(self, catalog_id: int, values: Mapping[str, Any], generation: int) -> None:
        """Keep `values` (id → item or ABSENT) read at `generation`; older than a flush = stale."""
        if not self.enabled or not values:
            return
        now = self.clock()
        entries = self._entries
        move_to_end = entries.move_to_end
        # Two kinds of entry, so two sets of times, computed once (a cold event stores hundreds).
        found_until, found_stale = now + self.ttl, now + self.ttl + self.stale_seconds
        absent_until = now + self.negative_ttl
        absent_stale = absent_until + self.stale_seconds
        for item_id, value in values.items():
            key = (catalog_id, item_id)
            if value is ABSENT:
                entries[key] = (value, absent_until, absent_stale, generation, None)
            else:
                entries[key] = (value, found_until, found_stale, generation, None)
            move_to_end(key)
        self._untable(catalog_id, values)  # what was derived from the values these replace
        overflow = len(entries) - self.max_entries
        if overflow > 0:
            # Evicted together, then taken out of the tables once per catalog, not once per ID.
            evicted = [entries.popitem(last=False)[0] for _ in range(overflow)]
            by_catalog: dict[int, list[str]] = {}
            for evicted_catalog, evicted_id in evicted:
                by_catalog.setdefault(evicted_catalog, []).append(evicted_id)
            for evicted_catalog, ids in by_catalog.items():
                self._untable(evicted_catalog, ids)

    def forget(self, catalog_id: int, ids: Iterable[str]) -> None:
        """Drop entries known to be wrong (the items changed)."""
        ids = list(ids)
        for item_id in ids:
            self._entries.pop((catalog_id, item_id), None)
        self._untable(catalog_id, ids)

    def flush_catalog(self, catalog_id: int) -> None:
        """Demote every entry of one catalog to stale."""
        self._generation += 1
        self._catalog_floor[catalog_id] = self._generation - 1
        for derived_key, table in list(self._tables.items()):
            if table.catalog_id == catalog_id:
                del self._tables[derived_key]

    def flush_all(self) -> None:
        """Demote every entry to stale."""
        self._generation += 1
        self._floor = self._generation - 1
        self._catalog_floor.clear()
        self._tables.clear()

    def _table(self, catalog_id: int, derived_key: Any) -> _DerivedTable:
        """The table of `derived_key`, a new one if it has none (or one of another catalog)."""
        table = self._tables.get(derived_key)
        if table is None or table.catalog_id != catalog_id:
            if len(self._tables) >= MAX_DERIVED_TABLES:
                self._tables.clear()
            table = self._tables[derived_key] = _DerivedTable(catalog_id)
        return table

    def _untable(self, catalog_id: int, ids: Iterable[str]) -> None:
        """Take the values derived for `ids` out of the catalog's tables."""
        if not self._tables:
            return
        if not isinstance(ids, (list, tuple, dict)):
            ids = list(ids)
        for table in self._tables.values():
            if table.catalog_id == catalog_id:
                deque(map(table.rows.pop, ids, repeat(None)), maxlen=0)  # C speed, per ID
