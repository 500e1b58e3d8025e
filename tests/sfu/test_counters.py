"""``sfu.counters``: a process's totals add up the open producers' and down tracks' counts
and keep those of the closed ones, so they never go back; a viewer's first keyframe and its
connection are reported with the time since its session was made. Real aiortc peers."""

from sfu import Router, ViewerConnected, ViewerFirstFrame, counters
from testpeers import TestClients
from tests.sfu.forwarding_loop import C_LOOP


def video(router: Router) -> counters.KindTotals:
    return counters.totals([router]).get("video", counters.KindTotals())


async def test_totals_keep_what_closed_viewers_and_publishers_counted(
    router: Router, clients: TestClients
) -> None:
    connected: list[ViewerConnected] = []
    first_frames: list[ViewerFirstFrame] = []
    router.events.on(ViewerConnected, connected.append)
    router.events.on(ViewerFirstFrame, first_frames.append)
    before = video(router)
    await clients.publish(router)
    viewers = [(await clients.subscribe(router))[0] for _ in range(2)]
    for viewer in viewers:
        assert await viewer.wait_for_frames(video=20, within=20)

    both = video(router)
    assert both.packets_received > before.packets_received
    assert both.packets_sent > before.packets_sent
    assert both.bytes_sent > before.bytes_sent
    assert both.keyframe_join_requests >= before.keyframe_join_requests + 2
    assert both.keyframe_requests >= both.keyframe_join_requests
    assert both.keyframe_requests_sent > before.keyframe_requests_sent
    if C_LOOP:  # (the suite's Python-loop pass: none)
        assert both.native_packets_sent > before.native_packets_sent
    live = [t.totals().packets_sent for v in router.viewers for t in v.down_tracks]
    assert all(live)

    # The first viewer leaves: what its tracks sent stays in the totals.
    await router.viewers[0].close()
    one = video(router)
    assert one.packets_sent >= both.packets_sent
    assert one.bytes_sent >= both.bytes_sent
    # The broadcast ends: nothing open is left, and nothing counted is lost.
    await router.close()
    closed = video(router)
    assert closed.packets_sent >= one.packets_sent
    assert closed.packets_received >= one.packets_received
    assert closed.keyframe_join_requests == both.keyframe_join_requests

    assert len(connected) == 2
    assert len(first_frames) == 2
    for event in (*connected, *first_frames):
        assert 0 < event.seconds < 20
    assert {e.viewer_id for e in first_frames} == {e.viewer_id for e in connected}
