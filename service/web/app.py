"""The application factory: routes, middleware and lifecycles; no I/O until the app starts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from service.adapters.personalize_runtime import PersonalizeRuntime
from service.adapters.user_recommendations import UserRecommendations
from service.enrichment.recommender_lookup import RecommenderLookup
from service.resolution.invalidation import InvalidationListener
from service.resolution.local_cache import LocalCache
from service.resolution.resolver import ItemResolver
from service.resolution.shared_cache import SharedCache
from service.runtime.metrics import Metrics
from service.runtime.settings import Settings, mask_url
from service.storage.db import connect, open_pool
from service.web.app_keys import (
    AUTHENTICATOR,
    IMPORT_SLOTS,
    LISTENER,
    METRICS,
    POOL,
    RECOMMENDERS,
    REQUESTS_IN_FLIGHT,
    RESOLVER,
    SETTINGS,
    SHARED_CACHE,
    USER_RECOMMENDATIONS,
)
from service.web.auth import Authenticator
from service.web.middlewares import request_context
from service.web.request_tracker import RequestTracker
from service.web.routes import setup_routes

log = logging.getLogger(__name__)


async def pg_pool_context(app: web.Application) -> AsyncIterator[None]:
    """The pool lives exactly as long as the app."""
    async with open_pool(app[SETTINGS]) as pool:
        app[POOL] = pool
        yield


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
    )
    if await shared.ping():
        log.info("redis (L2) ready", extra={"redis": mask_url(settings.redis_url)})
    app[SHARED_CACHE] = shared
    try:
        yield
    finally:
        await shared.close()


async def lookups_context(app: web.Application) -> AsyncIterator[None]:
    """The per-process lookups that sit on the pool and the caches."""
    settings = app[SETTINGS]
    pool = app[POOL]
    stale = settings.cache_stale_seconds
    app[AUTHENTICATOR] = Authenticator(pool, settings.auth_cache_seconds, stale)
    app[RECOMMENDERS] = RecommenderLookup(pool, settings.auth_cache_seconds, stale)
    local = LocalCache(
        max_entries=settings.cache_max_entries, ttl=settings.cache_ttl,
        negative_ttl=settings.cache_negative_ttl, stale_seconds=stale,
    )
    resolver = ItemResolver(
        pool, query_timeout=settings.db_command_timeout, local=local,
        shared=app.get(SHARED_CACHE), metrics=app[METRICS],
        batch_window_ms=settings.batch_window_ms,
        default_deadline_ms=settings.default_deadline_ms,
        acquire_timeout=settings.db_acquire_timeout,
    )
    app[RESOLVER] = resolver
    try:
        yield
    finally:
        await resolver.close()


async def invalidation_context(app: web.Application) -> AsyncIterator[None]:
    """The dedicated LISTEN connection that keeps every cache of this process current."""
    settings = app[SETTINGS]
    listener = InvalidationListener(lambda: connect(settings), app[POOL], app[RESOLVER],
                                    app[METRICS])
    # The key and recommender caches live above the resolution layer: they subscribe.
    listener.on_keys_changed(app[AUTHENTICATOR].expire_all)
    listener.on_recommenders_changed(app[RECOMMENDERS].expire_all)
    await listener.start()
    app[LISTENER] = listener
    try:
        yield
    finally:
        await listener.close()


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
        middlewares=[request_context],
        # Pinpoint sends up to 6 MB; the default 1 MiB would refuse real events.
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[REQUESTS_IN_FLIGHT] = RequestTracker()
    app[METRICS] = Metrics()
    app[IMPORT_SLOTS] = asyncio.Semaphore(settings.max_concurrent_imports)
    app.cleanup_ctx.append(pg_pool_context)
    app.cleanup_ctx.append(shared_cache_context)
    app.cleanup_ctx.append(lookups_context)
    app.cleanup_ctx.append(invalidation_context)
    app.cleanup_ctx.append(personalize_context)
    setup_routes(app)
    return app
