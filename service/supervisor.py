"""`serve --workers N`: gunicorn's arbiter keeps N workers (service/supervised_worker.py) serving
on one listening socket.

gunicorn's arbiter is the well-kept process manager aiohttp documents for this: it forks the
workers, replaces one that dies as soon as the kernel says so (SIGCHLD), stops one whose event
loop is stuck (no heartbeat for 30 s), and forwards SIGTERM / SIGINT to every worker. On top of
it, here:

- The socket is bound here, before gunicorn starts, so a port in use is one clear message (not
  gunicorn's five retries), `--port 0` works, and the socket outlives every worker: while one is
  replaced, new connections wait in the one accept queue and the others take them.
- A worker that dies is logged with its pid and cause (the signal, or the exit code) and replaced
  at once; one that keeps dying soon after it starts is replaced after a growing pause (1 s, 2 s,
  ... 30 s) and logged as such, instead of being forked again and again. A worker that cannot
  start (Postgres unreachable, say) is one of those: gunicorn would halt every worker.
- SIGHUP replaces the workers one at a time: a new one first, the old one asked to drain only once
  the new one serves (gunicorn's own HUP stops them all while their successors still boot).
- Metrics: every process writes its values into a directory made (or emptied) for this start, so a
  scrape of any worker sums them; a dead worker's live-only gauges are dropped
  (prometheus_client's multiprocess mode, service/runtime/metrics.py).
- gunicorn's own lines go through our JSON log lines; its control socket is off.

A forked worker leaves with `os._exit`, so it never unwinds into the parent's `with` blocks (the
embedded Postgres, the metrics directory).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gunicorn import glogging
from gunicorn import sock as gunicorn_sock
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from service.runtime.metrics import (
    SupervisorMetrics,
    forget_process,
    share_between_processes,
    shared_directory,
)
from service.runtime.settings import Settings
from service.server import base_url_of, cannot_listen

log = logging.getLogger(__name__)

# A worker that dies within this long after it started counts as "keeps dying".
QUICK_DEATH_SECONDS = 10.0
# The pause before replacing a worker, by how many died quickly in a row (the first: none).
BACKOFF_SECONDS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
# How long a replacement may take to serve during a SIGHUP before the rest are left running.
REPLACEMENT_START_SECONDS = 60.0
# No heartbeat for this long: gunicorn stops the worker (its event loop is stuck).
HEARTBEAT_TIMEOUT = 30
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def run_supervised(settings: Settings, workers: int, announce: Callable[[str], None]) -> int:
    """Serve with `workers` supervised workers until SIGTERM or SIGINT; the exit status."""
    with metrics_directory() as directory:
        share_between_processes(directory)
        try:
            listener = listen(settings)
        except OSError as exc:
            raise cannot_listen(settings, exc) from exc
        application = SupervisedService(settings, workers)
        supervisor = Supervisor(application, listener, announce)
        try:
            supervisor.run()
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


@contextlib.contextmanager
def metrics_directory() -> Iterator[str]:
    """The directory the workers share their metrics through: PROMETHEUS_MULTIPROC_DIR if set
    (emptied now: files of an earlier start would be counted again), else a new one, removed
    at exit."""
    given = shared_directory()
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        yield str(path)
        return
    made = tempfile.mkdtemp(prefix="catalog-enricher-metrics-")
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


def listen(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    return socket.create_server((settings.host, settings.port), family=family, backlog=1024)


class JsonLinesLogger(glogging.Logger):
    """gunicorn's messages as our log lines: its handlers removed, its loggers propagate to the
    root logger that setup_logging configured."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
        self.error_log.propagate = True


def _fork_hook(server: Supervisor, worker: Any) -> None:
    server.before_fork(worker)


def _exit_hook(server: Supervisor, worker: Any) -> None:
    pass  # child_exit: reported by Supervisor.reap_workers, which knows the exit status


class SupervisedService(BaseApplication):
    """gunicorn's view of `serve --workers N`: its configuration; the app is built per worker."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.workers = workers
        super().__init__()

    def load_config(self) -> None:
        options = {
            "bind": [f"{self.settings.host}:{self.settings.port}"],
            "workers": self.workers,
            "worker_class": "service.supervised_worker.EnricherWorker",
            # Past this, gunicorn kills a draining worker: ours give up on requests in flight
            # after ENRICHER_SHUTDOWN_TIMEOUT, then close the pool.
            "graceful_timeout": math.ceil(self.settings.shutdown_timeout) + 10,
            "timeout": HEARTBEAT_TIMEOUT,
            "logger_class": JsonLinesLogger,
            "loglevel": self.settings.log_level.lower(),
            "proc_name": "catalog-enricher",
            "control_socket_disable": True,
            "pre_fork": _fork_hook,
            "child_exit": _exit_hook,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> None:
        return None  # each worker builds its app from `settings` (EnricherWorker._run)


class Supervisor(Arbiter):
    def __init__(self, app: SupervisedService, listener: socket.socket,
                 announce: Callable[[str], None]) -> None:
        super().__init__(app)
        self.base_url = base_url_of(listener)
        socket_class = (gunicorn_sock.TCP6Socket if listener.family == socket.AF_INET6
                        else gunicorn_sock.TCPSocket)
        # gunicorn takes over a bound, listening socket given by file descriptor (as from systemd).
        self.LISTENERS = [socket_class(listener.getsockname(), self.cfg, self.log,
                                       fd=os.dup(listener.fileno()))]
        listener.close()
        self.announce = announce
        self.announced = False
        self.metrics = SupervisorMetrics()
        self.started_at: dict[int, float] = {}
        self.retiring: set[int] = set()
        self.stopping = False
        self.stop_requested = False
        self.quick_deaths = 0
        self.next_spawn_at = 0.0

    # --- workers starting -------------------------------------------------------------------

    def before_fork(self, worker: Any) -> None:
        # The heartbeat file's time before the worker ever beats: it serves once that changes.
        worker.beat_at_fork = worker.tmp.last_update()

    def is_serving(self, pid: int) -> bool:
        worker = self.WORKERS.get(pid)
        return worker is not None and worker.tmp.last_update() != worker.beat_at_fork

    def spawn_worker(self) -> int:
        parent = os.getpid()
        try:
            pid = super().spawn_worker()
        except BaseException as exc:
            if os.getpid() != parent:  # the worker, done: leave without unwinding the parent's
                _exit_worker(exc)
            raise
        self.started_at[pid] = time.monotonic()
        return pid

    def manage_workers(self) -> None:
        if not self.announced and any(self.is_serving(pid) for pid in self.WORKERS):
            self.announced = True
            log.info("workers serving", extra={"url": self.base_url, "workers": self.num_workers})
            self.announce(self.base_url)
        if len(self.WORKERS) < self.num_workers and time.monotonic() < self.next_spawn_at:
            return  # backing off: a worker kept dying
        super().manage_workers()

    # --- workers ending ---------------------------------------------------------------------

    def reap_workers(self) -> None:
        """Collect every child that ended; report and count the workers that were not asked to.
        (Replaces gunicorn's, which logs the cause but keeps no exit status to act on.)"""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.WORKERS.pop(pid, None)
            if worker is None:
                continue  # not a worker: an orphan re-parented to us (as PID 1 in a container)
            worker.tmp.close()
            self.worker_ended(pid, status)
            self.cfg.child_exit(self, worker)

    def worker_ended(self, pid: int, status: int) -> None:
        forget_process(pid)
        started = self.started_at.pop(pid, time.monotonic())
        lived = time.monotonic() - started
        if pid in self.retiring or self.stopping:
            self.retiring.discard(pid)
            log.info("worker stopped", extra={"pid": pid})
            return
        cause = exit_cause(status)
        self.metrics.worker_exits.labels(cause).inc()
        self.quick_deaths = self.quick_deaths + 1 if lived < QUICK_DEATH_SECONDS else 1
        pause = BACKOFF_SECONDS[min(self.quick_deaths, len(BACKOFF_SECONDS)) - 1]
        self.next_spawn_at = time.monotonic() + pause
        fields = {"pid": pid, "cause": cause, "lived_seconds": round(lived, 3)}
        if pause:
            log.error("a worker keeps dying; replacing it after a pause",
                      extra={**fields, "deaths_in_a_row": self.quick_deaths,
                             "pause_seconds": pause})
        else:
            log.error("worker died; replacing it", extra=fields)

    def stop(self, graceful: bool = True) -> None:
        if not self.stopping:
            log.info("stopping: every worker drains", extra={"workers": list(self.WORKERS)})
        self.stopping = True
        super().stop(graceful)

    # --- signals ----------------------------------------------------------------------------

    def handle_hup(self) -> None:
        """Replace the workers one at a time, each only once its successor serves."""
        old = [pid for pid, _ in sorted(self.WORKERS.items(), key=lambda item: item[1].age)]
        log.info("SIGHUP: replacing the workers one at a time", extra={"workers": old})
        for pid in old:
            if pid not in self.WORKERS:
                continue  # died meanwhile; the main loop replaces it
            successor = self.spawn_worker()
            self._wait_for(lambda new=successor: self.is_serving(new) or new not in self.WORKERS,
                           REPLACEMENT_START_SECONDS)
            if self.stop_requested:
                return
            if not self.is_serving(successor):
                log.error("a replacement worker did not start serving; the others keep running",
                          extra={"pid": successor})
                if successor in self.WORKERS:
                    self.retiring.add(successor)
                    self.kill_worker(successor, signal.SIGTERM)
                return
            self.retiring.add(pid)
            self.kill_worker(pid, signal.SIGTERM)
            self._wait_for(lambda old_pid=pid: old_pid not in self.WORKERS,
                           self.cfg.graceful_timeout)
            if self.stop_requested:
                return
            log.info("worker replaced", extra={"pid": pid, "by": successor})
        log.info("SIGHUP: every worker replaced", extra={"workers": list(self.WORKERS)})

    def handle_usr2(self) -> None:
        log.warning("SIGUSR2 (re-executing the supervisor) is not supported; SIGHUP replaces "
                    "the workers")

    def _wait_for(self, condition: Callable[[], bool], seconds: float) -> None:
        """Until `condition` holds or `seconds` pass, reaping ended workers meanwhile; at once
        if a stop signal arrives (`stop_requested`; the main loop handles it next)."""
        deadline = time.monotonic() + seconds
        pending: list[int] = []
        try:
            while time.monotonic() < deadline and not condition():
                while not self.SIG_QUEUE.empty():
                    pending.append(self.SIG_QUEUE.get_nowait())
                if any(sig in STOP_SIGNALS for sig in pending):
                    log.info("SIGHUP: replacing cut short by a stop signal")
                    self.stop_requested = True
                    return
                time.sleep(0.05)
                self.reap_workers()
        finally:
            for sig in pending:
                self.SIG_QUEUE.put_nowait(sig)


def exit_cause(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return signal.Signals(number).name
        except ValueError:
            return f"signal_{number}"
    return f"exit_{os.WEXITSTATUS(status) if os.WIFEXITED(status) else status}"


def _exit_worker(exc: BaseException) -> None:
    code = exc.code if isinstance(exc, SystemExit) else 1
    code = code if isinstance(code, int) else (0 if code is None else 1)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)
