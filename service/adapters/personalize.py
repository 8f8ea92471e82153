"""Amazon Personalize `GetRecommendations` responses, decorated from the catalog.

In: the response as Personalize returns it (`itemList` of `{itemId, score, promotionName, ...}` plus
`recommendationId` and whatever else). Out: the same response, every key and value as sent and
`itemList` in the same order, each entry with a `metadata` object of the recommender's attributes
(one string each), as Personalize's own `metadataColumns` would add, but from this catalog and
without its limits. What happens to an entry whose item is unknown or unavailable follows the
recommender's `missing_items`: `skip` keeps it without metadata, `placeholder` gives it the
placeholders, `drop_endpoint` leaves the entry out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.enrichment.enrich import Enricher, is_usable
from service.errors import FieldError, ValidationFailed
from service.items import item_id_problem, json_type


@dataclass(frozen=True)
class ParsedResponse:
    body: dict[str, Any]
    entries: list[dict[str, Any]]
    item_ids: list[str]


def parse_response(body: object, max_items: int) -> ParsedResponse:
    """Check the response's shape; every entry must name an item."""
    if not isinstance(body, dict):
        raise ValidationFailed.of(
            "body", f"a Personalize response must be a JSON object, got {json_type(body)}"
        )
    entries = body.get("itemList")
    if not isinstance(entries, list):
        raise ValidationFailed.of(
            "itemList", "is required: the array of {itemId, score} that GetRecommendations returns"
        )
    if len(entries) > max_items:
        raise ValidationFailed.of("itemList", f"at most {max_items} entries, got {len(entries)}")
    errors: list[FieldError] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            errors.append(FieldError(f"itemList[{index}]", f"must be an object, got "
                                     f"{json_type(entry)}"))
            continue
        problem = item_id_problem(entry.get("itemId"))
        if problem:
            errors.append(FieldError(f"itemList[{index}].itemId",
                                     "is required" if "itemId" not in entry else problem))
        elif "metadata" in entry and not isinstance(entry["metadata"], dict):
            errors.append(FieldError(f"itemList[{index}].metadata", "must be an object"))
    if errors:
        raise ValidationFailed.of_many(errors)
    return ParsedResponse(body, entries, list(dict.fromkeys(e["itemId"] for e in entries)))


def decorate(
    parsed: ParsedResponse, enricher: Enricher, resolved: Mapping[str, Any], locale: str | None
) -> tuple[dict[str, Any], int]:
    """The decorated response, and how many entries named a missing or unavailable item."""
    policy = enricher.spec.missing_items
    decorated: list[dict[str, Any]] = []
    missing = 0
    for entry in parsed.entries:
        item = resolved.get(entry["itemId"])
        if is_usable(item):
            metadata = enricher.attributes_of(item, locale)  # type: ignore[arg-type]
        else:
            missing += 1
            if policy == "drop_endpoint":
                continue
            if policy != "placeholder":
                decorated.append(entry)
                continue
            metadata = enricher.placeholders()
        # Metadata Personalize already added is kept; ours wins where a name is the same.
        decorated.append({**entry, "metadata": {**entry.get("metadata", {}), **metadata}})
    return {**parsed.body, "itemList": decorated}, missing
