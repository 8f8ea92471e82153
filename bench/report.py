"""What the bench prints: the machine it ran on, and one table of results."""

from __future__ import annotations

import os
import platform
import subprocess
import textwrap
from dataclasses import asdict, dataclass


@dataclass
class Row:
    scenario: str
    server: str  # "floor", "naive" or "service" (fairness: the tenants' loads)
    connections: int
    processes: int
    per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    timeouts: int
    requests: int
    vs_floor: float | None = None
    sql_per_event: float | None = None
    peak_rss_mb: float | None = None
    cpu_us_per_event: float | None = None  # the server's own CPU time per event served
    threads: int = 2  # wrk threads
    run: int = 1  # which of --repeat's runs
    vs_naive: float | None = None
    max_lag_ms: float | None = None  # the service's largest event-loop lag since its start
    lag_bucket_ms: float | None = None  # the histogram bucket the measurement's largest lag is in
    rows_fetched: float | None = None  # cold: rows fetched from Postgres during the measurement
    cpu_us_per_row: float | None = None  # cold: the server's CPU time per row fetched
    vs_independent: float | None = None  # a bench peer's events/s over its independent twin's
    replayed: bool = False  # cold: the pool ran out and events were sent again (cache hits)

    def as_json(self) -> dict:
        return asdict(self)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def wrk_version(wrk: str) -> str:
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10, check=False)
    first = (done.stdout or done.stderr).strip().splitlines()
    # "wrk debian/4.1.0-3+b2 [epoll] Copyright ..." → "debian/4.1.0-3+b2"
    return first[0].split(" [")[0].removeprefix("wrk ") if first else "unknown"


def machine(wrk: str, postgres_version: str,
            env_by_scenario: dict[str, dict[str, str]]) -> dict[str, str]:
    loops = sorted({env.get("ENRICHER_EVENT_LOOP", "asyncio").lower()
                    for env in env_by_scenario.values()}) or ["asyncio"]
    return {
        "cores": str(len(os.sched_getaffinity(0))),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        # The servers' (service and peers alike): ENRICHER_EVENT_LOOP, given with --env.
        "event loop": "/".join(loops),
        "postgres": postgres_version,
        "wrk": wrk_version(wrk),
    }


COLUMNS = (
    ("scenario", "<", 40), ("server", "<", 7), ("thr", ">", 3), ("conns", ">", 5),
    ("procs", ">", 5), ("runs", ">", 4), ("events/s", ">", 8), ("p50 ms", ">", 7),
    ("p99 ms", ">", 7), ("errors", ">", 6), ("timeouts", ">", 8), ("vs floor", ">", 8),
    ("floor range", ">", 11), ("vs naive", ">", 8), ("naive range", ">", 11),
    ("CPU µs/ev", ">", 9), ("SQL/event", ">", 9), ("max lag ms", ">", 14), ("peak RSS", ">", 9),
)


def median(values: list[float]) -> float | None:
    """The median (of an even count, the mean of the middle two); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def spread(values: list[float]) -> tuple[float, float] | None:
    """(min, max) of the values, None for none."""
    return (min(values), max(values)) if values else None


@dataclass
class Summary:
    """One scenario, thread count and server over its --repeat runs."""

    first: Row
    runs: int
    per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    timeouts: int
    vs_floor: float | None
    floor_range: tuple[float, float] | None
    vs_naive: float | None
    naive_range: tuple[float, float] | None
    cpu_us_per_event: float | None
    sql_per_event: float | None
    max_lag_ms: float | None
    lag_bucket_ms: float | None
    peak_rss_mb: float | None


def summarise(rows: list[Row]) -> list[Summary]:
    """Rows grouped by (scenario, wrk threads, server), in the order first seen: medians of the
    rates, latencies and ratios, the ratios' range, sums of errors, maxima of lag and RSS."""
    groups: dict[tuple[str, int, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.scenario, row.threads, row.server), []).append(row)

    def present(group: list[Row], name: str) -> list[float]:
        return [value for row in group if (value := getattr(row, name)) is not None]

    found = []
    for group in groups.values():
        floor, naive = present(group, "vs_floor"), present(group, "vs_naive")
        lags, rss = present(group, "max_lag_ms"), present(group, "peak_rss_mb")
        buckets = present(group, "lag_bucket_ms")
        found.append(Summary(
            first=group[0], runs=len(group),
            per_second=median([r.per_second for r in group]) or 0.0,
            p50_ms=median([r.p50_ms for r in group]) or 0.0,
            p99_ms=median([r.p99_ms for r in group]) or 0.0,
            errors=sum(r.errors for r in group), timeouts=sum(r.timeouts for r in group),
            vs_floor=median(floor), floor_range=spread(floor),
            vs_naive=median(naive), naive_range=spread(naive),
            cpu_us_per_event=median(present(group, "cpu_us_per_event")),
            sql_per_event=median(present(group, "sql_per_event")),
            max_lag_ms=max(lags) if lags else None,
            lag_bucket_ms=max(buckets) if buckets else None, peak_rss_mb=max(rss) if rss else None))
    return found


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _range(bounds: tuple[float, float] | None, runs: int) -> str:
    return "" if bounds is None or runs < 2 else f"{bounds[0]:.2f}-{bounds[1]:.2f}"


def _lag(s: Summary) -> str:
    """`79.0 (<=50)`: the largest lag since start, and the bound of the measurement's own."""
    if s.max_lag_ms is None:
        return ""
    bound = "" if s.lag_bucket_ms is None else f" (<={s.lag_bucket_ms:,.0f})"
    return f"{s.max_lag_ms:,.1f}{bound}"


def _cells(s: Summary) -> list[str]:
    row = s.first
    return [
        row.scenario, row.server, str(row.threads), str(row.connections), str(row.processes),
        str(s.runs), f"{s.per_second:,.0f}", f"{s.p50_ms:.1f}", f"{s.p99_ms:.1f}", str(s.errors),
        str(s.timeouts), _ratio(s.vs_floor), _range(s.floor_range, s.runs), _ratio(s.vs_naive),
        _range(s.naive_range, s.runs),
        "" if s.cpu_us_per_event is None else f"{s.cpu_us_per_event:,.0f}",
        "" if s.sql_per_event is None else f"{s.sql_per_event:.2f}",
        _lag(s),
        "" if s.peak_rss_mb is None else f"{s.peak_rss_mb:,.0f} MiB",
    ]


def summary_table(rows: list[Row]) -> str:
    def line(cells: list[str]) -> str:
        return "  ".join(f"{cell:{align}{width}}"
                         for cell, (_, align, width) in zip(cells, COLUMNS, strict=True)).rstrip()

    header = line([name for name, _, _ in COLUMNS])
    return "\n".join([header, "-" * len(header),
                      *(line(_cells(summary)) for summary in summarise(rows))])


NOTES = (
    "Each line: one scenario, wrk thread count (thr) and server over its runs (--repeat): events/s, "
    "p50, p99, CPU and SQL are medians, errors and timeouts sums. vs floor / vs naive: the "
    "median of each run's events/s over the floor's (the naive Postgres server's) under the same "
    "load in the same run; range: the lowest and highest of those ratios. max lag ms: the "
    "largest event-loop lag the service's /metrics reported after the load (since its start, so "
    "the warm-up is included); in brackets, the upper bound of the histogram bucket the "
    "measurement's own largest lag lies in (lag_bucket_ms in the JSON); empty when the service "
    "does not expose them. CPU µs/ev: CPU time "
    "(user + system) the server's processes used during the measurement, per event served: the "
    "server's own cost, whatever share of the cores wrk took. SQL/event: statements "
    "Postgres ran for the service over its life (start-up and warm-up included) per event served. "
    "peak RSS: all processes of the server, sampled every 100 ms."
)


def notes() -> str:
    return textwrap.fill(NOTES, width=100)


def _median_of(group: list[Row], name: str) -> float | None:
    return median([v for r in group if (v := getattr(r, name)) is not None])


def _num(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


COMPARISON_HEADER = ("| scenario | what it measured | thr | conns | service/s | peer | peer/s | "
                     "ratio (range) | p99 ms service (peer) | timeouts | CPU µs/event service "
                     "(peer) | CPU ratio | CPU µs/cold row service (peer) | "
                     "peer ÷ independent peer (range); its CPU |")


def comparison_table(rows: list[Row], scenarios) -> str:
    """One line per scenario, wrk thread count and peer of the real and big scenarios: medians
    over the runs of the service's and the peer's rates, each run's ratio (median and range), p99s,
    timeouts (sums), CPU per event (and the peer's over the service's: the ratio of rates two
    servers would reach on cores of their own) and per cold row, and how the bench's peer compares with the
    independently written one (`--peers independent`). Markdown, as docs/performance.md holds it."""
    titles = {s.title: s for s in scenarios if s.data != "toy"}
    groups: dict[tuple[str, int], dict[str, list[Row]]] = {}
    for row in rows:
        if row.scenario in titles:
            groups.setdefault((row.scenario, row.threads), {}).setdefault(row.server, []).append(row)
    lines = []
    for (title, threads), by_server in groups.items():
        service = by_server.get("service", [])
        for peer in ("floor", "naive"):
            peers = by_server.get(peer)
            if not peers or not service:
                continue
            runs = {r.run: r for r in peers}
            ratios = [s.per_second / runs[s.run].per_second for s in service
                      if s.run in runs and runs[s.run].per_second]
            ratio = median(ratios)
            twin = [r.vs_independent for r in peers if r.vs_independent is not None]
            twin_cpu = _median_of(by_server.get(f"{peer}-indep", []), "cpu_us_per_event")
            # The steadier ratio on a shared machine: what an event costs each server's CPU.
            service_cpu = _median_of(service, "cpu_us_per_event")
            peer_cpu = _median_of(peers, "cpu_us_per_event")
            cpu_ratio = peer_cpu / service_cpu if service_cpu and peer_cpu else None
            scenario = titles[title]
            # A cold pool that ran out turned events into cache hits: the line says so.
            replayed = any(r.replayed for r in service + peers)
            lines.append(
                f"| {scenario.name} | {title}"
                + (" **(pool ran out: events replayed; raise its size)**" if replayed else "")
                + f" | {threads} | {service[0].connections} | "
                f"{_num(_median_of(service, 'per_second'))} | {peer} | "
                f"{_num(_median_of(peers, 'per_second'))} | "
                f"{_ratio(ratio)}" + (f" ({min(ratios):.2f}-{max(ratios):.2f})"
                                      if len(ratios) > 1 else "") + " | "
                f"{_num(_median_of(service, 'p99_ms'), 1)} ({_num(_median_of(peers, 'p99_ms'), 1)}) | "
                f"{sum(r.timeouts for r in service)} ({sum(r.timeouts for r in peers)}) | "
                f"{_num(_median_of(service, 'cpu_us_per_event'))} "
                f"({_num(_median_of(peers, 'cpu_us_per_event'))}) | "
                f"{_ratio(cpu_ratio)} | "
                + (f"{_num(_median_of(service, 'cpu_us_per_row'), 1)}"
                   + (f" ({_num(peer_row, 1)})" if (peer_row := _median_of(peers, 'cpu_us_per_row'))
                      is not None else "") if scenario.cold else "")
                + " | " + (f"{median(twin):.2f} ({min(twin):.2f}-{max(twin):.2f}); CPU µs/event "
                           f"{_num(twin_cpu)}" if twin else "")
                + " |")
    if not lines:
        return ""
    separator = "|" + "---|" * (COMPARISON_HEADER.count("|") - 1)
    return "\n".join([COMPARISON_HEADER, separator, *lines])


def heading(facts: dict[str, str], settings: dict[str, str]) -> str:
    def wrapped(label: str, pairs: dict[str, str]) -> str:
        return textwrap.fill(f"{label}: " + ", ".join(f"{k} {v}" for k, v in pairs.items()),
                             width=100, subsequent_indent="  ")

    return wrapped("machine", facts) + "\n" + wrapped("run", settings)
