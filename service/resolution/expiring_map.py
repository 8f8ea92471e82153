"""A small bounded map whose entries expire: for config lookups (keys, recommenders) per process.

Bounded by entry count with least-recently-inserted eviction, so a flood of distinct wrong keys
cannot grow it without limit. An entry is fresh for `ttl_seconds`, then kept `stale_seconds` more
as a fallback for when the database cannot be asked (`get_or_load`). `expire_all` demotes every
entry to stale at once, for invalidation notifications (service/resolution/invalidation.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from service.storage.db_faults import DATABASE_UNAVAILABLE

K = TypeVar("K")
V = TypeVar("V")

_ABSENT = object()


class ExpiringMap(Generic[K, V]):
    def __init__(self, ttl_seconds: float, max_entries: int = 10_000,
                 stale_seconds: float = 0.0) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self.stale_seconds = stale_seconds
        # key → (time the value was read, value)
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._valid_after = float("-inf")
        self._loading: dict[K, asyncio.Future[V]] = {}

    @staticmethod
    def ticket() -> float:
        """Take before reading a value from its source; pass to `put` as `read_at`."""
        return time.monotonic()

    def get(self, key: K) -> V | object:
        """The fresh value, or `ExpiringMap.MISSING` when absent, expired or demoted."""
        entry = self._entries.get(key)
        if entry is None:
            return _ABSENT
        read_at, value = entry
        now = time.monotonic()
        if now < read_at + self.ttl and read_at > self._valid_after:
            return value
        if now >= read_at + self.ttl + self.stale_seconds:
            del self._entries[key]
        return _ABSENT

    def get_stale(self, key: K) -> V | object:
        """The value even if past its TTL (within the stale window), else MISSING."""
        entry = self._entries.get(key)
        if entry is None or time.monotonic() >= entry[0] + self.ttl + self.stale_seconds:
            return _ABSENT
        return entry[1]

    def put(self, key: K, value: V, read_at: float | None = None) -> None:
        if self.ttl <= 0:
            return
        self._entries[key] = (time.monotonic() if read_at is None else read_at, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def get_or_load(
        self, key: K, load: Callable[[], Awaitable[V]], *, within: float | None,
        keep: Callable[[V], bool] = lambda _: True,
    ) -> V:
        """The fresh value, else `load()` within `within` seconds (kept if `keep` says so); when the
        database is unavailable or too slow, the stale value, else the database's error.

        The load runs as a task of its own, one per key at a time, and is waited for, not
        cancelled: a cancelled asyncpg query can hold its caller until the connection has been
        released (up to the command timeout), far past the deadline. A load that outlives the
        wait goes on and fills the map for the next caller."""
        value = self.get(key)
        if value is not _ABSENT:
            return value  # type: ignore[return-value]
        task = self._loading.get(key)
        if task is None:
            task = self._loading[key] = asyncio.ensure_future(self._load(key, load, keep))
            task.add_done_callback(lambda done: self._landed(key, done))
        done, _ = await asyncio.wait((task,), timeout=within)
        failure = task.exception() if done else TimeoutError(f"no answer within {within} s")
        if failure is None:
            return task.result()
        if isinstance(failure, DATABASE_UNAVAILABLE):
            stale = self.get_stale(key)
            if stale is not _ABSENT:
                return stale  # type: ignore[return-value]
        raise failure

    def _landed(self, key: K, task: asyncio.Future[V]) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]
        if not task.cancelled():
            task.exception()  # seen: every waiter may have given up on its deadline

    async def _load(self, key: K, load: Callable[[], Awaitable[V]],
                    keep: Callable[[V], bool]) -> V:
        read_at = self.ticket()
        loaded = await load()
        if keep(loaded):
            self.put(key, loaded, read_at)
        return loaded

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)

    def expire_all(self) -> None:
        """Demote every entry, and every value read before now, to stale."""
        self._valid_after = time.monotonic()

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    MISSING = _ABSENT
