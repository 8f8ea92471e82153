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

Between tenants (`turn(tenant)`), the line is fair rather than first come first served: each
tenant waits in a line of its own, and a batch takes one request from each line in turn, the
shortest lines first, so a request of a tenant that sends few waits behind at most one of a
flood's, not behind all of them; and a tenant with no line at all does not wait in one: while the
iteration is within the whole slice its request goes at once, ahead of the lines (one loop
iteration less for it; many light tenants together still cannot hold the loop past the slice).
And while tenants contend (the caller says so: another tenant sent a request within the last
second, service/web/tenant_slots.py), the slice is `shared_slice_seconds`, half a millisecond:
the flood's batches shrink to about a request per loop iteration, so the other tenant's request,
which needs a few iterations from its first byte to its last, finds each of them short. The
flood loses some throughput to the extra iterations, only while somebody else is there.

Where in an iteration the turns go matters as much. asyncio runs, in order, what was scheduled
during the last iteration, then the callbacks of the sockets it has just found readable, then the
timers that are due. The tick is such a timer, so a request started by a socket read runs ahead
of the turns the tick lets through. And while tenants contend the tick lets its batch through one
iteration later: the flood's turns then run only in iterations that read no socket before them, so
another tenant's bytes, which mostly arrive while a flood's turn runs, are read as soon as that
turn ends, and their request runs before the flood's next one. (In the bench's fairness scenario
this took tenant B's p99 under a flood from 1.93 to 1.40 times its p99 alone, median of 15
runs, with the flood's throughput unchanged: its extra iterations are nearly empty.)
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

MIN_BATCH = 1
FIRST_BATCH = 16
# How long a contended turn keeps the shared slice: as long as tenant_slots' contention.
SHARED_FOR_SECONDS = 1.0


class LoopSlicer:
    def __init__(self, slice_seconds: float, shared_slice_seconds: float | None = None, *,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        # A slice is wall-clock time (what the other requests wait); tests give a clock that
        # only the work they simulate advances, so a busy machine does not cut their slices.
        self.clock = clock
        self.slice_seconds = slice_seconds
        self.shared_slice_seconds = slice_seconds if shared_slice_seconds is None \
            else min(shared_slice_seconds, slice_seconds)
        self.enabled = slice_seconds > 0
        # One line per tenant (None: turns taken without one), in the order they filled.
        self._lines: dict[object, deque[asyncio.Future[None]]] = {}
        self._waiting = 0
        self._slice_started = 0.0
        self._tick_pending = False
        self._batch = FIRST_BATCH
        self._shared_until = float("-inf")
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def waiting(self) -> int:
        return self._waiting

    def _slice(self, now: float) -> float:
        return self.shared_slice_seconds if now < self._shared_until else self.slice_seconds

    def turn(self, tenant: object = None, *, contended: bool = False
             ) -> asyncio.Future[None] | None:
        """None: go on now. A future: await it, then go on (it is this request's turn).
        `tenant` names the line to wait in; `contended`: other tenants are sending too.

        Not a coroutine so that the common case costs no coroutine object: callers write
        `waiter = slicer.turn()` and `if waiter: await waiter`.
        """
        if not self.enabled:
            return None
        now = self.clock()
        if contended:
            self._shared_until = now + SHARED_FOR_SECONDS
        if not self._tick_pending:
            # The first turn of this iteration opens a slice; the tick, one iteration later,
            # closes it (and lets the next batch of waiters through).
            self._start_slice(now)
            if not self._waiting or self._goes_ahead(tenant):
                return None
        elif not self._waiting:
            if now - self._slice_started < self._slice(now):
                return None
        elif self._goes_ahead(tenant) and now - self._slice_started < self.slice_seconds:
            return None
        waiter = self._loop.create_future()  # type: ignore[union-attr]
        line = self._lines.get(tenant)
        if line is None:
            line = self._lines[tenant] = deque()
        line.append(waiter)
        self._waiting += 1
        return waiter

    def _goes_ahead(self, tenant: object) -> bool:
        """Others wait, but not this tenant: its request goes ahead of their lines, within the
        whole slice. A tenant with a line of its own waits its turn in it, and turns taken
        without a tenant (the resolver's, after a batch) keep to the line."""
        return tenant is not None and tenant not in self._lines

    def _start_slice(self, now: float) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._tick_pending = True
        self._slice_started = now
        # A timer due now, not call_soon: the loop runs due timers after the callbacks of the
        # sockets that just became readable, so what this tick lets through is queued behind
        # the requests those sockets started. A request of another tenant read in the same
        # iteration then runs ahead of the flood's next turn, instead of behind it.
        loop = self._loop
        loop.call_at(loop.time(), self._tick)

    def _tick(self) -> None:
        """Runs once per loop iteration while requests come or wait: after the batch released
        by the previous tick ran, so the time since that tick is what the slice cost."""
        self._tick_pending = False
        if not self._waiting:
            return
        now = self.clock()
        if now - self._slice_started > self._slice(now):
            self._batch = max(MIN_BATCH, self._batch // 2)
        else:
            self._batch += 1
        if now < self._shared_until:
            # Tenants contend: the batch goes one iteration later, so that an iteration whose
            # sockets are read starts with none of the flood's turns. Another tenant's bytes that
            # arrive during a flood's turn are then read, and their request run, before the
            # flood's next turn, instead of after one more (a cheap iteration per batch, paid
            # by the flood, only while somebody else is there).
            self._tick_pending = True
            loop = self._loop
            loop.call_at(loop.time(), self._release)  # type: ignore[union-attr]
            return
        self._release()

    def _release(self) -> None:
        """Let the next batch of waiters through, and open their slice."""
        now = self.clock()
        released = 0
        while self._waiting and released < self._batch:
            # One from each line per round, the shortest lines first.
            for tenant, line in sorted(self._lines.items(), key=_line_length):
                waiter = line.popleft()
                self._waiting -= 1
                if not line:
                    del self._lines[tenant]
                if not waiter.done():  # a request cancelled while waiting gives up its place
                    waiter.set_result(None)
                    released += 1
                    if released >= self._batch:
                        break
        self._start_slice(now)


def _line_length(entry: tuple[object, deque[asyncio.Future[None]]]) -> int:
    return len(entry[1])
