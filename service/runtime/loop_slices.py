"""Time slices of the event loop: no burst of requests holds it longer than a slice.

An event loop runs, in one iteration, every callback that became ready during the previous one.
When 256 connections each deliver an event at once, their 256 handlers all become ready together
and run back to back: a warm 50-endpoint transform costs about half a millisecond, so that
iteration holds the loop for over 100 ms. Meanwhile no timer fires (a Redis or Postgres timeout, a
request's deadline, the invalidation listener's ping), no socket is read, no answer is flushed:
every request in flight, whatever its tenant or route, is that much later, and timeouts fire late
or spuriously. (`enricher_event_loop_lag_seconds` measures exactly this.)

So a request asks for its `turn()` before its work. While the current slice has run for less than
`slice_seconds` and nobody is waiting, the turn is immediate (no suspension: the common case costs
a clock read). Otherwise the request waits in line, first come first served, and at each
following loop iteration a batch is let through; the batch grows while whole iterations stay
under the slice and halves when one ran over (additive increase, multiplicative decrease), so it
follows what requests cost now without measuring any one of them. Between batches the loop polls
its sockets and fires its timers. Throughput is unchanged (the work is the same, in the same
order); what changes is that nothing waits a burst's whole length for the loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

MIN_BATCH = 1
FIRST_BATCH = 16


class LoopSlicer:
    def __init__(self, slice_seconds: float) -> None:
        self.slice_seconds = slice_seconds
        self.enabled = slice_seconds > 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._slice_started = 0.0
        self._tick_pending = False
        self._batch = FIRST_BATCH
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def turn(self) -> asyncio.Future[None] | None:
        """None: go on now. A future: await it, then go on (it is this request's turn).

        Not a coroutine so that the common case costs no coroutine object: callers write
        `waiter = slicer.turn()` and `if waiter: await waiter`.
        """
        if not self.enabled:
            return None
        now = time.perf_counter()
        if not self._tick_pending:
            # The first turn of this iteration opens a slice; the tick, one iteration later,
            # closes it (and lets the next batch of waiters through).
            self._start_slice(now)
            if not self._waiters:
                return None
        elif not self._waiters and now - self._slice_started < self.slice_seconds:
            return None
        waiter = self._loop.create_future()  # type: ignore[union-attr]
        self._waiters.append(waiter)
        return waiter

    def _start_slice(self, now: float) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._tick_pending = True
        self._slice_started = now
        self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        """Runs once per loop iteration while requests come or wait: after the batch released
        by the previous tick ran, so the time since that tick is what the slice cost."""
        self._tick_pending = False
        if not self._waiters:
            return
        now = time.perf_counter()
        if now - self._slice_started > self.slice_seconds:
            self._batch = max(MIN_BATCH, self._batch // 2)
        else:
            self._batch += 1
        released = 0
        while self._waiters and released < self._batch:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a request cancelled while waiting gives up its place
                waiter.set_result(None)
                released += 1
        self._start_slice(now)
