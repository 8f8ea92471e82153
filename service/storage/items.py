"""Items of a catalog. `fetch_items` is the one bulk query behind every resolution."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from service.items import ItemFields

# Column order is shared by every SELECT here, so a record reads the same wherever it came from.
# The bulk read behind every resolution (and the caches) answers `updated_at` as microseconds since
# the epoch (service/items.py `format_timestamp` takes either): asyncpg makes a timestamptz into a
# datetime with timedelta arithmetic, as much as a third of what a cold row cost to read, for a
# field only the item API shows; an int8 costs nothing until it is shown.
# The JSON fields come as `json`, which asyncpg hands over as the stored text (a str, decoded
# without a Python call; None when empty), not as `jsonb` parsed into dicts by db.py's codec:
# most renders never look inside them (a recommender of titles, genres and images), and parsing
# every row's attributes was a tenth of a cold transform's CPU. json_codec.stored_object parses
# one where a render needs it (L2 keeps the text as it is).
SELECT_ITEMS_BY_IDS = """
SELECT id, title, genre, price_amount, price_currency, image_url, url, available,
       NULLIF(attributes, '{}')::json AS attributes, NULLIF(locales, '{}')::json AS locales,
       (extract(epoch FROM updated_at) * 1000000)::int8 AS updated_at, version
FROM items
WHERE catalog_id = $1 AND id = ANY($2::text[])
"""
SELECT_ITEM = """
SELECT id, title, genre, price_amount, price_currency, image_url, url, available,
       attributes, locales, updated_at, version
FROM items
WHERE catalog_id = $1 AND id = $2
"""
# A conditional write (If-Match, PATCH) locks the row it checks, so the check and the write see
# the same version.
LOCK_ITEM = """
SELECT id, title, genre, price_amount, price_currency, image_url, url, available,
       attributes, locales, updated_at, version
FROM items
WHERE catalog_id = $1 AND id = $2
FOR UPDATE
"""
# The one definition of "changed", shared by a PUT and an import (`INSERT INTO items AS i`): a
# write whose content equals the stored item updates nothing, so its version and updated_at stay
# (caches and consumers that sync by updated_since see no change). The price compares as text:
# 19.9 and 19.90 are different answers.
ON_CONFLICT_UPDATE_CHANGED = """
    ON CONFLICT (catalog_id, id) DO UPDATE SET
        title = EXCLUDED.title,
        genre = EXCLUDED.genre,
        price_amount = EXCLUDED.price_amount,
        price_currency = EXCLUDED.price_currency,
        image_url = EXCLUDED.image_url,
        url = EXCLUDED.url,
        available = EXCLUDED.available,
        attributes = EXCLUDED.attributes,
        locales = EXCLUDED.locales,
        updated_at = now(),
        version = nextval('item_versions')
    WHERE (i.title, i.genre, i.price_amount::text, i.price_currency, i.image_url, i.url,
           i.available, i.attributes, i.locales)
          IS DISTINCT FROM
          (EXCLUDED.title, EXCLUDED.genre, EXCLUDED.price_amount::text, EXCLUDED.price_currency,
           EXCLUDED.image_url, EXCLUDED.url, EXCLUDED.available, EXCLUDED.attributes,
           EXCLUDED.locales)
"""
# An unchanged item is answered with the stored row (the second SELECT). Only constants are
# joined here, never input.
UPSERT_ITEM = """
WITH written AS (
    INSERT INTO items AS i (catalog_id, id, title, genre, price_amount, price_currency, image_url,
                            url, available, attributes, locales)
    VALUES ($1, $2, $3, $4, $5::numeric, $6, $7, $8, $9, $10, $11)
""" + ON_CONFLICT_UPDATE_CHANGED + """
    RETURNING id, title, genre, price_amount, price_currency, image_url, url, available,
              attributes, locales, updated_at, version, (xmax = 0) AS inserted
)
SELECT * FROM written
UNION ALL
SELECT id, title, genre, price_amount, price_currency, image_url, url, available,
       attributes, locales, updated_at, version, false AS inserted
FROM items
WHERE catalog_id = $1 AND id = $2 AND NOT EXISTS (SELECT 1 FROM written)
"""  # noqa: S608 - constants joined, no input
# Create only: nothing is returned when the item already exists (If-None-Match: *).
INSERT_NEW_ITEM = """
INSERT INTO items (catalog_id, id, title, genre, price_amount, price_currency, image_url, url,
                   available, attributes, locales)
VALUES ($1, $2, $3, $4, $5::numeric, $6, $7, $8, $9, $10, $11)
ON CONFLICT (catalog_id, id) DO NOTHING
RETURNING id, title, genre, price_amount, price_currency, image_url, url, available,
          attributes, locales, updated_at, version, true AS inserted
"""
DELETE_ITEM = "DELETE FROM items WHERE catalog_id = $1 AND id = $2 RETURNING version"
# Keyset pages in ID order: `id > $2` walks the primary key from where the last page ended, so
# page 1,000 costs what page 1 does. The first page passes '' (every ID sorts after it: IDs are
# never empty).
SELECT_PAGE = """
SELECT id, title, genre, price_amount, price_currency, image_url, url, available,
       attributes, locales, updated_at
FROM items
WHERE catalog_id = $1 AND id > $2 AND ($3::text IS NULL OR genre = $3)
ORDER BY id
LIMIT $4
"""
SELECT_PAGE_UPDATED_SINCE = """
SELECT id, title, genre, price_amount, price_currency, image_url, url, available,
       attributes, locales, updated_at
FROM items
WHERE catalog_id = $1 AND id > $2 AND ($3::text IS NULL OR genre = $3) AND updated_at >= $5
ORDER BY id
LIMIT $4
"""


async def fetch_items(
    db: asyncpg.Pool | asyncpg.Connection, catalog_id: int, ids: list[str], *,
    timeout: float | None = None,
) -> list[asyncpg.Record]:
    """Every item of `ids` that exists, in one round trip (order not kept)."""
    return await db.fetch(SELECT_ITEMS_BY_IDS, catalog_id, ids, timeout=timeout)


async def fetch_item(
    db: asyncpg.Pool | asyncpg.Connection, catalog_id: int, item_id: str
) -> asyncpg.Record | None:
    return await db.fetchrow(SELECT_ITEM, catalog_id, item_id)


async def upsert_item(
    db: asyncpg.Pool | asyncpg.Connection, catalog_id: int, item: ItemFields
) -> tuple[asyncpg.Record, bool]:
    """Create or replace one item; also says whether it was created."""
    row = await db.fetchrow(UPSERT_ITEM, catalog_id, *_columns(item))
    return row, row["inserted"]


async def insert_new_item(
    db: asyncpg.Pool | asyncpg.Connection, catalog_id: int, item: ItemFields
) -> asyncpg.Record | None:
    """Create the item unless it exists (then None)."""
    return await db.fetchrow(INSERT_NEW_ITEM, catalog_id, *_columns(item))


def _columns(item: ItemFields) -> tuple:
    return (item.id, item.title, item.genre, item.price_amount, item.price_currency,
            item.image_url, item.url, item.available, item.attributes, item.locales)


async def lock_item(
    conn: asyncpg.Connection, catalog_id: int, item_id: str
) -> asyncpg.Record | None:
    """The item, locked until the caller's transaction ends (None if absent)."""
    return await conn.fetchrow(LOCK_ITEM, catalog_id, item_id)


async def delete_item(db: asyncpg.Pool | asyncpg.Connection, catalog_id: int,
                      item_id: str) -> int | None:
    """Delete the item; the version it had (None: there was none)."""
    return await db.fetchval(DELETE_ITEM, catalog_id, item_id)


async def fetch_page(
    db: asyncpg.Pool | asyncpg.Connection, catalog_id: int, *, after: str | None, limit: int,
    genre: str | None = None, updated_since: datetime | None = None,
) -> list[asyncpg.Record]:
    """Up to `limit` items after the ID `after`, in ID order, optionally filtered."""
    if updated_since is None:
        return await db.fetch(SELECT_PAGE, catalog_id, after or "", genre, limit)
    return await db.fetch(SELECT_PAGE_UPDATED_SINCE, catalog_id, after or "", genre, limit,
                          updated_since)
