"""`sync` against a fake Braze in another process: users/s with no rate limit, and, with
`--rate`, the most requests that started in any one-second window, as the fake saw them.

The sender is driven directly (service/adapters/sync/sender.py) on already-enriched lines of
`--items` items each, so this measures the platform side: reading lines, building the attribute
values and digests, batching, pacing, sending and acknowledging (checkpoint included). Enrichment
of raw lines is the batch enrichment's, measured by its own bench. Not part of the test suite:

    .venv/bin/python bench/sync_bench.py --users 100000
    .venv/bin/python bench/sync_bench.py --users 30000 --rate 50
    .venv/bin/python bench/sync_bench.py --users 100000 --limit 40   # 429s forced
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.adapters.batch_run import file_parts
from service.adapters.sync.braze import Braze
from service.adapters.sync.checkpoint import Checkpoint
from service.adapters.sync.command import batch_gc
from service.adapters.sync.dead_letter import DeadLetter
from service.adapters.sync.sender import Sync, SyncOptions
from service.adapters.sync.sync_input import read_users

KEY = "bench-key"


async def serve_fake(report: Path, limit: int) -> None:
    """The fake Braze (`limit` requests a second, 0: none), until SIGTERM; then its request
    times, writes and 429s go to `report`."""
    from tests.support.fake_braze import FakeBraze

    # The fake keeps every profile (a million objects at 100,000 users): its collector set as the
    # sync's, so the instrument is not what the figure measures.
    with batch_gc():
        fake = await FakeBraze(KEY, limit=limit or None).start()
        await _serve_until_sigterm(fake, report)


async def _serve_until_sigterm(fake, report: Path) -> None:
    print(fake.port, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    report.write_bytes(orjson.dumps({  # noqa: ASYNC240 - once, as the fake stops
        "times": fake.request_times, "users": len(fake.profiles),
        "twice": len(fake.users_written_twice()), "applied": fake.applied,
        "throttled": fake.statuses[429]}))
    await fake.stop()


def write_input(path: Path, users: int, items: int) -> None:
    item = [{"id": f"p{n}", "Title": f"Product number {n}", "Price": f"${n}.99",
             "Image": f"https://cdn.example.com/p{n}.jpg?w=600"} for n in range(items)]
    with path.open("wb") as out:
        for n in range(users):
            out.write(orjson.dumps({"key": f"user-{n:08d}", "send": True,
                                    "items": item[n % 7:] + item[:n % 7],
                                    "Recommendations": {}, "missing": []}) + b"\n")


def most_in_one_second(times: list[float]) -> int:
    times = sorted(times)
    best, first = 0, 0
    for last, now in enumerate(times):
        while now - times[first] >= 1.0:
            first += 1
        best = max(best, last - first + 1)
    return best


async def run(args: argparse.Namespace, folder: Path) -> dict:
    import aiohttp

    report = folder / "fake.json"
    fake = subprocess.Popen(  # noqa: ASYNC220 - started once, before the measured part
        [sys.executable, __file__, "--serve-fake", str(report), str(args.limit)],
        stdout=subprocess.PIPE, text=True)
    try:
        port = int(fake.stdout.readline())  # type: ignore[union-attr]
        source = folder / "in.ndjson"
        write_input(source, args.users, args.items)
        options = SyncOptions(max_attribute_bytes=100_000, rate=args.rate or None,
                              concurrency=args.concurrency)
        checkpoint = Checkpoint(folder / "checkpoint", {"bench": 1}, resume=False)
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        cpu = time.process_time()
        async with aiohttp.ClientSession(connector=connector) as session:
            sync = Sync(Braze(f"http://127.0.0.1:{port}", KEY, "recommended_products"), options,
                        checkpoint, DeadLetter(None, lambda t: t, append=False),
                        session=session, updated_at="2026-01-01T00:00:00Z")
            with batch_gc():  # as the command runs it
                summary = await sync.run(read_users(file_parts(str(source), (0, 1)), None))
        cpu = time.process_time() - cpu
        checkpoint.close()
    finally:
        fake.send_signal(signal.SIGTERM)
        fake.wait(timeout=30)
    seen = orjson.loads(report.read_bytes())
    result = {**summary.as_json(), "users_per_second": round(summary.users / summary.seconds),
              "sync_cpu_seconds": round(cpu, 2), "fake_users": seen["users"],
              "fake_users_written_twice": seen["twice"], "fake_429s": seen["throttled"]}
    if args.rate:
        result["most_requests_in_one_second"] = most_in_one_second(seen["times"])
        result["rate"] = args.rate
    return result


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-fake":
        asyncio.run(serve_fake(Path(sys.argv[2]), int(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=25, help="items per user (default 25)")
    parser.add_argument("--rate", type=float, default=0, help="requests/s (default 0: no limit)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--limit", type=int, default=0,
                        help="the fake's own limit, requests a second (default 0: none); "
                        "below --rate (or with none) it answers 429s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(asyncio.run(run(args, Path(folder))), indent=2))
    print(f"load average: {os.getloadavg()}", file=sys.stderr)


if __name__ == "__main__":
    main()
