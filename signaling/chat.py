"""The chat over a page's signaling WebSocket (docs/SIGNALING.md, Chat).

A page that shows the chat sends ``chat_join`` and gets the current broadcast's history;
from then on it hears every post, deletion and settings change of the stream's chat, from
any process. Rules live in ``chat.services``; a refusal is a ``chat_error``, never an
``error``, so the media side of the page is not disturbed by it.

Fan-out: each process with pages in a stream's chat has one ``_Relay``, a channel of the
stream's chat group (``chat_group``), which hands each chat event to those pages itself. A
message goes through the channel layer once per process, not once per page: Channels'
per-consumer path (a queue, a task switch, and a thread hop for ``close_old_connections``
per page and message) was most of what fanning a message out cost.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.models import AnonymousUser, User

from broadcast.models import Stream
from chat.models import ChatMessage
from chat.selectors import (
    chat_history,
    chat_may_moderate,
    chat_message_payload,
    chat_settings_get,
    chat_settings_payload,
)
from chat.services import (
    ChatRefusedError,
    chat_delete,
    chat_post,
    chat_restrict,
    chat_settings_update,
)
from onair.conf import onair_settings
from onair.exceptions import ApplicationError
from signaling.messages import (
    ChatConfigure,
    ChatDelete,
    ChatJoin,
    ChatModerate,
    ChatPost,
    ChatRequest,
)

logger = logging.getLogger(__name__)

SendJson = Callable[..., Awaitable[None]]
SendFrame = Callable[[str, str], Awaitable[None]]


def chat_group(stream_id: int | str) -> str:
    """The channel-layer group of the processes with pages in one stream's chat."""
    return f"chat.{stream_id}"


async def chat_announce(stream_id: int | str, kind: str, **fields: Any) -> None:
    """Send a chat event (``chat_message``: ``frame``, ``id``; ``chat_deleted``: ``id``;
    ``chat_settings``: ``settings``) to every page in the stream's chat, in every process."""
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(chat_group(stream_id), {"type": kind, **fields})


# A page joins (reads the history) at most this often: a new socket or a new broadcast
# needs one join, and each costs a database query.
JOIN_INTERVAL_SECONDS = 2.0

# Chat events one relay holds for its pages at most; past it, the oldest are dropped (the
# channel layer's own channels hold 100, and would drop the newest).
RELAY_BACKLOG = 10_000


class _Relay:
    """This process's pages in one stream's chat, fed by one channel of its chat group:
    one task reads the channel at once into a backlog, another hands each event out."""

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.pages: set[ChatSession] = set()
        self.ready = asyncio.Event()
        self.channel = ""
        self.backlog: collections.deque[dict[str, Any]] = collections.deque(maxlen=RELAY_BACKLOG)
        self.pending = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        layer = get_channel_layer()
        try:
            if layer is not None:
                self.channel = await layer.new_channel()
                await layer.group_add(chat_group(self.stream_id), self.channel)
                self.tasks = [
                    asyncio.create_task(self._read(layer), name=f"chat-read-{self.stream_id}"),
                    asyncio.create_task(self._hand_out(), name=f"chat-out-{self.stream_id}"),
                ]
        finally:
            self.ready.set()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        layer = get_channel_layer()
        if layer is not None and self.channel:
            await layer.group_discard(chat_group(self.stream_id), self.channel)

    async def _read(self, layer: Any) -> None:
        while True:
            self.backlog.append(await layer.receive(self.channel))
            self.pending.set()

    async def _hand_out(self) -> None:
        while True:
            await self.pending.wait()
            self.pending.clear()
            while self.backlog:
                await self._deliver(self.backlog.popleft())

    async def _deliver(self, event: dict[str, Any]) -> None:
        for page in list(self.pages):
            try:
                await page.deliver(event)
            except Exception:
                # One page's failure must not cost the others their chat.
                logger.exception("chat delivery failed", extra={"stream": self.stream_id})


_relays: dict[int, _Relay] = {}


async def _relay_join(page: ChatSession) -> None:
    stream_id = page.stream.pk
    relay = _relays.get(stream_id)
    if relay is None:
        relay = _relays[stream_id] = _Relay(stream_id)
        relay.pages.add(page)
        try:
            await relay.start()
        except BaseException:
            relay.pages.clear()
            _relays.pop(stream_id, None)
            raise
    else:
        relay.pages.add(page)
        await relay.ready.wait()


async def _relay_leave(page: ChatSession) -> None:
    stream_id = page.stream.pk
    relay = _relays.get(stream_id)
    if relay is None or page not in relay.pages:
        return
    relay.pages.discard(page)
    if not relay.pages:
        del _relays[stream_id]
        await relay.stop()


class ChatSession:
    """One page's part in a stream's chat: joined or not, and what it asks."""

    def __init__(
        self,
        *,
        stream: Stream,
        user: User | AnonymousUser,
        address: str | None,
        send: SendJson,
        send_frame: SendFrame,
        may_follow: Callable[[], bool],
    ) -> None:
        self.stream = stream
        self.user = user
        self.address = address
        self.send = send
        self.send_frame = send_frame
        self.may_follow = may_follow
        self.joined = False
        self.joined_at: float | None = None  # monotonic
        # While joining: events that came before the history was sent (then passed on if
        # the history does not hold them already); None once joined.
        self.early: list[dict[str, Any]] | None = None

    async def deliver(self, event: dict[str, Any]) -> None:
        """A chat event from the relay, for this page."""
        if self.early is not None:
            self.early.append(event)
        elif self.joined and self.may_follow():
            await self._pass_on(event)

    async def _pass_on(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "chat_message":
            await self.send_frame(event["frame"], kind)  # serialized once, for every page
        elif kind == "chat_deleted":
            await self.send(kind, id=event["id"])
        elif kind == "chat_settings":
            await self.send(kind, settings=event["settings"])

    async def leave(self) -> None:
        self.joined = False
        self.early = None
        await _relay_leave(self)

    async def handle(self, request: ChatRequest) -> None:
        try:
            if isinstance(request, ChatJoin):
                await self.join()
            elif isinstance(request, ChatPost):
                await self.post(request)
            elif isinstance(request, ChatDelete):
                message = await database_sync_to_async(chat_delete)(
                    stream=self.stream, user=self.user, message_id=request.id
                )
                await chat_announce(self.stream.pk, "chat_deleted", id=message.pk)
            elif isinstance(request, ChatModerate):
                await database_sync_to_async(chat_restrict)(
                    stream=self.stream,
                    user=self.user,
                    message_id=request.id,
                    kind=request.action,
                    seconds=request.seconds,
                )
                await self.send("chat_moderated", action=request.action, id=request.id)
            elif isinstance(request, ChatConfigure):
                settings = await database_sync_to_async(chat_settings_update)(
                    stream=self.stream,
                    user=self.user,
                    enabled=request.enabled,
                    slow_mode_seconds=request.slow_mode_seconds,
                    guests_allowed=request.guests_allowed,
                )
                await chat_announce(
                    self.stream.pk, "chat_settings", settings=chat_settings_payload(settings)
                )
        except ChatRefusedError as exc:
            await self.refuse(exc.code, exc.message, retry_after=exc.retry_after)
        except ApplicationError as exc:
            code = exc.code if exc.code.startswith("chat_") else f"chat_{exc.code}"
            await self.refuse(code, exc.message)

    async def refuse(self, code: str, message: str, *, retry_after: int | None = None) -> None:
        fields: dict[str, Any] = {"code": code, "message": message}
        if retry_after is not None:
            fields["retry_after"] = retry_after
        await self.send("chat_error", **fields)

    async def join(self) -> None:
        now = time.monotonic()
        if self.joined_at is not None and now - self.joined_at < JOIN_INTERVAL_SECONDS:
            raise ChatRefusedError(
                "This page joined the chat a moment ago; it already has the history.",
                code="chat_rate_limited",
                retry_after=math.ceil(JOIN_INTERVAL_SECONDS),
            )
        self.joined_at = now
        # In the relay before the history is read, so no message falls between the two.
        self.early = []
        try:
            await _relay_join(self)
            history, settings, moderator = await database_sync_to_async(self._join_state)()
            authenticated = self.user.is_authenticated
            await self.send(
                "chat_history",
                messages=history,
                settings=settings,
                you={
                    "name": self.user.get_username() if authenticated else None,
                    "guest": not authenticated,
                    "moderator": moderator,
                },
                max_chars=onair_settings().chat.max_chars,
            )
        except BaseException:
            self.early = None
            raise
        early, self.early = self.early or [], None
        self.joined = True
        newest = max((message["id"] for message in history), default=0)
        for event in early:
            if event["type"] != "chat_message" or event["id"] > newest:
                await self._pass_on(event)

    def _join_state(self) -> tuple[list[dict[str, Any]], dict[str, Any], bool]:
        self.stream.refresh_from_db(fields=["started_at", "owner"])
        history = chat_history(stream=self.stream, limit=onair_settings().chat.history)
        settings = chat_settings_payload(chat_settings_get(stream=self.stream))
        moderator = chat_may_moderate(stream=self.stream, user=self.user)
        return [chat_message_payload(message) for message in history], settings, moderator

    async def post(self, request: ChatPost) -> None:
        message: ChatMessage = await database_sync_to_async(chat_post)(
            stream=self.stream,
            user=self.user,
            address=self.address,
            text=request.text,
            guest_name=request.name,
        )
        frame = json.dumps({"type": "chat_message", "message": chat_message_payload(message)})
        await chat_announce(self.stream.pk, "chat_message", frame=frame, id=message.pk)
