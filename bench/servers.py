"""The servers under test as child processes: started, waited for, watched, and always stopped.

Each server runs in a session of its own, so a Ctrl-C in the terminal reaches only the bench, which
then stops every child in order (SIGTERM, then SIGKILL after a grace period). While a server runs,
a thread samples the RSS of its whole process tree (the workers of `serve --workers N` included)
every 100 ms and keeps the peak.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.real_catalog import RECOMMENDERS

REPO = Path(__file__).resolve().parents[1]
SAMPLE_SECONDS = 0.1


def free_port() -> int:
    """A free port below the ephemeral range, so no outgoing connection (wrk's, Postgres') takes it
    between this check and the server's bind."""
    low = _ephemeral_low()
    for port in random.sample(range(max(1024, low - 12_000), low), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found below the ephemeral range")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class ServerProcess:
    """One server: the process we started (plus, for `--workers`, the processes it starts)."""

    def __init__(self, name: str, command: list[str], *, env: dict[str, str], port: int,
                 listeners: int, log_path: Path) -> None:
        self.name = name
        self.port = port
        self.listeners = listeners
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            command, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.peak_rss = 0
        self._stop_sampling = threading.Event()
        self._sampler = threading.Thread(target=self._sample, name=f"rss-{name}", daemon=True)
        self._sampler.start()

    def _tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def _sample(self) -> None:
        while not self._stop_sampling.wait(SAMPLE_SECONDS):
            with contextlib.suppress(psutil.Error):
                total = 0
                for process in self._tree():
                    with contextlib.suppress(psutil.Error):
                        total += process.memory_info().rss
                self.peak_rss = max(self.peak_rss, total)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server's processes have used so far."""
        total = 0.0
        with contextlib.suppress(psutil.Error):
            for process in self._tree():
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    total += times.user + times.system
        return total

    def pids(self) -> list[int]:
        with contextlib.suppress(psutil.Error):
            return [p.pid for p in self._tree()]
        return []

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def wait_ready(self, timeout: float) -> None:
        """Until `listeners` processes listen on the port and /healthz answers 200."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} before it "
                                   f"was ready:\n{self.log_tail()}")
            if self._listening() >= self.listeners and self._healthy():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} was not ready after {timeout:.0f} s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.1)

    def _listening(self) -> int:
        # Every worker must listen before load starts: SO_REUSEPORT spreads connections over the
        # sockets listening when each connection is made, and wrk keeps its connections.
        count = 0
        with contextlib.suppress(psutil.Error):
            for process in self._tree():
                with contextlib.suppress(psutil.Error):
                    if any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port
                           for c in process.net_connections(kind="tcp")):
                        count += 1
        return count

    def wait_idle(self, timeout: float = 15.0, quick: float = 0.05) -> None:
        """Until /healthz answers within `quick` seconds: the requests a load run abandoned
        (timed out, or in flight when wrk stopped) are done, so they do not weigh on the next run."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            started = time.monotonic()
            if self._healthy() and time.monotonic() - started < quick:
                return
            time.sleep(0.05)

    def _healthy(self) -> bool:
        try:
            # http://127.0.0.1, a server we started
            with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=2) as answer:  # noqa: S310
                return answer.status == 200
        except OSError:
            return False

    def stop(self, grace: float = 20.0) -> int | None:
        """SIGTERM (a graceful stop for both servers), then SIGKILL to whatever is left."""
        self._stop_sampling.set()
        tree = []
        with contextlib.suppress(psutil.Error):
            tree = self._tree()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        for process in tree:  # workers, and the leader if it ignored SIGTERM
            with contextlib.suppress(psutil.Error):
                if process.is_running():
                    process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self._sampler.join(timeout=2)
        self._log.close()
        return self.process.returncode


def floor_command(port: int, items: int, processes: int, shape: str = "pinpoint") -> list[str]:
    return [sys.executable, "-m", "bench.floor_server", "--port", str(port), "--items", str(items),
            "--processes", str(processes), "--shape", shape]


def naive_command(port: int, database_url: str, catalog_id: int, shape: str) -> list[str]:
    return [sys.executable, "-m", "bench.naive_server", "--port", str(port), "--database-url",
            database_url, "--catalog-id", str(catalog_id), "--shape", shape]


def real_floor_command(port: int, catalog_file: Path, recommender: str) -> list[str]:
    return [sys.executable, "-m", "bench.floor_server", "--port", str(port), "--catalog-file",
            str(catalog_file), "--recommender", recommender]


def real_naive_command(port: int, database_url: str, catalog_id: int,
                       recommender: str) -> list[str]:
    return [*naive_command(port, database_url, catalog_id, "pinpoint"), "--recommender",
            recommender]


def independent_attributes(recommender: str) -> str:
    """A recommender's attributes as the independent peers take them (`Name=field[:currency]`)."""
    return ",".join(f"{name}={field}" + (f":{form}" if form else "")
                    for name, field, form in RECOMMENDERS[recommender])


def independent_floor_command(port: int, catalog_file: Path, recommender: str) -> list[str]:
    return [sys.executable, "-m", "bench.independent.floor", "--port", str(port), "--catalog",
            str(catalog_file), "--attributes", independent_attributes(recommender)]


def independent_naive_command(port: int, database_url: str, catalog_id: int,
                              recommender: str) -> list[str]:
    return [sys.executable, "-m", "bench.independent.naive", "--port", str(port),
            "--database-url", database_url, "--catalog-id", str(catalog_id), "--attributes",
            independent_attributes(recommender)]


def scrape_metric(base_url: str, name: str) -> float | None:
    """The sum of a metric's samples (over labels) in the service's GET /metrics; None when the
    service does not expose it."""
    try:
        # http://127.0.0.1, a server we started
        with urllib.request.urlopen(f"{base_url}/metrics", timeout=5) as answer:  # noqa: S310
            text = answer.read().decode(errors="replace")
    except OSError:
        return None
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{")]
    return sum(values) if values else None


LAG_MAX = "enricher_event_loop_lag_max_seconds"
LAG_BUCKET = "enricher_event_loop_lag_seconds_bucket"


@dataclass(frozen=True)
class Lag:
    """What /metrics says of the event loop's lag: the largest seen since start (None when the
    service does not expose it) and the histogram's cumulative bucket counts by upper bound."""

    max_ms: float | None
    buckets: dict[float, float]

    def highest_bucket_since(self, before: Lag | None) -> float | None:
        """The upper bound (ms) of the highest bucket that gained samples since `before`: the
        largest lag of that interval was at most this (None: no histogram, or no samples)."""
        if not self.buckets:
            return None
        earlier = before.buckets if before else {}
        gained = [le for le, count in self.buckets.items() if count > earlier.get(le, 0.0)]
        if not gained:
            return None
        # Cumulative buckets: the lowest bound whose count grew as much as +Inf's holds them all.
        total = self.buckets.get(math.inf, 0.0) - earlier.get(math.inf, 0.0)
        for le in sorted(self.buckets):
            if self.buckets[le] - earlier.get(le, 0.0) >= total:
                return le * 1000
        return None


def parse_lag(text: str) -> Lag:
    """The lag gauge and histogram buckets out of Prometheus' text format (summed over labels)."""
    max_ms = None
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(LAG_MAX):
            value = float(line.rsplit(" ", 1)[1]) * 1000
            max_ms = value if max_ms is None else max(max_ms, value)
        elif line.startswith(LAG_BUCKET):
            labels, _, value = line.rpartition(" ")
            bound = labels.split('le="', 1)[1].split('"', 1)[0]
            le = math.inf if bound == "+Inf" else float(bound)
            buckets[le] = buckets.get(le, 0.0) + float(value)
    return Lag(max_ms, buckets)


def scrape_lag(base_url: str) -> Lag:
    """The service's event-loop lag from GET /metrics (unauthenticated); empty when it is not
    there (a service without the monitor)."""
    try:
        # http://127.0.0.1, a server we started
        with urllib.request.urlopen(f"{base_url}/metrics", timeout=5) as answer:  # noqa: S310
            return parse_lag(answer.read().decode(errors="replace"))
    except (OSError, ValueError, IndexError):
        return Lag(None, {})


EVENT_LOOP = "ENRICHER_EVENT_LOOP"


def service_command(port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "service", "serve", "--port", str(port), "--workers", str(workers)]


def peer_env(extra: dict[str, str]) -> dict[str, str]:
    """A peer's (floor, naive) environment: ours, on the event loop the service gets from
    `extra` (the stdlib's unless ENRICHER_EVENT_LOOP is there), so both run on the same one."""
    env = {k: v for k, v in os.environ.items() if k != EVENT_LOOP}
    return {**env, **({EVENT_LOOP: extra[EVENT_LOOP]} if EVENT_LOOP in extra else {})}


def service_env(database_url: str, extra: dict[str, str]) -> dict[str, str]:
    """The service's environment: ours without ENRICHER_* settings, plus the scenario's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRICHER_")}
    return {**env, "DATABASE_URL": database_url, **extra}
