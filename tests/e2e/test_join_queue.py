"""A watch page that has to wait its turn to join (``signaling.admission``), in headless
Chromium: it shows "Joining…" (a status, for screen readers too) instead of failing, then
plays once the joins ahead of it are over."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.daphne import Response, http_request
from tests.e2e.conftest import OnAirServer, running_server
from tests.e2e.test_live import _new_page, _wait_for_frames
from tests.e2e.test_publisher_away import _go_live, _studio
from tests.signaling.http_clients import SDP, silent_offer

HOLDERS = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnAirServer]:
    with running_server(
        tmp_path_factory.mktemp("join-queue"), ONAIR_JOIN_CONCURRENCY="1"
    ) as server:
        yield server


def test_a_waiting_page_shows_joining_then_plays(
    browser: Browser,
    server: OnAirServer,
    contexts: list[BrowserContext],
    login: Callable[[Page, str, str], None],
) -> None:
    _go_live(_studio(browser, server, contexts, login))
    # WHEP clients that never do ICE, one after the other in the one place (each holds it
    # a second past its answer): the page waits behind them
    with ThreadPoolExecutor(HOLDERS) as pool:
        holders = [pool.submit(_silent_whep, server) for _ in range(HOLDERS)]
        first = holders[0].result(timeout=30)
        assert first.status == 201, first.body
        watch = _new_page(browser, server, contexts)
        watch.goto(f"/watch/{server.demo_slug}/")
        expect(watch.get_by_role("status").filter(has_text="Joining…")).to_be_visible()
        expect(watch.locator("body")).to_have_attribute("data-playback", "joining")
        _wait_for_frames(watch, more_than=10)
        expect(watch.locator("body")).to_have_attribute("data-playback", "playing")
        for holder in holders:
            response = holder.result(timeout=30)
            assert response.status == 201, response.body
            location = response.headers["Location"]
            url = location if location.startswith("http") else server.url(location)
            assert http_request("DELETE", url, timeout=30).status == 200


def _silent_whep(server: OnAirServer) -> Response:
    return http_request(
        "POST",
        server.url(f"/whep/{server.demo_slug}"),
        silent_offer(),
        {"Content-Type": SDP},
        timeout=30,
    )
