"""Broadcasters and viewers behind each NAT type reach the OnAir SFU (issue 7).

One session runs everything at once in the rig (tests/nat/rig.py): for each SFU placement
and each client NAT, a broadcaster and a viewer of every broadcast, plus a relay-only
viewer and a viewer with an expired TURN credential. With ``ONAIR_WRITE_NAT_TABLE=1``
(``make nat-table``) the table also replaces the one in docs/NAT.md; ``make test`` leaves the
tree as it was.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from tests.nat.matrix import (
    CLOUD_PORT_RANGE,
    MUX_PORT,
    REPO,
    Row,
    SessionResult,
    expired_credential_viewer,
    matrix_clients,
    matrix_rows,
    relay_only_viewer,
    render_table,
    run_session,
    write_table,
)
from tests.nat.rig import Rig, unavailable_reason

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"NAT rig unavailable: {reason}")
    with Rig() as built:
        yield built


@pytest.fixture(scope="module")
def session(rig: Rig) -> SessionResult:
    clients = [*matrix_clients(rig), relay_only_viewer(rig), expired_credential_viewer(rig)]
    return asyncio.run(run_session(rig, clients))


@pytest.fixture(scope="module")
def rows(session: SessionResult) -> list[Row]:
    rows = matrix_rows(session)
    if os.environ.get("ONAIR_WRITE_NAT_TABLE") == "1":
        write_table(REPO / "docs" / "NAT.md", render_table(rows, session.seconds))
    return rows


def test_every_combination_connects_and_the_viewer_decodes_video(rows: list[Row]) -> None:
    assert len(rows) == 32
    failed = [row for row in rows if not row.ok]
    assert not failed, render_table(failed, 0)


def test_symmetric_nat_on_both_sides_connects_through_the_turn_relay(rows: list[Row]) -> None:
    row = next(r for r in rows if (r.server, r.publisher, r.viewer) == ("home", "sym", "sym"))
    assert row.ok
    assert "relay" in row.publisher_path
    assert "relay" in row.viewer_path


def test_an_sfu_behind_1to1_nat_is_reached_at_its_public_ip(rows: list[Row]) -> None:
    for row in rows:
        if row.server == "cloud":
            assert row.publisher_path.endswith("srflx"), row
            assert row.viewer_path.endswith("srflx"), row


def test_the_sfus_offer_their_host_candidates_where_the_settings_say(
    session: SessionResult,
) -> None:
    if MUX_PORT != "0":  # ONAIR_UDP_MUX_PORT: one port for every peer of each SFU
        assert session.host_ports == {"cloud": {int(MUX_PORT)}, "home": {int(MUX_PORT)}}
    else:
        low, high = map(int, CLOUD_PORT_RANGE.split("-"))
        assert all(low <= port <= high for port in session.host_ports["cloud"])
        assert len(session.host_ports["home"]) > 1


def test_a_relay_only_viewer_connects_through_turn(session: SessionResult) -> None:
    viewer = session.peers[("cloud/prc-relay-only", "view:cloud/none")]
    assert viewer["local_type"] == "relay"
    assert viewer["frames"] > 0


def test_an_expired_credential_is_refused_and_the_client_says_so(session: SessionResult) -> None:
    viewer = session.peers[("cloud/sym-expired", "view:cloud/none")]
    assert not viewer["connected"]
    assert "the TURN server refused the allocation: 401 Unauthorized" in viewer["error"]
