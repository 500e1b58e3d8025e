"""Stopping and restarting the server under a live broadcast, in headless Chromium: SIGTERM
stops daphne within seconds and the watch page and the WHEP player page show "reconnecting"
(the watch page without its LIVE badge); once the server is back (same port, same database)
the studio publishes again by itself and both pages play on. A server SIGKILLed under a
broadcast leaves it live in the database: the next one to start ends it after the publisher
grace period, unless its publisher came back, and the pages show it ended."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.daphne import daphne_command, daphne_process, log_errors
from tests.e2e.conftest import OnAirServer, running_server
from tests.e2e.test_live import _frames, _new_page, _wait_for_frames

STOP_WITHIN_SECONDS = 5.0
RESTART_GRACE_SECONDS = 15  # long enough for the studio's reconnect backoff
KILLED_GRACE_SECONDS = 3

# Every data-playback the watch page shows, and every publisher status it is told of, from
# now on.
RECORD_PLAYBACK = """() => {
  window.__playback = [];
  new MutationObserver(() => window.__playback.push(document.body.dataset.playback))
    .observe(document.body, {attributes: true, attributeFilter: ["data-playback"]});
  window.__publisher = [];
  window.onairWatch.signaling.addEventListener(
    "msg:publisher", (event) => window.__publisher.push(event.detail.status));
}"""

# Video frames the WHEP player page's current peer connection decoded.
WHEP_FRAMES = """async () => {
  const pc = window.onairWhep.state.pc;
  let frames = 0;
  if (pc) (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") frames = s.framesDecoded || 0;
  });
  return frames;
}"""


def _live_slugs(base_url: str) -> list[str]:
    with urllib.request.urlopen(f"{base_url}/api/v1/live/", timeout=5) as response:
        return [stream["slug"] for stream in json.load(response)["results"]]


def _wait_for_whep_frames(player: Page, more_than: int, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while int(player.evaluate(WHEP_FRAMES)) <= more_than and time.monotonic() < deadline:
        player.wait_for_timeout(100)
    assert int(player.evaluate(WHEP_FRAMES)) > more_than


def _stopped_within(server: OnAirServer, signum: int) -> float:
    """Send ``signum``; the seconds until the process exited (failing past the bound)."""
    sent = time.monotonic()
    os.kill(server.pid, signum)
    server.process.wait(timeout=30)
    return time.monotonic() - sent


def test_sigterm_under_a_live_broadcast_then_restart_then_sigkill(
    browser: Browser,
    contexts: list[BrowserContext],
    login: Callable[[Page, str, str], None],
    tmp_path: Path,
) -> None:
    grace = {"ONAIR_PUBLISHER_GRACE_SECONDS": str(RESTART_GRACE_SECONDS)}
    with running_server(tmp_path, **grace) as server:
        studio = _new_page(browser, server, contexts)
        login(studio, server.demo_username, server.demo_password)
        studio.goto(f"/studio/{server.demo_slug}/")
        expect(studio.locator("#camera option").first).to_be_attached()
        studio.click("#go-live")
        expect(studio.locator("#connection-state")).to_have_text("connected")
        watch = _new_page(browser, server, contexts)
        watch.goto(f"/watch/{server.demo_slug}/")
        _wait_for_frames(watch, more_than=10)
        expect(studio.locator("#viewer-count")).to_have_text("1")
        player = _new_page(browser, server, contexts)
        player.goto(f"/whep/{server.demo_slug}/player/")
        player.click("#whep-play")
        expect(player.locator("#whep-status")).to_have_text("connected")
        watch.evaluate(RECORD_PLAYBACK)

        # SIGTERM: the process is gone within 5 s; the viewers see "reconnecting", and the
        # watch page claims no LIVE while its server is down. It was told before the close.
        stopped_after = _stopped_within(server, signal.SIGTERM)
        assert stopped_after < STOP_WITHIN_SECONDS, server.log()
        assert watch.evaluate("window.__publisher") == ["reconnecting"]
        expect(watch.locator("body")).to_have_attribute("data-playback", "reconnecting")
        expect(watch.locator("#live-badge")).to_be_hidden()
        expect(player.locator("#whep-status")).to_have_text("reconnecting")
        expect(studio.locator("body")).to_have_attribute("data-connection", "reconnecting")
        assert log_errors(server.log()) == [], server.log()
        print(f"SIGTERM under a live broadcast: exited after {stopped_after:.2f} s")

        # Restarted on the same port and database: the studio publishes again by itself,
        # and the pages play on, without a reload; the stream never stopped being live.
        env = {**server.env, **grace}
        restarted_log = tmp_path / "daphne-restarted.log"
        command = daphne_command(server.port)
        with daphne_process(env, restarted_log, port=server.port, command=command) as again:
            expect(studio.locator("#connection-state")).to_have_text("connected", timeout=20_000)
            expect(studio.locator("#stream-state")).to_have_text("live")
            frames = _frames(watch)
            _wait_for_frames(watch, more_than=frames + 10)
            expect(watch.locator("body")).to_have_attribute("data-playback", "playing")
            expect(watch.locator("#live-badge")).to_be_visible()
            # Away, then back: never "click to start playback" on the way.
            assert "blocked" not in watch.evaluate("window.__playback"), watch.evaluate(
                "window.__playback"
            )
            expect(player.locator("#whep-status")).to_have_text("connected", timeout=20_000)
            _wait_for_whep_frames(player, more_than=10)
            # Each counted once, after the count the stopped process left was reset.
            expect(studio.locator("#viewer-count")).to_have_text("2")
            assert _live_slugs(again.base_url) == [server.demo_slug]

            # SIGKILL, with the studio gone: nothing tells anyone; the database says live.
            studio.close()
            os.kill(again.pid, signal.SIGKILL)
            again.process.wait(timeout=10)
            expect(watch.locator("body")).to_have_attribute("data-playback", "reconnecting")
            expect(watch.locator("#live-badge")).to_be_hidden()
            # No server closed the player's connection: ICE notices (consent, ≈ 6.5 s).
            expect(player.locator("#whep-status")).to_have_text("reconnecting", timeout=15_000)
        assert log_errors(restarted_log.read_text()) == [], restarted_log.read_text()

        # The next server waits out the grace period for a publisher, then ends it.
        env = {**server.env, "ONAIR_PUBLISHER_GRACE_SECONDS": str(KILLED_GRACE_SECONDS)}
        last_log = tmp_path / "daphne-after-kill.log"
        with daphne_process(env, last_log, port=server.port, command=command) as last:
            serving = time.monotonic()
            assert _live_slugs(last.base_url) == [server.demo_slug]
            while server.demo_slug in _live_slugs(last.base_url):
                assert time.monotonic() - serving < KILLED_GRACE_SECONDS + 3, last.log()
                time.sleep(0.1)
            ended_after = time.monotonic() - serving
            expect(watch.locator("body")).to_have_attribute(
                "data-stream-state", "ended", timeout=15_000
            )
            expect(player.locator("#whep-status")).to_contain_text("ended", timeout=15_000)
            print(f"left live by a SIGKILLed server: ended {ended_after:.2f} s after restart")
        assert log_errors(last_log.read_text()) == [], last_log.read_text()
