"""Counts requests in flight, so a graceful stop can wait for them before closing connections.

aiohttp's own shutdown marks every connection closing first and from then on drops incoming bytes,
so a request whose body is still arriving could never finish. `serve` therefore stops listening,
waits here until no request is in flight (bounded by ENRICHER_SHUTDOWN_TIMEOUT), and only then
hands over to aiohttp's cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib


class RequestTracker:
    def __init__(self) -> None:
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def started(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """True when every request finished within `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        return self.in_flight == 0
