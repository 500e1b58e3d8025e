"""``python -m tests.e2e.measure_publisher_away [--runs N]``: how long after the studio tab
closes the watch page shows "The broadcaster is reconnecting…", over N runs (real daphne,
real headless Chromium, as ``test_publisher_away`` does); prints each run and the median."""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from playwright.sync_api import BrowserContext, expect, sync_playwright

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, _login, running_server
from tests.e2e.test_publisher_away import (
    _go_live,
    _studio,
    close_studio_until_reconnecting,
    live_and_watched,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    latencies: list[float] = []
    with (
        tempfile.TemporaryDirectory() as workdir,
        running_server(Path(workdir), ONAIR_PUBLISHER_GRACE_SECONDS="3") as server,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        contexts: list[BrowserContext] = []
        studio, watch = live_and_watched(browser, server, contexts, _login)
        for run in range(args.runs):
            again = _studio(browser, server, contexts, _login)
            latency = close_studio_until_reconnecting(studio, watch)
            latencies.append(latency)
            print(f"run {run + 1}: reconnecting {latency:.0f} ms after the studio closed")
            _go_live(again)
            expect(watch.locator("body")).to_have_attribute("data-playback", "playing")
            watch.evaluate("window.__awayAt = null")
            studio = again
        browser.close()
    print(
        f"median {statistics.median(latencies):.0f} ms, range {min(latencies):.0f} to "
        f"{max(latencies):.0f} ms over {len(latencies)} runs"
    )


if __name__ == "__main__":
    main()
