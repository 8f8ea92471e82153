"""The OpenAPI document: it matches the route table exactly, it is a valid OpenAPI 3.1 document, and
a live server answers every operation as the document says (schemathesis, a bounded run)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.runtime.settings import Settings
from service.web.app import create_app
from service.web.handlers.openapi import OPENAPI_PATH
from tests.conftest import KeyMaker
from tests.support.databases import create_database, drop_database, run, with_database

HTTP_METHODS = ("get", "put", "post", "patch", "delete")
ROOT = Path(__file__).resolve().parents[1]


def documented_operations() -> dict[tuple[str, str], str]:
    """(METHOD, path) -> operationId, from service/web/openapi.json."""
    document = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    return {
        (method.upper(), path): operation["operationId"]
        for path, entry in document["paths"].items()
        for method, operation in entry.items() if method in HTTP_METHODS
    }


def routed_operations() -> dict[tuple[str, str], str]:
    """(METHOD, path) -> route name, from the app's route table (HEAD is implied by GET)."""
    app = create_app(Settings(database_url="postgresql://unused@127.0.0.1/unused"))
    return {
        (route.method, route.resource.canonical): route.name
        for route in app.router.routes() if route.method != "HEAD"
    }


class TestDocumentMatchesRoutes:
    """Every route is documented under its name, and the document names no other route."""

    def test_no_route_missing_from_the_document(self):
        documented = documented_operations()
        missing = sorted(f"{m} {p} (name {n})" for (m, p), n in routed_operations().items()
                         if (m, p) not in documented)
        assert not missing, (
            "routes missing from service/web/openapi.json; add an operation under `paths` with "
            "`operationId` set to the route name:\n  " + "\n  ".join(missing))

    def test_no_documented_operation_without_a_route(self):
        routed = routed_operations()
        stale = sorted(f"{m} {p}" for (m, p) in documented_operations() if (m, p) not in routed)
        assert not stale, "service/web/openapi.json documents routes that do not exist:\n  " + \
            "\n  ".join(stale)

    def test_operation_ids_are_the_route_names(self):
        routed = routed_operations()
        wrong = sorted(f"{m} {p}: operationId {n!r}, route name {routed[(m, p)]!r}"
                       for (m, p), n in documented_operations().items()
                       if (m, p) in routed and routed[(m, p)] != n)
        assert not wrong, "\n".join(wrong)


class TestDocument:
    """The document is valid OpenAPI 3.1 and is what GET /openapi.json serves."""

    def test_valid_openapi_31(self):
        document = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
        assert document["openapi"].startswith("3.1.")
        validate(document)

    async def test_served_as_stored(self, client):
        response = await client.get("/openapi.json")
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.read() == OPENAPI_PATH.read_bytes()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(pg_server_url: str, template_database: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """`catalog-enricher serve` as its own process on 127.0.0.1, on a database of its own, with a
    catalog, items and a recommender; yields (base URL, admin key)."""
    name = run(create_database(pg_server_url, template=template_database))
    database_url = with_database(pg_server_url, name)
    key = run(KeyMaker(database_url)("acme", "admin"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRICHER_")}
    env.update(DATABASE_URL=database_url, ENRICHER_ACCESS_LOG="false",
               ENRICHER_LOG_LEVEL="WARNING", ENRICHER_DB_POOL_MIN="1")
    log = tmp_path_factory.mktemp("live-server") / "server.log"
    with log.open("wb") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port",
             str(port)], cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(base, server, log)
        _seed(base, key)
        yield base, key
    finally:
        server.terminate()
        server.wait(timeout=30)
        run(drop_database(pg_server_url, name))


def _wait_until_healthy(base: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited ({server.returncode}):\n{log.read_text()}")
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.05)  # the process is still starting; nothing to wait on but the port
    pytest.fail(f"the server did not answer within 30 s:\n{log.read_text()}")


def _seed(base: str, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    calls = [
        ("PUT", "/v1/catalogs/movies", {"description": "Films"}),
        ("PUT", "/v1/catalogs/movies/items/1815",
         {"title": "Fleabag", "genre": "Comedy", "price": {"amount": "19.99", "currency": "USD"},
          "attributes": {"style": "dark"}, "locales": {"de_DE": {"title": "Fleabag"}}}),
        ("PUT", "/v1/catalogs/movies/items/2001", {"title": "2001: A Space Odyssey"}),
        ("PUT", "/v1/recommenders/movies",
         {"catalog": "movies", "attributes": [{"name": "Title", "field": "title"}]}),
    ]
    for method, path, body in calls:
        response = requests.request(method, base + path, json=body, headers=headers, timeout=10)
        assert response.status_code in (200, 201), response.text


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx, value) -> bytes:
    """The batch route's body: the document says a string of lines; a negative case may make it
    any JSON value, sent as one line."""
    return value.encode() if isinstance(value, str) else json.dumps(value).encode() + b"\n"


# The stored document, read at collection so each operation is a test of its own.
STORED = schemathesis.openapi.from_path(OPENAPI_PATH)
SEEDED = {"catalog": "movies", "recommender": "movies", "item_id": "1815"}
VARIANTS = {
    # Valid input aimed at the seeded catalog, item and recommender: the paths that do work.
    "seeded": (schemathesis.GenerationMode.POSITIVE, True),
    # Valid input anywhere (mostly unknown names: 404s must follow the document too).
    "positive": (schemathesis.GenerationMode.POSITIVE, False),
    # Input that breaks the document: every refusal must be a documented 4xx.
    "negative": (schemathesis.GenerationMode.NEGATIVE, False),
}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]


def _cases() -> list[tuple[str, str]]:
    """(operation, variant) pairs that can generate anything: an operation without input has
    nothing to make invalid, and one without path parameters nothing to aim at seeded data."""
    cases = []
    for result in STORED.get_all_operations():
        operation = result.ok()
        takes_input = any((operation.path_parameters, operation.query, operation.headers,
                           operation.body))
        cases.append((operation.label, "positive"))
        if takes_input:
            cases.append((operation.label, "negative"))
        if operation.path_parameters:
            cases.append((operation.label, "seeded"))
    # Reads first and deletes last, so the seeded item is still there for the other operations.
    order = {"GET": 0, "PUT": 1, "POST": 2, "PATCH": 3, "DELETE": 4}
    return sorted(cases, key=lambda c: (order[c[0].split(" ")[0]], c))


# A valid X-Deadline-Ms of a few milliseconds is spent before Postgres is asked, so an uncached
# key or recommender is then a (documented) 503, which `not_a_server_error` counts as a crash; the
# short-budget answers are tested in tests/test_deadlines.py and tests/test_faults.py. Here valid
# budgets are raised to one no lookup on a busy CI machine can run out of; invalid ones stay.
UNHURRIED_DEADLINE_MS = 5000


def _unhurried(case: schemathesis.Case) -> None:
    budget = (case.headers or {}).get("X-Deadline-Ms")
    if isinstance(budget, str) and budget.strip().isdigit() and \
            1 <= int(budget.strip()) < UNHURRIED_DEADLINE_MS:
        case.headers["X-Deadline-Ms"] = str(UNHURRIED_DEADLINE_MS)


@pytest.mark.slow
@pytest.mark.parametrize(("label", "variant"), _cases())
def test_live_server_follows_the_document(label: str, variant: str, live_server):
    """No 5xx, and every answer (status, content type, headers, body) is one the document allows;
    a bounded number of generated requests per operation."""
    base, key = live_server
    operation = STORED.find_operation_by_label(label)
    mode, seeded = VARIANTS[variant]
    names = {p.name for p in operation.path_parameters}
    fixed = {k: v for k, v in SEEDED.items() if k in names} if seeded else None
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed or None)

    @given(case=strategy)
    @settings(max_examples=10, deadline=None, database=None, derandomize=True,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    def check(case):
        _unhurried(case)
        case.call_and_validate(base_url=base, headers={"Authorization": f"Bearer {key}"},
                               checks=CHECKS, timeout=10)

    check()
