"""Many Pinpoint projects, one shim: `POST /v1/transform` picks the recommender by ApplicationId."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from service import lambda_shim
from service.runtime.settings import Settings
from service.storage.db import connect
from service.storage.migrations import apply_migrations, discover
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender
from tests.support.databases import create_database, drop_database, with_database
from tests.support.lambda_context import LambdaContext

PROJECT_A = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
PROJECT_B = "0f9e8d7c6b5a49382716f5e4d3c2b1a0"


def event(application_id: str | None, *items: str) -> dict:
    body = {"Endpoints": {"e1": {"ChannelType": "EMAIL", "RecommendationItems": list(items)}}}
    if application_id is not None:
        body["ApplicationId"] = application_id
    return body


@pytest.fixture
async def projects(admin: Api) -> Api:
    """Two catalogs, two recommenders with different attributes, each bound to one project."""
    await load_catalog(admin, "movies", [{"id": "1", "title": "Fleabag", "genre": "Comedy"}])
    await load_catalog(admin, "shop", [{"id": "1", "title": "Boots",
                                        "price": {"amount": "19.99", "currency": "USD"}}])
    await put_recommender(admin, "movies", "movies", ("Title", "title"), ("Genre", "genre"),
                          application_ids=[PROJECT_A])
    status, body, _ = await admin.put("/v1/recommenders/shop", {
        "catalog": "shop", "application_ids": [PROJECT_B],
        "attributes": [{"name": "Name", "field": "title"},
                       {"name": "Price", "field": "price", "format": "currency"}]})
    assert status == 201, body
    return admin


@pytest.fixture
def shim_env(monkeypatch, projects: Api) -> Iterator[None]:
    """The shim pointed at the test server's /v1/transform with the tenant's transform key."""
    server = projects.client.server
    monkeypatch.setenv("ENRICHER_URL", f"http://127.0.0.1:{server.port}/v1/transform")
    yield
    lambda_shim._close()


class TestOneShimManyProjects:
    """Two projects bound to two recommenders share one shim and get their own attributes."""

    async def test_each_project_gets_its_recommender(self, projects: Api, make_key, shim_env,
                                                     monkeypatch):
        monkeypatch.setenv("ENRICHER_API_KEY", await make_key("acme", "transform"))
        # The shim blocks (stdlib http.client), as it does in Lambda: run it off the loop.
        from_a = await asyncio.to_thread(lambda_shim.handler, event(PROJECT_A, "1"),
                                         LambdaContext())
        from_b = await asyncio.to_thread(lambda_shim.handler, event(PROJECT_B, "1"),
                                         LambdaContext())
        assert from_a["e1"]["Recommendations"] == {"Title": ["Fleabag"], "Genre": ["Comedy"]}
        assert from_b["e1"]["Recommendations"] == {"Name": ["Boots"], "Price": ["$19.99"]}
        assert from_a["e1"]["ChannelType"] == "EMAIL"

    async def test_unknown_application_is_a_404_naming_it(self, projects: Api):
        status, problem, _ = await projects.post("/v1/transform", event("f" * 32, "1"))
        assert (status, problem["field"]) == (404, "ApplicationId")
        assert "f" * 32 in problem["detail"]

    async def test_shim_reports_the_unknown_application(self, projects: Api, make_key, shim_env,
                                                        monkeypatch):
        monkeypatch.setenv("ENRICHER_API_KEY", await make_key("acme", "transform"))
        with pytest.raises(lambda_shim.EnricherError, match="HTTP 404.*" + "e" * 32):
            await asyncio.to_thread(lambda_shim.handler, event("e" * 32, "1"), LambdaContext())

    @pytest.mark.parametrize(("application_id", "status"), [(None, 422), (42, 422),
                                                            ("bad id", 422)])
    async def test_missing_or_bad_application_id(self, projects: Api, application_id, status):
        got, problem, _ = await projects.post("/v1/transform", event(application_id, "1"))
        assert (got, problem["field"]) == (status, "ApplicationId")

    async def test_another_tenants_binding_is_not_found(self, projects: Api, make_key):
        other = Api(projects.client, await make_key("globex", "transform"))
        status, problem, _ = await other.post("/v1/transform", event(PROJECT_A, "1"))
        assert (status, problem["field"]) == (404, "ApplicationId")


class TestBindings:
    """One application ID picks at most one recommender in the whole deployment."""

    async def test_clash_is_a_409_naming_the_id_and_changes_nothing(self, projects: Api):
        status, before, _ = await projects.get("/v1/recommenders/shop")
        status, problem, _ = await projects.put("/v1/recommenders/shop", {
            "catalog": "shop", "application_ids": [PROJECT_B, PROJECT_A],
            "attributes": [{"name": "Changed", "field": "title"}]})
        assert status == 409
        assert problem["field"] == "application_ids[1]"
        assert PROJECT_A in problem["detail"]
        assert "'movies'" in problem["detail"]
        _, after, _ = await projects.get("/v1/recommenders/shop")
        assert after == before  # neither the attributes nor the bindings were written

    async def test_clash_with_another_tenant_names_no_recommender(self, projects: Api, make_key):
        other = Api(projects.client, await make_key("globex", "admin"))
        await load_catalog(other, "c", [])
        status, problem, _ = await other.put("/v1/recommenders/r", {
            "catalog": "c", "application_ids": [PROJECT_A],
            "attributes": [{"name": "T", "field": "title"}]})
        assert status == 409
        assert PROJECT_A in problem["detail"]
        assert "movies" not in problem["detail"]
        assert "acme" not in problem["detail"]
        assert (await other.get("/v1/recommenders/r"))[0] == 404

    async def test_concurrent_claims_one_wins(self, projects: Api):
        def claim(name: str):
            return projects.put(f"/v1/recommenders/{name}", {
                "catalog": "movies", "application_ids": ["c" * 32],
                "attributes": [{"name": "T", "field": "title"}]})

        results = await asyncio.gather(claim("first"), claim("second"))
        assert sorted(status for status, _, _ in results) == [201, 409]

    async def test_rebinding_moves_the_project_at_once(self, projects: Api):
        status, _, _ = await projects.post("/v1/transform", event(PROJECT_A, "1"))
        assert status == 200  # the binding is now cached in this process
        await put_recommender(projects, "movies", "movies", ("Title", "title"),
                              application_ids=[])
        status, _, _ = await projects.post("/v1/transform", event(PROJECT_A, "1"))
        assert status == 404
        await put_recommender(projects, "shop", "shop", ("Other", "title"),
                              application_ids=[PROJECT_B, PROJECT_A])
        _, answer, _ = await projects.post("/v1/transform", event(PROJECT_A, "1"))
        assert answer["e1"]["Recommendations"] == {"Other": ["Boots"]}
        _, shop, _ = await projects.get("/v1/recommenders/shop")
        assert shop["application_ids"] == [PROJECT_B, PROJECT_A]

    async def test_deleting_a_recommender_frees_its_ids(self, projects: Api):
        await projects.call("DELETE", "/v1/recommenders/movies")
        await put_recommender(projects, "shop", "shop", ("Name", "title"),
                              application_ids=[PROJECT_A])
        _, answer, _ = await projects.post("/v1/transform", event(PROJECT_A, "1"))
        assert answer["e1"]["Recommendations"] == {"Name": ["Boots"]}


class TestMigration:
    """Migration 0004 moves application IDs saved inside recommenders into the bindings table."""

    async def test_backfill(self, pg_server_url: str):
        name = await create_database(pg_server_url)
        try:
            conn = await connect(Settings(database_url=with_database(pg_server_url, name)))
            try:
                await apply_migrations(conn, [m for m in discover() if m.version < 4])
                tenant = await conn.fetchval("INSERT INTO tenants (name) VALUES ('t') RETURNING id")
                catalog = await conn.fetchval(
                    "INSERT INTO catalogs (tenant_id, name) VALUES ($1, 'c') RETURNING id", tenant)
                spec = {"catalog": "c", "attributes": [{"name": "T", "field": "title"}],
                        "missing_items": "skip", "recommendations_per_message": 5,
                        "locale": "en_US"}
                for recommender, ids in (("r1", ["x", "y"]), ("r2", ["y", "z"]), ("r3", None)):
                    stored = spec if ids is None else {**spec, "application_ids": ids}
                    await conn.execute(
                        "INSERT INTO recommenders (tenant_id, name, catalog_id, spec) "
                        "VALUES ($1, $2, $3, $4)", tenant, recommender, catalog, stored)
                await apply_migrations(conn)
                bound = await conn.fetch(
                    "SELECT b.application_id, r.name, b.position FROM recommender_applications b "
                    "JOIN recommenders r ON r.id = b.recommender_id ORDER BY 1")
                assert [tuple(row) for row in bound] == [("x", "r1", 0), ("y", "r1", 1),
                                                         ("z", "r2", 1)]
                assert not await conn.fetchval(
                    "SELECT bool_or(spec ? 'application_ids') FROM recommenders")
            finally:
                await conn.close()
        finally:
            await drop_database(pg_server_url, name)


async def test_a_project_whose_recommender_keeps_placeholders(projects: Api):
    """The event is read before its recommender is known; a policy other than `skip` still gets
    its answer (placeholders for the unknown item, in place)."""
    status, body, _ = await projects.put("/v1/recommenders/holes", {
        "catalog": "movies", "application_ids": ["project-holes"], "missing_items": "placeholder",
        "attributes": [{"name": "Title", "field": "title", "placeholder": "?"}]})
    assert status == 201, body
    event = {"ApplicationId": "project-holes",
             "Endpoints": {"e1": {"ChannelType": "EMAIL", "RecommendationItems": ["nope", "1"]}}}
    status, answer, _ = await projects.post("/v1/transform", event)
    assert status == 200, answer
    assert answer == {"e1": {"ChannelType": "EMAIL", "RecommendationItems": ["nope", "1"],
                             "Recommendations": {"Title": ["?", "Fleabag"]}}}
