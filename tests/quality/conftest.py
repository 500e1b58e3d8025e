"""Shaped-link tests: real Chromium viewers in network namespaces (``tests.quality.rig``).
They run in ``make test`` (marked ``e2e`` and ``slow``) and skip, saying why, without root,
tc/nftables or Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daphne import log_errors
from tests.quality.rig import unavailable_reason
from tests.quality.session import Broadcast


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason: str | None = None
    checked = False
    for item in items:
        if not Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            continue
        item.add_marker(pytest.mark.e2e)
        item.add_marker(pytest.mark.slow)
        if not checked:
            reason, checked = unavailable_reason(), True
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"quality rig unavailable: {reason}"))


@pytest.fixture(scope="module")
def broadcast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broadcast]:
    """One live single-layer broadcast from the studio (720p) for a module's tests, which
    add their viewers (under names of their own) and remove them when done."""
    with Broadcast.start(tmp_path_factory.mktemp("quality")) as broadcast:
        yield broadcast
    assert log_errors(broadcast.server.log()) == [], broadcast.server.log()[-6000:]
