"""The checker: reads a soak's history (bench/soak/history.py) and counts each promise's
violations, keeping the histories that broke it; and the report.

It trusts nothing the service says about itself: an answer is judged by what the clients saw and
when, against what the writer had been told was committed.

    python -m bench.soak.checker HISTORY.jsonl     # check a history again (or a broken one)
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.soak.history import read_history
from service import errors

# Promise 2's bound: a change is seen everywhere "within milliseconds" (docs/caching.md), so the
# issue's floor of 1 s is the bound.
STALENESS_BOUND = 1.0
REVOCATION_BOUND = 1.0  # "refused by every process within a second" (docs/keys-and-limits.md)
SEND_TIME_BUDGET = 2.0  # Braze's timeout
FD_MARGIN = 16  # open files a long-lived process may gain between the two samples
CONNECTION_MARGIN = 10  # Postgres connections past the bound: ours, psql's, a worker's spare


def documented_problem_types() -> set[str]:
    """Every problem type the service names (docs/http-api.md: errors.py's classes), but the
    500's."""
    found = set()
    pending = [errors.ProblemError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.slug != "internal":
            found.add(f"urn:catalog-enricher:problem:{cls.slug}")
    return found


@dataclass
class Promise:
    number: int
    statement: str
    checked: int = 0
    violations: list[dict[str, Any]] = field(default_factory=list)

    def violate(self, **history: Any) -> None:
        self.violations.append(history)


def check(records: list[dict[str, Any]], *, worker_memory_bound: int,
          supervisor_memory_bound: int, pool_max: int = 6) -> list[Promise]:
    return [
        answered(records),
        fresh(records),
        durable(records),
        revoked(records),
        no_500(records),
        bounded(records, worker_memory_bound, supervisor_memory_bound, pool_max),
    ]


def answered(records) -> Promise:
    promise = Promise(1, f"every send-time request is answered 200 within {SEND_TIME_BUDGET:g} s "
                         "after at most the platform's retries (degraded answers count apart)")
    attempts = defaultdict(list)
    for r in records:
        if r["kind"] == "attempt" and r["client"] in ("braze", "shim"):
            attempts[(r["client"], r["op"])].append(r)
    for r in records:
        if r["kind"] == "op" and r["client"] in ("braze", "shim"):
            promise.checked += 1
            tries = attempts[(r["client"], r["op"])]
            good = [a for a in tries if a["status"] == 200 and (
                r["client"] != "braze" or a["end"] - a["start"] <= SEND_TIME_BUDGET + 0.1)]
            if not good:
                promise.violate(op=r, attempts=tries)
    return promise


def _writes_by_item(records) -> dict[str, list[dict[str, Any]]]:
    writes = defaultdict(list)
    for r in records:
        if r["kind"] == "write":
            writes[r["item"]].append(r)
    for each in writes.values():
        each.sort(key=lambda w: w["version"])
    return writes


def fresh(records, bound: float = STALENESS_BOUND) -> Promise:
    promise = Promise(2, f"no answer shows a price or availability older than an acknowledged "
                         f"write more than {bound:g} s after it, unless flagged X-Degraded")
    writes = _writes_by_item(records)
    for r in records:
        if r["kind"] != "attempt" or r.get("status") != 200 or not r.get("shown"):
            continue
        if r.get("degraded"):
            continue
        for item, shown in r["shown"].items():
            promise.checked += 1
            item_writes = writes.get(item, [])
            acked = [w for w in item_writes if w["status"] == 200 and w["end"] + bound < r["start"]]
            floor = acked[-1] if acked else None
            floor_version = floor["version"] if floor else 0
            # What may be shown: the floor, or any write after it that had started by the answer.
            allowed = {floor_version: floor["available"] if floor else True}
            for w in item_writes:
                if w["version"] > floor_version and w["start"] < r["end"]:
                    allowed[w["version"]] = w["available"]
            # Shown as missing: some allowed version is off sale; shown with a price: that
            # version is allowed, and on sale.
            ok = (not all(allowed.values())) if shown == "missing" else allowed.get(shown) is True
            if not ok:
                promise.violate(answer=r, item=item, shown=shown, acknowledged=floor,
                                allowed=sorted(allowed))
    return promise


def durable(records) -> Promise:
    promise = Promise(3, "no acknowledged write is lost: after the run the catalog equals the "
                         "writer's log")
    final = next((r for r in records if r["kind"] == "final"), None)
    if final is None:
        promise.violate(reason="no final state in the history (the run did not finish)")
        return promise
    for item, item_writes in _writes_by_item(records).items():
        promise.checked += 1
        acked = [w for w in item_writes if w["status"] == 200]
        last = acked[-1]["version"] if acked else 0
        # A write never acknowledged (a timeout, a reset) may or may not have committed.
        allowed = {last} | {w["version"] for w in item_writes
                            if w["version"] > last and w["status"] != 200}
        version, available = final["items"].get(item, [None, None])
        expected = {w["version"]: w["available"] for w in item_writes}
        if version not in allowed or (version in expected and expected[version] != available):
            promise.violate(item=item, catalog=[version, available], last_acknowledged=last,
                            writes=item_writes[-3:])
    return promise


def revoked(records, bound: float = REVOCATION_BOUND) -> Promise:
    promise = Promise(4, f"a revoked key is refused everywhere within {bound:g} s of its "
                         "revocation")
    revocations = {r["prefix"]: r for r in records
                   if r["kind"] == "revoke" and r.get("status") == 204}
    for r in records:
        if r["kind"] == "attempt" and r["client"] == "probe" and r["key"] in revocations:
            revocation = revocations[r["key"]]
            if r["start"] <= revocation["end"] + bound or r["status"] is None:
                continue
            promise.checked += 1
            if r["status"] == 200:
                promise.violate(probe=r, revocation=revocation,
                                seconds_after=round(r["start"] - revocation["end"], 3))
    return promise


def no_500(records) -> Promise:
    promise = Promise(5, "no 500 at any point; every other non-2xx answer is a problem+json the "
                         "docs name")
    known = documented_problem_types()
    for r in records:
        if r["kind"] in ("attempt", "write", "revoke"):
            status = r.get("status")
            if r.get("client") == "shim":
                promise.checked += 1
                if r.get("error") and "HTTP 500" in r["error"]:
                    promise.violate(answer=r)
                continue
            if status is None:
                continue
            promise.checked += 1
            if status == 500 or (status >= 300 and status != 304 and (
                    not (r.get("content_type") or "").startswith("application/problem+json")
                    or r.get("problem_type") not in known)):
                promise.violate(answer=r)
    return promise


def bounded(records, worker_bound: int, supervisor_bound: int, pool_max: int = 6) -> Promise:
    promise = Promise(6, "every process stays within its documented memory bound; no file "
                         "descriptor or connection leak")
    samples = [r for r in records if r["kind"] == "resources"]
    for sample in samples:
        for p in sample["processes"]:
            promise.checked += 1
            limit = worker_bound if p["role"] == "worker" else supervisor_bound
            if p["rss"] > limit:
                promise.violate(process=p, bound=limit, at=sample["time"])
    # A leak grows: what is open at the end (idle, after the clients stopped) is compared with
    # the most that was open in the run's first half, under load and faults alike.
    end = next((s for s in reversed(samples) if s["label"] == "end"), None)
    if end is None or len(samples) < 2:
        promise.violate(reason="no end resource sample")
        return promise
    half = samples[0]["time"] + (end["time"] - samples[0]["time"]) / 2
    early = [s for s in samples if s["time"] <= half and s is not end]
    most_fds: dict[int, int] = {}
    for sample in early:
        for p in sample["processes"]:
            most_fds[p["pid"]] = max(most_fds.get(p["pid"], 0), p["fds"])
    for p in end["processes"]:
        if p["pid"] in most_fds:
            promise.checked += 1
            if p["fds"] > most_fds[p["pid"]] + FD_MARGIN:
                promise.violate(process=p, most_fds_in_first_half=most_fds[p["pid"]])
    # Postgres: within the documented bound, each live worker's two pools (the primary's and the
    # replica's, which is the primary too while no standby answers) and its LISTEN connection.
    # Redis has no documented bound per process (a worker's L2 pool grows to its busiest
    # moment and keeps its connections): its count is reported, and a worker that keeps opening
    # them shows in its open files above.
    promise.checked += 1
    workers = sum(1 for p in end["processes"] if p["role"] == "worker")
    postgres_bound = workers * (2 * pool_max + 1) + CONNECTION_MARGIN
    if end["postgres"] is None:
        promise.violate(reason="postgres connections not sampled at the end")
    elif end["postgres"] > postgres_bound:
        promise.violate(connections="postgres", end=end["postgres"], bound=postgres_bound)
    return promise


# --- the report ------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def answer_kind(r: dict[str, Any]) -> str:
    if r.get("status") is None:
        return f"no answer ({r.get('error') or 'failed'})"[:60]
    if r["status"] == 200 and r.get("degraded"):
        return f"200 degraded ({r['degraded']})"
    return str(r["status"])


def report(records: list[dict[str, Any]], promises: list[Promise]) -> dict[str, Any]:
    meta = next((r for r in records if r["kind"] == "meta"), {})
    origin = meta.get("start", min((r.get("start", 1e18) for r in records), default=0))
    attempts = [r for r in records if r["kind"] in ("attempt", "write", "revoke")]
    clients: dict[str, Any] = {}
    for name in sorted({r["client"] for r in attempts}):
        mine = [r for r in attempts if r["client"] == name]
        seconds = sorted(r["end"] - r["start"] for r in mine)
        ops = [r for r in records if r["kind"] == "op" and r["client"] == name]
        clients[name] = {
            "requests": len(mine), "operations": len(ops) or None,
            "answers": dict(Counter(answer_kind(r) for r in mine).most_common()),
            "p50_ms": _ms(percentile(seconds, 50)), "p99_ms": _ms(percentile(seconds, 99)),
            "max_ms": _ms(seconds[-1] if seconds else None),
        }
        if ops:
            op_seconds = sorted(r["end"] - r["start"] for r in ops)
            clients[name]["operation_p99_ms"] = _ms(percentile(op_seconds, 99))
            clients[name]["degraded_share"] = round(
                sum(1 for r in ops if r.get("degraded")) / len(ops), 4)
    faults = []
    for f in (r for r in records if r["kind"] == "fault"):
        around = [r for r in attempts if r["client"] == "braze"
                  and f["start"] - 0.5 <= r["start"] <= f["end"] + 5]
        faults.append({
            "at_s": round(f["start"] - origin, 1), "fault": f["name"],
            "took_s": round(f["end"] - f["start"], 1), "detail": f["detail"],
            "error": f.get("error"),
            "braze_around": dict(Counter(answer_kind(r) for r in around).most_common()),
        })
    return {
        "run": {k: v for k, v in meta.items() if k != "kind"},
        "clients": clients,
        "faults": faults,
        "promises": [{"promise": p.number, "statement": p.statement, "checked": p.checked,
                      "violations": len(p.violations), "examples": p.violations[:3]}
                     for p in promises],
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def render(summary: dict[str, Any]) -> str:
    lines = [f"run: {summary['run']}", "", "clients:"]
    for name, c in summary["clients"].items():
        extra = (f", ops {c['operations']}, op p99 {c.get('operation_p99_ms')} ms, degraded "
                 f"{c.get('degraded_share', 0):.2%}") if c["operations"] else ""
        lines.append(f"  {name}: {c['requests']} requests, p50 {c['p50_ms']} ms, p99 "
                     f"{c['p99_ms']} ms, max {c['max_ms']} ms{extra}")
        lines.append(f"    answers: {c['answers']}")
    lines += ["", "faults:"]
    for f in summary["faults"]:
        lines.append(f"  +{f['at_s']:>7.1f} s  {f['fault']:<16} {f['took_s']:>5.1f} s  "
                     f"{f['error'] or f['detail']}")
        lines.append(f"             braze around it: {f['braze_around']}")
    lines += ["", "promises:"]
    for p in summary["promises"]:
        lines.append(f"  {p['promise']}. {p['statement']}: {p['violations']} violations "
                     f"of {p['checked']} checked")
        for example in p["examples"]:
            lines.append(f"       {str(example)[:600]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench.soak.deployment import POOL_MAX, SUPERVISOR_MEMORY_BOUND, WORKER_MEMORY_BOUND

    parser = argparse.ArgumentParser(prog="python -m bench.soak.checker")
    parser.add_argument("history", type=Path)
    args = parser.parse_args(argv)
    records = read_history(args.history)
    promises = check(records, worker_memory_bound=WORKER_MEMORY_BOUND,
                     supervisor_memory_bound=SUPERVISOR_MEMORY_BOUND, pool_max=POOL_MAX)
    print(render(report(records, promises)))
    return 1 if any(p.violations for p in promises) else 0


if __name__ == "__main__":
    sys.exit(main())
