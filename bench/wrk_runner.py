"""Driving a server with wrk: finding (or installing) wrk, running it, reading its result line.

wrk is Debian's `wrk` package. When it is missing and we are root on a Debian-like system, the bench
installs it with apt-get and says so; otherwise it stops and says how to install it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPLAY_SCRIPT = Path(__file__).with_name("replay.lua")
RESULT_PREFIX = "BENCH-RESULT "


class WrkMissing(RuntimeError):
    pass


def ensure_wrk(say) -> str:
    """The path of wrk, installing Debian's package first if it is missing and we may."""
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise WrkMissing("wrk is not installed; install it (Debian/Ubuntu: `apt-get install wrk`, "
                         "macOS: `brew install wrk`) and run the bench again")
    say("wrk is not installed: installing Debian's `wrk` package with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env, capture_output=True, timeout=300).returncode != 0:
        subprocess.run([apt, "update", "-q"], env=env, capture_output=True, timeout=300, check=True)
        subprocess.run(install, env=env, capture_output=True, timeout=300, check=True)
    found = shutil.which("wrk")
    if found is None:
        raise WrkMissing("apt-get installed wrk, but it is not on PATH")
    return found


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured; latencies in milliseconds."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # connect, read and write errors, and answers that were not 2xx/3xx
    timeouts: int
    sent_max: int = 0  # requests the busiest wrk thread sent (a next run's `skip`)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_wrk(wrk: str, *, url: str, events: Path, path: str, api_key: str, threads: int,
            connections: int, seconds: int, timeout_s: int, method: str = "POST",
            skip: int = 0, authorization: str | None = None) -> LoadResult:
    """Run wrk for `seconds` (wrk takes whole seconds only) and read its result line. With
    `method` GET, each line of `events` is a path to GET (`path` is then unused). Each wrk thread
    replays its own lines of `events`, past the first `skip` of them (those a warm-up's busiest
    thread sent: its `sent_max`).
    `authorization`: the header's value (default `Bearer <api_key>`)."""
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
               f"--timeout={timeout_s}s", "--latency", "-s", str(REPLAY_SCRIPT), url,
               "--", str(events), path, authorization or f"Bearer {api_key}", method,
               str(threads), str(skip)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + timeout_s + 60,
                          check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith(RESULT_PREFIX)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {done.returncode}): {done.stderr.strip()[-1000:]}"
                           f"{done.stdout.strip()[-1000:]}")
    raw = json.loads(line[len(RESULT_PREFIX):])
    return LoadResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        errors=raw["connect"] + raw["read"] + raw["write"] + raw["status"],
        timeouts=raw["timeout"],
        sent_max=raw.get("sent_max", 0),
    )
