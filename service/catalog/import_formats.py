"""Reading an import stream: NDJSON or CSV bytes, chunk by chunk, into valid items or line errors.

Readers are fed raw chunks as they arrive (`feed`) and return what those chunks completed, so an
import holds at most one line (or CSV record) beyond the current chunk, whatever the file's size.
A line longer than the configured limit is reported and skipped without being kept. Every item is
checked by `parse_item`, the same validation as a PUT. Lines are numbered from 1; for CSV the header
is line 1, and a record spanning several lines (a quoted field with line breaks) is numbered by
its first line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Any

from service import json_codec
from service.errors import ValidationFailed
from service.items import ItemFields, item_id_problem, json_type, parse_item

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl",
                "application/x-jsonlines")
CSV_TYPES = ("text/csv",)
CSV_BASE_COLUMNS = ("id", "title", "genre", "price_amount", "price_currency", "image_url", "url",
                    "available")
CSV_TRUE = frozenset(("true", "1", "yes", "y", "t"))
CSV_FALSE = frozenset(("false", "0", "no", "n", "f"))


@dataclass(frozen=True, slots=True)
class ParsedLine:
    """One line of an import: a valid item, or why it was refused (with its ID when readable)."""

    line: int
    item: ItemFields | None
    item_id: str | None = None
    reason: str | None = None


class HeaderRejected(ValueError):
    """The CSV header cannot be imported at all (unknown, duplicate or missing columns)."""


def describe(error: ValidationFailed) -> str:
    return "; ".join(f"{e.field}: {e.reason}" for e in error.errors) or error.detail


def _readable_id(body: Any) -> str | None:
    item_id = body.get("id") if isinstance(body, dict) else None
    return item_id if item_id_problem(item_id) is None else None


def parse_body(line: int, body: Any) -> ParsedLine:
    try:
        return ParsedLine(line, parse_item(body))
    except ValidationFailed as exc:
        return ParsedLine(line, None, _readable_id(body), describe(exc))


class LineSplitter:
    """Splits a byte stream into numbered lines; a line over `max_line_bytes` comes out as None."""

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self.number = 0
        self._pending = bytearray()
        self._too_long = False

    def feed(self, chunk: bytes) -> list[tuple[int, bytes | None]]:
        lines: list[tuple[int, bytes | None]] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if not self._too_long:
                    self._pending += chunk[start:]
                    if len(self._pending) > self.max_line_bytes:
                        self._too_long = True
                        self._pending = bytearray()
                return lines
            if self._pending:
                self._pending += chunk[start:end]
                lines.append(self._complete(bytes(self._pending)))
                self._pending = bytearray()
            else:
                lines.append(self._complete(chunk[start:end]))
            start = end + 1

    def close(self) -> list[tuple[int, bytes | None]]:
        """The last line, when the stream does not end with a line break."""
        if not self._pending and not self._too_long:
            return []
        last = self._complete(bytes(self._pending))
        self._pending = bytearray()
        return [last]

    def _complete(self, line: bytes) -> tuple[int, bytes | None]:
        self.number += 1
        too_long = self._too_long or len(line) > self.max_line_bytes
        self._too_long = False
        if too_long:
            return self.number, None
        return self.number, line[:-1] if line.endswith(b"\r") else line


class NdjsonReader:
    """One JSON item object (with its `id`) per line; blank lines are skipped."""

    def __init__(self, max_line_bytes: int) -> None:
        self.splitter = LineSplitter(max_line_bytes)
        self.too_long = f"the line is longer than {max_line_bytes} bytes"

    def feed(self, chunk: bytes) -> list[ParsedLine]:
        return [self._parse(n, line) for n, line in self.splitter.feed(chunk)
                if line is None or line.strip()]

    def close(self) -> list[ParsedLine]:
        return [self._parse(n, line) for n, line in self.splitter.close()
                if line is None or line.strip()]

    def _parse(self, number: int, line: bytes | None) -> ParsedLine:
        if line is None:
            return ParsedLine(number, None, None, self.too_long)
        if number == 1:
            line = line.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM, as Windows tools write
        try:
            body = json_codec.loads_line(line)
        except json_codec.TooDeep as exc:
            return ParsedLine(number, None, None, f"refused: {exc}")
        except ValueError as exc:
            return ParsedLine(number, None, None, f"not valid JSON: {exc}")
        if not isinstance(body, dict):
            return ParsedLine(number, None, None,
                              f"an item must be a JSON object, got {json_type(body)}")
        return parse_body(number, body)


class CsvReader:
    """A header row, then one item per record. Columns: `id,title,genre,price_amount,
    price_currency,image_url,url,available`, any `attributes.<key>` and `locales.<tag>.<field>`;
    only `id` and `title` are required. An empty cell is an absent value."""

    def __init__(self, max_line_bytes: int) -> None:
        self.splitter = LineSplitter(max_line_bytes)
        self.max_record_bytes = max_line_bytes
        self.columns: list[tuple[str, ...]] | None = None
        self._record: list[str] = []
        self._record_line = 0
        self._record_bytes = 0

    def feed(self, chunk: bytes) -> list[ParsedLine]:
        return self._records(self.splitter.feed(chunk))

    def close(self) -> list[ParsedLine]:
        parsed = self._records(self.splitter.close())
        if self._record:
            # The stream ended inside a quoted field.
            parsed.append(ParsedLine(self._record_line, None, None,
                                     "the record ends inside a quoted field"))
            self._record = []
        if self.columns is None:
            raise HeaderRejected("the CSV has no header row")
        return parsed

    def _records(self, lines: list[tuple[int, bytes | None]]) -> list[ParsedLine]:
        parsed: list[ParsedLine] = []
        for number, raw in lines:
            if raw is None or self._record_bytes + len(raw) > self.max_record_bytes:
                parsed.append(ParsedLine(self._record_line if self._record else number, None, None,
                                         f"the record is longer than {self.max_record_bytes} "
                                         "bytes"))
                self._record, self._record_bytes = [], 0
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                parsed.append(ParsedLine(self._record_line if self._record else number, None, None,
                                         f"not UTF-8 ({exc.reason} at byte {exc.start})"))
                self._record, self._record_bytes = [], 0
                continue
            if not self._record:
                self._record_line = number
                if number == 1:
                    text = text.removeprefix("\ufeff")
            self._record.append(text)
            self._record_bytes += len(raw) + 1
            try:
                # strict: a stream that ends inside quotes raises, so we know to read on.
                fields = next(csv.reader(["\n".join(self._record)], strict=True), [])
            except csv.Error as exc:
                if "unexpected end of data" in str(exc):
                    continue  # a quoted field goes on over the next line
                parsed.append(ParsedLine(self._record_line, None, None, f"bad CSV: {exc}"))
                self._record, self._record_bytes = [], 0
                continue
            line = self._record_line
            self._record, self._record_bytes = [], 0
            if not fields or fields == [""]:
                continue  # a blank line
            if self.columns is None:
                self.columns = _header(fields)
                continue
            parsed.append(self._item(line, fields))
        return parsed

    def _item(self, line: int, fields: list[str]) -> ParsedLine:
        columns = self.columns or []
        if len(fields) != len(columns):
            return ParsedLine(line, None, None,
                              f"has {len(fields)} fields; the header has {len(columns)}")
        body: dict[str, Any] = {}
        for column, value in zip(columns, fields, strict=True):
            if value == "":
                continue
            kind = column[0]
            if kind == "attributes":
                body.setdefault("attributes", {})[column[1]] = value
            elif kind == "locales":
                body.setdefault("locales", {}).setdefault(column[1], {})[column[2]] = value
            elif kind == "price_amount":
                body.setdefault("price", {})["amount"] = value
            elif kind == "price_currency":
                body.setdefault("price", {})["currency"] = value
            elif kind == "available":
                lowered = value.strip().lower()
                body["available"] = (True if lowered in CSV_TRUE
                                     else False if lowered in CSV_FALSE else value)
            else:
                body[kind] = value
        if isinstance(body.get("available"), str):
            return ParsedLine(line, None, _readable_id(body),
                              "available: must be true or false (or 1/0, yes/no)")
        return parse_body(line, body)


def _header(fields: list[str]) -> list[tuple[str, ...]]:
    columns: list[tuple[str, ...]] = []
    seen: set[str] = set()
    for name in fields:
        name = name.strip()
        if name in seen:
            raise HeaderRejected(f"column {name!r} appears twice")
        seen.add(name)
        if name in CSV_BASE_COLUMNS:
            columns.append((name,))
        elif name.startswith("attributes.") and len(name) > len("attributes."):
            columns.append(("attributes", name[len("attributes."):]))
        elif name.startswith("locales.") and name.count(".") == 2 and all(name.split(".")):
            _, tag, field = name.split(".")
            columns.append(("locales", tag, field))
        else:
            raise HeaderRejected(
                f"unknown column {name!r} (expected " + ", ".join(CSV_BASE_COLUMNS)
                + ", attributes.<key> or locales.<tag>.<field>)"
            )
    missing = [c for c in ("id", "title") if c not in seen]
    if missing:
        raise HeaderRejected("the header lacks the column(s) " + ", ".join(missing))
    return columns


def reader_for(content_type: str, max_line_bytes: int) -> NdjsonReader | CsvReader | None:
    """The reader for a request's media type, or None when it is neither NDJSON nor CSV."""
    if content_type in NDJSON_TYPES:
        return NdjsonReader(max_line_bytes)
    if content_type in CSV_TYPES:
        return CsvReader(max_line_bytes)
    return None

