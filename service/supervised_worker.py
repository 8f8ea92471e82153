"""A worker of `serve --workers N`: aiohttp's gunicorn worker, serving our app as `serve` does.

`GunicornWebWorker` (aiohttp's documented worker) gives the process its event loop (uvloop's when
ENRICHER_EVENT_LOOP says so, as `GunicornUVLoopWebWorker` does) and routes gunicorn's signals
through it; what it would run is replaced by `ServingApp`, the same
set-up, drain and stop as a single `serve` process (batched log lines, GC tuning, the request
tracker, ENRICHER_SHUTDOWN_TIMEOUT), on the socket the supervisor listens on.

The heartbeat (gunicorn's per-worker file, touched every second) starts once the worker serves:
the supervisor reads its first beat as "this worker is serving" (a SIGHUP replaces the next worker
only then) and stops a worker whose beat stops for 30 s (an event loop stuck). The beat goes on
while the worker drains. Each beat also writes down the sampled metrics (L1 entries), which other
workers' scrapes read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

from aiohttp.worker import GunicornWebWorker

from service.runtime.settings import Settings
from service.server import ServingApp, install_event_loop, running_loop_name

log = logging.getLogger(__name__)

BEAT_SECONDS = 1.0


class EnricherWorker(GunicornWebWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._serving: ServingApp | None = None
        self._stop: asyncio.Event | None = None

    def init_process(self) -> None:
        # Before the parent makes this process's loop (after the fork), under the policy chosen.
        install_event_loop(self.app.settings.event_loop)
        super().init_process()

    async def _run(self) -> None:
        settings: Settings = self.app.settings
        self._stop = asyncio.Event()
        serving = self._serving = ServingApp(settings)
        beat: asyncio.Task | None = None
        try:
            sockets: list[socket.socket] = [getattr(s, "sock", s) for s in self.sockets]
            await serving.start(sockets)
            self.booted = True
            log.info("worker serving", extra={"pid": os.getpid(),
                                              "event_loop": running_loop_name()})
            beat = asyncio.ensure_future(self._beat())
            await self._stop.wait()
        except Exception:
            # Postgres unreachable at start, say: exit non-zero; the supervisor starts another
            # (with backoff if this keeps happening) instead of halting every worker.
            log.exception("worker failed; exiting", extra={"pid": os.getpid()})
            self.exit_code = 1
        finally:
            try:
                await serving.stop()
            finally:
                if beat is not None:
                    beat.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await beat

    async def _beat(self) -> None:
        while True:
            self.notify()
            self._serving.refresh_metrics()  # type: ignore[union-attr]
            if self.ppid != os.getppid():
                log.warning("the supervisor is gone; stopping", extra={"pid": os.getpid()})
                self._begin_stop()
            await asyncio.sleep(BEAT_SECONDS)

    def _begin_stop(self) -> None:
        # Called in the event loop (the signal handlers run there): readiness turns 503 before
        # anything else can happen.
        if self._serving is not None:
            self._serving.begin_draining()
        if self._stop is not None:
            self._stop.set()

    def handle_exit(self, sig: int, frame: Any) -> None:  # SIGTERM: drain
        super().handle_exit(sig, frame)
        self._begin_stop()

    def handle_quit(self, sig: int, frame: Any) -> None:  # SIGINT, SIGQUIT: drain as well
        super().handle_quit(sig, frame)
        self._begin_stop()
