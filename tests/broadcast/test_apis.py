"""Every endpoint of /api/v1/: success, unauthenticated, someone else's stream, invalid
payloads and invalid state transitions — all errors in the one body shape.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings
from rest_framework.authtoken.models import Token
from rest_framework.response import Response
from rest_framework.test import APIClient

from broadcast.models import Stream, StreamKey
from broadcast.services import stream_end, stream_go_live, stream_key_verify

pytestmark = pytest.mark.django_db

API = "/api/v1"
ClientFor = Callable[[User], APIClient]


def assert_error(response: Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"status", "code", "message", "fields"}
    assert error["status"] == status
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["fields"], dict)
    return error


# --- authentication -------------------------------------------------------------------

MANAGEMENT_CALLS = [
    ("get", "/streams/"),
    ("post", "/streams/"),
    ("get", "/streams/{slug}/"),
    ("put", "/streams/{slug}/"),
    ("patch", "/streams/{slug}/"),
    ("delete", "/streams/{slug}/"),
    ("post", "/streams/{slug}/start/"),
    ("post", "/streams/{slug}/end/"),
    ("post", "/streams/{slug}/restart/"),
    ("get", "/streams/{slug}/key/"),
    ("post", "/streams/{slug}/key/rotate/"),
    ("post", "/streams/{slug}/key/revoke/"),
]


@pytest.mark.parametrize(("method", "path"), MANAGEMENT_CALLS)
def test_management_endpoints_need_authentication(
    api_client: APIClient, make_stream: Callable, method: str, path: str
) -> None:
    stream, _ = make_stream()

    response = getattr(api_client, method)(API + path.format(slug=stream.slug), {})

    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Token"
    assert Stream.objects.get().state == Stream.State.IDLE


@pytest.mark.parametrize(
    ("method", "path"), [call for call in MANAGEMENT_CALLS if "{slug}" in call[1]]
)
def test_other_peoples_streams_are_not_found(
    client_for: ClientFor,
    make_stream: Callable,
    other_user: User,
    method: str,
    path: str,
) -> None:
    stream, issued = make_stream(visibility=Stream.Visibility.PRIVATE)

    response = getattr(client_for(other_user), method)(
        API + path.format(slug=stream.slug), {"title": "Hijacked"}, format="json"
    )

    assert_error(response, 404, "not_found")
    stream.refresh_from_db()
    assert (stream.title, stream.state) != ("Hijacked", Stream.State.LIVE)
    assert stream_key_verify(stream=stream, secret=issued.secret)


def test_token_authentication(api_client: APIClient, user: User, make_stream: Callable) -> None:
    make_stream()
    response = api_client.post(
        f"{API}/auth/token/", {"username": "alice", "password": "correct-horse-battery"}
    )
    assert response.status_code == 200
    token = response.json()["token"]
    assert Token.objects.get(user=user).key == token

    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api_client.get(f"{API}/streams/").json()["count"] == 1

    api_client.credentials(HTTP_AUTHORIZATION="Token wrong")
    assert_error(api_client.get(f"{API}/streams/"), 401, "authentication_failed")


def test_token_request_with_bad_credentials(api_client: APIClient, user: User) -> None:
    response = api_client.post(f"{API}/auth/token/", {"username": "alice", "password": "no"})
    error = assert_error(response, 400, "invalid")
    assert error["fields"]["non_field_errors"]


def test_session_authentication_enforces_csrf(user: User) -> None:
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)

    response = client.post(f"{API}/streams/", {"title": "No token"}, format="json")

    assert_error(response, 403, "permission_denied")
    assert "CSRF" in response.json()["error"]["message"]


# --- list and create --------------------------------------------------------------------


def test_list_own_streams_paginated_and_filtered(
    client_for: ClientFor, user: User, other_user: User, make_stream: Callable
) -> None:
    for _ in range(3):
        make_stream()
    live, _ = make_stream(title="On air")
    stream_go_live(stream=live)
    make_stream(owner=other_user)
    client = client_for(user)

    body = client.get(f"{API}/streams/", {"page_size": 2}).json()
    assert body["count"] == 4
    assert len(body["results"]) == 2
    assert body["next"]

    body = client.get(f"{API}/streams/", {"state": "live"}).json()
    assert [s["slug"] for s in body["results"]] == [live.slug]
    assert body["results"][0]["state"] == "live"


def test_staff_list_every_stream(
    client_for: ClientFor, staff_user: User, other_user: User, make_stream: Callable
) -> None:
    make_stream()
    make_stream(owner=other_user)

    assert client_for(staff_user).get(f"{API}/streams/").json()["count"] == 2


def test_list_rejects_unknown_filter_values(client_for: ClientFor, user: User) -> None:
    response = client_for(user).get(f"{API}/streams/", {"state": "paused"})

    error = assert_error(response, 400, "invalid")
    assert "state" in error["fields"]


def test_create_returns_the_secret_once(client_for: ClientFor, user: User) -> None:
    client = client_for(user)

    response = client.post(
        f"{API}/streams/",
        {"title": "Launch day", "description": "Live!", "visibility": "unlisted"},
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    secret = body["stream_key"]["secret"]
    stream = Stream.objects.get(slug=body["slug"])
    assert stream.owner == user
    assert stream.visibility == "unlisted"
    assert stream_key_verify(stream=stream, secret=secret)
    assert body["state"] == "idle"
    assert body["viewers"] == 0
    assert body["peak_viewers"] == 0
    assert body["key"]["masked"] == secret[:8] + "…"

    # Never again: not in the detail, the list, or the key endpoint.
    for path in (f"/streams/{stream.slug}/", "/streams/", f"/streams/{stream.slug}/key/"):
        assert secret not in client.get(API + path).content.decode()


def test_create_with_chosen_slug_and_taken_slug(client_for: ClientFor, user: User) -> None:
    client = client_for(user)
    created = client.post(f"{API}/streams/", {"title": "A", "slug": "my-show"}, format="json")
    assert created.status_code == 201
    assert created.json()["slug"] == "my-show"

    taken = client.post(f"{API}/streams/", {"title": "B", "slug": "my-show"}, format="json")

    error = assert_error(taken, 400, "invalid")
    assert "slug" in error["fields"]
    assert Stream.objects.count() == 1


@pytest.mark.parametrize(
    ("payload", "bad_fields"),
    [
        ({}, {"title"}),
        ({"title": ""}, {"title"}),
        ({"title": "x" * 141}, {"title"}),
        ({"title": "ok", "visibility": "secret"}, {"visibility"}),
        ({"title": "ok", "slug": "not a slug!"}, {"slug"}),
        ({"title": "", "visibility": "nope"}, {"title", "visibility"}),
    ],
)
def test_create_rejects_invalid_payloads_with_field_errors(
    client_for: ClientFor, user: User, payload: dict, bad_fields: set[str]
) -> None:
    response = client_for(user).post(f"{API}/streams/", payload, format="json")

    error = assert_error(response, 400, "invalid")
    assert set(error["fields"]) == bad_fields
    assert not Stream.objects.exists()


def test_create_rejects_malformed_json(client_for: ClientFor, user: User) -> None:
    response = client_for(user).post(
        f"{API}/streams/", "{not json", content_type="application/json"
    )
    assert_error(response, 400, "parse_error")


# --- retrieve, update, delete -------------------------------------------------------------


def test_retrieve_own_stream(client_for: ClientFor, user: User, make_stream: Callable) -> None:
    stream, _ = make_stream(title="Mine")

    body = client_for(user).get(f"{API}/streams/{stream.slug}/").json()

    assert body["title"] == "Mine"
    assert body["owner"] == "alice"
    assert body["visibility"] == "public"
    assert "secret" not in str(body)


def test_unknown_stream_is_not_found(client_for: ClientFor, user: User) -> None:
    assert_error(client_for(user).get(f"{API}/streams/nope/"), 404, "not_found")


def test_patch_updates_some_fields(
    client_for: ClientFor, user: User, make_stream: Callable
) -> None:
    stream, _ = make_stream(title="Old", description="Same")

    response = client_for(user).patch(
        f"{API}/streams/{stream.slug}/", {"visibility": "private"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["visibility"] == "private"
    stream.refresh_from_db()
    assert (stream.title, stream.description, stream.visibility) == ("Old", "Same", "private")


def test_put_needs_a_title(client_for: ClientFor, user: User, make_stream: Callable) -> None:
    stream, _ = make_stream(title="Old")
    client = client_for(user)

    missing = client.put(f"{API}/streams/{stream.slug}/", {"description": "x"}, format="json")
    assert set(assert_error(missing, 400, "invalid")["fields"]) == {"title"}

    ok = client.put(f"{API}/streams/{stream.slug}/", {"title": "New"}, format="json")
    assert ok.status_code == 200
    assert ok.json()["title"] == "New"


def test_patch_rejects_invalid_values(
    client_for: ClientFor, user: User, make_stream: Callable
) -> None:
    stream, _ = make_stream(title="Old")

    response = client_for(user).patch(
        f"{API}/streams/{stream.slug}/", {"title": "", "visibility": "x"}, format="json"
    )

    assert set(assert_error(response, 400, "invalid")["fields"]) == {"title", "visibility"}
    stream.refresh_from_db()
    assert stream.title == "Old"


def test_staff_may_manage_any_stream(
    client_for: ClientFor, staff_user: User, make_stream: Callable
) -> None:
    stream, _ = make_stream(visibility=Stream.Visibility.PRIVATE)
    client = client_for(staff_user)

    assert client.post(f"{API}/streams/{stream.slug}/start/").status_code == 200
    assert client.post(f"{API}/streams/{stream.slug}/end/").status_code == 200
    assert client.delete(f"{API}/streams/{stream.slug}/").status_code == 204


def test_delete(client_for: ClientFor, user: User, make_stream: Callable) -> None:
    stream, _ = make_stream()

    response = client_for(user).delete(f"{API}/streams/{stream.slug}/")

    assert response.status_code == 204
    assert not Stream.objects.exists()


def test_delete_live_stream_conflicts(
    client_for: ClientFor, user: User, make_stream: Callable
) -> None:
    stream, _ = make_stream()
    stream_go_live(stream=stream)

    response = client_for(user).delete(f"{API}/streams/{stream.slug}/")

    assert_error(response, 409, "stream_live")
    assert Stream.objects.exists()


# --- state transitions ----------------------------------------------------------------------


def test_start_end_restart(client_for: ClientFor, user: User, make_stream: Callable) -> None:
    stream, _ = make_stream()
    client = client_for(user)
    base = f"{API}/streams/{stream.slug}"

    started = client.post(f"{base}/start/").json()
    assert started["state"] == "live"
    assert started["started_at"]
    assert started["end_reason"] == ""
    ended = client.post(f"{base}/end/").json()
    assert ended["state"] == "ended"
    assert ended["ended_at"]
    assert ended["end_reason"] == "api"
    restarted = client.post(f"{base}/restart/").json()
    assert restarted["state"] == "idle"
    assert restarted["started_at"] is None


def test_start_after_the_end_starts_a_new_broadcast(
    client_for: ClientFor, user: User, make_stream: Callable
) -> None:
    stream, _ = make_stream()
    stream_go_live(stream=stream)
    stream_end(stream=stream, reason=Stream.EndReason.OWNER)

    started = client_for(user).post(f"{API}/streams/{stream.slug}/start/").json()

    assert (started["state"], started["ended_at"], started["end_reason"]) == ("live", None, "")


@pytest.mark.parametrize(
    ("prepare", "action", "code"),
    [
        ([], "end", "not_live"),
        ([], "restart", "not_ended"),
        (["live"], "start", "already_live"),
        (["live"], "restart", "not_ended"),
        (["live", "ended"], "end", "not_live"),
    ],
)
def test_invalid_transitions_are_409(
    client_for: ClientFor,
    user: User,
    make_stream: Callable,
    prepare: list[str],
    action: str,
    code: str,
) -> None:
    stream, _ = make_stream()
    for step in prepare:
        if step == "live":
            stream_go_live(stream=stream)
        else:
            stream_end(stream=stream, reason=Stream.EndReason.API)
    state = Stream.objects.get().state

    response = client_for(user).post(f"{API}/streams/{stream.slug}/{action}/")

    assert_error(response, 409, code)
    assert Stream.objects.get().state == state


def test_ending_an_idle_stream_explains_why(
    client_for: ClientFor, user: User, make_stream: Callable
) -> None:
    stream, _ = make_stream()

    error = assert_error(
        client_for(user).post(f"{API}/streams/{stream.slug}/end/"), 409, "not_live"
    )

    assert error["message"] == "Only a live stream can end; this one is idle."


def test_transitions_refuse_get(client_for: ClientFor, user: User, make_stream: Callable) -> None:
    stream, _ = make_stream()
    response = client_for(user).get(f"{API}/streams/{stream.slug}/start/")
    assert_error(response, 405, "method_not_allowed")


# --- keys ---------------------------------------------------------------------------------


def test_key_shows_the_masked_active_key(
    client_for: ClientFor, user: User, make_stream: Callable
) -> None:
    stream, issued = make_stream()

    body = client_for(user).get(f"{API}/streams/{stream.slug}/key/").json()

    assert body == {
        "masked": issued.secret[:8] + "…",
        "active": True,
        "created_at": body["created_at"],
        "revoked_at": None,
    }


def test_rotate_returns_a_new_secret_once(
    client_for: ClientFor, user: User, make_stream: Callable
) -> None:
    stream, old = make_stream()
    client = client_for(user)

    response = client.post(f"{API}/streams/{stream.slug}/key/rotate/")

    assert response.status_code == 201
    secret = response.json()["secret"]
    assert secret != old.secret
    assert stream_key_verify(stream=stream, secret=secret)
    assert not stream_key_verify(stream=stream, secret=old.secret)
    assert secret not in client.get(f"{API}/streams/{stream.slug}/key/").content.decode()
    assert secret not in client.get(f"{API}/streams/{stream.slug}/").content.decode()


def test_revoke_then_revoke_again_conflicts(
    client_for: ClientFor, user: User, make_stream: Callable
) -> None:
    stream, issued = make_stream()
    client = client_for(user)
    base = f"{API}/streams/{stream.slug}/key"

    revoked = client.post(f"{base}/revoke/")
    assert revoked.status_code == 200
    assert revoked.json()["active"] is False
    assert revoked.json()["revoked_at"]
    assert not stream_key_verify(stream=stream, secret=issued.secret)

    assert_error(client.post(f"{base}/revoke/"), 409, "no_active_key")
    assert_error(client.get(f"{base}/"), 404, "no_active_key")
    assert client.get(f"{API}/streams/{stream.slug}/").json()["key"] is None
    assert StreamKey.objects.filter(revoked_at__isnull=True).count() == 0


# --- public live list ---------------------------------------------------------------------------


def test_live_list_is_public_and_hides_private_streams(
    api_client: APIClient,
    client_for: ClientFor,
    user: User,
    make_stream: Callable,
) -> None:
    public, _ = make_stream(title="Public")
    private, _ = make_stream(title="Private", visibility=Stream.Visibility.PRIVATE)
    _idle, _ = make_stream(title="Idle")
    for stream in (public, private):
        stream_go_live(stream=stream)

    anonymous = api_client.get(f"{API}/live/").json()
    assert [s["slug"] for s in anonymous["results"]] == [public.slug]
    assert set(anonymous["results"][0]) == {
        "slug",
        "title",
        "description",
        "owner",
        "state",
        "viewers",
        "peak_viewers",
        "started_at",
        "ended_at",
        "end_reason",
    }

    owner = client_for(user).get(f"{API}/live/").json()
    assert {s["slug"] for s in owner["results"]} == {public.slug, private.slug}


def test_live_list_is_read_only(api_client: APIClient) -> None:
    assert_error(api_client.post(f"{API}/live/", {}), 405, "method_not_allowed")


# --- the one error shape everywhere ------------------------------------------------------------


def test_unknown_api_path_is_a_json_404(db: None) -> None:
    response = Client().get(f"{API}/nothing-here/")
    assert response["Content-Type"] == "application/json"
    assert_error(response, 404, "not_found")  # type: ignore[arg-type]


def test_schema_and_docs_are_served(api_client: APIClient) -> None:
    schema = api_client.get("/api/schema/", {"format": "json"})
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/streams/{slug}/key/rotate/" in paths
    assert "/api/v1/live/" in paths
    docs = api_client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()


@override_settings(ONAIR={"MAX_STREAMS_PER_USER": 3})
def test_a_user_may_own_a_bounded_number_of_streams(
    client_for: ClientFor, user: User, staff_user: User
) -> None:
    client = client_for(user)
    for i in range(3):
        assert client.post(f"{API}/streams/", {"title": f"S{i}"}, format="json").status_code == 201
    response = client.post(f"{API}/streams/", {"title": "One too many"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "stream_quota"
    assert "quota of 3 streams" in response.json()["error"]["message"]
    assert Stream.objects.filter(owner=user).count() == 3

    # Deleting one makes room; staff have no quota.
    client.delete(f"{API}/streams/s0/")
    assert client.post(f"{API}/streams/", {"title": "Again"}, format="json").status_code == 201
    staff = client_for(staff_user)
    for i in range(4):
        assert staff.post(f"{API}/streams/", {"title": f"T{i}"}, format="json").status_code == 201


def test_the_stream_quota_has_a_default(client_for: ClientFor, user: User) -> None:
    client = client_for(user)
    statuses = [
        client.post(f"{API}/streams/", {"title": f"S{i}"}, format="json").status_code
        for i in range(21)
    ]
    assert statuses == [201] * 20 + [403]


def test_the_api_root_lists_where_its_resources_are(api_client: APIClient) -> None:
    answer = api_client.get("/api/v1/")
    assert answer.status_code == 200
    links = answer.json()
    assert set(links) == {"streams", "live", "webhooks", "token", "schema", "docs"}
    for link in links.values():
        assert link.startswith("http://testserver/api/")
    assert api_client.get(links["live"]).status_code == 200
