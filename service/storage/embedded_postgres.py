"""The embedded Postgres behind `serve` when no DATABASE_URL is set: zero setup for a new user.

It runs from the `pgserver` package's own binaries in `<data dir>/pgdata`, listens only on a Unix
socket inside that folder, keeps its data across restarts, and is stopped when the last process
using it exits (pgserver counts the processes sharing one data folder).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start (or join) the embedded server; yield its connection URL; stop it on exit."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # pgserver reads XDG_RUNTIME_DIR when imported; without one it warns and falls back to /tmp.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(_runtime_dir()))
    import pgserver  # imported late: it is slow to import and only this path needs it

    server = pgserver.get_server(data_dir / "pgdata", cleanup_mode="stop")
    log.info("embedded postgres ready", extra={"data_dir": str(data_dir / "pgdata")})
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def _runtime_dir() -> Path:
    path = Path("/tmp") / f"catalog-enricher-runtime-{os.getuid()}"  # noqa: S108 - per-user, 0700
    path.mkdir(mode=0o700, exist_ok=True)
    return path
