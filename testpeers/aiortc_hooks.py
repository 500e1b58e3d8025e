"""aiortc hooks only tests and the bench use: losing or holding media, spying on codecs,
sending NACKs, reading what the next sender report will say. Like ``sfu.aiortc_adapter``
(whose shims the SFU itself uses) they reach into aiortc's private state, so
``tests/sfu/test_aiortc_adapter.py`` pins them too; the SFU never imports this.
"""

from __future__ import annotations

import asyncio
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import aiortc.rtcrtpreceiver as _receiver_module
import aiortc.rtcrtpsender as _sender_module
from aiortc import RTCDtlsTransport, RTCRtpCodecParameters, RTCRtpReceiver, RTCRtpSender
from aiortc.rtp import RTCP_RTPFB, RTCP_RTPFB_NACK, AnyRtcpPacket, pack_rtcp_packet

_DECODER_THREAD_ATTR = "_RTCRtpReceiver__decoder_thread"
_FCI = struct.Struct("!HH")
_FEEDBACK_SSRCS = struct.Struct("!LL")


class _SerializedRtcp:
    """An RTCP packet already serialized, for aiortc's ``_send_rtcp``."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __bytes__(self) -> bytes:
        return self._data


def nack_packet(ssrc: int, media_ssrc: int, lost: list[int]) -> bytes:
    """An RTCP generic NACK for the sequence numbers ``lost``, in order, across the 16-bit
    wrap (which aiortc's own ``RtcpRtpfbPacket`` cannot encode)."""
    fcis: list[list[int]] = []
    for number in lost:
        step = (number - fcis[-1][0]) & 0xFFFF if fcis else 0
        if 0 < step <= 16:
            fcis[-1][1] |= 1 << (step - 1)
        else:
            fcis.append([number & 0xFFFF, 0])
    payload = _FEEDBACK_SSRCS.pack(ssrc, media_ssrc) + b"".join(
        _FCI.pack(pid, mask) for pid, mask in fcis
    )
    return pack_rtcp_packet(RTCP_RTPFB, RTCP_RTPFB_NACK, payload)


async def send_nack(receiver: RTCRtpReceiver, media_ssrc: int, lost: list[int]) -> None:
    """Ask the remote sender of ``media_ssrc`` to resend ``lost`` (RTCP generic NACK)."""
    ssrc: int | None = receiver._RTCRtpReceiver__rtcp_ssrc  # type: ignore[attr-defined]
    if ssrc is not None:
        packet = _SerializedRtcp(nack_packet(ssrc, media_ssrc, lost))
        await receiver._send_rtcp(packet)  # type: ignore[arg-type]


def sender_report_state(sender: RTCRtpSender) -> tuple[int, int, int, int]:
    """(ntp_timestamp, rtp_timestamp, octet_count, packet_count) of the next SR."""
    return (
        sender._RTCRtpSender__ntp_timestamp,  # type: ignore[attr-defined]
        sender._RTCRtpSender__rtp_timestamp,  # type: ignore[attr-defined]
        sender._RTCRtpSender__octet_count,  # type: ignore[attr-defined]
        sender._RTCRtpSender__packet_count,  # type: ignore[attr-defined]
    )


def decoder_thread(receiver: RTCRtpReceiver) -> threading.Thread | None:
    """The receiver's decoder thread, started by ``receive()``."""
    thread: threading.Thread | None = getattr(receiver, _DECODER_THREAD_ATTR)
    return thread


@contextmanager
def spy_codec_factories(
    on_decoder: Callable[[RTCRtpCodecParameters, threading.Thread], None],
    on_encoder: Callable[[RTCRtpCodecParameters, RTCRtpSender | None], None],
) -> Iterator[None]:
    """Report every decoder and encoder aiortc creates while the context is open.

    ``on_decoder`` gets the decoder thread that asked for it (see
    ``decoder_thread``); ``on_encoder`` gets the ``RTCRtpSender`` that asked.
    """
    get_decoder = _receiver_module.get_decoder
    get_encoder = _sender_module.get_encoder

    def spying_get_decoder(codec: RTCRtpCodecParameters) -> Any:
        on_decoder(codec, threading.current_thread())
        return get_decoder(codec)

    def spying_get_encoder(codec: RTCRtpCodecParameters) -> Any:
        caller = sys._getframe(1).f_locals.get("self")
        on_encoder(codec, caller if isinstance(caller, RTCRtpSender) else None)
        return get_encoder(codec)

    _receiver_module.get_decoder = spying_get_decoder
    _sender_module.get_encoder = spying_get_encoder
    try:
        yield
    finally:
        _receiver_module.get_decoder = get_decoder
        _sender_module.get_encoder = get_encoder


def filter_incoming_rtp(transport: RTCDtlsTransport, keep: Callable[[bytes], bool]) -> None:
    """Drop decrypted incoming RTP packets for which ``keep`` returns False.

    Used to emulate a lossy downlink in tests and benchmarks.
    """
    original = transport._handle_rtp_data

    async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
        if keep(data):
            await original(data, arrival_time_ms)

    transport._handle_rtp_data = handle_rtp_data  # type: ignore[method-assign]


def hold_outgoing_media(transport: RTCDtlsTransport, held: Callable[[], bool]) -> None:
    """Send no SRTP or SRTCP on ``transport`` while ``held()`` is true; ICE goes on.

    Used to emulate, in tests, a sender whose media stops while its connection is up
    (a killed encoder, a stalled network, until ICE consent notices).
    """
    original = transport._send_rtp

    async def send_rtp(data: bytes) -> None:
        if not held():
            await original(data)

    transport._send_rtp = send_rtp  # type: ignore[method-assign]


async def send_rtp(transport: RTCDtlsTransport, data: bytes) -> None:
    """Protect ``data`` (RTP or RTCP) with the transport's SRTP session and send it: for
    packets no ``RTCRtpSender`` makes (several SSRCs on one m-section, for simulcast).
    Raises ConnectionError while the transport is not connected."""
    await transport._send_rtp(data)


class _RtcpSink:
    """Stands in the transport's RTP router where an ``RTCRtpSender`` would."""

    __slots__ = ("_handler",)

    def __init__(self, handler: Callable[[AnyRtcpPacket], Awaitable[None]]) -> None:
        self._handler = handler

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        await self._handler(packet)


def route_rtcp_about(
    transport: RTCDtlsTransport,
    ssrcs: Iterable[int],
    handler: Callable[[AnyRtcpPacket], Awaitable[None]],
) -> None:
    """Hand ``handler`` the RTCP that concerns the outgoing ``ssrcs`` (receiver report
    blocks, PLI, FIR, NACK, a REMB listing them), once per packet however many it names, as
    aiortc does for its own senders' SSRCs."""
    sink = _RtcpSink(handler)
    for ssrc in ssrcs:
        transport._rtp_router.register_sender(sink, ssrc)  # type: ignore[arg-type]


class IncomingShaper:
    """A link of ``rate`` bit/s in front of a transport's incoming RTP, as tbf shapes one:
    packets leave at that rate after a burst of ``burst_bytes``, wait in a queue of at most
    ``queue_seconds``, and what would wait longer is dropped. ``rate = None``: no limit.
    Each packet counts ``overhead`` bytes more than its decrypted RTP (SRTP, UDP, IP)."""

    def __init__(
        self, queue_seconds: float = 0.2, burst_bytes: int = 15_000, overhead: int = 48
    ) -> None:
        self.rate: float | None = None
        self.queue_seconds = queue_seconds
        self.burst_bytes = burst_bytes
        self.overhead = overhead
        self.dropped = 0
        self._free_at = 0.0  # when the link has sent everything queued so far

    def schedule(self, size: int, now: float) -> float | None:
        """When a packet of ``size`` bytes arriving ``now`` leaves the link; None: dropped."""
        if self.rate is None:
            self._free_at = now
            return now
        self._free_at = max(self._free_at, now - self.burst_bytes * 8 / self.rate)
        leaves = self._free_at + (size + self.overhead) * 8 / self.rate
        if leaves - now > self.queue_seconds:
            self.dropped += 1
            return None
        self._free_at = leaves
        return max(now, leaves)


def shape_incoming_rtp(transport: RTCDtlsTransport, shaper: IncomingShaper) -> None:
    """Pass the decrypted incoming RTP of ``transport`` through ``shaper``: a packet reaches
    aiortc (its receivers, statistics, NACKs and REMB) when the shaped link delivers it,
    with that time as its arrival time, or never. RTCP is not shaped."""
    original = transport._handle_rtp_data
    loop = asyncio.get_running_loop()
    queued = 0  # packets on the link, not yet handed to aiortc: the next waits behind them
    tasks: set[asyncio.Task[None]] = set()

    def delivered(task: asyncio.Task[None]) -> None:
        nonlocal queued
        queued -= 1
        tasks.discard(task)

    def deliver(data: bytes) -> None:
        task = loop.create_task(original(data, int(time.time() * 1000)))
        tasks.add(task)
        task.add_done_callback(delivered)

    async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
        nonlocal queued
        now = loop.time()
        leaves = shaper.schedule(len(data), now)
        if leaves is None:
            return
        if leaves <= now and not queued:
            await original(data, arrival_time_ms)
        else:
            queued += 1
            loop.call_at(leaves, deliver, data)

    transport._handle_rtp_data = handle_rtp_data  # type: ignore[method-assign]
