"""Query parameters of the list routes: keyset paging (`limit`, `after`), and the `next` link.

Pages are keyset pages: `after` is the last key of the previous page, so a page costs the same
however deep it is, and items written meanwhile never shift a page (unlike OFFSET). Unknown
parameters are refused, so a typo (`limt=`) is an error rather than a silently ignored filter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiohttp import web

from service.errors import ValidationFailed

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def check_known_params(query: Mapping[str, str], known: Iterable[str]) -> None:
    allowed = tuple(known)
    for name in query:
        if name not in allowed:
            raise ValidationFailed.of(
                name, "is not a query parameter here (expected: " + ", ".join(allowed) + ")"
            )
    for name in allowed:
        if len(query.getall(name, ())) > 1:  # type: ignore[attr-defined]
            raise ValidationFailed.of(name, "must be given at most once")


def page_limit(query: Mapping[str, str]) -> int:
    raw = query.get("limit")
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise ValidationFailed.of("limit", f"must be an integer from 1 to {MAX_PAGE_SIZE}")
    return int(raw)


def next_link(request: web.Request, params: dict[str, str | None], after: str) -> str:
    """The path and query of the next page: the same filters, after the last key of this one."""
    query = {k: v for k, v in params.items() if v is not None}
    query["after"] = after
    return str(request.rel_url.with_query(query))
