"""Bulk import of items into a catalog (`POST …/items:import`, `catalog-enricher import`).

The stream is read chunk by chunk; valid rows are staged in bounded batches with binary `COPY` into
a temporary table (the next batch is parsed while Postgres takes the previous one), then one upsert
moves them into `items`, counting inserted, updated and unchanged rows (unchanged: identical
content, whose version and updated_at stay as they were). Replace mode then deletes items absent
from the file. All of it is one transaction under a per-catalog lock: an import that fails or is
cut off half-way (the client disconnects, the connection drops) leaves the catalog as it was.

Memory stays constant: at most two staging batches (bounded in rows and in bytes), one line, and
the first `max_errors` error messages; every error is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field

import asyncpg

from service.catalog.import_formats import CsvReader, HeaderRejected, NdjsonReader, ParsedLine
from service.errors import Conflict, ImportRejected
from service.storage import item_import as store

MIB = 1024 * 1024


@dataclass(frozen=True)
class ImportOptions:
    replace: bool = False
    atomic: bool = False
    batch_rows: int = 5000
    batch_bytes: int = 4 * MIB
    max_errors: int = 100
    timeout: float = 900.0  # per statement: a 1M-row upsert takes well over the usual 10 s


@dataclass
class ImportSummary:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0
    errors: list[dict[str, object]] = field(default_factory=list)
    seconds: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {"inserted": self.inserted, "updated": self.updated, "unchanged": self.unchanged,
                "deleted": self.deleted, "rejected": self.rejected, "errors": self.errors,
                "seconds": round(self.seconds, 3)}


class _ErrorLog:
    """Counts every refused line and keeps the first `listed` of them, in line order."""

    def __init__(self, listed: int) -> None:
        self.listed = listed
        self.count = 0
        self.first: list[dict[str, object]] = []

    def add(self, line: int, reason: str) -> None:
        self.count += 1
        if len(self.first) < self.listed:
            self.first.append({"line": line, "reason": reason})

    def merge(self, count: int, errors: list[dict[str, object]]) -> None:
        """Add errors found after the stream (duplicates), keeping line order."""
        self.count += count
        merged = sorted([*self.first, *errors], key=lambda e: e["line"])  # type: ignore[arg-type,return-value]
        self.first = merged[: self.listed]


class _Stager:
    """Collects staged rows into batches and COPYs each while the next one is being parsed."""

    def __init__(self, conn: asyncpg.Connection, options: ImportOptions) -> None:
        self.conn = conn
        self.options = options
        self.batch: list[tuple] = []
        self.batch_bytes = 0
        self.in_flight: asyncio.Task | None = None
        self.staged = 0

    def add(self, record: tuple, size: int) -> None:
        self.batch.append(record)
        self.batch_bytes += size

    @property
    def full(self) -> bool:
        return (len(self.batch) >= self.options.batch_rows
                or self.batch_bytes >= self.options.batch_bytes)

    async def ship(self) -> None:
        """Start copying the current batch (after the previous copy has finished)."""
        await self._wait()
        if not self.batch:
            return
        batch, self.batch, self.batch_bytes = self.batch, [], 0
        self.staged += len(batch)
        self.in_flight = asyncio.ensure_future(
            store.copy_staged(self.conn, batch, statement_timeout=self.options.timeout)
        )

    async def finish(self) -> None:
        await self.ship()
        await self._wait()

    async def abandon(self) -> None:
        """Let a copy in flight end before the transaction rolls back (the connection is busy
        until it does); its own error, if any, is beside the point by now."""
        if self.in_flight is not None:
            with contextlib.suppress(Exception):
                await self.in_flight
            self.in_flight = None

    async def _wait(self) -> None:
        if self.in_flight is not None:
            task, self.in_flight = self.in_flight, None
            await task


def _staged_record(parsed: ParsedLine) -> tuple | None:
    item = parsed.item
    if item is None:
        # A refused line is staged by ID only, so replace mode keeps its item.
        if parsed.item_id is None:
            return None
        return (parsed.line, parsed.item_id, True, None, None, None, None, None, None, None,
                None, None)
    return (parsed.line, item.id, False, item.title, item.genre, item.price_amount,
            item.price_currency, item.image_url, item.url, item.available, item.attributes,
            item.locales)


async def import_items(
    conn: asyncpg.Connection,
    catalog_id: int,
    chunks: AsyncIterable[bytes],
    reader: NdjsonReader | CsvReader,
    options: ImportOptions,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> ImportSummary:
    """Import a stream into a catalog in one transaction; `on_progress(bytes, lines, stage)` is
    called after each chunk and when the writing starts. Raises ImportRejected when nothing may
    land (atomic mode with bad lines, or a bad CSV header), Conflict when another import into the
    catalog is running."""
    started = time.perf_counter()
    summary = ImportSummary()
    errors = _ErrorLog(options.max_errors)
    async with conn.transaction():
        if not await store.try_lock_catalog(conn, catalog_id):
            raise Conflict("another import into this catalog is running; retry when it is done",
                           field="catalog")
        await store.create_staging(conn)
        stager = _Stager(conn, options)
        valid = 0
        try:
            read = 0
            async for chunk in chunks:
                read += len(chunk)
                lines = reader.feed(chunk)
                valid += _stage(lines, stager, errors, len(chunk))
                if stager.full:
                    await stager.ship()
                if on_progress is not None:
                    on_progress(read, reader.splitter.number, "reading")
            valid += _stage(reader.close(), stager, errors, 0)
            await stager.finish()
            if on_progress is not None:
                on_progress(read, reader.splitter.number, "writing")
        except HeaderRejected as exc:
            await stager.abandon()
            raise ImportRejected(f"line 1: {exc}", rejected=0,
                                 line_errors=[{"line": 1, "reason": str(exc)}]) from exc
        except BaseException:
            await stager.abandon()
            raise
        duplicates, first = await store.mark_duplicates(conn, options.max_errors,
                                                        statement_timeout=options.timeout)
        errors.merge(duplicates, [
            {"line": row["line"],
             "reason": f"id: {row['id']!r} was already given on line {row['duplicate_of']}"}
            for row in first
        ])
        valid -= duplicates
        if options.atomic and errors.count:
            # Raising inside the transaction rolls everything back: nothing lands.
            raise ImportRejected(
                f"{errors.count} line(s) were refused, so nothing was imported (atomic=true)",
                rejected=errors.count, line_errors=errors.first,
            )
        summary.inserted, summary.updated = await store.upsert_staged(
            conn, catalog_id, statement_timeout=options.timeout
        )
        if options.replace:
            summary.deleted = await store.delete_absent(conn, catalog_id,
                                                        statement_timeout=options.timeout)
    summary.unchanged = valid - summary.inserted - summary.updated
    summary.rejected = errors.count
    summary.errors = errors.first
    summary.seconds = time.perf_counter() - started
    return summary


def _stage(lines: list[ParsedLine], stager: _Stager, errors: _ErrorLog, chunk_bytes: int) -> int:
    """Stage one chunk's lines; returns how many were valid."""
    valid = 0
    # A chunk's bytes are shared among its lines: close enough to bound a batch's memory.
    size = chunk_bytes // len(lines) if lines else 0
    for parsed in lines:
        if parsed.item is not None:
            valid += 1
        else:
            errors.add(parsed.line, parsed.reason or "refused")
        record = _staged_record(parsed)
        if record is not None:
            stager.add(record, size)
    return valid
