"""What a `REDIS_URL` says: one server (`redis://`, `rediss://`) or the sentinels of a service
(`redis+sentinel://h1:26379,h2:26379/mymaster/0`), read into client arguments. Shared by L2
(service/resolution/shared_cache.py) and the rate counter (rate_counter.py), so both reach the
same Redis the same way, sentinels included."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SENTINEL_PORT = 26379


def redis_options(url: str) -> dict[str, Any]:
    """aiocache RedisCache arguments from a redis:// or rediss:// URL (`/db` as the path)."""
    parts = urlsplit(url)
    db = parts.path.lstrip("/") or "0"
    options: dict[str, Any] = {
        "endpoint": parts.hostname or "127.0.0.1",
        "port": parts.port or 6379,
        "db": int(db),
        "ssl": parts.scheme == "rediss",
    }
    if parts.password is not None:
        options["password"] = unquote(parts.password)
    if parts.username:
        options["connection_pool_kwargs"] = {"username": unquote(parts.username)}
    return options


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


def sentinel_options(url: str) -> tuple[list[tuple[str, int]], str, dict[str, Any]]:
    """(the sentinels' addresses, the service name, aiocache RedisCache arguments) from
    `redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]` (or
    `rediss+sentinel://` for TLS to the master). The password is the master's; sentinels are
    asked without one. Raises ValueError on a malformed URL."""
    scheme, rest = url.split("://", 1)
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    addresses = [_address(host) for host in hosts.split(",")]
    service, _, db = path.split("?", 1)[0].partition("/")
    if not service:
        raise ValueError("the path must name the sentinels' service: /mymaster[/db]")
    pool_kwargs: dict[str, Any] = {"ssl": scheme.lower() == "rediss+sentinel"}
    options: dict[str, Any] = {"db": int(db.strip("/") or "0"),
                               "connection_pool_kwargs": pool_kwargs}
    if userinfo:
        user, has_password, password = userinfo.partition(":")
        if has_password:
            options["password"] = unquote(password)
        if user:
            pool_kwargs["username"] = unquote(user)
    return addresses, unquote(service), options


def _address(text: str) -> tuple[str, int]:
    """`host`, `host:port` or `[v6 address]:port` as (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise ValueError("a sentinel address is empty")
    return host, int(port) if port else SENTINEL_PORT
