"""Who broadcasts, and when it is over, as every page sees it, in real headless Chromium:
a second studio tab takes over from the first, which says why and lets go of its camera;
a broadcast ended from My streams, the admin or the REST API reaches the studio (its
connection closed, its camera stopped, the reason shown) and the WHEP player page.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.e2e.conftest import OnAirServer
from tests.e2e.test_live import _new_page, _restart_demo_stream

# The camera and microphone tracks the studio holds now, kept on the page to check later.
HOLD_TRACKS = "() => { window.heldTracks = window.onairStudio.state.camera.getTracks(); }"
# The studio's connection is closed and every track it held is stopped.
NO_FIGURE = "\N{EN DASH}"  # what a stats panel shows for a figure it does not have
LET_GO = """() => window.onairStudio.state.pc === null
  && window.heldTracks.length > 0
  && window.heldTracks.every((track) => track.readyState === "ended")"""


def _go_live(studio: Page, slug: str) -> None:
    studio.goto(f"/studio/{slug}/")
    expect(studio.locator("#camera option").first).to_be_attached()
    expect(studio.locator("#stream-state")).not_to_have_text("")
    studio.click("#go-live")
    expect(studio.locator("#connection-state")).to_have_text("connected")
    studio.evaluate(HOLD_TRACKS)


def _live_in(page: Page, server: OnAirServer, login: Callable[[Page, str, str], None]) -> None:
    """The demo stream, put back to idle, gone live again from ``page`` (its owner's)."""
    _restart_demo_stream(server)
    login(page, server.demo_username, server.demo_password)
    _go_live(page, server.demo_slug)


def _seconds_until_let_go(studio: Page, started: float, within_ms: int) -> float:
    studio.wait_for_function(LET_GO, timeout=within_ms, polling=50)
    return time.monotonic() - started


# Since the server ended the broadcast (its ended_at; the browser runs on the same clock).
SINCE_THE_END = "(at) => (at - Date.parse(window.onairStudio.state.stream.ended_at)) / 1000"


def test_a_second_studio_tab_takes_over_and_the_first_lets_go(
    onair_server: OnAirServer,
    page: Page,
    context: BrowserContext,
    login: Callable[[Page, str, str], None],
) -> None:
    server = onair_server
    first = page
    _live_in(page, server, login)

    second = context.new_page()  # same login, another tab
    second.goto(f"/studio/{server.demo_slug}/")
    # Opened while live: the live state, and an offer to take over.
    expect(second.locator("#stream-state")).to_have_text("live")
    expect(second.locator("#go-live")).to_have_text("Take over")
    expect(second.locator("#studio-notice")).to_contain_text("Live from another tab or device")
    expect(second.locator("#elapsed")).not_to_have_text("00:00:00", timeout=3_000)
    expect(second.locator("#camera option").first).to_be_attached()
    second.click("#go-live")
    started = time.monotonic()
    expect(second.locator("#connection-state")).to_have_text("connected")

    seconds = _seconds_until_let_go(first, started, within_ms=5_000)
    notice = first.locator("#studio-notice")
    expect(notice).to_contain_text("You went live from another tab or device")
    expect(notice).to_have_attribute("role", "alert")
    expect(first.locator("#go-live")).to_have_text("Take over")
    for figure in ("#out-bitrate", "#frames-sent"):
        expect(first.locator(figure)).to_have_text(NO_FIGURE)
    expect(second.locator("#studio-notice")).to_be_hidden()
    print(f"first tab let go {seconds:.2f} s after the takeover")
    second.close()


# The studio's signaling socket drops and stays down (its network went) until RECONNECT.
DROP_SIGNALING = """() => {
  const signaling = window.onairStudio.signaling;
  window.reconnectSignaling = signaling.connect.bind(signaling);
  signaling.connect = () => {};
  signaling.socket.close();
}"""
RECONNECT = """() => {
  window.onairStudio.signaling.connect = window.reconnectSignaling;
  window.reconnectSignaling();
}"""


def test_a_studio_back_from_a_network_drop_leaves_a_takeover_alone(
    onair_server: OnAirServer,
    page: Page,
    context: BrowserContext,
    login: Callable[[Page, str, str], None],
) -> None:
    """Live in tab A; A's network drops; tab B goes live; A's socket comes back: B stays
    live, and A shows that another tab went live (camera stopped, Take over offered)."""
    server = onair_server
    first = page
    _live_in(page, server, login)
    first.evaluate(DROP_SIGNALING)
    expect(first.locator("#connection-state")).to_have_text("reconnecting")

    second = context.new_page()
    _go_live(second, server.demo_slug)
    first.evaluate(RECONNECT)

    _seconds_until_let_go(first, time.monotonic(), within_ms=5_000)
    expect(first.locator("#studio-notice")).to_contain_text(
        "You went live from another tab or device"
    )
    expect(first.locator("#go-live")).to_have_text("Take over")
    expect(first.locator("#frames-sent")).to_have_text(NO_FIGURE)
    expect(second.locator("#connection-state")).to_have_text("connected")
    expect(second.locator("#studio-notice")).to_be_hidden()
    assert second.evaluate("window.onairStudio.state.live")
    second.close()


def _end_from_my_streams(server: OnAirServer, page: Page) -> None:
    page.goto("/streams/")
    row = page.locator(f'tr[data-slug="{server.demo_slug}"]')
    page.once("dialog", lambda dialog: dialog.accept())  # "… stops for every viewer"
    row.get_by_role("button", name="End").click()
    expect(page.locator(".messages")).to_contain_text("has ended")
    # The end's reason wraps in its cell (the longest, "the broadcaster's connection was
    # lost", pushed the row's actions out of the card): the table fits its card.
    reason = row.locator(".end-reason")
    expect(reason).to_contain_text("Ended from My streams")
    assert reason.evaluate("cell => getComputedStyle(cell).whiteSpace") == "normal"
    assert page.locator(".streams-table").evaluate(
        "table => table.scrollWidth <= table.parentElement.clientWidth"
    )


def _end_from_the_admin(server: OnAirServer, page: Page) -> None:
    page.goto("/admin/broadcast/stream/")
    page.locator("#result_list tr", has_text="OnAir demo").locator("input.action-select").check()
    page.select_option("select[name=action]", "end_broadcast")
    page.click("button[name=index]")
    expect(page.locator(".messagelist")).to_contain_text("Ended 1 broadcast")


def _end_through_the_api(server: OnAirServer, page: Page) -> None:
    def post(path: str, headers: dict[str, str], **form: str) -> dict[str, str]:
        data = urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(server.url(path), data, headers, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            body: dict[str, str] = json.load(response)
            return body

    token = post(
        "/api/v1/auth/token/",
        {},
        username=server.demo_username,
        password=server.demo_password,
    )["token"]
    ended = post(f"/api/v1/streams/{server.demo_slug}/end/", {"Authorization": f"Token {token}"})
    assert ended["end_reason"] == "api"


@pytest.mark.parametrize(
    ("end", "reason"),
    [
        (_end_from_my_streams, "Ended from My streams"),
        (_end_from_the_admin, "Ended by an administrator"),
        (_end_through_the_api, "Ended through the API"),
    ],
    ids=["my-streams", "admin", "api"],
)
def test_an_end_from_anywhere_reaches_the_studio_and_the_whep_player(
    end: Callable[[OnAirServer, Page], None],
    reason: str,
    browser: Browser,
    onair_server: OnAirServer,
    page: Page,
    context: BrowserContext,
    contexts: list[BrowserContext],
    login: Callable[[Page, str, str], None],
) -> None:
    server = onair_server
    studio = page
    _live_in(page, server, login)
    player = _new_page(browser, server, contexts)
    player.goto(f"/whep/{server.demo_slug}/player/")
    expect(player.get_by_label("Bearer token (private streams)")).to_be_editable()
    player.click("#whep-play")
    expect(player.locator("#whep-status")).to_have_text("connected")
    watcher = _new_page(browser, server, contexts)
    watcher.goto(f"/watch/{server.demo_slug}/")
    expect(watcher.locator("#in-bitrate")).not_to_have_text(NO_FIGURE)
    expect(studio.locator("#out-bitrate")).not_to_have_text(NO_FIGURE)

    elsewhere = context.new_page()  # the owner, in another tab
    started = time.monotonic()
    end(server, elsewhere)

    _seconds_until_let_go(studio, started, within_ms=5_000)
    seconds = studio.evaluate(f"({SINCE_THE_END})(Date.now())")
    assert seconds < 2.0, seconds
    notice = studio.locator("#studio-notice")
    expect(notice).to_contain_text(reason)
    expect(notice).to_contain_text(" at ")
    expect(studio.locator("#stream-state")).to_have_text("ended")
    expect(studio.locator("#go-live")).to_have_text("Go live again")
    for figure in ("#out-bitrate", "#out-fps", "#rtt", "#frames-sent"):
        expect(studio.locator(figure)).to_have_text(NO_FIGURE)
    expect(watcher.locator("#playback-status")).to_contain_text("ended")
    for figure in ("#in-bitrate", "#in-fps", "#in-resolution", "#latency", "#frames-decoded"):
        expect(watcher.locator(figure)).to_have_text(NO_FIGURE)
    expect(player.locator("#whep-status")).to_contain_text("ended", timeout=5_000)
    player_seconds = studio.evaluate(
        f"({SINCE_THE_END})({player.evaluate('window.onairWhep.state.endedAt')})"
    )
    expect(player.locator("#whep-status")).to_contain_text(reason)
    print(f"after the end: studio let go {seconds:.2f} s, player ended {player_seconds:.2f} s")
    elsewhere.close()
