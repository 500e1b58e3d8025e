"""The broadcaster closes the studio tab, in headless Chromium: the watch page shows
"reconnecting" over the last frame within 2 s, without the LIVE badge; the broadcast ends
after the grace period, unless the broadcaster goes live again within it, and then the
same watch page plays on without a reload. A broadcaster with camera off and mic muted is
not away."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.daphne import log_errors
from tests.e2e.conftest import OnAirServer, running_server
from tests.e2e.test_live import _frames, _new_page, _wait_for_frames

GRACE_SECONDS = 4
RECONNECTING_WITHIN_MS = 2000
# Half the default: a muted Chromium still sends a packet every ≤ 0.1 s (bench.idle_publisher).
MEDIA_TIMEOUT_SECONDS = "1"
MUTED_SECONDS = 3

# When the page first showed the broadcaster away (Date.now(), ms), once the hook is set.
WATCH_FOR_AWAY = """() => {
  window.__awayAt = null;
  new MutationObserver(() => {
    if (document.body.dataset.playback === "reconnecting" && window.__awayAt === null) {
      window.__awayAt = Date.now();
    }
  }).observe(document.body, {attributes: true, attributeFilter: ["data-playback"]});
}"""

# Every publisher status the page is told of, from now on.
RECORD_PUBLISHER = """() => {
  window.__publisher = [];
  window.onairWatch.signaling.addEventListener(
    "msg:publisher", (event) => window.__publisher.push(event.detail.status));
}"""

# Every data-playback a page shows, from its first script on (for a page about to load).
RECORD_PLAYBACK_FROM_LOAD = """
  window.__playback = [];
  new MutationObserver(() => window.__playback.push(document.body.dataset.playback))
    .observe(document, {attributes: true, subtree: true, attributeFilter: ["data-playback"]});
"""

PLAYER = """() => {
  const video = document.getElementById("player");
  return {width: video.videoWidth, time: video.currentTime, ready: video.readyState};
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnAirServer]:
    with running_server(
        tmp_path_factory.mktemp("publisher-away"),
        ONAIR_PUBLISHER_GRACE_SECONDS=str(GRACE_SECONDS),
        ONAIR_PUBLISHER_MEDIA_TIMEOUT_SECONDS=MEDIA_TIMEOUT_SECONDS,
    ) as server:
        yield server


def _studio(
    browser: Browser,
    server: OnAirServer,
    contexts: list[BrowserContext],
    login: Callable[[Page, str, str], None],
) -> Page:
    studio = _new_page(browser, server, contexts)
    studio.on("dialog", lambda dialog: dialog.accept())
    login(studio, server.demo_username, server.demo_password)
    studio.goto(f"/studio/{server.demo_slug}/")
    expect(studio.locator("#camera option").first).to_be_attached()
    studio.select_option("#resolution", "360p")
    return studio


def _go_live(studio: Page) -> None:
    studio.click("#go-live")
    expect(studio.locator("#connection-state")).to_have_text("connected")


def _watching(browser: Browser, server: OnAirServer, contexts: list[BrowserContext]) -> Page:
    watch = _new_page(browser, server, contexts)
    watch.goto(f"/watch/{server.demo_slug}/")
    _wait_for_frames(watch, more_than=10)
    expect(watch.locator("#live-badge")).to_be_visible()
    watch.evaluate("window.__pc = window.onairWatch.state.pc")
    watch.evaluate(WATCH_FOR_AWAY)
    return watch


def live_and_watched(
    browser: Browser,
    server: OnAirServer,
    contexts: list[BrowserContext],
    login: Callable[[Page, str, str], None],
) -> tuple[Page, Page]:
    """A studio gone live and a watch page playing it, set to note when it shows the
    broadcaster away."""
    studio = _studio(browser, server, contexts, login)
    _go_live(studio)
    return studio, _watching(browser, server, contexts)


def close_studio_until_reconnecting(studio: Page, watch: Page) -> float:
    """Close the studio tab; the milliseconds until the watch page showed the broadcaster
    away (over the last frame, without the LIVE badge)."""
    closed_at = time.time() * 1000
    studio.close()
    expect(watch.locator("body")).to_have_attribute("data-playback", "reconnecting")
    latency = float(watch.evaluate("window.__awayAt")) - closed_at
    expect(watch.locator("#playback-status")).to_have_text("The broadcaster is reconnecting…")
    expect(watch.locator("#live-badge")).to_be_hidden()
    player = watch.evaluate(PLAYER)
    assert player["width"] > 0, player  # the last frame stays
    assert player["ready"] >= 2, player
    return latency


def test_closing_the_studio_shows_reconnecting_then_ended_after_the_grace_period(
    browser: Browser,
    server: OnAirServer,
    contexts: list[BrowserContext],
    login: Callable[[Page, str, str], None],
) -> None:
    studio, watch = live_and_watched(browser, server, contexts, login)

    latency = close_studio_until_reconnecting(studio, watch)
    assert latency < RECONNECTING_WITHIN_MS, latency
    expect(watch.locator("body")).to_have_attribute(
        "data-stream-state", "ended", timeout=(GRACE_SECONDS + 5) * 1000
    )
    expect(watch.locator("#playback-status")).to_contain_text("ended")
    expect(watch.locator("#live-badge")).to_be_hidden()
    assert log_errors(server.log()) == [], server.log()
    print(f"studio closed: watch page reconnecting after {latency:.0f} ms")


def test_going_live_again_within_the_grace_period_resumes_the_same_watch_page(
    browser: Browser,
    server: OnAirServer,
    contexts: list[BrowserContext],
    login: Callable[[Page, str, str], None],
) -> None:
    studio, watch = live_and_watched(browser, server, contexts, login)
    again = _studio(browser, server, contexts, login)  # a new tab, ready before the close

    latency = close_studio_until_reconnecting(studio, watch)
    assert latency < RECONNECTING_WITHIN_MS, latency
    # A watch page opened while the broadcaster is away says so, and keeps saying so once
    # it has the broadcast's tracks (not "click to start playback").
    late = _new_page(browser, server, contexts)
    late.add_init_script(RECORD_PLAYBACK_FROM_LOAD)
    late.goto(f"/watch/{server.demo_slug}/")
    late.wait_for_function(
        "() => document.getElementById('player').srcObject?.getTracks().length === 2"
    )
    late.wait_for_timeout(300)  # what play() makes of them
    expect(late.locator("body")).to_have_attribute("data-playback", "reconnecting")
    expect(late.locator("#playback-status")).to_have_text("The broadcaster is reconnecting…")
    expect(late.locator("#live-badge")).to_be_hidden()
    assert "blocked" not in late.evaluate("window.__playback"), late.evaluate("window.__playback")
    frames, played = _frames(watch), watch.evaluate(PLAYER)["time"]
    _go_live(again)
    _wait_for_frames(watch, more_than=frames + 10)
    expect(watch.locator("body")).to_have_attribute("data-playback", "playing")
    expect(watch.locator("#live-badge")).to_be_visible()
    expect(watch.locator("#playback-overlay")).to_be_hidden()
    deadline = time.monotonic() + 5
    while watch.evaluate(PLAYER)["time"] <= played + 0.5 and time.monotonic() < deadline:
        watch.wait_for_timeout(100)
    assert watch.evaluate(PLAYER)["time"] > played + 0.5
    assert watch.evaluate("window.__pc === window.onairWatch.state.pc")  # no reload, same pc
    expect(again.locator("#stream-state")).to_have_text("live")
    _wait_for_frames(late, more_than=10)
    expect(late.locator("body")).to_have_attribute("data-playback", "playing")
    expect(late.locator("#live-badge")).to_be_visible()
    assert log_errors(server.log()) == [], server.log()


def test_a_publisher_with_camera_off_and_mic_muted_stays_connected(
    browser: Browser,
    server: OnAirServer,
    contexts: list[BrowserContext],
    login: Callable[[Page, str, str], None],
) -> None:
    """Chromium's disabled tracks send black frames and silence: never taken for a publisher
    whose media stopped (here with half the default media timeout)."""
    studio, watch = live_and_watched(browser, server, contexts, login)
    watch.evaluate(RECORD_PUBLISHER)

    studio.click("#mute-camera")
    studio.click("#mute-mic")
    assert studio.evaluate(
        "[...document.getElementById('preview').srcObject.getTracks()].every((t) => !t.enabled)"
    )
    frames = _frames(watch)
    watch.wait_for_timeout(MUTED_SECONDS * 1000)  # muted for 3 media timeouts
    assert watch.evaluate("window.__publisher") == []
    assert watch.evaluate("window.__awayAt") is None
    expect(watch.locator("body")).to_have_attribute("data-playback", "playing")
    expect(watch.locator("#live-badge")).to_be_visible()
    _wait_for_frames(watch, more_than=frames)  # black frames still arrive
    studio.close()
    assert log_errors(server.log()) == [], server.log()
