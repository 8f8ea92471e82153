"""What the bench prints: the machine it ran on, and one table of results."""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import textwrap
from dataclasses import asdict, dataclass


@dataclass
class Row:
    scenario: str
    server: str  # "floor" or "service"
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


def machine(wrk: str, postgres_version: str) -> dict[str, str]:
    return {
        "cores": str(len(os.sched_getaffinity(0))),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "uvloop": "yes" if importlib.util.find_spec("uvloop") else "no",
        "postgres": postgres_version,
        "wrk": wrk_version(wrk),
    }


COLUMNS = (
    ("scenario", "<", 36), ("server", "<", 7), ("conns", ">", 5), ("procs", ">", 5),
    ("events/s", ">", 8), ("p50 ms", ">", 7), ("p99 ms", ">", 7), ("errors", ">", 6),
    ("timeouts", ">", 8), ("vs floor", ">", 8), ("CPU µs/ev", ">", 9), ("SQL/event", ">", 9),
    ("peak RSS", ">", 9),
)


def _cells(row: Row) -> list[str]:
    return [
        row.scenario, row.server, str(row.connections), str(row.processes),
        f"{row.per_second:,.0f}", f"{row.p50_ms:.1f}", f"{row.p99_ms:.1f}", str(row.errors),
        str(row.timeouts), "" if row.vs_floor is None else f"{row.vs_floor:.2f}",
        "" if row.cpu_us_per_event is None else f"{row.cpu_us_per_event:,.0f}",
        "" if row.sql_per_event is None else f"{row.sql_per_event:.2f}",
        "" if row.peak_rss_mb is None else f"{row.peak_rss_mb:,.0f} MiB",
    ]


def table(rows: list[Row]) -> str:
    def line(cells: list[str]) -> str:
        return "  ".join(f"{cell:{align}{width}}"
                         for cell, (_, align, width) in zip(cells, COLUMNS, strict=True)).rstrip()

    header = line([name for name, _, _ in COLUMNS])
    return "\n".join([header, "-" * len(header), *(line(_cells(row)) for row in rows)])


NOTES = (
    "vs floor: events/s over the floor's under the same load in this run. CPU µs/ev: CPU time "
    "(user + system) the server's processes used during the measurement, per event served: the "
    "server's own cost, whatever share of the cores wrk took. SQL/event: statements "
    "Postgres ran for the service over its life (start-up and warm-up included) per event served. "
    "peak RSS: all processes of the server, sampled every 100 ms."
)


def notes() -> str:
    return textwrap.fill(NOTES, width=100)


def heading(facts: dict[str, str], settings: dict[str, str]) -> str:
    def wrapped(label: str, pairs: dict[str, str]) -> str:
        return textwrap.fill(f"{label}: " + ", ".join(f"{k} {v}" for k, v in pairs.items()),
                             width=100, subsequent_indent="  ")

    return wrapped("machine", facts) + "\n" + wrapped("run", settings)
