"""Prometheus metrics, one registry per app, served at `GET /metrics`.

A registry per app (not prometheus-client's global one) so several apps can live in one process
(tests, benches) without clashing. Counters are bumped once per request or per query with a count,
never once per item: the hot path stays free of per-item metric calls.

With `serve --workers N` the workers share their numbers through files, prometheus_client's
multiprocess mode: the supervisor calls `share_between_processes(directory)` before it forks any
worker, and a scrape of any worker then reports the sum over all of them (counters and histograms
of workers that have died since included, so they never go backwards; `enricher_l1_entries`
and `enricher_cache_bytes` summed over the live workers). One process alone keeps its numbers in
memory, as before.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, values

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


_pid = os.getpid()


def _renew_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_renew_pid)


def _current_pid() -> int:
    # prometheus_client asks for the process ID at every increment (to notice a fork); os.getpid
    # is a system call each time, this is a read of a global renewed at fork.
    return _pid


def share_between_processes(directory: str) -> None:
    """From now on, metric values live in per-process files under `directory` (which the caller
    has emptied), so that a scrape of any process can sum them. Call it before the first metric
    is created and before forking the processes that are to share it."""
    os.environ[MULTIPROCESS_DIR] = directory
    # prometheus_client chooses where values live when it is first imported (which `serve` has
    # done by now, to load the app), so choose again, as it would have with the variable set.
    values.ValueClass = values.MultiProcessValue(process_identifier=_current_pid)


def shared_directory() -> str | None:
    """The directory the processes share their metric files through, if they do."""
    return os.environ.get(MULTIPROCESS_DIR) or None


def forget_process(pid: int) -> None:
    """A process that shared its metrics has died: what its live-only gauges said no longer holds
    (prometheus_client's `mark_process_dead`); its counters stay in the sums."""
    directory = shared_directory()
    if directory:
        multiprocess.mark_process_dead(pid, directory)


class SampledGauge:
    """A gauge whose value a function gives (`set_function`), in either mode. In memory the
    function is called at each scrape; shared between processes a scrape cannot call into the
    other processes, so each process writes the value down with `refresh` (the supervised worker
    does, every second)."""

    def __init__(self, gauge: Gauge, shared: bool) -> None:
        self.gauge = gauge
        self.shared = shared
        self._function: Callable[[], float] | None = None

    def set_function(self, function: Callable[[], float]) -> None:
        self._function = function
        if not self.shared:
            self.gauge.set_function(function)

    def refresh(self) -> None:
        if self.shared and self._function is not None:
            self.gauge.set(self._function())


class WorkerFilesCollector(multiprocess.MultiProcessCollector):
    """prometheus_client's collector over every worker's files, but an empty file (0 bytes) is a
    worker's with nothing recorded yet, not an error. prometheus_client creates a worker's file
    before it sizes it, and reads a 0-byte file as a struct.error that fails the whole scrape; a
    worker killed inside that window (a crash loop) leaves the empty file behind for good, since
    it is named after a process that never comes back, so every later scrape would be a 500
    (prometheus/client_python#1199, not fixed in a release yet)."""

    def collect(self):  # type: ignore[no-untyped-def]
        files = []
        for path in glob.glob(os.path.join(self._path, "*.db")):
            try:
                if os.path.getsize(path):
                    files.append(path)
            except FileNotFoundError:  # a dead worker's file, removed meanwhile
                continue
        return self.merge(files, accumulate=True)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        shared = shared_directory()
        # What /metrics shows: this process's registry, or the sum over the files of all of them.
        self.exposition = registry
        if shared:
            self.exposition = CollectorRegistry()
            WorkerFilesCollector(self.exposition, path=shared)
        self.requests = Counter(
            "enricher_http_requests", "HTTP requests answered, by route and status.",
            ("route", "method", "status"), registry=registry,
        )
        self.request_seconds = Histogram(
            "enricher_http_request_duration_seconds", "Time to answer an HTTP request, by route.",
            ("route",), buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.cache_lookups = Counter(
            "enricher_cache_lookups",
            "Item IDs looked up in a cache tier, by result: hit, negative_hit (known absent), "
            "miss, stale_served (past its TTL, answered because Postgres failed or was too slow).",
            ("tier", "result"), registry=registry,
        )
        self.l1_entries = SampledGauge(Gauge(
            "enricher_l1_entries", "Entries held in the L1 item caches (summed over live workers).",
            registry=registry, multiprocess_mode="livesum",
        ), shared=bool(shared))
        self.l1_bytes = SampledGauge(Gauge(
            "enricher_cache_bytes",
            "Bytes the L1 item caches account for: entries and the rows kept on them, bounded by "
            "ENRICHER_CACHE_MAX_BYTES per process (summed over live workers).",
            registry=registry, multiprocess_mode="livesum",
        ), shared=bool(shared))
        self.l2_errors = Counter(
            "enricher_l2_errors", "Redis (L2) calls that failed or timed out, by operation.",
            ("operation",), registry=registry,
        )
        self.db_queries = Counter(
            "enricher_db_queries", "Item queries sent to Postgres, by outcome.",
            ("outcome",), registry=registry,
        )
        self.db_query_seconds = Histogram(
            "enricher_db_query_duration_seconds", "Time of one item query (all IDs of a batch).",
            buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.db_query_ids = Histogram(
            "enricher_db_query_ids", "Item IDs asked for by one query.",
            buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 5000), registry=registry,
        )
        self.coalesced = Counter(
            "enricher_coalesced_ids",
            "Missed item IDs that joined a query already asked for by another request.",
            registry=registry,
        )
        self.db_retries = Counter(
            "enricher_db_retries",
            "Queries retried once because the pooled connection was dead (e.g. after a restart).",
            registry=registry,
        )
        self.degraded = Counter(
            "enricher_degraded_responses",
            "Answers served past a failing or slow Postgres (X-Degraded), by route and reason.",
            ("route", "reason"), registry=registry,
        )
        self.personalize_calls = Counter(
            "enricher_personalize_calls",
            "GetRecommendations calls to Amazon Personalize, by outcome: ok, timeout, throttled, "
            "server_error, refused, denied, unreachable, unconfigured.",
            ("outcome",), registry=registry,
        )
        self.personalize_cache = Counter(
            "enricher_personalize_cache_lookups",
            "Per-user Personalize results looked up, by tier (l1, l2) and result (hit, miss, "
            "joined: waited for a call another render had started).",
            ("tier", "result"), registry=registry,
        )
        self.connect_profiles = Counter(
            "enricher_connect_profiles",
            "Amazon Connect customer profiles answered, by outcome: sent (send true), not_sent "
            "(send false, with a reason), replayed (a repeated IdempotencyToken's first answer).",
            ("outcome",), registry=registry,
        )
        self.notifications = Counter(
            "enricher_invalidation_notifications",
            "Invalidation notifications received from Postgres, by kind.",
            ("kind",), registry=registry,
        )
        # (route, method, status) → the bound request counter and latency histogram: a label
        # lookup per request costs a lock and a tuple; the set of keys is small (routes, methods,
        # statuses).
        self._request_series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        # Keys and limits (issue 14).
        self.throttled = Counter(
            "enricher_throttled_requests",
            "Requests answered 429, by reason: rate (the tenant's rate limit) or in_flight (the "
            "tenant's cap of requests in flight in this process).",
            ("reason",), registry=registry,
        )
        self.rate_limit_fallbacks = Counter(
            "enricher_rate_limit_redis_failures",
            "Rate-limit checks Redis failed or was too slow for; the next second is counted in "
            "this process, with the limit shared out.",
            registry=registry,
        )
        self.listener_reconnects = Counter(
            "enricher_listener_reconnects",
            "Times the invalidation listener lost its connection and listened again.",
            registry=registry,
        )
        # Read replicas (DATABASE_READ_URL, service/storage/read_routing.py).
        self.db_reads = Counter(
            "enricher_db_reads",
            "Item reads (resolver batches, list pages) by the server they ran on: replica, or "
            "primary (no replica configured, usable or answering).",
            ("server",), registry=registry,
        )
        self.replica_lag = Gauge(
            "enricher_replica_lag_seconds",
            "How far the read replica was behind the primary at its last sample "
            "(pg_last_xact_replay_timestamp; 0 when it has replayed all it received); NaN when "
            "it could not be sampled. Over workers: the largest any live worker saw.",
            registry=registry, multiprocess_mode="livemax",
        )
        self.replica_lag.set(math.nan)
        self.replica_in_use = Gauge(
            "enricher_replica_in_use",
            "1 while item reads go to the read replica, 0 while they go to the primary (over "
            "workers: 0 as soon as any live worker reads from the primary).",
            registry=registry, multiprocess_mode="livemin",
        )
        # service/runtime/loop_lag.py: how late the event loop ran a timer, sampled every 50 ms.
        self.loop_lag = Histogram(
            "enricher_event_loop_lag_seconds",
            "How late the event loop fired a timer set 50 ms ahead: the time some work held the "
            "loop, which every request in flight waited out.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self.loop_lag_max = Gauge(
            "enricher_event_loop_lag_max_seconds",
            "The largest event-loop lag this process has seen since it started (over workers: "
            "the largest of the live workers').",
            registry=registry, multiprocess_mode="livemax",
        )
        self.loop_lag_max.set(0)
        self.gc_collections = Counter(
            "enricher_gc_collections", "Garbage collections run, by generation.",
            ("generation",), registry=registry,
        )
        self.gc_seconds = Counter(
            "enricher_gc_seconds", "Time spent in garbage collections (the loop held), by "
            "generation.", ("generation",), registry=registry,
        )
        self.replica_rows_behind = Counter(
            "enricher_replica_rows_behind",
            "Rows read from the replica older than a change this process was notified of: "
            "never cached, read again from the primary.",
            registry=registry,
        )

    def request_series(self, route: str, method: str, status: int) -> tuple[Counter, Histogram]:
        """The request counter and latency histogram of one (route, method, status)."""
        key = (route, method, status)
        series = self._request_series.get(key)
        if series is None:
            series = self._request_series[key] = (
                self.requests.labels(route, method, str(status)),
                self.request_seconds.labels(route),
            )
        return series

    def count_gc(self, generation: int, collections: int, seconds: float) -> None:
        self.gc_collections.labels(str(generation)).inc(collections)
        self.gc_seconds.labels(str(generation)).inc(seconds)

    def refresh(self) -> None:
        """Write down the sampled gauges (shared between processes only; else a no-op)."""
        self.l1_entries.refresh()
        self.l1_bytes.refresh()


class SupervisorMetrics:
    """What the supervisor of `serve --workers N` counts, in the files its workers share."""

    def __init__(self) -> None:
        self.worker_exits = Counter(
            "enricher_worker_exits",
            "Workers that died without being asked to stop, by cause (a signal's name, or "
            "exit_<code>); each was replaced.",
            ("cause",), registry=None,
        )
