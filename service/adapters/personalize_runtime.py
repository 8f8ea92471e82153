"""Amazon Personalize's runtime (`GetRecommendations`), through aiobotocore: one client per process.

aiobotocore is botocore on aiohttp, so the call is signed (SigV4), retried and its errors parsed
exactly as the AWS SDKs do; region and credentials come from botocore's usual chain (the
`AWS_*` environment, shared config files, container and instance roles), and
`ENRICHER_PERSONALIZE_ENDPOINT_URL` points it elsewhere (a VPC endpoint, the tests' fake).

A call has a budget, what the request's deadline leaves it (see
service/adapters/user_recommendations.py): it runs under `asyncio.timeout(budget)`, so neither
connecting, nor reading, nor botocore's own retries (standard mode, 3 attempts, with backoff) can
run past it; the client's connect and read timeouts are the content route's whole budget at most.
Whatever goes wrong (slow, throttled, 5xx, unreachable, refused credentials, a bad ARN) is one
`PersonalizeUnavailable` naming the cause, which the caller answers with the fallback items.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import botocore.exceptions
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from service.enrichment.recommenders import PersonalizeSpec
from service.items import item_id_problem
from service.runtime import tracing
from service.runtime.metrics import Metrics

log = logging.getLogger(__name__)

SERVICE = "personalize-runtime"
MAX_ATTEMPTS = 3
# What a failing Personalize (or the way to it) raises through aiobotocore.
_FAILURES = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError,
             aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError, TypeError)
_THROTTLED = frozenset(("ThrottlingException", "TooManyRequestsException",
                        "ProvisionedThroughputExceededException"))


# Why the last attempt of the current call failed, set by a botocore event hook, so that a call
# whose retries outlast its budget is counted by its cause (throttled, say), not as a timeout.
_last_failure: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "personalize_last_failure", default=None)


def _note_attempt(response: Any = None, caught_exception: BaseException | None = None,
                  **_: Any) -> None:
    """botocore's `needs-retry` event, after each attempt; returns None (decides nothing)."""
    if caught_exception is not None:
        _last_failure.set(_reason(caught_exception))
    elif response is not None:
        parsed = response[1]
        if parsed.get("ResponseMetadata", {}).get("HTTPStatusCode", 200) >= 300:
            _last_failure.set(_reason_of_response(parsed))


class PersonalizeUnavailable(Exception):
    """Personalize gave no usable answer in time; `reason` is the metric's outcome label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Recommended:
    """A user's recommendations as Personalize answered them, in its order."""

    ids: tuple[str, ...]
    scores: tuple[float | None, ...]
    recommendation_id: str | None

    def as_json(self) -> list[object]:
        return [list(self.ids), list(self.scores), self.recommendation_id]

    @classmethod
    def from_json(cls, value: list) -> Recommended:
        ids, scores, recommendation_id = value
        return cls(tuple(ids), tuple(scores), recommendation_id)


class PersonalizeRuntime:
    """The process's one Personalize runtime client (None inside when no region is known)."""

    def __init__(self, client: object | None, metrics: Metrics) -> None:
        self._client = client
        self._metrics = metrics

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, endpoint_url: str | None, budget_seconds: float,
                   metrics: Metrics) -> AsyncIterator[PersonalizeRuntime]:
        config = AioConfig(
            connect_timeout=budget_seconds, read_timeout=budget_seconds,
            retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
            max_pool_connections=64,
        )
        session = get_session()
        try:
            creator = session.create_client(SERVICE, endpoint_url=endpoint_url, config=config)
            client = await creator.__aenter__()
            client.meta.events.register(f"needs-retry.{SERVICE}", _note_attempt)
        except botocore.exceptions.NoRegionError:
            # INFO, not a warning: most deployments may not use Personalize at all; a user
            # route called without a region is counted (outcome `unconfigured`) and logged.
            log.info("no AWS region configured (AWS_DEFAULT_REGION): the user route will serve "
                     "fallback items")
            yield cls(None, metrics)
            return
        try:
            yield cls(client, metrics)
        finally:
            await creator.__aexit__(None, None, None)

    async def get_recommendations(
        self, spec: PersonalizeSpec, user_id: str, context: Mapping[str, str],
        filter_values: Mapping[str, str], budget: float,
    ) -> Recommended:
        count = self._metrics.personalize_calls.labels
        if self._client is None:
            count("unconfigured").inc()
            raise PersonalizeUnavailable("unconfigured", "no AWS region is configured")
        if budget <= 0:
            count("timeout").inc()
            raise PersonalizeUnavailable("timeout", "no time left in the request's budget")
        params: dict[str, object] = {"userId": user_id, "numResults": spec.num_results}
        if spec.campaign_arn:
            params["campaignArn"] = spec.campaign_arn
        else:
            params["recommenderArn"] = spec.recommender_arn
        if spec.filter_arn:
            params["filterArn"] = spec.filter_arn
            if filter_values:
                params["filterValues"] = dict(filter_values)
        if context:
            params["context"] = dict(context)
        _last_failure.set(None)
        if tracing.tracer is None:
            return await self._call(params, budget)
        # A client span of ours: no maintained instrumentation covers aiobotocore. The user ID
        # and the filter values stay out of it.
        with tracing.span("Personalize.GetRecommendations", {
            "rpc.system": "aws-api", "rpc.service": "Personalize",
            "rpc.method": "GetRecommendations",
        }) as span:
            try:
                return await self._call(params, budget)
            except PersonalizeUnavailable as exc:
                span.set_attribute("enricher.outcome", exc.reason)
                tracing.set_error(span, exc)
                raise

    async def _call(self, params: dict[str, object], budget: float) -> Recommended:
        count = self._metrics.personalize_calls.labels
        try:
            async with asyncio.timeout(budget):
                answer = await self._client.get_recommendations(**params)  # type: ignore[attr-defined]
            found = _recommended(answer)
        except _FAILURES as exc:
            reason = _reason(exc)
            if reason == "timeout":  # the budget ran out: while retrying what, if anything?
                reason = _last_failure.get() or reason
            count(reason).inc()
            log.warning("personalize unavailable", extra={"reason": reason,
                                                          "error": _describe(exc)})
            raise PersonalizeUnavailable(reason, _describe(exc)) from exc
        count("ok").inc()
        return found


def _recommended(answer: Mapping[str, object]) -> Recommended:
    """The item IDs (that can be item IDs) and scores of a GetRecommendations answer."""
    ids: list[str] = []
    scores: list[float | None] = []
    for entry in answer.get("itemList") or []:  # type: ignore[union-attr]
        item_id = entry.get("itemId")
        if item_id_problem(item_id) is None:
            ids.append(item_id)
            score = entry.get("score")
            scores.append(float(score) if isinstance(score, int | float) else None)
    recommendation_id = answer.get("recommendationId")
    return Recommended(tuple(ids), tuple(scores),
                       recommendation_id if isinstance(recommendation_id, str) else None)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, botocore.exceptions.ClientError):
        return _reason_of_response(exc.response)
    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return "denied"
    return "unreachable"


def _reason_of_response(parsed: Mapping[str, Any]) -> str:
    code = parsed.get("Error", {}).get("Code", "")
    status = parsed.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code in _THROTTLED or status == 429:
        return "throttled"
    if status in (401, 403):
        return "denied"
    return "server_error" if status >= 500 else "refused"


def _describe(exc: BaseException) -> str:
    """What failed, for the log: the error's class and AWS code, never a credential."""
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'ClientError')}: {str(error.get('Message', ''))[:200]}"
    return type(exc).__name__
