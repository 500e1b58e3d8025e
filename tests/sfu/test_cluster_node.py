"""Two cluster nodes in one process: an origin pipes a broadcast to an edge through the
node API (``sfu.cluster``), the edge's viewers decode it, and both count what they carry."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from sfu import RouterOptions, RouterRegistry
from sfu.cluster import ClusterNode, EncodedTracks
from testpeers import TestClients, wait_until

OPTIONS = RouterOptions(stats_interval_seconds=0, publisher_grace_seconds=5.0)


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[ClusterNode, ClusterNode]]:
    origin_routers, edge_routers = RouterRegistry(OPTIONS), RouterRegistry(OPTIONS)
    origin = ClusterNode(origin_routers, host="127.0.0.1")
    edge = ClusterNode(edge_routers, host="127.0.0.1")
    yield origin, edge
    for node in (origin, edge):
        node.reset()
        await node.routers.close_all()


async def _pipe(origin: ClusterNode, edge: ClusterNode, stream_id: str) -> list[EncodedTracks]:
    """Make ``edge`` an edge of ``origin`` for the stream, the way a worker does; the track
    announcements the origin sends later go to the edge as JSON."""
    announced: list[EncodedTracks] = []
    tasks: set[asyncio.Task[None]] = set()

    def on_tracks(tracks: EncodedTracks) -> None:
        announced.append(json.loads(json.dumps(tracks)))
        task = asyncio.ensure_future(edge.edge_tracks(stream_id, announced[-1]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    address = await edge.open_edge(stream_id, "origin-node")
    local, tracks = await origin.open_pipe(
        stream_id, "edge-node", remote=address, on_tracks=on_tracks
    )
    await edge.connect_edge(stream_id, local, json.loads(json.dumps(tracks)))
    return announced


async def test_an_edge_node_feeds_its_viewers_from_the_origin_and_both_count(
    nodes: tuple[ClusterNode, ClusterNode], clients: TestClients
) -> None:
    origin, edge = nodes
    await _pipe(origin, edge, "s1")
    assert edge.is_edge("s1")
    assert edge.edge_origin("s1") == "origin-node"
    assert edge.edges_from("origin-node") == ["s1"]
    assert not origin.is_edge("s1")

    edge_router = edge.routers.get("s1")
    origin_router = origin.routers.get("s1")
    assert edge_router is not None
    assert origin_router is not None
    viewer, _ = await clients.subscribe(edge_router)
    await clients.publish(origin_router)
    assert await viewer.wait_for_frames(video=20, within=15)

    origin_load, edge_load = origin.load(), edge.load()
    assert origin_load.publishing == ["s1"]
    assert origin_load.producers["s1"] > 0
    assert edge_load.viewers == edge.viewer_count() == 1
    assert edge_load.pipes_in["s1"]["origin"] == "origin-node"
    assert edge_load.pipes_in["s1"]["packets"] > 0
    assert origin_load.pipes_out["s1"]["edge-node"]["packets"] > 0
    publishers, viewers = origin.live_peers()
    assert len(publishers) == 1
    assert viewers == []
    assert edge.live_peers()[1] == [v.id for v in edge_router.viewers]

    origin.close_pipes_to("edge-node")
    assert origin.load().pipes_out == {}


async def test_an_edge_without_viewers_is_idle_after_the_given_time(
    nodes: tuple[ClusterNode, ClusterNode],
) -> None:
    origin, edge = nodes
    await _pipe(origin, edge, "s2")
    assert edge.idle_edges(idle_seconds=0.2) == []  # noted as idle from now
    assert await wait_until(lambda: edge.idle_edges(idle_seconds=0.2) == [("s2", "origin-node")], 2)
    edge.forget("s2")
    await edge.routers.close("s2")
    assert not edge.is_edge("s2")
    assert edge.edges_from("origin-node") == []
