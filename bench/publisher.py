"""The bench's WebRTC publisher: forwards the FFmpeg source's RTP, already encoded, over aiortc.

FFmpeg's WHIP muxer sends H.264 only, so for the VP8 + Opus source the bench publishes
through aiortc instead: a sendonly peer whose tracks never produce frames (nothing is
encoded here) and whose DTLS transport carries FFmpeg's packets, with the SSRC and payload
type rewritten to what was negotiated. These touches of aiortc's private API are bench-only.

    python -m bench.publisher --url http://127.0.0.1:PORT   # prints the RTP ports as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import struct
import sys
from functools import partial
from typing import Any

from aiortc import MediaStreamTrack, RTCRtpSender, RTCRtpTransceiver, RTCSessionDescription
from aiortc.sdp import SessionDescription

from bench import http
from bench.viewer import new_peer_connection


class _IdleTrack(MediaStreamTrack):
    """A track whose ``recv`` never returns, so aiortc's own sender loop never encodes."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self) -> Any:
        await asyncio.Future()


class _RtpForwarder(asyncio.DatagramProtocol):
    def __init__(self, sender: RTCRtpSender, payload_type: int) -> None:
        self._sender = sender
        self._payload_type = payload_type
        self._ssrc: int = sender._ssrc
        self._sending: set[asyncio.Future[None]] = set()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        packet = bytearray(data)
        packet[1] = (packet[1] & 0x80) | self._payload_type
        struct.pack_into("!I", packet, 8, self._ssrc)
        task = asyncio.ensure_future(self._send(bytes(packet)))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, packet: bytes) -> None:
        with contextlib.suppress(ConnectionError):
            await self._sender.transport._send_rtp(packet)


def _prefer(transceiver: RTCRtpTransceiver, mime_type: str) -> None:
    codecs = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    transceiver.setCodecPreferences([c for c in codecs if c.mimeType == mime_type])


async def publish(url: str) -> None:
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
            partial(_RtpForwarder, transceiver.sender, payload_type), local_addr=("127.0.0.1", 0)
        )
        ports[transceiver.kind] = socket_transport.get_extra_info("sockname")[1]
    sys.stdout.write(
        json.dumps({"video_port": ports["video"], "audio_port": ports["audio"]}) + "\n"
    )
    sys.stdout.flush()
    try:
        await asyncio.Future()
    finally:
        await pc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(publish(args.url))


if __name__ == "__main__":
    main()
