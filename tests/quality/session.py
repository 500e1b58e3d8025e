"""A broadcast watched behind shaped links: the SFU (daphne) on the rig's server address, a
publisher (the studio page in Chromium, in the root namespace) and viewers (the watch page,
each in a Chromium inside its own namespace, ``tests.quality.rig``). Every second a sample
of each viewer's ``getStats`` and of its link's counters can be taken; ``Window`` turns two
samples into the figures of the quality table.

    with Broadcast.start(workdir) as broadcast:
        weak = broadcast.add_viewer("weak")
        weak.link.set_rate(400_000)
        series = broadcast.sample(seconds=20)
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from tests.e2e.conftest import CHROMIUM_ARGS, OnAirServer, running_server
from tests.quality.rig import CHROMIUM, Link, LinkCounters, QualityRig, process_cpu_seconds

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

VIEWER_STATS = """async () => {
  const pc = window.onairWatch && window.onairWatch.state.pc;
  const out = {video: null, audio: null,
               status: (document.getElementById("playback-status") || {}).textContent || "",
               playback: document.body.dataset.playback || "",
               videoPaused: document.body.dataset.videoPaused === "true",
               quality: (document.getElementById("quality-current") || {}).textContent || ""};
  if (!pc) return out;
  (await pc.getStats()).forEach((s) => {
    if (s.type !== "inbound-rtp") return;
    const row = {
      packetsReceived: s.packetsReceived || 0, packetsLost: s.packetsLost || 0,
      bytesReceived: s.bytesReceived || 0,
      retransmittedPacketsReceived: s.retransmittedPacketsReceived || 0,
      retransmittedBytesReceived: s.retransmittedBytesReceived || 0,
      nackCount: s.nackCount || 0, jitterBufferDelay: s.jitterBufferDelay || 0,
      jitterBufferEmittedCount: s.jitterBufferEmittedCount || 0,
      framesDecoded: s.framesDecoded || 0, freezeCount: s.freezeCount || 0,
      totalFreezesDuration: s.totalFreezesDuration || 0, frameHeight: s.frameHeight || 0,
      pliCount: s.pliCount || 0, totalSamplesReceived: s.totalSamplesReceived || 0,
      concealedSamples: s.concealedSamples || 0,
    };
    out[s.kind] = row;
  });
  return out;
}"""

PUBLISHER_STATS = """async () => {
  const pc = window.onairStudio && window.onairStudio.state.pc;
  const out = {bytesSent: 0, frameHeight: 0, framesSent: 0, layers: 0};
  if (!pc) return out;
  (await pc.getStats()).forEach((s) => {
    if (s.type === "outbound-rtp" && s.kind === "video") {
      out.bytesSent += s.bytesSent || 0;
      out.framesSent += s.framesSent || 0;
      out.frameHeight = Math.max(out.frameHeight, s.frameHeight || 0);
      out.layers += 1;
    }
  });
  return out;
}"""


@dataclass(frozen=True)
class Sample:
    """One viewer's ``getStats`` (inbound video and audio) and its link's counters, at ``at``
    (monotonic seconds), with the server's CPU seconds so far."""

    at: float
    video: dict[str, float] | None
    audio: dict[str, float] | None
    link: LinkCounters
    server_cpu: float
    status: str
    playback: str
    video_paused: bool = False  # the page shows "video paused: your connection is too slow"
    quality: str = ""  # the page's quality label ("Auto (720p)")


def _delta(late: dict[str, float] | None, early: dict[str, float] | None, key: str) -> float:
    if late is None:
        return 0.0
    return float(late.get(key, 0)) - float((early or {}).get(key, 0))


@dataclass(frozen=True)
class Window:
    """What a viewer got between two samples."""

    seconds: float
    fps: float
    freeze_seconds: float
    stalled_seconds: int  # one-second steps in which no frame was decoded
    paused_seconds: int  # one-second steps ending with the page's "video paused" notice
    jitter_buffer_ms: float | None
    loss_percent: float
    retransmitted_received: int
    nacks_sent: int
    plis_sent: int
    frame_height: int
    received_kbps: float
    audio_packets: int
    link_kbps: float  # what the SFU sent toward the viewer (before the bottleneck)
    link_packets_per_second: float
    link_dropped_packets: int  # of those, dropped at the bottleneck
    server_cpu_percent: float

    @classmethod
    def over(cls, series: list[Sample]) -> Window:
        """The window from a series' first sample to its last."""
        window = cls.between(series[0], series[-1])
        stalled = sum(
            1
            for before, after in itertools.pairwise(series)
            if _delta(after.video, before.video, "framesDecoded") <= 0
        )
        paused = sum(1 for taken in series[1:] if taken.video_paused)
        return dataclasses.replace(window, stalled_seconds=stalled, paused_seconds=paused)

    @classmethod
    def between(cls, early: Sample, late: Sample) -> Window:
        seconds = max(late.at - early.at, 1e-6)
        video_early, video = early.video, late.video
        emitted = _delta(video, video_early, "jitterBufferEmittedCount")
        buffered = _delta(video, video_early, "jitterBufferDelay")
        lost = _delta(video, video_early, "packetsLost")
        received = _delta(video, video_early, "packetsReceived")
        link = late.link - early.link
        return cls(
            seconds=seconds,
            fps=_delta(video, video_early, "framesDecoded") / seconds,
            freeze_seconds=_delta(video, video_early, "totalFreezesDuration"),
            stalled_seconds=0,
            paused_seconds=0,
            jitter_buffer_ms=buffered / emitted * 1000 if emitted else None,
            loss_percent=100 * lost / (lost + received) if lost + received > 0 else 0.0,
            retransmitted_received=int(_delta(video, video_early, "retransmittedPacketsReceived")),
            nacks_sent=int(_delta(video, video_early, "nackCount")),
            plis_sent=int(_delta(video, video_early, "pliCount")),
            frame_height=int((video or {}).get("frameHeight", 0)),
            received_kbps=_delta(video, video_early, "bytesReceived") * 8 / seconds / 1000,
            audio_packets=int(_delta(late.audio, early.audio, "packetsReceived")),
            link_kbps=link.bytes * 8 / seconds / 1000,
            link_packets_per_second=link.packets / seconds,
            link_dropped_packets=link.dropped_packets,
            server_cpu_percent=100 * (late.server_cpu - early.server_cpu) / seconds,
        )


@dataclass
class Viewer:
    name: str
    link: Link
    page: Page
    samples: list[Sample] = field(default_factory=list)

    def sample(self, server_pid: int) -> Sample:
        stats: dict[str, Any] = self.page.evaluate(VIEWER_STATS)
        taken = Sample(
            at=time.monotonic(),
            video=stats["video"],
            audio=stats["audio"],
            link=self.link.counters(),
            server_cpu=process_cpu_seconds(server_pid),
            status=str(stats["status"]),
            playback=str(stats["playback"]),
            video_paused=bool(stats.get("videoPaused")),
            quality=str(stats.get("quality", "")),
        )
        self.samples.append(taken)
        return taken

    def frames_decoded(self) -> int:
        stats: dict[str, Any] = self.page.evaluate(VIEWER_STATS)
        return int((stats["video"] or {}).get("framesDecoded", 0))


@dataclass
class Broadcast:
    """A live broadcast from the studio, its server and rig, and the viewers added."""

    rig: QualityRig
    server: OnAirServer
    playwright: Playwright
    studio: Page
    viewers: list[Viewer]
    _stack: ExitStack

    @classmethod
    @contextmanager
    def start(
        cls,
        workdir: Path,
        *,
        resolution: str = "720p",
        framerate: str = "30",
        simulcast: bool = False,
        **settings: str,
    ) -> Iterator[Broadcast]:
        """The rig, daphne on its server address (``settings``: extra ``ONAIR_*``), and the
        demo stream live from the studio at ``resolution`` (with three simulcast encodings
        if ``simulcast``)."""
        with ExitStack() as stack:
            rig = stack.enter_context(QualityRig())
            server = stack.enter_context(
                running_server(
                    workdir,
                    host=rig.server_ip,
                    ALLOWED_HOSTS=f"{rig.server_ip},localhost,127.0.0.1",
                    **settings,
                )
            )
            playwright = stack.enter_context(sync_playwright())
            publisher = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=_chromium_args(server)
            )
            stack.callback(publisher.close)
            studio = _studio(publisher, server, resolution, framerate, simulcast)
            broadcast = cls(rig, server, playwright, studio, [], stack)
            stack.callback(broadcast._close_viewers)
            yield broadcast

    def add_viewer(self, name: str) -> Viewer:
        """A viewer in its own namespace, on an unshaped link, playing (frames decoded)."""
        link = self.rig.add_link(name)
        browser = self.playwright.chromium.launch(
            executable_path=str(link.chromium), headless=True, args=_chromium_args(self.server)
        )
        context = browser.new_context(base_url=self.server.base_url)
        context.set_default_timeout(20_000)
        page = context.new_page()
        page.goto(f"/watch/{self.server.demo_slug}/")
        viewer = Viewer(name, link, page)
        self.viewers.append(viewer)
        deadline = time.monotonic() + 20
        while viewer.frames_decoded() == 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"viewer {name} decoded no frame in 20 s")
            page.wait_for_timeout(200)
        return viewer

    def remove_viewer(self, viewer: Viewer) -> None:
        """Close a viewer's browser; its link is unshaped (its namespace stays until the
        rig goes down: add the next viewer under another name)."""
        self.viewers.remove(viewer)
        browser = viewer.page.context.browser
        if browser is not None:
            browser.close()
        viewer.link.set_rate(None)
        viewer.link.set_loss(0)

    def publisher_stats(self) -> dict[str, float]:
        stats: dict[str, float] = self.studio.evaluate(PUBLISHER_STATS)
        return stats

    def publisher_kbps(self, seconds: float = 2.0) -> float:
        """The studio's outgoing video bitrate, over ``seconds``."""
        first = self.publisher_stats()["bytesSent"]
        self.studio.wait_for_timeout(seconds * 1000)
        return (self.publisher_stats()["bytesSent"] - first) * 8 / seconds / 1000

    def wait_for_publisher_kbps(self, kbps: float, within: float) -> float:
        """The publisher's bitrate climbs after Go live: wait until it passes ``kbps``."""
        deadline = time.monotonic() + within
        rate = self.publisher_kbps(1.0)
        while rate < kbps and time.monotonic() < deadline:
            rate = self.publisher_kbps(1.0)
        assert rate >= kbps, f"the publisher stayed at {rate:.0f} kbit/s"
        return rate

    def sample(
        self, seconds: float, viewers: list[Viewer] | None = None
    ) -> dict[str, list[Sample]]:
        """A sample of every viewer (or of ``viewers``) each second for ``seconds``, the
        first one now; each viewer's series by name."""
        chosen = self.viewers if viewers is None else viewers
        series: dict[str, list[Sample]] = {viewer.name: [] for viewer in chosen}
        start = time.monotonic()
        tick = 0
        while True:
            for viewer in chosen:
                series[viewer.name].append(viewer.sample(self.server.pid))
            tick += 1
            if tick > seconds:
                return series
            pause = start + tick - time.monotonic()
            if pause > 0:
                self.studio.wait_for_timeout(pause * 1000)

    def _close_viewers(self) -> None:
        for viewer in self.viewers:
            browser = viewer.page.context.browser
            if browser is not None:
                browser.close()
        self.viewers.clear()


def _chromium_args(server: OnAirServer) -> list[str]:
    host = server.base_url.split("//", 1)[1].split(":", 1)[0]
    args = [arg for arg in CHROMIUM_ARGS if not arg.startswith("--host-resolver-rules")]
    return [
        *args,
        f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost"
        f" , EXCLUDE {host}",
        f"--unsafely-treat-insecure-origin-as-secure={server.base_url}",
    ]


def _studio(
    browser: Browser, server: OnAirServer, resolution: str, framerate: str, simulcast: bool
) -> Page:
    context = browser.new_context(base_url=server.base_url)
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.goto("/accounts/login/")
    page.fill("#id_username", server.demo_username)
    page.fill("#id_password", server.demo_password)
    page.click("button[type=submit]")
    page.wait_for_url("**/streams/")
    # the studio sends simulcast unless told not to
    page.goto(f"/studio/{server.demo_slug}/" + ("" if simulcast else "?simulcast=0"))
    expect(page.locator("#camera option").first).to_be_attached(timeout=20_000)
    page.select_option("#resolution", resolution)
    page.select_option("#framerate", framerate)
    page.click("#go-live")
    expect(page.locator("#stream-state")).to_have_text("live", timeout=30_000)
    return page
