"""The shim scenario: N warm Lambda containers (processes) run the real shim against a server.

Each invoker is a separate `python -I -S` process, as each Lambda container is a separate
interpreter with its one keep-alive connection; the shim module is loaded from service/ unchanged.
Latency is per invocation (the handler call: serialise, POST, read, parse), as Lambda bills it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from bench.wrk_runner import LoadResult

SHIM_DIR = Path(__file__).resolve().parents[1] / "service"
INVOKER = Path(__file__).with_name("shim_invoker.py")


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def run_shim(*, url: str, api_key: str, events: Path, invokers: int, seconds: float,
             say, rate: float | None = None,
             invoker: Path = INVOKER) -> tuple[LoadResult, list[str]]:
    """Run `invokers` concurrent containers for `seconds`, back to back or, with `rate`, at that
    many invocations a second in all; also returns a few error messages. `invoker` may be another
    script with the same arguments (bench/paced_invoker.py: plain HTTP, no shim, no retry)."""
    pacing = [] if rate is None else [str(invokers / rate)]
    env = {**os.environ, "ENRICHER_URL": url, "ENRICHER_API_KEY": api_key}
    processes: list[subprocess.Popen] = []
    try:
        for index in range(invokers):
            processes.append(subprocess.Popen(
                [sys.executable, "-I", "-S", str(invoker), str(SHIM_DIR), str(events), str(index),
                 str(invokers), str(seconds), *pacing],
                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                start_new_session=True,
            ))
        for process in processes:
            if process.stdout.readline().strip() != "ready":
                raise RuntimeError("a shim invoker failed to start")
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        latencies: list[float] = []
        errors: list[str] = []
        elapsed = 0.0
        for process in processes:
            out, _ = process.communicate(timeout=seconds + 60)
            report = json.loads(out)
            latencies += report["latencies_ms"]
            errors += report["errors"]
            elapsed = max(elapsed, report["elapsed_s"])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
    latencies.sort()
    timeouts = sum("timed out" in e for e in errors)
    if errors:
        say(f"shim: {len(errors)} invocations raised, e.g. {errors[0]}")
    return LoadResult(requests=len(latencies), seconds=elapsed,
                      p50_ms=percentile(latencies, 0.50), p99_ms=percentile(latencies, 0.99),
                      errors=len(errors) - timeouts, timeouts=timeouts), errors[:3]
