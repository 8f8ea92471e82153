"""Prometheus metrics, one registry per app, served at `GET /metrics`.

A registry per app (not prometheus-client's global one) so several apps can live in one process
(tests, benches) without clashing. Counters are bumped once per request or per query with a count,
never once per item: the hot path stays free of per-item metric calls.

With `serve --workers N` every worker keeps its own numbers and a scrape reaches one of them; scrape
each replica with one worker, or sum over scrapes by the `instance` label.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
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
        self.l1_entries = Gauge(
            "enricher_l1_entries", "Entries held in this process's L1 item cache.",
            registry=registry,
        )
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
        self.notifications = Counter(
            "enricher_invalidation_notifications",
            "Invalidation notifications received from Postgres, by kind.",
            ("kind",), registry=registry,
        )
        # (route, method, status) → the bound request counter and latency histogram: a label
        # lookup per request costs a lock and a tuple; the set of keys is small (routes, methods,
        # statuses).
        self._request_series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.listener_reconnects = Counter(
            "enricher_listener_reconnects",
            "Times the invalidation listener lost its connection and listened again.",
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
