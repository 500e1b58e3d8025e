"""The HTML pages: live list, My streams (create, key shown once, key and state actions)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings

from broadcast.models import Stream
from broadcast.services import stream_go_live, stream_key_verify

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _secret_on(html: str) -> str:
    return html.split('id="new-key-secret">')[1].split("<")[0]


def test_home_lists_public_live_streams(client: Client, make_stream: Callable) -> None:
    live, _ = make_stream(title="Now playing")
    stream_go_live(stream=live)
    make_stream(title="Not yet")
    hidden, _ = make_stream(title="Secret show", visibility=Stream.Visibility.PRIVATE)
    stream_go_live(stream=hidden)

    html = client.get("/").content.decode()

    assert "Now playing" in html
    assert "Not yet" not in html
    assert "Secret show" not in html


def test_home_says_when_nobody_is_live(client: Client, db: None) -> None:
    assert "Nobody is live right now." in client.get("/").content.decode()


def test_my_streams_needs_login(client: Client, db: None) -> None:
    response = client.get("/streams/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/streams/")


def test_create_shows_the_key_once(alice: Client, user: User) -> None:
    response = alice.post(
        "/streams/", {"title": "Page stream", "visibility": "public"}, follow=True
    )

    html = response.content.decode()
    stream = Stream.objects.get(title="Page stream")
    secret = _secret_on(html)
    assert stream_key_verify(stream=stream, secret=secret)
    assert "only time it is shown" in html
    again = alice.get("/streams/").content.decode()
    assert secret not in again
    assert "Page stream" in again
    assert stream.keys.get().masked in again


def test_create_with_invalid_input_shows_errors(alice: Client) -> None:
    response = alice.post("/streams/", {"title": "", "visibility": "nope"})

    assert response.status_code == 400
    assert "This field is required." in response.content.decode()
    assert not Stream.objects.exists()


@override_settings(ONAIR={"MAX_STREAMS_PER_USER": 1})
def test_create_past_the_quota_says_why(alice: Client, user: User) -> None:
    assert alice.post("/streams/", {"title": "One", "visibility": "public"}).status_code == 302
    response = alice.post("/streams/", {"title": "Two", "visibility": "public"})

    assert response.status_code == 400
    assert "quota of 1 streams" in response.content.decode()
    assert Stream.objects.filter(owner=user).count() == 1


def test_rotate_shows_the_new_key_once(alice: Client, make_stream: Callable) -> None:
    stream, old = make_stream()

    html = alice.post(f"/streams/{stream.slug}/key/rotate/", follow=True).content.decode()

    secret = _secret_on(html)
    assert secret != old.secret
    assert stream_key_verify(stream=stream, secret=secret)
    assert secret not in alice.get("/streams/").content.decode()


def test_revoke_end_go_live_again_delete(alice: Client, make_stream: Callable) -> None:
    stream, issued = make_stream(title="Busy")
    stream_go_live(stream=stream)

    html = alice.post(f"/streams/{stream.slug}/key/revoke/", follow=True).content.decode()
    assert "Key revoked" in html
    assert not stream_key_verify(stream=stream, secret=issued.secret)

    html = alice.post(f"/streams/{stream.slug}/delete/", follow=True).content.decode()
    assert "end the broadcast before deleting it" in html
    assert Stream.objects.filter(pk=stream.pk).exists()

    alice.post(f"/streams/{stream.slug}/end/")
    stream.refresh_from_db()
    assert stream.state == Stream.State.ENDED
    assert stream.end_reason == Stream.EndReason.OWNER

    # One way to go live again, as everywhere: the studio (no separate "Restart").
    html = alice.get("/streams/").content.decode()
    assert "Ended from My streams" in html
    assert f'href="/studio/{stream.slug}/">Go live again' in html
    assert "Restart" not in html
    assert alice.post(f"/streams/{stream.slug}/restart/").status_code == 404

    html = alice.post(f"/streams/{stream.slug}/delete/", follow=True).content.decode()
    assert "“Busy” was deleted." in html
    assert not Stream.objects.exists()


def test_every_destructive_action_asks_first(alice: Client, make_stream: Callable) -> None:
    live, _ = make_stream(title="On now")
    stream_go_live(stream=live)
    make_stream(title="Later")

    html = alice.get("/streams/").content.decode()

    forms = re.findall(r"<form [^>]*action=\"/streams/[\w-]+/([\w/]+)/\"([^>]*)>", html)
    actions = {action for action, _ in forms}
    assert {"key/rotate", "key/revoke", "end", "delete"} <= actions
    assert all("data-confirm=" in attributes for _, attributes in forms)
    assert "The broadcast stops for every viewer." in html


def test_actions_refuse_other_peoples_streams(
    alice: Client, make_stream: Callable, other_user: User
) -> None:
    stream, issued = make_stream(owner=other_user)

    html = alice.post(f"/streams/{stream.slug}/key/rotate/", follow=True).content.decode()

    assert "No such stream." in html
    assert stream_key_verify(stream=stream, secret=issued.secret)


def test_actions_need_post(alice: Client, make_stream: Callable) -> None:
    stream, _ = make_stream()
    assert alice.get(f"/streams/{stream.slug}/end/").status_code == 405


def test_login_and_logout(client: Client, user: User) -> None:
    assert client.get("/accounts/login/").status_code == 200
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": "correct-horse-battery"}
    )
    assert response.status_code == 302
    assert response["Location"] == "/streams/"
    assert client.get("/streams/").status_code == 200

    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/streams/").status_code == 302


def test_signup_creates_an_account_and_logs_in(client: Client, db: None) -> None:
    response = client.post(
        "/accounts/signup/",
        {
            "username": "newbie",
            "password1": "a-long-pass-phrase",
            "password2": "a-long-pass-phrase",
        },
    )
    assert response.status_code == 302
    assert User.objects.filter(username="newbie").exists()
    assert client.get("/streams/").status_code == 200


def test_signup_can_be_closed(client: Client, db: None, settings: object) -> None:
    settings.ONAIR = {"ALLOW_SIGNUP": False}  # type: ignore[attr-defined]
    assert client.get("/accounts/signup/").status_code == 404
    assert "Sign up" not in client.get("/accounts/login/").content.decode()


def test_unknown_page_is_an_html_404(client: Client, db: None) -> None:
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert "This page does not exist." in response.content.decode()


def test_health(client: Client, db: None) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_edit_changes_title_description_and_visibility(
    alice: Client, make_stream: Callable
) -> None:
    stream, _ = make_stream(title="Before")
    page = alice.get(f"/streams/{stream.slug}/edit/")
    assert page.status_code == 200
    assert 'value="Before"' in page.content.decode()

    response = alice.post(
        f"/streams/{stream.slug}/edit/",
        {"title": "After", "description": "New words", "visibility": "unlisted"},
    )

    assert response.status_code == 302
    stream.refresh_from_db()
    assert (stream.title, stream.description, stream.visibility) == (
        "After",
        "New words",
        "unlisted",
    )


def test_edit_rejects_invalid_input_and_other_peoples_streams(
    alice: Client, make_stream: Callable, other_user: User
) -> None:
    stream, _ = make_stream(title="Mine")
    invalid = alice.post(f"/streams/{stream.slug}/edit/", {"title": "", "visibility": "public"})
    assert invalid.status_code == 400
    stream.refresh_from_db()
    assert stream.title == "Mine"

    theirs, _ = make_stream(owner=other_user)
    assert alice.get(f"/streams/{theirs.slug}/edit/").status_code == 404


def test_studio_and_watch_pages_carry_the_ice_servers(
    client: Client, user: User, make_stream: Any, settings: Any
) -> None:
    settings.ONAIR = {
        **settings.ONAIR,
        "TURN_URLS": ["turn:turn.example.org:3478"],
        "TURN_SECRET": "coturn-static-auth-secret",
    }
    stream, _ = make_stream()
    client.force_login(user)
    for url in (f"/studio/{stream.slug}/", f"/watch/{stream.slug}/"):
        page = client.get(url).content.decode()
        assert "turn:turn.example.org:3478" in page
        assert '"credential": "' in page
        assert "coturn-static-auth-secret" not in page


def test_the_key_panel_shows_the_whip_server_and_the_obs_setup(
    alice: Client, user: User, make_stream: Callable, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    html = alice.post("/streams/", {"title": "Encoder", "visibility": "public"}, follow=True)
    page = html.content.decode()
    secret = _secret_on(page)
    stream = Stream.objects.get(title="Encoder")
    whip = f"http://testserver/whip/{stream.slug}"
    assert f'<code id="new-key-whip">{whip}</code>' in page
    assert (
        f'<code id="new-key-obs">Service: WHIP, Server: {whip}, Bearer Token: {secret}</code>'
        in page
    )
    assert all(secret not in record.getMessage() for record in caplog.records)
    # The studio shows its owner the server (the key is shown once, on My streams).
    studio = alice.get(f"/studio/{stream.slug}/").content.decode()
    assert f'<code id="whip-url">{whip}</code>' in studio
    assert secret not in studio
