"""`catalog-enricher serve` as a new user runs it: embedded Postgres, the demo's curl line,
graceful shutdown, and several workers on one port."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timing, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m service serve ...` in its own process, with its stdout read line by line."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        # Logs go to a file: a pipe nobody reads could fill and block the server.
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in wait()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", *args], env=env, text=True,
            stdout=subprocess.PIPE, stderr=self.log,
        )

    def logs(self) -> str:
        self.log.seek(0)
        return self.log.read()[-3000:]

    def read_until(self, prefix: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"server exited: {self.logs()}")
            if line.startswith(prefix):
                return line.strip()
        raise AssertionError(f"no line starting with {prefix!r}")

    def wait_for_log(self, text: str, timeout: float = 30) -> str:
        """The first log line holding `text`, once the server has written it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.log.seek(0)
            for line in self.log.read().splitlines():
                if text in line:
                    return line
            time.sleep(0.02)  # paces the polling of another process's log file
        raise AssertionError(f"no log line with {text!r} within {timeout} s: {self.logs()}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.wait()

    def wait(self) -> int:
        try:
            return self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.process.stdout.close()
            self.log.close()


def run_curl(line: str) -> dict:
    result = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=30,
                            check=True)
    return json.loads(result.stdout)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ENRICHER_") and k != "DATABASE_URL"}
    return {**env, **extra}


def test_demo_on_embedded_postgres(embedded_data_dir: Path):
    """No DATABASE_URL: the demo runs on an embedded Postgres, and its data outlives a restart."""
    env = clean_env(ENRICHER_DATA_DIR=str(embedded_data_dir))
    server = Server("--demo", "--port", "0", env=env)
    try:
        first_curl = server.read_until("curl ")
        answer = run_curl(first_curl)
    finally:
        assert server.stop() == 0, server.logs()
    assert answer["endpoint-1"]["Recommendations"]["Title"] == ["Fleabag", "Late Night",
                                                                 "Catastrophe"]
    assert answer["endpoint-2"]["Recommendations"]["Title"] == ["Wer ist Hanna?", "Hunters"]
    assert not (embedded_data_dir / "pgdata" / "postmaster.pid").exists()  # stopped cleanly

    server = Server("--demo", "--port", "0", env=env)
    try:
        second_curl = server.read_until("curl ")
        port = second_curl.split("http://127.0.0.1:")[1].split("/")[0]
        # The first run's key still works against the restarted server: the data was kept.
        replayed = first_curl.replace(first_curl.split("http://127.0.0.1:")[1].split("/")[0], port)
        assert run_curl(replayed) == answer
    finally:
        assert server.stop() == 0, server.logs()


def test_in_flight_request_finishes_on_sigterm(database_url: str):
    server = Server("--demo", "--port", "0", env=clean_env(DATABASE_URL=database_url))
    try:
        curl = server.read_until("curl ")
        port = int(curl.split("http://127.0.0.1:")[1].split("/")[0])
        key = curl.split("Bearer ")[1].split("'")[0]
        body = json.dumps({"Endpoints": {"e": {"RecommendationItems": ["1815"]}}}).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            # A first request answered on this connection: the server has accepted it (a
            # connection still in the kernel's backlog at SIGTERM is the balancer's to retry).
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            first = b""
            while b"\r\n\r\n" not in first:
                first += sock.recv(65536)
            head, _, rest = first.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), first
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            while len(rest) < length:  # the whole answer, so what follows is the POST's
                rest += sock.recv(65536)
            sock.sendall(
                b"POST /v1/recommenders/demo-movies/transform HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer " + key.encode() + b"\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10]
            )
            server.process.send_signal(signal.SIGTERM)
            # The server is draining, and this request's body is not all sent yet.
            server.wait_for_log("shutting down: finishing requests in flight")
            sock.sendall(body[10:])
            response = b""
            while b"Fleabag" not in response:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                response += chunk
        assert response.startswith(b"HTTP/1.1 200"), response[:200]
        assert b"Fleabag" in response
    finally:
        assert server.wait() == 0


def test_two_workers_share_one_port(database_url: str):
    port = free_port()
    server = Server("--demo", "--port", str(port), "--workers", "2",
                    env=clean_env(DATABASE_URL=database_url))
    try:
        curl = server.read_until("curl ")  # announced once a worker answers on the port
        answers = [run_curl(curl) for _ in range(4)]
        assert all("endpoint-1" in answer for answer in answers)
    finally:
        assert server.stop() == 0, server.logs()


@pytest.mark.parametrize(("choice", "workers", "expected"), [
    (None, "1", "asyncio"), ("uvloop", "1", "uvloop"),
    (None, "2", "asyncio"), ("uvloop", "2", "uvloop"),
])
def test_event_loop_is_the_one_chosen(database_url: str, choice, workers, expected):
    """ENRICHER_EVENT_LOOP picks the loop of the single process and of every worker (the stdlib's
    by default: docs/performance.md, "The event loop"), and requests are answered on it."""
    env = clean_env(DATABASE_URL=database_url, **({"ENRICHER_EVENT_LOOP": choice} if choice else {}))
    server = Server("--demo", "--port", "0", "--workers", workers, env=env)
    try:
        assert "endpoint-1" in run_curl(server.read_until("curl "))
        message = "listening" if workers == "1" else "worker serving"
        deadline = time.monotonic() + 30
        while True:
            started = [json.loads(line) for line in server.logs().splitlines()
                       if line.startswith("{") and f'"msg":"{message}"' in line]
            if len(started) >= int(workers) or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # paces the poll of the log
        assert [line["event_loop"] for line in started] == [expected] * int(workers)
    finally:
        assert server.stop() == 0, server.logs()


def test_port_in_use_is_a_clear_message(database_url: str):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "service", "serve", "--port", str(port)],
            env=clean_env(DATABASE_URL=database_url), capture_output=True, text=True,
            timeout=60, check=False,
        )
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--port" in result.stderr and "Traceback" not in result.stderr


def test_without_migrating_on_start_it_is_ready_once_migrated(pg_server_url: str):
    """ENRICHER_MIGRATE_ON_START=false (the Kubernetes pods, whose migration Job migrates): serve
    starts on a database without the schema, is alive but not ready, and turns ready once
    `catalog-enricher migrate` has run."""
    from tests.support.databases import create_database, drop_database, run, with_database

    name = run(create_database(pg_server_url))
    url = with_database(pg_server_url, name)
    port = free_port()
    server = Server("--port", str(port),
                    env=clean_env(DATABASE_URL=url, ENRICHER_MIGRATE_ON_START="false"))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                    break
            except OSError:
                assert time.monotonic() < deadline, server.logs()
                time.sleep(0.1)  # paces the poll of the port
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert not_ready.value.code == 503
        assert json.loads(not_ready.value.read())["field"] == "migrations"

        migrate = subprocess.run([sys.executable, "-m", "service", "migrate"],
                                 env=clean_env(DATABASE_URL=url), capture_output=True, text=True,
                                 timeout=60, check=False)
        assert migrate.returncode == 0, migrate.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as ready:
            assert json.loads(ready.read())["status"] == "ready"
        server.log.seek(0)
        assert "migrations pending" in server.log.read()
    finally:
        assert server.stop() == 0, server.logs()
        run(drop_database(pg_server_url, name))
