"""Garbage-collector settings for a serving process, applied once the app is set up.

A transform holds thousands of short-lived objects (the parsed event, item records, the answer)
across awaits, so with CPython's defaults (a young collection every 700 allocations) they are
traversed and promoted again and again, and full collections (tens of milliseconds each, scanning
every module and cache) follow: measured under the bench's cold load, a quarter of the process's
time went to the collector. Reference counting frees almost all of those objects anyway; the
collector is only for cycles. So: everything alive after start-up (modules, the app) is frozen out
of collection, and young collections run every 50,000 allocations instead of 700.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
# The defaults for the older generations: a middle collection every 10 young ones, a full one
# every 10 middle ones (and only when it would scan 25% more long-lived objects).
OLDER_THRESHOLDS = (10, 10)


def tune_for_serving() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
