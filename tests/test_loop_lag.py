"""The event-loop lag monitor: a loop held by some work shows on /metrics and in the log."""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.runtime.loop_lag import SAMPLE_SECONDS

pytestmark = pytest.mark.timing


async def scrape(client) -> dict[tuple[str, tuple], float]:
    response = await client.get("/metrics")
    assert response.status == 200
    values = {}
    for family in text_string_to_metric_families(await response.text()):
        for s in family.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return values


async def scrape_when(client, holds, within: float = 30.0) -> dict[tuple[str, tuple], float]:
    """/metrics once `holds(values)` is true: the monitor samples on its own schedule."""
    started = time.monotonic()
    while not holds(values := await scrape(client)):
        assert time.monotonic() - started < within, f"not seen within {within} s"
        await asyncio.sleep(SAMPLE_SECONDS / 2)  # paces the poll
    return values


LAG_COUNT = ("enricher_event_loop_lag_seconds_count", ())
LAG_MAX = ("enricher_event_loop_lag_max_seconds", ())


async def test_a_held_loop_is_measured_and_logged(client, caplog):
    idle = await scrape_when(client, lambda v: v.get(LAG_COUNT, 0) >= 1)  # an idle loop sampled
    assert idle[("enricher_event_loop_lag_seconds_count", ())] >= 1
    assert idle[("enricher_event_loop_lag_max_seconds", ())] < 0.25

    with caplog.at_level(logging.WARNING, logger="service.runtime.loop_lag"):
        # What a request that computes for 300 ms without awaiting does to everyone else,
        # with a full collection in it (the usual suspect a stall's log line names).
        started = time.monotonic()
        gc.collect()
        while time.monotonic() - started < 0.3:
            pass
        held = await scrape_when(client, lambda v: v[LAG_MAX] >= 0.25)

    slow = (held[("enricher_event_loop_lag_seconds_bucket", (("le", "+Inf"),))]
            - held[("enricher_event_loop_lag_seconds_bucket", (("le", "0.25"),))])
    assert slow >= 1  # the histogram holds the stall in its 0.25-0.5 s (or later) buckets
    stalls = [r for r in caplog.records if r.getMessage() == "event loop stalled"]
    assert stalls and stalls[0].lag_ms >= 250
    assert stalls[0].gc_runs[2] >= 1  # the full collection during the stall is named


async def test_collections_are_counted_by_generation(client):
    full = ("enricher_gc_collections_total", (("generation", "2"),))
    before = await scrape(client)
    gc.collect()
    after = await scrape_when(client, lambda v: v.get(full, 0) >= before.get(full, 0) + 1)
    assert after[("enricher_gc_seconds_total", (("generation", "2"),))] > 0
