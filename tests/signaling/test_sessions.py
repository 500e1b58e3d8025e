"""Anonymous sessions end: a connect deadline, viewers counted once connected, and caps per
client address, per stream and per process (docs/SECURITY.md, "Sessions")."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser, User
from django.test import AsyncClient

from broadcast.models import Stream
from broadcast.services import stream_create, stream_go_live
from sfu.testing import TestPublisher, wait_until
from signaling.sfu_gateway import gateway
from tests.signaling.http_clients import SDP, silent_whep_offer
from tests.signaling.test_consumers import Socket, watch
from viewers.models import ViewerSession

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

DEADLINE = 1.0


@pytest.fixture
def short_deadline(settings: Any) -> None:
    settings.ONAIR = {**settings.ONAIR, "CONNECT_TIMEOUT_SECONDS": DEADLINE}


@pytest.fixture
async def live_stream() -> AsyncIterator[Stream]:
    owner = await database_sync_to_async(User.objects.create_user)("owner", password="pw")
    stream, _ = await database_sync_to_async(stream_create)(owner=owner, title="Launch")
    publisher = TestPublisher()
    result = await gateway.publish(stream=stream, offer_sdp=await publisher.create_offer())
    await publisher.accept_answer(result.answer_sdp)
    await database_sync_to_async(stream_go_live)(stream=stream)
    yield stream
    await publisher.close()
    await gateway.close_all()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def open_viewer_sessions(stream: Stream) -> int:
    return await database_sync_to_async(
        ViewerSession.objects.filter(stream=stream, ended_at__isnull=True).count
    )()


async def test_a_whep_session_that_never_does_ice_is_gone_after_the_deadline(
    short_deadline: None, live_stream: Stream
) -> None:
    stream = live_stream
    router = gateway.router(stream)
    assert router is not None
    http = AsyncClient()
    baseline = open_fds()

    response = await http.post(f"/whep/{stream.slug}", data=silent_whep_offer(), content_type=SDP)
    assert response.status_code == 201, response.content
    assert len(router.viewers) == 1

    assert await wait_until(lambda: not router.viewers, DEADLINE + 15)
    assert (await http.delete(response["Location"])).status_code == 404
    assert await open_viewer_sessions(stream) == 0
    await database_sync_to_async(stream.refresh_from_db)()
    assert (stream.viewer_count, stream.peak_viewer_count) == (0, 0)  # never counted
    assert await wait_until(lambda: open_fds() <= baseline, 5)


async def test_a_watch_socket_has_no_peer_until_it_asks_and_is_counted_once_connected(
    short_deadline: None, live_stream: Stream
) -> None:
    stream = live_stream
    router = gateway.router(stream)
    assert router is not None
    idle = await watch_socket(stream)
    silent = await watch_socket(stream)
    assert router.viewers == ()  # a welcome costs no peer connection

    await silent.send({"type": "watch"})
    await silent.expect("offer")  # never answered
    assert len(router.viewers) == 1
    assert await open_viewer_sessions(stream) == 0
    error = await silent.expect("error", within=DEADLINE + 15)
    assert error["code"] == "connect_timeout"
    assert router.viewers == ()

    socket, viewer = await watch(stream)  # answers and connects
    assert await viewer.wait_for_frames(video=5, within=20)
    assert await wait_until_async(lambda: counted(stream, 1), 10)
    await database_sync_to_async(stream.refresh_from_db)()
    assert (stream.viewer_count, stream.peak_viewer_count) == (1, 1)
    for closeable in (idle, silent, socket, viewer):
        await closeable.close()
    assert await wait_until_async(lambda: counted(stream, 0), 10)


async def watch_socket(stream: Stream) -> Socket:
    socket = Socket(f"/ws/watch/{stream.slug}/")
    socket.comm.scope["user"] = AnonymousUser()
    assert (await socket.open())["type"] == "welcome"
    return socket


async def counted(stream: Stream, count: int) -> bool:
    await database_sync_to_async(stream.refresh_from_db)()
    return stream.viewer_count == count and await open_viewer_sessions(stream) == count


async def wait_until_async(condition: Callable[[], Awaitable[bool]], within: float) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True
