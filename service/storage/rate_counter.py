"""Per-tenant request rates: counted in Redis across every process and replica, or in this process.

The algorithm is GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp): a
tenant limited to `rps` requests a second with a `burst` of M may send `rps + M` requests at once
after a quiet spell, and `rps` a second after that. Its whole state is the time at which its
bucket would be full again ("theoretical arrival time"), so one Redis key per tenant and one
atomic script call per request suffice, and the answer says exactly how long to wait.

With Redis (`REDIS_URL`) the script runs there, on Redis' own clock, so every process and replica
counts against one budget. Without Redis, or for `RETRY_REDIS_AFTER` seconds after a Redis call
failed or took longer than `ENRICHER_REDIS_TIMEOUT_MS`, the same algorithm runs in this process
with the limit shared out: each of `share` processes admits `1/share` of it. A request is never
refused because Redis is down; at worst the budget is split a little unevenly for a second.

Why not the `limits` library: its strategies are fixed, moving and sliding windows, which have no
burst parameter (a fixed window also admits twice the limit across a window's edge, a moving window
keeps one Redis list entry per request), and it has no fallback when its storage fails; GCRA is a
dozen lines of Lua and the same dozen in Python.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from service.runtime.metrics import Metrics

log = logging.getLogger(__name__)

RETRY_REDIS_AFTER = 1.0
REDIS_CONNECTIONS = 32

# KEYS[1]: the tenant's key. ARGV[1]: µs between requests at the sustained rate; ARGV[2]: the
# burst tolerance in µs ((capacity - 1) * interval). Returns {admitted, µs until one more would
# be admitted, µs until the bucket is full again}.
GCRA_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then
  return {0, allow_at - now, tat - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, 0, new_tat - now}
"""

try:
    from redis.exceptions import RedisError as _RedisError
except ImportError:  # pragma: no cover - redis comes with aiocache[redis]
    _RedisError = OSError
REDIS_ERRORS = (_RedisError, OSError, TimeoutError)


@dataclass(frozen=True)
class RateDecision:
    admitted: bool
    remaining: int  # requests that could be sent at once right now
    retry_after: float  # seconds until one more would be admitted (0 when admitted)
    reset_after: float  # seconds until the bucket is full again
    counted_in: str  # "redis" or "process"


def _bucket(rps: float, burst: float) -> tuple[float, float, float]:
    """(capacity, µs between requests, µs of burst tolerance) of a limit."""
    capacity = max(1.0, rps + burst)
    interval = 1e6 / rps
    return capacity, interval, (capacity - 1) * interval


def _decision(admitted: bool, retry_us: float, full_us: float, capacity: float,
              interval: float, counted_in: str) -> RateDecision:
    remaining = 0 if not admitted else max(0, math.floor(capacity - full_us / interval + 1e-9))
    return RateDecision(admitted, remaining, retry_us / 1e6, full_us / 1e6, counted_in)


class LocalRates:
    """GCRA in this process: tenant → the time (µs of time.monotonic) its bucket is full again."""

    def __init__(self) -> None:
        self._full_at: dict[int, float] = {}

    def hit(self, tenant_id: int, rps: float, burst: float) -> RateDecision:
        capacity, interval, tolerance = _bucket(rps, burst)
        now = time.monotonic() * 1e6
        tat = max(self._full_at.get(tenant_id, now), now)
        allow_at = tat - tolerance
        if now < allow_at:
            return _decision(False, allow_at - now, tat - now, capacity, interval, "process")
        self._full_at[tenant_id] = tat + interval
        if len(self._full_at) > 10_000:  # tenants whose buckets are full again need no state
            self._full_at = {t: at for t, at in self._full_at.items() if at > now}
        return _decision(True, 0.0, tat + interval - now, capacity, interval, "process")


class RateCounter:
    """Counts tenants' requests in Redis when it has a client and Redis answers, else locally."""

    def __init__(self, redis: Any | None, *, prefix: str, timeout: float, share: int,
                 metrics: Metrics | None = None) -> None:
        self.redis = redis
        self.prefix = prefix
        self.timeout = timeout
        self.share = max(1, share)
        self.metrics = metrics
        self.local = LocalRates()
        self._script = redis.register_script(GCRA_SCRIPT) if redis is not None else None
        self._skip_redis_until = 0.0

    async def hit(self, tenant_id: int, rps: int, burst: int) -> RateDecision:
        """Count one request of the tenant against its limit; says whether it is admitted."""
        if self._script is not None and time.monotonic() >= self._skip_redis_until:
            decision = await self._hit_redis(tenant_id, rps, burst)
            if decision is not None:
                return decision
        # Each process admits its share; never less than one request at once.
        return self.local.hit(tenant_id, rps / self.share, burst / self.share)

    async def _hit_redis(self, tenant_id: int, rps: int, burst: int) -> RateDecision | None:
        capacity, interval, tolerance = _bucket(rps, burst)
        try:
            async with asyncio.timeout(self.timeout):
                admitted, retry_us, full_us = await self._script(  # type: ignore[misc]
                    keys=[f"{self.prefix}:rl:{tenant_id}"], args=[interval, tolerance])
        except REDIS_ERRORS as exc:
            self._skip_redis_until = time.monotonic() + RETRY_REDIS_AFTER
            if self.metrics is not None:
                self.metrics.rate_limit_fallbacks.inc()
            log.warning("rate limits counted in this process for a while: Redis failed",
                        extra={"error": type(exc).__name__, "retry_in_s": RETRY_REDIS_AFTER})
            return None
        return _decision(bool(admitted), float(retry_us), float(full_us), capacity, interval,
                         "redis")

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()


def redis_for_rates(url: str, timeout: float) -> Any:
    """A redis-py asyncio client for the counter: a bounded pool (a flood must not open a
    connection per request), every call bounded by `timeout`."""
    from redis.asyncio import BlockingConnectionPool, Redis

    pool = BlockingConnectionPool.from_url(
        url, max_connections=REDIS_CONNECTIONS, timeout=timeout,
        socket_timeout=timeout, socket_connect_timeout=timeout,
    )
    return Redis(connection_pool=pool)
