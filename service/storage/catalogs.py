"""Catalogs of a tenant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.errors import Conflict, NotFound

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
SELECT_CATALOG_PAGE = """
SELECT id, name, description, created_at, updated_at
FROM catalogs WHERE tenant_id = $1 AND name > $2
ORDER BY name
LIMIT $3
"""
DELETE_CATALOG = "DELETE FROM catalogs WHERE tenant_id = $1 AND name = $2 RETURNING id"
SELECT_CATALOG_RECOMMENDERS = """
SELECT r.name FROM recommenders r JOIN catalogs c ON c.id = r.catalog_id
WHERE c.tenant_id = $1 AND c.name = $2
ORDER BY r.name
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


async def list_catalogs(
    db: asyncpg.Pool | asyncpg.Connection, tenant_id: int, *, after: str | None, limit: int
) -> list[Catalog]:
    """Up to `limit` of the tenant's catalogs after the name `after`, in name order."""
    rows = await db.fetch(SELECT_CATALOG_PAGE, tenant_id, after or "", limit)
    return [_catalog(row) for row in rows]


async def delete_catalog(db: asyncpg.Pool | asyncpg.Connection, tenant_id: int, name: str) -> None:
    """Delete a catalog and its items; refused while a recommender uses it."""
    try:
        deleted = await db.fetchval(DELETE_CATALOG, tenant_id, name)
    except asyncpg.ForeignKeyViolationError as exc:
        users = [r["name"] for r in await db.fetch(SELECT_CATALOG_RECOMMENDERS, tenant_id, name)]
        raise Conflict(
            f"catalog {name!r} is used by recommender(s) {', '.join(users)}; "
            "delete or repoint them first", field="catalog",
        ) from exc
    if deleted is None:
        raise NotFound(f"no catalog named {name!r}", field="catalog")
