"""Named malformations of a valid SDP offer, each with what the refusal must name: the
cases the SFU once answered with a traceback (tests/sfu/test_sdp_validation.py,
tests/signaling/test_bad_input.py)."""

from __future__ import annotations

import re
from collections.abc import Callable


def _drop(prefix: str) -> Callable[[str], str]:
    return lambda sdp: "".join(
        line for line in sdp.splitlines(keepends=True) if not line.startswith(prefix)
    )


def _replace(pattern: str, new: str, count: int = 0) -> Callable[[str], str]:
    return lambda sdp: re.sub(pattern, new, sdp, count=count, flags=re.MULTILINE)


def _truncate(sdp: str) -> str:
    """Cut inside the video section's c= line, before its mid and credentials."""
    return sdp[: sdp.index("c=", sdp.index("m=video")) + 7]


def _no_direction(sdp: str) -> str:
    for direction in ("sendrecv", "sendonly", "recvonly", "inactive"):
        sdp = _drop(f"a={direction}")(sdp)
    return sdp


# name -> (mutation, what the error message names)
MALFORMED: dict[str, tuple[Callable[[str], str], str]] = {
    "no_setup": (_drop("a=setup:"), "no a=setup"),
    "bad_setup": (_replace(r"^a=setup:actpass", "a=setup:sideways"), "sets up"),
    "no_mid": (_drop("a=mid:"), "no a=mid"),
    "duplicate_mid": (_replace(r"^a=mid:1", "a=mid:0"), "repeats a=mid:0"),
    "no_direction": (_no_direction, "no direction"),
    "no_media": (lambda sdp: sdp[: sdp.index("m=")], "no media section"),
    "m_foo": (_replace(r"^m=audio.*$", "m=foo", count=1), "is not m=<media>"),
    "unknown_media": (_replace(r"^m=audio", "m=holo", count=1), "unknown media"),
    "nul_byte": (_replace(r"^a=mid:0", "a=mid:0\x00"), "control character"),
    "truncated": (_truncate, "is not c=IN IP4|IP6 <address>"),
    "bundle_unknown_mid": (_replace(r"^a=group:BUNDLE .*$", "a=group:BUNDLE 7 0 1"), "BUNDLE"),
    "no_ice_credentials": (_drop("a=ice-pwd:"), "no a=ice-ufrag and a=ice-pwd"),
    "no_fingerprint": (_drop("a=fingerprint:"), "no a=fingerprint"),
    "bad_fingerprint": (_replace(r"^a=fingerprint:sha-256 .*$", "a=fingerprint:x"), "hex"),
    "no_rtcp_mux": (_drop("a=rtcp-mux"), "no a=rtcp-mux"),
    "no_codecs": (
        lambda sdp: _drop("a=rtpmap:")(_drop("a=fmtp:")(sdp)),
        "media section 0 (audio) has no codec (a=rtpmap)",
    ),
    "bad_payload_type": (_replace(r"^(m=video \S+ \S+) ", r"\1 x"), "payload types"),
    "bad_rtpmap": (_replace(r"^a=rtpmap:96 .*$", "a=rtpmap:96 opus"), "does not parse"),
    "not_sdp": (lambda sdp: "hello\r\n" + sdp, "starts with the line v=0"),
    # aioice sent its checks there: OverflowError, an ERROR record, the socket closed
    "candidate_port": (
        _replace(r"^(a=candidate:\S+ \d+ \S+ \d+ \S+) \d+", r"\1 99999", count=1),
        "port 99999",
    ),
}
