"""`@audited(action, target=...)`: the audit line of an admin write made over HTTP.

Worn above `@requires(...)`, so it sees every outcome of a caller whose key is known, refusals
(403, 404, 409, 422, 429) included; a request without a valid key has no "who" and is left to the
access log. The target is a path parameter, or what the handler sets in `request[AUDIT_TARGET]`
(a new key's prefix, known only once it is made).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from service.errors import ProblemError
from service.runtime.audit import audit, outcome_of
from service.web.app_keys import AUDIT_TARGET, PRINCIPAL, REQUEST_ID

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def audited(action: str, *, target: str | None = None) -> Callable[[Handler], Handler]:
    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def audited_handler(request: web.Request) -> web.StreamResponse:
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except (ProblemError, web.HTTPException) as exc:
                status = exc.status
                raise
            finally:
                principal = request.get(PRINCIPAL)
                if principal is not None:
                    which = request.get(AUDIT_TARGET) or (
                        request.match_info.get(target) if target else None)
                    audit(action, via="http", tenant=principal.tenant_name,
                          key=principal.key_prefix, target=which, outcome=outcome_of(status),
                          status=status, request_id=request.get(REQUEST_ID))

        return audited_handler

    return decorate
