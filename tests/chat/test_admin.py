"""The chat's admin: messages filtered by stream, the "Delete from the chat" action (which
every page in the chat hears), and bans listed with who they keep out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.models import User
from django.test import Client

from chat.models import ChatMessage, ChatRestriction
from signaling.chat import chat_group

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(superuser: User) -> Client:
    client = Client()
    client.force_login(superuser)
    return client


def test_deleting_from_the_admin_hides_the_message_on_every_page(
    admin: Client, user: User, superuser: User, make_stream: Callable[..., Any]
) -> None:
    stream, _ = make_stream(title="Talk")
    other, _ = make_stream(title="Other")
    spam = ChatMessage.objects.create(stream=stream, author=user, sender="user:1", text="spam")
    ChatMessage.objects.create(stream=other, author=user, sender="user:1", text="elsewhere")
    layer = get_channel_layer()
    page = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(chat_group(stream.pk), page)

    listed = admin.get(f"/admin/chat/chatmessage/?stream__id__exact={stream.pk}")
    assert listed.status_code == 200
    assert b"spam" in listed.content
    assert b"elsewhere" not in listed.content

    done = admin.post(
        "/admin/chat/chatmessage/",
        {"action": "delete_from_chat", "_selected_action": [spam.pk]},
        follow=True,
    )
    assert b"1 message(s) deleted from the chat." in done.content
    spam.refresh_from_db()
    assert spam.deleted_at is not None
    assert spam.deleted_by == superuser
    assert async_to_sync(layer.receive)(page) == {"type": "chat_deleted", "id": spam.pk}


def test_bans_are_listed_with_who_they_keep_out(
    admin: Client, user: User, make_stream: Callable[..., Any]
) -> None:
    stream, _ = make_stream(title="Talk")
    ChatRestriction.objects.create(
        stream=stream, sender="guest:ab", guest_name="Troll", kind=ChatRestriction.Kind.BAN
    )
    listed = admin.get("/admin/chat/chatrestriction/")
    assert listed.status_code == 200
    assert b"Troll (guest)" in listed.content
