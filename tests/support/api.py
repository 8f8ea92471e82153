"""A small client for the service under test: real HTTP through aiohttp's test client."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp.test_utils import TestClient


class Api:
    """Sends JSON with one tenant's key; returns (status, parsed body, headers)."""

    def __init__(self, client: TestClient, key: str | None) -> None:
        self.client = client
        self.key = key

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        return {**headers, **(extra or {})}

    async def call(self, method: str, path: str, body: Any = None, *,
                   raw: bytes | None = None, headers: dict[str, str] | None = None):
        data = raw if raw is not None else (None if body is None else orjson.dumps(body))
        async with self.client.request(method, path, data=data,
                                       headers=self.headers(headers)) as response:
            payload = await response.read()
            parsed = orjson.loads(payload) if payload else None
            return response.status, parsed, response.headers

    async def put(self, path: str, body: Any, **kw):
        return await self.call("PUT", path, body, **kw)

    async def get(self, path: str, **kw):
        return await self.call("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw):
        return await self.call("POST", path, body, **kw)

    async def patch(self, path: str, body: Any, **kw):
        return await self.call("PATCH", path, body, **kw)

    async def delete(self, path: str, **kw):
        return await self.call("DELETE", path, **kw)
