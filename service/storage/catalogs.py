"""Catalogs of a tenant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.errors import NotFound

UPSERT_CATALOG = """
INSERT INTO catalogs (tenant_id, name, description)
VALUES ($1, $2, $3)
ON CONFLICT (tenant_id, name)
DO UPDATE SET description = EXCLUDED.description, updated_at = now()
RETURNING id, name, description, created_at, updated_at, (xmax = 0) AS inserted
"""
SELECT_CATALOG = """
SELECT id, name, description, created_at, updated_at
FROM catalogs WHERE tenant_id = $1 AND name = $2
"""


@dataclass(frozen=True)
class Catalog:
    id: int
    name: str
    description: str | None
    created_at: datetime
    updated_at: datetime


def _catalog(row: asyncpg.Record) -> Catalog:
    return Catalog(row["id"], row["name"], row["description"], row["created_at"],
                   row["updated_at"])


async def upsert_catalog(
    db: asyncpg.Pool | asyncpg.Connection, tenant_id: int, name: str, description: str | None
) -> tuple[Catalog, bool]:
    """Create or update; also says whether it was created."""
    row = await db.fetchrow(UPSERT_CATALOG, tenant_id, name, description)
    return _catalog(row), row["inserted"]


async def find_catalog(
    db: asyncpg.Pool | asyncpg.Connection, tenant_id: int, name: str
) -> Catalog | None:
    row = await db.fetchrow(SELECT_CATALOG, tenant_id, name)
    return _catalog(row) if row else None


async def get_catalog(db: asyncpg.Pool | asyncpg.Connection, tenant_id: int, name: str) -> Catalog:
    catalog = await find_catalog(db, tenant_id, name)
    if catalog is None:
        # Another tenant's catalog is answered the same way: to this key it does not exist.
        raise NotFound(f"no catalog named {name!r}", field="catalog")
    return catalog
