"""One soak run: start the deployment, run the clients, inject the faults on their schedule, stop
the clients, read the catalog's final state, stop everything, check the history."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from bench.soak import checker
from bench.soak.clients import Clients
from bench.soak.deployment import (
    CATALOG,
    POOL_MAX,
    RECOMMENDER,
    SUPERVISOR_MEMORY_BOUND,
    WORKER_MEMORY_BOUND,
    Deployment,
    start_deployment,
)
from bench.soak.faults import Faults, schedule
from bench.soak.history import History, read_history

# What `--break` can sabotage (docs/soak.md), and the promise each breaks.
BREAKS = {
    "retries": "Braze and Pinpoint give up after one try (promise 1, under faults)",
    "invalidation": "every LISTEN connection is silenced as it opens, and each instance has a "
                    "Redis prefix of its own, so no revocation published on Redis reaches another "
                    "(promises 2 and 4)",
    "lose-writes": "every tenth write is logged as acknowledged but never sent (promise 3)",
    "lb-checks": "HAProxy without health checks or retries (promises 1 and 5, under faults)",
    "memory-bound": "the checker holds each process to 1 MiB (promise 6)",
}
WARMUP = 3.0  # seconds of load before the first fault and the start sample
SETTLE = 3.0  # seconds between the clients' stop and the end sample


def scratch_folder() -> Path:
    """A folder the `postgres` user reaches too (it runs the clusters when we are root)."""
    folder = Path(tempfile.mkdtemp(prefix="ce-soak-"))
    folder.chmod(0o755)
    return folder


@dataclass
class SoakConfig:
    minutes: float
    seed: int
    instances: int = 3
    items: int = 200_000
    hot: int = 200
    fault_every: float = 20.0
    kinds: tuple[str, ...] | None = None  # None: the seeded schedule over every kind
    braze_concurrency: int = 6
    pace: float = 0.05
    out: Path | None = None
    breaks: frozenset[str] = frozenset()  # sabotage, to see the checker catch it: BREAKS


async def put_recommender(d: Deployment) -> None:
    body = {"catalog": CATALOG,
            "attributes": [{"name": "Title", "field": "title"},
                           {"name": "Price", "field": "price"}],
            "personalize": {"campaign_arn": "arn:aws:personalize:us-east-1:123456789012:"
                                            "campaign/soak",
                            "num_results": 5, "cache_seconds": 60,
                            "fallback_ids": d.hot_ids[:5]}}
    async with aiohttp.ClientSession() as session, session.put(
            f"{d.haproxy.url}/v1/recommenders/{RECOMMENDER}", data=orjson.dumps(body),
            headers={"Authorization": f"Bearer {d.admin_key}",
                     "Content-Type": "application/json"}) as answer:
        if answer.status not in (200, 201):
            raise RuntimeError(f"PUT recommender: {answer.status} {await answer.text()}")


async def silence_listeners(d: Deployment, stop: asyncio.Event) -> None:
    """Sabotage: stall every LISTEN connection soon after it opens, so no notification arrives
    (a listener replaces a silent connection within twice its ping interval; the new one is
    silenced too)."""
    while not stop.is_set():
        d.databases.to_primary.stall_listening()
        d.databases.to_standby.stall_listening()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)  # paces the sabotage


async def final_state(d: Deployment) -> dict[str, list[Any]]:
    """Each hot item's version (its price) and availability, read on the primary."""
    conn = await asyncpg.connect(d.databases.primary.url, timeout=10)
    try:
        rows = await conn.fetch("SELECT id, price_amount, available FROM items WHERE id = ANY($1)",
                                d.hot_ids)
    finally:
        await conn.close()
    return {r["id"]: [int(Decimal(r["price_amount"])), r["available"]] for r in rows}


async def soak(config: SoakConfig, log=print) -> tuple[dict[str, Any], list[checker.Promise]]:
    out = config.out or Path(tempfile.mkdtemp(prefix="ce-soak-out-"))
    out.mkdir(parents=True, exist_ok=True)
    history = History(out / "history.jsonl")
    folder = scratch_folder()
    duration = config.minutes * 60
    kinds = list(config.kinds) if config.kinds else schedule(
        config.seed, max(1, int((duration - WARMUP) // config.fault_every)))
    try:
        deployment = await start_deployment(folder, instances=config.instances,
                                            items=config.items, hot=config.hot, log=log,
                                            lb_checks="lb-checks" not in config.breaks,
                                            redis_apart="invalidation" in config.breaks)
        try:
            await put_recommender(deployment)
            started = time.time()
            history.log("meta", start=started, minutes=config.minutes, seed=config.seed,
                        instances=config.instances, items=config.items,
                        fault_every=config.fault_every, faults=kinds,
                        breaks=sorted(config.breaks))
            log(f"soak: running {config.minutes:g} min, faults: {', '.join(kinds)}")
            clients = Clients(deployment, history, config.seed,
                              braze_concurrency=config.braze_concurrency, pace=config.pace,
                              breaks=config.breaks)
            running = asyncio.ensure_future(clients.run())
            silencer = (asyncio.ensure_future(silence_listeners(deployment, clients.stop))
                        if "invalidation" in config.breaks else None)
            try:
                await asyncio.sleep(WARMUP)  # the load warms the caches and fills the pools
                await clients.sample("start")
                injector = Faults(deployment, history, config.seed)
                every = (duration - WARMUP) / len(kinds) if config.kinds else config.fault_every
                try:
                    for n, kind in enumerate(kinds):
                        due = started + WARMUP + n * every
                        await asyncio.sleep(max(0.0, due - time.time()))  # the schedule's pace
                        log(f"soak: +{time.time() - started:6.1f} s {kind}")
                        await injector.inject(kind)
                    await asyncio.sleep(max(0.0, started + duration - time.time()))  # the end
                except asyncio.CancelledError:
                    # Cut short (SIGTERM, SIGINT): stop, and check what was seen so far.
                    asyncio.current_task().uncancel()
                    log("soak: stopped early; checking what was seen")
            finally:
                clients.stop.set()
                await running
                if silencer is not None:
                    await silencer
            await asyncio.sleep(SETTLE)  # idle: what is still open now is kept, not in use
            await clients.sample("end")
            history.log("final", items=await final_state(deployment))
        finally:
            history.close()
            await deployment.stop()
    finally:
        if os.environ.get("SOAK_KEEP"):
            log(f"soak: deployment folder kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    records = read_history(out / "history.jsonl")
    memory = 1024 * 1024 if "memory-bound" in config.breaks else None
    promises = checker.check(records, worker_memory_bound=memory or WORKER_MEMORY_BOUND,
                             supervisor_memory_bound=memory or SUPERVISOR_MEMORY_BOUND,
                             pool_max=POOL_MAX)
    summary = checker.report(records, promises)
    (out / "report.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2,
                                                   default=str))
    (out / "report.txt").write_text(checker.render(summary) + "\n")
    with contextlib.suppress(Exception):
        log(f"soak: history and report in {out}")
    return summary, promises
