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
from urllib.parse import urlsplit, urlunsplit

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
# stopping (or turning read-only) and the standby's promotion (about a second). Every use of the
# pool waits the same way, reads and writes, the key and recommender lookups included; a
# request's own deadline bounds its wait anyway.
FAILOVER_WAIT_SECONDS = 2.0
FAILOVER_RETRY_SECONDS = 0.1

# A host that cannot be used at the connection level: unreachable, refusing, closing the
# connection during its start-up (a proxy or load balancer in front of a server that is gone),
# shutting down or starting up, or not what target_session_attrs asks for.
HOST_FAILURES = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TargetServerAttributeNotMatched,
)
# What says a failover is under way: a host that answers but is not writable yet, or that is
# shutting down or starting up.
FAILOVER_SIGNS = (asyncpg.exceptions.TargetServerAttributeNotMatched,
                  asyncpg.exceptions.CannotConnectNowError)


def single_host_dsns(dsn: object) -> list[str]:
    """One DSN per host of a multi-host `postgresql://user@h1:p1,h2:p2/db?...` (in its order);
    [] for a single host or a DSN in another form."""
    if not isinstance(dsn, str) or "://" not in dsn:
        return []
    parts = urlsplit(dsn)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    each = [host for host in hosts.split(",") if host]
    if len(each) < 2:
        return []
    return [urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}")) for host in each]


async def connect_to_any_host(*args: object, **kwargs: object) -> asyncpg.Connection:
    """asyncpg.connect that goes on to the next host of a multi-host DSN whenever a host fails at
    the connection level, as libpq does.

    asyncpg stops at a host that accepts the TCP connection and then closes it (a proxy or load
    balancer in front of a stopped primary), so the standby promoted behind the next address is
    never reached; and when every host fails it raises the last host's error (a refused
    connection), hiding that another host answered but is not writable yet, the one failure the
    pool waits through (`connect_through_failover`); and its timeout covers all the hosts
    together, so a first host that never answers (a machine gone) leaves none for the next. So
    when the DSN's hosts fail together, each is tried alone, with a timeout of its own: the first
    that can be used is returned; else TargetServerAttributeNotMatched if any answered as a
    failover does (not writable yet, shutting down or starting up), else the first error."""
    # The pool passes the DSN as the first argument, our own callers by name.
    dsn, rest = (args[0], args[1:]) if args else (kwargs.pop("dsn", None), ())
    try:
        return await asyncpg.connect(dsn, *rest, **kwargs)
    except HOST_FAILURES as exc:
        hosts = single_host_dsns(dsn)
        if not hosts:
            raise
        first: BaseException = exc
    under_way = isinstance(first, FAILOVER_SIGNS)
    for host in hosts:
        try:
            return await asyncpg.connect(host, *rest, **kwargs)
        except FAILOVER_SIGNS:
            under_way = True
        except HOST_FAILURES:
            continue
    if under_way:
        raise asyncpg.exceptions.TargetServerAttributeNotMatched(
            "no host is usable yet (a failover under way?)") from first
    raise first


async def connect_through_failover(*args: object, **kwargs: object) -> asyncpg.Connection:
    """`connect_to_any_host`, tried again every FAILOVER_RETRY_SECONDS for up to
    FAILOVER_WAIT_SECONDS while it raises TargetServerAttributeNotMatched."""
    give_up_at = time.monotonic() + FAILOVER_WAIT_SECONDS
    while True:
        try:
            return await connect_to_any_host(*args, **kwargs)
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
            connect=connect_through_failover if through_failover else connect_to_any_host,
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
        conn = await connect_to_any_host(**kwargs)
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
