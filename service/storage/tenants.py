"""Tenants: create, find, list, and their rate limits.

A tenant's keys live in service/storage/api_keys.py; `insert_key`, `find_key` and `KeyRecord`
are also reachable from here, where callers written before the split look for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.errors import Conflict, NotFound
from service.items import format_timestamp
from service.storage.api_keys import KeyRecord, find_key, insert_key

__all__ = [
    "KeyRecord", "Tenant", "TenantInfo", "create_tenant", "find_key", "find_tenant",
    "get_tenant", "insert_key", "list_tenants", "set_rate_limit",
]

INSERT_TENANT = "INSERT INTO tenants (name) VALUES ($1) RETURNING id, name"
SELECT_TENANT = "SELECT id, name FROM tenants WHERE name = $1"
SELECT_TENANTS = """
SELECT t.name, t.created_at, t.rate_limit_rps, t.rate_limit_burst,
       count(k.id) FILTER (WHERE k.revoked_at IS NULL
                             AND (k.expires_at IS NULL OR k.expires_at > now())) AS active_keys
FROM tenants t LEFT JOIN api_keys k ON k.tenant_id = t.id
GROUP BY t.id
ORDER BY t.name
"""
# NULL rps clears the limit (the burst goes back to 0 with it).
SET_RATE_LIMIT = """
UPDATE tenants SET rate_limit_rps = $2, rate_limit_burst = $3 WHERE name = $1
RETURNING id
"""


@dataclass(frozen=True)
class Tenant:
    id: int
    name: str


@dataclass(frozen=True)
class TenantInfo:
    """What `tenants list` shows."""

    name: str
    created_at: datetime
    rate_limit_rps: int | None
    rate_limit_burst: int
    active_keys: int

    def as_json(self) -> dict[str, object]:
        limit = None if self.rate_limit_rps is None else {
            "rps": self.rate_limit_rps, "burst": self.rate_limit_burst}
        return {"name": self.name, "created_at": format_timestamp(self.created_at),
                "active_keys": self.active_keys, "rate_limit": limit}


async def create_tenant(db: asyncpg.Pool | asyncpg.Connection, name: str) -> Tenant:
    try:
        row = await db.fetchrow(INSERT_TENANT, name)
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"a tenant named {name!r} already exists", field="name") from exc
    return Tenant(row["id"], row["name"])


async def find_tenant(db: asyncpg.Pool | asyncpg.Connection, name: str) -> Tenant | None:
    row = await db.fetchrow(SELECT_TENANT, name)
    return Tenant(row["id"], row["name"]) if row else None


async def get_tenant(db: asyncpg.Pool | asyncpg.Connection, name: str) -> Tenant:
    tenant = await find_tenant(db, name)
    if tenant is None:
        raise NotFound(f"no tenant named {name!r}", field="tenant")
    return tenant


async def list_tenants(db: asyncpg.Pool | asyncpg.Connection) -> list[TenantInfo]:
    return [TenantInfo(r["name"], r["created_at"], r["rate_limit_rps"], r["rate_limit_burst"],
                       r["active_keys"]) for r in await db.fetch(SELECT_TENANTS)]


async def set_rate_limit(db: asyncpg.Pool | asyncpg.Connection, name: str, rps: int | None,
                         burst: int = 0) -> None:
    """Limit the tenant to `rps` requests a second and `burst` more at once; None clears it."""
    if await db.fetchval(SET_RATE_LIMIT, name, rps, 0 if rps is None else burst) is None:
        raise NotFound(f"no tenant named {name!r}", field="tenant")
