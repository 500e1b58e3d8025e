"""Every page in each of its states, at a desktop and a phone size: a screenshot of each
into test-artifacts/layouts/, no sideways scrolling, and no serious or critical finding of
axe-core (the accessibility engine, bundled by axe-playwright-python: nothing is downloaded).

One server, one browser; the broadcast goes idle → live → ended while the pages are looked at
in turn, each at both sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.e2e.conftest import OnAirServer

SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "layouts"
SIZES = ((1366, 800), (390, 844))
# The narrowest phones in use: checked for sideways scrolling too.
NARROWEST = (360, 780)
REPORTED_IMPACTS = {"serious", "critical"}

_axe = Axe()


def _check(page: Page, name: str, findings: dict[str, list[str]]) -> None:
    """At each size: a screenshot, the document's width, axe's serious and critical findings;
    at the narrowest, the document's width."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for width, height in (*SIZES, NARROWEST):
        page.set_viewport_size({"width": width, "height": height})
        shown = f"{name}-{width}x{height}"
        overflow = page.evaluate(
            "() => [document.documentElement.scrollWidth, window.innerWidth,"
            " [...document.querySelectorAll('body *')].filter((el) =>"
            " el.getBoundingClientRect().right > window.innerWidth + 0.5)"
            ".slice(0, 5).map((el) => el.tagName + (el.id ? '#' + el.id : '')"
            " + (el.className && typeof el.className === 'string' ? '.' + el.className : ''))]"
        )
        scroll_width, inner_width, wide = overflow
        if scroll_width > inner_width:
            findings[shown].append(f"scrolls sideways: {scroll_width} > {inner_width} ({wide})")
        if (width, height) == NARROWEST:
            continue
        page.screenshot(path=str(SHOTS / f"{shown}.png"), full_page=True)
        results = _axe.run(page)
        for violation in results.response["violations"]:
            if violation["impact"] in REPORTED_IMPACTS:
                targets = [node["target"] for node in violation["nodes"]][:3]
                findings[shown].append(
                    f"axe {violation['impact']} {violation['id']}: {violation['help']} {targets}"
                )


def _stream(server: OnAirServer, title: str, *, record: bool) -> str:
    """A new public stream of the demo user; its slug."""
    code = (
        "from django.contrib.auth.models import User; "
        "from broadcast.services import stream_create; "
        f"stream, _ = stream_create(owner=User.objects.get(username={server.demo_username!r}),"
        f" title={title!r}, description='Checking how the pages look.', record={record}); "
        "print(stream.slug)"
    )
    return server.manage("shell", "-c", code).split()[-1]


def _go_live(studio: Page) -> None:
    expect(studio.locator("#go-live")).to_be_enabled(timeout=20_000)
    studio.click("#go-live")
    expect(studio.locator("#connection-state")).to_have_text("connected", timeout=20_000)
    expect(studio.locator("#live-pill")).to_be_visible()


def _end(studio: Page) -> None:
    studio.once("dialog", lambda dialog: dialog.accept())
    studio.click("#end-broadcast")
    expect(studio.locator("#stream-state")).to_have_text("ended")


@pytest.mark.timeout(240)
def test_pages_fit_phones_and_pass_axe(
    onair_server: OnAirServer,
    browser: Browser,
    contexts: list[BrowserContext],
    login: Callable[[Page, str, str], None],
) -> None:
    server = onair_server
    shown = _stream(server, "Layout check", record=False)
    recorded = _stream(server, "Layout check, recorded", record=True)
    findings: dict[str, list[str]] = {}

    def check(page: Page, name: str) -> None:
        for width, height in (*SIZES, NARROWEST):
            findings.setdefault(f"{name}-{width}x{height}", [])
        _check(page, name, findings)

    def new_page() -> Page:
        context = browser.new_context(
            base_url=server.base_url, viewport={"width": SIZES[0][0], "height": SIZES[0][1]}
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    visitor = new_page()
    for path, name in (("/accounts/login/", "login"), ("/accounts/signup/", "signup")):
        visitor.goto(path)
        check(visitor, name)
    visitor.goto("/no-such-page/")
    check(visitor, "not-found")

    owner = new_page()
    login(owner, server.demo_username, server.demo_password)
    check(owner, "my-streams")
    owner.once("dialog", lambda dialog: dialog.accept())
    owner.locator(f'tr[data-slug="{shown}"]').get_by_role("button", name="New key").click()
    expect(owner.locator("#new-key")).to_be_visible()
    check(owner, "my-streams-new-key")
    owner.goto(f"/streams/{shown}/edit/")
    check(owner, "stream-edit")
    owner.goto(f"/whep/{shown}/player/")
    check(owner, "whep-player")

    studio = owner
    studio.goto(f"/studio/{shown}/")
    expect(studio.locator("#go-live")).to_be_enabled(timeout=20_000)
    check(studio, "studio-idle")

    viewer = new_page()
    viewer.goto(f"/watch/{shown}/")
    expect(viewer.locator("#playback-status")).to_contain_text("Offline")
    check(viewer, "watch-offline")

    _go_live(studio)
    check(studio, "studio-live")
    expect(viewer.locator("#playback-overlay")).to_be_hidden(timeout=20_000)
    check(viewer, "watch-live")
    viewer.goto("/")
    expect(viewer.locator(f'.stream-card[data-slug="{shown}"]')).to_be_visible()
    check(viewer, "home")

    viewer.goto(f"/watch/{shown}/")
    expect(viewer.locator("#playback-overlay")).to_be_hidden(timeout=20_000)
    _end(studio)
    expect(viewer.locator("#playback-status")).to_contain_text("ended")
    check(viewer, "watch-ended")

    studio.goto(f"/studio/{recorded}/")
    _go_live(studio)
    expect(studio.locator("#rec-indicator")).to_be_visible(timeout=20_000)
    check(studio, "studio-recording")
    _end(studio)

    # The recording: on its stream's page, among the past broadcasts, and its replay page.
    owner.goto(f"/watch/{recorded}/")
    expect(owner.locator("#replay-link")).to_be_visible(timeout=30_000)
    expect(owner.locator("#past-broadcasts .recording-item")).to_have_count(1)
    check(owner, "watch-past-broadcasts")
    owner.click("#replay-link")
    expect(owner.locator("#replay")).to_be_visible()
    check(owner, "replay")
    owner.goto("/streams/")
    # this test's two streams (the demo user's list also holds what earlier tests ended)
    for slug in (shown, recorded):
        expect(owner.locator(f'tr[data-slug="{slug}"] .badge.ended')).to_have_count(1)
    check(owner, "my-streams-ended")

    failed = {page: found for page, found in findings.items() if found}
    assert not failed, "\n".join(
        f"{page}: {line}" for page, lines in failed.items() for line in lines
    )
