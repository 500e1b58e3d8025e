"""WHIP and WHEP in cluster mode, with real processes (``tests.cluster``): a session
created through one daphne process is served by the other, and its SFU peer's end ends it
everywhere."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Awaitable

import pytest

from testpeers import TestPublisher, TestViewer, wait_until, wait_until_awaited
from tests.cluster import (
    CLUSTER_SKIP,
    Cluster,
    Response,
    cluster_fixture,  # noqa: F401 (provides the "cluster" fixture)
    http,
)
from tests.signaling.http_clients import SDP, SDPFRAG, ice_credentials, rotate_ice

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow, CLUSTER_SKIP]


def _owner_token(cluster: Cluster, slug: str) -> str:
    code = (
        "from rest_framework.authtoken.models import Token; "
        "from broadcast.models import Stream; "
        f"print(Token.objects.create(user=Stream.objects.get(slug={slug!r}).owner).key)"
    )
    return cluster.manage("shell", "-c", code).splitlines()[-1]


async def _status_is(response: Awaitable[Response], status: int) -> bool:
    return (await response).status == status


def _session_keys(cluster: Cluster) -> list[bytes]:
    return list(cluster.redis.scan_iter(f"{cluster.prefix}:sfu:http*"))


async def test_sessions_are_served_by_any_daphne_and_end_with_their_peer(
    cluster: Cluster,
) -> None:
    daphne_a, daphne_b = cluster.daphne
    slug, _, key = cluster.new_stream("WHIP in a cluster")
    owner = {"Authorization": f"Token {_owner_token(cluster, slug)}"}
    publisher, viewer = TestPublisher(), TestViewer()
    earlier, stuck = TestPublisher(), TestPublisher()
    try:
        publishing = {"Authorization": f"Bearer {key}", "Content-Type": SDP}
        # An earlier publisher, through daphne B, is taken over by the next one through A.
        replaced = await http(
            "POST", f"{daphne_b}/whip/{slug}", await earlier.create_offer(), publishing
        )
        assert replaced.status == 201, (replaced, cluster.logs())
        await earlier.accept_answer(replaced.body)
        offer = await publisher.create_offer()
        published = await http("POST", f"{daphne_a}/whip/{slug}", offer, publishing)
        assert published.status == 201, (published, cluster.logs())
        await publisher.accept_answer(published.body)
        whip_session = published.headers["Location"]

        watched = await http(
            "POST", f"{daphne_b}/whep/{slug}", await viewer.create_offer(), {"Content-Type": SDP}
        )
        assert watched.status == 201, (watched, cluster.logs())
        await viewer.accept_answer(watched.body)
        assert await viewer.wait_for_frames(video=20, within=15), cluster.logs()

        # The origin worker took a poster of the video; the other daphne serves it.
        async def poster() -> Response:
            return await http("HEAD", f"{daphne_b}/streams/{slug}/poster.jpg")

        assert await wait_until_awaited(lambda: _status_is(poster(), 200), 15), cluster.logs()
        assert (await poster()).headers["Content-Type"] == "image/jpeg"

        # The replaced session's DELETE, through either daphne, leaves the broadcast on.
        deleted = await http("DELETE", daphne_a + replaced.headers["Location"])
        assert deleted.status == 200, deleted  # its session ended with the takeover
        before = viewer.video.frames
        assert await wait_until(lambda: viewer.video.frames > before + 15, 10)

        # A takeover whose client never does ICE is pending: the live publisher carries on,
        # its session takes candidates through either daphne, and its DELETE withdraws it.
        stuck_offer = await stuck.create_offer()
        pending = await http("POST", f"{daphne_b}/whip/{slug}", stuck_offer, publishing)
        assert pending.status == 201, (pending, cluster.logs())
        stuck_ufrag, stuck_pwd = ice_credentials(stuck_offer)
        trickled = await http(
            "PATCH",
            daphne_a + pending.headers["Location"],
            f"a=ice-ufrag:{stuck_ufrag}\r\na=ice-pwd:{stuck_pwd}\r\n"
            "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=end-of-candidates\r\n",
            {"Content-Type": SDPFRAG},
        )
        assert trickled.status == 204, trickled
        before = viewer.video.frames
        assert await wait_until(lambda: viewer.video.frames > before + 15, 10)
        withdrawn = await http("DELETE", daphne_a + pending.headers["Location"])
        assert withdrawn.status == 200, withdrawn
        detail = await http("GET", f"{daphne_b}/api/v1/streams/{slug}/", headers=owner)
        assert json.loads(detail.body)["state"] == "live", detail
        before = viewer.video.frames
        assert await wait_until(lambda: viewer.video.frames > before + 15, 10)

        # Trickle on the WHIP session through the other daphne process.
        ufrag, pwd = ice_credentials(offer)
        candidate = re.search(r"^a=candidate:.*$", offer, re.MULTILINE)
        assert candidate is not None
        fragment = (
            f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
            f"a=mid:0\r\n{candidate[0].strip()}\r\n"
        )
        trickled = await http(
            "PATCH",
            daphne_b + whip_session,
            fragment,
            {"Content-Type": SDPFRAG, "If-Match": published.headers["ETag"]},
        )
        assert trickled.status == 204, trickled
        assert len(_session_keys(cluster)) == 4  # two sessions, each by token and by peer

        # ICE restart of the WHEP session through daphne A: the media carries on.
        ufrag, pwd = secrets.token_hex(4), secrets.token_hex(12)
        restarted = await http(
            "PATCH",
            daphne_a + watched.headers["Location"],
            f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
            "a=mid:0\r\n",
            {"Content-Type": SDPFRAG, "If-Match": "*"},
        )
        assert restarted.status == 200, restarted
        assert restarted.headers["ETag"] != watched.headers["ETag"]
        remote_ufrag, remote_pwd = ice_credentials(restarted.body)
        assert (remote_ufrag, remote_pwd) != ice_credentials(watched.body)
        rotate_ice(viewer.pc, ufrag, pwd, remote_ufrag, remote_pwd)
        before = viewer.video.frames
        assert await wait_until(lambda: viewer.video.frames > before + 15, 10)

        # DELETE through daphne B ends the broadcast; daphne A's API says so.
        deleted = await http("DELETE", daphne_b + whip_session)
        assert deleted.status == 200, deleted
        detail = await http("GET", f"{daphne_a}/api/v1/streams/{slug}/", headers=owner)
        assert json.loads(detail.body)["state"] == "ended", detail
        assert (await http("DELETE", daphne_a + whip_session)).status == 404
        # The broadcast's end closed the WHEP viewer on its worker, which ends its session:
        # kept a while as ended, so the viewer's late DELETE answers 200, once.
        ended = f"{cluster.prefix}:sfu:http-ended:".encode()

        def only_ended() -> bool:
            keys = _session_keys(cluster)
            return len(keys) == 1 and keys[0].startswith(ended)

        assert await wait_until(only_ended, 5), _session_keys(cluster)
        late = await http("DELETE", daphne_a + watched.headers["Location"])
        assert late.status == 200, late
        assert not _session_keys(cluster)
        gone = await http("DELETE", daphne_b + watched.headers["Location"])
        assert gone.status == 404, gone
    finally:
        await viewer.close()
        await publisher.close()
        await earlier.close()
        await stuck.close()
