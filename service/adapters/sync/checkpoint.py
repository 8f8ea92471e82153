"""Which input lines a sync has finished with, so `--resume` neither resends nor misses a user.

An NDJSON file: a header naming the run (platform, target, input) and the `updated_at` its values
carry, then one `{"span": [first, last]}` per batch the platform acknowledged (or that needed no
request): every input line from `first` to `last` is done, its users sent and answered, skipped
as unchanged or dead-lettered.
Batches finish out of order, so spans arrive out of order; a resumed run skips the lines inside
any span and sends the rest. Each span is one `write` to a file opened for appending, so a
process killed at any point (SIGKILL included) leaves whole lines, at worst without its last one.
A batch whose answer had not come back when the process was killed (SIGKILL, a lost machine; a
SIGTERM lets the batches in flight finish first) is sent again on resume: neither platform takes an
idempotency key, and no client can know whether such a request was applied. Those are at most the
batches in flight (`ENRICHER_SYNC_CONCURRENCY`), and they are sent with the very value they carried
(the resumed run takes `updated_at` from the header), so the profile ends the same either way.
"""

from __future__ import annotations

import bisect
import os
from pathlib import Path
from typing import Any

import orjson

from service.errors import ValidationFailed


class Checkpoint:
    def __init__(self, path: Path | None, run: dict[str, Any], *, resume: bool,
                 updated_at: str | None = None) -> None:
        self.path = path
        self.updated_at = updated_at  # on resume: the first attempt's
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._fd: int | None = None
        if path is None:
            return
        if resume and path.exists():
            self._load(path, run)
            flags = os.O_WRONLY | os.O_APPEND
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        self._fd = os.open(path, flags, 0o600)
        if not (resume and self._starts) and os.fstat(self._fd).st_size == 0:
            self._write({"checkpoint": 1, "run": run, "updated_at": updated_at})

    def _load(self, path: Path, run: dict[str, Any]) -> None:
        lines = path.read_bytes().split(b"\n")
        spans: list[tuple[int, int]] = []
        for number, line in enumerate(lines):
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # the torn last line of a killed run
            if number == 0:
                if entry.get("run") != run:
                    raise ValidationFailed.of(
                        "--resume", f"the checkpoint {path} is another run's ({entry.get('run')});"
                        " run without --resume to start over")
                self.updated_at = entry.get("updated_at") or self.updated_at
                continue
            if "span" in entry:
                first, last = entry["span"]
                spans.append((first, last))
        spans.sort()
        for first, last in spans:  # merged, so `done` is one bisect
            if self._ends and first <= self._ends[-1] + 1:
                self._ends[-1] = max(self._ends[-1], last)
            else:
                self._starts.append(first)
                self._ends.append(last)

    @property
    def acknowledged_spans(self) -> int:
        return len(self._starts)

    def done(self, line: int) -> bool:
        """Was `line` finished by an earlier attempt of this run?"""
        index = bisect.bisect_right(self._starts, line) - 1
        return index >= 0 and line <= self._ends[index]

    def acknowledge(self, first: int, last: int) -> None:
        self._write({"span": [first, last]})

    def complete(self) -> None:
        self._write({"complete": True})

    def _write(self, entry: dict[str, Any]) -> None:
        if self._fd is not None:
            os.write(self._fd, orjson.dumps(entry) + b"\n")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

