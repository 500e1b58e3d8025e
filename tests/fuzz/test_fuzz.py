"""Acceptance 1 of issue #17: thousands of generated malformed inputs against a running
server (daphne in a subprocess) with a live broadcast and a decoding viewer.

WHIP and WHEP offers (mutations of a real aiortc offer), trickle-ICE fragments on live
WHIP/WHEP sessions, REST JSON bodies and WebSocket frames on both endpoints. Hypothesis
generates them with a fixed seed (``derandomize=True``) and a fixed number of examples,
each a batch sent at once over keep-alive connections. Afterwards: no answer >= 500, no
ERROR record (nor traceback) in the server's log, no WebSocket ``internal`` error, the
viewer still decodes, and the server's file descriptors, UDP sockets and asyncio tasks are
back to what they were before. The figures go to test-artifacts/fuzz/summary.json; the
ones in docs/SECURITY.md ("Fuzzing") come from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from onair.conf import onair_settings
from onair.serve import CLOSE_BACKLOG, WEBSOCKET_MAX_MESSAGE_BYTES
from testpeers import TestPublisher, TestViewer
from tests.daphne import log_errors
from tests.e2e.conftest import ROOT, OnAirServer, running_server
from tests.fuzz.harness import (
    SDP,
    SDPFRAG,
    Broadcast,
    HttpPool,
    Reply,
    Request,
    Resources,
    resources,
)
from tests.fuzz.strategies import (
    REST_BODIES,
    mutated_sdp,
    trickle_fragment,
    ws_frame,
)
from tests.signaling.http_clients import without_candidates

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    # The broadcast's aiortc peers use `random` in their own thread while examples are drawn.
    pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies"),
    # A strategy's repr holds a whole offer, more than once: harmless, and only computed once.
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
]

BATCH = 8  # inputs sent at once: one Hypothesis example
# ONAIR_FUZZ_SCALE multiplies every budget (e.g. 10 for a longer hunt on a quiet machine).
SCALE = float(os.environ.get("ONAIR_FUZZ_SCALE", "1"))
EXAMPLES = {
    kind: max(1, round(n * SCALE))
    for kind, n in {"whep_offer": 250, "whip_offer": 190, "trickle": 190, "rest_json": 190}.items()
}
WS_CONNECTIONS = max(1, round(150 * SCALE))
WS_FRAMES = (20, 40)  # per connection: under the consumers' burst of 60 messages
END_MARKER = "fuzz-end"  # a type no frame has: its error closes each connection's exchange
SUMMARY = ROOT / "test-artifacts" / "fuzz" / "summary.json"


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


class Fuzz:
    """One run: the server, the broadcast, the clients and what they saw."""

    def __init__(self, server: OnAirServer) -> None:
        self.server = server
        self.port = int(server.base_url.rsplit(":", 1)[1])
        self.pool = HttpPool(self.port)
        self.broadcast = Broadcast(server, self.pool)
        self.ws_replies: Counter[str] = Counter()
        self.ws_frames = 0
        self.ws_internal: list[tuple[str, Any]] = []
        self.deleted = 0
        token = self._json("POST", "/api/v1/auth/token/", self._credentials())["token"]
        self.api = (("Authorization", f"Token {token}"), ("Content-Type", "application/json"))
        created = self._json("POST", "/api/v1/streams/", {"title": "Fuzz API"}, self.api)
        self.api_slug = created["slug"]
        created = self._json("POST", "/api/v1/streams/", {"title": "Fuzz WHIP"}, self.api)
        self.whip_slug, self.whip_key = created["slug"], created["stream_key"]["secret"]

    def _credentials(self) -> dict[str, str]:
        return {"username": self.server.demo_username, "password": self.server.demo_password}

    def _json(
        self, method: str, path: str, body: object, headers: tuple[tuple[str, str], ...] = ()
    ) -> Any:
        headers = headers or (("Content-Type", "application/json"),)
        reply = self.pool.send(Request(method, path, json.dumps(body).encode(), headers))
        assert reply.status in (200, 201), reply
        return json.loads(reply.body)

    def on_loop(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.broadcast.loop).result(60)

    def offers(self) -> tuple[str, str, str]:
        """A viewer's and a publisher's offer without candidates (the fuzz adds its own),
        and a viewer's answer to a server offer, all from real aiortc peers."""

        async def make() -> tuple[str, str, str]:
            viewer, publisher, answerer = TestViewer(), TestPublisher(), TestViewer()
            try:
                view = await viewer.create_offer()
                publish = await publisher.create_offer()
                # what the watch page answers: an offer shaped like the server's (sendonly)
                answer = await answerer.answer(view.replace("a=recvonly", "a=sendonly"))
            finally:
                for peer in (viewer, publisher, answerer):
                    await peer.close()
            return (
                without_candidates(view)[0],
                without_candidates(publish)[0],
                without_candidates(answer)[0],
            )

        result: tuple[str, str, str] = self.on_loop(make())
        return result

    def delete_created(self, replies: list[Reply]) -> None:
        """A session the server accepted is ended at once, so the baseline returns."""
        for reply in replies:
            if reply.status == 201 and "location" in reply.headers:
                self.pool.send(Request("DELETE", reply.headers["location"]))
                self.deleted += 1
            elif reply.status == 201 and reply.headers.get("content-type") == "application/json":
                slug = json.loads(reply.body)["slug"]
                self.pool.send(Request("DELETE", f"/api/v1/streams/{slug}/", b"", self.api))
                self.deleted += 1

    def session(self, protocol: str, offer: str) -> tuple[str, str]:
        """A fresh WHIP or WHEP session (it never connects): its URL and ETag."""
        slug, headers = (
            (self.whip_slug, (("Authorization", f"Bearer {self.whip_key}"),))
            if protocol == "whip"
            else (self.server.demo_slug, ())
        )
        reply = self.pool.send(
            Request(
                "POST", f"/{protocol}/{slug}", offer.encode(), (("Content-Type", SDP), *headers)
            )
        )
        assert reply.status == 201, reply
        return reply.headers["location"], reply.headers["etag"]

    def websocket(self, path: str) -> ClientConnection:
        return connect(
            f"ws://127.0.0.1:{self.port}{path}",
            origin=f"http://127.0.0.1:{self.port}",  # type: ignore[arg-type]
            open_timeout=20,
            max_size=None,
            compression=None,
            proxy=None,
        )

    def ws_exchange(self, path: str, frames: list[str | bytes]) -> None:
        """Send ``frames`` and then a message of an unknown type, and read until the error
        naming it: every frame was answered by then (a consumer handles its frames in
        order). An ``internal`` error, or a close, is a failure, unless a frame was larger
        than the server takes (``onair.serve``: it fails that connection), or the frames
        together are more than it holds waiting for the consumer (it may close with 4429
        when the consumer falls behind, as on a loaded machine)."""
        oversized = any(_size(frame) > WEBSOCKET_MAX_MESSAGE_BYTES for frame in frames)
        backlog = onair_settings().max_websocket_backlog
        flooding = sum(_size(frame) + 1024 for frame in frames) > backlog > 0
        with self.websocket(path) as ws:
            try:
                for frame in frames:
                    ws.send(frame)
                    self.ws_frames += 1
                ws.send(json.dumps({"type": END_MARKER}))
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    message = json.loads(ws.recv(timeout=deadline - time.monotonic()))
                    kind = message["type"]
                    if kind == "error" and repr(END_MARKER) in message["message"]:
                        return
                    self.ws_replies[f"error {message['code']}" if kind == "error" else kind] += 1
                    if kind == "error" and message["code"] == "internal":
                        self.ws_internal.append((path, frames))
            except ConnectionClosed as closed:
                if oversized:
                    self.ws_replies["closed: a frame over the server's message size"] += 1
                    return
                if flooding and closed.rcvd is not None and closed.rcvd.code == CLOSE_BACKLOG:
                    self.ws_replies["closed: more waiting than the server holds"] += 1
                    return
                self.ws_replies[f"closed {closed.rcvd.code if closed.rcvd else None}"] += 1
                self.ws_internal.append((path, closed.rcvd))
                return
            self.ws_internal.append((path, "no answer to the last frame"))

    def resources(self) -> Resources:
        return resources(self.server.pid, self.pool)


def _size(frame: str | bytes) -> int:
    return len(frame.encode("utf-8", errors="replace") if isinstance(frame, str) else frame)


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    with running_server(
        tmp_path_factory.mktemp("fuzz-server"),
        app="tests.fuzz.probe_asgi:application",
        ONAIR_MAX_SESSIONS_PER_ADDRESS="100000",
    ) as server:
        run = Fuzz(server)
        run.broadcast.start()
        try:
            yield run
        finally:
            with contextlib.suppress(Exception):
                run.broadcast.stop()
            run.pool.close()


def _phase(fuzz: Fuzz, kind: str, inputs: st.SearchStrategy[Request]) -> None:
    @_settings(EXAMPLES[kind])
    @given(st.lists(inputs, min_size=BATCH, max_size=BATCH))
    def run(batch: list[Request]) -> None:
        fuzz.delete_created(fuzz.pool.fuzz(kind, batch))

    run()


def _sdp_requests(path: str, base: str, auth: tuple[tuple[str, str], ...]) -> Any:
    content_types = st.sampled_from([SDP] * 12 + ["text/plain", "application/sdp; x=y", ""])
    return st.builds(
        lambda body, content_type: Request(
            "POST",
            path,
            body.encode("utf-8", "surrogatepass"),
            (("Content-Type", content_type), *auth),
        ),
        mutated_sdp(base),
        content_types,
    )


def test_fuzz(fuzz: Fuzz) -> None:
    view_offer, publish_offer, answer = fuzz.offers()
    # Warm up what the server creates once (thread pools, database connections), then take
    # the baseline with the broadcast and its viewer playing.
    fuzz.delete_created(
        [
            fuzz.pool.send(
                Request(
                    "POST",
                    f"/whep/{fuzz.server.demo_slug}",
                    view_offer.encode(),
                    (("Content-Type", SDP),),
                )
            )
        ]
    )
    fuzz.ws_exchange(f"/ws/watch/{fuzz.server.demo_slug}/", [])
    time.sleep(2)
    baseline = fuzz.resources()
    frames_before = fuzz.broadcast.video_frames()
    started = time.monotonic()
    timings: dict[str, float] = {}

    def timed(kind: str, body: Callable[[], None]) -> None:
        start = time.monotonic()
        body()
        timings[kind] = round(time.monotonic() - start, 1)

    demo = fuzz.server.demo_slug
    whip_auth = (("Authorization", f"Bearer {fuzz.whip_key}"),)
    timed(
        "whep_offer",
        lambda: _phase(fuzz, "whep_offer", _sdp_requests(f"/whep/{demo}", view_offer, ())),
    )
    timed(
        "whip_offer",
        lambda: _phase(
            fuzz, "whip_offer", _sdp_requests(f"/whip/{fuzz.whip_slug}", publish_offer, whip_auth)
        ),
    )
    timed("trickle", lambda: _fuzz_trickle(fuzz, view_offer, publish_offer))
    timed("rest_json", lambda: _fuzz_rest(fuzz))
    timed("ws_frame", lambda: _fuzz_websockets(fuzz, view_offer, answer))
    elapsed = round(time.monotonic() - started, 1)

    decoding = fuzz.broadcast.video_frames() > frames_before + 30
    viewer_after = fuzz.broadcast.video_frames()
    assert _wait(lambda: fuzz.broadcast.video_frames() >= viewer_after + 30, 20), (
        "the viewer stopped decoding after the fuzz"
    )
    settle_start = time.monotonic()
    settled = _wait(lambda: fuzz.resources().within(baseline), 60)
    timings["settle"] = round(time.monotonic() - settle_start, 1)
    after = fuzz.resources()
    errors = log_errors(fuzz.server.log())
    summary = {
        "inputs": {
            **{kind: fuzz.pool.inputs(kind) for kind in EXAMPLES},
            "ws_frame": fuzz.ws_frames,
        },
        "seconds": {**timings, "total": elapsed},
        "http_statuses": {
            kind: dict(sorted((str(s), n) for (k, s), n in fuzz.pool.statuses.items() if k == kind))
            for kind in EXAMPLES
        },
        "ws_replies": dict(sorted(fuzz.ws_replies.items())),
        "sessions_deleted": fuzz.deleted,
        "baseline": vars(baseline),
        "after": vars(after),
        "viewer_decoded_during_fuzz": decoding,
        "log_errors": len(errors),
    }
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(json.dumps(summary, indent=2) + "\n")
    (SUMMARY.parent / "daphne.log").write_text(fuzz.server.log())
    print(json.dumps(summary, indent=2))

    total = sum(summary["inputs"].values())
    assert total >= 10_000 * min(SCALE, 1), summary["inputs"]
    assert fuzz.pool.failures == [], [
        (kind, request.method, request.path, request.body[:300], reply.status, reply.body[:300])
        for kind, request, reply in fuzz.pool.failures[:5]
    ]
    assert fuzz.ws_internal == [], fuzz.ws_internal[:5]
    assert errors == [], _log_excerpt(fuzz.server.log())
    assert decoding, "the viewer stopped decoding during the fuzz"
    assert settled, f"server resources did not return to the baseline: {baseline} -> {after}"


def _fuzz_trickle(fuzz: Fuzz, view_offer: str, publish_offer: str) -> None:
    ufrag, pwd = "fuzz", "fuzzfuzzfuzzfuzzfuzzfuzz"
    current: dict[str, tuple[str, str, float]] = {}

    def session(protocol: str) -> tuple[str, str]:
        location, etag, born = current.get(protocol, ("", "", 0.0))
        if time.monotonic() - born > 8:  # well inside the connect deadline
            if location:
                fuzz.pool.send(Request("DELETE", location))
            offer = view_offer if protocol == "whep" else publish_offer
            offer = offer.replace("a=ice-ufrag:", f"a=ice-ufrag:{ufrag}\r\na=x-old-ufrag:")
            offer = offer.replace("a=ice-pwd:", f"a=ice-pwd:{pwd}\r\na=x-old-pwd:")
            location, etag = fuzz.session(protocol, offer)
            current[protocol] = (location, etag, time.monotonic())
        return location, etag

    if_match = st.one_of(st.none(), st.sampled_from(["*", '"*"', '"bogus"', 'W/"x"', "", "etag"]))
    content_types = st.sampled_from([SDPFRAG] * 10 + [SDP, "text/plain"])

    @_settings(EXAMPLES["trickle"])
    @given(
        st.sampled_from(["whep", "whip"]),
        st.lists(
            st.tuples(trickle_fragment(ufrag, pwd), if_match, content_types),
            min_size=BATCH,
            max_size=BATCH,
        ),
    )
    def run(protocol: str, batch: list[tuple[str, str | None, str]]) -> None:
        location, etag = session(protocol)
        requests = []
        for fragment, match, content_type in batch:
            headers = [("Content-Type", content_type)]
            if match is not None:
                headers.append(("If-Match", etag if match == "etag" else match))
            requests.append(Request("PATCH", location, fragment.encode(), tuple(headers)))
        replies = fuzz.pool.fuzz("trickle", requests)
        if any(reply.status in (404, 409) for reply in replies):
            fuzz.pool.send(Request("DELETE", location))  # lost: the next batch gets a new one
            current.pop(protocol, None)
        elif any("etag" in reply.headers for reply in replies):
            current[protocol] = (
                location,
                replies[-1].headers.get("etag", etag),
                current[protocol][2],
            )

    run()
    for location, _, _ in current.values():
        fuzz.pool.send(Request("DELETE", location))


def _fuzz_rest(fuzz: Fuzz) -> None:
    token = dict(fuzz.api)["Authorization"]
    endpoints = st.sampled_from(
        [
            ("POST", "/api/v1/auth/token/", None),
            ("POST", "/api/v1/streams/", token),
            ("PATCH", f"/api/v1/streams/{fuzz.api_slug}/", token),
            ("PUT", f"/api/v1/streams/{fuzz.api_slug}/", token),
        ]
    )
    content_types = st.sampled_from(
        ["application/json"] * 10
        + [
            "application/json; charset=latin-1",
            "application/json; charset=bogus",
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded",
        ]
    )

    def build(endpoint: tuple[str, str, str | None], body: bytes, content_type: str) -> Request:
        method, path, auth = endpoint
        headers = [("Content-Type", content_type)]
        if auth is not None:
            headers.append(("Authorization", auth))
        return Request(method, path, body, tuple(headers))

    _phase(fuzz, "rest_json", st.builds(build, endpoints, REST_BODIES, content_types))


def _fuzz_websockets(fuzz: Fuzz, view_offer: str, answer: str) -> None:
    demo = fuzz.server.demo_slug
    paths = st.sampled_from(
        [f"/ws/studio/{demo}/", f"/ws/watch/{demo}/", f"/ws/watch/{fuzz.api_slug}/"]
    )

    @_settings(WS_CONNECTIONS)
    @given(
        paths,
        st.booleans(),
        st.lists(ws_frame(view_offer, answer), min_size=WS_FRAMES[0], max_size=WS_FRAMES[1]),
    )
    def run(path: str, watch: bool, frames: list[str | bytes]) -> None:
        # Half the connections first ask to watch: the server then offers, and the
        # answers and candidates that follow reach a live session.
        fuzz.ws_exchange(path, [json.dumps({"type": "watch"}), *frames] if watch else frames)

    run()


def _wait(condition: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def _log_excerpt(log: str) -> str:
    lines = log.splitlines()
    hits = [i for i, line in enumerate(lines) if " ERROR " in line or "Traceback" in line]
    return "\n".join(lines[max(hits[0] - 2, 0) : hits[0] + 40]) if hits else ""


_FORM = (("Content-Type", "application/x-www-form-urlencoded"),)


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/healthz", b"", (("Host", "evil.example"),)),
        ("/api/v1/live/", b"", (("Host", "127.0.0.1:8000:1"),)),
        ("/api/v1/auth/token/", b"&".join(b"f%d=1" % i for i in range(1_500)), _FORM),
    ],
    ids=["host", "malformed_host", "too_many_fields"],
)
def test_suspicious_requests_are_400s_and_warnings(
    fuzz: Fuzz, path: str, body: bytes, headers: tuple[tuple[str, str], ...]
) -> None:
    """Django answers these 400 and logs them at ERROR (django.security.*), though any
    client can send them: they are warnings."""
    before = len(fuzz.server.log())
    reply = fuzz.pool.send(Request("POST" if body else "GET", path, body, headers))
    assert reply.status == 400
    assert _wait(lambda: "django.security" in fuzz.server.log()[before:], 5)
    assert log_errors(fuzz.server.log()[before:]) == []
