"""Fixtures: a real Postgres (the machine's, else an embedded one), a migrated template database,
a fresh database per test cloned from it, the app through aiohttp's test client, and keys."""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from service.runtime.settings import Settings
from service.storage import tenants as tenant_store
from service.storage.db import connect
from service.storage.migrations import apply_migrations
from service.web import auth
from service.web.app import create_app
from service.web.app_keys import SETTINGS
from tests.support.api import Api
from tests.support.databases import (
    can_connect,
    configured_url,
    create_database,
    drop_database,
    run,
    with_database,
)
from tests.support.service_test_server import ServiceTestServer

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Settle the collector before each test: collect, then freeze what survived.

    Tests run the service in this process, and many time it (deadlines, lags, timeouts). A test
    process holds some 240,000 objects that live as long as it does (every test module and the
    libraries they import); a full collection scanned them all, and under load that paused the
    process for 0.4-1.5 s in the middle of a timed answer. Frozen, they are never scanned again
    (gc.freeze, as the serving process does: service/runtime/gc_tuning.py), so a collection
    during a test scans only what tests made since; cyclic garbage is collected first, so
    nothing that was garbage is kept."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A Postgres server URL (maintenance database) the tests may create databases on."""
    url = configured_url()
    if run(can_connect(url)):
        yield url
        return
    # No Postgres here: run the suite on an embedded one, as a new user's machine would.
    from service.storage.embedded_postgres import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="ce-test-pg-") as folder, \
            embedded_postgres(Path(folder)) as embedded_url:
        yield embedded_url


@pytest.fixture(scope="session")
def template_database(pg_server_url: str) -> Iterator[str]:
    """A database migrated once per run; every test's database is a copy of it."""
    name = run(create_database(pg_server_url))

    async def migrate() -> None:
        conn = await connect(Settings(database_url=with_database(pg_server_url, name)))
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()

    run(migrate())
    yield name
    run(drop_database(pg_server_url, name))


@pytest.fixture
def database_url(pg_server_url: str, template_database: str) -> Iterator[str]:
    """A fresh, migrated database of this test's own."""
    name = run(create_database(pg_server_url, template=template_database))
    yield with_database(pg_server_url, name)
    run(drop_database(pg_server_url, name))


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, db_pool_min=1, db_pool_max=5)


@pytest.fixture
def embedded_data_dir() -> Iterator[Path]:
    """A data folder for the embedded Postgres, outside pytest's tmp_path.

    Run as root, pgserver starts Postgres as its own user and opens the folders above its data
    to others (chmod o+rx up to /). pytest makes /tmp/pytest-of-<user> private again (0700) each
    time a test process first asks for a tmp_path, so under xdist the other worker could shut
    Postgres out of its own data in the middle of initdb ("could not open global/pg_control:
    Permission denied"). A folder of its own under /tmp has no such neighbour."""
    folder = Path(tempfile.mkdtemp(prefix="catalog-enricher-embedded-"))
    try:
        yield folder / "data"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def aiohttp_client(aiohttp_client):
    """pytest-aiohttp's, serving the service's app (one create_app made) as `serve` does: through
    the service's runner. Other apps (fakes of remote services) are served as given."""

    async def client_of(app, **kwargs):
        if isinstance(app, web.Application) and SETTINGS in app:
            app = ServiceTestServer(app)
        return await aiohttp_client(app, **kwargs)

    return client_of


@pytest.fixture
async def client(aiohttp_client, settings: Settings):
    return await aiohttp_client(create_app(settings))


class KeyMaker:
    """Creates tenants and keys with the service's own data functions."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    async def __call__(self, tenant: str = "acme", *scopes: str) -> str:
        scopes = scopes or ("admin",)
        conn = await connect(Settings(database_url=self.database_url))
        try:
            found = await tenant_store.find_tenant(conn, tenant)
            if found is None:
                found = await tenant_store.create_tenant(conn, tenant)
            key = auth.generate_key()
            await tenant_store.insert_key(conn, found.id, key.prefix, key.key_hash,
                                          list(scopes), None)
        finally:
            await conn.close()
        return key.key


@pytest.fixture
def make_key(database_url: str) -> KeyMaker:
    return KeyMaker(database_url)


@pytest.fixture
async def admin(client, make_key) -> Api:
    """The `acme` tenant's admin key, through the test client."""
    return Api(client, await make_key("acme", "admin"))


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"the shared fixtures folder {SHARED} is absent on this machine")
    return SHARED


@pytest.fixture
def subprocess_env(database_url: str) -> dict[str, str]:
    """Environment for running the CLI as a separate process against this test's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRICHER_")}
    env["DATABASE_URL"] = database_url
    return env


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory) -> Iterator[str]:
    """A Redis for L2 tests: TEST_REDIS_URL or the machine's, else one of the run's own."""
    from tests.support.redis_keys import redis_answers

    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    if run(redis_answers(url)):
        yield url
        return
    import shutil

    from tests.support.owned_servers import OwnedRedis

    if shutil.which("redis-server") is None:
        pytest.skip("no Redis at TEST_REDIS_URL and no redis-server to start one")
    owned = OwnedRedis(tmp_path_factory.mktemp("redis"))
    run(owned.start())
    yield owned.url
    owned.stop()


@pytest.fixture
def redis_settings(settings: Settings, redis_server_url: str) -> Iterator[Settings]:
    """`settings` with L2 on: a key prefix of this test's own, its keys removed afterwards."""
    import dataclasses
    import uuid

    from tests.support.redis_keys import delete_prefix

    prefix = f"ce-test-{uuid.uuid4().hex[:10]}"
    yield dataclasses.replace(settings, redis_url=redis_server_url, redis_prefix=prefix)
    run(delete_prefix(redis_server_url, prefix))


@pytest.fixture
async def proxy(database_url: str):
    """A TCP proxy in front of this test's Postgres: counts statements, can stall or cut."""
    from tests.support.tcp_proxy import proxy_to_database

    proxy = await proxy_to_database(database_url)
    yield proxy
    await proxy.stop()


@pytest.fixture
async def owned_redis(tmp_path: Path):
    """A Redis of this test's own (on a free port), which it may stop, freeze or restart."""
    from tests.support.owned_servers import OwnedRedis

    server = OwnedRedis(tmp_path / "redis")
    await server.start()
    yield server
    server.stop()


@pytest.fixture
def aws_isolated(monkeypatch) -> None:
    """No profile or credential of the machine's leaks into botocore."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")


@pytest.fixture
def aws_env(monkeypatch) -> None:
    """The usual AWS environment, for the fake Personalize (tests/support/fake_personalize.py),
    pointing at nothing real: no instance metadata, no files."""
    from tests.support.fake_personalize import ACCESS_KEY, REGION, SECRET_KEY

    for name, value in {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                        "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
                        "AWS_CONFIG_FILE": "/dev/null",
                        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["c", "python"])
def transform_paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on both paths of the transform's hot loops: the C extension
    (service/_speedups.c) and the pure-Python code that serves where it is not built."""
    from service.adapters import pinpoint, raw_event
    from service.speedups import native

    if request.param == "python":
        monkeypatch.setattr(raw_event, "native", None)
        monkeypatch.setattr(pinpoint, "native", None)
    elif native is None:
        pytest.skip("the C extension is not built here (tests/test_speedups.py says why)")
    return request.param
