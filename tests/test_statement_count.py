"""A transform issues exactly one SQL statement, whatever the number of endpoints."""

from __future__ import annotations

import pytest

from service.runtime.settings import Settings
from service.web.app import create_app
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender
from tests.support.tcp_proxy import TcpProxy, url_through


@pytest.fixture
async def counted(aiohttp_client, database_url, proxy, make_key):
    proxied = url_through(database_url, proxy)
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
