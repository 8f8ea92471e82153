"""What a failing Postgres looks like to asyncpg, and the one retry a dead pooled connection earns.

Kept apart from service/storage/db.py (the pool and its codecs) so the caches and
lookups can use it without import cycles.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

log = logging.getLogger(__name__)

T = TypeVar("T")

# What a pooled connection that died under us raises (Postgres restarted, backend terminated,
# network cut): the statement never ran, and a fresh connection may well succeed.
DEAD_CONNECTION = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.ConnectionFailureError,
    ConnectionResetError,
    BrokenPipeError,
    # A connection whose protocol state was left inconsistent by a session ended under it (the
    # primary stopped mid-statement in a failover): asyncpg refuses to start the statement
    # ("cannot switch to state 12; another operation (2) is in progress"). Seen by the soak as
    # a 500 on a write during a failover; the statement never ran.
    asyncpg.exceptions.InternalClientError,
)
# Postgres unreachable, refusing, or failing at the connection level (not a bad statement).
DATABASE_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InterfaceError,
    # Postgres refusing new connections (max_connections reached) is unavailable too.
    asyncpg.exceptions.TooManyConnectionsError,
    # No host of a multi-host URL is what its target_session_attrs asks for (a failover between
    # the old primary turning read-only and a standby being promoted).
    asyncpg.exceptions.TargetServerAttributeNotMatched,
    # A pooled connection asyncpg can no longer drive (see DEAD_CONNECTION): a 503 to retry.
    asyncpg.exceptions.InternalClientError,
)

# A write on a server that is (now) read-only: a standby, or a primary demoted by a failover.
READ_ONLY = asyncpg.exceptions.ReadOnlySQLTransactionError


async def read_retrying(read: Callable[[], Awaitable[T]], *, on_retry: Callable[[], None],
                        pool: asyncpg.Pool | None = None) -> T:
    """Run a read; if its pooled connection turns out dead, run it once more on a fresh one.

    After a Postgres restart or a failover the pool still holds connections to the old server,
    and asyncpg learns they are dead only by using them, one after another: a retry on the next
    pooled connection can meet a dead one too. So a dead connection expires all of `pool`'s
    (each is replaced at its next use, or when released), and the retry runs on a new one, which
    finds the server that answers now (or waits for the standby's promotion,
    service/storage/db.py). Reads are safe to repeat; writes never come here.
    """
    try:
        return await read()
    except DEAD_CONNECTION as exc:
        log.info("dead pooled connection; the pool's connections are replaced, retrying once",
                 extra={"error": type(exc).__name__})
        if pool is not None:
            await pool.expire_connections()
        on_retry()
        return await read()
