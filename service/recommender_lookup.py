"""Finding a tenant's recommender by name or by bound application ID, with a short cache.

A transform must cost one round trip (the item query), so the recommender is cached for the same
few seconds as API keys; a PUT or DELETE through this process evicts it at once (other processes
see the change when their entry expires). `load` reads the stored truth and leaves the cache alone,
for GET answers and dry runs.
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


def recommender_from_row(tenant_id: int, row: asyncpg.Record) -> Recommender:
    return Recommender(
        id=row["id"], tenant_id=tenant_id, name=row["name"], catalog_id=row["catalog_id"],
        spec=RecommenderSpec.from_stored(row["spec"], row["catalog_name"],
                                         tuple(row["application_ids"])),
        updated_at=row["updated_at"],
    )


class RecommenderLookup:
    def __init__(self, pool: asyncpg.Pool, cache_seconds: float) -> None:
        self.pool = pool
        # Only found recommenders are cached: one created through another process must be
        # usable at once, not after a cached "not found" expires.
        self._cache: ExpiringMap[tuple[int, str], Recommender] = ExpiringMap(cache_seconds)
        self._by_application: ExpiringMap[tuple[int, str], Recommender] = ExpiringMap(
            cache_seconds
        )

    async def get(self, tenant_id: int, name: str) -> Recommender:
        key = (tenant_id, name)
        found = self._cache.get(key)
        if found is ExpiringMap.MISSING:
            found = await self.load(tenant_id, name)
            self._cache.put(key, found)
        return found  # type: ignore[return-value]

    async def load(self, tenant_id: int, name: str) -> Recommender:
        """The stored recommender, read now; the cache is neither read nor filled."""
        row = await recommender_store.fetch_recommender(self.pool, tenant_id, name)
        if row is None:
            raise NotFound(f"no recommender named {name!r}", field="recommender")
        return recommender_from_row(tenant_id, row)

    async def for_application(self, tenant_id: int, application_id: str) -> Recommender:
        """The recommender bound to a Pinpoint application ID (404 naming the ID if none is)."""
        key = (tenant_id, application_id)
        found = self._by_application.get(key)
        if found is ExpiringMap.MISSING:
            row = await recommender_store.fetch_recommender_for_application(
                self.pool, tenant_id, application_id
            )
            if row is None:
                raise NotFound(
                    f"no recommender is bound to ApplicationId {application_id!r}; add it to a "
                    "recommender's application_ids, or call "
                    "/v1/recommenders/{recommender}/transform",
                    field="ApplicationId",
                )
            found = recommender_from_row(tenant_id, row)
            self._by_application.put(key, found)
        return found  # type: ignore[return-value]

    def forget(self, tenant_id: int, name: str) -> None:
        self._cache.discard((tenant_id, name))
        # Bindings are few and change rarely; dropping them all beats tracking which were whose.
        self._by_application.clear()
