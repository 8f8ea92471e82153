"""A user's naive Postgres server, written plainly: aiohttp + asyncpg, one
`SELECT ... WHERE id = ANY($1)` per request, no cache.

    python -m bench.independent.naive --port 8091 --database-url postgresql://... \
        --catalog-id 2 --attributes Title=title,Genre=genre,Image=image_url
"""

import argparse
from decimal import Decimal

import asyncpg
import orjson
from aiohttp import web

from bench.independent.floor import build_answer, build_content, parse_attributes

SQL = ("SELECT id, title, genre, image_url, price_amount, price_currency FROM items "
       "WHERE catalog_id = $1 AND id = ANY($2)")


def texts(row, spec):
    out = []
    for _, field, currency in spec:
        if field == "price":
            amount = Decimal(row["price_amount"])
            out.append(f"${amount:,.2f}" if currency else f"{amount} {row['price_currency']}")
        else:
            out.append(row[field])
    return tuple(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--catalog-id", type=int, required=True)
    parser.add_argument("--attributes", required=True)
    args = parser.parse_args()
    spec = parse_attributes(args.attributes)
    names = [n for n, _, _ in spec]
    pool_key = web.AppKey("pool", asyncpg.Pool)

    async def lookup(request, ids):
        # The service stores amounts as numeric; asyncpg may hand them as text or Decimal.
        rows = await request.app[pool_key].fetch(SQL, args.catalog_id, ids)
        return {row["id"]: texts(row, spec) for row in rows}

    async def transform(request):
        event = orjson.loads(await request.read())
        ids = list({i for e in event["Endpoints"].values() for i in e["RecommendationItems"]})
        answer = build_answer(event, await lookup(request, ids), names)
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def content(request):
        ids = request.query["ids"].split(",")
        answer = build_content(request.match_info["r"], ids, await lookup(request, ids), names)
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def health(_):
        return web.Response(text="ok")

    async def pool(app):
        app[pool_key] = await asyncpg.create_pool(args.database_url, min_size=2, max_size=10)
        yield
        await app[pool_key].close()

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.cleanup_ctx.append(pool)
    app.router.add_post("/v1/recommenders/{r}/transform", transform)
    app.router.add_get("/v1/recommenders/{r}/content", content)
    app.router.add_get("/healthz", health)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
