"""Running the service: one process, or several sharing one port (SO_REUSEPORT).

`run_server` owns the whole life of `serve`: the embedded Postgres when DATABASE_URL is unset,
migrations (and the demo) before any worker listens, the workers, and a graceful stop on SIGTERM or
SIGINT: listeners close first, requests in flight finish (up to ENRICHER_SHUTDOWN_TIMEOUT), then the
pool and the embedded Postgres shut down.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

from aiohttp import web

from service.demo import curl_line, load_demo
from service.runtime.gc_tuning import tune_for_serving
from service.runtime.logs import batch_log_lines, flush_log_lines, setup_logging
from service.runtime.settings import Settings
from service.storage.db import connect
from service.storage.embedded_postgres import embedded_postgres
from service.storage.migrations import apply_migrations
from service.web.app import create_app
from service.web.app_keys import REQUESTS_IN_FLIGHT
from service.web.request_tracker import RequestTracker

log = logging.getLogger(__name__)


def install_uvloop() -> bool:
    """Use uvloop where it is installed: same semantics, a faster event loop."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


async def prepare_database(settings: Settings, demo: bool) -> str | None:
    """Apply pending migrations (and load the demo); returns the demo key when asked for one."""
    conn = await connect(settings)
    try:
        await apply_migrations(conn)
        return await load_demo(conn) if demo else None
    finally:
        await conn.close()


async def serve_app(
    settings: Settings, *, reuse_port: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully."""
    batch_log_lines()
    app = create_app(settings)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=settings.shutdown_timeout
    )
    await runner.setup()
    tune_for_serving()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port,
                           backlog=1024)
        try:
            await site.start()
        except OSError as exc:
            raise SystemExit(
                f"catalog-enricher: cannot listen on {settings.host}:{settings.port}: "
                f"{exc.strerror or exc} (choose another with --port or ENRICHER_PORT)"
            ) from exc
        host, port = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
        base_url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        log.info("listening", extra={"url": base_url})
        if on_ready:
            on_ready(base_url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await drain(runner, app[REQUESTS_IN_FLIGHT], settings.shutdown_timeout)
    finally:
        await runner.cleanup()
        flush_log_lines()


async def drain(runner: web.AppRunner, tracker: RequestTracker, timeout: float) -> None:
    """Stop listening, then let requests in flight finish (their bodies still being read)."""
    for site in list(runner.sites):
        await site.stop()
    log.info("shutting down: finishing requests in flight",
             extra={"in_flight": tracker.in_flight})
    if not await tracker.wait_idle(timeout):
        log.warning("shutdown timeout: requests still in flight are cut",
                    extra={"in_flight": tracker.in_flight})


def _worker_main(settings: Settings) -> None:
    setup_logging(settings.log_level)
    install_uvloop()
    asyncio.run(serve_app(settings, reuse_port=True))


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
            install_uvloop()
            asyncio.run(serve_app(settings, on_ready=announce))
            return 0
        if settings.port == 0:
            print("--workers needs a fixed --port (they share it)", file=sys.stderr)
            return 2
        return _run_workers(settings, workers, announce)
    return 0


def _run_workers(settings: Settings, workers: int, announce: Callable[[str], None]) -> int:
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_main, args=(settings,), daemon=False)
                 for _ in range(workers)]
    for process in processes:
        process.start()

    def forward(signum: int, _frame: object) -> None:
        for process in processes:
            if process.is_alive() and process.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    if _wait_until_listening(settings, processes):
        announce(f"http://{settings.host}:{settings.port}")
    for process in processes:
        process.join()
    return max((p.exitcode or 0) for p in processes)


def _wait_until_listening(settings: Settings, processes: list, timeout: float = 60.0) -> bool:
    """Poll the shared port until a worker answers (or every worker died)."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(p.is_alive() for p in processes):
        try:
            with socket.create_connection((host, settings.port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False
