"""Where the tests' Postgres is, and throwaway databases on it.

TEST_DATABASE_URL (default: the machine's Postgres on 127.0.0.1:5432) must name a role that may
create databases. Where none answers, the tests start an embedded Postgres of their own (pgserver),
so the suite runs on a machine with no Postgres installed.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def with_database(url: str, database: str) -> str:
    """The same server URL, pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


async def can_connect(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def create_database(server_url: str, template: str | None = None) -> str:
    name = f"ce_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server_url)
    try:
        # Identifiers cannot be parameters; these names are made here, never taken from input.
        if template:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def run(coro):
    """Run a coroutine from a synchronous (session) fixture."""
    return asyncio.run(coro)


def configured_url() -> str:
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_URL)
