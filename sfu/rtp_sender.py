"""The Python hot path of a viewer's RTP: ``DirectRtpSender`` protects and sends a batch of
packets in as few system calls as it can, and hands the C loop (``sfu.native``) the target
it sends through. What it needs of aiortc's private state goes through ``sfu.aiortc_adapter``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import struct
from collections import deque
from typing import Any, NamedTuple

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
# Pacing (``DirectRtpSender.set_pacing_rate``): what may leave at once beyond the rate (a
# few packets, or this long at the rate), and how long a queue it keeps at the rate before
# it drops its oldest frames: past that, what is queued would arrive too late to be shown.
PACING_BURST_SECONDS = 0.02
PACING_BURST_MIN_BYTES = 3 * 1300
PACING_QUEUE_SECONDS = 0.4


class _Paced(NamedTuple):
    """A packet waiting in the pacer: a media packet (``template`` with its header fields,
    ``ntp`` its forwarding time) or, with ``ssrc`` None, a retransmission sent as is."""

    template: bytes
    sequence_number: int
    timestamp: int
    ssrc: int | None
    ntp: int
    payload_bytes: int


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
        "_pacing_bytes",
        "_pacing_loop",
        "_pacing_queue",
        "_pacing_queued_bytes",
        "_pacing_timer",
        "_pacing_tokens",
        "_pacing_updated",
        "_pair",
        "_sender",
        "_session",
        "_shared",
        "_socket",
        "_srtp",
        "_target",
        "_transport",
        "native_send_hook",
        "paced_dropped_packets",
    )

    def __init__(self, sender: RTCRtpSender) -> None:
        dtls: RTCDtlsTransport = sender.transport
        self._dtls = dtls
        self._sender = sender
        self._socket: socket.socket | None = None
        self._shared = False  # the socket is the process's shared one (sfu.ice_mux)
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
        self._pacing_bytes: float | None = None  # the pacing rate in bytes per second
        self._pacing_queue: deque[_Paced] = deque()
        self._pacing_queued_bytes = 0
        self._pacing_tokens = 0.0
        self._pacing_updated = 0.0
        self._pacing_timer: asyncio.TimerHandle | None = None
        self._pacing_loop: asyncio.AbstractEventLoop | None = None
        self.paced_dropped_packets = 0  # dropped from the pacer's queue (it was full)

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
        pair, but only its own ``_run_rtp`` (idle here) updates them.

        While pacing (``set_pacing_rate``) the packets are queued, and the bytes queued are
        returned."""
        dtls = self._dtls
        if not dtls_connected(dtls) or not templates:
            return 0
        if not self._bound() and not self.bind():
            return 0
        if self._pacing_bytes is not None:
            return self._enqueue(templates, headers, ssrc, ntp_time)
        return self._send_now(templates, headers, ssrc, ntp_time, payload_bytes)

    def _send_now(
        self,
        templates: list[bytes],
        headers: list[tuple[int, int]],
        ssrc: int,
        ntp_time: int,
        payload_bytes: int,
    ) -> int:
        """``send`` without the pacer (DTLS up and bound: checked by the caller)."""
        dtls = self._dtls
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
        except the process's shared ICE socket (``sfu.ice_mux``), which stays open while
        the process serves: a descriptor per viewer is what the shared socket saves,
        and it holds its SRTP session and send hook until it is freed, which is when nothing
        holds it any more, the C loop's ``TargetSet`` included; so does ``mapping``. Its
        counters are taken with ``take_native_counters``. None while pacing: the pacer is
        Python's."""
        dtls = self._dtls
        if native.lib is None or self._pacing_bytes is not None or not dtls_connected(dtls):
            return None
        if not self._bound() and not self.bind():
            return None
        if self._socket is None or aiortc_adapter.transport_queues(self._transport):
            return None
        if self._target is None or self._target.mapping != mapping:
            self._target = self._new_native_target(mapping)
        return self._target

    def native_target_valid(self) -> bool:
        """Whether the target ``native_target`` gave still sends where ``send`` would (and
        it is not pacing: the down track then takes the forwarding back on its upkeep)."""
        return (
            self._target is not None
            and self._pacing_bytes is None
            and dtls_connected(self._dtls)
            and self._bound()
        )

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
        """Let go of the C loop's target (its descriptor closes once nothing holds it),
        and of what the pacer holds."""
        self._target = None
        self._drop_paced()

    def send_packet(self, data: bytes) -> int:
        """Send one serialized RTP packet as it is (a retransmission: not counted in
        sender reports, as aiortc does not count its own); queued behind the media while
        pacing."""
        dtls = self._dtls
        session = aiortc_adapter.transmit_srtp(dtls)
        if not dtls_connected(dtls) or session is None:
            return 0
        if self._pacing_bytes is not None:
            self._push(_Paced(data, 0, 0, None, 0, 0))
            self._release()
            return len(data)
        return self._send_packet_now(data)

    @property
    def pacing_rate(self) -> float | None:
        """The rate it paces at, in bits per second; None when it sends at once."""
        return None if self._pacing_bytes is None else self._pacing_bytes * 8

    @property
    def paced_queue_bytes(self) -> int:
        """The bytes of RTP waiting in the pacer."""
        return self._pacing_queued_bytes

    def set_pacing_rate(self, bits_per_second: float | None) -> None:
        """Pace this viewer's RTP at ``bits_per_second`` (a viewer on a constrained link:
        a frame's burst of packets, or a keyframe's, would otherwise overflow the queue of
        the link's bottleneck and be lost there), or send at once again (None: what is
        queued leaves now).

        Paced, packets leave in order at the rate, with a burst allowance of
        ``PACING_BURST_SECONDS`` at the rate (at least ``PACING_BURST_MIN_BYTES``), on the
        event loop's timer; retransmissions queue behind the media. The queue holds
        ``PACING_QUEUE_SECONDS`` at the rate: a packet arriving at a full queue makes room
        by dropping the oldest whole frames (packets of one RTP timestamp) first, then any
        queued retransmission: the oldest are the least useful to a live picture, and a
        frame cut short is undecodable anyway. The viewer sees the drops as loss (it NACKs,
        or asks for a keyframe). A paced viewer is forwarded here, not by the C loop
        (``native_target`` gives none; a target in use is dropped at the down track's next
        upkeep). Call it on the event loop."""
        if bits_per_second is None:
            self._pacing_bytes = None
            if self._pacing_timer is not None:
                self._pacing_timer.cancel()
                self._pacing_timer = None
            self._flush_paced(float("inf"))
            return
        if not bits_per_second > 0:
            raise ValueError(f"a pacing rate must be positive, not {bits_per_second!r}")
        loop = asyncio.get_running_loop()
        if self._pacing_bytes is None:
            self._pacing_loop = loop
            self._pacing_updated = loop.time()
            self._pacing_tokens = self._burst_bytes(bits_per_second / 8)
        else:
            self._earn_tokens()
        self._pacing_bytes = bits_per_second / 8
        self._pacing_tokens = min(self._pacing_tokens, self._burst_bytes(self._pacing_bytes))
        if self._pacing_timer is not None:
            self._pacing_timer.cancel()
            self._pacing_timer = None
        self._release()

    @staticmethod
    def _burst_bytes(rate_bytes: float) -> float:
        return max(rate_bytes * PACING_BURST_SECONDS, PACING_BURST_MIN_BYTES)

    def _enqueue(
        self, templates: list[bytes], headers: list[tuple[int, int]], ssrc: int, ntp_time: int
    ) -> int:
        queued = 0
        for template, (sequence_number, timestamp) in zip(templates, headers, strict=True):
            self._push(
                _Paced(
                    template,
                    sequence_number,
                    timestamp,
                    ssrc,
                    ntp_time,
                    len(template) - _payload_offset(template),
                )
            )
            queued += len(template)
        self._release()
        return queued

    def _push(self, packet: _Paced) -> None:
        assert self._pacing_bytes is not None
        queue = self._pacing_queue
        limit = self._pacing_bytes * PACING_QUEUE_SECONDS
        size = len(packet.template)
        while queue and self._pacing_queued_bytes + size > limit:
            self._drop_oldest()
        queue.append(packet)
        self._pacing_queued_bytes += size

    def _drop_oldest(self) -> None:
        """Drop the oldest queued frame (all its packets queued), or a retransmission."""
        queue = self._pacing_queue
        first = queue.popleft()
        dropped = [first]
        if first.ssrc is not None:
            timestamp = first.timestamp
            while queue and queue[0].ssrc is not None and queue[0].timestamp == timestamp:
                dropped.append(queue.popleft())
        self._pacing_queued_bytes -= sum(len(packet.template) for packet in dropped)
        self.paced_dropped_packets += len(dropped)

    def _earn_tokens(self) -> None:
        assert self._pacing_loop is not None
        assert self._pacing_bytes is not None
        now = self._pacing_loop.time()
        self._pacing_tokens = min(
            self._burst_bytes(self._pacing_bytes),
            self._pacing_tokens + (now - self._pacing_updated) * self._pacing_bytes,
        )
        self._pacing_updated = now

    def _release(self) -> None:
        """Send what the tokens allow now; come back when the next packet may leave."""
        self._pacing_timer = None
        rate = self._pacing_bytes
        if rate is None or not self._pacing_queue:
            return
        self._earn_tokens()
        if self._pacing_tokens > 0:
            self._flush_paced(self._pacing_tokens)
        if self._pacing_queue and self._pacing_timer is None:
            assert self._pacing_loop is not None
            wait = max(0.001, -self._pacing_tokens / rate)
            self._pacing_timer = self._pacing_loop.call_later(wait, self._release)

    def _flush_paced(self, allowance: float) -> None:
        """Send queued packets in order while ``allowance`` bytes (the tokens) last; the
        last packet may overdraw it (the tokens go negative: it is paid for by the wait)."""
        queue = self._pacing_queue
        if not queue:
            return
        if not dtls_connected(self._dtls) or (not self._bound() and not self.bind()):
            self._drop_paced()
            return
        spent = 0
        run: list[_Paced] = []
        while queue and spent < allowance:
            packet = queue.popleft()
            spent += len(packet.template)
            if packet.ssrc is None:
                self._send_run(run)
                run = []
                self._send_packet_now(packet.template)
            elif run and (run[-1].ssrc != packet.ssrc or len(run) >= _MAX_SEGMENTS):
                self._send_run(run)
                run = [packet]
            else:
                run.append(packet)
        self._send_run(run)
        self._pacing_queued_bytes -= spent
        if allowance != float("inf"):
            self._pacing_tokens -= spent

    def _send_run(self, run: list[_Paced]) -> None:
        if not run:
            return
        last = run[-1]
        assert last.ssrc is not None
        self._send_now(
            [packet.template for packet in run],
            [(packet.sequence_number, packet.timestamp) for packet in run],
            last.ssrc,
            last.ntp,
            sum(packet.payload_bytes for packet in run),
        )

    def _drop_paced(self) -> None:
        if self._pacing_timer is not None:
            self._pacing_timer.cancel()
            self._pacing_timer = None
        self._pacing_queue.clear()
        self._pacing_queued_bytes = 0

    def _send_packet_now(self, data: bytes) -> int:
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
        self._shared = aiortc_adapter.muxed(pair.protocol)
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
        descriptor = self._socket.fileno() if self._shared else os.dup(self._socket.fileno())
        hook = self.native_send_hook
        owned = (self._session, hook, mapping)  # what the target points into
        target = ffi.gc(
            ffi.new("struct onair_target *"),
            functools.partial(_free_target, None if self._shared else descriptor, owned),
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


def _payload_offset(packet: bytes) -> int:
    """Where a serialized RTP packet's payload starts: after the fixed header, its CSRCs
    and its header extension (RFC 3550, 5.1 and 5.3.1)."""
    offset = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10 and len(packet) >= offset + 4:
        offset += 4 + 4 * int.from_bytes(packet[offset + 2 : offset + 4], "big")
    return min(offset, len(packet))


def _free_target(descriptor: int | None, owned: tuple[Any, ...], target: Any) -> None:
    """A ``struct onair_target``'s destructor (``ffi.gc``): its own descriptor closes, and
    what it pointed into (``owned``, held by the partial until now) may go."""
    if descriptor is not None:
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
