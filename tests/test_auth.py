"""Keys: hashed at rest, scoped, and blind to other tenants' catalogs and recommenders."""

from __future__ import annotations

import subprocess
import sys

import asyncpg

from service.web.auth import hash_key
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender


class TestTenantIsolation:
    """Another tenant's catalog or recommender does not exist for a key (404, not 403)."""

    async def test_other_tenants_things_are_not_found(self, admin: Api, make_key):
        await load_catalog(admin, "movies", [{"id": "1", "title": "One"}])
        await put_recommender(admin, "recs", "movies", ("Title", "title"))
        other = Api(admin.client, await make_key("globex", "admin"))
        for path in ("/v1/catalogs/movies", "/v1/catalogs/movies/items/1",
                     "/v1/recommenders/recs"):
            status, problem, _ = await other.get(path)
            assert status == 404, path
            assert "globex" not in problem["detail"] and "acme" not in problem["detail"]
        status, _, _ = await other.post("/v1/recommenders/recs/transform", {"Endpoints": {}})
        assert status == 404

    async def test_same_names_in_two_tenants_stay_apart(self, admin: Api, make_key):
        other = Api(admin.client, await make_key("globex", "admin"))
        await load_catalog(admin, "movies", [{"id": "1", "title": "Acme's"}])
        await load_catalog(other, "movies", [{"id": "1", "title": "Globex's"}])
        _, mine, _ = await admin.get("/v1/catalogs/movies/items/1")
        _, theirs, _ = await other.get("/v1/catalogs/movies/items/1")
        assert (mine["title"], theirs["title"]) == ("Acme's", "Globex's")

    async def test_recommender_cannot_use_another_tenants_catalog(self, admin: Api, make_key):
        await load_catalog(admin, "movies", [{"id": "1", "title": "One"}])
        other = Api(admin.client, await make_key("globex", "admin"))
        status, problem, _ = await other.put(
            "/v1/recommenders/r", {"catalog": "movies",
                                   "attributes": [{"name": "T", "field": "title"}]})
        assert status == 422 and problem["field"] == "catalog"


class TestScopes:
    """Each route asks for its scope; admin holds them all."""

    async def test_read_key_cannot_write(self, admin: Api, make_key):
        reader = Api(admin.client, await make_key("acme", "catalog:read"))
        status, _, _ = await reader.put("/v1/catalogs/c", {})
        assert status == 403
        await load_catalog(admin, "c", [])
        status, _, _ = await reader.get("/v1/catalogs/c")
        assert status == 200

    async def test_writer_cannot_define_recommenders(self, admin: Api, make_key):
        writer = Api(admin.client, await make_key("acme", "catalog:write"))
        await load_catalog(writer, "c", [])
        status, _, _ = await writer.put("/v1/recommenders/r", {
            "catalog": "c", "attributes": [{"name": "T", "field": "title"}]})
        assert status == 403


class TestKeysCommand:
    """`catalog-enricher keys create` prints the key once; only its hash is stored."""

    async def test_create_tenant_and_key(self, subprocess_env, database_url):
        def cli(*args):
            return subprocess.run([sys.executable, "-m", "service", *args], env=subprocess_env,
                                  capture_output=True, text=True, timeout=60, check=False)

        assert cli("tenants", "create", "initech").returncode == 0
        result = cli("keys", "create", "--tenant", "initech", "--scope", "transform",
                     "--scope", "catalog:read")
        assert result.returncode == 0, result.stderr
        key = result.stdout.strip()
        assert key.startswith("ce_") and len(key.splitlines()) == 1
        assert key not in result.stderr
        conn = await asyncpg.connect(database_url)
        try:
            row = await conn.fetchrow("SELECT key_hash, scopes, prefix FROM api_keys")
            dump = await conn.fetchval("SELECT string_agg(t::text, ' ') FROM api_keys t")
        finally:
            await conn.close()
        assert bytes(row["key_hash"]) == hash_key(key)
        assert row["scopes"] == ["transform", "catalog:read"]
        assert key not in dump

        unknown = cli("keys", "create", "--tenant", "nobody", "--scope", "transform")
        assert unknown.returncode == 1 and "nobody" in unknown.stderr
        bad_scope = cli("keys", "create", "--tenant", "initech", "--scope", "root")
        assert bad_scope.returncode == 2 and "root" in bad_scope.stderr
        duplicate = cli("tenants", "create", "initech")
        assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
