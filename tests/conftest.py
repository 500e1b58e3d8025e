"""Fixtures shared by the whole suite: users, API clients, streams.

The model/API suite runs on SQLite by default and on PostgreSQL when ``DATABASE_URL``
points there (``make test`` does both); if that server is unreachable the database tests
are skipped with the reason, instead of erroring.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import override_settings
from rest_framework.test import APIClient

from broadcast.models import Stream
from broadcast.services import IssuedKey, stream_create
from onair.logging import RedactSecrets
from tests.secret_watch import SECRETS_FILE_ENV, SecretWatch, WatchLines, record_generated_secrets

PASSWORD = "correct-horse-battery"


def _postgres_unreachable() -> str | None:
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        return None
    try:
        psycopg.connect(
            host=db.get("HOST") or None,
            port=db.get("PORT") or None,
            user=db.get("USER") or None,
            password=db.get("PASSWORD") or None,
            dbname=db.get("NAME") or "postgres",
            connect_timeout=3,
        ).close()
    except psycopg.OperationalError as error:
        return f"PostgreSQL from DATABASE_URL is unreachable: {error}".strip()
    return None


# Under pytest-xdist (make test runs ``-n 2 --dist loadgroup``), the tests of a directory here
# run on one worker, one at a time: the NAT rig's namespaces and coturn, the shaped-link rig's,
# the benchmarks' smoke tests (make test runs these last two alone, after the others).
SERIAL_DIRECTORIES = {"nat": "nat", "quality": "quality", "bench": "bench"}
TESTS = Path(__file__).parent


def _xdist_group(rootpath: Path, nodeid: str) -> str:
    """A module's tests go to one worker (its module-scoped servers, browsers and clusters
    start once), and so do the directories of ``SERIAL_DIRECTORIES``."""
    path = (rootpath / nodeid.split("::", 1)[0]).relative_to(TESTS)
    return SERIAL_DIRECTORIES.get(path.parts[0], path.as_posix())


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` by ``_xdist_group``. Not by ``xdist_group`` marks: pytest-xdist
    3.8 groups them by renaming each test (``item._nodeid``), which pytest 9 no longer reads,
    so every test went to whichever worker was free."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class _Grouped(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _xdist_group(config.rootpath, nodeid)

    return _Grouped(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _postgres_unreachable()
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("django_db") or "db" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.skip(reason=reason))


_secrets = SecretWatch()
record_generated_secrets(_secrets.add)  # before any test makes a key or a session


@pytest.fixture(scope="session", autouse=True)
def _no_secret_in_any_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No log line of the run holds a stream key or a session token (tests/secret_watch.py):
    each line this process's log handler writes is checked as it is written; the processes
    the suite starts record the tokens they make, and every ``*.log`` under the run's
    temporary directory is checked at the end. A leak fails the run's last test."""
    base = tmp_path_factory.getbasetemp()
    made_elsewhere = base / "generated-secrets.txt"
    os.environ[SECRETS_FILE_ENV] = str(made_elsewhere)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, (str(TESTS / "secret_hook"), os.environ.get("PYTHONPATH")))
    )
    watchers = [
        WatchLines(_secrets, handler)
        for handler in logging.getLogger().handlers
        if any(isinstance(f, RedactSecrets) for f in handler.filters)
    ]
    assert watchers, "no log handler of OnAir's to watch"
    for watcher in watchers:
        watcher.handler.addFilter(watcher)
    yield
    for watcher in watchers:
        watcher.handler.removeFilter(watcher)
    _secrets.load(made_elsewhere)
    # OnAir's processes' logs; coturn's (the NAT rig's, tests/nat) are not OnAir's to keep clean.
    logs = [path for path in base.rglob("*.log") if not path.name.startswith("turnserver")]
    _secrets.check_files(sorted(logs))
    if _secrets.leaks:
        pytest.fail("secrets in the logs:\n" + "\n".join(_secrets.leaks[:50]), pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _recordings_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Broadcasts the in-process tests record are written and kept in this run's temporary
    directory, not in var/."""
    root = tmp_path_factory.mktemp("recordings")
    storages = {**settings.STORAGES}
    storages["recordings"] = {**storages["recordings"], "OPTIONS": {"location": root / "kept"}}
    onair = {**settings.ONAIR, "RECORDING_SPOOL_DIR": str(root / "spool")}
    with override_settings(STORAGES=storages, ONAIR=onair):
        yield


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    """Each test starts with no counters (login throttling) from the ones before."""
    cache.clear()


@pytest.fixture
def user(db: None) -> User:
    return User.objects.create_user("alice", "alice@example.com", PASSWORD)


@pytest.fixture
def other_user(db: None) -> User:
    return User.objects.create_user("bob", "bob@example.com", PASSWORD)


@pytest.fixture
def staff_user(db: None) -> User:
    return User.objects.create_user("carol", "carol@example.com", PASSWORD, is_staff=True)


@pytest.fixture
def superuser(db: None) -> User:
    return User.objects.create_superuser("root", "root@example.com", PASSWORD)


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def client_for() -> Callable[[User], APIClient]:
    """An API client logged in (by session) as the given user."""

    def make(user: User) -> APIClient:
        client = APIClient()
        client.force_login(user)
        return client

    return make


StreamFactory = Callable[..., tuple[Stream, IssuedKey]]


@pytest.fixture
def make_stream(user: User) -> StreamFactory:
    """Create a stream through the service; the owner defaults to ``user``."""
    counter = iter(range(1, 10_000))

    def make(**kwargs: Any) -> tuple[Stream, IssuedKey]:
        kwargs.setdefault("owner", user)
        kwargs.setdefault("title", f"Stream {next(counter)}")
        return stream_create(**kwargs)

    return make
