"""ICE servers for every peer of a broadcast: browsers, the SFU's own peers, WHIP/WHEP clients.

One list, built per session from ``settings.ONAIR``, reaches all three, so that they all
traverse NATs the same way (docs/NAT.md). TURN credentials follow the TURN REST convention
that coturn implements with ``use-auth-secret``: the username is ``"<unix expiry>:<user>"``
and the password is ``base64(HMAC-SHA1(shared secret, username))``, so the TURN server
checks them without a database and the shared secret never leaves the server.

Settings (``settings.ONAIR``; ``onair/settings/base.py`` reads the ``ONAIR_*`` environment):

``STUN_URLS``            ``["stun:turn.example.org:3478"]``. Default ``[]``.
``TURN_URLS``            ``["turn:turn.example.org:3478?transport=udp",
                         "turns:turn.example.org:443?transport=tcp"]``. Default ``[]``.
``TURN_SECRET``          coturn's ``static-auth-secret``. TURN URLs are dropped without it.
``TURN_TTL_SECONDS``     lifetime of an issued credential. Default 86400.
``ICE_TRANSPORT_POLICY`` ``"all"`` or ``"relay"``: viewers' policy (relay hides their address
                         from the SFU and the broadcaster). Default ``"all"``.
``PUBLIC_IP``            the SFU's public address behind a 1:1 NAT (cloud VMs), optionally
                         ``"public/private"``. Default ``""``.
``UDP_PORT_RANGE``       ``"50000-50999"``: the SFU binds its ICE sockets there. Default ``""``.

With the defaults no ICE server is used at all, so no traffic leaves the machine.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from django.conf import settings

DEFAULT_TURN_TTL_SECONDS = 24 * 3600


@dataclass(frozen=True)
class IceServer:
    """One STUN or TURN server, as in the WebRTC ``RTCIceServer`` dictionary (the embedded
    gateway hands it to the SFU as the SFU's own)."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


class IcePolicy(StrEnum):
    ALL = "all"
    RELAY = "relay"


class PeerRole(StrEnum):
    PUBLISHER = "publisher"
    VIEWER = "viewer"
    SFU = "sfu"


@dataclass(frozen=True)
class IceSettings:
    stun_urls: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_secret: str = ""
    turn_ttl_seconds: int = DEFAULT_TURN_TTL_SECONDS
    viewer_policy: IcePolicy = IcePolicy.ALL
    public_ip: str = ""
    udp_port_range: tuple[int, int] | None = None

    def __repr__(self) -> str:
        # Settings objects end up in logs and tracebacks: never print the shared secret.
        secret = "***" if self.turn_secret else ""
        return (
            f"IceSettings(stun_urls={self.stun_urls!r}, turn_urls={self.turn_urls!r}, "
            f"turn_secret={secret!r}, turn_ttl_seconds={self.turn_ttl_seconds}, "
            f"viewer_policy={self.viewer_policy.value!r}, public_ip={self.public_ip!r}, "
            f"udp_port_range={self.udp_port_range!r})"
        )


@dataclass(frozen=True)
class TurnCredential:
    username: str
    password: str
    expires_at: int


def parse_port_range(value: str) -> tuple[int, int] | None:
    """``"50000-50999"`` → ``(50000, 50999)``; ``""`` → ``None``."""
    if not value.strip():
        return None
    low_text, sep, high_text = value.partition("-")
    if not sep:
        raise ValueError(f"UDP_PORT_RANGE {value!r} is not of the form LOW-HIGH")
    low, high = int(low_text), int(high_text)
    if not 1024 <= low <= high <= 65535:
        raise ValueError(f"UDP_PORT_RANGE {value!r} must satisfy 1024 <= LOW <= HIGH <= 65535")
    return low, high


def ice_settings_from(raw: Mapping[str, Any]) -> IceSettings:
    """Validate the ICE keys of an ``ONAIR`` dict."""
    ttl = int(raw.get("TURN_TTL_SECONDS", DEFAULT_TURN_TTL_SECONDS))
    if ttl <= 0:
        raise ValueError("TURN_TTL_SECONDS must be positive")
    return IceSettings(
        stun_urls=_urls(raw.get("STUN_URLS", ()), ("stun:", "stuns:")),
        turn_urls=_urls(raw.get("TURN_URLS", ()), ("turn:", "turns:")),
        turn_secret=str(raw.get("TURN_SECRET", "")),
        turn_ttl_seconds=ttl,
        viewer_policy=IcePolicy(raw.get("ICE_TRANSPORT_POLICY", IcePolicy.ALL)),
        public_ip=str(raw.get("PUBLIC_IP", "")),
        udp_port_range=_port_range(raw.get("UDP_PORT_RANGE", "")),
    )


def ice_settings() -> IceSettings:
    """Read on every call so ``override_settings`` in tests takes effect."""
    return ice_settings_from(getattr(settings, "ONAIR", {}))


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
    config = ice_settings() if config is None else config
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
    config = ice_settings() if config is None else config
    return config.viewer_policy if role is PeerRole.VIEWER else IcePolicy.ALL


def browser_configuration(
    *, user: str, role: PeerRole, config: IceSettings | None = None, now: float | None = None
) -> dict[str, Any]:
    """The ``RTCConfiguration`` dict a page passes to ``new RTCPeerConnection(...)``."""
    config = ice_settings() if config is None else config
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


def _port_range(value: Any) -> tuple[int, int] | None:
    if isinstance(value, str):
        return parse_port_range(value)
    low, high = value
    return parse_port_range(f"{low}-{high}")


def _urls(value: Any, schemes: tuple[str, ...]) -> tuple[str, ...]:
    urls = tuple(value.split(",")) if isinstance(value, str) else tuple(value)
    urls = tuple(url.strip() for url in urls if url.strip())
    for url in urls:
        if not url.startswith(schemes):
            raise ValueError(f"ICE server URL {url!r} must start with one of {schemes}")
    return urls


def _quoted(value: str) -> str:
    """An RFC 9110 quoted-string."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
