"""WHIP (RFC 9725) against the real ASGI app, the in-process SFU and real aiortc peers:
publishing goes live and reaches viewers, every status code, trickle ICE, ICE restart,
DELETE, and which session URLs and keys touch which stream."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aioice import stun
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.test import AsyncClient, override_settings
from redis.exceptions import RedisError

from broadcast.models import Stream
from broadcast.services import IssuedKey, stream_create, stream_end, stream_go_live
from onair.conf import onair_settings
from sfu import PublisherClosed
from signaling import http_sessions
from signaling.gateway import ClusterGateway, gateway
from signaling.gateway.directory import WorkerDirectory
from signaling.http_session_store import HttpSession, SessionKind, session_store
from testpeers import TestPublisher, TestViewer, wait_until, wait_until_awaited
from tests.signaling.http_clients import (
    SDP,
    SDPFRAG,
    WhepClient,
    WhipClient,
    host_candidates,
    ice_connection,
    ice_credentials,
    stun_check,
    without_candidates,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

CLUSTER_REDIS_URL = os.environ.get("TEST_CLUSTER_REDIS_URL", "redis://127.0.0.1:6379/9")
TOKEN_PATH = re.compile(r"^/whip/(?P<slug>[-\w]+)/(?P<token>[A-Za-z0-9_-]{43})$")


@pytest.fixture
async def other_parts(owner: User) -> tuple[Stream, IssuedKey]:
    return await database_sync_to_async(stream_create)(owner=owner, title="Other")


@pytest.fixture
async def peers() -> AsyncIterator[list[WhipClient | WhepClient]]:
    """Clients to close after the test, then every router."""
    opened: list[WhipClient | WhepClient] = []
    yield opened
    for peer in opened:
        await peer.close()
    await gateway.close_all()


@pytest.fixture
def http() -> AsyncClient:
    return AsyncClient()


async def refreshed(stream: Stream) -> Stream:
    await database_sync_to_async(stream.refresh_from_db)()
    return stream


async def whip(
    http: AsyncClient,
    peers: list[WhipClient | WhepClient],
    stream: Stream,
    key: str | None,
    codec: str = "vp8",
) -> WhipClient:
    client = WhipClient(http, stream.slug, key, codec=codec)
    peers.append(client)
    return client


async def view_in_sfu(stream: Stream) -> TestViewer:
    """A viewer attached to the stream's router directly, to see what the SFU forwards."""
    viewer = TestViewer()
    result = await gateway.subscribe(
        stream_id=str(stream.pk), offer_sdp=await viewer.create_offer()
    )
    await viewer.accept_answer(result.sdp)
    return viewer


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_publish_goes_live_reaches_viewers_and_delete_ends(
    codec: str,
    http: AsyncClient,
    peers: list[WhipClient | WhepClient],
    stream_parts: tuple[Stream, IssuedKey],
) -> None:
    stream, key = stream_parts
    client = await whip(http, peers, stream, key.secret, codec=codec)
    response = await client.publish()

    assert response.status_code == 201
    assert response["Content-Type"] == SDP
    assert response.content.decode().startswith("v=0")
    match = TOKEN_PATH.match(response["Location"])
    assert match
    assert match["slug"] == stream.slug
    assert re.fullmatch(r'"[0-9a-f]{16}"', response["ETag"])
    assert response["Accept-Patch"] == SDPFRAG
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "Location" in response["Access-Control-Expose-Headers"]
    assert "Link" not in response  # no ICE servers configured: nothing leaves the machine
    assert (await refreshed(stream)).state == Stream.State.LIVE

    viewer = await view_in_sfu(stream)
    try:
        assert await viewer.wait_for_frames(video=15, audio=5, within=20)
        assert viewer.video.first_frame_matches_pattern

        response = await client.delete()
        assert response.status_code == 200
        assert (await refreshed(stream)).state == Stream.State.ENDED
        assert gateway.router(str(stream.pk)) is None
        assert (await client.delete()).status_code == 404  # gone with the broadcast
    finally:
        await viewer.close()


async def test_tokens_are_unguessable_and_per_session(
    http: AsyncClient,
    peers: list[WhipClient | WhepClient],
    stream_parts: tuple[Stream, IssuedKey],
) -> None:
    stream, key = stream_parts
    locations = []
    for _ in range(2):
        client = await whip(http, peers, stream, key.secret)
        assert (await client.publish()).status_code == 201
        assert client.session is not None
        locations.append(client.session.location)
        assert (await client.delete()).status_code == 200
        await database_sync_to_async(_restart)(stream)
    tokens = [location.rsplit("/", 1)[1] for location in locations]
    assert tokens[0] != tokens[1]
    # token_urlsafe(32): 43 characters of base64url, 256 random bits (>= 128 required)
    assert all(len(token) == 43 and re.fullmatch(r"[A-Za-z0-9_-]+", token) for token in tokens)


def _restart(stream: Stream) -> None:
    from broadcast.services import stream_restart

    stream_restart(stream=stream)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer ", "Bearer sk_wrong_key_that_is_long_enough_000000", "Basic dXNlcjpwdw=="],
)
async def test_401_without_the_stream_key(
    authorization: str | None, http: AsyncClient, stream_parts: tuple[Stream, IssuedKey]
) -> None:
    stream, _ = stream_parts
    headers = {"Authorization": authorization} if authorization else {}
    response = await http.post(
        f"/whip/{stream.slug}", data="v=0\r\n", content_type=SDP, headers=headers
    )
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "bad_stream_key"
    assert (await refreshed(stream)).state == Stream.State.IDLE


async def test_a_key_publishes_only_to_its_own_stream(
    http: AsyncClient,
    peers: list[WhipClient | WhepClient],
    stream_parts: tuple[Stream, IssuedKey],
    other_parts: tuple[Stream, IssuedKey],
) -> None:
    stream, _ = stream_parts
    _, other_key = other_parts
    client = await whip(http, peers, stream, other_key.secret)
    response = await client.publish()
    assert response.status_code == 401
    assert gateway.router(str(stream.pk)) is None


async def test_404_unknown_stream(http: AsyncClient) -> None:
    response = await http.post(
        "/whip/no-such-stream", data="v=0\r\n", content_type=SDP, headers={"Authorization": "x"}
    )
    assert response.status_code == 404
    assert response.json()["error"] == {
        "status": 404,
        "code": "not_found",
        "message": "No such stream.",
        "fields": {},
    }


async def test_415_wrong_content_type(
    http: AsyncClient, stream_parts: tuple[Stream, IssuedKey]
) -> None:
    stream, key = stream_parts
    response = await http.post(
        f"/whip/{stream.slug}",
        data='{"sdp": "v=0"}',
        content_type="application/json",
        headers={"Authorization": f"Bearer {key.secret}"},
    )
    assert response.status_code == 415
    assert "application/sdp" in response.json()["error"]["message"]


async def test_503_with_retry_after_when_no_media_server_answers(
    http: AsyncClient,
    stream_parts: tuple[Stream, IssuedKey],
    peers: list[WhipClient | WhepClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cluster mode with no worker to reach (here: no Redis channel layer at all) is the
    server's failure, not the client's: 503 with Retry-After, as WHIP clients retry."""
    directory = WorkerDirectory(CLUSTER_REDIS_URL, prefix=f"onair-test-{uuid.uuid4().hex[:8]}")
    if await _unreachable(directory):
        pytest.skip(f"Redis at {CLUSTER_REDIS_URL} is unreachable")
    monkeypatch.setattr(WorkerDirectory, "from_settings", classmethod(lambda cls: directory))
    monkeypatch.setattr("signaling.publishing.gateway", ClusterGateway())
    stream, key = stream_parts
    response = await (await whip(http, peers, stream, key.secret)).publish()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "sfu_unavailable"
    assert int(response["Retry-After"]) > 0
    assert (await refreshed(stream)).state == Stream.State.IDLE
    await directory.close()


async def _unreachable(directory: WorkerDirectory) -> bool:
    try:
        await directory.workers()
    except (OSError, RedisError):
        return True
    return False


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("\r\n", "empty_body"),
        ("this is not SDP", "bad_sdp"),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 FOO 0\r\n", "bad_sdp"),
    ],
)
async def test_400_unusable_offer_with_a_reason(
    body: str,
    code: str,
    http: AsyncClient,
    stream_parts: tuple[Stream, IssuedKey],
    peers: list[WhipClient | WhepClient],
) -> None:
    stream, key = stream_parts
    response = await http.post(
        f"/whip/{stream.slug}",
        data=body,
        content_type=SDP,
        headers={"Authorization": f"Bearer {key.secret}"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    assert len(error["message"]) > 10
    assert (await refreshed(stream)).state == Stream.State.IDLE


async def test_a_new_publish_takes_over_and_the_replaced_session_leaves_the_broadcast(
    http: AsyncClient,
    peers: list[WhipClient | WhepClient],
    stream_parts: tuple[Stream, IssuedKey],
) -> None:
    """An encoder that comes back (its old session still connected, as far as the server
    knows) takes over once connected; the DELETE of the replaced session does not end the
    new broadcast."""
    stream, key = stream_parts
    first = await whip(http, peers, stream, key.secret)
    assert (await first.publish()).status_code == 201
    viewer = await view_in_sfu(stream)
    try:
        assert await viewer.wait_for_frames(video=5, within=20)
        second = await whip(http, peers, stream, key.secret)

        assert (await second.publish()).status_code == 201

        (second_id,) = await _whip_sfu_ids([second])
        assert await wait_until(lambda: _sfu_id(stream) == second_id, 10)
        seen = viewer.video.frames
        assert await viewer.wait_for_frames(video=seen + 15, within=20)  # from the new one
        response = await first.delete()
        assert response.status_code == 200  # ended with the takeover, kept a while
        assert (await refreshed(stream)).state == Stream.State.LIVE
        assert gateway.router(str(stream.pk)) is not None
        assert (await second.delete()).status_code == 200
        assert (await refreshed(stream)).state == Stream.State.ENDED
        assert stream.end_reason == Stream.EndReason.PUBLISHER
    finally:
        await viewer.close()


async def test_concurrent_publishes_the_last_one_wins(
    http: AsyncClient,
    peers: list[WhipClient | WhepClient],
    stream_parts: tuple[Stream, IssuedKey],
) -> None:
    stream, key = stream_parts
    clients = [await whip(http, peers, stream, key.secret) for _ in range(3)]

    responses = await asyncio.gather(*(client.publish() for client in clients))

    assert [response.status_code for response in responses] == [201, 201, 201]
    current = _sfu_id(stream)
    sessions = [
        await session_store.get_peer(kind=SessionKind.WHIP, sfu_id=client_sfu_id)
        for client_sfu_id in await _whip_sfu_ids(clients)
    ]
    assert [s.sfu_id for s in sessions if s is not None] == [current]
    assert (await refreshed(stream)).state == Stream.State.LIVE


async def test_a_publish_replaced_before_its_session_is_registered_ends_at_once(
    http: AsyncClient,
    peers: list[WhipClient | WhepClient],
    stream_parts: tuple[Stream, IssuedKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another publish (a studio here) may replace a WHIP publisher between its answer and
    the registration of its session: the session is ended at once, not left live."""
    stream, key = stream_parts
    studio = TestPublisher()
    register = http_sessions._register

    async def studio_first(*args: Any, **kwargs: Any) -> HttpSession:
        result = await gateway.publish(
            stream_id=str(stream.pk), offer_sdp=await studio.create_offer()
        )
        await studio.accept_answer(result.answer_sdp)
        return await register(*args, **kwargs)

    monkeypatch.setattr(http_sessions, "_register", studio_first)
    client = await whip(http, peers, stream, key.secret)
    try:
        assert (await client.publish()).status_code == 201
        assert client.session is not None
        token = client.session.location.rsplit("/", 1)[1]
        record = await session_store.get(token)
        assert record is not None
        assert await session_store.get_peer(kind=SessionKind.WHIP, sfu_id=record.sfu_id) is None
        assert (await client.delete()).status_code == 200
        assert gateway.router(str(stream.pk)) is not None  # the studio's broadcast goes on
    finally:
        await studio.close()


async def test_a_takeover_that_never_connects_leaves_the_live_publisher_alone(
    settings: Any,
    http: AsyncClient,
    peers: list[WhipClient | WhepClient],
    stream_parts: tuple[Stream, IssuedKey],
) -> None:
    """A second encoder whose ICE never completes (a network that blocks UDP) gets its
    201 but takes nothing over: the live encoder's viewers keep receiving it, nobody is
    told "replaced", and after its connect deadline the newcomer's session is over. A
    newcomer that gives up (DELETE) before then leaves the broadcast alone too."""
    settings.ONAIR = {**settings.ONAIR, "CONNECT_TIMEOUT_SECONDS": 2}
    stream, key = stream_parts
    live = await whip(http, peers, stream, key.secret)
    assert (await live.publish()).status_code == 201
    (live_id,) = await _whip_sfu_ids([live])
    viewer = await view_in_sfu(stream)
    try:
        assert await viewer.wait_for_frames(video=5, within=20)
        closed: list[PublisherClosed] = []
        router = gateway.router(str(stream.pk))
        assert router is not None
        router.events.on(PublisherClosed, closed.append)

        for gives_up in (True, False):
            stuck = await whip(http, peers, stream, key.secret)
            # the answer is never applied: no ICE from this client
            assert (await stuck.post(await stuck.publisher.create_offer())).status_code == 201
            (stuck_id,) = await _whip_sfu_ids([stuck])
            assert gateway.publisher_session(str(stream.pk), stuck_id) is not None  # pending
            seen = viewer.video.frames
            assert await viewer.wait_for_frames(video=seen + 15, within=2)
            assert _sfu_id(stream) == live_id
            if gives_up:
                assert (await stuck.delete()).status_code == 200
            else:
                assert await wait_until(
                    lambda stuck_id=stuck_id: (
                        gateway.publisher_session(str(stream.pk), stuck_id) is None
                    ),
                    5,
                )
                assert (await stuck.delete()).status_code == 200  # ended, kept a while
            assert [e.publisher_id for e in closed] == [stuck_id]
            assert closed.pop().reason != "replaced"
            assert (await refreshed(stream)).state == Stream.State.LIVE

        assert _sfu_id(stream) == live_id
        seen = viewer.video.frames
        assert await viewer.wait_for_frames(video=seen + 15, within=5)
        assert (await live.delete()).status_code == 200
        assert (await refreshed(stream)).state == Stream.State.ENDED
    finally:
        await viewer.close()


async def _whip_sfu_ids(clients: list[WhipClient]) -> list[str]:
    ids = []
    for client in clients:
        assert client.session is not None
        record = await session_store.get(client.session.location.rsplit("/", 1)[1])
        ids.append(record.sfu_id if record is not None else "")
    return ids


def _sfu_id(stream: Stream) -> str:
    router = gateway.router(str(stream.pk))
    assert router is not None
    assert router.publisher is not None
    return router.publisher.id


async def test_publishing_after_the_end_starts_a_new_broadcast(
    http: AsyncClient,
    peers: list[WhipClient | WhepClient],
    stream_parts: tuple[Stream, IssuedKey],
) -> None:
    stream, key = stream_parts
    await database_sync_to_async(stream_go_live)(stream=stream)
    await database_sync_to_async(stream_end)(stream=stream, reason=Stream.EndReason.OWNER)
    client = await whip(http, peers, stream, key.secret)
    response = await client.publish()
    assert response.status_code == 201
    await database_sync_to_async(stream.refresh_from_db)()
    assert stream.state == Stream.State.LIVE
    assert stream.ended_at is None


async def test_trickle_adds_candidates_and_if_match_must_be_current(
    http: AsyncClient,
    peers: list[WhipClient | WhepClient],
    stream_parts: tuple[Stream, IssuedKey],
) -> None:
    stream, key = stream_parts
    client = await whip(http, peers, stream, key.secret)
    offer, candidates = without_candidates(await client.publisher.create_offer())
    assert candidates
    response = await client.post(offer)
    assert response.status_code == 201
    assert client.session is not None
    await client.publisher.accept_answer(client.session.answer)

    response = await client.trickle(candidates)
    assert response.status_code == 204
    peer = gateway.publisher_session(str(stream.pk), _sfu_id(stream))
    assert peer is not None
    transport = peer.peer_connection.getTransceivers()[0].receiver.transport.transport
    trickled = {(c.ip, c.port) for c in transport.getRemoteCandidates()}
    assert set(host_candidates("\n".join(candidates))) <= trickled
    assert await wait_until(lambda: peer.connection_state == "connected", 10)

    end = "a=end-of-candidates\r\n"
    assert (await client.patch(end, if_match=client.session.etag)).status_code == 204
    assert (await client.patch(end)).status_code == 204  # If-Match is optional for trickle
    stale = await client.patch(end, if_match='"0000000000000000"')
    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "precondition_failed"
    wrong_type = await client.patch(end, content_type="text/plain")
    assert wrong_type.status_code == 415
    bad = await client.patch("a=candidate:1 1 udp\r\n")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "bad_sdpfrag"
    foreign = await client.patch("a=ice-ufrag:zzzz\r\na=ice-pwd:yyyyyyyyyyyyyyyyyyyyyy\r\n")
    assert foreign.status_code == 422


async def test_ice_restart_new_credentials_and_etag(
    http: AsyncClient,
    peers: list[WhipClient | WhepClient],
    stream_parts: tuple[Stream, IssuedKey],
) -> None:
    stream, key = stream_parts
    client = await whip(http, peers, stream, key.secret)
    assert (await client.publish()).status_code == 201
    assert client.session is not None
    old_etag, answer = client.session.etag, client.session.answer
    old_ufrag, old_pwd = ice_credentials(answer)
    old_client_ufrag, _ = ice_credentials(client.offer_sdp())
    viewer = await view_in_sfu(stream)
    try:
        assert await viewer.wait_for_frames(video=10, within=20)

        response = await client.restart_ice()
        assert response.status_code == 200
        assert response["Content-Type"] == SDPFRAG
        fragment = response.content.decode()
        new_ufrag, new_pwd = ice_credentials(fragment)
        assert (new_ufrag, new_pwd) != (old_ufrag, old_pwd)
        assert response["ETag"] != old_etag
        assert "a=end-of-candidates" in fragment
        address = host_candidates(fragment)[0]
        assert address in host_candidates(answer)  # the SFU keeps its candidates

        # The SFU now answers checks with the new credentials only.
        connection = ice_connection(client.pc())
        ok = await stun_check(
            address,
            remote_ufrag=new_ufrag,
            remote_pwd=new_pwd,
            local_ufrag=connection.local_username,
        )
        assert ok is not None
        assert ok.message_class == stun.Class.RESPONSE
        shared_port = onair_settings().ice.udp_mux_port
        refused = await stun_check(
            address,
            remote_ufrag=old_ufrag,
            remote_pwd=old_pwd,
            local_ufrag=old_client_ufrag,
            within=1.0 if shared_port else 5.0,
        )
        if shared_port:  # no connection has that ufrag now: dropped unanswered (ice_mux)
            assert refused is None
        else:
            assert refused is not None
            assert refused.message_class == stun.Class.ERROR
            assert refused.attributes["ERROR-CODE"][0] == 401

        # The client's checks on its path, with the new credentials, succeed, and the
        # media never stopped.
        pair = next(iter(connection._nominated.values()))
        await connection.check_start(pair)
        assert pair.state.name == "SUCCEEDED"
        before = viewer.video.frames
        assert await wait_until(lambda: viewer.video.frames > before + 15, 10)

        # The old ETag is stale now; the new one trickles.
        end = "a=end-of-candidates\r\n"
        assert (await client.patch(end, if_match=old_etag)).status_code == 412
        assert (await client.patch(end, if_match=response["ETag"])).status_code == 204
    finally:
        await viewer.close()


async def test_ice_restart_needs_credentials(
    http: AsyncClient,
    peers: list[WhipClient | WhepClient],
    stream_parts: tuple[Stream, IssuedKey],
) -> None:
    stream, key = stream_parts
    client = await whip(http, peers, stream, key.secret)
    assert (await client.publish()).status_code == 201
    response = await client.patch("a=end-of-candidates\r\n", if_match="*")
    assert response.status_code == 400
    assert "ice-ufrag" in response.json()["error"]["message"]


async def test_session_urls_do_not_cross_streams_or_protocols(
    http: AsyncClient,
    peers: list[WhipClient | WhepClient],
    stream_parts: tuple[Stream, IssuedKey],
    other_parts: tuple[Stream, IssuedKey],
) -> None:
    stream, key = stream_parts
    other, _ = other_parts
    client = await whip(http, peers, stream, key.secret)
    assert (await client.publish()).status_code == 201
    assert client.session is not None
    token = client.session.location.rsplit("/", 1)[1]
    for path in (f"/whip/{other.slug}/{token}", f"/whep/{stream.slug}/{token}"):
        assert (await http.delete(path)).status_code == 404
        patched = await http.patch(path, data="a=end-of-candidates\r\n", content_type=SDPFRAG)
        assert patched.status_code == 404
    guessed = "A" * 43
    assert (await http.delete(f"/whip/{stream.slug}/{guessed}")).status_code == 404
    assert (await refreshed(stream)).state == Stream.State.LIVE
    assert await gateway.publisher_active(stream_id=str(stream.pk))


async def test_options_and_cors(http: AsyncClient, stream_parts: tuple[Stream, IssuedKey]) -> None:
    stream, _ = stream_parts
    response = await http.options(
        f"/whip/{stream.slug}",
        headers={"Origin": "https://obs.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "if-match"} <= allowed
    exposed = {h.strip() for h in response["Access-Control-Expose-Headers"].split(",")}
    assert {"Location", "ETag", "Link", "Accept-Patch"} <= exposed
    assert response["Accept-Post"] == SDP

    session = await http.options(f"/whip/{stream.slug}/{'A' * 43}")
    assert session.status_code == 204
    assert session["Accept-Patch"] == SDPFRAG
    assert {"PATCH", "DELETE"} <= {m.strip() for m in session["Allow"].split(",")}


async def test_405_for_other_methods(
    http: AsyncClient, stream_parts: tuple[Stream, IssuedKey]
) -> None:
    stream, _ = stream_parts
    response = await http.get(f"/whip/{stream.slug}")
    assert response.status_code == 405
    assert response["Allow"] == "POST, OPTIONS"
    assert response.json()["error"]["code"] == "method_not_allowed"


async def test_link_headers_carry_stun_and_turn(
    http: AsyncClient,
    peers: list[WhipClient | WhepClient],
    stream_parts: tuple[Stream, IssuedKey],
) -> None:
    stream, key = stream_parts
    gateway.router(str(stream.pk))  # the SFU's routers start before the override: no STUN for it
    ice = {
        "STUN_URLS": ["stun:turn.example.org:3478"],
        "TURN_URLS": ["turn:turn.example.org:3478?transport=udp"],
        "TURN_SECRET": "s3cret",
    }
    client = await whip(http, peers, stream, key.secret)
    offer = await client.publisher.create_offer()
    with override_settings(ONAIR=ice):
        response = await client.post(offer)
    assert response.status_code == 201
    links = response["Link"]
    assert '<stun:turn.example.org:3478>; rel="ice-server"' in links
    turn = re.search(
        r'<turn:turn\.example\.org:3478\?transport=udp>; rel="ice-server"; '
        r'username="(\d+:\w+)"; credential="([^"]+)"; credential-type="password"',
        links,
    )
    assert turn, links


async def test_a_studio_publish_replaces_a_whip_publisher(
    http: AsyncClient,
    peers: list[WhipClient | WhepClient],
    stream_parts: tuple[Stream, IssuedKey],
) -> None:
    """The owner takes over from the studio; the WHIP session is then over: its DELETE
    answers 200 and leaves the studio's broadcast alone."""
    stream, key = stream_parts
    client = await whip(http, peers, stream, key.secret)
    assert (await client.publish()).status_code == 201
    studio = WhipClient(http, stream.slug, None)
    peers.append(studio)
    result = await gateway.publish(
        stream_id=str(stream.pk), offer_sdp=await studio.publisher.create_offer()
    )
    await studio.publisher.accept_answer(result.answer_sdp)
    assert (await client.delete()).status_code == 200
    assert (await refreshed(stream)).state == Stream.State.LIVE
    assert gateway.publisher_session(str(stream.pk), result.session_id) is not None
    assert (await client.delete()).status_code == 404


async def test_a_publisher_gone_before_its_delete_gets_200_and_ends_no_later_broadcast(
    settings: Any,
    http: AsyncClient,
    peers: list[WhipClient | WhepClient],
    stream_parts: tuple[Stream, IssuedKey],
) -> None:
    """An encoder whose connection closes before its DELETE: once its grace period is over
    (its broadcast ended), the DELETE still answers 200, and ends nothing, not even the
    broadcast a new publisher started meanwhile."""
    settings.ONAIR = {**settings.ONAIR, "PUBLISHER_GRACE_SECONDS": 0.5}
    stream, key = stream_parts
    first = await whip(http, peers, stream, key.secret)
    assert (await first.publish()).status_code == 201
    assert await wait_until(lambda: first.publisher.pc.connectionState == "connected", 10)
    await first.close()

    async def ended() -> bool:
        return (await refreshed(stream)).state == Stream.State.ENDED

    assert await wait_until_awaited(ended, 15)  # the server noticed, and gave up on it
    response = await first.trickle([])
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "connection_lost"
    second = await whip(http, peers, stream, key.secret)
    assert (await second.publish()).status_code == 201
    assert (await first.delete()).status_code == 200
    assert (await refreshed(stream)).state == Stream.State.LIVE
    assert gateway.router(str(stream.pk)) is not None
    assert (await first.delete()).status_code == 404
    assert (await second.delete()).status_code == 200
    assert (await refreshed(stream)).state == Stream.State.ENDED
