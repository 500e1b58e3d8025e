"""The bandwidth estimate the SFU gives a publisher (RTCP REMB): the publish ceiling from its
first packet on, lowered only when the SFU loses the publisher's packets.

A browser sets its encoders' bitrate from the estimate its receiver sends back (Chromium
negotiates no transport-wide congestion control with aiortc). aiortc's own receive-side
estimator starts at a few hundred kbit/s and grows about 8 % a second: a broadcast would take
20 to 40 s to reach its bitrate and a simulcast top layer start only after ≈ 20 s. Instead,
the SFU says "the ceiling" from the first packet: Chromium trusts a receiver's estimate
outright during its first two seconds without loss, so its encoders go to their configured
bitrates at once. The answer says so too (``with_start_bitrate``), for the very first
frames, encoded before any packet (so any REMB) arrived: Chromium sizes them for its start
estimate, 300 kbit/s unless told, which shrinks a 720p camera to 360p, and then takes tens
of seconds to grow the picture back.

What the SFU can justify afterwards is what it measures: the share of the publisher's
packets that never arrived, each second, with GCC's loss-based rule (over 10 %: cut by half
the loss; under 2 %: grow 8 % a second back up to the ceiling; in between: hold). A link
too slow for the ceiling shows as loss within a second or two, and the browser also lowers
its own rate on the loss aiortc's receiver reports say. Losses are counted on the media
SSRCs, so a publisher that retransmits on the media SSRC (without RTX, unlike browsers)
shows only what it failed to repair.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

logger = logging.getLogger(__name__)

# How often the estimate is sent again once media flows (a lost REMB is replaced soon);
# before the first packet, how often the SFU looks for it.
REMB_INTERVAL_SECONDS = 0.5
FIRST_MEDIA_POLL_SECONDS = 0.05
# GCC's loss-based rule: the loss over at least this long and this many packets expected...
LOSS_WINDOW_SECONDS = 1.0
LOSS_WINDOW_PACKETS = 20
# ... above this cuts the estimate by half the loss, below that grows it by GROWTH a second
HIGH_LOSS = 0.10
LOW_LOSS = 0.02
GROWTH_PER_SECOND = 1.08
# The estimate never goes below this: the lowest rate a browser's encoders work at.
MIN_BITRATE = 50_000

# (packets expected, packets received) so far, by media SSRC
StreamCounters = Mapping[int, tuple[int, int]]

# The SDP format parameter Chromium takes its bandwidth estimator's start from (kbit/s).
START_BITRATE_PARAMETER = "x-google-start-bitrate"


def with_start_bitrate(answer_sdp: str, bitrate: int) -> str:
    """``answer_sdp`` with ``bitrate`` (bit/s) as the start bitrate of every video codec
    (not RTX) in it: added to its ``a=fmtp`` line, or in one of its own after its
    ``a=rtpmap``. Browsers other than Chromium ignore the parameter."""
    lines = answer_sdp.split("\r\n")
    parameter = f"{START_BITRATE_PARAMETER}={max(1, bitrate // 1000)}"
    video = False
    codecs: set[str] = set()  # the video section's payload types, RTX's left out
    with_fmtp: set[str] = set()
    for line in lines:
        if line.startswith("m="):
            video = line.startswith("m=video")
        elif video and line.startswith("a=rtpmap:"):
            payload_type, _, name = line[len("a=rtpmap:") :].partition(" ")
            if not name.lower().startswith("rtx/"):
                codecs.add(payload_type)
        elif video and line.startswith("a=fmtp:"):
            with_fmtp.add(line[len("a=fmtp:") :].partition(" ")[0])
    out: list[str] = []
    video = False
    for line in lines:
        if line.startswith("m="):
            video = line.startswith("m=video")
        if video and line.startswith("a=fmtp:"):
            payload_type, _, parameters = line[len("a=fmtp:") :].partition(" ")
            if payload_type in codecs and START_BITRATE_PARAMETER not in parameters:
                line = f"{line};{parameter}" if parameters else f"{line} {parameter}"
        out.append(line)
        if video and line.startswith("a=rtpmap:"):
            payload_type = line[len("a=rtpmap:") :].partition(" ")[0]
            if payload_type in codecs and payload_type not in with_fmtp:
                out.append(f"a=fmtp:{payload_type} {parameter}")
    return "\r\n".join(out)


class LossBasedRate:
    """GCC's loss-based rate control, fed with cumulative per-SSRC packet counters.

    Starts at ``ceiling``. ``update`` takes the counters as they are now and, once a window
    holds ``LOSS_WINDOW_SECONDS`` and ``LOSS_WINDOW_PACKETS`` expected packets, applies the
    rule to the loss in it; True when it did. Retransmissions arrive on their own (RTX)
    SSRC, so the media SSRCs' counters are the loss before repair: what the link did.
    """

    def __init__(self, ceiling: int, *, floor: int = MIN_BITRATE) -> None:
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.bitrate = float(ceiling)
        self.last_loss = 0.0
        self._seen: dict[int, tuple[int, int]] = {}
        self._window_start: float | None = None
        self._expected = 0
        self._received = 0

    def update(self, counters: StreamCounters, now: float) -> bool:
        for ssrc, (expected, received) in counters.items():
            before_expected, before_received = self._seen.get(ssrc, (0, 0))
            self._seen[ssrc] = (expected, received)
            self._expected += max(0, expected - before_expected)
            self._received += max(0, received - before_received)
        if self._window_start is None:
            self._window_start = now
            return False
        elapsed = now - self._window_start
        if elapsed < LOSS_WINDOW_SECONDS or self._expected < LOSS_WINDOW_PACKETS:
            return False
        # duplicates and late packets can make received exceed expected: no loss then
        loss = max(0.0, (self._expected - self._received) / self._expected)
        self.last_loss = loss
        if loss > HIGH_LOSS:
            self.bitrate *= 1 - 0.5 * loss
        elif loss < LOW_LOSS:
            self.bitrate *= GROWTH_PER_SECOND**elapsed
        self.bitrate = min(float(self.ceiling), max(float(self.floor), self.bitrate))
        self._window_start = now
        self._expected = self._received = 0
        return True


class PublisherBandwidth:
    """Sends a publisher ``LossBasedRate``'s estimate (REMB) every
    ``REMB_INTERVAL_SECONDS`` from its first media packet on, until ``stop``.

    ``media_ssrcs`` gives the media SSRCs received so far (every simulcast encoding's, and
    audio's): the REMB lists them; ``counters`` gives their packet counters; ``send_remb``
    sends one REMB (bit/s, SSRCs) on the publisher's transport.
    """

    def __init__(
        self,
        ceiling: int,
        *,
        media_ssrcs: Callable[[], Sequence[int]],
        counters: Callable[[], StreamCounters],
        send_remb: Callable[[int, list[int]], Awaitable[None]],
    ) -> None:
        self.rate = LossBasedRate(ceiling)
        self.rembs_sent = 0
        self._media_ssrcs = media_ssrcs
        self._counters = counters
        self._send_remb = send_remb
        self._task: asyncio.Task[None] | None = None

    @property
    def bitrate(self) -> int:
        """The estimate sent last (or first), in bit/s."""
        return int(self.rate.bitrate)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            ssrcs = list(self._media_ssrcs())
            if ssrcs:
                counters = self._counters()
                self.rate.update({s: counters[s] for s in ssrcs if s in counters}, loop.time())
                try:
                    await self._send_remb(self.bitrate, ssrcs)
                    self.rembs_sent += 1
                except Exception:  # a transport closing under it: the peer's close stops this
                    logger.debug("could not send a REMB to the publisher", exc_info=True)
            await asyncio.sleep(REMB_INTERVAL_SECONDS if ssrcs else FIRST_MEDIA_POLL_SECONDS)
