"""One UDP port for every peer connection of a process: ICE multiplexing.

aioice gives each peer connection its own UDP socket per local address. With
``HostNetwork.udp_mux_port`` (``UDP_MUX_PORT``, on by default) every connection of the
process instead shares one socket
(``UdpMux``), bound to ``0.0.0.0:port``, as mediasoup's WebRtcServer and Pion's UDP mux
do: a firewall opens one port per process, and a viewer costs no socket of its own.

What arrives on the socket goes to its connection by

* the remote address, once a connection has answered a check from it: everything from
  there (STUN, DTLS, SRTP, SRTCP) is that connection's;
* the USERNAME of a STUN binding request from an address not known yet (or known as
  another connection's, a NAT having reused the port): its local ufrag names the
  connection, and the address becomes the connection's once the request's
  MESSAGE-INTEGRITY checks with that connection's password, so a forged check
  redirects nothing (a connection's ufrag is made unique in the process as it attaches,
  before its description is written);
* the transaction id of a STUN response: a connection's checks, consent checks and STUN
  server lookups tell the mux theirs as they send them, whichever address answers.

Anything else (a datagram from an unknown address that is not a binding request, a
request for an unknown ufrag) is dropped and counted, with no log and no answer: a flood
costs a dictionary lookup or a short scan of the STUN header per datagram, and keeps
nothing. A connection closing takes its ufrag, addresses and transactions with it; an
ICE restart gives it a new ufrag (``sfu.aiortc_adapter.renew_ice_credentials``); a peer
whose address changes (a NAT rebinding, a new network) sends its checks from the new
address, which is learned as the first one was.

The shared socket is IPv4 only (host candidates of IPv6 addresses are not offered): one
socket per process is the point. TURN relays keep their own sockets, per connection, as
before. Sends need nothing new: aioice and ``sfu.rtp_sender`` always send to an explicit
address, GSO included.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
from dataclasses import dataclass
from typing import cast

from aioice import Candidate, Connection
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.stun import parse_message

from sfu import aiortc_adapter
from sfu.aiortc_adapter import MuxedStunProtocol

logger = logging.getLogger(__name__)

# ≈ 3 s of a 10 Mbit/s ingest in the kernel's accounting (capped at net.core.rmem_max): the
# one socket takes every publisher's media and every viewer's feedback
RECEIVE_BUFFER = 2**23
# what a keyframe to a few hundred viewers holds until the device sends it (capped at
# net.core.wmem_max): past it sends wait in asyncio's transport, in order, for everyone
SEND_BUFFER = 2**23
# datagrams read per readiness of the socket, the first included (see drain_datagrams)
READ_BATCH = 64
# remote addresses one connection may be known by: each takes a check signed with its
# password, so only its peer adds any (its candidates, a NAT rebinding); the oldest goes
MAX_ADDRESSES_PER_CONNECTION = 16
_MAX_DATAGRAM = 65536
_STUN_COOKIE = b"\x21\x12\xa4\x42"
_BINDING_REQUEST = b"\x00\x01"
_USERNAME = 0x0006


@dataclass
class MuxCounters:
    """Datagrams the mux dropped, by reason."""

    unknown_address: int = 0  # not STUN, from an address no connection is known by
    unknown_ufrag: int = 0  # a binding request for no connection of this process
    unmatched: int = 0  # any other STUN (a late response, an indication) for no one


class UdpMux(asyncio.DatagramProtocol):
    """The shared socket of ``port`` and its dispatch; see the module docstring."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.loop = loop
        self.counters = MuxCounters()
        self.transport: asyncio.DatagramTransport | None = None
        self._by_address: dict[tuple[str, int], MuxedStunProtocol] = {}
        self._by_ufrag: dict[str, MuxedStunProtocol] = {}
        self._addresses: dict[MuxedStunProtocol, dict[tuple[str, int], None]] = {}
        self._transactions: dict[bytes, MuxedStunProtocol] = {}
        self._closed = False

    # --- connections ----------------------------------------------------------------------

    def attach(
        self, connection: Connection, component: int, hosts: list[str]
    ) -> tuple[list[Candidate], list[MuxedStunProtocol]]:
        """Serve ``connection`` on the shared socket: its host candidates, one per IPv4
        address in ``hosts``, all on the mux's port, and the one protocol added to the
        connection, the first candidate's (the others lead to the same socket, where
        their checks arrive too); none without an IPv4 address."""
        assert self.transport is not None
        candidates = [
            Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=host,
                port=self.port,
                type="host",
            )
            for host in hosts
        ]
        if not candidates:
            return [], []
        # aioice's ufrags have 24 bits: among thousands of connections some would collide
        while connection.local_username in self._by_ufrag:
            aiortc_adapter.set_local_ufrag(connection, secrets.token_hex(4))
        protocol = MuxedStunProtocol(connection, self, self.transport, candidates[0])
        self._by_ufrag[protocol.ufrag] = protocol
        self._addresses[protocol] = {}
        aiortc_adapter.add_ice_protocols(connection, [protocol])
        return candidates, [protocol]

    def detach(self, protocol: MuxedStunProtocol) -> None:
        """Forget a connection that closes: its ufrag, addresses and transactions."""
        if self._by_ufrag.get(protocol.ufrag) is protocol:
            del self._by_ufrag[protocol.ufrag]
        for address in self._addresses.pop(protocol, {}):
            if self._by_address.get(address) is protocol:
                del self._by_address[address]
        for transaction_id in [t for t, p in self._transactions.items() if p is protocol]:
            del self._transactions[transaction_id]

    def rekey(self, protocol: MuxedStunProtocol) -> None:
        """The connection's local ufrag changed (an ICE restart): find it by the new one."""
        if self._by_ufrag.get(protocol.ufrag) is protocol:
            del self._by_ufrag[protocol.ufrag]
        if protocol in self._addresses:
            protocol.ufrag = protocol.receiver.local_username
            self._by_ufrag[protocol.ufrag] = protocol

    def expect(self, transaction_id: bytes, protocol: MuxedStunProtocol) -> None:
        self._transactions[transaction_id] = protocol

    def unexpect(self, transaction_id: bytes) -> None:
        self._transactions.pop(transaction_id, None)

    @property
    def connections(self) -> int:
        """Connections served now."""
        return len(self._addresses)

    @property
    def addresses(self) -> int:
        """Remote addresses known now."""
        return len(self._by_address)

    # --- the socket -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._dispatch(data, addr)
        # the rest of what is queued, up to a batch: a frame's packets arrive together
        sock = self.sock
        for _ in range(READ_BATCH - 1):
            try:
                data, addr = sock.recvfrom(_MAX_DATAGRAM)
            except OSError:  # nothing more to read (or the socket is closing)
                return
            self._dispatch(data, addr)

    def error_received(self, exc: Exception) -> None:
        # an ICMP error for one peer's address (it left): nothing for the others
        pass

    def _dispatch(self, data: bytes, addr: tuple[str, int]) -> None:
        protocol = self._by_address.get(addr)
        if data and data[0] > 3:  # not STUN (RFC 7983): DTLS, SRTP, SRTCP
            if protocol is not None:
                protocol.deliver(data)
            else:
                self.counters.unknown_address += 1
            return
        if data[:2] == _BINDING_REQUEST:
            ufrag = _request_ufrag(data)
            target = self._by_ufrag.get(ufrag) if ufrag is not None else None
            if target is None:
                if protocol is None:
                    self.counters.unknown_ufrag += 1
                    return
                target = protocol  # its connection answers it (an error: 401)
            elif target is not protocol and _signed_for(data, target):
                self._learn(addr, target)
            target.datagram_received(data, addr)
            return
        owner = self._transactions.get(data[8:20]) if len(data) >= 20 else None
        owner = owner or protocol
        if owner is not None:
            owner.datagram_received(data, addr)
        else:
            self.counters.unmatched += 1

    def _learn(self, addr: tuple[str, int], protocol: MuxedStunProtocol) -> None:
        previous = self._by_address.get(addr)
        if previous is not None:
            self._addresses.get(previous, {}).pop(addr, None)
        addresses = self._addresses.get(protocol)
        if addresses is None:  # closed meanwhile
            return
        addresses[addr] = None
        self._by_address[addr] = protocol
        if len(addresses) > MAX_ADDRESSES_PER_CONNECTION:
            oldest = next(iter(addresses))
            del addresses[oldest]
            if self._by_address.get(oldest) is protocol:
                del self._by_address[oldest]

    def close(self) -> None:
        """Close the socket (the process stops, or a new event loop takes the port)."""
        if self._closed:
            return
        self._closed = True
        if self.transport is not None:
            with contextlib.suppress(RuntimeError):  # its event loop is closed already
                self.transport.close()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self.transport is None or running is not self.loop:
            # the transport would close the socket on its own loop's next turn: that loop
            # is not running (a new one takes the port), so the socket closes now
            self.sock.close()

    @property
    def closed(self) -> bool:
        return self._closed


def _request_ufrag(data: bytes) -> str | None:
    """The local ufrag of a STUN binding request's USERNAME (``local:remote``), read
    without parsing the message; None when it has none."""
    if len(data) < 20 or data[4:8] != _STUN_COOKIE:
        return None
    end = min(20 + int.from_bytes(data[2:4], "big"), len(data))
    position = 20
    while position + 4 <= end:
        kind = int.from_bytes(data[position : position + 2], "big")
        size = int.from_bytes(data[position + 2 : position + 4], "big")
        if kind == _USERNAME:
            local, colon, _ = data[position + 4 : position + 4 + size].partition(b":")
            return local.decode("utf8", "replace") if colon else None
        position += 4 + size + (-size % 4)
    return None


def _signed_for(data: bytes, protocol: MuxedStunProtocol) -> bool:
    """Whether a binding request carries a MESSAGE-INTEGRITY made with the connection's
    password (only its peer knows it)."""
    try:
        message = parse_message(data)
    except ValueError:
        return False
    return "MESSAGE-INTEGRITY" in message.attributes and message.check_message_integrity(
        protocol.password
    )


_muxes: dict[int, UdpMux] = {}
_opening: dict[int, asyncio.Future[UdpMux]] = {}
_reserved: dict[int, socket.socket] = {}


def udp_mux_reserve(port: int) -> None:
    """Bind the shared socket of ``port`` now, before any event loop runs (a server
    starting), for ``udp_mux`` to serve on later: a port taken stops the start with
    ``OSError`` rather than failing the first session."""
    if port not in _reserved and port not in _muxes:
        _reserved[port] = _bind(port)


async def udp_mux(port: int) -> UdpMux:
    """The shared socket of ``port`` in this process, bound on first use. Raises
    ``OSError`` if the port is taken. A mux of an earlier event loop (tests, a restarted
    server) is closed first: its connections cannot be driven from this one."""
    loop = asyncio.get_running_loop()
    mux = _muxes.get(port)
    if mux is not None and mux.loop is loop and not mux.closed:
        return mux
    opening = _opening.get(port)
    if opening is not None and opening.get_loop() is loop:
        return await asyncio.shield(opening)
    if mux is not None:
        mux.close()
        del _muxes[port]
    future: asyncio.Future[UdpMux] = loop.create_future()
    _opening[port] = future
    try:
        sock = _reserved.pop(port, None) or _bind(port)
        mux = UdpMux(sock, loop)
        await loop.create_datagram_endpoint(lambda: mux, sock=mux.sock)
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: the caller raises it
        raise
    finally:
        _opening.pop(port, None)
    _muxes[mux.port] = mux
    future.set_result(mux)
    logger.info("ice mux listening", extra={"port": mux.port})
    return mux


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("0.0.0.0", port))  # every interface's candidates lead here
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def ipv4_hosts(addresses: list[str]) -> list[str]:
    """The IPv4 addresses among aioice's local ones: the mux's host candidates."""
    return [a for a in addresses if ipaddress.ip_address(a).version == 4]


def close_udp_muxes() -> None:
    """Close every shared socket of the process: when it stops serving (tests, between
    event loops). Nothing may send on them afterwards (``sfu.rtp_sender`` sends on a
    shared socket's own descriptor)."""
    for mux in _muxes.values():
        mux.close()
    _muxes.clear()
    for sock in _reserved.values():
        sock.close()
    _reserved.clear()
