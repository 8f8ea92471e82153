"""The fairness scenario: tenant A floods the service while tenant B sends its usual load.

One service process, two tenants with their own catalogs, recommenders and keys (B's catalog holds
the hot items). B's usual load is `B_CLIENTS` paced clients (bench/paced_invoker.py: plain HTTP on
a keep-alive connection, no retry, every non-2xx an error) sending warm events at `B_RATE` a
second in all. It is measured twice in one server's life: alone, then while wrk floods as A
(64 connections back to back, no rate limit set). wrk runs at `nice 10` so that on two shared
cores the flood takes the server's time, not B's clients' (their latency is what is measured).
The scenario's rows: B alone, B under the flood, and the flood itself; the summary gives B's p99
under the flood over its p99 alone (the target is at most 1.5) and B's errors.
"""

from __future__ import annotations

import concurrent.futures
import statistics
from dataclasses import dataclass
from pathlib import Path

from bench.shim_load import run_shim
from bench.wrk_runner import LoadResult, run_wrk

B_CLIENTS = 8
B_RATE = 100.0  # events a second, in all
PACED_INVOKER = Path(__file__).with_name("paced_invoker.py")


@dataclass(frozen=True)
class FairnessResult:
    alone: LoadResult
    flooded: LoadResult
    flood: LoadResult
    b_errors: list[str]

    @property
    def p99_ratio(self) -> float:
        return self.flooded.p99_ms / self.alone.p99_ms if self.alone.p99_ms else float("inf")


def summary(name: str, results: list[FairnessResult]) -> str:
    """The scenario's line: over all its runs, the medians of B's p99 alone and flooded and of
    A's rate, and the median and range of each run's ratio (not the last run's alone)."""
    ratios = sorted(r.p99_ratio for r in results)
    errors = sum(r.alone.errors + r.flooded.errors for r in results)
    return (f"{name}: tenant B ({B_CLIENTS} clients, {B_RATE:.0f} events/s in all), "
            f"{len(results)} run(s), medians: p99 "
            f"{statistics.median(r.alone.p99_ms for r in results):.1f} ms alone, "
            f"{statistics.median(r.flooded.p99_ms for r in results):.1f} ms while tenant A floods "
            f"({statistics.median(r.flood.per_second for r in results):,.0f} events/s); ratio "
            f"x{statistics.median(ratios):.2f} (runs x{ratios[0]:.2f}-x{ratios[-1]:.2f}; "
            f"target <= 1.5); B errors: {errors}")


def run_b(url: str, key: str, events: Path, seconds: float, say) -> tuple[LoadResult, list[str]]:
    return run_shim(url=url, api_key=key, events=events, invokers=B_CLIENTS, seconds=seconds,
                    say=say, rate=B_RATE, invoker=PACED_INVOKER)


def measure(*, wrk: str, base_url: str, path: str, events: Path, a_key: str, b_key: str,
            threads: int, connections: int, seconds: int, warmup: int, timeout_s: int,
            workdir: Path, say) -> FairnessResult:
    """B alone, then B under A's flood, on a server already started and checked."""
    url = base_url + path
    flood = {"wrk": wrk, "url": base_url, "events": events, "path": path, "api_key": a_key,
             "threads": threads, "connections": connections, "timeout_s": timeout_s}
    run_wrk(**flood, seconds=warmup)  # A's and B's keys, recommenders and items cached
    run_b(url, b_key, events, warmup, say)
    say(f"fairness: B alone for {seconds} s")
    alone, _ = run_b(url, b_key, events, seconds, say)
    say(f"fairness: A floods while B runs for {seconds} s")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # The flood starts first and ends last, so B's whole measurement is under it.
        flooding = pool.submit(run_wrk, **{**flood, "wrk": _nice(wrk, workdir)},
                               seconds=seconds + 2)
        _wait_until_running(flooding)
        flooded, errors = run_b(url, b_key, events, seconds, say)
        result = flooding.result()
    return FairnessResult(alone, flooded, result, errors)


def _nice(wrk: str, workdir: Path) -> str:
    """wrk at nice 10, through a one-line wrapper in the run's folder (run_wrk runs a path)."""
    wrapper = workdir / "wrk-nice"
    wrapper.write_text(f'#!/bin/sh\nexec nice -n 10 "{wrk}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def _wait_until_running(future: concurrent.futures.Future, seconds: float = 1.0) -> None:
    """Give wrk a second to open its connections and fill the server's loop."""
    try:
        future.result(timeout=seconds)
    except concurrent.futures.TimeoutError:
        return
    raise RuntimeError("the flood ended before B's measurement began")
