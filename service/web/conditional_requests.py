"""HTTP validators for items (RFC 9110 section 13): the ETag of an item version, and the checks
behind `If-None-Match` on reads (304) and `If-Match` / `If-None-Match` on writes (412).

An item's ETag is its `version` (a number from one database sequence, never reused), quoted: a
strong validator, since every content change takes a new version.
"""

from __future__ import annotations

import re

from service.errors import BadRequest, PreconditionFailed

_ENTITY_TAG = re.compile(r'\s*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*(?:,|$)')


def item_etag(version: int) -> str:
    return f'"{version}"'


def cache_control(max_age: int) -> str:
    """Answers are per key (private); with no max-age, clients revalidate with If-None-Match."""
    return f"private, max-age={max_age}" if max_age > 0 else "private, no-cache"


def _entity_tags(header: str, name: str) -> list[tuple[bool, str]] | None:
    """The (weak, opaque-tag) pairs of a header value; None for `*`."""
    if header.strip() == "*":
        return None
    tags: list[tuple[bool, str]] = []
    position = 0
    while position < len(header):
        match = _ENTITY_TAG.match(header, position)
        if not match or match.end() == position:
            raise BadRequest(
                f'{name} must be "*" or a list of entity tags like "42" (with the quotes)',
                field=name,
            )
        tags.append((match.group(1) is not None, match.group(2)))
        position = match.end()
    if not tags:
        raise BadRequest(f"{name} is empty", field=name)
    return tags


def not_modified(if_none_match: str | None, current_etag: str) -> bool:
    """True when a GET may be answered 304 (weak comparison, as RFC 9110 asks for reads)."""
    if if_none_match is None:
        return False
    tags = _entity_tags(if_none_match, "If-None-Match")
    if tags is None:
        return True
    current = current_etag.strip('"')
    return any(opaque == current for _, opaque in tags)


def check_write(if_match: str | None, if_none_match: str | None,
                current_etag: str | None) -> None:
    """Raise 412 unless the write's preconditions hold; `current_etag` is None for no item."""
    if if_match is not None:
        tags = _entity_tags(if_match, "If-Match")
        if current_etag is None:
            raise PreconditionFailed("If-Match was sent but the item does not exist",
                                     field="If-Match")
        current = current_etag.strip('"')
        # Strong comparison: a weak tag never matches for a write.
        if tags is not None and not any(not weak and opaque == current for weak, opaque in tags):
            raise PreconditionFailed(
                f"the item has changed: its ETag is now {current_etag}; fetch it again",
                field="If-Match", headers={"ETag": current_etag},
            )
    if if_none_match is not None:
        tags = _entity_tags(if_none_match, "If-None-Match")
        if current_etag is None:
            return
        current = current_etag.strip('"')
        if tags is None or any(opaque == current for _, opaque in tags):
            raise PreconditionFailed(
                "the item exists (If-None-Match)" if tags is None
                else f"the item's ETag is {current_etag} (If-None-Match)",
                field="If-None-Match", headers={"ETag": current_etag},
            )


def has_write_preconditions(if_match: str | None, if_none_match: str | None) -> bool:
    return if_match is not None or if_none_match is not None
