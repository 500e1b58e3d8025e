from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from broadcast.models import Stream, StreamKey
from broadcast.services import stream_go_live, stream_key_verify

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/broadcast/stream/"


@pytest.fixture
def admin_client(superuser: User) -> Client:
    client = Client()
    client.force_login(superuser)
    return client


def _rows(response: object) -> str:
    return response.content.decode()  # type: ignore[attr-defined]


def test_changelist_shows_streams(admin_client: Client, make_stream: Callable) -> None:
    stream, issued = make_stream(title="Admin visible")
    stream_go_live(stream=stream)

    response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    html = _rows(response)
    assert "Admin visible" in html
    assert "alice" in html
    assert "Live" in html
    assert issued.secret not in html


def test_changelist_filters_by_state_and_visibility(
    admin_client: Client, make_stream: Callable
) -> None:
    live, _ = make_stream(title="Streaming now")
    stream_go_live(stream=live)
    make_stream(title="Waiting", visibility=Stream.Visibility.PRIVATE)

    by_state = _rows(admin_client.get(CHANGELIST, {"state__exact": "live"}))
    assert "Streaming now" in by_state
    assert "Waiting" not in by_state

    by_visibility = _rows(admin_client.get(CHANGELIST, {"visibility__exact": "private"}))
    assert "Waiting" in by_visibility
    assert "Streaming now" not in by_visibility


def test_changelist_search(admin_client: Client, make_stream: Callable, other_user: User) -> None:
    make_stream(title="Cooking with Alice")
    make_stream(title="Chess night", owner=other_user)

    by_title = _rows(admin_client.get(CHANGELIST, {"q": "cooking"}))
    assert "Cooking with Alice" in by_title
    assert "Chess night" not in by_title

    by_owner = _rows(admin_client.get(CHANGELIST, {"q": "bob"}))
    assert "Chess night" in by_owner
    assert "Cooking with Alice" not in by_owner


def test_change_page_shows_keys_masked_only(admin_client: Client, make_stream: Callable) -> None:
    stream, issued = make_stream()

    html = _rows(admin_client.get(f"{CHANGELIST}{stream.pk}/change/"))

    # Once: the key list's row (not its title and a column too); the publisher's key is
    # shown, not chosen from every stream's keys.
    assert html.count(issued.key.masked) == 1
    assert 'name="publisher_key"' not in html
    assert issued.secret not in html
    assert issued.key.digest not in html


def test_changelist_and_change_page_link_to_the_streams_pages(
    admin_client: Client, make_stream: Callable
) -> None:
    stream, _ = make_stream()
    pages = (f'href="/watch/{stream.slug}/"', f'href="/studio/{stream.slug}/"')

    changelist = _rows(admin_client.get(CHANGELIST))
    change = _rows(admin_client.get(f"{CHANGELIST}{stream.pk}/change/"))

    assert all(link in changelist for link in pages)
    assert all(link in change for link in pages)
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 200


def test_end_broadcast_action(admin_client: Client, make_stream: Callable) -> None:
    live, _ = make_stream(title="Live one")
    stream_go_live(stream=live)
    idle, _ = make_stream(title="Idle one")

    response = admin_client.post(
        CHANGELIST,
        {"action": "end_broadcast", "_selected_action": [live.pk, idle.pk]},
        follow=True,
    )

    live.refresh_from_db()
    idle.refresh_from_db()
    assert live.state == Stream.State.ENDED
    assert idle.state == Stream.State.IDLE
    html = _rows(response)
    assert "Ended 1 broadcast(s)." in html
    assert "Not live, left as they were: Idle one." in html


def test_rotate_key_action_shows_the_new_secret_once(
    admin_client: Client, make_stream: Callable
) -> None:
    stream, old = make_stream(title="Rotate me")

    response = admin_client.post(
        CHANGELIST, {"action": "rotate_key", "_selected_action": [stream.pk]}, follow=True
    )

    new_key = StreamKey.objects.get(stream=stream, revoked_at__isnull=True)
    assert new_key != old.key
    assert not stream_key_verify(stream=stream, secret=old.secret)
    html = _rows(response)
    secret = html.split("shown only this once: ")[1].split("<")[0].strip()
    assert stream_key_verify(stream=stream, secret=secret)
    assert secret not in _rows(admin_client.get(CHANGELIST))
    assert secret not in _rows(admin_client.get(f"{CHANGELIST}{stream.pk}/change/"))


def test_add_stream_in_admin_issues_a_key(admin_client: Client, user: User) -> None:
    response = admin_client.post(
        f"{CHANGELIST}add/",
        {
            "owner": user.pk,
            "title": "Made by staff",
            "description": "",
            "slug": "made-by-staff",
            "visibility": "public",
            "keys-TOTAL_FORMS": "0",
            "keys-INITIAL_FORMS": "0",
        },
        follow=True,
    )

    stream = Stream.objects.get(slug="made-by-staff")
    assert stream.owner == user
    html = _rows(response)
    secret = html.split("shown only this once: ")[1].split("<")[0].strip()
    assert stream_key_verify(stream=stream, secret=secret)


def test_non_staff_are_refused(make_stream: Callable, user: User) -> None:
    stream, _ = make_stream()
    stream_go_live(stream=stream)
    client = Client()
    client.force_login(user)

    assert client.get(CHANGELIST).status_code == 302  # to the admin login
    client.post(CHANGELIST, {"action": "end_broadcast", "_selected_action": [stream.pk]})

    stream.refresh_from_db()
    assert stream.state == Stream.State.LIVE


def test_staff_without_permissions_are_refused(make_stream: Callable, staff_user: User) -> None:
    stream, issued = make_stream()
    client = Client()
    client.force_login(staff_user)

    assert client.get(CHANGELIST).status_code == 403
    client.post(CHANGELIST, {"action": "rotate_key", "_selected_action": [stream.pk]})
    assert stream_key_verify(stream=stream, secret=issued.secret)

    # Viewing is not enough to act on streams.
    staff_user.user_permissions.add(Permission.objects.get(codename="view_stream"))
    assert client.get(CHANGELIST).status_code == 200
    client.post(CHANGELIST, {"action": "rotate_key", "_selected_action": [stream.pk]})
    assert stream_key_verify(stream=stream, secret=issued.secret)

    staff_user.user_permissions.add(Permission.objects.get(codename="change_stream"))
    client.post(CHANGELIST, {"action": "rotate_key", "_selected_action": [stream.pk]})
    assert not stream_key_verify(stream=stream, secret=issued.secret)
