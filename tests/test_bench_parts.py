"""The bench's parts of issue 13, fast: the Zipf draw, the medians and ranges of repeated runs, the
event-loop lag read from /metrics, and the naive Postgres server answering as the floor does (real
Postgres, real HTTP); the connect scenario's batches and its per-recipient ratio. Numbers of a run
are never asserted."""

from __future__ import annotations

import asyncio
import random
import shutil
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bench import database
from bench import real_catalog as real
from bench.__main__ import connect_comparison
from bench.catalog import SHAPES, Zipf, floor_items, make_connect_event, make_event
from bench.floor_server import create_floor_app
from bench.naive_server import create_naive_app, query_for
from bench.report import Row, comparison_table, median, summarise, summary_table
from bench.scenarios import BY_NAME
from bench.servers import parse_lag
from bench.wrk_runner import REPLAY_SCRIPT
from tests.support.databases import drop_database


class TestZipf:
    def test_rank_frequencies_fall_as_rank_to_the_minus_1_1(self):
        zipf = Zipf(random.Random(7), 1000, 1.1)
        counts = Counter(zipf.rank() for _ in range(200_000))
        norm = sum(r ** -1.1 for r in range(1, 1001))
        for rank in (0, 1, 4, 9):
            expected = 200_000 * (rank + 1) ** -1.1 / norm
            assert abs(counts[rank] - expected) < 0.1 * expected, (rank, counts[rank], expected)
        # Most of the mass on few items: the top 10% of ranks get well over half the draws.
        assert sum(n for rank, n in counts.items() if rank < 100) > 0.6 * 200_000

    def test_popular_items_are_spread_over_the_catalog_and_endpoints_hold_distinct_ids(self):
        rng = random.Random(3)
        zipf = Zipf(rng, 10_000, 1.1)
        assert zipf.order[0] != 0 and sorted(zipf.order) == list(range(10_000))
        event = make_event(rng, zipf, endpoints=50)
        for endpoint in event["Endpoints"].values():
            ids = endpoint["RecommendationItems"]
            assert len(ids) == 5 and len(set(ids)) == 5


def row(server: str, per_second: float, run: int, vs_floor: float | None = None) -> Row:
    return Row(scenario="s", server=server, connections=64, processes=1, per_second=per_second,
               p50_ms=1.0, p99_ms=float(run), errors=run - 1, timeouts=0, requests=100,
               vs_floor=vs_floor, run=run)


class TestSummary:
    def test_median_of_odd_and_even_counts(self):
        assert median([3.0, 1.0, 2.0]) == 2.0
        assert median([4.0, 1.0, 2.0, 3.0]) == 2.5
        assert median([]) is None

    def test_repeated_runs_give_median_rate_and_ratio_range(self):
        rows = [row("floor", 100, 1, 1.0), row("service", 90, 1, 0.9),
                row("floor", 100, 2, 1.0), row("service", 120, 2, 1.2),
                row("floor", 100, 3, 1.0), row("service", 100, 3, 1.0)]
        floor, service = summarise(rows)
        assert (floor.first.server, service.first.server) == ("floor", "service")
        assert service.runs == 3 and service.per_second == 100 and service.p99_ms == 2.0
        assert service.vs_floor == 1.0 and service.floor_range == (0.9, 1.2)
        assert service.errors == 3  # summed over the runs
        assert service.vs_naive is None
        assert "0.90-1.20" in summary_table(rows)

    def test_lag_cell_gives_the_max_since_start_and_the_measurement_s_bucket(self):
        rows = [row("service", 90, 1), row("service", 100, 2)]
        rows[0].max_lag_ms, rows[0].lag_bucket_ms = 79.0, 25.0
        rows[1].max_lag_ms, rows[1].lag_bucket_ms = 60.0, 50.0
        assert "79.0 (<=50)" in summary_table(rows)


class TestConnectScenario:
    def test_batches_are_connect_events_of_hot_items(self):
        hot = [str(n) for n in range(100_000, 100_050)]
        event = make_connect_event(random.Random(5), hot, profiles=100)
        profiles = event["Items"]["CustomerProfiles"]
        assert len(profiles) == 100
        assert len({p["IdempotencyToken"] for p in profiles}) == 100
        for profile in profiles:
            data = orjson.loads(profile["CustomerData"])  # a JSON string, as Connect sends it
            assert data["ProfileId"] == profile["ProfileId"]
            ids = data["Attributes"]["recommended_items"].split(",")
            assert len(set(ids)) == 5 and set(ids) <= set(hot)

    def test_the_ratio_is_per_recipient_and_per_run(self):
        title = BY_NAME["connect"].title

        def measured(server: str, per_second: float, run: int) -> Row:
            found = row(server, per_second, run)
            found.scenario = title
            return found

        rows = [measured("transform", 1000, 1), measured("service", 450, 1),
                measured("transform", 1000, 2), measured("service", 550, 2),
                row("service", 1, 1)]
        line = connect_comparison(rows, profiles=100, endpoints=50)
        # Run 1: 45,000 profiles/s over 50,000 endpoints/s; run 2: 55,000 over 50,000.
        assert line.endswith(": 1.00 (range 0.90-1.10)"), line
        assert connect_comparison(rows[-1:], 100, 50) == ""


class TestLag:
    METRICS = (
        "# TYPE enricher_event_loop_lag_seconds histogram\n"
        'enricher_event_loop_lag_seconds_bucket{le="0.005"} %d\n'
        'enricher_event_loop_lag_seconds_bucket{le="0.05"} %d\n'
        'enricher_event_loop_lag_seconds_bucket{le="0.5"} %d\n'
        'enricher_event_loop_lag_seconds_bucket{le="+Inf"} %d\n'
        "enricher_event_loop_lag_max_seconds %s\n"
    )

    def test_max_and_the_bucket_of_the_interval_s_largest_lag(self):
        before = parse_lag(self.METRICS % (10, 10, 11, 11, "0.3"))  # warm-up: one 300 ms lag
        after = parse_lag(self.METRICS % (50, 58, 59, 59, "0.3"))  # load: nothing above 50 ms
        assert after.max_ms == pytest.approx(300)
        assert after.highest_bucket_since(before) == pytest.approx(50)
        assert after.highest_bucket_since(None) == pytest.approx(500)

    def test_absent_metrics_give_nothing(self):
        lag = parse_lag("enricher_requests_total 3\n")
        assert lag.max_ms is None and lag.highest_bucket_since(None) is None


class TestNaiveServer:
    def test_one_query_names_only_the_needed_columns(self):
        sql, _ = query_for("guide1")
        assert sql == ("SELECT id, image_url FROM items WHERE catalog_id = $1 "
                       "AND id = ANY($2::text[])")
        sql, _ = query_for("pinpoint")
        assert "title, genre, price_amount::text, price_currency FROM" in sql

    @pytest.mark.parametrize("shape", sorted(SHAPES))
    async def test_answers_as_the_floor_does(self, pg_server_url: str, shape: str):
        items = 300
        name, _ = await database.create_database(pg_server_url)
        try:
            db = await database.load(pg_server_url, name, items, lambda _m: None)
            rng = random.Random(5)
            event = make_event(rng, items + 50, endpoints=20, shape=shape)  # some IDs missing
            floor = TestClient(TestServer(create_floor_app(floor_items(items, shape), shape)))
            naive = TestClient(TestServer(create_naive_app(db.url, db.catalog_id, shape)))
            async with floor, naive:
                answers = []
                for client in (floor, naive):
                    done = await client.post("/v1/recommenders/x/transform",
                                             data=orjson.dumps(event))
                    assert done.status == 200
                    answers.append(await done.json())
                    got = await client.get("/v1/recommenders/x/content",
                                           params={"ids": "100001,100299,999999"})
                    assert got.status == 200
                    answers.append(await got.json())
            assert answers[0] and answers[0] == answers[2]
            assert answers[1]["missing"] == ["999999"] and answers[1] == answers[3]
        finally:
            await drop_database(pg_server_url, name)


PRODUCTS = [  # two records shaped like the shared dataset's (no need for ../shared here)
    {"id": "6579c22f-be2b-444c-a52b-0116dd82df6c", "current_stock": 15,
     "name": "Adventure-Ready Expedition Backpack", "category": "accessories", "style": "backpack",
     "description": "Embark on your next outdoor journey.", "price": 129.99,
     "image": "6579c22f-be2b-444c-a52b-0116dd82df6c.jpg", "where_visible": "UI"},
    {"id": "2e852905-c6f4-47db-802c-654013571922", "current_stock": 3, "name": "Mauve Daypack",
     "category": "cold dispensed", "style": "backpack", "description": "Stylish.",
     "price": 24999.99, "image": "2e852905-c6f4-47db-802c-654013571922.jpg"},
]
GUIDE_EVENT = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "pinpoint" / \
    "seed-event.json"


class TestRealCatalog:
    def test_products_become_items_the_item_api_takes(self):
        item = real.product_item(PRODUCTS[1])
        assert item["price"] == {"amount": "24999.99", "currency": "USD"}
        assert item["image_url"].endswith("/cold%20dispensed/" + PRODUCTS[1]["image"])
        assert item["attributes"]["description"] == "Stylish."
        assert real.rendered(item, "real-price") == ("Mauve Daypack", "cold dispensed",
                                                     item["image_url"], "$24,999.99")

    def test_synthetic_items_follow_the_real_ones(self):
        made = list(real.synthetic_items(PRODUCTS, 200, seed=3))
        words = {w for p in PRODUCTS for w in p["name"].split()}
        assert len({i["id"] for i in made}) == 200 and all(len(i["id"]) == 36 for i in made)
        assert {len(i["title"].split()) for i in made} == {2, 3}  # the real names' word counts
        assert all(set(i["title"].split()) <= words for i in made)
        assert {i["price"]["amount"] for i in made} == {"129.99", "24999.99"}
        assert made == list(real.synthetic_items(PRODUCTS, 200, seed=3))  # the same every run

    @pytest.mark.parametrize("demographic", [False, True])
    def test_endpoints_have_the_guide_s_keys_and_optionally_demographic(self, demographic: bool):
        event = real.guide_event(random.Random(1), [str(n) for n in range(10)], 3, demographic)
        keys = {"ChannelType", "Address", "EndpointStatus", "OptOut", "EffectiveDate",
                "Attributes", "User", "RecommendationItems", "CreationDate"}
        if GUIDE_EVENT.exists():  # the guide's own example, where ../shared is present
            guide = orjson.loads(GUIDE_EVENT.read_bytes())
            assert keys == set(next(iter(guide["Endpoints"].values())))
        for endpoint in event["Endpoints"].values():
            assert set(endpoint) == keys | ({"Demographic"} if demographic else set())
            assert len(set(endpoint["RecommendationItems"])) == 5

    def test_content_paths_are_distinct(self, tmp_path: Path):
        ids = [str(n) for n in range(1000)]
        rng = random.Random(2)
        path = real.write_content_paths(tmp_path / "p.txt", rng, 500, ids, "/c", Zipf(rng, 1000))
        lines = path.read_text().split()
        assert len(lines) == len(set(lines)) == 500
        assert all(len(line.split("=")[1].split(",")) == 3 for line in lines)


class TestComparisonTable:
    def test_one_line_per_peer_with_ratio_range_cold_rows_and_the_independent_twin(self):
        scenario = BY_NAME["cold-zipf"]
        rows = []
        for run, (naive, service) in enumerate([(100, 150), (100, 250), (100, 200)], start=1):
            for server, rate in (("naive", naive), ("service", service)):
                found = row(server, rate, run)
                found.scenario, found.cpu_us_per_event, found.cpu_us_per_row = scenario.title, 9, 2
                found.vs_independent = 0.9 + run / 10 if server == "naive" else None
                rows.append(found)
        table = comparison_table(rows, [scenario])
        line = table.splitlines()[2]
        assert "| cold-zipf |" in line and "| naive | 100 | 2.00 (1.50-2.50) |" in line
        assert "| 9 (9) | 1.00 | 2.0 (2.0) |" in line and line.endswith("| 1.10 (1.00-1.20); CPU µs/event  |")
        assert comparison_table(rows, [BY_NAME["toy-warm"]]) == ""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
class TestReplay:
    async def test_threads_replay_disjoint_parts_and_a_measurement_starts_past_the_warm_up(
            self, tmp_path: Path):
        """bench/replay.lua: within a run no path is sent twice (each thread has its own lines),
        and a run told how many requests the warm-up sent sends none of the warm-up's again."""
        seen: list[str] = []

        async def record(request: web.Request) -> web.Response:
            seen.append(request.path)
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/e/{n}", record)
        paths = tmp_path / "paths.txt"
        paths.write_text("".join(f"/e/{n}\n" for n in range(200_000)))
        async with TestServer(app) as server:
            url = f"http://127.0.0.1:{server.port}"

            async def wrk(skip: int) -> int:
                process = await asyncio.create_subprocess_exec(
                    shutil.which("wrk"), "-t2", "-c4", "-d1s", "-s", str(REPLAY_SCRIPT), url,
                    "--", str(paths), "-", "Bearer k", "GET", "2", str(skip),
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                out, err = await process.communicate()
                assert process.returncode == 0 and b"BENCH-RESULT" in out, err
                return orjson.loads(out.split(b"BENCH-RESULT ", 1)[1])["sent_max"]

            busiest = await wrk(0)
            first = list(seen)
            seen.clear()
            await wrk(busiest)
        assert 0 < busiest * 2 + len(seen) < 200_000
        assert len(set(first)) == len(first) and len(set(seen)) == len(seen)
        assert not set(first) & set(seen)
        numbers = sorted(int(p.rsplit("/", 1)[1]) for p in first)
        assert {n % 2 for n in numbers} == {0, 1}  # both threads sent, each its own lines
