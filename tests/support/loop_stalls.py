"""How long this process's event loop was kept from running during a block: the allowance a
timed test gives for the time the machine did not give it.

A test that runs the service in its own process and checks an answer against a deadline measures
the service and the machine together: if the process is descheduled (both cores busy) or paused by
its collector for 200 ms, the answer is 200 ms later whatever the service does. A ticker sleeping
a few milliseconds at a time sees each such gap as a late wake-up; the sum of those delays is how
much later than its own timers the loop ran. So "answered within the budget" becomes "within the
budget plus what the loop lost", which a deadline that is not honoured still fails (the loop is
idle, not late, while a request waits on a stalled Postgres).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

T = TypeVar("T")

TICK = 0.002
# A wake-up later than this is the machine's doing; below it, ordinary loop work.
LATE = 0.001


class LoopStalls:
    def __init__(self) -> None:
        self.seconds = 0.0  # the sum of late wake-ups
        self.longest = 0.0

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(TICK)
            late = time.perf_counter() - before - TICK
            if late > LATE:
                self.seconds += late
                self.longest = max(self.longest, late)


@contextlib.asynccontextmanager
async def loop_stalls() -> AsyncIterator[LoopStalls]:
    """`async with loop_stalls() as stalls:` ... then `stalls.seconds`."""
    stalls = LoopStalls()
    ticker = asyncio.ensure_future(stalls._tick())
    try:
        yield stalls
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker


async def timed(answer: Awaitable[T]) -> tuple[T, float]:
    """`answer`'s result and the seconds it took, less those the loop lost meanwhile."""
    async with loop_stalls() as stalls:
        started = time.monotonic()
        result = await answer
        took = time.monotonic() - started
    return result, took - stalls.seconds
