"""The bench's publisher: passes the FFmpeg source's RTP, already encoded, on to the server.

FFmpeg's WHIP muxer sends H.264 only, so for the VP8 + Opus source the bench publishes
through aiortc instead (``--url``): a sendonly peer whose tracks never produce frames
(nothing is encoded here) and whose DTLS transport carries FFmpeg's packets, with the SSRC
and payload type rewritten to what was negotiated. These touches of aiortc's private API
are bench-only. For Janus (``--rtp-to``) the packets go on as plain RTP to its mountpoint.

Either way every packet passes here, and its send time is logged by the packet's last
bytes, which no forwarder changes: the other end of the forwarding-latency measurement.
Prints the ports to send RTP to as JSON, then answers ``{"op": "sent"}`` (the send log) and
``{"op": "count"}`` (packets sent so far: the rate the viewers' rates are compared with) on
stdin.

    python -m bench.publisher --url http://127.0.0.1:PORT
    python -m bench.publisher --rtp-to VIDEO_PORT,AUDIO_PORT
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import struct
import sys
import time
from collections import OrderedDict
from functools import partial
from typing import Any, cast

from aiortc import MediaStreamTrack, RTCRtpSender, RTCRtpTransceiver, RTCSessionDescription
from aiortc.sdp import SessionDescription

from bench import http
from bench.viewer import new_peer_connection, trace_key


class _IdleTrack(MediaStreamTrack):
    """A track whose ``recv`` never returns, so aiortc's own sender loop never encodes."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self) -> Any:
        await asyncio.Future()


SEND_LOG_SIZE = 4096  # ≈ 20 s of the source


class SendLog:
    """When each of the last packets was sent, by ``trace_key``."""

    def __init__(self) -> None:
        self._sent: OrderedDict[bytes, float] = OrderedDict()
        self._ambiguous: set[bytes] = set()
        self.packets = 0

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
        self._sending: set[asyncio.Future[None]] = set()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
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


async def _serve_commands(log: SendLog, ports: dict[str, int]) -> None:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    sys.stdout.write(
        json.dumps({"video_port": ports["video"], "audio_port": ports["audio"]}) + "\n"
    )
    sys.stdout.flush()
    while line := await reader.readline():
        op = json.loads(line)["op"]
        if op == "sent":
            sys.stdout.write(json.dumps({"sent": log.dump()}) + "\n")
        elif op == "count":
            sys.stdout.write(json.dumps({"at": time.monotonic(), "packets": log.packets}) + "\n")
        sys.stdout.flush()


async def relay(video_port: int, audio_port: int) -> None:
    log = SendLog()
    loop = asyncio.get_running_loop()
    ports = {}
    for kind, port in (("video", video_port), ("audio", audio_port)):
        socket_transport, _ = await loop.create_datagram_endpoint(
            partial(_RtpRelay, port, log), local_addr=("127.0.0.1", 0)
        )
        ports[kind] = socket_transport.get_extra_info("sockname")[1]
    await _serve_commands(log, ports)


async def publish(url: str) -> None:
    log = SendLog()
    pc = new_peer_connection()
    video = pc.addTransceiver(_IdleTrack("video"), direction="sendonly")
    audio = pc.addTransceiver(_IdleTrack("audio"), direction="sendonly")
    _prefer(video, "video/VP8")
    _prefer(audio, "audio/opus")
    await pc.setLocalDescription(await pc.createOffer())
    response = await http.request(
        "POST", f"{url}/whip", pc.localDescription.sdp.encode(), content_type="application/sdp"
    )
    if response.status != 201:
        raise RuntimeError(f"WHIP: HTTP {response.status}: {response.body[:200]!r}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=response.body.decode(), type="answer"))
    while video.sender.transport.state != "connected":
        if pc.connectionState == "failed":
            raise RuntimeError("publisher: ICE/DTLS failed")
        await asyncio.sleep(0.05)

    answer = SessionDescription.parse(pc.remoteDescription.sdp)
    loop = asyncio.get_running_loop()
    ports = {}
    for transceiver, media in zip((video, audio), answer.media, strict=True):
        payload_type = media.rtp.codecs[0].payloadType
        assert payload_type is not None
        socket_transport, _ = await loop.create_datagram_endpoint(
            partial(_WebRtcForwarder, transceiver.sender, payload_type, log),
            local_addr=("127.0.0.1", 0),
        )
        ports[transceiver.kind] = socket_transport.get_extra_info("sockname")[1]
    try:
        await _serve_commands(log, ports)
    finally:
        await pc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="publish by WHIP-style signaling to this server")
    target.add_argument("--rtp-to", help="relay plain RTP to 127.0.0.1: VIDEO_PORT,AUDIO_PORT")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.url:
        asyncio.run(publish(args.url))
    else:
        video_port, audio_port = (int(port) for port in args.rtp_to.split(","))
        asyncio.run(relay(video_port, audio_port))


if __name__ == "__main__":
    main()
