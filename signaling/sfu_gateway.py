"""The one module that talks to the media engine (``sfu/``).

Consumers and WHIP/WHEP views call the functions below with a stream and SDP; the gateway
owns the process's ``RouterRegistry`` (one router per live stream, keyed by the stream's
primary key) and relays what the SFU reports back into Django: publisher status goes to
the stream's channel-layer group, and a publisher that stays away past its grace period
ends the broadcast through ``broadcast.services``.

The SFU runs on the event loop of the process that serves the signaling (daphne).
Synchronous code (the REST API, the admin) reaches it through ``close_router_soon``. In
cluster mode (``ONAIR_SFU_MODE=cluster``) ``gateway`` is ``sfu_cluster.ClusterGateway``:
the same calls, served by ``manage.py runsfu`` workers over the Redis channel layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from aiortc import RTCPeerConnection
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from broadcast.models import Stream
from broadcast.services import stream_end
from onair.conf import onair_settings
from onair.exceptions import (
    ApplicationError,
    ConflictError,
    InvalidInputError,
    ServiceUnavailableError,
)
from sfu import (
    IceCandidate,
    NegotiationError,
    PublisherClosed,
    PublisherConnected,
    PublisherDisconnected,
    PublisherPeer,
    Router,
    RouterClosedError,
    RouterOptions,
    RouterRegistry,
    SfuEvent,
    ViewerConnected,
    ViewerLeft,
    ViewerPeer,
)
from sfu.ice_config import HostNetwork, restart_ice
from sfu.sdp_validation import validate_description
from signaling.ice import PeerRole, ice_servers, ice_settings
from signaling.session_limits import SessionCaps, SessionLimits, turn_servers_configured

logger = logging.getLogger(__name__)

CLOSE_WAIT_SECONDS = 10.0  # for close_all: the work the routers' closing set off
RESTART_RETRY_SECONDS = 2  # Retry-After of a session refused by a stopping process

# A listener of SFU events: what it returns, if anything, runs as one of the gateway's tasks.
EventListener = Callable[[SfuEvent], Coroutine[Any, Any, None] | None]

DEFAULT_GRACE_SECONDS = 10.0


def stream_group(stream_id: int | str) -> str:
    """The channel-layer group of everyone connected to one stream."""
    return f"stream.{stream_id}"


class SfuGatewayError(ApplicationError):
    """The media engine refused a request (surfaced as ``sfu_error``)."""

    code = "sfu_error"


@dataclass(frozen=True)
class PublishResult:
    session_id: str
    answer_sdp: str


@dataclass(frozen=True)
class ViewResult:
    viewer_id: str
    sdp: str


@dataclass(frozen=True)
class ConnectNotice:
    """Where to tell a watch page's consumer about the viewer it asked for: a
    ``viewer.connected`` message once its connection is up (it is counted then), a
    ``viewer.gone`` one (with the SFU's reason) if it goes. ``tag`` names the request."""

    channel: str
    tag: str


@dataclass(frozen=True)
class IceCredentials:
    """An ICE agent's ``ice-ufrag`` and ``ice-pwd``."""

    ufrag: str
    pwd: str


class SfuGateway:
    """The process's routers and the bridge from SFU events to Django."""

    def __init__(self) -> None:
        self._registry: RouterRegistry | None = None
        self._limits: SessionLimits | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listeners: list[EventListener] = []
        self._notices: dict[str, ConnectNotice] = {}  # by viewer id
        self._expected: set[asyncio.Task[None]] = set()  # see expect_publisher
        self._stopping = False

    # --- lifecycle ---------------------------------------------------------------------

    def _routers(self) -> RouterRegistry:
        loop = asyncio.get_running_loop()
        if self._registry is None or self._loop is not loop:
            # A new event loop (tests, a restarted server) starts with no routers: the old
            # loop's peer connections cannot be driven from this one.
            options = self._router_options()
            self._registry = RouterRegistry(options, on_event=self._on_event)
            self._limits = SessionLimits(
                SessionCaps.from_settings(turn_servers=turn_servers_configured())
            )
            self._loop = loop
        return self._registry

    def limits(self) -> SessionLimits:
        """The caps on this process's peer sessions, and what they hold now."""
        self._routers()
        assert self._limits is not None
        return self._limits

    @staticmethod
    def _router_options() -> RouterOptions:
        raw = getattr(settings, "ONAIR", {})
        conf = onair_settings()
        network = ice_settings()
        return RouterOptions(
            ice_servers=ice_servers(user=PeerRole.SFU.value),
            host_network=HostNetwork(
                public_ip=network.public_ip, port_range=network.udp_port_range
            ),
            publisher_grace_seconds=float(
                raw.get("PUBLISHER_GRACE_SECONDS", DEFAULT_GRACE_SECONDS)
            ),
            connect_timeout_seconds=conf.connect_timeout_seconds,
            publisher_media_timeout_seconds=conf.publisher_media_timeout_seconds,
        )

    def routers(self) -> RouterRegistry:
        """This process's routers (a cluster worker adds its edge routers to them)."""
        return self._routers()

    def router(self, stream: Stream) -> Router | None:
        return self._routers().get(str(stream.pk))

    def add_listener(self, handler: EventListener) -> None:
        """Also pass every SFU event to ``handler`` (e.g. WHIP/WHEP sessions ending). What it
        returns, if anything, runs as one of the gateway's tasks."""
        self._listeners.append(handler)

    async def close_all(self, *, wait_seconds: float = CLOSE_WAIT_SECONDS) -> None:
        """Close every router, and wait up to ``wait_seconds`` for what their closing set off
        (sessions ending in the database, status messages to the studio) to finish."""
        for waiting in self._expected:
            waiting.cancel()
        if self._registry is not None:
            await self._registry.close_all()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while self._tasks:
            remaining = deadline - loop.time()
            if remaining <= 0:
                logger.warning(
                    "sfu gateway closed with tasks still running", extra={"tasks": len(self._tasks)}
                )
                return
            await asyncio.wait(set(self._tasks), timeout=remaining)

    async def stopping(self) -> None:
        """This process is about to stop serving media (``close_all`` next): it takes no new
        publisher or viewer, and the viewers of every broadcast it holds hear that its
        publisher is reconnecting. One that does, to this process restarted or to another,
        carries them on: the broadcast stays live."""
        self._stopping = True
        routers = self._registry.routers if self._registry is not None else ()
        for router in routers:
            if router.publisher is not None:
                await _group_send(router.id, "publisher.status", status="reconnecting")

    def _check_serving(self) -> None:
        if self._stopping:
            raise ServiceUnavailableError(
                "The media server is restarting; try again in a moment.",
                code="restarting",
                retry_after=RESTART_RETRY_SECONDS,
            )

    def expect_publisher(self, *, stream_id: int | str) -> None:
        """A broadcast live in the database that no router here holds (the process that held
        it died; this one just started): it ends after the publisher grace period, as for a
        lost publisher, unless a publisher came back to it by then."""
        task = asyncio.get_running_loop().create_task(
            self._end_unless_republished(str(stream_id)), context=contextvars.Context()
        )
        self._expected.add(task)
        task.add_done_callback(self._expected.discard)
        task.add_done_callback(self._task_done)

    async def _end_unless_republished(self, stream_id: str) -> None:
        await asyncio.sleep(self._routers().options.publisher_grace_seconds)
        router = self._routers().get(stream_id)
        if router is None or router.publisher is None:
            await end_abandoned_broadcast(stream_id)

    # --- publishers --------------------------------------------------------------------

    async def publish(
        self, *, stream: Stream, offer_sdp: str, client: str | None = None
    ) -> PublishResult:
        """Answer a broadcaster's offer. A publisher already there is replaced and every
        viewer moves to the new tracks without renegotiating: once the new one is connected
        if the current one is healthy (until then the new one is pending, see
        ``sfu.Router``), else at once. ``client``: the address it
        comes from, for the session caps (``signaling.session_limits``)."""
        self._check_serving()
        router = self._routers().get_or_create(str(stream.pk))
        limits = self.limits()
        key = limits.admit(address=client)
        try:
            session = await _offered(router.publish(offer_sdp))
        except BaseException:
            limits.release(key)
            raise
        _hold(limits, key, session.id, closed=session.closed)
        return PublishResult(session_id=session.id, answer_sdp=session.answer_sdp)

    async def publisher_active(self, *, stream: Stream) -> bool:
        """A publisher that is connected or still connecting. One whose connection was lost
        or whose media stopped (waiting out its grace period) does not count: a new publish
        may replace it."""
        router = self.router(stream)
        publisher = router.publisher if router is not None else None
        return (
            publisher is not None
            and not connection_lost(publisher.connection_state)
            and not publisher.media_stalled
        )

    async def publisher_status(self, *, stream: Stream) -> str | None:
        """What a watch page shows of the broadcaster: ``None`` when the stream is not live,
        ``"connected"`` while its publisher is active (see ``publisher_active``), else
        ``"reconnecting"`` (lost, media stopped, no publisher at all, or, in cluster mode, no
        answer from the worker that should hold it)."""
        if stream.state != Stream.State.LIVE:
            return None
        try:
            active = await self.publisher_active(stream=stream)
        except ApplicationError as exc:  # cluster mode: the worker holding it did not answer
            logger.warning("publisher status unknown: %s", exc.message)
            active = False
        return "connected" if active else "reconnecting"

    async def publisher_gone(self, *, stream: Stream, session_id: str) -> None:
        """The client that published ``session_id`` is gone (its studio page closed): if
        that session is still the stream's publisher, its viewers see "reconnecting" now
        and its grace period starts (a new publish within it carries them on)."""
        router = self.router(stream)
        if router is not None:
            router.publisher_gone(session_id)

    async def publisher_withdraw(self, *, stream: Stream, session_id: str) -> bool:
        """Close ``session_id`` if it is a pending publisher (its takeover not done yet):
        its client gave up, and the current publisher carries on. False if it is not."""
        router = self.router(stream)
        return router is not None and await router.withdraw_pending(session_id)

    def publisher_session(self, stream: Stream, session_id: str) -> PublisherPeer | None:
        """The stream's current or pending publisher ``session_id``."""
        router = self.router(stream)
        return router.publisher_session(session_id) if router is not None else None

    async def publisher_connection_state(self, *, stream: Stream, session_id: str) -> str | None:
        """The publisher session's connection state (current or pending); ``None`` once it
        is over."""
        publisher = self.publisher_session(stream, session_id)
        return publisher.connection_state if publisher is not None else None

    async def publisher_candidate(
        self, *, stream: Stream, session_id: str, candidate: IceCandidate
    ) -> None:
        publisher = self.publisher_session(stream, session_id)
        if publisher is None:
            return  # a late candidate for a replaced session: harmless
        await _add_candidate(publisher.add_ice_candidate, candidate)

    async def publisher_restart_ice(
        self, *, stream: Stream, session_id: str, remote: IceCredentials
    ) -> IceCredentials:
        """ICE restart of a publisher (WHIP ``PATCH`` with ``If-Match: "*"``)."""
        publisher = self.publisher_session(stream, session_id)
        if publisher is None:
            raise ConflictError("This publishing session is over.", code="no_session")
        return _restart_ice(publisher.peer_connection, remote)

    async def close_router(self, *, stream_id: int | str) -> None:
        """End the broadcast in the SFU: the publisher and every viewer are closed."""
        await self._routers().close(str(stream_id))

    def close_router_soon(self, *, stream_id: int | str) -> None:
        """``close_router`` from synchronous code (REST API, admin), on the SFU's loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._spawn(self.close_router(stream_id=stream_id))
        else:
            loop.call_soon_threadsafe(
                self._spawn, self.close_router(stream_id=stream_id), context=contextvars.Context()
            )

    # --- viewers -----------------------------------------------------------------------

    async def subscribe(
        self,
        *,
        stream: Stream,
        offer_sdp: str | None = None,
        notice: ConnectNotice | None = None,
        client: str | None = None,
    ) -> ViewResult:
        """Add a viewer. Without ``offer_sdp`` the result holds the server's offer (the
        watch page answers it); with one (WHEP), it holds the answer. ``notice``: who to
        tell when it connects or goes; ``client``: its address, for the session caps."""
        self._check_serving()
        router = self._routers().get_or_create(str(stream.pk))
        limits = self.limits()
        key = limits.admit(address=client, viewer_of=str(stream.pk))
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

    def viewer_session(self, stream: Stream, viewer_id: str) -> ViewerPeer | None:
        router = self.router(stream)
        return router.get_viewer(viewer_id) if router is not None else None

    async def viewer_connection_state(self, *, stream: Stream, viewer_id: str) -> str | None:
        """The viewer's connection state; ``None`` once it is over."""
        viewer = self.viewer_session(stream, viewer_id)
        return viewer.connection_state if viewer is not None else None

    async def viewer_answer(self, *, stream: Stream, viewer_id: str, answer_sdp: str) -> None:
        viewer = self.viewer_session(stream, viewer_id)
        if viewer is None:
            raise ConflictError(
                "This viewing session is over; ask for a new one.", code="no_session"
            )
        try:
            await viewer.accept_answer(answer_sdp)
        except (NegotiationError, ValueError) as exc:
            raise InvalidInputError(f"The answer cannot be used: {exc}", code="bad_sdp") from exc

    async def viewer_candidate(
        self, *, stream: Stream, viewer_id: str, candidate: IceCandidate
    ) -> None:
        viewer = self.viewer_session(stream, viewer_id)
        if viewer is not None:
            await _add_candidate(viewer.add_ice_candidate, candidate)

    async def viewer_restart_ice(
        self, *, stream: Stream, viewer_id: str, remote: IceCredentials
    ) -> IceCredentials:
        """ICE restart of a viewer (WHEP ``PATCH`` with ``If-Match: "*"``)."""
        viewer = self.viewer_session(stream, viewer_id)
        if viewer is None:
            raise ConflictError("This viewing session is over.", code="no_session")
        return _restart_ice(viewer.peer_connection, remote)

    async def viewer_close(self, *, stream: Stream, viewer_id: str) -> None:
        viewer = self.viewer_session(stream, viewer_id)
        if viewer is not None:
            await viewer.close()

    # --- events from the SFU -----------------------------------------------------------

    def _on_event(self, event: SfuEvent) -> None:
        for listener in self._listeners:
            try:
                work = listener(event)
            except Exception:
                logger.exception("sfu event listener failed", extra={"event": event.type})
            else:
                if work is not None:
                    self._spawn(work)
        if isinstance(event, ViewerConnected):
            notice = self._notices.get(event.viewer_id)
            if notice is not None:
                self._spawn(_notify(notice, "viewer.connected"))
        elif isinstance(event, ViewerLeft):
            self.limits().release(event.viewer_id)
            notice = self._notices.pop(event.viewer_id, None)
            if notice is not None:
                self._spawn(_notify(notice, "viewer.gone", reason=event.reason))
        elif isinstance(event, PublisherConnected):
            self._spawn(_group_send(event.router_id, "publisher.status", status="connected"))
        elif isinstance(event, PublisherDisconnected):
            self._spawn(_group_send(event.router_id, "publisher.status", status="reconnecting"))
        elif isinstance(event, PublisherClosed):
            self.limits().release(event.publisher_id)
            if event.reason == "replaced":
                # Whoever published it (a studio page) hears that it was taken over.
                self._spawn(
                    _group_send(
                        event.router_id, "publisher.replaced", publisher_id=event.publisher_id
                    )
                )
            if event.reason == "timeout" and self._holds_publisher(event):
                # The broadcaster did not come back within the grace period: it is over.
                self._spawn(end_abandoned_broadcast(event.router_id))

    def _holds_publisher(self, event: PublisherClosed) -> bool:
        """Whether the stream's current router is the one whose publisher this was (it
        emits ``PublisherClosed`` before letting go of it): a publisher of an earlier
        router under the same stream id must not end the broadcast live now."""
        router = self._registry.get(event.router_id) if self._registry is not None else None
        publisher = router.publisher if router is not None else None
        return publisher is not None and publisher.id == event.publisher_id

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run ``coroutine`` as the gateway's own task, in a fresh context: not in that of
        whoever set it off (a ``database_sync_to_async`` thread ending a broadcast, a
        request's), whose asgiref executor its database calls would otherwise try to use
        after it is gone or busy ("Single thread executor already being used")."""
        task = asyncio.get_running_loop().create_task(coroutine, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("sfu gateway task failed", exc_info=task.exception())


_LOST_STATES = ("failed", "closed")
_T = TypeVar("_T")


def connection_lost(state: str | None) -> bool:
    """Whether a peer's connection state means its connection is lost (``None``: the peer
    is gone)."""
    return state is None or state in _LOST_STATES


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


def _restart_ice(pc: RTCPeerConnection, remote: IceCredentials) -> IceCredentials:
    """ICE restart of the SFU's side of ``pc`` (see ``sfu.ice_config.restart_ice``)."""
    try:
        ufrag, pwd = restart_ice(pc, remote_ufrag=remote.ufrag, remote_pwd=remote.pwd)
    except NegotiationError as exc:
        raise ConflictError(str(exc), code="no_session") from exc
    return IceCredentials(ufrag=ufrag, pwd=pwd)


async def _add_candidate(add: Any, candidate: IceCandidate) -> None:
    try:
        await add(candidate)
    except (NegotiationError, ValueError) as exc:
        raise InvalidInputError(str(exc), code="bad_message") from exc


async def _notify(notice: ConnectNotice, kind: str, **fields: Any) -> None:
    layer = get_channel_layer()
    if layer is not None:
        await layer.send(notice.channel, {"type": kind, "tag": notice.tag, **fields})


async def _group_send(stream_id: str, kind: str, **fields: Any) -> None:
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(stream_group(stream_id), {"type": kind, **fields})


@database_sync_to_async
def _end_stream(stream_id: str) -> None:
    stream = Stream.objects.filter(pk=stream_id).first()
    if stream is not None and stream.is_live:
        with contextlib.suppress(ConflictError):  # ended meanwhile by its owner
            stream_end(stream=stream, reason=Stream.EndReason.PUBLISHER_LOST)


async def end_abandoned_broadcast(stream_id: str) -> None:
    logger.info("publisher did not return; ending the broadcast", extra={"stream_id": stream_id})
    await _end_stream(stream_id)


def _process_gateway() -> SfuGateway:
    """In-process SFU by default; ``ONAIR_SFU_MODE=cluster``: the runsfu workers."""
    from signaling.sfu_cluster import ClusterGateway, cluster_mode  # it builds on this module

    return ClusterGateway() if cluster_mode() else SfuGateway()


gateway = _process_gateway()
