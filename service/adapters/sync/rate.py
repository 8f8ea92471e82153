"""Requests per second towards a platform: a token bucket the platform's own answers can lower.

`--rate N` is the ceiling. Turns are scheduled 1/N apart and a late turn does not
make the next one early, so in any one-second window at most N + 2 requests start (N + 1 on
time, one of the window before it late). A platform reporting how many requests its window has left
(`X-RateLimit-Remaining` and `X-RateLimit-Reset`) lowers the rate to what fits in that window
until it resets; a 429 naming a reset pauses every sender until then. Hand-written rather than a
library's: it is twenty lines, and the lowering and pausing are what this module is for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.ceiling = rate
        self.clock = clock
        self._rate = rate
        self._lowered_until = 0.0
        self._paused_until = 0.0
        self._next = clock()  # when the next request may start
        self._lock = asyncio.Lock()

    @property
    def rate(self) -> float:
        if self._lowered_until and self.clock() >= self._lowered_until:
            self._rate, self._lowered_until = self.ceiling, 0.0
        return self._rate

    async def acquire(self) -> None:
        """Wait for this request's turn. Turns are handed out in order (the lock), one every
        1/rate seconds, none before a pause ends."""
        async with self._lock:
            while True:
                now = self.clock()
                start = max(self._next, self._paused_until)
                if start <= now:
                    break
                await asyncio.sleep(start - now)
            interval = 1.0 / self.rate
            # The next turn follows this one's scheduled time, not the late wake-up of a busy
            # loop (which would slip the pace below the rate); a sender idle for longer than a
            # turn starts a new schedule rather than a burst that catches up.
            self._next = (start if now - start < interval else now) + interval

    def lower(self, remaining: int, seconds_to_reset: float) -> None:
        """The platform says `remaining` requests are left for the next `seconds_to_reset`."""
        if seconds_to_reset <= 0:
            return
        allowed = max(remaining, 1) / seconds_to_reset
        if allowed < self.rate:
            self._rate = allowed
            self._lowered_until = self.clock() + seconds_to_reset

    def pause(self, seconds: float) -> None:
        """No request starts for `seconds` (a 429 with its reset)."""
        self._paused_until = max(self._paused_until, self.clock() + max(seconds, 0.0))
