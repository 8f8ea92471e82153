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


async def test_a_held_loop_is_measured_and_logged(client, caplog):
    await asyncio.sleep(3 * SAMPLE_SECONDS)  # the monitor has sampled an idle loop
    idle = await scrape(client)
    assert idle[("enricher_event_loop_lag_seconds_count", ())] >= 1
    assert idle[("enricher_event_loop_lag_max_seconds", ())] < 0.25

    with caplog.at_level(logging.WARNING, logger="service.runtime.loop_lag"):
        # What a request that computes for 300 ms without awaiting does to everyone else,
        # with a full collection in it (the usual suspect a stall's log line names).
        started = time.monotonic()
        gc.collect()
        while time.monotonic() - started < 0.3:
            pass
        await asyncio.sleep(2 * SAMPLE_SECONDS)
    held = await scrape(client)

    assert held[("enricher_event_loop_lag_max_seconds", ())] >= 0.25
    slow = (held[("enricher_event_loop_lag_seconds_bucket", (("le", "+Inf"),))]
            - held[("enricher_event_loop_lag_seconds_bucket", (("le", "0.25"),))])
    assert slow >= 1  # the histogram holds the stall in its 0.25-0.5 s (or later) buckets
    stalls = [r for r in caplog.records if r.getMessage() == "event loop stalled"]
    assert stalls and stalls[0].lag_ms >= 250
    assert stalls[0].gc_runs[2] >= 1  # the full collection during the stall is named


async def test_collections_are_counted_by_generation(client):
    before = await scrape(client)
    gc.collect()
    await asyncio.sleep(2 * SAMPLE_SECONDS)
    after = await scrape(client)
    full = (("generation", "2"),)
    assert after[("enricher_gc_collections_total", full)] >= \
        before.get(("enricher_gc_collections_total", full), 0) + 1
    assert after[("enricher_gc_seconds_total", full)] > 0
