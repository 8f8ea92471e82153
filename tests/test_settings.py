"""Settings: strict casts with messages naming the variable; secrets never printed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.errors import SettingsError
from service.runtime.settings import Settings, mask_url


class TestFromEnv:
    """Values are read, cast and checked once, at start."""

    def test_defaults(self):
        settings = Settings.from_env({})
        assert settings.database_url is None
        assert (settings.host, settings.port) == ("127.0.0.1", 8080)
        assert settings.max_body_bytes == 7 * 1024 * 1024
        assert (settings.max_endpoints, settings.max_items_per_endpoint) == (1000, 50)

    @pytest.mark.parametrize(("name", "value"), [
        ("ENRICHER_PORT", "eighty"), ("ENRICHER_PORT", "70000"),
        ("ENRICHER_MAX_ENDPOINTS", "0"), ("ENRICHER_LOG_LEVEL", "LOUD"),
        ("ENRICHER_ACCESS_LOG", "maybe"), ("ENRICHER_DB_COMMAND_TIMEOUT", "-1"),
        ("DATABASE_URL", "mysql://u:secret@h/db"),
        ("ENRICHER_LISTENER_PING_SECONDS", "0"), ("ENRICHER_MIGRATE_ON_START", "sometimes"),
        ("ENRICHER_MAX_CONTENT_IDS", "0"), ("ENRICHER_MAX_CONTENT_IDS", "1001"),
        ("ENRICHER_CONTENT_DEADLINE_MS", "9"), ("ENRICHER_CONTENT_DEADLINE_MS", "soon"),
        ("ENRICHER_PERSONALIZE_ENDPOINT_URL", "ftp://u:secret@h"),
        ("ENRICHER_PERSONALIZE_ENDPOINT_URL", "personalize.example.com"),
        ("ENRICHER_CACHE_MAX_BYTES", "256MiB"), ("ENRICHER_CACHE_MAX_BYTES", "-1"),
        ("ENRICHER_CACHE_MAX_BYTES", "1000"), ("ENRICHER_EVENT_LOOP", "tokio"),
        ("ENRICHER_LOOP_SHARED_SLICE_MS", "0"), ("ENRICHER_LOOP_SHARED_SLICE_MS", "soon"),
    ])
    def test_bad_value_names_the_variable(self, name, value):
        with pytest.raises(SettingsError) as caught:
            Settings.from_env({name: value})
        assert name in str(caught.value)
        assert "secret" not in str(caught.value)

    def test_send_time_settings(self):
        defaults = Settings.from_env({})
        assert (defaults.max_content_ids, defaults.content_deadline_ms) == (50, 1500)
        assert defaults.personalize_endpoint_url is None
        settings = Settings.from_env({
            "ENRICHER_MAX_CONTENT_IDS": "10", "ENRICHER_CONTENT_DEADLINE_MS": "900",
            "ENRICHER_PERSONALIZE_ENDPOINT_URL": "https://u:hunter2@vpce.example.com/x"})
        assert (settings.max_content_ids, settings.content_deadline_ms) == (10, 900)
        assert settings.personalize_endpoint_url == "https://u:hunter2@vpce.example.com/x"
        assert "hunter2" not in repr(settings)

    def test_cache_byte_bound(self):
        assert Settings.from_env({}).cache_max_bytes == 256 * 1024 * 1024
        assert Settings.from_env({"ENRICHER_CACHE_MAX_BYTES": "0"}).cache_max_bytes == 0
        settings = Settings.from_env({"ENRICHER_CACHE_MAX_BYTES": "67108864"})
        assert settings.cache_max_bytes == 64 * 1024 * 1024

    def test_event_loop(self):
        assert Settings.from_env({}).event_loop == "asyncio"
        assert Settings.from_env({"ENRICHER_EVENT_LOOP": "UVLoop"}).event_loop == "uvloop"

    def test_every_problem_reported_at_once(self):
        with pytest.raises(SettingsError) as caught:
            Settings.from_env({"ENRICHER_PORT": "x", "ENRICHER_MAX_ENDPOINTS": "y"})
        assert "ENRICHER_PORT" in str(caught.value)
        assert "ENRICHER_MAX_ENDPOINTS" in str(caught.value)

    def test_password_masked_in_repr(self):
        settings = Settings.from_env({"DATABASE_URL": "postgresql://app:hunter2@db:5432/cat"})
        assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)
        assert settings.database_url == "postgresql://app:hunter2@db:5432/cat"
        assert mask_url(settings.database_url) == "postgresql://app:***@db:5432/cat"


def test_cli_refuses_bad_settings_with_a_clear_message():
    result = subprocess.run(
        [sys.executable, "-m", "service", "migrate"], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "ENRICHER_PORT": "http",
             "DATABASE_URL": "postgresql://u:pw-secret@127.0.0.1:1/x"}, check=False,
    )
    assert result.returncode == 2
    assert "ENRICHER_PORT" in result.stderr and "pw-secret" not in result.stderr
