"""aiohttp's test server, serving through the service's runner (service/web/http_server.py), so
the test client sees what `serve` answers, aiohttp's own refusals included."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from service.web.http_server import ServiceRunner


class ServiceTestServer(TestServer):
    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return ServiceRunner(self.app, **kwargs)
