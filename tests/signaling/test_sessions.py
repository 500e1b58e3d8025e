"""Anonymous sessions end: a connect deadline, viewers counted once connected, and caps per
client address, per stream and per process (docs/SECURITY.md, "Sessions")."""

from __future__ import annotations

import logging
import os
import resource
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.test import AsyncClient, override_settings

from broadcast.models import Stream
from broadcast.services import stream_create
from onair.conf import onair_settings
from signaling.gateway import gateway
from signaling.session_limits import RESERVED_FDS, fds_per_session, max_sessions_default
from testpeers import wait_until, wait_until_awaited
from tests.signaling.http_clients import SDP, silent_offer
from tests.signaling.test_consumers import Socket, watch
from viewers.models import ViewerSession

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

DEADLINE = 1.0


@pytest.fixture
def short_deadline(settings: Any) -> None:
    settings.ONAIR = {**settings.ONAIR, "CONNECT_TIMEOUT_SECONDS": DEADLINE}


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
    router = gateway.router(str(stream.pk))
    assert router is not None
    http = AsyncClient()
    baseline = open_fds()

    response = await http.post(f"/whep/{stream.slug}", data=silent_offer(), content_type=SDP)
    assert response.status_code == 201, response.content
    assert len(router.viewers) == 1

    assert await wait_until(lambda: not router.viewers, DEADLINE + 15)
    assert (await http.delete(response["Location"])).status_code == 200  # ended, kept a while
    assert (await http.delete(response["Location"])).status_code == 404
    assert await open_viewer_sessions(stream) == 0
    await database_sync_to_async(stream.refresh_from_db)()
    assert (stream.viewer_count, stream.peak_viewer_count) == (0, 0)  # never counted
    assert await wait_until(lambda: open_fds() <= baseline, 5)


async def test_a_whip_publisher_that_never_connects_ends_its_broadcast(settings: Any) -> None:
    caps(settings, CONNECT_TIMEOUT_SECONDS=DEADLINE, PUBLISHER_GRACE_SECONDS=DEADLINE)
    owner = await database_sync_to_async(User.objects.create_user)("owner", password="pw")
    stream, key = await database_sync_to_async(stream_create)(owner=owner, title="Silent")
    http = AsyncClient()
    baseline = open_fds()
    try:
        response = await http.post(
            f"/whip/{stream.slug}",
            data=silent_offer("sendonly"),
            content_type=SDP,
            headers={"Authorization": f"Bearer {key.secret}"},
        )
        assert response.status_code == 201, response.content
        await database_sync_to_async(stream.refresh_from_db)()
        assert stream.state == Stream.State.LIVE

        async def ended() -> bool:
            await database_sync_to_async(stream.refresh_from_db)()
            return stream.state == Stream.State.ENDED

        # Lost at the deadline, given up after the grace period: the broadcast is over.
        assert await wait_until_awaited(ended, 2 * DEADLINE + 15)
        assert await wait_until(lambda: gateway.router(str(stream.pk)) is None, 5)
        assert (await http.delete(response["Location"])).status_code == 200  # ended a while ago
        assert (await http.delete(response["Location"])).status_code == 404
        assert await wait_until(lambda: open_fds() <= baseline, 5)
    finally:
        await gateway.close_all()


async def test_a_watch_socket_has_no_peer_until_it_asks_and_is_counted_once_connected(
    short_deadline: None, live_stream: Stream
) -> None:
    stream = live_stream
    router = gateway.router(str(stream.pk))
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
    assert await wait_until_awaited(lambda: counted(stream, 1), 10)
    await database_sync_to_async(stream.refresh_from_db)()
    assert (stream.viewer_count, stream.peak_viewer_count) == (1, 1)
    for closeable in (idle, silent, socket, viewer):
        await closeable.close()
    assert await wait_until_awaited(lambda: counted(stream, 0), 10)


async def watch_socket(stream: Stream) -> Socket:
    socket = Socket(f"/ws/watch/{stream.slug}/")
    socket.comm.scope["user"] = AnonymousUser()
    assert (await socket.open())["type"] == "welcome"
    return socket


async def counted(stream: Stream, count: int) -> bool:
    await database_sync_to_async(stream.refresh_from_db)()
    return stream.viewer_count == count and await open_viewer_sessions(stream) == count


class ClientAt(AsyncClient):
    """Django's test client, coming from another address."""

    def __init__(self, address: str) -> None:
        super().__init__()
        self.address = address

    def _base_scope(self, **request: Any) -> dict[str, Any]:
        scope: dict[str, Any] = super()._base_scope(**request)
        scope["client"] = [self.address, 0]
        return scope


def caps(settings: Any, **values: float) -> None:
    settings.ONAIR = {**settings.ONAIR, **values}


async def post_silent(http: AsyncClient, stream: Stream) -> Any:
    return await http.post(f"/whep/{stream.slug}", data=silent_offer(), content_type=SDP)


def refused(response: Any, status: int, code: str) -> bool:
    body = response.json()["error"]
    return (
        response.status_code == status
        and body["code"] == code
        and int(response["Retry-After"]) > 0
        and bool(body["message"])
    )


@pytest.fixture
def two_per_address(settings: Any) -> None:
    caps(settings, MAX_SESSIONS_PER_ADDRESS=2)


async def test_sessions_per_address_are_capped_with_429(
    two_per_address: None, live_stream: Stream
) -> None:
    stream = live_stream
    flood = AsyncClient()  # 127.0.0.1
    first, second = [await post_silent(flood, stream) for _ in range(2)]
    assert (first.status_code, second.status_code) == (201, 201)
    third = await post_silent(flood, stream)
    assert refused(third, 429, "too_many_sessions"), third.content
    assert "Retry-After" in third["Access-Control-Expose-Headers"]
    router = gateway.router(str(stream.pk))
    assert router is not None
    assert len(router.viewers) == 2  # the refusal made no peer connection

    # Another address is not affected; the address gets room back as its sessions end.
    assert (await post_silent(ClientAt("192.0.2.7"), stream)).status_code == 201
    assert (await flood.delete(first["Location"])).status_code == 200
    assert (await post_silent(flood, stream)).status_code == 201

    # A watch page from the full address is refused when it asks to watch, and told why.
    page = Socket(f"/ws/watch/{stream.slug}/")
    page.comm.scope["user"] = AnonymousUser()
    page.comm.scope["client"] = ("127.0.0.1", 50000)
    assert (await page.open())["type"] == "welcome"
    await page.send({"type": "watch"})
    error = await page.expect("error")
    assert (error["code"], error["retry_after"] > 0) == ("too_many_sessions", True)
    assert (await page.comm.receive_output(timeout=5))["code"] == 4429


async def test_websockets_per_address_are_capped(
    two_per_address: None, live_stream: Stream
) -> None:
    stream = live_stream
    sockets = []
    for _ in range(2):
        socket = Socket(f"/ws/watch/{stream.slug}/")
        socket.comm.scope["user"] = AnonymousUser()
        socket.comm.scope["client"] = ("198.51.100.4", 40000 + len(sockets))
        assert (await socket.open())["type"] == "welcome"
        sockets.append(socket)
    extra = Socket(f"/ws/watch/{stream.slug}/")
    extra.comm.scope["client"] = ("198.51.100.4", 40009)
    error = await extra.open()
    assert (error["type"], error["code"]) == ("error", "too_many_sessions")
    assert (await extra.comm.receive_output(timeout=5))["code"] == 4429
    await sockets[0].close()
    again = Socket(f"/ws/watch/{stream.slug}/")
    again.comm.scope["user"] = AnonymousUser()
    again.comm.scope["client"] = ("198.51.100.4", 40010)
    assert (await again.open())["type"] == "welcome"
    for socket in (sockets[1], again):
        await socket.close()


@pytest.fixture
def one_viewer_per_stream(settings: Any) -> None:
    caps(settings, MAX_VIEWERS_PER_STREAM=1, CONNECT_TIMEOUT_SECONDS=DEADLINE)


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> bool:
    """A full server or stream is the client's answer, not the server's failure."""
    return not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_viewers_per_stream_are_capped_with_503(
    one_viewer_per_stream: None, live_stream: Stream, caplog: pytest.LogCaptureFixture
) -> None:
    stream = live_stream
    http = AsyncClient()
    assert (await post_silent(http, stream)).status_code == 201
    full = await post_silent(ClientAt("192.0.2.8"), stream)
    assert refused(full, 503, "stream_full"), full.content
    assert no_errors_logged(caplog)
    # The unconnected viewer's place is free again after the connect deadline.
    router = gateway.router(str(stream.pk))
    assert router is not None
    assert await wait_until(lambda: not router.viewers, DEADLINE + 15)
    assert (await post_silent(http, stream)).status_code == 201


@pytest.fixture
def two_sessions_per_process(settings: Any) -> None:
    caps(settings, MAX_SESSIONS=2)


async def test_sessions_per_process_are_capped_with_503(
    two_sessions_per_process: None, live_stream: Stream, caplog: pytest.LogCaptureFixture
) -> None:
    stream = live_stream  # its publisher is one session
    assert gateway.limits().caps.total == 2
    assert (await post_silent(AsyncClient(), stream)).status_code == 201
    full = await post_silent(ClientAt("192.0.2.9"), stream)
    assert refused(full, 503, "server_full"), full.content
    assert no_errors_logged(caplog)


def test_the_default_process_cap_leaves_room_for_file_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        per_session = fds_per_session()
        # the client's connection, and ICE sockets of its own unless the port is shared
        assert per_session >= (1 if onair_settings().ice.udp_mux_port else 2)
        # each session place is paired with a WebSocket place (MAX_WEBSOCKETS' default)
        assert max_sessions_default() == (1024 - RESERVED_FDS) // (per_session + 1)
        assert max_sessions_default(turn_servers=1) == (1024 - RESERVED_FDS) // (per_session + 2)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_with_the_shared_ice_port_a_session_costs_only_its_clients_connection() -> None:
    with override_settings(ONAIR={**settings.ONAIR, "UDP_MUX_PORT": 40000}):
        assert fds_per_session() == 1
        assert fds_per_session(turn_servers=1) == 2
