"""The scenarios the bench runs, in order. Each runs the floor and then the service, same load.

To change what the service runs with in one scenario (e.g. turn its cache off for `cold`), add the
variable to that scenario's `service_env` here, or pass `--env cold:NAME=VALUE` on the command line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Scenario:
    name: str  # as given to --scenarios
    title: str  # as printed in the table
    events: str  # "hot": IDs from a small hot set (cached after the warm-up); "cold": over the
    # catalog; "content": GETs of the content route for 1-5 hot IDs (one recipient each);
    # "users": GETs of the user route (Personalize in the loop) over a pool of users
    connections: int | None = None  # wrk connections or shim invokers; None: --connections
    processes: int = 1  # server processes: `serve --workers N`, and N floor processes
    driver: str = "wrk"  # "wrk", "shim": the real Lambda shim in `connections` processes, or
    # "fairness": the service alone, tenant B's paced load alone and under tenant A's wrk flood
    rate: float | None = None  # shim: invocations a second in all (None: back to back)
    service_env: Mapping[str, str] = field(default_factory=dict)


SCENARIOS = (
    Scenario("warm", "warm cache", "hot"),
    # Cache off (L1 bound 0, no Redis): every event's IDs come from Postgres, one query each.
    Scenario("cold", "cold: cache off, random IDs over the catalog", "cold",
             service_env={"ENRICHER_CACHE_MAX_ENTRIES": "0"}),
    Scenario("c256", "256 connections (warm)", "hot", connections=256),
    Scenario("shim", "Lambda shim, 64 invocations (warm)", "hot", driver="shim"),
    # The same 64 containers, paced below saturation: the latency a shim invocation has when the
    # server is not queueing (back to back, p99 is mostly time spent waiting in line).
    Scenario("shim-paced", "Lambda shim, 64 at 200 invocations/s", "hot", driver="shim",
             rate=200),
    Scenario("workers2", "serve --workers 2 (warm)", "hot", processes=2),
    # Issue 14: one tenant's flood must not queue another's requests (bench/fairness.py); the
    # same with the per-tenant cap of requests in flight turned off, to show what it does.
    Scenario("fairness", "fairness", "hot", driver="fairness"),
    Scenario("fairness-nocap", "fairness, no in-flight cap", "hot", driver="fairness",
             service_env={"ENRICHER_TENANT_MAX_IN_FLIGHT": "0"}),
    # Send-time content (issue 11): one GET per recipient, 1-5 IDs, where a request's fixed cost
    # (auth, lookups, headers, logging) is most of its cost. Requests/s in the events/s column.
    Scenario("content", "content GETs, 1-5 IDs (warm)", "content"),
    Scenario("content256", "content GETs, 256 connections", "content", connections=256),
    # Personalize in the loop (issue 12): GETs of the user route, answered from the per-user
    # cache after the warm-up (the bench's fake Personalize is asked once per user).
    Scenario("user", "user route GETs (per-user cache warm)", "users"),
)
BY_NAME = {s.name: s for s in SCENARIOS}
