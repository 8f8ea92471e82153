"""Batch enrichment: a recommendation job's whole output, one answer line per input line.

An input line is one of

    Amazon Personalize batch inference output (the developer guide, "Batch inference job output
    examples"):
      USER_PERSONALIZATION  {"input": {"userId": "4638"}, "output": {"recommendedItems": [...],
                             "scores": [...]}, "error": null}
      RELATED_ITEMS         {"input": {"itemId": "105"}, "output": {"recommendedItems": [...]}}
      PERSONALIZED_RANKING  {"input": {"userId": "...", "itemList": [...]}, "output":
                             {"recommendedItems": [...], "scores": [...]}}
    the generic line        {"key": "...", "ids": [...], "locale": "de_DE"}

and its answer line is exactly what the content route (service/adapters/content.py) answers for
its IDs and locale, made by the same `answer_bytes`, each item with its `score` where the input
had scores, plus the input's key as `key` (a Personalize line's `userId` or `itemId`): the enriched
line `catalog-enricher sync` reads as it is.

A line that cannot be served as asked (not JSON, keys missing, IDs that are not strings, `error`
set by the job, over the line limit) is answered `{"line": N, "send": false, "reason": "..."}`
(its `key` too when it could be read) and counted: never dropped, never fatal.

Lines are enriched a chunk at a time: the distinct IDs of a chunk go through the resolver once
(L1, L2, then one `ANY` query for what both miss), so a night's million lines make a few hundred
queries and a warm run none. The CLI (batch_run.py) and the HTTP route share this module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from service.adapters import content
from service.adapters.content import ContentQuery, query_locale
from service.enrichment.enrich import is_usable
from service.enrichment.recommender_lookup import Recommender
from service.errors import Unavailable, ValidationFailed
from service.items import all_item_ids_valid, item_id_problem, json_type
from service.resolution.deadline import Deadline
from service.resolution.resolver import ItemResolver

# Personalize recommends at most 500 items a user (numResults); the generic line has the same cap.
MAX_IDS_PER_LINE = 500
MAX_LINE_BYTES = 1024 * 1024  # a line of 500 long IDs and scores is ~150 KB
CHUNK_LINES = 2000
CHUNK_DEADLINE_MS = 60_000  # a chunk's lookups: one query, far within this unless Postgres fails
MAX_REASON_TEXT = 200
KEY_FIELDS = ("userId", "itemId")
# The reason of a line that names no item at all (`sync` clears such a user's attribute).
NO_RECOMMENDED_ITEMS = "no recommended items"
_NUMBERS = frozenset((int, float))


class TooLong:
    """Stands for an input line over the limit (its bytes are never held)."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


RawLine = bytes | TooLong


@dataclass(slots=True)
class BatchLine:
    """One input line read: what to enrich, or why it cannot be (`reason`)."""

    number: int
    key_field: str | None = None
    key: Any = None
    ids: list[str] = field(default_factory=list)
    scores: list[Any] | None = None
    locale: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class LineRules:
    """How lines are read: the locale for lines that name none, where in a line its locale is
    (a dotted path, e.g. `input.locale`), the line limit."""

    locale: str | None = None
    locale_from: tuple[str, ...] | None = None
    max_line_bytes: int = MAX_LINE_BYTES


@dataclass
class ChunkResult:
    """A chunk's answer lines (each ending in a newline) and its counts."""

    output: bytes
    lines: int = 0
    enriched: int = 0
    without_content: int = 0
    input_errors: int = 0
    ids: list[str] = field(default_factory=list)  # the chunk's distinct IDs
    missing: list[str] = field(default_factory=list)  # those the catalog cannot show
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)


def parse_line(raw: RawLine, number: int, rules: LineRules) -> BatchLine:
    line = BatchLine(number)
    if isinstance(raw, TooLong):
        line.reason = f"the line is {raw.size:,} bytes, over the {rules.max_line_bytes:,}-byte limit"
        return line
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        line.reason = f"not valid JSON ({str(exc)[:MAX_REASON_TEXT]})"
        return line
    if not isinstance(data, dict):
        line.reason = f"must be a JSON object, got {json_type(data)}"
        return line
    if "input" in data or "output" in data:
        _read_personalize(data, line)
    elif "ids" in data or "key" in data:
        _read_generic(data, line)
    else:
        line.reason = ('neither a batch inference output line ({"input": ..., "output": ...}) '
                       'nor {"key": ..., "ids": [...]}')
    if line.reason is None:
        _read_locale(data, line, rules)
    return line


def _read_personalize(data: dict[str, Any], line: BatchLine) -> None:
    given = data.get("input")
    if not isinstance(given, dict):
        line.reason = "input must be an object holding userId or itemId"
        return
    for name in KEY_FIELDS:
        if name in given:
            line.key_field, line.key = name, given[name]
            break
    else:
        line.reason = "input holds neither userId nor itemId"
        return
    if not isinstance(line.key, str):
        line.reason = f"input.{line.key_field} must be a string, got {json_type(line.key)}"
        line.key_field = line.key = None
        return
    if data.get("error") is not None:
        error = data["error"]
        text = error if isinstance(error, str) else orjson.dumps(error).decode()
        line.reason = f"the batch inference job failed for this line: {text[:MAX_REASON_TEXT]}"
        return
    output = data.get("output")
    if not isinstance(output, dict):
        line.reason = "output is required: an object holding recommendedItems"
        return
    if not _read_ids(output.get("recommendedItems"), "output.recommendedItems", line):
        return
    scores = output.get("scores")
    if scores is None:
        return
    if not isinstance(scores, list) or len(scores) != len(line.ids):
        line.reason = "output.scores must be an array with one score per recommended item"
        return
    if not all(type(s) in _NUMBERS for s in scores):  # type(): a bool is an int, not a score
        line.reason = "output.scores must hold numbers"
        return
    line.scores = scores


def _read_generic(data: dict[str, Any], line: BatchLine) -> None:
    key = data.get("key")
    if not isinstance(key, str):
        line.reason = ("key is required: the line's key, a string" if key is None
                       else f"key must be a string, got {json_type(key)}")
        return
    line.key_field, line.key = "key", key
    _read_ids(data.get("ids"), "ids", line)


def _read_ids(ids: object, where: str, line: BatchLine) -> bool:
    if not isinstance(ids, list):
        line.reason = (f"{where} is required: an array of item IDs" if ids is None
                       else f"{where} must be an array, got {json_type(ids)}")
        return False
    if len(ids) > MAX_IDS_PER_LINE:
        line.reason = f"{where}: at most {MAX_IDS_PER_LINE} IDs per line, got {len(ids)}"
        return False
    if ids and not all_item_ids_valid(ids):
        index, problem = next((i, p) for i, item_id in enumerate(ids)
                              if (p := item_id_problem(item_id)))
        line.reason = f"{where}[{index}] {problem}"
        return False
    line.ids = ids
    return True


def _read_locale(data: dict[str, Any], line: BatchLine, rules: LineRules) -> None:
    value: Any = rules.locale
    where = "--locale"
    if line.key_field == "key" and data.get("locale") is not None:
        value, where = data["locale"], "locale"
    elif rules.locale_from is not None:
        node: Any = data
        for name in rules.locale_from:
            node = node.get(name) if isinstance(node, dict) else None
        where = ".".join(rules.locale_from)
        if node is not None and node != "":
            value = node
    if value is None:
        return
    if not isinstance(value, str):
        line.reason = f"{where} must be a locale string, got {json_type(value)}"
        return
    try:
        line.locale = query_locale(value)
    except ValidationFailed:
        line.reason = f"{where} is not a locale tag like en_US, de or es-MX"


class _ChunkRows:
    """What content_answer_json reads of a Resolved (`derived`, `get`), with a row for every ID
    of `ids` in `locale`: kept ones from L1, the others rendered here once. Rendered rows go to
    `rendered` (when given) for the caller to attach to L1."""

    __slots__ = ("derived", "get")

    def __init__(self, resolved: Any, enricher: Any, locale: str | None, ids: list[str],
                 rendered: dict[str, Any] | None) -> None:
        kept = resolved.derived.get
        item_of = resolved.get
        json_row = enricher.json_row
        rows: dict[str, Any] = {}
        for item_id in dict.fromkeys(ids):
            row = kept(item_id)
            if row is None:
                item = item_of(item_id)
                row = json_row(item, locale)
                if item is not None and rendered is not None:
                    rendered[item_id] = (item, row)
            rows[item_id] = row
        self.derived = rows
        self.get = item_of


def problem_line(line: BatchLine) -> bytes:
    answer: dict[str, Any] = {}
    if line.key_field is not None:
        answer["key"] = line.key
    answer.update(line=line.number, send=False, reason=line.reason)
    return orjson.dumps(answer)


class BatchEnricher:
    """Enriches chunks of lines for one recommender, on one resolver."""

    def __init__(self, recommender: Recommender, resolver: ItemResolver, rules: LineRules,
                 deadline_ms: int = CHUNK_DEADLINE_MS) -> None:
        self.recommender = recommender
        self.resolver = resolver
        self.rules = rules
        self.deadline_ms = deadline_ms

    async def enrich(self, raw_lines: Sequence[RawLine], first_number: int) -> ChunkResult:
        """The answer lines of `raw_lines` (numbered from `first_number`), in order. Raises
        Unavailable when Postgres could not be asked: a batch never writes a stale answer."""
        rules = self.rules
        lines = [parse_line(raw, first_number + i, rules) for i, raw in enumerate(raw_lines)]
        servable = [line for line in lines if line.reason is None and line.ids]
        ids = list(dict.fromkeys(i for line in servable for i in line.ids))
        locales = {line.locale for line in servable}
        recommender, resolver = self.recommender, self.resolver
        enricher = recommender.enricher
        # Rows kept on L1 entries (as the content route keeps them) are per locale: only when
        # the whole chunk has one.
        derived_key = (enricher.derived_key(next(iter(locales)))
                       if len(locales) == 1 and content.serves_json(enricher)
                       and resolver.local.enabled else None)
        resolved = await resolver.resolve(recommender.catalog_id, ids,
                                          deadline=Deadline.after(self.deadline_ms),
                                          checked=True, derived_key=derived_key)
        if resolved.degraded:
            raise Unavailable(f"the catalog database is unavailable ({resolved.degraded})")
        if resolved:  # items to render (none on the warm path): their locales' CLDR data first
            await enricher.prepare_locales(locales, resolved)
        result = ChunkResult(b"", lines=len(lines), ids=ids)
        out: list[bytes] = []
        rendered: dict[str, Any] = {}
        # Each distinct ID rendered once per locale in the chunk, not once per line it is on:
        # the content answer reads its rows from `derived` first (see content_answer_json).
        views: dict[str | None, Any] = {}
        if content.serves_json(enricher):
            for locale in locales:
                views[locale] = _ChunkRows(
                    resolved, enricher, locale,
                    [i for line in servable if line.locale == locale for i in line.ids],
                    rendered if derived_key is not None else None)
        missing: dict[str, None] = {}
        name = recommender.name
        for line in lines:
            if line.reason is None and not line.ids:
                line.reason = NO_RECOMMENDED_ITEMS
            if line.reason is not None:
                out.append(problem_line(line))
                if line.reason == NO_RECOMMENDED_ITEMS:
                    result.without_content += 1
                else:
                    result.input_errors += 1
                    result.problems.append((line.number, line.reason))
                continue
            extras = [{"score": s} for s in line.scores] if line.scores is not None else None
            body, send, rows = content.answer_bytes(
                name, enricher, ContentQuery(line.ids, line.locale),
                views.get(line.locale, resolved), extras, {"key": line.key})
            if rows:
                rendered.update(rows)
            out.append(body)
            if send:
                result.enriched += 1
            else:
                result.without_content += 1
        kept = (next(iter(views.values())).derived if len(views) == 1 else resolved.derived).get
        for item_id in ids:
            row = kept(item_id)
            if not (row if row is not None else is_usable(resolved.get(item_id))):
                missing[item_id] = None
        result.missing = list(missing)
        if derived_key is not None and rendered:
            resolver.attach(recommender.catalog_id, derived_key, rendered, resolved.missed)
        out.append(b"")
        result.output = b"\n".join(out)
        return result


async def split_lines(blocks: AsyncIterator[bytes], max_line_bytes: int
                      ) -> AsyncIterator[tuple[RawLine, int]]:
    """The lines of a stream of blocks, each with the bytes it took (newline included), without
    its newline (nor a `\\r` before it). A line over `max_line_bytes` comes as TooLong, its bytes
    passed over as they arrive, so memory stays bounded whatever the input."""
    pending = bytearray()
    skipping = 0  # bytes of an over-long line passed over so far
    async for block in blocks:
        start = 0
        while True:
            end = block.find(b"\n", start)
            if end < 0:
                rest = len(block) - start
                if skipping:
                    skipping += rest
                elif len(pending) + rest > max_line_bytes:
                    skipping = len(pending) + rest
                    pending.clear()
                else:
                    pending += block[start:]
                break
            taken = end - start + 1
            if skipping:
                yield TooLong(skipping + taken - 1), skipping + taken
                skipping = 0
            elif len(pending) + taken - 1 > max_line_bytes:
                yield TooLong(len(pending) + taken - 1), len(pending) + taken
                pending.clear()
            else:
                size = len(pending) + taken
                pending += block[start:end]
                line = bytes(pending)
                pending.clear()
                yield (line[:-1] if line.endswith(b"\r") else line), size
            start = end + 1
    if skipping:
        yield TooLong(skipping), skipping
    elif pending:
        yield (bytes(pending[:-1]) if pending.endswith(b"\r") else bytes(pending)), len(pending)
