"""Typed keys for what the app and each request carry; the only place such keys are defined."""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp import web

from service.auth import Authenticator, Principal
from service.recommender_lookup import RecommenderLookup
from service.resolver import ItemResolver
from service.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
RESOLVER = web.AppKey("resolver", ItemResolver)
RECOMMENDERS = web.AppKey("recommenders", RecommenderLookup)
# Bounds the bulk imports running at once in this process (each holds a connection of its own).
IMPORT_SLOTS = web.AppKey("import_slots", asyncio.Semaphore)

PRINCIPAL = web.RequestKey("principal", Principal)
REQUEST_ID = web.RequestKey("request_id", str)
