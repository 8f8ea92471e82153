"""Per-user digests of what `sync --changed-only` last put on a platform profile.

One row per (tenant, target, user): `target` names the destination (platform, endpoint host,
recommender, attribute). Reads and writes go a batch at a time (`ANY` / `unnest`), so a night of
ten million users costs a few thousand statements, never one per user.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

SELECT_DIGESTS = """
SELECT user_key, digest FROM sync_digests
WHERE tenant_id = $1 AND target = $2 AND user_key = ANY($3::text[])
"""
UPSERT_DIGESTS = """
INSERT INTO sync_digests (tenant_id, target, user_key, digest)
SELECT $1, $2, k, d FROM unnest($3::text[], $4::bytea[]) AS u(k, d)
ON CONFLICT (tenant_id, target, user_key)
DO UPDATE SET digest = EXCLUDED.digest, synced_at = now()
"""


async def fetch_digests(db: asyncpg.Pool | asyncpg.Connection, tenant_id: int, target: str,
                        user_keys: Sequence[str]) -> dict[str, bytes]:
    """The stored digest of each of `user_keys` that has one."""
    rows = await db.fetch(SELECT_DIGESTS, tenant_id, target, list(user_keys))
    return {row["user_key"]: bytes(row["digest"]) for row in rows}


async def store_digests(db: asyncpg.Pool | asyncpg.Connection, tenant_id: int, target: str,
                        digests: Sequence[tuple[str, bytes]]) -> None:
    """Record what each user's profile now holds (users the platform acknowledged)."""
    if not digests:
        return
    # A key twice in one statement would make ON CONFLICT touch a row twice: the last one wins.
    latest = dict(digests)
    await db.execute(UPSERT_DIGESTS, tenant_id, target, list(latest), list(latest.values()))
