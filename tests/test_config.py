"""Settings: defaults, parsing, and a clear refusal of bad values."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chatsvc.config import ConfigError, Settings, describe


def test_defaults_match_the_contract() -> None:
    settings = Settings.from_env({})
    assert (settings.port, settings.admin_port) == (8080, 8081)
    assert settings.max_body_bytes == 64 * 1024
    assert settings.max_text_chars == 10_000
    assert settings.session_lifetime == 12 * 3600
    assert settings.session_idle_timeout == 3 * 3600
    assert (settings.rate, settings.burst, settings.auth_rate, settings.auth_burst) == (500, 100, 10, 10)
    assert (settings.drain_delay, settings.shutdown_timeout) == (5, 20)
    assert settings.health_interval == 2
    assert settings.db_timeout == 2
    assert settings.cors_origins == ("*",)


def test_values_are_parsed_into_their_types() -> None:
    settings = Settings.from_env({
        "CHATSVC_PORT": " 9000 ", "CHATSVC_ACCESS_LOG": "off", "CHATSVC_DB_TIMEOUT": "0.5",
        "CHATSVC_CORS_ORIGINS": "https://a.example, https://b.example",
        "CHATSVC_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.1",
    })
    assert settings.port == 9000
    assert settings.access_log is False
    assert settings.db_timeout == 0.5
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "192.168.1.1/32"]


@pytest.mark.parametrize(("name", "value", "accepts"), [
    ("CHATSVC_PORT", "http", "an integer from 0 to 65535"),
    ("CHATSVC_PORT", "70000", "an integer from 0 to 65535"),
    ("CHATSVC_WORKERS", "0", "an integer from 1 to 256"),
    ("CHATSVC_ACCESS_LOG", "maybe", "true or false"),
    ("CHATSVC_LOG_LEVEL", "loud", "one of debug, info, warning, error"),
    ("CHATSVC_DB_TIMEOUT", "-1", "a number from"),
    ("CHATSVC_TRUSTED_PROXIES", "not-an-ip", "IP addresses or CIDR networks"),
    ("CHATSVC_CORS_ORIGINS", " , ", "comma-separated list of origins"),
    ("DATABASE_URL", "mysql://x", "a postgresql:// URL"),
])
def test_a_bad_value_names_the_variable_and_what_it_accepts(name: str, value: str, accepts: str) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({name: value})
    assert name in str(error.value)
    assert accepts in str(error.value)


def test_every_bad_value_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"CHATSVC_PORT": "x", "CHATSVC_BURST": "0"})
    assert "CHATSVC_PORT" in str(error.value) and "CHATSVC_BURST" in str(error.value)


def test_pool_bounds_must_be_ordered() -> None:
    with pytest.raises(ConfigError, match="CHATSVC_DB_POOL_MIN"):
        Settings.from_env({"CHATSVC_DB_POOL_MIN": "20", "CHATSVC_DB_POOL_MAX": "10"})


def test_the_process_refuses_to_start_with_a_bad_value() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chatsvc", "serve"], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgresql://nowhere/x",
             "CHATSVC_ADMIN_PORT": "eighty"})
    assert result.returncode == 2
    assert "CHATSVC_ADMIN_PORT='eighty': expected an integer from 0 to 65535" in result.stderr


def test_every_setting_is_described() -> None:
    rows = describe()
    names = [name for name, _, _ in rows]
    assert len(names) == len(set(names))
    assert all(meaning for _, _, meaning in rows)
    assert "DATABASE_URL" in names and all(n.startswith("CHATSVC_") for n in names[1:])
