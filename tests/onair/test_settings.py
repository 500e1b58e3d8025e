"""Each settings module, loaded in a fresh interpreter with a controlled environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from onair.settings.env import channel_layers, database_from_url, env_bool, env_list

ROOT = Path(__file__).resolve().parents[2]
PROBE = (
    "import json, django; django.setup(); from django.conf import settings as s; "
    "from onair.conf import onair_settings; "
    "print(json.dumps({'db': s.DATABASES['default']['ENGINE'], "
    "'name': str(s.DATABASES['default']['NAME']), "
    "'layer': s.CHANNEL_LAYERS['default']['BACKEND'], 'debug': s.DEBUG, "
    "'prefix': s.CHANNEL_LAYERS['default'].get('CONFIG', {}).get('prefix'), "
    "'hosts': s.ALLOWED_HOSTS, 'static': onair_settings().serve_static}))"
)
_CLEARED = ("DATABASE_URL", "REDIS_URL", "DJANGO_SECRET_KEY", "ALLOWED_HOSTS", "DJANGO_DEBUG")


def _load(module: str | None, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    environ.pop("DJANGO_SETTINGS_MODULE", None)
    if module:
        environ["DJANGO_SETTINGS_MODULE"] = module
    environ.update(env)
    # manage.py's default, without running a command.
    code = "import os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'onair.settings.local'); "
    return subprocess.run(
        [sys.executable, "-c", code + PROBE],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _settings(module: str | None, **env: str) -> dict:
    result = _load(module, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_local_is_the_default_embedded_setup() -> None:
    loaded = _settings(None)
    assert loaded["db"] == "django.db.backends.sqlite3"
    assert loaded["name"].endswith("var/db.sqlite3")
    assert loaded["layer"] == "channels.layers.InMemoryChannelLayer"
    assert loaded["debug"] is False  # the site's error pages, not Django's debug ones
    assert _settings(None, DJANGO_DEBUG="1")["debug"] is True
    assert loaded["static"] is True


def test_production_reads_services_from_the_environment() -> None:
    loaded = _settings(
        "onair.settings.production",
        DJANGO_SECRET_KEY="s" * 50,
        DATABASE_URL="postgres://onair:pw@db.internal:5432/onair",
        REDIS_URL="redis://cache.internal:6379/0",
        ALLOWED_HOSTS="live.example.com,www.example.com",
    )
    assert loaded["db"] == "django.db.backends.postgresql"
    assert loaded["name"] == "onair"
    assert loaded["layer"] == "channels_redis.core.RedisChannelLayer"
    assert loaded["debug"] is False
    assert loaded["static"] is False
    assert loaded["hosts"] == ["live.example.com", "www.example.com"]
    assert loaded["prefix"] == "onair"


def test_production_channel_layer_takes_the_redis_prefix() -> None:
    """Deployments sharing one Redis keep their channel layers apart, as their caches and
    SFU registries are (docs/SETTINGS.md, ``ONAIR_REDIS_PREFIX``)."""
    loaded = _settings(
        "onair.settings.production",
        DJANGO_SECRET_KEY="s" * 50,
        DATABASE_URL="postgres://onair@db/onair",
        REDIS_URL="redis://cache:6379/0",
        ALLOWED_HOSTS="live.example.com",
        ONAIR_REDIS_PREFIX="onair-staging",
    )
    assert loaded["prefix"] == "onair-staging"


@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL"])
def test_production_refuses_to_start_without_required_env(missing: str) -> None:
    env = {
        "DJANGO_SECRET_KEY": "s" * 50,
        "DATABASE_URL": "postgres://onair@db/onair",
        "REDIS_URL": "redis://cache:6379/0",
        "ALLOWED_HOSTS": "live.example.com",
    }
    del env[missing]
    result = _load("onair.settings.production", **env)
    assert result.returncode != 0
    assert f"{missing} must be set in production" in result.stderr


def test_database_url_switches_local_to_postgres() -> None:
    loaded = _settings("onair.settings.local", DATABASE_URL="postgres://postgres@127.0.0.1/x")
    assert loaded["db"] == "django.db.backends.postgresql"


def test_env_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAG", "Yes")
    monkeypatch.setenv("LIST", " a, ,b ")
    assert env_bool("FLAG", default=False) is True
    assert env_bool("UNSET_FLAG", default=True) is True
    assert env_list("LIST", []) == ["a", "b"]
    monkeypatch.setenv("FLAG", "maybe")
    with pytest.raises(ValueError, match="FLAG"):
        env_bool("FLAG", default=False)
    assert channel_layers(None)["default"]["BACKEND"].endswith("InMemoryChannelLayer")
    redis = channel_layers("redis://h:6379/1")["default"]
    assert redis["CONFIG"]["hosts"] == [{"address": "redis://h:6379/1", "socket_timeout": 30.0}]
    assert database_from_url("sqlite:////tmp/x.db")["NAME"] == "/tmp/x.db"


def test_sqlite_is_set_up_for_concurrent_writers() -> None:
    options = database_from_url("sqlite:////tmp/x.db")["OPTIONS"]
    assert options["transaction_mode"] == "IMMEDIATE"
    assert options["timeout"] == 20
    assert options["init_command"] == "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL"
    assert database_from_url("sqlite:////tmp/x.db?timeout=60")["OPTIONS"]["timeout"] == 60
    assert "OPTIONS" not in database_from_url("postgres://postgres@127.0.0.1/x")


def test_local_secret_key_is_this_installs_own_not_the_repositorys() -> None:
    """Without DJANGO_SECRET_KEY, local settings use a key made for this install under var/
    (as make run does), the same on every start."""
    environ = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    environ["DJANGO_SETTINGS_MODULE"] = "onair.settings.local"
    probe = "import django; django.setup(); from django.conf import settings; "
    probe += "print(settings.SECRET_KEY)"
    keys = {
        subprocess.run(
            [sys.executable, "-c", probe],
            cwd=ROOT,
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(keys) == 1
    key = keys.pop()
    assert key != "onair-local-development-key-not-for-production"
    assert key == (ROOT / "var" / "secret_key").read_text().strip()
