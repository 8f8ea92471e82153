"""Tenants and their API keys."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from service.errors import Conflict, NotFound

INSERT_TENANT = "INSERT INTO tenants (name) VALUES ($1) RETURNING id, name"
SELECT_TENANT = "SELECT id, name FROM tenants WHERE name = $1"
INSERT_KEY = """
INSERT INTO api_keys (tenant_id, prefix, key_hash, scopes, label)
VALUES ($1, $2, $3, $4, $5)
RETURNING id
"""
SELECT_KEY_BY_HASH = """
SELECT k.id, k.prefix, k.scopes, t.id AS tenant_id, t.name AS tenant_name
FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
WHERE k.key_hash = $1 AND k.revoked_at IS NULL
"""


@dataclass(frozen=True)
class Tenant:
    id: int
    name: str


@dataclass(frozen=True)
class KeyRecord:
    key_id: int
    prefix: str
    scopes: tuple[str, ...]
    tenant_id: int
    tenant_name: str


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


async def insert_key(
    db: asyncpg.Pool | asyncpg.Connection,
    tenant_id: int,
    prefix: str,
    key_hash: bytes,
    scopes: list[str],
    label: str | None,
) -> int:
    return await db.fetchval(INSERT_KEY, tenant_id, prefix, key_hash, scopes, label)


async def find_key(db: asyncpg.Pool | asyncpg.Connection, key_hash: bytes) -> KeyRecord | None:
    row = await db.fetchrow(SELECT_KEY_BY_HASH, key_hash)
    if row is None:
        return None
    return KeyRecord(row["id"], row["prefix"], tuple(row["scopes"]), row["tenant_id"],
                     row["tenant_name"])
