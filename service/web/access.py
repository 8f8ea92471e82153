"""The scope guard every protected handler wears: `@requires("catalog:read")`.

Past the key and its scope, the request passes its tenant's gate (service/web/tenant_gate.py):
the rate limit, then a slot among the tenant's requests in flight, held until the handler ends.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Awaitable, Callable

from aiohttp import web

from service.errors import Forbidden
from service.resolution.deadline import request_deadline
from service.web.app_keys import (
    AUTHENTICATOR,
    DEADLINE,
    LOOP_SLICER,
    PRINCIPAL,
    SETTINGS,
    TENANT_GATE,
)
from service.web.auth import SCOPES, Principal

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _take_turn(request: web.Request, principal: Principal) -> None:
    """A burst of requests takes turns instead of holding the loop (runtime/loop_slices.py), in
    a line per tenant. After the tenant's gate, not before: a flooding tenant's requests wait
    for their slots in their own queue, and another tenant's request is let through here ahead
    of the flood's waiting turns."""
    gate = request.app[TENANT_GATE]
    waiter = request.app[LOOP_SLICER].turn(principal.tenant_id,
                                           contended=gate.contended(principal))
    if waiter is not None:
        await waiter


def requires(scope: str, *, in_flight: bool = True, default_deadline: str = "default_deadline_ms"
             ) -> Callable[[Handler], Handler]:
    """Guard a handler: the caller's key must carry `scope` (or `admin`), its tenant be within
    its rate limit, and (unless `in_flight` is False, for bulk imports, which have slots of their
    own) the request hold one of the tenant's slots while it runs. `default_deadline` names the
    Settings field that gives the budget when no X-Deadline-Ms comes (a per-recipient route's
    caller allows far less than a Pinpoint batch's)."""
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
            # Known before the scope check, so a refused key is named in the logs too.
            request[PRINCIPAL] = principal
            if not principal.allows(scope):
                raise Forbidden(
                    f"this API key lacks the {scope!r} scope", field="Authorization"
                )
            gate = request.app[TENANT_GATE]
            rate_headers = await gate.check_rate(principal)
            if in_flight:
                await gate.take_slot(principal, deadline.remaining())
                try:
                    await _take_turn(request, principal)
                    response = await handler(request)
                finally:
                    gate.give_back_slot(principal)
            else:
                await _take_turn(request, principal)
                response = await handler(request)
            if rate_headers and not response.prepared:
                response.headers.update(rate_headers)
            return response

        guarded.required_scope = scope  # type: ignore[attr-defined]
        return guarded

    return decorate
