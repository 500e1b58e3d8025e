"""Real-browser fixtures: a daphne server in a subprocess on a fresh database, and headless
Chromium through Playwright (the system's /usr/bin/chromium; Playwright never downloads one).

Reuse them for any page test::

    def test_something(onair_server: OnAirServer, page: Page) -> None:
        page.goto(onair_server.url("/"))
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from onair.environment import app_environment

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ASGI_APP = "onair.asgi:application"
ARTIFACTS = ROOT / "test-artifacts" / "e2e"

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.e2e)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class OnAirServer:
    """A running daphne serving OnAir on 127.0.0.1, with its own SQLite database."""

    base_url: str
    env: dict[str, str]
    demo_username: str
    demo_password: str
    demo_slug: str
    demo_stream_key: str
    log_path: Path
    _process: subprocess.Popen[bytes] = field(repr=False)

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    def manage(self, *args: str) -> str:
        """Run a ``manage.py`` command against this server's database; returns stdout."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def create_user(self, username: str, password: str, *, staff: bool = False) -> None:
        code = (
            "from django.contrib.auth.models import User; "
            f"User.objects.create_user({username!r}, password={password!r}, is_staff={staff})"
        )
        self.manage("shell", "-c", code)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def pid(self) -> int:
        return self._process.pid


def _wait_until_serving(server: OnAirServer, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daphne exited with {process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.url("/healthz"), timeout=2) as response:
                if json.load(response) == {"status": "ok"}:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"daphne did not answer within 30 s:\n{server.log()}")


@contextmanager
def running_server(workdir: Path, *, app: str = ASGI_APP, **settings: str) -> Iterator[OnAirServer]:
    """daphne serving ``app`` on a free port, as ``make run`` starts it, on a freshly
    migrated database in ``workdir`` that holds the demo user and stream; ``settings`` are
    extra environment variables (``ONAIR_*``). Its output goes to ``workdir/daphne.log``.
    """
    port = _free_port()
    env = app_environment(database_url=f"sqlite:///{workdir / 'db.sqlite3'}", **settings)
    bootstrap = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bootstrap.returncode == 0, bootstrap.stderr
    log_path = workdir / "daphne.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = OnAirServer(
        base_url=f"http://127.0.0.1:{port}",
        env=env,
        demo_username="",
        demo_password="",
        demo_slug="",
        demo_stream_key="",
        log_path=log_path,
        _process=process,
    )
    try:
        demo = server.manage("onair_demo", "--port", str(port))
        login = re.search(r"Demo login\s+(\S+) / (\S+)", demo)
        slug = re.search(r"slug: (\S+)", demo)
        key = re.search(r"Stream key\s+(sk_\S+)", demo)
        if not (login and slug and key):
            raise RuntimeError(f"unexpected onair_demo output:\n{demo}")
        server.demo_username, server.demo_password = login.groups()
        server.demo_slug, server.demo_stream_key = slug[1], key[1]
        _wait_until_serving(server, process)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def onair_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnAirServer]:
    """daphne on a free port (see ``running_server``)."""
    with running_server(tmp_path_factory.mktemp("onair-server")) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for one test module. Not session-wide: Playwright's sync API keeps an event
    loop marked as running while it is open, which would break every asyncio test after it.
    """
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is not installed (make browser installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def context(browser: Browser, onair_server: OnAirServer) -> Iterator[BrowserContext]:
    context = browser.new_context(
        base_url=onair_server.base_url, viewport={"width": 1280, "height": 800}
    )
    context.set_default_timeout(10_000)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh page (own cookies); on failure its screenshot goes to test-artifacts/e2e/."""
    page = context.new_page()
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-failed.png"), full_page=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


def _login(page: Page, username: str, password: str) -> None:
    page.goto("/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/streams/")


@pytest.fixture
def login() -> Callable[[Page, str, str], None]:
    """``login(page, username, password)`` through the real login form."""
    return _login


@pytest.fixture
def logged_in_page(page: Page, onair_server: OnAirServer) -> Page:
    """``page``, logged in as the demo (staff) user."""
    _login(page, onair_server.demo_username, onair_server.demo_password)
    return page
