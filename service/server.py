"""Running the service: one process, or supervised workers sharing one listening socket.

`run_server` owns the whole life of `serve`: the embedded Postgres when DATABASE_URL is unset,
migrations (and the demo) before any worker listens, then either the app in this process or, with
`--workers N`, the supervisor (service/supervisor.py) and its workers. Either way a process
serves through `ServingApp`: on SIGTERM or SIGINT `/readyz` answers 503 at once, the listener
closes, requests in flight finish (up to ENRICHER_SHUTDOWN_TIMEOUT), then the pool and (in the
parent) the embedded Postgres shut down.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
import time
from collections.abc import Callable

from aiohttp import web

from service import __version__
from service.demo import curl_line, load_demo
from service.runtime import tracing
from service.runtime.gc_tuning import tune_for_serving
from service.runtime.logs import batch_log_lines, flush_log_lines
from service.runtime.settings import Settings
from service.storage import migrations
from service.storage.db import connect
from service.storage.embedded_postgres import embedded_postgres
from service.storage.migrations import apply_migrations
from service.web.app import create_app
from service.web.app_keys import METRICS, REQUESTS_IN_FLIGHT
from service.web.http_server import ServiceRunner
from service.web.request_tracker import RequestTracker

log = logging.getLogger(__name__)


def install_event_loop(choice: str) -> None:
    """The event loop ENRICHER_EVENT_LOOP names. The stdlib's by default: uvloop costs less per
    callback, but under 256 connections it left some of them unanswered for seconds while it
    served the others (wrk timeouts, p99 ten times the median), the stdlib's loop none."""
    if choice == "uvloop":  # Settings checked that it is installed
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def running_loop_name() -> str:
    """Which event loop this process serves on ("asyncio" or "uvloop"), for its start line."""
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]


async def prepare_database(settings: Settings, demo: bool) -> str | None:
    """Apply pending migrations, unless ENRICHER_MIGRATE_ON_START=false leaves them to another
    (then only say which are pending); load the demo; returns the demo key when asked for one."""
    conn = await connect(settings)
    try:
        if settings.migrate_on_start:
            await apply_migrations(conn)
        else:
            pending = await migrations.pending_versions(conn, migrations.discover())
            if pending:
                log.warning("migrations pending: left to `catalog-enricher migrate` "
                            "(ENRICHER_MIGRATE_ON_START=false); /readyz answers 503 until then",
                            extra={"pending": [f"{v:04d}" for v in pending]})
        return await load_demo(conn) if demo else None
    finally:
        await conn.close()


def cannot_listen(settings: Settings, exc: OSError) -> SystemExit:
    return SystemExit(
        f"catalog-enricher: cannot listen on {settings.host}:{settings.port}: "
        f"{exc.strerror or exc} (choose another with --port or ENRICHER_PORT)"
    )


def base_url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host if ':' not in host else f'[{host}]'}:{port}"


class ServingApp:
    """One process's app, from setup to a graceful stop: the single process of `serve` and each
    supervised worker run one. Log lines are batched, the garbage collector tuned once the app
    is set up, and a stop drains before aiohttp's cleanup (see web/request_tracker.py)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Traces (when OTEL_* asks for them) before the app, whose middleware depends on them; a
        # supervised worker makes its ServingApp after the fork, so its exporter is its own.
        tracing.start(__version__)
        self.app = create_app(settings)
        # Refusals of aiohttp's HTTP parser answered as problems (service/web/http_server.py).
        self.runner = ServiceRunner(
            self.app, access_log=None, handle_signals=False,
            shutdown_timeout=settings.shutdown_timeout,
        )

    @property
    def tracker(self) -> RequestTracker:
        return self.app[REQUESTS_IN_FLIGHT]

    async def start(self, sockets: list[socket.socket] | None = None) -> str:
        """Set the app up and serve on `sockets` (already listening), or on the settings' host and
        port; returns the base URL."""
        batch_log_lines()
        await self.runner.setup()
        tune_for_serving()
        if sockets:
            for sock in sockets:
                await web.SockSite(self.runner, sock).start()
            return base_url_of(sockets[0])
        site = web.TCPSite(self.runner, self.settings.host, self.settings.port, backlog=1024)
        try:
            await site.start()
        except OSError as exc:
            raise cannot_listen(self.settings, exc) from exc
        return base_url_of(site._server.sockets[0])  # type: ignore[union-attr]

    def begin_draining(self) -> None:
        """From now on /readyz answers 503 (called from the signal handler, before anything else)."""
        self.tracker.begin_draining()

    def refresh_metrics(self) -> None:
        self.app[METRICS].refresh()

    async def stop(self) -> None:
        """Drain, then clean up. Safe after a failed `start`."""
        try:
            if self.runner.server is not None:
                self.begin_draining()
                await drain(self.runner, self.tracker, self.settings.shutdown_timeout)
        finally:
            await self.runner.cleanup()
            tracing.stop()  # the last spans exported
            flush_log_lines()


# How long connections accepted just before the listener closed have to send their request.
ACCEPT_GRACE_SECONDS = 0.25
# Loop iterations in which connections the loop has just accepted are set up.
SETUP_TURNS = 3


async def drain(runner: web.AppRunner, tracker: RequestTracker, timeout: float) -> None:
    """Stop listening, then let requests in flight finish (their bodies still being read).

    A connection accepted just before the listener closed may not have sent its request yet (a
    client writes it right after connecting; the loop accepts many connections at a time): with
    nothing in flight, cleanup would cut it and its client get a reset. So the loop first stops
    taking connections and lets those it took be set up, then the listeners close (new
    connections are refused, or taken by the other workers), and a short grace lets the
    requests of those connections arrive and count as in flight. (Closed at once, a connection
    the stdlib's loop had accepted but not yet set up fails to attach to the closed server,
    silently, and its socket stays open, unanswered, until the process exits.)"""
    if _stop_accepting(runner):
        for _ in range(SETUP_TURNS):
            await asyncio.sleep(0)
    for site in list(runner.sites):
        await site.stop()
    log.info("shutting down: finishing requests in flight",
             extra={"in_flight": tracker.in_flight})
    started = time.monotonic()
    await asyncio.sleep(min(ACCEPT_GRACE_SECONDS, timeout))
    if not await tracker.wait_idle(max(0.0, timeout - (time.monotonic() - started))):
        log.warning("shutdown timeout: requests still in flight are cut",
                    extra={"in_flight": tracker.in_flight})


def _stop_accepting(runner: web.AppRunner) -> bool:
    """Stop taking connections from the listening sockets without closing them; False where the
    loop does not accept through a reader (uvloop accepts and sets up in one step)."""
    loop = asyncio.get_running_loop()
    if not isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop):
        return False
    for site in runner.sites:
        server = getattr(site, "_server", None)  # aiohttp keeps the asyncio.Server there
        for sock in (server.sockets if server is not None else ()):
            loop.remove_reader(sock.fileno())
    return True


async def serve_app(settings: Settings, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve in this process until SIGTERM or SIGINT, then stop gracefully."""
    serving = ServingApp(settings)
    stop = asyncio.Event()

    def on_signal() -> None:
        serving.begin_draining()
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    try:
        base_url = await serving.start()
        log.info("listening", extra={"url": base_url, "event_loop": running_loop_name()})
        if on_ready:
            on_ready(base_url)
        await stop.wait()
    finally:
        await serving.stop()


def run_server(settings: Settings, *, workers: int = 1, demo: bool = False) -> int:
    if settings.rate_limit_processes == 0:  # counted locally, each worker admits its share
        settings = dataclasses.replace(settings, rate_limit_processes=workers)
    with contextlib.ExitStack() as stack:
        if not settings.database_url:
            url = stack.enter_context(embedded_postgres(settings.data_dir))
            settings = dataclasses.replace(settings, database_url=url)
        demo_key = asyncio.run(prepare_database(settings, demo))

        def announce(base_url: str) -> None:
            if demo_key:
                print(f"catalog-enricher is serving the demo at {base_url}\n"
                      f"demo API key (shown once): {demo_key}\n"
                      f"try it:\n{curl_line(base_url, demo_key)}", flush=True)

        if workers <= 1:
            install_event_loop(settings.event_loop)
            asyncio.run(serve_app(settings, on_ready=announce))
            return 0
        from service.supervisor import run_supervised

        return run_supervised(settings, workers, announce)
    return 0
