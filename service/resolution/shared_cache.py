"""L2: the item cache in Redis (through aiocache on redis-py), shared by every process and replica.

Optional: without `REDIS_URL` the service runs on L1 and Postgres. Redis is a speed-up, never a
dependency: every call has an explicit timeout (`ENRICHER_REDIS_TIMEOUT_MS`, well under a
request's budget, not aiocache's 5 s default), and any error or timeout counts as a miss. After a
failure L2 is skipped for `RETRY_AFTER` seconds, so a Redis that is down or frozen costs one
timeout per process per second rather than one per request; the first call after that tries
again, which is how L2 comes back into use by itself when Redis returns.

`REDIS_URL` may name Redis Sentinels instead of a server
(`redis+sentinel://h1:26379,h2:26379/mymaster/0`): redis-py's asyncio Sentinel client asks them for
the master of that service before each new connection, and drops connections to a master that was
demoted (its READONLY answers). A failover can also leave the old master up and answering as a
master for a while (`SENTINEL FAILOVER`, or before the sentinels reconfigure it), which redis-py's
asyncio pool does not notice; so, while L2 is in use, the sentinels are also asked for the master
once a second in the background, and when it moved every connection is dropped (the next ones go
to the new master). aiocache 0.12 has no Sentinel
(nor Cluster) support of its own, but takes a `connection_pool_class`: given redis-py's
`SentinelConnectionPool`, aiocache's RedisCache runs on sentinel-managed connections unchanged, so
everything built on `self._cache` works alike on one server and behind sentinels.

Keys (`ce` is `ENRICHER_REDIS_PREFIX`, so deployments can share one Redis):
`ce:v:<catalog id>:<item id>` holds `<version> <body>`: the item's version (0 for a negative entry)
then, as orjson, `[epoch, item or null]` (null: not in the catalog), or `-` for a tombstone. The
epoch is the pair of counters `ce:e:all` and `ce:e:<catalog id>`. Every read fetches both counters
together with the items in one MGET, and an entry written under another epoch counts as a miss. A
bulk change to a catalog (or to all of them) therefore invalidates its entries with one INCR,
without scanning keys (aiocache's own `clear` would use `KEYS`).

Writes are compare-and-set (one Lua script per batch): an entry is written only if the key holds
nothing newer, so no process can put an older row over a newer one, whatever the order its write
reaches Redis in. A notified change (`forget` with versions) leaves a tombstone carrying the new
version for `tombstone_ttl` seconds rather than nothing, so a slow write of the row as it was
before the change is refused too. (Entries of the previous release, `ce:i:…`, are neither read nor
written: they expire.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson
from aiocache import RedisCache
from aiocache.serializers import BaseSerializer
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from service.resolution.local_cache import ABSENT
from service.runtime.metrics import Metrics
from service.storage.redis_urls import is_sentinel_url, redis_options, sentinel_options

log = logging.getLogger(__name__)

RETRY_AFTER = 1.0
MASTER_CHECK_EVERY = 1.0
# Redis errors and timeouts, as redis-py and aiocache raise them (all derive from these).
try:
    from redis.exceptions import RedisError as _RedisError
except ImportError:  # pragma: no cover - redis comes with aiocache[redis]
    _RedisError = OSError
L2_ERRORS = (_RedisError, OSError, TimeoutError)

# KEYS[i] gets ARGV[3i-1] unless it holds something newer; ARGV[3i-2] is the new value's version,
# ARGV[3i] its TTL in seconds. A value is "<version> <body>", a tombstone's body "-". A row replaces
# anything of its version or older; a tombstone replaces rows strictly older (the row of its own
# version is the change itself) and tombstones of its version or older. Returns how many it wrote.
STORE_IF_NEWER = """
local written = 0
for i, key in ipairs(KEYS) do
  local version = tonumber(ARGV[3 * i - 2])
  local value = ARGV[3 * i - 1]
  local replace = true
  local held = redis.call('GET', key)
  if held then
    local space = string.find(held, ' ', 1, true)
    local held_version = space and tonumber(string.sub(held, 1, space - 1))
    if held_version then
      local tombstone = string.sub(value, -2) == ' -'
      local held_tombstone = #held == space + 1 and string.byte(held, -1) == 45
      if tombstone and not held_tombstone then
        replace = version > held_version
      else
        replace = version >= held_version
      end
    end
  end
  if replace then
    redis.call('SET', key, value, 'EX', ARGV[3 * i])
    written = written + 1
  end
end
return written
"""
# Each KEYS[i] that holds nothing gets ARGV[i + 1] for ARGV[1] seconds; returns, per key, what it
# already held (false, a nil reply, where this call wrote it): the first writer wins everywhere.
ADD_IF_ABSENT = """
local held = {}
for i, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  if value then
    held[i] = value
  else
    redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1])
    held[i] = false
  end
end
return held
"""


class OrjsonSerializer(BaseSerializer):
    """aiocache serializer: values travel as orjson bytes (no str round trip)."""

    DEFAULT_ENCODING = None

    def dumps(self, value: Any) -> bytes:  # type: ignore[override]
        return orjson.dumps(value)

    def loads(self, value: bytes | None) -> Any:  # type: ignore[override]
        return None if value is None else orjson.loads(value)


def _item_key(catalog_id: int, item_id: str) -> str:
    return f"v:{catalog_id}:{item_id}"


def _epoch_key(catalog_id: int) -> str:
    return f"e:{catalog_id}"


GLOBAL_EPOCH_KEY = "e:all"
# The epoch of a catalog's entries: (global counter, catalog counter); None when L2 was not read.
Epoch = tuple[int, int]
_TOMBSTONE = b" -"


def _decode_item(value: dict[str, Any]) -> dict[str, Any]:
    # Microseconds since the epoch as Postgres rows carry it (service/storage/items.py); an
    # entry written from a datetime (before that) holds ISO text.
    updated_at = value["updated_at"]
    if isinstance(updated_at, str):
        value["updated_at"] = datetime.fromisoformat(updated_at)
    return value


def _tombstone_version(notified: Any) -> int | None:
    """The version a tombstone for a notified version carries: a current row has at least it (a
    deletion, sent as minus the old version, takes one more: the old row is gone)."""
    if isinstance(notified, int) and not isinstance(notified, bool) and notified != 0:
        return notified if notified > 0 else 1 - notified
    return None


class SharedCache:
    def __init__(
        self, url: str, *, ttl: float, negative_ttl: float, timeout: float, metrics: Metrics,
        prefix: str = "ce", tombstone_ttl: float = 60.0,
    ) -> None:
        self._sentinel: Sentinel | None = None
        self._service = ""
        self._next_master_check = 0.0
        self._master_check: asyncio.Task | None = None
        if is_sentinel_url(url):
            addresses, service, options = sentinel_options(url)
            self._service = service
            self._sentinel = Sentinel(addresses, sentinel_kwargs={
                "socket_timeout": max(timeout * 4, 0.2),
                "socket_connect_timeout": max(timeout * 4, 0.2),
            })
            # aiocache passes its host and port on; a sentinel-managed connection replaces them
            # with the master's address each time it connects.
            options.update(
                endpoint=addresses[0][0], port=addresses[0][1], ssl=False,
                connection_pool_class=functools.partial(
                    SentinelConnectionPool, service, self._sentinel
                ),
            )
        else:
            options = redis_options(url)
        pool_kwargs = options.pop("connection_pool_kwargs", {})
        # Socket timeouts as well as aiocache's own: a frozen Redis must not hold a connection.
        pool_kwargs.update(socket_timeout=timeout * 4, health_check_interval=0)
        self._cache = RedisCache(
            serializer=OrjsonSerializer(), namespace=prefix, timeout=timeout,
            create_connection_timeout=timeout * 4, connection_pool_kwargs=pool_kwargs, **options,
        )
        self._store_if_newer = self._cache.client.register_script(STORE_IF_NEWER)
        self._add_if_absent = self._cache.client.register_script(ADD_IF_ABSENT)
        self.ttl = max(1, round(ttl))
        self.negative_ttl = max(1, round(negative_ttl))
        self.tombstone_ttl = max(1, round(tombstone_ttl))
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
        if self._sentinel is not None:
            self._follow_master()
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

    def _follow_master(self) -> None:
        """At most once a second, ask the sentinels in the background where the master is."""
        now = time.monotonic()
        if now < self._next_master_check or self._master_check is not None:
            return
        self._next_master_check = now + MASTER_CHECK_EVERY
        self._master_check = asyncio.ensure_future(self._check_master())

    async def _check_master(self) -> None:
        pool = self._cache.client.connection_pool
        try:
            async with asyncio.timeout(MASTER_CHECK_EVERY):
                address = await self._sentinel.discover_master(self._service)  # type: ignore[union-attr]
            known = getattr(pool, "master_address", None)
            if known is not None and tuple(address) != tuple(known):
                log.warning("redis master moved (a sentinel failover); L2 follows it",
                            extra={"service": self._service})
                pool.master_address = address  # type: ignore[attr-defined]
                # Those in use too: they talk to the old master, and are never checked again.
                await pool.disconnect(inuse_connections=True)
        except L2_ERRORS as exc:
            self.metrics.l2_errors.labels("sentinel").inc()
            log.debug("sentinels not answering", extra={"error": type(exc).__name__})
        finally:
            self._master_check = None

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
        build = self._cache.build_key
        keys = [build(GLOBAL_EPOCH_KEY), build(_epoch_key(catalog_id))]
        keys += [build(_item_key(catalog_id, i)) for i in ids]
        try:
            # Raw bytes back: the serializer's encoding is None.
            values = await self._cache.raw("mget", *keys, timeout=min(budget, self.timeout))
        except L2_ERRORS as exc:
            self._failed("get", exc)
            return None, {}
        epoch = [int(values[0] or 0), int(values[1] or 0)]
        found: dict[str, Any] = {}
        for item_id, value in zip(ids, values[2:], strict=True):
            if value is None or value.endswith(_TOMBSTONE):
                continue
            tag, item = orjson.loads(memoryview(value)[value.index(b" ") + 1:])
            if tag == epoch:
                found[item_id] = ABSENT if item is None else _decode_item(item)
        return (epoch[0], epoch[1]), found

    async def store(self, catalog_id: int, epoch: Epoch | None, values: Mapping[str, Any]) -> None:
        """Write items (and negative entries) read from Postgres under `epoch`, each unless L2
        holds a newer version of it."""
        if epoch is None or not values or not await self._usable():
            return
        tag = list(epoch)
        keys: list[str] = []
        args: list[Any] = []
        build = self._cache.build_key
        for item_id, value in values.items():
            keys.append(build(_item_key(catalog_id, item_id)))
            if value is ABSENT:
                args += (0, b"0 " + orjson.dumps([tag, None]), self.negative_ttl)
                continue
            version = value.get("version") or 0
            args += (version, b"%d " % version + orjson.dumps([tag, dict(value)]), self.ttl)
        try:
            await self._write_if_newer(keys, args)
        except L2_ERRORS as exc:
            self._failed("set", exc)

    async def _write_if_newer(self, keys: list[str], args: list[Any]) -> None:
        async with asyncio.timeout(self.timeout):
            await self._store_if_newer(keys=keys, args=args)

    async def forget(self, catalog_id: int, ids: Iterable[str],
                     versions: Mapping[str, Any] | None = None) -> None:
        """Items changed: drop their entries. Where `versions` (item ID → notified version,
        minus the old one for a deletion) knows an item's, a tombstone of that version takes the
        entry's place, so that no older row can be written back."""
        ids = list(ids)
        build = self._cache.build_key
        tombstones: list[str] = []
        args: list[Any] = []
        unlink: list[str] = []
        for item_id in ids:
            version = _tombstone_version(versions.get(item_id)) if versions else None
            if version is None:
                unlink.append(build(_item_key(catalog_id, item_id)))
            else:
                tombstones.append(build(_item_key(catalog_id, item_id)))
                args += (version, b"%d -" % version, self.tombstone_ttl)
        try:
            if tombstones:
                await self._write_if_newer(tombstones, args)
            if unlink:
                await self._cache.raw("unlink", *unlink)
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

    async def get_many(self, keys: list[str], budget: float) -> list[bytes | None]:
        """The bytes `add_many` stored under each of `keys` (any caller's namespace, e.g.
        `c:…`), None where absent, expired, or L2 cannot be used now."""
        if not keys or budget <= 0 or not await self._usable():
            return [None] * len(keys)
        build = self._cache.build_key
        try:
            return await self._cache.raw("mget", *(build(f"v:{k}") for k in keys),
                                         timeout=min(budget, self.timeout))
        except L2_ERRORS as exc:
            self._failed("get", exc)
            return [None] * len(keys)

    async def add_many(self, values: list[tuple[str, bytes]], ttl: float) -> list[bytes | None]:
        """Keep each (key, bytes) for `ttl` seconds unless the key already holds something; one
        round trip. Returns what each key held before (None where this call wrote it, or where
        L2 cannot be used now: then the caller's own value stands)."""
        if not values or not await self._usable():
            return [None] * len(values)
        build = self._cache.build_key
        try:
            async with asyncio.timeout(self.timeout):
                held = await self._add_if_absent(
                    keys=[build(f"v:{key}") for key, _ in values],
                    args=[max(1, round(ttl)), *(value for _, value in values)])
        except L2_ERRORS as exc:
            self._failed("set", exc)
            return [None] * len(values)
        return [value or None for value in held]

    async def close(self) -> None:
        if self._master_check is not None:
            self._master_check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._master_check
        # aiocache's own close() calls redis-py's deprecated close(); aclose() is its successor.
        await self._cache.client.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()
