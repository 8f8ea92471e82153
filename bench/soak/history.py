"""The soak's history: one JSON line per event (a request and its answer, an acknowledged write,
a revocation, a fault, a resource sample), with wall-clock times (`time.time()`), appended as it
happens so that a run cut short still leaves what it saw. The checker reads only this file.

Record kinds (`kind`):
- `attempt`: one HTTP request: client, op (the logical operation it belongs to), try, start, end,
  status (None: no answer), error, content_type, degraded (X-Degraded), problem_type, and for
  content answers `shown` ({item ID: the version its price shows, or "missing"}); `key` for
  revocation probes.
- `op`: a client's logical operation (a Braze render, a shim batch) and how it ended.
- `write`: version, item, price, available, start, end, status (200: acknowledged).
- `revoke`: prefix, start, end, status.
- `fault`: name, start, end, detail.
- `resources`: per-process RSS and open files, Postgres and Redis connections.
- `final`: the catalog's state read after the run ({item: [version, available]}).
- `meta`: the run's parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


class History:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("ab")

    def log(self, kind: str, **fields: Any) -> None:
        self._file.write(orjson.dumps({"kind": kind, **fields}) + b"\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_history(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_bytes().splitlines():
        if line.strip():
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue  # a line cut by a killed run
    return records


def price_of(version: int) -> str:
    """The price a write of `version` sets: the version in whole dollars, so an answer's price
    names the write it shows."""
    return f"{version}.00"


def version_shown(price: str) -> int | None:
    """The version an answer's `Price` value (`"12.00 USD"`) shows."""
    amount = price.split(" ", 1)[0]
    whole, _, _ = amount.partition(".")
    return int(whole) if whole.isdigit() else None
