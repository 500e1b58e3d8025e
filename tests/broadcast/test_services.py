from __future__ import annotations

import functools

import pytest
from django.contrib.auth.models import User

from broadcast.models import Stream, StreamKey
from broadcast.services import (
    stream_begin,
    stream_create,
    stream_delete,
    stream_end,
    stream_go_live,
    stream_key_revoke,
    stream_key_rotate,
    stream_key_verify,
    stream_restart,
    stream_update,
    stream_viewer_count_change,
)
from broadcast.signals import stream_state_changed
from onair.exceptions import ConflictError, InvalidInputError

pytestmark = pytest.mark.django_db


def test_create_makes_an_idle_stream_with_one_hashed_key(user: User) -> None:
    stream, issued = stream_create(owner=user, title="Morning Show!", description="News")

    assert stream.state == Stream.State.IDLE
    assert stream.slug == "morning-show"
    assert issued.secret.startswith("sk_")
    assert len(issued.secret) >= 40
    key = StreamKey.objects.get(stream=stream)
    assert key == issued.key
    assert key.is_active
    assert issued.secret not in {key.digest, key.prefix}
    assert key.digest == StreamKey.digest_of(issued.secret)
    assert key.masked == issued.secret[:8] + "…"


def test_create_gives_each_stream_a_unique_slug(user: User) -> None:
    first, _ = stream_create(owner=user, title="Same")
    second, _ = stream_create(owner=user, title="Same")
    untitled, _ = stream_create(owner=user, title="!!!")

    assert first.slug == "same"
    assert second.slug.startswith("same-")
    assert second.slug != first.slug
    assert untitled.slug == "stream"


def test_create_refuses_a_taken_slug(user: User) -> None:
    stream_create(owner=user, title="One", slug="mine")
    with pytest.raises(InvalidInputError) as caught:
        stream_create(owner=user, title="Two", slug="mine")
    assert "slug" in caught.value.fields
    assert Stream.objects.count() == 1


def test_update_changes_only_given_fields(user: User) -> None:
    stream, _ = stream_create(owner=user, title="Old", description="Keep me")

    stream_update(stream=stream, title="New", visibility=Stream.Visibility.PRIVATE)

    stream.refresh_from_db()
    assert (stream.title, stream.description, stream.visibility) == ("New", "Keep me", "private")
    stream_update(stream=stream, description="")
    stream.refresh_from_db()
    assert stream.description == ""


def test_lifecycle_idle_live_ended_idle(user: User) -> None:
    stream, _ = stream_create(owner=user, title="Show")

    stream_go_live(stream=stream)
    assert stream.state == Stream.State.LIVE
    assert stream.started_at is not None
    assert stream.ended_at is None

    stream_end(stream=stream, reason=Stream.EndReason.OWNER)
    assert stream.state == Stream.State.ENDED
    assert stream.ended_at is not None
    assert stream.ended_at >= stream.started_at

    stream_restart(stream=stream)
    assert stream.state == Stream.State.IDLE
    assert stream.started_at is None
    assert stream.ended_at is None


def test_the_end_keeps_who_ended_it_until_the_next_broadcast(user: User) -> None:
    stream, _ = stream_create(owner=user, title="Show")
    stream_go_live(stream=stream)

    stream_end(stream=stream, reason=Stream.EndReason.ADMIN)
    assert Stream.objects.get(pk=stream.pk).end_reason == "admin"

    stream_go_live(stream=stream)
    assert Stream.objects.get(pk=stream.pk).end_reason == ""


def test_going_live_after_the_end_starts_a_new_broadcast(user: User) -> None:
    stream, _ = stream_create(owner=user, title="Show")
    stream_go_live(stream=stream)
    first_start = stream.started_at
    stream_viewer_count_change(stream=stream, delta=3)
    stream_end(stream=stream, reason=Stream.EndReason.OWNER)

    stream_go_live(stream=stream)

    stream.refresh_from_db()
    assert stream.state == Stream.State.LIVE
    assert first_start is not None
    assert stream.started_at is not None
    assert stream.started_at > first_start
    assert (stream.ended_at, stream.peak_viewer_count) == (None, 0)


_end = functools.partial(stream_end, reason=Stream.EndReason.OWNER)


@pytest.mark.parametrize(
    ("prepare", "transition", "code"),
    [
        ([], _end, "not_live"),
        ([], stream_restart, "not_ended"),
        ([stream_go_live], stream_go_live, "already_live"),
        ([stream_go_live], stream_restart, "not_ended"),
        ([stream_go_live, _end], _end, "not_live"),
    ],
)
def test_invalid_transitions_conflict_and_change_nothing(
    user: User, prepare: list, transition: object, code: str
) -> None:
    stream, _ = stream_create(owner=user, title="Show")
    for step in prepare:
        step(stream=stream)
    before = Stream.objects.values().get(pk=stream.pk)

    with pytest.raises(ConflictError) as caught:
        transition(stream=stream)  # type: ignore[operator]

    assert caught.value.code == code
    assert Stream.objects.values().get(pk=stream.pk) == before


def test_state_changes_are_announced(user: User) -> None:
    seen: list[tuple[str, str]] = []

    def record(sender: type, stream: Stream, previous: str, **kwargs: object) -> None:
        seen.append((previous, stream.state))

    stream_state_changed.connect(record)
    try:
        stream, _ = stream_create(owner=user, title="Show")
        stream_go_live(stream=stream)
        stream_end(stream=stream, reason=Stream.EndReason.OWNER)
        stream_restart(stream=stream)
    finally:
        stream_state_changed.disconnect(record)
    assert seen == [("idle", "live"), ("live", "ended"), ("ended", "idle")]


def test_end_drops_viewers_but_keeps_the_peak(user: User) -> None:
    stream, _ = stream_create(owner=user, title="Show")
    stream_go_live(stream=stream)
    stream_viewer_count_change(stream=stream, delta=3)

    stream_end(stream=stream, reason=Stream.EndReason.OWNER)

    assert (stream.viewer_count, stream.peak_viewer_count) == (0, 3)
    stream_restart(stream=stream)
    assert (stream.viewer_count, stream.peak_viewer_count) == (0, 0)


def test_viewer_count_change_tracks_peak_and_never_goes_negative(user: User) -> None:
    stream, _ = stream_create(owner=user, title="Show")

    stream_viewer_count_change(stream=stream, delta=2)
    stream_viewer_count_change(stream=stream, delta=3)
    stream_viewer_count_change(stream=stream, delta=-4)
    assert (stream.viewer_count, stream.peak_viewer_count) == (1, 5)

    stream_viewer_count_change(stream=stream, delta=-3)
    assert (stream.viewer_count, stream.peak_viewer_count) == (0, 5)


def test_delete_refuses_a_live_stream(user: User) -> None:
    stream, _ = stream_create(owner=user, title="Show")
    stream_go_live(stream=stream)

    with pytest.raises(ConflictError) as caught:
        stream_delete(stream=stream)
    assert caught.value.code == "stream_live"

    stream_end(stream=stream, reason=Stream.EndReason.OWNER)
    stream_delete(stream=stream)
    assert not Stream.objects.exists()
    assert not StreamKey.objects.exists()


def test_verify_accepts_only_the_active_secret(user: User) -> None:
    stream, issued = stream_create(owner=user, title="Show")
    _other, other_issued = stream_create(owner=user, title="Other")

    assert stream_key_verify(stream=stream, secret=issued.secret)
    assert not stream_key_verify(stream=stream, secret=issued.secret + "x")
    assert not stream_key_verify(stream=stream, secret="")
    assert not stream_key_verify(stream=stream, secret=other_issued.secret)
    assert not stream_key_verify(stream=stream, secret=issued.key.digest)


def test_rotate_revokes_the_old_key(user: User) -> None:
    stream, old = stream_create(owner=user, title="Show")

    new = stream_key_rotate(stream=stream)

    assert new.secret != old.secret
    assert not stream_key_verify(stream=stream, secret=old.secret)
    assert stream_key_verify(stream=stream, secret=new.secret)
    old.key.refresh_from_db()
    assert old.key.revoked_at is not None
    assert StreamKey.objects.filter(stream=stream, revoked_at__isnull=True).get() == new.key


def test_revoke_leaves_no_working_key_and_then_conflicts(user: User) -> None:
    stream, issued = stream_create(owner=user, title="Show")

    revoked = stream_key_revoke(stream=stream)

    assert revoked.revoked_at is not None
    assert not stream_key_verify(stream=stream, secret=issued.secret)
    with pytest.raises(ConflictError) as caught:
        stream_key_revoke(stream=stream)
    assert caught.value.code == "no_active_key"
    fresh = stream_key_rotate(stream=stream)
    assert stream_key_verify(stream=stream, secret=fresh.secret)


def test_rotate_accepts_a_chosen_secret_only_if_long_enough(user: User) -> None:
    stream, _ = stream_create(owner=user, title="Show")
    with pytest.raises(InvalidInputError):
        stream_key_rotate(stream=stream, secret="short")

    chosen = "x" * 40
    stream_key_rotate(stream=stream, secret=chosen)
    assert stream_key_verify(stream=stream, secret=chosen)


def test_begin_goes_live_and_starts_anew_after_an_end(user: User) -> None:
    stream, _ = stream_create(owner=user, title="Again")
    assert stream_begin(stream=stream).state == Stream.State.LIVE
    assert stream_begin(stream=stream).state == Stream.State.LIVE  # already live: unchanged
    stream_end(stream=stream, reason=Stream.EndReason.OWNER)
    again = stream_begin(stream=stream)
    assert again.state == Stream.State.LIVE
    assert again.ended_at is None
    assert again.started_at is not None
