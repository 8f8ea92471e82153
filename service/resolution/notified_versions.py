"""The newest item versions this process was told of, for as long as a read replica may lag.

A change is notified (NOTIFY, at commit on the primary) before a lagging replica has replayed it.
A process that evicts an item on the notification and reads it back from the replica gets the old
row, and kept in L1 and L2 that row would be served until its TTL: minutes of the old price after
the invalidation worked. So every notified version is noted here (the listener, and this process's
own writes), and a row read from the replica that is older than the version noted for its item is
not cached: the item batcher reads it again from the primary (service/resolution/item_batcher.py).

Entries are kept for `window` seconds, longer than any lag the replica is read with (reads leave a
replica further behind: service/storage/read_routing.py), and bounded in number. An entry pushed
out early by the bound gates its whole catalog until it would have expired, so the bound costs
primary reads, never a stale row. A change too large to list (a whole catalog, "all", or changes
missed while the listener was away) gates its catalog, or every catalog, for the window: their
reads go to the primary. Only rows read from a replica are checked; L1 hits are not.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from service.resolution.local_cache import ABSENT

# ~200 bytes an entry: 100,000 notified items within one window cost ~20 MB at most.
MAX_NOTIFIED_ITEMS = 100_000
_UNKNOWN = float("inf")  # changed, version not known: no replica row is recent enough

# (the oldest version a current row can have, whether "absent" is current, kept until)
_Entry = tuple[float, bool, float]


def _floor(version: Any) -> tuple[float, bool]:
    """A notified version as (oldest current version, absent is current): a deletion is sent as
    minus the version the row had, so a replica still holding that row is behind."""
    if isinstance(version, int) and not isinstance(version, bool) and version != 0:
        return (version, False) if version > 0 else (1 - version, True)
    return _UNKNOWN, False


class NotifiedVersions:
    def __init__(self, window: float, *, max_items: int = MAX_NOTIFIED_ITEMS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.max_items = max_items
        self.clock = clock
        # Ordered by when each was last noted, so the front is always the first to expire.
        self._items: OrderedDict[tuple[int, str], _Entry] = OrderedDict()
        self._catalogs_until: dict[int, float] = {}  # whole catalogs gated until
        self._everything_until = float("-inf")
        self._changed_until: dict[int, float] = {}  # any change noted in the catalog, until

    def __len__(self) -> int:
        return len(self._items)

    def note(self, catalog_id: int, versions: Mapping[str, Any]) -> None:
        """Items changed: `versions` is item ID → its notified version (negative: deleted)."""
        if not versions:
            return
        now = self.clock()
        until = now + self.window
        items = self._items
        for item_id, version in versions.items():
            floor, absent_ok = _floor(version)
            key = (catalog_id, item_id)
            held = items.pop(key, None)
            if held is not None and held[0] > floor:
                floor, absent_ok = held[0], held[1]  # an older notice arriving late changes nothing
            items[key] = (floor, absent_ok, until)
        self._changed_until[catalog_id] = until
        self._trim(now)

    def note_unknown(self, catalog_id: int, ids: Iterable[str]) -> None:
        """Items changed at versions not known here: no replica row of theirs is trusted."""
        self.note(catalog_id, dict.fromkeys(ids))

    def note_catalog(self, catalog_id: int) -> None:
        """Any item of the catalog may have changed: its reads go to the primary for the window."""
        until = self.clock() + self.window
        self._catalogs_until[catalog_id] = until
        self._changed_until[catalog_id] = until

    def note_everything(self) -> None:
        """Any item anywhere may have changed (a TRUNCATE, or notifications were missed)."""
        self._everything_until = self.clock() + self.window
        self._catalogs_until.clear()
        self._changed_until.clear()

    def catalog_gated(self, catalog_id: int) -> bool:
        """Whether no replica row of the catalog may be cached now (read it on the primary)."""
        now = self.clock()
        if now < self._everything_until:
            return True
        until = self._catalogs_until.get(catalog_id)
        if until is None:
            return False
        if now < until:
            return True
        del self._catalogs_until[catalog_id]
        return False

    def changed_recently(self, catalog_id: int) -> bool:
        """Whether a change to the catalog was noted within the window (a page of it read from a
        replica could miss it)."""
        now = self.clock()
        if now < self._everything_until:
            return True
        until = self._changed_until.get(catalog_id)
        if until is None:
            return False
        if now < until:
            return True
        del self._changed_until[catalog_id]
        return False

    def behind(self, catalog_id: int, values: Mapping[str, Any]) -> list[str]:
        """The IDs of `values` (id → row or ABSENT, as read from a replica) whose row is older than
        a change noted for them: not to be cached, and read again from the primary."""
        if self.catalog_gated(catalog_id):
            return list(values)
        items = self._items
        if not items:
            return []
        now = self.clock()
        self._trim(now)
        behind: list[str] = []
        get = items.get
        for item_id, value in values.items():
            entry = get((catalog_id, item_id))
            if entry is None:
                continue
            floor, absent_ok, _ = entry
            if value is ABSENT:
                if not absent_ok:  # created (or changed) on the primary, not yet on the replica
                    behind.append(item_id)
            elif value["version"] < floor:
                behind.append(item_id)
        return behind

    def _trim(self, now: float) -> None:
        """Drop expired entries (all at the front); past the bound, drop the oldest and gate
        their catalogs until they would have expired."""
        items = self._items
        while items:
            key, entry = next(iter(items.items()))
            if entry[2] > now and len(items) <= self.max_items:
                return
            del items[key]
            if entry[2] > now:  # pushed out early by the bound
                catalog_id = key[0]
                self._catalogs_until[catalog_id] = max(
                    self._catalogs_until.get(catalog_id, entry[2]), entry[2]
                )
