"""The users a sync could not land, one NDJSON line each: `{"key", "line", "reason"}`.

Written when the platform refuses a user (a partial failure in a 2xx answer, a 4xx for the whole
request), when retries run out, or when the input line itself is unusable. Every reason passes
through `redact`, so a platform that echoed a credential still could not put it in this file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson


class DeadLetter:
    def __init__(self, path: Path | None, redact: Callable[[str], str], *,
                 append: bool) -> None:
        self.redact = redact
        self.count = 0
        self._fd = None if path is None else os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if append else os.O_TRUNC), 0o600)

    def write(self, refused: Iterable[tuple[str | None, int, str]]) -> None:
        """(user key or None when the line had none, input line, reason) for each user."""
        lines = [orjson.dumps({"key": key, "line": line, "reason": self.redact(reason)})
                 for key, line, reason in refused]
        if not lines:
            return
        self.count += len(lines)
        if self._fd is not None:
            os.write(self._fd, b"\n".join(lines) + b"\n")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
