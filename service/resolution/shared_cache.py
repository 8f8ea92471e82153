"""L2: the item cache in Redis (through aiocache), shared by every process and replica.

Optional: without `REDIS_URL` the service runs on L1 and Postgres. Redis is a speed-up, never a
dependency: every call has an explicit timeout (`ENRICHER_REDIS_TIMEOUT_MS`, well under a
request's budget, not aiocache's 5 s default), and any error or timeout counts as a miss. After a
failure L2 is skipped for `RETRY_AFTER` seconds, so a Redis that is down or frozen costs one
timeout per process per second rather than one per request; the first call after that tries
again, which is how L2 comes back into use by itself when Redis returns.

Keys (`ce` is `ENRICHER_REDIS_PREFIX`, so deployments can share one Redis):
`ce:i:<catalog id>:<item id>` holds `[epoch, item or null]` as orjson (null is a negative entry);
the epoch is the pair of counters `ce:e:all` and `ce:e:<catalog id>`. Every read fetches
both counters together with the items in one MGET, and an entry written under another epoch counts
as a miss. A bulk change to a catalog (or to all of them) therefore invalidates its entries with one
INCR, without scanning keys (aiocache's own `clear` would use `KEYS`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
from aiocache import RedisCache
from aiocache.serializers import BaseSerializer

from service.resolution.local_cache import ABSENT
from service.runtime.metrics import Metrics

log = logging.getLogger(__name__)

RETRY_AFTER = 1.0
# Redis errors and timeouts, as redis-py and aiocache raise them (all derive from these).
try:
    from redis.exceptions import RedisError as _RedisError
except ImportError:  # pragma: no cover - redis comes with aiocache[redis]
    _RedisError = OSError
L2_ERRORS = (_RedisError, OSError, TimeoutError)


class OrjsonSerializer(BaseSerializer):
    """aiocache serializer: values travel as orjson bytes (no str round trip)."""

    DEFAULT_ENCODING = None

    def dumps(self, value: Any) -> bytes:  # type: ignore[override]
        return orjson.dumps(value)

    def loads(self, value: bytes | None) -> Any:  # type: ignore[override]
        return None if value is None else orjson.loads(value)


def redis_options(url: str) -> dict[str, Any]:
    """aiocache RedisCache arguments from a redis:// or rediss:// URL (`/db` as the path)."""
    parts = urlsplit(url)
    db = parts.path.lstrip("/") or "0"
    options: dict[str, Any] = {
        "endpoint": parts.hostname or "127.0.0.1",
        "port": parts.port or 6379,
        "db": int(db),
        "ssl": parts.scheme == "rediss",
    }
    if parts.password is not None:
        options["password"] = unquote(parts.password)
    if parts.username:
        options["connection_pool_kwargs"] = {"username": unquote(parts.username)}
    return options


def _item_key(catalog_id: int, item_id: str) -> str:
    return f"i:{catalog_id}:{item_id}"


def _epoch_key(catalog_id: int) -> str:
    return f"e:{catalog_id}"


GLOBAL_EPOCH_KEY = "e:all"
# The epoch of a catalog's entries: (global counter, catalog counter); None when L2 was not read.
Epoch = tuple[int, int]


def _decode_item(value: dict[str, Any]) -> dict[str, Any]:
    value["updated_at"] = datetime.fromisoformat(value["updated_at"])
    return value


class SharedCache:
    def __init__(
        self, url: str, *, ttl: float, negative_ttl: float, timeout: float, metrics: Metrics,
        prefix: str = "ce",
    ) -> None:
        options = redis_options(url)
        pool_kwargs = options.pop("connection_pool_kwargs", {})
        # Socket timeouts as well as aiocache's own: a frozen Redis must not hold a connection.
        pool_kwargs.update(socket_timeout=timeout * 4, health_check_interval=0)
        self._cache = RedisCache(
            serializer=OrjsonSerializer(), namespace=prefix, timeout=timeout,
            create_connection_timeout=timeout * 4, connection_pool_kwargs=pool_kwargs, **options,
        )
        self.ttl = max(1, round(ttl))
        self.negative_ttl = max(1, round(negative_ttl))
        self.timeout = timeout
        self.metrics = metrics
        self._skip_until = 0.0
        # Catalogs whose invalidation could not reach Redis: their epochs are raised before L2 is
        # read again, so entries that outlived a write while Redis was away are never served.
        self._unflushed: set[int | None] = set()

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._skip_until

    async def _usable(self) -> bool:
        """Whether to use L2 now: not in the pause after a failure, and no invalidation owed."""
        if not self.available:
            return False
        while self._unflushed:
            catalog_id = next(iter(self._unflushed))
            key = GLOBAL_EPOCH_KEY if catalog_id is None else _epoch_key(catalog_id)
            try:
                await self._cache.increment(key)
            except L2_ERRORS as exc:
                self._failed("delete", exc)
                return False
            self._unflushed.discard(catalog_id)
        return True

    def _failed(self, operation: str, exc: BaseException) -> None:
        first = self.available
        self._skip_until = time.monotonic() + RETRY_AFTER
        self.metrics.l2_errors.labels(operation).inc()
        if first:
            log.warning("redis unavailable; L2 skipped for %.0f s", RETRY_AFTER,
                        extra={"operation": operation, "error": type(exc).__name__})

    async def ping(self) -> bool:
        try:
            await self._cache.raw("ping", timeout=max(self.timeout, 1.0))
        except L2_ERRORS as exc:
            self._failed("ping", exc)
            return False
        return True

    async def lookup(
        self, catalog_id: int, ids: list[str], budget: float
    ) -> tuple[Epoch | None, dict[str, Any]]:
        """(the catalog's epoch, id → item or ABSENT for the IDs L2 holds); misses are absent."""
        if budget <= 0 or not await self._usable():
            return None, {}
        keys = [GLOBAL_EPOCH_KEY, _epoch_key(catalog_id)] + [_item_key(catalog_id, i) for i in ids]
        try:
            values = await self._cache.multi_get(keys, timeout=min(budget, self.timeout))
        except L2_ERRORS as exc:
            self._failed("get", exc)
            return None, {}
        epoch = [values[0] or 0, values[1] or 0]
        found: dict[str, Any] = {}
        for item_id, value in zip(ids, values[2:], strict=True):
            if value is not None and value[0] == epoch:
                found[item_id] = ABSENT if value[1] is None else _decode_item(value[1])
        return (epoch[0], epoch[1]), found

    async def store(self, catalog_id: int, epoch: Epoch | None, values: Mapping[str, Any]) -> None:
        """Write items (and negative entries) read from Postgres under `epoch`."""
        if epoch is None or not values or not await self._usable():
            return
        tag = list(epoch)
        found = [(_item_key(catalog_id, i), [tag, dict(v)]) for i, v in values.items()
                 if v is not ABSENT]
        absent = [(_item_key(catalog_id, i), [tag, None]) for i, v in values.items()
                  if v is ABSENT]
        try:
            if found:
                await self._cache.multi_set(found, ttl=self.ttl)
            if absent:
                await self._cache.multi_set(absent, ttl=self.negative_ttl)
        except L2_ERRORS as exc:
            self._failed("set", exc)

    async def forget(self, catalog_id: int, ids: Iterable[str]) -> None:
        keys = [self._cache.build_key(_item_key(catalog_id, i)) for i in ids]
        if not keys:
            return
        try:
            await self._cache.raw("unlink", *keys)
        except L2_ERRORS as exc:
            self._unflushed.add(catalog_id)
            self._failed("delete", exc)

    async def flush_catalog(self, catalog_id: int | None) -> None:
        """Invalidate every entry of one catalog (None: of every catalog)."""
        try:
            await self._cache.increment(
                GLOBAL_EPOCH_KEY if catalog_id is None else _epoch_key(catalog_id)
            )
        except L2_ERRORS as exc:
            self._unflushed.add(catalog_id)
            self._failed("delete", exc)

    async def get_value(self, key: str, budget: float) -> Any:
        """What `set_value` stored under `key` (any caller's namespace, e.g. `p:…`), or None when
        absent, expired, or L2 cannot be used now (a failure counts as a miss)."""
        if budget <= 0 or not await self._usable():
            return None
        try:
            return await self._cache.get(f"v:{key}", timeout=min(budget, self.timeout))
        except L2_ERRORS as exc:
            self._failed("get", exc)
            return None

    async def set_value(self, key: str, value: Any, ttl: float) -> None:
        """Keep a JSON-serialisable `value` under `key` for `ttl` seconds (best effort)."""
        if ttl < 1 or not await self._usable():
            return
        try:
            # multi_set, as `store` does: aiocache's `set` with a TTL calls redis-py's
            # deprecated SETEX.
            await self._cache.multi_set([(f"v:{key}", value)], ttl=round(ttl))
        except L2_ERRORS as exc:
            self._failed("set", exc)

    async def close(self) -> None:
        # aiocache's own close() calls redis-py's deprecated close(); aclose() is its successor.
        await self._cache.client.aclose()
