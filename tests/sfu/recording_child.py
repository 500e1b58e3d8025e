"""A process that records a broadcast until it is killed, for tests of what a SIGKILL leaves
(tests/sfu/test_recording_files.py): a router, an aiortc publisher and a recording in one
process, as in the SFU. ``python -m tests.sfu.recording_child <directory> <vp8|h264>`` prints
``started <path>`` once the recording's first frame is written, then ``<seconds>`` of
recording every 0.2 s."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from sfu import RecordingSpec, RecordingStarted, Router, RouterOptions
from testpeers import TestClients


async def main(directory: Path, codec: str) -> None:
    router = Router(RouterOptions(stats_interval_seconds=0))
    clients = TestClients()
    started = asyncio.Event()

    def on_started(event: RecordingStarted) -> None:
        print("started", event.path, flush=True)
        started.set()

    router.events.on(RecordingStarted, on_started)
    await clients.publish(router, codec=codec)
    router.start_recording(RecordingSpec(recording_id="killed", directory=directory))
    await started.wait()
    while True:
        await asyncio.sleep(0.2)
        status = router.recording
        print(status.seconds if status else -1, flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
