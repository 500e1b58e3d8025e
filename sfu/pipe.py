"""Router-to-router pipes: one broadcast copied from its origin router to an edge router.

Like mediasoup's ``pipeToRouter`` and LiveKit's relay: when one worker process has no room
left for viewers, another worker's ``EdgeRouter`` receives the broadcast's packets from the
origin once, over plain RTP/RTCP on UDP (loopback or the cluster network, never the
internet), and fans them out to its own viewers like a publisher's producers would::

    edge_pipe = await EdgePipe.open(host="127.0.0.1")            # on the edge worker
    edge = EdgeRouter(options, router_id=broadcast_id, pipe=edge_pipe)
    origin_pipe = await OriginPipe.open(origin_router, remote=edge_pipe.address,
                                        host="127.0.0.1", on_tracks=tell_the_edge)
    edge_pipe.connect(origin_pipe.address)
    await edge.set_tracks(origin_pipe.tracks())                   # and on every on_tracks

The origin's end forwards each producer (each layer of a simulcast track) through a
keyframe gate and a munger, so the pipe carries one continuous stream per layer even when
the publisher reconnects. The edge's end feeds one ``Producer`` per layer, grouped by kind
into published tracks with the same layers, so that edge viewers choose layers as origin
viewers do; their keyframe requests (PLI) go back upstream as RTCP with that layer's pipe
SSRC, and so do NACKs for pipe packets that went missing. Nothing here knows about
worker processes or how the two ends learned each other's address: the gateway does.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import struct
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

from aiortc import RTCRtpCodecParameters, RTCRtpReceiver
from aiortc.rtp import (
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    HeaderExtensionsMap,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtpPacket,
    is_rtcp,
)

from sfu import aiortc_adapter
from sfu.downtrack import TrackForwarder
from sfu.events import ProducerAdded, RouterClosed
from sfu.forwarding import Batch
from sfu.munger import RtpMunger
from sfu.negotiation import is_vp8
from sfu.producer import Producer
from sfu.router import Router, RouterOptions
from sfu.tasks import TaskSet
from sfu.track import PublishedTrack

logger = logging.getLogger(__name__)

Address = tuple[str, int]

_HEADER = struct.Struct("!HII")  # sequence number, timestamp, SSRC at offset 2
_SEQ_MASK = 0xFFFF
_MAX_NACK_GAP = 64  # a longer gap is a restart or a stall, not loss worth repairing
_EARLY_PACKETS = 256
_PIPE_GROUP_KEY = ("pipe",)


@dataclass(frozen=True)
class PipeTrack:
    """What an edge needs to produce one layer of one kind: the pipe SSRC, the publisher's
    codec and the layer's rid (None without simulcast)."""

    kind: str
    ssrc: int
    codec: RTCRtpCodecParameters
    rid: str | None = None

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.kind, self.rid)


def encode_tracks(tracks: tuple[PipeTrack, ...]) -> list[dict[str, Any]]:
    """Pipe tracks as JSON-able dicts, for whatever carries them to the edge."""
    return [
        {
            "kind": t.kind,
            "ssrc": t.ssrc,
            "rid": t.rid,
            "codec": {
                "mimeType": t.codec.mimeType,
                "clockRate": t.codec.clockRate,
                "channels": t.codec.channels,
                "payloadType": t.codec.payloadType,
                "parameters": dict(t.codec.parameters),
            },
        }
        for t in tracks
    ]


def decode_tracks(tracks: list[dict[str, Any]]) -> tuple[PipeTrack, ...]:
    return tuple(
        PipeTrack(
            kind=t["kind"],
            ssrc=t["ssrc"],
            codec=RTCRtpCodecParameters(**t["codec"]),
            rid=t.get("rid"),
        )
        for t in tracks
    )


@dataclass(frozen=True)
class PipeStats:
    """Packets through one end of a pipe. ``packets`` counts each packet once (first
    sends at the origin, first arrivals at the edge); repairs and repeats are apart."""

    packets: int
    retransmitted: int
    duplicates: int
    keyframe_requests: int
    nacks: int


class _Datagrams(asyncio.DatagramProtocol):
    """Hands every datagram to ``on_datagram``; ICMP errors (an edge gone) are ignored."""

    def __init__(self, on_datagram: Callable[[bytes], None]) -> None:
        self._on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        pass


async def _bind(host: str, on_datagram: Callable[[bytes], None]) -> asyncio.DatagramTransport:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Datagrams(on_datagram), local_addr=(host, 0)
    )
    return transport


def _pli(ssrc: int) -> bytes:
    return bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=0, media_ssrc=ssrc))


def _nack(ssrc: int, lost: list[int]) -> bytes:
    return bytes(RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=0, media_ssrc=ssrc, lost=lost))


# --- the origin's end --------------------------------------------------------------------


class _PipeForwarder(TrackForwarder):
    """One layer of one kind of the origin router, forwarded into the pipe: a viewer's forwarding
    (``TrackForwarder``: keyframe gate, munger, repairs) without a viewer.

    It joins its producer's forward group like a viewer's down track, so the pipe costs one
    serialization per packet however many edges there are, then gates on a keyframe and
    re-bases sequence numbers and timestamps when the publisher is replaced. Pipe packets
    are plain RTP, never SRTP: the C loop does not forward them.
    """

    def __init__(self, pipe: OriginPipe, producer: Producer) -> None:
        munger = RtpMunger(producer.codec.clockRate, vp8=is_vp8(producer.codec))
        super().__init__(producer, munger, random.getrandbits(32))
        self.kind = producer.kind
        self.rid = producer.rid
        self.packets = 0
        self.retransmitted = 0
        self.keyframe_requests = 0
        self._pipe = pipe
        self._attach(producer)

    @property
    def ssrc(self) -> int:
        return self._ssrc

    @property
    def track(self) -> PipeTrack:
        return PipeTrack(kind=self.kind, ssrc=self._ssrc, codec=self._producer.codec, rid=self.rid)

    def switch_producer(self, producer: Producer) -> None:
        self._detach()
        self._follow(producer)
        self._attach(producer)

    def close(self) -> None:
        self._detach()

    def _attach(self, producer: Producer) -> None:
        producer.start_forwarding(
            self,
            key=_PIPE_GROUP_KEY,
            payload_type=producer.codec.payloadType or 0,
            mid=None,
            extensions_map=HeaderExtensionsMap(),
        )
        if self._waiting_keyframe:
            self._pipe.spawn(producer.request_keyframe(join=True))

    def _detach(self) -> None:
        self._producer.stop_forwarding(self)

    def _send(self, templates: list[bytes], batch: Batch, first: int, now: float, ntp: int) -> bool:
        packets = batch.packets
        for index in range(first, len(packets)):
            packet = packets[index]
            mapped = self._munger.map(packet.sequence_number, packet.timestamp, now)
            if mapped is None:
                continue
            template = templates[index]
            template = self._munger.map_vp8(template, len(template) - len(packet.payload))
            data = bytearray(template)
            _HEADER.pack_into(data, 2, mapped[0], mapped[1], self._ssrc)
            self._pipe._send(data)
            self.packets += 1
        return True

    async def keyframe_requested(self) -> None:
        self.keyframe_requests += 1
        await self._producer.request_keyframe()

    def retransmit(self, pipe_sequence_number: int) -> None:
        repair = self._repair(
            pipe_sequence_number,
            self._producer.codec.payloadType or 0,
            time.monotonic(),
            max_age=math.inf,
        )
        if repair is None:
            return
        self._pipe._send(repair[0].serialize())
        self.retransmitted += 1


class OriginPipe:
    """The origin router's end of a pipe to one edge.

    Every layer of every track goes down the pipe as its own pipe track, so that the
    edge's viewers choose layers as the origin's do. It follows the router: a new
    publisher's layers take over the pipe tracks of the same kind and rid, and
    ``on_tracks`` is called when the set of layers or a codec changes, for the edge to
    learn it. Closing the router closes the pipe.
    """

    def __init__(
        self,
        router: Router,
        transport: asyncio.DatagramTransport,
        remote: Address,
        on_tracks: Callable[[tuple[PipeTrack, ...]], None],
    ) -> None:
        self.router = router
        self.closed = False
        self._transport = transport
        self._remote = remote
        self._on_tracks = on_tracks
        self._forwarders: dict[tuple[str, str | None], _PipeForwarder] = {}
        self._tasks = TaskSet()
        for track in router.tracks:
            self._follow(track)
        router.events.on(ProducerAdded, self._producer_added)
        router.events.on(RouterClosed, lambda _: self.close())

    @classmethod
    async def open(
        cls,
        router: Router,
        *,
        remote: Address,
        host: str,
        on_tracks: Callable[[tuple[PipeTrack, ...]], None],
    ) -> OriginPipe:
        pipe: OriginPipe | None = None

        def on_datagram(data: bytes) -> None:
            if pipe is not None:
                pipe._feedback(data)

        transport = await _bind(host, on_datagram)
        pipe = cls(router, transport, remote, on_tracks)
        return pipe

    @property
    def address(self) -> Address:
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    @property
    def remote(self) -> Address:
        return self._remote

    def tracks(self) -> tuple[PipeTrack, ...]:
        return tuple(forwarder.track for forwarder in self._forwarders.values())

    def stats(self) -> PipeStats:
        forwarders = self._forwarders.values()
        return PipeStats(
            packets=sum(f.packets for f in forwarders),
            retransmitted=sum(f.retransmitted for f in forwarders),
            duplicates=0,
            keyframe_requests=sum(f.keyframe_requests for f in forwarders),
            nacks=0,
        )

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.router.events.off(self._producer_added)
        for forwarder in self._forwarders.values():
            forwarder.close()
        self._forwarders.clear()
        self._tasks.cancel_soon()
        self._transport.close()

    def _producer_added(self, event: ProducerAdded) -> None:
        track = next(
            (
                t
                for t in self.router.tracks
                if any(p.id == event.producer_id for p in t.offered_layers)
            ),
            None,
        )
        if track is None or self.closed:
            return
        before = self.tracks()
        self._follow(track)
        if self.tracks() != before:
            self._on_tracks(self.tracks())

    def _follow(self, track: PublishedTrack) -> None:
        """Pipe every layer of ``track``: a layer the pipe carries already (same kind and
        rid) continues on its new producer; the kind's layers the track lacks stop."""
        rids = {layer.rid for layer in track.offered_layers}
        for key in [k for k in self._forwarders if k[0] == track.kind and k[1] not in rids]:
            self._forwarders.pop(key).close()
        for layer in track.offered_layers:
            forwarder = self._forwarders.get((track.kind, layer.rid))
            if forwarder is None:
                self._forwarders[(track.kind, layer.rid)] = _PipeForwarder(self, layer)
            elif forwarder.producer is not layer:
                forwarder.switch_producer(layer)

    def _send(self, data: bytes | bytearray) -> None:
        if not self.closed:
            self._transport.sendto(data, self._remote)

    def _feedback(self, data: bytes) -> None:
        if not is_rtcp(data):
            return
        try:
            packets = RtcpPacket.parse(data)
        except ValueError:
            return
        by_ssrc = {f.ssrc: f for f in self._forwarders.values()}
        for packet in packets:
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_PLI:
                forwarder = by_ssrc.get(packet.media_ssrc)
                if forwarder is not None:
                    self._tasks.spawn(forwarder.keyframe_requested())
            elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                forwarder = by_ssrc.get(packet.media_ssrc)
                if forwarder is not None:
                    for sequence_number in packet.lost:
                        forwarder.retransmit(sequence_number)

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run ``coroutine`` as one of this pipe's tasks (cancelled when it closes)."""
        self._tasks.spawn(coroutine)


# --- the edge's end ----------------------------------------------------------------------


class _PipeInput:
    """One kind arriving on the edge: its producer and its sequence bookkeeping."""

    def __init__(
        self, track: PipeTrack, producer: Producer, source: aiortc_adapter.ReceiverStandIn
    ) -> None:
        self.track = track
        self.producer = producer
        self.source = source
        self.highest: int | None = None


class EdgePipe:
    """The edge's end of a pipe: a UDP socket whose packets feed one producer per pipe
    track (a layer of a kind), grouped by kind into the edge's published tracks."""

    def __init__(self, transport: asyncio.DatagramTransport, queue: asyncio.Queue[bytes]) -> None:
        self.closed = False
        self.packets = 0
        self.duplicates = 0
        self.nacks = 0
        self.keyframe_requests = 0
        self._transport = transport
        self._queue = queue
        self._origin: Address | None = None
        self._inputs: dict[int, _PipeInput] = {}
        self.tracks: tuple[PublishedTrack, ...] = ()
        self._early: list[RtpPacket] = []
        self._pump = asyncio.ensure_future(self._run())

    @classmethod
    async def open(cls, *, host: str) -> EdgePipe:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        transport = await _bind(host, queue.put_nowait)
        return cls(transport, queue)

    @property
    def address(self) -> Address:
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    @property
    def producers(self) -> tuple[Producer, ...]:
        return tuple(i.producer for i in self._inputs.values() if not i.producer.closed)

    def connect(self, origin: Address) -> None:
        """Where keyframe requests and NACKs go: the origin's end."""
        self._origin = origin

    def stats(self) -> PipeStats:
        return PipeStats(
            packets=self.packets,
            retransmitted=0,
            duplicates=self.duplicates,
            keyframe_requests=self.keyframe_requests,
            nacks=self.nacks,
        )

    def _set_tracks(self, router: Router, tracks: tuple[PipeTrack, ...]) -> list[Producer]:
        """A producer for each of ``tracks`` (one kept where its pipe track is unchanged),
        grouped by kind into ``self.tracks``, each kind's layers in the origin's order;
        returns the producers replaced or gone, for the caller to move their viewers and
        close them."""
        gone: list[Producer] = []
        by_key = {i.track.key: i for i in self._inputs.values()}
        wanted = {track.key for track in tracks}
        for key, stale in by_key.items():
            if key not in wanted:
                del self._inputs[stale.track.ssrc]
                gone.append(stale.producer)
        for track in tracks:
            current = by_key.get(track.key)
            if current is not None and current.track == track:
                continue
            # packets come from the pipe; a keyframe request goes back up it as an RTCP PLI
            source = aiortc_adapter.ReceiverStandIn(lambda ssrc: self._send_upstream(_pli(ssrc)))
            producer = Producer(
                router_id=router.id,
                publisher_id="pipe",
                kind=track.kind,
                codec=track.codec,
                receiver=cast(RTCRtpReceiver, source),
                cache_size=router.options.packet_cache_size,
                keyframe_request_interval=router.options.keyframe_request_interval,
                emit=router.events.emit,
                native_forwarding=router.options.native_forwarding,
                rid=track.rid,
            )
            if current is not None:
                del self._inputs[current.track.ssrc]
                gone.append(current.producer)
            self._inputs[track.ssrc] = _PipeInput(track, producer, source)
        by_ssrc = self._inputs
        kinds = dict.fromkeys(track.kind for track in tracks)
        self.tracks = tuple(
            PublishedTrack(kind, [by_ssrc[t.ssrc].producer for t in tracks if t.kind == kind])
            for kind in kinds
        )
        return gone

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._pump.cancel()
        self._transport.close()
        for pipe_input in self._inputs.values():
            pipe_input.producer.close("pipe_closed")
        self._inputs.clear()

    def _send_upstream(self, data: bytes) -> None:
        if self._origin is None or self.closed:
            return
        if data[1] == 206:  # payload-specific feedback: a PLI
            self.keyframe_requests += 1
        self._transport.sendto(data, self._origin)

    async def _run(self) -> None:
        while True:
            data = await self._queue.get()
            if is_rtcp(data):
                continue
            try:
                packet = RtpPacket.parse(data)
            except ValueError:
                continue
            pipe_input = self._inputs.get(packet.ssrc)
            if pipe_input is None:
                # The origin may send before its answer telling the tracks arrived here.
                if len(self._early) < _EARLY_PACKETS:
                    self._early.append(packet)
                continue
            await self._receive(pipe_input, packet)

    async def _receive_early(self) -> None:
        """Packets that came before their track was known, now that it is."""
        early, self._early = self._early, []
        for packet in early:
            pipe_input = self._inputs.get(packet.ssrc)
            if pipe_input is not None:
                await self._receive(pipe_input, packet)

    async def _receive(self, pipe_input: _PipeInput, packet: RtpPacket) -> None:
        sequence_number = packet.sequence_number
        if pipe_input.producer.cached_packet(sequence_number) is not None:
            self.duplicates += 1
            return
        highest = pipe_input.highest
        if highest is None:
            pipe_input.highest = sequence_number
        elif (sequence_number - highest) & _SEQ_MASK < 0x8000:
            gap = (sequence_number - highest - 1) & _SEQ_MASK
            if 0 < gap <= _MAX_NACK_GAP:
                self.nacks += 1
                lost = [(highest + 1 + i) & _SEQ_MASK for i in range(gap)]
                self._send_upstream(_nack(pipe_input.track.ssrc, lost))
            pipe_input.highest = sequence_number
        self.packets += 1
        await pipe_input.source.receive(packet)


class EdgeRouter(Router):
    """A router on an edge worker: its producers come from an ``EdgePipe`` instead of a
    publisher. Viewers subscribe to it exactly as to an origin router."""

    def __init__(self, options: RouterOptions, router_id: str, pipe: EdgePipe) -> None:
        super().__init__(options, router_id=router_id)
        self.pipe = pipe

    @property
    def producers(self) -> tuple[Producer, ...]:
        return self.pipe.producers

    @property
    def tracks(self) -> tuple[PublishedTrack, ...]:
        return self.pipe.tracks

    async def set_tracks(self, tracks: tuple[PipeTrack, ...]) -> None:
        """Follow the origin's tracks: a new kind goes to every viewer; a kind whose layers
        changed takes over its predecessor's down tracks, each from a layer to the layer
        at the same place (as a reconnecting publisher's would)."""
        if self.closed:
            return
        before = {track.kind: track for track in self.tracks}
        gone = self.pipe._set_tracks(self, tracks)
        moved: list[tuple[PublishedTrack, PublishedTrack]] = []
        for track in self.tracks:
            old = before.get(track.kind)
            if old is None:
                for viewer in self.viewers:
                    await self._consume_track(viewer, track)
            elif old.offered_layers != track.offered_layers:
                moved.append((old, track))
        if moved:
            await self._move_down_tracks(
                tuple(old for old, _ in moved), tuple(new for _, new in moved)
            )
        for producer in gone:
            producer.close("replaced")
        await self.pipe._receive_early()

    async def close(self) -> None:
        await super().close()
        self.pipe.close()
