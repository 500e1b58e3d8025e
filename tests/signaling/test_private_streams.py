"""A stranger cannot tell a private stream from a missing one, on any transport: WHEP, WHIP,
the watch and studio WebSockets, the pages and the REST API answer both with the same
status, the same body and the same close code (the slug itself aside)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser, User
from django.test import AsyncClient
from rest_framework.authtoken.models import Token

from broadcast.models import Stream
from broadcast.services import IssuedKey, stream_create, stream_go_live
from onair.asgi import application
from signaling.gateway import gateway
from tests.signaling.test_consumers import go_live, watch

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

MISSING = "absent-show"
SDP = "application/sdp"
OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
_CSRF = re.compile(r'(name="csrfmiddlewaretoken" value=")[^"]+')


@pytest.fixture
async def private() -> tuple[Stream, IssuedKey]:
    owner = await database_sync_to_async(User.objects.create_user)("owner", password="pw")

    def create() -> tuple[Stream, IssuedKey]:
        stream, key = stream_create(
            owner=owner, title="Hidden", slug="hidden-show", visibility=Stream.Visibility.PRIVATE
        )
        return stream_go_live(stream=stream), key

    return await database_sync_to_async(create)()


@pytest.fixture
async def stranger() -> tuple[User, str, IssuedKey]:
    """Another user, their API token, and the key of a stream of their own."""
    user = await database_sync_to_async(User.objects.create_user)("eve", password="pw")
    token = await database_sync_to_async(Token.objects.create)(user=user)
    _, key = await database_sync_to_async(stream_create)(owner=user, title="Eve's")
    return user, token.key, key


def normalized(body: bytes, slug: str) -> str:
    return _CSRF.sub(r"\1…", body.decode().replace(slug, "<slug>"))


async def request(
    client: AsyncClient, method: str, path: str, headers: dict[str, str], slug: str
) -> tuple[int, str, str | None]:
    send = getattr(client, method.lower())
    kwargs: dict[str, Any] = {"headers": headers}
    if method in ("POST", "PATCH"):
        kwargs |= {"data": OFFER, "content_type": SDP}
        if path.startswith("/api/"):
            kwargs |= {"data": {"title": "x"}, "content_type": "application/json"}
    response = await send(path.format(slug=slug), **kwargs)
    location = response.get("Location")
    return (
        response.status_code,
        normalized(response.content, slug),
        location.replace(slug, "<slug>") if location else None,
    )


HTTP_CASES = [
    # (method, path, credentials: "none" | "wrong_key" | "stranger_key" | "stranger_token")
    ("POST", "/whep/{slug}", "none"),
    ("POST", "/whep/{slug}", "wrong_key"),
    ("POST", "/whep/{slug}", "stranger_token"),
    ("POST", "/whep/{slug}", "stranger_key"),
    ("POST", "/whip/{slug}", "none"),
    ("POST", "/whip/{slug}", "wrong_key"),
    ("POST", "/whip/{slug}", "stranger_key"),
    ("PATCH", "/whip/{slug}/" + "A" * 43, "wrong_key"),
    ("PATCH", "/whep/{slug}/" + "A" * 43, "none"),
    ("GET", "/watch/{slug}/", "none"),
    ("GET", "/watch/{slug}/", "login"),
    ("GET", "/embed/{slug}/", "none"),
    ("GET", "/embed/{slug}/", "login"),
    ("GET", "/studio/{slug}/", "none"),
    ("GET", "/studio/{slug}/", "login"),
    ("GET", "/whep/{slug}/player/", "none"),
    ("GET", "/streams/{slug}/poster.jpg", "none"),
    ("GET", "/streams/{slug}/poster.jpg", "login"),
    ("GET", "/api/v1/streams/{slug}/", "none"),
    ("GET", "/api/v1/streams/{slug}/", "stranger_token"),
    ("GET", "/api/v1/streams/{slug}/key/", "stranger_token"),
    ("PATCH", "/api/v1/streams/{slug}/", "stranger_token"),
    ("POST", "/api/v1/streams/{slug}/end/", "stranger_token"),
    ("POST", "/api/v1/streams/{slug}/key/rotate/", "login"),
]


@pytest.mark.parametrize(("method", "path", "credentials"), HTTP_CASES)
async def test_http_answers_a_private_stream_as_a_missing_one(
    private: tuple[Stream, IssuedKey],
    stranger: tuple[User, str, IssuedKey],
    method: str,
    path: str,
    credentials: str,
) -> None:
    stream, _ = private
    user, token, own_key = stranger
    client = AsyncClient()
    headers: dict[str, str] = {}
    if credentials == "login":
        await client.aforce_login(user)
    elif credentials == "wrong_key":
        headers["Authorization"] = "Bearer sk_" + "w" * 43
    elif credentials == "stranger_key":
        headers["Authorization"] = f"Bearer {own_key.secret}"
    elif credentials == "stranger_token":
        scheme = "Token" if path.startswith("/api/") else "Bearer"
        headers["Authorization"] = f"{scheme} {token}"

    hidden = await request(client, method, path, headers, stream.slug)
    missing = await request(client, method, path, headers, MISSING)
    assert hidden == missing
    assert hidden[0] != 200 or path.endswith("/player/")  # the player page has no lookup


async def socket_answer(path: str, user: User | AnonymousUser) -> list[dict[str, Any]]:
    """Everything the socket says until it is closed, or until it falls silent."""
    comm = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://localhost")])
    comm.scope["user"] = user
    connected, _ = await comm.connect(timeout=10)
    assert connected
    said: list[dict[str, Any]] = []
    while not await comm.receive_nothing(timeout=0.5):
        output = await comm.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            said.append({"close": output.get("code")})
            break
        said.append(json.loads(output["text"].replace(path.split("/")[3], "<slug>")))
    await comm.disconnect()
    return said


@pytest.mark.parametrize("endpoint", ["watch", "studio"])
@pytest.mark.parametrize("who", ["anonymous", "stranger"])
async def test_websockets_answer_a_private_stream_as_a_missing_one(
    private: tuple[Stream, IssuedKey],
    stranger: tuple[User, str, IssuedKey],
    endpoint: str,
    who: str,
) -> None:
    stream, _ = private
    user: User | AnonymousUser = stranger[0] if who == "stranger" else AnonymousUser()
    hidden = await socket_answer(f"/ws/{endpoint}/{stream.slug}/", user)
    missing = await socket_answer(f"/ws/{endpoint}/{MISSING}/", user)
    assert hidden == missing
    assert hidden[-1] == {"close": 4404}


async def test_the_owner_and_key_holders_still_get_in(
    private: tuple[Stream, IssuedKey], stranger: tuple[User, str, IssuedKey]
) -> None:
    stream, key = private
    owner = await database_sync_to_async(User.objects.get)(username="owner")
    said = await socket_answer(f"/ws/studio/{stream.slug}/", owner)
    assert said[0]["type"] == "welcome"
    assert said[0]["authorized"] is True
    # The key holder's WHEP request gets past the lookup (an unusable offer: 400, not 404).
    response = await AsyncClient().post(
        f"/whep/{stream.slug}",
        data=OFFER,
        content_type=SDP,
        headers={"Authorization": f"Bearer {key.secret}"},
    )
    assert response.status_code == 400


async def test_a_wrong_key_on_a_public_stream_is_401(
    stranger: tuple[User, str, IssuedKey],
) -> None:
    """Public streams are listed anyway: a wrong key says so, to help the broadcaster."""
    user, _, _ = stranger
    public = await database_sync_to_async(Stream.objects.get)(owner=user)
    response = await AsyncClient().post(
        f"/whip/{public.slug}", data=OFFER, content_type=SDP, headers={"Authorization": "Bearer x"}
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "bad_stream_key"


async def test_the_studio_of_someone_elses_stream_says_nothing_before_the_key(
    stranger: tuple[User, str, IssuedKey],
) -> None:
    """A public stream of someone else: the studio WebSocket tells a stranger neither its
    state nor its viewers, as the broadcast starts and a viewer joins, until the key."""
    user, _, key = stranger
    public = await database_sync_to_async(Stream.objects.get)(owner=user)
    comm = WebsocketCommunicator(
        application, f"/ws/studio/{public.slug}/", headers=[(b"origin", b"http://localhost")]
    )
    comm.scope["user"] = AnonymousUser()
    assert (await comm.connect(timeout=10))[0]
    welcome = json.loads(await comm.receive_from(timeout=10))
    assert welcome["stream"] == {"slug": public.slug}
    assert "viewers" not in json.dumps(welcome)

    studio, publisher = await go_live(public, user)
    viewer_socket, viewer = await watch(public)
    try:
        await studio.expect_count(1)  # the owner's studio hears the viewer...
        assert await comm.receive_nothing(timeout=1)  # ...the stranger's hears nothing
        await comm.send_to(text_data=json.dumps({"type": "auth", "key": key.secret}))
        assert json.loads(await comm.receive_from(timeout=10))["stream"]["state"] == "live"
    finally:
        await comm.disconnect()
        for socket in (viewer_socket, studio):
            await socket.close()
        for peer in (viewer, publisher):
            await peer.close()
        await gateway.close_all()
