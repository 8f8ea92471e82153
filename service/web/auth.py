"""API keys: how they are made, stored (hashed) and checked, and the scope guard for handlers.

A key comes as `Authorization: Bearer <key>`, or as `Authorization: Basic base64(<user>:<key>)`,
the password being the key and the user name anything (what Braze's stored basic credential and
other send platforms can send); `curl -u <key>:` (the key as user name, no password) works too.

A key is `ce_` plus 43 URL-safe characters (256 random bits). Only its SHA-256 is stored: with that
much entropy a slow password hash adds nothing. Lookups are cached per process
(`ENRICHER_AUTH_CACHE_SECONDS`) so a transform costs no extra round trip; a change to a key or a
tenant is pushed to every process by a NOTIFY (service/resolution/invalidation.py), so a revoked key stops
working within a second, and within the cache time at worst.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from dataclasses import dataclass

import asyncpg

from service.errors import Unauthorized
from service.resolution.deadline import Deadline
from service.resolution.expiring_map import ExpiringMap
from service.storage import tenants
from service.storage.db_faults import read_retrying

SCOPES = ("transform", "catalog:read", "catalog:write", "admin")
KEY_PATTERN = re.compile(r"^ce_[A-Za-z0-9_-]{43}$")
PREFIX_LENGTH = 11  # "ce_" and 8 characters: enough to tell keys apart, useless to an attacker


@dataclass(frozen=True)
class Principal:
    """Who is calling: one tenant, through one key, with its scopes."""

    tenant_id: int
    tenant_name: str
    key_prefix: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True)
class NewKey:
    key: str
    prefix: str
    key_hash: bytes


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def generate_key() -> NewKey:
    key = "ce_" + secrets.token_urlsafe(32)
    return NewKey(key, key[:PREFIX_LENGTH], hash_key(key))


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


def validate_scopes(scopes: list[str]) -> list[str]:
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(
            f"unknown scope {unknown[0]!r}" if unknown else "at least one scope is required"
        )
    return sorted(set(scopes), key=SCOPES.index)


class Authenticator:
    """Turns an Authorization header into a Principal, with a short per-process cache.

    The cache is emptied (demoted to stale) by invalidation notifications whenever a key or
    tenant changes anywhere, so a revoked key stops working within a second; the TTL is the
    safety net. When Postgres cannot be asked, a stale entry is used rather than refusing
    callers whose keys were valid a moment ago.
    """

    def __init__(self, pool: asyncpg.Pool, cache_seconds: float,
                 stale_seconds: float = 3600.0) -> None:
        self.pool = pool
        self._cache: ExpiringMap[bytes, Principal | None] = ExpiringMap(
            cache_seconds, stale_seconds=stale_seconds
        )

    async def authenticate(self, header: str | None, deadline: Deadline | None = None) -> Principal:
        key = key_from_authorization(header)
        if not KEY_PATTERN.match(key):
            raise Unauthorized("the API key is not valid")
        digest = hash_key(key)

        async def load() -> Principal | None:
            record = await read_retrying(lambda: tenants.find_key(self.pool, digest),
                                         on_retry=lambda: None)
            return None if record is None else Principal(
                record.tenant_id, record.tenant_name, record.prefix, frozenset(record.scopes)
            )

        principal = await self._cache.get_or_load(
            digest, load, within=deadline.remaining() if deadline else None
        )
        if principal is None:
            raise Unauthorized("the API key is not valid")
        return principal

    def expire_all(self) -> None:
        self._cache.expire_all()
