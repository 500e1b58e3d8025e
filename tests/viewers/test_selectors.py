from __future__ import annotations

from collections.abc import Callable

import pytest

from broadcast.services import stream_go_live
from viewers.selectors import viewer_count
from viewers.services import viewer_join, viewer_leave

pytestmark = pytest.mark.django_db


def test_viewer_count_counts_open_sessions_of_one_stream(make_stream: Callable) -> None:
    stream, _ = make_stream()
    other, _ = make_stream()
    stream_go_live(stream=stream)
    stream_go_live(stream=other)

    sessions = [viewer_join(stream=stream) for _ in range(3)]
    viewer_join(stream=other)
    viewer_leave(session=sessions[0])

    assert viewer_count(stream=stream) == 2
    assert viewer_count(stream=other) == 1
