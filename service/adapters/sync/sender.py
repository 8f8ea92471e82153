"""Landing users on a platform: batches, pacing, retries, the checkpoint and the dead letter.

In: `UserLine`s in input order (a user key and its enriched answer, or why the line is unusable).
Lines are cut into batches of the platform's size, by count and by bytes (its limit on a request's
body); `--changed-only` first drops the users whose stored digest equals their content's (one
query per chunk of lines). `concurrency` senders take batches from a short queue, so the input is
read only as fast as the platform takes it.

Each request waits for the token bucket. A 429 pauses every sender until the reset the platform
names (or an exponential backoff when it names none) and is retried; a 5xx or a network error is
retried after an exponential backoff with full jitter, at most `max_attempts` times, after which
the batch's users are dead-lettered; another 4xx refuses the whole batch at once (401 and 403,
a wrong key, stop the run: every batch would fail alike). An answered batch is then recorded:
refused users to the dead letter, accepted users' digests to Postgres, and last its span of input
lines to the checkpoint, so a crash at any point re-sends at most the batches without an answer.
`stop()` (the command calls it on SIGTERM or SIGINT) sends no more batches and lets those in flight
be answered and recorded, so a run stopped that way is resumed without sending anyone twice.
"""

from __future__ import annotations

import asyncio
import io
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

import aiohttp
import orjson

from service.adapters.sync.checkpoint import Checkpoint
from service.adapters.sync.dead_letter import DeadLetter
from service.adapters.sync.platform import (
    REQUEST_ENVELOPE_BYTES,
    Platform,
    UserUpdate,
    redacted_headers,
    remaining_in_window,
    seconds_until_reset,
)
from service.adapters.sync.profile_value import content_digest, profile_value
from service.adapters.sync.rate import TokenBucket

LARGE_BODY_BYTES = 1 << 20
MAX_THROTTLED_WAITS = 100  # 429s in a row for one batch before it is given up


@dataclass(frozen=True)
class UserLine:
    """One input line: its number (1-based), the user, and the content route's answer for them,
    or `error` saying why the line cannot be synced."""

    line: int
    key: str | None
    answer: Mapping[str, Any] | None
    error: str | None = None


@dataclass(frozen=True)
class SyncOptions:
    max_attribute_bytes: int
    rate: float | None = None  # requests per second; None: as fast as the platform answers
    concurrency: int = 8
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    timeout: float = 30.0
    changed_only: bool = False
    lookup_chunk: int = 1000


class DigestStore(Protocol):
    async def fetch(self, keys: Sequence[str]) -> dict[str, bytes]: ...

    async def store(self, digests: Sequence[tuple[str, bytes]]) -> None: ...


class SyncAborted(Exception):
    """The platform refused the credentials: no later batch can succeed."""


@dataclass
class Summary:
    users: int = 0
    sent: int = 0
    skipped_unchanged: int = 0
    already_synced: int = 0  # lines a resumed run found done
    retried: int = 0
    refused: int = 0
    input_errors: int = 0
    requests: int = 0
    items_dropped: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        shown = dict(self.__dict__)
        shown["seconds"] = round(self.seconds, 3)
        shown["requests_per_second"] = round(self.requests / self.seconds, 1) \
            if self.seconds > 0 else 0.0
        return shown


@dataclass
class _Batch:
    first: int  # the span of input lines it finishes
    last: int = 0
    users: list[UserUpdate] = field(default_factory=list)
    input_errors: list[tuple[str | None, int, str]] = field(default_factory=list)
    unchanged: int = 0
    lines: int = 0
    bytes: int = REQUEST_ENVELOPE_BYTES  # the request's body, at most


class Sync:
    def __init__(
        self, platform: Platform, options: SyncOptions, checkpoint: Checkpoint,
        dead_letter: DeadLetter, *, session: aiohttp.ClientSession | None,
        digests: DigestStore | None = None, dry_run: BinaryIO | None = None,
        updated_at: str, on_progress: Callable[[int], None] = lambda lines: None,
        redact: Callable[[str], str] = lambda text: text,
    ) -> None:
        if options.changed_only and digests is None:
            raise ValueError("--changed-only needs a digest store")
        self.platform = platform
        self.options = options
        self.checkpoint = checkpoint
        self.dead_letter = dead_letter
        self.session = session
        self.digests = digests if options.changed_only else None
        self.dry_run = dry_run
        self.updated_at = updated_at
        self.on_progress = on_progress
        self.redact = redact
        self.bucket = TokenBucket(options.rate) if options.rate else None
        self.summary = Summary()
        self.stopped = False

    def stop(self) -> None:
        """Send no more batches; those in flight are still answered and recorded."""
        self.stopped = True

    async def run(self, lines: AsyncIterator[UserLine]) -> Summary:
        started = time.monotonic()
        queue: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=self.options.concurrency)
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(self.options.concurrency):
                    group.create_task(self._sender(queue))
                try:
                    await self._batches(lines, queue)
                finally:  # a stopped run leaves the input unread: its files and streams close
                    if (close := getattr(lines, "aclose", None)) is not None:
                        await close()
                for _ in range(self.options.concurrency):
                    await queue.put(None)
        except BaseExceptionGroup as group_error:
            # One cause is enough, and the first is the one to report (SyncAborted, mostly).
            raise group_error.exceptions[0] from None
        finally:
            self.summary.seconds = time.monotonic() - started
        if self.dry_run is None and not self.stopped:
            self.checkpoint.complete()
        return self.summary

    # -- cutting the input into batches -------------------------------------------------------

    async def _batches(self, lines: AsyncIterator[UserLine],
                       queue: asyncio.Queue[_Batch | None]) -> None:
        batch: _Batch | None = None
        pending: list[tuple[UserLine, UserUpdate | None]] = []
        last_line = 0
        async for entry in lines:
            if self.stopped:  # lines read but not cut into a batch are the resumed run's
                self.summary.users -= len(pending) + (batch.lines if batch is not None else 0)
                return
            last_line = entry.line
            if self.checkpoint.done(entry.line):
                self.summary.already_synced += 1
                self.on_progress(1)
                continue
            if batch is None:
                batch = _Batch(first=entry.line)
            pending.append((entry, self._update(entry)))
            if len(pending) >= self.options.lookup_chunk:
                batch = await self._place(pending, batch, queue)
                pending = []
        if batch is not None:
            batch = await self._place(pending, batch, queue)
            if batch.lines:
                batch.last = max(batch.last, last_line)
                await queue.put(batch)

    def _update(self, entry: UserLine) -> UserUpdate | None:
        """The user's update, or None when the line is unusable."""
        self.summary.users += 1
        if entry.error is not None or not entry.key:
            return None
        items = entry.answer.get("items") if entry.answer is not None else None
        if not isinstance(items, list):
            return None
        value, dropped, size = profile_value(items, self.updated_at,
                                             self.options.max_attribute_bytes)
        self.summary.items_dropped += dropped
        return UserUpdate(entry.line, entry.key, value, content_digest(value["items"]), size)

    @staticmethod
    def _unusable(entry: UserLine) -> str:
        if entry.error is not None:
            return entry.error
        return "input: no user key" if not entry.key else "input: the answer has no items array"

    async def _place(self, pending: list[tuple[UserLine, UserUpdate | None]], batch: _Batch,
                     queue: asyncio.Queue[_Batch | None]) -> _Batch:
        """Add the pending lines to batches in order (less the unchanged users), queueing each
        full one. Unusable lines ride with the batch whose span holds them: they reach the dead
        letter when it is done, so a resumed run writes them once."""
        stored: dict[str, bytes] = {}
        if self.digests is not None:
            keys = [update.key for _, update in pending if update is not None]
            if keys:
                stored = await self.digests.fetch(keys)
        size, most_bytes = self.platform.max_batch, self.platform.max_request_bytes
        attribute = self.platform.attribute
        for entry, update in pending:
            cost = 0
            if update is not None and stored.get(update.key) != update.digest:
                cost = update.request_bytes(attribute)
                if batch.users and batch.bytes + cost > most_bytes:  # full by its bytes
                    await queue.put(batch)
                    batch = _Batch(first=entry.line)
            batch.last, batch.lines = entry.line, batch.lines + 1
            if update is None:
                batch.input_errors.append((entry.key, entry.line, self._unusable(entry)))
            elif not cost:
                batch.unchanged += 1
            else:
                batch.users.append(update)
                batch.bytes += cost
                if len(batch.users) >= size:
                    await queue.put(batch)
                    batch = _Batch(first=entry.line + 1)
        if not batch.users and batch.lines >= self.options.lookup_chunk:
            # Lines that need no request (unchanged users): done now, not with the next send.
            await queue.put(batch)
            batch = _Batch(first=batch.last + 1)
        return batch

    # -- sending ------------------------------------------------------------------------------

    async def _sender(self, queue: asyncio.Queue[_Batch | None]) -> None:
        while (batch := await queue.get()) is not None:
            if self.stopped:  # cut but not sent: the resumed run's
                self.summary.users -= batch.lines
                continue
            refused = await self._send(batch.users) if batch.users else {}
            await self._finish(batch, refused)

    async def _send(self, users: list[UserUpdate]) -> dict[str, str]:
        """Send one batch until it is answered: user key → reason for each refused user."""
        request = self.platform.request(users)
        if self.dry_run is not None:
            self.dry_run.write(orjson.dumps({
                "method": "POST", "url": request.url,
                "headers": redacted_headers(self.platform, request.headers),
                "body": orjson.Fragment(request.body)}) + b"\n")
            self.summary.requests += 1
            return {}
        failures = throttled = 0
        while True:
            if self.bucket is not None:
                await self.bucket.acquire()
            self.summary.requests += 1
            try:
                status, headers, body = await self._post(request)
            except (TimeoutError, aiohttp.ClientError) as exc:
                status, headers, body = 0, {}, b""
                problem = f"network error ({type(exc).__name__})"
            else:
                problem = f"HTTP {status}"
                self._note_window(headers)
            if 200 <= status < 300:
                return self.platform.refused(status, body, users)
            if status == 429:
                throttled += 1
                if throttled > MAX_THROTTLED_WAITS:
                    return self._all(users, f"gave up after {throttled} answers of HTTP 429")
                wait = seconds_until_reset(headers)
                wait = self._backoff(throttled) if wait is None else wait
                if self.bucket is not None:
                    self.bucket.pause(wait)
                self.summary.retried += 1
                await asyncio.sleep(wait)
                continue
            if status in (401, 403):
                raise SyncAborted(f"{self.platform.name} refused the API key (HTTP {status}); "
                                  "nothing more is sent")
            if status == 0 or status >= 500:
                failures += 1
                if failures >= self.options.max_attempts:
                    return self._all(users, f"gave up after {failures} attempts: {problem}")
                self.summary.retried += 1
                await asyncio.sleep(self._backoff(failures))
                continue
            return self._all(users, f"HTTP {status}: {self._said(body)}")

    async def _post(self, request: Any) -> tuple[int, Mapping[str, str], bytes]:
        assert self.session is not None
        body = request.body
        # aiohttp warns that a bytes body over 1 MiB might hold the loop; a stream it writes a
        # piece at a time (a new one for each attempt).
        data = body if len(body) <= LARGE_BODY_BYTES else io.BytesIO(body)
        async with self.session.post(
            request.url, data=data, headers=request.headers,
            timeout=aiohttp.ClientTimeout(total=self.options.timeout),
        ) as response:
            return response.status, response.headers, await response.read()

    def _note_window(self, headers: Mapping[str, str]) -> None:
        if self.bucket is None:
            return
        remaining = remaining_in_window(headers)
        if remaining is None:
            return
        reset = seconds_until_reset(headers)
        if reset:
            self.bucket.lower(remaining, reset)

    def _backoff(self, attempt: int) -> float:
        """Exponential, with full jitter: senders that failed together do not retry together."""
        ceiling = min(self.options.backoff_cap, self.options.backoff_base * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not a secret

    @staticmethod
    def _all(users: list[UserUpdate], reason: str) -> dict[str, str]:
        return {user.key: reason for user in users}

    @staticmethod
    def _said(body: bytes) -> str:
        """What a refusing platform said, short (its `message`, else the start of the body)."""
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body[:200].decode("utf-8", "replace")
        if isinstance(answer, dict) and isinstance(answer.get("message"), str):
            return answer["message"][:200]
        return body[:200].decode("utf-8", "replace")

    async def _finish(self, batch: _Batch, refused: dict[str, str]) -> None:
        """The batch is answered: dead letter, digests, then its span in the checkpoint."""
        letters = list(batch.input_errors)
        accepted: list[tuple[str, bytes]] = []
        for user in batch.users:
            reason = refused.get(user.key)
            if reason is None:
                accepted.append((user.key, user.digest))
            else:
                letters.append((user.key, user.line, reason))
        self.dead_letter.write(letters)
        if self.dry_run is None:
            if self.digests is not None:
                await self.digests.store(accepted)
            self.checkpoint.acknowledge(batch.first, batch.last)
        summary = self.summary
        summary.sent += len(accepted)
        summary.refused += len(batch.users) - len(accepted)
        summary.input_errors += len(batch.input_errors)
        summary.skipped_unchanged += batch.unchanged
        self.on_progress(batch.lines)
