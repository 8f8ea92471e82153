"""API keys: how they are made, stored (hashed) and checked, and the scope guard for handlers.

A key is `ce_` plus 43 URL-safe characters (256 random bits). Only its SHA-256 is stored: with that
much entropy a slow password hash adds nothing. Lookups are cached per process for a few seconds
(`ENRICHER_AUTH_CACHE_SECONDS`) so a transform costs no extra round trip; a revoked key therefore
stops working within that time.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

import asyncpg

from service.errors import Unauthorized
from service.expiring_map import ExpiringMap
from service.storage import tenants

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


def validate_scopes(scopes: list[str]) -> list[str]:
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(
            f"unknown scope {unknown[0]!r}" if unknown else "at least one scope is required"
        )
    return sorted(set(scopes), key=SCOPES.index)


class Authenticator:
    """Turns an Authorization header into a Principal, with a short per-process cache."""

    def __init__(self, pool: asyncpg.Pool, cache_seconds: float) -> None:
        self.pool = pool
        self._cache: ExpiringMap[bytes, Principal | None] = ExpiringMap(cache_seconds)

    async def authenticate(self, header: str | None) -> Principal:
        if not header:
            raise Unauthorized("send the API key as 'Authorization: Bearer <key>'")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise Unauthorized("the Authorization header must be 'Bearer <key>'")
        if not KEY_PATTERN.match(key):
            raise Unauthorized("the API key is not valid")
        digest = hash_key(key)
        principal = self._cache.get(digest)
        if principal is ExpiringMap.MISSING:
            record = await tenants.find_key(self.pool, digest)
            principal = None if record is None else Principal(
                record.tenant_id, record.tenant_name, record.prefix, frozenset(record.scopes)
            )
            self._cache.put(digest, principal)
        if principal is None:
            raise Unauthorized("the API key is not valid")
        return principal  # type: ignore[return-value]
