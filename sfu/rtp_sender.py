"""The Python hot path of a viewer's RTP: ``DirectRtpSender`` protects and sends a batch of
packets in as few system calls as it can, and hands the C loop (``sfu.native``) the target
it sends through. What it needs of aiortc's private state goes through ``sfu.aiortc_adapter``.
"""

from __future__ import annotations

import functools
import os
import socket
import struct
from typing import Any

from aioice.ice import CandidatePair
from aiortc import RTCDtlsTransport, RTCRtpSender
from pylibsrtp import SRTP_MAX_TRAILER_LEN, Session

from sfu import aiortc_adapter, native
from sfu.aiortc_adapter import dtls_connected

_RTP_COMPONENT = 1
_HEADER = struct.Struct("!HII")  # sequence number, timestamp, SSRC at offset 2
_srtp_protect = aiortc_adapter.SRTP_PROTECT
# One viewer's share of a batch is protected here and sent before the next viewer's:
# ≈ 48 packets of 1.2 KB, below the 64 KB a UDP send may carry.
_BATCH_BYTES = 60000
_SCRATCH = aiortc_adapter.SRTP_FFI.new("char[]", _BATCH_BYTES + SRTP_MAX_TRAILER_LEN)
_SCRATCH_BUFFER = aiortc_adapter.SRTP_FFI.buffer(_SCRATCH)
_SCRATCH_VIEW = memoryview(_SCRATCH_BUFFER)
_SCRATCH_LENGTH = aiortc_adapter.SRTP_FFI.new("int *")
_UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)  # Linux ≥ 4.18, <netinet/udp.h>
_MAX_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS
_SEGMENT_SIZES: dict[int, list[tuple[int, int, bytes]]] = {}


def _segment_size(size: int) -> list[tuple[int, int, bytes]]:
    """The ancillary data of a UDP GSO send cutting its buffer into ``size``-byte datagrams."""
    cmsg = _SEGMENT_SIZES.get(size)
    if cmsg is None:
        cmsg = _SEGMENT_SIZES[size] = [(socket.SOL_UDP, _UDP_SEGMENT, struct.pack("=H", size))]
    return cmsg


def gso_run(sizes: list[int], index: int, segments: int) -> int:
    """Where the run of datagrams that leaves in one send from ``sizes[index]`` on ends:
    the datagrams of the same size as the first (at most ``segments`` in all), and one
    shorter one, which GSO allows last. ``forward.c``'s ``transmit`` splits its datagrams
    the same way (its twin; tests/sfu/test_native.py checks that they agree)."""
    size = sizes[index]
    last = min(len(sizes), index + segments)
    run = index + 1
    while run < last and sizes[run] == size:
        run += 1
    if run < last and sizes[run] < size:
        run += 1
    return run


class DirectRtpSender:
    """Sends a viewer's RTP without awaiting anything: SRTP-protects a batch of packets
    with the viewer's own libsrtp session into one buffer, and sends it on the socket of
    the ICE pair aiortc nominated.

    This skips what ``RTCDtlsTransport._send_rtp`` adds per packet (a coroutine, the
    ``bytes`` checks and copies of ``pylibsrtp.Session.protect``, aioice's two send
    coroutines, the candidate pair's address property). The batch goes out with UDP
    generic segmentation offload (``UDP_SEGMENT``): one ``sendmsg`` for each run of
    same-size packets (a video frame's packets, but its last, which may end the run),
    which the kernel cuts into the same datagrams it would have sent one by one, at a
    third of the cost per datagram. Where GSO is refused (an old kernel, a device without
    checksum offload), each packet is sent on its own. Only asyncio's own datagram
    transport exposes its socket; with uvloop's, or aioice's TURN transport for relayed
    pairs, each packet goes through the transport's ``sendto``. The transport also takes
    what the kernel refuses with ``EAGAIN``, and everything after it while it holds a
    queue, so order is kept and the event loop never blocks. The DTLS state and the
    nominated pair are checked for every batch, so nothing is sent before DTLS is up or
    after ICE consent is lost and the connection closed; the DTLS transport's byte and
    packet counters stay right.
    """

    __slots__ = (
        "_addr",
        "_dtls",
        "_gso",
        "_nominated",
        "_pair",
        "_sender",
        "_session",
        "_socket",
        "_srtp",
        "_target",
        "_transport",
        "native_send_hook",
    )

    def __init__(self, sender: RTCRtpSender) -> None:
        dtls: RTCDtlsTransport = sender.transport
        self._dtls = dtls
        self._sender = sender
        self._socket: socket.socket | None = None
        self._nominated: dict[int, CandidatePair] = aiortc_adapter.nominated_pairs(dtls)
        self._pair: CandidatePair | None = None
        self._session: Session | None = None
        self._srtp: Any = None
        self._transport: Any = None
        self._addr: tuple[str, int] = ("", 0)
        self._gso = True
        self._target: Any = None  # the C loop's struct onair_target (sfu.native)
        # where tests watch the C loop's sends: a cffi callback taking (hook data, data,
        # length, GSO segment size or 0) and returning the bytes taken or -errno
        self.native_send_hook: Any = None

    @property
    def transport(self) -> Any:
        """The datagram transport of the pair it sends on (it queues what the socket
        refused); None before ``bind``."""
        return self._transport

    @property
    def datagram_socket(self) -> socket.socket | None:
        """The socket it sends on itself: asyncio's transport's (None with any other
        transport, which is sent through as is, or before ``bind``)."""
        return self._socket

    @property
    def remote_address(self) -> tuple[str, int]:
        """Where it sends: the remote address of the pair it sends on."""
        return self._addr

    @property
    def gso(self) -> bool:
        """Whether it still sends runs of datagrams with UDP GSO (the kernel refused none)."""
        return self._gso

    @property
    def held_target(self) -> Any:
        """The ``struct onair_target`` it made last (``native_target``) while it holds it."""
        return self._target

    def send(
        self,
        templates: list[bytes],
        headers: list[tuple[int, int]],
        ssrc: int,
        ntp_time: int,
        payload_bytes: int,
    ) -> int:
        """Send ``templates`` (serialized RTP packets), each with the sequence number and
        timestamp of its ``headers`` entry and ``ssrc``, and account them in the next RTCP
        sender report (``ntp_time`` being when they were sent, ``payload_bytes`` their
        payloads' size); the RTP bytes sent, 0 if nothing was.

        aiortc's ``_run_rtcp`` reports the sender's counters and NTP/RTP timestamp
        pair, but only its own ``_run_rtp`` (idle here) updates them."""
        dtls = self._dtls
        if not dtls_connected(dtls) or not templates:
            return 0
        if not self._bound() and not self.bind():
            return 0
        srtp = self._srtp
        buffer = _SCRATCH_BUFFER
        scratch = _SCRATCH
        protect = _srtp_protect
        length = _SCRATCH_LENGTH
        pack_header = _HEADER.pack_into
        sizes: list[int] = []
        offset = sent = protected = packets = 0
        for template, (sequence_number, timestamp) in zip(templates, headers, strict=True):
            size = len(template)
            end = offset + size
            if end > _BATCH_BYTES:
                if size > _BATCH_BYTES:
                    continue
                self._transmit(sizes)  # the buffer is full: send what it holds
                protected += offset
                packets += len(sizes)
                sizes = []
                offset = 0
                end = size
            buffer[offset:end] = template
            pack_header(buffer, offset + 2, sequence_number, timestamp, ssrc)
            length[0] = size
            if protect(srtp, scratch + offset, length):
                continue
            size_out = length[0]
            sizes.append(size_out)
            offset += size_out
            sent += size
        self._transmit(sizes)
        protected += offset
        packets += len(sizes)
        if not sent:
            return 0
        aiortc_adapter.count_transport_sent(dtls, protected, packets)
        aiortc_adapter.count_sender_report(
            self._sender, ntp_time, headers[-1][1], payload_bytes, packets
        )
        return sent

    def native_target(self, mapping: Any) -> Any:
        """A ``struct onair_target`` (``sfu.native``) through which the C loop sends this
        viewer's RTP as ``send`` would, mapping sequence numbers and timestamps by
        ``mapping`` (a ``struct onair_mapping``, an ``RtpMunger``'s), or None where it
        cannot: no C loop, DTLS not up, no socket of asyncio's (uvloop, TURN), or datagrams
        queued on the transport.

        The target owns what the C loop reads through it: it sends on a duplicate of the
        socket's descriptor, closed with the target (a socket closed while the target is in
        use leaves it writing to a socket no one reads, not to whatever reuses the number),
        and it holds its SRTP session and send hook until it is freed, which is when nothing
        holds it any more, the C loop's ``TargetSet`` included; so does ``mapping``. Its
        counters are taken with ``take_native_counters``."""
        dtls = self._dtls
        if native.lib is None or not dtls_connected(dtls):
            return None
        if not self._bound() and not self.bind():
            return None
        if self._socket is None or aiortc_adapter.transport_queues(self._transport):
            return None
        if self._target is None or self._target.mapping != mapping:
            self._target = self._new_native_target(mapping)
        return self._target

    def native_target_valid(self) -> bool:
        """Whether the target ``native_target`` gave still sends where ``send`` would."""
        return self._target is not None and dtls_connected(self._dtls) and self._bound()

    def take_native_counters(self, target: Any) -> tuple[int, int]:
        """Account what the C loop sent through ``target`` since the last call in the DTLS
        transport's counters and the next RTCP sender report, as ``send`` does; (packets,
        RTP bytes) sent. (Also learns whether the kernel refused GSO there.)"""
        self._gso = self._gso and bool(target.gso)
        packets = target.packets_sent
        if not packets:
            return 0, 0
        rtp_bytes = target.rtp_bytes
        aiortc_adapter.count_transport_sent(self._dtls, target.protected_bytes, packets)
        aiortc_adapter.count_sender_report(
            self._sender, target.ntp_time, target.rtp_timestamp, target.payload_bytes, packets
        )
        target.packets_sent = target.rtp_bytes = target.payload_bytes = 0
        target.protected_bytes = 0
        return packets, rtp_bytes

    def queue(self, datagrams: list[bytes]) -> None:
        """Protected datagrams the socket would not take: the transport sends them when
        it can, ahead of anything sent after them."""
        for datagram in datagrams:
            self._transport.sendto(datagram, self._addr)

    def close(self) -> None:
        """Let go of the C loop's target (its descriptor closes once nothing holds it)."""
        self._target = None

    def send_packet(self, data: bytes) -> int:
        """Send one serialized RTP packet as it is (a retransmission: not counted in
        sender reports, as aiortc does not count its own)."""
        dtls = self._dtls
        session = aiortc_adapter.transmit_srtp(dtls)
        if not dtls_connected(dtls) or session is None:
            return 0
        pair = self._nominated.get(_RTP_COMPONENT)
        if pair is None:
            return 0
        protected = session.protect(data)
        pair.protocol.transport.sendto(protected, pair.remote_addr)
        aiortc_adapter.count_transport_sent(dtls, len(protected), 1)
        return len(protected)

    def _transmit(self, sizes: list[int]) -> None:
        """Send the datagrams of ``sizes`` from the start of the scratch buffer: a
        ``sendmsg`` per run of same-size datagrams (the last of a run may be shorter, as
        GSO allows), in order."""
        count = len(sizes)
        if not count:
            return
        view = _SCRATCH_VIEW
        addr = self._addr
        sock = self._socket
        if sock is None or aiortc_adapter.transport_queues(self._transport):
            self._queue(sizes, 0, 0)
            return
        segments = _MAX_SEGMENTS if self._gso else 1
        offset = index = 0
        while index < count:
            size = sizes[index]
            run = gso_run(sizes, index, segments)
            end = offset + size * (run - index - 1) + sizes[run - 1]
            try:
                if run - index == 1:
                    sock.sendto(view[offset:end], addr)
                else:
                    sock.sendmsg((view[offset:end],), _segment_size(size), 0, addr)
            except (BlockingIOError, InterruptedError):
                self._queue(sizes, index, offset)  # the transport sends it when it can
                return
            except OSError:
                if run - index > 1:  # GSO refused: from here on, one datagram at a time
                    self._gso = False
                    segments = 1
                    continue
                # the socket is gone (the viewer left): what is left is moot
            offset = end
            index = run

    def _queue(self, sizes: list[int], index: int, offset: int) -> None:
        view = _SCRATCH_VIEW
        transport = self._transport
        for size in sizes[index:]:
            transport.sendto(bytes(view[offset : offset + size]), self._addr)
            offset += size

    def _bound(self) -> bool:
        """Whether the socket, address and session taken at ``bind`` are still the
        nominated pair's and the DTLS transport's."""
        return (
            self._nominated.get(_RTP_COMPONENT) is self._pair
            and aiortc_adapter.transmit_srtp(self._dtls) is self._session
        )

    def bind(self) -> bool:
        """Take the nominated pair's socket, address and the DTLS transport's SRTP session
        (done before a send when they changed); whether there are any yet. A target made for
        the previous ones is let go."""
        pair = self._nominated.get(_RTP_COMPONENT)
        session = aiortc_adapter.transmit_srtp(self._dtls)
        if pair is None or session is None:
            return False
        self._pair = pair
        self._transport = pair.protocol.transport
        # asyncio's own datagram transport: send on its socket and leave the transport
        # only what it would queue (uvloop's and aioice's TURN transports: sendto as is)
        self._socket = aiortc_adapter.datagram_socket(self._transport)
        self._addr = pair.remote_addr
        self._session = session
        self._srtp = aiortc_adapter.srtp_context(session)
        self.close()  # a target made for the previous pair or session
        return True

    def _new_native_target(self, mapping: Any) -> Any:
        assert self._socket is not None
        assert self._session is not None
        address = _sockaddr(self._socket.family, self._addr)
        if address is None:
            return None
        ffi = native.ffi
        descriptor = os.dup(self._socket.fileno())
        hook = self.native_send_hook
        owned = (self._session, hook, mapping)  # what the target points into
        target = ffi.gc(
            ffi.new("struct onair_target *"), functools.partial(_free_target, descriptor, owned)
        )
        target.fd = descriptor
        target.gso = self._gso
        target.ssrc = aiortc_adapter.sender_ssrcs(self._sender)[0]
        target.mapping = mapping
        protect_with(target, self._session)
        target.address = address
        target.address_length = len(address)
        if hook is not None:
            target.send_hook = hook
        return target


def _free_target(descriptor: int, owned: tuple[Any, ...], target: Any) -> None:
    """A ``struct onair_target``'s destructor (``ffi.gc``): its descriptor closes, and what
    it pointed into (``owned``, held by the partial until now) may go."""
    os.close(descriptor)


def protect_with(target: Any, session: Session) -> None:
    """Have the C loop protect ``target``'s packets with ``session`` (pylibsrtp's libsrtp,
    called through its address); the caller keeps ``session`` alive meanwhile."""
    ffi = native.ffi
    target.session = ffi.cast("void *", aiortc_adapter.srtp_context_address(session))
    target.protect = ffi.cast("int (*)(void *, void *, int *)", aiortc_adapter.SRTP_PROTECT_ADDRESS)


def _sockaddr(family: int, addr: tuple[Any, ...]) -> bytes | None:
    """``addr`` as the kernel's ``struct sockaddr_in`` or ``sockaddr_in6``; None for a
    scoped IPv6 address, left to the Python loop."""
    try:
        if family == socket.AF_INET:
            return (
                struct.pack("=H", socket.AF_INET)
                + struct.pack("!H", addr[1])
                + socket.inet_pton(socket.AF_INET, addr[0])
                + bytes(8)
            )
        if family == socket.AF_INET6 and "%" not in addr[0]:
            return (
                struct.pack("=H", socket.AF_INET6)
                + struct.pack("!HI", addr[1], 0)
                + socket.inet_pton(socket.AF_INET6, addr[0])
                + struct.pack("=I", 0)
            )
    except (OSError, IndexError, TypeError, struct.error):
        pass
    return None
