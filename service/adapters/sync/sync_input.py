"""What `sync` reads: exactly what `enrich-batch` reads, read and enriched by its code.

`IN` is a file, `-` or `s3://bucket/prefix/` (every `*.out` / `*.out.gz` object in key order,
gzip read transparently): `batch_run.input_parts` and `batch_run.read_lines`, so both commands
take the same inputs and number their lines alike. Each line is one user:

- an enriched line, as `enrich-batch` writes it (`{"key": "u1", "send": true, "items": [...],
  ...}`): used as it is; an `enrich-batch` line answered `{"key", "send": false, "reason"}` is
  unusable, with its reason;
- anything else (Amazon Personalize batch inference output, the generic `{"key", "ids",
  "locale"}` line, or a malformed line) goes, a chunk at a time, through `batch.BatchEnricher`:
  the same parsing, the same one resolver query per chunk, the same answer line as `enrich-batch`
  writes; its problem lines become unusable users with the same reasons.

A line without recommended items (an empty `recommendedItems` or `ids`) is a user whose profile
gets `"items": []`, so it stops showing yesterday's items. Lines a resumed run already finished
(`skip`) are neither parsed nor enriched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import orjson

from service.adapters.batch import (
    CHUNK_LINES,
    MAX_LINE_BYTES,
    NO_RECOMMENDED_ITEMS,
    BatchEnricher,
    RawLine,
)
from service.adapters.batch_run import Part, Position, read_lines
from service.adapters.sync.sender import UserLine

_EMPTY: dict[str, Any] = {"items": []}


async def read_users(parts: list[Part], enricher: BatchEnricher | None, *,
                     skip: Callable[[int], bool] = lambda line: False,
                     chunk_lines: int = CHUNK_LINES,
                     max_line_bytes: int = MAX_LINE_BYTES) -> AsyncIterator[UserLine]:
    """Every line of `parts` as a UserLine, in order (blank lines counted, not yielded)."""
    chunk: list[RawLine] = []
    first = number = 1
    async for raw, _ in read_lines(parts, Position(), max_line_bytes):
        chunk.append(raw)
        number += 1
        if len(chunk) >= chunk_lines:
            for user in await _users(chunk, first, enricher, skip):
                yield user
            chunk, first = [], number
    if chunk:
        for user in await _users(chunk, first, enricher, skip):
            yield user


async def _users(chunk: Sequence[RawLine], first: int, enricher: BatchEnricher | None,
                 skip: Callable[[int], bool]) -> list[UserLine]:
    users: list[UserLine | None] = []
    raws: list[RawLine] = []  # for the enricher, in order
    places: list[tuple[int, int]] = []  # (index in users, line number) of each of raws
    for number, raw in enumerate(chunk, first):
        if skip(number):
            users.append(UserLine(number, None, None))  # finished by an earlier attempt
            continue
        if isinstance(raw, bytes):
            if not raw.strip():
                continue
            enriched = _enriched(number, raw)
            if enriched is not None:
                users.append(enriched)
                continue
        if enricher is None:
            users.append(UserLine(number, None, None,
                                  "input: a raw line, and no recommender to enrich it with"))
            continue
        places.append((len(users), number))
        raws.append(raw)
        users.append(None)
    if raws:
        assert enricher is not None
        result = await enricher.enrich(raws, first)
        answers = result.output.split(b"\n")[:-1]  # one per line, and the last newline's ""
        for (index, number), answer in zip(places, answers, strict=True):
            users[index] = _answered(number, orjson.loads(answer))
    return [user for user in users if user is not None]


def _enriched(number: int, raw: bytes) -> UserLine | None:
    """The line as a user when `enrich-batch` wrote it (has `send`), else None."""
    if b'"send"' not in raw:  # cheap: neither Personalize output nor a generic line has it
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict) or "send" not in value:
        return None
    return _answered(number, value)


def _answered(number: int, answer: dict[str, Any]) -> UserLine:
    key = answer.get("key")
    if not isinstance(key, str) or not key:
        return UserLine(number, None, None,
                        f"input: {answer.get('reason') or '`key` must be a non-empty string'}")
    if isinstance(answer.get("items"), list):
        return UserLine(number, key, answer)
    reason = answer.get("reason")
    if reason == NO_RECOMMENDED_ITEMS:
        return UserLine(number, key, _EMPTY)
    return UserLine(number, key, None, f"input: {reason or 'the answer has no items array'}")
