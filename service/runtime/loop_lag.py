"""How late the event loop runs what is due: the lag every request of this process waits out.

A timer is set `SAMPLE_SECONDS` ahead; when it fires, how much later than asked it fired is the lag:
the time some callback (a request's CPU work, a garbage collection, a cache rebuild) held the loop.
Every sample goes to the histogram `enricher_event_loop_lag_seconds` and the largest seen to
`enricher_event_loop_lag_max_seconds`; a lag over `STALL_SECONDS` is also logged (at most once per
`STALL_LOG_EVERY` seconds), with the garbage collections that ran during it, the usual suspect.
Sampling costs one timer callback per 50 ms: nothing next to a request. Each sample also settles
what survived (gc_tuning.settle_survivors), so young collections do not scan long-lived objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable

from service.runtime.gc_tuning import (
    FULL_EVERY_SECONDS,
    collect_everything,
    serving_tuned,
    settle_survivors,
)

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 0.05  # the "sampled every 50 ms at most"
STALL_SECONDS = 0.1
STALL_LOG_EVERY = 10.0


class GcClock:
    """Time spent in garbage collections, per generation, counted by `gc.callbacks`."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info.get("generation", 2)
            self.seconds[generation] += time.perf_counter() - self._started
            self.collections[generation] += 1

    def snapshot(self) -> tuple[tuple[float, ...], tuple[int, ...]]:
        return tuple(self.seconds), tuple(self.collections)


class LoopLagMonitor:
    """Samples the running loop's lag into `observe` (a histogram's) and keeps the maximum."""

    def __init__(self, observe: Callable[[float], None], set_max: Callable[[float], None],
                 sample_seconds: float = SAMPLE_SECONDS,
                 count_gc: Callable[[int, int, float], None] | None = None) -> None:
        self.observe = observe
        self.set_max = set_max
        # (generation, collections, seconds) since the last sample: published from the sampler,
        # never from the gc callback, which may run while a metric's lock is held.
        self.count_gc = count_gc
        self.sample_seconds = sample_seconds
        self.max_lag = 0.0
        self.gc = GcClock()
        self._task: asyncio.Task[None] | None = None
        self._last_logged = -STALL_LOG_EVERY

    def start(self) -> None:
        gc.callbacks.append(self.gc)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def close(self) -> None:
        if self.gc in gc.callbacks:
            gc.callbacks.remove(self.gc)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_full = time.monotonic() + FULL_EVERY_SECONDS
        while True:
            before_gc = self.gc.snapshot()
            asked = loop.time()
            await asyncio.sleep(self.sample_seconds)
            self.record(loop.time() - asked - self.sample_seconds, before_gc)
            # Tuned once the app is set up (after this task started): then the oldest generation,
            # and what survives, are left to this sampler (gc_tuning.py).
            tuned = serving_tuned()
            if tuned:
                settle_survivors()
            if time.monotonic() >= next_full:
                next_full = time.monotonic() + FULL_EVERY_SECONDS
                if tuned:
                    before_full = self.gc.snapshot()
                    found, seconds = collect_everything()
                    # It held the loop: a lag too, and a collection the counters must include.
                    self.record(seconds, before_full)
                    log.info("full garbage collection", extra={
                        "unreachable": found, "ms": round(seconds * 1000, 1)})

    def record(self, lag: float, before_gc: tuple[tuple[float, ...], tuple[int, ...]]) -> None:
        lag = max(lag, 0.0)
        if self.count_gc is not None:
            seconds, counts = self.gc.snapshot()
            for generation in range(3):
                runs = counts[generation] - before_gc[1][generation]
                if runs:
                    self.count_gc(generation, runs, seconds[generation] - before_gc[0][generation])
        self.observe(lag)
        if lag > self.max_lag:
            self.max_lag = lag
            self.set_max(lag)
        if lag >= STALL_SECONDS:
            now = time.monotonic()
            if now - self._last_logged >= STALL_LOG_EVERY:
                self._last_logged = now
                seconds, counts = self.gc.snapshot()
                spent = [round((s - b) * 1000, 1) for s, b in zip(seconds, before_gc[0], strict=True)]
                runs = [c - b for c, b in zip(counts, before_gc[1], strict=True)]
                log.warning("event loop stalled",
                            extra={"lag_ms": round(lag * 1000, 1), "gc_runs": runs, "gc_ms": spent})
