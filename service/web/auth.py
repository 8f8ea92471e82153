"""API keys at the door: an Authorization header becomes a Principal, and the scope a handler needs.

A key comes as `Authorization: Bearer <key>`, or as `Authorization: Basic base64(<user>:<key>)`,
the password being the key and the user name anything (what Braze's stored basic credential and
other send platforms can send); `curl -u <key>:` (the key as user name, no password) works too.

The key's format, hash and scopes are in service/key_rules.py (shared with the CLI). Lookups are
cached per process (`ENRICHER_AUTH_CACHE_SECONDS`) so a transform costs no extra round trip; a
change to a key or a tenant is pushed to every process by a NOTIFY (service/resolution/invalidation.py),
so a revoked key stops working within a second, and within the cache time at worst. A revocation
also travels by Redis (service/storage/key_revocations.py), and a key known to be revoked is
refused without asking Postgres, so a process that cannot hear from Postgres (stalled, out of
reach) refuses it within a second too, while it answers every other key from its cache. Expiry is
a comparison on the cached key (its time left, as Postgres counted it when read), not a query.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass

import asyncpg

from service.errors import Unauthorized
from service.key_rules import (  # noqa: F401 - also imported from here by callers and tests
    KEY_PATTERN,
    PREFIX_LENGTH,
    SCOPES,
    NewKey,
    generate_key,
    hash_key,
    validate_scopes,
)
from service.resolution.deadline import Deadline
from service.resolution.expiring_map import ExpiringMap
from service.storage import api_keys
from service.storage.db_faults import read_retrying
from service.storage.key_usage import KeyUsageRecorder

# Revocations remembered beyond the cache (a bound against a flood; far above any real count).
MAX_REVOKED_KEPT = 10_000


@dataclass(frozen=True)
class Principal:
    """Who is calling: one tenant, through one key, with its scopes."""

    tenant_id: int
    tenant_name: str
    key_prefix: str
    scopes: frozenset[str]
    key_id: int = 0
    revoked: bool = False
    expires_at: float | None = None  # time.monotonic() at which the key stops working
    rate_limit_rps: int | None = None  # the tenant's limit (None: none), read with the key
    rate_limit_burst: int = 0

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def refusal(self, now: float) -> str | None:
        """Why this key may not be used at `now` (time.monotonic()), or None."""
        if self.revoked:
            return "the API key has been revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "the API key has expired"
        return None


def principal_from_record(record: api_keys.KeyRecord, read_at: float) -> Principal:
    expires_at = None if record.expires_in is None else read_at + record.expires_in
    return Principal(record.tenant_id, record.tenant_name, record.prefix, frozenset(record.scopes),
                     record.key_id, record.revoked, expires_at, record.rate_limit_rps,
                     record.rate_limit_burst)


def key_from_authorization(header: str | None) -> str:
    """The API key an Authorization header carries (Bearer, or Basic with the key as password).

    Messages never repeat the header: it holds a secret."""
    if not header:
        raise Unauthorized("send the API key as 'Authorization: Bearer <key>' (or Basic, with the "
                           "key as password)")
    scheme, _, credentials = header.partition(" ")
    credentials = credentials.strip()
    scheme = scheme.lower()
    if scheme == "bearer" and credentials:
        return credentials
    if scheme == "basic" and credentials:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("the Basic credential is not base64 of 'user:key'") from None
        user, colon, password = decoded.partition(":")
        if colon and password:
            return password
        if KEY_PATTERN.match(user):  # `curl -u KEY:`: the key as the user name
            return user
        raise Unauthorized("the Basic credential must carry the API key as its password")
    raise Unauthorized("the Authorization header must be 'Bearer <key>' or 'Basic <credential>'")


class Authenticator:
    """Turns an Authorization header into a Principal, with a short per-process cache.

    The cache is emptied (demoted to stale) by invalidation notifications whenever a key or
    tenant changes anywhere, so a revoked key stops working within a second; the TTL is the
    safety net. When Postgres cannot be asked, a stale entry is used rather than refusing
    callers whose keys were valid a moment ago.
    """

    def __init__(self, pool: asyncpg.Pool, cache_seconds: float,
                 stale_seconds: float = 3600.0, usage: KeyUsageRecorder | None = None) -> None:
        self.pool = pool
        self.usage = usage
        self._cache: ExpiringMap[bytes, Principal | None] = ExpiringMap(
            cache_seconds, stale_seconds=stale_seconds
        )
        # (tenant id, prefix) → when this process learnt the key was revoked: refused whatever
        # the cache holds. Kept as long as an entry read before then may be (fresh or stale).
        self._revoked: dict[tuple[int, str], float] = {}
        self._revoked_kept = cache_seconds + stale_seconds

    async def authenticate(self, header: str | None, deadline: Deadline | None = None) -> Principal:
        key = key_from_authorization(header)
        if not KEY_PATTERN.match(key):
            raise Unauthorized("the API key is not valid")
        digest = hash_key(key)
        principal = self._cache.get(digest)
        if principal is ExpiringMap.MISSING:  # else the usual case: a known key, without a coroutine
            principal = await self._load(digest, deadline)
        if principal is None:
            raise Unauthorized("the API key is not valid")
        if self._revoked and (principal.tenant_id, principal.key_prefix) in self._revoked:
            raise Unauthorized("the API key has been revoked")
        refused = principal.refusal(time.monotonic())
        if refused:
            raise Unauthorized(refused)
        if self.usage is not None:
            self.usage.seen(principal.key_id)
        return principal

    async def _load(self, digest: bytes, deadline: Deadline | None) -> Principal | None:
        async def load() -> Principal | None:
            read_at = time.monotonic()
            record = await read_retrying(lambda: api_keys.find_key(self.pool, digest),
                                         on_retry=lambda: None, pool=self.pool)
            return None if record is None else principal_from_record(record, read_at)

        return await self._cache.get_or_load(  # type: ignore[return-value]
            digest, load, within=deadline.remaining() if deadline else None
        )

    def expire_all(self) -> None:
        self._cache.expire_all()

    def revoked(self, tenant_id: int, prefix: str) -> None:
        """The tenant's key `prefix` is revoked (this process revoked it, or was told by Redis):
        refuse it from now on, even from the cache, even when Postgres cannot be asked."""
        now = time.monotonic()
        self._revoked.pop((tenant_id, prefix), None)
        self._revoked[(tenant_id, prefix)] = now  # in the order learnt: the oldest first
        while self._revoked:
            oldest, learnt = next(iter(self._revoked.items()))
            if len(self._revoked) <= MAX_REVOKED_KEPT and learnt > now - self._revoked_kept:
                break
            del self._revoked[oldest]
