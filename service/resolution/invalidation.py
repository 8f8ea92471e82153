"""Cache invalidation: each process LISTENs for the NOTIFYs the database sends on every write.

Triggers (migrations/0002_cache_invalidation.sql) send one notification per statement on channel
`catalog_enricher`: which items of which catalogs changed (or "the whole catalog", or "all"), or
that keys or recommenders changed. The listener applies them at once: changed items are dropped
from L1 and L2, bulk changes demote a catalog's L1 entries to stale and bump its L2 epoch, and the
key and recommender caches (which subscribe with `on_keys_changed` / `on_recommenders_changed`,
from the layers above) are demoted to stale. A write is thus seen everywhere within the time a
notification takes (milliseconds), without waiting for any TTL.

LISTEN needs a connection of its own: the pool's connections are shared (and asyncpg's default
pool reset runs `UNLISTEN *`). While that connection is down, notifications are lost, so when it
drops the process demotes every cache entry to stale (still served when Postgres is down, never
as current), marks the pool's connections for replacement (Postgres may have restarted), and
listens again with a short backoff; once back it demotes again, for writes made in between. A
connection that dies silently (half-open: no reset ever arrives) is caught by a ping
(resolution/listener_ping.py) and dropped, which takes the same path.

Item notifications carry each item's new version (migration 0008: item ID → version, minus the old
version for a deletion), which the resolver notes so that no replica row older than a notified
change is cached (service/resolution/notified_versions.py); the ID lists of earlier payloads are
still understood.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson

from service.resolution.listener_ping import ConnectionPing
from service.resolution.resolver import ItemResolver
from service.runtime.metrics import Metrics
from service.storage.db_faults import DATABASE_UNAVAILABLE

log = logging.getLogger(__name__)

CHANNEL = "catalog_enricher"
RETRY_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0)


class InvalidationListener:
    def __init__(
        self, connect: Callable[[], Awaitable[asyncpg.Connection]], pool: asyncpg.Pool,
        resolver: ItemResolver, metrics: Metrics, *, ping_seconds: float = 2.0,
    ) -> None:
        self.connect = connect
        self.pool = pool
        self.resolver = resolver
        self.metrics = metrics
        self._on_keys: list[Callable[[], None]] = []
        self._on_recommenders: list[Callable[[], None]] = []
        self.connects = 0
        self.backend_pid: int | None = None
        self._conn: asyncpg.Connection | None = None
        self._closing = False
        self._reconnecting: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._connected = asyncio.Condition()
        self.ping_seconds = ping_seconds
        self._ping: ConnectionPing | None = None

    def on_keys_changed(self, callback: Callable[[], None]) -> None:
        """Call `callback` when API keys or tenants change, and after any missed notification."""
        self._on_keys.append(callback)

    def on_recommenders_changed(self, callback: Callable[[], None]) -> None:
        """Call `callback` when recommenders or catalogs change, and after any missed one."""
        self._on_recommenders.append(callback)

    async def start(self) -> None:
        await self._listen()

    async def close(self) -> None:
        self._closing = True
        if self._ping is not None:
            await self._ping.stop()
        if self._reconnecting:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
        if self._conn is not None:
            with contextlib.suppress(*DATABASE_UNAVAILABLE):
                await asyncio.wait_for(self._conn.close(), 2)
            self._conn.terminate()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def reconnect(self) -> None:
        """The server may no longer be the primary (a failover made it read-only): drop the
        connection; the termination path flushes and listens again, on the writable server."""
        if self._conn is not None and not self._closing:
            self._conn.terminate()

    async def wait_connected(self, count: int, within: float) -> None:
        """Until the listener has connected `count` times in all (for tests and readiness)."""
        async with asyncio.timeout(within), self._connected:
            await self._connected.wait_for(lambda: self.connects >= count)

    async def _listen(self) -> None:
        conn = await self.connect()
        try:
            await conn.add_listener(CHANNEL, self._on_notification)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._on_terminated)
        self._conn = conn
        self._ping = ConnectionPing(conn, self.ping_seconds)
        self._ping.start()
        self.backend_pid = conn.get_server_pid()
        self.connects += 1
        async with self._connected:
            self._connected.notify_all()

    def _on_terminated(self, conn: asyncpg.Connection) -> None:
        if self._closing or conn is not self._conn:
            return
        log.warning("invalidation listener lost its connection; caches demoted, listening again")
        self._conn = None
        if self._ping is not None:
            self._ping.cancel()
        self._flush_everything()
        # The pool's connections went to the same server, which may have restarted.
        self._spawn(self.pool.expire_connections())
        self._reconnecting = asyncio.ensure_future(self._relisten())

    async def _relisten(self) -> None:
        attempt = 0
        while not self._closing:
            delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
            await asyncio.sleep(delay)
            try:
                await self._listen()
            except (*DATABASE_UNAVAILABLE, asyncpg.PostgresError, RuntimeError) as exc:
                attempt += 1
                if attempt == 1 or attempt % 20 == 0:
                    log.warning("invalidation listener cannot reconnect yet",
                                extra={"error": type(exc).__name__, "attempts": attempt})
                continue
            # Writes made while nobody listened were missed.
            self._flush_everything()
            self.metrics.listener_reconnects.inc()
            log.info("invalidation listener listening again", extra={"attempts": attempt + 1})
            return

    def _flush_everything(self) -> None:
        self.resolver.flush_all()
        self._call(self._on_keys)
        self._call(self._on_recommenders)

    @staticmethod
    def _call(callbacks: list[Callable[[], None]]) -> None:
        for callback in callbacks:
            callback()

    def _on_notification(
        self, _conn: asyncpg.Connection, _pid: int, _channel: str, payload: str
    ) -> None:
        try:
            message: dict[str, Any] = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.error("unreadable invalidation payload; flushing everything")
            self.metrics.notifications.labels("unreadable").inc()
            self._flush_everything()
            return
        if message.get("keys"):
            self.metrics.notifications.labels("keys").inc()
            self._call(self._on_keys)
        if message.get("recommenders"):
            self.metrics.notifications.labels("recommenders").inc()
            self._call(self._on_recommenders)
        items = message.get("items")
        if items is not None:
            self.metrics.notifications.labels("items").inc()
            self._spawn(self._apply_items(items))

    async def _apply_items(self, items: dict[str, dict[str, int] | list[str] | None] | str
                           ) -> None:
        if not isinstance(items, dict):  # "all": a TRUNCATE
            await self.resolver.flush_everywhere()
            return
        for catalog, changed in items.items():
            if changed is None:
                await self.resolver.flush_catalog(int(catalog))
            elif isinstance(changed, dict):  # item ID → version (0008)
                await self.resolver.forget(int(catalog), list(changed), changed)
            else:
                await self.resolver.forget(int(catalog), changed)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
