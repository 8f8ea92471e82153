"""The route table: every route the service answers, each with a name.

Every route here is described in service/web/openapi.json under the same method, path and
`operationId` (the route name); tests/test_openapi.py fails when the two disagree.
"""

from __future__ import annotations

from aiohttp import web

from service.web.handlers import (
    batch,
    catalogs,
    connect,
    content,
    decorate,
    item_import,
    items,
    keys,
    metrics,
    openapi,
    ops,
    preview,
    recommenders,
    transform,
    user_content,
)


def setup_routes(app: web.Application) -> None:
    app.router.add_routes([
        web.get("/healthz", ops.healthz, name="healthz"),
        web.get("/readyz", ops.readyz, name="readyz"),
        web.get("/metrics", metrics.metrics, name="metrics", allow_head=False),
        web.post("/v1/recommenders/{recommender}/transform", transform.transform,
                 name="transform"),
        # Send-time content for per-recipient callers (issue 11), early in the table: aiohttp
        # tries the /v1/recommenders/ routes in this order, and these requests are small.
        web.get("/v1/recommenders/{recommender}/content", content.get_content,
                name="get_content", allow_head=False),
        web.post("/v1/recommenders/{recommender}/content", content.post_content,
                 name="post_content"),
        # Personalize in the loop (issue 12).
        web.get("/v1/recommenders/{recommender}/users/{user_id}/content",
                user_content.get_user_content, name="get_user_content", allow_head=False),
        # Amazon Connect outbound campaigns (issue 30): a journey's custom action block.
        web.post("/v1/recommenders/{recommender}/connect", connect.connect, name="connect"),
        # The nightly batch over HTTP: NDJSON in, NDJSON out, streamed.
        web.post("/v1/recommenders/{recommender}/batch", batch.batch, name="batch"),
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
        web.put("/v1/catalogs/{catalog}/items/{item_id}", items.put_item, name="put_item"),
        web.get("/v1/catalogs/{catalog}/items/{item_id}", items.get_item, name="get_item",
                allow_head=False),
        # Catalog API (issue 4).
        web.get("/v1/catalogs", catalogs.list_catalogs, name="list_catalogs", allow_head=False),
        web.delete("/v1/catalogs/{catalog}", catalogs.delete_catalog, name="delete_catalog"),
        web.patch("/v1/catalogs/{catalog}/items/{item_id}", items.patch_item,
                  name="patch_item"),
        web.delete("/v1/catalogs/{catalog}/items/{item_id}", items.delete_item,
                   name="delete_item"),
        web.get("/v1/catalogs/{catalog}/items", items.list_items, name="list_items",
                allow_head=False),
        web.post("/v1/catalogs/{catalog}/items:batchGet", items.batch_get_items,
                 name="batch_get_items"),
        web.post("/v1/catalogs/{catalog}/items:import", item_import.import_catalog_items,
                 name="import_items"),
        # Keys (issue 14).
        web.get("/v1/keys", keys.list_keys, name="list_keys", allow_head=False),
        web.post("/v1/keys", keys.create_key, name="create_key"),
        web.delete("/v1/keys/{prefix}", keys.delete_key, name="delete_key"),
        web.post("/v1/keys/{prefix:[^/:]+}:rotate", keys.rotate_key, name="rotate_key"),
        web.get("/openapi.json", openapi.openapi, name="openapi", allow_head=False),
    ])
