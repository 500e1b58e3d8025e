"""WebSocket consumers: the studio (broadcaster) and the watch page (viewers).

Thin by design: a frame is parsed by ``signaling.messages``, state changes go through
``broadcast``/``viewers`` services, media goes through ``signaling.gateway``. Every
refusal is an ``error`` message with a code (docs/SIGNALING.md); only "no such stream" and
"not allowed to watch" close the socket. One client's bad input never reaches the SFU's
other sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import Counter
from typing import Any

from autobahn.exception import Disconnected
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth.models import AnonymousUser, User

from broadcast.models import Stream
from broadcast.selectors import stream_get_visible, stream_is_managed_by
from broadcast.services import stream_end, stream_key_match, stream_media_set
from onair.conf import onair_settings
from onair.exceptions import (
    ApplicationError,
    ConflictError,
    NotFoundError,
    ServiceUnavailableError,
    TooManyRequestsError,
)
from onair.logcontext import log_context_set, public_session_id
from onair.metrics import signaling_errors, signaling_messages
from recordings.selectors import recording_active
from signaling.admission import JoinTicket, join_admission
from signaling.chat import ChatSession
from signaling.gateway import (
    ConnectNotice,
    IceCandidate,
    PublishResult,
    SfuUnavailableError,
    gateway,
    local_session_id,
    publisher_status,
    session_worker,
)
from signaling.groups import (
    announce_media,
    announce_viewers,
    recording_payload,
    stream_group,
    stream_payload,
)
from signaling.ice import PeerRole, client_ice_fields
from signaling.messages import (
    STUDIO_TYPES,
    WATCH_TYPES,
    Answer,
    Auth,
    Candidate,
    ChatConfigure,
    ChatDelete,
    ChatJoin,
    ChatMessageError,
    ChatModerate,
    ChatPost,
    End,
    Media,
    Message,
    MessageError,
    Offer,
    Ping,
    Quality,
    Restart,
    Watch,
    message_type,
    parse_message,
)
from signaling.publishing import go_live
from signaling.session_limits import RETRY_AFTER_SECONDS, max_websockets
from viewers.models import ViewerSession
from viewers.services import viewer_join, viewer_leave

logger = logging.getLogger(__name__)

CLOSE_NOT_FOUND = 4404
CLOSE_FORBIDDEN = 4403
CLOSE_KEY_REVOKED = 4001  # 4000-4099: the page does not reconnect (the key will not work)
CLOSE_TOO_MANY_SESSIONS = 4429  # over this address's session cap: reconnect later
CLOSE_UNAVAILABLE = 4503  # the server or the broadcast is full: reconnect later

# Open WebSockets per client address, in this process (``MAX_SESSIONS_PER_ADDRESS``), and
# in all (``MAX_WEBSOCKETS``).
_open_sockets: Counter[str] = Counter()
_all_sockets: set[str] = set()  # channel names
_RATE_PER_SECOND = 20.0
_RATE_BURST = 60.0


class _TokenBucket:
    """At most ``burst`` messages at once, refilled at ``rate`` per second."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class _StreamConsumer(AsyncWebsocketConsumer):
    """What both endpoints share: the stream, its group, framing, errors, rate limit."""

    role: PeerRole
    endpoint: str  # the metrics' label: studio, watch
    allowed_types: frozenset[str]
    stream: Stream | None = None
    chat: ChatSession | None = None

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without the ``aclose_old_connections`` it runs before every
        handler: a trip to the database thread per message (three per viewer joining, one
        per chat message fanned out), for nothing: every database call here goes through
        ``database_sync_to_async``, which closes the connection it used."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.group = ""
        self.session_tag = uuid.uuid4().hex
        self.bucket = _TokenBucket(_RATE_PER_SECOND, _RATE_BURST)
        self.counted_address: str | None = None
        slug = self.scope["url_route"]["kwargs"]["slug"]
        # This socket's lines, and those of the SFU work it sets off (onair.logcontext).
        log_context_set(stream=slug, session=public_session_id(f"ws-{self.role.value}"))
        await self.accept()
        if len(_all_sockets) >= max_websockets():
            await self.refuse(
                ServiceUnavailableError(
                    "The server has as many connections as it can take; try again later.",
                    code="server_full",
                    retry_after=RETRY_AFTER_SECONDS,
                )
            )
            return
        _all_sockets.add(self.channel_name)
        address = self.client_address
        cap = onair_settings().max_sessions_per_address
        if address is not None and cap and _open_sockets[address] >= cap:
            await self.refuse(
                TooManyRequestsError(
                    f"This address has {cap} WebSockets open, the most it may.",
                    code="too_many_sessions",
                    retry_after=RETRY_AFTER_SECONDS,
                )
            )
            return
        if address is not None:
            _open_sockets[address] += 1
            self.counted_address = address
        try:
            self.stream = await self.load_stream(slug)
        except ApplicationError as exc:
            await self.send_error(exc.code, exc.message)
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.group = stream_group(self.stream.pk)
        self.chat = ChatSession(
            stream=self.stream,
            user=self.user,
            address=self.client_address,
            send=self.send_json,
            send_frame=self.send_frame,
            may_follow=self.may_follow,
        )
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.send_json(
            "welcome",
            role=self.role.value,
            stream=self.visible_payload(),
            polite=True,
            **client_ice_fields(user=self.session_tag, role=self.role),
            **(await self.welcome_fields()),
        )

    async def disconnect(self, code: int) -> None:
        _all_sockets.discard(self.channel_name)
        if self.chat is not None:
            await self.chat.leave()
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        address, self.counted_address = self.counted_address, None
        if address is not None:
            _open_sockets[address] -= 1
            if _open_sockets[address] <= 0:
                del _open_sockets[address]

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.stream is None:
            return
        if not self.bucket.take():
            await self.send_error("rate_limited", "Too many messages; slow down.")
            return
        kind = "invalid"
        try:
            message = parse_message(text_data, bytes_data, allowed=self.allowed_types)
            kind = message_type(message)
            if isinstance(message, Ping):
                await self.send_json("pong")
            elif isinstance(
                message, ChatJoin | ChatPost | ChatDelete | ChatModerate | ChatConfigure
            ):
                await self.chat_request(message)
            else:
                await self.handle(message)
        except SfuUnavailableError as exc:  # the media server, not a cap: keep the socket
            await self.send_error(exc.code, exc.message)
        except (TooManyRequestsError, ServiceUnavailableError) as exc:
            await self.refuse(exc)
        except ChatMessageError as exc:
            await self.send_json("chat_error", code=exc.code, message=exc.message)
        except (MessageError, ApplicationError) as exc:
            await self.send_error(exc.code, exc.message)
        except Exception:
            # The boundary: a bug must cost this client one request, not its connection.
            logger.exception("signaling request failed", extra={"slug": self.stream.slug})
            await self.send_error("internal", "The server could not handle that; try again.")
        finally:
            signaling_messages.labels(self.endpoint, kind).inc()

    # --- for subclasses ------------------------------------------------------------

    async def load_stream(self, slug: str) -> Stream:
        raise NotImplementedError

    async def welcome_fields(self) -> dict[str, Any]:
        return {}

    def visible_payload(self) -> dict[str, Any]:
        assert self.stream is not None
        return stream_payload(self.stream)

    async def handle(self, message: Message) -> None:
        raise NotImplementedError

    # --- helpers -------------------------------------------------------------------

    @property
    def user(self) -> User | AnonymousUser:
        user = self.scope.get("user")
        return user if user is not None else AnonymousUser()

    async def send_json(self, kind: str, **fields: Any) -> None:
        if kind in ("error", "chat_error"):
            signaling_errors.labels(self.endpoint, fields.get("code", "")).inc()
        await self.send_frame(json.dumps({"type": kind, **fields}), kind)

    async def send_frame(self, text: str, kind: str) -> None:
        """Send one JSON text frame already serialized."""
        try:
            await self.send(text_data=text)
        except (Disconnected, OSError):
            # The client closed while we answered (daphne raises autobahn's Disconnected;
            # ASGI servers may raise OSError): nobody to tell, and no error of ours.
            logger.debug("websocket closed before a message could be sent", extra={"type": kind})

    async def send_error(self, code: str, message: str, **fields: Any) -> None:
        await self.send_json("error", code=code, message=message, **fields)

    async def refuse(self, exc: TooManyRequestsError | ServiceUnavailableError) -> None:
        """A session cap was reached: say which, and close (the page retries later)."""
        await self.send_error(exc.code, exc.message, retry_after=exc.retry_after)
        too_many = isinstance(exc, TooManyRequestsError)
        await self.close(code=CLOSE_TOO_MANY_SESSIONS if too_many else CLOSE_UNAVAILABLE)

    @property
    def client_address(self) -> str | None:
        """The client's address; behind a proxy, daphne ``--proxy-headers`` puts the one
        from X-Forwarded-For here (never read from the headers ourselves)."""
        client = self.scope.get("client")
        return str(client[0]) if client else None

    async def refresh_stream(self) -> Stream:
        assert self.stream is not None
        await database_sync_to_async(self.stream.refresh_from_db)()
        return self.stream

    @staticmethod
    def ice_candidate(message: Candidate) -> IceCandidate:
        return IceCandidate(
            candidate=message.candidate,
            sdp_mid=message.sdp_mid,
            sdp_mline_index=message.sdp_mline_index,
        )

    async def chat_request(
        self, message: ChatJoin | ChatPost | ChatDelete | ChatModerate | ChatConfigure
    ) -> None:
        assert self.chat is not None
        if not self.may_follow():
            await self.send_json(
                "chat_error",
                code="chat_forbidden",
                message="Enter the stream key first to use the chat here.",
            )
            return
        await self.chat.handle(message)

    # --- group messages (channel layer) ----------------------------------------------

    def may_follow(self) -> bool:
        return True

    async def stream_state(self, event: dict[str, Any]) -> None:
        if self.may_follow():
            await self.send_json("state", stream=event["stream"])

    async def stream_viewers(self, event: dict[str, Any]) -> None:
        if self.may_follow():
            await self.send_json("viewers", count=event["count"], peak=event["peak"])

    async def publisher_status(self, event: dict[str, Any]) -> None:
        pass

    async def sfu_worker_gone(self, event: dict[str, Any]) -> None:
        pass

    async def stream_key_revoked(self, event: dict[str, Any]) -> None:
        pass

    async def publisher_replaced(self, event: dict[str, Any]) -> None:
        pass

    async def recording_state(self, event: dict[str, Any]) -> None:
        pass

    async def stream_media(self, event: dict[str, Any]) -> None:
        pass


class StudioConsumer(_StreamConsumer):
    """``/ws/studio/<slug>/``: the broadcaster. The owner (or staff) is authorized by
    their session; anyone else must send the stream key in an ``auth`` message."""

    role = PeerRole.PUBLISHER
    endpoint = "studio"
    allowed_types = STUDIO_TYPES
    publisher_session_id: str | None = None

    async def load_stream(self, slug: str) -> Stream:
        stream, self.by_login = await _studio_stream(slug=slug, user=self.user)
        self.authorized = self.by_login
        # The key that let this client in; ``None`` for the owner's (or staff's) login, which
        # a key's revocation does not end.
        self.key_id: int | None = None
        self.publisher_session_id: str | None = None
        return stream

    async def welcome_fields(self) -> dict[str, Any]:
        if not self.authorized:
            return {"authorized": False}
        return {
            "authorized": True,
            "publisher": await self.publisher_presence(),
            "recording": await self.recording_now(),
        }

    async def publisher_presence(self) -> str:
        """``connected`` while someone (this page before a reconnect, another tab or device,
        an encoder) publishes or is connecting, so going live here takes over; else ``none``
        (nobody, or a publisher lost and within its grace period: going live resumes)."""
        assert self.stream is not None
        return (
            "connected" if await gateway.publisher_active(stream_id=str(self.stream.pk)) else "none"
        )

    async def disconnect(self, code: int) -> None:
        # The tab closed (or its network went): its publisher is lost now, not when ICE
        # consent or the media timeout notice. A page that comes back publishes again.
        session, self.publisher_session_id = self.publisher_session_id, None
        if self.stream is not None and session is not None:
            try:
                await gateway.publisher_gone(stream_id=str(self.stream.pk), session_id=session)
            except ApplicationError as exc:  # cluster mode: no worker to tell
                logger.warning("could not report a studio gone: %s", exc.message)
        await super().disconnect(code)

    async def recording_now(self) -> dict[str, Any] | None:
        """The recording being written of this stream's broadcast, if any."""
        assert self.stream is not None
        recording = await database_sync_to_async(recording_active)(stream=self.stream)
        return recording_payload(recording) if recording is not None else None

    def may_follow(self) -> bool:
        return self.authorized

    def visible_payload(self) -> dict[str, Any]:
        # Until they prove they hold the key, strangers learn nothing about the stream.
        assert self.stream is not None
        return super().visible_payload() if self.authorized else {"slug": self.stream.slug}

    async def handle(self, message: Message) -> None:
        assert self.stream is not None
        if isinstance(message, Auth):
            key = await database_sync_to_async(stream_key_match)(
                stream=self.stream, secret=message.key
            )
            self.key_id = key.pk if key is not None else None
            self.authorized = self.by_login or key is not None
            if key is None:
                await self.send_error("forbidden", "That stream key is wrong or was revoked.")
            else:
                # What happened since connecting (state, viewers) was kept from them: now.
                await self.send_json("state", stream=stream_payload(await self.refresh_stream()))
                await self.send_json("publisher", status=await self.publisher_presence())
                recording = await self.recording_now()
                if recording is not None:
                    await self.send_json("recording", **recording)
            return
        if not self.authorized:
            await self.send_error(
                "forbidden", "Only the stream's owner, or someone with its key, can broadcast."
            )
            return
        if isinstance(message, Offer):
            await self.publish(message.sdp, message.media)
        elif isinstance(message, Candidate):
            if self.publisher_session_id is not None:
                await gateway.publisher_candidate(
                    stream_id=str(self.stream.pk),
                    session_id=self.publisher_session_id,
                    candidate=self.ice_candidate(message),
                )
        elif isinstance(message, End):
            await self.end()
        elif isinstance(message, Media):
            await self.media(message)

    async def publish(self, offer_sdp: str, media: Media | None) -> None:
        """Go live (``signaling.publishing.go_live``); going live again after an end starts
        a new broadcast."""
        assert self.stream is not None

        async def hold(result: PublishResult) -> None:
            self.publisher_session_id = result.session_id

        async def release(session_id: str) -> None:
            self.publisher_session_id = None

        publication = await go_live(
            stream=self.stream,
            offer_sdp=offer_sdp,
            key_id=None if self.by_login else self.key_id,
            client=self.client_address,
            hold=hold,
            release=release,
            media=media,
        )
        await self.send_json("answer", sdp=publication.answer_sdp)

    async def media(self, media: Media) -> None:
        """The broadcaster muted or unmuted its microphone, or turned its camera off or on:
        kept on the stream (a viewer who joins later learns it) and told to its viewers."""
        assert self.stream is not None
        if self.publisher_session_id is None:
            await self.send_error(
                "not_publishing",
                "Only the page that is broadcasting can say whether its microphone or camera "
                "is on; go live first.",
            )
            return
        if await database_sync_to_async(stream_media_set)(
            stream=self.stream, mic_muted=media.mic_muted, camera_off=media.camera_off
        ):
            await announce_media(self.stream)

    async def stream_key_revoked(self, event: dict[str, Any]) -> None:
        """A key was revoked or replaced: a client it let in is let go, at once. (The
        broadcast it published was ended by the service that revoked the key.)"""
        if self.by_login or self.key_id is None or self.key_id != event["key_id"]:
            return
        self.publisher_session_id = None
        # Its last word on the stream (ended, if this key published it), then the refusal.
        await self.send_json("state", stream=stream_payload(await self.refresh_stream()))
        self.authorized = False
        self.key_id = None
        await self.send_error("key_revoked", "The stream key was revoked or replaced.")
        await self.close(code=CLOSE_KEY_REVOKED)

    async def publisher_status(self, event: dict[str, Any]) -> None:
        if self.authorized:
            await self.send_json("publisher", status=event["status"])

    async def recording_state(self, event: dict[str, Any]) -> None:
        """A recording of the stream began or stopped (and why)."""
        if self.authorized:
            await self.send_json("recording", **event["recording"])

    async def publisher_replaced(self, event: dict[str, Any]) -> None:
        """A newer publish (another studio tab or device, or a WHIP client) took over from
        this page's publisher: the page stops sending and says why."""
        session = self.publisher_session_id
        if session is None or local_session_id(session) != event["publisher_id"]:
            return
        self.publisher_session_id = None
        await self.send_json(
            "replaced", message="You went live from another tab or device: it took over."
        )

    async def sfu_worker_gone(self, event: dict[str, Any]) -> None:
        """Cluster mode: the SFU worker holding this publisher died. The page publishes
        again at once instead of waiting for its peer connection to fail."""
        session = self.publisher_session_id
        if self.authorized and session is not None and session_worker(session) == event["worker"]:
            self.publisher_session_id = None
            await self.send_json("restart")

    async def end(self) -> None:
        stream = await self.refresh_stream()
        if stream.state != Stream.State.LIVE:
            await self.send_error("not_live", "The stream is not live, so there is nothing to end.")
            return
        await database_sync_to_async(stream_end)(stream=stream, reason=Stream.EndReason.STUDIO)
        # The receiver of stream_state_changed closes the router and tells every viewer;
        # wait for that close here, so a next offer never lands in the closing router.
        self.publisher_session_id = None
        await gateway.close_router(stream_id=str(stream.pk))


class WatchConsumer(_StreamConsumer):
    """``/ws/watch/<slug>/``: a viewer. Once the page sends ``watch``, the server offers
    the broadcast's tracks whenever the stream is live; the page answers. No peer
    connection exists before ``watch``, and the viewer is counted only once its
    connection is up (``viewer.connected`` from the gateway)."""

    role = PeerRole.VIEWER
    endpoint = "watch"
    allowed_types = WATCH_TYPES

    async def load_stream(self, slug: str) -> Stream:
        self.watching = False
        self.viewer_id: str | None = None
        self.viewer_tag = ""  # names the current viewer in the gateway's notices
        self.offer_pending = False
        self.viewer_record: ViewerSession | None = None
        self.join_ticket: JoinTicket | None = None  # this socket's join in progress, if any
        self.queued: asyncio.Task[None] | None = None  # waiting for its turn to join
        return await database_sync_to_async(stream_get_visible)(slug=slug, user=self.user)

    async def welcome_fields(self) -> dict[str, Any]:
        assert self.stream is not None
        status = await publisher_status(
            gateway, stream_id=str(self.stream.pk), live=self.stream.state == Stream.State.LIVE
        )
        return {"publisher": status}

    async def disconnect(self, code: int) -> None:
        if self.stream is not None:  # else refused before it had a stream, or anything else
            await self.stop_viewing()
        await super().disconnect(code)

    async def handle(self, message: Message) -> None:
        assert self.stream is not None
        if isinstance(message, Watch):
            self.watching = True
            stream = await self.refresh_stream()
            if self.viewer_id is None and stream.state == Stream.State.LIVE:
                await self.start_viewing()
        elif isinstance(message, Offer):
            await self.viewer_offer(message.sdp)
        elif isinstance(message, Answer):
            if self.viewer_id is None or not self.offer_pending:
                await self.send_error("no_session", "There is no offer to answer.")
                return
            await gateway.viewer_answer(
                stream_id=str(self.stream.pk), viewer_id=self.viewer_id, answer_sdp=message.sdp
            )
            self.offer_pending = False
        elif isinstance(message, Candidate):
            if self.viewer_id is not None:
                await gateway.viewer_candidate(
                    stream_id=str(self.stream.pk),
                    viewer_id=self.viewer_id,
                    candidate=self.ice_candidate(message),
                )
        elif isinstance(message, Restart):
            await self.restart_viewing()
        elif isinstance(message, Quality) and self.viewer_id is not None:
            await gateway.viewer_choose_layer(
                stream_id=str(self.stream.pk), viewer_id=self.viewer_id, layer=message.layer
            )

    async def join_count(self) -> None:
        """Count this viewer in (once per WebSocket), through the viewers service."""
        assert self.stream is not None
        if self.viewer_record is None:
            self.viewer_record = await database_sync_to_async(viewer_join)(
                stream=self.stream, kind=ViewerSession.Kind.WEB, user=self.user
            )
            await announce_viewers(await self.refresh_stream())

    def connect_notice(self) -> ConnectNotice:
        self.viewer_tag = uuid.uuid4().hex
        return ConnectNotice(channel=self.channel_name, tag=self.viewer_tag)

    async def start_viewing(self) -> None:
        """Offer the broadcast to this page, in its turn (``signaling.admission``): when
        others are joining before it, the page hears ``queued`` and the offer follows once
        a place is free; the socket serves its other messages meanwhile."""
        assert self.stream is not None
        self.watching = True
        if self.queued is not None:
            return  # already waiting for its turn
        if self.join_ticket is None or not self.join_ticket.held:
            self.join_ticket = join_admission().try_enter(address=self.client_address)
            if self.join_ticket is None:
                self.queued = asyncio.ensure_future(self.wait_turn())
                return
        ticket = self.join_ticket
        try:
            result = await gateway.subscribe(
                stream_id=str(self.stream.pk),
                notice=self.connect_notice(),
                client=self.client_address,
            )
        except SfuUnavailableError:
            self.release_join()
            raise  # the media server, not a cap: an error message, the socket stays
        except (TooManyRequestsError, ServiceUnavailableError) as exc:
            self.release_join()
            await self.refuse(exc)  # also when called on a group message, not a request
            return
        except BaseException:
            self.release_join()
            raise
        ticket.bind(result.viewer_id)
        self.viewer_id = result.viewer_id
        self.offer_pending = True
        logger.info("viewer offered", extra={"viewer_id": result.viewer_id})
        await self.send_json("offer", sdp=result.sdp, renegotiate=False)

    async def wait_turn(self) -> None:
        """Wait for a place to join, then start (as a message to this consumer, so that the
        join runs in order with the socket's other messages)."""
        try:
            self.join_ticket = await join_admission().enter(
                address=self.client_address,
                queued=lambda position: self.send_json("queued", position=position),
            )
        except ServiceUnavailableError as exc:
            self.queued = None
            await self.refuse(exc)
            return
        await self.channel_layer.send(self.channel_name, {"type": "join.admitted"})

    async def join_admitted(self, event: dict[str, Any]) -> None:
        """This page's turn to join came (``wait_turn``)."""
        self.queued = None
        assert self.stream is not None
        stream = await self.refresh_stream()
        if self.watching and self.viewer_id is None and stream.state == Stream.State.LIVE:
            await self.start_viewing()
        else:
            self.release_join()

    def release_join(self) -> None:
        """Give this socket's join place back (its viewer is up, gone or never made), or
        leave the queue."""
        ticket, self.join_ticket = self.join_ticket, None
        if ticket is not None:
            ticket.release()
        queued, self.queued = self.queued, None
        if queued is not None:
            queued.cancel()

    async def viewer_offer(self, offer_sdp: str) -> None:
        """The page offers (e.g. to restart its connection). Perfect negotiation: the server
        is the impolite peer, so an offer colliding with the server's own is ignored and the
        page, polite, answers the server's offer instead."""
        stream = await self.refresh_stream()
        if self.offer_pending:
            await self.send_error("glare", "Offers collided; the server's offer stands: answer it.")
            return
        if stream.state != Stream.State.LIVE:
            await self.send_error("not_live", "The broadcast is not live right now.")
            return
        await self.close_viewer()
        self.watching = True
        # The page's offer waits for its answer: its turn is awaited here (bounded).
        ticket = await join_admission().enter(address=self.client_address)
        try:
            result = await gateway.subscribe(
                stream_id=str(stream.pk),
                offer_sdp=offer_sdp,
                notice=self.connect_notice(),
                client=self.client_address,
            )
        except BaseException:
            ticket.release()
            raise
        ticket.bind(result.viewer_id)
        self.viewer_id = result.viewer_id
        await self.send_json("answer", sdp=result.sdp)

    async def restart_viewing(self) -> None:
        stream = await self.refresh_stream()
        if stream.state != Stream.State.LIVE:
            await self.send_error("not_live", "The broadcast is not live right now.")
            return
        await self.close_viewer()
        await self.start_viewing()

    async def close_viewer(self) -> None:
        self.offer_pending = False
        self.release_join()
        if self.viewer_id is not None and self.stream is not None:
            viewer_id, self.viewer_id = self.viewer_id, None
            await gateway.viewer_close(stream_id=str(self.stream.pk), viewer_id=viewer_id)

    async def stop_viewing(self) -> None:
        await self.close_viewer()
        record, self.viewer_record = self.viewer_record, None
        if record is not None:
            await database_sync_to_async(viewer_leave)(session=record)
            await announce_viewers(await self.refresh_stream())

    async def stream_state(self, event: dict[str, Any]) -> None:
        await super().stream_state(event)
        state = event["stream"]["state"]
        if state == Stream.State.LIVE and self.watching and self.viewer_id is None:
            await self.refresh_stream()
            await self.start_viewing()
        elif state == Stream.State.ENDED:
            # The router is closed with the broadcast; the session record was ended by the
            # viewers app. Forget both without counting the viewer out a second time.
            self.release_join()
            self.viewer_id = None
            self.offer_pending = False
            self.viewer_record = None

    async def publisher_status(self, event: dict[str, Any]) -> None:
        await self.send_json("publisher", status=event["status"])

    async def stream_media(self, event: dict[str, Any]) -> None:
        """The broadcaster's microphone or camera went off or on: the page shows it."""
        await self.send_json("media", **event["media"])

    async def recording_state(self, event: dict[str, Any]) -> None:
        """Viewers learn only the state a recording of the stream went to (a ``ready`` one
        reloads the page's past broadcasts, which show only what this viewer may watch)."""
        await self.send_json("recording", state=event["recording"]["state"])

    async def viewer_connected(self, event: dict[str, Any]) -> None:
        """The gateway: this page's viewer connection is up; count the viewer now."""
        if event["tag"] == self.viewer_tag and self.viewer_id is not None:
            with contextlib.suppress(ConflictError):  # the broadcast ended meanwhile
                await self.join_count()

    async def viewer_quality(self, event: dict[str, Any]) -> None:
        """The gateway: what this page's viewer is sent of the video changed."""
        if event["tag"] == self.viewer_tag and self.viewer_id is not None:
            await self.send_json(
                "quality",
                layer=event["layer"],
                heights=event["heights"],
                auto=event["auto"],
                paused=event["paused"],
            )

    async def viewer_gone(self, event: dict[str, Any]) -> None:
        """The gateway: this page's viewer was closed by the SFU. Only its connect deadline
        is news here: the page sees a lost connection itself, and an ended broadcast or a
        dead worker comes as its own message."""
        if event["tag"] != self.viewer_tag or event["reason"] != "connect_timeout":
            return
        self.viewer_id = None
        self.offer_pending = False
        await self.send_error(
            "connect_timeout",
            "The media connection did not come up in time; send restart to try again.",
        )

    async def sfu_worker_gone(self, event: dict[str, Any]) -> None:
        """Cluster mode: an SFU worker process died. A viewer whose session was on it (or
        every viewer, when it held the publisher) gets a fresh offer from a live worker;
        the page takes a new offer by building a new peer connection."""
        lost = self.viewer_id is not None and (
            event["origin"] or session_worker(self.viewer_id) == event["worker"]
        )
        if not lost:
            return
        self.viewer_id = None
        self.offer_pending = False
        stream = await self.refresh_stream()
        if stream.state == Stream.State.LIVE:
            await self.start_viewing()


@database_sync_to_async
def _studio_stream(*, slug: str, user: User | AnonymousUser) -> tuple[Stream, bool]:
    """The stream, and whether ``user`` may broadcast on it by session (owner or staff).

    Anyone may connect to a public or unlisted stream's studio (a key holder authenticates
    with ``auth``); a private one is "not found" to anyone but its owner and staff, exactly
    as a missing one (its key holders publish with WHIP).
    """
    stream = Stream.objects.select_related("owner").filter(slug=slug).first()
    authorized = stream is not None and stream_is_managed_by(stream=stream, user=user)
    if stream is None or (stream.visibility == Stream.Visibility.PRIVATE and not authorized):
        raise NotFoundError("No such stream.")
    return stream, authorized
