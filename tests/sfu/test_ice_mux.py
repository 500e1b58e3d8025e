"""Every ICE connection of the process on one UDP socket (sfu/ice_mux.py), with real aiortc
publishers and viewers: what the SFU binds, counted from /proc, and what the shared socket
does with datagrams that are no connection's."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
from aioice import Connection, stun

from sfu import Router, ice_mux
from sfu.ice_config import HostNetwork
from sfu.viewer import ViewerPeer
from testpeers import TestClients, wait_until
from tests.daphne import free_port
from tests.sfu.forwarding_loop import options

VIEWERS = 4


@pytest.fixture
def mux_port() -> Iterator[int]:
    yield free_port("0.0.0.0")
    ice_mux.close_udp_muxes()


@pytest.fixture
async def mux_router(mux_port: int) -> AsyncIterator[Router]:
    router = Router(
        options(stats_interval_seconds=0, host_network=HostNetwork(udp_mux_port=mux_port))
    )
    yield router
    await router.close()


def _udp_sockets() -> dict[int, tuple[int, int]]:
    """This process's UDP sockets: inode → (local port, descriptors open on it), read from
    /proc/self/fd and /proc/net/udp{,6}."""
    descriptors: dict[int, int] = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match:
            inode = int(match[1])
            descriptors[inode] = descriptors.get(inode, 0) + 1
    sockets: dict[int, tuple[int, int]] = {}
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                inode = int(fields[9])
                if inode in descriptors:
                    port = int(fields[1].rsplit(":", 1)[1], 16)
                    sockets[inode] = (port, descriptors[inode])
    return sockets


def _candidate_ports(sdp: str) -> set[int]:
    return {int(line.split()[5]) for line in sdp.splitlines() if line.startswith("a=candidate:")}


def _sfu_sockets(clients: TestClients) -> dict[int, tuple[int, int]]:
    """The process's UDP sockets but the test clients' own (by their candidates' ports)."""
    ports: set[int] = set()
    for peer in [*clients.viewers, *clients.publishers]:
        ports |= _candidate_ports(peer.pc.localDescription.sdp)
    return {inode: found for inode, found in _udp_sockets().items() if found[0] not in ports}


@pytest.mark.parametrize("shared", [True, False])
async def test_every_peer_of_the_process_is_served_on_one_udp_socket(
    clients: TestClients, mux_port: int, shared: bool
) -> None:
    network = HostNetwork(udp_mux_port=mux_port) if shared else HostNetwork()
    router = Router(options(stats_interval_seconds=0, host_network=network))
    try:
        before = set(_udp_sockets())
        _, session = await clients.publish(router)
        sessions: list[ViewerPeer] = []
        for _ in range(VIEWERS):
            _, viewer = await clients.subscribe(router, decode=False)
            sessions.append(viewer)
        assert await wait_until(lambda: all(v.video.packets > 30 for v in clients.viewers), 20)
        sfu = {
            inode: found for inode, found in _sfu_sockets(clients).items() if inode not in before
        }
        if shared:
            # one socket, one descriptor (the C loop sends on it without a copy of its own)
            assert list(sfu.values()) == [(mux_port, 1)]
            for peer in [session, *sessions]:
                sdp = peer.answer_sdp
                assert sdp is not None
                assert _candidate_ports(sdp) == {mux_port}
        else:
            assert len(sfu) >= VIEWERS + 1  # aioice's own: a socket per connection and address
    finally:
        await router.close()


async def test_strangers_are_dropped_without_an_answer_or_a_log(
    mux_router: Router, clients: TestClients, mux_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    await clients.publish(mux_router)
    viewer, session = await clients.subscribe(mux_router, decode=False)
    assert await wait_until(lambda: viewer.video.packets > 10, 20)
    mux = await ice_mux.udp_mux(mux_port)
    known = mux.addresses
    ufrag = _sfu_ufrag(session)
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.setblocking(False)
        target = ("127.0.0.1", mux_port)
        with caplog.at_level(logging.DEBUG, logger="sfu"):
            for index in range(100):
                stranger.sendto(b"\x80\x60" + bytes(100), target)  # RTP from no one
                stranger.sendto(bytes(_binding_request(f"guess{index}:x")), target)
            # a check for a real ufrag, not signed with its password: answered (401), not
            # learned; it is the first answer the stranger gets
            forged = _binding_request(f"{ufrag}:x", key=b"not the password")
            stranger.sendto(bytes(forged), target)
            answer = stun.parse_message(await asyncio.wait_for(loop.sock_recv(stranger, 2048), 5))
        assert answer.transaction_id == forged.transaction_id
        assert answer.message_class == stun.Class.ERROR
        assert answer.attributes["ERROR-CODE"][0] == 401
    assert mux.counters.unknown_address >= 100
    assert mux.counters.unknown_ufrag >= 100
    assert mux.addresses == known
    assert not [r for r in caplog.records if r.name.startswith("sfu.ice")]
    packets = viewer.video.packets
    assert await wait_until(lambda: viewer.video.packets > packets + 10, 10)


async def test_a_closed_connection_is_forgotten(
    mux_router: Router, clients: TestClients, mux_port: int
) -> None:
    await clients.publish(mux_router)
    viewer, session = await clients.subscribe(mux_router, decode=False)
    assert await wait_until(lambda: viewer.video.packets > 10, 20)
    mux = await ice_mux.udp_mux(mux_port)
    assert mux.connections == 2
    ufrag = _sfu_ufrag(session)
    (pair,) = viewer.pc.getTransceivers()[
        0
    ].receiver.transport.transport._connection._nominated.values()
    await session.close()
    assert await wait_until(lambda: mux.connections == 1)
    assert ufrag not in {p.ufrag for p in mux._by_ufrag.values()}
    assert all(p.receiver is not _ice_connection(session) for p in mux._by_address.values())
    # what still comes from the viewer's address goes nowhere, quietly
    dropped = mux.counters.unknown_address
    pair.protocol.transport.sendto(b"\x80\x60" + bytes(100), pair.remote_addr)
    assert await wait_until(lambda: mux.counters.unknown_address > dropped)


def _ice_connection(session: ViewerPeer) -> object:
    return session.peer_connection.getTransceivers()[0].sender.transport.transport._connection


def _sfu_ufrag(session: ViewerPeer) -> str:
    sdp = session.answer_sdp
    assert sdp is not None
    return next(
        line.split(":", 1)[1] for line in sdp.splitlines() if line.startswith("a=ice-ufrag:")
    )


def _binding_request(username: str, key: bytes | None = None) -> stun.Message:
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    request.attributes["USERNAME"] = username
    request.attributes["PRIORITY"] = 1
    request.attributes["ICE-CONTROLLING"] = 1
    if key is not None:
        request.add_message_integrity(key)
    return request


async def test_connections_with_the_same_ufrag_get_their_own(mux_port: int) -> None:
    mux = await ice_mux.udp_mux(mux_port)
    first = Connection(ice_controlling=False, local_username="same")
    second = Connection(ice_controlling=False, local_username="same")
    for connection in (first, second):
        mux.attach(connection, 1, ["192.0.2.1"])
    assert first.local_username == "same"
    assert second.local_username != "same"
    assert {p.ufrag for p in mux._by_ufrag.values()} == {"same", second.local_username}
    for connection in (first, second):
        await connection.close()
    assert mux.connections == 0


async def test_a_port_reserved_as_the_server_starts_is_the_one_served(mux_port: int) -> None:
    ice_mux.udp_mux_reserve(mux_port)
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other,
        pytest.raises(OSError, match="in use"),
    ):
        other.bind(("0.0.0.0", mux_port))  # taken from the start
    mux = await ice_mux.udp_mux(mux_port)
    assert mux.port == mux_port
    assert not ice_mux._reserved


def test_a_new_event_loop_takes_the_port_over(mux_port: int) -> None:
    """Tests, and a restarted server, run one event loop after another; the last one's
    shared socket is closed whether that loop was closed or only stopped."""

    async def serve() -> int:
        return (await ice_mux.udp_mux(mux_port)).port

    stopped = asyncio.new_event_loop()
    try:
        assert stopped.run_until_complete(serve()) == mux_port
        assert asyncio.run(serve()) == mux_port  # the stopped loop's socket let go
        assert asyncio.run(serve()) == mux_port  # and a closed one's
    finally:
        stopped.close()
