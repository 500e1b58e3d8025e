"""Cluster mode in real headless Chromium: the studio page on daphne A, three watch pages on
daphne B, two SFU workers with room for two viewers each. Killing the edge worker, the
watch page on it plays again by itself (watch.js takes the new offer), within 5 s.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Callable

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.cluster import (
    CLUSTER_SKIP,
    Cluster,
    cluster_fixture,  # noqa: F401 (provides the "cluster" fixture)
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow, CLUSTER_SKIP]

# The current peer connection (tagged, to tell a new one) and its decoded video frames.
PLAYBACK = """async () => {
  const pc = window.onairWatch.state.pc;
  if (!pc) return {pc: "", frames: 0};
  pc.onairTag = pc.onairTag || Math.random().toString(36).slice(2);
  let frames = 0;
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") frames = s.framesDecoded || 0;
  });
  return {pc: pc.onairTag, frames};
}"""


SHOWN = "() => document.getElementById('player').getVideoPlaybackQuality().totalVideoFrames"


def _shown(page: Page) -> int:
    """Frames the player put on screen."""
    return int(page.evaluate(SHOWN))


def _playback(page: Page) -> tuple[str, int]:
    state = page.evaluate(PLAYBACK)
    return str(state["pc"]), int(state["frames"])


def _page(browser: Browser, base_url: str, opened: list[BrowserContext]) -> Page:
    context = browser.new_context(base_url=base_url)
    context.set_default_timeout(15_000)
    opened.append(context)
    return context.new_page()


def test_a_watch_page_on_a_killed_edge_plays_again_by_itself(
    browser: Browser, cluster: Cluster
) -> None:
    daphne_a, daphne_b = cluster.daphne
    username, password = f"caster{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    slug = cluster.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        "from broadcast.services import stream_create; "
        f"owner = User.objects.create_user({username!r}, password={password!r}); "
        "print(stream_create(owner=owner, title='Cluster browser')[0].slug)",
    ).split()[-1]
    opened: list[BrowserContext] = []
    try:
        studio = _page(browser, daphne_a, opened)
        studio.goto("/accounts/login/")
        studio.fill("#id_username", username)
        studio.fill("#id_password", password)
        studio.click("button[type=submit]")
        studio.wait_for_url("**/streams/")
        studio.goto(f"/studio/{slug}/")
        expect(studio.locator("#camera option").first).to_be_attached()
        studio.click("#go-live")
        expect(studio.locator("#stream-state")).to_have_text("live")

        viewers = []
        for _ in range(3):
            viewer = _page(browser, daphne_b, opened)
            viewer.goto(f"/watch/{slug}/")
            viewers.append(viewer)
        for viewer in viewers:
            _wait(lambda v=viewer: _playback(v)[1] > 10, 20)
        expect(studio.locator("#viewer-count")).to_have_text("3")

        edge = next(w for w in cluster.workers() if w.pipes_in)
        before = [_playback(v) for v in viewers]
        killed_at = time.monotonic()
        os.kill(edge.pid, signal.SIGKILL)

        moved: dict[int, float] = {}
        while time.monotonic() < killed_at + 6:
            for index, viewer in enumerate(viewers):
                pc, frames = _playback(viewer)
                if pc != before[index][0] and frames > 0 and index not in moved:
                    moved[index] = time.monotonic() - killed_at
            time.sleep(0.1)
        print(f"\nedge killed: pages playing again after {sorted(moved.values())} s")
        assert len(moved) == 1, moved
        assert all(seconds < 5.0 for seconds in moved.values())
        for index, viewer in enumerate(viewers):
            pc, frames = _playback(viewer)
            if index not in moved:
                assert pc == before[index][0]
                assert frames > before[index][1] + 60  # 6 s passed: it kept playing
            shown = _shown(viewer)
            _wait(lambda v=viewer, s=shown: _shown(v) > s + 10, 5)  # the player shows it
            expect(viewer.locator("#playback-overlay")).to_be_hidden()
            expect(viewer.locator("#viewer-count")).to_have_text("3")
        expect(studio.locator("#viewer-count")).to_have_text("3")
    finally:
        for context in opened:
            context.close()


def _wait(condition: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
