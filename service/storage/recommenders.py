"""Recommenders of a tenant, each bound to one of its catalogs and to any application IDs.

A recommender and its application-ID bindings are written in one transaction: a PUT whose
binding clashes with another recommender's changes nothing and raises Conflict naming the ID.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from service.errors import Conflict

UPSERT_RECOMMENDER = """
INSERT INTO recommenders (tenant_id, name, catalog_id, spec)
VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant_id, name)
DO UPDATE SET catalog_id = EXCLUDED.catalog_id, spec = EXCLUDED.spec, updated_at = now()
RETURNING id, (xmax = 0) AS inserted
"""
# Every SELECT of a recommender returns these columns, so a record reads the same everywhere.
_RECOMMENDER_COLUMNS = """
SELECT r.id, r.name, r.spec, r.updated_at, c.id AS catalog_id, c.name AS catalog_name,
       ARRAY(SELECT b.application_id FROM recommender_applications b
             WHERE b.recommender_id = r.id ORDER BY b.position) AS application_ids
FROM recommenders r JOIN catalogs c ON c.id = r.catalog_id
"""
SELECT_RECOMMENDER = _RECOMMENDER_COLUMNS + "WHERE r.tenant_id = $1 AND r.name = $2"
SELECT_RECOMMENDER_BY_APPLICATION = _RECOMMENDER_COLUMNS + """
JOIN recommender_applications bound ON bound.recommender_id = r.id
WHERE bound.application_id = $1 AND r.tenant_id = $2
"""
SELECT_RECOMMENDER_PAGE = _RECOMMENDER_COLUMNS + """
WHERE r.tenant_id = $1 AND r.name > $2
ORDER BY r.name
LIMIT $3
"""
DELETE_RECOMMENDER = "DELETE FROM recommenders WHERE tenant_id = $1 AND name = $2 RETURNING id"
UNBIND_OTHERS = """
DELETE FROM recommender_applications
WHERE recommender_id = $1 AND NOT (application_id = ANY($2::text[]))
"""
# A row bound to another recommender is locked but neither changed nor returned: the caller sees
# which IDs did not come back. Concurrent PUTs of one ID wait on the primary key, then see it too.
BIND = """
INSERT INTO recommender_applications (application_id, recommender_id, position)
SELECT application_id, $2, (ordinality - 1)::smallint
FROM unnest($1::text[]) WITH ORDINALITY AS wanted (application_id, ordinality)
ON CONFLICT (application_id) DO UPDATE SET position = EXCLUDED.position
WHERE recommender_applications.recommender_id = EXCLUDED.recommender_id
RETURNING application_id
"""
SELECT_BINDING_OWNERS = """
SELECT b.application_id, r.name, r.tenant_id
FROM recommender_applications b JOIN recommenders r ON r.id = b.recommender_id
WHERE b.application_id = ANY($1::text[])
"""


async def save_recommender(
    pool: asyncpg.Pool, tenant_id: int, name: str, catalog_id: int, spec: dict[str, Any],
    application_ids: list[str], *, acquire_timeout: float | None = None,
) -> bool:
    """Create or replace a recommender and its bindings, all or nothing; says if it was created."""
    async with pool.acquire(timeout=acquire_timeout) as conn, conn.transaction():
        row = await conn.fetchrow(UPSERT_RECOMMENDER, tenant_id, name, catalog_id, spec)
        await conn.execute(UNBIND_OTHERS, row["id"], application_ids)
        if application_ids:
            bound = {r["application_id"] for r in await conn.fetch(BIND, application_ids,
                                                                    row["id"])}
            taken = [a for a in application_ids if a not in bound]
            if taken:
                raise await _binding_conflict(conn, tenant_id, application_ids, taken)
        return row["inserted"]


async def upsert_recommender(
    db: asyncpg.Pool | asyncpg.Connection, tenant_id: int, name: str, catalog_id: int,
    spec: dict[str, Any],
) -> bool:
    """Create or replace a recommender, leaving its bindings as they are; says if it was created."""
    row = await db.fetchrow(UPSERT_RECOMMENDER, tenant_id, name, catalog_id, spec)
    return row["inserted"]


async def _binding_conflict(
    conn: asyncpg.Connection, tenant_id: int, wanted: list[str], taken: list[str]
) -> Conflict:
    owners = {r["application_id"]: r for r in await conn.fetch(SELECT_BINDING_OWNERS, taken)}
    owner_row = owners.get(taken[0])  # absent if unbound meanwhile: still a clash just now
    # Another tenant's recommender is not named: to this key it does not exist.
    if owner_row is not None and owner_row["tenant_id"] == tenant_id:
        owner = f"to recommender {owner_row['name']!r}"
    else:
        owner = "to another recommender in this deployment"
    more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
    return Conflict(
        f"application ID {taken[0]!r} is already bound {owner}{more}; "
        "an application ID picks one recommender",
        field=f"application_ids[{wanted.index(taken[0])}]",
    )


async def fetch_recommender(
    db: asyncpg.Pool | asyncpg.Connection, tenant_id: int, name: str
) -> asyncpg.Record | None:
    return await db.fetchrow(SELECT_RECOMMENDER, tenant_id, name)


async def fetch_recommender_for_application(
    db: asyncpg.Pool | asyncpg.Connection, tenant_id: int, application_id: str
) -> asyncpg.Record | None:
    return await db.fetchrow(SELECT_RECOMMENDER_BY_APPLICATION, application_id, tenant_id)


async def fetch_recommender_page(
    db: asyncpg.Pool | asyncpg.Connection, tenant_id: int, after: str, limit: int
) -> list[asyncpg.Record]:
    """Recommenders named after `after`, in name order (keyset pages)."""
    return await db.fetch(SELECT_RECOMMENDER_PAGE, tenant_id, after, limit)


async def delete_recommender(
    db: asyncpg.Pool | asyncpg.Connection, tenant_id: int, name: str
) -> bool:
    """Delete a recommender and its bindings; says whether there was one."""
    return await db.fetchval(DELETE_RECOMMENDER, tenant_id, name) is not None
