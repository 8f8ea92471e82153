"""The scope guard every protected handler wears: `@requires("catalog:read")`."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from service.errors import Forbidden
from service.resolution.deadline import request_deadline
from service.web.app_keys import AUTHENTICATOR, DEADLINE, PRINCIPAL, SETTINGS
from service.web.auth import SCOPES

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def requires(scope: str) -> Callable[[Handler], Handler]:
    """Guard a handler: the caller's key must carry `scope` (or `admin`)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            # The deadline starts before anything can wait on Postgres, the key lookup included.
            deadline = request_deadline(request, request.app[SETTINGS].default_deadline_ms)
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
