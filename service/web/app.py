"""The application factory: routes, middleware and lifecycles; no I/O until the app starts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from service.adapters.connect_replay import ConnectReplay
from service.adapters.content import AnswerCache
from service.adapters.personalize_runtime import PersonalizeRuntime
from service.adapters.user_recommendations import UserRecommendations
from service.enrichment.recommender_lookup import RecommenderLookup
from service.resolution.invalidation import InvalidationListener
from service.resolution.local_cache import LocalCache
from service.resolution.notified_versions import NotifiedVersions
from service.resolution.resolver import ItemResolver
from service.resolution.shared_cache import SharedCache
from service.runtime import tracing
from service.runtime.loop_lag import LoopLagMonitor
from service.runtime.loop_slices import LoopSlicer
from service.runtime.metrics import Metrics
from service.runtime.settings import Settings, mask_url
from service.storage.db import connect, open_pool, open_read_pool
from service.storage.key_revocations import RevocationChannel
from service.storage.key_usage import KeyUsageRecorder
from service.storage.rate_counter import RateCounter, redis_for_rates
from service.storage.read_routing import ReadRouting
from service.web.app_keys import (
    AUTHENTICATOR,
    CONNECT_REPLAY,
    CONTENT_ANSWERS,
    IMPORT_SLOTS,
    KEY_USAGE,
    LISTENER,
    LOOP_SLICER,
    METRICS,
    POOL,
    READS,
    RECOMMENDERS,
    REQUESTS_IN_FLIGHT,
    RESOLVER,
    REVOCATIONS,
    SETTINGS,
    SHARED_CACHE,
    TENANT_GATE,
    USER_RECOMMENDATIONS,
)
from service.web.auth import Authenticator
from service.web.http_server import parser_limits
from service.web.middlewares import request_context, traced_request_context
from service.web.request_tracker import RequestTracker
from service.web.routes import setup_routes
from service.web.tenant_gate import TenantGate
from service.web.tenant_slots import TenantSlots

log = logging.getLogger(__name__)


async def pg_pool_context(app: web.Application) -> AsyncIterator[None]:
    """The pool lives exactly as long as the app."""
    async with open_pool(app[SETTINGS]) as pool:
        app[POOL] = pool
        yield


def notified_window(settings: Settings) -> float:
    """How long notified versions are remembered: longer than any lag a replica is read with
    (`replica_max_lag`), plus the longest a read may take to land, plus a margin."""
    return settings.replica_max_lag + settings.db_command_timeout + 1.0


async def read_routing_context(app: web.Application) -> AsyncIterator[None]:
    """Where item reads go: the read replica's pool (DATABASE_READ_URL) while it is usable,
    else the primary's; its watch samples the replica's lag once a second."""
    settings = app[SETTINGS]
    async with open_read_pool(settings) as replica:
        reads = ReadRouting(
            app[POOL], replica, max_lag=settings.replica_max_lag,
            acquire_timeout=settings.db_acquire_timeout, metrics=app[METRICS],
        )
        app[READS] = reads
        if replica is not None:
            await reads.start()
        try:
            yield
        finally:
            await reads.close()


async def shared_cache_context(app: web.Application) -> AsyncIterator[None]:
    """L2 in Redis, when REDIS_URL is set. A Redis down at start is logged, not fatal: L2 is a
    speed-up, and it is used as soon as Redis answers."""
    settings = app[SETTINGS]
    if not settings.redis_url:
        yield
        return
    shared = SharedCache(
        settings.redis_url, ttl=settings.cache_ttl, negative_ttl=settings.cache_negative_ttl,
        timeout=settings.redis_timeout, metrics=app[METRICS], prefix=settings.redis_prefix,
        # Tombstones outlive any write of a row older than them still on its way.
        tombstone_ttl=max(60.0, notified_window(settings)),
    )
    if await shared.ping():
        log.info("redis (L2) ready", extra={"redis": mask_url(settings.redis_url)})
    app[SHARED_CACHE] = shared
    try:
        yield
    finally:
        await shared.close()


async def tenant_gate_context(app: web.Application) -> AsyncIterator[None]:
    """Tenants' rate limits (counted in Redis when REDIS_URL is set) and slots in flight."""
    settings = app[SETTINGS]
    redis = redis_for_rates(settings.redis_url, settings.rate_limit_timeout) \
        if settings.redis_url else None
    counter = RateCounter(redis, prefix=settings.redis_prefix,
                          timeout=settings.rate_limit_timeout,
                          share=settings.rate_limit_processes or 1, metrics=app[METRICS])
    await counter.warm_up()  # a Redis down at start is logged, not fatal
    slots = TenantSlots(settings.tenant_max_in_flight, settings.tenant_max_queued)
    app[TENANT_GATE] = TenantGate(counter, slots, app[METRICS])
    try:
        yield
    finally:
        await counter.close()


async def key_usage_context(app: web.Application) -> AsyncIterator[None]:
    """Writes when keys were last used, in batches; what is left is written at shutdown."""
    settings = app[SETTINGS]
    usage = KeyUsageRecorder(app[POOL], interval=settings.key_usage_interval,
                             acquire_timeout=settings.db_acquire_timeout)
    usage.start()
    app[KEY_USAGE] = usage
    try:
        yield
    finally:
        await usage.close()


async def lookups_context(app: web.Application) -> AsyncIterator[None]:
    """The per-process lookups that sit on the pool and the caches."""
    settings = app[SETTINGS]
    pool = app[POOL]
    stale = settings.cache_stale_seconds
    app[AUTHENTICATOR] = Authenticator(pool, settings.auth_cache_seconds, stale,
                                       usage=app[KEY_USAGE])
    app[RECOMMENDERS] = RecommenderLookup(pool, settings.auth_cache_seconds, stale)
    # A replica can answer rows older than a notified change, and so can L2 when a tombstone was
    # lost (a Redis call that timed out, a failover): both are checked against notified versions.
    notified = (NotifiedVersions(notified_window(settings))
                if settings.database_read_url or settings.redis_url else None)
    local = LocalCache(
        max_entries=settings.cache_max_entries, max_bytes=settings.cache_max_bytes,
        ttl=settings.cache_ttl,
        negative_ttl=settings.cache_negative_ttl, stale_seconds=stale,
    )
    resolver = ItemResolver(
        pool, query_timeout=settings.db_command_timeout, local=local,
        shared=app.get(SHARED_CACHE), metrics=app[METRICS],
        batch_window_ms=settings.batch_window_ms,
        default_deadline_ms=settings.default_deadline_ms,
        acquire_timeout=settings.db_acquire_timeout, reads=app[READS], notified=notified,
        slicer=app[LOOP_SLICER],
    )
    app[RESOLVER] = resolver
    app[CONTENT_ANSWERS] = AnswerCache()
    app[CONNECT_REPLAY] = ConnectReplay(app.get(SHARED_CACHE), settings.connect_replay_seconds,
                                        settings.connect_replay_max_bytes)
    try:
        yield
    finally:
        await resolver.close()


async def revocations_context(app: web.Application) -> AsyncIterator[None]:
    """Key revocations through Redis as well as Postgres's NOTIFY (when REDIS_URL is set), so a
    process that cannot hear from Postgres still refuses a revoked key within a second."""
    settings = app[SETTINGS]
    if not settings.redis_url:
        yield
        return
    channel = RevocationChannel(settings.redis_url, prefix=settings.redis_prefix,
                                timeout=settings.redis_timeout,
                                on_revoked=app[AUTHENTICATOR].revoked)
    channel.start()
    app[REVOCATIONS] = channel
    try:
        yield
    finally:
        await channel.close()


async def invalidation_context(app: web.Application) -> AsyncIterator[None]:
    """The dedicated LISTEN connection that keeps every cache of this process current. It goes to
    DATABASE_URL's writable server only (NOTIFY is never delivered on a standby), never to a
    read replica."""
    settings = app[SETTINGS]
    listener = InvalidationListener(
        lambda: connect(settings, role="listener", target_session_attrs="read-write"),
        app[POOL], app[RESOLVER], app[METRICS], ping_seconds=settings.listener_ping_seconds,
    )
    # The key and recommender caches live above the resolution layer: they subscribe.
    listener.on_keys_changed(app[AUTHENTICATOR].expire_all)
    listener.on_recommenders_changed(app[RECOMMENDERS].expire_all)
    # A primary turned read-only no longer sees the writes: listen where they now go.
    app[READS].on_primary_read_only(listener.reconnect)
    await listener.start()
    # What was committed before this process listened, it was never told of: the replica is read
    # once it has replayed all that.
    await app[READS].hold_until_replayed()
    app[LISTENER] = listener
    try:
        yield
    finally:
        await listener.close()


async def loop_lag_context(app: web.Application) -> AsyncIterator[None]:
    """Samples this process's event-loop lag into /metrics (service/runtime/loop_lag.py)."""
    metrics = app[METRICS]
    monitor = LoopLagMonitor(metrics.loop_lag.observe, metrics.loop_lag_max.set,
                             count_gc=metrics.count_gc)
    monitor.start()
    try:
        yield
    finally:
        await monitor.close()


async def personalize_context(app: web.Application) -> AsyncIterator[None]:
    """The process's one Personalize runtime client, and the per-user results cache on it."""
    settings = app[SETTINGS]
    async with PersonalizeRuntime.open(settings.personalize_endpoint_url,
                                       settings.content_deadline_ms / 1000,
                                       app[METRICS]) as runtime:
        users = UserRecommendations(runtime, app.get(SHARED_CACHE), app[METRICS])
        app[USER_RECOMMENDATIONS] = users
        try:
            yield
        finally:
            await users.close()


def create_app(settings: Settings) -> web.Application:
    if not settings.database_url:
        raise ValueError("create_app needs settings.database_url (the CLI starts an embedded one)")
    app = web.Application(
        # Traced only when this process turned traces on (service/runtime/tracing.py): untraced,
        # not even a test per request.
        middlewares=[traced_request_context if tracing.tracer is not None else request_context],
        # Pinpoint sends up to 6 MB; the default 1 MiB would refuse real events.
        client_max_size=settings.max_body_bytes,
        # The HTTP parser's limits, from ours: every runner of this app hands them to aiohttp.
        handler_args=parser_limits(settings),
    )
    app[SETTINGS] = settings
    app[REQUESTS_IN_FLIGHT] = RequestTracker()
    app[METRICS] = Metrics()
    app[LOOP_SLICER] = LoopSlicer(settings.loop_slice_ms / 1000,
                                  settings.loop_shared_slice_ms / 1000)
    app[IMPORT_SLOTS] = asyncio.Semaphore(settings.max_concurrent_imports)
    app.cleanup_ctx.append(pg_pool_context)
    app.cleanup_ctx.append(read_routing_context)
    app.cleanup_ctx.append(shared_cache_context)
    app.cleanup_ctx.append(tenant_gate_context)
    app.cleanup_ctx.append(key_usage_context)
    app.cleanup_ctx.append(lookups_context)
    app.cleanup_ctx.append(revocations_context)
    app.cleanup_ctx.append(invalidation_context)
    app.cleanup_ctx.append(personalize_context)
    # Last: the lag of serving, not of start-up (migrations, first connections, cache tables).
    app.cleanup_ctx.append(loop_lag_context)
    setup_routes(app)
    return app
