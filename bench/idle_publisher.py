"""``python -m bench.idle_publisher``: what a Chromium publisher sends while it sends nothing.

A real Chromium (fake camera and microphone, headless) publishes to an in-process
``sfu.Router``; the script records when each RTP and RTCP packet of each track arrives,
first with both tracks on, then with the camera off and the microphone muted
(``track.enabled = false``, as the studio's buttons do), then the same with Opus DTX
asked for in the answer (``usedtx=1``). It prints the longest gap between two packets of
any track, per phase: the silence a publisher that is alive can leave, which
``ONAIR_PUBLISHER_MEDIA_TIMEOUT_SECONDS`` must exceed with margin.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field

from playwright.async_api import Page, async_playwright

from sfu import Router, RouterOptions
from sfu.publisher import PublisherPeer

PAGE = """
<script>
window.publish = async (cameraOff, micMuted) => {
  const media = await navigator.mediaDevices.getUserMedia(
    {video: {width: 1280, height: 720}, audio: true});
  media.getVideoTracks().forEach((t) => { t.enabled = !cameraOff; });
  media.getAudioTracks().forEach((t) => { t.enabled = !micMuted; });
  window.media = media;
  const pc = new RTCPeerConnection({iceServers: []});
  window.pc = pc;
  for (const track of media.getTracks()) pc.addTransceiver(track, {direction: "sendonly"});
  await pc.setLocalDescription(await pc.createOffer());
  const gathered = () => pc.iceGatheringState === "complete";
  await new Promise((ok) => {
    if (gathered()) ok();
    pc.addEventListener("icegatheringstatechange", () => { if (gathered()) ok(); });
  });
  return pc.localDescription.sdp;
};
window.answer = (sdp) => window.pc.setRemoteDescription({type: "answer", sdp});
window.mute = (cameraOff, micMuted) => {
  window.media.getVideoTracks().forEach((t) => { t.enabled = !cameraOff; });
  window.media.getAudioTracks().forEach((t) => { t.enabled = !micMuted; });
};
</script>
"""

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
OPUS_RTPMAP = re.compile(r"a=rtpmap:(\d+) opus/48000/2\r\n")


@dataclass
class Arrivals:
    """Arrival times (monotonic seconds) per ``(kind, "rtp"|"rtcp")``."""

    times: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))

    def tap(self, publisher: PublisherPeer) -> None:
        for producer in publisher.producers:
            receiver = producer.receiver
            kind = producer.kind
            on_rtp = receiver._handle_rtp_packet
            on_rtcp = receiver._handle_rtcp_packet

            async def rtp(
                packet: object, arrival_time_ms: int, kind: str = kind, inner: object = on_rtp
            ) -> None:
                self.times[(kind, "rtp")].append(time.monotonic())
                await inner(packet, arrival_time_ms)  # type: ignore[operator]

            async def rtcp(packet: object, kind: str = kind, inner: object = on_rtcp) -> None:
                self.times[(kind, "rtcp")].append(time.monotonic())
                await inner(packet)  # type: ignore[operator]

            receiver._handle_rtp_packet = rtp  # type: ignore[method-assign]
            receiver._handle_rtcp_packet = rtcp  # type: ignore[method-assign]

    def report(self, since: float, until: float) -> dict[str, float]:
        """Per stream, the longest gap between packets in ``[since, until]`` (edges count)."""
        gaps: dict[str, float] = {}
        all_times: list[float] = []
        for (kind, what), times in sorted(self.times.items()):
            window = [since, *(t for t in times if since <= t <= until), until]
            all_times.extend(window[1:-1])
            count = len(window) - 2
            gaps[f"{kind} {what} (n={count})"] = max(b - a for a, b in itertools.pairwise(window))
        merged = [since, *sorted(all_times), until]
        gaps["any packet"] = max(b - a for a, b in itertools.pairwise(merged))
        return gaps


async def _phase(page: Page, arrivals: Arrivals, name: str, seconds: float, **mute: bool) -> None:
    await page.evaluate("([c, m]) => window.mute(c, m)", [mute["camera_off"], mute["mic_muted"]])
    await asyncio.sleep(2.0)  # let the encoders settle into the new state
    since = time.monotonic()
    await asyncio.sleep(seconds)
    print(f"\n{name} ({seconds:.0f} s): longest gap between packets")
    for stream, gap in arrivals.report(since, time.monotonic()).items():
        print(f"  {stream:28} {gap * 1000:7.0f} ms")


async def _run(seconds: float, dtx: bool) -> None:
    router = Router(RouterOptions(stats_interval_seconds=0, connect_timeout_seconds=0))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = await browser.new_page()
        # served by Playwright itself: localhost is a secure context (getUserMedia needs one)
        await page.route(
            "http://localhost/", lambda route: route.fulfill(body=PAGE, content_type="text/html")
        )
        await page.goto("http://localhost/")
        offer = await page.evaluate("window.publish(false, false)")
        publisher = await router.publish(offer)
        arrivals = Arrivals()
        arrivals.tap(publisher)
        answer = publisher.answer_sdp
        if dtx:
            answer = OPUS_RTPMAP.sub(r"\g<0>a=fmtp:\1 usedtx=1\r\n", answer)
        await page.evaluate("(sdp) => window.answer(sdp)", answer)
        await asyncio.wait_for(publisher.connected.wait(), 10)
        label = " (Opus DTX)" if dtx else ""
        await _phase(page, arrivals, f"sending{label}", seconds, camera_off=False, mic_muted=False)
        await _phase(
            page,
            arrivals,
            f"camera off, mic muted{label}",
            seconds,
            camera_off=True,
            mic_muted=True,
        )
        await browser.close()
    await router.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    args = parser.parse_args()
    asyncio.run(_run(args.seconds, dtx=False))
    asyncio.run(_run(args.seconds, dtx=True))


if __name__ == "__main__":
    main()
