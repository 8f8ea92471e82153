"""Typed keys for what the app and each request carry; the only place such keys are defined."""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp import web

from service.adapters.connect_replay import ConnectReplay
from service.adapters.content import AnswerCache
from service.adapters.user_recommendations import UserRecommendations
from service.enrichment.recommender_lookup import RecommenderLookup
from service.resolution.deadline import Deadline
from service.resolution.invalidation import InvalidationListener
from service.resolution.resolver import ItemResolver
from service.resolution.shared_cache import SharedCache
from service.runtime.loop_slices import LoopSlicer
from service.runtime.metrics import Metrics
from service.runtime.settings import Settings
from service.storage.key_revocations import RevocationChannel
from service.storage.key_usage import KeyUsageRecorder
from service.storage.read_routing import ReadRouting
from service.web.auth import Authenticator, Principal
from service.web.request_tracker import RequestTracker
from service.web.tenant_gate import TenantGate

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
# Item reads: the read replica's pool while it is usable, else POOL (the primary).
READS = web.AppKey("reads", ReadRouting)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
RESOLVER = web.AppKey("resolver", ItemResolver)
RECOMMENDERS = web.AppKey("recommenders", RecommenderLookup)
REQUESTS_IN_FLIGHT = web.AppKey("requests_in_flight", RequestTracker)
METRICS = web.AppKey("metrics", Metrics)
LOOP_SLICER = web.AppKey("loop_slicer", LoopSlicer)
SHARED_CACHE = web.AppKey("shared_cache", SharedCache)
LISTENER = web.AppKey("invalidation_listener", InvalidationListener)
# Revocations told through Redis too (when REDIS_URL is set).
REVOCATIONS = web.AppKey("revocations", RevocationChannel)
# Per-user Personalize results and the process's one Personalize client (issue 12).
USER_RECOMMENDATIONS = web.AppKey("user_recommendations", UserRecommendations)
# Amazon Connect: each IdempotencyToken's first answer, replayed to retries.
CONNECT_REPLAY = web.AppKey("connect_replay", ConnectReplay)
CONTENT_ANSWERS = web.AppKey("content_answers", AnswerCache)
# Bounds the bulk imports running at once in this process (each holds a connection of its own).
IMPORT_SLOTS = web.AppKey("import_slots", asyncio.Semaphore)
# Keys and limits (issue 14): when keys were last used, and each tenant's rate and slots.
KEY_USAGE = web.AppKey("key_usage", KeyUsageRecorder)
TENANT_GATE = web.AppKey("tenant_gate", TenantGate)

PRINCIPAL = web.RequestKey("principal", Principal)
REQUEST_ID = web.RequestKey("request_id", str)
DEADLINE = web.RequestKey("deadline", Deadline)
AUDIT_TARGET = web.RequestKey("audit_target", str)
