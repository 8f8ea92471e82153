"""L1: the per-process item cache, bounded by entry count and by bytes, with TTLs and a stale window.

Keys are (catalog ID, item ID); a value is an item (any mapping with the item columns) or
`ABSENT`, a negative entry saying "not in the catalog" (kept for a shorter TTL). An entry is
*fresh* until its TTL passes, then *stale* for `stale_seconds` more: a stale entry is never answered
as if it were current, only handed to the resolver as a fallback for when Postgres fails or is too
slow. Past the stale window it is gone. The least recently used entry is evicted when either bound
is passed, so a large catalog cannot take the process down: `max_entries`, and `max_bytes` (0: none)
over the bytes L1 accounts for, an estimate made once per entry when it is stored (`item_bytes`)
and once per derived value when it is attached (`derived_bytes`), both calibrated against
tracemalloc (tests/test_l1_memory.py), and given back when the entry or value goes.

Flushes come in two strengths. `forget` drops entries outright: the item is known to have changed,
and serving the old version even as a fallback would be wrong. `flush_catalog` and `flush_all` (a
bulk write, a lost invalidation channel) only demote every entry to stale, because most of those
entries are probably still right and are the best answer when Postgres is down. Demotion costs O(1):
each entry records the generation it was stored in, and a flush raises the floor generation below
which an entry no longer counts as fresh.

A large L1 keeps its entries in shards (`SHARDS` OrderedDicts, by the key's hash). A dict rebuilds
its whole table now and then as keys come and go, and an OrderedDict relinks every node as it
does: at 100,000 entries on a full, scattered heap that held the event loop 30-50 ms every ~75,000
stores (a cold load makes one every few seconds). A shard's rebuild is a sixteenth of that. The
LRU order is then kept per shard: a store evicts the least recently used entries of the shards it
stored into (and, past the byte bound, the oldest of each shard in turn), the usual approximation of
one LRU order; below `SHARD_FROM` entries or `SHARD_FROM_BYTES` there is one shard and the order is
exact.

An entry can also carry what callers derived from its value (`attach`, read back by
`lookup_derived`): the transform keeps each item's rendered, serialised attributes there per
recommender and locale. Derived values live and die with the entry: a changed item is a new entry,
with nothing derived yet. Each derived key also has a table of the values derived under it whose
entries are fresh (`derived_table`), so a warm transform finds all its rows with C-speed set and
dict operations instead of a Python loop over its IDs: a row leaves its table when its entry is
forgotten, replaced, evicted or flushed, and the whole table is dropped when its earliest entry's
TTL passes (its rows are then found again, entry by entry, and put back). A table only refers to
values its entries keep (a value an entry drops, when it starts over, leaves its table too), so
accounting for the entries accounts for the tables; a table that has shrunk to a quarter of its
largest size is copied, as a dict never gives back the room it once grew to.

Once L1 is full, a new key is admitted on its second miss only (`store` is asked to keep it a second
time while its first is remembered), the "doorkeeper" of TinyLFU admission (Caffeine): where the
catalog is larger than L1, most rows read are never asked for again before they would be evicted,
and storing each one (its size estimate, the entry, evicting another, untabling what was derived
from it) was a quarter of a cold load's CPU, for nothing. The doorkeeper is a bytearray of "seen
once" marks indexed by the key's hash, cleared after `max_entries / DOORKEEPER_WINDOW_SHARE` marks,
so "seen once" means "among the last eighth of an L1's worth of keys refused": a hot item is
admitted at its second read, an item read once in a long while never is. A mark is not an entry: it
holds no value, so what admission refuses can never be served, stale or not; an item admitted later
is the row its second read brought, under the same generation and taint rules as any store. Keys
already in L1 (a stale entry being refreshed) are always stored, and while L1 has room everything
is. (A window of a whole L1's worth admitted a fifth of a uniform load's misses over a catalog five
times L1's size, each evicting another entry, and kept the same hit ratio on Zipf traffic as the
eighth does: the items worth keeping come back much sooner than that.)

L1 counts as full once less than `1 / FULL_WITHIN_BYTES_SHARE` of its byte bound is free, not only
at the bound: evicting for the byte bound leaves it under the bound by less than one entry, and an
L1 that then "has room" would store every miss and evict another for each, for good (the usual
case with real items, whose rows make the byte bound the one that binds).
"""

from __future__ import annotations

import operator
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import repeat
from sys import getsizeof
from typing import Any

import orjson


class _Absent:
    """The negative entry: the item is known not to exist in its catalog."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()

# [value, fresh until, stale until, generation stored in, derived values by key or None, the
# bytes accounted for it: its item's estimate and its derived values']. A list, not a tuple, so
# that attaching a derived value updates the entry in place: a new tuple per attached row was
# one more long-lived object for the collector to scan twice, on every row of a cold event.
_Entry = list
# Derived values an entry keeps (recommender versions times locales) before it starts over.
MAX_DERIVED_PER_ENTRY = 8
_NOTHING_DERIVED = object()  # a key no entry holds: `lookup` is `lookup_derived` without any
# The bounds from which the entries are split into shards, and how many (a power of two): both
# must leave a shard thousands of entries, or its own LRU order would stand in poorly for one
# order over all (64 MiB is ~4,000 entries a shard even at 1 KB of rows per entry).
SHARD_FROM = 65_536
SHARD_FROM_BYTES = 64 * 1024 * 1024
SHARDS = 16
# Derived tables kept at once (recommender versions times locales in use); past it, all are dropped.
MAX_DERIVED_TABLES = 256
# The doorkeeper's window: marks are cleared after the entries L1 holds, divided by this, refusals.
DOORKEEPER_WINDOW_SHARE = 8
DOORKEEPER_MIN_WINDOW = 1024
# Its slots per mark of a window (a power of two at least this many times the window, within the two
# limits below; the same bytes as 8 per entry of L1): a key's mark is shared with the keys of the
# same slot, so at most 1/64 of refused keys are admitted at their first miss (while the marks are
# full; fewer after each clearing).
DOORKEEPER_SLOTS_PER_MARK = 64
DOORKEEPER_MIN_SLOTS = 1 << 10
DOORKEEPER_MAX_SLOTS = 1 << 23  # 8 MiB: an L1 of over a million entries shares marks more
# L1 is full while no more than this share of its byte bound is free (see the module's docstring).
FULL_WITHIN_BYTES_SHARE = 16

# What an entry costs beyond its item: its OrderedDict slot and link, the key tuple and entry list, the
# two deadlines, the generation, the ID's string object (tracemalloc, CPython 3.11:
# tests/test_l1_memory.py measures it and fails when these no longer cover what L1 holds).
ENTRY_OVERHEAD = 400
# An item beyond the text `item_bytes` counts: its mapping (an L2-decoded dict, the larger; a
# Record from Postgres is smaller), price, version, updated_at.
ITEM_OVERHEAD = 600
# What a derived value costs beyond its own objects: its slot in the entry's dict of derived values
# and in its table (a dict holds up to a third more room than entries, then doubles).
DERIVED_OVERHEAD = 120
# Each string of the item's text (top-level texts, and keys and values inside its JSON fields),
# beyond its characters: its object, and its share of the dicts holding it (a locale's dict).
_STRING_BYTES = 100
# The fields whose size varies with the item: texts (as UTF-8, which is at least what CPython
# holds of them, give or take a header) and the JSON fields (attributes, locales).
_SIZED_FIELDS = ("id", "title", "genre", "image_url", "url", "attributes", "locales")
_sized_fields = operator.itemgetter(*_SIZED_FIELDS)
_dumps = orjson.dumps


def item_bytes(item_id: str, value: Any) -> int:
    """The bytes L1 accounts for an entry of `value` (an item or ABSENT), in a few C calls: its
    texts and JSON fields serialised at once, their length, and a cost per string in them."""
    if value is ABSENT:
        return ENTRY_OVERHEAD + len(item_id)
    try:
        fields = _sized_fields(value)
    except KeyError:  # an item read without some of these columns
        fields = tuple(map(value.get, _SIZED_FIELDS))
    try:
        text = _dumps(fields)
    except TypeError:  # orjson.JSONEncodeError: a value orjson cannot write (a huge integer)
        text = repr(fields).encode()
    return (ENTRY_OVERHEAD + ITEM_OVERHEAD + len(item_id) + len(text)
            + (text.count(b'"') >> 1) * _STRING_BYTES)


_TUPLE_SIZE = getsizeof(())
_PER_BYTES_ELEMENT = getsizeof((b"",)) - _TUPLE_SIZE + getsizeof(b"")


def derived_bytes(value: Any) -> int:
    """The bytes L1 accounts for a derived value: a rendered row (a tuple of bytes), bytes or text
    (their sizes), anything else (False, a shared marker) its slots only."""
    kind = value.__class__
    if kind is tuple:
        try:
            # What getsizeof would say of the tuple and its bytes, in one C call (it costs a
            # fifth of getsizeof's per-element method calls, on every row a cold event keeps).
            return (DERIVED_OVERHEAD + _TUPLE_SIZE + len(value) * _PER_BYTES_ELEMENT
                    + len(b"".join(value)))
        except TypeError:  # not all bytes
            return DERIVED_OVERHEAD + getsizeof(value) + sum(map(getsizeof, value))
    if kind is bytes or kind is str:
        return DERIVED_OVERHEAD + getsizeof(value)
    return DERIVED_OVERHEAD


class _DerivedTable:
    """Values derived under one key from fresh entries of one catalog: item ID → derived value."""

    __slots__ = ("catalog_id", "peak", "rows", "valid_until")

    def __init__(self, catalog_id: int) -> None:
        self.catalog_id = catalog_id
        self.rows: dict[str, Any] = {}
        self.valid_until = float("inf")  # the earliest TTL end among the rows' entries
        self.peak = 0  # the most rows it has held since it was made or copied

    def grew(self) -> None:
        if len(self.rows) > self.peak:
            self.peak = len(self.rows)

    def remove(self, item_id: str) -> None:
        rows = self.rows
        if rows.pop(item_id, rows) is not rows and len(rows) * 4 < self.peak:
            # A dict keeps the room it grew to; a copy has only what it needs. A caller still
            # reading the old dict reads rows that were right when it got them.
            self.rows = dict(rows)
            self.peak = len(rows)


class LocalCache:
    def __init__(
        self, *, max_entries: int, ttl: float, negative_ttl: float, stale_seconds: float,
        max_bytes: int = 0, clock: Callable[[], float] = time.monotonic, admission: bool = True,
    ) -> None:
        self.max_bytes = max_bytes  # 0: no byte bound (the bytes are still accounted for)
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.stale_seconds = stale_seconds
        self.clock = clock
        self._shards: list[OrderedDict[tuple[int, str], _Entry]] = [OrderedDict()]
        self._mask = 0
        self._next_shard = 0  # where eviction for the byte bound goes on
        self._generation = 1
        self._floor = 0
        self._catalog_floor: dict[int, int] = {}
        self._tables: dict[Any, _DerivedTable] = {}
        self._bytes = 0
        self.admission = admission  # False: every key is stored at its first miss
        # The doorkeeper: marks, made when L1 is first full (sized then by the entries it holds).
        self._seen = bytearray()
        self._seen_mask = 0
        self._seen_window = 0  # marks after which they are all cleared
        self._seen_marks = 0
        self.refused = 0  # keys not admitted, so far (the tests and the bench read it)
        self.max_entries = max_entries

    @property
    def max_entries(self) -> int:
        return self._max_entries

    @max_entries.setter
    def max_entries(self, bound: int) -> None:
        """A new entry bound (at start, or later): the entries are dealt into as many shards as
        it calls for (their order kept within each shard), then evicted down to it."""
        self._max_entries = bound
        large = bound >= SHARD_FROM and (not self.max_bytes or self.max_bytes >= SHARD_FROM_BYTES)
        count = SHARDS if large else 1
        # Each shard's share of the entry bound (the whole bound, with one shard).
        self._shard_max = bound // count
        if count != len(self._shards):
            entries = [item for shard in self._shards for item in shard.items()]
            self._shards = [OrderedDict() for _ in range(count)]
            self._mask = count - 1
            for key, entry in entries:
                self._shards[hash(key) & self._mask][key] = entry
        for shard in self._shards:
            self._evict(shard)
        self._drop_doorkeeper()

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    def __len__(self) -> int:
        return sum(map(len, self._shards))

    def entries(self) -> Iterator[_Entry]:
        """Every entry, shard by shard (what the tests weigh)."""
        for shard in self._shards:
            yield from shard.values()

    @property
    def accounted_bytes(self) -> int:
        """The bytes L1 accounts for now: its entries' estimates, their derived values' and the
        doorkeeper's marks."""
        return self._bytes

    def has_room(self) -> bool:
        """Under both bounds, the byte bound by more than a sixteenth of it: what is stored next
        is kept without evicting anything (see the module's docstring for the margin)."""
        return len(self) < self.max_entries and (
            not self.max_bytes
            or self.max_bytes - self._bytes > self.max_bytes // FULL_WITHIN_BYTES_SHARE)

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
        shards, mask = self._shards, self._mask
        if not any(shards):
            return derived, fresh, stale, list(ids)
        now = self.clock()
        floor = max(self._floor, self._catalog_floor.get(catalog_id, 0))
        table = None if derived_key is _NOTHING_DERIVED else self._table(catalog_id, derived_key)
        for item_id in ids:
            key = (catalog_id, item_id)
            entries = shards[hash(key) & mask]
            entry = entries.get(key)
            if entry is None:
                missing.append(item_id)
                continue
            value, fresh_until, stale_until, generation, kept, size = entry
            if now < fresh_until and generation > floor:
                entries.move_to_end(key)
                if kept is not None and derived_key in kept:
                    derived[item_id] = found = kept[derived_key]
                    if table is not None:  # back into the table it was dropped from
                        table.rows[item_id] = found
                        if fresh_until < table.valid_until:
                            table.valid_until = fresh_until
                else:
                    fresh[item_id] = value
                continue
            missing.append(item_id)
            if now < stale_until:
                stale[item_id] = value
            else:
                del entries[key]
                self._bytes -= size
                if kept:
                    self._untable(catalog_id, item_id, kept)
        if table is not None:
            table.grew()
        return derived, fresh, stale, missing

    def lookup_through_table(
        self, catalog_id: int, ids: list[str], rows: dict[str, Any], derived_key: Any
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[str]]:
        """`lookup_derived` for `ids` (distinct) given their table's `rows` (`derived_table`),
        which holds some of them: those are taken from the table in a few C-speed steps, and
        only the others go through the per-ID loop. On Zipf traffic an event's hot IDs are in the
        table and a few cold ones are not; one missing ID used to send all 250 through the loop.
        The rows found are copied out (the table changes while the caller awaits the misses)."""
        found = rows.keys() & ids
        rest = [item_id for item_id in ids if item_id not in found] if found else ids
        derived, fresh, stale, missing = self.lookup_derived(catalog_id, rest, derived_key)
        if found:
            derived.update(zip(found, map(rows.__getitem__, found), strict=True))
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
        keys = zip(repeat(catalog_id), ids)
        if not self._mask:
            deque(map(self._shards[0].move_to_end, keys), maxlen=0)
            return
        shards, mask = self._shards, self._mask
        for key in keys:
            shards[hash(key) & mask].move_to_end(key)

    def attach(self, catalog_id: int, values: Mapping[str, tuple[Any, Any]],
               derived_key: Any) -> None:
        """Keep, for each ID, `derived` under `derived_key` on its entry, where the entry still
        holds the very `value` it was derived from: values is id → (value, derived)."""
        shards, mask = self._shards, self._mask
        table = self._table(catalog_id, derived_key)
        now = self.clock()
        floor = max(self._floor, self._catalog_floor.get(catalog_id, 0))
        added = 0
        for item_id, (value, derived) in values.items():
            key = (catalog_id, item_id)
            entry = shards[hash(key) & mask].get(key)
            if entry is None or entry[0] is not value:
                continue  # gone, or replaced by a newer value meanwhile
            kept = entry[4]
            size = entry[5] + derived_bytes(derived)
            if kept is None:
                kept = {derived_key: derived}
            elif derived_key in kept:
                size -= derived_bytes(kept[derived_key])
                kept[derived_key] = derived
            elif len(kept) >= MAX_DERIVED_PER_ENTRY:
                # Start over: what it kept leaves the entry, its tables and the accounted bytes.
                size -= sum(map(derived_bytes, kept.values()))
                self._untable(catalog_id, item_id, kept)
                kept = {derived_key: derived}
            else:
                kept[derived_key] = derived
            added += size - entry[5]
            entry[4] = kept
            entry[5] = size
            fresh_until = entry[1]
            if now < fresh_until and entry[3] > floor:
                table.rows[item_id] = derived
                if fresh_until < table.valid_until:
                    table.valid_until = fresh_until
        table.grew()
        self._bytes += added
        if added > 0:
            self._evict_bytes()

    def store(self, catalog_id: int, values: Mapping[str, Any], generation: int) -> None:
        """Keep `values` (id → item or ABSENT) read at `generation`; older than a flush = stale."""
        if not self.enabled or not values:
            return
        now = self.clock()
        shards, mask = self._shards, self._mask
        stored_into = set()
        added = 0
        # Two kinds of entry, so two sets of times, computed once (a cold event stores hundreds).
        found_until, found_stale = now + self.ttl, now + self.ttl + self.stale_seconds
        absent_until = now + self.negative_ttl
        absent_stale = absent_until + self.stale_seconds
        # Full: new keys pass the doorkeeper (see the module's docstring). Decided once per call:
        # what this call stores may fill L1, and is then evicted down to the bounds as before.
        seen = None
        if self.admission and not self.has_room():
            seen = self._seen or self._new_doorkeeper()
        seen_mask = self._seen_mask
        refused = 0
        for item_id, value in values.items():
            key = (catalog_id, item_id)
            hashed = hash(key)
            index = hashed & mask
            entries = shards[index]
            if seen is not None and key not in entries:
                slot = (hashed >> 4) & seen_mask  # past the bits that chose the shard
                if not seen[slot]:
                    seen[slot] = 1
                    refused += 1
                    continue
            size = item_bytes(item_id, value)
            stored_into.add(index)
            replaced = entries.pop(key, None)  # a new key goes last in the LRU order
            if value is ABSENT:
                entries[key] = [value, absent_until, absent_stale, generation, None, size]
            else:
                entries[key] = [value, found_until, found_stale, generation, None, size]
            added += size
            if replaced is not None:
                added -= replaced[5]
                if replaced[4]:  # what was derived from the value this replaces
                    self._untable(catalog_id, item_id, replaced[4])
        self._bytes += added
        if refused:
            self.refused += refused
            self._seen_marks += refused
            if self._seen_marks >= self._seen_window:
                self._new_doorkeeper()  # a new window: older marks are forgotten
        for index in stored_into:
            self._evict(shards[index])
        self._evict_bytes()

    def _new_doorkeeper(self) -> bytearray:
        """Clear marks, sized for the entries L1 holds now (what a full L1 holds, whichever bound
        made it full): a window of an eighth of that many refusals (all of them, up
        to DOORKEEPER_MIN_WINDOW), DOORKEEPER_SLOTS_PER_MARK
        slots per mark. Its bytes count in `accounted_bytes`, so the byte bound covers it."""
        held = max(len(self), 1)
        # A small L1's window is all of it, as an eighth of a few entries would forget a mark
        # before anything could come back to it.
        window = max(held // DOORKEEPER_WINDOW_SHARE, min(held, DOORKEEPER_MIN_WINDOW))
        slots = DOORKEEPER_MIN_SLOTS
        while slots < window * DOORKEEPER_SLOTS_PER_MARK and slots < DOORKEEPER_MAX_SLOTS:
            slots <<= 1
        self._bytes += slots - len(self._seen)
        self._seen = bytearray(slots)
        self._seen_mask = slots - 1
        self._seen_window = min(window, slots // DOORKEEPER_SLOTS_PER_MARK)
        self._seen_marks = 0
        return self._seen

    def _drop_doorkeeper(self) -> None:
        """No marks (a new bound: the next time L1 is full sizes them anew)."""
        self._bytes -= len(self._seen)
        self._seen = bytearray()
        self._seen_marks = 0

    def _evict(self, entries: OrderedDict[tuple[int, str], _Entry]) -> None:
        """Drop a shard's least recently used entries while it holds more than its share of
        the entry bound."""
        shard_max = self._shard_max
        while len(entries) > shard_max:
            self._drop_oldest(entries)

    def _evict_bytes(self) -> None:
        """Drop least recently used entries while L1 passes the byte bound: the oldest of each
        shard in turn. A shard well under its share of the entries is passed over (its few,
        maybe all recently used, entries would go as readily as a full shard's oldest), unless
        every shard is."""
        if not self.max_bytes or self._bytes <= self.max_bytes:
            return
        shards, mask = self._shards, self._mask
        floor = len(self) // (2 * len(shards))
        passed_over = 0
        while self._bytes > self.max_bytes:
            entries = shards[self._next_shard]
            self._next_shard = (self._next_shard + 1) & mask
            if len(entries) > floor:
                passed_over = 0
                self._drop_oldest(entries)
            elif passed_over <= mask:
                passed_over += 1
            elif floor:
                floor, passed_over = 0, 0
            else:
                return  # nothing left to drop

    def _drop_oldest(self, entries: OrderedDict[tuple[int, str], _Entry]) -> None:
        (evicted_catalog, evicted_id), entry = entries.popitem(last=False)
        self._bytes -= entry[5]
        if entry[4]:
            self._untable(evicted_catalog, evicted_id, entry[4])

    def forget(self, catalog_id: int, ids: Iterable[str]) -> None:
        """Drop entries known to be wrong (the items changed)."""
        shards, mask = self._shards, self._mask
        for item_id in ids:
            key = (catalog_id, item_id)
            entry = shards[hash(key) & mask].pop(key, None)
            if entry is not None:
                self._bytes -= entry[5]
                if entry[4]:
                    self._untable(catalog_id, item_id, entry[4])

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

    def _untable(self, catalog_id: int, item_id: str, kept: dict) -> None:
        """Take the values derived for `item_id` (the keys its entry keeps) out of their tables:
        a table holds only values its entries keep."""
        tables = self._tables
        for derived_key in kept:
            table = tables.get(derived_key)
            if table is not None and table.catalog_id == catalog_id:
                table.remove(item_id)
