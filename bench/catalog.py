"""The generated catalog and the events that ask for it, identical for every server of a run.

Items are a pure function of their number (no random state), so the floor server can rebuild the
same catalog in its own process while the bench COPYs it into Postgres. Events are drawn with a
seeded `random.Random`, written once per run to files (one compact JSON event per line) and replayed
by wrk and the shim invokers to both servers alike.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterator, Sequence
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


def image_url(identifier: str) -> str:
    """A CDN image URL of about 200 characters, as real catalogs hold (signed, sized, cropped)."""
    h = _mix(int(identifier))
    return (f"https://images.example-cdn.com/catalog/v2/items/{identifier}/poster/original/"
            f"{h:08x}{h ^ 0x5BD1E995:08x}.jpg?w=600&h=900&fit=crop&auto=format,compress"
            f"&sig={h:08x}{h * 31 & 0xFFFFFFFF:08x}{h * 97 & 0xFFFFFFFF:08x}"
            f"{h * 193 & 0xFFFFFFFF:08x}&v=20261122&locale=en-US")


def item_url(identifier: str) -> str:
    return f"https://shop.example.com/items/{identifier}"


def copy_records(count: int, catalog_id: int) -> Iterator[tuple]:
    """Rows for COPY into `items` (see COPY_COLUMNS), in ID order (cheap on the primary key).

    The amount goes as its decimal text: asyncpg's numeric codec takes it exactly as written.
    """
    for number in range(count):
        identifier, title, genre, amount = item_fields(number)
        yield (catalog_id, identifier, title, genre, amount, CURRENCY, image_url(identifier),
               item_url(identifier))


COPY_COLUMNS = ("catalog_id", "id", "title", "genre", "price_amount", "price_currency",
                "image_url", "url")


# The recommenders' attributes by event shape: (attribute name, what it shows). "price" is the
# plain Price (`19.99 USD`), "money" the `currency` format for en_US (`$19.99`), the others the item
# field of that name. bench/database.py makes one recommender of each; the floor and the naive
# server render the same texts (render_values).
SHAPES: dict[str, tuple[tuple[str, str], ...]] = {
    "pinpoint": (("Title", "title"), ("Genre", "genre"), ("Price", "price")),
    "guide1": (("Image", "image_url"),),
    "guide3": (("Title", "title"), ("Image", "image_url"), ("Price", "money")),
    "guide10": (("Title", "title"), ("Genre", "genre"), ("Price", "money"), ("Image", "image_url"),
                ("Link", "url"), ("Sku", "id"), ("ListPrice", "price"), ("Name", "title"),
                ("Category", "genre"), ("Poster", "image_url")),
}
SHAPE_RECOMMENDERS = {"pinpoint": "bench", "guide1": "guide1", "guide3": "guide3",
                      "guide10": "guide10"}


def render_values(shape: str, identifier: str, title: str, genre: str | None, amount: str,
                  currency: str, image: str | None, url: str | None) -> tuple:
    """One item's answered texts for `shape`'s attributes, in their order (USD amounts < 1000:
    the bench catalog's, so `$` + amount is what Babel writes for en_US)."""
    values = {"id": identifier, "title": title, "genre": genre, "image_url": image, "url": url,
              "price": f"{amount} {currency}", "money": f"${amount}"}
    return tuple(values[what] for _, what in SHAPES[shape])


def floor_items(count: int, shape: str = "pinpoint") -> dict[str, tuple]:
    """The whole catalog as the floor server holds it: ID → the answered texts of `shape`'s
    attributes (e.g. (Title, Genre, Price))."""
    items = {}
    for number in range(count):
        identifier, title, genre, amount = item_fields(number)
        items[identifier] = render_values(shape, identifier, title, genre, amount, CURRENCY,
                                          image_url(identifier), item_url(identifier))
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


_FIRST_NAMES = ("Sofia", "Zoë", "Łukasz", "Alejandro", "Søren", "José", "Ngọc Anh", "Chloé",
                "Müller", "Дмитрий", "陽菜", "Björk", "Agnieszka", "François", "Ayşe", "Mateus")
_LAST_NAMES = ("Martínez", "渡辺", "Rosalez", "Kowalski", "Øvergaard", "Nguyễn", "Ibáñez",
               "Dvořák", "Schröder", "Иванова", "山田", "Þórsdóttir", "Wiśniewska", "Lefèvre",
               "Öztürk", "Gonçalves")
_NEIGHBOURHOODS = ("East Bay", "West Bay", "Kreuzberg", "Śródmieście", "Shibuya 渋谷", "Gràcia")


def _guide_endpoint(rng: random.Random, ids: list[str], locale: str = "en_US") -> dict:
    """An endpoint shaped like the developer guide's example (User with UserAttributes,
    Attributes, non-ASCII names; about 450 bytes of JSON)."""
    user = rng.randrange(10_000_000)
    first, last = _FIRST_NAMES[user % 16], _LAST_NAMES[(user >> 4) % 16]
    return {
        "ChannelType": "EMAIL",
        "Address": f"user{user}@example.com",
        "EndpointStatus": "ACTIVE",
        "OptOut": "NONE",
        "EffectiveDate": "2026-11-22T08:56:24.875Z",
        "Demographic": {"Locale": locale},
        "Attributes": {"AddressType": ["primary"]},
        "User": {"UserId": f"{first}{last}{user}",
                 "UserAttributes": {"LastName": [last], "FirstName": [first],
                                    "Neighborhood": [_NEIGHBOURHOODS[user % 6]]}},
        "RecommendationItems": ids,
        "CreationDate": "2026-11-22T08:56:24.875Z",
    }


class Zipf:
    """Draws catalog numbers with P(rank r) ∝ r^-s (how popularity falls in recommendations);
    ranks are mapped to items through a seeded shuffle, so the popular items are spread over the
    catalog rather than its first IDs."""

    def __init__(self, rng: random.Random, items: int, s: float = 1.1) -> None:
        self.cumulative = list(itertools.accumulate(r ** -s for r in range(1, items + 1)))
        self.order = list(range(items))
        rng.shuffle(self.order)
        self.rng = rng

    def rank(self) -> int:
        """A 0-based rank (0 the most popular)."""
        return bisect.bisect_left(self.cumulative, self.rng.random() * self.cumulative[-1])

    def __call__(self) -> int:
        return self.order[min(self.rank(), len(self.order) - 1)]


Pick = Sequence[str] | int | Zipf


def _draw(rng: random.Random, pick: Pick) -> list[str]:
    """5 distinct IDs: from the list `pick`, uniform over `pick` catalog items, or Zipf."""
    if isinstance(pick, Zipf):
        drawn: dict[str, None] = {}
        while len(drawn) < min(ITEMS_PER_ENDPOINT, len(pick.order)):
            drawn[item_id(pick())] = None
        return list(drawn)
    if isinstance(pick, int):
        return [item_id(rng.randrange(pick)) for _ in range(ITEMS_PER_ENDPOINT)]
    return rng.sample(pick, ITEMS_PER_ENDPOINT)


def _event(rng: random.Random, endpoints: dict) -> dict:
    return {
        "ApplicationId": "bench-application",
        "CampaignId": "bench-campaign",
        "TreatmentId": "0",
        "ActivityId": "bench-activity",
        "ScheduledTime": "2026-11-22T09:00:00.000Z",
        "Endpoints": endpoints,
    }


def make_event(rng: random.Random, pick: Pick, endpoints: int = ENDPOINTS_PER_EVENT,
               shape: str = "pinpoint") -> dict:
    """One event of `endpoints` endpoints (Pinpoint's 50 by default) of 5 items each (see
    `_draw`); endpoints as the bench always made them, or (any `guide*` shape) like the guide's."""
    make = _endpoint if shape == "pinpoint" else _guide_endpoint
    return _event(rng, {f"{rng.getrandbits(128):032x}": make(rng, _draw(rng, pick))
                        for _ in range(endpoints)})


def write_events(path: Path, rng: random.Random, count: int, pick: Pick,
                 endpoints: int = ENDPOINTS_PER_EVENT, shape: str = "pinpoint") -> Path:
    """`count` events, one compact JSON object per line (the form the wrk script reads)."""
    with path.open("wb") as out:
        for _ in range(count):
            out.write(orjson.dumps(make_event(rng, pick, endpoints, shape)) + b"\n")
    return path


LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "es_MX", "it_IT", "pt_BR", "pt_PT",
           "nl_NL", "sv_SE", "da_DK", "nb_NO", "fi_FI", "pl_PL", "cs_CZ", "hu_HU", "ro_RO",
           "tr_TR", "ru_RU", "uk_UA", "el_GR", "ja_JP", "ko_KR", "zh_CN", "zh_TW", "th_TH",
           "id_ID", "vi_VN", "hi_IN")


def write_locale_events(path: Path, rng: random.Random, count: int, pick: list[str],
                        routes: list[str], endpoints: int = ENDPOINTS_PER_EVENT) -> Path:
    """`count` lines "PATH EVENT" (the wrk script's per-line path): event n goes to
    `routes[n % len(routes)]`, each endpoint with a locale of LOCALES, and the IDs run through
    `pick` in a shuffled order, so the pool touches every ID of `pick` when it holds enough."""
    order = list(pick)
    rng.shuffle(order)
    cycle = itertools.cycle(order)
    with path.open("wb") as out:
        for n in range(count):
            event = _event(rng, {
                f"{rng.getrandbits(128):032x}": _guide_endpoint(
                    rng, [next(cycle) for _ in range(ITEMS_PER_ENDPOINT)], rng.choice(LOCALES))
                for _ in range(endpoints)})
            out.write(routes[n % len(routes)].encode() + b" " + orjson.dumps(event) + b"\n")
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


PROFILES_PER_CONNECT_EVENT = 100  # what an outbound campaign's batch is expected to hold


def _customer_profile(rng: random.Random, ids: list[str]) -> dict:
    """A Customer Profiles standard profile (about 450 bytes of JSON, non-ASCII names) whose
    custom attribute `recommended_items` holds the IDs, comma-separated, as Customer Profiles
    keeps attribute values."""
    user = rng.randrange(10_000_000)
    first, last = _FIRST_NAMES[user % 16], _LAST_NAMES[(user >> 4) % 16]
    return {
        "ProfileId": f"{rng.getrandbits(128):032x}",
        "FirstName": first, "LastName": last, "PartyType": "INDIVIDUAL",
        "EmailAddress": f"user{user}@example.com", "PhoneNumber": f"+1202555{user % 10_000:04d}",
        "Address": {"City": _NEIGHBOURHOODS[user % 6], "Country": "US"},
        "Attributes": {"recommended_items": ",".join(ids), "segment": GENRES[user % 12]},
    }


def make_connect_event(rng: random.Random, pick: Pick,
                       profiles: int = PROFILES_PER_CONNECT_EVENT) -> dict:
    """One Amazon Connect custom action batch: `profiles` customer profiles of 5 items each (see
    `_draw`), each with its CustomerData as a JSON string and an IdempotencyToken of its own."""
    entries = []
    for _ in range(profiles):
        profile = _customer_profile(rng, _draw(rng, pick))
        entries.append({"ProfileId": profile["ProfileId"],
                        "CustomerData": orjson.dumps(profile).decode(),
                        "IdempotencyToken": f"{rng.getrandbits(128):032x}"})
    return {"InvocationMetadata": {"CampaignContext": {
                "CampaignId": "bench-campaign", "RunId": "bench-run",
                "ActionId": "bench-action", "CampaignName": "Bench"}},
            "Items": {"CustomerProfiles": entries}}


def write_connect_events(path: Path, rng: random.Random, count: int, pick: Pick,
                         profiles: int = PROFILES_PER_CONNECT_EVENT) -> Path:
    """`count` Connect batches, one compact JSON object per line."""
    with path.open("wb") as out:
        for _ in range(count):
            out.write(orjson.dumps(make_connect_event(rng, pick, profiles)) + b"\n")
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
