"""A server's startup objects leave the garbage collector's full collections (sfu.heap)."""

import gc
import weakref
from collections.abc import Iterator

import pytest

from sfu.heap import freeze_startup_objects


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """The test process goes on with an ordinary heap."""
    yield
    gc.unfreeze()


def test_garbage_is_collected_first_and_what_lives_is_frozen(unfrozen: None) -> None:
    dead, alive = _Node(), _Node()
    dead.other, alive.other = _Node(), alive  # two cycles: one unreachable below, one kept
    dead.other.other = dead
    gone = weakref.ref(dead)
    del dead

    frozen = freeze_startup_objects()

    assert gone() is None  # collected, not frozen with the rest
    assert frozen == gc.get_freeze_count() > 0
    tracked = gc.get_objects()
    assert not any(o is alive for o in tracked)  # no collection walks it any more
    later = _Node()
    assert any(o is later for o in gc.get_objects())  # what comes after is collected as before
