"""``python -m tests.e2e.measure_fast_start [--runs N] [--seconds S] [--resolution R]``: how
soon after Go live the studio's publisher sends at its target bitrate and has every simulcast
layer encoding (#20 acceptance 5), measured in the publishing browser's own statistics (real
daphne, real headless Chromium with its fake camera, as the e2e tests use them).

Each run goes live from a fresh studio page and samples ``getStats()`` every 200 ms from the
click on Go live: per encoding (rid) ``bytesSent``, ``framesEncoded``, ``targetBitrate`` and
``qualityLimitationReason``, and the candidate pair's ``availableOutgoingBitrate`` (the
browser's bandwidth estimate, which follows the REMB the SFU sends). It prints, per run:

- *estimate ≥ 90 %*: when the estimate first reached 90 % of the target;
- *target ≥ 90 %*: when the encoders' summed ``targetBitrate`` first did;
- *sent ≥ 90 %*: when the bitrate sent (``bytesSent`` over the last second, summed over the
  encodings) first did, and when it first reached 90 % of what it sends over the run's last
  second (the fake camera's simple picture needs less than the target);
- *all layers*: when every encoding the sender has was encoding frames (``framesEncoded``
  rising) without a ``bandwidth`` quality limitation;

and the medians. The target is the sum of the encodings' ``maxBitrate`` where the studio sets
them, else ``--target`` (Chromium's own cap for one 1280x720 VP8 encoding: 2.5 Mbit/s).
``--server-setting KEY=VALUE`` passes ``ONAIR_*`` settings to the server; ``--simulcast 0``
opens the studio with simulcast off (``?simulcast=0``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, OnAirServer, _login, running_server
from tests.e2e.test_live import _restart_demo_stream

SAMPLE_MS = 200

# Samples the studio's publishing connection every ``period`` ms into window.__fastStart,
# from the moment it clicks Go live (t = 0).
GO_LIVE_AND_SAMPLE = """(period) => {
  const record = {samples: [], encodings: [], t0: performance.now()};
  window.__fastStart = record;
  const sample = async () => {
    const pc = window.onairStudio.state.pc;
    if (!pc) return;
    const t = performance.now() - record.t0;
    const report = await pc.getStats();
    const layers = {};
    let available = null;
    report.forEach((s) => {
      if (s.type === "outbound-rtp" && s.kind === "video") {
        layers[s.rid || "-"] = {
          bytes: s.bytesSent || 0,
          frames: s.framesEncoded || 0,
          target: s.targetBitrate || 0,
          reason: s.qualityLimitationReason || "",
          width: s.frameWidth || 0,
          active: s.active !== false,
        };
      }
    });
    report.forEach((s) => {
      if (s.type === "transport" && report.has(s.selectedCandidatePairId)) {
        available = report.get(s.selectedCandidatePairId).availableOutgoingBitrate ?? null;
      }
    });
    record.samples.push({t, layers, available});
    const video = pc.getSenders().find((sender) => sender.track?.kind === "video");
    if (video) {
      record.encodings = video.getParameters().encodings.map((e) => ({
        rid: e.rid || "-", maxBitrate: e.maxBitrate || 0, active: e.active !== false}));
    }
  };
  record.timer = setInterval(sample, period);
  document.getElementById("go-live").click();
}"""


@dataclass
class Run:
    target: float
    estimate_at: float | None  # seconds after Go live
    target_at: float | None
    sent_at: float | None
    settled_at: float | None  # sent ≥ 90 % of what it sends over the run's last second
    layers_at: float | None
    unlimited_at: float | None
    layers: list[str]
    sent_by_second: dict[int, float]  # bit/s over the second before
    estimate_by_second: dict[int, float | None]
    widths: list[int]  # each encoding's width at the end


REPORTED_SECONDS = (1, 2, 3, 5, 10)


def _first(samples: list[dict[str, Any]], condition: Callable[[int], bool]) -> float | None:
    for index, sample in enumerate(samples):
        if condition(index):
            return float(sample["t"]) / 1000
    return None


def _sent_rate(samples: list[dict[str, Any]], index: int) -> float:
    """Bits per second sent over the second before ``samples[index]``, all encodings."""
    now = samples[index]
    earlier = next(
        (s for s in reversed(samples[:index]) if now["t"] - s["t"] >= 1000 - SAMPLE_MS / 2),
        samples[0] if index and now["t"] - samples[0]["t"] >= 400 else None,
    )
    if earlier is None:
        return 0.0
    sent = sum(layer["bytes"] for layer in now["layers"].values()) - sum(
        layer["bytes"] for layer in earlier["layers"].values()
    )
    return sent * 8 / ((now["t"] - earlier["t"]) / 1000)


def _at_second(samples: list[dict[str, Any]], second: int) -> int | None:
    """The index of the last sample at or before ``second`` after Go live."""
    indexes = [i for i, s in enumerate(samples) if s["t"] <= second * 1000]
    return indexes[-1] if indexes and samples[-1]["t"] >= second * 1000 - SAMPLE_MS else None


def analyse(record: dict[str, Any], default_target: float) -> Run:
    samples: list[dict[str, Any]] = record["samples"]
    encodings = [e for e in record["encodings"] if e["active"]]
    maxima = [e["maxBitrate"] for e in encodings]
    target = float(sum(maxima)) if maxima and all(maxima) else default_target
    rids = [e["rid"] for e in encodings] or ["-"]

    def encoding(index: int, rid: str, unlimited: bool) -> bool:
        """Whether ``rid`` encoded frames since the previous sample (and, if ``unlimited``,
        without a bandwidth limit)."""
        if index == 0:
            return False
        now, before = samples[index]["layers"].get(rid), samples[index - 1]["layers"].get(rid)
        return (
            now is not None
            and before is not None
            and now["frames"] > before["frames"]
            and not (unlimited and now["reason"] == "bandwidth")
        )

    sent_by_second: dict[int, float] = {}
    estimate_by_second: dict[int, float | None] = {}
    for second in REPORTED_SECONDS:
        index = _at_second(samples, second)
        if index is not None:
            sent_by_second[second] = _sent_rate(samples, index)
            estimate_by_second[second] = samples[index]["available"]
    return Run(
        target=target,
        estimate_at=_first(samples, lambda i: (samples[i]["available"] or 0) >= 0.9 * target),
        target_at=_first(
            samples,
            lambda i: (
                sum(layer["target"] for layer in samples[i]["layers"].values()) >= 0.9 * target
            ),
        ),
        sent_at=_first(samples, lambda i: _sent_rate(samples, i) >= 0.9 * target),
        settled_at=_first(
            samples, lambda i: _sent_rate(samples, i) >= 0.9 * _sent_rate(samples, len(samples) - 1)
        ),
        layers_at=_first(samples, lambda i: all(encoding(i, rid, False) for rid in rids)),
        unlimited_at=_first(samples, lambda i: all(encoding(i, rid, True) for rid in rids)),
        layers=rids,
        sent_by_second=sent_by_second,
        estimate_by_second=estimate_by_second,
        widths=[samples[-1]["layers"].get(rid, {}).get("width", 0) for rid in rids],
    )


def go_live_and_sample(page: Page, seconds: float) -> dict[str, Any]:
    """Click Go live on a studio page, sample its statistics for ``seconds``."""
    page.evaluate(GO_LIVE_AND_SAMPLE, SAMPLE_MS)
    expect(page.locator("#connection-state")).to_have_text("connected", timeout=15_000)
    page.wait_for_timeout(seconds * 1000)
    record: dict[str, Any] = page.evaluate(
        "() => { clearInterval(window.__fastStart.timer); return window.__fastStart; }"
    )
    return record


def _studio(browser: Browser, server: OnAirServer, resolution: str, query: str) -> Page:
    context = browser.new_context(base_url=server.base_url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    _login(page, server.demo_username, server.demo_password)
    page.goto(f"/studio/{server.demo_slug}/{query}")
    expect(page.locator("#camera option").first).to_be_attached()
    if page.locator("#resolution").input_value() != resolution:
        page.select_option("#resolution", resolution)
    width = {"360p": 640, "720p": 1280, "1080p": 1920}[resolution]
    expect(page.locator("#capture-settings")).to_contain_text(f"{width}\u00d7")
    return page


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def _mbits(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e6:.2f}"


def _median(values: list[float | None]) -> str:
    if any(v is None for v in values):
        return f"never in {sum(v is None for v in values)} of {len(values)} runs"
    return f"{statistics.median(v for v in values if v is not None):.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--resolution", default="720p", choices=["360p", "720p", "1080p"])
    parser.add_argument("--target", type=float, default=2_500_000)
    parser.add_argument("--simulcast", choices=["0", "1"], default="")
    parser.add_argument("--server-setting", action="append", default=[])
    parser.add_argument("--dump", type=Path, help="write each run's samples here (JSON lines)")
    args = parser.parse_args()
    settings = dict(setting.split("=", 1) for setting in args.server_setting)
    query = f"?simulcast={args.simulcast}" if args.simulcast else ""
    runs: list[Run] = []
    with (
        tempfile.TemporaryDirectory() as workdir,
        running_server(Path(workdir), **settings) as server,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        for number in range(1, args.runs + 1):
            _restart_demo_stream(server)
            page = _studio(browser, server, args.resolution, query)
            record = go_live_and_sample(page, args.seconds)
            if args.dump:
                with args.dump.open("a") as dump:
                    dump.write(json.dumps(record) + "\n")
            run = analyse(record, args.target)
            page.context.close()
            runs.append(run)
            print(
                f"run {number}: target {run.target / 1e6:.2f} Mbit/s over {run.layers}; "
                f"estimate ≥ 90 % {_seconds(run.estimate_at)}, encoders' target ≥ 90 % "
                f"{_seconds(run.target_at)}, sent ≥ 90 % {_seconds(run.sent_at)} (≥ 90 % of "
                f"its last second's {_seconds(run.settled_at)}), every "
                f"encoding encoding {_seconds(run.layers_at)}, and unlimited by bandwidth "
                f"{_seconds(run.unlimited_at)}; widths at the end {run.widths}",
                flush=True,
            )
            print(
                "  at "
                + ", ".join(
                    f"{second} s: sent {run.sent_by_second[second] / 1e6:.2f}, estimate "
                    + _mbits(run.estimate_by_second[second])
                    for second in run.sent_by_second
                )
                + " (Mbit/s)",
                flush=True,
            )
            time.sleep(1)
        browser.close()
    print(
        f"median over {len(runs)} runs: estimate ≥ 90 % "
        f"{_median([r.estimate_at for r in runs])}, encoders' target ≥ 90 % "
        f"{_median([r.target_at for r in runs])}, sent ≥ 90 % "
        f"{_median([r.sent_at for r in runs])} (≥ 90 % of its last second's "
        f"{_median([r.settled_at for r in runs])}), every encoding encoding "
        f"{_median([r.layers_at for r in runs])}, and unlimited by bandwidth "
        f"{_median([r.unlimited_at for r in runs])}"
    )
    for second in REPORTED_SECONDS:
        sent = [r.sent_by_second[second] for r in runs if second in r.sent_by_second]
        if sent:
            print(f"  sent at {second} s: median {statistics.median(sent) / 1e6:.2f} Mbit/s")


if __name__ == "__main__":
    main()
