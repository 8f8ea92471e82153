"""Finding a tenant's recommender by name, with a short per-process cache.

A transform must cost one round trip (the item query), so the recommender is cached for the same
few seconds as API keys; a PUT through this process evicts it at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

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
    def __init__(self, pool: asyncpg.Pool, cache_seconds: float) -> None:
        self.pool = pool
        # Only found recommenders are cached: one created through another process must be
        # usable at once, not after a cached "not found" expires.
        self._cache: ExpiringMap[tuple[int, str], Recommender] = ExpiringMap(cache_seconds)

    async def get(self, tenant_id: int, name: str) -> Recommender:
        key = (tenant_id, name)
        found = self._cache.get(key)
        if found is ExpiringMap.MISSING:
            row = await recommender_store.fetch_recommender(self.pool, tenant_id, name)
            if row is None:
                raise NotFound(f"no recommender named {name!r}", field="recommender")
            found = Recommender(
                id=row["id"], tenant_id=tenant_id, name=row["name"], catalog_id=row["catalog_id"],
                spec=RecommenderSpec.from_stored(row["spec"], row["catalog_name"]),
                updated_at=row["updated_at"],
            )
            self._cache.put(key, found)
        return found  # type: ignore[return-value]

    def forget(self, tenant_id: int, name: str) -> None:
        self._cache.discard((tenant_id, name))
