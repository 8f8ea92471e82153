"""Real `catalog-enricher` processes for tests: `serve` on a free port, and CLI commands.

Each server writes its logs to a file of its own (a pipe nobody reads could fill and block it),
kept for the test to read (`logs()`), e.g. to grep a whole run for secrets. Servers are stopped
with SIGTERM, then killed if they do not stop within their grace.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import requests

from tests.support.owned_servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def service_env(database_url: str, **extra: str) -> dict[str, str]:
    """The machine's environment without our own settings, plus DATABASE_URL and `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ENRICHER_") and k not in ("DATABASE_URL", "REDIS_URL")}
    return {**env, "DATABASE_URL": database_url, **extra}


def run_cli(env: Mapping[str, str], *args: str, log: Path | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    """`python -m service ARGS`, its output captured; its log lines (stderr: stdout is where a
    new key is printed, on purpose) are appended to `log` when given."""
    done = subprocess.run([sys.executable, "-m", "service", *args], env=dict(env), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if log is not None:
        with log.open("a", encoding="utf-8") as out:
            out.write(f"$ catalog-enricher {' '.join(args)}\n{done.stderr}")
    return done


class ServiceProcess:
    """`python -m service serve --port P` with its log in `log_path`."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        with log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port",
                 str(self.port)], env=dict(env), cwd=ROOT, stdout=log_file,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited ({self.process.returncode}):\n"
                                     f"{self.logs()[-3000:]}")
            try:
                if requests.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.05)  # still starting: nothing to wait on but the port
        raise AssertionError(f"the server did not answer within {timeout} s")

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, grace: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
