"""Revoking or rotating a stream key ends every session it let in, at once: a studio
WebSocket (publishing or not) and a WHIP session, with real aiortc peers on the real ASGI
app. Sessions of the owner's login, and of the new key, carry on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser, User
from django.test import AsyncClient
from rest_framework.authtoken.models import Token

from broadcast.models import Stream
from broadcast.services import (
    IssuedKey,
    stream_create,
    stream_key_revoke,
    stream_key_rotate,
    stream_update,
)
from signaling.consumers import CLOSE_KEY_REVOKED
from signaling.gateway import PublishResult, gateway
from testpeers import TestPublisher, wait_until, wait_until_awaited
from tests.signaling.http_clients import WhepClient, WhipClient
from tests.signaling.test_consumers import Socket, refreshed

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


@pytest.fixture
async def parts(owner: User) -> tuple[Stream, IssuedKey]:
    return await database_sync_to_async(stream_create)(owner=owner, title="Launch")


@pytest.fixture
async def peers() -> AsyncIterator[list[TestPublisher]]:
    opened: list[TestPublisher] = []
    yield opened
    for peer in opened:
        await peer.close()
    await gateway.close_all()


async def studio_with_key(stream: Stream, secret: str) -> Socket:
    studio = Socket(f"/ws/studio/{stream.slug}/")
    studio.comm.scope["user"] = AnonymousUser()
    assert (await studio.open())["authorized"] is False
    await studio.send({"type": "auth", "key": secret})
    assert (await studio.expect("state"))["stream"]["slug"] == stream.slug
    return studio


async def publish(studio: Socket, peers: list[TestPublisher]) -> TestPublisher:
    publisher = TestPublisher()
    peers.append(publisher)
    await studio.send({"type": "offer", "sdp": await publisher.create_offer()})
    await publisher.accept_answer((await studio.expect("answer"))["sdp"])
    return publisher


async def expect_key_revoked_close(studio: Socket) -> None:
    error = await studio.expect("error")
    assert error["code"] == "key_revoked"
    assert error["message"]
    assert (await studio.comm.receive_output(timeout=10)) == {
        "type": "websocket.close",
        "code": CLOSE_KEY_REVOKED,
    }


@pytest.mark.parametrize("action", ["rotate", "revoke"])
async def test_a_revoked_key_ends_the_studio_broadcast_it_let_in(
    action: str, parts: tuple[Stream, IssuedKey], peers: list[TestPublisher]
) -> None:
    stream, issued = parts
    studio = await studio_with_key(stream, issued.secret)
    publisher = await publish(studio, peers)
    assert await wait_until(lambda: publisher.pc.connectionState == "connected", 20)
    assert (await refreshed(stream)).state == Stream.State.LIVE

    revoke = stream_key_rotate if action == "rotate" else stream_key_revoke
    await database_sync_to_async(revoke)(stream=stream)

    await expect_key_revoked_close(studio)
    # Told first that the broadcast ended.
    assert studio.inbox[-1]["type"] == "state"
    assert studio.inbox[-1]["stream"]["state"] == "ended"
    assert (await refreshed(stream)).state == Stream.State.ENDED
    # The publisher's peer is closed in the SFU: no router left for the stream.
    assert await wait_until(lambda: gateway.router(str(stream.pk)) is None, 10)
    assert await wait_until(lambda: publisher.pc.connectionState in ("failed", "closed"), 40)


async def test_a_revoked_key_closes_a_studio_that_only_authenticated(
    parts: tuple[Stream, IssuedKey],
) -> None:
    stream, issued = parts
    studio = await studio_with_key(stream, issued.secret)
    await database_sync_to_async(stream_key_rotate)(stream=stream)
    await expect_key_revoked_close(studio)


async def test_rotation_spares_the_owner_login_and_the_new_key(
    owner: User, parts: tuple[Stream, IssuedKey], peers: list[TestPublisher]
) -> None:
    stream, _ = parts
    second = await database_sync_to_async(stream_key_rotate)(stream=stream)
    with_new_key = await studio_with_key(stream, second.secret)

    by_login = Socket(f"/ws/studio/{stream.slug}/", owner)
    assert (await by_login.open())["authorized"] is True
    await publish(by_login, peers)
    assert (await refreshed(stream)).state == Stream.State.LIVE

    # Rotating again revokes the second key: the studio it let in goes; the owner's stays live.
    await database_sync_to_async(stream_key_rotate)(stream=stream)
    await expect_key_revoked_close(with_new_key)
    assert (await refreshed(stream)).state == Stream.State.LIVE
    await by_login.send({"type": "ping"})
    assert (await by_login.expect("pong"))["type"] == "pong"
    assert gateway.router(str(stream.pk)) is not None
    await by_login.close()


async def test_a_key_already_replaced_cannot_go_live(
    parts: tuple[Stream, IssuedKey], peers: list[TestPublisher]
) -> None:
    stream, issued = parts
    studio = await studio_with_key(stream, issued.secret)
    await database_sync_to_async(stream_key_rotate)(stream=stream)
    await expect_key_revoked_close(studio)
    # The stale key no longer authenticates a fresh studio either.
    again = Socket(f"/ws/studio/{stream.slug}/")
    again.comm.scope["user"] = AnonymousUser()
    await again.open()
    await again.send({"type": "auth", "key": issued.secret})
    assert (await again.next())["code"] == "forbidden"
    assert (await refreshed(stream)).state == Stream.State.IDLE
    await again.close()


async def test_a_key_revoked_while_its_takeover_is_answered_leaves_the_live_broadcast_alone(
    owner: User,
    parts: tuple[Stream, IssuedKey],
    peers: list[TestPublisher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The owner is live; a key holder's studio takes over, and the key is revoked between
    the answer to its offer and the start of its broadcast: it is refused, its pending
    publisher is withdrawn, and the owner's broadcast carries on."""
    stream, issued = parts
    by_login = Socket(f"/ws/studio/{stream.slug}/", owner)
    assert (await by_login.open())["authorized"] is True
    owners = await publish(by_login, peers)
    assert await wait_until(lambda: owners.pc.connectionState == "connected", 20)
    assert await wait_until_awaited(lambda: gateway.publisher_active(stream_id=str(stream.pk)), 10)
    with_key = await studio_with_key(stream, issued.secret)
    answer_offer = gateway.publish

    async def revoked_meanwhile(**kwargs: Any) -> PublishResult:
        result = await answer_offer(**kwargs)
        await database_sync_to_async(stream_key_revoke)(stream=stream)
        return result

    monkeypatch.setattr(gateway, "publish", revoked_meanwhile)
    newcomer = TestPublisher()
    peers.append(newcomer)
    await with_key.send({"type": "offer", "sdp": await newcomer.create_offer()})

    assert (await with_key.expect("error"))["code"] == "key_revoked"
    assert (await refreshed(stream)).state == Stream.State.LIVE
    assert gateway.router(str(stream.pk)) is not None
    assert await gateway.publisher_active(stream_id=str(stream.pk))
    await by_login.send({"type": "ping"})
    assert (await by_login.expect("pong"))["type"] == "pong"
    await by_login.close()


async def test_studios_going_live_at_once_leave_the_broadcast_to_the_last_one(
    owner: User,
    parts: tuple[Stream, IssuedKey],
    peers: list[TestPublisher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A key holder's studio and the owner's go live at the same moment, the key holder's
    first: they are served one after the other, so the broadcast is the owner's, and
    revoking the key leaves it on air."""
    stream, issued = parts
    with_key = await studio_with_key(stream, issued.secret)
    by_login = Socket(f"/ws/studio/{stream.slug}/", owner)
    assert (await by_login.open())["authorized"] is True
    answer_offer = gateway.publish
    calls: list[int] = []
    second_answered = asyncio.Event()

    async def first_answered_slowly(**kwargs: Any) -> PublishResult:
        calls.append(len(calls))
        call = calls[-1]
        result = await answer_offer(**kwargs)
        if call == 0:  # room for the second publish to overtake it, if nothing stops it
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(second_answered.wait(), 2)
        else:
            second_answered.set()
        return result

    monkeypatch.setattr(gateway, "publish", first_answered_slowly)
    first, second = TestPublisher(), TestPublisher()
    peers += [first, second]
    first_offer, second_offer = await first.create_offer(), await second.create_offer()
    await with_key.send({"type": "offer", "sdp": first_offer})
    assert await wait_until(lambda: len(calls) == 1, 10)
    await by_login.send({"type": "offer", "sdp": second_offer})
    await first.accept_answer((await with_key.expect("answer"))["sdp"])
    await second.accept_answer((await by_login.expect("answer"))["sdp"])
    assert await wait_until(lambda: second.pc.connectionState == "connected", 20)
    assert (await refreshed(stream)).state == Stream.State.LIVE

    await database_sync_to_async(stream_key_revoke)(stream=stream)

    await expect_key_revoked_close(with_key)
    assert (await refreshed(stream)).state == Stream.State.LIVE
    assert gateway.router(str(stream.pk)) is not None
    await by_login.close()


async def test_a_revoked_key_ends_its_whip_session(
    owner: User, parts: tuple[Stream, IssuedKey]
) -> None:
    stream, issued = parts
    http = AsyncClient()
    client = WhipClient(http, stream.slug, issued.secret)
    try:
        assert (await client.publish()).status_code == 201
        assert await wait_until(lambda: client.publisher.pc.connectionState == "connected", 20)
        assert (await refreshed(stream)).state == Stream.State.LIVE

        # The owner rotates the key through the REST API (a sync view, as in production).
        api = AsyncClient()
        await api.aforce_login(owner)
        rotated = await api.post(f"/api/v1/streams/{stream.slug}/key/rotate/")
        assert rotated.status_code == 201

        assert (await refreshed(stream)).state == Stream.State.ENDED
        assert await wait_until(lambda: gateway.router(str(stream.pk)) is None, 10)
        # The client's next request is refused.
        response = await client.trickle([])
        assert response.status_code in (401, 404), response.content
        assert response.json()["error"]["code"] in ("key_revoked", "not_found")
        assert (await client.delete()).status_code in (401, 404)
        # And the old key does not publish again.
        again = WhipClient(http, stream.slug, issued.secret)
        try:
            assert (await again.publish()).status_code == 401
        finally:
            await again.close()
    finally:
        await client.close()
        await gateway.close_all()


async def test_a_revoked_key_ends_the_whep_viewers_it_let_into_a_private_stream(
    owner: User, parts: tuple[Stream, IssuedKey], peers: list[TestPublisher]
) -> None:
    stream, issued = parts
    await database_sync_to_async(stream_update)(stream=stream, visibility=Stream.Visibility.PRIVATE)
    studio = Socket(f"/ws/studio/{stream.slug}/", owner)
    await studio.open()
    await publish(studio, peers)  # the owner broadcasts by login
    token = await database_sync_to_async(Token.objects.create)(user=owner)
    http = AsyncClient()
    by_key = WhepClient(http, stream.slug, issued.secret)
    by_token = WhepClient(http, stream.slug, token.key)
    try:
        for client in (by_key, by_token):
            assert (await client.watch()).status_code == 201
            assert await client.viewer.wait_for_frames(video=5, within=20)

        api = AsyncClient()
        await api.aforce_login(owner)
        assert (await api.post(f"/api/v1/streams/{stream.slug}/key/rotate/")).status_code == 201

        # The key's viewer is closed and its session refused; the owner's token viewer plays on.
        assert await wait_until(
            lambda: by_key.viewer.pc.connectionState in ("failed", "closed"), 40
        ), by_key.viewer.pc.connectionState
        assert (await by_key.delete()).status_code in (401, 404)
        assert (await refreshed(stream)).state == Stream.State.LIVE
        before = by_token.viewer.video.frames
        assert await wait_until(lambda: by_token.viewer.video.frames > before + 5, 20)
        # The old key no longer gets in: a private stream answers as a missing one.
        assert (await WhepClient(http, stream.slug, issued.secret).post("v=0")).status_code == 404
    finally:
        for client in (by_key, by_token):
            await client.close()
        await studio.close()
