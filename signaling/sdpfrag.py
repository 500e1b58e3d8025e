"""Trickle ICE SDP fragments (RFC 8840), as WHIP/WHEP ``PATCH`` bodies carry them.

``application/trickle-ice-sdpfrag`` is a piece of SDP: ``a=ice-ufrag``/``a=ice-pwd``
(session or media level), ``m=`` lines with their ``a=mid`` naming which section the
following ``a=candidate`` lines belong to, and ``a=end-of-candidates``. Pure functions:
no Django, no SFU.
"""

from __future__ import annotations

from dataclasses import dataclass

from onair.exceptions import InvalidInputError

MEDIA_TYPE = "application/trickle-ice-sdpfrag"
MAX_FRAGMENT_LINES = 200


@dataclass(frozen=True)
class FragmentCandidate:
    """One ``a=candidate`` line (without ``a=``) and the media section it belongs to."""

    line: str
    mid: str | None
    mline_index: int


@dataclass(frozen=True)
class SdpFragment:
    ice_ufrag: str | None
    ice_pwd: str | None
    candidates: tuple[FragmentCandidate, ...]
    end_of_candidates: bool


def parse_fragment(text: str) -> SdpFragment:
    """Read a fragment; raises ``InvalidInputError`` (400) with the reason when it is not one."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_FRAGMENT_LINES:
        raise InvalidInputError(
            f"An SDP fragment has at most {MAX_FRAGMENT_LINES} lines.", code="bad_sdpfrag"
        )
    ufrag: str | None = None
    pwd: str | None = None
    candidates: list[FragmentCandidate] = []
    end = False
    mids = _mids_by_section(lines)
    section = 0  # candidates before any m= line belong to the first section
    seen_media = False
    for line in lines:
        kind, sep, value = line.partition("=")
        if not sep or len(kind) != 1:
            raise InvalidInputError(
                f"Not an SDP line: {line[:80]!r}. Send {MEDIA_TYPE} (RFC 8840).",
                code="bad_sdpfrag",
            )
        if kind == "m":
            section = section + 1 if seen_media else 0
            seen_media = True
        elif kind == "a":
            name, _, attribute = value.partition(":")
            if name == "ice-ufrag":
                ufrag = attribute.strip()
            elif name == "ice-pwd":
                pwd = attribute.strip()
            elif name == "candidate":
                if len(attribute.split()) < 8:
                    raise InvalidInputError(
                        f"Malformed ICE candidate: {line[:120]!r}.", code="bad_sdpfrag"
                    )
                candidates.append(
                    FragmentCandidate(line=value, mid=mids.get(section), mline_index=section)
                )
            elif name == "end-of-candidates":
                end = True
    return SdpFragment(
        ice_ufrag=ufrag, ice_pwd=pwd, candidates=tuple(candidates), end_of_candidates=end
    )


def _mids_by_section(lines: list[str]) -> dict[int, str]:
    """``a=mid`` of each ``m=`` section by its index (it may follow the candidates)."""
    mids: dict[int, str] = {}
    index = -1
    for line in lines:
        if line.startswith("m="):
            index += 1
        elif line.startswith("a=mid:") and index >= 0:
            mids.setdefault(index, line[len("a=mid:") :].strip())
    return mids


def restart_fragment(*, answer_sdp: str, ufrag: str, pwd: str) -> str:
    """The body of a ``200 OK`` to an ICE restart (RFC 9725 §4.3.2): the new credentials,
    the bundle group, and the first media section of ``answer_sdp`` with its candidates
    (the SFU keeps its candidates across a restart)."""
    lines = answer_sdp.splitlines()
    out = [f"a=ice-ufrag:{ufrag}", f"a=ice-pwd:{pwd}"]
    out += [line for line in lines if line.startswith("a=group:BUNDLE")]
    in_first = False
    for line in lines:
        if line.startswith("m="):
            if in_first:
                break
            in_first = True
            out.append(line)
        elif in_first and line.startswith(("a=mid:", "a=candidate:")):
            out.append(line)
    out.append("a=end-of-candidates")
    return "\r\n".join(out) + "\r\n"
