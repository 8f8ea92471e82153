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

What survives still costs scans on its way to the oldest generation: every new L1 entry (its list,
its Record, its dict of rows: three tracked objects that live for minutes) is scanned by a young
collection and again by a middle one, which found nothing to collect in them. On a cold load
(hundreds of new entries per event) those scans were a tenth of the process's time, in pauses of
10-30 ms (bench, cold uniform, 500k items: young and middle collections 1.5 s out of 12). So the
sampler also calls `settle_survivors` every 50 ms: `gc.freeze()`, which moves every object alive
then out of the collector's generations in O(1), where no automatic collection scans it again
(reference counting still frees it). Young collections then scan only what was made in the last
50 ms, and middle ones have next to nothing left. A cycle that is alive at a freeze and garbage
later waits for `collect_everything`, exactly as one promoted to the oldest generation did
before, which unfreezes everything, collects it all and freezes the survivors again.

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


def settle_survivors() -> None:
    """What is alive now is long-lived, as far as the collector need know: out of its scans
    until the next `collect_everything` (gc.freeze moves whole generations, O(1))."""
    gc.freeze()


def collect_everything() -> tuple[int, float]:
    """One full collection, of the objects settled (frozen) since too: (objects found
    unreachable, seconds it took)."""
    started = time.perf_counter()
    tuned = serving_tuned()
    if tuned:
        gc.unfreeze()
    found = gc.collect()
    if tuned:
        gc.freeze()
    return found, time.perf_counter() - started
