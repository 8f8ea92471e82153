"""L1's byte bound holds the memory it is about, measured with tracemalloc: items as they come
from L2 (decoded JSON) and rows rendered by real enrichers, for 20 recommenders x 30 locales over
the same items, the transform's worst case (each entry keeps rows per recommender and locale).

The documented slack (docs/caching.md, "What the cache buys"): what L1 holds stays within
ENRICHER_CACHE_MAX_BYTES plus SLACK of it, and the estimates are not so generous that the bound
wastes most of itself.
"""

from __future__ import annotations

import gc
import tracemalloc

import orjson

from service.enrichment.enrich import Enricher
from service.enrichment.recommenders import parse_recommender
from service.resolution.local_cache import MAX_DERIVED_PER_ENTRY, LocalCache

RECOMMENDERS = 20
LOCALES = [f"{language}_{country}" for language in ("en", "de", "fr", "es", "it", "pt")
           for country in ("US", "GB", "DE", "FR", "BR")]  # 30
SLACK = 0.10  # real memory may pass the accounted bytes by this much of the bound
FIXED_SLACK = 128 * 1024  # and by this: the tables (at most 256) and the LRU's own table

assert len(LOCALES) == 30


def enrichers() -> list[Enricher]:
    return [Enricher(parse_recommender({"catalog": "c", "attributes": [
        {"name": "Title", "field": "title"},
        {"name": "Image", "field": "image_url"},
        {"name": "Price", "field": "price"},
    ]}, f"r{r}")) for r in range(RECOMMENDERS)]


def item_json(i: int) -> bytes:
    """An item as L2 holds it: non-ASCII text, a long image URL; one in five has texts in a few
    locales (rendered by the general path, the others by json_row's shortcut)."""
    return orjson.dumps({
        "id": f"item-{i:06d}", "title": f"Le film numéro {i} — édition spéciale",
        "genre": "Drame", "price_amount": "19.99", "price_currency": "EUR",
        "image_url": f"https://images.example.com/catalog/{i:06d}/large.jpg?w=640&h=480&q=85",
        "url": f"https://shop.example.com/p/{i:06d}", "available": True,
        "attributes": {"director": f"Director {i}", "year": "1999"},
        "locales": {loc: {"title": f"Titel {i} ({loc})"} for loc in LOCALES[:3]} if i % 5 == 0
        else {},
        "updated_at": "2026-01-01T00:00:00+00:00", "version": 1000 + i,
    })


def fill(cache: LocalCache, count: int) -> None:
    """Store `count` items, then render and attach their rows for every recommender x locale,
    recommender by recommender and locale by locale, as many requests would."""
    for start in range(0, count, 50):
        items = {f"item-{i:06d}": orjson.loads(item_json(i)) for i in range(start, start + 50)}
        cache.store(1, items, cache.generation())
        for enricher in enrichers_in_use:
            for locale in LOCALES:
                rows = {i: (item, enricher.json_row(item, locale)) for i, item in items.items()}
                cache.attach(1, rows, enricher.derived_key(locale))
        del items, rows


enrichers_in_use = enrichers()


def held_by(count: int, **options: int) -> tuple[LocalCache, int]:
    """A cache filled with `count` items as `fill` does, and the bytes tracemalloc finds still
    allocated for it (once each locale's data is loaded, which the process keeps anyway)."""
    warm = orjson.loads(item_json(0))
    for enricher in enrichers_in_use:
        for locale in LOCALES:
            enricher.json_row(warm, locale)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cache = LocalCache(ttl=300, negative_ttl=30, stale_seconds=3600, **options)
        fill(cache, count)
        gc.collect()
        return cache, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_memory_stays_within_the_byte_bound():
    bound = 512 * 1024
    cache, held = held_by(250, max_entries=100_000, max_bytes=bound)
    assert cache.accounted_bytes <= bound
    assert len(cache) < 200  # the bytes bound evicted: 250 entries with their rows are more
    assert held >= bound / 2  # and L1 was full
    assert held <= bound * (1 + SLACK) + FIXED_SLACK, (held, cache.accounted_bytes, len(cache))
    # Not a bound that wastes itself: what is accounted is not far above what is held.
    assert cache.accounted_bytes <= 1.6 * held, (held, cache.accounted_bytes)


def test_without_a_byte_bound_the_entries_weigh_their_rows():
    """What the entry bound alone let through: the same entries weigh more with every key's rows
    (up to MAX_DERIVED_PER_ENTRY of them), which the byte bound is for."""
    cache, held = held_by(100, max_entries=50, max_bytes=0)
    assert len(cache) == 50
    assert all(len(entry[4]) == MAX_DERIVED_PER_ENTRY for entry in cache.entries())
    assert held <= cache.accounted_bytes * (1 + SLACK) + FIXED_SLACK, (held, cache.accounted_bytes)
