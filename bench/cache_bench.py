"""Cache bench: transform events/s with a warm cache against the cache off, the batching window,
and L1 memory per 100k cached items.

    python bench/cache_bench.py [--items 20000] [--seconds 5] [--concurrency 32]

Needs a Postgres where it may create a throwaway database (BENCH_DATABASE_URL, default the
machine's postgresql://postgres@127.0.0.1:5432/postgres); REDIS_URL adds an "L2 only" run. The
app and the load generator share one process and one core, so absolute numbers are below what a
dedicated server does (see DESIGN.md's floor); the ratios between runs are what this measures.
Every run uses the same events: 50 endpoints x 5 item IDs drawn from the catalog, as Pinpoint
sends them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import os
import random
import statistics
import sys
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp.test_utils import TestServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.database import migrated_tenant
from service.resolution.local_cache import LocalCache
from service.runtime.settings import Settings
from service.storage import items as item_store
from service.storage.db import connect, init_connection
from service.web.app import create_app

SERVER_URL = os.environ.get("BENCH_DATABASE_URL",
                            "postgresql://postgres@127.0.0.1:5432/postgres")
ENDPOINTS, PER_ENDPOINT = 50, 5

LOAD_ITEMS = """
INSERT INTO items (catalog_id, id, title, genre, price_amount, price_currency, image_url, url,
                   attributes)
SELECT $1, 'item-' || g, 'A title for item number ' || g, 'Genre ' || (g % 20),
       (g % 100) + 0.99, 'USD', 'https://cdn.example.com/images/' || g || '.jpg',
       'https://shop.example.com/items/' || g, jsonb_build_object('style', 'style ' || (g % 7))
FROM generate_series(1, $2) g
"""


def database_url(name: str) -> str:
    base, _, _ = SERVER_URL.rpartition("/")
    return f"{base}/{name}"


async def create_database() -> str:
    name = f"ce_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(SERVER_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')  # a name made here, never input
    finally:
        await conn.close()
    return name


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(SERVER_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def prepare(url: str, items: int) -> str:
    """Migrate, load a catalog of `items` and a recommender; return an admin key."""
    conn = await connect(Settings(database_url=url))
    try:
        tenant, key = await migrated_tenant(conn, "bench", ["admin"])
        catalog = await conn.fetchval(
            "INSERT INTO catalogs (tenant_id, name) VALUES ($1, 'bench') RETURNING id", tenant.id)
        await conn.execute(LOAD_ITEMS, catalog, items)
        await conn.execute("ANALYZE items")
    finally:
        await conn.close()
    return key


def make_events(items: int, count: int, rng: random.Random) -> list[bytes]:
    import orjson

    return [orjson.dumps({"Endpoints": {
        f"ep{n}": {"ChannelType": "EMAIL", "Address": f"user{n}@example.com",
                   "RecommendationItems": [f"item-{rng.randint(1, items)}"
                                           for _ in range(PER_ENDPOINT)]}
        for n in range(ENDPOINTS)}}) for _ in range(count)]


async def keep_busy(step: Callable[[int], Awaitable[None]], seconds: float,
                    concurrency: int) -> tuple[int, float]:
    """Run `step(0)`, `step(1)`, ... from `concurrency` workers for `seconds`: (count, elapsed)."""
    stop = time.perf_counter() + seconds
    done = 0

    async def worker(offset: int) -> None:
        nonlocal done
        index = offset
        while time.perf_counter() < stop:
            await step(index)
            done += 1
            index += concurrency

    began = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done, time.perf_counter() - began


@dataclasses.dataclass
class RunResult:
    name: str
    events_per_second: float
    p50_ms: float
    p99_ms: float
    queries: float


async def drive(settings: Settings, key: str, events: list[bytes], seconds: float,
                concurrency: int, warm: bool, name: str) -> RunResult:
    app = create_app(settings)
    server = TestServer(app)
    await server.start_server()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    url = str(server.make_url("/v1/recommenders/bench/transform"))
    latencies: list[float] = []
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency)
        ) as session:
            async with session.put(str(server.make_url("/v1/recommenders/bench")), headers=headers,
                                   json={"catalog": "bench", "attributes": [
                                       {"name": "Title", "field": "title"},
                                       # No currency format: babel's formatting would
                                       # dominate the time and hide the cache.
                                       {"name": "Price", "field": "price"},
                                       {"name": "Image", "field": "image_url"}]}) as response:
                assert response.status in (200, 201), await response.text()
            if warm:  # every event once, so each ID is cached
                for body in events:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
            queries_before = _queries(app)

            async def send(index: int) -> None:
                started = time.perf_counter()
                async with session.post(url, data=events[index % len(events)],
                                        headers=headers) as response:
                    await response.read()
                    assert response.status == 200, response.status
                latencies.append(time.perf_counter() - started)

            done, elapsed = await keep_busy(send, seconds, concurrency)
            queries = _queries(app) - queries_before
    finally:
        await server.close()
    latencies.sort()
    return RunResult(name, done / elapsed, statistics.median(latencies) * 1000,
                     latencies[int(len(latencies) * 0.99)] * 1000, queries / max(done, 1))


async def drive_resolver(settings: Settings, events: list[bytes], seconds: float,
                         concurrency: int, warm: bool) -> float:
    """Resolutions per second of each event's IDs, without HTTP or rendering: the cache alone."""
    import orjson

    from service.web.app_keys import POOL, RESOLVER

    batches = [[i for e in orjson.loads(body)["Endpoints"].values()
                for i in e["RecommendationItems"]] for body in events]
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        resolver = server.app[RESOLVER]
        catalog = await server.app[POOL].fetchval("SELECT id FROM catalogs WHERE name = 'bench'")
        if warm:
            for ids in batches:
                await resolver.resolve(catalog, ids)
        async def resolve(index: int) -> None:
            await resolver.resolve(catalog, batches[index % len(batches)])

        done, elapsed = await keep_busy(resolve, seconds, concurrency)
        return done / elapsed
    finally:
        await server.close()


def _queries(app) -> float:
    from service.web.app_keys import METRICS

    registry = app[METRICS].registry
    return sum(registry.get_sample_value("enricher_db_queries_total", {"outcome": o}) or 0
               for o in ("ok", "error"))


async def l1_memory(url: str, count: int) -> tuple[float, float]:
    """Bytes per L1 entry: item records as the resolver keeps them, and as decoded from L2."""
    conn = await asyncpg.connect(url)
    try:
        await init_connection(conn)
        catalog = await conn.fetchval("SELECT id FROM catalogs WHERE name = 'bench'")
        have = await conn.fetchval("SELECT count(*) FROM items WHERE catalog_id = $1", catalog)
        if have < count:
            await conn.execute(LOAD_ITEMS.replace("FROM generate_series(1, $2) g",
                                                  "FROM generate_series($3::int, $2) g"),
                               catalog, count, have + 1)
        ids = [f"item-{i}" for i in range(1, count + 1)]
        results = []
        for as_dict in (False, True):
            gc.collect()
            tracemalloc.start()
            rows = await item_store.fetch_items(conn, catalog, ids)
            cache = LocalCache(max_entries=count, ttl=300, negative_ttl=30, stale_seconds=3600)
            values = {row["id"]: (dict(row) if as_dict else row) for row in rows}
            del rows
            cache.store(catalog, values, cache.generation())
            del values
            gc.collect()
            used, _ = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            results.append(used / len(cache))
            del cache
        return results[0], results[1]
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--memory-items", type=int, default=100_000)
    parser.add_argument("--windows", default="0,0.5,1,2",
                        help="batching windows (ms) to compare with the cache off")
    args = parser.parse_args()

    name = await create_database()
    url = database_url(name)
    try:
        key = await prepare(url, args.items)
        events = make_events(args.items, args.events, random.Random(7))
        base = Settings(database_url=url, db_pool_min=2, db_pool_max=10, access_log=False,
                        log_level="WARNING")
        off = dataclasses.replace(base, cache_max_entries=0)
        runs: list[RunResult] = []
        print(f"catalog of {args.items} items; events of {ENDPOINTS} endpoints x {PER_ENDPOINT} "
              f"IDs; {args.concurrency} concurrent; {args.seconds:.0f} s per run")
        for window in (float(w) for w in args.windows.split(",")):
            runs.append(await drive(dataclasses.replace(off, batch_window_ms=window), key, events,
                                    args.seconds, args.concurrency, False,
                                    f"cache off, window {window:g} ms"))
            report(runs[-1])
        cold = runs[0]
        warm = await drive(base, key, events, args.seconds, args.concurrency, True, "warm L1")
        report(warm)
        redis_url = os.environ.get("REDIS_URL")
        if redis_url:
            l2 = dataclasses.replace(off, redis_url=redis_url,
                                     redis_prefix=f"ce-bench-{uuid.uuid4().hex[:8]}")
            report(await drive(l2, key, events, args.seconds, args.concurrency, True,
                               "warm L2 only (L1 off)"))
        print(f"\nover HTTP, warm / cold (cache off, window 0): "
              f"{warm.events_per_second / cold.events_per_second:.1f}x events/s")
        cold_only = await drive_resolver(off, events, args.seconds, args.concurrency, False)
        warm_only = await drive_resolver(base, events, args.seconds, args.concurrency, True)
        print(f"resolver alone (no HTTP, no rendering): cache off {cold_only:.0f} events/s, "
              f"warm L1 {warm_only:.0f} events/s: {warm_only / cold_only:.1f}x")
        record, decoded = await l1_memory(url, args.memory_items)
        print(f"L1 memory: {record * 100_000 / 2**20:.1f} MiB per 100k items as asyncpg records "
              f"({record:.0f} B each), {decoded * 100_000 / 2**20:.1f} MiB as dicts from L2 "
              f"({decoded:.0f} B each)")
    finally:
        await drop_database(name)


def report(run: RunResult) -> None:
    print(f"{run.name:32} {run.events_per_second:8.0f} events/s   p50 {run.p50_ms:6.1f} ms   "
          f"p99 {run.p99_ms:6.1f} ms   {run.queries:.2f} queries/event")


if __name__ == "__main__":
    asyncio.run(main())
