"""The floor: the least a transformer server can do, to measure catalog-enricher against.

One aiohttp process: read the body, parse it with orjson, look each endpoint's items up in a Python
dict of the whole catalog (tuples of the answered texts), add `Recommendations`, serialise with
orjson. No auth, no validation, no database, no cache, no logging. It answers the same route and the
same shape as the service (the bench checks that both answers are equal before timing anything),
and runs on the event loop the service would: the stdlib's, or uvloop's when ENRICHER_EVENT_LOOP is
`uvloop` (the bench passes the service's value on).

    python -m bench.floor_server --port 8081 --items 1000000 [--processes 2]
    python -m bench.floor_server --port 8081 --catalog-file real.ndjson --recommender real

With `--catalog-file` it holds what a user's floor would: the NDJSON the bench imported into the
service, read once into a dict of ID → the recommender's answered texts (the real scenarios).

With `--processes N` it builds the dict once and forks N-1 copies that share the port
(SO_REUSEPORT), the floor for `serve --workers N`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import time

import orjson
from aiohttp import web

from bench.catalog import SHAPES, floor_items, user_recommendations
from bench.real_catalog import RECOMMENDERS, rendered

ITEMS = web.AppKey("items", dict)
ATTRIBUTES = web.AppKey("attributes", tuple)
CAP = 5  # the bench recommender's recommendations_per_message (the default)


def transform_answer(event: dict, items: dict[str, tuple], attributes: tuple[str, ...]) -> dict:
    """The transformer's answer: each endpoint with an item found, plus its `Recommendations`
    (the found items' texts per attribute); `items` maps an ID to its texts in `attributes` order."""
    answer = {}
    get = items.get
    for endpoint_id, endpoint in event["Endpoints"].items():
        rows = [row for row in map(get, endpoint["RecommendationItems"]) if row is not None]
        if rows:
            # In place: the event was parsed for this request alone (no copy, as a user's floor).
            endpoint["Recommendations"] = {name: [row[i] for row in rows]
                                           for i, name in enumerate(attributes)}
            answer[endpoint_id] = endpoint
    return answer


def content_ids(request: web.Request) -> list[str]:
    """The content route's `ids`: split on commas, or repeated."""
    values = request.query.getall("ids", [])
    return values[0].split(",") if len(values) == 1 else values


def content_answer(recommender: str, ids: list[str], items: dict[str, tuple],
                   attributes: tuple[str, ...]) -> dict:
    """The content route's answer (service/adapters/content.py) for the bench's recommender."""
    shown = []
    missing = {}
    for item_id in ids:
        row = items.get(item_id)
        if row is None:
            missing[item_id] = None
        else:
            shown.append((item_id, row))
    recommendations = {name: [row[i] for _, row in shown[:CAP]]
                       for i, name in enumerate(attributes)} if shown else {}
    return {
        "recommender": recommender, "locale": "en_US", "send": bool(shown),
        "items": [{"id": item_id, **dict(zip(attributes, row, strict=True))}
                  for item_id, row in shown],
        "Recommendations": recommendations, "missing": list(missing),
    }


async def transform(request: web.Request) -> web.Response:
    event = orjson.loads(await request.read())
    answer = transform_answer(event, request.app[ITEMS], request.app[ATTRIBUTES])
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


async def content(request: web.Request) -> web.Response:
    """`ids` looked up in the dict, the answer serialised."""
    answer = content_answer(request.match_info["recommender"], content_ids(request),
                            request.app[ITEMS], request.app[ATTRIBUTES])
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


async def user_content(request: web.Request) -> web.Response:
    """The user route's answer: the fake Personalize's IDs for the user (the same pure function),
    each item with its score, as `content` answers them."""
    user = request.match_info["user_id"]
    items, attributes = request.app[ITEMS], request.app[ATTRIBUTES]
    found = [(item_id, score, items[item_id])
             for item_id, score in user_recommendations(user, len(items))]
    answer = {
        "recommender": request.match_info["recommender"], "locale": "en_US", "send": True,
        "items": [{"id": item_id, **dict(zip(attributes, row, strict=True)), "score": score}
                  for item_id, score, row in found],
        "Recommendations": {name: [row[i] for _, _, row in found[:CAP]]
                            for i, name in enumerate(attributes)},
        "missing": [], "recommendation_id": f"RID-{user}",
    }
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def peer_app(transform_handler, content_handler) -> web.Application:
    """An app with the service's transform and content routes (and /healthz), as both the floor
    and the naive server answer them."""
    app = web.Application(client_max_size=7 * 1024 * 1024)
    app.router.add_post("/v1/recommenders/{recommender}/transform", transform_handler)
    app.router.add_post("/v1/transform", transform_handler)
    app.router.add_get("/v1/recommenders/{recommender}/content", content_handler)
    app.router.add_get("/healthz", healthz)
    return app


def file_items(path: str, recommender: str) -> dict[str, tuple]:
    """The NDJSON catalog as the floor holds it: ID → `recommender`'s answered texts."""
    with open(path, "rb") as lines:
        return {item["id"]: rendered(item, recommender)
                for item in map(orjson.loads, lines)}


def real_attributes(recommender: str) -> tuple[str, ...]:
    return tuple(name for name, _, _ in RECOMMENDERS[recommender])


def create_floor_app(items: dict[str, tuple], shape: str = "pinpoint",
                     attributes: tuple[str, ...] | None = None) -> web.Application:
    app = peer_app(transform, content)
    app[ITEMS] = items
    app[ATTRIBUTES] = attributes or tuple(name for name, _ in SHAPES[shape])
    app.router.add_get("/v1/recommenders/{recommender}/users/{user_id}/content", user_content)
    return app


def use_event_loop() -> None:
    """The service's event loop (service/server.py install_event_loop): uvloop exactly when
    ENRICHER_EVENT_LOOP says so."""
    if os.environ.get("ENRICHER_EVENT_LOOP", "asyncio").lower() == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--items", type=int, default=0)
    parser.add_argument("--catalog-file", help="NDJSON catalog to hold instead of the toy one")
    parser.add_argument("--recommender", choices=sorted(RECOMMENDERS), default="real",
                        help="with --catalog-file: whose attributes to answer")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="pinpoint",
                        help="the recommender attributes answered (bench/catalog.py SHAPES)")
    args = parser.parse_args()
    use_event_loop()
    started = time.monotonic()
    if args.catalog_file:
        items = file_items(args.catalog_file, args.recommender)
        attributes = real_attributes(args.recommender)
    else:
        items, attributes = floor_items(args.items, args.shape), None
    print(f"floor: {len(items):,} items in {time.monotonic() - started:.1f} s", flush=True)
    children = []
    for _ in range(args.processes - 1):
        pid = os.fork()
        if pid == 0:
            children = []
            break
        children.append(pid)
    try:
        web.run_app(create_floor_app(items, args.shape, attributes), host=args.host, port=args.port,
                    reuse_port=args.processes > 1, access_log=None, print=None, backlog=1024)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
