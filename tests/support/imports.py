"""Import bodies for tests: items as NDJSON or CSV, the shared Retail Demo Store products turned
into items, and a raw HTTP upload that can stop half-way (a client that goes away mid-import)."""

from __future__ import annotations

import asyncio
import csv
import functools
import io
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import yaml

from tests.support.api import Api

NDJSON = "application/x-ndjson"
CSV = "text/csv"
BASE_COLUMNS = ("id", "title", "genre", "price_amount", "price_currency", "image_url", "url",
                "available")


@functools.cache
def _products(path: Path) -> tuple[dict[str, Any], ...]:
    # libyaml's loader where PyYAML was built with it: the pure-Python one takes seconds here.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return tuple(yaml.load(path.read_text(encoding="utf-8"), Loader=loader))  # noqa: S506


def retail_items(shared_dir: Path) -> list[dict[str, Any]]:
    """The 2,465 Retail Demo Store products as catalog items (prices as exact decimal strings)."""
    items = []
    for product in _products(shared_dir / "datasets" / "retail-demo-store-products.yaml"):
        rest = {k: v for k, v in product.items()
                if k not in ("id", "name", "category", "price", "image", "link")}
        item = {
            "id": product["id"], "title": product["name"], "genre": product["category"],
            # YAML read the price as a float; its repr is the shortest exact form of what the
            # file says (129.99), which is what a careful converter would send.
            "price": {"amount": repr(product["price"]), "currency": "USD"},
            "image_url": f"https://images.example.com/{product['category']}/{product['image']}",
            "attributes": {k: v for k, v in rest.items() if v is not None},
        }
        if product.get("link"):
            item["url"] = product["link"]
        items.append(item)
    return items


def ndjson(items: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(item) + b"\n" for item in items)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    return str(value)


def csv_rows(items: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The header and rows of `items` as CSV cells (attributes become strings)."""
    attribute_keys = sorted({key for item in items for key in item.get("attributes", {})})
    header = [*BASE_COLUMNS, *(f"attributes.{key}" for key in attribute_keys)]
    rows = []
    for item in items:
        price = item.get("price") or {}
        row = [item["id"], item["title"], item.get("genre"), price.get("amount"),
               price.get("currency"), item.get("image_url"), item.get("url"),
               item.get("available")]
        row += [item.get("attributes", {}).get(key) for key in attribute_keys]
        rows.append([_cell(value) for value in row])
    return header, rows


def csv_text(header: list[str], rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


async def post_import(api: Api, catalog: str, body: bytes, content_type: str = NDJSON,
                      query: str = "") -> tuple[int, Any]:
    path = f"/v1/catalogs/{catalog}/items:import{'?' + query if query else ''}"
    # A file object, so aiohttp streams it (as a real client uploading a file would).
    async with api.client.post(path, data=io.BytesIO(body),
                               headers=api.headers({"Content-Type": content_type})) as response:
        payload = await response.read()
        return response.status, orjson.loads(payload) if payload else None


async def all_items(api: Api, catalog: str) -> list[dict[str, Any]]:
    path: str | None = f"/v1/catalogs/{catalog}/items?limit=1000"
    items: list[dict[str, Any]] = []
    while path:
        status, page, _ = await api.get(path)
        assert status == 200, page
        items += page["items"]
        path = page["next"]
    return items


class PartialUpload:
    """An import sent over a raw socket, so the test decides when the rest of the body comes,
    or that it never does (the connection is cut)."""

    def __init__(self, host: str, port: int, key: str, path: str, body: bytes,
                 content_type: str = NDJSON) -> None:
        self.host, self.port, self.key, self.path = host, port, key, path
        self.body = body
        self.content_type = content_type
        self.writer: asyncio.StreamWriter | None = None
        self.reader: asyncio.StreamReader | None = None

    async def send_first(self, length: int) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Authorization: Bearer {self.key}\r\nContent-Type: {self.content_type}\r\n"
                f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n")
        self.writer.write(head.encode() + self.body[:length])
        await self.writer.drain()
        self.sent = length

    async def finish(self) -> tuple[int, Any]:
        assert self.writer
        assert self.reader
        self.writer.write(self.body[self.sent:])
        await self.writer.drain()
        raw = await self.reader.read()
        self.writer.close()
        head, _, payload = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        return status, orjson.loads(payload) if payload else None

    def cut(self) -> None:
        assert self.writer
        self.writer.transport.abort()


async def import_lock_held(database_url: str) -> bool:
    """Whether some session holds an import's per-catalog lock right now."""
    from service.storage.item_import import IMPORT_LOCK_CLASS

    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(
            "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = $1 AND objsubid = 2", IMPORT_LOCK_CLASS,
        )
    finally:
        await conn.close()


async def import_finished(database_url: str) -> bool:
    return not await import_lock_held(database_url)


async def import_copying(database_url: str) -> bool:
    """Whether an import's connection has sent rows to its staging table with COPY."""
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(
            "SELECT count(*) > 0 FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'COPY%import_staging%'"
        )
    finally:
        await conn.close()


async def wait_for(check, *args: Any, attempts: int = 500) -> None:
    """Poll an observable state of another process (Postgres) until it holds; fail if never."""
    for _ in range(attempts):
        if await check(*args):
            return
        await asyncio.sleep(0.02)  # paces the poll
    raise AssertionError(f"{check.__name__} never became true")
