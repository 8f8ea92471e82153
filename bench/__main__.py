"""`python -m bench`: the floor, the naive Postgres server and catalog-enricher, side by side, in
one run; each scenario names its peers (bench/scenarios.py). See `--help`.

Everything it starts (servers, wrk, shim invokers) runs on 127.0.0.1 and is stopped when it ends,
also on Ctrl-C, SIGTERM or when the run exceeds its time budget; its database is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import asyncpg
import orjson

from bench import batch_bench, database, fairness, profile
from bench import real_catalog as real
from bench.catalog import (
    SHAPE_RECOMMENDERS,
    Zipf,
    hot_ids,
    write_connect_events,
    write_content_paths,
    write_events,
    write_locale_events,
    write_user_paths,
)
from bench.importer import import_catalogs
from bench.personalize import BenchPersonalize
from bench.report import Row, comparison_table, heading, machine, notes, summary_table
from bench.scenarios import BY_NAME, DEFAULT, SCENARIOS, Scenario
from bench.servers import (
    ServerProcess,
    floor_command,
    free_port,
    independent_floor_command,
    independent_naive_command,
    naive_command,
    peer_env,
    real_floor_command,
    real_naive_command,
    scrape_lag,
    scrape_metric,
    service_command,
    service_env,
)
from bench.shim_load import run_shim
from bench.wrk_runner import LoadResult, WrkMissing, ensure_wrk, run_wrk
from service.storage.embedded_postgres import embedded_postgres

# Throwaway databases on a Postgres server are the tests' business too: one way to reach and drop them.
from tests.support.databases import can_connect, drop_database

TRANSFORM_PATH = f"/v1/recommenders/{database.RECOMMENDER}/transform"
# IDs the service asked Postgres for (its item queries): the rows a cold run fetched.
ROWS_METRIC = "enricher_db_query_ids_sum"
CONTENT_PATH = f"/v1/recommenders/{database.RECOMMENDER}/content"
USER_PATH = f"/v1/recommenders/{database.RECOMMENDER}/users/{{user}}/content"
CONNECT_PATH = f"/v1/recommenders/{database.RECOMMENDER}/connect"
GET_KINDS = ("content", "users")  # event pools that are GET paths, not POST bodies


class OutOfTime(Exception):
    """The run took longer than its budget."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark catalog-enricher against a minimal aiohttp floor server and a naive "
                    "Postgres server, side by side.",
    )
    parser.add_argument("--items", type=int, default=500_000,
                        help="items of the big catalog, synthetic items that follow the real "
                             "products (default 500,000)")
    parser.add_argument("--toy-items", type=int, default=100_000,
                        help="items of the toy catalog the kept scenarios use (default 100,000)")
    parser.add_argument("--peers", choices=("bench", "independent"), default="bench",
                        help="independent: also run, next to each of the bench's floor and naive "
                             "servers, one written independently (bench/independent/), to show "
                             "the bench's are no slower than a user's")
    parser.add_argument("--duration", type=int, default=10,
                        help="seconds of measured load per server and scenario (default 10)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="seconds of unmeasured load before each measurement (default 2; 0: "
                             "none)")
    parser.add_argument("--threads", default="2",
                        help="wrk threads, or a comma-separated list (e.g. 1,2): every scenario "
                             "then runs once per thread count (default 2)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every scenario (all its peers) this many times; the table "
                             "gives medians and the range of the ratios (default 1)")
    parser.add_argument("--connections", type=int, default=64,
                        help="wrk connections and shim invokers, where a scenario does not fix them "
                             "(default 64)")
    parser.add_argument("--timeout", type=int, default=2,
                        help="seconds after which wrk counts a request as timed out (default 2)")
    parser.add_argument("--scenarios", default=",".join(DEFAULT),
                        help="comma-separated, from: " + ", ".join(s.name for s in SCENARIOS))
    parser.add_argument("--env", action="append", default=[], metavar="[SCENARIO:]NAME=VALUE",
                        help="extra environment for the service, in all scenarios or one "
                             "(repeatable), e.g. --env cold:ENRICHER_CACHE=off")
    parser.add_argument("--endpoints", type=int, default=50,
                        help="endpoints per event (default 50, Pinpoint's batch; 1 shows the "
                             "fixed cost of a request)")
    parser.add_argument("--hot-items", type=int, default=1000,
                        help="IDs the warm scenarios draw from (default 1000)")
    parser.add_argument("--hot-events", type=int, default=200,
                        help="events in the toy warm pool (default 200)")
    parser.add_argument("--warm-events", type=int, default=1000,
                        help="distinct events in each real warm pool (default 1000)")
    parser.add_argument("--content-requests", type=int, default=200_000,
                        help="distinct GET paths in the content pool (default 200,000: more "
                             "than 15 s of the fastest server's load, so no path is asked for "
                             "twice, which a kept answer would serve)")
    parser.add_argument("--connect-profiles", type=int, default=100,
                        help="profiles per batch in the connect scenario (default 100)")
    parser.add_argument("--users", type=int, default=1000,
                        help="users the user scenario asks for (default 1000)")
    parser.add_argument("--cold-events", type=int, default=16_000,
                        help="distinct events in each cold pool, uniform and Zipf (default "
                             "16,000: 4,000,000 IDs, more than 12 s of the fastest server's "
                             "load, so no event is sent twice); the wrk threads share them out")
    parser.add_argument("--locale-items", type=int, default=100_000,
                        help="hot items the locales-rss events run through (default 100,000)")
    parser.add_argument("--locale-events", type=int, default=800,
                        help="events in the locales-rss pool (default 800: 200,000 IDs, each "
                             "hot item twice)")
    parser.add_argument("--batch-lines", type=int, default=200_000,
                        help="lines of 25 IDs the batch scenarios enrich (default 200000)")
    parser.add_argument("--seed", type=int, default=1, help="seed for the events (default 1)")
    parser.add_argument("--dataset", type=Path, default=real.DATASET,
                        help="the real products (default: ../shared/datasets next to the "
                             "repository)")
    parser.add_argument("--database-url",
                        help="Postgres server to create the bench database on (default: "
                             "BENCH_DATABASE_URL, DATABASE_URL, else "
                             f"{database.DEFAULT_SERVER_URL}, else an embedded Postgres)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--profile", type=Path, metavar="PATH",
                        help="after the warm scenario (else the first one run), profile the "
                             "service with py-spy for --duration seconds under the same load; "
                             "write its collapsed stacks to PATH and print the top functions")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (events, server logs) and say where it is")
    parser.add_argument("--budget", type=int,
                        help="stop (and clean up) after this many seconds (default: from the "
                             "catalog size and scenarios)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown or not names:
        parser.error(f"unknown scenario {unknown[0]!r}" if unknown else "no scenario given")
    args.scenario_list = [BY_NAME[n] for n in names]
    args.env_by_scenario = _parse_env(parser, args.env)
    try:
        args.thread_counts = [int(n) for n in args.threads.split(",") if n.strip()]
    except ValueError:
        parser.error(f"--threads {args.threads!r}: expected a number or numbers like 1,2")
    if not args.thread_counts or min(args.thread_counts) < 1:
        parser.error("--threads must be at least 1")
    args.threads = max(args.thread_counts)
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")
    for name in ("items", "endpoints", "duration", "connections", "timeout",
                 "hot_items", "hot_events", "cold_events", "content_requests", "users", "repeat",
                 "locale_items", "locale_events", "connect_profiles", "toy_items", "warm_events",
                 "batch_lines"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")
    return args


def _parse_env(parser: argparse.ArgumentParser, pairs: list[str]) -> dict[str, dict[str, str]]:
    """`[SCENARIO:]NAME=VALUE` options → each scenario's extra service environment."""
    found: dict[str, dict[str, str]] = {name: {} for name in BY_NAME}
    for pair in pairs:
        head, sep, value = pair.partition("=")
        scope, _, key = head.rpartition(":")
        if not sep or not key:
            parser.error(f"--env {pair!r}: expected [SCENARIO:]NAME=VALUE")
        if scope and scope not in BY_NAME:
            parser.error(f"--env {pair!r}: unknown scenario {scope!r}")
        for name in [scope] if scope else list(BY_NAME):
            found[name][key] = value
    return found


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def basic_auth(api_key: str) -> str:
    """The Authorization value a stored Basic credential sends (the key as the password)."""
    return "Basic " + base64.b64encode(f"bench:{api_key}".encode()).decode()


def post_event(base_url: str, api_key: str, body: bytes, get_path: str | None = None,
               path: str = TRANSFORM_PATH) -> object:
    """One transform call (to `path`) outside the load, to check the answer (urllib: nothing to
    install); with `get_path`, a GET of that path instead."""
    request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1, a server we started
        base_url + (get_path or path), data=None if get_path else body,
        method="GET" if get_path else "POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - as above
            return orjson.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{base_url} answered the check event with HTTP {exc.code}: "
                           f"{exc.read()[:500].decode(errors='replace')}") from exc


def first_difference(expected: dict, actual: dict, server_kind: str = "service") -> str:
    for endpoint_id in expected.keys() | actual.keys():
        if expected.get(endpoint_id) != actual.get(endpoint_id):
            return (f"endpoint {endpoint_id}: floor {expected.get(endpoint_id)!r:.300} "
                    f"vs {server_kind} {actual.get(endpoint_id)!r:.300}")
    return "none"


def transform_path(scenario: Scenario) -> str:
    if scenario.recommender:
        return f"/v1/recommenders/{scenario.recommender}/transform"
    if scenario.events == "connect":
        return CONNECT_PATH
    return f"/v1/recommenders/{SHAPE_RECOMMENDERS[scenario.shape]}/transform"


def load_of(scenario: Scenario, server_kind: str) -> tuple[Scenario, str]:
    """What a peer is driven with: (the scenario whose pool and path it takes, the pool's name).
    The "transform" peer takes the warm scenario's Pinpoint events instead of the scenario's."""
    if server_kind == "transform":
        return BY_NAME["toy-warm"], BY_NAME["toy-warm"].pool
    return scenario, scenario.pool


def load_method(scenario: Scenario) -> str:
    """How the wrk script reads the scenario's pool (bench/replay.lua)."""
    if scenario.events in GET_KINDS:
        return "GET"
    if scenario.data != "toy":
        return "POST"
    return "PATHS" if scenario.events == "locales" else "POST"


class Bench:
    """One run: its files, its database, the server running now, and the rows measured."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="ce-bench-"))
        self.server_url = database.configured_server_url(args.database_url) or \
            database.DEFAULT_SERVER_URL
        self.postgres = contextlib.ExitStack()
        self._db: database.BenchDatabase | None = None
        self.db_name: str | None = None
        self.current: ServerProcess | None = None
        self.rows: list[Row] = []
        # The scenario --profile profiles: warm where it runs, else the first.
        self.profiled = next((s for s in args.scenario_list if s.name == "real-warm"),
                             args.scenario_list[0])
        self.floor_answers: dict[tuple[str, str], object] = {}  # (pool, path): first peer's
        self.rows_per_event: dict[str, float] = {}  # pool: distinct IDs a request asks for
        self.profiled_once = False
        self.personalize: BenchPersonalize | None = None
        self.facts: dict[str, str] = {}
        self.b_key: str | None = None  # the fairness scenario's tenant B
        self.fairness: dict[str, list[fairness.FairnessResult]] = {}  # every run's

    # -- setup -------------------------------------------------------------------------------

    def prepare(self) -> None:
        self.wrk = ensure_wrk(say)
        if database.configured_server_url(self.args.database_url) is None and \
                not asyncio.run(can_connect(self.server_url)):
            # As `make test` does: a new machine needs no Postgres installed to run the bench.
            say("no Postgres answers on 127.0.0.1:5432: starting an embedded one (pgserver)")
            self.server_url = self.postgres.enter_context(
                embedded_postgres(self.workdir / "postgres"))
        self.db_name, version = asyncio.run(database.create_database(self.server_url))
        self.facts = machine(self.wrk, version, self.args.env_by_scenario)
        toy = any(s.data == "toy" for s in self.args.scenario_list)
        say(f"database {self.db_name}: loading "
            + (f"{self.args.toy_items:,} toy items" if toy else "the recommenders"))
        self._db = asyncio.run(database.load(self.server_url, self.db_name, self.args.toy_items,
                                             say, toy=toy))
        self.events: dict[str, Path] = {}
        self.prepare_real()
        rng = random.Random(self.args.seed)
        hot = self.hot = hot_ids(rng, self.args.toy_items, self.args.hot_items)
        toy_scenarios = [s for s in self.args.scenario_list if s.data == "toy"]
        pools = {s.pool: s for s in toy_scenarios}
        kinds = {s.events for s in toy_scenarios}
        if "connect" in kinds:  # its transform peer replays the warm pool
            pools.setdefault(BY_NAME["toy-warm"].pool, BY_NAME["toy-warm"])
        for pool, scenario in pools.items():
            if scenario.events == "hot":
                self.events[pool] = write_events(self.workdir / f"events-{pool}.ndjson", rng,
                                                 self.args.hot_events, hot, self.args.endpoints,
                                                 scenario.shape)
        if "content" in kinds:
            self.events["content"] = write_content_paths(
                self.workdir / "content-paths.txt", rng, self.args.content_requests, hot,
                CONTENT_PATH)
        if "users" in kinds:
            self.events["users"] = write_user_paths(
                self.workdir / "user-paths.txt", rng, 4 * self.args.users, self.args.users,
                USER_PATH)
            self.personalize = BenchPersonalize(self.args.users, self.args.toy_items).start()
        if "connect" in kinds:
            self.events["connect"] = write_connect_events(
                self.workdir / "events-connect.ndjson", rng, self.args.hot_events, hot,
                self.args.connect_profiles)
        if "cold" in kinds:
            self.events["cold"] = write_events(self.workdir / "events-cold.ndjson", rng,
                                               self.args.cold_events, self.args.toy_items,
                                               self.args.endpoints)
        if "zipf" in kinds:
            self.events["zipf"] = write_events(self.workdir / "events-zipf.ndjson", rng,
                                               self.args.cold_events,
                                               Zipf(rng, self.args.toy_items, 1.1),
                                               self.args.endpoints)
        if "locales" in kinds:
            items = hot_ids(random.Random(self.args.seed + 1), self.args.toy_items,
                            self.args.locale_items)
            routes = [f"/v1/recommenders/{name}/transform"
                      for name in database.LOCALE_RECOMMENDERS]
            self.events["locales"] = write_locale_events(
                self.workdir / "events-locales.txt", rng, self.args.locale_events, items, routes,
                self.args.endpoints)
        say("events written: " + ", ".join(
            f"{kind} {path.stat().st_size / 2**20:.1f} MiB" for kind, path in self.events.items()))

    def prepare_real(self) -> None:
        """The real and big catalogs (written to NDJSON, imported through the service's import
        route) and their event pools, for the scenarios that use them."""
        chosen = [s for s in self.args.scenario_list if s.data != "toy"]
        if not chosen:
            return
        products = real.load_products(self.args.dataset)
        self.catalog_files: dict[str, Path] = {}
        ids: dict[str, list[str]] = {}
        if any(s.data == "real" for s in chosen):
            self.catalog_files["real"] = self.workdir / "real.ndjson"
            ids["real"] = real.write_ndjson(self.catalog_files["real"], real.real_items(products))
        if any(s.data == "big" for s in chosen):
            self.catalog_files["big"] = self.workdir / "big.ndjson"
            say(f"writing {self.args.items:,} synthetic items that follow the real ones")
            ids["big"] = real.write_ndjson(self.catalog_files["big"], real.synthetic_items(
                products, self.args.items, self.args.seed))
        import_catalogs(self.db.url, self.db.import_key,
                        {database.REAL_CATALOG if k == "real" else database.BIG_CATALOG: path
                         for k, path in self.catalog_files.items()}, self.workdir, say)
        asyncio.run(database.settle(self.server_url, self.db_name))
        rng = random.Random(self.args.seed + 7)
        zipf = {}
        for scenario in chosen:
            pool = scenario.pool
            if pool in self.events:
                continue
            pool_ids = ids[scenario.data]
            if scenario.events != "guide" and scenario.data not in zipf:
                zipf[scenario.data] = Zipf(rng, len(pool_ids), 1.1)
            path = self.workdir / f"events-{pool}.txt"
            if scenario.events == "content":
                self.events[pool] = real.write_content_paths(
                    path, rng, self.args.content_requests, pool_ids,
                    f"/v1/recommenders/{scenario.recommender}/content", zipf[scenario.data])
                self.rows_per_event[pool] = 3.0
                continue
            count = self.args.cold_events if scenario.data == "big" else self.args.warm_events
            say(f"writing {count:,} distinct events for {pool}")
            self.events[pool], self.rows_per_event[pool] = real.write_guide_events(
                path, rng, count, pool_ids, self.args.endpoints, scenario.demographic,
                zipf.get(scenario.data) if scenario.events == "guide-zipf" else None)

    @property
    def db(self) -> database.BenchDatabase:
        if self._db is None:
            raise RuntimeError("the bench database is not loaded yet")
        return self._db

    # -- runs --------------------------------------------------------------------------------

    def plan(self) -> list[str]:
        a = self.args
        return [f"{s.name} ({', '.join(self.peers_of(s)) if s.driver != 'fairness' else 'service'})"
                for s in a.scenario_list]

    def peers_of(self, scenario: Scenario) -> tuple[str, ...]:
        return scenario.with_independent() if self.args.peers == "independent" else scenario.peers

    def run(self) -> None:
        for scenario in self.args.scenario_list:
            for threads in self.args.thread_counts:
                for run in range(1, self.args.repeat + 1):
                    if scenario.driver == "fairness":
                        rows = self.measure_fairness(scenario, threads)
                    elif scenario.driver == "batch":
                        rows = batch_bench.measure(self, scenario)
                    else:
                        rows = [self.measure(scenario, kind, threads)
                                for kind in self.peers_of(scenario)]
                    for row in rows:
                        row.run = run
                    self.rows += compare(rows)

    def measure(self, scenario: Scenario, server_kind: str, threads: int) -> Row:
        args, db = self.args, self.db
        connections = scenario.connections or args.connections
        port = free_port()
        driven, pool = load_of(scenario, server_kind)
        events = self.events[pool]
        log = self.workdir / f"{scenario.name}-{server_kind}.log"
        real_data = scenario.data != "toy"
        size = args.items if scenario.data == "big" else 2_500
        catalog_id = (db.catalog_ids or {}).get(
            database.BIG_CATALOG if scenario.data == "big" else database.REAL_CATALOG, 0)
        if server_kind in ("floor", "floor-indep") and real_data:
            file = self.catalog_files[scenario.data]
            command = (real_floor_command(port, file, scenario.recommender)
                       if server_kind == "floor"
                       else independent_floor_command(port, file, scenario.recommender))
            env = peer_env(args.env_by_scenario[scenario.name])
            ready_timeout = 60 + size / 10_000
        elif server_kind in ("naive", "naive-indep") and real_data:
            command = (real_naive_command(port, db.url, catalog_id, scenario.recommender)
                       if server_kind == "naive"
                       else independent_naive_command(port, db.url, catalog_id,
                                                      scenario.recommender))
            env, ready_timeout = peer_env(args.env_by_scenario[scenario.name]), 60
        elif server_kind == "floor":
            command = floor_command(port, args.toy_items, scenario.processes, scenario.shape)
            env = peer_env(args.env_by_scenario[scenario.name])
            ready_timeout = 60 + args.toy_items / 50_000
        elif server_kind == "naive":
            command = naive_command(port, db.url, db.catalog_id, scenario.shape)
            env, ready_timeout = peer_env(args.env_by_scenario[scenario.name]), 60
        else:
            extra = {**(self.personalize.service_environment() if self.personalize else {}),
                     **scenario.service_env}
            if scenario.l1_divisor:
                extra["ENRICHER_CACHE_MAX_ENTRIES"] = str(max(args.toy_items // scenario.l1_divisor,
                                                              1))
            extra.update(args.env_by_scenario[scenario.name])
            command, env = service_command(port, scenario.processes), service_env(db.url, extra)
            ready_timeout = 60
            statements_before = asyncio.run(database.committed_transactions(db.server_url, db.name))
        say(f"{scenario.name}: {server_kind} starting ({threads} wrk threads)")
        server = self.current = ServerProcess(server_kind, command, env=env, port=port,
                                              listeners=scenario.processes, log_path=log)
        served = 0
        try:
            server.wait_ready(ready_timeout)
            self.check_answer(driven, server_kind, server.base_url, events)
            served += 1
            if scenario.events == "users":
                # Every user once, so the timed load is per-user cache hits whatever the rate
                # the warm-up reaches (a first call signs and waits for Personalize).
                served += self.ask_every_path_once(server.base_url, events)
            load = {"wrk": self.wrk, "url": server.base_url, "events": events,
                    "path": transform_path(driven), "api_key": db.api_key, "threads": threads,
                    "connections": connections,
                    "timeout_s": args.timeout, "method": load_method(driven),
                    "authorization": basic_auth(db.api_key) if driven.events == "content"
                    and real_data else None}
            warm_up = run_wrk(**load, seconds=args.warmup) if args.warmup else None
            warmed = warm_up.requests if warm_up else 0
            served += warmed
            # The measurement starts where the warm-up stopped: no event of it is replayed
            # (the check event, each pool's first, is thread 0's first line: skipped too).
            load["skip"] = (warm_up.sent_max if warm_up else 0) + 1
            server.wait_idle()
            lag_before = scrape_lag(server.base_url) if server_kind == "service" else None
            rows_before = scrape_metric(server.base_url, ROWS_METRIC) \
                if server_kind == "service" and scenario.cold else None
            say(f"{scenario.name}: {server_kind} under load for {args.duration} s")
            cpu_before = server.cpu_seconds()
            if scenario.driver == "shim":
                result, _ = run_shim(url=server.base_url + transform_path(scenario),
                                     api_key=db.api_key, events=events, invokers=connections,
                                     seconds=args.duration, say=say, rate=scenario.rate)
            else:
                result = run_wrk(**load, seconds=args.duration)
            cpu_used = server.cpu_seconds() - cpu_before
            served += result.requests
            rows_after = scrape_metric(server.base_url, ROWS_METRIC) \
                if rows_before is not None else None
            # Warm pools may cycle (their items are cached anyway); cold ones should not.
            replayed = scenario.cold and \
                load["skip"] + result.sent_max > self.pool_size(events) // threads
            if replayed:
                say(f"{scenario.name}: {server_kind} went through the pool of "
                    f"{self.pool_size(events):,} events: some were replayed (raise the pool's "
                    "size for distinct events)")
            lag_after = scrape_lag(server.base_url) if server_kind != "floor" and \
                server_kind != "naive" else None
            if args.profile and server_kind == "service" and scenario is self.profiled \
                    and not self.profiled_once:
                self.profiled_once = True
                server.wait_idle()
                served += self.profile(server, load)
        finally:
            self.current = None
            server.stop()
        row = self.row(scenario, server_kind, connections, result, server.peak_rss, threads)
        row.cpu_us_per_event = cpu_used / max(result.requests, 1) * 1e6
        row.replayed = bool(replayed)
        if scenario.cold and server_kind in ("service", "naive", "naive-indep"):
            fetched = (rows_after - rows_before if rows_after is not None and rows_before is not None
                       else result.requests * self.rows_per_event.get(scenario.pool, 0)
                       if server_kind != "service" else None)
            if fetched:
                row.rows_fetched = fetched
                row.cpu_us_per_row = cpu_used / fetched * 1e6
        if lag_after is not None:
            row.max_lag_ms = lag_after.max_ms
            row.lag_bucket_ms = lag_after.highest_bucket_since(lag_before)
        if server_kind in ("service", "transform"):
            statements = asyncio.run(database.committed_transactions(db.server_url, db.name))
            row.sql_per_event = (statements - statements_before) / max(served, 1)
        say(f"{scenario.name}: {server_kind} {row.per_second:,.0f} events/s, p99 {row.p99_ms:.1f} ms")
        return row

    def measure_fairness(self, scenario: Scenario, threads: int) -> list[Row]:
        """Tenant B's usual load alone, then under tenant A's flood, on one service process."""
        args, db = self.args, self.db
        if self.b_key is None:
            self.b_key = asyncio.run(database.add_second_tenant(db, "bench-b", self.hot))
        port = free_port()
        extra = {**scenario.service_env, **args.env_by_scenario[scenario.name]}
        log = self.workdir / f"{scenario.name}-service.log"
        say(f"{scenario.name}: service starting")
        server = self.current = ServerProcess("service", service_command(port, 1),
                                              env=service_env(db.url, extra), port=port,
                                              listeners=1, log_path=log)
        try:
            server.wait_ready(60)
            result = fairness.measure(
                wrk=self.wrk, base_url=server.base_url, path=TRANSFORM_PATH,
                events=self.events["hot"], a_key=db.api_key, b_key=self.b_key,
                threads=threads, connections=scenario.connections or args.connections,
                seconds=args.duration, warmup=args.warmup, timeout_s=args.timeout,
                workdir=self.workdir, say=say)
        finally:
            self.current = None
            server.stop()
        if result.b_errors:
            say(f"{scenario.name}: B had {len(result.b_errors)} errors, e.g. {result.b_errors[0]}")
        self.fairness.setdefault(scenario.name, []).append(result)
        say(f"{scenario.name}: B p99 {result.alone.p99_ms:.1f} ms alone, "
            f"{result.flooded.p99_ms:.1f} ms under the flood (x{result.p99_ratio:.2f})")
        return [
            self.row(scenario, "B alone", fairness.B_CLIENTS, result.alone, server.peak_rss,
                     threads),
            self.row(scenario, "B+flood", fairness.B_CLIENTS, result.flooded, server.peak_rss,
                     threads),
            self.row(scenario, "A flood", scenario.connections or args.connections,
                     result.flood, server.peak_rss, threads),
        ]

    def check_answer(self, scenario: Scenario, server_kind: str, base_url: str,
                     events: Path) -> None:
        """Every peer must give the floor's answer to the same event before any is timed (where
        no floor runs, the answer must only be a 2xx)."""
        with events.open("rb") as lines:
            body = lines.readline().strip()
        method = load_method(scenario)
        if method == "PATHS":
            path, _, body = body.partition(b" ")
            post_event(base_url, self.db.api_key, body, path=path.decode())
            return
        get_path = body.decode() if method == "GET" else None
        answer = post_event(base_url, self.db.api_key, body, get_path,
                            path=transform_path(scenario))
        if scenario.events == "connect":
            self.check_connect_answer(body, answer)
            return
        key = (scenario.pool, get_path or transform_path(scenario))
        if server_kind != "service" and key not in self.floor_answers:
            self.floor_answers[key] = answer  # the first peer's answer is the reference
            return
        expected = self.floor_answers.get(key)
        if expected is not None and answer != expected:
            raise RuntimeError(f"the {server_kind}'s answer differs from the floor's: "
                               + first_difference(expected, answer, server_kind))  # type: ignore[arg-type]

    @staticmethod
    def check_connect_answer(body: bytes, answer: object) -> None:
        """Every profile of the batch answered, in order, with something to send."""
        asked = [p["ProfileId"] for p in orjson.loads(body)["Items"]["CustomerProfiles"]]
        results = answer["Items"]["CustomerProfiles"]  # type: ignore[index]
        if [r["Id"] for r in results] != asked or not all(r["ResultData"]["send"]
                                                         for r in results):
            raise RuntimeError("the connect route did not answer every profile with items: "
                               + repr(results)[:500])

    @functools.cache  # noqa: B019 - one Bench per run; the pools do not change
    def pool_size(self, events: Path) -> int:
        with events.open("rb") as lines:
            return sum(1 for _ in lines)

    def ask_every_path_once(self, base_url: str, events: Path) -> int:
        paths = dict.fromkeys(events.read_text().split())
        for path in paths:
            post_event(base_url, self.db.api_key, b"", path)
        return len(paths)

    def profile(self, server: ServerProcess, load: dict) -> int:
        py_spy = profile.find_py_spy()
        if py_spy is None:
            say("--profile: py-spy is not installed (pip install -e '.[bench]'); skipped")
            return 0
        output = self.args.profile
        say(f"{self.profiled.name}: profiling the service with py-spy for {self.args.duration} s")
        recorder = profile.start(py_spy, server.process.pid, self.args.duration, output)
        extra = run_wrk(**load, seconds=self.args.duration)
        _, problems = recorder.communicate(timeout=60)
        if recorder.returncode != 0 or not output.exists():
            say(f"py-spy failed: {problems.strip()[-500:]}")
        else:
            self.profile_summary = profile.summarise(output)
        return extra.requests

    @staticmethod
    def row(scenario: Scenario, server_kind: str, connections: int, result: LoadResult,
            peak_rss: int, threads: int) -> Row:
        return Row(scenario=scenario.title, server=server_kind, connections=connections,
                   processes=scenario.processes, per_second=result.per_second, p50_ms=result.p50_ms,
                   p99_ms=result.p99_ms, errors=result.errors, timeouts=result.timeouts,
                   requests=result.requests, peak_rss_mb=peak_rss / 2**20, threads=threads)

    # -- results and cleanup -----------------------------------------------------------------

    def settings(self) -> dict[str, str]:
        a = self.args
        return {"big catalog": f"{a.items:,} items", "event": f"{a.endpoints} endpoints x 5 items",
                "wrk": f"{a.connections} connections unless said, {a.duration} s after "
                       f"{a.warmup} s warm-up, timeout {a.timeout} s",
                "repeats": str(a.repeat), "peers": a.peers,
                "pools": f"real warm {a.warm_events:,} events, cold {a.cold_events:,}, content "
                         f"{a.content_requests:,} paths",
                **({"connect batch": f"{a.connect_profiles} profiles x 5 items"}
                   if any(s.events == "connect" for s in a.scenario_list) else {})}

    def report(self) -> None:
        print(heading(self.facts, self.settings()))
        comparison = comparison_table(self.rows, self.args.scenario_list)
        if comparison:
            print(comparison)
            print()
        print(summary_table(self.rows))
        print(notes())
        for name, results in self.fairness.items():
            print(f"\n{fairness.summary(name, results)}")
        by_scenario = {(r.scenario, r.server): r for r in self.rows if r.run == 1}
        user = by_scenario.get((BY_NAME["user"].title, "service"))
        content = by_scenario.get((BY_NAME["content"].title, "service"))
        if user and content and content.per_second:
            print(f"\nuser route / content route (service, requests/s): "
                  f"{user.per_second / content.per_second:.2f}")
        comparison = connect_comparison(self.rows, self.args.connect_profiles,
                                        self.args.endpoints)
        if comparison:
            print(comparison)
        summary = getattr(self, "profile_summary", None)
        if summary:
            print(f"\nprofile of the service under the {self.profiled.name} load "
                  f"(py-spy, {self.args.profile}):")
            print(summary)
        if self.args.json:
            self.args.json.write_text(json.dumps(
                {"machine": self.facts, "settings": self.settings(),
                 "rows": [r.as_json() for r in self.rows]}, indent=2))

    def cleanup(self) -> None:
        if self.current is not None:
            say(f"stopping the {self.current.name} server")
            self.current.stop(grace=10)
        if self.personalize is not None:
            self.personalize.stop()
        if self.db_name is not None:
            try:
                asyncio.run(drop_database(self.server_url, self.db_name))
                say(f"database {self.db_name} dropped")
            except Exception as exc:  # report, and still remove the files
                say(f"could not drop database {self.db_name}: {exc}")
        self.postgres.close()
        if self.args.keep:
            say(f"kept the events and server logs in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def connect_comparison(rows: list[Row], profiles: int, endpoints: int) -> str:
    """Per recipient: the connect route's profiles/s over the transform's endpoints/s, each
    run's pair (same items, one after the other), their median and range ("" without any)."""
    title = BY_NAME["connect"].title
    runs: dict[tuple[int, int], dict[str, Row]] = {}
    for row in rows:
        if row.scenario == title:
            runs.setdefault((row.threads, row.run), {})[row.server] = row
    ratios = sorted(
        (pair["service"].per_second * profiles) / (pair["transform"].per_second * endpoints)
        for pair in runs.values()
        if "service" in pair and "transform" in pair and pair["transform"].per_second)
    if not ratios:
        return ""
    middle = ratios[len(ratios) // 2] if len(ratios) % 2 else \
        (ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2]) / 2
    spread = f" (range {ratios[0]:.2f}-{ratios[-1]:.2f})" if len(ratios) > 1 else ""
    return (f"\nconnect route profiles/s ({profiles}-profile batches) / transform endpoints/s "
            f"({endpoints}-endpoint events): {middle:.2f}{spread}")


def budget_seconds(args: argparse.Namespace) -> int:
    per_run = args.warmup + args.duration + 60 + args.items / 100_000
    runs = sum(len(s.with_independent()) for s in args.scenario_list) * \
        len(args.thread_counts) * args.repeat
    batch = sum(args.batch_lines / 2_000 for s in args.scenario_list if s.driver == "batch")
    return int(300 + args.items / 2_000 + batch + (runs + (1 if args.profile else 0)) * per_run)


def compare(rows: list[Row]) -> list[Row]:
    """One run of a scenario's peers: each row's events/s over the floor's and the naive's."""
    by_kind = {row.server: row for row in rows}
    for row in rows:
        twin = by_kind.get(f"{row.server}-indep")
        if twin is not None and twin.per_second:
            row.vs_independent = row.per_second / twin.per_second
        for peer, attribute in (("floor", "vs_floor"), ("naive", "vs_naive")):
            base = by_kind.get(peer)
            if base is not None and base.per_second:
                setattr(row, attribute, row.per_second / base.per_second)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def out_of_time(_signum: int, _frame: object) -> None:
        raise OutOfTime(f"the run took longer than its budget of {budget} s")

    budget = args.budget or budget_seconds(args)
    # SIGINT too: a process started in the background by a non-interactive shell inherits it ignored.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(budget)
    bench = Bench(args)
    started = time.monotonic()
    status = 0
    say("planned scenarios: " + "; ".join(bench.plan())
        + f" x {len(args.thread_counts)} thread count(s) x {args.repeat} repeat(s)")
    try:
        bench.prepare()
        bench.run()
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        status = 130
    except (WrkMissing, OutOfTime, RuntimeError, OSError, asyncpg.PostgresError,
            subprocess.SubprocessError) as exc:
        say(f"failed: {exc}")
        status = 1
    finally:
        signal.alarm(0)
        # A second Ctrl-C must not cut the cleanup short; every step of it is bounded.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            bench.cleanup()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if bench.rows:  # what was measured, even when the run stopped early
        bench.report()
    say(f"{'done' if status == 0 else 'stopped'} after {time.monotonic() - started:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
