"""The generated catalog and the events that ask for it, identical for every server of a run.

Items are a pure function of their number (no random state), so the floor server can rebuild the
same catalog in its own process while the bench COPYs it into Postgres. Events are drawn with a
seeded `random.Random`, written once per run to files (one compact JSON event per line) and replayed
by wrk and the shim invokers to both servers alike.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import orjson

ENDPOINTS_PER_EVENT = 50  # Pinpoint's batch size
ITEMS_PER_ENDPOINT = 5  # Pinpoint's most recommendations per endpoint
CURRENCY = "USD"

_ADJECTIVES = ("Silent", "Crimson", "Late", "Hidden", "Golden", "Broken", "Northern", "Last",
               "Wild", "Quiet", "Electric", "Lost", "Bright", "Distant", "Final", "Paper")
_NOUNS = ("Night", "River", "Garden", "Empire", "Signal", "Harbour", "Letter", "Machine",
          "Season", "Orchard", "Kingdom", "Window", "Frontier", "Promise", "Island", "Mirror")
GENRES = ("Comedy", "Drama", "Crime", "Action", "Documentary", "Thriller", "Romance", "Sci-Fi",
          "Animation", "Horror", "Family", "Fantasy")


def item_id(number: int) -> str:
    return str(100_000 + number)


def _mix(number: int) -> int:
    return (number * 2654435761) & 0xFFFFFFFF  # Knuth's multiplicative hash: spread, cheap


def item_fields(number: int) -> tuple[str, str, str, str]:
    """(id, title, genre, price amount) of item `number`, 0-based."""
    h = _mix(number)
    title = f"{_ADJECTIVES[h & 15]} {_NOUNS[(h >> 4) & 15]} {number % 997}"
    cents = 99 + (h >> 8) % 9900
    return item_id(number), title, GENRES[(h >> 20) % len(GENRES)], f"{cents // 100}.{cents % 100:02d}"


def copy_records(count: int, catalog_id: int) -> Iterator[tuple]:
    """Rows for COPY into `items` (see COPY_COLUMNS), in ID order (cheap on the primary key).

    The amount goes as its decimal text: asyncpg's numeric codec takes it exactly as written.
    """
    for number in range(count):
        identifier, title, genre, amount = item_fields(number)
        yield (catalog_id, identifier, title, genre, amount, CURRENCY,
               f"https://img.example.com/items/{identifier}.jpg",
               f"https://shop.example.com/items/{identifier}")


COPY_COLUMNS = ("catalog_id", "id", "title", "genre", "price_amount", "price_currency",
                "image_url", "url")


def floor_items(count: int) -> dict[str, tuple[str, str, str]]:
    """The whole catalog as the floor server holds it: ID → (Title, Genre, Price) as answered."""
    items = {}
    for number in range(count):
        identifier, title, genre, amount = item_fields(number)
        items[identifier] = (title, genre, f"{amount} {CURRENCY}")
    return items


def _endpoint(rng: random.Random, ids: list[str]) -> dict:
    """A Pinpoint endpoint definition as the transformer receives it (about 450 bytes of JSON)."""
    user = rng.randrange(10_000_000)
    return {
        "ChannelType": "EMAIL",
        "Address": f"user{user}@example.com",
        "OptOut": "NONE",
        "RequestId": f"{rng.getrandbits(128):032x}",
        "Location": {"Country": "US"},
        "Demographic": {"Locale": "en_US"},
        "EffectiveDate": "2026-11-22T09:00:00.000Z",
        "Attributes": {"FavoriteGenres": [GENRES[user % len(GENRES)]]},
        "User": {"UserId": f"user-{user}", "UserAttributes": {"FirstName": ["Sofia"]}},
        "RecommendationItems": ids,
    }


def make_event(rng: random.Random, pick: list[str] | int,
               endpoints: int = ENDPOINTS_PER_EVENT) -> dict:
    """One event of `endpoints` endpoints (Pinpoint's 50 by default) of 5 items each; IDs from the
    list `pick`, or any of `pick` catalog items."""
    def draw() -> list[str]:
        if isinstance(pick, int):
            return [item_id(rng.randrange(pick)) for _ in range(ITEMS_PER_ENDPOINT)]
        return rng.sample(pick, ITEMS_PER_ENDPOINT)

    return {
        "ApplicationId": "bench-application",
        "CampaignId": "bench-campaign",
        "TreatmentId": "0",
        "ActivityId": "bench-activity",
        "ScheduledTime": "2026-11-22T09:00:00.000Z",
        "Endpoints": {f"{rng.getrandbits(128):032x}": _endpoint(rng, draw())
                      for _ in range(endpoints)},
    }


def write_events(path: Path, rng: random.Random, count: int, pick: list[str] | int,
                 endpoints: int = ENDPOINTS_PER_EVENT) -> Path:
    """`count` events, one compact JSON object per line (the form the wrk script reads)."""
    with path.open("wb") as out:
        for _ in range(count):
            out.write(orjson.dumps(make_event(rng, pick, endpoints)) + b"\n")
    return path


def write_content_paths(path: Path, rng: random.Random, count: int, pick: list[str],
                        route: str) -> Path:
    """`count` GET paths of the content route (`route`), one per line, each asking for 1-5
    distinct IDs of `pick` (what one recipient's template asks for)."""
    with path.open("w") as out:
        for _ in range(count):
            ids = rng.sample(pick, rng.randint(1, ITEMS_PER_ENDPOINT))
            out.write(f"{route}?ids={','.join(ids)}\n")
    return path


USER_SCORES = (0.9, 0.7, 0.5, 0.3, 0.1)


def user_recommendations(user: str, items: int) -> list[tuple[str, float]]:
    """What the bench's fake Personalize answers for `user` (`user-<n>`), a pure function so the
    floor rebuilds it: 5 distinct IDs among the first 1,000 items (cached after the warm-up)."""
    number = int(user.rpartition("-")[2])
    span = max(min(items, 1000) // ITEMS_PER_ENDPOINT, 1)
    return [(item_id((k * span + _mix(number + k) % span) % items), score)
            for k, score in enumerate(USER_SCORES)]


def write_user_paths(path: Path, rng: random.Random, count: int, users: int,
                     route: str) -> Path:
    """`count` GET paths of the user route (`route` with `{user}`), one per line, over `users`
    users in a shuffled order (each user asked for many times: per-user cache hits)."""
    order = [f"user-{n % users}" for n in range(count)]
    rng.shuffle(order)
    with path.open("w") as out:
        out.writelines(route.format(user=user) + "\n" for user in order)
    return path


def hot_ids(rng: random.Random, items: int, count: int) -> list[str]:
    """The IDs the warm scenario draws from: few enough to be cached after the warm-up."""
    return [item_id(n) for n in rng.sample(range(items), min(count, items))]
