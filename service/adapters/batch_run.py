"""`catalog-enricher enrich-batch`: a batch job's output file (or S3 prefix) in, answer lines out.

The lines go through batch.BatchEnricher a chunk of `--chunk-lines` at a time, in this process or
spread over `--workers N` processes (each with its own pool and caches), the answers written in
input order. After each chunk is written, a checkpoint next to the output (`OUT.checkpoint`: where
the input's next line starts, how many output bytes are written, the counts) is replaced
atomically; `--resume` truncates the output to the checkpoint's bytes and reads on from its
position. Chunks are fixed runs of lines and every line's answer depends on that line and the
catalog alone, so a resumed output equals an uninterrupted run's byte for byte.

`--shard K/N` (K from 0, as $JOB_COMPLETION_INDEX) takes the lines that *start* in the K-th of N
equal byte ranges of a file (each range read on to the end of its last line), or, for an S3
prefix, every N-th object from the K-th: disjoint parts whose union is the whole input.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
import os
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from service.adapters.batch import (
    CHUNK_LINES,
    MAX_LINE_BYTES,
    BatchEnricher,
    ChunkResult,
    LineRules,
    RawLine,
    split_lines,
)
from service.adapters.content import query_locale
from service.enrichment.recommender_lookup import RecommenderLookup
from service.errors import ProblemError, ValidationFailed
from service.resolution.local_cache import LocalCache
from service.resolution.resolver import ItemResolver
from service.resolution.shared_cache import SharedCache
from service.runtime.metrics import Metrics
from service.runtime.settings import Settings
from service.storage import tenants as tenant_store
from service.storage.db import create_pool

BLOCK_BYTES = 1024 * 1024
CHECKPOINT_SUFFIX = ".checkpoint"
CHECKPOINT_VERSION = 1
MAX_LISTED_PROBLEMS = 20  # malformed lines named in the summary (all are in the output)


def add_enrich_batch_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "enrich-batch", help="enrich a recommendation batch job's output, line for line",
        description="Reads Amazon Personalize batch inference output (or generic {\"key\", "
        "\"ids\", \"locale\"} lines) and writes one line per input line: the content route's "
        "answer for its IDs, with the input's key and scores. A JSON summary goes to stderr.",
    )
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--recommender", required=True)
    add_locale_arguments(parser)
    parser.add_argument("--workers", type=int, default=1,
                        help="processes enriching chunks (default 1); the output keeps the order")
    parser.add_argument("--chunk-lines", type=int, default=CHUNK_LINES,
                        help=f"lines enriched together (default {CHUNK_LINES})")
    parser.add_argument("--max-errors", type=int, metavar="N",
                        help="stop after more than N malformed lines (default: never)")
    parser.add_argument("--max-line-bytes", type=int, default=MAX_LINE_BYTES,
                        help=f"longer lines are answered as malformed (default {MAX_LINE_BYTES})")
    parser.add_argument("--shard", metavar="K/N",
                        help="only the K-th of N disjoint parts of the input (K from 0)")
    parser.add_argument("--resume", action="store_true",
                        help="go on from OUT.checkpoint, left by an interrupted run")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (it is off anyway when stderr is not a terminal)")
    parser.add_argument("input", metavar="IN", help="a file, - for standard input, or s3://bucket/prefix/")
    parser.add_argument("output", metavar="OUT", help="a file, - for standard output, or s3://bucket/key")


class BatchFailed(Exception):
    """Ends the run with a message (exit status 1); the checkpoint stays for --resume."""


def parse_shard(text: str | None) -> tuple[int, int]:
    if text is None:
        return 0, 1
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValidationFailed.of("--shard", "must be K/N, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ValidationFailed.of("--shard", f"K must be from 0 to N-1, got {text}")
    return index, count


# -- input: parts of files or objects ------------------------------------------------------------


@dataclass
class Part:
    """Lines starting in [start, end) of one input (end None: to its end), `read(offset)` its
    blocks from a byte offset."""

    name: str
    start: int
    end: int | None
    read: Callable[[int], AsyncIterator[bytes]]


def file_parts(path: str, shard: tuple[int, int]) -> list[Part]:
    index, count = shard
    if path == "-":
        if count > 1:
            raise ValidationFailed.of("--shard", "needs a file or an S3 prefix, not standard input")
        return [Part("-", 0, None, _stdin_blocks)]
    try:
        status = os.stat(path)
    except OSError as exc:
        raise ValidationFailed.of("IN", f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(status.st_mode):  # a named pipe: read as it comes, like standard input
        if count > 1:
            raise ValidationFailed.of("--shard", f"needs a regular file, {path} is not one")
        return [Part(path, 0, None, lambda offset: _file_blocks(path, offset))]
    size = status.st_size
    start, end = size * index // count, size * (index + 1) // count
    return [Part(path, start, end, lambda offset: _file_blocks(path, offset))]


async def _file_blocks(path: str, offset: int) -> AsyncIterator[bytes]:
    with open(path, "rb") as source:  # noqa: ASYNC230 - reads below run in a thread
        if offset:
            source.seek(offset)
        while block := await asyncio.to_thread(source.read1, BLOCK_BYTES):
            yield block


async def _stdin_blocks(offset: int) -> AsyncIterator[bytes]:
    if offset:
        raise BatchFailed("standard input cannot be resumed")
    source = sys.stdin.buffer
    while block := await asyncio.to_thread(source.read1, BLOCK_BYTES):
        yield block


@dataclass
class Position:
    """Where the next line starts: a part, and an offset in it (None: the part's first line)."""

    part: int = 0
    offset: int | None = None
    line: int = 1  # the next line's number (1-based, over the whole run)


async def read_lines(parts: list[Part], position: Position, max_line_bytes: int
                     ) -> AsyncIterator[tuple[RawLine, Position]]:
    """Each line from `position` on, with the position after it."""
    line = position.line
    for index in range(position.part, len(parts)):
        part = parts[index]
        offset = position.offset if index == position.part and position.offset is not None \
            else part.start
        aligned = not (offset == part.start and offset > 0)
        if not aligned:
            offset -= 1  # the line holding start-1 belongs to the part before: pass over it
        if part.end is not None and offset >= part.end and aligned:
            continue
        async for raw, size in split_lines(part.read(offset), max_line_bytes):
            if not aligned:
                aligned = True
                offset += size
                continue
            if part.end is not None and offset >= part.end:
                break
            offset += size
            yield raw, Position(index, offset, line + 1)
            line += 1


# -- output ---------------------------------------------------------------------------------------


class Sink:
    """Where answer lines go; `written` counts bytes since the output's start."""

    written = 0

    async def write(self, data: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """The output complete."""

    async def abort(self) -> None:
        """The run failed: what is written stays for --resume (a file) or is discarded (S3)."""


class FileSink(Sink):
    def __init__(self, path: str, keep_bytes: int | None) -> None:
        if path == "-":
            self._out = sys.stdout.buffer
            self._close = False
        else:
            mode = "r+b" if keep_bytes is not None else "wb"
            self._out = open(path, mode)  # noqa: SIM115 - closed in close/abort
            self._close = True
            if keep_bytes is not None:
                self._out.truncate(keep_bytes)
                self._out.seek(keep_bytes)
                self.written = keep_bytes

    async def write(self, data: bytes) -> None:
        self._out.write(data)
        self._out.flush()  # before the checkpoint names these bytes
        self.written += len(data)

    async def close(self) -> None:
        if self._close:
            self._out.close()
        else:
            self._out.flush()

    async def abort(self) -> None:
        await self.close()


# -- checkpoint -----------------------------------------------------------------------------------


@dataclass
class Counts:
    lines: int = 0
    enriched: int = 0
    without_content: int = 0
    input_errors: int = 0

    def add(self, result: ChunkResult) -> None:
        self.lines += result.lines
        self.enriched += result.enriched
        self.without_content += result.without_content
        self.input_errors += result.input_errors


def run_identity(args: argparse.Namespace) -> dict[str, Any]:
    """What a checkpoint must have been written for, to be resumed by this run."""
    return {"input": args.input, "tenant": args.tenant, "recommender": args.recommender,
            "locale": args.locale, "locale_from": args.locale_from, "shard": args.shard,
            "chunk_lines": args.chunk_lines, "max_line_bytes": args.max_line_bytes}


def write_checkpoint(path: Path, identity: dict[str, Any], position: Position,
                     written: int, counts: Counts) -> None:
    state = {"version": CHECKPOINT_VERSION, "run": identity,
             "position": dataclasses.asdict(position), "output_bytes": written,
             "counts": dataclasses.asdict(counts)}
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_bytes(orjson.dumps(state))
    os.replace(scratch, path)  # a reader sees the old checkpoint or the new, never half of one


def read_checkpoint(path: Path, identity: dict[str, Any]) -> tuple[Position, int, Counts]:
    try:
        state = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise BatchFailed(f"--resume: no checkpoint at {path} (nothing to resume)") from None
    if state.get("version") != CHECKPOINT_VERSION or state.get("run") != identity:
        raise BatchFailed(f"--resume: {path} was written by a run with other arguments")
    return (Position(**state["position"]), state["output_bytes"], Counts(**state["counts"]))


# -- workers --------------------------------------------------------------------------------------


@dataclass
class Job:
    settings: Settings
    tenant: str
    recommender: str
    rules: LineRules


class Enrichment:
    """A pool, caches and the recommender's BatchEnricher, in one process."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.metrics = Metrics()
        self._closing: list[Callable[[], Any]] = []

    async def open(self) -> BatchEnricher:
        settings = self.job.settings
        pool = await create_pool(settings)
        self._closing.append(pool.close)
        shared = None
        if settings.redis_url:
            shared = SharedCache(settings.redis_url, ttl=settings.cache_ttl,
                                 negative_ttl=settings.cache_negative_ttl,
                                 timeout=settings.redis_timeout, metrics=self.metrics,
                                 prefix=settings.redis_prefix)
            self._closing.append(shared.close)
        local = LocalCache(max_entries=settings.cache_max_entries,
                           max_bytes=settings.cache_max_bytes, ttl=settings.cache_ttl,
                           negative_ttl=settings.cache_negative_ttl,
                           stale_seconds=settings.cache_stale_seconds)
        resolver = ItemResolver(pool, query_timeout=settings.db_command_timeout, local=local,
                                shared=shared, metrics=self.metrics,
                                acquire_timeout=settings.db_acquire_timeout)
        self._closing.insert(0, resolver.close)
        tenant = await tenant_store.get_tenant(pool, self.job.tenant)
        lookup = RecommenderLookup(pool, settings.auth_cache_seconds,
                                   settings.cache_stale_seconds)
        recommender = await lookup.get(tenant.id, self.job.recommender)
        return BatchEnricher(recommender, resolver, self.job.rules)

    def queries(self) -> int:
        value = self.metrics.registry.get_sample_value("enricher_db_queries_total",
                                                       {"outcome": "ok"})
        return int(value or 0)

    async def close(self) -> None:
        for close in self._closing:
            with contextlib.suppress(Exception):
                await close()


_worker: dict[str, Any] = {}


def _start_worker(job: Job) -> None:
    loop = asyncio.new_event_loop()
    enrichment = Enrichment(job)
    _worker.update(loop=loop, enrichment=enrichment,
                   enricher=loop.run_until_complete(enrichment.open()))


def _enrich_in_worker(lines: list[RawLine], first: int) -> tuple[ChunkResult, int]:
    enrichment: Enrichment = _worker["enrichment"]
    before = enrichment.queries()
    result = _worker["loop"].run_until_complete(_worker["enricher"].enrich(lines, first))
    return result, enrichment.queries() - before


# -- the run --------------------------------------------------------------------------------------


@dataclass
class Summary:
    counts: Counts
    distinct: set[str] = dataclasses.field(default_factory=set)
    missing: set[str] = dataclasses.field(default_factory=set)
    queries: int = 0
    problems: list[tuple[int, str]] = dataclasses.field(default_factory=list)

    def add(self, result: ChunkResult, queries: int) -> None:
        self.counts.add(result)
        self.distinct.update(result.ids)
        self.missing.update(result.missing)
        self.queries += queries
        room = MAX_LISTED_PROBLEMS - len(self.problems)
        if room > 0:
            self.problems.extend(result.problems[:room])


def add_locale_arguments(parser: argparse.ArgumentParser) -> None:
    """--locale and --locale-from, as enrich-batch and sync read them."""
    locale = parser.add_mutually_exclusive_group()
    locale.add_argument("--locale", help="the locale of every line (default: the recommender's)")
    locale.add_argument("--locale-from", metavar="PATH",
                        help="a dotted path to each line's locale, e.g. input.locale")


def line_rules(args: argparse.Namespace, **limits: Any) -> LineRules:
    """The LineRules of --locale / --locale-from (a bad --locale is refused here, naming it)."""
    return LineRules(locale=query_locale(args.locale) if args.locale else None,
                     locale_from=tuple(args.locale_from.split(".")) if args.locale_from else None,
                     **limits)


async def run_batch(settings: Settings, args: argparse.Namespace,
                    open_parts: Callable[..., Any] | None = None,
                    open_sink: Callable[..., Any] | None = None) -> int:
    started = time.monotonic()
    shard = parse_shard(args.shard)
    if args.workers < 1 or args.chunk_lines < 1:
        raise ValidationFailed.of("--workers" if args.workers < 1 else "--chunk-lines",
                                  "must be 1 or more")
    rules = line_rules(args, max_line_bytes=args.max_line_bytes)
    parts = await (open_parts or input_parts)(args.input, shard, settings)
    checkpoint = Path(args.output + CHECKPOINT_SUFFIX) if _is_local(args.output) else None
    identity = run_identity(args)
    position, keep, counts = Position(), None, Counts()
    if args.resume:
        if checkpoint is None:
            raise BatchFailed("--resume needs OUT to be a file (its checkpoint is OUT.checkpoint)")
        position, keep, counts = read_checkpoint(checkpoint, identity)
    summary = Summary(counts)
    resumed_at = position.line
    job = Job(settings, args.tenant, args.recommender, rules)
    enrichment = Enrichment(job)
    enricher = await enrichment.open()  # also says early when the tenant or recommender is wrong
    sink: Sink = await (open_sink or output_sink)(args.output, keep, settings)
    executor = None
    if args.workers > 1:
        executor = concurrent.futures.ProcessPoolExecutor(
            args.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker, initargs=(job,))
    bar = tqdm(unit=" lines", unit_scale=True, file=sys.stderr, initial=counts.lines,
               desc=args.recommender, disable=True if args.no_progress else None)
    stopped: list[str] = []
    try:
        async def enrich(lines: list[RawLine], first: int) -> tuple[ChunkResult, int]:
            if executor is None:
                before = enrichment.queries()
                result = await enricher.enrich(lines, first)
                return result, enrichment.queries() - before
            return await asyncio.wrap_future(executor.submit(_enrich_in_worker, lines, first))

        # Chunks read ahead: memory stays a few chunks whatever the input. The writer takes them
        # in input order as each is done, so a slow pipe's lines are written as they come.
        queue: asyncio.Queue[tuple[asyncio.Future, Position] | None] = asyncio.Queue(
            2 * args.workers)

        async def read() -> None:
            chunk: list[RawLine] = []
            first = position.line
            async for raw, after in read_lines(parts, position, args.max_line_bytes):
                chunk.append(raw)
                if len(chunk) == args.chunk_lines:
                    await queue.put((asyncio.ensure_future(enrich(chunk, first)), after))
                    chunk, first = [], after.line
            if chunk:
                await queue.put((asyncio.ensure_future(enrich(chunk, first)), after))
            await queue.put(None)

        async def write() -> None:
            while (entry := await queue.get()) is not None:
                future, after = entry
                result, queries = await future
                await sink.write(result.output)
                summary.add(result, queries)
                bar.update(result.lines)
                if checkpoint is not None:
                    write_checkpoint(checkpoint, identity, after, sink.written, summary.counts)
                if args.max_errors is not None and summary.counts.input_errors > args.max_errors:
                    stopped.append("max-errors")
                    return

        reading, writing = asyncio.ensure_future(read()), asyncio.ensure_future(write())
        await asyncio.wait((reading, writing), return_when=asyncio.FIRST_COMPLETED)
        if reading.done() and reading.exception() is None:
            await writing
        else:  # the writer stopped (or failed), or the reader failed: the other is not needed
            for task in (reading, writing):
                task.cancel()
            await asyncio.gather(reading, writing, return_exceptions=True)
            for task in (reading, writing):
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        while not queue.empty():
            entry = queue.get_nowait()
            if entry is not None:
                entry[0].cancel()
    except BaseException:
        bar.close()
        await sink.abort()
        raise
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
        await enrichment.close()
    bar.close()
    if stopped:
        await sink.abort()
    else:
        await sink.close()
        if checkpoint is not None:
            checkpoint.unlink(missing_ok=True)
    report = {**dataclasses.asdict(summary.counts), "distinct_ids": len(summary.distinct),
              "missing_ids": len(summary.missing), "queries": summary.queries,
              "seconds": round(time.monotonic() - started, 3)}
    if resumed_at > 1:
        report["resumed_at_line"] = resumed_at  # distinct and missing IDs: of this run's part
    if summary.problems:
        report["first_input_errors"] = [{"line": n, "reason": r} for n, r in summary.problems]
    if stopped:
        report["stopped"] = (f"more than {args.max_errors} malformed lines (--max-errors); "
                             "the output holds the lines before")
    print(orjson.dumps(report).decode(), file=sys.stderr)
    return 1 if stopped else 0


def _is_local(target: str) -> bool:
    return target != "-" and not target.startswith("s3://")


async def input_parts(source: str, shard: tuple[int, int], settings: Settings) -> list[Part]:
    if source.startswith("s3://"):
        from service.adapters import batch_s3  # aiobotocore: only when S3 is used
        return await batch_s3.object_parts(source, shard, settings)
    return file_parts(source, shard)


async def output_sink(target: str, keep: int | None, settings: Settings) -> Sink:
    if target.startswith("s3://"):
        from service.adapters import batch_s3
        return await batch_s3.S3Sink.open(target, settings)
    return FileSink(target, keep)


def enrich_batch(settings: Settings, args: argparse.Namespace) -> int:
    """The command's entry: exit 0 when every line was answered (malformed ones included), 1 when
    the run stopped (resumable), 2 for bad arguments."""
    try:
        return asyncio.run(run_batch(settings, args))
    except ValidationFailed as exc:
        print(f"catalog-enricher: {exc.detail}", file=sys.stderr)
        return 2
    except (BatchFailed, ProblemError, OSError) as exc:
        print(f"catalog-enricher: {getattr(exc, 'detail', None) or exc}", file=sys.stderr)
        return 1
