"""Reaching the tests' Redis directly: is it there, and removing one test's keys."""

from __future__ import annotations

import redis.asyncio as redis_client
from redis.exceptions import RedisError


async def redis_answers(url: str) -> bool:
    client = redis_client.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(await client.ping())
    except (OSError, RedisError):
        return False
    finally:
        await client.aclose()


async def delete_prefix(url: str, prefix: str) -> None:
    client = redis_client.Redis.from_url(url)
    try:
        batch = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
        if batch:
            await client.delete(*batch)
    finally:
        await client.aclose()


async def key_ttl(url: str, key: str) -> int:
    """Milliseconds left on `key` (-2: absent, -1: no expiry)."""
    client = redis_client.Redis.from_url(url)
    try:
        return await client.pttl(key)
    finally:
        await client.aclose()
