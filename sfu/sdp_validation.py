"""Up-front checks of a remote SDP offer or answer: pure functions, no peer connection.

aiortc trusts the SDP it is given: a media section without ``a=setup``, ``a=mid`` or a
direction, a ``BUNDLE`` group naming a missing mid, or a payload type that is not a
number make it raise ``AttributeError``, ``ValueError`` or worse halfway through
``setRemoteDescription``, leaving a peer connection it can no longer close. Everything
here runs before a peer connection exists and raises ``InvalidSdpError`` naming the
problem, so a malformed description costs one parse and never reaches aiortc.

A description checked once is not parsed again: the last few are kept, since an offer is
checked where it arrives (``signaling.gateway.offer_validate``) and again by the SFU,
which in the embedded default is the same process.
"""

from __future__ import annotations

import functools
import re
from typing import Final

from aiortc.sdp import DIRECTIONS, SessionDescription

from sfu.errors import NegotiationError

MAX_SDP_BYTES: Final = 64 * 1024
MAX_SDP_LINES: Final = 1000
MAX_MEDIA_SECTIONS: Final = 16
MEDIA_KINDS: Final = ("audio", "video", "application")
OFFER_SETUPS: Final = ("actpass", "active", "passive")
ANSWER_SETUPS: Final = ("active", "passive")

# C0 controls but tab, CR and LF; DEL; and the characters Python's splitlines() also
# treats as line breaks (aiortc splits with it), which would smuggle in lines.
_FORBIDDEN = re.compile("[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f\x85\u2028\u2029]")
_LINE = re.compile(r"^[a-z]=")
_MEDIA_LINE = re.compile(r"^m=(\S+) (\d{1,5})(?:/\d+)? (\S+)((?: \S+)+)$")
_CONNECTION = re.compile(r"^c=IN IP[46] \S+$")
_FINGERPRINT = re.compile(r"^a=fingerprint:\S+ [0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})+$")


class InvalidSdpError(NegotiationError):
    """A session description that breaks a rule of SDP (RFC 8866) or of WebRTC's use of
    it (RFC 8829): the message names the rule and where."""


def validate_description(sdp: str, *, sdp_type: str = "offer") -> SessionDescription:
    """Check a remote offer (or, with ``sdp_type="answer"``, answer) and return it parsed.

    Raises ``InvalidSdpError`` for: more than ``MAX_SDP_BYTES`` or ``MAX_SDP_LINES``;
    control characters; a first line other than ``v=0``; a line that is not ``x=...``;
    no media section or more than ``MAX_MEDIA_SECTIONS``; a malformed ``m=`` line; any
    line aiortc cannot parse; and, in each audio or video section, a missing or
    duplicate ``a=mid``, a missing ``a=setup`` (or one not allowed in this type), a
    missing direction, missing ``a=ice-ufrag``/``a=ice-pwd``, no ``a=fingerprint``, no
    ``a=rtcp-mux``, no ``a=rtpmap``; a malformed ``c=``, ``a=setup`` or
    ``a=fingerprint``; a candidate's port out of range; and a ``BUNDLE`` group naming an
    unknown mid. The result is shared with the next check of the same text: read it,
    do not change it.
    """
    return _validated(sdp, sdp_type)


@functools.lru_cache(maxsize=16)
def _validated(sdp: str, sdp_type: str) -> SessionDescription:
    _check_text(sdp)
    lines = [line for line in sdp.splitlines() if line]
    if not lines or lines[0].strip() != "v=0":
        raise InvalidSdpError("an SDP description starts with the line v=0")
    for number, line in enumerate(lines, start=1):
        if not _LINE.match(line):
            raise InvalidSdpError(f"line {number} is not an SDP line (x=...): {line[:60]!r}")
    media_lines = [line for line in lines if line.startswith("m=")]
    if not media_lines:
        raise InvalidSdpError("no media section (m= line)")
    if len(media_lines) > MAX_MEDIA_SECTIONS:
        raise InvalidSdpError(f"more than {MAX_MEDIA_SECTIONS} media sections")
    for index, line in enumerate(media_lines):
        _check_media_line(index, line)
    _check_attributes(lines, sdp_type)
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises whatever the bad line trips
        raise InvalidSdpError(f"a line does not parse ({type(exc).__name__}: {exc})") from exc
    _check_sections(description)
    return description


def _check_text(sdp: str) -> None:
    try:
        size = len(sdp.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidSdpError("the description is not valid UTF-8 text") from exc
    if size > MAX_SDP_BYTES:
        raise InvalidSdpError(f"the description is larger than {MAX_SDP_BYTES // 1024} KiB")
    if sdp.count("\n") >= MAX_SDP_LINES:
        raise InvalidSdpError(f"the description has more than {MAX_SDP_LINES} lines")
    bad = _FORBIDDEN.search(sdp)
    if bad is not None:
        raise InvalidSdpError(f"control character {bad.group()!r} at offset {bad.start()}")


def _check_media_line(index: int, line: str) -> None:
    match = _MEDIA_LINE.match(line)
    if match is None:
        raise InvalidSdpError(
            f"media section {index}: {line[:60]!r} is not m=<media> <port> <proto> <formats>"
        )
    kind, port, _, formats = match.groups()
    if kind not in MEDIA_KINDS:
        raise InvalidSdpError(f"media section {index}: unknown media {kind[:20]!r}")
    if int(port) > 65535:
        raise InvalidSdpError(f"media section {index}: port {port} is out of range")
    if kind != "application" and not all(pt.isdigit() and int(pt) < 128 for pt in formats.split()):
        raise InvalidSdpError(f"media section {index}: payload types are numbers 0-127")


def _check_attributes(lines: list[str], sdp_type: str) -> None:
    setups = ANSWER_SETUPS if sdp_type == "answer" else OFFER_SETUPS
    for line in lines:
        if line.startswith("a=setup:") and line[len("a=setup:") :] not in setups:
            raise InvalidSdpError(f"{line[:40]!r}: an {sdp_type} sets up {' or '.join(setups)}")
        if line.startswith("c=") and not _CONNECTION.match(line):
            raise InvalidSdpError(f"{line[:60]!r} is not c=IN IP4|IP6 <address>")
        if line.startswith("a=fingerprint:") and not _FINGERPRINT.match(line):
            raise InvalidSdpError(f"{line[:60]!r} is not a=fingerprint:<hash> <hex:hex:...>")


def _check_sections(description: SessionDescription) -> None:
    mids: set[str] = set()
    for index, media in enumerate(description.media):
        where = f"media section {index} ({media.kind})"
        mid = media.rtp.muxId
        if not mid:
            raise InvalidSdpError(f"{where} has no a=mid")
        if mid in mids:
            raise InvalidSdpError(f"{where} repeats a=mid:{mid[:20]}")
        mids.add(mid)
        if media.dtls is None:
            raise InvalidSdpError(f"{where} has no a=setup")
        if not media.dtls.fingerprints:
            raise InvalidSdpError(f"{where} has no a=fingerprint")
        if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
            raise InvalidSdpError(f"{where} has no a=ice-ufrag and a=ice-pwd")
        for candidate in media.ice_candidates:
            # aioice would send its checks there: OverflowError, an ERROR record
            if not 0 <= candidate.port <= 65535:
                raise InvalidSdpError(f"{where}: candidate port {candidate.port} is out of range")
        if media.kind == "application":
            continue
        if media.direction not in DIRECTIONS:
            raise InvalidSdpError(f"{where} has no direction (a=sendonly, a=recvonly, ...)")
        if not media.rtcp_mux:
            raise InvalidSdpError(f"{where} has no a=rtcp-mux (WebRTC needs it)")
        if not media.rtp.codecs:
            raise InvalidSdpError(f"{where} has no codec (a=rtpmap)")
    for group in description.group:
        if group.semantic == "BUNDLE":
            unknown = [str(item) for item in group.items if item not in mids]
            if not group.items or unknown:
                raise InvalidSdpError(
                    f"a=group:BUNDLE names a mid with no media section: {unknown[:1]}"
                )
