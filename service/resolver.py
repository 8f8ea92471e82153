"""Resolution of many (catalog, item ID) pairs into items: the one path every lookup takes.

All IDs of a batch are deduplicated and fetched with a single `= ANY($1::text[])` query.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import asyncpg

from service.items import item_id_problem
from service.storage import items as item_store


class ItemResolver:
    def __init__(self, pool: asyncpg.Pool, *, query_timeout: float, acquire_timeout: float) -> None:
        self.pool = pool
        self.query_timeout = query_timeout
        self.acquire_timeout = acquire_timeout

    async def resolve(self, catalog_id: int, ids: Iterable[str]) -> dict[str, Any]:
        """Map each ID that exists in the catalog to its item record; unknown IDs are absent."""
        # IDs that cannot be stored (too long, NUL) cannot exist, and NUL would fail the query.
        wanted = [i for i in dict.fromkeys(ids) if item_id_problem(i) is None]
        if not wanted:
            return {}
        async with self.pool.acquire(timeout=self.acquire_timeout) as conn:
            rows = await item_store.fetch_items(conn, catalog_id, wanted, timeout=self.query_timeout)
        return {row["id"]: row for row in rows}
