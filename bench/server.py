"""Servers under test that speak the bench's WHIP/WHEP-shaped signaling.

``POST /whip`` (publisher's SDP offer) and ``POST /whep`` (a viewer's recvonly offer)
each return ``201`` with the SDP answer; ``POST /fanout`` returns, for OnAir, how long each
forwarding of a batch to every viewer and each garbage collection took (see ``FanoutLog``),
``POST /stats`` every viewer track's counters (``sfu.DownTrackStats``), and ``POST /record``
(OnAir) starts or stops recording the stream (``bench.recording``).
Backends:

- ``mediarelay``: the naive aiortc SFU: the publisher's tracks are decoded once, and
  ``MediaRelay`` hands the frames to one encoder per viewer.
- ``onair``: OnAir's forwarding SFU (``sfu.Router``), packets forwarded without decoding.

    python -m bench.server --backend mediarelay --port PORT
    python -m bench.server --backend onair --port PORT --unlimited-retransmission
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import gc
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from aiortc import MediaStreamTrack, RTCSessionDescription
from aiortc.contrib.media import MediaBlackhole, MediaRelay

from bench import http, native_forwarding, udp_mux_port
from bench.viewer import new_peer_connection


class Backend(Protocol):
    async def publish(self, offer: str) -> str: ...

    async def subscribe(self, offer: str) -> str: ...


RECORD_TIMEOUT = 8.0  # seconds a recording may take to open (a keyframe) or to close
FANOUT_LOG_SIZE = 20_000  # flushes: ≈ 4 minutes of audio and video


class FanoutLog:
    """How long each ``Producer.flush`` took: one batch of a track forwarded to every viewer.

    Forwarding on one core is serial, so the last viewer of a batch waits for all the others:
    these durations are what the forwarding latency at N viewers is made of. Timed around the
    call in this process only (two clock reads per batch, ≈ 80 batches per second).
    """

    def __init__(self) -> None:
        self.entries: collections.deque[tuple[float, str, int, float]] = collections.deque(
            maxlen=FANOUT_LOG_SIZE
        )

    def wrap(self, flush: Callable[[Any], None]) -> Callable[[Any], None]:
        entries = self.entries
        clock = time.monotonic

        def timed_flush(producer: Any) -> None:
            packets = producer.held_packets
            started = clock()
            flush(producer)
            if packets:
                entries.append((started, producer.kind, packets, clock() - started))

        return timed_flush

    def watch_gc(self) -> Callable[[str, dict[str, int]], None]:
        """Also log each garbage collection, as kind ``gc`` with its generation for packets:
        it stops every viewer's forwarding while it runs. Returns the callback installed in
        ``gc.callbacks``."""
        entries = self.entries
        clock = time.monotonic
        started = 0.0

        def on_gc(phase: str, info: dict[str, int]) -> None:
            nonlocal started
            if phase == "start":
                started = clock()
            else:
                entries.append((started, "gc", info["generation"], clock() - started))

        gc.callbacks.append(on_gc)
        return on_gc

    def since(self, at: float) -> list[tuple[float, str, int, float]]:
        """(start, kind, packets, seconds) of each flush, and (start, "gc", generation,
        seconds) of each collection, that started at ``at`` or later."""
        return [entry for entry in self.entries if entry[0] >= at]


class MediaRelayBackend:
    def __init__(self) -> None:
        self._relay = MediaRelay()
        self._tracks: dict[str, MediaStreamTrack] = {}
        # Drains the decoded frames while no viewer does, so N = 0 already pays for decoding.
        self._sink = MediaBlackhole()
        self._peers: list[object] = []

    async def publish(self, offer: str) -> str:
        pc = new_peer_connection()
        self._peers.append(pc)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tracks[track.kind] = track
            self._sink.addTrack(self._relay.subscribe(track, buffered=False))

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self._sink.start()
        return str(pc.localDescription.sdp)

    async def subscribe(self, offer: str) -> str:
        pc = new_peer_connection()
        self._peers.append(pc)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        for kind in ("video", "audio"):
            if kind in self._tracks:
                pc.addTrack(self._relay.subscribe(self._tracks[kind], buffered=False))
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)


class OnAirBackend:
    """OnAir's SFU as the gateway drives it: one router, WHIP-style publisher, WHEP viewers.
    With ``unlimited_retransmission``, every NACKed packet in the cache is resent, as before
    the retransmission budget (``bench.nack`` measures the difference)."""

    def __init__(self, *, unlimited_retransmission: bool = False) -> None:
        import sfu
        from sfu.heap import freeze_startup_objects
        from sfu.ice_config import HostNetwork
        from sfu.producer import Producer

        options = sfu.RouterOptions(
            native_forwarding=native_forwarding(),
            host_network=HostNetwork(udp_mux_port=udp_mux_port()),
        )
        if unlimited_retransmission:
            endless = 10**9
            options = dataclasses.replace(
                options,
                retransmission=sfu.RetransmissionLimits(
                    burst_packets=endless,
                    burst_bytes=endless,
                    packets_per_second=endless,
                    bytes_per_second=endless,
                    per_nack=endless,
                    min_interval_seconds=0.0,
                    max_resends=endless,
                    max_age_seconds=endless,
                ),
            )
        self._router = sfu.Router(options)
        self.fanout = FanoutLog()
        Producer.flush = self.fanout.wrap(Producer.flush)  # type: ignore[method-assign,assignment]
        self.fanout.watch_gc()
        freeze_startup_objects()  # as daphne and the SFU workers do once they have loaded

    async def publish(self, offer: str) -> str:
        session = await self._router.publish(offer)
        return session.answer_sdp

    async def subscribe(self, offer: str) -> str:
        viewer = await self._router.subscribe(offer)
        if viewer.answer_sdp is None:
            raise RuntimeError("the router did not answer the viewer's offer")
        return viewer.answer_sdp

    async def record(self, command: dict[str, Any]) -> dict[str, Any]:
        """``{"op": "start", "directory": ...}``: start a recording, answered once its file is
        open (the first keyframe came); ``{"op": "stop"}``: stop it, answered with its
        ``RecordingStopped`` once the file is closed."""
        import sfu

        loop = asyncio.get_running_loop()
        kind = sfu.RecordingStarted if command["op"] == "start" else sfu.RecordingStopped
        reported: asyncio.Future[sfu.SfuEvent] = loop.create_future()

        def on_event(event: sfu.SfuEvent) -> None:
            if not reported.done():
                reported.set_result(event)

        self._router.events.on(kind, on_event)
        try:
            if command["op"] == "start":
                spec = sfu.RecordingSpec(
                    recording_id=f"bench-{time.time_ns()}", directory=Path(command["directory"])
                )
                self._router.start_recording(spec)
            else:
                self._router.stop_recording()
            event = await asyncio.wait_for(reported, RECORD_TIMEOUT)
        finally:
            self._router.events.off(on_event)
        return dataclasses.asdict(event)

    def down_track_stats(self) -> list[dict[str, Any]]:
        return [
            dataclasses.asdict(track.stats())
            for viewer in self._router.viewers
            for track in viewer.down_tracks
        ]


def make_backend(name: str, *, unlimited_retransmission: bool = False) -> Backend:
    if name == "mediarelay":
        return MediaRelayBackend()
    if name == "onair":
        return OnAirBackend(unlimited_retransmission=unlimited_retransmission)
    raise ValueError(f"unknown backend {name!r}")


async def serve(backend_name: str, port: int, *, unlimited_retransmission: bool = False) -> None:
    backend = make_backend(backend_name, unlimited_retransmission=unlimited_retransmission)

    async def handle(path: str, body: bytes) -> http.Response:
        if path == "/whip":
            answer = await backend.publish(body.decode())
        elif path == "/whep":
            answer = await backend.subscribe(body.decode())
        elif path == "/fanout":
            fanout = getattr(backend, "fanout", None)
            if fanout is None:
                return http.Response(404, b"")
            since = float(json.loads(body or b"{}").get("since", 0.0))
            return http.Response(200, json.dumps(fanout.since(since)).encode())
        elif path == "/stats" and isinstance(backend, OnAirBackend):
            return http.Response(200, json.dumps(backend.down_track_stats()).encode())
        elif path == "/record" and isinstance(backend, OnAirBackend):
            reported = await backend.record(json.loads(body))
            return http.Response(200, json.dumps(reported).encode())
        else:
            return http.Response(404, b"")
        return http.Response(201, answer.encode(), {"Content-Type": "application/sdp"})

    server = await http.serve("127.0.0.1", port, handle)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["mediarelay", "onair"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--unlimited-retransmission",
        action="store_true",
        help="onair: resend every NACKed packet in the cache (no retransmission budget)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(
        serve(args.backend, args.port, unlimited_retransmission=args.unlimited_retransmission)
    )


if __name__ == "__main__":
    main()
