"""Schema migrations: numbered SQL files applied in order, once, under an advisory lock.

Each file `NNNN_name.sql` in the migrations folder runs in its own transaction together with the
row that records it (version, name, SHA-256 of the file). Every process that starts takes the same
session advisory lock first, so two processes migrating at once apply each file exactly once. A file
whose checksum differs from the one recorded when it was applied is refused: history is append-only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from service.errors import MigrationError

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every process of this service.
MIGRATION_LOCK_KEY = 7_305_771_201
FILE_PATTERN = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""
LEDGER_EXISTS = "SELECT to_regclass('schema_migrations') IS NOT NULL"
SELECT_APPLIED = "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
RECORD_APPLIED = "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"
TAKE_LOCK = "SELECT pg_advisory_lock($1)"
RELEASE_LOCK = "SELECT pg_advisory_unlock($1)"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


def migrations_dir() -> Path:
    """Where the SQL files are: $ENRICHER_MIGRATIONS_DIR, the source tree, or the installed copy."""
    candidates = [
        os.environ.get("ENRICHER_MIGRATIONS_DIR"),
        Path(__file__).resolve().parents[2] / "migrations",
        Path(sys.prefix) / "share" / "catalog-enricher" / "migrations",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise MigrationError("no migrations folder found; set ENRICHER_MIGRATIONS_DIR")


def discover(directory: Path | None = None) -> list[Migration]:
    """Read the migration files, in version order; refuse gaps in naming and duplicates."""
    directory = directory or migrations_dir()
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = FILE_PATTERN.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files must be named NNNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations share version {version:04d}")
        found[version] = Migration(version, match.group(2), path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


async def apply_migrations(
    conn: asyncpg.Connection, migrations: list[Migration] | None = None
) -> list[Migration]:
    """Apply every pending migration; return those applied by this call."""
    migrations = discover() if migrations is None else migrations
    await conn.execute(TAKE_LOCK, MIGRATION_LOCK_KEY)
    try:
        await conn.execute(CREATE_LEDGER)
        applied = {row["version"]: row for row in await conn.fetch(SELECT_APPLIED)}
        _check_history(migrations, applied)
        done = []
        for migration in migrations:
            if migration.version in applied:
                continue
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        RECORD_APPLIED, migration.version, migration.name, migration.checksum
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{migration.filename} failed: {exc}") from exc
            log.info("migration applied", extra={"migration": migration.filename})
            done.append(migration)
        return done
    finally:
        await conn.execute(RELEASE_LOCK, MIGRATION_LOCK_KEY)


def _check_history(migrations: list[Migration], applied: dict) -> None:
    on_disk = {m.version: m for m in migrations}
    for version, row in applied.items():
        migration = on_disk.get(version)
        if migration is None:
            # The database is ahead of this code (e.g. a rollback of the service): it may still
            # work, so say so rather than refuse.
            log.warning("database has migration %04d_%s that this version does not know",
                        version, row["name"])
            continue
        if migration.checksum != row["checksum"]:
            raise MigrationError(
                f"{migration.filename} was changed after it was applied "
                f"(recorded sha256 {row['checksum'][:12]}…, file now {migration.checksum[:12]}…); "
                "add a new migration instead of editing an applied one"
            )


async def pending_versions(conn: asyncpg.Connection, migrations: list[Migration]) -> list[int]:
    """Versions on disk not yet applied (all of them if the ledger does not exist)."""
    if not await conn.fetchval(LEDGER_EXISTS):
        return [m.version for m in migrations]
    applied = {row["version"] for row in await conn.fetch(SELECT_APPLIED)}
    return [m.version for m in migrations if m.version not in applied]
