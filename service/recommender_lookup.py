"""Finding a tenant's recommender by name, with a short per-process cache.

A transform must cost one round trip (the item query), so the recommender is cached for the same
time as API keys; a PUT through this process evicts it at once, and a change made anywhere reaches
every process within a second through invalidation notifications (service/invalidation.py). When
Postgres cannot be asked, the last known definition is used (stale), so cached items can still be
served.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.db_faults import read_retrying
from service.deadline import Deadline
from service.errors import NotFound
from service.expiring_map import ExpiringMap
from service.recommenders import RecommenderSpec
from service.storage import recommenders as recommender_store


@dataclass(frozen=True)
class Recommender:
    id: int
    tenant_id: int
    name: str
    catalog_id: int
    spec: RecommenderSpec
    updated_at: datetime


class RecommenderLookup:
    def __init__(self, pool: asyncpg.Pool, cache_seconds: float,
                 stale_seconds: float = 3600.0) -> None:
        self.pool = pool
        # Only found recommenders are cached: one created through another process must be
        # usable at once, not after a cached "not found" expires.
        self._cache: ExpiringMap[tuple[int, str], Recommender | None] = ExpiringMap(
            cache_seconds, stale_seconds=stale_seconds
        )

    async def get(self, tenant_id: int, name: str, deadline: Deadline | None = None) -> Recommender:
        async def load() -> Recommender | None:
            row = await read_retrying(
                lambda: recommender_store.fetch_recommender(self.pool, tenant_id, name),
                on_retry=lambda: None,
            )
            if row is None:
                return None
            return Recommender(
                id=row["id"], tenant_id=tenant_id, name=row["name"], catalog_id=row["catalog_id"],
                spec=RecommenderSpec.from_stored(row["spec"], row["catalog_name"]),
                updated_at=row["updated_at"],
            )

        found = await self._cache.get_or_load(
            (tenant_id, name), load, within=deadline.remaining() if deadline else None,
            keep=lambda value: value is not None,
        )
        if found is None:
            raise NotFound(f"no recommender named {name!r}", field="recommender")
        return found

    def forget(self, tenant_id: int, name: str) -> None:
        self._cache.discard((tenant_id, name))

    def expire_all(self) -> None:
        self._cache.expire_all()
