"""What a Prometheus scrape of the SFU costs on its event loop (docs/METRICS.md):
``python -m tests.sfu.scrape_cost [viewers]``. A router with an aiortc publisher and that
many aiortc viewers (20 by default); the time to add up the counters
(``sfu.counters.totals``) and to build every SFU metric family from them, per down track."""

from __future__ import annotations

import asyncio
import os
import sys
import time


async def main(viewer_count: int) -> None:
    from sfu import Router, RouterOptions, counters
    from signaling.gateway import metrics
    from testpeers import TestClients

    router = Router(RouterOptions(stats_interval_seconds=0))
    clients = TestClients()
    try:
        await clients.publish(router)
        viewers = [(await clients.subscribe(router))[0] for _ in range(viewer_count)]
        for viewer in viewers:
            await viewer.wait_for_frames(video=10, within=30)
        tracks = sum(len(v.down_tracks) for v in router.viewers)
        rounds = 200
        started = time.perf_counter()
        for _ in range(rounds):
            counters.totals([router])
        totals = (time.perf_counter() - started) / rounds
        started = time.perf_counter()
        for _ in range(rounds):
            list(metrics.sfu_families([router]))
        families = (time.perf_counter() - started) / rounds
        print(
            f"{tracks} down tracks: totals {totals * 1e6:.0f} µs "
            f"({totals / tracks * 1e6:.1f} µs a track); every SFU family "
            f"{families * 1e6:.0f} µs ({families / tracks * 1e6:.1f} µs a track)"
        )
    finally:
        await clients.close()
        await router.close()


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "onair.settings.test")
    import django

    django.setup()
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
