"""Locale tags: how an endpoint's `Demographic.Locale` picks per-locale item text and money formats.

Pinpoint writes locales as `en_US` (ISO 639 language, ISO 3166 country, underscore); people write
`es-MX`, `es_mx` or `ES`. Every tag is normalized to one form (`es_MX`) before it is compared, so an
item's `locales` keys match however they were typed. The fallback chain for an endpoint is its own
tag from most to least specific (`es_MX` → `es`), then the recommender's default locale likewise,
then the item's own (unlocalized) fields.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from babel import Locale, UnknownLocaleError

TAG_PATTERN = re.compile(r"^[A-Za-z]{2,3}(?:[_-][A-Za-z0-9]{2,8})*$")


def normalize_tag(tag: str) -> str:
    """`es-mx` → `es_MX`, `zh-hant-tw` → `zh_Hant_TW`, `DE` → `de`: one spelling per locale."""
    parts = [p for p in tag.replace("-", "_").split("_") if p]
    if not parts:
        return ""
    out = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 4 and part.isalpha():
            out.append(part.title())  # a script: Hant, Latn
        elif len(part) in (2, 3):
            out.append(part.upper())  # a territory: MX, 419
        else:
            out.append(part)
    return "_".join(out)


def tag_chain(tag: object) -> tuple[str, ...]:
    """`es_MX` → (`es_MX`, `es`): one tag's override keys, most specific first."""
    if not isinstance(tag, str) or not TAG_PATTERN.match(tag):
        return ()
    parts = normalize_tag(tag).split("_")
    return tuple("_".join(parts[:n]) for n in range(len(parts), 0, -1))


@functools.lru_cache(maxsize=4096)
def fallback_chain(endpoint_tag: str | None, default_tag: str) -> tuple[str, ...]:
    """The endpoint's chain, then the recommender default's, each tag once (memoized: a handful
    of locales recur across millions of items)."""
    return tuple(dict.fromkeys(tag_chain(endpoint_tag) + tag_chain(default_tag)))


@functools.lru_cache(maxsize=512)
def babel_locale(tag: str) -> Locale | None:
    """The CLDR locale for a tag, or None when Babel does not know it."""
    try:
        return Locale.parse(normalize_tag(tag))
    except (UnknownLocaleError, ValueError, TypeError):
        return None


def normalized_overrides(locales: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    """An item's `locales` keyed by normalized tag (a tag typed twice: the last one wins)."""
    if not locales:
        return {}
    return {normalize_tag(tag): fields for tag, fields in locales.items()
            if isinstance(fields, Mapping)}
