"""Service configuration, read once from the environment and validated before anything starts.

Every knob is an environment variable (see the README's configuration table). A bad value stops
the process with a message that names the variable and what it accepts; the database URL is never
printed with its password.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from service.errors import SettingsError

T = TypeVar("T")

MIB = 1024 * 1024
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# The stdlib's loop by default: under 256 connections uvloop left some of them unserved for
# seconds while answering the others (README, Performance: "The event loop").
EVENT_LOOPS = ("asyncio", "uvloop")
# URLs that may carry passwords: printed masked.
_URL_FIELDS = ("database_url", "database_read_url", "redis_url", "personalize_endpoint_url")


def mask_url(url: str | None) -> str | None:
    """Return `url` with any password replaced by `***`, for logs and error messages (multi-host
    URLs included: `postgresql://u:pw@h1,h2/db`, `redis+sentinel://:pw@h1:26379,h2/mymaster`)."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    netloc = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def default_data_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "catalog-enricher"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment. Build it with `from_env`."""

    database_url: str | None = None
    # Read replicas (issue 16): item reads go there; see service/storage/read_routing.py.
    database_read_url: str | None = None
    replica_max_lag: float = 10.0
    data_dir: Path = Path(".catalog-enricher")
    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "INFO"
    access_log: bool = True
    max_body_bytes: int = 7 * MIB
    max_endpoints: int = 1000
    max_items_per_endpoint: int = 50
    max_batch_ids: int = 1000
    db_pool_min: int = 2
    db_pool_max: int = 10
    db_connect_timeout: float = 5.0
    db_command_timeout: float = 10.0
    db_acquire_timeout: float = 5.0
    auth_cache_seconds: float = 10.0
    default_deadline_ms: int = 10_000
    shutdown_timeout: float = 30.0
    # False where something else migrates (the Kubernetes migration Job): `serve` then leaves
    # pending migrations alone, and /readyz answers 503 until they are applied.
    migrate_on_start: bool = True
    # How often the LISTEN connection is pinged; unanswered for as long again, it is replaced.
    listener_ping_seconds: float = 2.0
    # Item cache (see the README's "Caching, invalidation and deadlines").
    redis_url: str | None = None
    redis_prefix: str = "ce"
    cache_max_entries: int = 100_000
    cache_max_bytes: int = 256 * MIB  # L1's bytes, rows kept on its entries included; 0: no bound
    cache_ttl: float = 300.0
    cache_negative_ttl: float = 30.0
    cache_stale_seconds: float = 3600.0
    redis_timeout: float = 0.05
    batch_window_ms: float = 0.0
    loop_slice_ms: float = 5.0
    loop_shared_slice_ms: float = 0.5
    event_loop: str = "asyncio"
    # Catalog API (issue 4): caching headers and bulk import limits.
    item_max_age: int = 0
    import_batch_rows: int = 5000
    import_max_line_bytes: int = MIB
    import_max_errors: int = 100
    import_timeout: float = 900.0
    max_concurrent_imports: int = 2
    # Keys and limits (issue 14).
    key_usage_interval: float = 60.0
    tenant_max_in_flight: int = 4
    tenant_max_queued: int = 1024
    rate_limit_processes: int = 0  # 0: as many as `serve --workers`
    rate_limit_timeout: float = 0.2
    # Send-time content (issue 11): IDs per request, and the budget when no X-Deadline-Ms comes.
    max_content_ids: int = 50
    content_deadline_ms: int = 1500
    # Personalize in the loop (issue 12): another endpoint for Personalize's runtime (tests, VPC
    # endpoints); region and credentials come from the usual AWS environment.
    personalize_endpoint_url: str | None = None
    # Amazon Connect outbound campaigns: how long an IdempotencyToken's answer is replayed, and
    # the bytes those answers may take in this process (L1; Redis holds them too when set).
    connect_replay_seconds: int = 900
    connect_replay_max_bytes: int = 64 * MIB
    # `sync` to Braze and Iterable: each platform's documented limits as defaults (docs/sync.md),
    # our own pace well below the rate a workspace shares with its other integrations.
    sync_braze_batch_size: int = 75
    sync_braze_max_attribute_bytes: int = 100_000
    sync_braze_rate: int = 100
    sync_braze_max_request_bytes: int = 4_000_000
    sync_iterable_batch_size: int = 1000
    sync_iterable_rate: int = 5
    sync_iterable_max_request_bytes: int = 4_000_000
    sync_concurrency: int = 8
    sync_max_attempts: int = 6
    sync_backoff_ms: int = 500
    sync_timeout: float = 30.0

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{f.name}={mask_url(v) if f.name in _URL_FIELDS else v!r}"
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        )
        return f"Settings({fields})"

    __str__ = __repr__

    @property
    def masked_database_url(self) -> str | None:
        return mask_url(self.database_url)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read and validate settings; raise SettingsError naming every bad variable."""
        env = os.environ if env is None else env
        reader = _EnvReader(env)
        values: dict[str, Any] = {
            "database_url": reader.database_url("DATABASE_URL"),
            "database_read_url": reader.database_url("DATABASE_READ_URL"),
            "replica_max_lag": reader.seconds("ENRICHER_REPLICA_MAX_LAG_SECONDS", 10.0,
                                              minimum=0.1),
            "data_dir": Path(env.get("ENRICHER_DATA_DIR") or default_data_dir(env)),
            "host": reader.text("ENRICHER_HOST", "127.0.0.1"),
            "port": reader.integer("ENRICHER_PORT", 8080, 1, 65535),
            "log_level": reader.choice("ENRICHER_LOG_LEVEL", "INFO", LOG_LEVELS),
            "access_log": reader.boolean("ENRICHER_ACCESS_LOG", True),
            "max_body_bytes": reader.integer("ENRICHER_MAX_BODY_BYTES", 7 * MIB, 1024, 64 * MIB),
            "max_endpoints": reader.integer("ENRICHER_MAX_ENDPOINTS", 1000, 1, 100_000),
            "max_items_per_endpoint": reader.integer(
                "ENRICHER_MAX_ITEMS_PER_ENDPOINT", 50, 1, 1000
            ),
            "max_batch_ids": reader.integer("ENRICHER_MAX_BATCH_IDS", 1000, 1, 100_000),
            "db_pool_min": reader.integer("ENRICHER_DB_POOL_MIN", 2, 0, 1000),
            "db_pool_max": reader.integer("ENRICHER_DB_POOL_MAX", 10, 1, 1000),
            "db_connect_timeout": reader.seconds("ENRICHER_DB_CONNECT_TIMEOUT", 5.0),
            "db_command_timeout": reader.seconds("ENRICHER_DB_COMMAND_TIMEOUT", 10.0),
            "db_acquire_timeout": reader.seconds("ENRICHER_DB_ACQUIRE_TIMEOUT", 5.0),
            "auth_cache_seconds": reader.seconds("ENRICHER_AUTH_CACHE_SECONDS", 10.0, minimum=0),
            "default_deadline_ms": reader.integer(
                "ENRICHER_DEFAULT_DEADLINE_MS", 10_000, 10, 600_000
            ),
            "shutdown_timeout": reader.seconds("ENRICHER_SHUTDOWN_TIMEOUT", 30.0),
            "migrate_on_start": reader.boolean("ENRICHER_MIGRATE_ON_START", True),
            "listener_ping_seconds": reader.seconds("ENRICHER_LISTENER_PING_SECONDS", 2.0,
                                                    minimum=0.1),
            "redis_url": reader.redis_url("REDIS_URL"),
            "redis_prefix": reader.pattern("ENRICHER_REDIS_PREFIX", "ce", r"[A-Za-z0-9_.-]{1,64}"),
            "cache_max_entries": reader.integer("ENRICHER_CACHE_MAX_ENTRIES", 100_000, 0,
                                                100_000_000),
            "cache_max_bytes": reader.cache_bytes("ENRICHER_CACHE_MAX_BYTES", 256 * MIB),
            "cache_ttl": reader.seconds("ENRICHER_CACHE_TTL_SECONDS", 300.0),
            "cache_negative_ttl": reader.seconds("ENRICHER_CACHE_NEGATIVE_TTL_SECONDS", 30.0),
            "cache_stale_seconds": reader.seconds("ENRICHER_CACHE_STALE_SECONDS", 3600.0,
                                                  minimum=0),
            "redis_timeout": reader.integer("ENRICHER_REDIS_TIMEOUT_MS", 50, 1, 10_000) / 1000,
            "batch_window_ms": reader.decimal("ENRICHER_BATCH_WINDOW_MS", 0.0, 0.0, 100.0),
            "loop_slice_ms": reader.decimal("ENRICHER_LOOP_SLICE_MS", 5.0, 0.0, 1000.0),
            "loop_shared_slice_ms": reader.decimal("ENRICHER_LOOP_SHARED_SLICE_MS", 0.5, 0.1,
                                                   1000.0),
            "event_loop": reader.choice("ENRICHER_EVENT_LOOP", "asyncio", EVENT_LOOPS),
            "item_max_age": reader.integer("ENRICHER_ITEM_MAX_AGE", 0, 0, 86_400),
            "import_batch_rows": reader.integer("ENRICHER_IMPORT_BATCH_ROWS", 5000, 1, 100_000),
            "import_max_line_bytes": reader.integer(
                "ENRICHER_IMPORT_MAX_LINE_BYTES", MIB, 1024, 64 * MIB
            ),
            "import_max_errors": reader.integer("ENRICHER_IMPORT_MAX_ERRORS", 100, 0, 100_000),
            "import_timeout": reader.seconds("ENRICHER_IMPORT_TIMEOUT", 900.0),
            "max_concurrent_imports": reader.integer(
                "ENRICHER_MAX_CONCURRENT_IMPORTS", 2, 1, 100
            ),
            "key_usage_interval": reader.seconds("ENRICHER_KEY_USAGE_FLUSH_SECONDS", 60.0,
                                                 minimum=0.01),
            "tenant_max_in_flight": reader.integer("ENRICHER_TENANT_MAX_IN_FLIGHT", 4, 0, 100_000),
            "tenant_max_queued": reader.integer("ENRICHER_TENANT_MAX_QUEUED", 1024, 0, 1_000_000),
            "rate_limit_processes": reader.integer("ENRICHER_RATE_LIMIT_PROCESSES", 0, 0, 10_000),
            "rate_limit_timeout": reader.integer("ENRICHER_RATE_LIMIT_TIMEOUT_MS", 200, 1,
                                                 10_000) / 1000,
            "max_content_ids": reader.integer("ENRICHER_MAX_CONTENT_IDS", 50, 1, 1000),
            "content_deadline_ms": reader.integer(
                "ENRICHER_CONTENT_DEADLINE_MS", 1500, 10, 600_000
            ),
            "personalize_endpoint_url": reader.http_url("ENRICHER_PERSONALIZE_ENDPOINT_URL"),
            "connect_replay_seconds": reader.integer("ENRICHER_CONNECT_REPLAY_SECONDS", 900, 900,
                                                     86_400),
            "connect_replay_max_bytes": reader.integer("ENRICHER_CONNECT_REPLAY_MAX_BYTES",
                                                       64 * MIB, 0, 64 * 1024 * MIB),
            "sync_braze_batch_size": reader.integer("ENRICHER_SYNC_BRAZE_BATCH_SIZE", 75, 1, 75),
            "sync_braze_max_attribute_bytes": reader.integer(
                "ENRICHER_SYNC_BRAZE_MAX_ATTRIBUTE_BYTES", 100_000, 1_000, 100_000),
            "sync_braze_rate": reader.integer("ENRICHER_SYNC_BRAZE_RATE", 100, 1, 100_000),
            "sync_braze_max_request_bytes": reader.integer(
                "ENRICHER_SYNC_BRAZE_MAX_REQUEST_BYTES", 4_000_000, 200_000, 4_000_000),
            "sync_iterable_batch_size": reader.integer("ENRICHER_SYNC_ITERABLE_BATCH_SIZE", 1000,
                                                       1, 10_000),
            "sync_iterable_rate": reader.integer("ENRICHER_SYNC_ITERABLE_RATE", 5, 1, 100_000),
            "sync_iterable_max_request_bytes": reader.integer(
                "ENRICHER_SYNC_ITERABLE_MAX_REQUEST_BYTES", 4_000_000, 10_000, 4_000_000),
            "sync_concurrency": reader.integer("ENRICHER_SYNC_CONCURRENCY", 8, 1, 256),
            "sync_max_attempts": reader.integer("ENRICHER_SYNC_MAX_ATTEMPTS", 6, 1, 100),
            "sync_backoff_ms": reader.integer("ENRICHER_SYNC_BACKOFF_MS", 500, 1, 60_000),
            "sync_timeout": reader.integer("ENRICHER_SYNC_TIMEOUT_MS", 30_000, 100,
                                           600_000) / 1000,
        }
        values.update(overrides)
        if values["db_pool_min"] > values["db_pool_max"]:
            reader.errors.append(
                "ENRICHER_DB_POOL_MIN must not exceed ENRICHER_DB_POOL_MAX "
                f"({values['db_pool_min']} > {values['db_pool_max']})"
            )
        if values["event_loop"] == "uvloop" and importlib.util.find_spec("uvloop") is None:
            reader.errors.append("ENRICHER_EVENT_LOOP is uvloop, but uvloop is not installed "
                                 "(pip install uvloop)")
        if reader.errors:
            raise SettingsError("invalid configuration: " + "; ".join(reader.errors))
        return cls(**values)


class _EnvReader:
    """Strict casts that collect every problem, so one start reports them all."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.errors: list[str] = []

    def _read(self, name: str, default: T, cast: Callable[[str], T], accepts: str) -> T:
        raw = self.env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return cast(raw.strip())
        except (ValueError, TypeError):
            self.errors.append(f"{name} must be {accepts}, got {raw!r}")
            return default

    def text(self, name: str, default: str) -> str:
        return self._read(name, default, str, "text")

    def _ranged(self, name: str, default: T, kind: Callable[[str], T], low: T, high: T,
                accepts: str) -> T:
        def cast(raw: str) -> T:
            value = kind(raw)
            if not low <= value <= high:  # type: ignore[operator]
                raise ValueError
            return value

        return self._read(name, default, cast, accepts)

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        return self._ranged(name, default, int, low, high, f"an integer from {low} to {high}")

    def cache_bytes(self, name: str, default: int) -> int:
        """0 (no bound) or a number of bytes from 1 MiB to 1 TiB."""
        def cast(raw: str) -> int:
            value = int(raw)
            if value != 0 and not MIB <= value <= 1024 * 1024 * MIB:
                raise ValueError
            return value

        return self._read(name, default, cast,
                          f"0 (no bound) or an integer from {MIB} to {1024 * 1024 * MIB}")

    def seconds(self, name: str, default: float, minimum: float = 0.001) -> float:
        def cast(raw: str) -> float:
            value = float(raw)
            if not (minimum <= value <= 86_400):
                raise ValueError
            return value

        return self._read(name, default, cast, f"a number of seconds from {minimum} to 86400")

    def boolean(self, name: str, default: bool) -> bool:
        table = {"1": True, "true": True, "yes": True, "on": True,
                 "0": False, "false": False, "no": False, "off": False}

        def cast(raw: str) -> bool:
            if raw.lower() not in table:
                raise ValueError
            return table[raw.lower()]

        return self._read(name, default, cast, "true or false")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        def cast(raw: str) -> str:
            for spelled in (raw.upper(), raw.lower()):  # the choices' own case, either way
                if spelled in choices:
                    return spelled
            raise ValueError

        return self._read(name, default, cast, "one of " + ", ".join(choices))

    def decimal(self, name: str, default: float, low: float, high: float) -> float:
        return self._ranged(name, default, float, low, high, f"a number from {low:g} to {high:g}")

    def pattern(self, name: str, default: str, pattern: str) -> str:
        def cast(raw: str) -> str:
            if not re.fullmatch(pattern, raw):
                raise ValueError
            return raw

        return self._read(name, default, cast, f"text matching {pattern}")

    def redis_url(self, name: str) -> str | None:
        raw = self.env.get(name)
        if raw is None or raw.strip() == "":
            return None
        raw = raw.strip()
        if re.match(r"^rediss?\+sentinel://", raw, re.IGNORECASE):
            if not re.match(r"^rediss?\+sentinel://[^/?#]+/[^/?#]+(/\d+)?/?$", raw, re.IGNORECASE):
                self.errors.append(
                    f"{name} must name its sentinels and service, like "
                    f"redis+sentinel://h1:26379,h2:26379/mymaster/0, got {mask_url(raw)!r}"
                )
                return None
            return raw
        if not re.match(r"^rediss?://[^/?#]", raw):
            self.errors.append(f"{name} must be a redis://, rediss:// or redis+sentinel:// URL, "
                               f"got {mask_url(raw)!r}")
            return None
        return raw

    def http_url(self, name: str) -> str | None:
        raw = self.env.get(name)
        if raw is None or raw.strip() == "":
            return None
        raw = raw.strip()
        if not re.match(r"^https?://[^/?#\s]+(/\S*)?$", raw):
            self.errors.append(f"{name} must be an http:// or https:// URL, got {mask_url(raw)!r}")
            return None
        return raw

    def database_url(self, name: str) -> str | None:
        raw = self.env.get(name)
        if raw is None or raw.strip() == "":
            return None
        raw = raw.strip()
        if not re.match(r"^postgres(ql)?://", raw):
            # Mask before echoing: a malformed URL may still carry a password.
            self.errors.append(
                f"{name} must be a postgresql:// URL, got {mask_url(raw)!r}"
            )
            return None
        return raw
