"""Items of a catalog. `fetch_items` is the one bulk query behind every resolution."""

from __future__ import annotations

import asyncpg

from service.items import ItemFields

# Column order is shared by every SELECT here, so a record reads the same wherever it came from.
SELECT_ITEMS_BY_IDS = """
SELECT id, title, genre, price_amount, price_currency, image_url, url, available,
       attributes, locales, updated_at
FROM items
WHERE catalog_id = $1 AND id = ANY($2::text[])
"""
SELECT_ITEM = """
SELECT id, title, genre, price_amount, price_currency, image_url, url, available,
       attributes, locales, updated_at
FROM items
WHERE catalog_id = $1 AND id = $2
"""
UPSERT_ITEM = """
INSERT INTO items (catalog_id, id, title, genre, price_amount, price_currency, image_url, url,
                   available, attributes, locales)
VALUES ($1, $2, $3, $4, $5::numeric, $6, $7, $8, $9, $10, $11)
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
    updated_at = now()
RETURNING id, title, genre, price_amount, price_currency, image_url, url, available,
          attributes, locales, updated_at, (xmax = 0) AS inserted
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
    row = await db.fetchrow(
        UPSERT_ITEM, catalog_id, item.id, item.title, item.genre, item.price_amount,
        item.price_currency, item.image_url, item.url, item.available, item.attributes,
        item.locales,
    )
    return row, row["inserted"]
