"""Migrations: applied once, in order, under an advisory lock; an edited applied file is refused."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from service.errors import MigrationError
from service.storage.migrations import Migration, apply_migrations, discover, pending_versions
from tests.support.databases import create_database, drop_database, with_database


@pytest.fixture
async def empty_database(pg_server_url):
    name = await create_database(pg_server_url)
    yield with_database(pg_server_url, name)
    await drop_database(pg_server_url, name)


async def ledger(url: str) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(url)
    try:
        return [(r["version"], r["name"]) for r in
                await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")]
    finally:
        await conn.close()


class TestApply:
    """Each file is applied once and recorded with its checksum."""

    async def test_applies_all_then_nothing(self, empty_database):
        conn = await asyncpg.connect(empty_database)
        try:
            first = await apply_migrations(conn)
            second = await apply_migrations(conn)
            assert [m.version for m in first] == [m.version for m in discover()]
            assert second == []
            assert await pending_versions(conn, discover()) == []
        finally:
            await conn.close()

    async def test_changed_applied_file_is_refused(self, empty_database):
        conn = await asyncpg.connect(empty_database)
        try:
            await apply_migrations(conn)
            edited = [Migration(m.version, m.name, m.sql + "\n-- edited") for m in discover()]
            with pytest.raises(MigrationError, match="changed after it was applied"):
                await apply_migrations(conn, edited)
        finally:
            await conn.close()

    async def test_failed_migration_leaves_nothing_behind(self, empty_database):
        broken = [*discover(), Migration(9999, "broken", "CREATE TABLE half (x int); SELECT 1/0;")]
        conn = await asyncpg.connect(empty_database)
        try:
            with pytest.raises(MigrationError, match=r"9999_broken\.sql failed"):
                await apply_migrations(conn, broken)
            assert await conn.fetchval("SELECT to_regclass('half')") is None
            assert 9999 not in [v for v, _ in await ledger(empty_database)]
        finally:
            await conn.close()

    def test_badly_named_file_is_refused(self, tmp_path: Path):
        (tmp_path / "1_init.sql").write_text("SELECT 1")
        with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
            discover(tmp_path)


class TestConcurrency:
    """Two processes migrating the same database at once do not collide."""

    async def test_two_connections_race(self, empty_database):
        conns = [await asyncpg.connect(empty_database) for _ in range(2)]
        try:
            results = await asyncio.gather(*(apply_migrations(c) for c in conns))
        finally:
            for conn in conns:
                await conn.close()
        applied = sorted(m.version for result in results for m in result)
        assert applied == [m.version for m in discover()]
        assert [v for v, _ in await ledger(empty_database)] == applied

    @pytest.mark.slow
    def test_two_processes_race(self, empty_database, subprocess_env):
        env = {**subprocess_env, "DATABASE_URL": empty_database}
        processes = [subprocess.Popen([sys.executable, "-m", "service", "migrate"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                     for _ in range(2)]
        outcomes = [p.communicate(timeout=60) for p in processes]
        assert [p.returncode for p in processes] == [0, 0], outcomes
        versions = [v for v, _ in asyncio.run(ledger(empty_database))]
        assert versions == [m.version for m in discover()]
