"""Shaped-link tests: real Chromium viewers in network namespaces (``tests.quality.rig``).
They run in ``make test`` (marked ``e2e`` and ``slow``) and skip, saying why, without root,
tc/nftables or Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.quality.rig import unavailable_reason


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
