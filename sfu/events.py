"""What a router reports to the outside world.

Each event is a small frozen dataclass, so a gateway can forward it as
``{"type": event.type, **dataclasses.asdict(event)}`` without knowing the SFU's
objects. Subscribers register per event class, or for every event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SfuEvent:
    type: ClassVar[str] = "event"
    router_id: str


@dataclass(frozen=True)
class PublisherConnected(SfuEvent):
    """The publisher's connection is up, or its media flows again after a stall."""

    type: ClassVar[str] = "publisher_connected"
    publisher_id: str


@dataclass(frozen=True)
class PublisherDisconnected(SfuEvent):
    """The publisher's connection was lost (``reason`` ``"disconnected"``), never came
    up before its connect deadline (``"connect_timeout"``), its media stopped while its
    connection is up (``"media_timeout"``: ``PublisherConnected`` follows if it resumes
    within the grace period) or its signaling went (``"signaling_closed"``, see
    ``Router.publisher_gone``); its producers wait for a new ``publish()`` during
    ``grace_seconds`` before closing."""

    type: ClassVar[str] = "publisher_disconnected"
    publisher_id: str
    grace_seconds: float
    reason: str = "disconnected"


@dataclass(frozen=True)
class PublisherClosed(SfuEvent):
    """``reason``: ``"closed"`` (asked to), ``"replaced"`` (a new publish took
    over) or ``"timeout"`` (disconnected for longer than the grace period)."""

    type: ClassVar[str] = "publisher_closed"
    publisher_id: str
    reason: str


@dataclass(frozen=True)
class ProducerAdded(SfuEvent):
    type: ClassVar[str] = "producer_added"
    producer_id: str
    publisher_id: str
    kind: str
    mime_type: str
    rid: str | None = None  # the simulcast layer it is; None without simulcast


@dataclass(frozen=True)
class ProducerClosed(SfuEvent):
    type: ClassVar[str] = "producer_closed"
    producer_id: str
    kind: str
    reason: str


@dataclass(frozen=True)
class DownTrackAdded(SfuEvent):
    """A viewer track started to forward a producer (``sfu.downtrack.DownTrack``)."""

    type: ClassVar[str] = "down_track_added"
    down_track_id: str
    viewer_id: str
    producer_id: str
    kind: str


@dataclass(frozen=True)
class DownTrackClosed(SfuEvent):
    """``reason``: ``"producer_closed"``, ``"viewer_closed"`` or ``"codec_mismatch"``."""

    type: ClassVar[str] = "down_track_closed"
    down_track_id: str
    viewer_id: str
    kind: str
    reason: str


@dataclass(frozen=True)
class ViewerJoined(SfuEvent):
    type: ClassVar[str] = "viewer_joined"
    viewer_id: str


@dataclass(frozen=True)
class ViewerConnected(SfuEvent):
    """The viewer's connection is up (ICE and DTLS): from now on it can be counted.
    ``seconds``: since its session was made (``Router.subscribe``)."""

    type: ClassVar[str] = "viewer_connected"
    viewer_id: str
    seconds: float = 0.0


@dataclass(frozen=True)
class ViewerFirstFrame(SfuEvent):
    """The viewer's first video keyframe went out to it, ``seconds`` after its session was
    made (a viewer who joined before the broadcaster's video counts the wait for it)."""

    type: ClassVar[str] = "viewer_first_frame"
    viewer_id: str
    seconds: float


@dataclass(frozen=True)
class ViewerLeft(SfuEvent):
    """``reason``: ``"closed"`` (asked to), ``"disconnected"``, ``"connect_timeout"``
    (not connected by its connect deadline) or ``"router_closed"``."""

    type: ClassVar[str] = "viewer_left"
    viewer_id: str
    reason: str


@dataclass(frozen=True)
class ViewerQualityChanged(SfuEvent):
    """What a viewer is sent of the video changed (``sfu.quality``): ``layer`` (index,
    lowest quality first; None while ``paused``: its link takes no layer, audio goes on),
    ``heights`` (each layer's picture height, lowest first; 0 where not known yet), ``auto``
    (the layer follows the viewer's estimate; False: the viewer chose it)."""

    type: ClassVar[str] = "viewer_quality_changed"
    viewer_id: str
    layer: int | None
    heights: tuple[int, ...]
    auto: bool
    paused: bool


@dataclass(frozen=True)
class RecordingStarted(SfuEvent):
    """A recording's file is open and its first frame written (``sfu.recorder``):
    ``container`` is ``"webm"`` or ``"mp4"``."""

    type: ClassVar[str] = "recording_started"
    recording_id: str
    path: str
    container: str


@dataclass(frozen=True)
class RecordingStopped(SfuEvent):
    """A recording ended and its file is closed (``path``; empty if the publisher's
    codecs were never known). ``reason``: ``"ended"`` (the router closed), ``"stopped"``
    (asked to, or the publisher's codec changed), ``"size_limit"``, ``"duration_limit"``,
    ``"disk_full"`` or ``"failed"``; ``detail`` says it for a person. ``size`` 0: nothing
    was recorded (no file). ``duration`` in seconds; ``width``/``height``: its largest
    picture (a simulcast file may begin on a lower layer, a camera be switched)."""

    type: ClassVar[str] = "recording_stopped"
    recording_id: str
    path: str
    reason: str
    duration: float
    size: int
    video_codec: str | None
    audio_codec: str | None
    width: int | None
    height: int | None
    video_frames: int
    detail: str = ""


@dataclass(frozen=True)
class ProducerStats:
    producer_id: str
    kind: str
    mime_type: str
    packets_received: int
    bytes_received: int
    keyframes_received: int
    keyframe_requests: int
    keyframe_requests_sent: int
    rid: str | None = None  # the simulcast layer it is; None without simulcast
    duplicates_received: int = 0  # packets received again (not forwarded again)


@dataclass(frozen=True)
class DownTrackStats:
    """One viewer track's counters. ``nacks_received`` counts the sequence numbers read
    from the viewer's NACKs (the last ``RetransmissionLimits.per_nack`` of each, or a few
    more: whole FCIs): each was resent (``retransmitted_packets``), could not be
    (``nack_misses``: not forwarded yet, or older than the retransmission age limit) or
    was refused by its retransmission budget (``nacks_refused``, see
    ``sfu.retransmission``)."""

    down_track_id: str
    viewer_id: str
    kind: str
    packets_sent: int
    bytes_sent: int
    nacks_received: int
    retransmitted_packets: int
    nack_misses: int
    nacks_refused: int
    keyframe_requests_received: int
    packets_dropped_waiting_keyframe: int


@dataclass(frozen=True)
class RouterStats(SfuEvent):
    type: ClassVar[str] = "stats"
    viewers: int
    producers: tuple[ProducerStats, ...]
    down_tracks: tuple[DownTrackStats, ...]


@dataclass(frozen=True)
class ThumbnailTaken(SfuEvent):
    """A thumbnail of the broadcast's video (``sfu.thumbnail``): one keyframe decoded,
    scaled to at most the thumbnailer's width and encoded as a JPEG ``width`` by
    ``height``."""

    type: ClassVar[str] = "thumbnail_taken"
    jpeg: bytes
    width: int
    height: int


@dataclass(frozen=True)
class RouterClosed(SfuEvent):
    type: ClassVar[str] = "router_closed"


E = TypeVar("E", bound=SfuEvent)


class EventEmitter:
    """Synchronous observer list. A failing handler is logged and never breaks
    the media path or the other handlers."""

    def __init__(self) -> None:
        self._handlers: dict[type[SfuEvent], list[Callable[[Any], None]]] = {}
        self._any: list[Callable[[SfuEvent], None]] = []

    def on(self, event_type: type[E], handler: Callable[[E], None]) -> None:
        self._handlers.setdefault(event_type, []).append(handler)

    def on_any(self, handler: Callable[[SfuEvent], None]) -> None:
        self._any.append(handler)

    def off(self, handler: Callable[[Any], None]) -> None:
        for handlers in self._handlers.values():
            while handler in handlers:
                handlers.remove(handler)
        while handler in self._any:
            self._any.remove(handler)

    def emit(self, event: SfuEvent) -> None:
        for handler in (*self._handlers.get(type(event), ()), *self._any):
            try:
                handler(event)
            except Exception:
                logger.exception("sfu event handler failed", extra={"event": event.type})

    def clear(self) -> None:
        self._handlers.clear()
        self._any.clear()
