"""The chat over a page's signaling WebSocket (docs/SIGNALING.md, Chat).

A page that shows the chat sends ``chat_join`` and gets the current broadcast's history;
from then on it hears every post, deletion and settings change of the stream's chat through
the stream's channel-layer group (``signaling.groups``), from any process. Rules live in
``chat.services``; a refusal is a ``chat_error``, never an ``error``, so the media side of
the page is not disturbed by it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
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
from signaling.groups import group_send
from signaling.messages import (
    ChatConfigure,
    ChatDelete,
    ChatJoin,
    ChatModerate,
    ChatPost,
    ChatRequest,
)

SendJson = Callable[..., Awaitable[None]]


class ChatSession:
    """One page's part in a stream's chat: joined or not, and what it asks."""

    def __init__(
        self, *, stream: Stream, user: User | AnonymousUser, address: str | None, send: SendJson
    ) -> None:
        self.stream = stream
        self.user = user
        self.address = address
        self.send = send
        self.joined = False

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
                await group_send(self.stream.pk, "chat.deleted", id=message.pk)
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
                await group_send(
                    self.stream.pk, "chat.settings", settings=chat_settings_payload(settings)
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
        history, settings, moderator = await database_sync_to_async(self._join_state)()
        self.joined = True
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
        await group_send(self.stream.pk, "chat.message", frame=frame)
