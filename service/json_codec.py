"""JSON in one place: orjson for speed, with an exact fallback for numbers orjson cannot hold.

orjson reads integers beyond 64 bits as floats, and refuses floats beyond a double's range
(`1e400`), where the transformer must return every value untouched (and its fast reader, which
never parses the numbers it passes over, does). A body with a run of 20 or more digits, or one
orjson refuses, is therefore read by the standard library instead (slower, exact), which keeps
each such number as an ExactNumber: its own text, written back as it came.

Every document read here is first held to MAX_DEPTH levels of nesting (`nesting_exceeds`): the
parsers' own guards differ (orjson reads 1,024 levels but writes only 254, msgspec and the
standard library raise RecursionError near the interpreter's recursion limit), so without one
limit below all of them a deep body could be read and then fail to be written, a 500.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import msgspec
import orjson

MAX_DEPTH = 250
"""Deepest nesting of arrays and objects accepted in any JSON input (a body, an import line).
Below orjson's 254 levels on output, so whatever is read (plus the two levels an answer wraps it
in) can be written back; real events and items are under 10."""

# Digits become "0", everything else " ": a run of 20 digits is then a plain substring search.
# Two C-speed passes, where the regex `\d{20,}` backtracked on every digit run (~25 µs per KB).
_DIGIT_MASK = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_DIGIT_RUN = b"0" * 20


class ExactNumber:
    """A JSON number orjson cannot hold (an integer beyond 64 bits, a float beyond a double's
    range), kept as the text it came as; `dumps` writes that text back."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExactNumber) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"ExactNumber({self.text!r})"


def _default(value: Any) -> Any:
    if isinstance(value, ExactNumber):
        return orjson.Fragment(value.text)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, frozenset | set | tuple):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def needs_exact(body: bytes) -> bool:
    """Does the body hold a run of 20+ digits (maybe an integer beyond 64 bits)?"""
    return _LONG_DIGIT_RUN in body.translate(_DIGIT_MASK)


class TooDeep(ValueError):
    """The document nests arrays and objects deeper than MAX_DEPTH."""

    def __init__(self) -> None:
        super().__init__(f"it nests arrays and objects deeper than {MAX_DEPTH} levels")


_split_object = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_split_array = msgspec.json.Decoder(list[msgspec.Raw]).decode


def nesting_exceeds(text: bytes | msgspec.Raw, limit: int = MAX_DEPTH) -> bool:
    """Does the JSON text nest arrays and objects more than `limit` levels deep?

    Without walking it character by character in Python: a text of at most 2 * limit + 1 bytes
    cannot (each level takes an opening and a closing byte), and a longer container is split by
    msgspec (in C) into its members' raw texts, each held to one level less. An event's endpoints
    or an item's fields are short, so this rarely goes past the first split. Text that is not
    JSON is not this function's to judge (False: the parser then says what is wrong), except
    where msgspec runs out of stack on it, which only a nesting far past any limit does.
    """
    pending: list[tuple[bytes | msgspec.Raw, int]] = [(text, limit)]
    while pending:
        piece, allowed = pending.pop()
        if len(piece) <= 2 * allowed + 1 or _openings(piece) <= allowed:
            continue
        view = memoryview(piece)
        start = _first_byte(view)
        if start not in b"[{":
            continue  # a long string or number: no nesting
        if allowed == 0:
            return True
        try:
            members = _split_object(piece).values() if start == 0x7B else _split_array(piece)
        except msgspec.DecodeError:
            continue
        except RecursionError:
            return True
        pending.extend((member, allowed - 1) for member in members)
    return False


def _openings(piece: bytes | msgspec.Raw) -> int:
    """An upper bound of how deep `piece` can nest: its opening brackets, counted in C (those
    inside strings too). A real endpoint (an address, user attributes, 5 item IDs of 36
    characters) is 500-600 bytes, past what its length alone can vouch for, but holds about ten."""
    data = piece if isinstance(piece, bytes) else bytes(piece)  # a Raw copies in one memcpy
    return data.count(b"{") + data.count(b"[")


_WHITESPACE = b" \t\r\n"


def _first_byte(view: memoryview) -> int:
    for byte in view:
        if byte not in _WHITESPACE:
            return byte
    return 0


def loads(body: bytes | str) -> Any:
    """Parse JSON; raises ValueError with orjson's position message on bad input, TooDeep past
    MAX_DEPTH."""
    if isinstance(body, str):
        body = body.encode()
    if nesting_exceeds(body):
        raise TooDeep()
    if needs_exact(body):
        return _exact_loads(body)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as refused:
        # Valid JSON orjson cannot hold (`1e400`) reads exactly; anything else keeps orjson's
        # message, which names the position.
        try:
            return _exact_loads(body)
        except ValueError:
            raise refused from None


def stored_object(value: Any) -> Any:
    """An item's JSON object field (`attributes`, `locales`) as the bulk item query hands it over
    (service/storage/items.py): None when empty, the stored JSON text as a str (parsed here, by
    the few renders that look inside it: the field is always an object, so a str is never its
    value), or an object already parsed (an item read alone)."""
    if value is None:
        return {}
    if value.__class__ is str:
        return loads(value)
    return value


def loads_read_only(body: bytes) -> Any:
    """`loads` for a document that is read and never written back (a Connect event, whose answer
    is made anew): orjson's own reading first, which holds up to 1,024 levels and reads an integer
    beyond 64 bits as a float (neither matters when nothing is written back), and `loads`, with
    its limits and messages, only for what orjson refuses. Half the time of `loads` on a large
    body, which runs its checks over every byte first."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return loads(body)


def loads_line(line: bytes) -> Any:
    """`loads` for many small documents (import lines): the long-digit scan costs several times
    the parse itself, so it runs only when orjson produced a float, the one way an integer beyond
    64 bits shows up."""
    if nesting_exceeds(line):
        raise TooDeep()
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as refused:
        try:
            return _exact_loads(line)
        except ValueError:
            raise refused from None
    if _holds_float(value) and needs_exact(line):
        return _exact_loads(line)
    return value


def _holds_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_holds_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_float(v) for v in value)
    return False


class ExactObject(dict):
    """A JSON object read by the exact (standard library) parser: it may hold ExactNumbers,
    which only `dumps` writes, so code that assembles answers from orjson Fragments builds plain
    objects for it instead."""


def is_exact(value: Any) -> bool:
    return isinstance(value, ExactObject)


def _refuse_constant(constant: str) -> None:
    raise ValueError(f"{constant} is not valid JSON")


def _exact_int(text: str) -> int | ExactNumber:
    # Past 20 characters it cannot fit 64 bits (and int() of 5,000 digits is refused outright).
    if len(text) <= 20:
        value = int(text)
        if -(2**63) <= value < 2**64:
            return value
    return ExactNumber(text)


def _exact_float(text: str) -> float | ExactNumber:
    value = float(text)
    return ExactNumber(text) if math.isinf(value) else value


def _exact_loads(body: bytes) -> Any:
    """Read with the standard library, held to what orjson accepts but for the numbers it cannot
    hold: strict UTF-8, no NaN or Infinity, no lone surrogates."""
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"the body is not UTF-8: {exc.reason}") from exc
    try:
        value = json.loads(text, parse_int=_exact_int, parse_float=_exact_float,
                           parse_constant=_refuse_constant, object_pairs_hook=ExactObject)
    except json.JSONDecodeError as exc:
        raise ValueError(str(exc)) from exc
    except RecursionError as exc:  # held off by nesting_exceeds; a guard, not a path
        raise TooDeep() from exc
    if "\\ud" in text or "\\uD" in text:
        # A `\ud800` alone is no character: orjson refuses it, so must this path.
        try:
            orjson.dumps(value, default=_default)
        except orjson.JSONEncodeError as exc:
            raise ValueError("a \\u escape is a lone surrogate, not a character") from exc
    return value


def dumps(value: Any) -> bytes:
    """Serialise (ExactNumbers as their text); falls back to the standard library for Python
    integers beyond 64 bits."""
    try:
        return orjson.dumps(value, default=_default)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                          default=_default).encode()
