"""The gateway's contract: what signaling asks of the media engine, and what it hears back.

Everything here is keyed by stream id (the ``Stream`` primary key as a string) and made of
plain values, so a call crosses a process boundary unchanged: the embedded gateway
(``signaling.gateway.embedded``) serves it with this process's routers, the cluster gateway
(``signaling.gateway.cluster``) sends it to the ``runsfu`` worker concerned, which serves
it with its own embedded gateway. ``VERBS`` is the one list of the calls that travel.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from dataclasses import dataclass
from typing import Any, Protocol

from onair.exceptions import ApplicationError, ServiceUnavailableError

logger = logging.getLogger(__name__)

_LOST_STATES = ("failed", "closed")


def connection_lost(state: str | None) -> bool:
    """Whether a peer's connection state means its connection is lost (``None``: the peer
    is gone): a new publish may replace such a publisher, and a WHIP/WHEP session whose
    peer is lost must start over."""
    return state is None or state in _LOST_STATES


class SfuGatewayError(ApplicationError):
    """The media engine refused a request (surfaced as ``sfu_error``)."""

    code = "sfu_error"


class SfuUnavailableError(SfuGatewayError, ServiceUnavailableError):
    """No media server can take the request: none is running, or one did not answer. The
    server's failure, not the client's: HTTP 503 with ``Retry-After`` (a WHIP/WHEP client
    tries again); a WebSocket page hears it as an ``error`` and keeps its socket."""

    code = "sfu_unavailable"
    retry_after = 3  # a dead worker is replaced in about this long


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


@dataclass(frozen=True)
class IceCandidate:
    """A trickled remote candidate, as in the WebRTC ``RTCIceCandidateInit``; an empty
    ``candidate`` means end-of-candidates."""

    candidate: str
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None


@dataclass(frozen=True)
class RecordingProgress:
    """The recording a stream's router is writing: its id (the ``Recording`` row's), the
    bytes and seconds written so far."""

    recording_id: str
    bytes: int
    seconds: float


def session_id(worker_id: str, local_id: str) -> str:
    """A cluster session id: ``<worker>.<id in that worker's SFU>``."""
    return f"{worker_id}.{local_id}"


def session_worker(session: str) -> str:
    """The id of the cluster worker that holds ``session``."""
    return session.partition(".")[0]


def local_session_id(session: str) -> str:
    """The id of ``session`` in its SFU (as its events name it); itself in embedded mode."""
    return session.rpartition(".")[2]


class Gateway(Protocol):
    """The media engine as signaling sees it: one instance per process
    (``signaling.gateway.gateway``). Refusals are ``ApplicationError``\\ s."""

    # --- lifecycle ---------------------------------------------------------------------

    def expect_publisher(self, *, stream_id: str) -> None:
        """A broadcast live in the database that nothing here holds (this process just
        started after one died): it ends after the publisher grace period unless a
        publisher came back to it by then."""

    async def stopping(self) -> None:
        """This process is about to stop serving media (``close_all`` next): no new
        sessions; the viewers of every broadcast it holds hear "reconnecting"."""

    async def close_all(self, *, wait_seconds: float = ...) -> None:
        """Close every broadcast held here, waiting up to ``wait_seconds`` for the work
        that sets off (sessions ending in the database, messages to the pages)."""

    async def close_router(self, *, stream_id: str) -> None:
        """End the broadcast in the SFU: its publisher and every viewer are closed."""

    def close_router_soon(self, *, stream_id: str) -> None:
        """``close_router`` from synchronous code (REST API, admin)."""

    # --- publishers --------------------------------------------------------------------

    async def publish(
        self, *, stream_id: str, offer_sdp: str, client: str | None = None
    ) -> PublishResult:
        """Answer a broadcaster's offer. A publisher already there is replaced and every
        viewer moves to the new tracks without renegotiating: once the new one is connected
        if the current one is healthy (until then the new one is pending), else at once.
        ``client``: the address it comes from, for the session caps."""

    async def publisher_active(self, *, stream_id: str) -> bool:
        """A publisher that is connected or still connecting. One whose connection was lost
        or whose media stopped (waiting out its grace period) does not count: a new publish
        may replace it."""

    async def publisher_gone(self, *, stream_id: str, session_id: str) -> None:
        """The client that published ``session_id`` is gone (its studio page closed): if
        that session is still the stream's publisher, its viewers see "reconnecting" now
        and its grace period starts."""

    async def publisher_withdraw(self, *, stream_id: str, session_id: str) -> bool:
        """Close ``session_id`` if it is a pending publisher (its takeover not done yet):
        its client gave up, and the current publisher carries on. False if it is not."""

    async def publisher_connection_state(self, *, stream_id: str, session_id: str) -> str | None:
        """The publisher session's connection state (current or pending); ``None`` once it
        is over."""

    async def publisher_candidate(
        self, *, stream_id: str, session_id: str, candidate: IceCandidate
    ) -> None:
        """A trickled candidate of the publisher (a replaced session's is ignored)."""

    async def publisher_restart_ice(
        self, *, stream_id: str, session_id: str, remote: IceCredentials
    ) -> IceCredentials:
        """ICE restart of a publisher (WHIP ``PATCH`` with ``If-Match: "*"``)."""

    # --- viewers -----------------------------------------------------------------------

    async def subscribe(
        self,
        *,
        stream_id: str,
        offer_sdp: str | None = None,
        notice: ConnectNotice | None = None,
        client: str | None = None,
    ) -> ViewResult:
        """Add a viewer. Without ``offer_sdp`` the result holds the server's offer (the
        watch page answers it); with one (WHEP), it holds the answer. ``notice``: who to
        tell when it connects or goes; ``client``: its address, for the session caps."""

    async def viewer_connection_state(self, *, stream_id: str, viewer_id: str) -> str | None:
        """The viewer's connection state; ``None`` once it is over."""

    async def viewer_answer(self, *, stream_id: str, viewer_id: str, answer_sdp: str) -> None:
        """The watch page's answer to the server's offer."""

    async def viewer_candidate(
        self, *, stream_id: str, viewer_id: str, candidate: IceCandidate
    ) -> None:
        """A trickled candidate of the viewer (one of a viewer gone is ignored)."""

    async def viewer_restart_ice(
        self, *, stream_id: str, viewer_id: str, remote: IceCredentials
    ) -> IceCredentials:
        """ICE restart of a viewer (WHEP ``PATCH`` with ``If-Match: "*"``)."""

    async def viewer_close(self, *, stream_id: str, viewer_id: str) -> None:
        """Close the viewer (its page left, or asked for a new one)."""

    async def viewer_choose_layer(
        self, *, stream_id: str, viewer_id: str, layer: int | None
    ) -> None:
        """The viewer's choice of video layer (index, lowest quality first), whatever its
        bandwidth estimate; None: Auto, the layer its estimate allows (``sfu.quality``)."""

    # --- recording (served by the stream's origin worker) -------------------------------

    async def recording_start(self, *, stream_id: str, recording_id: str) -> None:
        """Record the broadcast into a spool file named after ``recording_id``, with the
        limits of the settings (``ONAIR_RECORDING_*``); the same id again changes nothing.
        It goes on across publisher replacements and reconnects within the grace period,
        and stops when the router closes. ``RecordingBegan``/``RecordingEnded`` follow."""

    async def recording_stop(self, *, stream_id: str) -> None:
        """Stop recording the broadcast (reason ``stopped``); the broadcast goes on."""

    async def recording_status(self, *, stream_id: str) -> RecordingProgress | None:
        """The recording the stream's router is writing; ``None`` when it writes none (or
        there is no router)."""


async def publisher_status(gateway: Gateway, *, stream_id: str, live: bool) -> str | None:
    """What a watch page shows of the broadcaster: ``None`` when the stream is not live,
    ``"connected"`` while its publisher is active (``Gateway.publisher_active``), else
    ``"reconnecting"`` (lost, media stopped, no publisher at all, or, in cluster mode, no
    answer from the worker that should hold it)."""
    if not live:
        return None
    try:
        active = await gateway.publisher_active(stream_id=stream_id)
    except ApplicationError as exc:  # cluster mode: the worker holding it did not answer
        logger.warning("publisher status unknown: %s", exc.message)
        active = False
    return "connected" if active else "reconnecting"


@dataclass(frozen=True)
class Verb:
    """One call of the contract that a cluster worker serves for a daphne process.

    ``session``: the parameter naming the peer it is about (``session_id``,
    ``viewer_id``), whose worker serves it; ``None`` for the calls the cluster gateway
    places itself (``publish``, ``subscribe``, ``publisher_active``, ``recording_*``).
    ``gone``: what a call for a peer whose worker is gone raises (``ConflictError`` with
    this message), where not raising would hide it; otherwise it returns what the embedded
    gateway answers for a peer that is over (``over``). ``told``: sent without waiting for
    the worker's answer. ``dataclass_params``/``result``: the dataclasses to rebuild on
    arrival, read from the contract's signatures."""

    name: str
    session: str | None = None
    gone: str | None = None
    over: Any = None
    told: bool = False
    dataclass_params: dict[str, type[Any]] = dataclasses.field(default_factory=dict)
    result: type[Any] | None = None

    def encode(self, value: Any) -> Any:
        """A parameter or result as it travels (JSON-able)."""
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        return value

    def decode_params(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            name: (
                self.dataclass_params[name](**value)
                if name in self.dataclass_params and value is not None
                else value
            )
            for name, value in params.items()
        }

    def decode_result(self, value: Any) -> Any:
        return self.result(**value) if self.result is not None and value is not None else value


def _verb(name: str, **routing: Any) -> Verb:
    hints = typing.get_type_hints(getattr(Gateway, name))
    returned = hints.pop("return")

    def dataclass_of(hint: Any) -> type[Any] | None:
        options = typing.get_args(hint) or (hint,)
        found = [o for o in options if isinstance(o, type) and dataclasses.is_dataclass(o)]
        return found[0] if found else None

    params = {p: cls for p, hint in hints.items() if (cls := dataclass_of(hint)) is not None}
    return Verb(name, dataclass_params=params, result=dataclass_of(returned), **routing)


# The code of a recording call for a stream whose broadcast no router holds.
NO_BROADCAST = "no_broadcast"

OVER_PUBLISHING = "This publishing session is over."
OVER_VIEWING = "This viewing session is over."
OVER_VIEWING_ANSWER = "This viewing session is over; ask for a new one."

# The calls a cluster worker serves, by name: what the cluster gateway sends and what the
# worker dispatches to its embedded gateway.
VERBS: dict[str, Verb] = {
    verb.name: verb
    for verb in (
        _verb("publish"),
        _verb("publisher_active"),
        _verb("publisher_gone", session="session_id", told=True),
        _verb("publisher_withdraw", session="session_id", over=False),
        _verb("publisher_connection_state", session="session_id"),
        _verb("publisher_candidate", session="session_id"),
        _verb("publisher_restart_ice", session="session_id", gone=OVER_PUBLISHING),
        _verb("subscribe"),
        _verb("viewer_connection_state", session="viewer_id"),
        _verb("viewer_answer", session="viewer_id", gone=OVER_VIEWING_ANSWER),
        _verb("viewer_candidate", session="viewer_id"),
        _verb("viewer_restart_ice", session="viewer_id", gone=OVER_VIEWING),
        _verb("viewer_close", session="viewer_id", told=True),
        _verb("viewer_choose_layer", session="viewer_id", told=True),
        _verb("close_router", told=True),
        _verb("recording_start"),
        _verb("recording_stop"),
        _verb("recording_status"),
    )
}


# --- what the gateway reports (to ``signaling.gateway.reactions``) ------------------------


@dataclass(frozen=True)
class GatewayEvent:
    stream_id: str


@dataclass(frozen=True)
class PublisherUp(GatewayEvent):
    """The stream's publisher is connected (again)."""

    session_id: str


@dataclass(frozen=True)
class PublisherDown(GatewayEvent):
    """The stream's publisher is lost or stalled (or its process is stopping): its
    viewers wait for it to come back."""

    session_id: str


@dataclass(frozen=True)
class PublisherEnded(GatewayEvent):
    """A publisher session is over. ``reason``: ``"closed"``, ``"replaced"`` (a newer
    publish took over), ``"timeout"`` (its grace period passed), ..."""

    session_id: str
    reason: str


@dataclass(frozen=True)
class BroadcastAbandoned(GatewayEvent):
    """Nobody published to the live broadcast within the grace period: it is over."""


@dataclass(frozen=True)
class BroadcastClosed(GatewayEvent):
    """The stream's router closed (its publisher and viewers with it)."""


@dataclass(frozen=True)
class PosterTaken(GatewayEvent):
    """A thumbnail of the stream's live video (``sfu.ThumbnailTaken``): a JPEG ``width``
    by ``height``, its new poster."""

    jpeg: bytes
    width: int
    height: int


@dataclass(frozen=True)
class ViewerUp(GatewayEvent):
    """A viewer's connection came up. ``notice``: the watch page that asked for it."""

    viewer_id: str
    notice: ConnectNotice | None


@dataclass(frozen=True)
class ViewerQuality(GatewayEvent):
    """What a viewer is sent of the video changed (``sfu.ViewerQualityChanged``):
    ``layer`` (None while ``paused``), the layers' ``heights`` (lowest first, 0 where not
    known), ``auto`` (False: the viewer chose the layer). ``notice``: its watch page."""

    viewer_id: str
    notice: ConnectNotice | None
    layer: int | None
    heights: tuple[int, ...]
    auto: bool
    paused: bool


@dataclass(frozen=True)
class RecordingBegan(GatewayEvent):
    """The SFU opened the recording's spool file ``path`` (``container``: ``webm`` or
    ``mp4``)."""

    recording_id: str
    path: str
    container: str


@dataclass(frozen=True)
class RecordingEnded(GatewayEvent):
    """The SFU stopped writing the recording (``reason``: ``ended``, ``stopped``,
    ``size_limit``, ``duration_limit``, ``disk_full``, ``failed``; ``detail``: a sentence
    for people) and finalized its spool file ``path``, which holds what the other fields
    say (``size`` 0: nothing was recorded, no file)."""

    recording_id: str
    path: str
    reason: str
    detail: str
    duration: float
    size: int
    video_codec: str | None
    audio_codec: str | None
    width: int | None
    height: int | None
    video_frames: int


@dataclass(frozen=True)
class ViewerEnded(GatewayEvent):
    """A viewer is gone; ``reason`` as the SFU's (``"connect_timeout"``, ...)."""

    viewer_id: str
    reason: str
    notice: ConnectNotice | None
