"""The soak (bench/soak, docs/soak.md): its checker, shown able to fail on each promise, and a short
run of the whole deployment under one fault of each kind, which must break no promise."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench.soak import checker
from bench.soak.faults import KINDS, schedule
from tests.support.owned_servers import pg_available

MIB = 1024 * 1024


def attempt(client: str, op: int, start: float, status: int | None, **extra: Any) -> dict:
    return {"kind": "attempt", "client": client, "op": op, "attempt": extra.pop("attempt", 1),
            "start": start, "end": extra.pop("end", start + 0.01), "status": status,
            "error": None if status else "timeout", "content_type": "application/json",
            "degraded": None, **extra}


def op(client: str, number: int, start: float, ok: bool) -> dict:
    return {"kind": "op", "client": client, "op": number, "start": start, "end": start + 0.02,
            "ok": ok, "tries": 1, "degraded": None}


def write(version: int, item: str, start: float, status: int | None = 200,
          available: bool = True) -> dict:
    return {"kind": "write", "client": "writer", "version": version, "item": item,
            "available": available, "start": start, "end": start + 0.01, "status": status}


def resources(label: str, time: float, rss: int = 100 * MIB, fds: int = 40,
              postgres: int = 10, redis: int = 5) -> dict:
    return {"kind": "resources", "label": label, "time": time, "postgres": postgres,
            "redis": redis, "processes": [{"instance": "i0", "role": "worker", "pid": 7,
                                           "rss": rss, "fds": fds, "started": 0}]}


def violations(records: list[dict], number: int) -> list[dict]:
    promises = checker.check(records, worker_memory_bound=200 * MIB,
                             supervisor_memory_bound=120 * MIB)
    return promises[number - 1].violations


class TestCheckerFinds:
    """Each promise's check on a history that keeps it (no violation) and on one that breaks it
    (the violation, with the history that broke it)."""

    def test_an_unanswered_render(self):
        kept = [attempt("braze", 1, 0, None), attempt("braze", 1, 0.1, 200, attempt=2),
                op("braze", 1, 0, True)]
        assert violations(kept, 1) == []
        broken = [attempt("braze", 1, 0, 503, attempt=n) for n in range(1, 6)]
        found = violations([*broken, op("braze", 1, 0, False)], 1)
        assert len(found) == 1 and len(found[0]["attempts"]) == 5

    def test_a_200_past_brazes_timeout_is_no_answer(self):
        slow = [attempt("braze", 1, 0, 200, end=2.5), op("braze", 1, 0, True)]
        assert len(violations(slow, 1)) == 1

    def test_a_stale_price_after_an_acknowledged_write(self):
        history = [write(5, "a", 10.0)]
        fresh = attempt("braze", 1, 11.5, 200, shown={"a": 5})
        within_the_bound = attempt("braze", 2, 10.5, 200, shown={"a": 0})
        degraded = attempt("braze", 3, 11.5, 200, shown={"a": 0}, degraded="postgres-timeout")
        assert violations([*history, fresh, within_the_bound, degraded], 2) == []
        stale = attempt("braze", 4, 11.5, 200, shown={"a": 0})
        found = violations([*history, stale], 2)
        assert len(found) == 1 and found[0]["item"] == "a" and found[0]["shown"] == 0

    def test_an_item_shown_on_sale_after_it_was_taken_off(self):
        history = [write(4, "a", 10.0, available=False)]
        assert violations([*history, attempt("braze", 1, 12, 200, shown={"a": "missing"})], 2) == []
        assert len(violations([*history, attempt("braze", 1, 12, 200, shown={"a": 0})], 2)) == 1

    def test_a_cold_item_missing_without_a_flag(self):
        """An item never written, shown missing in a 200 not flagged degraded: it exists (at
        version 0, on sale), so the answer hid it silently."""
        found = violations([attempt("braze", 1, 5, 200, shown={"cold": "missing"})], 2)
        assert len(found) == 1

    def test_a_lost_write(self):
        history = [write(3, "a", 1.0), write(9, "a", 2.0, status=None)]  # 9: never acknowledged
        assert violations([*history, {"kind": "final", "items": {"a": [3, True]}}], 3) == []
        assert violations([*history, {"kind": "final", "items": {"a": [9, True]}}], 3) == []
        found = violations([*history, {"kind": "final", "items": {"a": [0, True]}}], 3)
        assert len(found) == 1 and found[0]["last_acknowledged"] == 3

    def test_a_run_without_its_final_state(self):
        assert len(violations([write(1, "a", 1.0)], 3)) == 1

    def test_a_revoked_key_still_served(self):
        revoke = {"kind": "revoke", "prefix": "ce_x", "start": 10.0, "end": 10.05, "status": 204}
        early = attempt("probe", 0, 10.5, 200, key="ce_x")
        refused = attempt("probe", 0, 11.5, 401, key="ce_x")
        assert violations([revoke, early, refused], 4) == []
        late = attempt("probe", 0, 11.5, 200, key="ce_x")
        found = violations([revoke, late], 4)
        assert len(found) == 1 and found[0]["seconds_after"] == pytest.approx(1.45)

    def test_a_500_and_an_undocumented_error(self):
        problem = attempt("braze", 1, 0, 503, content_type="application/problem+json",
                          problem_type="urn:catalog-enricher:problem:unavailable")
        assert violations([problem], 5) == []
        a_500 = attempt("braze", 1, 0, 500, content_type="application/problem+json",
                        problem_type="urn:catalog-enricher:problem:internal")
        html = attempt("braze", 2, 0, 503, content_type="text/html", problem_type=None)
        unknown = attempt("braze", 3, 0, 409, content_type="application/problem+json",
                          problem_type="urn:somebody-else:problem:conflict")
        shim = attempt("shim", 4, 0, None, error="EnricherError: ... HTTP 500: boom")
        assert len(violations([a_500, html, unknown, shim], 5)) == 4

    def test_memory_past_the_bound_and_a_leak(self):
        kept = [resources("start", 0), resources("during", 5), resources("end", 10, fds=50)]
        assert violations(kept, 6) == []
        big = [resources("start", 0), resources("during", 5, rss=300 * MIB), resources("end", 10)]
        assert len(violations(big, 6)) == 1
        leak = [resources("start", 0), resources("end", 10, fds=200, postgres=40)]
        found = violations(leak, 6)  # one worker: 2 pools of 6 and a LISTEN, + 10 spare
        assert {v.get("connections") for v in found} == {None, "postgres"} and len(found) == 2


def test_the_checkers_command_fails_on_a_broken_history(tmp_path: Path):
    """`python -m bench.soak.checker HISTORY` (docs/soak.md): exit status 1 and the violation
    in its report when a promise is broken; 0 when none is."""
    import subprocess
    import sys

    import orjson

    def run(records: list[dict]) -> subprocess.CompletedProcess:
        history = tmp_path / "history.jsonl"
        history.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
        return subprocess.run([sys.executable, "-m", "bench.soak.checker", str(history)],
                              capture_output=True, text=True, timeout=60, check=False,
                              cwd=Path(__file__).resolve().parents[1])

    kept = [write(1, "a", 1.0), {"kind": "final", "items": {"a": [1, True]}},
            resources("start", 0), resources("end", 10)]
    assert run(kept).returncode == 0
    lost = run([*kept[:1], {"kind": "final", "items": {"a": [0, True]}}, *kept[2:]])
    assert lost.returncode == 1
    assert "3. no acknowledged write is lost" in lost.stdout
    assert "1 violations" in lost.stdout


def test_the_schedule_has_every_kind_before_any_twice():
    kinds = schedule(seed=5, count=len(KINDS) + 3)
    assert set(kinds[:len(KINDS)]) == set(KINDS)
    assert kinds == schedule(seed=5, count=len(KINDS) + 3)  # the seed decides it all


# --- the short soak ----------------------------------------------------------------------------

SHORT_FAULTS = ("worker_kill", "pg_failover", "redis_failover", "pg_stall", "pg_cut",
                "instance_kill", "rolling_restart")


@pytest.mark.slow
@pytest.mark.timing
@pytest.mark.timeout(150)
@pytest.mark.skipif(not pg_available(), reason="needs the Postgres binaries (initdb, pg_ctl)")
@pytest.mark.skipif(shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists(),
                    reason="HAProxy is not installed (Debian: apt-get install haproxy)")
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_short_soak_keeps_every_promise(tmp_path: Path):
    """Two instances behind HAProxy, a primary and its standby, Redis with sentinels, every
    client, and one fault of each kind, a few seconds apart: no promise broken (about a minute:
    the faults take about 30 s of the 36 s run, the deployment's start and stop the rest)."""
    from bench.soak.runner import SoakConfig, soak

    config = SoakConfig(minutes=0.6, seed=34, instances=2, items=2000, hot=100,
                        kinds=SHORT_FAULTS, braze_concurrency=4, pace=0.05, out=tmp_path)
    summary, promises = asyncio.run(soak(config, log=print))
    assert [f["fault"] for f in summary["faults"]] == list(SHORT_FAULTS)
    assert all(f["error"] is None for f in summary["faults"]), summary["faults"]
    assert summary["clients"]["braze"]["requests"] > 100
    broken = {p.number: p.violations[:3] for p in promises if p.violations}
    assert broken == {}, checker.render(summary)
