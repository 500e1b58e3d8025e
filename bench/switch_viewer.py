"""A viewer whose link drops: how long the SFU takes to move it to a lower simulcast layer.

One recvonly aiortc viewer (``testpeers.TestViewer``, not decoding: its receivers still see
every packet, so it sends receiver reports with its loss) joins by WHEP. It sends no REMB:
aiortc's receive-side estimate starts at a few hundred kbit/s and grows 8 %/s, which would
hold it on the lowest layer for half a minute, where a browser's follows what it receives.
Its incoming RTP passes an in-process link (``testpeers.aiortc_hooks.IncomingShaper``: a
rate, a 200 ms queue, tail drop, as tbf; this kernel has no netem, and namespaces would cost
the bench its isolation). The width in each VP8 keyframe it receives says which layer it is
on.

It prints ``{"width": W}`` once a keyframe of the top layer (``--top-width``) arrived, or
the last width seen after 20 s, then answers JSON lines: ``{"op": "drop", "bps": R,
"within": S}`` limits the link to R bit/s and answers ``{"switch_ms": ..., "width": ...}``
when the first keyframe of a narrower picture arrives (``switch_ms`` null after S seconds);
``{"op": "lift", "within": S}`` lifts the limit and answers ``{"up_ms": ..., "width":
...}`` when a keyframe of the top width arrives again.

    python -m bench.switch_viewer --url http://127.0.0.1:PORT --top-width 1280
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any

from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtp import RtpPacket

from bench import http
from sfu import aiortc_adapter
from testpeers import TestViewer, aiortc_hooks

_VP8_START_CODE = b"\x9d\x01\x2a"


def keyframe_width(payload: bytes) -> int | None:
    """The picture width of a VP8 keyframe's first RTP payload (RFC 6386 9.1), else None."""
    try:
        descriptor, data = VpxPayloadDescriptor.parse(payload)
    except ValueError:
        return None
    if not descriptor.partition_start or descriptor.partition_id or len(data) < 10:
        return None
    if data[0] & 1 or data[3:6] != _VP8_START_CODE:
        return None
    return int.from_bytes(data[6:8], "little") & 0x3FFF


class SwitchWatcher:
    def __init__(self) -> None:
        self.width: int | None = None
        self.changed = asyncio.Event()

    def on_packet(self, packet: RtpPacket) -> None:
        width = keyframe_width(packet.payload)
        if width is not None:
            self.width = width
            self.changed.set()

    async def until(self, condition: Any, within: float) -> float | None:
        """Milliseconds until a keyframe satisfies ``condition(width)``; None after ``within``."""
        started = time.monotonic()
        deadline = started + within
        while not (self.width is not None and condition(self.width)):
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                return None
        return (time.monotonic() - started) * 1000


async def _commands() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def watch(url: str, top: int) -> None:
    viewer = TestViewer(decode=False)
    watcher = SwitchWatcher()
    viewer.on_video_packet = watcher.on_packet
    shaper = aiortc_hooks.IncomingShaper()
    try:
        offer = await viewer.create_offer()
        response = await http.request("POST", f"{url}/whep", offer.encode(), "application/sdp")
        if response.status != 201:
            raise RuntimeError(f"WHEP: HTTP {response.status}: {response.body[:200]!r}")
        transports = {t.receiver.transport for t in viewer.pc.getTransceivers()}
        for transport in transports:
            aiortc_hooks.shape_incoming_rtp(transport, shaper)
        await viewer.accept_answer(response.body.decode())
        for transceiver in viewer.pc.getTransceivers():
            if transceiver.kind == "video":
                aiortc_adapter.drop_bitrate_estimator(transceiver.receiver)
        await watcher.until(lambda width: width == top, 20.0)
        _say({"width": watcher.width})
        reader = await _commands()
        while line := await reader.readline():
            command = json.loads(line)
            if command["op"] == "drop":
                shaper.rate = float(command["bps"])
                took = await watcher.until(lambda width: width < top, command["within"])
                _say({"switch_ms": took, "width": watcher.width, "dropped": shaper.dropped})
            elif command["op"] == "lift":
                shaper.rate = None
                took = await watcher.until(lambda width: width == top, command["within"])
                _say({"up_ms": took, "width": watcher.width})
    finally:
        await viewer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--top-width", type=int, required=True, help="the top layer's width")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(watch(args.url, args.top_width))


if __name__ == "__main__":
    main()
