"""The scope guard every protected handler wears: `@requires("catalog:read")`."""

from __future__ import annotations

import functools
import operator
from collections.abc import Awaitable, Callable

from aiohttp import web

from service.errors import Forbidden
from service.resolution.deadline import request_deadline
from service.web.app_keys import AUTHENTICATOR, DEADLINE, PRINCIPAL, SETTINGS
from service.web.auth import SCOPES

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def requires(scope: str, *, default_deadline: str = "default_deadline_ms"
             ) -> Callable[[Handler], Handler]:
    """Guard a handler: the caller's key must carry `scope` (or `admin`). `default_deadline`
    names the Settings field that gives the budget when no X-Deadline-Ms comes (a per-recipient
    route's caller allows far less than a Pinpoint batch's)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    budget_of = operator.attrgetter(default_deadline)

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            # The deadline starts before anything can wait on Postgres, the key lookup included.
            deadline = request_deadline(request, budget_of(request.app[SETTINGS]))
            request[DEADLINE] = deadline
            principal = await request.app[AUTHENTICATOR].authenticate(
                request.headers.get("Authorization"), deadline
            )
            if not principal.allows(scope):
                raise Forbidden(
                    f"this API key lacks the {scope!r} scope", field="Authorization"
                )
            request[PRINCIPAL] = principal
            return await handler(request)

        guarded.required_scope = scope  # type: ignore[attr-defined]
        return guarded

    return decorate
