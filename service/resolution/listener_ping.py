"""Noticing that the LISTEN connection died without a word, as a half-open connection does.

A connection can die silently: the server frozen, a NAT or load balancer that forgot it, a
network partition, a failover behind a virtual IP. No reset ever arrives, the socket stays open,
and LISTEN simply hears nothing: every write is missed until TTLs run out. So the connection is
pinged (one `SELECT 1`) every ENRICHER_LISTENER_PING_SECONDS, and a ping left unanswered for as
long again means the connection is dead: it is terminated, which runs its termination listeners
as a real drop would (the invalidation listener then flushes and listens again). A dead
connection is thus noticed within twice that interval.

A ping is application-level on purpose: TCP keepalives would catch a vanished peer, but not a
server whose kernel still answers while Postgres itself is stuck, and they take the kernel's
settings (or per-socket options asyncpg does not expose).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from service.storage.db import ping

log = logging.getLogger(__name__)


class ConnectionPing:
    def __init__(self, conn: asyncpg.Connection, every: float) -> None:
        self.conn = conn
        self.every = every
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        self.cancel()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while not self.conn.is_closed():
            await asyncio.sleep(self.every)
            try:
                await ping(self.conn, timeout=self.every)
            except Exception as exc:
                # Unanswered (TimeoutError), refused, or the protocol left in a state no query
                # can start from (asyncpg's InternalClientError after the server's FATAL on an
                # idle connection): in every case this connection no longer listens reliably.
                if self.conn.is_closed():
                    return  # it dropped for all to see: the termination listener has it
                log.warning("the LISTEN connection did not answer a ping; dropping it",
                            extra={"error": type(exc).__name__, "seconds": self.every})
                self.conn.terminate()
                return
