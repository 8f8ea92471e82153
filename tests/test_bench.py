"""The bench (`python -m bench`) in miniature, so it cannot rot: it runs, measures both servers on
the same events, and leaves nothing behind, also when interrupted. Numbers are never asserted."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--items", "2000", "--toy-items", "2000", "--duration", "1", "--warmup", "1",
         "--hot-events", "20"]
# The real scenarios at their smallest: no warm-up, a 2,000-item big catalog, tiny pools.
TINY_REAL = ["--warmup", "0", "--warm-events", "8", "--cold-events", "8",
             "--content-requests", "50"]
DATASET = REPO.parent / "shared" / "datasets" / "retail-demo-store-products.yaml"
needs_dataset = pytest.mark.skipif(not DATASET.exists(),
                                   reason="the real scenarios read ../shared/datasets, absent here")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("wrk") is None,
                       reason="wrk is not installed (Debian: apt-get install wrk); the bench drives "
                              "the servers with it"),
]


def bench_command(pg_server_url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bench", *SMALL, "--database-url", pg_server_url, *extra]


def run_bench(pg_server_url: str, tmp_path: Path, *extra: str,
              timeout: int = 90) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """One bench run to its end, successful: what it printed, and its rows from --json."""
    results = tmp_path / "results.json"
    done = subprocess.run(bench_command(pg_server_url, *extra, "--json", str(results)),
                          cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, json.loads(results.read_text())["rows"]


def database_name(stderr: str) -> str:
    match = re.search(r"database (ce_bench_\w+): loading", stderr)
    assert match, stderr
    return match.group(1)


def database_exists(pg_server_url: str, name: str) -> bool:
    async def check() -> bool:
        conn = await asyncpg.connect(pg_server_url)
        try:
            return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
        finally:
            await conn.close()

    return asyncio.run(check())


class TestBenchRun:
    """A short run prints the table, with both servers measured on the same events."""

    @needs_dataset
    def test_real_and_cold_scenarios_run_and_clean_up(self, pg_server_url: str, tmp_path: Path):
        """The default scenarios but content, tiny: the real products and the big catalog imported
        through the service, every peer answered the check event as the first peer did (else the
        bench stops), every request under load with a 2xx, and the comparison table printed."""
        names = ["real-warm", "real-warm-demographic", "real-warm-price", "cold-uniform",
                 "cold-zipf"]
        done, rows = run_bench(pg_server_url, tmp_path, "--scenarios", ",".join(names),
                               *TINY_REAL)
        assert [r["server"] for r in rows] == ["floor", "service"] * 3 + ["naive", "service"] * 2
        assert all(r["requests"] > 0 and r["errors"] == 0 for r in rows), rows
        assert "imported 2,465 items into real through items:import" in done.stderr
        assert "imported 2,000 items into big through items:import" in done.stderr
        for name in names:
            assert f"| {name} |" in done.stdout
        assert "CPU µs/cold row service (peer)" in done.stdout
        naive = [r for r in rows if r["server"] == "naive"]
        assert all(r["cpu_us_per_row"] > 0 for r in naive)  # CPU per row fetched, for cold rows
        assert not database_exists(pg_server_url, database_name(done.stderr))

    @needs_dataset
    def test_content_scenario_with_independent_peers(self, pg_server_url: str, tmp_path: Path):
        """Content GETs with Basic auth: the bench's floor and naive server, each followed by its
        independently written twin, and the service, all answering alike; the table says how
        each bench peer compares with its twin."""
        done, rows = run_bench(pg_server_url, tmp_path, "--scenarios", "content", "--peers",
                               "independent", *TINY_REAL)
        assert [r["server"] for r in rows] == ["floor", "floor-indep", "naive", "naive-indep",
                                               "service"]
        assert all(r["requests"] > 0 and r["errors"] == 0 for r in rows), rows
        assert rows[0]["vs_independent"] > 0 and rows[2]["vs_independent"] > 0
        assert done.stdout.count("| content |") == 2  # against the floor, and the naive server

    def test_user_scenario_runs_against_the_fake_personalize(self, pg_server_url: str,
                                                             tmp_path: Path):
        """The user route's GETs: the service asked the bench's fake Personalize and answered
        as the floor (checked before timing), every request with a 2xx."""
        _, rows = run_bench(pg_server_url, tmp_path, "--scenarios", "user", "--users", "50",
                            timeout=120)
        assert [r["server"] for r in rows] == ["floor", "service"]
        assert all(r["requests"] > 0 and r["errors"] == 0 for r in rows), rows


    def test_connect_scenario_compares_profiles_with_endpoints(self, pg_server_url: str,
                                                               tmp_path: Path):
        """The connect scenario: the service under the warm Pinpoint events, then under
        Connect batches of the same items (every profile answered with items, checked before
        timing), and the per-recipient ratio of the two."""
        done, rows = run_bench(pg_server_url, tmp_path, "--scenarios", "connect",
                               "--connect-profiles", "20", timeout=120)
        assert [r["server"] for r in rows] == ["transform", "service"]
        assert all(r["requests"] > 0 and r["errors"] == 0 for r in rows), rows
        assert "connect route profiles/s (20-profile batches) / transform endpoints/s " \
               "(50-endpoint events)" in done.stdout

    def test_batch_scenarios_enrich_every_line(self, pg_server_url: str, tmp_path: Path):
        """enrich-batch next to the floor script on hot items, then alone with 2 workers on Zipf
        IDs: every generated line enriched, CPU and peak memory measured."""
        done, rows = run_bench(pg_server_url, tmp_path, "--scenarios", "batch,batch-zipf",
                               "--batch-lines", "500", timeout=120)
        assert [r["server"] for r in rows] == ["floor", "service", "service"]
        assert all(r["requests"] == 500 and r["cpu_us_per_event"] > 0 and r["peak_rss_mb"] > 0
                   for r in rows), rows
        assert rows[1]["vs_floor"] is not None
        assert "enrich-batch --workers 2" in done.stdout

    def test_repeated_warm_and_locales_with_two_thread_counts(self, pg_server_url: str,
                                                              tmp_path: Path):
        """--repeat and --threads 1,2: every run kept in the JSON (floor and service, the service
        alone for locales-rss), one median line per server and count."""
        done, rows = run_bench(pg_server_url, tmp_path, "--scenarios", "toy-warm,locales-rss",
                               "--repeat", "2", "--threads", "1,2", "--locale-items", "500",
                               "--locale-events", "20", "--warmup", "0", timeout=240)
        warm = [(r["threads"], r["run"], r["server"]) for r in rows if "toy" in r["scenario"]
                and "locales" not in r["scenario"]]
        assert warm == [(t, n, s) for t in (1, 2) for n in (1, 2) for s in ("floor", "service")]
        assert [r["server"] for r in rows if "locales" in r["scenario"]] == ["service"] * 4
        assert all(r["requests"] > 0 and r["errors"] == 0 for r in rows), rows
        assert "planned scenarios: toy-warm (floor, service); locales-rss (service)" \
            in done.stderr
        table_lines = [line for line in done.stdout.splitlines()
                       if line.startswith("toy catalog, warm")]
        assert len(table_lines) == 4  # 2 thread counts x 2 servers, runs folded into medians


class TestBenchInterrupted:
    """Ctrl-C mid-run stops every server the bench started and drops its database."""

    def test_sigint_under_load(self, pg_server_url: str):
        bench = subprocess.Popen(bench_command(pg_server_url, "--scenarios", "toy-warm",
                                               "--duration", "20"),
                                 cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            seen = []
            for line in bench.stderr:
                seen.append(line)
                if "floor under load" in line:
                    break
            started = psutil.Process(bench.pid).children(recursive=True)
            assert any("floor_server" in " ".join(p.cmdline()) for p in started), seen
            bench.send_signal(signal.SIGINT)
            _, rest = bench.communicate(timeout=60)
        finally:
            if bench.poll() is None:
                bench.kill()
                bench.wait()
        assert bench.returncode == 130, rest
        assert "interrupted" in rest
        _, alive = psutil.wait_procs(started, timeout=5)
        assert not alive, [p.cmdline() for p in alive]
        assert not database_exists(pg_server_url, database_name("".join(seen)))
