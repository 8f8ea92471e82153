"""Catalogs and events as users send them: the real products of the shared Retail Demo Store
dataset, a big synthetic catalog that follows them, and endpoints shaped like the developer guide's.

- `real_items`: the 2,465 real products (`../shared/datasets`), as a user would import them (ID a
  UUID, `title` the product name, `genre` its category, a price, an image URL, the description and
  stock in `attributes`).
- `synthetic_items`: N items whose every field is drawn from a real product picked at random: the
  title is as many words as that product's name, drawn from the real names' words; category, style,
  description and price are that product's, so lengths, character sets and the price spread follow
  the real catalog (not 6-digit IDs and 20-character titles).
- `guide_endpoint`: an endpoint exactly like the developer guide's example ("Customizing
  recommendations with AWS Lambda"; tests/fixtures-style keys: ChannelType, Address,
  EndpointStatus, OptOut, EffectiveDate, Attributes, User, RecommendationItems, CreationDate), with
  `Demographic.Locale` only when asked.

Everything is drawn from a seeded `random.Random`, so each run's peers get identical items and events.
The floors and the naive servers read the same NDJSON file the service imports.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import orjson

from bench.catalog import ITEMS_PER_ENDPOINT, Zipf

REPO = Path(__file__).resolve().parents[1]
DATASET = REPO.parent / "shared" / "datasets" / "retail-demo-store-products.yaml"
CURRENCY = "USD"
IMAGE_ROOT = "https://images.retail-demo-store.example/images"
PRODUCT_ROOT = "https://retail-demo-store.example/product"

# The recommenders the real scenarios use: (attribute name, item field, format) each.
RECOMMENDERS: dict[str, tuple[tuple[str, str, str | None], ...]] = {
    "real": (("Title", "title", None), ("Genre", "genre", None), ("Image", "image_url", None)),
    "real-price": (("Title", "title", None), ("Genre", "genre", None),
                   ("Image", "image_url", None), ("Price", "price", "currency")),
}
RECOMMENDERS["big"] = RECOMMENDERS["real"]  # on the big catalog (bench/database.py)
LOCALES = ("en_US", "en_US", "en_US", "en_GB", "de_DE", "fr_FR", "es_MX")  # Demographic.Locale


class DatasetMissing(RuntimeError):
    """The shared dataset is not there (it is never part of the project)."""


def load_products(path: Path = DATASET) -> list[dict]:
    """The dataset's product records (YAML)."""
    if not path.exists():
        raise DatasetMissing(f"{path} is missing: the real scenarios read the shared Retail Demo "
                             "Store dataset (../shared/datasets next to the repository)")
    import yaml  # only the real scenarios need it

    with path.open(encoding="utf-8") as source:
        return yaml.safe_load(source)


def _amount(price: float | str) -> str:
    """The YAML's price (a float such as 129.99) as the exact decimal string the API takes."""
    return f"{Decimal(str(price)):.2f}"


def product_item(product: dict) -> dict:
    """One dataset record as a user imports it (the item API's fields)."""
    attributes = {"style": product["style"], "description": product["description"],
                  "current_stock": product["current_stock"]}
    for optional in ("gender_affinity", "where_visible", "promoted", "featured"):
        if optional in product:
            attributes[optional] = product[optional]
    return {
        "id": str(product["id"]),
        "title": product["name"],
        "genre": product["category"],
        "price": {"amount": _amount(product["price"]), "currency": CURRENCY},
        "image_url": f"{IMAGE_ROOT}/{quote(product['category'])}/{product['image']}",
        "url": product.get("link") or f"{PRODUCT_ROOT}/{product['id']}",
        "attributes": attributes,
    }


def real_items(products: list[dict]) -> list[dict]:
    return [product_item(p) for p in products]


def synthetic_items(products: list[dict], count: int, seed: int) -> Iterator[dict]:
    """`count` items following the real ones (see the module's docstring), IDs random UUIDs."""
    rng = random.Random(seed)
    words = [word for p in products for word in p["name"].split()]
    for _ in range(count):
        model = products[rng.randrange(len(products))]
        identifier = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        title = " ".join(rng.choice(words) for _ in model["name"].split())
        yield product_item({**model, "id": identifier, "name": title,
                            "image": f"{identifier}.jpg", "link": None})


def write_ndjson(path: Path, items: Iterable[dict]) -> list[str]:
    """The items, one JSON object a line (the import route's NDJSON); returns their IDs."""
    ids = []
    with path.open("wb") as out:
        for item in items:
            ids.append(item["id"])
            out.write(orjson.dumps(item) + b"\n")
    return ids


def money(amount: str) -> str:
    """The `currency` format's en_US text for a USD amount (what Babel writes: `$1,299.99`)."""
    return f"${Decimal(amount):,.2f}"


def rendered(item: dict, recommender: str) -> tuple:
    """An item's answered texts for `recommender`'s attributes, in order (the floors' dict
    values)."""
    values = []
    for _, field, form in RECOMMENDERS[recommender]:
        if field == "price":
            values.append(money(item["price"]["amount"]) if form == "currency"
                          else f"{item['price']['amount']} {item['price']['currency']}")
        else:
            values.append(item.get(field))
    return tuple(values)


# -- events -----------------------------------------------------------------------------------

_PEOPLE = (("Sofia", "Martínez"), ("Alejandro", "Rosalez"), ("Zoë", "Lefèvre"),
           ("Łukasz", "Kowalski"), ("Søren", "Øvergaard"), ("Ngọc Anh", "Nguyễn"),
           ("Chloé", "Dvořák"), ("Ayşe", "Öztürk"), ("Mateus", "Gonçalves"), ("Jane", "Doe"),
           ("John", "Stiles"), ("Mary", "Major"), ("Richard", "Roe"), ("Paulo", "Santos"),
           ("Wang", "Xiulan"), ("Mateo", "Jackson"))
_NEIGHBOURHOODS = ("East Bay", "West Bay", "Downtown", "Midtown", "Riverside", "Old Town")


def _timestamp(rng: random.Random) -> str:
    return (f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
            f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}Z")


def guide_endpoint(rng: random.Random, ids: list[str], demographic: bool) -> dict:
    """An endpoint exactly like the developer guide's example; `Demographic.Locale` added (after
    `EffectiveDate`, where Pinpoint puts it) only when `demographic`."""
    first, last = _PEOPLE[rng.randrange(len(_PEOPLE))]
    user = rng.randrange(10_000_000)
    created = _timestamp(rng)
    endpoint: dict = {
        "ChannelType": "EMAIL",
        "Address": f"{first[0].lower()}{last.lower()}{user}@example.com",
        "EndpointStatus": "ACTIVE",
        "OptOut": "NONE",
        "EffectiveDate": created,
    }
    if demographic:
        endpoint["Demographic"] = {"Locale": LOCALES[rng.randrange(len(LOCALES))]}
    endpoint.update({
        "Attributes": {"AddressType": ["primary"]},
        "User": {"UserId": f"{first}{last}{user}",
                 "UserAttributes": {"LastName": [last], "FirstName": [first],
                                    "Neighborhood": [_NEIGHBOURHOODS[user % 6]]}},
        "RecommendationItems": ids,
        "CreationDate": created,
    })
    return endpoint


def draw_ids(rng: random.Random, ids: list[str], zipf: Zipf | None) -> list[str]:
    """5 distinct IDs: uniform over `ids`, or by `zipf`'s ranks."""
    if zipf is None:
        return rng.sample(ids, ITEMS_PER_ENDPOINT)
    drawn: dict[str, None] = {}
    while len(drawn) < min(ITEMS_PER_ENDPOINT, len(ids)):
        drawn[ids[zipf()]] = None
    return list(drawn)


def guide_event(rng: random.Random, ids: list[str], endpoints: int, demographic: bool,
                zipf: Zipf | None = None) -> dict:
    """A campaign event: the documented top-level keys and `endpoints` guide-shaped endpoints."""
    return {
        "ApplicationId": f"{rng.getrandbits(128):032x}",
        "CampaignId": f"{rng.getrandbits(128):032x}",
        "TreatmentId": "0",
        "ActivityId": f"{rng.getrandbits(128):032x}",
        "ScheduledTime": _timestamp(rng),
        "Endpoints": {f"{rng.getrandbits(128):032x}": guide_endpoint(
            rng, draw_ids(rng, ids, zipf), demographic) for _ in range(endpoints)},
    }


def write_guide_events(path: Path, rng: random.Random, count: int, ids: list[str],
                       endpoints: int, demographic: bool, zipf: Zipf | None = None) -> tuple[Path, float]:
    """`count` distinct events, one a line; returns the file and the mean number of distinct IDs
    an event asks for (the rows a server without a cache fetches per event)."""
    distinct = 0
    with path.open("wb") as out:
        for _ in range(count):
            event = guide_event(rng, ids, endpoints, demographic, zipf)
            distinct += len({i for e in event["Endpoints"].values()
                             for i in e["RecommendationItems"]})
            out.write(orjson.dumps(event) + b"\n")
    return path, distinct / max(count, 1)


def write_content_paths(path: Path, rng: random.Random, count: int, ids: list[str],
                        route: str, zipf: Zipf, per_request: int = 3) -> Path:
    """`count` distinct GET paths of the content route, `per_request` distinct Zipf IDs each
    (what one recipient's message asks for)."""
    seen: set[str] = set()
    with path.open("w") as out:
        while len(seen) < count:
            drawn: dict[str, None] = {}
            while len(drawn) < min(per_request, len(ids)):
                drawn[ids[zipf()]] = None
            line = f"{route}?ids={','.join(drawn)}"
            if line not in seen:
                seen.add(line)
                out.write(line + "\n")
            elif len(seen) >= _possible_paths(len(ids), per_request):
                break
    return path


def _possible_paths(items: int, per_request: int) -> int:
    """How many different paths a tiny catalog allows (a bound for the loop above)."""
    count = 1
    for k in range(per_request):
        count *= max(items - k, 1)
    return count
