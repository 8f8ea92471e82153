"""Finding a tenant's recommender by name or by bound application ID, with a short cache.

A transform must cost one round trip (the item query), so the recommender is cached for the same
time as API keys; a PUT or DELETE through this process evicts it at once, and a change made anywhere
reaches every process within a second through invalidation notifications (service/resolution/invalidation.py).
When Postgres cannot be asked, the last known definition is used (stale), so cached items can still
be served. `load` reads the stored truth and leaves the cache alone, for GET answers and dry runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from service.enrichment.enrich import Enricher, RenderCache
from service.enrichment.recommenders import RecommenderSpec
from service.errors import NotFound
from service.resolution.deadline import Deadline
from service.resolution.expiring_map import ExpiringMap
from service.storage import recommenders as recommender_store
from service.storage.db_faults import read_retrying


@dataclass(frozen=True)
class Recommender:
    id: int
    tenant_id: int
    name: str
    catalog_id: int
    spec: RecommenderSpec
    updated_at: datetime
    # Rendered attribute rows, shared by every request of this definition (a new definition, a
    # new cache).
    renders: RenderCache = field(default_factory=RenderCache, compare=False, repr=False)
    # Its Enricher, built once (templates and all) rather than per request.
    enricher: Enricher = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "enricher", Enricher(self.spec, self.renders))


def recommender_from_row(tenant_id: int, row: asyncpg.Record,
                         renders: RenderCache | None = None) -> Recommender:
    return Recommender(
        id=row["id"], tenant_id=tenant_id, name=row["name"], catalog_id=row["catalog_id"],
        spec=RecommenderSpec.from_stored(row["spec"], row["catalog_name"],
                                         tuple(row["application_ids"])),
        updated_at=row["updated_at"],
        renders=renders if renders is not None else RenderCache(),
    )


class _RenderCaches:
    """One RenderCache per recommender definition, kept across reloads of an unchanged one.

    The lookup cache reloads a recommender every few seconds; a new RenderCache each time would
    throw away every rendered row (and the rows kept on L1 under its ID) with it. A definition is
    its ID with its `updated_at`, spec and catalog name: a changed recommender gets a new cache,
    and its old one is dropped."""

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[object, RenderCache]] = {}

    def recommender(self, tenant_id: int, row: asyncpg.Record) -> Recommender:
        version = (row["updated_at"], row["spec"], row["catalog_name"])
        kept = self._by_id.get(row["id"])
        if kept is None or kept[0] != version:
            kept = self._by_id[row["id"]] = (version, RenderCache())
        return recommender_from_row(tenant_id, row, kept[1])


def _within(deadline: Deadline | None) -> float | None:
    return deadline.remaining() if deadline else None


def _found(value: Recommender | None) -> bool:
    # Only found recommenders are cached: one created through another process must be usable at
    # once, not after a cached "not found" expires.
    return value is not None


class RecommenderLookup:
    def __init__(self, pool: asyncpg.Pool, cache_seconds: float,
                 stale_seconds: float = 3600.0) -> None:
        self.pool = pool
        self._cache: ExpiringMap[tuple[int, str], Recommender | None] = ExpiringMap(
            cache_seconds, stale_seconds=stale_seconds
        )
        self._by_application: ExpiringMap[tuple[int, str], Recommender | None] = ExpiringMap(
            cache_seconds, stale_seconds=stale_seconds
        )
        self._renders = _RenderCaches()

    async def get(self, tenant_id: int, name: str, deadline: Deadline | None = None) -> Recommender:
        async def load() -> Recommender | None:
            row = await read_retrying(
                lambda: recommender_store.fetch_recommender(self.pool, tenant_id, name),
                on_retry=lambda: None, pool=self.pool,
            )
            return None if row is None else self._renders.recommender(tenant_id, row)

        found = await self._cache.get_or_load((tenant_id, name), load, within=_within(deadline),
                                              keep=_found)
        if found is None:
            raise NotFound(f"no recommender named {name!r}", field="recommender")
        return found

    async def load(self, tenant_id: int, name: str) -> Recommender:
        """The stored recommender, read now; the cache is neither read nor filled."""
        row = await recommender_store.fetch_recommender(self.pool, tenant_id, name)
        if row is None:
            raise NotFound(f"no recommender named {name!r}", field="recommender")
        return recommender_from_row(tenant_id, row)

    async def for_application(
        self, tenant_id: int, application_id: str, deadline: Deadline | None = None
    ) -> Recommender:
        """The recommender bound to a Pinpoint application ID (404 naming the ID if none is)."""
        async def load() -> Recommender | None:
            row = await read_retrying(
                lambda: recommender_store.fetch_recommender_for_application(
                    self.pool, tenant_id, application_id
                ),
                on_retry=lambda: None, pool=self.pool,
            )
            return None if row is None else self._renders.recommender(tenant_id, row)

        found = await self._by_application.get_or_load(
            (tenant_id, application_id), load, within=_within(deadline), keep=_found
        )
        if found is None:
            raise NotFound(
                f"no recommender is bound to ApplicationId {application_id!r}; add it to a "
                "recommender's application_ids, or call /v1/recommenders/{recommender}/transform",
                field="ApplicationId",
            )
        return found

    def forget(self, tenant_id: int, name: str) -> None:
        self._cache.discard((tenant_id, name))
        # Bindings are few and change rarely; dropping them all beats tracking which were whose.
        self._by_application.clear()

    def expire_all(self) -> None:
        self._cache.expire_all()
        self._by_application.expire_all()
