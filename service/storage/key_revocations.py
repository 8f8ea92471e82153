"""Revocations told through Redis as well as Postgres, so a process that cannot hear from Postgres
still refuses a revoked key within a second.

A key's revocation reaches every process by the NOTIFY of the `api_keys` trigger
(service/resolution/invalidation.py), which demotes the key caches so the next request reads the
key again. Both halves need Postgres: while a process's Postgres is stalled or out of reach, the
NOTIFY waits with everything else and the read falls back on the cached key, so a key revoked
just before would still be served there for as long as the stall lasts. So the process that
revokes a key (DELETE /v1/keys/{prefix}, or `keys revoke` with REDIS_URL set) also PUBLISHes
the fact on Redis, on channel
`<ENRICHER_REDIS_PREFIX>:revoked-keys`, before it answers; every process SUBSCRIBEs to it and
refuses that key from then on without asking Postgres. A revocation is final, so a process can
trust it as it is told: it is the one fact about a key that needs no database to act on.

The channel is an extra path, not the only one: when Redis is down, a revocation still arrives by
the NOTIFY (and is read from Postgres once it answers). A publication is bounded by
`ENRICHER_REDIS_TIMEOUT_MS` (at least 0.25 s) and never fails the revocation; the subscription
comes back by itself after Redis or a sentinel failover drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson

from service.storage.redis_urls import is_sentinel_url, sentinel_options

log = logging.getLogger(__name__)

try:
    from redis.exceptions import RedisError as _RedisError
except ImportError:  # pragma: no cover - redis comes with aiocache[redis]
    _RedisError = OSError
REDIS_ERRORS = (_RedisError, OSError, TimeoutError)
RETRY_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0)
MIN_PUBLISH_SECONDS = 0.25

Revoked = Callable[[int, str], None]  # (tenant id, key prefix)


def _client(url: str, timeout: float | None) -> Any:
    """A redis-py asyncio client on `url` (one server, or the master behind sentinels)."""
    from redis.asyncio import Redis
    from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

    connect = {"socket_connect_timeout": max(timeout or 1.0, MIN_PUBLISH_SECONDS)}
    socket = {**connect, "socket_timeout": timeout}
    if is_sentinel_url(url):
        addresses, service, options = sentinel_options(url)
        sentinel = Sentinel(addresses, sentinel_kwargs=connect)
        pool_kwargs = options.pop("connection_pool_kwargs", {})
        pool = SentinelConnectionPool(service, sentinel, max_connections=4, **socket, **options,
                                      **pool_kwargs)
        return Redis.from_pool(pool)
    return Redis.from_url(url, max_connections=4, **socket)


class RevocationChannel:
    """PUBLISH a revocation; call `on_revoked(tenant_id, prefix)` for every one published."""

    def __init__(self, url: str, *, prefix: str, timeout: float, on_revoked: Revoked) -> None:
        self.channel = f"{prefix}:revoked-keys"
        self.timeout = max(timeout, MIN_PUBLISH_SECONDS)
        self.on_revoked = on_revoked
        self.url = url
        self._publisher = _client(url, self.timeout)
        self._subscriber: Any = None
        self._task: asyncio.Task | None = None
        self.subscribed = asyncio.Event()

    def start(self) -> None:
        """Subscribe (a process that only publishes, as the CLI, never starts)."""
        # No read timeout: a subscription is quiet most of the time.
        self._subscriber = _client(self.url, None)
        self._task = asyncio.ensure_future(self._subscribe())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._publisher.aclose()
        if self._subscriber is not None:
            await self._subscriber.aclose()

    async def publish(self, tenant_id: int, prefix: str) -> int | None:
        """Tell every subscribed process; how many were reached, None when Redis did not answer
        in time (logged: the NOTIFY still carries the revocation)."""
        message = orjson.dumps({"tenant": tenant_id, "prefix": prefix})
        try:
            async with asyncio.timeout(self.timeout):
                return int(await self._publisher.publish(self.channel, message))
        except REDIS_ERRORS as exc:
            log.warning("could not publish a key revocation on Redis; the other processes learn "
                        "of it from Postgres", extra={"error": type(exc).__name__})
            return None

    async def _subscribe(self) -> None:
        attempt = 0
        while True:
            pubsub = self._subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed.set()
                if attempt:
                    log.info("subscribed again to key revocations on Redis",
                             extra={"attempts": attempt + 1})
                attempt = 0
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None and message.get("type") == "message":
                        self._heard(message["data"])
            except REDIS_ERRORS as exc:
                self.subscribed.clear()
                if attempt == 0 or attempt % 20 == 0:
                    log.warning("key revocations on Redis: not subscribed; subscribing again",
                                extra={"error": type(exc).__name__, "attempts": attempt + 1})
                await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
                attempt += 1
            finally:
                with contextlib.suppress(*REDIS_ERRORS):
                    await pubsub.aclose()

    def _heard(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
            tenant, prefix = int(message["tenant"]), str(message["prefix"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.error("unreadable key revocation on Redis; ignored")
            return
        self.on_revoked(tenant, prefix)
