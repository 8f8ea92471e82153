"""Recommenders of a tenant, each bound to one of its catalogs."""

from __future__ import annotations

from typing import Any

import asyncpg

UPSERT_RECOMMENDER = """
INSERT INTO recommenders (tenant_id, name, catalog_id, spec)
VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant_id, name)
DO UPDATE SET catalog_id = EXCLUDED.catalog_id, spec = EXCLUDED.spec, updated_at = now()
RETURNING id, (xmax = 0) AS inserted
"""
SELECT_RECOMMENDER = """
SELECT r.id, r.name, r.spec, r.updated_at, c.id AS catalog_id, c.name AS catalog_name
FROM recommenders r JOIN catalogs c ON c.id = r.catalog_id
WHERE r.tenant_id = $1 AND r.name = $2
"""


async def upsert_recommender(
    db: asyncpg.Pool | asyncpg.Connection, tenant_id: int, name: str, catalog_id: int,
    spec: dict[str, Any],
) -> bool:
    """Create or replace; says whether it was created."""
    row = await db.fetchrow(UPSERT_RECOMMENDER, tenant_id, name, catalog_id, spec)
    return row["inserted"]


async def fetch_recommender(
    db: asyncpg.Pool | asyncpg.Connection, tenant_id: int, name: str
) -> asyncpg.Record | None:
    return await db.fetchrow(SELECT_RECOMMENDER, tenant_id, name)
