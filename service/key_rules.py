"""What an API key is and what may be done with one: its format, its hash, its scopes, the rule
that a key never grants a scope it lacks, and the durations (`90d`, `24h`) of expiry and grace.

Shared by the HTTP routes, the CLI and the authenticator, so the three cannot disagree. A key is
`ce_` plus 43 URL-safe characters (256 random bits); only its SHA-256 is stored: with that much
entropy a slow password hash adds nothing. Its first 11 characters (`ce_` and 8) are its public
prefix, which names it in lists, logs and commands; the prefix alone is useless to an attacker.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from service.errors import ValidationFailed

SCOPES = ("transform", "catalog:read", "catalog:write", "admin")
KEY_PATTERN = re.compile(r"^ce_[A-Za-z0-9_-]{43}$")
PREFIX_LENGTH = 11  # "ce_" and 8 characters: enough to tell keys apart, useless to an attacker
PREFIX_PATTERN = re.compile(r"^ce_[A-Za-z0-9_-]{8}$")
MAX_LABEL = 200

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
DURATION_PATTERN = re.compile(r"^([0-9]{1,7})([smhd])$")
MAX_DURATION_SECONDS = 3650 * 86_400  # ten years: past that, "never" is the honest answer


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
    """The scopes, deduplicated in the canonical order; ValueError names the first unknown one."""
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(
            f"unknown scope {unknown[0]!r}" if unknown else "at least one scope is required"
        )
    return sorted(set(scopes), key=SCOPES.index)


def effective_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """What a key may do: its scopes, and every scope when it holds `admin`."""
    held = frozenset(scopes)
    return frozenset(SCOPES) if "admin" in held else held


def scopes_not_held(held: Iterable[str], requested: Iterable[str]) -> list[str]:
    """The requested scopes the granting key does not itself hold (a key never mints more than
    it has)."""
    allowed = effective_scopes(held)
    return [scope for scope in requested if scope not in allowed]


def parse_duration(text: object, field: str, *, allow_zero: bool = False) -> int:
    """`90d`, `24h`, `30m`, `45s` → seconds; a 422 naming `field` for anything else."""
    match = DURATION_PATTERN.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValidationFailed.of(
            field, "must be a whole number and a unit: s, m, h or d (e.g. \"90d\", \"24h\")")
    seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2)]
    if seconds == 0 and not allow_zero:
        raise ValidationFailed.of(field, "must be longer than zero")
    if seconds > MAX_DURATION_SECONDS:
        raise ValidationFailed.of(field, "must be at most 3650d (ten years)")
    return seconds


def check_label(label: object) -> str | None:
    if label is None:
        return None
    if not isinstance(label, str) or len(label) > MAX_LABEL or "\x00" in label:
        raise ValidationFailed.of("label", f"must be a string of at most {MAX_LABEL} characters")
    return label


def check_prefix(prefix: str, field: str = "prefix") -> str:
    if not PREFIX_PATTERN.match(prefix):
        raise ValidationFailed.of(
            field, f"must be a key prefix: 'ce_' and 8 characters ({PREFIX_LENGTH} in all)")
    return prefix
