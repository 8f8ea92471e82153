"""The scenarios the bench runs, in order. Each runs its peers (by default the floor, then the
service; the cold ones also the naive Postgres server) one after the other, same load.

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
    events: str  # "hot": IDs from a small hot set (cached after the warm-up); "cold": uniform
    # over the catalog; "zipf": Zipf (s = 1.1) over the catalog; "content": GETs of the content
    # route for 1-5 hot IDs (one recipient each); "users": GETs of the user route (Personalize in
    # the loop) over a pool of users; "locales": POSTs to 20 recommenders, endpoints in 30 locales,
    # IDs running through --locale-items hot items; "connect": Amazon Connect batches of
    # --connect-profiles profiles, 5 hot IDs each
    connections: int | None = None  # wrk connections or shim invokers; None: --connections
    processes: int = 1  # server processes: `serve --workers N`, and N floor processes
    driver: str = "wrk"  # "wrk", "shim": the real Lambda shim in `connections` processes, or
    # "fairness": the service alone, tenant B's paced load alone and under tenant A's wrk flood
    rate: float | None = None  # shim: invocations a second in all (None: back to back)
    service_env: Mapping[str, str] = field(default_factory=dict)
    shape: str = "pinpoint"  # the endpoints and the recommender's attributes (catalog.SHAPES):
    # "pinpoint" (the bench's first shape) or "guide1", "guide3", "guide10" (the developer guide's
    # endpoints; 1, 3 or 10 attributes with a ~200-character image URL and a currency price)
    peers: tuple[str, ...] = ("floor", "service")  # run in this order: "floor", "naive", "service"
    # ("transform": the service too, under the hot pool's Pinpoint events, for a per-recipient
    # comparison with the scenario's own route)
    l1_divisor: int | None = None  # the service's L1 bound (ENRICHER_CACHE_MAX_ENTRIES) is
    # --items // this: the catalog is this many times L1 (the cache stays on)

    @property
    def pool(self) -> str:
        """The name of the event pool (file) the scenario replays; scenarios may share one."""
        return self.events if self.shape == "pinpoint" else f"{self.events}-{self.shape}"


COLD_PEERS = ("floor", "naive", "service")
SCENARIOS = (
    Scenario("warm", "warm cache", "hot"),
    # Endpoints like the developer guide's (~450 bytes, non-ASCII names), 1, 3, 10 attributes.
    Scenario("warm-guide1", "warm, guide endpoints, 1 attribute", "hot", shape="guide1"),
    Scenario("warm-guide3", "warm, guide endpoints, 3 attributes", "hot", shape="guide3"),
    Scenario("warm-guide10", "warm, guide endpoints, 10 attributes", "hot", shape="guide10"),
    # Cache off (L1 bound 0, no Redis): every event's IDs come from Postgres, one query each.
    Scenario("cold", "cold: cache off, random IDs over the catalog", "cold",
             service_env={"ENRICHER_CACHE_MAX_ENTRIES": "0"}, peers=COLD_PEERS),
    # Cache on, the catalog 5 x the L1 bound: where big catalogs live. Uniform IDs miss L1 most of
    # the time; Zipf (s = 1.1) IDs are what a cache is for.
    Scenario("cold-uniform", "cold: L1 = catalog/5, uniform IDs", "cold", peers=COLD_PEERS,
             l1_divisor=5),
    Scenario("cold-zipf", "cold: L1 = catalog/5, Zipf 1.1 IDs", "zipf", peers=COLD_PEERS,
             l1_divisor=5),
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
    Scenario("content", "content GETs, 1-5 IDs (warm)", "content", peers=COLD_PEERS),
    Scenario("content256", "content GETs, 256 connections", "content", connections=256),
    # Personalize in the loop (issue 12): GETs of the user route, answered from the per-user
    # cache after the warm-up (the bench's fake Personalize is asked once per user).
    Scenario("user", "user route GETs (per-user cache warm)", "users"),
    # Amazon Connect (issue 30): the connect route's profiles/s on 100-profile batches against the
    # transform's endpoints/s on 50-endpoint events, same hot items, one after the other. Every
    # profile carries an IdempotencyToken; with the replay cache held to 1 MiB, far less than the
    # pool's answers, a token is never replayed as the pool cycles: each profile is computed and
    # its answer kept, as each is in a campaign.
    Scenario("connect", "connect: 100-profile batches vs transform", "connect",
             peers=("transform", "service"),
             service_env={"ENRICHER_CONNECT_REPLAY_MAX_BYTES": str(1 << 20)}),
    # L1's memory (issue 13): 20 recommenders x 30 locales over 100k hot items; what counts is the
    # service's peak RSS (only the service runs: no floor holds 600 renderings per item).
    Scenario("locales-rss", "20 recommenders x 30 locales, 100k items", "locales",
             peers=("service",)),
    # The nightly batch: enrich-batch over a generated batch inference output (--batch-lines
    # lines of 25 IDs), lines/s next to a floor script (bench/batch_floor.py), and peak RSS.
    Scenario("batch", "enrich-batch, hot items", "batch-hot", driver="batch"),
    Scenario("batch-zipf", "enrich-batch --workers 2, Zipf 1.1 over the catalog", "batch-zipf",
             driver="batch", processes=2, peers=("service",)),
)
BY_NAME = {s.name: s for s in SCENARIOS}
