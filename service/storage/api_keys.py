"""API keys in Postgres: create, look up, list, revoke, rotate; one implementation under the CLI
and the HTTP routes.

Only a key's SHA-256 is stored; the key itself leaves `create_key` / `rotate_key` once, for the
caller to show once. Nothing here returns a hash to its callers' answers: `KeyInfo` (what `keys
list` and `GET /v1/keys` show) holds no secret. Every write goes through the `api_keys` trigger,
whose notification reaches every process's key cache within milliseconds.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.errors import Conflict, NotFound, ValidationFailed
from service.items import format_timestamp
from service.key_rules import NewKey, generate_key, validate_scopes

INSERT_KEY = """
INSERT INTO api_keys (tenant_id, prefix, key_hash, scopes, label, expires_at)
VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6::double precision))
RETURNING id
"""
# What the authenticator caches. Time left is computed by Postgres at read time, so the check on
# the cached key needs no agreement between this machine's clock and the database's.
SELECT_KEY_BY_HASH = """
SELECT k.id, k.prefix, k.scopes, k.revoked_at IS NOT NULL AS revoked,
       extract(epoch FROM k.expires_at - now())::double precision AS expires_in,
       t.id AS tenant_id, t.name AS tenant_name, t.rate_limit_rps, t.rate_limit_burst
FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
WHERE k.key_hash = $1
"""
KEY_INFO = """
SELECT k.prefix, k.label, k.scopes, k.created_at, k.last_used_at, k.expires_at, k.revoked_at,
       n.prefix AS replaced_by, now() AS now
FROM api_keys k LEFT JOIN api_keys n ON n.id = k.replaced_by
"""
SELECT_KEY_PAGE = KEY_INFO + """
WHERE k.tenant_id = $1 AND k.prefix > $2
ORDER BY k.prefix
LIMIT $3
"""
SELECT_KEY_INFO = KEY_INFO + "WHERE k.tenant_id = $1 AND k.prefix = $2"
REVOKE_KEY = """
UPDATE api_keys SET revoked_at = now()
WHERE tenant_id = $1 AND prefix = $2 AND revoked_at IS NULL
RETURNING id
"""
LOCK_KEY_FOR_ROTATION = """
SELECT id, scopes, label, revoked_at IS NOT NULL AS revoked,
       expires_at IS NOT NULL AND expires_at <= now() AS expired,
       (SELECT n.prefix FROM api_keys n WHERE n.id = k.replaced_by) AS replaced_by
FROM api_keys k
WHERE tenant_id = $1 AND prefix = $2
FOR UPDATE
"""
# LEAST ignores NULL: a key without an expiry gets the grace's end; one that would expire sooner
# keeps its own end (a rotation never lengthens a key's life).
RETIRE_ROTATED_KEY = """
UPDATE api_keys
SET replaced_by = $2, expires_at = LEAST(expires_at, now() + make_interval(secs => $3::double precision))
WHERE id = $1
"""

# A new key whose prefix (48 random bits) clashes with one of the tenant's is made again.
INSERT_ATTEMPTS = 5


@dataclass(frozen=True)
class KeyRecord:
    """A key as the authenticator needs it (no hash, no secret)."""

    key_id: int
    prefix: str
    scopes: tuple[str, ...]
    tenant_id: int
    tenant_name: str
    revoked: bool = False
    expires_in: float | None = None  # seconds left when it was read; None: never expires
    rate_limit_rps: int | None = None
    rate_limit_burst: int = 0


@dataclass(frozen=True)
class KeyInfo:
    """What `keys list` and `GET /v1/keys` show of a key: never the key or its hash."""

    prefix: str
    label: str | None
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    replaced_by: str | None
    state: str  # "active", "expired" or "revoked"

    def as_json(self) -> dict[str, object]:
        def stamp(moment: datetime | None) -> str | None:
            return None if moment is None else format_timestamp(moment)

        return {
            "prefix": self.prefix, "label": self.label, "scopes": list(self.scopes),
            "state": self.state, "created_at": stamp(self.created_at),
            "last_used_at": stamp(self.last_used_at), "expires_at": stamp(self.expires_at),
            "revoked_at": stamp(self.revoked_at), "replaced_by": self.replaced_by,
        }


@dataclass(frozen=True)
class CreatedKey:
    """A key just made: `key` is to be shown once and then forgotten."""

    key: str
    info: KeyInfo


def _info(row: asyncpg.Record) -> KeyInfo:
    if row["revoked_at"] is not None:
        state = "revoked"
    elif row["expires_at"] is not None and row["expires_at"] <= row["now"]:
        state = "expired"
    else:
        state = "active"
    return KeyInfo(row["prefix"], row["label"], tuple(row["scopes"]), row["created_at"],
                   row["last_used_at"], row["expires_at"], row["revoked_at"], row["replaced_by"],
                   state)


def checked_scopes(scopes: Iterable[str]) -> list[str]:
    """Known scopes, deduplicated in canonical order; a 422 naming `scopes` otherwise."""
    try:
        return validate_scopes(list(scopes))
    except ValueError as exc:
        raise ValidationFailed.of("scopes", str(exc)) from exc


async def insert_key(
    db: asyncpg.Pool | asyncpg.Connection, tenant_id: int, prefix: str, key_hash: bytes,
    scopes: list[str], label: str | None, expires_in: float | None = None,
) -> int:
    return await db.fetchval(INSERT_KEY, tenant_id, prefix, key_hash, scopes, label,
                             None if expires_in is None else float(expires_in))


async def _insert_new_key(conn: asyncpg.Connection, tenant_id: int, scopes: list[str],
                          label: str | None, expires_in: float | None) -> tuple[NewKey, int]:
    for attempt in range(INSERT_ATTEMPTS):
        key = generate_key()
        try:
            # A savepoint: a clash must not abort the caller's transaction.
            async with conn.transaction():
                key_id = await insert_key(conn, tenant_id, key.prefix, key.key_hash, scopes,
                                          label, expires_in)
            return key, key_id
        except asyncpg.UniqueViolationError:
            if attempt == INSERT_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


async def create_key(
    db: asyncpg.Pool | asyncpg.Connection, tenant_id: int, scopes: Iterable[str], *,
    label: str | None = None, expires_in: float | None = None,
    acquire_timeout: float | None = None,
) -> CreatedKey:
    """A new key for the tenant; the caller has checked that whoever asks may grant `scopes`."""
    granted = checked_scopes(scopes)
    async with _connection(db, acquire_timeout) as conn:
        key, _ = await _insert_new_key(conn, tenant_id, granted, label, expires_in)
        info = await conn.fetchrow(SELECT_KEY_INFO, tenant_id, key.prefix)
    return CreatedKey(key.key, _info(info))


async def find_key(db: asyncpg.Pool | asyncpg.Connection, key_hash: bytes) -> KeyRecord | None:
    row = await db.fetchrow(SELECT_KEY_BY_HASH, key_hash)
    if row is None:
        return None
    return KeyRecord(row["id"], row["prefix"], tuple(row["scopes"]), row["tenant_id"],
                     row["tenant_name"], row["revoked"], row["expires_in"],
                     row["rate_limit_rps"], row["rate_limit_burst"])


async def list_keys(db: asyncpg.Pool | asyncpg.Connection, tenant_id: int, *, after: str = "",
                    limit: int = 1000) -> list[KeyInfo]:
    """The tenant's keys in prefix order, revoked and expired ones included."""
    return [_info(row) for row in await db.fetch(SELECT_KEY_PAGE, tenant_id, after, limit)]


async def get_key_info(db: asyncpg.Pool | asyncpg.Connection, tenant_id: int,
                       prefix: str) -> KeyInfo:
    row = await db.fetchrow(SELECT_KEY_INFO, tenant_id, prefix)
    if row is None:
        raise NotFound(f"no key with prefix {prefix!r}", field="prefix")
    return _info(row)


async def revoke_key(db: asyncpg.Pool | asyncpg.Connection, tenant_id: int, prefix: str, *,
                     acquire_timeout: float | None = None) -> tuple[KeyInfo, bool]:
    """Revoke the tenant's key; returns it and whether this call revoked it (False: it already
    was). Another tenant's prefix is not found."""
    async with _connection(db, acquire_timeout) as conn:
        revoked = await conn.fetchval(REVOKE_KEY, tenant_id, prefix) is not None
        return await get_key_info(conn, tenant_id, prefix), revoked


async def rotate_key(
    db: asyncpg.Pool | asyncpg.Connection, tenant_id: int, prefix: str, *, grace: float,
    expires_in: float | None = None, acquire_timeout: float | None = None,
) -> tuple[CreatedKey, KeyInfo]:
    """A new key with the old one's scopes and label; the old one expires when `grace` seconds
    have passed (sooner if it was to expire sooner). Returns the new key and the old one."""
    async with _connection(db, acquire_timeout) as conn, conn.transaction():
        old = await conn.fetchrow(LOCK_KEY_FOR_ROTATION, tenant_id, prefix)
        if old is None:
            raise NotFound(f"no key with prefix {prefix!r}", field="prefix")
        if old["revoked"]:
            raise Conflict(f"key {prefix} is revoked; create a new key instead", field="prefix")
        # Rotated before it expired: its successor is what to rotate, also once the grace is over.
        if old["replaced_by"] is not None:
            raise Conflict(f"key {prefix} was already rotated to {old['replaced_by']}; rotate "
                           "that one", field="prefix")
        if old["expired"]:
            raise Conflict(f"key {prefix} has expired; create a new key instead", field="prefix")
        key, key_id = await _insert_new_key(conn, tenant_id, list(old["scopes"]), old["label"],
                                            expires_in)
        await conn.execute(RETIRE_ROTATED_KEY, old["id"], key_id, float(grace))
        new_info = await get_key_info(conn, tenant_id, key.prefix)
        old_info = await get_key_info(conn, tenant_id, prefix)
    return CreatedKey(key.key, new_info), old_info


@contextlib.asynccontextmanager
async def _connection(db: asyncpg.Pool | asyncpg.Connection,
                      acquire_timeout: float | None = None) -> AsyncIterator[asyncpg.Connection]:
    """A pool's connection for the duration, or the given connection as it is."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire(timeout=acquire_timeout) as conn:
            yield conn
    else:
        yield db
