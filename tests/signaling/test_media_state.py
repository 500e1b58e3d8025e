"""The broadcaster's ``media`` message (microphone muted, camera off): validated, kept on the
stream for the viewers who join later, relayed to the viewers, set afresh by each publish.
Real consumers, the in-process SFU and aiortc peers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser, User
from django.test import AsyncClient

from broadcast.models import Stream
from broadcast.services import IssuedKey, stream_create
from signaling.gateway import gateway
from testpeers import TestPublisher
from tests.signaling.http_clients import WhipClient
from tests.signaling.test_consumers import Socket, go_live, refreshed

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

UNMUTED = {"mic_muted": False, "camera_off": False}


@pytest.fixture
async def stream_and_key(owner: User) -> AsyncIterator[tuple[Stream, IssuedKey]]:
    yield await database_sync_to_async(stream_create)(owner=owner, title="Launch")
    await gateway.close_all()


@pytest.fixture
def no_errors(caplog: pytest.LogCaptureFixture) -> AsyncIterator[None]:
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


async def _viewer_socket(stream: Stream) -> tuple[Socket, dict[str, object]]:
    socket = Socket(f"/ws/watch/{stream.slug}/", AnonymousUser())
    welcome = await socket.open()
    assert welcome["type"] == "welcome"
    return socket, welcome


async def test_viewers_hear_the_broadcasters_mute_and_latecomers_get_it_in_welcome(
    owner: User, stream_and_key: tuple[Stream, IssuedKey], no_errors: None
) -> None:
    stream, _ = stream_and_key
    studio, publisher = await go_live(stream, owner)
    early, welcome = await _viewer_socket(stream)
    assert welcome["stream"]["media"] == UNMUTED  # type: ignore[index]

    await studio.send({"type": "media", "mic_muted": True, "camera_off": False})
    assert await early.expect("media") == {"type": "media", "mic_muted": True, "camera_off": False}
    await studio.send({"type": "media", "mic_muted": True, "camera_off": True})
    assert (await early.expect("media"))["camera_off"] is True
    assert (await refreshed(stream)).mic_muted
    assert stream.camera_off

    late, welcome = await _viewer_socket(stream)
    assert welcome["stream"]["media"] == {"mic_muted": True, "camera_off": True}  # type: ignore[index]

    # The same state again is no news.
    await studio.send({"type": "media", "mic_muted": True, "camera_off": True})
    await studio.send({"type": "ping"})
    await studio.expect("pong")
    await late.send({"type": "ping"})
    assert (await late.expect("pong"))["type"] == "pong"
    assert not any(m["type"] == "media" for m in late.inbox)

    for socket in (studio, early, late):
        await socket.close()
    await publisher.close()


async def test_a_publish_sets_the_media_afresh(
    owner: User, stream_and_key: tuple[Stream, IssuedKey], no_errors: None
) -> None:
    """The studio's offer says how it starts (a reconnect while muted stays muted, with no
    flicker for viewers); a WHIP takeover sends both unmuted, and viewers are told."""
    stream, key = stream_and_key
    studio, publisher = await go_live(stream, owner)
    viewer, _ = await _viewer_socket(stream)
    await studio.send({"type": "media", "mic_muted": True, "camera_off": True})
    await viewer.expect("media")

    again = TestPublisher()
    offer = await again.create_offer()
    await studio.send(
        {"type": "offer", "sdp": offer, "media": {"mic_muted": True, "camera_off": True}}
    )
    await again.accept_answer((await studio.expect("answer"))["sdp"])
    assert (await refreshed(stream)).mic_muted
    assert stream.camera_off

    whip = WhipClient(AsyncClient(), stream.slug, key.secret)
    assert (await whip.publish()).status_code == 201
    assert await viewer.expect("media") == {"type": "media", **UNMUTED}
    assert not any(m["type"] == "media" for m in viewer.inbox)  # the studio's offer: no flicker
    assert not (await refreshed(stream)).mic_muted

    for socket in (studio, viewer):
        await socket.close()
    for peer in (publisher, again):
        await peer.close()
    await whip.close()


async def test_bad_media_messages_get_a_clear_error_and_change_nothing(
    owner: User, stream_and_key: tuple[Stream, IssuedKey], no_errors: None
) -> None:
    stream, _ = stream_and_key
    studio = Socket(f"/ws/studio/{stream.slug}/", owner)
    await studio.open()
    # Not broadcasting from this page: nothing to say.
    await studio.send({"type": "media", "mic_muted": True, "camera_off": False})
    error = await studio.expect("error")
    assert error["code"] == "not_publishing"
    # Strangers (no key) are refused like any studio command.
    stranger = Socket(f"/ws/studio/{stream.slug}/", AnonymousUser())
    await stranger.open()
    await stranger.send({"type": "media", "mic_muted": True, "camera_off": False})
    assert (await stranger.expect("error"))["code"] == "forbidden"
    # A viewer cannot send it at all.
    viewer, _ = await _viewer_socket(stream)
    await viewer.send({"type": "media", "mic_muted": True, "camera_off": False})
    assert (await viewer.expect("error"))["code"] == "unknown_type"

    await studio.close()
    studio, publisher = await go_live(stream, owner)
    for bad in (
        {"type": "media"},
        {"type": "media", "mic_muted": "yes", "camera_off": False},
        {"type": "media", "mic_muted": 1, "camera_off": 0},
        {"type": "media", "mic_muted": None, "camera_off": True},
    ):
        await studio.send(bad)
        error = await studio.expect("error")
        assert (error["code"], "mic_muted" in error["message"]) == ("bad_message", True), bad
    await studio.send({"type": "offer", "sdp": "v=0\r\n", "media": {"mic_muted": "no"}})
    error = await studio.expect("error")
    assert error["code"] == "bad_message"
    assert "offer.media" in error["message"]
    assert not (await refreshed(stream)).mic_muted

    for socket in (studio, stranger, viewer):
        await socket.close()
    await publisher.close()
