"""The demo loaded by `serve --demo`: a small movie catalog, a recommender, and a key to try it."""

from __future__ import annotations

import shlex

import asyncpg
import orjson

from service.enrichment.recommenders import parse_recommender
from service.items import parse_item
from service.storage import catalogs as catalog_store
from service.storage import items as item_store
from service.storage import recommenders as recommender_store
from service.storage import tenants as tenant_store
from service.web.auth import generate_key

TENANT = "demo"
CATALOG = "demo-movies"
RECOMMENDER = "demo-movies"
SCOPES = ["transform", "catalog:read"]

ITEMS = [
    {"id": "1210", "title": "Hanna", "genre": "Action", "price": {"amount": "3.99", "currency": "USD"},
     "locales": {"de": {"title": "Wer ist Hanna?"}}},
    {"id": "1527", "title": "Catastrophe", "genre": "Comedy",
     "price": {"amount": "2.99", "currency": "USD"}},
    {"id": "1815", "title": "Fleabag", "genre": "Comedy",
     "price": {"amount": "19.99", "currency": "USD"}},
    {"id": "2009", "title": "Late Night", "genre": "Drama",
     "price": {"amount": "4.99", "currency": "USD"}},
    {"id": "4582", "title": "Agatha Christie's The ABC Murders", "genre": "Crime",
     "price": {"amount": "5.99", "currency": "USD"}},
    {"id": "6542", "title": "Hunters", "genre": "Drama",
     "price": {"amount": "7.99", "currency": "USD"}},
]
RECOMMENDER_SPEC = {
    "catalog": CATALOG,
    "attributes": [
        {"name": "Title", "field": "title", "display_name": "Title"},
        {"name": "Genre", "field": "genre", "display_name": "Genre"},
        {"name": "Price", "field": "price", "display_name": "Price", "format": "currency"},
    ],
}
EXAMPLE_EVENT = {
    "ApplicationId": "demo-application",
    "Endpoints": {
        "endpoint-1": {
            "ChannelType": "EMAIL",
            "Address": "sofiam@example.com",
            "User": {"UserId": "SofiaMartinez"},
            "RecommendationItems": ["1815", "2009", "1527"],
        },
        "endpoint-2": {
            "ChannelType": "EMAIL",
            "Address": "max@example.com",
            "Demographic": {"Locale": "de_DE"},
            "RecommendationItems": ["1210", "unknown-id", "6542"],
        },
    },
}


async def load_demo(conn: asyncpg.Connection) -> str:
    """Create (or refresh) the demo tenant's data and return a new API key for it."""
    async with conn.transaction():
        tenant = await tenant_store.find_tenant(conn, TENANT)
        if tenant is None:
            tenant = await tenant_store.create_tenant(conn, TENANT)
        catalog, _ = await catalog_store.upsert_catalog(
            conn, tenant.id, CATALOG, "Six titles from Pinpoint's developer guide"
        )
        for item in ITEMS:
            await item_store.upsert_item(conn, catalog.id, parse_item(item))
        spec = parse_recommender(RECOMMENDER_SPEC, RECOMMENDER)
        await recommender_store.upsert_recommender(
            conn, tenant.id, RECOMMENDER, catalog.id, spec.as_json()
        )
        key = generate_key()
        await tenant_store.insert_key(conn, tenant.id, key.prefix, key.key_hash, SCOPES, "demo")
    return key.key


def curl_line(base_url: str, key: str) -> str:
    url = f"{base_url}/v1/recommenders/{RECOMMENDER}/transform"
    body = orjson.dumps(EXAMPLE_EVENT).decode()
    return (
        f"curl -sS -X POST {shlex.quote(url)} "
        f"-H {shlex.quote('Authorization: Bearer ' + key)} "
        f"-H 'Content-Type: application/json' -d {shlex.quote(body)}"
    )
