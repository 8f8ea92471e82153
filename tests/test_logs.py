"""The serving process's log lines: batched on stderr, and the access log's direct path writes
exactly what the logging path would."""

from __future__ import annotations

import logging

import orjson
import pytest

from service.runtime import logs
from service.runtime.logs import batch_log_lines, flush_log_lines, setup_logging, write_info


@pytest.fixture
def serving_logs(capfd):
    """The serving set-up, made while capfd captures stderr, and nothing else on the root logger
    (pytest's own log capture adds a handler for each test; the serving process has none)."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    setup_logging("INFO")
    batch_log_lines()
    batching = root.handlers[:]

    def only_ours() -> None:
        root.handlers[:] = batching

    yield only_ours
    flush_log_lines()
    root.handlers[:], root.level = saved


def test_direct_access_line_matches_the_logging_line(serving_logs, capfd):
    serving_logs()
    log = logging.getLogger("service.requests")
    assert logs._direct_handler(log) is not None  # the line below takes the direct path
    fields = {"request_id": "r-1", "status": 200, "ms": 1.5, "tenant": None, "odd": {1, 2}}
    write_info(log, "request", fields)
    log.info("request", extra=fields)
    flush_log_lines()
    direct, classic = (orjson.loads(line) for line in capfd.readouterr().err.splitlines())
    assert direct.pop("ts")[:19] == classic.pop("ts")[:19]  # the same second, most likely
    assert direct == classic
    assert list(direct) == ["level", "logger", "msg", "request_id", "status", "ms", "tenant", "odd"]


def test_info_lines_wait_for_a_flush_warnings_do_not(serving_logs, capfd):
    serving_logs()
    log = logging.getLogger("service.requests")
    write_info(log, "request", {"n": 1})
    assert capfd.readouterr().err == ""  # batched
    log.warning("something is wrong")
    lines = capfd.readouterr().err.splitlines()  # the warning flushed the batch before it
    assert [orjson.loads(line)["msg"] for line in lines] == ["request", "something is wrong"]


def test_a_handler_of_the_callers_gets_the_ordinary_record(caplog):
    log = logging.getLogger("service.requests")
    with caplog.at_level(logging.INFO, logger="service.requests"):
        write_info(log, "request", {"request_id": "r-2"})
    assert [r.request_id for r in caplog.records] == ["r-2"]
