"""The chat over the signaling WebSockets, on the real ASGI app (origin check, auth
middleware, router) with ``WebsocketCommunicator``: every rule a post must pass, moderation,
history, and bad input answered with a ``chat_error`` and no ERROR in the log."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.models import AnonymousUser, User
from django.utils import timezone

from broadcast.models import Stream
from broadcast.services import IssuedKey
from chat.models import ChatMessage, ChatRestriction
from signaling.chat import chat_group
from tests.signaling.test_consumers import Socket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture(autouse=True)
def no_errors(caplog: pytest.LogCaptureFixture) -> Any:
    """Nothing a client sends here may be logged at ERROR."""
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


@pytest.fixture
def stream(stream_parts: tuple[Stream, IssuedKey]) -> Stream:
    return stream_parts[0]


@pytest.fixture
def chat_settings(settings: Any) -> Any:
    """Change ``ONAIR`` chat settings for one test."""

    def change(**values: Any) -> None:
        settings.ONAIR = {**settings.ONAIR, **values}

    return change


async def make_user(name: str, **extra: Any) -> User:
    return await database_sync_to_async(User.objects.create_user)(name, password="pw", **extra)


class Chatter:
    """A page in the chat: ``joined`` holds its ``chat_history``."""

    def __init__(self, socket: Socket, joined: dict[str, Any]) -> None:
        self.socket = socket
        self.joined = joined

    async def say(self, text: str, **fields: Any) -> None:
        await self.socket.send({"type": "chat", "text": text, **fields})

    async def expect(self, kind: str) -> dict[str, Any]:
        return await self.socket.expect(kind, within=10)

    async def said(self, text: str, **fields: Any) -> dict[str, Any]:
        """Post and return the message as the chat sent it back."""
        await self.say(text, **fields)
        return (await self.expect("chat_message"))["message"]

    async def refused(self, text: str, **fields: Any) -> dict[str, Any]:
        await self.say(text, **fields)
        return await self.expect("chat_error")

    async def close(self) -> None:
        await self.socket.close()


@pytest.fixture
async def chatters() -> AsyncIterator[Any]:
    opened: list[Chatter] = []

    async def join(stream: Stream, user: User | None = None, *, page: str = "watch") -> Chatter:
        socket = Socket(f"/ws/{page}/{stream.slug}/", user if user else AnonymousUser())
        assert (await socket.open())["type"] == "welcome"
        await socket.send({"type": "chat_join"})
        chatter = Chatter(socket, await socket.expect("chat_history"))
        opened.append(chatter)
        return chatter

    yield join
    for chatter in opened:
        await chatter.close()


async def test_a_post_reaches_every_page_in_order_with_its_authors_name(
    owner: User, stream: Stream, chatters: Any
) -> None:
    alice = await make_user("alice")
    studio = await chatters(stream, owner, page="studio")
    viewer_a = await chatters(stream, alice)
    reader = await chatters(stream)  # anonymous: reads
    assert viewer_a.joined["you"] == {"name": "alice", "guest": False, "moderator": False}
    assert studio.joined["you"]["moderator"] is True
    assert reader.joined["settings"] == {
        "enabled": True,
        "slow_mode_seconds": 0,
        "guests_allowed": False,
    }

    await viewer_a.say("first")
    await studio.say("second")
    for page in (studio, viewer_a, reader):
        first = (await page.expect("chat_message"))["message"]
        second = (await page.expect("chat_message"))["message"]
        assert (first["author"], first["text"], first["owner"]) == ("alice", "first", False)
        assert (second["author"], second["text"], second["owner"]) == ("owner", "second", True)
        assert first["id"] < second["id"]


async def test_history_is_the_current_broadcasts_last_messages_without_deleted_ones(
    owner: User, stream: Stream, chatters: Any, chat_settings: Any
) -> None:
    chat_settings(CHAT_HISTORY=3, CHAT_RATE_MESSAGES=0)
    studio = await chatters(stream, owner, page="studio")
    ids = [(await studio.said(f"message {n}"))["id"] for n in range(5)]
    await studio.socket.send({"type": "chat_delete", "id": ids[3]})
    await studio.expect("chat_deleted")

    later = await chatters(stream)
    assert [m["text"] for m in later.joined["messages"]] == ["message 1", "message 2", "message 4"]

    # A new broadcast starts a new chat: the earlier one's messages are not its history.
    await database_sync_to_async(Stream.objects.filter(pk=stream.pk).update)(
        started_at=timezone.now(), state=Stream.State.LIVE
    )
    fresh = await chatters(stream)
    assert fresh.joined["messages"] == []


async def test_anonymous_viewers_read_but_post_only_as_named_guests_where_allowed(
    owner: User, stream: Stream, chatters: Any, chat_settings: Any
) -> None:
    chat_settings(CHAT_GUEST_MESSAGES_PER_MINUTE=2)
    studio = await chatters(stream, owner, page="studio")
    guest = await chatters(stream)
    assert guest.joined["you"] == {"name": None, "guest": True, "moderator": False}
    assert (await guest.refused("hello"))["code"] == "chat_login_required"

    await studio.socket.send({"type": "chat_settings", "guests_allowed": True})
    assert (await guest.expect("chat_settings"))["settings"]["guests_allowed"] is True
    assert (await guest.refused("hello"))["code"] == "chat_name_required"
    assert (await guest.refused("hello", name="x" * 25))["code"] == "chat_bad_name"
    message = await guest.said("hello", name="  Visitor ")
    assert (message["author"], message["guest"]) == ("Visitor", True)
    # Guests' posts to one stream are capped, all guests together.
    await guest.said("again", name="Visitor")
    refused = await guest.refused("and again", name="Visitor")
    assert (refused["code"], refused["retry_after"]) == ("chat_busy", 60)


async def test_rate_limit_is_answered_with_the_wait(
    stream: Stream, chatters: Any, chat_settings: Any
) -> None:
    chat_settings(CHAT_RATE_MESSAGES=3, CHAT_RATE_SECONDS=30)
    bob = await chatters(stream, await make_user("bob"))
    for n in range(3):
        await bob.said(f"hi {n}")
    refused = await bob.refused("one too many")
    assert refused["code"] == "chat_rate_limited"
    assert 1 <= refused["retry_after"] <= 30
    assert "too fast" in refused["message"]
    # Counted per person across pages and streams, not per socket.
    again = await chatters(stream, await database_sync_to_async(User.objects.get)(username="bob"))
    assert (await again.refused("from another tab"))["code"] == "chat_rate_limited"


async def test_length_limit_and_empty_messages(
    stream: Stream, chatters: Any, chat_settings: Any
) -> None:
    chat_settings(CHAT_MAX_CHARS=10)
    bob = await chatters(stream, await make_user("bob"))
    assert bob.joined["max_chars"] == 10
    refused = await bob.refused("x" * 11)
    assert refused["code"] == "chat_too_long"
    assert "at most 10 characters" in refused["message"]
    assert (await bob.refused("   "))["code"] == "chat_empty"
    assert (await bob.said("x" * 10))["text"] == "x" * 10


async def test_html_is_carried_as_text_and_control_characters_become_spaces(
    stream: Stream, chatters: Any
) -> None:
    bob = await chatters(stream, await make_user("bob"))
    evil = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    assert (await bob.said(evil))["text"] == evil  # the page renders it with textContent
    assert (await bob.said("a\x00b\nc\u001bd"))["text"] == "a b c d"


async def test_the_owner_deletes_a_message_for_everyone(
    owner: User, stream: Stream, chatters: Any
) -> None:
    studio = await chatters(stream, owner, page="studio")
    alice = await chatters(stream, await make_user("alice"))
    reader = await chatters(stream)
    said = await alice.said("spam")
    for page in (studio, reader):
        await page.expect("chat_message")

    # Only moderators delete.
    await alice.socket.send({"type": "chat_delete", "id": said["id"]})
    assert (await alice.expect("chat_error"))["code"] == "chat_forbidden"

    await studio.socket.send({"type": "chat_delete", "id": said["id"]})
    for page in (studio, alice, reader):
        assert (await page.expect("chat_deleted"))["id"] == said["id"]
    stored = await database_sync_to_async(ChatMessage.objects.get)(pk=said["id"])
    assert stored.deleted_at is not None
    assert stored.deleted_by_id == owner.pk


async def test_a_banned_user_is_refused_clearly_until_let_back_in(
    owner: User, stream: Stream, chatters: Any
) -> None:
    studio = await chatters(stream, owner, page="studio")
    troll = await chatters(stream, await make_user("troll"))
    said = await troll.said("bad words")
    await studio.expect("chat_message")

    await studio.socket.send({"type": "chat_moderate", "action": "ban", "id": said["id"]})
    assert (await studio.expect("chat_moderated"))["action"] == "ban"
    refused = await troll.refused("let me in")
    assert refused["code"] == "chat_banned"
    assert "banned" in refused["message"]

    # The owner cannot be banned; a viewer cannot ban.
    own = await studio.said("mine")
    await troll.socket.send({"type": "chat_moderate", "action": "ban", "id": own["id"]})
    assert (await troll.expect("chat_error"))["code"] == "chat_forbidden"
    await studio.socket.send({"type": "chat_moderate", "action": "ban", "id": own["id"]})
    assert (await studio.expect("chat_error"))["code"] == "chat_forbidden"

    await studio.socket.send({"type": "chat_moderate", "action": "lift", "id": said["id"]})
    await studio.expect("chat_moderated")
    assert (await troll.said("sorry"))["text"] == "sorry"


async def test_a_timed_out_user_waits_out_the_time_out(
    owner: User, stream: Stream, chatters: Any
) -> None:
    staff = await make_user("mod", is_staff=True)
    moderator = await chatters(stream, staff)
    assert moderator.joined["you"]["moderator"] is True
    chatty = await chatters(stream, await make_user("chatty"))
    said = await chatty.said("hey")
    await moderator.socket.send(
        {"type": "chat_moderate", "action": "timeout", "id": said["id"], "seconds": 300}
    )
    await moderator.expect("chat_moderated")
    refused = await chatty.refused("hey again")
    assert refused["code"] == "chat_timed_out"
    assert 290 <= refused["retry_after"] <= 300

    # Once it has run out (moved into the past here), posting works again.
    await database_sync_to_async(ChatRestriction.objects.update)(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    await chatty.said("back")


async def test_slow_mode_spaces_a_viewers_messages_but_not_the_owners(
    owner: User, stream: Stream, chatters: Any
) -> None:
    studio = await chatters(stream, owner, page="studio")
    viewer = await chatters(stream, await make_user("viewer"))
    await studio.socket.send({"type": "chat_settings", "slow_mode_seconds": 30})
    assert (await viewer.expect("chat_settings"))["settings"]["slow_mode_seconds"] == 30
    await viewer.said("one")
    refused = await viewer.refused("two")
    assert refused["code"] == "chat_slow_mode"
    assert 1 <= refused["retry_after"] <= 30
    await studio.said("owner one")
    await studio.said("owner two")
    # A viewer cannot change the settings.
    await viewer.socket.send({"type": "chat_settings", "slow_mode_seconds": 0})
    assert (await viewer.expect("chat_error"))["code"] == "chat_forbidden"


async def test_chat_off_refuses_posts_until_turned_back_on(
    owner: User, stream: Stream, chatters: Any
) -> None:
    studio = await chatters(stream, owner, page="studio")
    viewer = await chatters(stream, await make_user("viewer"))
    await studio.socket.send({"type": "chat_settings", "enabled": False})
    assert (await viewer.expect("chat_settings"))["settings"]["enabled"] is False
    assert (await viewer.refused("anyone?"))["code"] == "chat_off"
    assert (await studio.refused("owner too"))["code"] == "chat_off"
    await studio.socket.send({"type": "chat_settings", "enabled": True})
    await viewer.expect("chat_settings")
    await viewer.said("hello again")


async def test_a_studio_stranger_uses_the_chat_only_with_the_key(
    stream_parts: tuple[Stream, IssuedKey],
) -> None:
    stream, key = stream_parts
    socket = Socket(f"/ws/studio/{stream.slug}/", AnonymousUser())
    try:
        assert (await socket.open())["authorized"] is False
        await socket.send({"type": "chat_join"})
        assert (await socket.expect("chat_error"))["code"] == "chat_forbidden"
        await socket.send({"type": "auth", "key": key.secret})
        await socket.expect("state")
        await socket.send({"type": "chat_join"})
        joined = await socket.expect("chat_history")
        assert joined["you"]["moderator"] is False
    finally:
        await socket.close()


async def test_a_page_hears_the_chat_only_once_it_joins(stream: Stream, chatters: Any) -> None:
    silent = Socket(f"/ws/watch/{stream.slug}/", AnonymousUser())
    try:
        await silent.open()
        bob = await chatters(stream, await make_user("bob"))
        await bob.said("anyone?")
        await silent.send({"type": "ping"})
        assert (await silent.next())["type"] == "pong"  # no chat_message came first
    finally:
        await silent.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "chat"}, "chat_invalid"),
        ({"type": "chat", "text": 5}, "chat_invalid"),
        ({"type": "chat", "text": "x" * 20_000}, "chat_too_long"),
        ({"type": "chat", "text": "hi", "name": ["x"]}, "chat_bad_name"),
        ({"type": "chat_delete"}, "chat_invalid"),
        ({"type": "chat_delete", "id": "1"}, "chat_invalid"),
        ({"type": "chat_delete", "id": True}, "chat_invalid"),
        ({"type": "chat_delete", "id": 999_999}, "chat_no_message"),
        ({"type": "chat_moderate", "action": "nuke", "id": 1}, "chat_invalid"),
        ({"type": "chat_moderate", "action": "timeout", "id": 1}, "chat_invalid"),
        ({"type": "chat_moderate", "action": "timeout", "id": 1, "seconds": -5}, "chat_invalid"),
        (
            {"type": "chat_moderate", "action": "timeout", "id": 999, "seconds": 10**9},
            "chat_no_message",
        ),
        ({"type": "chat_settings", "enabled": "yes"}, "chat_invalid"),
        ({"type": "chat_settings", "slow_mode_seconds": -1}, "chat_invalid"),
        ({"type": "chat_settings", "slow_mode_seconds": 10**6}, "chat_invalid"),
    ],
)
async def test_bad_chat_requests_are_answered_clearly(
    owner: User, stream: Stream, chatters: Any, frame: dict[str, Any], code: str
) -> None:
    studio = await chatters(stream, owner, page="studio")
    await studio.socket.send(frame)
    refused = await studio.expect("chat_error")
    assert refused["code"] == code, refused
    assert refused["message"]
    # The socket carries on.
    await studio.said("still here")


async def test_a_process_takes_each_chat_event_once_for_all_its_pages(
    stream: Stream, chatters: Any
) -> None:
    layer = get_channel_layer()
    group = chat_group(stream.pk)
    pages = [await chatters(stream) for _ in range(3)]
    assert len(layer.groups[group]) == 1  # one relay channel, not one per page
    bob = await chatters(stream, await make_user("bob"))
    said = await bob.said("to all")
    for page in pages:
        assert (await page.expect("chat_message"))["message"]["id"] == said["id"]
    for page in [*pages, bob]:
        await page.close()
    assert not layer.groups.get(group)  # the last page out takes the relay with it


async def test_a_page_joins_at_most_every_two_seconds(stream: Stream, chatters: Any) -> None:
    page = await chatters(stream)
    await page.socket.send({"type": "chat_join"})
    refused = await page.expect("chat_error")
    assert (refused["code"], refused["retry_after"]) == ("chat_rate_limited", 2)
