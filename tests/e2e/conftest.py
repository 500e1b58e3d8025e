"""Real-browser fixtures: a daphne server in a subprocess on a fresh database, and headless
Chromium through Playwright (the system's /usr/bin/chromium; Playwright never downloads one).

Reuse them for any page test::

    def test_something(onair_server: OnAirServer, page: Page) -> None:
        page.goto(onair_server.url("/"))
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from onair.environment import app_environment
from tests.daphne import (
    ASGI_APP,
    ROOT,
    LogWatch,
    daphne_command,
    daphne_process,
    free_port,
    log_errors,
    manage,
)

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
ARTIFACTS = ROOT / "test-artifacts" / "e2e"

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.e2e)


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
    process: subprocess.Popen[bytes]
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    def manage(self, *args: str) -> str:
        """Run a ``manage.py`` command against this server's database; returns stdout."""
        return manage(self.env, *args)

    def create_user(self, username: str, password: str, *, staff: bool = False) -> None:
        code = (
            "from django.contrib.auth.models import User; "
            f"User.objects.create_user({username!r}, password={password!r}, is_staff={staff})"
        )
        self.manage("shell", "-c", code)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_server(
    workdir: Path, *, app: str = ASGI_APP, host: str = "127.0.0.1", **settings: str
) -> Iterator[OnAirServer]:
    """daphne serving ``app`` on a free port of ``host``, as ``make run`` starts it, on a
    freshly migrated database in ``workdir`` that holds the demo user and stream; ``settings``
    are extra environment variables (``ONAIR_*``). Its output goes to ``workdir/daphne.log``.
    """
    env = app_environment(
        database_url=f"sqlite:///{workdir / 'db.sqlite3'}",
        RECORDINGS_ROOT=str(workdir / "recordings"),
        ONAIR_RECORDING_SPOOL_DIR=str(workdir / "recording-spool"),
        # posters as ``make run`` takes them (every live page test has them), in workdir
        THUMBNAILS_ROOT=str(workdir / "thumbnails"),
        ONAIR_THUMBNAIL_SECONDS="10",
        **settings,
    )
    manage(env, "migrate", "--noinput", "-v0")
    port = free_port(host)
    demo = manage(env, "onair_demo", "--port", str(port))
    login = re.search(r"Demo login\s+(\S+) / (\S+)", demo)
    slug = re.search(r"slug: (\S+)", demo)
    key = re.search(r"Stream key\s+(sk_\S+)", demo)
    if not (login and slug and key):
        raise RuntimeError(f"unexpected onair_demo output:\n{demo}")
    command = daphne_command(port, app, host)
    log_path = workdir / "daphne.log"
    with daphne_process(
        env, log_path, host=host, port=port, command=command, startup_seconds=30
    ) as daphne:
        yield OnAirServer(
            base_url=daphne.base_url,
            env=env,
            demo_username=login[1],
            demo_password=login[2],
            demo_slug=slug[1],
            demo_stream_key=key[1],
            log_path=daphne.log_path,
            process=daphne.process,
            port=port,
        )


@pytest.fixture(scope="session")
def onair_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnAirServer]:
    """daphne on a free port (see ``running_server``)."""
    with running_server(tmp_path_factory.mktemp("onair-server")) as server:
        yield server
    # What it logged while stopping (its tests' own records failed each of them already).
    assert log_errors(server.log()) == [], server.log()[-6000:]


@pytest.fixture(autouse=True)
def _no_server_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the test if a server it used (``onair_server``, ``cluster``) logged an ERROR
    record or a traceback while it ran: nothing a client does may make the server log one."""
    logs: list[Callable[[], list[Path]]] = []
    if "onair_server" in request.fixturenames:
        server: OnAirServer = request.getfixturevalue("onair_server")
        logs.append(lambda: [server.log_path])
    if "cluster" in request.fixturenames:
        workdir: Path = request.getfixturevalue("cluster").workdir
        logs.append(lambda: sorted(workdir.glob("*.log")))
    watch = LogWatch(lambda: [path for listed in logs for path in listed()])
    yield
    errors = watch.errors()
    if errors:
        pytest.fail("the server logged errors during this test:\n" + "\n".join(errors))


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


@pytest.fixture
def contexts() -> Iterator[list[BrowserContext]]:
    """Extra browser contexts (separate cookies, like separate people); closed afterwards."""
    opened: list[BrowserContext] = []
    yield opened
    for context in opened:
        context.close()


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
