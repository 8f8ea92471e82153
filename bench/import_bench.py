"""Bulk import against a raw COPY: items/s of `POST …/items:import` for a generated NDJSON file,
next to a plain `COPY` of the same rows into `items` on the same database, and the service's memory.

The import validates every line, stages it with binary COPY, upserts and counts; the raw COPY does
none of that, so it is the floor the import is measured against. The service runs as its own
process (`catalog-enricher serve`); its resident memory is read from /proc while it imports, and
its peak (VmHWM) after. Not part of the test suite: run it by hand.

    .venv/bin/python bench/import_bench.py --items 1000000

It creates (and drops) a database of its own on the server of TEST_DATABASE_URL (default: the local
Postgres on 127.0.0.1:5432), and writes its files in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.database import migrated_tenant  # noqa: E402
from service.runtime.settings import Settings  # noqa: E402
from service.storage.db import connect  # noqa: E402
from tests.support.databases import create_database, drop_database, with_database  # noqa: E402

GENRES = ("Comedy", "Drama", "Horror", "Documentary", "Animation", "Thriller")
RAW_COLUMNS = ("catalog_id", "id", "title", "genre", "price_amount", "price_currency",
               "image_url", "url", "available", "attributes", "locales")


def generated_item(n: int) -> dict:
    return {
        "id": f"item-{n:08d}",
        "title": f"Generated product number {n}",
        "genre": GENRES[n % len(GENRES)],
        "price": {"amount": f"{n % 500}.{n % 100:02d}", "currency": "USD"},
        "image_url": f"https://images.example.com/products/{n:08d}.jpg",
        "url": f"https://shop.example.com/p/{n:08d}",
        "available": n % 7 != 0,
        "attributes": {"style": f"style-{n % 40}", "stock": n % 90},
    }


def write_files(folder: Path, count: int) -> tuple[Path, Path]:
    """The NDJSON for the import, and the same rows as CSV for the raw COPY (catalog id filled
    in at COPY time)."""
    ndjson_path = folder / "items.ndjson"
    csv_path = folder / "items.csv"
    with ndjson_path.open("wb") as ndjson_file, csv_path.open("w", newline="") as csv_file:
        writer = csv.writer(csv_file)
        for n in range(count):
            item = generated_item(n)
            ndjson_file.write(orjson.dumps(item) + b"\n")
            writer.writerow([
                "{catalog}", item["id"], item["title"], item["genre"], item["price"]["amount"],
                item["price"]["currency"], item["image_url"], item["url"],
                "t" if item["available"] else "f", orjson.dumps(item["attributes"]).decode(),
                "{}",
            ])
    return ndjson_path, csv_path


async def prepare_database(server_url: str) -> tuple[str, str]:
    """A new migrated database with a tenant; returns its name and an admin key."""
    name = await create_database(server_url)
    url = with_database(server_url, name)
    conn = await connect(Settings(database_url=url))
    try:
        _, key = await migrated_tenant(conn, "bench", ["admin"])
    finally:
        await conn.close()
    return name, key


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def wait_healthy(session: aiohttp.ClientSession, base: str) -> None:
    for _ in range(600):
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{base}/healthz") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.05)
    raise RuntimeError("the server did not start")


async def timed_import(session: aiohttp.ClientSession, base: str, headers: dict, catalog: str,
                       path: Path, pid: int) -> tuple[dict, float, int]:
    """Import the file; returns the summary, the seconds, and the largest RSS seen meanwhile."""
    largest = 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal largest
        while not done.is_set():
            largest = max(largest, memory_kib(pid, "VmRSS"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.1)

    sampler = asyncio.ensure_future(sample())
    started = time.perf_counter()
    with path.open("rb") as body:
        async with session.post(f"{base}/v1/catalogs/{catalog}/items:import", data=body,
                                headers={**headers, "Content-Type": "application/x-ndjson"},
                                timeout=aiohttp.ClientTimeout(total=3600)) as response:
            summary = await response.json()
            if response.status != 200:
                raise RuntimeError(f"import failed: {response.status} {summary}")
    seconds = time.perf_counter() - started
    done.set()
    await sampler
    return summary, seconds, largest


async def raw_copy(database_url: str, catalog_id: int, csv_path: Path) -> float:
    """COPY the same rows straight into `items` (no validation, no staging, no upsert)."""
    # Blocking file work is fine here: it happens before the timing starts.
    text = csv_path.read_text().replace("{catalog}", str(catalog_id))  # noqa: ASYNC240
    filled = csv_path.with_suffix(".filled.csv")
    filled.write_text(text)
    del text
    conn = await asyncpg.connect(database_url)
    try:
        started = time.perf_counter()
        async with conn.transaction():
            await conn.copy_to_table("items", source=str(filled), columns=RAW_COLUMNS,
                                     format="csv", timeout=3600)
        return time.perf_counter() - started
    finally:
        await conn.close()
        filled.unlink()


async def main(count: int, server_url: str) -> None:
    with tempfile.TemporaryDirectory(prefix="ce-import-bench-") as folder:
        started = time.perf_counter()
        ndjson_path, csv_path = write_files(Path(folder), count)
        size_mib = ndjson_path.stat().st_size / 2**20
        print(f"generated {count:,} items: {size_mib:,.0f} MiB of NDJSON "
              f"in {time.perf_counter() - started:.1f} s")
        name, key = await prepare_database(server_url)
        database_url = with_database(server_url, name)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENRICHER_")}
        env.update(DATABASE_URL=database_url, ENRICHER_ACCESS_LOG="false",
                   ENRICHER_LOG_LEVEL="WARNING")
        # The service under measurement, as its own process (started once, before any timing).
        server = subprocess.Popen([sys.executable, "-m", "service", "serve", "--port",  # noqa: ASYNC220
                                   str(port)], cwd=ROOT, env=env)
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {key}"}
        try:
            async with aiohttp.ClientSession() as session:
                await wait_healthy(session, base)
                for catalog in ("imported", "raw"):
                    async with session.put(f"{base}/v1/catalogs/{catalog}", json={},
                                           headers=headers) as response:
                        assert response.status == 201, await response.text()
                before = memory_kib(server.pid, "VmRSS")
                summary, seconds, largest = await timed_import(
                    session, base, headers, "imported", ndjson_path, server.pid)
                peak = memory_kib(server.pid, "VmHWM")
                again, again_seconds, again_largest = await timed_import(
                    session, base, headers, "imported", ndjson_path, server.pid)
            conn = await asyncpg.connect(database_url)
            try:
                raw_id = await conn.fetchval("SELECT id FROM catalogs WHERE name = 'raw'")
            finally:
                await conn.close()
            raw_seconds = await raw_copy(database_url, raw_id, csv_path)
        finally:
            server.terminate()
            server.wait(timeout=60)
            await drop_database(server_url, name)

    print(f"import (new catalog):   {count / seconds:>10,.0f} items/s  ({seconds:.1f} s; "
          f"inserted {summary['inserted']:,}, rejected {summary['rejected']})")
    print(f"import (same file again): {count / again_seconds:>8,.0f} items/s  "
          f"({again_seconds:.1f} s; unchanged {again['unchanged']:,})")
    print(f"raw COPY of the same rows: {count / raw_seconds:>7,.0f} items/s  ({raw_seconds:.1f} s)")
    print(f"import / raw COPY: {raw_seconds / seconds:.2f} (first import), "
          f"{raw_seconds / again_seconds:.2f} (re-import)")
    print(f"service memory: {before / 1024:.0f} MiB before the import, largest RSS seen "
          f"{max(largest, again_largest) / 1024:.0f} MiB during, peak (VmHWM) {peak / 1024:.0f} "
          f"MiB after the first import")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--server-url", default=os.environ.get(
        "TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    asyncio.run(main(args.items, args.server_url))
