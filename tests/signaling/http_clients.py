"""WHIP/WHEP clients for tests: aiortc peers speaking HTTP to the real ASGI app.

``WhipClient``/``WhepClient`` post an aiortc offer with Django's ``AsyncClient`` (the full
middleware stack, in the test's event loop, where the in-process SFU runs too), keep the
session URL and ETag, and can trickle, restart ICE and delete like a real client.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
from dataclasses import dataclass
from typing import Any

from aioice import stun
from aiortc import RTCPeerConnection
from django.http import HttpResponse
from django.test import AsyncClient

from testpeers import TestPublisher, TestViewer

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"


def ice_credentials(sdp: str) -> tuple[str, str]:
    ufrag = re.search(r"a=ice-ufrag:(\S+)", sdp)
    pwd = re.search(r"a=ice-pwd:(\S+)", sdp)
    assert ufrag, sdp
    assert pwd, sdp
    return ufrag[1], pwd[1]


def host_candidates(sdp: str) -> list[tuple[str, int]]:
    """IPv4 host candidates' addresses of an SDP (or fragment)."""
    found = re.findall(r"a=candidate:\S+ 1 udp \d+ (\d+\.\d+\.\d+\.\d+) (\d+) typ host", sdp)
    return [(host, int(port)) for host, port in found]


def without_candidates(sdp: str) -> tuple[str, list[str]]:
    """The SDP without its ``a=candidate`` lines, and those lines (for trickling)."""
    lines = sdp.splitlines()
    candidates = [line for line in lines if line.startswith("a=candidate:")]
    kept = [line for line in lines if not line.startswith(("a=candidate:", "a=end-of-candidates"))]
    return "\r\n".join(kept) + "\r\n", candidates


@dataclass
class Session:
    location: str
    etag: str
    answer: str


class HttpPeer:
    """What WHIP and WHEP clients share: the HTTP side."""

    protocol = ""

    def __init__(self, http: AsyncClient, slug: str, token: str | None = None) -> None:
        self.http = http
        self.slug = slug
        self.token = token
        self.session: Session | None = None

    @property
    def endpoint(self) -> str:
        return f"/{self.protocol}/{self.slug}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def post(self, offer: str, content_type: str = SDP) -> HttpResponse:
        response = await self.http.post(
            self.endpoint, data=offer, content_type=content_type, headers=self.headers()
        )
        if response.status_code == 201:
            self.session = Session(
                location=response["Location"],
                etag=response["ETag"],
                answer=response.content.decode(),
            )
        return response

    async def patch(
        self, fragment: str, *, if_match: str | None = None, content_type: str = SDPFRAG
    ) -> HttpResponse:
        assert self.session is not None
        headers = self.headers()
        if if_match is not None:
            headers["If-Match"] = if_match
        return await self.http.patch(
            self.session.location, data=fragment, content_type=content_type, headers=headers
        )

    async def delete(self) -> HttpResponse:
        assert self.session is not None
        return await self.http.delete(self.session.location, headers=self.headers())

    async def trickle(self, candidates: list[str], mid: str = "0") -> HttpResponse:
        assert self.session is not None
        ufrag, pwd = ice_credentials(self.offer_sdp())
        fragment = (
            f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
            f"a=mid:{mid}\r\n" + "".join(f"{line}\r\n" for line in candidates)
        )
        return await self.patch(fragment, if_match=self.session.etag)

    async def restart_ice(self) -> HttpResponse:
        """An ICE restart as RFC 9725 §4.3.2 has it: new credentials in a PATCH with
        ``If-Match: "*"``; on 200 this peer takes the SFU's new ones too."""
        assert self.session is not None
        ufrag, pwd = secrets.token_hex(4), secrets.token_hex(12)
        fragment = (
            f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
            "a=mid:0\r\n"
        )
        response = await self.patch(fragment, if_match="*")
        if response.status_code == 200:
            remote_ufrag, remote_pwd = ice_credentials(response.content.decode())
            rotate_ice(self.pc(), ufrag, pwd, remote_ufrag, remote_pwd)
            self.session.etag = response["ETag"]
        return response

    def pc(self) -> RTCPeerConnection:
        raise NotImplementedError

    def offer_sdp(self) -> str:
        return str(self.pc().localDescription.sdp)


class WhipClient(HttpPeer):
    protocol = "whip"

    def __init__(self, http: AsyncClient, slug: str, token: str | None, codec: str = "vp8") -> None:
        super().__init__(http, slug, token)
        self.publisher = TestPublisher(codec=codec)

    def pc(self) -> RTCPeerConnection:
        return self.publisher.pc

    async def publish(self) -> HttpResponse:
        response = await self.post(await self.publisher.create_offer())
        if response.status_code == 201:
            assert self.session is not None
            await self.publisher.accept_answer(self.session.answer)
        return response

    async def close(self) -> None:
        await self.publisher.close()


class WhepClient(HttpPeer):
    protocol = "whep"

    def __init__(self, http: AsyncClient, slug: str, token: str | None = None) -> None:
        super().__init__(http, slug, token)
        self.viewer = TestViewer()

    def pc(self) -> RTCPeerConnection:
        return self.viewer.pc

    async def watch(self) -> HttpResponse:
        response = await self.post(await self.viewer.create_offer())
        if response.status_code == 201:
            assert self.session is not None
            await self.viewer.accept_answer(self.session.answer)
        return response

    async def close(self) -> None:
        await self.viewer.close()


def rotate_ice(
    pc: RTCPeerConnection, ufrag: str, pwd: str, remote_ufrag: str, remote_pwd: str
) -> None:
    """The client's half of an ICE restart (aiortc has none): take new credentials."""
    for transceiver in pc.getTransceivers():
        connection = transceiver.receiver.transport.transport._connection
        connection._local_username = ufrag
        connection._local_password = pwd
        connection.remote_username = remote_ufrag
        connection.remote_password = remote_pwd


def ice_connection(pc: RTCPeerConnection) -> Any:
    """The aioice connection under ``pc`` (bundled: one for every transceiver)."""
    return pc.getTransceivers()[0].receiver.transport.transport._connection


async def stun_check(
    address: tuple[str, int],
    *,
    remote_ufrag: str,
    remote_pwd: str,
    local_ufrag: str,
    within: float = 5.0,
) -> stun.Message | None:
    """One ICE connectivity check to ``address`` from a fresh socket, as the controlling
    peer ``local_ufrag`` with these credentials of the remote agent; returns its answer,
    None if none came ``within`` seconds."""
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    request.attributes["USERNAME"] = f"{remote_ufrag}:{local_ufrag}"
    request.attributes["PRIORITY"] = 1
    request.attributes["ICE-CONTROLLING"] = secrets.randbits(64)
    request.add_message_integrity(remote_pwd.encode())
    request.add_fingerprint()
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.bind((address[0], 0))
        await loop.sock_sendto(sock, bytes(request), address)
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 2048), within)
        except TimeoutError:
            return None
    return stun.parse_message(data)


def silent_offer(direction: str = "recvonly") -> str:
    """A valid offer (Opus and VP8, bundled; ``recvonly``: WHEP, ``sendonly``: WHIP) from a
    client that will never do ICE: fresh credentials, no candidates and no
    end-of-candidates, no peer behind it."""
    fingerprint = ":".join(f"{byte:02X}" for byte in secrets.token_bytes(32))
    session = (
        f"a=ice-ufrag:{secrets.token_hex(4)}\r\na=ice-pwd:{secrets.token_hex(12)}\r\n"
        f"a=fingerprint:sha-256 {fingerprint}\r\na=setup:actpass\r\na=rtcp-mux\r\n"
    )
    return (
        f"v=0\r\no=- {secrets.randbelow(1 << 31)} 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        "a=group:BUNDLE 0 1\r\n"
        f"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na={direction}\r\na=mid:0\r\n"
        "a=rtpmap:111 opus/48000/2\r\n" + session + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
        f"c=IN IP4 0.0.0.0\r\na={direction}\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n"
        "a=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n" + session
    )
