"""The studio says what is happening: LIVE and the time since the server's start (a reload
shows the same), End asks first, and a camera that delivers less than picked is named."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.e2e.conftest import OnAirServer


def _stream(server: OnAirServer, title: str) -> str:
    code = (
        "from django.contrib.auth.models import User; "
        "from broadcast.services import stream_create; "
        f"stream, _ = stream_create(owner=User.objects.get(username={server.demo_username!r}),"
        f" title={title!r}, record=False); "
        "print(stream.slug)"
    )
    return server.manage("shell", "-c", code).split()[-1]


def test_live_state_on_the_preview_survives_a_reload_and_end_asks_first(
    onair_server: OnAirServer, logged_in_page: Page
) -> None:
    slug = _stream(onair_server, "Studio state")
    studio = logged_in_page
    studio.goto(f"/studio/{slug}/")
    expect(studio.locator("#preview-pill")).to_be_visible()
    expect(studio.locator("#live-pill")).to_be_hidden()
    expect(studio.locator("#end-broadcast")).to_be_hidden()
    expect(studio.locator("#go-live")).to_be_enabled(timeout=20_000)
    studio.click("#go-live")
    expect(studio.locator("#connection-state")).to_have_text("connected", timeout=20_000)
    expect(studio.locator("#live-pill")).to_be_visible()
    expect(studio.locator("#stage-viewers")).to_be_visible()
    expect(studio.locator("#preview-pill")).to_be_hidden()
    expect(studio.locator("#go-live")).to_be_hidden()  # End is the one thing to do

    # A reload shows the broadcast live, timed from the server's start, not from the page's.
    studio.reload()
    expect(studio.locator("#live-pill")).to_be_visible()
    expect(studio.locator("#stream-state")).to_have_text("live")
    started_at = studio.request.get(f"/api/v1/streams/{slug}/").json()["started_at"]
    assert studio.evaluate(
        "(startedAt) => window.onairStudio.state.startedAt === Date.parse(startedAt)", started_at
    )

    # End asks first: declined, the broadcast goes on; accepted, it ends.
    asked: list[str] = []
    studio.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    studio.click("#end-broadcast")
    assert asked == ["End the broadcast for every viewer?"]
    expect(studio.locator("#stream-state")).to_have_text("live")
    studio.once("dialog", lambda dialog: dialog.accept())
    studio.click("#end-broadcast")
    expect(studio.locator("#stream-state")).to_have_text("ended")
    expect(studio.locator("#live-pill")).to_be_hidden()
    expect(studio.locator("#end-broadcast")).to_be_hidden()


def test_a_camera_that_delivers_less_than_picked_is_named(
    onair_server: OnAirServer, logged_in_page: Page
) -> None:
    # Chromium's fake camera runs at 20 fps whatever is asked.
    studio = logged_in_page
    studio.goto(f"/studio/{onair_server.demo_slug}/")
    expect(studio.locator("#camera option").first).to_be_attached(timeout=20_000)
    studio.select_option("#resolution", "1080p")
    studio.select_option("#framerate", "60")
    note = studio.locator("#capture-note")
    expect(note).to_contain_text("(asked 1920\u00d71080 at 60 fps)")
    delivered = studio.evaluate(
        """() => {
          const s = window.onairStudio.state.camera.getVideoTracks()[0].getSettings();
          return `Camera delivers ${s.width}\u00d7${s.height} at ${Math.round(s.frameRate)} fps`;
        }"""
    )
    expect(note).to_have_text(
        re.compile(re.escape(f"{delivered} (asked 1920\u00d71080 at 60 fps)"))
    )
