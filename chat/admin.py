"""Admin for the chat: staff find messages by stream, hide them from every page at once,
and see or lift bans and time-outs."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from chat.models import ChatMessage, ChatRestriction, ChatSettings
from chat.services import chat_message_delete
from signaling.chat import chat_announce


@admin.register(ChatMessage)
class ChatMessageAdmin(admin.ModelAdmin):
    list_display = ["created_at", "stream", "author_name", "text", "deleted_at"]
    list_filter = ["stream", ("deleted_at", admin.EmptyFieldListFilter)]
    search_fields = ["text", "author__username", "guest_name", "stream__slug", "stream__title"]
    list_select_related = ["stream", "author"]
    date_hierarchy = "created_at"
    actions = ["delete_from_chat"]
    readonly_fields = [
        "stream",
        "broadcast_started_at",
        "author",
        "guest_name",
        "sender",
        "text",
        "created_at",
        "deleted_at",
        "deleted_by",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="author")
    def author_name(self, message: ChatMessage) -> str:
        return message.author_name

    @admin.action(description="Delete from the chat (hidden on every page at once)")
    def delete_from_chat(self, request: HttpRequest, queryset: QuerySet[ChatMessage]) -> None:
        by = request.user if request.user.is_authenticated else None
        hidden = 0
        for message in queryset.filter(deleted_at__isnull=True):
            if chat_message_delete(message=message, by=by):
                async_to_sync(chat_announce)(message.stream_id, "chat_deleted", id=message.pk)
                hidden += 1
        self.message_user(request, f"{hidden} message(s) deleted from the chat.", messages.SUCCESS)


@admin.register(ChatRestriction)
class ChatRestrictionAdmin(admin.ModelAdmin):
    """Bans and time-outs; deleting one lets its person post again."""

    list_display = ["stream", "who", "kind", "expires_at", "created_by", "created_at"]
    list_filter = ["kind", "stream"]
    search_fields = ["user__username", "guest_name", "stream__slug"]
    list_select_related = ["stream", "user", "created_by"]
    readonly_fields = ["stream", "sender", "user", "guest_name", "created_at", "created_by"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="who")
    def who(self, restriction: ChatRestriction) -> str:
        if restriction.user is not None:
            return restriction.user.get_username()
        return f"{restriction.guest_name or 'guest'} (guest)"


@admin.register(ChatSettings)
class ChatSettingsAdmin(admin.ModelAdmin):
    list_display = ["stream", "enabled", "slow_mode_seconds", "guests_allowed"]
    list_filter = ["enabled", "guests_allowed"]
    search_fields = ["stream__slug", "stream__title"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
