"""Items: what a valid item is, and the JSON shape an item is answered in.

`parse_item` checks an item body (from a PUT, or a line of an import) and returns the column values
to store, or raises ValidationFailed naming every bad field. Prices are exact: the amount must be a
decimal *string*; a JSON number is refused because the float it was parsed into has already lost the
cents.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from service.errors import FieldError, ValidationFailed
from service.json_codec import ExactNumber, stored_object

MAX_ID_LENGTH = 256
MAX_TITLE_LENGTH = 2000
MAX_TEXT_LENGTH = 2000
MAX_URL_LENGTH = 4096
MAX_ATTRIBUTE_KEYS = 200
AMOUNT_PATTERN = re.compile(r"^\d{1,18}(\.\d{1,6})?$")
CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")
LOCALE_PATTERN = re.compile(r"^[A-Za-z]{2,3}(?:[_-][A-Za-z0-9]{2,8})*$")
LOCALIZABLE_FIELDS = ("title", "genre", "image_url", "url")
ITEM_FIELDS = ("title", "genre", "price", "image_url", "url", "available", "attributes", "locales")
# Accepted in a body so a GET answer can be PUT back as it is; `id` must match the path.
ROUND_TRIP_FIELDS = ("id", "updated_at")


@dataclass(frozen=True)
class ItemFields:
    """The stored columns of one item, validated."""

    id: str
    title: str
    genre: str | None
    price_amount: str | None
    price_currency: str | None
    image_url: str | None
    url: str | None
    available: bool
    attributes: dict[str, Any]
    locales: dict[str, dict[str, str]]


def item_id_problem(item_id: object) -> str | None:
    """Why `item_id` cannot be an item ID, or None if it can."""
    if not isinstance(item_id, str):
        return "must be a string"
    if not item_id:
        return "must not be empty"
    if len(item_id) > MAX_ID_LENGTH:
        return f"must be at most {MAX_ID_LENGTH} characters, got {len(item_id)}"
    if "\x00" in item_id:
        return "must not contain the NUL character"
    return None


def all_item_ids_valid(ids: list[object]) -> bool:
    """True when every entry of a non-empty list is a valid item ID: `item_id_problem` for each,
    in a few C-speed passes (250 IDs an event); on False, ask `item_id_problem` which one and why."""
    try:
        joined = "\x00".join(ids)  # type: ignore[arg-type]  # TypeError: a non-string
    except TypeError:
        return False
    return (
        joined.count("\x00") == len(ids) - 1  # no ID holds a NUL of its own
        and "" not in ids
        and max(map(len, ids)) <= MAX_ID_LENGTH  # type: ignore[arg-type]
    )


def check_item_id(item_id: object, field: str = "item_id") -> str:
    problem = item_id_problem(item_id)
    if problem:
        raise ValidationFailed.of(field, problem)
    return item_id  # type: ignore[return-value]


class _Checker:
    """Collects field errors so one answer names them all."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.errors: list[FieldError] = []

    def fail(self, field: str, reason: str) -> None:
        self.errors.append(FieldError(self.prefix + field, reason))

    def text(self, body: dict, field: str, *, required: bool = False,
             limit: int = MAX_TEXT_LENGTH) -> str | None:
        value = body.get(field)
        if value is None:
            if required:
                self.fail(field, "is required" if field not in body else "must not be null")
            return None
        if not isinstance(value, str):
            self.fail(field, f"must be a string, got {json_type(value)}")
            return None
        if required and not value.strip():
            self.fail(field, "must not be empty")
        if len(value) > limit:
            self.fail(field, f"must be at most {limit} characters, got {len(value)}")
        if "\x00" in value:
            self.fail(field, "must not contain the NUL character")
        return value

    def free_json(self, value: Any, field: str) -> None:
        """Postgres jsonb cannot hold NUL characters, in keys or strings; and a number orjson
        cannot hold would not read back as it was written."""
        if isinstance(value, str):
            if "\x00" in value:
                self.fail(field, "must not contain the NUL character")
        elif isinstance(value, ExactNumber):
            self.fail(field, f"{value.text[:40]} is a number beyond what is stored exactly "
                             "(64-bit integers, double-precision floats); send it as a string")
        elif isinstance(value, dict):
            for key, inner in value.items():
                if "\x00" in key:
                    self.fail(field, "keys must not contain the NUL character")
                self.free_json(inner, f"{field}.{key}")
        elif isinstance(value, list):
            for index, inner in enumerate(value):
                self.free_json(inner, f"{field}[{index}]")


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | ExactNumber):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def parse_item(body: object, item_id: str | None = None, *, prefix: str = "") -> ItemFields:
    """Validate an item body; `item_id` comes from the path (else the body's `id` is required)."""
    if not isinstance(body, dict):
        raise ValidationFailed.of(prefix.rstrip(".") or "body",
                                  f"an item must be a JSON object, got {json_type(body)}")
    check = _Checker(prefix)
    for key in body:
        if key not in ITEM_FIELDS and key not in ROUND_TRIP_FIELDS:
            check.fail(key, "is not an item field (expected one of: " + ", ".join(ITEM_FIELDS) + ")")

    body_id = body.get("id")
    if item_id is None:
        problem = item_id_problem(body_id)
        if problem:
            check.fail("id", "is required" if body_id is None else problem)
        item_id = body_id if not problem else ""
    elif body_id is not None and body_id != item_id:
        check.fail("id", f"must match the item ID in the path ({item_id!r}) when given")

    title = check.text(body, "title", required=True, limit=MAX_TITLE_LENGTH)
    genre = check.text(body, "genre")
    image_url = check.text(body, "image_url", limit=MAX_URL_LENGTH)
    url = check.text(body, "url", limit=MAX_URL_LENGTH)
    amount, currency = _parse_price(body.get("price"), check)

    available = body.get("available", True)
    if not isinstance(available, bool):
        check.fail("available", f"must be true or false, got {json_type(available)}")
        available = True

    attributes = body.get("attributes")
    if attributes is None:
        attributes = {}
    elif not isinstance(attributes, dict):
        check.fail("attributes", f"must be an object, got {json_type(attributes)}")
        attributes = {}
    elif len(attributes) > MAX_ATTRIBUTE_KEYS:
        check.fail("attributes", f"must have at most {MAX_ATTRIBUTE_KEYS} keys")
    else:
        check.free_json(attributes, "attributes")

    locales = _parse_locales(body.get("locales"), check)

    if check.errors:
        raise ValidationFailed.of_many(check.errors)
    return ItemFields(
        id=item_id, title=title or "", genre=genre, price_amount=amount,
        price_currency=currency, image_url=image_url, url=url, available=available,
        attributes=attributes, locales=locales,
    )


def _parse_price(price: object, check: _Checker) -> tuple[str | None, str | None]:
    if price is None:
        return None, None
    if not isinstance(price, dict):
        check.fail("price", 'must be an object like {"amount": "19.99", "currency": "USD"}')
        return None, None
    for key in price:
        if key not in ("amount", "currency"):
            check.fail(f"price.{key}", "is not a price field (expected amount and currency)")
    amount = price.get("amount")
    currency = price.get("currency")
    if isinstance(amount, int | float | ExactNumber) and not isinstance(amount, bool):
        check.fail("price.amount",
                   'must be a decimal string like "19.99", not a JSON number '
                   "(a float has already lost the cents)")
        amount = None
    elif not isinstance(amount, str) or not AMOUNT_PATTERN.match(amount):
        check.fail("price.amount",
                   'must be a non-negative decimal string like "19.99" '
                   "(up to 18 digits and 6 decimals)")
        amount = None
    if not isinstance(currency, str) or not CURRENCY_PATTERN.match(currency):
        check.fail("price.currency", 'must be an ISO 4217 code in capitals, like "USD"')
        currency = None
    return amount, currency


def _parse_locales(locales: object, check: _Checker) -> dict[str, dict[str, str]]:
    if locales is None:
        return {}
    if not isinstance(locales, dict):
        check.fail("locales", 'must be an object like {"de_DE": {"title": "..."}}')
        return {}
    parsed: dict[str, dict[str, str]] = {}
    for tag, overrides in locales.items():
        if not LOCALE_PATTERN.match(tag):
            check.fail(f"locales.{tag}", "is not a locale tag like de_DE or es")
            continue
        if not isinstance(overrides, dict):
            check.fail(f"locales.{tag}", f"must be an object, got {json_type(overrides)}")
            continue
        entry: dict[str, str] = {}
        for key, value in overrides.items():
            if key not in LOCALIZABLE_FIELDS:
                check.fail(f"locales.{tag}.{key}",
                           "cannot be localized (only: " + ", ".join(LOCALIZABLE_FIELDS) + ")")
            elif not isinstance(value, str) or "\x00" in value or len(value) > MAX_URL_LENGTH:
                check.fail(f"locales.{tag}.{key}", "must be a string without NUL characters")
            else:
                entry[key] = value
        parsed[tag] = entry
    return parsed


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_timestamp(moment: datetime | int) -> str:
    """ISO 8601 in UTC (`2026-11-22T09:00:00.123456Z`), of a datetime or of microseconds since
    the epoch (how the resolver's rows carry `updated_at`: service/storage/items.py)."""
    if isinstance(moment, int):
        moment = _EPOCH + timedelta(microseconds=moment)
    return moment.isoformat().replace("+00:00", "Z")


def item_as_json(row: Any) -> dict[str, Any]:
    """The answer shape of one stored item (a Record or mapping with the item columns)."""
    amount = row["price_amount"]
    return {
        "id": row["id"],
        "title": row["title"],
        "genre": row["genre"],
        "price": None if amount is None else {"amount": amount, "currency": row["price_currency"]},
        "image_url": row["image_url"],
        "url": row["url"],
        "available": row["available"],
        "attributes": stored_object(row["attributes"]),
        "locales": stored_object(row["locales"]),
        "updated_at": format_timestamp(row["updated_at"]),
    }
