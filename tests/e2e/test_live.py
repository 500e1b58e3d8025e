"""Going live and watching in real headless Chromium (fake camera and microphone) through
the real daphne server, Channels signaling and the in-process SFU.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.e2e.conftest import OnAirServer

SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"

FRAMES_DECODED = """async () => {
  const pc = window.onairWatch.state.pc;
  if (!pc) return 0;
  let frames = 0;
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") frames = s.framesDecoded || 0;
  });
  return frames;
}"""


def _frames(page: Page) -> int:
    return int(page.evaluate(FRAMES_DECODED))


def _wait_for_frames(page: Page, more_than: int, within: float = 20.0) -> int:
    deadline = time.monotonic() + within
    frames = _frames(page)
    while frames <= more_than and time.monotonic() < deadline:
        page.wait_for_timeout(250)
        frames = _frames(page)
    assert frames > more_than, f"framesDecoded stayed at {frames}"
    return frames


def _viewer(browser: Browser, server: OnAirServer) -> tuple[BrowserContext, Page]:
    context = browser.new_context(base_url=server.base_url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    return context, page


def _shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_go_live_watch_switch_source_and_end(
    browser: Browser,
    onair_server: OnAirServer,
    page: Page,
    login: Callable[[Page, str, str], None],
) -> None:
    server = onair_server
    server.manage("shell", "-c", _restart_demo_stream(server.demo_slug))
    login(page, server.demo_username, server.demo_password)

    # A viewer who arrives before the broadcast sees "offline" and waits.
    viewer_context, viewer = _viewer(browser, server)
    viewer.goto(f"/watch/{server.demo_slug}/")
    expect(viewer.locator("#playback-status")).to_contain_text("Offline")

    studio = page
    studio.goto(f"/studio/{server.demo_slug}/")
    expect(studio.locator("#camera option").first).to_be_attached()
    studio.click("#go-live")
    expect(studio.locator("#connection-state")).to_have_text("connected", timeout=20_000)
    expect(studio.locator("#stream-state")).to_have_text("live")

    # The waiting viewer starts by itself.
    frames = _wait_for_frames(viewer, more_than=10)
    expect(viewer.locator("#live-badge")).to_be_visible()
    expect(viewer.locator("#viewer-count")).to_have_text("1")
    expect(studio.locator("#viewer-count")).to_have_text("1")
    expect(studio.locator("#peak-viewers")).to_have_text("1")
    expect(viewer.locator("#playback-overlay")).to_be_hidden()
    expect(viewer.locator("#stats")).to_be_hidden()
    # Muted autoplay, with a control to unmute.
    assert viewer.evaluate("document.getElementById('player').muted") is True
    viewer.click("#unmute")
    assert viewer.evaluate("document.getElementById('player').muted") is False
    viewer.click("#stats-toggle")
    expect(viewer.locator("#frames-decoded")).not_to_have_text("0")
    expect(studio.locator("#out-bitrate")).to_contain_text("bps")

    # Switching to the screen replaces the track: the viewer keeps decoding, no new offer.
    assert viewer.evaluate("(window.__pc = window.onairWatch.state.pc) !== null")
    studio.click("#source-screen")
    expect(studio.locator("#source-label")).to_have_text("Screen")
    frames = _wait_for_frames(viewer, more_than=frames + 20)
    assert viewer.evaluate("window.__pc === window.onairWatch.state.pc")
    _shot(studio, "studio-live")
    _shot(viewer, "watch-live")

    # Local recording of what is broadcast.
    studio.click("#record-start")
    studio.wait_for_timeout(1500)
    studio.click("#record-stop")
    expect(studio.locator("#recording-download")).to_be_visible()
    expect(studio.locator("#recording-state")).to_contain_text(re.compile(r"recorded \d"))

    # Ending: the studio confirms, every viewer sees "ended".
    studio.once("dialog", lambda dialog: dialog.accept())
    studio.click("#end-broadcast")
    expect(viewer.locator("#playback-status")).to_contain_text("ended")
    expect(studio.locator("#stream-state")).to_have_text("ended")
    viewer_context.close()


def _restart_demo_stream(slug: str) -> str:
    """Shell code putting the demo stream back to idle, whatever an earlier test did."""
    return (
        "from broadcast.models import Stream; "
        "from broadcast.services import stream_end, stream_restart; "
        f"s = Stream.objects.get(slug={slug!r}); "
        "s = stream_end(stream=s) if s.state == 'live' else s; "
        "s = stream_restart(stream=s) if s.state == 'ended' else s"
    )
