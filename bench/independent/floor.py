"""A user's floor, written plainly: orjson + a dict of the catalog, nothing else.

    python -m bench.independent.floor --port 8090 --catalog items.ndjson \
        --attributes Title=title,Genre=genre,Image=image_url,Price=price:currency
"""

import argparse
from decimal import Decimal

import orjson
from aiohttp import web


def parse_attributes(text):
    """"Name=field[:currency],..." -> [(name, field, currency?)]."""
    found = []
    for part in text.split(","):
        name, field = part.split("=")
        field, _, form = field.partition(":")
        found.append((name, field, form == "currency"))
    return found


def value(item, field, currency):
    if field != "price":
        return item.get(field)
    amount = item["price"]["amount"]
    return f"${Decimal(amount):,.2f}" if currency else f"{amount} {item['price']['currency']}"


def build_answer(event, catalog, names):
    out = {}
    for key, endpoint in event["Endpoints"].items():
        found = [catalog[i] for i in endpoint["RecommendationItems"] if i in catalog]
        if found:
            endpoint["Recommendations"] = {n: [f[k] for f in found] for k, n in enumerate(names)}
            out[key] = endpoint
    return out


def build_content(recommender, ids, catalog, names):
    items, texts, missing = [], {n: [] for n in names}, []
    for i in ids:
        if i in catalog:
            values = catalog[i]
            items.append({"id": i, **dict(zip(names, values, strict=True))})
            if len(items) <= 5:
                for k, n in enumerate(names):
                    texts[n].append(values[k])
        elif i not in missing:
            missing.append(i)
    return {"recommender": recommender, "locale": "en_US", "send": bool(items), "items": items,
            "Recommendations": texts if items else {}, "missing": missing}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--attributes", required=True)
    args = parser.parse_args()
    spec = parse_attributes(args.attributes)
    names = [n for n, _, _ in spec]
    catalog = {}
    with open(args.catalog, "rb") as lines:
        for line in lines:
            item = orjson.loads(line)
            catalog[item["id"]] = tuple(value(item, f, c) for _, f, c in spec)

    async def transform(request):
        answer = build_answer(orjson.loads(await request.read()), catalog, names)
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def content(request):
        ids = request.query["ids"].split(",")
        answer = build_content(request.match_info["r"], ids, catalog, names)
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def health(_):
        return web.Response(text="ok")

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/v1/recommenders/{r}/transform", transform)
    app.router.add_get("/v1/recommenders/{r}/content", content)
    app.router.add_get("/healthz", health)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
