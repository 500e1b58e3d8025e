"""Codec choice and SDP inspection: pure functions over aiortc's parameter types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aiortc import RTCRtpCodecCapability, RTCRtpCodecParameters, RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpParameters
from aiortc.sdp import parse_h264_profile_level_id

from sfu.sdp_validation import validate_description
from sfu.simulcast import SimulcastOffer, offered_simulcast

MEDIA_KINDS = ("audio", "video")

# What the SFU forwards: VP8 and H.264 (constrained) baseline with
# packetization-mode=1, and Opus. Order is the preference for server offers.
SUPPORTED_MIME_TYPES: dict[str, tuple[str, ...]] = {
    "audio": ("audio/opus",),
    "video": ("video/vp8", "video/h264"),
}
_RTX = "video/rtx"


class CodecLike(Protocol):
    @property
    def mimeType(self) -> str: ...
    @property
    def clockRate(self) -> int: ...
    @property
    def parameters(self) -> dict[str, str | int | None]: ...


@dataclass(frozen=True)
class OfferedMedia:
    """One audio or video m-line of a remote offer: ``index`` is its place among all
    the offer's media sections (from 0), ``simulcast`` what it sends as simulcast."""

    kind: str
    direction: str
    codecs: tuple[RTCRtpCodecParameters, ...]
    index: int = 0
    simulcast: SimulcastOffer | None = None


@dataclass(frozen=True)
class NegotiatedCodec:
    """Payload types a down track sends with, from the viewer's negotiation."""

    payload_type: int
    rtx_payload_type: int | None


def _h264_profile(codec: CodecLike) -> object:
    return parse_h264_profile_level_id(str(codec.parameters.get("profile-level-id", "42E01F")))[0]


def codecs_match(a: CodecLike, b: CodecLike) -> bool:
    """Same codec: MIME type and clock rate, and for H.264 the same profile and
    packetization mode (the rule aiortc and browsers apply)."""
    mime = a.mimeType.lower()
    if mime != b.mimeType.lower() or a.clockRate != b.clockRate:
        return False
    if mime != "video/h264":
        return True
    try:
        return str(a.parameters.get("packetization-mode", "0")) == str(
            b.parameters.get("packetization-mode", "0")
        ) and _h264_profile(a) == _h264_profile(b)
    except ValueError:
        return False


def is_rtx(codec: CodecLike) -> bool:
    return codec.mimeType.lower() == _RTX


def is_vp8(codec: CodecLike) -> bool:
    return codec.mimeType.lower() == "video/vp8"


def _supported_capabilities(kind: str) -> list[RTCRtpCodecCapability]:
    capabilities = RTCRtpSender.getCapabilities(kind).codecs
    ordered: list[RTCRtpCodecCapability] = []
    for mime in SUPPORTED_MIME_TYPES[kind]:
        ordered.extend(c for c in capabilities if c.mimeType.lower() == mime)
    return ordered


def codec_preferences(kind: str, codec: CodecLike | None) -> list[RTCRtpCodecCapability]:
    """``setCodecPreferences`` argument: exactly ``codec`` when it is known,
    otherwise every codec the SFU forwards; RTX for video."""
    candidates = _supported_capabilities(kind)
    if codec is not None:
        candidates = [c for c in candidates if codecs_match(c, codec)]
    if kind == "video" and candidates:
        rtx = [c for c in RTCRtpSender.getCapabilities(kind).codecs if is_rtx(c)]
        candidates.extend(rtx)
    return candidates


def select_publish_codec(offered: OfferedMedia) -> RTCRtpCodecParameters | None:
    """The publisher's first offered codec that the SFU can forward."""
    supported = _supported_capabilities(offered.kind)
    for codec in offered.codecs:
        if any(codecs_match(codec, capability) for capability in supported):
            return codec
    return None


def negotiated_codec(parameters: RTCRtpParameters, codec: CodecLike) -> NegotiatedCodec | None:
    """The viewer's payload types for ``codec`` (and its RTX), if negotiated."""
    for candidate in parameters.codecs:
        if (
            not is_rtx(candidate)
            and codecs_match(candidate, codec)
            and candidate.payloadType is not None
        ):
            rtx = next(
                (
                    c.payloadType
                    for c in parameters.codecs
                    if is_rtx(c) and c.parameters.get("apt") == candidate.payloadType
                ),
                None,
            )
            return NegotiatedCodec(payload_type=candidate.payloadType, rtx_payload_type=rtx)
    return None


def offered_media(offer_sdp: str) -> list[OfferedMedia]:
    """Audio and video m-lines of an offer, in order. Raises ``InvalidSdpError`` (a
    NegotiationError) naming the problem when the offer is malformed, and
    NegotiationError for a simulcast the SFU does not take (``sfu.simulcast``)."""
    description = validate_description(offer_sdp, sdp_type="offer")
    simulcast = offered_simulcast(offer_sdp)
    return [
        OfferedMedia(
            kind=m.kind,
            direction=str(m.direction),
            codecs=tuple(m.rtp.codecs),
            index=index,
            simulcast=simulcast[index] if index < len(simulcast) else None,
        )
        for index, m in enumerate(description.media)
        if m.kind in MEDIA_KINDS
    ]
