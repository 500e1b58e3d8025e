from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import AnonymousUser, User

from broadcast.models import Stream
from broadcast.selectors import (
    stream_get_by_key,
    stream_get_managed,
    stream_get_visible,
    stream_is_managed_by,
    stream_key_active,
    stream_list,
    stream_list_live,
)
from broadcast.services import stream_go_live, stream_key_revoke
from onair.exceptions import NotFoundError

pytestmark = pytest.mark.django_db


def _live(make_stream: Callable, **kwargs: object) -> Stream:
    stream, _ = make_stream(**kwargs)
    return stream_go_live(stream=stream)


def test_stream_list_is_own_streams_or_all_for_staff(
    make_stream: Callable, user: User, other_user: User, staff_user: User
) -> None:
    mine, _ = make_stream()
    theirs, _ = make_stream(owner=other_user)

    assert list(stream_list(user=user)) == [mine]
    assert set(stream_list(user=staff_user)) == {mine, theirs}
    assert list(stream_list(user=staff_user, owned_only=True)) == []
    assert list(stream_list(user=AnonymousUser())) == []


def test_stream_list_filters_by_state_and_visibility(make_stream: Callable, user: User) -> None:
    idle, _ = make_stream(visibility=Stream.Visibility.PRIVATE)
    live = _live(make_stream)

    assert list(stream_list(user=user, state="live")) == [live]
    assert list(stream_list(user=user, state="idle")) == [idle]
    assert list(stream_list(user=user, visibility="private")) == [idle]


def test_live_list_hides_unlisted_and_private_from_others(
    make_stream: Callable, user: User, other_user: User
) -> None:
    public = _live(make_stream)
    unlisted = _live(make_stream, visibility=Stream.Visibility.UNLISTED)
    private = _live(make_stream, visibility=Stream.Visibility.PRIVATE)
    make_stream()  # idle: never listed

    assert list(stream_list_live(user=AnonymousUser())) == [public]
    assert list(stream_list_live(user=other_user)) == [public]
    assert set(stream_list_live(user=user)) == {public, unlisted, private}


def test_a_stream_is_managed_by_its_owner_and_staff(
    make_stream: Callable, user: User, other_user: User, staff_user: User
) -> None:
    stream, _ = make_stream()

    assert stream_is_managed_by(stream=stream, user=user)
    assert stream_is_managed_by(stream=stream, user=staff_user)
    assert not stream_is_managed_by(stream=stream, user=other_user)
    assert not stream_is_managed_by(stream=stream, user=AnonymousUser())


def test_get_managed_hides_other_peoples_streams(
    make_stream: Callable, user: User, other_user: User, staff_user: User
) -> None:
    stream, _ = make_stream()

    assert stream_get_managed(slug=stream.slug, user=user) == stream
    assert stream_get_managed(slug=stream.slug, user=staff_user) == stream
    for who in (other_user, AnonymousUser()):
        with pytest.raises(NotFoundError):
            stream_get_managed(slug=stream.slug, user=who)
    with pytest.raises(NotFoundError):
        stream_get_managed(slug="nope", user=user)


@pytest.mark.parametrize(
    ("visibility", "visible_to_others"),
    [("public", True), ("unlisted", True), ("private", False)],
)
def test_get_visible_by_visibility(
    make_stream: Callable,
    user: User,
    other_user: User,
    staff_user: User,
    visibility: str,
    visible_to_others: bool,
) -> None:
    stream, _ = make_stream(visibility=visibility)

    assert stream_get_visible(slug=stream.slug, user=user) == stream
    assert stream_get_visible(slug=stream.slug, user=staff_user) == stream
    for who in (other_user, AnonymousUser()):
        if visible_to_others:
            assert stream_get_visible(slug=stream.slug, user=who) == stream
        else:
            with pytest.raises(NotFoundError):
                stream_get_visible(slug=stream.slug, user=who)


def test_get_by_key_finds_only_active_keys(make_stream: Callable) -> None:
    stream, issued = make_stream()

    assert stream_get_by_key(secret=issued.secret) == stream
    assert stream_key_active(stream=stream) == issued.key
    stream_key_revoke(stream=stream)
    assert stream_key_active(stream=stream) is None
    with pytest.raises(NotFoundError):
        stream_get_by_key(secret=issued.secret)
