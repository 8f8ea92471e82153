"""Typed keys for what the app and each request carry; the only place such keys are defined."""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp import web

from service.auth import Authenticator, Principal
from service.deadline import Deadline
from service.invalidation import InvalidationListener
from service.metrics import Metrics
from service.recommender_lookup import RecommenderLookup
from service.request_tracker import RequestTracker
from service.resolver import ItemResolver
from service.settings import Settings
from service.shared_cache import SharedCache

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
RESOLVER = web.AppKey("resolver", ItemResolver)
RECOMMENDERS = web.AppKey("recommenders", RecommenderLookup)
REQUESTS_IN_FLIGHT = web.AppKey("requests_in_flight", RequestTracker)
METRICS = web.AppKey("metrics", Metrics)
SHARED_CACHE = web.AppKey("shared_cache", SharedCache)
LISTENER = web.AppKey("invalidation_listener", InvalidationListener)
# Bounds the bulk imports running at once in this process (each holds a connection of its own).
IMPORT_SLOTS = web.AppKey("import_slots", asyncio.Semaphore)

PRINCIPAL = web.RequestKey("principal", Principal)
REQUEST_ID = web.RequestKey("request_id", str)
DEADLINE = web.RequestKey("deadline", Deadline)
