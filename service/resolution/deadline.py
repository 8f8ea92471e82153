"""Request deadlines: the time by which an answer must be on its way, whatever Postgres does.

A caller sets its budget with `X-Deadline-Ms` (milliseconds from when the request arrives; the
Lambda shim sends what its own invocation has left); without it `ENRICHER_DEFAULT_DEADLINE_MS`
applies. Lookups stop waiting a little before the deadline (`RESERVE`: a tenth of the budget, from
5 to 200 ms) to leave time to render and send the answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web

from service.errors import ValidationFailed

HEADER = "X-Deadline-Ms"
MAX_DEADLINE_MS = 600_000


@dataclass(frozen=True)
class Deadline:
    """When lookups must give up (`at`, on `time.monotonic`'s clock) and the budget it came from.

    Not the event loop's clock: on Python 3.11 every `asyncio.get_running_loop()` makes a getpid
    system call, and a transform asks for the time several times (2-3 % of a warm event)."""

    at: float
    budget_ms: int

    @classmethod
    def after(cls, budget_ms: int) -> Deadline:
        budget = budget_ms / 1000
        reserve = min(max(budget * 0.1, 0.005), 0.2)
        return cls(time.monotonic() + budget - reserve, budget_ms)

    def remaining(self) -> float:
        """Seconds left for lookups (zero or less: stop waiting now)."""
        return self.at - time.monotonic()


def parse_budget(raw: str | None, default_ms: int) -> int:
    if raw is None:
        return default_ms
    raw = raw.strip()
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_DEADLINE_MS:
        raise ValidationFailed.of(
            HEADER, f"must be a whole number of milliseconds from 1 to {MAX_DEADLINE_MS}"
        )
    return int(raw)


def request_deadline(request: web.Request, default_ms: int) -> Deadline:
    return Deadline.after(parse_budget(request.headers.get(HEADER), default_ms))
