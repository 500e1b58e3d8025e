"""The SFU's ICE sockets: UDP port range and 1:1 NAT public address (sfu/ice_config.py).

These run without root on loopback. They also pin the aiortc/aioice internals the module
relies on, so an upgrade that moves them fails here first.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from aioice import Candidate, Connection
from aiortc import RTCPeerConnection

from sfu.errors import NegotiationError
from sfu.ice import rtc_configuration
from sfu.ice_config import HostNetwork, configure_ice, restart_ice


@pytest.fixture
async def pc() -> AsyncIterator[RTCPeerConnection]:
    peer = RTCPeerConnection(rtc_configuration(()))
    peer.addTransceiver("video", direction="sendonly")
    yield peer
    await peer.close()


def _connection(pc: RTCPeerConnection) -> Connection:
    connection: Connection = pc.getTransceivers()[
        0
    ].sender.transport.transport.iceGatherer._connection
    return connection


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _gather_loopback(connection: Connection) -> list[Candidate]:
    candidates = await connection.get_component_candidates(1, ["127.0.0.1"], 5)
    connection._local_candidates += candidates
    return candidates


async def test_host_sockets_bind_inside_the_port_range(pc: RTCPeerConnection) -> None:
    port = _free_port()
    configure_ice(pc, HostNetwork(port_range=(port, port)))
    connection = _connection(pc)
    (host,) = await _gather_loopback(connection)
    assert (host.type, host.host, host.port) == ("host", "127.0.0.1", port)
    # The socket is aioice's own: connectivity checks go out through it.
    assert [p.local_candidate for p in connection._protocols] == [host]
    await connection.close()


async def test_no_host_candidate_when_the_range_is_exhausted(pc: RTCPeerConnection) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        configure_ice(pc, HostNetwork(port_range=(port, port)))
        assert await _gather_loopback(_connection(pc)) == []


async def test_public_ip_adds_a_server_reflexive_candidate_on_the_same_port(
    pc: RTCPeerConnection,
) -> None:
    configure_ice(pc, HostNetwork(public_ip="203.0.113.7"))
    connection = _connection(pc)
    host, public = await _gather_loopback(connection)
    assert (public.type, public.host, public.port) == ("srflx", "203.0.113.7", host.port)
    assert (public.related_address, public.related_port) == (host.host, host.port)
    assert public.priority < host.priority
    await connection.close()


async def test_public_ip_maps_only_the_named_private_address(pc: RTCPeerConnection) -> None:
    configure_ice(pc, HostNetwork(public_ip="203.0.113.7/10.0.0.5"))
    connection = _connection(pc)
    assert [c.type for c in await _gather_loopback(connection)] == ["host"]
    await connection.close()


async def test_the_public_candidate_reaches_the_sdp(pc: RTCPeerConnection) -> None:
    port = _free_port()
    configure_ice(pc, HostNetwork(public_ip="203.0.113.7", port_range=(port, port)))
    connection = _connection(pc)
    await _gather_loopback(connection)
    connection._local_candidates_start = connection._local_candidates_end = True
    await pc.setLocalDescription(await pc.createOffer())
    assert f"203.0.113.7 {port} typ srflx raddr 127.0.0.1 rport {port}" in pc.localDescription.sdp


async def test_the_default_network_changes_nothing(pc: RTCPeerConnection) -> None:
    configure_ice(pc, HostNetwork())
    assert "get_component_candidates" not in vars(_connection(pc))


async def test_a_gathered_connection_is_left_alone(pc: RTCPeerConnection) -> None:
    await pc.setLocalDescription(await pc.createOffer())
    configure_ice(pc, HostNetwork(public_ip="203.0.113.7"))
    assert "get_component_candidates" not in vars(_connection(pc))


@pytest.mark.parametrize(
    ("public_ip", "port_range"),
    [("not-an-ip", None), ("203.0.113.7/x", None), ("", (2000, 1000)), ("", (0, 10))],
)
def test_host_network_validation(public_ip: str, port_range: tuple[int, int] | None) -> None:
    with pytest.raises(ValueError, match=r"IPv4|port range"):
        HostNetwork(public_ip=public_ip, port_range=port_range)
    with pytest.raises(ValueError, match="invalid UDP port"):
        HostNetwork(udp_mux_port=70000)


async def test_ice_restart_swaps_both_sides_credentials(pc: RTCPeerConnection) -> None:
    await pc.setLocalDescription(await pc.createOffer())
    connection = _connection(pc)
    old_ufrag = connection.local_username
    ufrag, pwd = restart_ice(pc, remote_ufrag="peerufrag", remote_pwd="peerpassword" * 2)
    assert (connection.local_username, connection.local_password) == (ufrag, pwd)
    assert ufrag != old_ufrag
    assert len(pwd) >= 22  # RFC 8445: at least 128 bits
    assert connection.remote_username == "peerufrag"
    assert connection.remote_password == "peerpassword" * 2


async def test_ice_restart_needs_a_transport() -> None:
    empty = RTCPeerConnection(rtc_configuration(()))
    with pytest.raises(NegotiationError):
        restart_ice(empty, remote_ufrag="a", remote_pwd="b")
    await empty.close()
