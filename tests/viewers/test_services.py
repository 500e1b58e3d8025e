from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.db import connection

from broadcast.models import Stream
from broadcast.services import stream_end, stream_go_live, stream_restart
from onair.exceptions import ConflictError
from viewers.models import ViewerSession
from viewers.selectors import viewer_count
from viewers.services import viewer_join, viewer_leave


@pytest.fixture
def live_stream(make_stream: Callable) -> Stream:
    stream, _ = make_stream()
    return stream_go_live(stream=stream)


@pytest.mark.django_db
def test_join_and_leave_count_viewers_and_peak(live_stream: Stream, user: User) -> None:
    first = viewer_join(stream=live_stream, user=user)
    second = viewer_join(stream=live_stream, kind=ViewerSession.Kind.WHEP, user=AnonymousUser())
    live_stream.refresh_from_db()
    assert (live_stream.viewer_count, live_stream.peak_viewer_count) == (2, 2)
    assert first.user == user
    assert second.user is None
    assert second.kind == "whep"

    viewer_leave(session=first)
    viewer_leave(session=first)  # twice: counted once

    live_stream.refresh_from_db()
    assert (live_stream.viewer_count, live_stream.peak_viewer_count) == (1, 2)
    assert viewer_count(stream=live_stream) == 1
    assert first.ended_at is not None
    assert second.ended_at is None


@pytest.mark.django_db
def test_cannot_join_a_stream_that_is_not_live(make_stream: Callable) -> None:
    stream, _ = make_stream()

    with pytest.raises(ConflictError) as caught:
        viewer_join(stream=stream)

    assert caught.value.code == "not_live"
    assert not ViewerSession.objects.exists()


@pytest.mark.django_db
def test_ending_the_stream_ends_every_session(live_stream: Stream) -> None:
    sessions = [viewer_join(stream=live_stream) for _ in range(3)]

    stream_end(stream=live_stream, reason=Stream.EndReason.OWNER)

    assert viewer_count(stream=live_stream) == 0
    assert live_stream.viewer_count == 0
    assert live_stream.peak_viewer_count == 3
    viewer_leave(session=sessions[0])  # late leave after the end: no negative counts
    live_stream.refresh_from_db()
    assert live_stream.viewer_count == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_joins_and_leaves_lose_no_counts(live_stream: Stream) -> None:
    if connection.vendor == "sqlite":
        pytest.skip("needs a database server with row locks: runs in the PostgreSQL pass")
    joins = 24

    def join_then_maybe_leave(index: int) -> None:
        try:
            session = viewer_join(stream=live_stream)
            if index % 3 == 0:
                viewer_leave(session=session)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(join_then_maybe_leave, range(joins)))

    live_stream.refresh_from_db()
    left = len(range(0, joins, 3))
    assert live_stream.viewer_count == joins - left == viewer_count(stream=live_stream)
    assert joins - left <= live_stream.peak_viewer_count <= joins


@pytest.mark.django_db(transaction=True)
def test_viewers_leaving_as_the_broadcast_ends_never_deadlock(live_stream: Stream) -> None:
    if connection.vendor == "sqlite":
        pytest.skip("needs a database server with row locks: runs in the PostgreSQL pass")
    leavers, rounds = 12, 8
    failures: list[BaseException] = []
    for _ in range(rounds):
        sessions = [viewer_join(stream=live_stream) for _ in range(leavers)]
        start = threading.Barrier(leavers + 1)

        def leave(session: ViewerSession, start: threading.Barrier = start) -> None:
            try:
                start.wait()
                viewer_leave(session=session)
            except BaseException as error:
                failures.append(error)
            finally:
                connection.close()

        def end(start: threading.Barrier = start) -> None:
            try:
                start.wait()
                stream_end(
                    stream=Stream.objects.get(pk=live_stream.pk), reason=Stream.EndReason.OWNER
                )
            except BaseException as error:
                failures.append(error)
            finally:
                connection.close()

        with ThreadPoolExecutor(max_workers=leavers + 1) as pool:
            for future in [pool.submit(end), *(pool.submit(leave, s) for s in sessions)]:
                future.result()
        assert not failures, failures
        live_stream.refresh_from_db()
        assert live_stream.viewer_count == 0 == viewer_count(stream=live_stream)
        stream_restart(stream=live_stream)
        stream_go_live(stream=live_stream)
