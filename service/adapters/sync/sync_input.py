"""What `sync` reads: NDJSON lines, each one user, enriched already or enriched here.

- An enriched line, as `enrich-batch` writes it: `{"key": "u1", "send": true, "items": [...],
  "Recommendations": {...}, "missing": [...]}`: used as it is.
- A raw line: the generic `{"key": "u1", "ids": ["1815", ...], "locale": "de_DE"}`, or an Amazon
  Personalize batch inference output line (`{"input": {"userId": "u1"}, "output":
  {"recommendedItems": [...], "scores": [...]}, "error": null}`; `itemId` for related items): its
  IDs are resolved through the resolver (L1, then one `ANY` query per chunk for the misses) and
  answered by the content route's own `content_answer`, scores added to the items.

`read_users` is the one entry point, so a better reader (enrich-batch's, with S3 and gzip) can take
its place without touching the sender.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson

from service.adapters import content
from service.adapters.sync.sender import UserLine
from service.enrichment.recommender_lookup import Recommender
from service.errors import ValidationFailed
from service.resolution.resolver import ItemResolver

CHUNK_LINES = 2000
READ_BYTES = 1024 * 1024


@dataclass(frozen=True)
class _Raw:
    line: int
    key: str
    ids: list[str]
    locale: str | None
    scores: list[Any] | None


class RawEnricher:
    """Raw lines → the content route's answers, a chunk at a time."""

    def __init__(self, resolver: ItemResolver, recommender: Recommender) -> None:
        self.resolver = resolver
        self.recommender = recommender

    async def answers(self, raws: Sequence[_Raw]) -> list[dict[str, Any]]:
        recommender = self.recommender
        enricher = recommender.enricher
        wanted = list(dict.fromkeys(item_id for raw in raws for item_id in raw.ids))
        resolved = await self.resolver.resolve(recommender.catalog_id, wanted)
        await enricher.prepare_locales({raw.locale for raw in raws}, resolved)
        found = []
        for raw in raws:
            extras = None if raw.scores is None else [
                {"score": score} if score is not None else {} for score in raw.scores]
            found.append(content.content_answer(
                recommender.name, enricher, content.ContentQuery(raw.ids, raw.locale), resolved,
                extras))
        return found


async def read_users(source: BinaryIO, raw_enricher: RawEnricher | None) -> AsyncIterator[UserLine]:
    """Every line of `source` as a UserLine, in order (blank lines counted, not yielded)."""
    number = 0
    rest = b""
    while True:
        # A thread, so a slow pipe never stalls the senders on the event loop.
        chunk = await asyncio.to_thread(source.read, READ_BYTES)
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop() if chunk else b""
        parsed: list[UserLine | _Raw] = []
        for line in lines:
            number += 1
            if line.strip():
                parsed.append(_parse(number, line))
        raws = [entry for entry in parsed if isinstance(entry, _Raw)]
        answers: dict[int, dict[str, Any]] = {}
        for start in range(0, len(raws), CHUNK_LINES):
            part = raws[start:start + CHUNK_LINES]
            if raw_enricher is None:
                break
            for raw, answer in zip(part, await raw_enricher.answers(part), strict=True):
                answers[raw.line] = answer
        for entry in parsed:
            if isinstance(entry, _Raw):
                if raw_enricher is None:
                    yield UserLine(entry.line, entry.key, None, "input: a raw line, and no "
                                   "recommender to enrich it with")
                else:
                    yield UserLine(entry.line, entry.key, answers[entry.line])
            else:
                yield entry
        if not chunk:
            return


def _parse(number: int, line: bytes) -> UserLine | _Raw:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return UserLine(number, None, None, f"input: not JSON ({exc})")
    if not isinstance(value, dict):
        return UserLine(number, None, None, "input: not a JSON object")
    if "input" in value or "output" in value:
        return _personalize_line(number, value)
    key = value.get("key")
    if not isinstance(key, str) or not key:
        return UserLine(number, None, None, "input: `key` must be a non-empty string")
    if "items" in value:
        return UserLine(number, key, value)
    return _raw(number, key, value.get("ids"), value.get("locale"), None)


def _personalize_line(number: int, value: dict[str, Any]) -> UserLine | _Raw:
    given = value.get("input")
    key = None
    if isinstance(given, dict):
        key = given.get("userId", given.get("itemId"))
    if not isinstance(key, str) or not key:
        return UserLine(number, None, None, "input: `input.userId` (or `itemId`) is missing")
    if value.get("error"):
        return UserLine(number, key, None, f"input: the batch job's error: {value['error']}"[:500])
    output = value.get("output")
    if not isinstance(output, dict):
        return UserLine(number, key, None, "input: `output` is missing")
    scores = output.get("scores")
    ids = output.get("recommendedItems")
    if scores is not None and (not isinstance(scores, list) or not isinstance(ids, list)
                               or len(scores) != len(ids)):
        scores = None  # scores that do not line up with the IDs are left out, not guessed
    return _raw(number, key, ids, None, scores)


def _raw(number: int, key: str, ids: Any, locale: Any, scores: list[Any] | None) -> UserLine | _Raw:
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return UserLine(number, key, None, "input: `ids` must be an array of strings")
    try:
        checked = content.query_locale(locale if isinstance(locale, str) else None)
    except ValidationFailed as exc:
        return UserLine(number, key, None, f"input: {exc.detail}")
    if locale is not None and not isinstance(locale, str):
        return UserLine(number, key, None, "input: `locale` must be a string")
    return _Raw(number, key, ids, checked, scores)
