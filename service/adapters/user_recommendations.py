"""Personalize in the loop: a user's recommended item IDs, asked of Personalize once and cached.

The user route (`GET /v1/recommenders/{r}/users/{user_id}/content`) answers exactly as the content
route (service/adapters/content.py) for the IDs Personalize returns; this module gets those IDs.

- **Query**: `context.KEY=value` and `filter.KEY=value` pass through as GetRecommendations'
  `context` and `filterValues` (keys and values checked against Personalize's own limits).
- **Cache**: a user's result (the ID list, scores and recommendation ID, never the content, which
  is resolved fresh, so an item change needs no eviction here) is kept for the recommender's
  `personalize.cache_seconds` in L1 (this process, bounded) and, when Redis is set, in L2 through
  SharedCache's generic get/set. The key is the recommender's definition, the user, the context
  and the filter values.
- **Single flight**: renders of one key that arrive while a call is out wait for that call (Braze
  renders a message up to three times at once); a failure is not cached.
- **Budget**: Personalize gets what is left of the request's deadline less the catalog's share
  (`CATALOG_SHARE` of it, at least `MIN_CATALOG_SECONDS`), so the fallback items can still be
  resolved and answered in time when Personalize is slow.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from service.adapters.personalize_runtime import PersonalizeRuntime, Recommended
from service.enrichment.recommenders import PersonalizeSpec
from service.errors import FieldError, ValidationFailed
from service.items import MAX_ID_LENGTH, item_id_problem
from service.resolution.deadline import Deadline
from service.resolution.shared_cache import SharedCache
from service.runtime.metrics import Metrics

# Personalize's own limits (botocore's personalize-runtime model: Context, FilterValues).
CONTEXT_KEY = re.compile(r"^[A-Za-z\d_]{1,150}$")
FILTER_KEY = re.compile(r"^[A-Za-z0-9_]{1,50}$")
MAX_CONTEXT = 150
MAX_FILTER_VALUES = 25
MAX_VALUE_LENGTH = 1000
CATALOG_SHARE = 0.25
MIN_CATALOG_SECONDS = 0.1
MAX_CACHED_USERS = 50_000
L2_PREFIX = "p:"


@dataclass(frozen=True)
class UserQuery:
    user_id: str
    context: tuple[tuple[str, str], ...]
    filter_values: tuple[tuple[str, str], ...]


def user_query(user_id: str, params: Mapping[str, str] | list[tuple[str, str]]) -> UserQuery:
    """The user and the `context.*` / `filter.*` query parameters, checked (422 naming each)."""
    errors: list[FieldError] = []
    if not 1 <= len(user_id) <= MAX_ID_LENGTH or "\x00" in user_id:
        errors.append(FieldError("user_id", f"must be 1-{MAX_ID_LENGTH} characters, no NUL"))
    context: dict[str, str] = {}
    filters: dict[str, str] = {}
    items = params.items() if isinstance(params, Mapping) else params
    for name, value in items:
        kind, dot, key = name.partition(".")
        if not dot or kind not in ("context", "filter"):
            continue
        pattern, target = (CONTEXT_KEY, context) if kind == "context" else (FILTER_KEY, filters)
        if not pattern.match(key):
            errors.append(FieldError(name, f"{kind} keys are {pattern.pattern} (Personalize's)"))
        elif len(value) > MAX_VALUE_LENGTH:
            errors.append(FieldError(name, f"at most {MAX_VALUE_LENGTH} characters"))
        elif key in target:
            errors.append(FieldError(name, "is given twice"))
        else:
            target[key] = value
    if len(context) > MAX_CONTEXT:
        errors.append(FieldError("context", f"at most {MAX_CONTEXT} context keys"))
    if len(filters) > MAX_FILTER_VALUES:
        errors.append(FieldError("filter", f"at most {MAX_FILTER_VALUES} filter values"))
    if errors:
        raise ValidationFailed.of_many(errors)
    return UserQuery(user_id, tuple(sorted(context.items())), tuple(sorted(filters.items())))


def personalize_budget(deadline: Deadline) -> float:
    """Seconds Personalize may take, leaving the catalog its share of what is left."""
    left = deadline.remaining()
    return left - max(left * CATALOG_SHARE, MIN_CATALOG_SECONDS)


class UserRecommendations:
    """Per-user Personalize results: L1, then L2, then one call per key at a time."""

    def __init__(self, runtime: PersonalizeRuntime, shared: SharedCache | None,
                 metrics: Metrics, max_entries: int = MAX_CACHED_USERS) -> None:
        self.runtime = runtime
        self.shared = shared
        self.max_entries = max_entries
        self._count = metrics.personalize_cache.labels
        self._entries: OrderedDict[tuple, tuple[float, Recommended]] = OrderedDict()
        self._flights: dict[tuple, asyncio.Future[Recommended]] = {}
        self._background: set[asyncio.Task] = set()

    async def get(self, recommender_id: int, spec: PersonalizeSpec, query: UserQuery,
                  deadline: Deadline) -> Recommended:
        """The user's recommendations; raises PersonalizeUnavailable (not cached) when
        Personalize cannot answer within its share of the deadline."""
        key = (recommender_id, spec, query)
        entry = self._entries.get(key)
        if entry is not None:
            if time.monotonic() < entry[0]:
                self._count("l1", "hit").inc()
                return entry[1]
            del self._entries[key]
        flight = self._flights.get(key)
        if flight is not None:
            self._count("l1", "joined").inc()
        else:
            self._count("l1", "miss").inc()
            flight = self._flights[key] = asyncio.ensure_future(
                self._fetch(key, spec, query, deadline))
            flight.add_done_callback(lambda done: self._landed(key, done))
        # Shielded: one render's client going away must not cancel the call the others wait for.
        return await asyncio.shield(flight)

    def _landed(self, key: tuple, flight: asyncio.Future[Recommended]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved: every waiter may be gone

    async def _fetch(self, key: tuple, spec: PersonalizeSpec, query: UserQuery,
                     deadline: Deadline) -> Recommended:
        l2_key = None
        if self.shared is not None and spec.cache_seconds:
            l2_key = L2_PREFIX + _digest(key)
            found = _stored(await self.shared.get_value(l2_key, personalize_budget(deadline)))
            if found is not None:
                self._count("l2", "hit").inc()
                self._keep(key, found, spec.cache_seconds)
                return found
            self._count("l2", "miss").inc()
        found = await self.runtime.get_recommendations(
            spec, query.user_id, dict(query.context), dict(query.filter_values),
            personalize_budget(deadline))
        if spec.cache_seconds:
            self._keep(key, found, spec.cache_seconds)
            if l2_key is not None:
                task = asyncio.ensure_future(
                    self.shared.set_value(l2_key, found.as_json(), spec.cache_seconds))  # type: ignore[union-attr]
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        return found

    def _keep(self, key: tuple, found: Recommended, seconds: float) -> None:
        self._entries[key] = (time.monotonic() + seconds, found)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def close(self) -> None:
        await asyncio.gather(*self._background, return_exceptions=True)


def _stored(value: object) -> Recommended | None:
    """A result read back from L2, or None for anything else (absent, or not of this shape)."""
    if not isinstance(value, list) or len(value) != 3:
        return None
    ids, scores, recommendation_id = value
    if (not isinstance(ids, list) or not isinstance(scores, list) or len(ids) != len(scores)
            or any(item_id_problem(i) for i in ids)
            or not all(s is None or isinstance(s, int | float) for s in scores)
            or not (recommendation_id is None or isinstance(recommendation_id, str))):
        return None
    return Recommended.from_json(value)


def _digest(key: tuple) -> str:
    """A short, stable name for a cache key in Redis (the user ID is not written out)."""
    recommender_id, spec, query = key
    material = orjson.dumps([recommender_id, spec.as_json(), query.user_id, query.context,
                             query.filter_values])
    return hashlib.blake2b(material, digest_size=20).hexdigest()
