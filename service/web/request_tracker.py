"""Counts requests in flight, so a graceful stop can wait for them before closing connections.

aiohttp's own shutdown marks every connection closing first and from then on drops incoming bytes,
so a request whose body is still arriving could never finish. `serve` therefore stops listening,
waits here until no request is in flight (bounded by ENRICHER_SHUTDOWN_TIMEOUT), and only then
hands over to aiohttp's cleanup. From the signal on the tracker says `draining`: `/readyz` answers
503 at once, so a load balancer stops sending before the listener closes, and answers ask
keep-alive clients to close their connection (and reconnect to a process that stays).
"""

from __future__ import annotations

import asyncio
import contextlib


class RequestTracker:
    def __init__(self) -> None:
        self.in_flight = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    def begin_draining(self) -> None:
        self.draining = True

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
