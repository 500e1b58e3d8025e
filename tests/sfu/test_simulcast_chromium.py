"""Real headless Chromium publishes simulcast to a router in-process: a 1280x720 fake
camera with three encodings (rids q, h, f at 1/4, 1/2 and full size), as a studio page
does with ``sendEncodings``. Each layer reaches its own producer; aiortc viewers, each choosing
one layer, decode that layer's picture size."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiortc import MediaStreamError, RTCPeerConnection, RTCSessionDescription
from playwright.async_api import Browser, Page, async_playwright

from sfu import Producer, Router
from sfu.track import PublishedTrack
from testpeers import client_configuration, wait_until
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.slow

# what a studio page sends: three encodings of a 720p camera, lowest first
SEND_ENCODINGS = [
    {"rid": "q", "scaleResolutionDownBy": 4, "maxBitrate": 150_000},
    {"rid": "h", "scaleResolutionDownBy": 2, "maxBitrate": 500_000},
    {"rid": "f", "maxBitrate": 1_500_000},
]
SIZES = {"q": (320, 180), "h": (640, 360), "f": (1280, 720)}
# Chromium starts a layer once its bandwidth estimate has room for it: the router's REMB
# (RouterOptions.publish_max_bitrate) gives it room for all three from the start
RIDS = ("q", "h", "f")

OFFER = """async ({encodings, codec}) => {
  const stream = await navigator.mediaDevices.getUserMedia(
    {video: {width: 1280, height: 720, frameRate: 15}});
  const pc = new RTCPeerConnection({iceServers: []});
  window.pc = pc;
  const transceiver = pc.addTransceiver(stream.getVideoTracks()[0],
    {direction: 'sendonly', sendEncodings: encodings});
  if (codec) {
    transceiver.setCodecPreferences(RTCRtpSender.getCapabilities('video').codecs.filter(
      c => c.mimeType.toLowerCase() === 'video/rtx' || (c.mimeType.toLowerCase() === codec
        && (c.sdpFmtpLine || '').includes('packetization-mode=1')
        && (c.sdpFmtpLine || '').includes('profile-level-id=42e01f'))));
  }
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(resolve => {
    if (pc.iceGatheringState === 'complete') resolve();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && resolve();
  });
  return pc.localDescription.sdp;
}"""


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        browser: Browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page()
            # a page on localhost is a secure context: getUserMedia works there
            await page.route(
                "http://localhost/**",
                lambda route: route.fulfill(body="<html></html>", content_type="text/html"),
            )
            await page.goto("http://localhost/")
            yield page
        finally:
            await browser.close()


async def _publish(router: Router, page: Page, codec: str | None = None) -> PublishedTrack:
    offer = await page.evaluate(OFFER, {"encodings": SEND_ENCODINGS, "codec": codec})
    session = await router.publish(offer)
    await page.evaluate("sdp => pc.setRemoteDescription({type: 'answer', sdp})", session.answer_sdp)
    return next(t for t in session.tracks if t.kind == "video")


def _by_rid(track: PublishedTrack) -> dict[str | None, Producer]:
    return {layer.rid: layer for layer in track.offered_layers}


class _SizeViewer:
    """An aiortc viewer that decodes the video and keeps the last frame's size."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(client_configuration())
        self.size: tuple[int, int] | None = None
        self.frames = 0
        self._task: asyncio.Task[None] | None = None

    async def subscribe(self, router: Router) -> Any:
        self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        session = await router.subscribe(self.pc.localDescription.sdp)
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=session.answer_sdp, type="answer")
        )
        track = self.pc.getTransceivers()[0].receiver.track
        self._task = asyncio.ensure_future(self._consume(track))
        return session

    async def _consume(self, track: Any) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                self.size = (frame.width, frame.height)
                self.frames += 1

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.pc.close()


async def test_chromium_vp8_simulcast_layers_reach_viewers_at_their_size(
    router: Router, page: Page
) -> None:
    track = await _publish(router, page)
    layers = _by_rid(track)
    assert set(layers) == set(RIDS)
    started = [layers[rid] for rid in RIDS]
    assert await wait_until(lambda: all(p.frame_size for p in started), within=15)
    for rid in RIDS:
        assert layers[rid].frame_size == SIZES[rid]
        assert layers[rid].keyframes_received >= 1
        assert layers[rid].bitrate(time.monotonic()) > 0
    # ordered by what the keyframes say
    assert [p.rid for p in track.layers] == ["q", "h", "f"]

    viewers = [_SizeViewer() for _ in RIDS]
    try:
        for viewer, rid in zip(viewers, RIDS, strict=True):
            session = await viewer.subscribe(router)
            # the viewer's own choice of layer (the watch page's quality menu)
            session.quality.choose(track.layers.index(layers[rid]))
        for viewer, rid in zip(viewers, RIDS, strict=True):
            assert await wait_until(lambda v=viewer, r=rid: v.size == SIZES[r], within=15), (
                rid,
                viewer.size,
            )
    finally:
        for viewer in viewers:
            await viewer.close()


async def test_chromium_h264_simulcast_layers_reach_their_producers(
    router: Router, page: Page
) -> None:
    track = await _publish(router, page, codec="video/h264")
    layers = _by_rid(track)
    assert layers["q"].mime_type.lower() == "video/h264"
    started = [layers[rid] for rid in RIDS]
    # the picture size is read from the SPS before each IDR
    assert await wait_until(lambda: all(p.frame_size for p in started), within=15)
    assert [layers[rid].frame_size for rid in RIDS] == [SIZES[r] for r in RIDS]
    viewer = _SizeViewer()
    try:
        session = await viewer.subscribe(router)
        session.quality.choose(track.layers.index(layers["h"]))
        assert await wait_until(lambda: viewer.size == SIZES["h"], within=15), viewer.size
    finally:
        await viewer.close()
