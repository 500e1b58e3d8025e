"""The bench's publishers: the FFmpeg source's RTP passed on as is, or a live VP8 encoder.

FFmpeg's WHIP muxer sends H.264 only, so for the VP8 + Opus source the bench publishes
through aiortc instead (``--url``): a sendonly peer whose tracks never produce frames
(nothing is encoded here) and whose DTLS transport carries FFmpeg's packets, with the SSRC
and payload type rewritten to what was negotiated. These touches of aiortc's private API
are bench-only. For Janus (``--rtp-to``) the packets go on as plain RTP to its mountpoint.

Either way every packet passes here, and its send time is logged by the packet's last
bytes, which no forwarder changes: the other end of the forwarding-latency measurement.
Prints the ports to send RTP to as JSON, then answers ``{"op": "sent"}`` (the send log) and
``{"op": "count"}`` (packets sent so far: the rate the viewers' rates are compared with; with
``--url`` also the video frames, by their last packets) on stdin.

A replayed file cannot answer a keyframe request, and browsers and OBS do. With ``--live``
(and ``--url``) the publisher is such a peer instead: a synthetic 640x480 30 fps picture (the
size of Chromium's fake camera), encoded as it goes by aiortc's own VP8 encoder at its default
500 kbit/s (REMB is ignored), which makes its next frame a keyframe when a PLI or FIR
arrives; the audio track stays idle. It prints ``{"ready": true}`` once connected, then
answers ``{"op": "keyframes"}``: keyframe requests received, keyframes sent, and how long each
request waited for the next keyframe to leave.

With ``--simulcast`` the publisher sends three-layer RID simulcast as Chromium does
(``testpeers.simulcast``), each layer a pre-encoded loop of the test pattern
(``bench.source.LayeredSourceSpec``), and a tone; it prints ``{"simulcast": true, ...}``
once connected, then answers ``{"op": "count"}`` (packets sent so far of the audio and the
top layer: what a viewer of the top layer is sent) and ``{"op": "layers"}`` (each layer's
packets and bytes sent, keyframes and keyframe requests, and whether it is sending).

    python -m bench.publisher --url http://127.0.0.1:PORT
    python -m bench.publisher --url http://127.0.0.1:PORT --h264     # an H.264 source's RTP
    python -m bench.publisher --url http://127.0.0.1:PORT --live
    python -m bench.publisher --url http://127.0.0.1:PORT --simulcast
    python -m bench.publisher --url http://127.0.0.1:PORT --slug demo --key sk_… --video-only
    python -m bench.publisher --rtp-to VIDEO_PORT,AUDIO_PORT
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import struct
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any, cast

from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtpPacket,
)
from aiortc.sdp import SessionDescription
from av import VideoFrame

from bench import http, source
from bench.viewer import new_peer_connection, trace_key
from sfu import aiortc_adapter
from sfu.keyframe import is_vp8_keyframe_start
from testpeers import aiortc_hooks
from testpeers.simulcast import LayerSpec, LoopedVp8Source, SimulcastPublisher


class _IdleTrack(MediaStreamTrack):
    """A track whose ``recv`` never returns, so aiortc's own sender loop never encodes."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self) -> Any:
        await asyncio.Future()


class PatternTrack(VideoStreamTrack):
    """A synthetic camera: colour bars over a fixed texture, and a box moving across them.

    The texture gives keyframes some bulk; the still parts cost the encoder next to nothing
    in between, so it stays cheap on the load core. Paced at 30 fps by aiortc.
    """

    def __init__(self, width: int = 640, height: int = 480) -> None:
        super().__init__()
        self._width, self._height = width, height
        bars = (235, 210, 170, 145, 106, 81, 41, 16)
        row = bytes(bars[x * len(bars) // width] for x in range(width))
        texture = random.Random(1).randbytes(width * (height // 4))
        self._luma = row * (height - height // 4) + texture
        self._chroma = bytes([128]) * ((width // 2) * (height // 2))
        self._box = width // 8
        self._frames = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        luma = bytearray(self._luma)
        x = (self._frames * 8) % (self._width - self._box)  # crosses the frame in ≈ 2 s
        top = (self._height - self._box) // 2
        for y in range(top, top + self._box):
            luma[y * self._width + x : y * self._width + x + self._box] = b"\xeb" * self._box
        self._frames += 1
        frame = VideoFrame(self._width, self._height, "yuv420p")
        for plane, data in zip(frame.planes, (luma, self._chroma, self._chroma), strict=True):
            plane.update(bytes(data))
        frame.pts, frame.time_base = pts, time_base
        return frame


def _is_vp8_keyframe_start(packet: bytes, ssrc: int) -> bool:
    """The first RTP packet of a VP8 keyframe of ``ssrc`` (not a retransmission, which has
    its own SSRC), as the SFU tells them."""
    if len(packet) < 12 or struct.unpack_from("!I", packet, 8)[0] != ssrc:
        return False
    try:
        return is_vp8_keyframe_start(RtpPacket.parse(packet).payload)
    except Exception:  # counting must never stop the sender
        return False


class KeyframeLog:
    """Keyframe requests (PLI/FIR) reaching the live publisher, and the keyframes it sends."""

    def __init__(self, ssrc: int) -> None:
        self._ssrc = ssrc
        self.requests = 0
        self.keyframes = 0
        self._pending: float | None = None  # when the oldest unanswered request arrived
        self.answer_ms: list[float] = []  # request → the next keyframe's first packet sent

    def request(self) -> None:
        self.requests += 1
        if self._pending is None:
            self._pending = time.monotonic()

    def sent(self, packet: bytes) -> None:
        if not _is_vp8_keyframe_start(packet, self._ssrc):
            return
        self.keyframes += 1
        if self._pending is not None:
            self.answer_ms.append((time.monotonic() - self._pending) * 1000)
            self._pending = None

    def report(self) -> dict[str, Any]:
        return {"requests": self.requests, "keyframes": self.keyframes, "answer_ms": self.answer_ms}


SEND_LOG_SIZE = 4096  # ≈ 20 s of the source


class SendLog:
    """When each of the last packets was sent, by ``trace_key``."""

    def __init__(self) -> None:
        self._sent: OrderedDict[bytes, float] = OrderedDict()
        self._ambiguous: set[bytes] = set()
        self.packets = 0
        self.video_frames = 0  # counted where the frame's packets come in (``--url`` only)

    def add(self, packet: bytes) -> None:
        self.packets += 1
        key = trace_key(packet)
        if key is None:
            return
        if key in self._sent:
            self._ambiguous.add(key)
        self._sent[key] = time.monotonic()
        if len(self._sent) > SEND_LOG_SIZE:
            self._sent.popitem(last=False)

    def dump(self) -> list[tuple[str, float]]:
        return [(k.hex(), at) for k, at in self._sent.items() if k not in self._ambiguous]


class _WebRtcForwarder(asyncio.DatagramProtocol):
    def __init__(self, sender: RTCRtpSender, payload_type: int, log: SendLog) -> None:
        self._sender = sender
        self._payload_type = payload_type
        self._ssrc: int = sender._ssrc
        self._log = log
        self._video = sender.kind == "video"
        self._sending: set[asyncio.Future[None]] = set()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self._video and len(data) > 1 and data[1] & 0x80:  # a frame's last packet
            self._log.video_frames += 1
        packet = bytearray(data)
        packet[1] = (packet[1] & 0x80) | self._payload_type
        struct.pack_into("!I", packet, 8, self._ssrc)
        task = asyncio.ensure_future(self._send(bytes(packet)))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, packet: bytes) -> None:
        self._log.add(packet)
        with contextlib.suppress(ConnectionError):
            await self._sender.transport._send_rtp(packet)


class _RtpRelay(asyncio.DatagramProtocol):
    def __init__(self, port: int, log: SendLog) -> None:
        self._to = ("127.0.0.1", port)
        self._log = log
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        assert self._transport is not None
        self._log.add(data)
        self._transport.sendto(data, self._to)


def _prefer(transceiver: RTCRtpTransceiver, mime_type: str) -> None:
    codecs = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    transceiver.setCodecPreferences([c for c in codecs if c.mimeType == mime_type])


async def _serve_commands(
    hello: dict[str, Any], answers: dict[str, Callable[[], dict[str, Any]]]
) -> None:
    """Print ``hello``, then answer each ``{"op": NAME}`` line on stdin with ``answers[NAME]``."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    sys.stdout.write(json.dumps(hello) + "\n")
    sys.stdout.flush()
    while line := await reader.readline():
        sys.stdout.write(json.dumps(answers[json.loads(line)["op"]]()) + "\n")
        sys.stdout.flush()


async def _serve_send_log(log: SendLog, ports: dict[str, int]) -> None:
    await _serve_commands(
        {"video_port": ports["video"], "audio_port": ports["audio"]},
        {
            "sent": lambda: {"sent": log.dump()},
            "count": lambda: {
                "at": time.monotonic(),
                "packets": log.packets,
                "video_frames": log.video_frames,
            },
        },
    )


async def relay(video_port: int, audio_port: int) -> None:
    log = SendLog()
    loop = asyncio.get_running_loop()
    ports = {}
    for kind, port in (("video", video_port), ("audio", audio_port)):
        socket_transport, _ = await loop.create_datagram_endpoint(
            partial(_RtpRelay, port, log), local_addr=("127.0.0.1", 0)
        )
        ports[kind] = socket_transport.get_extra_info("sockname")[1]
    await _serve_send_log(log, ports)


@dataclasses.dataclass(frozen=True)
class Whip:
    """Where to publish: ``url``/whip (the bench's servers), or OnAir's own
    ``url``/whip/<slug> with the stream key as a bearer token."""

    url: str
    slug: str | None = None
    key: str | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.url}/whip" + (f"/{self.slug}" if self.slug else "")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}


async def _connect(
    url: str | Whip, video_track: MediaStreamTrack, video_mime_type: str = "video/VP8"
) -> tuple[RTCPeerConnection, RTCRtpTransceiver, RTCRtpTransceiver]:
    """Publish video (VP8 unless told) and idle Opus audio by WHIP-style signaling; return
    once connected."""
    whip = url if isinstance(url, Whip) else Whip(url)
    pc = new_peer_connection()
    video = pc.addTransceiver(video_track, direction="sendonly")
    audio = pc.addTransceiver(_IdleTrack("audio"), direction="sendonly")
    _prefer(video, video_mime_type)
    _prefer(audio, "audio/opus")
    await pc.setLocalDescription(await pc.createOffer())
    response = await http.request(
        "POST",
        whip.endpoint,
        pc.localDescription.sdp.encode(),
        content_type="application/sdp",
        headers=whip.headers,
    )
    if response.status != 201:
        raise RuntimeError(f"WHIP: HTTP {response.status}: {response.body[:200]!r}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=response.body.decode(), type="answer"))
    while video.sender.transport.state != "connected":
        if pc.connectionState == "failed":
            raise RuntimeError("publisher: ICE/DTLS failed")
        await asyncio.sleep(0.05)
    return pc, video, audio


async def publish(
    url: str | Whip, video_mime_type: str = "video/VP8", *, video_only: bool = False
) -> None:
    """Forward the replay's RTP; ``video_only``: its audio is dropped here (a source of few
    packets per viewer, for the flash crowd)."""
    log = SendLog()
    pc, video, audio = await _connect(url, _IdleTrack("video"), video_mime_type)
    answer = SessionDescription.parse(pc.remoteDescription.sdp)
    loop = asyncio.get_running_loop()
    ports = {}
    for transceiver, media in zip((video, audio), answer.media, strict=True):
        payload_type = media.rtp.codecs[0].payloadType
        assert payload_type is not None
        protocol: Callable[[], asyncio.DatagramProtocol] = partial(
            _WebRtcForwarder, transceiver.sender, payload_type, log
        )
        if video_only and transceiver.kind == "audio":
            protocol = asyncio.DatagramProtocol
        socket_transport, _ = await loop.create_datagram_endpoint(
            protocol, local_addr=("127.0.0.1", 0)
        )
        ports[transceiver.kind] = socket_transport.get_extra_info("sockname")[1]
    try:
        await _serve_send_log(log, ports)
    finally:
        await pc.close()


async def publish_live(url: str) -> None:
    """Publish ``PatternTrack`` encoded live, logging keyframe requests and keyframes."""
    pc, video, _ = await _connect(url, PatternTrack())
    sender, dtls = video.sender, video.sender.transport
    log = KeyframeLog(sender._ssrc)

    async def on_feedback(packet: AnyRtcpPacket) -> bool:
        """True for feedback aiortc must not see."""
        if isinstance(packet, RtcpPsfbPacket):
            if packet.fmt == RTCP_PSFB_APP:
                # REMB: aiortc restarts its encoder, with a keyframe, whenever the estimate
                # moves by 10 % (browsers change their rate without one); at a fixed
                # bitrate, keyframes answer requests only.
                return True
            if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                log.request()  # aiortc makes the next frame a keyframe
        return False

    aiortc_adapter.intercept_sender_rtcp(sender, on_feedback)
    # A bench-only touch of aiortc's private API, wrapping aiortc's own send path.
    send_rtp = dtls._send_rtp

    async def send_rtp_packet(data: bytes) -> None:
        log.sent(data)
        await send_rtp(data)

    dtls._send_rtp = send_rtp_packet  # type: ignore[method-assign]
    try:
        await _serve_commands({"ready": True}, {"keyframes": log.report})
    finally:
        await pc.close()


SIMULCAST_RIDS = ("q", "h", "f")


def simulcast_layers(spec: source.LayeredSourceSpec) -> tuple[LayerSpec, ...]:
    return tuple(
        LayerSpec(rid, width, height, kbps * 1000)
        for rid, (width, height, kbps) in zip(SIMULCAST_RIDS, spec.layers, strict=True)
    )


async def publish_simulcast(url: str) -> None:
    """Publish ``source.LayeredSourceSpec``'s layers (pre-encoded, looped) as RID
    simulcast, and a tone."""
    spec = source.LayeredSourceSpec()
    layers = simulcast_layers(spec)
    publisher = SimulcastPublisher(
        layers, fps=spec.fps, source=LoopedVp8Source.from_frames(source.encoded_layers(spec))
    )
    offer = await publisher.create_offer()
    response = await http.request("POST", f"{url}/whip", offer.encode(), "application/sdp")
    if response.status != 201:
        raise RuntimeError(f"WHIP: HTTP {response.status}: {response.body[:200]!r}")
    await publisher.accept_answer(response.body.decode())
    if not await publisher.wait_connected():
        raise RuntimeError("simulcast publisher: ICE/DTLS failed")
    audio = publisher.audio_sender
    top = layers[-1].rid

    def audio_packets() -> int:
        return aiortc_hooks.sender_report_state(audio)[3] if audio is not None else 0

    def count() -> dict[str, Any]:
        sent = publisher.layers[top].packets_sent if top in publisher.layers else 0
        return {"at": time.monotonic(), "packets": audio_packets() + sent}

    def layer_counts() -> dict[str, Any]:
        return {
            "at": time.monotonic(),
            "audio_packets": audio_packets(),
            "layers": {
                rid: {
                    "packets": layer.packets_sent,
                    "bytes": layer.bytes_sent,
                    "keyframes": layer.keyframes_sent,
                    "keyframe_requests": layer.keyframe_requests,
                    "sending": layer.sending,
                }
                for rid, layer in publisher.layers.items()
            },
        }

    hello = {
        "simulcast": publisher.simulcast,
        "layers": [dataclasses.asdict(layer) for layer in layers],
    }
    try:
        await _serve_commands(hello, {"count": count, "layers": layer_counts})
    finally:
        await publisher.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="publish by WHIP-style signaling to this server")
    target.add_argument("--rtp-to", help="relay plain RTP to 127.0.0.1: VIDEO_PORT,AUDIO_PORT")
    parser.add_argument(
        "--live", action="store_true", help="with --url: encode a synthetic picture live instead"
    )
    parser.add_argument(
        "--simulcast", action="store_true", help="with --url: three-layer RID simulcast instead"
    )
    parser.add_argument("--slug", help="with --url: OnAir's own WHIP endpoint, /whip/SLUG")
    parser.add_argument("--key", help="with --slug: the stream key (a bearer token)")
    parser.add_argument(
        "--video-only", action="store_true", help="with --url: drop the replay's audio"
    )
    parser.add_argument(
        "--h264",
        action="store_true",
        help="with --url: negotiate H.264 for the replayed video (a source encoded in H.264)",
    )
    args = parser.parse_args()
    if (args.live or args.simulcast) and not args.url:
        parser.error("--live and --simulcast need --url")
    logging.basicConfig(level=logging.WARNING)
    if args.simulcast:
        asyncio.run(publish_simulcast(args.url))
    elif args.live:
        asyncio.run(publish_live(args.url))
    elif args.url:
        whip = Whip(args.url, args.slug, args.key)
        mime_type = "video/H264" if args.h264 else "video/VP8"
        asyncio.run(publish(whip, mime_type, video_only=args.video_only))
    else:
        video_port, audio_port = (int(port) for port in args.rtp_to.split(","))
        asyncio.run(relay(video_port, audio_port))


if __name__ == "__main__":
    main()
