"""Per-tenant request rates: counted in Redis across every process and replica, or in this process.

The algorithm is GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp): a
tenant limited to `rps` requests a second with a `burst` of M may send `rps + M` requests at once
after a quiet spell, and `rps` a second after that. Its whole state is the time at which its
bucket would be full again ("theoretical arrival time"), so one Redis key per tenant and one
atomic script call per request suffice, and the answer says exactly how long to wait.

With Redis (`REDIS_URL`) the script runs there, on Redis' own clock, so every process and replica
counts against one budget; the requests of one turn of the event loop share one call. Without
Redis, or for `RETRY_REDIS_AFTER` seconds after a Redis call failed or took longer than
`ENRICHER_RATE_LIMIT_TIMEOUT_MS`, the same algorithm runs in this process with the limit shared
out: each of `share` processes admits `1/share` of it, starting from buckets spent but for one
request (what Redis had just admitted is unknown). A request is never refused, or failed,
because Redis is down.

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
from service.storage.redis_urls import is_sentinel_url, sentinel_options

log = logging.getLogger(__name__)

RETRY_REDIS_AFTER = 1.0
REDIS_CONNECTIONS = 8

# One call for every tenant with requests in this turn of the event loop. KEYS: the tenants'
# keys; ARGV, three per key: µs between requests at the sustained rate, the burst tolerance in µs
# ((capacity - 1) * interval), and how many requests ask. Returns three numbers per key: how many
# are admitted (the first ones), µs until one more would be, µs until the bucket is full again.
GCRA_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local out = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 * i - 2])
  local tolerance = tonumber(ARGV[3 * i - 1])
  local asking = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local admitted = 0
  if now >= tat - tolerance then
    admitted = math.min(asking, math.floor((now + tolerance - tat) / interval) + 1)
    tat = tat + admitted * interval
    redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
  end
  out[#out + 1] = admitted
  out[#out + 1] = math.max(0, tat - tolerance - now)
  out[#out + 1] = tat - now
end
return out
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


def _decisions(asking: int, admitted: int, retry_us: float, full_us: float, capacity: float,
               interval: float, counted_in: str) -> list[RateDecision]:
    """One decision per request of a tenant's batch: the first `admitted` are in, each seeing the
    bucket as it was after its own admission."""
    decisions = []
    for n in range(asking):
        if n < admitted:
            full_after = full_us - (admitted - 1 - n) * interval
            remaining = max(0, math.floor(capacity - full_after / interval + 1e-9))
            decisions.append(RateDecision(True, remaining, 0.0, full_after / 1e6, counted_in))
        else:
            decisions.append(RateDecision(False, 0, retry_us / 1e6, full_us / 1e6, counted_in))
    return decisions


class LocalRates:
    """GCRA in this process: tenant → the time (µs of time.monotonic) its bucket is full again."""

    def __init__(self) -> None:
        self._full_at: dict[int, float] = {}
        self._spent_at = float("-inf")  # µs: buckets not touched since count as spent then

    def spend_all(self) -> None:
        """Treat every tenant's bucket as spent now (see RateCounter._redis_failed)."""
        self._full_at.clear()
        self._spent_at = time.monotonic() * 1e6

    def hit(self, tenant_id: int, rps: float, burst: float) -> RateDecision:
        capacity, interval, tolerance = _bucket(rps, burst)
        now = time.monotonic() * 1e6
        # A bucket spent at `_spent_at` but for one request is full again `tolerance` later.
        tat = max(self._full_at.get(tenant_id, self._spent_at + tolerance), now)
        admitted = now >= tat - tolerance
        if admitted:
            tat += interval
            self._full_at[tenant_id] = tat
            if len(self._full_at) > 10_000:  # tenants whose buckets are full again need no state
                self._full_at = {t: at for t, at in self._full_at.items() if at > now}
        return _decisions(1, int(admitted), max(0.0, tat - tolerance - now), tat - now,
                          capacity, interval, "process")[0]


@dataclass
class _Asking:
    rps: int
    burst: int
    waiters: list[asyncio.Future[RateDecision | None]]


class RateCounter:
    """Counts tenants' requests in Redis when it has a client and Redis answers, else locally.

    Requests arriving in the same turn of the event loop are counted together, one script call
    for all of them (a burst of 300 is one round trip, not 300 calls competing for connections
    and timing out behind each other)."""

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
        self._asking: dict[int, _Asking] = {}
        self._calls: set[asyncio.Task] = set()

    async def hit(self, tenant_id: int, rps: int, burst: int) -> RateDecision:
        """Count one request of the tenant against its limit; says whether it is admitted."""
        if self._script is not None and time.monotonic() >= self._skip_redis_until:
            waiter: asyncio.Future[RateDecision | None] = \
                asyncio.get_running_loop().create_future()
            if not self._asking:
                asyncio.get_running_loop().call_soon(self._send)
            asking = self._asking.setdefault(tenant_id, _Asking(rps, burst, []))
            asking.waiters.append(waiter)
            decision = await waiter
            if decision is not None:
                return decision
        # Each process admits its share; never less than one request at once.
        return self.local.hit(tenant_id, rps / self.share, burst / self.share)

    def _send(self) -> None:
        batch, self._asking = self._asking, {}
        call = asyncio.ensure_future(self._count_in_redis(batch))
        self._calls.add(call)
        call.add_done_callback(self._calls.discard)

    async def _count_in_redis(self, batch: dict[int, _Asking]) -> None:
        buckets = {tenant: _bucket(a.rps, a.burst) for tenant, a in batch.items()}
        args: list[float] = []
        for tenant, (_, interval, tolerance) in buckets.items():
            args += [interval, tolerance, len(batch[tenant].waiters)]
        try:
            async with asyncio.timeout(self.timeout):
                counted = await self._script(  # type: ignore[misc]
                    keys=[f"{self.prefix}:rl:{tenant}" for tenant in batch], args=args)
        except REDIS_ERRORS as exc:
            self._redis_failed(exc)
            for asking in batch.values():
                for waiter in asking.waiters:
                    if not waiter.done():
                        waiter.set_result(None)  # counted locally by its own request
            return
        for n, (tenant, asking) in enumerate(batch.items()):
            capacity, interval, _ = buckets[tenant]
            admitted, retry_us, full_us = counted[3 * n: 3 * n + 3]
            decisions = _decisions(len(asking.waiters), int(admitted), float(retry_us),
                                   float(full_us), capacity, interval, "redis")
            for waiter, decision in zip(asking.waiters, decisions, strict=True):
                if not waiter.done():
                    waiter.set_result(decision)

    def _redis_failed(self, exc: BaseException) -> None:
        if self.metrics is not None:
            self.metrics.rate_limit_fallbacks.inc()
        if time.monotonic() >= self._skip_redis_until:  # one line per trip, not per call
            log.warning("rate limits counted in this process for a while: Redis failed",
                        extra={"error": type(exc).__name__, "retry_in_s": RETRY_REDIS_AFTER})
            # What Redis admitted just now is unknown here: count as if every bucket had just
            # been spent but for one request, so the switch adds no burst of its own on top of
            # Redis' count.
            self.local.spend_all()
        self._skip_redis_until = time.monotonic() + RETRY_REDIS_AFTER

    async def warm_up(self) -> bool:
        """Connect and load the script before the first request needs it (a first call that
        connects and loads would take several round trips); False when Redis does not answer."""
        if self.redis is None:
            return False
        try:
            async with asyncio.timeout(max(self.timeout, 1.0)):
                await self.redis.script_load(GCRA_SCRIPT)
        except REDIS_ERRORS as exc:
            log.warning("Redis does not answer yet; rate limits are counted in this process "
                        "until it does", extra={"error": type(exc).__name__})
            return False
        return True

    async def close(self) -> None:
        await asyncio.gather(*self._calls, return_exceptions=True)
        if self.redis is not None:
            await self.redis.aclose()


def redis_for_rates(url: str, timeout: float) -> Any:
    """A redis-py asyncio client for the counter: a bounded pool (a flood must not open a
    connection per request), every call bounded by `timeout`. Behind sentinels
    (`redis+sentinel://...`, as L2 may be), connections go to the service's current master."""
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

    socket = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if is_sentinel_url(url):
        addresses, service, options = sentinel_options(url)
        sentinel = Sentinel(addresses, sentinel_kwargs=socket)
        pool_kwargs = options.pop("connection_pool_kwargs", {})
        pool: Any = SentinelConnectionPool(
            service, sentinel, max_connections=REDIS_CONNECTIONS, **socket, **options,
            **pool_kwargs,
        )
    else:
        pool = BlockingConnectionPool.from_url(
            url, max_connections=REDIS_CONNECTIONS, timeout=timeout, **socket,
        )
    return Redis.from_pool(pool)  # the client owns the pool: closing it closes the connections
