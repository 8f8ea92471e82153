"""The bench's own database: created, migrated with the service's migrations, loaded, dropped.

The catalog is loaded with COPY (asyncpg's `copy_records_to_table`), the tenant, catalog,
recommender and API key with the service's own storage functions, so the service reads exactly what
it would have written itself. SQL statements are counted from `pg_stat_database` (see
`committed_transactions`): nothing sits between the service and Postgres to count them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from dataclasses import dataclass

import asyncpg

from bench.catalog import COPY_COLUMNS, SHAPE_RECOMMENDERS, SHAPES, copy_records
from bench.real_catalog import RECOMMENDERS as REAL_RECOMMENDERS
from service.enrichment.recommenders import parse_recommender
from service.runtime.settings import Settings
from service.storage import catalogs as catalog_store
from service.storage import recommenders as recommender_store
from service.storage import tenants as tenant_store
from service.storage.db import connect
from service.storage.migrations import apply_migrations
from service.web.auth import generate_key
from tests.support.databases import with_database

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TENANT = "bench"
CATALOG = "bench-catalog"
RECOMMENDER = "bench"
# Plain Price (amount and currency), not the `currency` format: the floor renders the same text
# with an f-string, so both servers do the same work for the same answer.
RECOMMENDER_SPEC = {
    "catalog": CATALOG,
    "attributes": [
        {"name": "Title", "field": "title"},
        {"name": "Genre", "field": "genre"},
        {"name": "Price", "field": "price"},
    ],
    # The user scenario's Personalize (the bench's fake, bench/personalize.py); results kept
    # for the whole run, so the measured load is per-user cache hits.
    "personalize": {"campaign_arn": "arn:aws:personalize:us-east-1:123456789012:campaign/bench",
                    "num_results": 5, "cache_seconds": 3600},
    # The connect scenario's batches: each profile's items in a custom attribute.
    "connect": {"ids_from": "Attributes.recommended_items"},
}
# The real scenarios' catalogs: the dataset's products, and the big synthetic one that follows them.
REAL_CATALOG = "real"
BIG_CATALOG = "big"
BIG_RECOMMENDER = "big"  # the `real` recommender's attributes, on the big catalog
LOCALE_RECOMMENDERS = tuple(f"rss-{n:02d}" for n in range(20))  # the locales-rss scenario's


def shape_spec(shape: str) -> dict:
    """A recommender for one event shape's attributes (bench/catalog.py SHAPES): "money" is the
    price in the `currency` format, "price" the plain Price."""
    def attribute(name: str, what: str) -> dict:
        if what == "money":
            return {"name": name, "field": "price", "format": "currency"}
        return {"name": name, "field": what}

    return {"catalog": CATALOG, "attributes": [attribute(*pair) for pair in SHAPES[shape]]}


def real_spec(catalog: str, attributes: tuple[tuple[str, str, str | None], ...]) -> dict:
    return {"catalog": catalog, "attributes": [
        {"name": name, "field": field, **({"format": form} if form else {})}
        for name, field, form in attributes]}


def real_recommenders() -> dict[str, dict]:
    """`real` and `real-price` on the real catalog, `big` (the `real` attributes) on the big one."""
    found = {name: real_spec(REAL_CATALOG, attrs) for name, attrs in REAL_RECOMMENDERS.items()}
    found[BIG_RECOMMENDER] = real_spec(BIG_CATALOG, REAL_RECOMMENDERS["real"])
    return found


def bench_recommenders() -> dict[str, dict]:
    """Every recommender of the bench tenant: `bench` (the pinpoint shape, with Personalize), one per
    guide shape, and the 20 of locales-rss (the guide3 attributes)."""
    found = {SHAPE_RECOMMENDERS[shape]: shape_spec(shape) for shape in SHAPES if shape != "pinpoint"}
    found.update({name: shape_spec("guide3") for name in LOCALE_RECOMMENDERS})
    return {RECOMMENDER: RECOMMENDER_SPEC, **found}


# Tenant B of the fairness scenario: its own catalog holding a copy of the hot items.
COPY_HOT_ITEMS = """
INSERT INTO items (catalog_id, id, title, genre, price_amount, price_currency, image_url, url,
                   available, attributes, locales)
SELECT $2, id, title, genre, price_amount, price_currency, image_url, url, available, attributes,
       locales
FROM items WHERE catalog_id = $1 AND id = ANY($3::text[])
"""
COUNT_TRANSACTIONS = """
SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1
"""
COUNT_BACKENDS = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"


def configured_server_url(explicit: str | None) -> str | None:
    """The Postgres server named for the bench (its database is only a way in), if any."""
    return explicit or os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL")


@dataclass(frozen=True)
class BenchDatabase:
    server_url: str
    name: str
    url: str
    api_key: str
    catalog_id: int = 0
    recommender: str = RECOMMENDER
    import_key: str = ""  # scope catalog:write: the real catalogs are written through the API
    catalog_ids: dict[str, int] | None = None  # by catalog name


async def create_database(server: str) -> tuple[str, str]:
    """A new, empty database of the bench's own; returns its name and the server's version."""
    name = f"ce_bench_{os.getpid()}_{secrets.token_hex(3)}"
    conn = await asyncpg.connect(server, timeout=10)
    try:
        # An identifier cannot be a parameter; this one is made here, never taken from input.
        await conn.execute(f'CREATE DATABASE "{name}"')
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    return name, version.split(" ")[0]


async def migrated_tenant(
    conn: asyncpg.Connection, name: str, scopes: list[str]
) -> tuple[tenant_store.Tenant, str]:
    """Apply the migrations, create a tenant and a key for it; returns the tenant and the key."""
    await apply_migrations(conn)
    tenant = await tenant_store.create_tenant(conn, name)
    key = generate_key()
    await tenant_store.insert_key(conn, tenant.id, key.prefix, key.key_hash, scopes, "bench")
    return tenant, key.key


async def load(server: str, name: str, items: int, progress, toy: bool = True) -> BenchDatabase:
    """Migrate the new database and fill it: the toy catalog of `items` generated items (COPY,
    only when `toy`: the kept scenarios use it), the empty real and big catalogs (the bench
    imports them through the service, as users write items), the recommenders, a transform key
    and a catalog:write key."""
    url = with_database(server, name)
    conn = await connect(Settings(database_url=url))
    try:
        await apply_migrations(conn)
        async with conn.transaction():
            tenant = await tenant_store.create_tenant(conn, TENANT)
            catalog, _ = await catalog_store.upsert_catalog(conn, tenant.id, CATALOG,
                                                            "generated by bench/")
            catalog_ids = {CATALOG: catalog.id}
            for extra in (REAL_CATALOG, BIG_CATALOG):
                made, _ = await catalog_store.upsert_catalog(conn, tenant.id, extra,
                                                             "imported by bench/")
                catalog_ids[extra] = made.id
            for recommender, body in {**bench_recommenders(), **real_recommenders()}.items():
                spec = parse_recommender(body, recommender)
                await recommender_store.upsert_recommender(conn, tenant.id, recommender,
                                                           catalog_ids[body["catalog"]],
                                                           spec.as_json())
            key = generate_key()
            await tenant_store.insert_key(conn, tenant.id, key.prefix, key.key_hash,
                                          ["transform"], "bench")
            writer = generate_key()
            await tenant_store.insert_key(conn, tenant.id, writer.prefix, writer.key_hash,
                                          ["catalog:write"], "bench import")
    finally:
        await conn.close()
    if not toy:
        return BenchDatabase(server, name, url, key.key, catalog.id, import_key=writer.key,
                             catalog_ids=catalog_ids)
    # A plain connection for COPY: the service's numeric codec is text-only, COPY is binary.
    copier = await asyncpg.connect(url, timeout=10)
    try:
        started = time.monotonic()
        await copier.copy_records_to_table("items", records=copy_records(items, catalog.id),
                                           columns=COPY_COLUMNS)
        progress(f"copied {items:,} items in {time.monotonic() - started:.1f} s")
        # Fresh statistics for the planner, a visibility map for index scans, and no autovacuum
        # waking up mid-run to add work (and transactions) the service did not cause.
        await copier.execute("VACUUM ANALYZE items")
        await copier.execute("ALTER TABLE items SET (autovacuum_enabled = off)")
    finally:
        await copier.close()
    return BenchDatabase(server, name, url, key.key, catalog.id, import_key=writer.key,
                         catalog_ids=catalog_ids)


async def settle(server: str, name: str) -> None:
    """Fresh planner statistics and a visibility map after an import, and no autovacuum waking
    up mid-run (as after the toy catalog's COPY)."""
    conn = await asyncpg.connect(with_database(server, name), timeout=10)
    try:
        await conn.execute("VACUUM ANALYZE items")
        await conn.execute("ALTER TABLE items SET (autovacuum_enabled = off)")
    finally:
        await conn.close()


async def add_second_tenant(db: BenchDatabase, name: str, hot: list[str]) -> str:
    """Another tenant with its own catalog (the hot items) and a recommender of the same name;
    returns its transform key. Both tenants' events then take the same path and IDs."""
    conn = await connect(Settings(database_url=db.url))
    try:
        async with conn.transaction():
            tenant = await tenant_store.create_tenant(conn, name)
            catalog, _ = await catalog_store.upsert_catalog(conn, tenant.id, CATALOG, name)
            source = await catalog_store.find_catalog(conn, (await tenant_store.get_tenant(
                conn, TENANT)).id, CATALOG)
            await conn.execute(COPY_HOT_ITEMS, source.id, catalog.id, hot)
            spec = parse_recommender(RECOMMENDER_SPEC, RECOMMENDER)
            await recommender_store.upsert_recommender(conn, tenant.id, RECOMMENDER, catalog.id,
                                                       spec.as_json())
            key = generate_key()
            await tenant_store.insert_key(conn, tenant.id, key.prefix, key.key_hash,
                                          ["transform"], "bench")
    finally:
        await conn.close()
    return key.key


async def committed_transactions(server: str, name: str, *, timeout: float = 15.0) -> int:
    """Transactions committed or rolled back in database `name` so far, once nobody is connected.

    Each statement the service runs outside an explicit transaction (every statement of the
    transform path) is one transaction here, so a difference of two readings counts statements.
    Postgres publishes a backend's counts when it goes idle (at most once a second) and when it
    exits, so this waits until every connection to `name` has closed: then the count is whole.
    """
    conn = await asyncpg.connect(server, timeout=10)
    try:
        deadline = time.monotonic() + timeout
        while await conn.fetchval(COUNT_BACKENDS, name):
            if time.monotonic() > deadline:
                raise TimeoutError(f"connections to {name} still open after {timeout:.0f} s")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)  # the last backend's exit hooks run after it leaves the list
        return await conn.fetchval(COUNT_TRANSACTIONS, name)
    finally:
        await conn.close()
