"""ICE configuration and trickled candidates, independent of any web framework."""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceCandidate, RTCIceServer
from aiortc.sdp import candidate_from_sdp

from sfu.errors import NegotiationError


@dataclass(frozen=True)
class IceServer:
    """One STUN or TURN server, as in the WebRTC ``RTCIceServer`` dictionary.

    TURN credentials are passed as issued (e.g. short-lived TURN REST
    credentials: ``username="<expiry>:<user>"``, ``credential=<HMAC>``).
    """

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True)
class IceCandidate:
    """A remote trickled candidate, as in the WebRTC ``RTCIceCandidateInit``.

    An empty ``candidate`` means end-of-candidates.
    """

    candidate: str
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None


def rtc_configuration(
    ice_servers: tuple[IceServer, ...], *, max_bundle: bool = False
) -> RTCConfiguration:
    """An aiortc configuration using exactly these servers.

    An empty tuple means host candidates only: aiortc's own default would
    contact a public STUN server. ``max_bundle`` is for a peer that makes the offer:
    aiortc's default ("balanced") gathers one ICE transport per media kind until the
    answer bundles them, so an unanswered offer would hold twice the sockets.
    """
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(
                urls=list(server.urls), username=server.username, credential=server.credential
            )
            for server in ice_servers
        ],
        bundlePolicy=RTCBundlePolicy.MAX_BUNDLE if max_bundle else RTCBundlePolicy.BALANCED,
    )


def parse_ice_candidate(candidate: IceCandidate) -> RTCIceCandidate | None:
    """aiortc's candidate for a trickled one, or None for end-of-candidates.

    Raises NegotiationError for a malformed candidate line.
    """
    line = candidate.candidate.strip()
    if not line:
        return None
    if line.startswith("candidate:"):
        line = line[len("candidate:") :]
    try:
        parsed = candidate_from_sdp(line)
    except (AssertionError, IndexError, ValueError) as exc:  # aiortc asserts on short lines
        raise NegotiationError(f"malformed ICE candidate: {candidate.candidate!r}") from exc
    if not 0 <= parsed.port <= 65535:
        # aioice would send its checks there: OverflowError, an ERROR record, socket closed
        raise NegotiationError(f"ICE candidate port {parsed.port} is out of range")
    parsed.sdpMid = candidate.sdp_mid
    parsed.sdpMLineIndex = candidate.sdp_mline_index
    if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
        parsed.sdpMLineIndex = 0
    return parsed
