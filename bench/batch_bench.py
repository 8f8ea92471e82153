"""The batch scenarios: `catalog-enricher enrich-batch` over a generated batch inference output
(USER_PERSONALIZATION lines of 25 IDs with scores), lines/s next to the floor script
(bench/batch_floor.py: orjson, dict lookups, orjson, one process) on the same file, and the
command's peak resident memory (its own process and its workers, the largest).

The service's time is the command's whole run as its summary says (pool, recommender and the
first queries included), its CPU time that of its processes from start to end (imports included);
the floor's are its loop's alone (its catalog dict is built first, off the clock), so the ratios
err against the service. On a loaded machine compare the CPU µs per line, not the lines/s.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from bench.catalog import Zipf, item_id
from bench.report import Row

if TYPE_CHECKING:
    from bench.__main__ import Bench
    from bench.scenarios import Scenario

IDS_PER_LINE = 25  # Personalize's default numResults


def write_batch(path: Path, rng: random.Random, lines: int, draw) -> Path:
    with path.open("wb") as out:
        for n in range(lines):
            ids = [draw() for _ in range(IDS_PER_LINE)]
            out.write(orjson.dumps({
                "input": {"userId": f"user-{n}"},
                "output": {"recommendedItems": ids,
                           "scores": [round(1 / (k + 2), 6) for k in range(IDS_PER_LINE)]},
                "error": None}) + b"\n")
    return path


def _run(command: list[str], env: dict[str, str], folder: Path
         ) -> tuple[bytes, bytes, float, float]:
    """(stdout, stderr, peak RSS in MiB, CPU seconds) of a command run to its end: wait4 gives
    the largest resident set of the process and of the descendants it waited for (its workers),
    and their CPU time, start-up included."""
    out_path, err_path = folder / "batch-run.out", folder / "batch-run.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{command[:4]} exited {process.returncode}: "
                           f"{err_path.read_bytes()[-2000:].decode(errors='replace')}")
    return (out_path.read_bytes(), err_path.read_bytes(), usage.ru_maxrss / 1024,
            usage.ru_utime + usage.ru_stime)


def measure(bench: Bench, scenario: Scenario) -> list[Row]:
    args, db = bench.args, bench.db
    rng = random.Random(args.seed + 31)
    if scenario.events == "batch-hot":
        hot = bench.hot
        draw = lambda: hot[rng.randrange(len(hot))]  # noqa: E731
    else:
        zipf = Zipf(rng, args.toy_items, 1.1)
        draw = lambda: item_id(zipf())  # noqa: E731
    source = bench.workdir / f"{scenario.name}.out"
    started = time.monotonic()
    write_batch(source, rng, args.batch_lines, draw)
    size = source.stat().st_size
    print(f"bench: {scenario.name}: {args.batch_lines:,} lines ({size / 2**20:.0f} MiB) written "
          f"in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    rows = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRICHER_")}
    if "floor" in scenario.peers:
        out, _, rss, _ = _run([sys.executable, "-m", "bench.batch_floor", "--items", str(args.toy_items),
                            str(source), str(bench.workdir / "batch-floor.ndjson")], env, bench.workdir)
        result = orjson.loads(out)
        rows.append(_row(scenario, "floor", 1, result["lines"], result["seconds"], rss,
                         result["cpu_seconds"]))
    env.update(DATABASE_URL=db.url, **scenario.service_env,
               **args.env_by_scenario[scenario.name])
    _, err, rss, cpu = _run([sys.executable, "-m", "service", "enrich-batch", "--tenant", "bench",
                        "--recommender", db.recommender, "--workers", str(scenario.processes),
                        "--no-progress", str(source), str(bench.workdir / "batch.ndjson")], env,
                        bench.workdir)
    summary = orjson.loads(err.strip().splitlines()[-1])
    row = _row(scenario, "service", scenario.processes, summary["lines"], summary["seconds"], rss,
               cpu)
    row.sql_per_event = summary["queries"] / max(summary["lines"], 1)
    rows.append(row)
    for row in rows:
        print(f"bench: {scenario.name}: {row.server} {row.per_second:,.0f} lines/s, "
              f"{row.cpu_us_per_event:.0f} CPU µs/line, peak RSS {row.peak_rss_mb:.0f} MiB",
              file=sys.stderr, flush=True)
    return rows


def _row(scenario: Scenario, server: str, processes: int, lines: int, seconds: float,
         rss_mb: float, cpu_seconds: float) -> Row:
    return Row(scenario=scenario.title, server=server, connections=0, processes=processes,
               per_second=lines / seconds, p50_ms=0.0, p99_ms=0.0, errors=0, timeouts=0,
               requests=lines, peak_rss_mb=rss_mb, threads=0,
               cpu_us_per_event=cpu_seconds / max(lines, 1) * 1e6)
