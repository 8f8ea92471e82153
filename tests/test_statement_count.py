"""A transform issues exactly one SQL statement, whatever the number of endpoints."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest

from service.app import create_app
from service.settings import Settings
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender
from tests.support.tcp_proxy import TcpProxy


@pytest.fixture
async def proxy(database_url: str):
    parts = urlsplit(database_url)
    if parts.hostname:
        proxy = TcpProxy(parts.hostname, parts.port or 5432)
    else:  # the embedded Postgres listens on a Unix socket
        socket_dir = dict(p.split("=", 1) for p in parts.query.split("&"))["host"]
        proxy = TcpProxy("", upstream_unix=f"{socket_dir}/.s.PGSQL.5432")
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def counted(aiohttp_client, database_url, proxy, make_key):
    parts = urlsplit(database_url)
    user = parts.username or "postgres"
    proxied = urlunsplit(("postgresql", f"{user}@127.0.0.1:{proxy.port}", parts.path,
                          "sslmode=disable", ""))
    client = await aiohttp_client(create_app(Settings(database_url=proxied, db_pool_min=1,
                                                      db_pool_max=4)))
    api = Api(client, await make_key("acme", "admin"))
    await load_catalog(api, "movies", [{"id": str(i), "title": f"Movie {i}"} for i in range(300)])
    await put_recommender(api, "movies", "movies", ("Title", "title"))
    return api


@pytest.mark.parametrize("endpoints", [1, 10, 100, 1000])
async def test_one_statement_per_transform(counted: Api, proxy: TcpProxy, endpoints: int):
    warmup = {"Endpoints": {"w": {"RecommendationItems": ["0"]}}}
    assert (await counted.post("/v1/recommenders/movies/transform", warmup))[0] == 200
    event = {"Endpoints": {f"e{n}": {"RecommendationItems": [str((n * 7 + k) % 300) for k in range(5)]
                                     + ["unknown"]} for n in range(endpoints)}}
    before = proxy.statements
    status, answer, _ = await counted.post("/v1/recommenders/movies/transform", event)
    assert status == 200 and len(answer) == endpoints
    print(f"{endpoints} endpoints: {proxy.statements - before} statement(s)")
    assert proxy.statements - before == 1
