"""ICE servers for every peer of a broadcast: browsers, the SFU's own peers, WHIP/WHEP clients.

One list, built per session from the ICE settings, reaches all three, so that they all
traverse NATs the same way (docs/NAT.md). TURN credentials follow the TURN REST convention
that coturn implements with ``use-auth-secret``: the username is ``"<unix expiry>:<user>"``
and the password is ``base64(HMAC-SHA1(shared secret, username))``, so the TURN server
checks them without a database and the shared secret never leaves the server.

Settings: ``onair.conf.IceSettings`` (``STUN_URLS``, ``TURN_URLS``, ``TURN_SECRET``, ...),
listed in docs/SETTINGS.md.

With the defaults no ICE server is used at all, so no traffic leaves the machine.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from onair.conf import IcePolicy, IceSettings, onair_settings


@dataclass(frozen=True)
class IceServer:
    """One STUN or TURN server, as in the WebRTC ``RTCIceServer`` dictionary (the embedded
    gateway hands it to the SFU as the SFU's own)."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


class PeerRole(StrEnum):
    PUBLISHER = "publisher"
    VIEWER = "viewer"
    SFU = "sfu"


@dataclass(frozen=True)
class TurnCredential:
    username: str
    password: str
    expires_at: int


def turn_credential(
    *, secret: str, user: str, ttl_seconds: int, now: float | None = None
) -> TurnCredential:
    """A TURN REST credential for ``user`` valid for ``ttl_seconds`` from ``now``."""
    if not secret:
        raise ValueError("a TURN credential needs the shared secret")
    if ":" in user:
        raise ValueError("the TURN user must not contain ':' (coturn's REST separator)")
    expires_at = int(time.time() if now is None else now) + ttl_seconds
    username = f"{expires_at}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return TurnCredential(
        username=username, password=base64.b64encode(digest).decode(), expires_at=expires_at
    )


def ice_servers(
    *, user: str, config: IceSettings | None = None, now: float | None = None
) -> tuple[IceServer, ...]:
    """The ICE servers of one session: STUN as configured, TURN with a fresh credential."""
    config = onair_settings().ice if config is None else config
    servers: list[IceServer] = []
    if config.stun_urls:
        servers.append(IceServer(urls=config.stun_urls))
    if config.turn_urls and config.turn_secret:
        credential = turn_credential(
            secret=config.turn_secret, user=user, ttl_seconds=config.turn_ttl_seconds, now=now
        )
        servers.append(
            IceServer(
                urls=config.turn_urls,
                username=credential.username,
                credential=credential.password,
            )
        )
    return tuple(servers)


def ice_transport_policy(role: PeerRole, config: IceSettings | None = None) -> IcePolicy:
    """Relay-only applies to viewers; broadcasters and the SFU gather every candidate."""
    config = onair_settings().ice if config is None else config
    return config.viewer_policy if role is PeerRole.VIEWER else IcePolicy.ALL


def browser_configuration(
    *, user: str, role: PeerRole, config: IceSettings | None = None, now: float | None = None
) -> dict[str, Any]:
    """The ``RTCConfiguration`` dict a page passes to ``new RTCPeerConnection(...)``."""
    config = onair_settings().ice if config is None else config
    return {
        "iceServers": [
            _browser_server(server) for server in ice_servers(user=user, config=config, now=now)
        ],
        "iceTransportPolicy": ice_transport_policy(role, config).value,
    }


def client_ice_fields(
    *, user: str, role: PeerRole, config: IceSettings | None = None
) -> dict[str, Any]:
    """``browser_configuration`` as the pages' config and the ``welcome`` message carry it:
    ``{"ice_servers": [...], "ice_transport_policy": "all" | "relay"}``."""
    browser = browser_configuration(user=user, role=role, config=config)
    return {
        "ice_servers": browser["iceServers"],
        "ice_transport_policy": browser["iceTransportPolicy"],
    }


def link_header_values(servers: Sequence[IceServer]) -> list[str]:
    """``Link`` values advertising ``servers`` to WHIP/WHEP clients (RFC 9725 §4.6).

    One link per URL, as clients parse them: ``<turn:…>; rel="ice-server"; username="…";
    credential="…"; credential-type="password"``.
    """
    values = []
    for server in servers:
        for url in server.urls:
            value = f'<{url}>; rel="ice-server"'
            if server.username is not None and server.credential is not None:
                value += (
                    f"; username={_quoted(server.username)}"
                    f"; credential={_quoted(server.credential)}"
                    '; credential-type="password"'
                )
            values.append(value)
    return values


def link_header(servers: Sequence[IceServer]) -> str:
    """All links in one ``Link`` header value (comma-separated, RFC 8288 §3)."""
    return ", ".join(link_header_values(servers))


def _browser_server(server: IceServer) -> dict[str, Any]:
    entry: dict[str, Any] = {"urls": list(server.urls)}
    if server.username is not None and server.credential is not None:
        entry["username"] = server.username
        entry["credential"] = server.credential
    return entry


def _quoted(value: str) -> str:
    """An RFC 9110 quoted-string."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
