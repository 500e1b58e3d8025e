"""The watch page's quality menu with a simulcast studio (issue #20): Auto and each layer by
height, a chosen layer is what the page decodes, switching between any two layers never
makes the viewer wait for a keyframe, Auto brings the top layer back, and the menu goes
away with the broadcast."""

from __future__ import annotations

import time
from collections.abc import Callable

from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.e2e.conftest import OnAirServer
from tests.e2e.test_live import _new_page, _restart_demo_stream, _wait_for_frames

FRAME_HEIGHT = """async () => {
  const pc = window.onairWatch.state.pc;
  let height = 0;
  if (pc) (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") height = s.frameHeight || 0;
  });
  return height;
}"""


VIDEO_STATS = """async () => {
  const pc = window.onairWatch.state.pc;
  let found = {};
  if (pc) (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") found = s;
  });
  return {pli: found.pliCount || 0, decoded: found.framesDecoded || 0,
          freezes: found.freezeCount || 0};
}"""


def _wait_for_height(page: Page, wanted: Callable[[int], bool], within: float = 15.0) -> int:
    deadline = time.monotonic() + within
    height = int(page.evaluate(FRAME_HEIGHT))
    while not wanted(height) and time.monotonic() < deadline:
        page.wait_for_timeout(200)
        height = int(page.evaluate(FRAME_HEIGHT))
    assert wanted(height), f"frameHeight stayed at {height}"
    return height


def test_a_viewer_chooses_a_layer_and_goes_back_to_auto(
    browser: Browser,
    onair_server: OnAirServer,
    page: Page,
    contexts: list[BrowserContext],
    login: Callable[[Page, str, str], None],
) -> None:
    server = onair_server
    _restart_demo_stream(server)
    login(page, server.demo_username, server.demo_password)
    studio = page
    studio.goto(f"/studio/{server.demo_slug}/")
    expect(studio.locator("#camera option").first).to_be_attached()
    studio.select_option("#resolution", "720p")
    studio.click("#go-live")
    expect(studio.locator("#stream-state")).to_have_text("live", timeout=30_000)

    viewer = _new_page(browser, server, contexts)
    viewer.goto(f"/watch/{server.demo_slug}/")
    _wait_for_frames(viewer, more_than=0)
    menu = viewer.locator("#quality-select")
    expect(menu).to_be_visible()
    expect(viewer.get_by_label("Quality")).to_be_visible()
    expect(menu.locator("option")).to_have_text(["Auto", "720p", "360p", "180p"])
    top = _wait_for_height(viewer, lambda height: height >= 540)
    expect(viewer.locator("#quality-current")).to_have_text("Auto (720p)")

    menu.select_option(label="180p")
    _wait_for_height(viewer, lambda height: 0 < height <= 180)
    expect(viewer.locator("#quality-current")).to_have_text("180p")

    # Every layer numbers its VP8 pictures on its own; the SFU makes the numbers continue
    # across a switch. Where they jumped back, or repeated, Chromium dropped the new layer's
    # frames and asked for a keyframe (PLI) after 1-3 s of frozen picture.
    before = viewer.evaluate(VIDEO_STATS)
    for label, wanted in [
        ("360p", lambda height: 180 < height <= 360),
        ("720p", lambda height: height == top),
        ("360p", lambda height: 180 < height <= 360),
        ("180p", lambda height: 0 < height <= 180),
        ("720p", lambda height: height == top),
        ("180p", lambda height: 0 < height <= 180),
    ] * 2:
        menu.select_option(label=label)
        _wait_for_height(viewer, wanted)
        decoded = viewer.evaluate(VIDEO_STATS)["decoded"]
        viewer.wait_for_function(
            f"async () => (await ({VIDEO_STATS})()).decoded >= {decoded + 10}", timeout=10_000
        )
    after = viewer.evaluate(VIDEO_STATS)
    assert after["pli"] == before["pli"], (before, after)

    menu.select_option(label="Auto")
    _wait_for_height(viewer, lambda height: height == top)
    expect(viewer.locator("#quality-current")).to_have_text("Auto (720p)")

    studio.once("dialog", lambda dialog: dialog.accept())
    studio.click("#end-broadcast")
    expect(viewer.locator("#playback-status")).to_contain_text("ended")
    expect(viewer.locator("#quality-menu")).to_be_hidden()
