"""The key routes through real HTTP (aiohttp's test client): what they accept and refuse, who may
use them, when a key's last use is written, and the audit line of every admin write."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging

import asyncpg
import pytest

from service.errors import ValidationFailed
from service.key_rules import hash_key, parse_duration, scopes_not_held
from service.runtime.settings import Settings
from service.web.app import create_app
from service.web.app_keys import KEY_USAGE, LISTENER
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender
from tests.support.metrics_reader import sample

pytestmark = pytest.mark.timing


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Last use is flushed by hand in the tests (KEY_USAGE.flush), never by the timer.
    return dataclasses.replace(settings, key_usage_interval=3600)


class TestCreateAndList:
    """POST shows the key once with its prefix; GET lists prefixes, never keys or hashes."""

    async def test_create_then_use_then_list(self, admin: Api):
        status, made, headers = await admin.post(
            "/v1/keys", {"scopes": ["transform", "catalog:read", "transform"], "label": "shim",
                         "expires_in": "90d"})
        assert status == 201, made
        assert headers["Cache-Control"] == "no-store"
        key = made["key"]
        assert key.startswith(made["prefix"]) and len(made["prefix"]) == 11
        assert made["scopes"] == ["transform", "catalog:read"] and made["label"] == "shim"
        assert made["state"] == "active" and made["expires_at"] and made["revoked_at"] is None
        reader = Api(admin.client, key)
        assert (await reader.get("/v1/catalogs"))[0] == 200
        assert (await reader.get("/v1/keys"))[0] == 403  # listing keys is for admin keys
        status, listed, _ = await admin.get("/v1/keys")
        assert status == 200
        assert made["prefix"] in {k["prefix"] for k in listed["keys"]}
        text = json.dumps(listed)
        assert key not in text and hash_key(key).hex() not in text
        assert "key" not in listed["keys"][0] and "key_hash" not in listed["keys"][0]

    async def test_pages(self, admin: Api):
        for _ in range(3):
            assert (await admin.post("/v1/keys", {"scopes": ["transform"]}))[0] == 201
        status, first, _ = await admin.get("/v1/keys?limit=2")
        assert status == 200 and len(first["keys"]) == 2 and first["next"]
        _, second, _ = await admin.get(first["next"])
        assert len(second["keys"]) == 2 and second["next"] is None  # 4 keys: the admin's too
        prefixes = [k["prefix"] for k in first["keys"] + second["keys"]]
        assert prefixes == sorted(prefixes) and len(set(prefixes)) == 4

    @pytest.mark.parametrize(("body", "field"), [
        ({}, "scopes"),
        ({"scopes": []}, "scopes"),
        ({"scopes": "admin"}, "scopes"),
        ({"scopes": ["root"]}, "scopes"),
        ({"scopes": ["transform"], "expires_in": "90"}, "expires_in"),
        ({"scopes": ["transform"], "expires_in": 90}, "expires_in"),
        ({"scopes": ["transform"], "expires_in": "0d"}, "expires_in"),
        ({"scopes": ["transform"], "expires_in": "9999d"}, "expires_in"),
        ({"scopes": ["transform"], "label": 7}, "label"),
        ({"scopes": ["transform"], "owner": "me"}, "owner"),
        ([], "body"),
    ])
    async def test_bad_bodies_name_the_field(self, admin: Api, body, field):
        status, problem, headers = await admin.post("/v1/keys", body)
        assert status == 422, problem
        assert problem["field"] == field
        assert headers["Content-Type"].startswith("application/problem+json")

    @pytest.mark.parametrize("path", ["/v1/keys?after=nope", "/v1/keys?limit=0",
                                      "/v1/keys?color=red"])
    async def test_bad_queries(self, admin: Api, path):
        status, problem, _ = await admin.get(path)
        assert status == 422 and problem["field"] in ("after", "limit", "color")

    async def test_only_admin_keys_manage_keys(self, admin: Api, make_key):
        writer = Api(admin.client, await make_key("acme", "catalog:write", "transform"))
        prefix = writer.key[:11]
        for method, path in (("GET", "/v1/keys"), ("POST", "/v1/keys"),
                             ("DELETE", f"/v1/keys/{prefix}"),
                             ("POST", f"/v1/keys/{prefix}:rotate")):
            status, problem, _ = await writer.call(method, path, {"scopes": ["transform"]})
            assert status == 403, (method, path)
            assert problem["field"] == "Authorization"


class TestRevokeAndRotate:
    """DELETE revokes (idempotently); rotate keeps scopes and label; both stay in the tenant."""

    async def test_delete_is_idempotent_and_refuses_at_once(self, admin: Api, make_key):
        key = await make_key("acme", "catalog:read")
        user = Api(admin.client, key)
        assert (await user.get("/v1/catalogs"))[0] == 200
        assert (await admin.delete(f"/v1/keys/{key[:11]}"))[0] == 204
        status, problem, headers = await user.get("/v1/catalogs")
        assert status == 401 and problem["detail"] == "the API key has been revoked"
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert (await admin.delete(f"/v1/keys/{key[:11]}"))[0] == 204
        assert (await admin.delete("/v1/keys/ce_AAAAAAAA"))[0] == 404
        status, problem, _ = await admin.delete("/v1/keys/not-a-prefix")
        assert status == 422 and problem["field"] == "prefix"
        _, listed, _ = await admin.get("/v1/keys")
        states = {k["prefix"]: k["state"] for k in listed["keys"]}
        assert states[key[:11]] == "revoked"

    async def test_revoke_and_zero_grace_rotate_hold_here_without_the_notification(
            self, admin: Api, make_key):
        # The NOTIFY may reach this process after the caller's next request: the process that
        # revoked must not wait for it. With its listener closed, only the handler can do it.
        await admin.client.app[LISTENER].close()
        revoked, rotated = await make_key("acme", "transform"), await make_key("acme", "transform")
        for key in (revoked, rotated):
            assert (await Api(admin.client, key).get("/v1/catalogs"))[0] != 401
        assert (await admin.delete(f"/v1/keys/{revoked[:11]}"))[0] == 204
        assert (await admin.post(f"/v1/keys/{rotated[:11]}:rotate", {"grace": "0s"}))[0] == 201
        for key in (revoked, rotated):
            assert (await Api(admin.client, key).get("/v1/catalogs"))[0] == 401, key[:11]

    async def test_rotate_keeps_scopes_and_label_and_refuses_twice(self, admin: Api):
        _, made, _ = await admin.post("/v1/keys", {"scopes": ["catalog:read"], "label": "bi"})
        status, rotated, headers = await admin.post(f"/v1/keys/{made['prefix']}:rotate")
        assert status == 201, rotated
        assert headers["Cache-Control"] == "no-store"
        assert rotated["scopes"] == ["catalog:read"] and rotated["label"] == "bi"
        assert rotated["replaces"]["replaced_by"] == rotated["prefix"]
        assert rotated["replaces"]["expires_at"] > rotated["created_at"]  # the 24 h default
        assert (await Api(admin.client, made["key"]).get("/v1/catalogs"))[0] == 200
        assert (await Api(admin.client, rotated["key"]).get("/v1/catalogs"))[0] == 200
        status, problem, _ = await admin.post(f"/v1/keys/{made['prefix']}:rotate")
        assert status == 409 and rotated["prefix"] in problem["detail"]

    @pytest.mark.parametrize(("body", "field"), [
        ({"grace": "soon"}, "grace"), ({"grace": "1w"}, "grace"), ({"expires_in": "-1d"},
                                                                   "expires_in"),
        ({"grace": "1h", "extra": 1}, "extra"), ("24h", "body"),
    ])
    async def test_rotate_bad_bodies(self, admin: Api, body, field):
        _, made, _ = await admin.post("/v1/keys", {"scopes": ["transform"]})
        status, problem, _ = await admin.post(f"/v1/keys/{made['prefix']}:rotate", body)
        assert status == 422 and problem["field"] == field

    async def test_revoked_key_cannot_be_rotated(self, admin: Api, make_key):
        key = await make_key("acme", "transform")
        await admin.delete(f"/v1/keys/{key[:11]}")
        status, problem, _ = await admin.post(f"/v1/keys/{key[:11]}:rotate", {"grace": "0s"})
        assert status == 409 and "revoked" in problem["detail"]

    async def test_another_tenants_key_does_not_exist(self, admin: Api, make_key):
        theirs = await make_key("globex", "transform")
        for method in ("DELETE", "POST"):
            path = f"/v1/keys/{theirs[:11]}" + (":rotate" if method == "POST" else "")
            status, problem, _ = await admin.call(method, path)
            assert status == 404, method
            assert "globex" not in problem["detail"]
        assert (await Api(admin.client, theirs).post("/v1/transform", {}))[0] != 401


class TestExpiry:
    """An expired key is a 401 with no query: the check runs on the cached key."""

    async def test_expires(self, admin: Api, database_url):
        _, made, _ = await admin.post("/v1/keys", {"scopes": ["catalog:read"],
                                                   "expires_in": "1s"})
        user = Api(admin.client, made["key"])
        assert (await user.get("/v1/catalogs"))[0] == 200
        conn = await asyncpg.connect(database_url)
        try:
            # Wait on Postgres' own clock until the key's end has passed.
            await conn.execute("SELECT pg_sleep(GREATEST(0, extract(epoch FROM expires_at - "
                               "now()))) FROM api_keys WHERE prefix = $1", made["prefix"])
        finally:
            await conn.close()
        status, problem, _ = await user.get("/v1/catalogs")
        assert status == 401 and problem["detail"] == "the API key has expired"


class TestLastUsed:
    """Uses are noted per request and written in one batch, without flushing key caches."""

    async def test_written_by_the_flush_not_the_request(self, admin: Api, make_key):
        key = await make_key("acme", "catalog:read")
        user = Api(admin.client, key)
        for _ in range(5):
            assert (await user.get("/v1/catalogs"))[0] == 200
        _, before, _ = await admin.get("/v1/keys")
        assert all(k["last_used_at"] is None for k in before["keys"])
        notified = sample(admin.client.app, "enricher_invalidation_notifications_total",
                          kind="keys")
        assert await admin.client.app[KEY_USAGE].flush() == 2  # the user's key and the admin's
        _, after, _ = await admin.get("/v1/keys")
        used = {k["prefix"]: k["last_used_at"] for k in after["keys"]}
        assert used[key[:11]] is not None
        # An absence, so a look of bounded length: a notification would have arrived by now.
        await asyncio.sleep(0.2)
        assert sample(admin.client.app, "enricher_invalidation_notifications_total",
                      kind="keys") == notified


class TestRules:
    """The rules the CLI and the routes share."""

    def test_a_key_never_grants_what_it_lacks(self):
        assert scopes_not_held(["catalog:read"], ["catalog:read", "catalog:write"]) == [
            "catalog:write"]
        assert scopes_not_held(["transform"], ["admin"]) == ["admin"]
        assert scopes_not_held(["admin"], ["admin", "transform", "catalog:write"]) == []

    @pytest.mark.parametrize(("text", "seconds"), [("45s", 45), ("30m", 1800), ("24h", 86_400),
                                                   ("90d", 7_776_000)])
    def test_durations(self, text, seconds):
        assert parse_duration(text, "f") == seconds

    @pytest.mark.parametrize("text", ["", "1", "d", "1.5h", "-1d", " 1d", "1D", "1w", "0s"])
    def test_bad_durations(self, text):
        with pytest.raises(ValidationFailed):
            parse_duration(text, "f")
        assert parse_duration("0s", "grace", allow_zero=True) == 0


class TestAudit:
    """One `service.audit` line per admin write, refusals included; never a secret."""

    async def test_lines_for_each_kind_of_admin_write(self, admin: Api, make_key, caplog):
        caplog.set_level(logging.INFO, logger="service.audit")
        await load_catalog(admin, "movies", [{"id": "1", "title": "One"}])
        await put_recommender(admin, "recs", "movies", ("Title", "title"))
        _, made, _ = await admin.post("/v1/keys", {"scopes": ["catalog:write"]})
        writer = Api(admin.client, made["key"])
        assert (await writer.delete("/v1/recommenders/recs"))[0] == 403  # lacks admin
        await admin.post(f"/v1/keys/{made['prefix']}:rotate", {"grace": "1h"})
        await admin.delete(f"/v1/keys/{made['prefix']}")
        await admin.delete("/v1/recommenders/recs")
        await admin.delete("/v1/catalogs/movies")
        assert (await admin.delete("/v1/catalogs/nothing"))[0] == 404
        lines = [r for r in caplog.records if r.name == "service.audit"]
        seen = [(r.action, r.target, r.outcome, r.status) for r in lines]
        assert ("catalog.put", "movies", "ok", 201) in seen
        assert ("recommender.put", "recs", "ok", 201) in seen
        assert ("key.create", made["prefix"], "ok", 201) in seen
        assert ("recommender.delete", "recs", "refused", 403) in seen
        assert ("key.rotate", made["prefix"], "ok", 201) in seen
        assert ("key.revoke", made["prefix"], "ok", 204) in seen
        assert ("recommender.delete", "recs", "ok", 204) in seen
        assert ("catalog.delete", "movies", "ok", 204) in seen
        assert ("catalog.delete", "nothing", "refused", 404) in seen
        refused = next(r for r in lines if r.status == 403)
        assert refused.key == made["prefix"] and refused.tenant == "acme"
        assert all(r.via == "http" and r.request_id for r in lines)
        text = caplog.text + " ".join(str(vars(r)) for r in lines)
        assert made["key"] not in text and admin.key not in text

    async def test_audit_ignores_the_log_level(self, settings, aiohttp_client, make_key, caplog):
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.WARNING)  # as ENRICHER_LOG_LEVEL=WARNING does (setup_logging)
        try:
            client = await aiohttp_client(create_app(settings))
            admin = Api(client, await make_key("acme", "admin"))
            await admin.put("/v1/catalogs/c", {})
        finally:
            root.setLevel(level)
        assert [r.action for r in caplog.records if r.name == "service.audit"] == ["catalog.put"]
        assert not [r for r in caplog.records if r.name == "service.requests"]  # filtered
