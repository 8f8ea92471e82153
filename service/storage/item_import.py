"""SQL of a bulk import: a per-catalog lock, a temporary staging table filled with COPY, and the set
statements that move staged rows into `items` (one upsert, one delete in replace mode).

Everything here runs inside the import's one transaction: the staging table is dropped at its end
(ON COMMIT DROP), and a rollback leaves `items` untouched.
"""

from __future__ import annotations

import asyncpg

from service.storage.items import ON_CONFLICT_UPDATE_CHANGED

# The two-key form of advisory locks is a key space of its own (the migration lock uses one
# bigint key), so the first key only has to be constant within this service.
IMPORT_LOCK_CLASS = 1_815_004
TRY_LOCK_CATALOG = "SELECT pg_try_advisory_xact_lock($1, ($2 % 2147483647)::int)"

CREATE_STAGING = """
CREATE TEMP TABLE import_staging (
    line            bigint NOT NULL,
    id              text NOT NULL,
    rejected        boolean NOT NULL,
    title           text,
    genre           text,
    price_amount    text,
    price_currency  text,
    image_url       text,
    url             text,
    available       boolean,
    attributes      jsonb,
    locales         jsonb,
    duplicate_of    bigint
) ON COMMIT DROP
"""
STAGING_TABLE = "import_staging"
# Order of the tuples given to copy_records_to_table.
STAGING_COLUMNS = ("line", "id", "rejected", "title", "genre", "price_amount", "price_currency",
                   "image_url", "url", "available", "attributes", "locales")
# Temporary tables are never analysed by autovacuum; without statistics the planner would guess
# a few hundred rows and pick nested loops for a million.
ANALYZE_STAGING = "ANALYZE import_staging"

# A later line with the ID of an earlier valid line is refused: the file is ambiguous there.
MARK_DUPLICATES = """
WITH firsts AS (
    SELECT id, min(line) AS first_line
    FROM import_staging
    WHERE NOT rejected
    GROUP BY id
    HAVING count(*) > 1
)
UPDATE import_staging s SET duplicate_of = f.first_line
FROM firsts f
WHERE s.id = f.id AND NOT s.rejected AND s.line > f.first_line
"""
SELECT_DUPLICATES = """
SELECT line, id, duplicate_of FROM import_staging
WHERE duplicate_of IS NOT NULL
ORDER BY line
LIMIT $1
"""

# Rows whose content equals the stored item are not touched (no new version, no new
# updated_at): they are what the answer counts as unchanged. "Changed" means what it means for a
# PUT: the clause is shared.
UPSERT_STAGED = """
WITH written AS (
    INSERT INTO items AS i (catalog_id, id, title, genre, price_amount, price_currency, image_url,
                            url, available, attributes, locales)
    SELECT $1, id, title, genre, price_amount::numeric, price_currency, image_url, url,
           available, attributes, locales
    FROM import_staging
    WHERE NOT rejected AND duplicate_of IS NULL
""" + ON_CONFLICT_UPDATE_CHANGED + """
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted) AS inserted,
       count(*) FILTER (WHERE NOT inserted) AS updated
FROM written
"""  # noqa: S608 - constants joined, no input
# Replace mode: an item whose ID is nowhere in the file goes. A refused line that still had a
# readable ID keeps its item: a typo in one line must not delete the product.
DELETE_ABSENT = """
DELETE FROM items i
WHERE i.catalog_id = $1
  AND NOT EXISTS (SELECT 1 FROM import_staging s WHERE s.id = i.id)
"""


def _count(status: str) -> int:
    """The row count of a command tag like `UPDATE 12` or `DELETE 3`."""
    return int(status.rsplit(" ", 1)[-1])


async def try_lock_catalog(conn: asyncpg.Connection, catalog_id: int) -> bool:
    """Take the catalog's import lock for this transaction, unless another import holds it."""
    return await conn.fetchval(TRY_LOCK_CATALOG, IMPORT_LOCK_CLASS, catalog_id)


async def create_staging(conn: asyncpg.Connection) -> None:
    await conn.execute(CREATE_STAGING)


async def copy_staged(
    conn: asyncpg.Connection, records: list[tuple], *, statement_timeout: float
) -> None:
    await conn.copy_records_to_table(STAGING_TABLE, records=records, columns=STAGING_COLUMNS,
                                     timeout=statement_timeout)


async def mark_duplicates(
    conn: asyncpg.Connection, listed: int, *, statement_timeout: float
) -> tuple[int, list[asyncpg.Record]]:
    """Flag repeated IDs; returns how many lines repeat one, and the first `listed` of them."""
    await conn.execute(ANALYZE_STAGING, timeout=statement_timeout)
    count = _count(await conn.execute(MARK_DUPLICATES, timeout=statement_timeout))
    first = await conn.fetch(SELECT_DUPLICATES, listed, timeout=statement_timeout) if count else []
    return count, first


async def upsert_staged(conn: asyncpg.Connection, catalog_id: int, *,
                        statement_timeout: float) -> tuple[int, int]:
    """Write the staged valid rows into the catalog; returns (inserted, updated)."""
    row = await conn.fetchrow(UPSERT_STAGED, catalog_id, timeout=statement_timeout)
    return row["inserted"], row["updated"]


async def delete_absent(
    conn: asyncpg.Connection, catalog_id: int, *, statement_timeout: float
) -> int:
    return _count(await conn.execute(DELETE_ABSENT, catalog_id, timeout=statement_timeout))
