"""`catalog-enricher import`: a file (or standard input) into a catalog, straight to the database,
through the same import code as `POST …/items:import`, with a progress bar (bytes and lines) on
stderr and the summary as JSON on stdout.

Exit status: 0 when every line landed, 1 when some line was refused (or, with --atomic, when
nothing landed because of them), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from typing import BinaryIO

import asyncpg
import orjson
from tqdm import tqdm

from service.catalog.import_formats import CsvReader, NdjsonReader
from service.catalog.item_import import ImportOptions, import_items
from service.errors import ImportRejected
from service.runtime.settings import Settings
from service.storage import catalogs as catalog_store
from service.storage import tenants as tenant_store

CHUNK_BYTES = 1024 * 1024


def add_import_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "import", help="import items from an NDJSON or CSV file into a catalog",
        description="Stream NDJSON (one item per line) or CSV (a header row) into a catalog, in "
                    "one transaction; prints the summary as JSON.",
    )
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--format", choices=("ndjson", "csv"),
                        help="the file's format (default: csv for a .csv file, else ndjson)")
    parser.add_argument("--mode", choices=("upsert", "replace"), default="upsert",
                        help="replace also deletes the catalog's items absent from the file")
    parser.add_argument("--atomic", action="store_true",
                        help="all or nothing: one refused line and nothing is imported")
    parser.add_argument("--create-catalog", action="store_true",
                        help="create the catalog when it does not exist")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (it is off anyway when stderr is not a terminal)")
    parser.add_argument("file", help="the file to import, or - for standard input")


async def _chunks(source: BinaryIO) -> AsyncIterator[bytes]:
    while True:
        # A thread, so a slow pipe never stalls the COPY running on the event loop.
        chunk = await asyncio.to_thread(source.read, CHUNK_BYTES)
        if not chunk:
            return
        yield chunk


def _size(source: BinaryIO) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        status = os.fstat(source.fileno())
        if status.st_size > 0:
            return status.st_size
    return None


async def import_file(conn: asyncpg.Connection, args: argparse.Namespace,
                      settings: Settings) -> int:
    tenant = await tenant_store.get_tenant(conn, args.tenant)
    catalog = await catalog_store.find_catalog(conn, tenant.id, args.catalog)
    if catalog is None:
        if not args.create_catalog:
            print(f"catalog-enricher: tenant {tenant.name} has no catalog {args.catalog!r} "
                  "(pass --create-catalog to create it)", file=sys.stderr)
            return 1
        catalog, _ = await catalog_store.upsert_catalog(conn, tenant.id, args.catalog, None)
    file_format = args.format or ("csv" if args.file.lower().endswith(".csv") else "ndjson")
    reader_class = CsvReader if file_format == "csv" else NdjsonReader
    options = ImportOptions(
        replace=args.mode == "replace", atomic=args.atomic,
        batch_rows=settings.import_batch_rows, max_errors=settings.import_max_errors,
        timeout=settings.import_timeout,
    )
    with contextlib.ExitStack() as stack:
        if args.file == "-":
            source = sys.stdin.buffer
        else:
            try:
                # Opened once, before any await matters: the reads themselves run in a thread.
                source = stack.enter_context(open(args.file, "rb"))  # noqa: ASYNC230
            except OSError as exc:
                print(f"catalog-enricher: cannot read {args.file}: {exc.strerror}",
                      file=sys.stderr)
                return 2
        bar = stack.enter_context(tqdm(
            total=_size(source), unit="B", unit_scale=True, unit_divisor=1024,
            desc=f"{tenant.name}/{catalog.name}", file=sys.stderr,
            disable=True if args.no_progress else None,  # None: only on a terminal
        ))

        def progress(read: int, lines: int, stage: str) -> None:
            # After the last byte the upsert still runs (seconds for a large file): say so.
            bar.set_postfix_str(f"{lines:,} lines" + ("" if stage == "reading" else f", {stage}"),
                                refresh=False)
            bar.update(read - bar.n)
            if stage != "reading":
                bar.refresh()

        try:
            summary = await import_items(conn, catalog.id, _chunks(source),
                                         reader_class(settings.import_max_line_bytes), options,
                                         progress)
        except ImportRejected as exc:
            bar.close()
            print(f"catalog-enricher: {exc.detail}", file=sys.stderr)
            print(orjson.dumps({"rejected": exc.rejected, "errors": exc.line_errors}).decode())
            return 1
    print(orjson.dumps(summary.as_json()).decode())
    return 0 if summary.rejected == 0 else 1
