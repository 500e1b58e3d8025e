"""Publish a test pattern and a tone to N in-process viewers through the SFU.

    python -m testpeers.demo --viewers 5 --seconds 10 --codec vp8

Every peer is an aiortc client in this process, connected over the machine's own
network address; the SFU forwards RTP without decoding. Prints progress every
second and the frames each viewer received at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from sfu.router import Router, RouterOptions
from testpeers import TestClients, TestViewer


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m testpeers.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--viewers", type=int, default=3, help="number of viewers (default 3)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to run (default 10)")
    parser.add_argument("--codec", choices=("vp8", "h264"), default="vp8")
    parser.add_argument("--fps", type=int, default=30, help="test pattern frame rate (default 30)")
    parser.add_argument(
        "--no-decode",
        action="store_true",
        help="viewers count packets instead of decoding (cheap, for many viewers)",
    )
    return parser.parse_args(argv)


def _summary(viewers: list[TestViewer]) -> str:
    frames = [v.video.frames for v in viewers]
    audio = [v.audio.frames for v in viewers]
    return (
        f"video frames min/avg/max {min(frames)}/{sum(frames) / len(frames):.0f}/{max(frames)}, "
        f"audio frames min {min(audio)}"
    )


async def run(viewer_count: int, seconds: float, codec: str, fps: int, decode: bool) -> int:
    router = Router(RouterOptions(stats_interval_seconds=0))
    clients = TestClients()
    try:
        await clients.publish(router, codec=codec, fps=fps)
        viewers = [
            (await clients.subscribe(router, server_offer=i % 2 == 1, decode=decode))[0]
            for i in range(viewer_count)
        ]
        print(f"publisher ({codec}, {fps} fps) and {viewer_count} viewers connected", flush=True)
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            await asyncio.sleep(min(1.0, seconds - elapsed))
            print(f"[{time.monotonic() - started:5.1f} s] {_summary(viewers)}", flush=True)
        stats = router.stats()
        for index, viewer in enumerate(viewers):
            first = (
                f"{(viewer.video.first_frame_at - viewer.created_at) * 1000:.0f} ms"
                if viewer.video.first_frame_at is not None
                else "never"
            )
            print(
                f"viewer {index + 1}: {viewer.video.frames} video frames, "
                f"{viewer.audio.frames} audio frames, first video frame after {first}"
            )
        for producer in stats.producers:
            print(
                f"producer {producer.kind} {producer.mime_type}: {producer.packets_received} "
                f"packets in, {producer.keyframe_requests_sent} keyframe requests upstream"
            )
        sent = sum(t.packets_sent for t in stats.down_tracks)
        print(f"down tracks: {sent} packets forwarded")
        return 0 if all(v.video.frames > 0 and v.audio.frames > 0 for v in viewers) else 1
    finally:
        await clients.close()
        await router.close()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    return asyncio.run(run(args.viewers, args.seconds, args.codec, args.fps, not args.no_decode))


if __name__ == "__main__":
    sys.exit(main())
