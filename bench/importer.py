"""Writing the real scenarios' catalogs the way users write them: `POST …/items:import` of an
NDJSON file to a running service (`python -m service serve`, started here and stopped after)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson

from bench.servers import ServerProcess, free_port, service_command, service_env


def post_import(base_url: str, key: str, catalog: str, path: Path) -> dict:
    """Stream `path` to the catalog's import route; its answer (counts), or an error naming it."""
    size = path.stat().st_size
    with path.open("rb") as body:
        request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1, a server we started
            f"{base_url}/v1/catalogs/{catalog}/items:import?atomic=true", data=body,
            method="POST", headers={"Authorization": f"Bearer {key}",
                                    "Content-Type": "application/x-ndjson",
                                    "Content-Length": str(size)})
        try:
            with urllib.request.urlopen(request, timeout=1800) as answer:  # noqa: S310 - as above
                return orjson.loads(answer.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"importing {path.name} into {catalog}: HTTP {exc.code}: "
                               f"{exc.read()[:500].decode(errors='replace')}") from exc


def import_catalogs(database_url: str, key: str, files: dict[str, Path], workdir: Path,
                    say) -> None:
    """Each catalog's NDJSON through one service process; every line must land."""
    port = free_port()
    server = ServerProcess("service", service_command(port, 1), env=service_env(database_url, {}),
                           port=port, listeners=1, log_path=workdir / "import-service.log")
    try:
        server.wait_ready(60)
        for catalog, path in files.items():
            started = time.monotonic()
            counts = post_import(server.base_url, key, catalog, path)
            if counts.get("rejected"):
                raise RuntimeError(f"the import of {catalog} refused lines: {counts}")
            say(f"imported {counts.get('inserted', 0):,} items into {catalog} through "
                f"items:import in {time.monotonic() - started:.1f} s")
    finally:
        server.stop()
