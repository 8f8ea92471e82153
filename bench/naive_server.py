"""The naive Postgres server: what a user could write in an afternoon, to measure the cold path against.

aiohttp + asyncpg + orjson, on the service's event loop (like the floor). No cache, no
auth, no validation, no logging: per transform event ONE query for every ID of the event,

    SELECT id, <only the needed columns> FROM items WHERE catalog_id = $1 AND id = ANY($2::text[])

then the floor's own answer built from the rows (bench/floor_server.py: the bench checks the answers
are equal). The same for the content route's GET (one query per request).

    python -m bench.naive_server --port 8082 --database-url postgresql://... --catalog-id 1
"""

from __future__ import annotations

import argparse

import asyncpg
import orjson
from aiohttp import web

from bench.catalog import SHAPES, render_values
from bench.floor_server import (
    content_answer,
    content_ids,
    peer_app,
    transform_answer,
    use_event_loop,
)
from bench.real_catalog import RECOMMENDERS, rendered

POOL = web.AppKey("pool", asyncpg.Pool)
SETTINGS = web.AppKey("settings", dict)
# The item columns each shape's attributes need, in render_values' argument order.
COLUMNS = {"id": "id", "title": "title", "genre": "genre", "price": "price_amount::text",
           "money": "price_amount::text", "image_url": "image_url", "url": "url"}


def query_for(shape: str) -> tuple[str, tuple[str, ...]]:
    """The one SQL statement for `shape` (no input in it: the IDs are a parameter) and the
    render_values arguments its columns fill."""
    needed = dict.fromkeys(what for _, what in SHAPES[shape])
    if "price" in needed or "money" in needed:
        needed.pop("money", None)
        needed["price"] = None
    fields = tuple(what for what in needed if what != "id")
    columns = ", ".join(COLUMNS[what] for what in fields)
    if "price" in fields:
        columns += ", price_currency"
    # Column names from COLUMNS only, never from input: the IDs and catalog are parameters.
    sql = f"SELECT id, {columns} FROM items WHERE catalog_id = $1 AND id = ANY($2::text[])"  # noqa: S608
    return sql, fields


def rows_to_items(shape: str, fields: tuple[str, ...], rows: list) -> dict[str, tuple]:
    """ID → the answered texts, as the floor's dict holds them."""
    items = {}
    for row in rows:
        got = dict(zip(fields, row[1:], strict=False))
        currency = row[-1] if "price" in fields else ""
        items[row[0]] = render_values(shape, row[0], got.get("title", ""), got.get("genre"),
                                      got.get("price", ""), currency, got.get("image_url"),
                                      got.get("url"))
    return items


# The real scenarios' recommenders: every field any of them shows (a few short columns).
REAL_SQL = ("SELECT id, title, genre, image_url, price_amount::text, price_currency FROM items "
            "WHERE catalog_id = $1 AND id = ANY($2::text[])")


def real_rows_to_items(recommender: str, rows: list) -> dict[str, tuple]:
    return {row[0]: rendered({"title": row[1], "genre": row[2], "image_url": row[3],
                              "price": {"amount": row[4], "currency": row[5]}}, recommender)
            for row in rows}


async def fetch_items(app: web.Application, ids: list[str]) -> dict[str, tuple]:
    settings = app[SETTINGS]
    rows = await app[POOL].fetch(settings["sql"], settings["catalog_id"], ids)
    if settings["recommender"]:
        return real_rows_to_items(settings["recommender"], rows)
    return rows_to_items(settings["shape"], settings["fields"], rows)


async def transform(request: web.Request) -> web.Response:
    event = orjson.loads(await request.read())
    ids = list({item_id: None for endpoint in event["Endpoints"].values()
                for item_id in endpoint["RecommendationItems"]})
    items = await fetch_items(request.app, ids)
    answer = transform_answer(event, items, request.app[SETTINGS]["attributes"])
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


async def content(request: web.Request) -> web.Response:
    ids = content_ids(request)
    items = await fetch_items(request.app, ids)
    answer = content_answer(request.match_info["recommender"], ids, items,
                            request.app[SETTINGS]["attributes"])
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


def create_naive_app(database_url: str, catalog_id: int, shape: str = "pinpoint",
                     pool_size: int = 10, recommender: str | None = None) -> web.Application:
    """`recommender` (one of bench/real_catalog.py RECOMMENDERS): answer its attributes from the
    real columns; else the toy `shape`'s."""
    app = peer_app(transform, content)
    sql, fields = query_for(shape)
    attributes = tuple(name for name, _ in SHAPES[shape])
    if recommender:
        sql, attributes = REAL_SQL, tuple(name for name, _, _ in RECOMMENDERS[recommender])
    app[SETTINGS] = {"sql": sql, "fields": fields, "shape": shape, "catalog_id": catalog_id,
                     "attributes": attributes, "recommender": recommender}

    async def pool(app: web.Application):
        app[POOL] = await asyncpg.create_pool(database_url, min_size=2, max_size=pool_size)
        yield
        await app[POOL].close()

    app.cleanup_ctx.append(pool)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--catalog-id", type=int, required=True)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="pinpoint")
    parser.add_argument("--recommender", choices=sorted(RECOMMENDERS),
                        help="answer a real scenario's recommender (bench/real_catalog.py)")
    parser.add_argument("--pool-size", type=int, default=10,
                        help="Postgres connections (default 10, the service's ENRICHER_DB_POOL_MAX)")
    args = parser.parse_args()
    use_event_loop()
    web.run_app(create_naive_app(args.database_url, args.catalog_id, args.shape, args.pool_size,
                                args.recommender),
                host=args.host, port=args.port, access_log=None, print=None, backlog=1024)


if __name__ == "__main__":
    main()
