"""JSON in one place: orjson for speed, with an exact fallback for integers orjson cannot hold.

orjson reads integers beyond 64 bits as floats, which would change a value the transformer must
return untouched; a body with a run of 20 or more digits is therefore read and written with the
standard library instead (slower, exact).
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson

# Digits become "0", everything else " ": a run of 20 digits is then a plain substring search.
# Two C-speed passes, where the regex `\d{20,}` backtracked on every digit run (~25 µs per KB).
_DIGIT_MASK = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_DIGIT_RUN = b"0" * 20


def _default(value: Any) -> Any:
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


def loads(body: bytes | str) -> Any:
    """Parse JSON; raises ValueError with orjson's position message on bad input."""
    if isinstance(body, bytes) and needs_exact(body):
        return _exact_loads(body)
    return orjson.loads(body)


def loads_line(line: bytes) -> Any:
    """`loads` for many small documents (import lines): the long-digit scan costs several times
    the parse itself, so it runs only when orjson produced a float, the one way an integer beyond
    64 bits shows up."""
    value = orjson.loads(line)
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
    """A JSON object read by the exact (standard library) parser. Its type tells code that
    assembles answers from orjson Fragments, which only orjson can write, to build plain objects
    instead: such a document is written by the standard library too."""


def is_exact(value: Any) -> bool:
    return isinstance(value, ExactObject)


def _exact_loads(body: bytes) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not valid JSON")

    try:
        return json.loads(body, parse_constant=refuse, object_pairs_hook=ExactObject)
    except json.JSONDecodeError as exc:
        raise ValueError(str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"the body is not UTF-8: {exc.reason}") from exc


def dumps(value: Any) -> bytes:
    """Serialise; falls back to the standard library where orjson cannot be exact."""
    try:
        return orjson.dumps(value, default=_default)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                          default=_default).encode()
