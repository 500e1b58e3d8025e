"""The studio page in headless Chromium when the key it went live with is rotated: the
broadcast ends, the page says why and asks for a key, and the new key lets it in again."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.e2e.conftest import OnAirServer


def _stream_of_another_owner(server: OnAirServer) -> tuple[str, str, str]:
    """A public stream of a new owner: its slug, its key and the owner's API token."""
    code = (
        "from django.contrib.auth.models import User; "
        "from rest_framework.authtoken.models import Token; "
        "from broadcast.services import stream_create; "
        "owner = User.objects.create_user('keyowner'); "
        "stream, key = stream_create(owner=owner, title='Lent key'); "
        "print(stream.slug, key.secret, Token.objects.create(user=owner).key)"
    )
    slug, key, token = server.manage("shell", "-c", code).splitlines()[-1].split()
    return slug, key, token


def test_rotating_the_key_stops_the_studio_that_went_live_with_it(
    onair_server: OnAirServer, page: Page, login: Callable[[Page, str, str], None]
) -> None:
    server = onair_server
    slug, key, token = _stream_of_another_owner(server)
    server.create_user("keyholder", "keyholder-password")
    login(page, "keyholder", "keyholder-password")
    page.goto(f"/studio/{slug}/")
    page.fill("#stream-key", key)
    page.click("#key-form button")
    expect(page.locator("#key-form")).to_be_hidden()
    page.click("#go-live")
    expect(page.locator("#connection-state")).to_have_text("connected")
    expect(page.locator("#stream-state")).to_have_text("live")

    # The owner rotates the key through the API (the daphne process serving the studio).
    request = urllib.request.Request(
        server.url(f"/api/v1/streams/{slug}/key/rotate/"),
        data=b"",
        headers={"Authorization": f"Token {token}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        new_key = json.load(response)["secret"]

    expect(page.locator("#studio-error")).to_contain_text("revoked")
    expect(page.locator("#stream-state")).to_have_text("ended")
    expect(page.locator("#key-form")).to_be_visible()

    # The new key lets the same page in again.
    page.fill("#stream-key", new_key)
    page.click("#key-form button")
    expect(page.locator("#key-form")).to_be_hidden()
    expect(page.locator("#stream-state")).to_have_text("ended")
