"""The route table: every route the service answers, each with a name."""

from __future__ import annotations

from aiohttp import web

from service.handlers import catalogs, decorate, metrics, ops, preview, recommenders, transform


def setup_routes(app: web.Application) -> None:
    app.router.add_routes([
        web.get("/healthz", ops.healthz, name="healthz"),
        web.get("/readyz", ops.readyz, name="readyz"),
        web.get("/metrics", metrics.metrics, name="metrics", allow_head=False),
        web.post("/v1/recommenders/{recommender}/transform", transform.transform,
                 name="transform"),
        web.put("/v1/recommenders/{recommender}", recommenders.put_recommender,
                name="put_recommender"),
        web.get("/v1/recommenders/{recommender}", recommenders.get_recommender,
                name="get_recommender", allow_head=False),
        web.delete("/v1/recommenders/{recommender}", recommenders.delete_recommender,
                   name="delete_recommender"),
        web.get("/v1/recommenders", recommenders.list_recommenders, name="list_recommenders",
                allow_head=False),
        # Names cannot hold ':', so the regex keeps `a:b:preview` from matching as name `a:b`.
        web.post("/v1/recommenders/{recommender:[^/:]+}:preview", preview.preview,
                 name="preview_recommender"),
        web.post("/v1/recommenders/{recommender}/decorate", decorate.decorate,
                 name="decorate"),
        web.post("/v1/transform", transform.transform_by_application,
                 name="transform_by_application"),
        web.put("/v1/catalogs/{catalog}", catalogs.put_catalog, name="put_catalog"),
        web.get("/v1/catalogs/{catalog}", catalogs.get_catalog, name="get_catalog",
                allow_head=False),
        web.put("/v1/catalogs/{catalog}/items/{item_id}", catalogs.put_item, name="put_item"),
        web.get("/v1/catalogs/{catalog}/items/{item_id}", catalogs.get_item, name="get_item",
                allow_head=False),
    ])
