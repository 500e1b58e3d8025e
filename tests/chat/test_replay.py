"""A recording's replay carries its broadcast's chat, each message at its offset into the
recording; the page renders it as data (JSON), never as HTML."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from broadcast.models import Stream
from chat.models import ChatMessage
from chat.selectors import chat_replay
from tests.recordings.conftest import RecordingFactory, make_recording  # noqa: F401

pytestmark = pytest.mark.django_db

T0 = datetime.fromisoformat("2026-12-01T18:00:00+00:00")


def _say(stream: Stream, user: User, text: str, at: datetime, broadcast: datetime) -> ChatMessage:
    return ChatMessage.objects.create(
        stream=stream,
        broadcast_started_at=broadcast,
        author=user,
        sender=f"user:{user.pk}",
        text=text,
        created_at=at,
    )


def test_a_replay_shows_its_broadcasts_chat_at_each_messages_offset(
    client: Client,
    user: User,
    make_stream: Callable[..., Any],
    make_recording: RecordingFactory,  # noqa: F811
) -> None:
    stream, _ = make_stream(title="Show", visibility=Stream.Visibility.PUBLIC)
    recording = make_recording(
        stream,
        started_at=T0 + timedelta(seconds=5),
        ended_at=T0 + timedelta(minutes=10),
        published=True,
    )
    earlier = T0 - timedelta(days=1)
    _say(stream, user, "another broadcast", earlier + timedelta(seconds=30), earlier)
    _say(stream, user, "before the recording began", T0 + timedelta(seconds=2), T0)
    _say(stream, user, '<img src=x onerror="alert(1)">', T0 + timedelta(seconds=65.5), T0)
    gone = _say(stream, user, "deleted", T0 + timedelta(seconds=70), T0)
    ChatMessage.objects.filter(pk=gone.pk).update(deleted_at=T0 + timedelta(seconds=71))
    _say(stream, user, "after the recording", T0 + timedelta(minutes=11), T0)

    replayed = chat_replay(recording=recording)
    assert [(m["text"], m["offset"]) for m in replayed] == [
        ("before the recording began", 0.0),
        ('<img src=x onerror="alert(1)">', 60.5),
    ]

    html = client.get(f"/recordings/{recording.pk}/").content.decode()
    data = re.search(r'<script id="chat-replay-data" type="application/json">(.*?)</script>', html)
    assert data is not None
    assert json.loads(data[1])[1]["text"] == '<img src=x onerror="alert(1)">'
    assert "<img src=x" not in html  # escaped inside the JSON, never markup
    assert "js/chat_replay.js" in html


def test_a_replay_without_chat_has_no_chat_panel(
    client: Client,
    make_stream: Callable[..., Any],
    make_recording: RecordingFactory,  # noqa: F811
) -> None:
    stream, _ = make_stream(title="Quiet", visibility=Stream.Visibility.PUBLIC)
    recording = make_recording(stream, published=True)
    html = client.get(f"/recordings/{recording.pk}/").content.decode()
    assert 'id="chat"' not in html
