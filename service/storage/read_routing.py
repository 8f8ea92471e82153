"""Where item reads run: on the read replica (DATABASE_READ_URL) while it answers and is close
enough behind the primary, else on the primary (DATABASE_URL); and the watch that decides it.

Only item reads come here (the resolver's batches, list pages). Everything that must see its own
writes (writes, imports, migrations, keys, recommenders, catalogs) and LISTEN use the primary's
pool or connections directly: NOTIFY is not delivered on a standby.

A watch task samples the replica once a second: its lag behind the primary, from
`pg_last_xact_replay_timestamp()` (zero when it has replayed all it received, or is not a standby
at all), kept in `enricher_replica_lag_seconds`. Reads go to the replica only while its last
sample, aged by the time since, is within `max_lag`: the window for which processes remember
notified item versions (service/resolution/notified_versions.py) is longer than that, so no row
older than a notified change can be cached from it. A replica that fails (down, refusing, its
statement cancelled by recovery) is left at once for the primary, within the same read (no request
fails for it), and used again after the next sample that succeeds; a statement the replica refuses
otherwise (a migration it has not replayed yet) is run on the primary.

A process that starts was told of no change committed before it listened: until the replica has
replayed the primary's WAL as of then (`hold_until_replayed`, once the listener is up), none of its
rows is read, so a change made just before the start cannot come back from a lagging replica.

The watch also asks the primary whether it has turned read-only (a failover that demoted it, or
an address now pointing at a standby): if so, or when a write meets SQLSTATE 25006 (the web layer
calls `primary_read_only`), the primary pool's connections are replaced, so that new ones find the
writable server (a multi-host DATABASE_URL with `target_session_attrs=read-write`), and whoever
subscribed (the invalidation listener) is told.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from service.runtime.metrics import Metrics
from service.storage.db_faults import DATABASE_UNAVAILABLE, read_retrying

log = logging.getLogger(__name__)

T = TypeVar("T")

# Seconds a standby is behind its primary; 0 when it has replayed everything it received (an
# idle primary sends nothing, so the last replay time says nothing then) or is a primary itself.
# And whether it has replayed the primary's WAL up to $1 (see `hold_until_replayed`).
SELECT_REPLICA_STATE = """
SELECT CASE
           WHEN NOT pg_is_in_recovery() THEN 0
           WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
           ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())
       END::float8 AS lag,
       coalesce(NOT pg_is_in_recovery() OR pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)
           AS replayed
"""
SELECT_PRIMARY_LSN = "SELECT pg_current_wal_lsn()::text"
# A standby answers `on` too (hot standby transactions are read-only).
SELECT_READ_ONLY = "SELECT current_setting('transaction_read_only') = 'on'"

SAMPLE_EVERY = 1.0
PROBE_TIMEOUT = 1.0
# What sends a read from the replica to the primary: the replica unreachable or failing at the
# connection level (a multi-host DATABASE_READ_URL with no host matching its
# target_session_attrs included), a statement cancelled by a conflict with recovery (40001), or
# asyncpg confused by a server shutting down under a statement ("cannot switch to state 12;
# another operation is in progress", seen when a standby stops under load).
REPLICA_FAILURES = (
    *DATABASE_UNAVAILABLE,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.InternalClientError,
)


class ReadRouting:
    def __init__(
        self, primary: asyncpg.Pool, replica: asyncpg.Pool | None = None, *,
        max_lag: float = 10.0, acquire_timeout: float = 5.0, metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.replica = replica
        self.max_lag = max_lag
        self.acquire_timeout = acquire_timeout
        self.metrics = metrics
        self.clock = clock
        self.lag: float | None = None  # at the last sample that succeeded; None: not known
        self._sampled_at = float("-inf")
        self._healthy = False  # the last use or sample of the replica succeeded
        # Until the replica has replayed the primary's WAL up to `_hold_lsn` (None: not known yet).
        self._held = replica is not None
        self._hold_lsn: str | None = None
        self._listening = False  # hold_until_replayed was called: the LSN may be taken now
        self._on_read_only: list[Callable[[], None]] = []
        self._read_only_handled_at = float("-inf")
        self._watch: asyncio.Task | None = None
        if metrics is not None:
            self._reads = {
                True: metrics.db_reads.labels("replica"), False: metrics.db_reads.labels("primary"),
            }
            metrics.replica_in_use.set_function(lambda: float(self.replica_usable))

    @property
    def replica_usable(self) -> bool:
        """Whether item reads go to the replica now."""
        if self.replica is None or self._held or not self._healthy or self.lag is None:
            return False
        # Lag grows at most as fast as time passes: bound it by the sample's age.
        return self.lag + (self.clock() - self._sampled_at) <= self.max_lag

    def on_primary_read_only(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the primary turns out read-only (its pool is then refreshed)."""
        self._on_read_only.append(callback)

    async def read(
        self, query: Callable[[asyncpg.Connection], Awaitable[T]], *, replica: bool = True,
        on_retry: Callable[[], None] = lambda: None,
    ) -> tuple[T, bool]:
        """Run `query` on a pooled connection of the replica (when `replica` and it is usable),
        else of the primary; also says whether it ran on the replica. A replica failure is not
        raised: the query runs on the primary instead."""
        standby = self.replica
        if replica and standby is not None and self.replica_usable:
            try:
                result = await read_retrying(lambda: self._on(standby, query), on_retry=on_retry,
                                             pool=standby)
            except REPLICA_FAILURES as exc:
                self._replica_failed(exc)
            except asyncpg.PostgresError as exc:
                # Not the replica's health, but maybe its state (a migration not replayed yet):
                # this read is the primary's; a statement wrong everywhere fails there too.
                log.info("read refused by the replica; asking the primary",
                         extra={"error": type(exc).__name__})
            else:
                self._count(True)
                return result, True
        # While no server of DATABASE_URL is writable (a failover under way), the primary
        # pool's new connections wait for one (service/storage/db.connect_through_failover).
        result = await read_retrying(lambda: self._on(self.primary, query), on_retry=on_retry,
                                     pool=self.primary)
        self._count(False)
        return result, False

    async def _on(self, pool: asyncpg.Pool,
                  query: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        # Both waits are bounded: for a pooled connection here, the statement by its caller.
        async with pool.acquire(timeout=self.acquire_timeout) as conn:
            return await query(conn)

    def _count(self, on_replica: bool) -> None:
        if self.metrics is not None:
            self._reads[on_replica].inc()

    def _replica_failed(self, exc: BaseException) -> None:
        if self._healthy:
            log.warning("read replica failed; item reads go to the primary until it answers",
                        extra={"error": type(exc).__name__})
        self._healthy = False

    async def primary_read_only(self) -> None:
        """The primary refused a write as read-only (SQLSTATE 25006), or said so when asked:
        replace its pooled connections and tell the subscribers (at most once a second)."""
        # Every time: a connection made just after the last replacement may have found the old
        # primary still writable (a reload takes effect a moment after pg_reload_conf returns)
        # and turned read-only since. Connections in use are closed when released, idle ones on
        # their next acquire.
        await self.primary.expire_connections()
        now = self.clock()
        if now - self._read_only_handled_at < SAMPLE_EVERY:
            return
        self._read_only_handled_at = now
        log.warning("the primary is read-only (a failover?); its connections are replaced")
        for callback in self._on_read_only:
            callback()

    async def hold_until_replayed(self) -> None:
        """Read nothing from the replica until it has replayed what the primary has written so
        far. Called once this process listens for changes: those committed before, it was never
        told of. (Until then the replica is not read at all.)"""
        if self.replica is None:
            return
        self._listening = True
        await self._take_hold_lsn()
        await self._sample_replica(self.replica)

    async def _take_hold_lsn(self) -> None:
        try:
            self._hold_lsn = await read_retrying(
                lambda: self._probe(self.primary, SELECT_PRIMARY_LSN), on_retry=lambda: None,
                pool=self.primary,
            )  # type: ignore[assignment]
        except (*DATABASE_UNAVAILABLE, asyncpg.PostgresError) as exc:  # asked again each sample
            log.warning("cannot ask the primary for its WAL position yet; the replica waits",
                        extra={"error": type(exc).__name__})

    async def sample(self) -> None:
        """One look at the replica's lag and the primary's role."""
        if self.replica is not None:
            if self._held and self._hold_lsn is None and self._listening:
                await self._take_hold_lsn()
            await self._sample_replica(self.replica)
        if self._on_read_only:
            try:
                read_only = await read_retrying(
                    lambda: self._probe(self.primary, SELECT_READ_ONLY), on_retry=lambda: None,
                    pool=self.primary,
                )
            except (*DATABASE_UNAVAILABLE, asyncpg.PostgresError):
                return  # a primary that is down is seen by requests and the listener
            if read_only:
                await self.primary_read_only()

    async def _sample_replica(self, replica: asyncpg.Pool) -> None:
        try:
            state = await read_retrying(
                lambda: self._probe(replica, SELECT_REPLICA_STATE, self._hold_lsn or "0/0",
                                    row=True),
                on_retry=lambda: None, pool=replica,
            )
        except (*REPLICA_FAILURES, asyncpg.PostgresError) as exc:
            self._replica_failed(exc)
            self._set_lag(None)
            return
        lag, replayed = state["lag"], state["replayed"]  # type: ignore[index]
        self._set_lag(lag)
        self._sampled_at = self.clock()
        if self._held and self._hold_lsn is not None and replayed:
            log.info("read replica has replayed what this process was not told of",
                     extra={"lsn": self._hold_lsn})
            self._held = False
        if lag is not None and not self._healthy:
            log.info("read replica answers; item reads go to it", extra={"lag_seconds": lag})
            self._healthy = True

    def _set_lag(self, lag: float | None) -> None:
        self.lag = lag
        if self.metrics is not None:
            self.metrics.replica_lag.set(math.nan if lag is None else lag)

    @staticmethod
    async def _probe(pool: asyncpg.Pool, sql: str, *args: object, row: bool = False) -> object:
        async with pool.acquire(timeout=PROBE_TIMEOUT) as conn:
            if row:
                return await conn.fetchrow(sql, *args, timeout=PROBE_TIMEOUT)
            return await conn.fetchval(sql, *args, timeout=PROBE_TIMEOUT)

    async def start(self) -> None:
        """Sample once now (a replica that is down is not fatal), then once a second."""
        await self.sample()
        self._watch = asyncio.ensure_future(self._watch_forever())

    async def _watch_forever(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_EVERY)
            try:
                await self.sample()
            except Exception:  # the watch must outlive anything a sample meets
                log.exception("replica watch failed; trying again")

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._watch, PROBE_TIMEOUT * 4)
