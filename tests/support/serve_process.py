"""`catalog-enricher serve` in a process of its own, as an operator runs it, and load against it.

`ServeProcess` starts `python -m service serve --demo ...`, reads the demo's curl line for the
port and key, keeps the JSON log lines in a file and finds its worker processes. `Load` sends
transform requests from a few threads, each on a fresh connection, until stopped (or a bound),
and records when each started and ended, how it ended, and which worker answered it: a worker
is told by the first 16 hex digits of `X-Request-Id`, a random prefix each process draws.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

TRANSFORM = "/v1/recommenders/demo-movies/transform"
EVENT = json.dumps({"Endpoints": {"e": {"RecommendationItems": ["1815", "2009"]}}}).encode()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ENRICHER_", "PROMETHEUS_")) and k != "DATABASE_URL"}
    return {**env, **extra}


def worker_of(request_id: str | None) -> str | None:
    return request_id[:16] if request_id else None


def wall_time(entry: dict) -> float:
    return datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()


class ServeProcess:
    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in close()
            mode="w+", prefix="ce-serve-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--demo", "--port", "0", *args],
            env=env, text=True, stdout=subprocess.PIPE, stderr=self.log_file,
        )
        curl = self._read_until("curl ")
        self.port = int(curl.split("http://127.0.0.1:")[1].split("/")[0])
        self.key = curl.split("Bearer ")[1].split("'")[0]
        self.curl = curl

    def _read_until(self, prefix: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"serve exited before printing {prefix!r}:\n{self.tail()}")
            if line.startswith(prefix):
                return line.strip()
        raise AssertionError(f"no line starting with {prefix!r}")

    # --- what it logged ---------------------------------------------------------------------

    def logs(self) -> list[dict]:
        entries = []
        for line in Path(self.log_file.name).read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
        return entries

    def tail(self, lines: int = 40) -> str:
        return "\n".join(Path(self.log_file.name).read_text(errors="replace").splitlines()[-lines:])

    def logged(self, message: str, **fields: Any) -> list[dict]:
        return [e for e in self.logs() if e.get("msg") == message
                and all(e.get(k) == v for k, v in fields.items())]

    def wait_for_log(self, message: str, timeout: float = 30, **fields: Any) -> dict:
        return wait_until(lambda: next(iter(self.logged(message, **fields)), None), timeout,
                          f"log line {message!r} {fields}", self.tail)

    # --- its processes ----------------------------------------------------------------------

    def workers(self) -> set[int]:
        try:
            return {child.pid for child in psutil.Process(self.process.pid).children()
                    if child.status() != psutil.STATUS_ZOMBIE}
        except psutil.NoSuchProcess:
            return set()

    def serving_workers(self) -> set[int]:
        """Workers alive that have logged that they serve."""
        serving = {e["pid"] for e in self.logged("worker serving")}
        return self.workers() & serving

    def wait_serving(self, count: int, timeout: float = 60) -> set[int]:
        return wait_until(lambda: (lambda s: s if len(s) >= count else None)(
            self.serving_workers()), timeout, f"{count} serving workers", self.tail)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in self.workers():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.kill()
            self.process.wait()
            raise

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.process.poll() is None:
                self.stop()
        self.process.stdout.close()
        self.log_file.close()
        os.unlink(self.log_file.name)


def wait_until(check: Callable[[], Any], timeout: float, what: str,
               context: Callable[[], str] = lambda: "") -> Any:
    """Poll `check` until it returns something truthy (which is returned); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s\n{context()}")
        time.sleep(0.02)  # paces the poll


def request(port: int, method: str, path: str, *, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 20) -> tuple[int, dict, bytes]:
    """One request on a fresh connection: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def transform(port: int, key: str) -> tuple[int, dict, bytes]:
    return request(port, "POST", TRANSFORM, body=EVENT,
                   headers={"Authorization": f"Bearer {key}",
                            "Content-Type": "application/json"})


@dataclasses.dataclass
class Outcome:
    started: float  # time.time()
    ended: float
    status: int | None  # None: the request failed (connection refused, reset, timeout)
    worker: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


class Load:
    """Transform requests from `threads` threads, each on a fresh connection, until `stop`, or
    `limit` requests were sent, or `max_seconds` passed (so a failing test cannot leave it on)."""

    def __init__(self, port: int, key: str, threads: int = 4, max_seconds: float = 120,
                 limit: int | None = None) -> None:
        self.port = port
        self._left = limit
        self.key = key
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        return self.outcomes

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            with self._lock:
                if self._left is not None:
                    if self._left == 0:
                        return
                    self._left -= 1
            started = time.time()
            try:
                status, headers, _ = transform(self.port, self.key)
                outcome = Outcome(started, time.time(), status,
                                  worker_of(headers.get("X-Request-Id")))
            except (OSError, http.client.HTTPException) as exc:
                outcome = Outcome(started, time.time(), None, None, f"{type(exc).__name__}: {exc}")
            with self._lock:
                self.outcomes.append(outcome)

    def count(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def answered_by(self, since: float = 0.0) -> set[str]:
        with self._lock:
            return {o.worker for o in self.outcomes if o.ok and o.started >= since and o.worker}
