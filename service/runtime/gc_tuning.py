"""Garbage-collector settings for a serving process, applied once the app is set up.

A transform holds thousands of short-lived objects (the parsed event, item records, the answer)
across awaits; reference counting frees almost all of them, the collector is only for cycles. What
it costs is the objects it scans, and what a serving process keeps is long-lived: L1 holds an
asyncpg Record (a tracked container) and an entry list per item, 200,000 objects at the default
100,000 entries. With CPython's defaults, or any setting that lets full collections run, a cold
load (new items promoted to the oldest generation all the time) sets off a full collection every
few hundred events, and each holds the event loop for as long as scanning all of L1 takes
(measured: young collections of 50,000 objects 34 ms each, middle ones 200 ms).

So:
- everything alive after start-up (modules, the app) is frozen out of collection;
- young collections run every `YOUNG_THRESHOLD` allocations (pauses of a few milliseconds), middle
  ones every `MIDDLE_EVERY` young ones (their generation stays small: a cycle that outlives a
  request in flight is still found within a second or so under load);
- the oldest generation is never collected automatically (its threshold is out of reach): what
  reaches it is nearly all long-lived cache entries, which reference counting frees when they are
  evicted. A cycle that becomes garbage there waits for `collect_everything`, which the event-loop
  sampler (service/runtime/loop_lag.py) runs every `FULL_EVERY_SECONDS`: one pause of a full scan
  every five minutes instead of several a second, logged with its length.

The young threshold counts allocations that were not served from a free list: tuples, lists,
dicts, and asyncpg's Records mostly come from free lists, are tracked all the same and are not
counted. On a cold load the youngest generation held about 13 objects for every one counted
(130,000 at a threshold of 10,000): its collections took 20-50 ms and the middle ones up to 120 ms,
the largest event-loop stalls there were. At 1,000 (bench, cold uniform, 500k items) no young
collection took over 5 ms and no middle one over 10 ms; the warm and content routes kept their
throughput (the same objects are scanned, in smaller pieces).
"""

from __future__ import annotations

import gc
import time

YOUNG_THRESHOLD = 1_000
MIDDLE_EVERY = 4
NEVER = 1_000_000_000  # gen-2 threshold no count reaches: the oldest generation waits
FULL_EVERY_SECONDS = 300.0


def tune_for_serving() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_EVERY, NEVER)


def serving_tuned() -> bool:
    """Did `tune_for_serving` run in this process (so a periodic full collection is due)?"""
    return gc.get_threshold()[2] == NEVER


def collect_everything() -> tuple[int, float]:
    """One full collection: (objects found unreachable, seconds it took)."""
    started = time.perf_counter()
    found = gc.collect()
    return found, time.perf_counter() - started
