"""API keys of the calling key's tenant: list, create, revoke, rotate (scope `admin`).

The work is done by service/storage/api_keys.py, which the CLI's `keys` commands call too. A new
key is in the answer once (with `Cache-Control: no-store`) and nowhere else; lists and errors
show prefixes only. Another tenant's prefix is not found (404), as its catalogs are.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.errors import Forbidden, ValidationFailed
from service.items import json_type
from service.key_rules import check_label, check_prefix, parse_duration, scopes_not_held
from service.storage import api_keys
from service.web.access import requires
from service.web.app_keys import (
    AUDIT_TARGET,
    AUTHENTICATOR,
    POOL,
    PRINCIPAL,
    REVOCATIONS,
    SETTINGS,
)
from service.web.audit import audited
from service.web.paging import check_known_params, next_link, page_limit
from service.web.request_body import read_json
from service.web.responses import json_response

DEFAULT_GRACE = "24h"
SECRET_HEADERS = {"Cache-Control": "no-store"}


def _object(body: Any, known: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationFailed.of("body", f"must be a JSON object, got {json_type(body)}")
    unknown = [k for k in body if k not in known]
    if unknown:
        raise ValidationFailed.of(unknown[0], "is not a field here (expected: "
                                  + ", ".join(known) + ")")
    return body


def _expires_in(body: dict[str, Any]) -> int | None:
    raw = body.get("expires_in")
    return None if raw is None else parse_duration(raw, "expires_in")


def created_json(created: api_keys.CreatedKey) -> dict[str, object]:
    return {"key": created.key, **created.info.as_json()}


@requires("admin")
async def list_keys(request: web.Request) -> web.Response:
    """`{"keys": [...], "next": url | null}`: the tenant's keys in prefix order, in pages."""
    query = request.query
    check_known_params(query, ("limit", "after"))
    limit = page_limit(query)
    after = query.get("after")
    if after is not None:
        check_prefix(after, "after")
    found = await api_keys.list_keys(request.app[POOL], request[PRINCIPAL].tenant_id,
                                     after=after or "", limit=limit + 1)
    page = found[:limit]
    more = len(found) > limit
    return json_response({
        "keys": [key.as_json() for key in page],
        "next": next_link(request, {"limit": str(limit)}, page[-1].prefix) if more else None,
    })


@audited("key.create")
@requires("admin")
async def create_key(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = _object(await read_json(request, settings.max_body_bytes),
                   ("scopes", "label", "expires_in"))
    scopes = body.get("scopes")
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        raise ValidationFailed.of("scopes", "must be a non-empty array of scope names")
    scopes = api_keys.checked_scopes(scopes)
    principal = request[PRINCIPAL]
    lacking = scopes_not_held(principal.scopes, scopes)
    if lacking:
        raise Forbidden(f"this API key cannot grant {lacking[0]!r}: a key never grants a scope "
                        "it lacks", field="scopes")
    label = check_label(body.get("label"))
    created = await api_keys.create_key(
        request.app[POOL], principal.tenant_id, scopes, label=label,
        expires_in=_expires_in(body), acquire_timeout=settings.db_acquire_timeout,
    )
    request[AUDIT_TARGET] = created.info.prefix
    return json_response(created_json(created), status=201, headers=SECRET_HEADERS)


@audited("key.revoke", target="prefix")
@requires("admin")
async def delete_key(request: web.Request) -> web.Response:
    """Revoke a key of the tenant (204; again 204 when it already was); 404 for no such key."""
    prefix = check_prefix(request.match_info["prefix"])
    tenant_id = request[PRINCIPAL].tenant_id
    await api_keys.revoke_key(request.app[POOL], tenant_id, prefix,
                              acquire_timeout=request.app[SETTINGS].db_acquire_timeout)
    # This process refuses the key before answering, even if Postgres goes silent next (its
    # cache would otherwise stand in for it). The NOTIFY tells the others, but it may arrive
    # after the caller's next request (the 'at once' a revoking admin relies on), or, Postgres
    # stalled, not for seconds: Redis tells them too (service/storage/key_revocations.py).
    authenticator = request.app[AUTHENTICATOR]
    authenticator.revoked(tenant_id, prefix)
    authenticator.expire_all()
    channel = request.app.get(REVOCATIONS)
    if channel is not None:
        await channel.publish(tenant_id, prefix)
    return web.Response(status=204)


@audited("key.rotate", target="prefix")
@requires("admin")
async def rotate_key(request: web.Request) -> web.Response:
    """A new key with the old one's scopes and label; the old one works until the grace ends."""
    prefix = check_prefix(request.match_info["prefix"])
    settings = request.app[SETTINGS]
    body: dict[str, Any] = {}
    if request.body_exists:  # the body is optional: no body is the default grace
        body = _object(await read_json(request, settings.max_body_bytes), ("grace", "expires_in"))
    grace = parse_duration(body.get("grace", DEFAULT_GRACE), "grace", allow_zero=True)
    created, old = await api_keys.rotate_key(
        request.app[POOL], request[PRINCIPAL].tenant_id, prefix, grace=grace,
        expires_in=_expires_in(body), acquire_timeout=settings.db_acquire_timeout,
    )
    request.app[AUTHENTICATOR].expire_all()  # the old key's new expiry holds here at once
    return json_response({**created_json(created), "replaces": old.as_json()}, status=201,
                         headers=SECRET_HEADERS)
