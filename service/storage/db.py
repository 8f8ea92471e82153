"""The asyncpg pool: its per-connection codecs, its timeouts, and its place in the app lifecycle.

Codecs are set once per connection in `init`: jsonb travels as orjson bytes (no str round trip),
numeric as its exact text (prices are never floats, and never Decimal repr like `1E-7`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
import orjson

from service.runtime.settings import Settings, mask_url

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


def connect_kwargs(settings: Settings) -> dict[str, object]:
    return {
        "dsn": settings.database_url,
        "timeout": settings.db_connect_timeout,
        "command_timeout": settings.db_command_timeout,
        "server_settings": {"application_name": "catalog-enricher"},
    }


async def create_pool(settings: Settings) -> asyncpg.Pool:
    try:
        return await asyncpg.create_pool(
            **connect_kwargs(settings),
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            init=init_connection,
            reset=skip_session_reset,
            max_inactive_connection_lifetime=300.0,
        )
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        # The DSN is masked: the exception text from asyncpg never carries the password, but the
        # URL we name here would.
        raise RuntimeError(
            f"cannot connect to Postgres at {mask_url(settings.database_url)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


async def connect(settings: Settings) -> asyncpg.Connection:
    """A single connection outside the pool (migrations, LISTEN, CLI)."""
    try:
        conn = await asyncpg.connect(**connect_kwargs(settings))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
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


PING = "SELECT 1"


async def ping(conn: asyncpg.Connection, timeout: float) -> None:
    """One round trip on `conn`; TimeoutError when no answer comes within `timeout` seconds."""
    await conn.fetchval(PING, timeout=timeout)
