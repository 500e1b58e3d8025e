"""A studio page that closes loses its publisher at once: its viewers see "reconnecting"
without waiting for the peer connection to time out, and the grace period starts then; a
watch page that opens meanwhile learns it in its ``welcome``."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from broadcast.models import Stream
from broadcast.services import IssuedKey
from signaling.gateway import gateway
from tests.signaling.test_consumers import Socket, go_live, refreshed, watch

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


async def _publisher_status(socket: Socket, within: float) -> str:
    return str((await socket.expect("publisher", within=within))["status"])


async def _statuses_so_far(socket: Socket) -> list[str]:
    """The publisher statuses the page was told of, up to the answer to a ``ping``."""
    await socket.send({"type": "ping"})
    await socket.expect("pong")
    return [m["status"] for m in socket.inbox if m["type"] == "publisher"]


async def _welcome(stream: Stream) -> dict[str, object]:
    socket = Socket(f"/ws/watch/{stream.slug}/", None)
    welcome = await socket.open()
    await socket.close()
    return welcome


async def test_closing_the_studio_makes_viewers_see_reconnecting_at_once(
    owner: User, stream_parts: tuple[Stream, IssuedKey]
) -> None:
    stream, _ = stream_parts
    try:
        assert (await _welcome(stream))["publisher"] is None  # not live
        studio, publisher = await go_live(stream, owner)
        socket, viewer = await watch(stream)
        assert await viewer.wait_for_frames(video=10, within=20)
        assert (await _welcome(stream))["publisher"] == "connected"

        # The tab closes; its peer connection would go on sending until ICE consent fails.
        await studio.close()
        statuses = [await _publisher_status(socket, within=2)]
        while statuses[-1] != "reconnecting":
            statuses.append(await _publisher_status(socket, within=2))
        assert (await _welcome(stream))["publisher"] == "reconnecting"
        assert (await refreshed(stream)).state == Stream.State.LIVE  # in its grace period

        # The broadcaster comes back within the grace period: the viewers carry on.
        studio, second = await go_live(stream, owner)
        while await _publisher_status(socket, within=10) != "connected":
            pass
        before = viewer.video.frames
        assert await viewer.wait_for_frames(video=before + 20, within=20)
        assert (await _welcome(stream))["publisher"] == "connected"
        for closeable in (socket, studio):
            await closeable.close()
        for peer in (publisher, second, viewer):
            await peer.close()
    finally:
        await gateway.close_all()


async def test_a_studio_closing_after_another_took_over_leaves_the_broadcast_alone(
    owner: User, stream_parts: tuple[Stream, IssuedKey]
) -> None:
    stream, _ = stream_parts
    try:
        first_studio, first = await go_live(stream, owner)
        second_studio, second = await go_live(stream, owner)  # another tab goes live
        socket, viewer = await watch(stream)
        assert await viewer.wait_for_frames(video=10, within=20)

        await first_studio.close()
        assert await gateway.publisher_active(stream_id=str(stream.pk))
        assert (await _welcome(stream))["publisher"] == "connected"
        before = viewer.video.frames
        assert await viewer.wait_for_frames(video=before + 20, within=20)
        assert "reconnecting" not in await _statuses_so_far(socket)
        for closeable in (socket, second_studio):
            await closeable.close()
        for peer in (first, second, viewer):
            await peer.close()
    finally:
        await gateway.close_all()
