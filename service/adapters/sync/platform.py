"""What every platform sink shares: the user update it sends, how a platform is described, and the
reading of its rate-limit headers.

A platform module (braze.py, iterable.py) turns a batch of updates into one HTTP request and reads
which users the platform refused from a 2xx answer; sending, retrying, pacing and bookkeeping are
the sender's (sender.py), the same for both.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

REDACTED = "***"
# What a request spends around one user's value, besides the user's key and the attribute's name:
# `{"external_id":"","":,"_merge_objects":true},` (Braze), `{"userId":"","preferUserId":true,
# "dataFields":{"":}},` (Iterable), rounded up; and around all of them, `{"attributes":[]}`.
USER_ENVELOPE_BYTES = 64
REQUEST_ENVELOPE_BYTES = 64


@dataclass(frozen=True)
class UserUpdate:
    line: int  # the input line it came from (1-based), for the dead letter
    key: str  # the user's ID on the platform (Braze external_id, Iterable userId or email)
    value: dict[str, Any]  # the attribute's value: {"items": [...], "updated_at": "..."}
    digest: bytes  # content_digest(value["items"])
    size: int = 0  # the value's bytes serialised

    def request_bytes(self, attribute: str) -> int:
        """What this user adds to a request, at most."""
        return self.size + len(self.key.encode()) + len(attribute) + USER_ENVELOPE_BYTES


@dataclass(frozen=True)
class PlatformRequest:
    url: str
    headers: dict[str, str]  # the credential header included: never log or write these as is
    body: bytes


class Platform(Protocol):
    name: str
    max_batch: int
    max_request_bytes: int  # the platform's limit on a request's body
    attribute: str
    credential_header: str  # the header holding the key, redacted in --dry-run output

    def request(self, users: Sequence[UserUpdate]) -> PlatformRequest: ...

    def refused(self, status: int, body: bytes,
                users: Sequence[UserUpdate]) -> dict[str, str]:
        """From a 2xx answer: user key → why the platform refused that user."""
        ...


def redacted_headers(platform: Platform, headers: Mapping[str, str]) -> dict[str, str]:
    return {name: REDACTED if name.lower() == platform.credential_header.lower() else value
            for name, value in headers.items()}


def seconds_until_reset(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """How long the platform asks us to wait: `Retry-After` (seconds or an HTTP date),
    `X-RateLimit-Retry-After` (seconds), or `X-RateLimit-Reset` (Braze: the UTC epoch second the
    window resets). None when it names nothing usable."""
    now = time.time() if now is None else now
    for name in ("Retry-After", "X-RateLimit-Retry-After"):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            return max(0.0, float(raw))
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(raw) if name == "Retry-After" else None
            if parsed is not None:
                return max(0.0, parsed.timestamp() - now)
    raw = headers.get("X-RateLimit-Reset")
    if raw is not None:
        try:
            reset = float(raw)
        except ValueError:
            return None
        # An epoch time (Braze's) is a large number; a small one is seconds from now.
        return max(0.0, reset - now) if reset > 1e9 else max(0.0, reset)
    return None


def remaining_in_window(headers: Mapping[str, str]) -> int | None:
    raw = headers.get("X-RateLimit-Remaining")
    try:
        return None if raw is None else int(float(raw))
    except ValueError:
        return None
