"""When each API key was last used, written in batches and never on the request path.

A request only notes its key's ID in a dict (`seen`); a background task writes what was noted
every `interval` seconds (a minute by default) in one statement for all keys, so a key costs at
most one write a minute per process, however busy. The time written is when the key was last
seen, as an age relative to Postgres' `now()` (no agreement between clocks needed), and never
moves backwards when another process wrote a later time. The column is outside the `api_keys`
trigger's list (migrations/0007_key_lifecycle.sql), so these writes never flush any key cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg

from service.storage.db_faults import DATABASE_UNAVAILABLE

log = logging.getLogger(__name__)

RECORD_KEY_USE = """
UPDATE api_keys AS k
SET last_used_at = now() - make_interval(secs => u.age)
FROM unnest($1::bigint[], $2::double precision[]) AS u(id, age)
WHERE k.id = u.id
  AND (k.last_used_at IS NULL OR k.last_used_at < now() - make_interval(secs => u.age))
"""


class KeyUsageRecorder:
    def __init__(self, pool: asyncpg.Pool, *, interval: float = 60.0,
                 acquire_timeout: float | None = None) -> None:
        self.pool = pool
        self.interval = interval
        self.acquire_timeout = acquire_timeout
        self._seen: dict[int, float] = {}  # key ID → time.monotonic() it was last used
        self._task: asyncio.Task | None = None

    def seen(self, key_id: int) -> None:
        """Note a use of the key (a dict write: this is on every authenticated request)."""
        self._seen[key_id] = time.monotonic()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._write_often())

    async def close(self, timeout: float = 5.0) -> None:
        """Stop the task and write what is still noted (bounded: shutdown must not hang)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), timeout)

    async def flush(self) -> int:
        """Write every noted use now; returns how many keys were written. On a database error
        the uses stay noted for the next try."""
        if not self._seen:
            return 0
        batch, self._seen = self._seen, {}
        now = time.monotonic()
        ids = list(batch)
        ages = [max(0.0, now - batch[key_id]) for key_id in ids]
        try:
            async with self.pool.acquire(timeout=self.acquire_timeout) as conn:
                await conn.execute(RECORD_KEY_USE, ids, ages)
        except (*DATABASE_UNAVAILABLE, asyncpg.PostgresError) as exc:
            log.warning("could not record key use; will try again",
                        extra={"keys": len(ids), "error": type(exc).__name__})
            for key_id, at in batch.items():  # keep the later of the two
                if self._seen.get(key_id, 0.0) < at:
                    self._seen[key_id] = at
            return 0
        return len(ids)

    async def _write_often(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()
