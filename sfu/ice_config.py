"""Where the SFU's ICE sockets live (one shared UDP port, a UDP port range, a public address
behind a 1:1 NAT), how long a silent peer keeps its consent, and ICE restart.

aioice 0.13 has no option for either: ``Connection.get_component_candidates`` binds every
host socket to port 0 and only knows the addresses of local interfaces. So, per peer
connection and before it gathers, this module replaces that method on each aioice
``Connection`` with one that

* serves the connection on the process's one shared socket at ``udp_mux_port``
  (``sfu.ice_mux``: a firewall then opens that one port), or else
* binds the host sockets inside ``port_range`` (a firewall then opens only that range), and
* adds, for each IPv4 host candidate, a server-reflexive candidate with the public address
  and the same port: a 1:1 NAT (a cloud VM's "elastic" address) maps ``public:port`` to
  ``private:port``, so remote peers reach the socket there. This is what other SFUs call
  "NAT 1:1 IPs" (Pion, mediasoup's ``announcedAddress``); it needs no STUN server.

The private state this needs is reached through ``sfu.aiortc_adapter``; the methods it
replaces are aioice's public-named ones, and ``tests/nat/test_ice_config.py`` fails loudly
when an upgrade moves them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import secrets
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

from aioice import Candidate, Connection
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import StunProtocol, server_reflexive_candidate
from aioice.stun import TransactionError
from aioice.turn import UDP_SOCKET_BUFFER_SIZE
from aiortc import RTCPeerConnection

from sfu import aiortc_adapter, ice_mux
from sfu.errors import NegotiationError

logger = logging.getLogger(__name__)

# aioice's own numbers: a check every 5 s (± 20 %), expiry after 6 unanswered ones.
CONSENT_INTERVAL_SECONDS = 5.0
CONSENT_FAILURES = 6
# Silence after which a peer that does not answer consent checks is dropped.
CONSENT_IDLE_SECONDS = 30.0

_Gather = Callable[[int, list[str], int], Coroutine[Any, Any, list[Candidate]]]


@dataclass(frozen=True)
class HostNetwork:
    """``public_ip``: ``"203.0.113.7"``, or ``"203.0.113.7/10.0.0.5"`` to map only the
    private address ``10.0.0.5``. ``port_range``: inclusive ``(low, high)``.
    ``udp_mux_port``: every connection on one UDP socket at this port (``sfu.ice_mux``);
    the port range is then unused."""

    public_ip: str = ""
    port_range: tuple[int, int] | None = None
    udp_mux_port: int | None = None

    def __post_init__(self) -> None:
        if self.public_ip:
            try:
                for address in self.public_ip.split("/", 1):
                    ipaddress.IPv4Address(address)
            except ValueError as exc:
                raise ValueError(
                    f"public IP {self.public_ip!r} is not an IPv4 address or public/private pair"
                ) from exc
        if self.port_range is not None:
            low, high = self.port_range
            if not 1 <= low <= high <= 65535:
                raise ValueError(f"invalid UDP port range {self.port_range}")
        if self.udp_mux_port is not None and not 1 <= self.udp_mux_port <= 65535:
            raise ValueError(f"invalid UDP port {self.udp_mux_port}")

    @property
    def is_default(self) -> bool:
        return not self.public_ip and self.port_range is None and self.udp_mux_port is None


def configure_ice(pc: RTCPeerConnection, network: HostNetwork) -> None:
    """Apply ``network`` to every ICE transport of ``pc`` that has not gathered yet.

    Call it after ``setRemoteDescription`` (answerer) or ``addTransceiver`` (offerer) and
    before ``setLocalDescription``, which is when aiortc gathers candidates.
    """
    for connection in _pending_connections(pc):
        _keep_consent_while_heard(connection)
        if not network.is_default:
            connection.get_component_candidates = _gatherer(  # type: ignore[method-assign,assignment]
                connection, connection.get_component_candidates, network
            )


def _keep_consent_while_heard(connection: Connection) -> None:
    """Consent freshness (RFC 7675) as an SFU needs it: keep sending consent checks, but
    close only when the peer has also gone silent for ``CONSENT_IDLE_SECONDS``.

    aioice closes a connection after 6 unanswered checks (≈ 30 s). Some ingest clients
    never answer them — FFmpeg's WHIP muxer is one — although they keep sending media, so
    a broadcast from them would drop after 30 s. ICE-lite servers (mediasoup, Janus) send
    no checks at all and time out on silence; this does the same for silent peers while
    still probing the ones that answer.
    """
    heard = [time.monotonic()]
    deliver = connection.data_received
    answer = connection.request_received

    def data_received(data: bytes, component: int) -> None:
        heard[0] = time.monotonic()
        deliver(data, component)

    def request_received(*args: Any, **kwargs: Any) -> None:
        heard[0] = time.monotonic()
        answer(*args, **kwargs)

    async def query_consent() -> None:
        assert connection.remote_password is not None
        failures = 0
        while True:
            await asyncio.sleep(CONSENT_INTERVAL_SECONDS * (0.8 + 0.4 * random.random()))
            for pair in list(aiortc_adapter.ice_nominated_pairs(connection).values()):
                request = connection.build_request(pair, nominate=False)
                try:
                    await pair.protocol.request(
                        request,
                        pair.remote_addr,
                        integrity_key=connection.remote_password.encode("utf8"),
                        retransmissions=0,
                    )
                    failures = 0
                except TransactionError:
                    failures += 1
            silent_for = time.monotonic() - heard[0]
            if failures >= CONSENT_FAILURES and silent_for > CONSENT_IDLE_SECONDS:
                logger.info("ice consent expired", extra={"silent_seconds": round(silent_for)})
                aiortc_adapter.forget_consent_task(connection)
                await connection.close()
                return

    connection.data_received = data_received  # type: ignore[method-assign]
    connection.request_received = request_received  # type: ignore[method-assign]
    connection.query_consent = query_consent  # type: ignore[method-assign]


def _pending_connections(pc: RTCPeerConnection) -> Iterator[Connection]:
    ice_transports = [t.sender.transport.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        ice_transports.append(pc.sctp.transport.transport)
    seen: set[int] = set()
    for ice_transport in ice_transports:
        gatherer = ice_transport.iceGatherer
        connection = aiortc_adapter.gatherer_connection(gatherer)
        if gatherer.state == "new" and id(connection) not in seen:
            seen.add(id(connection))
            yield connection


def _gatherer(connection: Connection, original: _Gather, network: HostNetwork) -> _Gather:
    async def get_component_candidates(
        component: int,
        addresses: list[str],
        timeout: int = 5,  # noqa: ASYNC109 - aioice's signature
    ) -> list[Candidate]:
        if network.udp_mux_port is not None:
            candidates = await _gather_on_mux(
                connection, original, component, addresses, timeout, network.udp_mux_port
            )
        elif network.port_range is None:
            candidates = await original(component, addresses, timeout)
        else:
            candidates = await _gather_in_range(
                connection, original, component, addresses, timeout, network.port_range
            )
        return candidates + _public_candidates(candidates, network.public_ip)

    return get_component_candidates


async def _gather_in_range(
    connection: Connection,
    original: _Gather,
    component: int,
    addresses: list[str],
    timeout: int,  # noqa: ASYNC109 - passed on to aioice
    port_range: tuple[int, int],
) -> list[Candidate]:
    loop = asyncio.get_running_loop()
    protocols: list[StunProtocol] = []
    for address in addresses:
        sock = _bind_in_range(address, port_range)
        if sock is None:
            logger.warning("no free UDP port in %d-%d on %s", *port_range, address)
            continue
        _, protocol = await loop.create_datagram_endpoint(
            lambda: StunProtocol(connection), sock=sock
        )
        host, port = protocol.transport.get_extra_info("sockname")[:2]
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", host),
            component=component,
            transport="udp",
            priority=candidate_priority(component, "host"),
            host=host,
            port=port,
            type="host",
        )
        protocols.append(protocol)
    aiortc_adapter.add_ice_protocols(connection, protocols)
    candidates = [protocol.local_candidate for protocol in protocols]
    return candidates + await _reflexive_and_relayed(
        connection, original, component, protocols, timeout
    )


async def _gather_on_mux(
    connection: Connection,
    original: _Gather,
    component: int,
    addresses: list[str],
    timeout: int,  # noqa: ASYNC109 - passed on to aioice
    port: int,
) -> list[Candidate]:
    mux = await ice_mux.udp_mux(port)
    candidates, protocols = mux.attach(connection, component, ice_mux.ipv4_hosts(addresses))
    return candidates + await _reflexive_and_relayed(
        connection, original, component, list(protocols), timeout
    )


async def _reflexive_and_relayed(
    connection: Connection,
    original: _Gather,
    component: int,
    protocols: list[StunProtocol],
    timeout: int,  # noqa: ASYNC109 - passed on to aioice
) -> list[Candidate]:
    """The server-reflexive candidates of ``protocols``' sockets and the relayed ones."""
    # Without addresses aioice only asks the TURN server; STUN is asked here, per socket.
    lookups = [
        server_reflexive_candidate(protocol, connection.stun_server)
        for protocol in protocols
        if connection.stun_server is not None
        and ipaddress.ip_address(protocol.local_candidate.host).version == 4
    ]
    relayed, reflexive = await asyncio.gather(
        original(component, [], timeout),
        asyncio.gather(
            *(asyncio.wait_for(lookup, timeout) for lookup in lookups), return_exceptions=True
        ),
    )
    return [result[0] for result in reflexive if isinstance(result, tuple)] + relayed


def _bind_in_range(address: str, port_range: tuple[int, int]) -> socket.socket | None:
    """A UDP socket on ``address`` at a free port of the range, tried from a random start."""
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    low, high = port_range
    start = random.randint(low, high)
    for offset in range(high - low + 1):
        port = low + (start - low + offset) % (high - low + 1)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((address, port))
        except OSError:
            sock.close()
            continue
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_SOCKET_BUFFER_SIZE)
        sock.setblocking(False)
        return sock
    return None


def _public_candidates(candidates: list[Candidate], public_ip: str) -> list[Candidate]:
    if not public_ip:
        return []
    public, _, private = public_ip.partition("/")
    return [
        Candidate(
            foundation=candidate_foundation("srflx", "udp", host.host),
            component=host.component,
            transport="udp",
            priority=candidate_priority(host.component, "srflx"),
            host=public,
            port=host.port,
            type="srflx",
            related_address=host.host,
            related_port=host.port,
        )
        for host in candidates
        if host.type == "host"
        and ipaddress.ip_address(host.host).version == 4
        and (not private or host.host == private)
    ]


def restart_ice(pc: RTCPeerConnection, *, remote_ufrag: str, remote_pwd: str) -> tuple[str, str]:
    """Restart ICE on the SFU's side of ``pc`` with the peer's new credentials; returns the
    SFU's new ``(ice-ufrag, ice-pwd)``. Raises NegotiationError if ``pc`` has no transport.

    aiortc has no ICE restart. The SFU's peer connections are always the answerer, hence
    the ICE-controlled agent, so the peer drives the new checks: the SFU takes the peer's
    new credentials, issues new ones of its own (checks and consent with the old ones fail
    from now on) and accepts new remote candidates again. aioice keeps answering checks
    after connecting, learns a new path as a peer-reflexive candidate and moves the
    selected pair when the controlling peer nominates it, while DTLS and SRTP carry on over
    the same association (RFC 8445 §9: media keeps flowing on the old pair meanwhile).
    Local candidates are kept.
    """
    ufrag, pwd = secrets.token_hex(8), secrets.token_hex(16)
    transports = {t.receiver.transport.transport for t in pc.getTransceivers()}
    if not transports:
        raise NegotiationError("this session has no ICE transport to restart")
    for transport in transports:
        aiortc_adapter.renew_ice_credentials(
            transport,
            local=(ufrag, pwd),
            remote=(remote_ufrag, remote_pwd),
        )
    return ufrag, pwd
