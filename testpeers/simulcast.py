"""A publisher that sends RID simulcast the way Chromium does, for tests and the bench.

aiortc cannot send simulcast, so this peer sends the video itself: one sendonly video
m-section whose offer is munged as Chromium's is with ``sendEncodings`` (the rtp-stream-id
and repaired-rtp-stream-id header extensions, ``a=rid:<rid> send`` per layer,
``a=simulcast:send q;h;f``, no ``a=ssrc`` lines), then one SSRC per layer, each with its
own sequence numbers and a random timestamp origin over one 90 kHz capture clock, the mid,
abs-send-time and (on its first ``rid_packets`` packets only, like Chromium) rtp-stream-id
extensions, sent as SRTP through the peer connection's DTLS transport
(``testpeers.aiortc_hooks``). The audio, if any, is aiortc's own sender (a tone).

Like Chromium it answers a PLI or FIR on one layer with a keyframe on every active layer
(``keyframe_all_layers``), a NACK from a per-layer history (RTX with repaired-rtp-stream-id
when the answer negotiates it), and with ``follow_remb`` a REMB below the sum of the layers'
bitrates by turning off the top layers that do not fit (the lowest always sends). A test
can stop and start a layer (``set_layer_active``).

If the answer has no ``a=simulcast``, only the first layer is sent, without RID, as a
browser does when simulcast is refused.

Video comes from ``LiveVp8Source`` (the test pattern, each layer encoded as it goes by
aiortc's VP8 encoder) or ``LoopedVp8Source`` (encoded frames replayed in a loop, the next
keyframe on request: cheap enough for the bench, which loops FFmpeg's encodes).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
    clock,
)
from aiortc.codecs.vpx import PACKET_MAX, Vp8Encoder, VpxPayloadDescriptor
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    HeaderExtensions,
    HeaderExtensionsMap,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtpPacket,
    unpack_remb_fci,
)
from aiortc.sdp import SessionDescription
from av import VideoFrame

from sfu.keyframe import is_vp8_keyframe_start
from testpeers import (
    VIDEO_CLOCK_RATE,
    ToneAudioTrack,
    aiortc_hooks,
    client_configuration,
    pattern_planes,
)

RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
# free ids beside aiortc's own (1 mid, 2 audio level, 3 abs-send-time)
RID_EXTENSION_ID = 10
REPAIRED_RID_EXTENSION_ID = 11
# Chromium stops sending the RID extension once the receiver has surely seen it
CHROMIUM_RID_PACKETS = 10
NACK_HISTORY = 512  # packets per layer
VP8_PAYLOAD_MAX = PACKET_MAX - 4  # as aiortc's encoder: its descriptor is 4 bytes


@dataclass(frozen=True)
class LayerSpec:
    """One simulcast encoding: its RID, picture size and target bitrate (bit/s)."""

    rid: str
    width: int
    height: int
    bitrate: int


# Chromium's three layers for a 720p camera (¼, ½, full), lowest first as the studio lists them
CHROMIUM_LAYERS = (
    LayerSpec("q", 320, 180, 150_000),
    LayerSpec("h", 640, 360, 500_000),
    LayerSpec("f", 1280, 720, 1_500_000),
)
# the same shape, cheap enough to encode live in tests
SMALL_LAYERS = (
    LayerSpec("q", 96, 64, 50_000),
    LayerSpec("h", 192, 128, 120_000),
    LayerSpec("f", 384, 256, 300_000),
)


class Vp8Source(Protocol):
    """Encoded VP8 frames for each layer (by index into the publisher's layers)."""

    async def frames(self, wanted: Sequence[tuple[int, bool]]) -> list[list[bytes]]:
        """The next frame of each ``(layer, keyframe)`` in ``wanted``: its RTP payloads
        (VP8 payload descriptor included; the picture id is rewritten by the sender)."""
        ...


def _pattern_frames(spec: LayerSpec, fps: int) -> list[VideoFrame]:
    frames = []
    for luma, chroma in pattern_planes(spec.width, spec.height, fps):
        frame = VideoFrame(spec.width, spec.height, "yuv420p")
        frame.planes[0].update(luma)
        frame.planes[1].update(chroma)
        frame.planes[2].update(chroma)
        frames.append(frame)
    return frames


class LiveVp8Source:
    """The test pattern (``testpeers.PatternVideoTrack``'s) at each layer's size, encoded
    as it goes by aiortc's ``Vp8Encoder`` at the layer's bitrate, off the event loop."""

    def __init__(self, layers: Sequence[LayerSpec], fps: int) -> None:
        self._pictures = [_pattern_frames(spec, fps) for spec in layers]
        self._encoders = []
        for spec in layers:
            encoder = Vp8Encoder()
            encoder.target_bitrate = spec.bitrate
            self._encoders.append(encoder)
        self._index = [0] * len(layers)

    def _encode(self, wanted: Sequence[tuple[int, bool]]) -> list[list[bytes]]:
        encoded = []
        for layer, keyframe in wanted:
            pictures = self._pictures[layer]
            frame = pictures[self._index[layer] % len(pictures)]
            frame.pts = self._index[layer]
            self._index[layer] += 1
            payloads, _ = self._encoders[layer].encode(frame, keyframe)
            encoded.append(payloads)
        return encoded

    async def frames(self, wanted: Sequence[tuple[int, bool]]) -> list[list[bytes]]:
        return await asyncio.get_running_loop().run_in_executor(None, self._encode, wanted)


def packetize_vp8(frame: bytes) -> list[bytes]:
    """One encoded VP8 frame as RTP payloads, as aiortc's encoder packetizes (a 4-byte
    payload descriptor with a 15-bit picture id, which the sender rewrites)."""
    payloads = []
    descriptor = VpxPayloadDescriptor(partition_start=1, partition_id=0, picture_id=0)
    for start in range(0, len(frame), VP8_PAYLOAD_MAX):
        payloads.append(bytes(descriptor) + frame[start : start + VP8_PAYLOAD_MAX])
        descriptor.partition_start = 0
    return payloads


class LoopedVp8Source:
    """Each layer's encoded frames replayed in a loop; a keyframe request moves that layer
    on to its loop's next keyframe. Costs next to nothing per frame.

    ``frames[layer]`` are whole encoded VP8 frames, the first a keyframe
    (``LoopedVp8Source.from_frames``); ``LoopedVp8Source.encode`` encodes the test pattern
    once per process instead."""

    _made: dict[tuple[tuple[LayerSpec, ...], int, float], list[list[list[bytes]]]] = {}

    def __init__(self, encoded: list[list[list[bytes]]]) -> None:
        self._encoded = encoded
        self._keyframes = [
            [i for i, payloads in enumerate(loop) if is_vp8_keyframe_start(payloads[0])]
            for loop in encoded
        ]
        self._index = [0] * len(encoded)

    @classmethod
    def from_frames(cls, frames: Sequence[Sequence[bytes]]) -> LoopedVp8Source:
        return cls([[packetize_vp8(frame) for frame in layer] for layer in frames])

    @classmethod
    def encode(cls, layers: Sequence[LayerSpec], fps: int, seconds: float) -> LoopedVp8Source:
        key = (tuple(layers), fps, seconds)
        if key not in cls._made:
            live = LiveVp8Source(layers, fps)
            count = max(1, round(fps * seconds))
            cls._made[key] = [
                [live._encode([(layer, n == 0)])[0] for n in range(count)]
                for layer in range(len(layers))
            ]
        return cls(cls._made[key])

    @property
    def loop_bytes(self) -> list[int]:
        """Each layer's loop size in bytes (payload descriptors included)."""
        return [sum(len(p) for frame in layer for p in frame) for layer in self._encoded]

    async def frames(self, wanted: Sequence[tuple[int, bool]]) -> list[list[bytes]]:
        encoded = []
        for layer, keyframe in wanted:
            loop = self._encoded[layer]
            index = self._index[layer] % len(loop)
            if keyframe:
                keyframes = self._keyframes[layer]
                index = next((k for k in keyframes if k >= index), keyframes[0])
            encoded.append(loop[index])
            self._index[layer] = index + 1
        return encoded


def _with_picture_id(payloads: list[bytes], picture_id: int) -> list[bytes]:
    """aiortc's VP8 payloads always carry a 15-bit picture id in bytes 2 and 3."""
    mark = struct.pack("!H", 0x8000 | picture_id)
    return [p[:2] + mark + p[4:] for p in payloads]


@dataclass
class LayerState:
    """One layer as sent: its SSRCs and counters."""

    spec: LayerSpec
    ssrc: int
    rtx_ssrc: int
    sequence_number: int
    rtx_sequence_number: int
    timestamp_origin: int
    picture_id: int
    active: bool = True  # set_layer_active
    fits: bool = True  # within the last REMB (follow_remb)
    keyframe_wanted: bool = True
    packets_sent: int = 0
    bytes_sent: int = 0
    frames_sent: int = 0
    keyframes_sent: int = 0
    rid_packets_sent: int = 0
    rtx_rid_packets_sent: int = 0
    keyframe_requests: int = 0
    nacks: int = 0
    retransmitted: int = 0
    history: OrderedDict[int, RtpPacket] = field(default_factory=OrderedDict)

    @property
    def rid(self) -> str:
        return self.spec.rid

    @property
    def sending(self) -> bool:
        return self.active and self.fits


@dataclass(frozen=True)
class _Negotiated:
    payload_type: int
    rtx_payload_type: int | None
    mid: str | None
    rids: tuple[str, ...]  # the layers the answer takes, in its order; () without simulcast
    extensions: HeaderExtensionsMap


def _sections(sdp: str) -> list[list[str]]:
    """The session part, then each m-section, as lists of lines."""
    sections: list[list[str]] = [[]]
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append([])
        if line:
            sections[-1].append(line)
    return sections


def _join(sections: list[list[str]]) -> str:
    return "".join(line + "\r\n" for section in sections for line in section)


def munge_offer(sdp: str, layers: Sequence[LayerSpec]) -> str:
    """aiortc's offer as Chromium's looks with ``sendEncodings`` (RIDs ``layers``): its
    video section gains the RID header extensions, ``a=rid`` and ``a=simulcast``, and loses
    its ``a=ssrc`` lines (Chromium announces no SSRCs for RID simulcast)."""
    sections = _sections(sdp)
    for section in sections[1:]:
        if not section[0].startswith("m=video"):
            continue
        kept = [line for line in section if not line.startswith(("a=ssrc:", "a=ssrc-group:"))]
        last_extmap = max(
            (i for i, line in enumerate(kept) if line.startswith("a=extmap:")), default=0
        )
        kept[last_extmap + 1 : last_extmap + 1] = [
            f"a=extmap:{RID_EXTENSION_ID} {RID_URI}",
            f"a=extmap:{REPAIRED_RID_EXTENSION_ID} {REPAIRED_RID_URI}",
        ]
        kept.extend(f"a=rid:{spec.rid} send" for spec in layers)
        kept.append("a=simulcast:send " + ";".join(spec.rid for spec in layers))
        section[:] = kept
    return _join(sections)


def accept_simulcast(answer_sdp: str, offer_sdp: str) -> str:
    """What an SFU that takes RID simulcast does to its answer (for tests against a plain
    aiortc receiver): the offer's RID extensions, ``a=rid:<rid> recv`` and
    ``a=simulcast:recv`` in the offer's order, added to the video section."""
    offered = _sections(offer_sdp)
    answered = _sections(answer_sdp)
    for offer_section, section in zip(offered[1:], answered[1:], strict=True):
        if not section[0].startswith("m=video"):
            continue
        rids = [
            line.split()[0][len("a=rid:") :] for line in offer_section if line.startswith("a=rid:")
        ]
        extmaps = [
            line
            for line in offer_section
            if line.startswith("a=extmap:") and line.endswith((RID_URI, REPAIRED_RID_URI))
        ]
        if not rids:
            continue
        section.extend(extmaps)
        section.extend(f"a=rid:{rid} recv" for rid in rids)
        section.append("a=simulcast:recv " + ";".join(rids))
    return _join(answered)


def _negotiated(answer_sdp: str) -> _Negotiated:
    description = SessionDescription.parse(answer_sdp)
    video = next(m for m in description.media if m.kind == "video")
    codec = video.rtp.codecs[0]
    assert codec.payloadType is not None
    rtx = next(
        (
            c.payloadType
            for c in video.rtp.codecs
            if c.mimeType.lower() == "video/rtx" and c.parameters.get("apt") == codec.payloadType
        ),
        None,
    )
    rids: tuple[str, ...] = ()
    section = next(s for s in _sections(answer_sdp)[1:] if s[0].startswith("m=video"))
    for line in section:
        if line.startswith("a=simulcast:recv "):
            listed = line.split()[1].replace(",", ";").split(";")
            rids = tuple(rid for rid in listed if rid and not rid.startswith("~"))
    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=e.id, uri=e.uri)
                for e in video.rtp.headerExtensions
            ]
        )
    )
    return _Negotiated(codec.payloadType, rtx, video.rtp.muxId, rids, extensions)


class _IdleTrack(MediaStreamTrack):
    """A track whose ``recv`` never returns: aiortc's own sender then sends no RTP."""

    kind = "video"

    async def recv(self) -> Any:
        await asyncio.Future()


class SimulcastPublisher:
    """A Chromium-like RID simulcast publisher (see the module's docstring).

    ``rid_packets``: how many packets of each SSRC carry the RID (``None``: every one);
    ``keyframe_all_layers``: a keyframe request on one layer makes every active layer send
    one (Chromium), else only that layer; ``follow_remb``: turn off the top layers a REMB
    has no room for; ``source``: ``LiveVp8Source`` by default.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        layers: Sequence[LayerSpec] = SMALL_LAYERS,
        *,
        fps: int = 30,
        audio: bool = True,
        rid_packets: int | None = CHROMIUM_RID_PACKETS,
        keyframe_all_layers: bool = True,
        follow_remb: bool = False,
        source: Vp8Source | None = None,
    ) -> None:
        self.pc = RTCPeerConnection(client_configuration())
        self.specs = tuple(layers)
        self.fps = fps
        self.rid_packets = rid_packets
        self.keyframe_all_layers = keyframe_all_layers
        self.follow_remb = follow_remb
        self.source: Vp8Source = source or LiveVp8Source(self.specs, fps)
        self._audio = ToneAudioTrack() if audio else None
        self._video: RTCRtpTransceiver | None = None
        self._negotiated: _Negotiated | None = None
        self.layers: dict[str, LayerState] = {}
        self.remb_bitrate: int | None = None  # the last REMB's estimate, bit/s
        self.remb_at: float | None = None  # when it arrived (time.monotonic)
        self.offer_sdp = ""
        self._task: asyncio.Task[None] | None = None

    @property
    def simulcast(self) -> bool:
        """Whether the answer took simulcast (else one layer is sent, without RID)."""
        return bool(self._negotiated and self._negotiated.rids)

    @property
    def sending_rids(self) -> list[str]:
        return [rid for rid, layer in self.layers.items() if layer.sending]

    @property
    def audio_sender(self) -> RTCRtpSender | None:
        """aiortc's sender of the tone, if there is one."""
        return next((s for s in self.pc.getSenders() if s.kind == "audio"), None)

    def layer(self, rid: str) -> LayerState:
        return self.layers[rid]

    async def create_offer(self) -> str:
        if self._audio is not None:
            self.pc.addTransceiver(self._audio, direction="sendonly")
        self._video = self.pc.addTransceiver(_IdleTrack(), direction="sendonly")
        self._video.setCodecPreferences(
            [
                c
                for c in RTCRtpSender.getCapabilities("video").codecs
                if c.mimeType in ("video/VP8", "video/rtx")
            ]
        )
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.offer_sdp = munge_offer(str(self.pc.localDescription.sdp), self.specs)
        return self.offer_sdp

    async def accept_answer(self, answer_sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        negotiated = _negotiated(answer_sdp)
        self._negotiated = negotiated
        by_rid = {spec.rid: (i, spec) for i, spec in enumerate(self.specs)}
        chosen = [by_rid[rid] for rid in negotiated.rids if rid in by_rid] or [(0, self.specs[0])]
        self._indexes = {spec.rid: i for i, spec in chosen}
        for _, spec in sorted(chosen, key=lambda item: item[1].bitrate):
            self.layers[spec.rid] = LayerState(
                spec=spec,
                ssrc=random.getrandbits(32),
                rtx_ssrc=random.getrandbits(32),
                sequence_number=random.getrandbits(15),
                rtx_sequence_number=random.getrandbits(15),
                timestamp_origin=random.getrandbits(32),
                picture_id=random.getrandbits(15),
            )
        assert self._video is not None
        transport = self._video.sender.transport
        ssrcs = [s for layer in self.layers.values() for s in (layer.ssrc, layer.rtx_ssrc)]
        aiortc_hooks.route_rtcp_about(transport, ssrcs, self._on_rtcp)
        self._task = asyncio.ensure_future(self._run())

    async def wait_connected(self, within: float = 10.0) -> bool:
        deadline = time.monotonic() + within
        while self.pc.connectionState != "connected":
            if time.monotonic() > deadline or self.pc.connectionState in ("failed", "closed"):
                return False
            await asyncio.sleep(0.05)
        return True

    def set_layer_active(self, rid: str, active: bool) -> None:
        """Stop sending a layer (its SSRC falls silent, as for ``active: false`` in
        ``setParameters``), or start it again with a keyframe."""
        layer = self.layers[rid]
        if active and not layer.active:
            layer.keyframe_wanted = True
        layer.active = active

    def request_keyframe(self, rid: str | None = None) -> None:
        """Make the next frame of ``rid`` (every layer: ``None``) a keyframe."""
        for layer in self.layers.values():
            if rid is None or layer.rid == rid:
                layer.keyframe_wanted = True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.pc.close()

    # sending

    async def _run(self) -> None:
        assert self._video is not None
        assert self._negotiated is not None
        transport = self._video.sender.transport
        while transport.state != "connected":
            if transport.state in ("closed", "failed"):
                return
            await asyncio.sleep(0.02)
        loop = asyncio.get_running_loop()
        start = loop.time()
        frame = 0
        while True:
            capture = round(frame * VIDEO_CLOCK_RATE / self.fps)
            due = [layer for layer in self.layers.values() if layer.sending]
            wanted = [(self._indexes[layer.rid], layer.keyframe_wanted) for layer in due]
            for layer in due:
                layer.keyframe_wanted = False
            encoded = await self.source.frames(wanted) if wanted else []
            try:
                for layer, payloads, (_, keyframe) in zip(due, encoded, wanted, strict=True):
                    await self._send_frame(transport, layer, payloads, capture, keyframe)
            except ConnectionError:
                return
            # a late frame is skipped, not sent in a burst: the capture clock goes on
            frame = max(frame + 1, int((loop.time() - start) * self.fps))
            await asyncio.sleep(max(0.0, start + frame / self.fps - loop.time()))

    async def _send_frame(
        self,
        transport: Any,
        layer: LayerState,
        payloads: list[bytes],
        capture: int,
        keyframe: bool,
    ) -> None:
        assert self._negotiated is not None
        negotiated = self._negotiated
        timestamp = (layer.timestamp_origin + capture) & 0xFFFFFFFF
        payloads = _with_picture_id(payloads, layer.picture_id)
        layer.picture_id = (layer.picture_id + 1) & 0x7FFF
        for i, payload in enumerate(payloads):
            packet = RtpPacket(
                payload_type=negotiated.payload_type,
                marker=int(i == len(payloads) - 1),
                sequence_number=layer.sequence_number,
                timestamp=timestamp,
                ssrc=layer.ssrc,
                payload=payload,
            )
            layer.sequence_number = (layer.sequence_number + 1) & 0xFFFF
            packet.extensions.mid = negotiated.mid
            if self.simulcast and (
                self.rid_packets is None or layer.rid_packets_sent < self.rid_packets
            ):
                packet.extensions.rtp_stream_id = layer.rid
                layer.rid_packets_sent += 1
            packet.extensions.abs_send_time = (clock.current_ntp_time() >> 14) & 0x00FFFFFF
            layer.history[packet.sequence_number] = packet
            if len(layer.history) > NACK_HISTORY:
                layer.history.popitem(last=False)
            data = packet.serialize(negotiated.extensions)
            await aiortc_hooks.send_rtp(transport, data)
            layer.packets_sent += 1
            layer.bytes_sent += len(payload)
        layer.frames_sent += 1
        layer.keyframes_sent += keyframe

    async def _retransmit(self, transport: Any, layer: LayerState, sequence_number: int) -> None:
        assert self._negotiated is not None
        original = layer.history.get(sequence_number)
        if original is None:
            return
        packet = original
        if self._negotiated.rtx_payload_type is not None:
            packet = RtpPacket(
                payload_type=self._negotiated.rtx_payload_type,
                marker=original.marker,
                sequence_number=layer.rtx_sequence_number,
                timestamp=original.timestamp,
                ssrc=layer.rtx_ssrc,
                payload=struct.pack("!H", original.sequence_number) + original.payload,
            )
            layer.rtx_sequence_number = (layer.rtx_sequence_number + 1) & 0xFFFF
            packet.extensions = HeaderExtensions(mid=original.extensions.mid)
            if self.simulcast and (
                self.rid_packets is None or layer.rtx_rid_packets_sent < self.rid_packets
            ):
                packet.extensions.repaired_rtp_stream_id = layer.rid
                layer.rtx_rid_packets_sent += 1
        packet.extensions.abs_send_time = (clock.current_ntp_time() >> 14) & 0x00FFFFFF
        with contextlib.suppress(ConnectionError):
            await aiortc_hooks.send_rtp(transport, packet.serialize(self._negotiated.extensions))
            layer.retransmitted += 1

    # feedback

    def _layer_of(self, ssrc: int) -> LayerState | None:
        return next((layer for layer in self.layers.values() if layer.ssrc == ssrc), None)

    async def _on_rtcp(self, packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            asked = self._layer_of(packet.media_ssrc)
            if asked is None:
                return
            asked.keyframe_requests += 1
            for each in self.layers.values():
                if each is asked or self.keyframe_all_layers:
                    each.keyframe_wanted = True
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            layer = self._layer_of(packet.media_ssrc)
            if layer is None or self._video is None:
                return
            layer.nacks += 1
            for sequence_number in packet.lost:
                await self._retransmit(self._video.sender.transport, layer, sequence_number)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, _ = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            self.remb_bitrate, self.remb_at = bitrate, time.monotonic()
            if self.follow_remb:
                self._allocate(bitrate)

    def _allocate(self, bitrate: int) -> None:
        """Chromium's allocation: layers from the lowest up while their sum fits; the
        lowest always sends. A layer that comes back starts with a keyframe."""
        total = 0
        for i, layer in enumerate(self.layers.values()):  # lowest bitrate first
            total += layer.spec.bitrate
            fits = i == 0 or total <= bitrate
            if fits and not layer.fits:
                layer.keyframe_wanted = True
            layer.fits = fits
