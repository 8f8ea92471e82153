"""`serve --workers 2` under its supervisor: a killed worker is replaced within a second, SIGTERM
drains every worker, SIGHUP replaces them one at a time, a worker that keeps dying is restarted
with backoff, and any scrape of /metrics counts the requests of every worker."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.supervisor import BACKOFF_SECONDS
from tests.support.owned_servers import OwnedPostgres, pg_available, scratch_folder
from tests.support.serve_process import (
    EVENT,
    TRANSFORM,
    Load,
    ServeProcess,
    clean_env,
    request,
    transform,
    wait_until,
    wall_time,
    worker_of,
)

pytestmark = [pytest.mark.timing, pytest.mark.slow]


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    return tmp_path / "metrics"


@pytest.fixture
def serve(database_url: str, metrics_dir: Path) -> Iterator[ServeProcess]:
    """`serve --demo --workers 2` on a free port, both workers serving."""
    server = ServeProcess("--workers", "2", env=clean_env(
        DATABASE_URL=database_url, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        ENRICHER_SHUTDOWN_TIMEOUT="10",
    ))
    try:
        server.wait_serving(2)
        yield server
    finally:
        server.close()


def scrape(serve: ServeProcess) -> tuple[str, str]:
    """(the answering worker, the exposition text); a failed scrape shows the workers' log."""
    status, headers, body = request(serve.port, "GET", "/metrics")
    assert status == 200, f"{status} {body[:300]!r}\n{serve.tail(60)}"
    return worker_of(headers["X-Request-Id"]), body.decode()


def ready_until_draining(conns: list[http.client.HTTPConnection],
                         within: float = 30) -> list[tuple[int, dict]]:
    """Ask /readyz on `conns` (kept-alive connections to one worker) until it answers 503; each
    connection is asked again while it is kept alive. The answers, in order."""
    answers: list[tuple[int, dict]] = []
    deadline = time.monotonic() + within
    for conn in conns:
        while time.monotonic() < deadline:
            conn.request("GET", "/readyz")
            response = conn.getresponse()
            answers.append((response.status, json.loads(response.read())))
            if response.status == 503:
                return answers
            if response.will_close:
                break
            time.sleep(0.01)  # paces the polling of another process
    return answers


def refused(port: int) -> bool:
    """Whether a new connection to `port` is refused (one that is not is closed at once)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def sample(text: str, name: str, **labels: str) -> float:
    wanted = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else ""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, label_text = series.partition("{")
        if metric != name:
            continue
        found = "{" + ",".join(sorted(label_text.rstrip("}").split(","))) + "}" if label_text else ""
        if found == wanted:
            return float(value)
    return 0.0


class TestWorkerDeath:
    """A worker killed as by the OOM killer is replaced at once; one that keeps dying, slower."""

    def test_killed_worker_is_replaced_within_a_second(self, serve: ServeProcess):
        original = serve.serving_workers()
        with Load(serve.port, serve.key, threads=4) as load:
            wait_until(lambda: load.count() >= 40, 30, "40 answers")
            victim = min(original)
            killed_at = time.time()
            os.kill(victim, signal.SIGKILL)

            # Replaced at once: the first death is reported without a pause (a worker that keeps
            # dying is replaced after one: the next test), and its successor serves. How soon it
            # serves is how long a worker takes to start on this machine: printed, not asserted.
            died = serve.wait_for_log("worker died; replacing it", pid=victim)
            assert died["cause"] == "SIGKILL"
            successor = wait_until(lambda: serve.serving_workers() - original, 60,
                                   "a new serving worker", serve.tail)
            (new_pid,) = successor
            serving_at = wall_time(serve.wait_for_log("worker serving", pid=new_pid))
            print(f"SIGKILLed worker {victim} replaced by {new_pid}, serving "
                  f"{serving_at - killed_at:.3f} s after the kill")
            assert not serve.logged("a worker keeps dying; replacing it after a pause")

            # The newcomer takes fresh connections too; keep the load on until it has answered.
            before = {o.worker for o in list(load.outcomes) if o.ended < killed_at}
            wait_until(lambda: load.answered_by(since=serving_at) - before, 30,
                       "an answer from the new worker")
            after_replacement = load.count()
            wait_until(lambda: load.count() >= after_replacement + 40, 30, "40 more answers")
        outcomes = load.outcomes
        failed = [o for o in outcomes if not o.ok]
        print(f"{len(outcomes)} requests, {len(failed)} failed: "
              f"{[o.error or o.status for o in failed]}")
        # Only requests the killed worker had already accepted can fail ...
        assert all(o.started < killed_at for o in failed)
        assert len(failed) <= 4
        # ... and every request sent after the replacement succeeded.
        assert all(o.ok for o in outcomes if o.started >= serving_at)

    def test_a_worker_that_keeps_dying_is_restarted_with_backoff(self, serve: ServeProcess):
        """Each replacement is killed as soon as it appears: the pauses before the next one grow
        (0, then 1 s, 2 s, 4 s), each death is logged, and the other worker serves throughout."""
        survivor = max(serve.serving_workers())
        seen = set(serve.workers())
        pauses: list[float] = []
        victim = min(seen - {survivor})
        with Load(serve.port, serve.key, threads=2) as load:
            for _ in range(4):
                os.kill(victim, signal.SIGKILL)
                killed = time.monotonic()
                victim = wait_until(lambda: next(iter(serve.workers() - seen), None), 40,
                                    "a replacement worker", serve.tail)
                pauses.append(time.monotonic() - killed)
                seen.add(victim)
        print("pauses before each replacement:", [f"{p:.2f}" for p in pauses])
        assert pauses[0] < 1.0
        for pause, backoff in zip(pauses[1:], BACKOFF_SECONDS[1:], strict=False):
            assert pause >= backoff
        assert pauses[1] < pauses[2] < pauses[3]
        reports = serve.logged("a worker keeps dying; replacing it after a pause")
        assert [r["deaths_in_a_row"] for r in reports] == [2, 3, 4]
        assert [r["pause_seconds"] for r in reports] == list(BACKOFF_SECONDS[1:4])
        assert all(r["cause"] == "SIGKILL" for r in reports)
        assert all(o.ok for o in load.outcomes if o.worker), "the surviving worker kept serving"
        assert survivor in serve.workers()
        _, text = scrape(serve)
        assert sample(text, "enricher_worker_exits_total", cause="SIGKILL") == 4

    @pytest.mark.skipif(not pg_available(), reason="needs the Postgres server binaries")
    def test_a_worker_that_cannot_start_is_retried_while_the_others_serve(self):
        """Postgres down while a worker is replaced: the replacement cannot start, exits, and is
        retried with backoff (gunicorn alone would halt every worker); once Postgres is back a
        replacement serves."""
        with scratch_folder("ce-pg-") as folder:
            postgres = OwnedPostgres(folder / "cluster")
            postgres.init()
            postgres.start()
            server = ServeProcess("--workers", "2", env=clean_env(
                DATABASE_URL=postgres.url, ENRICHER_DB_CONNECT_TIMEOUT="1"))
            try:
                original = server.wait_serving(2)
                postgres.stop("immediate")
                victim, survivor = sorted(original)
                os.kill(victim, signal.SIGKILL)
                report = server.wait_for_log("a worker keeps dying; replacing it after a pause",
                                             cause="exit_1", timeout=30)
                print("reported:", {k: report[k] for k in ("pid", "cause", "deaths_in_a_row",
                                                          "pause_seconds")})
                assert server.logged("worker failed; exiting", pid=report["pid"])
                assert server.process.poll() is None and survivor in server.workers()

                postgres.start()
                wait_until(lambda: len(server.serving_workers() - original) == 1, 60,
                           "a replacement serving", server.tail)
                status, _, body = transform(server.port, server.key)
                assert status == 200 and b"Fleabag" in body
                assert server.stop() == 0
            finally:
                server.close()
                postgres.stop("immediate")


class TestSignals:
    """SIGTERM drains every worker; SIGHUP replaces them one by one without a failed request."""

    def test_sigterm_answers_requests_in_flight_and_turns_readiness_off(
            self, serve: ServeProcess):
        # Keep-alive connections to each worker: one for a request in flight, three for /readyz
        # (a readiness request that races the signal is answered 200 and its connection closed:
        # the next one asks again).
        wanted = 4
        opened: list[http.client.HTTPConnection] = []  # closed at the end, whatever happens
        try:
            per_worker: dict[str, list[http.client.HTTPConnection]] = {}
            spare: list[http.client.HTTPConnection] = []
            for _ in range(80):
                conn = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=20)
                opened.append(conn)
                conn.request("GET", "/readyz")
                response = conn.getresponse()
                response.read()
                assert response.status == 200
                held = per_worker.setdefault(worker_of(response.getheader("X-Request-Id")), [])
                (held if len(held) < wanted else spare).append(conn)
                if len(per_worker) == 2 and all(len(c) == wanted for c in per_worker.values()):
                    break
            for conn in spare:
                conn.close()
            assert len(per_worker) == 2 and all(len(c) == wanted for c in per_worker.values())

            in_flight = [conns[0] for conns in per_worker.values()]
            for conn in in_flight:  # headers and the start of the body: the handler is waiting
                conn.putrequest("POST", TRANSFORM)
                for name, value in (("Authorization", f"Bearer {serve.key}"),
                                    ("Content-Type", "application/json"),
                                    ("Content-Length", str(len(EVENT)))):
                    conn.putheader(name, value)
                conn.endheaders()
                conn.send(EVENT[:10])
            # No wait: on loopback the bytes are in the worker's socket when send returns, and a
            # worker draining reads what its sockets hold (its request in flight from then on)
            # before it looks at what is in flight (service/server.py, drain).

            signalled = time.monotonic()
            serve.signal(signal.SIGTERM)
            for worker, conns in per_worker.items():
                # Until the worker has the signal, /readyz is 200 on a connection kept alive; once
                # it has, 503 (or, for a request that raced the signal, 200 and the connection
                # closed: the next held one asks again).
                answers = ready_until_draining(conns[1:])
                print(f"worker {worker}: /readyz {[status for status, _ in answers]} within "
                      f"{time.monotonic() - signalled:.3f} s of SIGTERM")
                status, problem = answers[-1]
                assert status == 503 and problem["field"] == "server"
            # Then the listener closes (the supervisor's and every worker's copy of it): new
            # connections are refused.
            wait_until(lambda: refused(serve.port), 30, "the listener closed", serve.tail)

            for conn in in_flight:
                conn.send(EVENT[10:])
                response = conn.getresponse()
                body = response.read()
                assert response.status == 200, body
                assert b"Fleabag" in body
                assert response.getheader("Connection") == "close"
            assert serve.wait(timeout=10 + 5) == 0
            print(f"exited {time.monotonic() - signalled:.2f} s after SIGTERM")
        finally:
            for conn in opened:
                conn.close()

    def test_sighup_replaces_workers_one_at_a_time_without_a_failed_request(
            self, serve: ServeProcess):
        original = serve.serving_workers()
        with Load(serve.port, serve.key, threads=4) as load:
            wait_until(lambda: load.count() >= 40, 30, "40 answers")
            hup_at = time.time()
            serve.signal(signal.SIGHUP)
            serve.wait_for_log("SIGHUP: every worker replaced", timeout=90)
            wait_until(lambda: (lambda now: len(now) == 2 and not now & original)(
                serve.serving_workers()), 10, "two new serving workers", serve.tail)
            done_at = time.time()
            wait_until(lambda: load.answered_by(since=done_at) and load.count() > 0, 30,
                       "answers after the replacement")
        outcomes = load.outcomes
        print(f"{len(outcomes)} requests across SIGHUP, "
              f"{sum(1 for o in outcomes if o.started >= hup_at)} after it")
        assert all(o.ok for o in outcomes), [o.error or o.status for o in outcomes if not o.ok]

        # One at a time: each old worker is asked to stop only once its successor serves, and
        # the second successor starts only after the first old worker has stopped.
        lines = sorted((e for e in serve.logs() if wall_time(e) >= hup_at - 1), key=wall_time)
        events = [(e["msg"], e.get("pid"), e.get("by")) for e in lines
                  if e.get("msg") in ("worker serving", "worker stopped", "worker replaced")]
        replaced = [(pid, by) for msg, pid, by in events if msg == "worker replaced"]
        assert {pid for pid, _ in replaced} == original
        order = [(msg, pid) for msg, pid, _ in events if msg != "worker replaced"]
        (first_old, first_new), (second_old, second_new) = replaced
        assert order.index(("worker serving", first_new)) < order.index(("worker stopped",
                                                                         first_old))
        assert order.index(("worker stopped", first_old)) < order.index(("worker serving",
                                                                         second_new))
        assert order.index(("worker serving", second_new)) < order.index(("worker stopped",
                                                                          second_old))


class TestSharedMetrics:
    """Every scrape, whichever worker answers it, counts the requests of all workers."""

    def test_every_scrape_counts_all_requests(self, serve: ServeProcess, metrics_dir: Path):
        with Load(serve.port, serve.key, threads=8, limit=200) as load:
            wait_until(lambda: load.count() == 200, 60, "200 answers")
        outcomes = load.outcomes
        assert len(outcomes) == 200 and all(o.ok for o in outcomes)
        answered_by = [o.worker for o in outcomes]
        spread = {w: answered_by.count(w) for w in set(answered_by)}
        print(f"{len(outcomes)} requests, per worker: {spread}")
        assert len(spread) == 2

        scrapers: dict[str, int] = {}
        for _ in range(40):
            worker, text = scrape(serve)
            scrapers[worker] = scrapers.get(worker, 0) + 1
            assert sample(text, "enricher_http_requests_total", route="transform", method="POST",
                          status="200") == len(outcomes)
            if len(scrapers) == 2 and sum(scrapers.values()) >= 10:
                break
        print(f"scrapes per worker: {scrapers}")
        assert set(scrapers) == set(spread)

        # A worker that dies: its counts stay in the sums, its live-only gauge goes.
        victim = min(serve.serving_workers())
        assert (metrics_dir / f"gauge_livesum_{victim}.db").exists()
        os.kill(victim, signal.SIGKILL)
        serve.wait_for_log("worker died; replacing it", pid=victim)
        serve.wait_serving(2)
        assert not (metrics_dir / f"gauge_livesum_{victim}.db").exists()
        assert (metrics_dir / f"counter_{victim}.db").exists()
        _, text = scrape(serve)
        assert sample(text, "enricher_http_requests_total", route="transform", method="POST",
                      status="200") == len(outcomes)


def test_workers_on_the_embedded_postgres(tmp_path: Path, embedded_data_dir: Path):
    """No DATABASE_URL: the workers share the embedded Postgres the supervisor started, the demo
    answers, and a stop leaves the embedded Postgres stopped cleanly and no metrics folder."""
    # Its own temporary folder: other tests' servers, running alongside, make metrics folders too.
    temp = tmp_path / "tmp"
    temp.mkdir()
    server = ServeProcess("--workers", "2", env=clean_env(ENRICHER_DATA_DIR=str(embedded_data_dir),
                                                          TMPDIR=str(temp)))
    try:
        server.wait_serving(2)
        for _ in range(6):
            status, _, body = transform(server.port, server.key)
            assert status == 200 and b"Fleabag" in body
        assert len([*temp.glob("catalog-enricher-metrics-*")]) == 1  # the workers' metrics
        assert server.stop() == 0
    finally:
        server.close()
    assert not (embedded_data_dir / "pgdata" / "postmaster.pid").exists()
    assert not [*temp.glob("catalog-enricher-metrics-*")]
