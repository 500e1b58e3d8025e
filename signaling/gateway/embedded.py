"""The gateway served by this process's own routers (``sfu.RouterRegistry``).

The default (``ONAIR_SFU_MODE=embedded``): the SFU runs on the event loop of the process
that serves the signaling (daphne), one router per live stream, keyed by stream id. In
cluster mode each ``runsfu`` worker serves the cluster gateway's calls with one of these.
What the SFU reports becomes a gateway event (``contract.GatewayEvent``) handed to
``signaling.gateway.reactions`` and to any other listener.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from onair.conf import onair_settings
from onair.exceptions import ConflictError, InvalidInputError, ServiceUnavailableError
from sfu import IceCandidate as SfuIceCandidate
from sfu import IceServer as SfuIceServer
from sfu import (
    NegotiationError,
    PublisherClosed,
    PublisherConnected,
    PublisherDisconnected,
    PublisherPeer,
    Router,
    RouterClosed,
    RouterClosedError,
    RouterOptions,
    RouterRegistry,
    SfuEvent,
    ThumbnailTaken,
    ViewerConnected,
    ViewerLeft,
    ViewerPeer,
    ViewerQualityChanged,
)
from sfu.bandwidth import EstimatorSettings
from sfu.events import RecordingStarted, RecordingStopped
from sfu.ice_config import HostNetwork, restart_ice
from sfu.ice_mux import udp_mux
from sfu.quality import QualityOptions
from sfu.sdp_validation import validate_description
from sfu.tasks import TaskSet, log_failure
from signaling.admission import join_admission
from signaling.gateway import metrics, reactions
from signaling.gateway.contract import (
    NO_BROADCAST,
    OVER_PUBLISHING,
    OVER_VIEWING,
    OVER_VIEWING_ANSWER,
    BroadcastAbandoned,
    BroadcastClosed,
    ConnectNotice,
    GatewayEvent,
    IceCandidate,
    IceCredentials,
    PosterTaken,
    PublisherDown,
    PublisherEnded,
    PublisherUp,
    PublishResult,
    RecordingBegan,
    RecordingEnded,
    RecordingProgress,
    SfuGatewayError,
    ViewerEnded,
    ViewerQuality,
    ViewerUp,
    ViewResult,
    connection_lost,
)
from signaling.gateway.recording import recording_assign, recording_spec
from signaling.ice import PeerRole, ice_servers
from signaling.session_limits import SessionCaps, SessionLimits, turn_servers_configured

logger = logging.getLogger(__name__)

CLOSE_WAIT_SECONDS = 10.0  # for close_all: the work the routers' closing set off
RESTART_RETRY_SECONDS = 2  # Retry-After of a session refused by a stopping process
RESTART_DETAIL = "The server recording it stopped (a restart); kept up to then."

# A listener of gateway events: what it returns, if anything, runs as one of the gateway's
# tasks.
EventListener = Callable[[GatewayEvent], Coroutine[Any, Any, None] | None]


class EmbeddedGateway:
    """This process's routers, and their events turned into gateway events.

    ``worker_id``: the cluster worker serving with it (its sessions' ids carry it, see
    ``signaling.gateway.reactions``); ``None`` in embedded mode. ``worker_index``: its
    place among the workers of one ``runsfu --workers N``, which moves its shared ICE port
    (``UDP_MUX_PORT`` + index)."""

    def __init__(self, *, worker_id: str | None = None, worker_index: int = 0) -> None:
        self.worker_id = worker_id
        self.worker_index = worker_index
        self._registry: RouterRegistry | None = None
        self._limits: SessionLimits | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks = TaskSet()
        self._listeners: list[EventListener] = []
        self._notices: dict[str, ConnectNotice] = {}  # by viewer id
        self._expected: set[asyncio.Task[None]] = set()  # see expect_publisher
        self._stopping = False
        metrics.gateway_serves(self)

    # --- lifecycle ---------------------------------------------------------------------

    def routers(self) -> RouterRegistry:
        """This process's routers (a cluster worker adds its edge routers to them)."""
        loop = asyncio.get_running_loop()
        if self._registry is None or self._loop is not loop:
            # A new event loop (tests, a restarted server) starts with no routers: the old
            # loop's peer connections cannot be driven from this one.
            self._registry = RouterRegistry(
                self._router_options(self.worker_index), on_event=self._on_event
            )
            self._limits = SessionLimits(
                SessionCaps.from_settings(turn_servers=turn_servers_configured())
            )
            self._loop = loop
        return self._registry

    async def open_ice_port(self) -> int | None:
        """Bind the process's shared ICE port (``UDP_MUX_PORT``) now rather than at the
        first session, so that a port taken stops a starting worker; the port, if any.
        Raises ``OSError`` if it is taken."""
        port = self.routers().options.host_network.udp_mux_port
        if port is None:
            return None
        return (await udp_mux(port)).port

    @property
    def registry(self) -> RouterRegistry | None:
        """Its routers as they are, without making any (``routers`` makes the registry)."""
        return self._registry

    def limits(self) -> SessionLimits:
        """The caps on this process's peer sessions, and what they hold now."""
        self.routers()
        assert self._limits is not None
        return self._limits

    @staticmethod
    def _router_options(worker_index: int = 0) -> RouterOptions:
        conf = onair_settings()
        mux_port = conf.ice.udp_mux_port + worker_index if conf.ice.udp_mux_port else None
        return RouterOptions(
            ice_servers=tuple(
                SfuIceServer(urls=s.urls, username=s.username, credential=s.credential)
                for s in ice_servers(user=PeerRole.SFU.value)
            ),
            host_network=HostNetwork(
                public_ip=conf.ice.public_ip,
                port_range=conf.ice.udp_port_range,
                udp_mux_port=mux_port,
            ),
            publisher_grace_seconds=conf.publisher_grace_seconds,
            connect_timeout_seconds=conf.connect_timeout_seconds,
            publisher_media_timeout_seconds=conf.publisher_media_timeout_seconds,
            native_forwarding=conf.native_forwarding,
            publish_max_bitrate=conf.publish_max_bitrate,
            thumbnail_interval_seconds=conf.thumbnail_seconds,
            quality=QualityOptions(
                auto_layers=conf.auto_layers,
                estimator=EstimatorSettings(initial_bps=float(conf.viewer_initial_bitrate)),
            ),
        )

    def publisher_grace_seconds(self) -> float:
        """How long a lost publisher's broadcast waits for it (``PUBLISHER_GRACE_SECONDS``)."""
        return self.routers().options.publisher_grace_seconds

    def router(self, stream_id: str) -> Router | None:
        """The stream's router here, if any."""
        return self.routers().get(stream_id)

    def add_listener(self, handler: EventListener) -> None:
        """Also pass every gateway event to ``handler``. What it returns, if anything, runs
        as one of the gateway's tasks."""
        self._listeners.append(handler)

    async def close_all(self, *, wait_seconds: float = CLOSE_WAIT_SECONDS) -> None:
        for waiting in self._expected:
            waiting.cancel()
        if self._registry is not None:
            await self._registry.close_all()
        if not await self._tasks.wait(within=wait_seconds):
            logger.warning(
                "sfu gateway closed with tasks still running", extra={"tasks": len(self._tasks)}
            )

    async def stopping(self) -> None:
        """No new publisher or viewer from now on, and the viewers of every broadcast held
        here hear that its publisher is reconnecting. One that does, to this process
        restarted or to another, carries them on: the broadcast stays live."""
        self._stopping = True
        routers = self._registry.routers if self._registry is not None else ()
        for router in routers:
            if router.publisher is not None:
                await self._react_now(PublisherDown(router.id, router.publisher.id))

    def _check_serving(self) -> None:
        if self._stopping:
            raise ServiceUnavailableError(
                "The media server is restarting; try again in a moment.",
                code="restarting",
                retry_after=RESTART_RETRY_SECONDS,
            )

    def expect_publisher(self, *, stream_id: str) -> None:
        task = asyncio.get_running_loop().create_task(
            self._end_unless_republished(stream_id), context=contextvars.Context()
        )
        self._expected.add(task)
        task.add_done_callback(self._expected.discard)
        task.add_done_callback(log_failure)

    async def _end_unless_republished(self, stream_id: str) -> None:
        await asyncio.sleep(self.publisher_grace_seconds())
        router = self.routers().get(stream_id)
        if router is None or router.publisher is None:
            await self._react_now(BroadcastAbandoned(stream_id))

    async def close_router(self, *, stream_id: str) -> None:
        await self.routers().close(stream_id)

    def close_router_soon(self, *, stream_id: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._tasks.spawn(self.close_router(stream_id=stream_id))
        else:
            loop.call_soon_threadsafe(
                self._tasks.spawn,
                self.close_router(stream_id=stream_id),
                context=contextvars.Context(),
            )

    # --- publishers --------------------------------------------------------------------

    async def publish(
        self, *, stream_id: str, offer_sdp: str, client: str | None = None
    ) -> PublishResult:
        self._check_serving()
        router = self.routers().get_or_create(stream_id)
        limits = self.limits()
        key = limits.admit(address=client)
        try:
            session = await _offered(router.publish(offer_sdp))
        except BaseException:
            limits.release(key)
            raise
        _hold(limits, key, session.id, closed=session.closed)
        return PublishResult(session_id=session.id, answer_sdp=session.answer_sdp)

    async def publisher_active(self, *, stream_id: str) -> bool:
        router = self.router(stream_id)
        publisher = router.publisher if router is not None else None
        return (
            publisher is not None
            and not connection_lost(publisher.connection_state)
            and not publisher.media_stalled
        )

    async def publisher_gone(self, *, stream_id: str, session_id: str) -> None:
        router = self.router(stream_id)
        if router is not None:
            router.publisher_gone(session_id)

    async def publisher_withdraw(self, *, stream_id: str, session_id: str) -> bool:
        router = self.router(stream_id)
        return router is not None and await router.withdraw_pending(session_id)

    def publisher_session(self, stream_id: str, session_id: str) -> PublisherPeer | None:
        """The stream's current or pending publisher ``session_id``."""
        router = self.router(stream_id)
        return router.publisher_session(session_id) if router is not None else None

    async def publisher_connection_state(self, *, stream_id: str, session_id: str) -> str | None:
        publisher = self.publisher_session(stream_id, session_id)
        return publisher.connection_state if publisher is not None else None

    async def publisher_candidate(
        self, *, stream_id: str, session_id: str, candidate: IceCandidate
    ) -> None:
        publisher = self.publisher_session(stream_id, session_id)
        if publisher is None:
            return  # a late candidate for a replaced session: harmless
        await _add_candidate(publisher.add_ice_candidate, candidate)

    async def publisher_restart_ice(
        self, *, stream_id: str, session_id: str, remote: IceCredentials
    ) -> IceCredentials:
        publisher = self.publisher_session(stream_id, session_id)
        if publisher is None:
            raise ConflictError(OVER_PUBLISHING, code="no_session")
        return _restart_ice(publisher, remote)

    # --- viewers -----------------------------------------------------------------------

    async def subscribe(
        self,
        *,
        stream_id: str,
        offer_sdp: str | None = None,
        notice: ConnectNotice | None = None,
        client: str | None = None,
    ) -> ViewResult:
        self._check_serving()
        router = self.routers().get_or_create(stream_id)
        limits = self.limits()
        key = limits.admit(address=client, viewer_of=stream_id)
        try:
            viewer = await _offered(router.subscribe(offer_sdp))
        except BaseException:
            limits.release(key)
            raise
        _hold(limits, key, viewer.id, closed=viewer.closed)
        if notice is not None and not viewer.closed:
            self._notices[viewer.id] = notice
        sdp = viewer.answer_sdp if offer_sdp is not None else viewer.offer_sdp
        assert sdp is not None
        return ViewResult(viewer_id=viewer.id, sdp=sdp)

    def viewer_session(self, stream_id: str, viewer_id: str) -> ViewerPeer | None:
        router = self.router(stream_id)
        return router.get_viewer(viewer_id) if router is not None else None

    async def viewer_connection_state(self, *, stream_id: str, viewer_id: str) -> str | None:
        viewer = self.viewer_session(stream_id, viewer_id)
        return viewer.connection_state if viewer is not None else None

    async def viewer_answer(self, *, stream_id: str, viewer_id: str, answer_sdp: str) -> None:
        viewer = self.viewer_session(stream_id, viewer_id)
        if viewer is None:
            raise ConflictError(OVER_VIEWING_ANSWER, code="no_session")
        try:
            await viewer.accept_answer(answer_sdp)
        except (NegotiationError, ValueError) as exc:
            raise InvalidInputError(f"The answer cannot be used: {exc}", code="bad_sdp") from exc

    async def viewer_candidate(
        self, *, stream_id: str, viewer_id: str, candidate: IceCandidate
    ) -> None:
        viewer = self.viewer_session(stream_id, viewer_id)
        if viewer is not None:
            await _add_candidate(viewer.add_ice_candidate, candidate)

    async def viewer_restart_ice(
        self, *, stream_id: str, viewer_id: str, remote: IceCredentials
    ) -> IceCredentials:
        viewer = self.viewer_session(stream_id, viewer_id)
        if viewer is None:
            raise ConflictError(OVER_VIEWING, code="no_session")
        return _restart_ice(viewer, remote)

    async def viewer_close(self, *, stream_id: str, viewer_id: str) -> None:
        viewer = self.viewer_session(stream_id, viewer_id)
        if viewer is not None:
            await viewer.close()

    async def viewer_choose_layer(
        self, *, stream_id: str, viewer_id: str, layer: int | None
    ) -> None:
        viewer = self.viewer_session(stream_id, viewer_id)
        if viewer is not None:
            viewer.quality.choose(layer)

    # --- recording -------------------------------------------------------------------

    async def recording_start(self, *, stream_id: str, recording_id: str) -> None:
        router = self.router(stream_id)
        if router is None:
            raise ConflictError("The broadcast is not on this media server.", code=NO_BROADCAST)
        try:
            router.start_recording(recording_spec(recording_id))
        except OSError as exc:  # the spool directory cannot be written
            raise SfuGatewayError(f"Recording could not start: {exc.strerror or exc}") from exc
        await recording_assign(recording_id=recording_id, worker_id=self.worker_id)

    async def recording_stop(self, *, stream_id: str) -> None:
        router = self.router(stream_id)
        if router is not None:
            router.stop_recording("stopped")

    async def recording_status(self, *, stream_id: str) -> RecordingProgress | None:
        router = self.router(stream_id)
        status = router.recording if router is not None else None
        if status is None:
            return None
        return RecordingProgress(
            recording_id=status.recording_id, bytes=status.bytes, seconds=status.seconds
        )

    # --- events from the SFU -----------------------------------------------------------

    def _on_event(self, event: SfuEvent) -> None:
        """The SFU's event as the gateway's, to the reactions and the listeners; and the
        session caps released with the peer that held a place, a join's place in the
        admission (``signaling.admission``) once its viewer is up or gone."""
        metrics.sfu_event(event)
        for gateway_event in self._translate(event):
            for work in reactions.react(gateway_event, worker_id=self.worker_id):
                self._tasks.spawn(work)
            for listener in self._listeners:
                try:
                    returned = listener(gateway_event)
                except Exception:
                    logger.exception("gateway event listener failed", extra={"event": event.type})
                else:
                    if returned is not None:
                        self._tasks.spawn(returned)

    def _translate(self, event: SfuEvent) -> list[GatewayEvent]:
        stream_id = event.router_id
        if isinstance(event, ViewerConnected):
            join_admission().settle(event.viewer_id)
            return [ViewerUp(stream_id, event.viewer_id, self._notices.get(event.viewer_id))]
        if isinstance(event, ViewerLeft):
            self.limits().release(event.viewer_id)
            join_admission().settle(event.viewer_id)
            notice = self._notices.pop(event.viewer_id, None)
            return [ViewerEnded(stream_id, event.viewer_id, event.reason, notice)]
        if isinstance(event, ViewerQualityChanged):
            notice = self._notices.get(event.viewer_id)
            if notice is None:
                return []  # a WHEP player: nobody to tell
            return [
                ViewerQuality(
                    stream_id,
                    event.viewer_id,
                    notice,
                    event.layer,
                    event.heights,
                    event.auto,
                    event.paused,
                )
            ]
        if isinstance(event, PublisherConnected):
            return [PublisherUp(stream_id, event.publisher_id)]
        if isinstance(event, PublisherDisconnected):
            return [PublisherDown(stream_id, event.publisher_id)]
        if isinstance(event, PublisherClosed):
            self.limits().release(event.publisher_id)
            ended: list[GatewayEvent] = [
                PublisherEnded(stream_id, event.publisher_id, event.reason)
            ]
            if event.reason == "timeout" and self._holds_publisher(event):
                # The broadcaster did not come back within the grace period: it is over.
                ended.append(BroadcastAbandoned(stream_id))
            return ended
        if isinstance(event, RouterClosed):
            return [BroadcastClosed(stream_id)]
        if isinstance(event, ThumbnailTaken):
            return [PosterTaken(stream_id, event.jpeg, event.width, event.height)]
        if isinstance(event, RecordingStarted):
            return [RecordingBegan(stream_id, event.recording_id, event.path, event.container)]
        if isinstance(event, RecordingStopped):
            reason, detail = event.reason, event.detail
            if self._stopping and reason == "ended":
                # The broadcast stays live through a restart: not its end.
                reason, detail = "interrupted", RESTART_DETAIL
            return [
                RecordingEnded(
                    stream_id,
                    event.recording_id,
                    event.path,
                    reason,
                    detail,
                    event.duration,
                    event.size,
                    event.video_codec,
                    event.audio_codec,
                    event.width,
                    event.height,
                    event.video_frames,
                )
            ]
        return []

    def _holds_publisher(self, event: PublisherClosed) -> bool:
        """Whether the stream's current router is the one whose publisher this was (it
        emits ``PublisherClosed`` before letting go of it): a publisher of an earlier
        router under the same stream id must not end the broadcast live now."""
        router = self._registry.get(event.router_id) if self._registry is not None else None
        publisher = router.publisher if router is not None else None
        return publisher is not None and publisher.id == event.publisher_id

    async def _react_now(self, event: GatewayEvent) -> None:
        """The reactions to ``event``, awaited here rather than run as tasks."""
        for work in reactions.react(event, worker_id=self.worker_id):
            await work


_T = TypeVar("_T")


async def _offered(call: Awaitable[_T]) -> _T:
    """An offer to the SFU; its refusal as the application error it means."""
    try:
        return await call
    except NegotiationError as exc:
        raise InvalidInputError(f"The offer cannot be used: {exc}", code="bad_sdp") from exc
    except RouterClosedError as exc:
        raise ConflictError("The broadcast is closing; try again.", code="closing") from exc


def _hold(limits: SessionLimits, key: str, session_id: str, *, closed: bool) -> None:
    """Count an admitted session under its SFU id, whose end releases it; one that ended
    already (its router closed meanwhile) is released now."""
    limits.rekey(key, session_id)
    if closed:
        limits.release(session_id)


def offer_validate(*, offer_sdp: str) -> None:
    """Refuse a malformed SDP offer before any other work (400 ``bad_sdp``, naming the
    problem); the SFU checks it again, this only makes the refusal cheap and early."""
    try:
        validate_description(offer_sdp, sdp_type="offer")
    except NegotiationError as exc:
        raise InvalidInputError(f"The offer cannot be used: {exc}", code="bad_sdp") from exc


def _restart_ice(peer: PublisherPeer | ViewerPeer, remote: IceCredentials) -> IceCredentials:
    """ICE restart of the SFU's side of ``peer`` (see ``sfu.ice_config.restart_ice``)."""
    try:
        ufrag, pwd = restart_ice(
            peer.peer_connection, remote_ufrag=remote.ufrag, remote_pwd=remote.pwd
        )
    except NegotiationError as exc:
        raise ConflictError(str(exc), code="no_session") from exc
    return IceCredentials(ufrag=ufrag, pwd=pwd)


async def _add_candidate(
    add: Callable[[SfuIceCandidate], Awaitable[None]], candidate: IceCandidate
) -> None:
    try:
        await add(
            SfuIceCandidate(
                candidate=candidate.candidate,
                sdp_mid=candidate.sdp_mid,
                sdp_mline_index=candidate.sdp_mline_index,
            )
        )
    except (NegotiationError, ValueError) as exc:
        raise InvalidInputError(str(exc), code="bad_message") from exc
