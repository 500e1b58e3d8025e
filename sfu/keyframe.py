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


_H264_HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))


class _Bits:
    """An H.264 RBSP read bit by bit (emulation prevention bytes removed); reading past
    its end raises IndexError."""

    __slots__ = ("_data", "_position")

    def __init__(self, nal: bytes) -> None:
        self._data = nal.replace(b"\x00\x00\x03", b"\x00\x00")
        self._position = 0

    def bit(self) -> int:
        byte = self._data[self._position >> 3]
        value = (byte >> (7 - (self._position & 7))) & 1
        self._position += 1
        return value

    def bits(self, count: int) -> int:
        value = 0
        for _ in range(count):
            value = value << 1 | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while not self.bit():
            zeros += 1
            if zeros > 31:
                raise IndexError("exp-Golomb code too long")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        value = self.ue()
        return (value + 1) // 2 if value & 1 else -(value // 2)


def _h264_sps_size(sps: bytes) -> tuple[int, int] | None:
    """Width and height from an H.264 sequence parameter set (ITU-T H.264 7.3.2.1.1),
    its NAL header included."""
    try:
        bits = _Bits(sps[1:])
        profile = bits.bits(8)
        bits.bits(16)  # constraint flags, level
        bits.ue()  # seq_parameter_set_id
        chroma_format = 1
        if profile in _H264_HIGH_PROFILES:
            chroma_format = bits.ue()
            if chroma_format == 3:
                bits.bit()  # separate_colour_plane_flag
            bits.ue()  # bit_depth_luma_minus8
            bits.ue()  # bit_depth_chroma_minus8
            bits.bit()  # qpprime_y_zero_transform_bypass_flag
            if bits.bit():  # seq_scaling_matrix_present_flag
                for index in range(8 if chroma_format != 3 else 12):
                    if bits.bit():  # a scaling list follows: skip it
                        last, following = 8, 8
                        for _ in range(16 if index < 6 else 64):
                            if following:
                                following = (last + bits.se()) % 256
                            last = following or last
        bits.ue()  # log2_max_frame_num_minus4
        order_type = bits.ue()
        if order_type == 0:
            bits.ue()  # log2_max_pic_order_cnt_lsb_minus4
        elif order_type == 1:
            bits.bit()
            bits.se()
            bits.se()
            for _ in range(bits.ue()):
                bits.se()
        bits.ue()  # max_num_ref_frames
        bits.bit()  # gaps_in_frame_num_value_allowed_flag
        width_mbs = bits.ue() + 1
        height_units = bits.ue() + 1
        frame_mbs_only = bits.bit()
        if not frame_mbs_only:
            bits.bit()  # mb_adaptive_frame_field_flag
        bits.bit()  # direct_8x8_inference_flag
        crop = (bits.ue(), bits.ue(), bits.ue(), bits.ue()) if bits.bit() else (0, 0, 0, 0)
    except IndexError:
        return None
    fields = 2 - frame_mbs_only
    unit_x = 1 if chroma_format in (0, 3) else 2
    unit_y = fields * (2 if chroma_format == 1 else 1)
    width = width_mbs * 16 - unit_x * (crop[0] + crop[1])
    height = fields * height_units * 16 - unit_y * (crop[2] + crop[3])
    return (width, height) if width > 0 and height > 0 else None


def h264_keyframe_size(payload: bytes) -> tuple[int, int] | None:
    """Width and height from the SPS a packet carries, alone or in a STAP-A aggregate
    (as browsers send it, before each IDR); None when it carries none."""
    size = len(payload)
    if not size:
        return None
    nal_type = payload[0] & 0x1F
    if nal_type == _H264_NAL_SPS:
        return _h264_sps_size(payload)
    if nal_type == _H264_STAP_A:
        pos = 1
        while pos + 2 < size:
            length = (payload[pos] << 8) | payload[pos + 1]
            nal = payload[pos + 2 : pos + 2 + length]
            if nal and nal[0] & 0x1F == _H264_NAL_SPS:
                return _h264_sps_size(nal)
            pos += 2 + length
    return None


KeyframeDetector = Callable[[bytes], bool]

KEYFRAME_DETECTORS: dict[str, KeyframeDetector] = {
    "video/vp8": is_vp8_keyframe_start,
    "video/h264": is_h264_keyframe_start,
}

# Reads a keyframe's picture size from its first packet (None where it is not there).
FrameSizeReader = Callable[[bytes], "tuple[int, int] | None"]

FRAME_SIZE_READERS: dict[str, FrameSizeReader] = {
    "video/vp8": vp8_keyframe_size,
    "video/h264": h264_keyframe_size,
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
        self.join_requests = 0  # of ``requests``, those of a joining viewer
        self.sent = 0
        self.retries = 0

    async def request(self, *, join: bool = False) -> None:
        self.requests += 1
        self.join_requests += join
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
