"""Loading test catalogs and recommenders through the real API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from tests.support.api import Api


async def load_catalog(api: Api, catalog: str, items: list[dict[str, Any]]) -> None:
    status, body, _ = await api.put(f"/v1/catalogs/{catalog}", {})
    assert status in (200, 201), body
    for item in items:
        fields = {k: v for k, v in item.items() if k != "id"}
        status, body, _ = await api.put(f"/v1/catalogs/{catalog}/items/{item['id']}", fields)
        assert status in (200, 201), body


async def load_ndjson(api: Api, catalog: str, path: Path) -> list[dict[str, Any]]:
    items = [orjson.loads(line) for line in path.read_text().splitlines() if line.strip()]
    await load_catalog(api, catalog, items)
    return items


async def put_recommender(api: Api, name: str, catalog: str, *attributes: tuple[str, str],
                          **extra: Any) -> None:
    body = {"catalog": catalog,
            "attributes": [{"name": n, "field": f} for n, f in attributes], **extra}
    status, answer, _ = await api.put(f"/v1/recommenders/{name}", body)
    assert status in (200, 201), answer
