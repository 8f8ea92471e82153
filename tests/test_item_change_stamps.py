"""Any content change takes a new version (ETag) and updated_at, even one made with plain SQL."""

from __future__ import annotations

import asyncpg

from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender


async def run_sql(database_url: str, statement: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


class TestWritesOutsideTheService:
    """SQL run by hand is seen by ETags and by the rendered values of the transform."""

    async def test_sql_update_takes_a_new_version(self, admin: Api, database_url: str):
        await load_catalog(admin, "movies", [{"id": "1", "title": "One"}])
        await put_recommender(admin, "movies", "movies", ("Title", "title"))
        event = {"Endpoints": {"e": {"RecommendationItems": ["1"]}}}
        _, first, headers = await admin.get("/v1/catalogs/movies/items/1")
        _, answer, _ = await admin.post("/v1/recommenders/movies/transform", event)
        assert answer["e"]["Recommendations"]["Title"] == ["One"]

        await run_sql(database_url, "UPDATE items SET title = 'Uno'")
        status, second, new_headers = await admin.get("/v1/catalogs/movies/items/1")
        assert (status, second["title"]) == (200, "Uno")
        assert new_headers["ETag"] != headers["ETag"]
        assert second["updated_at"] > first["updated_at"]
        _, answer, _ = await admin.post("/v1/recommenders/movies/transform", event)
        assert answer["e"]["Recommendations"]["Title"] == ["Uno"]

    async def test_sql_update_that_changes_nothing_keeps_the_version(self, admin: Api,
                                                                    database_url: str):
        await load_catalog(admin, "movies", [{"id": "1", "title": "One"}])
        _, _, headers = await admin.get("/v1/catalogs/movies/items/1")
        await run_sql(database_url, "UPDATE items SET title = title")
        _, _, again = await admin.get("/v1/catalogs/movies/items/1")
        assert again["ETag"] == headers["ETag"]
