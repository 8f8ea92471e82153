"""Key lifecycle with two real `catalog-enricher serve` processes on one database: a key revoked
or deleted through one (or the CLI) is refused by both within a second, an expired key is a 401,
a rotation leaves both keys working until the grace ends and then only the new one; and no list,
log or error of the whole run holds a key or its hash.

Key caches are kept for an hour here (ENRICHER_AUTH_CACHE_SECONDS), so whatever is refused within
a second is refused because of the invalidation notification, not a cache running out. The tests
share the two servers (starting a pair costs seconds) and keep apart by tenant; the last test
stops them and reads everything they and the CLI logged.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
import requests

from service.key_rules import hash_key
from tests.support.databases import create_database, drop_database, run, with_database
from tests.support.service_processes import ServiceProcess, run_cli, service_env

# One worker runs the whole module (`make test` runs pytest-xdist with --dist loadfile): its
# last test reads what the others logged.
pytestmark = [pytest.mark.timing, pytest.mark.slow]

WITHIN = 1.0  # the promise: refused everywhere within a second
PROBE = "/v1/catalogs"  # cheap, and needs a key (catalog:read)
GRACE = 8  # seconds
CLOCK = 0.05  # the database's clock and ours, as their timestamps are rounded


@dataclass
class Run:
    """The two servers, the CLI's environment, and every key this run created."""

    a: ServiceProcess
    b: ServiceProcess
    env: dict[str, str]
    cli_log: Path
    keys: list[str] = field(default_factory=list)

    def cli(self, *args: str):
        return run_cli(self.env, *args, log=self.cli_log)

    def new_tenant(self, name: str) -> None:
        done = self.cli("tenants", "create", name)
        assert done.returncode == 0, done.stderr

    def cli_key(self, tenant: str, *extra: str, scopes: tuple[str, ...] = ("catalog:read",)) -> str:
        flags = [arg for scope in scopes for arg in ("--scope", scope)]
        done = self.cli("keys", "create", "--tenant", tenant, *flags, *extra)
        assert done.returncode == 0, done.stderr
        key = done.stdout.strip()
        self.keys.append(key)
        return key


@pytest.fixture(scope="module")
def pair(pg_server_url: str, template_database: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    name = run(create_database(pg_server_url, template=template_database))
    folder = tmp_path_factory.mktemp("keys-across-processes")
    env = service_env(with_database(pg_server_url, name), ENRICHER_AUTH_CACHE_SECONDS="3600",
                      ENRICHER_KEY_USAGE_FLUSH_SECONDS="0.5", ENRICHER_LOG_LEVEL="INFO")
    a = ServiceProcess(env, folder / "a.log")
    b = ServiceProcess(env, folder / "b.log")
    try:
        a.wait_ready()
        b.wait_ready()
        yield Run(a, b, env, folder / "cli.log")
    finally:
        a.stop()
        b.stop()
        run(drop_database(pg_server_url, name))


def call(server: ServiceProcess, key: str, method: str = "GET", path: str = PROBE,
         body: object = None) -> requests.Response:
    return requests.request(method, server.base_url + path, json=body, timeout=10,
                            headers={"Authorization": f"Bearer {key}"})


def status(server: ServiceProcess, key: str) -> int:
    return call(server, key).status_code


def within(seconds: float, check: Callable[[], bool]) -> float:
    """How long until `check` holds (polled across processes); fails past `seconds`."""
    started = time.monotonic()
    while not check():
        elapsed = time.monotonic() - started
        assert elapsed < seconds, f"not seen within {seconds} s"
        time.sleep(0.02)  # paces the poll
    return time.monotonic() - started


class TestRevocation:
    """A key revoked anywhere is refused by every process within a second."""

    def test_revoked_with_the_cli_is_refused_by_both(self, pair: Run):
        pair.new_tenant("revoked-cli")
        key = pair.cli_key("revoked-cli")
        assert (status(pair.a, key), status(pair.b, key)) == (200, 200)  # cached on both now
        done = pair.cli("keys", "revoke", "--tenant", "revoked-cli", key[:11])
        assert done.returncode == 0, done.stderr
        took = within(WITHIN, lambda: status(pair.a, key) == 401 and status(pair.b, key) == 401)
        print(f"refused by both {took:.3f} s after the revoke")
        answer = call(pair.b, key)
        assert answer.headers["Content-Type"].startswith("application/problem+json")
        assert answer.json()["detail"] == "the API key has been revoked"
        assert key not in answer.text
        again = pair.cli("keys", "revoke", "--tenant", "revoked-cli", key[:11])
        assert again.returncode == 0 and "already revoked" in again.stderr

    def test_deleted_over_http_on_one_is_refused_by_the_other(self, pair: Run):
        pair.new_tenant("deleted-http")
        admin = pair.cli_key("deleted-http", scopes=("admin",))
        made = call(pair.a, admin, "POST", "/v1/keys",
                    {"scopes": ["catalog:read"], "label": "to delete"})
        assert made.status_code == 201, made.text
        key, prefix = made.json()["key"], made.json()["prefix"]
        pair.keys.append(key)
        assert key.startswith(prefix) and made.headers["Cache-Control"] == "no-store"
        assert status(pair.b, key) == 200
        assert call(pair.a, admin, "DELETE", f"/v1/keys/{prefix}").status_code == 204
        assert status(pair.a, key) == 401  # the process that deleted it: at once
        took = within(WITHIN, lambda: status(pair.b, key) == 401)
        print(f"refused by the other process {took:.3f} s after the DELETE")

    def test_another_tenants_prefix_is_not_found(self, pair: Run):
        pair.new_tenant("owner")
        pair.new_tenant("stranger")
        key = pair.cli_key("owner")
        stranger = pair.cli_key("stranger", scopes=("admin",))
        for method, path in (("DELETE", f"/v1/keys/{key[:11]}"),
                             ("POST", f"/v1/keys/{key[:11]}:rotate")):
            assert call(pair.b, stranger, method, path).status_code == 404
        assert status(pair.a, key) == 200
        wrong_tenant = pair.cli("keys", "revoke", "--tenant", "stranger", key[:11])
        assert wrong_tenant.returncode == 1 and "no key" in wrong_tenant.stderr


class TestExpiry:
    """A key past its `--expires-in` is a 401 on every process."""

    def test_expired_key_is_refused(self, pair: Run):
        pair.new_tenant("expiring")
        key = pair.cli_key("expiring", "--expires-in", "2s")
        assert (status(pair.a, key), status(pair.b, key)) == (200, 200)
        within(2 + WITHIN, lambda: status(pair.a, key) == 401 and status(pair.b, key) == 401)
        assert call(pair.a, key).json()["detail"] == "the API key has expired"
        listed = json.loads(pair.cli("keys", "list", "--tenant", "expiring", "--json").stdout)
        assert [k["state"] for k in listed] == ["expired"]


class TestRotation:
    """`keys rotate` prints a new key; both work until the grace ends, then only the new one."""

    def test_rotate_with_a_grace(self, pair: Run):
        pair.new_tenant("rotating")
        old = pair.cli_key("rotating", "--label", "lambda shim", scopes=("transform",
                                                                         "catalog:read"))
        assert status(pair.a, old) == 200
        before = time.time()
        done = pair.cli("keys", "rotate", "--tenant", "rotating", old[:11], "--grace", f"{GRACE}s")
        after = time.time()
        assert done.returncode == 0, done.stderr
        new = done.stdout.strip()
        pair.keys.append(new)
        assert new.startswith("ce_") and new != old and new not in done.stderr
        listed = {k["prefix"]: k for k in
                  json.loads(pair.cli("keys", "list", "--tenant", "rotating", "--json").stdout)}
        assert listed[new[:11]]["scopes"] == ["transform", "catalog:read"]
        assert listed[new[:11]]["label"] == "lambda shim"
        assert listed[old[:11]]["replaced_by"] == new[:11]
        # The old key expires GRACE seconds after the rotation, whenever the CLI got to it.
        expires = datetime.fromisoformat(listed[old[:11]]["expires_at"]).timestamp()
        assert before + GRACE - CLOCK <= expires <= after + GRACE + CLOCK
        for server in (pair.a, pair.b):
            assert status(server, new) == 200
            # Accepted until it expires: a refusal answered before that is wrong.
            refused = status(server, old) == 401
            assert not refused or time.time() >= expires, "refused within its grace"
        twice = pair.cli("keys", "rotate", "--tenant", "rotating", old[:11])
        assert twice.returncode == 1 and f"already rotated to {new[:11]}" in twice.stderr
        within(max(0.0, expires - time.time()) + WITHIN,
               lambda: status(pair.a, old) == 401 and status(pair.b, old) == 401)
        assert status(pair.a, new) == 200 and status(pair.b, new) == 200

    def test_rotate_over_http(self, pair: Run):
        pair.new_tenant("rotating-http")
        admin = pair.cli_key("rotating-http", scopes=("admin",))
        old = pair.cli_key("rotating-http", scopes=("transform",))
        answer = call(pair.a, admin, "POST", f"/v1/keys/{old[:11]}:rotate", {"grace": "0s"})
        assert answer.status_code == 201, answer.text
        new = answer.json()["key"]
        pair.keys.append(new)
        assert answer.json()["replaces"]["prefix"] == old[:11]
        assert answer.json()["scopes"] == ["transform"]
        within(WITHIN, lambda: call(pair.b, old, "POST", "/v1/transform", {}).status_code == 401)
        # The new key is in: its refusal is about the event (no recommender), not the key.
        assert call(pair.b, new, "POST", "/v1/transform", {}).status_code != 401


class TestListing:
    """Lists show prefixes, scopes, labels and times; never a key or its hash."""

    def test_cli_and_http_lists(self, pair: Run):
        pair.new_tenant("listed")
        admin = pair.cli_key("listed", scopes=("admin",))
        reader = pair.cli_key("listed", "--label", "reports", "--expires-in", "90d")
        assert status(pair.a, reader) == 200
        table = pair.cli("keys", "list", "--tenant", "listed")
        assert table.returncode == 0, table.stderr
        assert table.stdout.splitlines()[0].split()[:3] == ["PREFIX", "STATE", "SCOPES"]
        assert reader[:11] in table.stdout and "reports" in table.stdout
        as_json = json.loads(pair.cli("keys", "list", "--tenant", "listed", "--json").stdout)
        listed = {k["prefix"]: k for k in as_json}
        assert set(listed) == {admin[:11], reader[:11]}
        assert listed[reader[:11]]["expires_at"] is not None
        over_http = call(pair.b, admin, "GET", "/v1/keys")
        assert over_http.status_code == 200
        assert {k["prefix"] for k in over_http.json()["keys"]} == set(listed)
        for shown in (table.stdout, json.dumps(as_json), over_http.text):
            for key in (admin, reader):
                for secret in secrets_of(key):
                    assert secret not in shown

        def last_used_written() -> bool:
            answer = call(pair.b, admin, "GET", "/v1/keys").json()["keys"]
            return any(k["prefix"] == reader[:11] and k["last_used_at"] for k in answer)

        within(5, last_used_written)  # batched: written by the flush, not by the request

    def test_tenants_list_and_limit(self, pair: Run):
        pair.new_tenant("limited-listed")
        pair.cli_key("limited-listed")
        assert pair.cli("tenants", "limit", "limited-listed", "--rps", "20", "--burst",
                        "5").returncode == 0
        tenants = {t["name"]: t for t in
                   json.loads(pair.cli("tenants", "list", "--json").stdout)}
        assert tenants["limited-listed"]["rate_limit"] == {"rps": 20, "burst": 5}
        assert tenants["limited-listed"]["active_keys"] == 1
        table = pair.cli("tenants", "list").stdout
        assert "20 rps + 5 burst" in table
        assert pair.cli("tenants", "limit", "limited-listed", "--clear").returncode == 0
        tenants = {t["name"]: t for t in
                   json.loads(pair.cli("tenants", "list", "--json").stdout)}
        assert tenants["limited-listed"]["rate_limit"] is None
        unknown = pair.cli("tenants", "limit", "nobody", "--rps", "5")
        assert unknown.returncode == 1 and "nobody" in unknown.stderr


def secrets_of(key: str) -> list[str]:
    """The key and the forms its stored hash could take in a text."""
    digest = hash_key(key)
    return [key, digest.hex(), base64.b64encode(digest).decode(), digest.hex().upper()]


def exercise_every_audited_action(pair: Run) -> None:
    """Each action the audit log must record, done here so the last test needs no other test to
    have run before it (alone, or with the module split differently, it still checks them all)."""
    pair.new_tenant("audited")
    assert pair.cli("tenants", "limit", "audited", "--rps", "5").returncode == 0
    assert pair.cli("tenants", "limit", "nobody-audited", "--rps", "5").returncode == 1
    admin = pair.cli_key("audited", scopes=("admin",))
    revoked = pair.cli_key("audited")
    assert pair.cli("keys", "revoke", "--tenant", "audited", revoked[:11]).returncode == 0
    rotated = pair.cli_key("audited")
    done = pair.cli("keys", "rotate", "--tenant", "audited", rotated[:11], "--grace", "0s")
    assert done.returncode == 0, done.stderr
    pair.keys.append(done.stdout.strip())
    made = call(pair.a, admin, "POST", "/v1/keys", {"scopes": ["catalog:read"]})
    assert made.status_code == 201, made.text
    pair.keys.append(made.json()["key"])
    prefix = made.json()["prefix"]
    rotated_over_http = call(pair.a, admin, "POST", f"/v1/keys/{prefix}:rotate", {"grace": "0s"})
    assert rotated_over_http.status_code == 201, rotated_over_http.text
    pair.keys.append(rotated_over_http.json()["key"])
    fresh = rotated_over_http.json()["prefix"]
    assert call(pair.a, admin, "DELETE", f"/v1/keys/{fresh}").status_code == 204
    assert call(pair.a, admin, "DELETE", f"/v1/keys/{revoked[:11]}").status_code == 204
    unknown = "ce_" + "x" * 8  # no such key in this tenant: refused, and audited as such
    assert call(pair.a, admin, "DELETE", f"/v1/keys/{unknown}").status_code == 404


def test_whole_run_logs_hold_no_secret(pair: Run):
    """Runs last: does every audited action itself, stops both servers (so every buffered line
    is written), then greps everything they and the CLI logged in this module for every key
    created; the audit lines are there."""
    exercise_every_audited_action(pair)
    pair.a.stop()
    pair.b.stop()
    logs = pair.a.logs() + pair.b.logs() + pair.cli_log.read_text(encoding="utf-8")
    for key in pair.keys:
        for secret in secrets_of(key):
            assert secret not in logs, "a key or its hash reached the logs"
    audits = [json.loads(line) for line in logs.splitlines()
              if line.startswith("{") and '"audit":true' in line.replace(" ", "")]
    actions = {(a["via"], a["action"], a["outcome"]) for a in audits}
    assert {("cli", "key.create", "ok"), ("cli", "key.revoke", "ok"), ("cli", "key.rotate", "ok"),
            ("cli", "tenant.create", "ok"), ("cli", "tenant.limit", "ok"),
            ("cli", "tenant.limit", "refused"), ("http", "key.create", "ok"),
            ("http", "key.revoke", "ok"), ("http", "key.rotate", "ok"),
            ("http", "key.revoke", "refused")} <= actions
    http_create = next(a for a in audits if a["via"] == "http" and a["action"] == "key.create"
                       and a["tenant"] == "audited")
    assert http_create["key"].startswith("ce_")
    assert len(http_create["key"]) == 11 and http_create["target"].startswith("ce_")
    assert http_create["status"] == 201 and http_create["request_id"]
