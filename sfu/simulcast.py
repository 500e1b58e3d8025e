"""Simulcast in SDP (RFC 8853, RFC 8851): what a publisher's offer sends, and what the
answer must say for it to send it. Pure functions over SDP text.

aiortc neither reads nor writes ``a=rid`` and ``a=simulcast``: it answers a simulcast
offer as a plain one, and a browser given that answer sends only its first encoding. The
answer text sent back is completed here, per video section that offers simulcast: the
two header extensions that name each packet's encoding (``rtp-stream-id``; and
``repaired-rtp-stream-id`` on its retransmissions), one ``a=rid:<rid> recv`` per rid and
``a=simulcast:recv`` in the offer's order. aiortc keeps its own answer; only the text
differs, and only in lines aiortc has no use for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from sfu.errors import NegotiationError

RTP_STREAM_ID_URI: Final = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RTP_STREAM_ID_URI: Final = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"

# Layers one simulcast track may have: browsers send at most 3 (4 with some codecs); each
# layer is a producer with its own packet cache, so an offer must not ask for more.
MAX_SIMULCAST_LAYERS: Final = 4
# A rid travels in a one-byte RTP header extension, whose data is 1 to 16 bytes; its
# characters are those of RFC 8851's rid-id.
_RID = re.compile(r"[A-Za-z0-9_-]{1,16}")
_EXTMAP = re.compile(r"^a=extmap:(\d{1,3})(?:/\w+)? (\S+)")
_RID_LINE = re.compile(r"^a=rid:(\S+) (\S+)")


@dataclass(frozen=True)
class SimulcastOffer:
    """What one video section of an offer sends as simulcast.

    ``rids``: its layers, in the order of ``a=simulcast:send`` (the first of each
    stream's alternatives); ``paused``: those marked ``~`` there, which send nothing
    until the publisher changes its mind; ``rid_extension`` and
    ``repaired_rid_extension``: the header extension ids (None: the offer has no
    ``repaired-rtp-stream-id``, so retransmissions cannot be told apart and are dropped).
    """

    rids: tuple[str, ...]
    paused: frozenset[str]
    rid_extension: int
    repaired_rid_extension: int | None


def media_sections(sdp: str) -> list[list[str]]:
    """The lines of each media section (from its ``m=`` line), in order."""
    sections: list[list[str]] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append([line])
        elif sections and line:
            sections[-1].append(line)
    return sections


def offered_simulcast(offer_sdp: str) -> list[SimulcastOffer | None]:
    """Each media section's simulcast (None: none, or not a video section), in order.

    Raises NegotiationError naming the problem for a simulcast offer the SFU will not
    take: more than ``MAX_SIMULCAST_LAYERS`` layers, a rid that is not 1 to 16 letters,
    digits, ``-`` or ``_``, a rid named twice or without its ``a=rid:<rid> send`` line,
    or no ``rtp-stream-id`` header extension."""
    return [_section_simulcast(lines) for lines in media_sections(offer_sdp)]


def _section_simulcast(lines: list[str]) -> SimulcastOffer | None:
    if not lines[0].startswith("m=video "):
        return None  # simulcast of audio exists on paper only
    send = next((_send_streams(line) for line in lines if line.startswith("a=simulcast:")), None)
    if not send:
        return None
    rids: list[str] = []
    paused: set[str] = set()
    for stream in send:
        # alternatives (a,b): the SFU takes the first; the answer names only that one
        first = stream.split(",")[0]
        rid = first.removeprefix("~")
        if not _RID.fullmatch(rid):
            raise NegotiationError(
                f"simulcast rid {rid[:20]!r} is not 1 to 16 letters, digits, '-' or '_'"
            )
        if rid in rids:
            raise NegotiationError(f"simulcast names rid {rid!r} twice")
        rids.append(rid)
        if first.startswith("~"):
            paused.add(rid)
    if len(rids) > MAX_SIMULCAST_LAYERS:
        raise NegotiationError(
            f"simulcast offers {len(rids)} layers; at most {MAX_SIMULCAST_LAYERS} are taken"
        )
    declared = {
        match.group(1)
        for line in lines
        if (match := _RID_LINE.match(line)) and match.group(2) == "send"
    }
    missing = [rid for rid in rids if rid not in declared]
    if missing:
        raise NegotiationError(f"simulcast rid {missing[0]!r} has no a=rid:{missing[0]} send")
    extensions = _extensions(lines)
    rid_extension = extensions.get(RTP_STREAM_ID_URI)
    if rid_extension is None:
        raise NegotiationError(
            f"simulcast needs the {RTP_STREAM_ID_URI} header extension, which is not offered"
        )
    for uri in (RTP_STREAM_ID_URI, REPAIRED_RTP_STREAM_ID_URI):
        ext_id = extensions.get(uri)
        if ext_id is not None and list(extensions.values()).count(ext_id) > 1:
            raise NegotiationError(f"header extension id {ext_id} names two extensions")
    return SimulcastOffer(
        rids=tuple(rids),
        paused=frozenset(paused),
        rid_extension=rid_extension,
        repaired_rid_extension=extensions.get(REPAIRED_RTP_STREAM_ID_URI),
    )


def _send_streams(line: str) -> list[str] | None:
    """The streams of ``a=simulcast:`` after ``send`` (RFC 8853: ``send <streams>`` and/or
    ``recv <streams>``, either order); None without a send part."""
    words = line.removeprefix("a=simulcast:").split()
    for direction, streams in zip(words[::2], words[1::2], strict=False):
        if direction == "send":
            return [stream for stream in streams.split(";") if stream]
    return None


def _extensions(lines: list[str]) -> dict[str, int]:
    """Header extension id by URI, as the section's ``a=extmap`` lines give them."""
    found: dict[str, int] = {}
    for line in lines:
        match = _EXTMAP.match(line)
        if match is None:
            continue
        ext_id = int(match.group(1))
        if not 1 <= ext_id <= 255 or ext_id == 15:  # 15 is reserved (RFC 8285)
            raise NegotiationError(f"header extension id {ext_id} is out of range")
        found.setdefault(match.group(2), ext_id)
    return found


def answer_simulcast(answer_sdp: str, offers: dict[int, SimulcastOffer]) -> str:
    """``answer_sdp`` with, in each media section whose index (from 0) is in ``offers``,
    the lines that accept that section's simulcast: both rid header extensions (unless
    the answer has them already), ``a=rid:<rid> recv`` for each rid and
    ``a=simulcast:recv`` in the offer's order, paused rids marked ``~`` as offered."""
    if not offers:
        return answer_sdp
    newline = "\r\n" if "\r\n" in answer_sdp else "\n"
    head: list[str] = []
    sections: list[list[str]] = []
    for line in answer_sdp.splitlines():
        if line.startswith("m="):
            sections.append([line])
        elif not line:
            continue
        elif sections:
            sections[-1].append(line)
        else:
            head.append(line)
    for index, offer in offers.items():
        if index < len(sections):
            sections[index].extend(_accepting_lines(sections[index], offer))
    lines = head + [line for section in sections for line in section]
    return newline.join(lines) + newline


def _accepting_lines(section: list[str], offer: SimulcastOffer) -> list[str]:
    present = _extensions(section)
    lines = []
    wanted = [(RTP_STREAM_ID_URI, offer.rid_extension)]
    if offer.repaired_rid_extension is not None:
        wanted.append((REPAIRED_RTP_STREAM_ID_URI, offer.repaired_rid_extension))
    for uri, ext_id in wanted:
        if uri not in present:
            lines.append(f"a=extmap:{ext_id} {uri}")
    lines.extend(f"a=rid:{rid} recv" for rid in offer.rids)
    order = ";".join(f"~{rid}" if rid in offer.paused else rid for rid in offer.rids)
    lines.append(f"a=simulcast:recv {order}")
    return lines
