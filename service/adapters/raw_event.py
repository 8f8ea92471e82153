"""The transform's fast reader: a well-formed Pinpoint event read without building its endpoints.

The contract returns every endpoint as it came, plus `Recommendations`. Parsing each endpoint
into Python objects and serialising it again is most of what a plain JSON round trip costs, and
changes nothing the caller can see; so, for the usual event, msgspec (in C) reads the body into
each endpoint's raw JSON text (`msgspec.Raw`, a view of the body) and the event's `ApplicationId`,
then each endpoint's text into the few fields the transform needs (`RecommendationItems`,
`Demographic.Locale`), skipping the rest. The answer is each raw endpoint with
`,"Recommendations":{...}` put before its closing brace (Enricher.endpoint_pieces): the caller's
bytes, byte for byte.

Anything unusual (a malformed endpoint, an invalid ID, a limit passed, a `Recommendations` key
already there, `\\u` escapes, non-UTF-8 bytes, invalid JSON, nesting past json_codec.MAX_DEPTH, or
any other failure to read it) returns None, and the caller takes the general path
(service/adapters/pinpoint.py), which reads the event with orjson and says precisely what is wrong. Both
paths answer the same event the same way; tests/test_raw_event.py and tests/test_hostile_json.py
hold them to it.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, Raw, Struct, UnsetType

from service.adapters.pinpoint import EventLimits, ParsedEvent
from service.items import MAX_ID_LENGTH
from service.json_codec import MAX_DEPTH, nesting_exceeds
from service.speedups import native


# gc=False: these hold no cycles, so the collector need not track the thousands made a second.
class _Demographic(Struct, gc=False):
    Locale: str | None = None


# IDs that can exist (1-256 characters; a NUL could only come as `\u0000`, which read_raw_event
# leaves to the general path), checked by msgspec as it reads them.
ItemId = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH)]


class _Endpoint(Struct, gc=False):
    RecommendationItems: list[ItemId] | UnsetType = UNSET
    Demographic: _Demographic | None = None
    # Present only to notice one: such an endpoint is answered on the general path.
    Recommendations: Raw | UnsetType = UNSET


class _Event(Struct, gc=False):
    Endpoints: dict[str, Raw]
    ApplicationId: str | UnsetType = UNSET


_read_event = msgspec.json.Decoder(_Event).decode
_read_endpoint = msgspec.json.Decoder(_Endpoint).decode

# An endpoint sits two levels down (the event, its Endpoints); one no longer than this cannot
# nest past MAX_DEPTH, which is every usual one, so their nesting costs one len() each.
_ENDPOINT_DEPTH = MAX_DEPTH - 2
_SHORT_ENDPOINT = 2 * _ENDPOINT_DEPTH + 1


class RawEvent(ParsedEvent):
    """A ParsedEvent whose endpoints are their raw JSON (a msgspec.Raw, or a memoryview of the
    body where the C reader read it), none malformed."""

    application_id: str | None = None


def read_raw_event(body: bytes, limits: EventLimits) -> RawEvent | None:
    """The event, its endpoints left as raw JSON; None when it needs the general path."""
    if native is not None:
        return _scanned(body, limits)
    return read_in_python(body, limits)


def read_in_python(body: bytes, limits: EventLimits) -> RawEvent | None:
    """read_raw_event where the C extension is not built (or turned off)."""
    # msgspec skips over the text it does not decode without checking its encoding or escapes.
    # (A one-byte search first: it runs at memchr speed, a two-byte one does not.)
    if (b"\\" in body and b"\\u" in body) or not (body.isascii() or _is_utf8(body)):
        return None
    try:
        read = _read_event(body)
        raws = read.Endpoints
        if len(raws) > limits.max_endpoints or not raws:
            return None
        # Each endpoint's few fields from its own text: cheaper than a second pass over the body.
        views = list(map(_read_endpoint, raws.values()))
    # RecursionError: msgspec skipping a value nested past the interpreter's stack.
    except (msgspec.MsgspecError, RecursionError, ValueError):
        return None
    if _nests_too_deep(body, raws):
        return None
    event = RawEvent()
    event.application_id = read.ApplicationId or None
    every_id = event.item_ids
    max_items = limits.max_items_per_endpoint
    for (endpoint_id, raw), endpoint in zip(raws.items(), views, strict=True):
        items = endpoint.RecommendationItems
        if (items is UNSET or not 0 < len(items) <= max_items
                or endpoint.Recommendations is not UNSET):
            return None
        demographic = endpoint.Demographic
        locale = (demographic.Locale or None) if demographic is not None else None
        event.endpoints.append((endpoint_id, raw, items, locale))
        every_id += items
        event.locales.add(locale)
    event.item_ids = list(dict.fromkeys(every_id))
    return event


def _scanned(body: bytes, limits: EventLimits) -> RawEvent | None:
    """read_raw_event in one pass in C (service/_speedups.c: scan_event): each endpoint's text a
    memoryview of the body; None in the cases the Python reader returns None, and in a few more
    rare ones (a backslash in an endpoint ID or an item ID, repeated keys), which the general
    path answers the same way."""
    scanned = native.scan_event(body, limits.max_endpoints,  # type: ignore[union-attr]
                                limits.max_items_per_endpoint, MAX_ID_LENGTH, MAX_DEPTH)
    if scanned is None:
        return None
    event = RawEvent()
    event.application_id, event.endpoints, event.item_ids, event.locales = scanned
    return event


def _nests_too_deep(body: bytes, raws: dict[str, Raw]) -> bool:
    """Does the event nest past MAX_DEPTH? Mostly without a scan: what lies outside the
    endpoints is short, and so is each endpoint."""
    lengths = list(map(len, raws.values()))
    # Outside the endpoints, only brackets nest, and none is in an endpoint's ID (a string): the
    # IDs are not counted (as characters, which are never more than their bytes, and the quotes,
    # colon and comma around each), or a usual event of 50 long IDs would be split twice more.
    outside = len(body) - sum(lengths) - sum(map(len, raws)) - 3 * len(raws)
    if outside > 2 * MAX_DEPTH + 1 and nesting_exceeds(body):
        return True
    if max(lengths) <= _SHORT_ENDPOINT:
        return False
    # Longer endpoints (real ones, with 36-character item IDs, are 500-600 bytes): each is
    # vouched for by its count of opening brackets, else scanned.
    return any(nesting_exceeds(raw, _ENDPOINT_DEPTH) for raw in raws.values()
               if len(raw) > _SHORT_ENDPOINT)


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode()
    except UnicodeDecodeError:
        return False
    return True
