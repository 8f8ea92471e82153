"""JSON log lines on stderr: one object per line, extras from `extra=` as top-level keys."""

from __future__ import annotations

import io
import logging
import sys
import threading
import time
from typing import Any

import orjson

from service.runtime import tracing

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    # The access log writes a line per request: the second's text is made once per second.
    _second = -1
    _second_text = ""

    def timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        fields = {key: value for key, value in record.__dict__.items()
                  if key not in _STANDARD and not key.startswith("_")}
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return self.line(record.created, record.levelname.lower(), record.name,
                         record.getMessage(), fields)

    def line(self, created: float, level: str, logger: str, message: str,
             fields: dict[str, Any]) -> str:
        """One log line: time, level, logger and message first, then the fields."""
        entry = {"ts": self.timestamp(created), "level": level, "logger": logger, "msg": message,
                 **fields}
        if tracing.tracer is not None:  # a line written inside a span names it
            entry.update(tracing.log_fields())
        return orjson.dumps(entry, default=str).decode()


def setup_logging(level: str) -> None:
    # What the Logging HOWTO's "Optimization" section lists as safe to skip when nothing shows it:
    # our lines carry no caller, thread or process fields, and the access log writes one a request.
    logging._srcfile = None  # no stack walk for the caller's file, line and function
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's own access log duplicates ours (and costs throughput); ours is in middlewares.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # pgserver narrates every step of starting Postgres at INFO.
    logging.getLogger("pgserver").setLevel(logging.WARNING)


# How late a batched INFO line may reach stderr.
FLUSH_SECONDS = 0.5


class BatchingHandler(logging.StreamHandler):
    """Lines to stderr in batches, for a serving process: the access log writes one a request, and
    a system call for each cost ~2 % of a warm transform. WARNING and above are written at once;
    the rest at most FLUSH_SECONDS later (a daemon thread flushes), and at exit."""

    def __init__(self) -> None:
        stream = io.TextIOWrapper(
            io.BufferedWriter(io.FileIO(sys.stderr.fileno(), "w", closefd=False), 1 << 16),
            encoding="utf-8", errors="backslashreplace",
        )
        super().__init__(stream)
        threading.Thread(target=self._flush_often, name="log-flush", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
            if record.levelno >= logging.WARNING:
                self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _flush_often(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush()


def write_info(logger: logging.Logger, message: str, fields: dict[str, Any]) -> None:
    """`logger.info(message, extra=fields)`, the same line, written straight to the serving
    process's BatchingHandler when that is where it would go: a LogRecord, its formatting and the
    handler machinery took ~15 µs, the access log's share of every request. Anywhere else (a
    handler of the caller's, tests capturing logs) it is an ordinary `logger.info`."""
    handler = _direct_handler(logger)
    if handler is None:
        logger.info(message, extra=fields)
        return
    line = handler.formatter.line(time.time(), "info", logger.name, message, fields)
    with handler.lock:
        handler.stream.write(line + handler.terminator)


def _direct_handler(logger: logging.Logger) -> Any:
    # Only the plain serving set-up: the root's one BatchingHandler, nothing in between.
    if logger.handlers or logger.filters or not logger.propagate or logger.disabled:
        return None
    root = logging.getLogger()
    if len(root.handlers) != 1 or root.filters:
        return None
    handler = root.handlers[0]
    if (type(handler) is not BatchingHandler or handler.filters
            or type(handler.formatter) is not JsonFormatter):
        return None
    return handler


def batch_log_lines() -> None:
    """Serving: write the root logger's lines in batches (BatchingHandler), same format."""
    root = logging.getLogger()
    formatter = root.handlers[0].formatter if root.handlers else JsonFormatter()
    handler = BatchingHandler()
    handler.setFormatter(formatter)
    root.handlers[:] = [handler]


def flush_log_lines() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()
