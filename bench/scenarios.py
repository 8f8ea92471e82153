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
    events: str  # real and big: "guide" (uniform IDs), "guide-zipf" (Zipf 1.1), "content" (GETs
    # of 3 Zipf IDs). Toy: "hot": IDs from a small hot set (cached after the warm-up); "cold": uniform
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
    # --toy-items // this: the catalog is this many times L1 (the cache stays on)
    data: str = "toy"  # the catalog: "toy" (generated, 6-digit IDs, COPYed: the kept scenarios),
    # "real" (the 2,465 real products, imported) or "big" (--items synthetic items that follow
    # the real ones, imported); real and big scenarios replay guide-shaped endpoints
    recommender: str | None = None  # real and big: the recommender asked (bench/database.py)
    demographic: bool = False  # real and big: endpoints carry Demographic.Locale

    @property
    def pool(self) -> str:
        """The name of the event pool (file) the scenario replays; scenarios may share one."""
        if self.data != "toy":
            return f"{self.data}-{self.events}" + ("-demographic" if self.demographic else "")
        return self.events if self.shape == "pinpoint" else f"{self.events}-{self.shape}"

    @property
    def cold(self) -> bool:
        """Rows come from Postgres: the CPU per fetched row is reported."""
        return self.data == "big"

    def with_independent(self) -> tuple[str, ...]:
        """The peers with `--peers independent`: each bench peer followed by its independently
        written twin (bench/independent/), on the real and big catalogs."""
        if self.data == "toy":
            return self.peers
        twins = {"floor": "floor-indep", "naive": "naive-indep"}
        return tuple(p for peer in self.peers for p in (peer, twins.get(peer)) if p)


REAL = {"data": "real", "recommender": "real"}
BIG = {"data": "big", "recommender": "big"}
WARM_PEERS = ("floor", "service")
COLD_PEERS = ("naive", "service")
CONTENT_PEERS = ("floor", "naive", "service")
SCENARIOS = (
    # What users send: the real products, written through the import route, endpoints exactly
    # like the developer guide's example, a recommender of Title, Genre and image URL.
    Scenario("real-warm", "warm: 2,465 real products, guide endpoints, Title+Genre+Image",
             "guide", peers=WARM_PEERS, **REAL),
    Scenario("real-warm-demographic", "warm: the same, endpoints with Demographic.Locale",
             "guide", peers=WARM_PEERS, demographic=True, **REAL),
    Scenario("real-warm-price", "warm: the same + Price in the currency format",
             "guide", peers=WARM_PEERS, data="real", recommender="real-price"),
    # The big catalog (--items items that follow the real ones), service defaults (L1 100k items):
    # distinct events (--cold-events), each thread its own, none replayed within a run.
    Scenario("cold-uniform", "cold: big catalog, uniform IDs, distinct events", "guide",
             peers=COLD_PEERS, **BIG),
    Scenario("cold-zipf", "cold: big catalog, Zipf 1.1 IDs, distinct events", "guide-zipf",
             peers=COLD_PEERS, **BIG),
    Scenario("content", "content GET: 3 Zipf IDs over the big catalog, Basic auth", "content",
             peers=CONTENT_PEERS, **BIG),
    # Pinpoint's advised concurrency: no timeouts, p99 against the peer's.
    Scenario("real-warm-256", "warm real, 256 connections", "guide", peers=WARM_PEERS,
             connections=256, **REAL),
    Scenario("cold-uniform-256", "cold uniform, 256 connections", "guide", peers=COLD_PEERS,
             connections=256, **BIG),
    Scenario("content-256", "content GET, 256 connections", "content", peers=CONTENT_PEERS,
             connections=256, **BIG),
    # What the item cache saves: the same cold events with L1 off.
    Scenario("cold-cache-off", "cold uniform with the item cache off", "guide",
             peers=COLD_PEERS, service_env={"ENRICHER_CACHE_MAX_ENTRIES": "0"}, **BIG),
    # Kept from the bench's first catalog (generated "toy" items: 6-digit IDs, short titles,
    # COPYed), each for the question in its name; not run by default.
    Scenario("toy-warm", "toy catalog, warm: what short toy items cost vs real-warm", "hot"),
    Scenario("attributes-1", "toy catalog, guide endpoints, 1 attribute (cost per attribute)",
             "hot", shape="guide1"),
    Scenario("attributes-3", "toy catalog, guide endpoints, 3 attributes (cost per attribute)",
             "hot", shape="guide3"),
    Scenario("attributes-10", "toy catalog, guide endpoints, 10 attributes (cost per attribute)",
             "hot", shape="guide10"),
    Scenario("shim", "Lambda shim, 64 invocations (toy, warm)", "hot", driver="shim"),
    # The same 64 containers, paced below saturation: the latency a shim invocation has when the
    # server is not queueing (back to back, p99 is mostly time spent waiting in line).
    Scenario("shim-paced", "Lambda shim, 64 at 200 invocations/s (toy)", "hot", driver="shim",
             rate=200),
    Scenario("workers2", "serve --workers 2 (toy, warm)", "hot", processes=2),
    # One tenant's flood must not queue another's requests (bench/fairness.py); the same with the
    # per-tenant cap of requests in flight turned off, to show what it does.
    Scenario("fairness", "fairness", "hot", driver="fairness"),
    Scenario("fairness-nocap", "fairness, no in-flight cap", "hot", driver="fairness",
             service_env={"ENRICHER_TENANT_MAX_IN_FLIGHT": "0"}),
    # Personalize in the loop: GETs of the user route, answered from the per-user cache after
    # the warm-up (the bench's fake Personalize is asked once per user).
    Scenario("user", "user route GETs (toy, per-user cache warm)", "users"),
    # Amazon Connect: the connect route's profiles/s on 100-profile batches against the
    # transform's endpoints/s on 50-endpoint events, same hot items, one after the other. Every
    # profile carries an IdempotencyToken; with the replay cache held to 1 MiB, far less than the
    # pool's answers, a token is never replayed as the pool cycles.
    Scenario("connect", "connect: 100-profile batches vs transform (toy)", "connect",
             peers=("transform", "service"),
             service_env={"ENRICHER_CONNECT_REPLAY_MAX_BYTES": str(1 << 20)}),
    # L1's memory: 20 recommenders x 30 locales over 100k hot items; what counts is the
    # service's peak RSS (only the service runs: no floor holds 600 renderings per item).
    Scenario("locales-rss", "20 recommenders x 30 locales, 100k toy items", "locales",
             peers=("service",)),
    # The nightly batch: enrich-batch over a generated batch inference output (--batch-lines
    # lines of 25 IDs), lines/s next to a floor script (bench/batch_floor.py), and peak RSS.
    Scenario("batch", "enrich-batch, hot items (toy)", "batch-hot", driver="batch"),
    Scenario("batch-zipf", "enrich-batch --workers 2, Zipf 1.1 over the toy catalog", "batch-zipf",
             driver="batch", processes=2, peers=("service",)),
)
BY_NAME = {s.name: s for s in SCENARIOS}
DEFAULT = ("real-warm", "real-warm-demographic", "real-warm-price", "cold-uniform", "cold-zipf",
           "content")


