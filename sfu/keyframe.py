"""Keyframe detection in RTP payloads and throttled keyframe requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

_H264_NAL_IDR = 5
_H264_NAL_SPS = 7
_H264_STAP_A = 24
_H264_FU_A = 28
_H264_KEY_NALS = (_H264_NAL_IDR, _H264_NAL_SPS)


def is_vp8_keyframe_start(payload: bytes) -> bool:
    """True for the first packet of a VP8 keyframe (RFC 7741).

    The payload descriptor must have S=1 and PID=0, and the first byte of the
    VP8 payload header has the inverse key frame flag P (bit 0) clear.
    """
    pos = _vp8_payload_start(payload)
    return pos is not None and payload[pos] & 0x01 == 0


_VP8_START_CODE = b"\x9d\x01\x2a"


def vp8_keyframe_size(payload: bytes) -> tuple[int, int] | None:
    """Width and height from the first packet of a VP8 keyframe (RFC 6386 9.1: after the
    3-byte frame tag, the start code and two 16-bit little-endian sizes whose top 2 bits
    are the scale); None when the packet does not hold them."""
    pos = _vp8_payload_start(payload)
    if pos is None or pos + 10 > len(payload) or payload[pos] & 0x01:
        return None
    if payload[pos + 3 : pos + 6] != _VP8_START_CODE:
        return None
    width = (payload[pos + 6] | payload[pos + 7] << 8) & 0x3FFF
    height = (payload[pos + 8] | payload[pos + 9] << 8) & 0x3FFF
    return (width, height) if width and height else None


def _vp8_payload_start(payload: bytes) -> int | None:
    """Where the VP8 payload header starts after the payload descriptor of a partition
    start (S=1, PID=0); None for any other packet."""
    size = len(payload)
    if size < 2 or payload[0] & 0x17 != 0x10:
        return None
    pos = 1
    if payload[0] & 0x80:
        ext = payload[1]
        pos = 2
        if ext & 0x80 and pos < size:
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:
            pos += 1
        if ext & 0x30:
            pos += 1
    return pos if pos < size else None


def is_h264_keyframe_start(payload: bytes) -> bool:
    """True for a packet that starts an H.264 keyframe: an SPS or the start of an
    IDR slice, alone, inside a STAP-A aggregate or as the first FU-A fragment
    (RFC 6184)."""
    size = len(payload)
    if size < 1:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type in _H264_KEY_NALS:
        return True
    if nal_type == _H264_FU_A:
        return size > 1 and payload[1] & 0x80 != 0 and payload[1] & 0x1F in _H264_KEY_NALS
    if nal_type == _H264_STAP_A:
        pos = 1
        while pos + 2 < size:
            length = (payload[pos] << 8) | payload[pos + 1]
            if payload[pos + 2] & 0x1F in _H264_KEY_NALS:
                return True
            pos += 2 + length
    return False


KeyframeDetector = Callable[[bytes], bool]

KEYFRAME_DETECTORS: dict[str, KeyframeDetector] = {
    "video/vp8": is_vp8_keyframe_start,
    "video/h264": is_h264_keyframe_start,
}

# Reads a keyframe's picture size from its first packet (None where it is not there).
FrameSizeReader = Callable[[bytes], "tuple[int, int] | None"]

FRAME_SIZE_READERS: dict[str, FrameSizeReader] = {
    "video/vp8": vp8_keyframe_size,
}


# Viewers who join within this window of the last request share its keyframe, or the next
# one: a join storm makes at most one request per window instead of waiting out the
# per-producer interval, which is there for viewers' PLI/FIR.
JOIN_REQUEST_WINDOW = 0.15
# A request that no keyframe answers within this long is made again while someone still
# waits, then again after twice as long, and so on up to KEYFRAME_RETRY_MAX_SECONDS:
# browsers ignore a keyframe request within 300 ms of the previous one (libwebrtc's
# minimum keyframe send interval), and some sources answer none (a file replayed as is).
KEYFRAME_RETRY_SECONDS = 0.4
KEYFRAME_RETRY_MAX_SECONDS = 3.2


class KeyframeRequester:
    """Coalesces keyframe requests into at most one upstream request per interval.

    A request inside the interval is deferred to its end; any number of requests
    in the meantime share that one deferred request, and a keyframe arriving
    first cancels it (like Pion's PLI interceptors and mediasoup's key frame
    request manager). A joining viewer's request (``join=True``) waits only for
    the shorter ``join_window``, so a viewer who joins right after another gets
    its first frame in a fraction of a second, and a crowd joining at once still
    makes only a few requests per second. While ``waiting()`` says someone still waits
    for a keyframe, a request that none answers is made again (see
    ``KEYFRAME_RETRY_SECONDS``): a viewer who joined never stays without a picture.
    """

    def __init__(
        self,
        send: Callable[[], Awaitable[bool]],
        min_interval: float,
        join_window: float = JOIN_REQUEST_WINDOW,
        waiting: Callable[[], bool] = lambda: False,
    ) -> None:
        self._send_request = send
        self._waiting = waiting
        self._min_interval = min_interval
        self._join_window = min(join_window, min_interval)
        self._last_sent = -min_interval
        self._deferred: asyncio.TimerHandle | None = None
        self._deferred_due = 0.0
        self._task: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._retry_after = KEYFRAME_RETRY_SECONDS
        self.requests = 0
        self.sent = 0
        self.retries = 0

    async def request(self, *, join: bool = False) -> None:
        self.requests += 1
        due = self._last_sent + (self._join_window if join else self._min_interval)
        if self._deferred is not None:
            if self._deferred_due <= due:
                return
            self._deferred.cancel()  # a join moves the deferred request earlier
            self._deferred = None
        wait = due - time.monotonic()
        if wait <= 0:
            await self._send(self._claim())
        else:
            self._deferred = asyncio.get_running_loop().call_later(wait, self._fire)
            self._deferred_due = due

    def keyframe_received(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._retry_after = KEYFRAME_RETRY_SECONDS

    def close(self) -> None:
        self.keyframe_received()
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _schedule_retry(self) -> None:
        if self._retry is None:
            self._retry = asyncio.get_running_loop().call_later(
                self._retry_after, self._retry_unanswered
            )

    def _retry_unanswered(self) -> None:
        self._retry = None
        if self._deferred is not None or not self._waiting():
            return  # a request is on its way already, or nobody waits any more
        self.retries += 1
        self._retry_after = min(self._retry_after * 2, KEYFRAME_RETRY_MAX_SECONDS)
        self._fire()

    def _fire(self) -> None:
        self._deferred = None
        self._task = asyncio.ensure_future(self._send(self._claim()))

    def _claim(self) -> float:
        """Take the interval's slot now, before any await, so that requests
        arriving while the request is being sent are deferred."""
        previous, self._last_sent = self._last_sent, time.monotonic()
        return previous

    async def _send(self, previous: float) -> None:
        if await self._send_request():
            self.sent += 1
        else:  # not sent (the publisher has sent nothing yet, say): the slot stays free
            self._last_sent = previous
        self._schedule_retry()
