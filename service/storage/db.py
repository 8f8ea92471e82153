"""The asyncpg pool: its per-connection codecs, its timeouts, and its place in the app lifecycle.

Codecs are set once per connection in `init`: jsonb travels as orjson bytes (no str round trip),
numeric as its exact text (prices are never floats, and never Decimal repr like `1E-7`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import asyncpg
import orjson

from service.runtime.settings import Settings, mask_url
from service.storage.db_faults import DATABASE_UNAVAILABLE

log = logging.getLogger(__name__)

JSONB_FORMAT_VERSION = b"\x01"


def _encode_jsonb(value: object) -> bytes:
    return JSONB_FORMAT_VERSION + orjson.dumps(value)


_EMPTY_OBJECT = JSONB_FORMAT_VERSION + b"{}"


def _decode_jsonb(data: bytes) -> object:
    # Most items have no attributes or per-locale texts: two `{}` per row of a cold transform.
    if data == _EMPTY_OBJECT:
        return {}
    return orjson.loads(memoryview(data)[1:])


async def init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection setup, run by the pool for every new connection."""
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", format="binary",
        encoder=_encode_jsonb, decoder=_decode_jsonb,
    )
    await conn.set_type_codec(
        "numeric", schema="pg_catalog", format="text", encoder=str, decoder=str,
    )


async def skip_session_reset(conn: asyncpg.Connection) -> None:
    """Release a pooled connection without asyncpg's default reset query.

    The default runs `RESET ALL; UNLISTEN *; CLOSE ALL; pg_advisory_unlock_all()` on every release:
    one more round trip per query. Pooled connections here never change session state (LISTEN and
    advisory locks use dedicated connections), and asyncpg still rolls back an open transaction
    before calling this.
    """


APPLICATION_NAME = "catalog-enricher"

# How long a new connection of the primary pool waits while no server of a multi-host
# DATABASE_URL is what its target_session_attrs asks for: a failover between the old primary
# turning read-only and the standby's promotion (about a second). Every use of the pool waits
# the same way, reads and writes, the key and recommender lookups included; a request's own
# deadline bounds its wait anyway.
FAILOVER_WAIT_SECONDS = 2.0
FAILOVER_RETRY_SECONDS = 0.1


async def connect_through_failover(*args: object, **kwargs: object) -> asyncpg.Connection:
    """asyncpg.connect, tried again every FAILOVER_RETRY_SECONDS for up to
    FAILOVER_WAIT_SECONDS while it raises TargetServerAttributeNotMatched."""
    give_up_at = time.monotonic() + FAILOVER_WAIT_SECONDS
    while True:
        try:
            return await asyncpg.connect(*args, **kwargs)
        except asyncpg.exceptions.TargetServerAttributeNotMatched:
            if time.monotonic() >= give_up_at:
                raise
        await asyncio.sleep(FAILOVER_RETRY_SECONDS)


def connect_kwargs(settings: Settings, *, dsn: str | None = None,
                   role: str | None = None) -> dict[str, object]:
    """asyncpg arguments for DATABASE_URL (or `dsn`); `role` names the connection's use in
    pg_stat_activity (`catalog-enricher-<role>`)."""
    name = APPLICATION_NAME if role is None else f"{APPLICATION_NAME}-{role}"
    return {
        "dsn": dsn or settings.database_url,
        "timeout": settings.db_connect_timeout,
        "command_timeout": settings.db_command_timeout,
        "server_settings": {"application_name": name},
    }


async def create_pool(settings: Settings, *, dsn: str | None = None, min_size: int | None = None,
                      role: str | None = None, through_failover: bool = True) -> asyncpg.Pool:
    url = dsn or settings.database_url
    try:
        return await asyncpg.create_pool(
            **connect_kwargs(settings, dsn=url, role=role),
            # The replica's pool does not wait: a replica that fails is left for the primary at
            # once (service/storage/read_routing.py).
            connect=connect_through_failover if through_failover else None,
            min_size=settings.db_pool_min if min_size is None else min_size,
            max_size=settings.db_pool_max,
            init=init_connection,
            reset=skip_session_reset,
            max_inactive_connection_lifetime=300.0,
        )
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        # The DSN is masked: the exception text from asyncpg never carries the password, but the
        # URL we name here would.
        raise RuntimeError(
            f"cannot connect to Postgres at {mask_url(url)}: {type(exc).__name__}: {exc}"
        ) from exc


async def connect(settings: Settings, *, role: str | None = None,
                  target_session_attrs: str | None = None) -> asyncpg.Connection:
    """A single connection outside the pool (migrations, LISTEN, CLI). `target_session_attrs`
    (libpq's, e.g. "read-write") picks among the hosts of a multi-host DATABASE_URL."""
    kwargs = connect_kwargs(settings, role=role)
    if target_session_attrs is not None:
        kwargs["target_session_attrs"] = target_session_attrs
    try:
        conn = await asyncpg.connect(**kwargs)
    except (*DATABASE_UNAVAILABLE, asyncpg.PostgresError) as exc:
        raise RuntimeError(
            f"cannot connect to Postgres at {mask_url(settings.database_url)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    await init_connection(conn)
    return conn


@contextlib.asynccontextmanager
async def open_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """The pool, checked with one query, closed on the way out (the app's cleanup_ctx holds it
    for exactly as long as the app runs)."""
    pool = await create_pool(settings)
    try:
        await pool.fetchval("SELECT 1")
        log.info("postgres pool ready", extra={"database": mask_url(settings.database_url)})
        yield pool
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def open_read_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool | None]:
    """The read replica's pool when DATABASE_READ_URL is set (else None). It opens connections
    only when used, so a replica that is down at start delays nothing and fails nothing: reads
    use the primary until it answers (service/storage/read_routing.py)."""
    if not settings.database_read_url:
        yield None
        return
    pool = await create_pool(settings, dsn=settings.database_read_url, min_size=0, role="read",
                             through_failover=False)
    try:
        log.info("read replica pool open",
                 extra={"database": mask_url(settings.database_read_url)})
        yield pool
    finally:
        await pool.close()


PING = "SELECT 1"


async def ping(conn: asyncpg.Connection, timeout: float) -> None:
    """One round trip on `conn`; TimeoutError when no answer comes within `timeout` seconds."""
    await conn.fetchval(PING, timeout=timeout)
