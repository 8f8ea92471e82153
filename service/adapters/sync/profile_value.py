"""The attribute a user's profile gets, and the digest `--changed-only` compares.

`{"items": [...], "updated_at": "2026-12-07T21:00:00Z"}`: `items` in the content route's item shape
(`id` plus one key per recommender attribute, as service/adapters/content.py renders them). A
platform caps a nested attribute's size (Braze: 100 KB, and over it the update is dropped whole);
items are dropped from the end until the value fits, and no value inside an item is ever cut.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

# `{"items":[` + `],"updated_at":"` + the timestamp + `"}`: what the value costs without items.
_FRAME = len(b'{"items":[],"updated_at":""}')


def profile_value(items: Sequence[Mapping[str, Any]], updated_at: str,
                  max_bytes: int) -> tuple[dict[str, Any], int, int]:
    """(the value, how many items were dropped to fit `max_bytes` serialised, its size
    serialised: what it adds to a request)."""
    frame = _FRAME + len(updated_at.encode())
    budget = max_bytes - frame
    size = len(orjson.dumps(items)) - 2
    if size <= budget:  # the usual case: all of it fits, one dumps
        return {"items": list(items), "updated_at": updated_at}, 0, frame + size
    kept: list[Mapping[str, Any]] = []
    used = 0
    for item in items:
        size = len(orjson.dumps(item)) + (1 if kept else 0)  # the comma before it
        if used + size > budget:
            break
        kept.append(item)
        used += size
    return {"items": kept, "updated_at": updated_at}, len(items) - len(kept), frame + used


def content_digest(items: Sequence[Mapping[str, Any]]) -> bytes:
    """What the profile shows, without the time it was written: equal items, equal digest."""
    return hashlib.blake2b(orjson.dumps(list(items), option=orjson.OPT_SORT_KEYS),
                           digest_size=16).digest()
