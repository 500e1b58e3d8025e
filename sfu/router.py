"""The router: one live broadcast, owning its publisher, producers and viewers."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

from sfu import aiortc_adapter, thumbnail
from sfu.downtrack import DownTrack
from sfu.errors import RouterClosedError
from sfu.events import (
    DownTrackAdded,
    EventEmitter,
    ProducerAdded,
    PublisherConnected,
    PublisherDisconnected,
    RouterClosed,
    RouterStats,
    ViewerJoined,
)
from sfu.ice import IceServer, rtc_configuration
from sfu.ice_config import HostNetwork
from sfu.negotiation import CodecLike, offered_media
from sfu.peer import Peer
from sfu.producer import Producer
from sfu.publisher import PublisherPeer
from sfu.quality import LayeredTrack, QualityOptions
from sfu.recorder import Recorder, RecordingSpec, RecordingStatus
from sfu.retransmission import RetransmissionLimits
from sfu.tasks import TaskSet
from sfu.track import PublishedTrack
from sfu.viewer import ViewerPeer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RouterOptions:
    """Settings shared by a router's peer connections.

    ``ice_servers`` empty means host candidates only (never aiortc's default
    public STUN server). ``host_network`` binds the SFU's ICE sockets to a UDP
    port range and announces a 1:1 NAT public address (see ``sfu.ice_config``).
    ``stats_interval_seconds`` 0 disables periodic ``RouterStats`` events.
    ``connect_timeout_seconds``: a publisher or viewer not connected this long after
    its offer/answer is lost (reason ``"connect_timeout"``); 0 waits forever.
    ``publisher_media_timeout_seconds``: a connected publisher that sends no RTP or RTCP
    on any track this long is disconnected for its viewers (reason ``"media_timeout"``)
    and its grace period starts; if its media comes back within it, it is connected
    again (``PublisherConnected``). 0 leaves it to ICE consent (≈ 30 s).
    ``retransmission`` is each viewer track's NACK budget (see ``sfu.retransmission``).
    ``native_forwarding`` forwards viewers with the C loop (``sfu.native``) where it is
    built; off, the Python loop sends the same packets at about twice the CPU per viewer.
    ``publish_max_bitrate`` (bit/s) is the bandwidth estimate (REMB) each publisher gets
    from its first packet on, lowered only on loss (``sfu.publisher_bandwidth``); 0 leaves
    it to aiortc's receive-side estimator, which starts low and grows ≈ 8 % a second.
    ``quality``: each viewer's bandwidth estimate and choice of video layer
    (``sfu.quality``).
    ``thumbnail_interval_seconds``: a thumbnail of the video every so often
    (``sfu.thumbnail``, ``ThumbnailTaken``), at most ``thumbnail_max_width`` wide; 0: none.
    """

    ice_servers: tuple[IceServer, ...] = ()
    host_network: HostNetwork = field(default_factory=HostNetwork)
    publisher_grace_seconds: float = 10.0
    keyframe_request_interval: float = 1.0
    packet_cache_size: int = 1024
    stats_interval_seconds: float = 5.0
    connect_timeout_seconds: float = 20.0
    publisher_media_timeout_seconds: float = 2.0
    retransmission: RetransmissionLimits = field(default_factory=RetransmissionLimits)
    native_forwarding: bool = True
    publish_max_bitrate: int = 2_500_000
    quality: QualityOptions = field(default_factory=QualityOptions)
    thumbnail_interval_seconds: float = 0.0
    thumbnail_max_width: int = thumbnail.MAX_WIDTH


class Router:
    """One broadcast. Closing it closes everything it owns.

    The tree is Router → PublisherPeer → Producer → DownTrack ← ViewerPeer:
    a producer closing closes its down tracks; a viewer closing closes its own.
    A new ``publish()`` replaces the current publisher and moves every down track
    to the new producer of the same kind, so viewers keep their connection.

    Takeover (make-before-break): while the current publisher is healthy (connected, not
    lost, its media flowing), a new publisher is *pending*: the current one keeps serving
    the viewers until the newcomer's connection is up, and only then is it replaced. A
    pending publisher that never connects (its connect deadline) or fails is closed and
    changes nothing; a newer ``publish()`` replaces it. With no healthy publisher (none,
    lost, within its grace period) a new one takes over at once: its viewers already see
    it reconnecting.
    """

    def __init__(self, options: RouterOptions | None = None, router_id: str | None = None) -> None:
        self.id = router_id or str(uuid.uuid4())
        self.options = options or RouterOptions()
        aiortc_adapter.limit_nack_parsing(self.options.retransmission.per_nack)
        self.events = EventEmitter()
        self.closed = False
        self._close_done = asyncio.Event()
        self._configuration = rtc_configuration(self.options.ice_servers)
        self._offer_configuration = rtc_configuration(self.options.ice_servers, max_bundle=True)
        self._publisher: PublisherPeer | None = None
        self._pending: PublisherPeer | None = None
        self._viewers: dict[str, ViewerPeer] = {}
        self._publish_lock = asyncio.Lock()
        self._grace: asyncio.TimerHandle | None = None
        self._tasks = TaskSet()
        self._stats_task: asyncio.Task[None] | None = None
        self._thumbnailer: thumbnail.Thumbnailer | None = None
        self._recorder: Recorder | None = None
        if self.options.stats_interval_seconds > 0:
            self._stats_task = asyncio.ensure_future(self._report_stats())

    @property
    def publisher(self) -> PublisherPeer | None:
        return self._publisher

    @property
    def pending_publisher(self) -> PublisherPeer | None:
        """A publisher waiting to take over from a healthy one once it is connected."""
        return self._pending

    def publisher_session(self, publisher_id: str) -> PublisherPeer | None:
        """The current or the pending publisher with this id, if either has it."""
        for session in (self._publisher, self._pending):
            if session is not None and session.id == publisher_id:
                return session
        return None

    @property
    def producers(self) -> tuple[Producer, ...]:
        """Every layer of every track of the publisher, flat (``tracks`` groups them)."""
        return self._publisher.producers if self._publisher is not None else ()

    @property
    def tracks(self) -> tuple[PublishedTrack, ...]:
        """The publisher's tracks, each with its layers."""
        return self._publisher.tracks if self._publisher is not None else ()

    @property
    def viewers(self) -> tuple[ViewerPeer, ...]:
        return tuple(self._viewers.values())

    def get_viewer(self, viewer_id: str) -> ViewerPeer | None:
        return self._viewers.get(viewer_id)

    async def publish(self, offer_sdp: str) -> PublisherPeer:
        """Answer a publisher's offer (WHIP-style, sendonly audio and/or video).

        A publisher already there is replaced, and its down tracks move to the new producers
        and continue seamlessly: at once if it is not healthy (lost, within its grace
        period, media stopped, or not connected yet), else once the new one is connected
        (it is pending until then; see the class). Raises NegotiationError for an unusable
        offer.
        """
        self._check_open()
        offered = offered_media(offer_sdp)  # a malformed offer never gets a peer connection
        async with self._publish_lock:
            session = PublisherPeer(
                router_id=self.id,
                configuration=self._configuration,
                network=self.options.host_network,
                cache_size=self.options.packet_cache_size,
                keyframe_request_interval=self.options.keyframe_request_interval,
                emit=self.events.emit,
                on_lost=self._publisher_lost,
                on_closed=self._publisher_closed,
                on_connected=self._publisher_connected,
                media_timeout=self.options.publisher_media_timeout_seconds,
                on_media_stalled=self._publisher_stalled,
                on_media_resumed=self._publisher_resumed,
                native_forwarding=self.options.native_forwarding,
                publish_max_bitrate=self.options.publish_max_bitrate,
            )
            try:
                await session._negotiate(offer_sdp, offered)
                self._check_open()  # closed meanwhile: this publisher would be no one's
            except BaseException:
                await session._close_peer_connection()
                raise
            session._arm_connect_deadline(self.options.connect_timeout_seconds)
            superseded, self._pending = self._pending, None
            if superseded is not None:
                await superseded._close("replaced")
            if self._publisher_healthy():
                self._pending = session
                logger.info(
                    "publisher pending", extra={"router_id": self.id, "publisher_id": session.id}
                )
            else:
                await self._take_over(session)
            return session

    def _publisher_healthy(self) -> bool:
        """Whether the current publisher serves its viewers: a newcomer waits until it is
        connected before replacing it."""
        current = self._publisher
        return (
            current is not None
            and current.connected.is_set()
            and not current.lost
            and not current.media_stalled
            and self._grace is None
        )

    async def _take_over(self, session: PublisherPeer) -> None:
        """Make ``session`` the publisher: announce its producers, move the viewers to
        them and close the previous publisher (reason ``"replaced"``)."""
        previous, self._publisher = self._publisher, session
        self._cancel_grace()
        for producer in session.producers:
            self.events.emit(
                ProducerAdded(
                    router_id=self.id,
                    producer_id=producer.id,
                    publisher_id=session.id,
                    kind=producer.kind,
                    mime_type=producer.mime_type,
                    rid=producer.rid,
                )
            )
        self._thumbnails()
        if previous is not None:
            await self._move_down_tracks(previous.tracks, session.tracks)
            await previous._close("replaced")
        if self._recorder is not None:
            self._recorder.follow(session.tracks)
        for viewer in self.viewers:
            for track in session.tracks:
                await self._consume_track(viewer, track)
        logger.info("publisher joined", extra={"router_id": self.id, "publisher_id": session.id})

    async def _take_over_pending(self, session: PublisherPeer) -> None:
        """The pending ``session`` takes over: it is connected now, or the current
        publisher stopped being healthy (then it need not wait any more)."""
        async with self._publish_lock:  # after a publish under way, which may replace it
            if session is not self._pending or session.lost or self.closed:
                return
            self._pending = None
            await self._take_over(session)
            if not session.connected.is_set():
                return  # its viewers see "reconnecting" until it is (``_publisher_connected``)
            if session.media_stalled:  # stalled while it waited for the lock
                self._start_grace(session, "media_timeout")
            else:
                self.events.emit(PublisherConnected(router_id=self.id, publisher_id=session.id))

    async def subscribe(self, offer_sdp: str | None = None) -> ViewerPeer:
        """Add a viewer.

        With the viewer's offer (WHEP-style, recvonly), ``answer_sdp`` of the
        result is the answer. Without one, ``offer_sdp`` of the result is the
        server's offer: pass the viewer's answer to ``accept_answer``. Raises
        NegotiationError for an unusable offer.
        """
        self._check_open()
        offered = offered_media(offer_sdp) if offer_sdp is not None else None
        viewer = ViewerPeer(
            router_id=self.id,
            configuration=(
                self._configuration if offer_sdp is not None else self._offer_configuration
            ),
            network=self.options.host_network,
            emit=self.events.emit,
            on_lost=self._viewer_lost,
            on_closed=self._viewer_closed,
            native_forwarding=self.options.native_forwarding,
            quality=self.options.quality,
            track_of=self._track_of,
        )
        codecs: dict[str, CodecLike] = {}
        for producer in reversed(self.producers):
            codecs[producer.kind] = producer.codec
        try:
            await viewer._negotiate(offer_sdp, offered, codecs)
            self._check_open()  # closed meanwhile: this viewer would be no one's
        except BaseException:
            await viewer._close_peer_connection()
            raise
        viewer._arm_connect_deadline(self.options.connect_timeout_seconds)
        self._viewers[viewer.id] = viewer
        logger.info("viewer joined", extra={"router_id": self.id, "viewer_id": viewer.id})
        self.events.emit(ViewerJoined(router_id=self.id, viewer_id=viewer.id))
        for track in self.tracks:
            await self._consume_track(viewer, track)
        return viewer

    def publisher_gone(self, publisher_id: str) -> bool:
        """The publisher ``publisher_id`` is gone though its peer connection may not know
        yet (its studio page closed): it is lost now, as if its connection had failed
        (reason ``"signaling_closed"``): the current publisher's grace period starts, a
        pending one is just closed. False if it is neither, or was lost already."""
        session = self.publisher_session(publisher_id)
        if session is None or session.lost or self.closed:
            return False
        session._lose("signaling_closed")
        return True

    async def withdraw_pending(self, publisher_id: str) -> bool:
        """Close the pending publisher ``publisher_id`` (its client gave up on taking over,
        e.g. a WHIP ``DELETE``); the current publisher carries on. False if it is not
        pending (any more)."""
        async with self._publish_lock:  # not while it is taking over
            session = self._pending
            if session is None or session.id != publisher_id:
                return False
            self._pending = None
        await session._close("closed")
        return True

    def start_recording(self, spec: RecordingSpec) -> None:
        """Record the publisher's tracks into ``spec.directory`` (``sfu.recorder``), as they
        are now and as they are replaced (reconnects, switches, a new publisher): from its
        first video keyframe until ``stop_recording``, a limit, or the router closing. The
        same recording again changes nothing; another one stops this one first."""
        self._check_open()
        current = self._recorder
        if current is not None and current.spec.recording_id == spec.recording_id:
            return
        if current is not None:
            self.stop_recording()
        recorder = Recorder(
            spec,
            router_id=self.id,
            emit=self.events.emit,
            spawn=self._tasks.spawn,
            tracks=lambda: self.tracks,
        )
        self._recorder = recorder
        recorder.follow(self.tracks)

    def stop_recording(self, reason: str = "stopped", detail: str = "") -> None:
        """Stop the recording under way, if any; ``RecordingStopped`` follows once its file
        is closed (``Router.close`` waits for it)."""
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            recorder.stop(reason, detail)

    @property
    def recording(self) -> RecordingStatus | None:
        """The recording under way; None when none is (a limit stopped it, say)."""
        recorder = self._recorder
        return recorder.status() if recorder is not None and not recorder.stopped else None

    @property
    def recorder(self) -> Recorder | None:
        """The recorder of the recording under way, or of the last one a limit stopped."""
        return self._recorder

    def stats(self) -> RouterStats:
        return RouterStats(
            router_id=self.id,
            viewers=len(self._viewers),
            producers=tuple(p.stats() for p in self.producers),
            down_tracks=tuple(t.stats() for v in self._viewers.values() for t in v.down_tracks),
        )

    async def close(self) -> None:
        """Close the publisher, every viewer and every pending timer or task; returns once
        that is done, also when another close of it was under way."""
        if self.closed:
            await self._close_done.wait()
            return
        self.closed = True
        try:
            self._cancel_grace()
            if self._stats_task is not None:
                self._stats_task.cancel()
                self._stats_task = None
            if self._thumbnailer is not None:
                await self._thumbnailer.close()
            self.stop_recording("ended")
            for viewer in self.viewers:
                await viewer._close("router_closed")
            for publisher in (self._pending, self._publisher):
                if publisher is not None:
                    await publisher._close("closed")
            await self._tasks.wait()
            self.events.emit(RouterClosed(router_id=self.id))
            self.events.clear()
        finally:
            self._close_done.set()
        logger.info("router closed", extra={"router_id": self.id})

    def _thumbnails(self) -> None:
        """Once the publisher has video: its thumbnails from now on, of whoever publishes
        (taken over at once: the viewers moved to a new publisher ask for the keyframes)."""
        interval = self.options.thumbnail_interval_seconds
        if self._thumbnailer is not None:
            self._thumbnailer.retarget()
        elif interval > 0 and self._video_track() is not None:
            self._thumbnailer = thumbnail.Thumbnailer(
                router_id=self.id,
                interval=interval,
                max_width=self.options.thumbnail_max_width,
                video=self._video_track,
                emit=self.events.emit,
            )
            self._thumbnailer.start()

    def _video_track(self) -> PublishedTrack | None:
        return next((t for t in self.tracks if t.kind == "video"), None)

    def _track_of(self, producer: Producer) -> LayeredTrack | None:
        """The published track ``producer`` is a layer of (for a viewer's layer choice)."""
        return next((t for t in self.tracks if producer in t.offered_layers), None)

    def _check_open(self) -> None:
        if self.closed:
            raise RouterClosedError(f"router {self.id} is closed")

    def _layer_for(self, viewer: ViewerPeer, track: PublishedTrack) -> Producer:
        """The layer of ``track`` a new down track of ``viewer`` starts on
        (``PublishedTrack.default_layer``)."""
        return track.default_layer(time.monotonic())

    async def _consume_track(self, viewer: ViewerPeer, track: PublishedTrack) -> None:
        await self._consume(viewer, self._layer_for(viewer, track))

    async def _consume(self, viewer: ViewerPeer, producer: Producer) -> None:
        slot = viewer.free_slot(producer.kind)
        if slot is None or viewer.closed or producer.closed:
            return
        down_track = DownTrack(
            router_id=self.id,
            viewer_id=viewer.id,
            producer=producer,
            sender=slot.sender,
            munger=slot.munger(producer.codec),
            emit=self.events.emit,
            on_close=slot.detach,
            retransmission=self.options.retransmission,
            on_first_frame=viewer._first_frame,
        )
        self.events.emit(
            DownTrackAdded(
                router_id=self.id,
                down_track_id=down_track.id,
                viewer_id=viewer.id,
                producer_id=producer.id,
                kind=down_track.kind,
            )
        )
        await slot.attach(down_track)

    async def _move_down_tracks(
        self, old: tuple[PublishedTrack, ...], new: tuple[PublishedTrack, ...]
    ) -> None:
        """Move the viewers' down tracks from each track of ``old`` to the track of the
        same kind in ``new`` (in order): from a layer to the layer at the same place
        (lowest first), or the nearest one the new track has. A new publisher's layers
        may not be ordered by size yet (``PublishedTrack``): per-viewer layer choice
        corrects the place later."""
        now = time.monotonic()
        replacements = list(new)
        moves: dict[Producer, Producer] = {}
        for track in old:
            successor = next((t for t in replacements if t.kind == track.kind), None)
            if successor is None:
                continue
            replacements.remove(successor)
            for index, layer in enumerate(track.layers_at(now)):
                moves[layer] = successor.nearest_layer(index, now)
        for viewer in self.viewers:
            for down_track in viewer.down_tracks:
                replacement = moves.get(down_track.producer)
                if replacement is not None:
                    await down_track.switch_producer(replacement)

    def _publisher_connected(self, session: PublisherPeer) -> None:
        if session is self._pending:
            self._tasks.spawn(self._take_over_pending(session))
        elif session is self._publisher and not self.closed:
            self.events.emit(PublisherConnected(router_id=self.id, publisher_id=session.id))

    def _publisher_lost(self, session: Peer) -> None:
        assert isinstance(session, PublisherPeer)
        if session is self._pending:
            # A takeover that failed: the current publisher never knew of it.
            self._pending = None
            self._tasks.spawn(session._close(session.lost_reason))
            return
        if session is not self._publisher or self.closed:
            self._tasks.spawn(session._close("closed"))
            return
        self._tasks.spawn(session._close_peer_connection())
        if session.media_stalled and self._grace is not None:
            return  # its viewers were told when its media stopped, and its grace runs since
        self._start_grace(session, session.lost_reason)

    def _publisher_stalled(self, session: PublisherPeer) -> None:
        """Its media stopped while its connection is still up: a killed encoder or a
        closed tab, long before ICE consent would say so."""
        if session is self._publisher and not self.closed:
            self._start_grace(session, "media_timeout")

    def _publisher_resumed(self, session: PublisherPeer) -> None:
        """Its media is back within the grace period (a network stall): it carries on."""
        if session is not self._publisher or self.closed or self._grace is None:
            return
        self._cancel_grace()
        logger.info("publisher back", extra={"router_id": self.id, "publisher_id": session.id})
        self.events.emit(PublisherConnected(router_id=self.id, publisher_id=session.id))

    def _start_grace(self, session: PublisherPeer, reason: str) -> None:
        """Tell the viewers the publisher is away, and close it unless it is replaced
        (or, after a media stall, its media resumes) within the grace period. A pending
        publisher takes over now."""
        grace = self.options.publisher_grace_seconds
        logger.info(
            "publisher lost",
            extra={"router_id": self.id, "publisher_id": session.id, "reason": reason},
        )
        self.events.emit(
            PublisherDisconnected(
                router_id=self.id, publisher_id=session.id, grace_seconds=grace, reason=reason
            )
        )
        self._cancel_grace()
        self._grace = asyncio.get_running_loop().call_later(
            grace, lambda: self._tasks.spawn(session._close("timeout"))
        )
        if self._pending is not None:
            self._tasks.spawn(self._take_over_pending(self._pending))

    async def _publisher_closed(self, session: PublisherPeer) -> None:
        if session is self._pending:
            self._pending = None
        elif session is self._publisher:
            self._publisher = None
            self._cancel_grace()

    def _viewer_lost(self, session: Peer) -> None:
        assert isinstance(session, ViewerPeer)
        self._tasks.spawn(session._close(session.lost_reason))

    def _viewer_closed(self, viewer: ViewerPeer) -> None:
        self._viewers.pop(viewer.id, None)

    def _cancel_grace(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    async def _report_stats(self) -> None:
        while True:
            await asyncio.sleep(self.options.stats_interval_seconds)
            self.events.emit(self.stats())
