"""The application factory: routes, middleware and lifecycles; no I/O until the app starts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from service.app_keys import (
    AUTHENTICATOR,
    IMPORT_SLOTS,
    POOL,
    RECOMMENDERS,
    RESOLVER,
    SETTINGS,
)
from service.auth import Authenticator
from service.db import pg_pool_context
from service.middlewares import request_context
from service.recommender_lookup import RecommenderLookup
from service.resolver import ItemResolver
from service.routes import setup_routes
from service.settings import Settings


async def lookups_context(app: web.Application) -> AsyncIterator[None]:
    """The per-process lookups that sit on the pool (they hold no resources of their own)."""
    settings = app[SETTINGS]
    pool = app[POOL]
    app[AUTHENTICATOR] = Authenticator(pool, settings.auth_cache_seconds)
    app[RECOMMENDERS] = RecommenderLookup(pool, settings.auth_cache_seconds)
    app[RESOLVER] = ItemResolver(pool, query_timeout=settings.db_command_timeout)
    yield


def create_app(settings: Settings) -> web.Application:
    if not settings.database_url:
        raise ValueError("create_app needs settings.database_url (the CLI starts an embedded one)")
    app = web.Application(
        middlewares=[request_context],
        # Pinpoint sends up to 6 MB; the default 1 MiB would refuse real events.
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[IMPORT_SLOTS] = asyncio.Semaphore(settings.max_concurrent_imports)
    app.cleanup_ctx.append(pg_pool_context)
    app.cleanup_ctx.append(lookups_context)
    setup_routes(app)
    return app
