"""The studio and watch consumers against the real ASGI app, the real SFU and real aiortc
peers: signaling, state and viewer counts through the services, and every error path."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser, User
from django.test import AsyncClient

from broadcast.models import Stream
from broadcast.services import IssuedKey, stream_create, stream_end, stream_key_rotate
from onair.asgi import application
from signaling.gateway import gateway
from signaling.messages import MAX_FRAME_BYTES
from testpeers import TestPublisher, TestViewer, wait_until
from tests.signaling.http_clients import WhipClient
from viewers.models import ViewerSession

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

ORIGIN = (b"origin", b"http://localhost")


@pytest.fixture
async def live_stream_parts(owner: User) -> tuple[Stream, IssuedKey]:
    return await database_sync_to_async(stream_create)(owner=owner, title="Launch")


@pytest.fixture
async def sfu_cleanup() -> AsyncIterator[None]:
    yield
    await gateway.close_all()


class Socket:
    """A WebSocket client on the full ASGI app (origin check, auth middleware, router)."""

    def __init__(self, path: str, user: User | AnonymousUser | None = None) -> None:
        self.comm = WebsocketCommunicator(application, path, headers=[ORIGIN])
        if user is not None:
            self.comm.scope["user"] = user
        self.inbox: list[dict[str, Any]] = []

    async def open(self) -> dict[str, Any]:
        connected, _ = await self.comm.connect(timeout=10)
        assert connected
        return await self.next()

    async def next(self, within: float = 10) -> dict[str, Any]:
        return json.loads(await self.comm.receive_from(timeout=within))

    async def expect(self, kind: str, within: float = 15) -> dict[str, Any]:
        """The next message of ``kind``, skipping others (state/viewer pushes interleave)."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            message = await self.next(within=max(remaining, 0.1))
            if message["type"] == kind:
                return message
            self.inbox.append(message)

    async def expect_count(self, count: int) -> None:
        """Wait for a ``viewers`` push announcing ``count``."""
        if any(m["type"] == "viewers" and m["count"] == count for m in self.inbox):
            return
        while (await self.expect("viewers"))["count"] != count:
            pass

    async def send(self, message: dict[str, Any]) -> None:
        await self.comm.send_to(text_data=json.dumps(message))

    async def close(self) -> None:
        await self.comm.disconnect()


async def refreshed(stream: Stream) -> Stream:
    await database_sync_to_async(stream.refresh_from_db)()
    return stream


async def go_live(stream: Stream, owner: User) -> tuple[Socket, TestPublisher]:
    studio = Socket(f"/ws/studio/{stream.slug}/", owner)
    welcome = await studio.open()
    assert welcome["type"] == "welcome"
    assert welcome["authorized"] is True
    assert welcome["ice_servers"] == []  # default config: nothing leaves the machine
    publisher = TestPublisher()
    await studio.send({"type": "offer", "sdp": await publisher.create_offer()})
    answer = await studio.expect("answer")
    await publisher.accept_answer(answer["sdp"])
    return studio, publisher


async def watch(stream: Stream) -> tuple[Socket, TestViewer]:
    socket = Socket(f"/ws/watch/{stream.slug}/", None)
    socket.comm.scope["user"] = AnonymousUser()
    welcome = await socket.open()
    assert welcome["type"] == "welcome"
    assert welcome["role"] == "viewer"
    await socket.send({"type": "watch"})
    viewer = TestViewer()
    offer = await socket.expect("offer")
    await socket.send({"type": "answer", "sdp": await viewer.answer(offer["sdp"])})
    return socket, viewer


async def test_broadcast_reaches_viewers_and_state_follows(
    owner: User, live_stream_parts: tuple[Stream, IssuedKey], sfu_cleanup: None
) -> None:
    stream, _ = live_stream_parts
    studio, publisher = await go_live(stream, owner)
    live = await studio.expect("state")
    assert live["stream"]["state"] == "live"
    assert (await refreshed(stream)).state == Stream.State.LIVE

    sockets, viewers = zip(*[await watch(stream) for _ in range(2)], strict=True)
    for viewer in viewers:
        assert await viewer.wait_for_frames(video=20, audio=5, within=20)
    # Counted through the services, pushed to the studio.
    assert (await refreshed(stream)).viewer_count == 2
    await studio.expect_count(2)

    # A viewer leaving is uncounted; the others keep playing.
    await sockets[1].close()
    await viewers[1].close()
    await studio.expect_count(1)
    assert (await refreshed(stream)).viewer_count == 1
    before = viewers[0].video.frames
    assert await wait_until(lambda: viewers[0].video.frames > before + 10, 10)

    # Ending from the studio: viewers are told, the router closes, the state is saved.
    await studio.send({"type": "end"})
    ended = await sockets[0].expect("state")
    assert ended["stream"]["state"] == "ended"
    stream = await refreshed(stream)
    assert stream.state == Stream.State.ENDED
    assert stream.viewer_count == 0
    assert stream.peak_viewer_count == 2
    assert await wait_until(lambda: gateway.router(str(stream.pk)) is None, 5)
    active = await database_sync_to_async(
        ViewerSession.objects.filter(stream=stream, ended_at__isnull=True).count
    )()
    assert active == 0
    for closeable in (*sockets[:1], studio):
        await closeable.close()
    for peer in (publisher, viewers[0]):
        await peer.close()


async def test_viewer_waiting_for_broadcast_starts_by_itself(
    owner: User, live_stream_parts: tuple[Stream, IssuedKey], sfu_cleanup: None
) -> None:
    stream, _ = live_stream_parts
    waiting = Socket(f"/ws/watch/{stream.slug}/")
    waiting.comm.scope["user"] = AnonymousUser()
    welcome = await waiting.open()
    assert welcome["stream"]["state"] == "idle"
    await waiting.send({"type": "watch"})

    studio, publisher = await go_live(stream, owner)
    offer = await waiting.expect("offer", within=20)
    viewer = TestViewer()
    await waiting.send({"type": "answer", "sdp": await viewer.answer(offer["sdp"])})
    assert await viewer.wait_for_frames(video=10, within=20)
    for closeable in (waiting, studio):
        await closeable.close()
    for peer in (publisher, viewer):
        await peer.close()


async def test_stream_key_authorizes_a_stranger(
    live_stream_parts: tuple[Stream, IssuedKey], sfu_cleanup: None
) -> None:
    stream, issued = live_stream_parts
    studio = Socket(f"/ws/studio/{stream.slug}/")
    studio.comm.scope["user"] = AnonymousUser()
    welcome = await studio.open()
    assert welcome["authorized"] is False
    assert welcome["stream"] == {"slug": stream.slug}  # nothing revealed before the key

    await studio.send({"type": "offer", "sdp": "v=0"})
    assert (await studio.next())["code"] == "forbidden"
    await studio.send({"type": "auth", "key": "sk_wrong" + "x" * 40})
    assert (await studio.next())["code"] == "forbidden"
    await studio.send({"type": "auth", "key": issued.secret})
    state = await studio.next()
    assert state["type"] == "state"
    assert state["stream"]["title"] == "Launch"

    publisher = TestPublisher()
    await studio.send({"type": "offer", "sdp": await publisher.create_offer()})
    await publisher.accept_answer((await studio.expect("answer"))["sdp"])
    assert (await refreshed(stream)).state == Stream.State.LIVE
    await studio.close()
    await publisher.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad_json"),
        ('{"type": "teleport"}', "unknown_type"),
        ('{"type": "offer"}', "bad_message"),
        ('{"type": "offer", "sdp": "this is not sdp"}', "bad_sdp"),
        (json.dumps({"type": "offer", "sdp": "v" * (MAX_FRAME_BYTES + 1)}), "too_large"),
    ],
)
async def test_bad_studio_frames_get_errors_and_keep_the_socket(
    owner: User,
    live_stream_parts: tuple[Stream, IssuedKey],
    sfu_cleanup: None,
    frame: str,
    code: str,
) -> None:
    stream, _ = live_stream_parts
    studio = Socket(f"/ws/studio/{stream.slug}/", owner)
    await studio.open()
    await studio.comm.send_to(text_data=frame)
    error = await studio.next()
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["message"]
    await studio.send({"type": "ping"})
    assert (await studio.next())["type"] == "pong"
    assert (await refreshed(stream)).state == Stream.State.IDLE
    await studio.close()


async def test_binary_frames_and_floods_are_refused(
    owner: User, live_stream_parts: tuple[Stream, IssuedKey]
) -> None:
    stream, _ = live_stream_parts
    studio = Socket(f"/ws/studio/{stream.slug}/", owner)
    await studio.open()
    await studio.comm.send_to(bytes_data=b"\x00\xff")
    assert (await studio.next())["code"] == "bad_json"
    for _ in range(100):
        await studio.send({"type": "ping"})
    replies = [await studio.next() for _ in range(100)]
    assert any(r.get("code") == "rate_limited" for r in replies)
    await studio.close()


async def test_unknown_stream_closes_with_not_found() -> None:
    socket = Socket("/ws/watch/no-such-stream/")
    socket.comm.scope["user"] = AnonymousUser()
    error = await socket.open()
    assert error == {"type": "error", "code": "not_found", "message": "No such stream."}
    assert (await socket.comm.receive_output(timeout=5))["code"] == 4404


async def test_private_stream_is_not_found_for_strangers(owner: User) -> None:
    stream, _ = await database_sync_to_async(stream_create)(
        owner=owner, title="Secret", visibility=Stream.Visibility.PRIVATE
    )
    socket = Socket(f"/ws/watch/{stream.slug}/")
    socket.comm.scope["user"] = AnonymousUser()
    assert (await socket.open())["code"] == "not_found"

    allowed = Socket(f"/ws/watch/{stream.slug}/", owner)
    assert (await allowed.open())["type"] == "welcome"
    await allowed.close()


async def test_watch_errors_do_not_disturb_other_viewers(
    owner: User, live_stream_parts: tuple[Stream, IssuedKey], sfu_cleanup: None
) -> None:
    stream, _ = live_stream_parts
    studio, publisher = await go_live(stream, owner)
    good_socket, good_viewer = await watch(stream)
    assert await good_viewer.wait_for_frames(video=10, within=20)

    rude = Socket(f"/ws/watch/{stream.slug}/")
    rude.comm.scope["user"] = AnonymousUser()
    await rude.open()
    await rude.send({"type": "watch"})
    await rude.expect("offer")
    for frame, code in [
        ('{"type": "answer", "sdp": "garbage"}', "bad_sdp"),
        ('{"type": "offer", "sdp": "v=0"}', "glare"),
        ('{"type": "end"}', "unknown_type"),
        ('{"type": "candidate", "candidate": {"candidate": "nonsense", "sdpMid": "0"}}', None),
    ]:
        await rude.comm.send_to(text_data=frame)
        if code is not None:
            assert (await rude.expect("error"))["code"] == code
    await rude.close()  # vanishes mid-negotiation

    before = good_viewer.video.frames
    assert await wait_until(lambda: good_viewer.video.frames > before + 20, 10)
    assert (await refreshed(stream)).state == Stream.State.LIVE
    for closeable in (good_socket, studio):
        await closeable.close()
    for peer in (publisher, good_viewer):
        await peer.close()


async def test_glare_server_offer_stands_then_viewer_offer_is_answered(
    owner: User, live_stream_parts: tuple[Stream, IssuedKey], sfu_cleanup: None
) -> None:
    stream, _ = live_stream_parts
    studio, publisher = await go_live(stream, owner)
    socket = Socket(f"/ws/watch/{stream.slug}/")
    socket.comm.scope["user"] = AnonymousUser()
    await socket.open()
    await socket.send({"type": "watch"})
    server_offer = await socket.expect("offer")

    # Both sides offer at once: the impolite server keeps its offer.
    polite = TestViewer()
    await socket.send({"type": "offer", "sdp": await polite.create_offer()})
    glare = await socket.expect("error")
    assert glare["code"] == "glare"
    # The polite page drops its own offer and answers the server's.
    await polite.close()
    viewer = TestViewer()
    await socket.send({"type": "answer", "sdp": await viewer.answer(server_offer["sdp"])})
    await socket.send({"type": "candidate", "candidate": None})  # end of candidates
    assert await viewer.wait_for_frames(video=10, within=20)

    # Once stable, the page may offer (WHEP-style) and gets an answer on a new session.
    second = TestViewer()
    await socket.send({"type": "offer", "sdp": await second.create_offer()})
    await second.accept_answer((await socket.expect("answer"))["sdp"])
    assert await second.wait_for_frames(video=10, within=20)
    # The replaced session is closed; the viewer is still counted once.
    assert (await refreshed(stream)).viewer_count == 1
    # An answer nobody asked for is refused.
    await socket.send({"type": "answer", "sdp": "v=0"})
    assert (await socket.expect("error"))["code"] == "no_session"

    # restart: a fresh server offer on a fresh session.
    await socket.send({"type": "restart"})
    third = TestViewer()
    restart_offer = await socket.expect("offer")
    await socket.send({"type": "answer", "sdp": await third.answer(restart_offer["sdp"])})
    assert await third.wait_for_frames(video=10, within=20)
    for closeable in (socket, studio):
        await closeable.close()
    for peer in (publisher, viewer, second, third):
        await peer.close()


async def test_publisher_reconnect_keeps_viewers_playing(
    owner: User, live_stream_parts: tuple[Stream, IssuedKey], sfu_cleanup: None
) -> None:
    stream, _ = live_stream_parts
    studio, publisher = await go_live(stream, owner)
    socket, viewer = await watch(stream)
    assert await viewer.wait_for_frames(video=10, within=20)
    viewer_pc = viewer.pc

    # The broadcaster's browser drops (socket and peer connection) and comes back.
    await studio.close()
    await publisher.close()
    while (await socket.expect("publisher"))["status"] != "reconnecting":
        pass  # "connected" from the first connection may come first
    # Nobody is connected: a studio opened now resumes the broadcast (no takeover).
    onlooker = Socket(f"/ws/studio/{stream.slug}/", owner)
    welcome = await onlooker.open()
    assert (welcome["stream"]["state"], welcome["publisher"]) == ("live", "none")
    await onlooker.close()
    studio, publisher = await go_live(stream, owner)
    before = viewer.video.frames
    assert await wait_until(lambda: viewer.video.frames > before + 20, 20)
    assert viewer.pc is viewer_pc  # same viewer connection, no renegotiation
    assert (await refreshed(stream)).state == Stream.State.LIVE
    for closeable in (socket, studio):
        await closeable.close()
    for peer in (publisher, viewer):
        await peer.close()


async def test_a_second_studio_takes_over_and_the_first_is_told_why(
    owner: User, live_stream_parts: tuple[Stream, IssuedKey], sfu_cleanup: None
) -> None:
    stream, key = live_stream_parts
    first, first_publisher = await go_live(stream, owner)
    socket, viewer = await watch(stream)
    assert await viewer.wait_for_frames(video=10, within=20)
    # A studio opened now hears that someone publishes: going live there takes over.
    onlooker = Socket(f"/ws/studio/{stream.slug}/", owner)
    assert (await onlooker.open())["publisher"] == "connected"
    await onlooker.close()
    # A takeover whose connection never comes up (its ICE fails) changes nothing, and its
    # tab closing just drops it: the first studio is not told "replaced".
    router = gateway.router(str(stream.pk))
    assert router is not None
    live = router.publisher
    stuck = Socket(f"/ws/studio/{stream.slug}/", owner)
    await stuck.open()
    stuck_publisher = TestPublisher()
    await stuck.send({"type": "offer", "sdp": await stuck_publisher.create_offer()})
    await stuck.expect("answer")  # never applied: no ICE
    assert router.pending_publisher is not None
    before = viewer.video.frames
    assert await wait_until(lambda: viewer.video.frames > before + 20, 20)
    await stuck.close()
    await stuck_publisher.close()
    assert await wait_until(lambda: router.pending_publisher is None)
    assert router.publisher is live

    second, second_publisher = await go_live(stream, owner)

    replaced = await first.expect("replaced")
    assert "another tab or device" in replaced["message"]
    before = viewer.video.frames
    assert await wait_until(lambda: viewer.video.frames > before + 20, 20)
    assert (await refreshed(stream)).state == Stream.State.LIVE
    assert not any(m["type"] == "replaced" for m in second.inbox)

    # A WHIP encoder takes over from the studio the same way.
    whip = WhipClient(AsyncClient(), stream.slug, key.secret)
    assert (await whip.publish()).status_code == 201
    assert "another tab or device" in (await second.expect("replaced"))["message"]
    before = viewer.video.frames
    assert await wait_until(lambda: viewer.video.frames > before + 20, 20)
    for closeable in (socket, first, second):
        await closeable.close()
    for peer in (first_publisher, second_publisher, viewer):
        await peer.close()
    await whip.close()


@pytest.mark.parametrize(
    ("end", "reason"),
    [
        (lambda stream: stream_end(stream=stream, reason=Stream.EndReason.ADMIN), "admin"),
        (lambda stream: stream_key_rotate(stream=stream), "key_revoked"),
    ],
)
async def test_the_studio_hears_who_ended_the_broadcast(
    end: Callable[[Stream], object],
    reason: str,
    owner: User,
    live_stream_parts: tuple[Stream, IssuedKey],
    sfu_cleanup: None,
) -> None:
    stream, key = live_stream_parts
    studio = Socket(f"/ws/studio/{stream.slug}/", AnonymousUser())  # publishes with the key
    assert "publisher" not in await studio.open()  # not for strangers
    await studio.send({"type": "auth", "key": key.secret})
    await studio.expect("state")
    assert (await studio.expect("publisher"))["status"] == "none"
    publisher = TestPublisher()
    await studio.send({"type": "offer", "sdp": await publisher.create_offer()})
    await publisher.accept_answer((await studio.expect("answer"))["sdp"])
    while (await studio.expect("state"))["stream"]["state"] != "live":
        pass

    await database_sync_to_async(end)(await refreshed(stream))

    while (ended := (await studio.expect("state"))["stream"])["state"] != "ended":
        pass
    assert ended["end_reason"] == reason
    assert ended["ended_at"]
    await studio.close()
    await publisher.close()


async def test_ending_an_idle_stream_is_refused_and_publishing_again_starts_anew(
    owner: User, live_stream_parts: tuple[Stream, IssuedKey], sfu_cleanup: None
) -> None:
    stream, _ = live_stream_parts
    studio = Socket(f"/ws/studio/{stream.slug}/", owner)
    await studio.open()
    await studio.send({"type": "end"})
    assert (await studio.expect("error"))["code"] == "not_live"
    await studio.close()

    studio, publisher = await go_live(stream, owner)
    await studio.send({"type": "end"})
    while (await studio.expect("state"))["stream"]["state"] != "ended":
        pass  # "live" from going live may come first
    assert (await refreshed(stream)).state == Stream.State.ENDED
    await publisher.close()
    again = TestPublisher()
    await studio.send({"type": "offer", "sdp": await again.create_offer()})
    await again.accept_answer((await studio.expect("answer"))["sdp"])
    while (await studio.expect("state"))["stream"]["state"] != "live":
        pass  # "idle" (the restart) comes first
    assert (await refreshed(stream)).state == Stream.State.LIVE
    await studio.close()
    await again.close()


TURN_SETTINGS = {
    "STUN_URLS": ["stun:stun.example.org:3478"],
    "TURN_URLS": ["turn:turn.example.org:3478?transport=udp"],
    "TURN_SECRET": "coturn-static-auth-secret",
    "ICE_TRANSPORT_POLICY": "relay",
}


async def test_configured_ice_servers_reach_both_pages_with_fresh_turn_credentials(
    owner: User, live_stream_parts: tuple[Stream, IssuedKey], settings: Any
) -> None:
    stream, _ = live_stream_parts
    settings.ONAIR = {**settings.ONAIR, **TURN_SETTINGS}
    studio = Socket(f"/ws/studio/{stream.slug}/", owner)
    watcher = Socket(f"/ws/watch/{stream.slug}/")
    watcher.comm.scope["user"] = AnonymousUser()
    welcomes = [await studio.open(), await watcher.open()]
    for welcome in welcomes:
        stun, turn = welcome["ice_servers"]
        assert stun == {"urls": ["stun:stun.example.org:3478"]}
        assert turn["urls"] == ["turn:turn.example.org:3478?transport=udp"]
        assert turn["username"].split(":")[0].isdigit()  # "<expiry>:<user>"
        assert turn["credential"]
        assert "coturn-static-auth-secret" not in json.dumps(welcome)
    # Relay-only is for viewers; the broadcaster gathers every candidate.
    assert welcomes[0]["ice_transport_policy"] == "all"
    assert welcomes[1]["ice_transport_policy"] == "relay"
    # Each session gets its own credential.
    assert welcomes[0]["ice_servers"][1]["username"] != welcomes[1]["ice_servers"][1]["username"]
    await studio.close()
    await watcher.close()


async def test_an_unexpected_failure_costs_one_request_not_the_connection(
    owner: User, live_stream_parts: tuple[Stream, IssuedKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, _ = live_stream_parts

    async def broken_publish(**kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(gateway, "publish", broken_publish)
    studio = Socket(f"/ws/studio/{stream.slug}/", owner)
    await studio.open()
    publisher = TestPublisher()
    await studio.send({"type": "offer", "sdp": await publisher.create_offer()})
    error = await studio.expect("error")
    assert error["code"] == "internal"
    await studio.send({"type": "ping"})
    assert (await studio.next())["type"] == "pong"
    assert (await refreshed(stream)).state == Stream.State.IDLE
    await studio.close()
    await publisher.close()


async def test_the_watch_page_hears_its_quality_and_chooses_a_layer(
    owner: User, live_stream_parts: tuple[Stream, IssuedKey], sfu_cleanup: None
) -> None:
    stream, _ = live_stream_parts
    studio, publisher = await go_live(stream, owner)
    socket, viewer = await watch(stream)
    assert await viewer.wait_for_frames(video=5, within=20)
    quality = await socket.expect("quality")
    while quality["heights"] == [0]:  # reported before the layer's first keyframe was read
        quality = await socket.expect("quality")
    assert quality == {
        "type": "quality",
        "layer": 0,
        "heights": [240],  # the test publisher's one layer
        "auto": True,
        "paused": False,
    }
    await socket.send({"type": "quality", "layer": 0})
    chosen = await socket.expect("quality")
    assert chosen["layer"] == 0
    assert chosen["auto"] is False
    await socket.send({"type": "quality", "layer": None})
    assert (await socket.expect("quality"))["auto"] is True
    await socket.send({"type": "quality", "layer": "top"})
    assert (await socket.expect("error"))["code"] == "bad_message"
    for closeable in (socket, studio):
        await closeable.close()
    for peer in (publisher, viewer):
        await peer.close()
