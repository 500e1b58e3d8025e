"""Malformed input on every transport gets a 4xx (or a WebSocket ``error``) naming what
was wrong, and nothing at ERROR in the log: SDP offers to anonymous WHEP and to WHIP, JSON
nested past the parser's recursion, lone surrogates, oversized bodies, and a WebSocket
client that hangs up while the server answers."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from autobahn.exception import Disconnected
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser, User
from django.test import AsyncClient, Client, override_settings

from broadcast.models import Stream
from broadcast.services import IssuedKey, stream_create
from signaling.consumers import WatchConsumer
from testpeers import TestPublisher, TestViewer
from tests.malformed_sdp import MALFORMED
from tests.signaling.http_clients import SDP
from tests.signaling.test_consumers import Socket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

NESTED = "[" * 50_000


@pytest.fixture
def no_errors(caplog: pytest.LogCaptureFixture) -> AsyncIterator[None]:
    """Fails the test if anything is logged at ERROR or above."""
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


async def _offer(kind: str) -> str:
    peer = TestViewer() if kind == "whep" else TestPublisher()
    try:
        return await peer.create_offer()
    finally:
        await peer.close()


@pytest.mark.parametrize("protocol", ["whep", "whip"])
async def test_malformed_offers_get_400_naming_the_problem(
    protocol: str,
    live_stream: Stream,
    stream_parts: tuple[Stream, IssuedKey],
    owner: User,
    no_errors: None,
) -> None:
    """Anonymous WHEP on a live stream; WHIP with the key of a stream nobody publishes to."""
    if protocol == "whip":
        target, key = await database_sync_to_async(stream_create)(owner=owner, title="Other")
        slug, headers = target.slug, {"Authorization": f"Bearer {key.secret}"}
    else:
        slug, headers = live_stream.slug, {}
    valid = await _offer(protocol)
    http = AsyncClient(raise_request_exception=False)
    wrong = {}
    for case, (mutate, reason) in sorted(MALFORMED.items()):
        response = await http.post(
            f"/{protocol}/{slug}", data=mutate(valid), content_type=SDP, headers=headers
        )
        error = response.json()["error"] if response["Content-Type"] == "application/json" else {}
        if (response.status_code, error.get("code")) != (400, "bad_sdp") or reason not in error[
            "message"
        ]:
            wrong[case] = (response.status_code, error)
    assert wrong == {}
    await database_sync_to_async(live_stream.refresh_from_db)()
    assert live_stream.viewer_count == 0


async def test_oversized_whip_body_is_400_too_large(
    stream_parts: tuple[Stream, IssuedKey], no_errors: None
) -> None:
    stream, key = stream_parts
    http = AsyncClient(raise_request_exception=False)
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=100_000):
        response = await http.post(
            f"/whip/{stream.slug}",
            data="v=0\r\n" + "a=x\r\n" * 30_000,
            content_type=SDP,
            headers={"Authorization": f"Bearer {key.secret}"},
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_large"


@pytest.mark.parametrize(
    ("path", "login"),
    [("/api/v1/auth/token/", False), ("/api/v1/streams/", True)],
)
def test_deeply_nested_json_is_a_400_parse_error(
    path: str, login: bool, user: User, no_errors: None
) -> None:
    client = Client(raise_request_exception=False)
    if login:
        client.force_login(user)
    response = client.post(path, data=NESTED, content_type="application/json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "parse_error"
    assert "nested too deeply" in error["message"]


def test_oversized_json_is_a_413(user: User, no_errors: None) -> None:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    body = json.dumps({"title": "x" * 3_000_000})
    response = client.post("/api/v1/streams/", data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


@pytest.mark.parametrize("value", ["\ud800", "a\x00b"], ids=["lone_surrogate", "nul"])
def test_bad_characters_in_json_fields_are_a_400(value: str, user: User, no_errors: None) -> None:
    client = Client(raise_request_exception=False)
    for path, body in [
        ("/api/v1/auth/token/", {"username": value, "password": value}),
        ("/api/v1/streams/", {"title": value, "slug": value}),
    ]:
        client.force_login(user)
        response = client.post(path, data=json.dumps(body), content_type="application/json")
        assert response.status_code == 400, (path, response.content)
        assert response.json()["error"]["code"] == "invalid"


@pytest.mark.parametrize(
    ("endpoint", "frame", "says"),
    [
        ("studio", '{"type": "auth", "key": "\\ud800"}', "lone surrogate"),
        ("watch", '{"type": "ping", "x": "\\udfff"}', "lone surrogate"),
        ("studio", NESTED, "nested too deeply"),
        ("watch", "[" * 5_000 + "]" * 5_000, "nested too deeply"),
        ("watch", '{"type": "ping", "x": ' + "[" * 3_000 + "]" * 3_000 + "}", "nested too deeply"),
    ],
)
async def test_websocket_frames_that_once_were_internal_errors_get_bad_json(
    endpoint: str, frame: str, says: str, stream_parts: tuple[Stream, IssuedKey], no_errors: None
) -> None:
    stream, _ = stream_parts
    socket = Socket(f"/ws/{endpoint}/{stream.slug}/")
    socket.comm.scope["user"] = AnonymousUser()
    await socket.open()
    await socket.comm.send_to(text_data=frame)
    error = await socket.expect("error")
    assert error["code"] == "bad_json"
    assert says in error["message"]
    await socket.send({"type": "ping"})
    assert (await socket.expect("pong"))["type"] == "pong"  # and the socket still works
    await socket.close()


async def test_a_client_gone_while_the_server_answers_costs_no_error_log(no_errors: None) -> None:
    """daphne raises when the application sends on a socket the client already closed; a
    client that sends a burst and hangs up at once must not make the server log ERRORs."""

    async def closed_protocol(message: dict[str, Any]) -> None:
        raise Disconnected("Attempt to send on a closed protocol")

    consumer = WatchConsumer()
    consumer.base_send = closed_protocol
    await consumer.send_error("bad_json", "The frame is not valid JSON.")
    await consumer.send_json("pong")
