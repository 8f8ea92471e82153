"""A small bounded map whose entries expire: for config lookups (keys, recommenders) per process.

Bounded by entry count with least-recently-inserted eviction, so a flood of distinct wrong keys
cannot grow it without limit.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

_ABSENT = object()


class ExpiringMap(Generic[K, V]):
    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | object:
        """The value, or `ExpiringMap.MISSING` when absent or expired."""
        entry = self._entries.get(key)
        if entry is None:
            return _ABSENT
        expires, value = entry
        if expires < time.monotonic():
            del self._entries[key]
            return _ABSENT
        return value

    def put(self, key: K, value: V) -> None:
        if self.ttl <= 0:
            return
        self._entries[key] = (time.monotonic() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    MISSING = _ABSENT
