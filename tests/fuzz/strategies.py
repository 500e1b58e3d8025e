"""Hypothesis strategies for hostile input: mutations of a valid SDP offer, trickle-ICE
fragments, REST JSON bodies and WebSocket frames. Every address a generated candidate
names is loopback or TEST-NET-1 (192.0.2.0/24), so the SFU's connectivity checks never
leave the machine; no ``.local`` names (aioice would resolve them over mDNS)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from tests.malformed_sdp import MALFORMED

# Text that breaks parsers: control characters, NUL, separators, non-ASCII, and the line
# breaks Python's splitlines() knows but SDP does not.
_NASTY_CHARS = st.sampled_from(
    [
        *("\x00", "\x01", "\x0b", "\x0c", "\x1f", "\x7f", "\x85", "\u2028", "\ufeff", "é", "💥"),
        *(" ", ":", "/", "=", "\t", "\r", "\n", "%", "\\", '"', "{", "["),
    ]
)
NASTY_TEXT = st.text(st.one_of(_NASTY_CHARS, st.characters(codec="utf-8")), max_size=10)
_NUMBERS = st.sampled_from(
    ["0", "-1", "65536", "99999999999999999999", "1e9", "0x10", "", "NaN", "127", "128", "256"]
)
_ADDRESSES = st.sampled_from(
    [
        "127.0.0.1",
        "192.0.2.1",
        "192.0.2.254",
        "::1",
        "0.0.0.0",
        "bogus",
        "x.invalid",
        "",
        "300.1.2.3",
    ]
)


_VALID_CANDIDATE = ("1", "1", "udp", "2130706431", "192.0.2.1", "50000", "typ", "host")
_CANDIDATE_FIELDS = (
    st.sampled_from(["1", "foundation", "", "x" * 40]),
    st.one_of(st.sampled_from(["1", "2"]), _NUMBERS),
    st.sampled_from(["udp", "UDP", "tcp", "sctp", ""]),
    st.one_of(st.just("2130706431"), _NUMBERS),
    _ADDRESSES,
    st.one_of(st.integers(1024, 65535).map(str), _NUMBERS),
    st.sampled_from(["typ", "type", ""]),
    st.sampled_from(["host", "srflx", "relay", "prflx", "bogus"]),
)
_CANDIDATE_EXTRAS = st.lists(
    st.one_of(
        st.sampled_from(["raddr", "rport", "generation", "0", "tcptype", "active", "ufrag", "x"]),
        _ADDRESSES,
        _NUMBERS,
    ),
    max_size=4,
)


@st.composite
def candidate_line(draw: st.DrawFn) -> str:
    """An ``a=candidate`` value (without ``a=``): half of them well-formed but for one
    field, so that they get past the parser to the ICE agent; the rest anything."""
    if draw(st.booleans()):
        fields = list(_VALID_CANDIDATE)
        index = draw(st.integers(0, len(fields) - 1))
        fields[index] = draw(_CANDIDATE_FIELDS[index])
        return "candidate:" + " ".join(fields + draw(_CANDIDATE_EXTRAS))
    fields = [draw(field) for field in _CANDIDATE_FIELDS] + draw(_CANDIDATE_EXTRAS)
    if draw(st.integers(0, 4)) == 0:
        fields = draw(st.permutations(fields))
    return "candidate:" + " ".join(fields[: draw(st.integers(6, len(fields)))])


_JUNK_LINES = st.one_of(
    st.sampled_from(
        [
            "m=foo",
            "m=audio",
            "m=video 9 UDP/TLS/RTP/SAVPF",
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
            "m=audio 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101 102 103 104 105 106 107 108",
            "a=mid:0",
            "a=mid:",
            "a=setup:bogus",
            "a=setup:active",
            "a=setup:passive",
            "a=sendonly",
            "a=recvonly",
            "a=inactive",
            "a=rtpmap:x",
            "a=rtpmap:96",
            "a=rtpmap:96 VP8/x",
            "a=rtpmap:96 H264/90000",
            "a=fmtp:96 x",
            "a=fmtp:200 apt=96",
            "a=fmtp:96 profile-level-id=zz;packetization-mode=1",
            "a=rtcp-fb:96",
            "a=fingerprint:sha-256 zz",
            "a=fingerprint:",
            "a=ice-ufrag:",
            "a=ice-pwd:",
            "a=ice-lite",
            "a=group:BUNDLE",
            "a=group:BUNDLE 7",
            "a=group:LS 0 1",
            "a=msid-semantic:",
            "a=ssrc:1",
            "a=ssrc:x cname:y",
            "a=ssrc-group:FID x",
            "a=extmap:x",
            "a=extmap:1/sendonly",
            "a=rtcp:x",
            "a=rtcp-mux",
            "a=sctp-port:x",
            "a=max-message-size:x",
            "a=end-of-candidates",
            "c=IN IP4",
            "c=IN IP7 1.2.3.4",
            "v=1",
            "o=",
            "t=x",
            "b=AS:-1",
            "x",
            "",
        ]
    ),
    candidate_line().map(lambda value: "a=" + value),
    st.tuples(st.sampled_from("vosctmab"), NASTY_TEXT).map(lambda p: f"{p[0]}={p[1]}"),
)

_PREFIXES = st.sampled_from(
    [
        "a=setup",
        "a=mid",
        "a=sendonly",
        "a=recvonly",
        "m=",
        "a=ice-",
        "a=fingerprint",
        "a=rtpmap",
        "a=group",
        "c=",
        "a=rtcp-mux",
        "a=fmtp",
        "a=ssrc",
        "a=msid",
        "a=extmap",
        "v=",
        "o=",
        "t=",
    ]
)


_POSITION = st.integers(0, 2**16)  # taken modulo a length: no strategy built per draw
_OPERATION = st.integers(0, 9)
_MUTATIONS = st.integers(1, 4)
_CASES = st.sampled_from(sorted(MALFORMED))
_ENDINGS = st.sampled_from(["\r\n", "\r\n", "\n", "\r"])
_VALUES = st.one_of(NASTY_TEXT, _NUMBERS)


@st.composite
def mutated_sdp(draw: st.DrawFn, base: str) -> str:
    """``base`` (a valid offer without candidates) with one to four mutations, or one of
    the named malformations of tests/malformed_sdp.py."""
    if draw(_OPERATION) == 0:
        mutate, _ = MALFORMED[draw(_CASES)]
        return mutate(base)
    lines = base.split("\r\n")
    for _ in range(draw(_MUTATIONS)):
        index = draw(_POSITION) % len(lines)
        line = lines[index]
        operation = draw(_OPERATION)
        if operation == 0 and len(lines) > 1:
            del lines[index]
        elif operation == 1:
            lines.insert(index, lines[draw(_POSITION) % len(lines)])
        elif operation == 2:
            lines.insert(index, draw(_JUNK_LINES))
        elif operation == 3:
            lines[index] = line[: draw(_POSITION) % (len(line) + 1)]
        elif operation == 4:
            at = draw(_POSITION) % (len(line) + 1)
            lines[index] = line[:at] + draw(NASTY_TEXT) + line[at:]
        elif operation == 5:
            prefix = draw(_PREFIXES)
            lines = [kept for kept in lines if not kept.startswith(prefix)] or [""]
        elif operation == 6:
            key, sep, _ = line.partition(":")
            lines[index] = key + (sep or ":") + draw(_VALUES)
        elif operation == 7:
            other = draw(_POSITION) % len(lines)
            lines[index], lines[other] = lines[other], line
        elif operation == 8:
            lines[index] = " ".join(
                draw(_NUMBERS) if word.isdigit() else word for word in line.split(" ")
            )
        else:
            lines = lines[:index] or [""]
    sdp = draw(_ENDINGS).join(lines)
    if draw(_OPERATION) == 0:
        sdp = sdp[: draw(_POSITION) % (len(sdp) + 1)]
    return sdp


def trickle_fragment(ufrag: str, pwd: str) -> st.SearchStrategy[str]:
    """An ``application/trickle-ice-sdpfrag`` body: mostly shaped like one, often broken;
    ``ufrag``/``pwd``: the session's, so some fragments pass the ufrag check."""
    line = st.one_of(
        st.just(f"a=ice-ufrag:{ufrag}"),
        st.just(f"a=ice-pwd:{pwd}"),
        NASTY_TEXT.map(lambda text: f"a=ice-ufrag:{text}"),
        NASTY_TEXT.map(lambda text: f"a=ice-pwd:{text}"),
        st.sampled_from(["m=audio 9 UDP/TLS/RTP/SAVPF 0", "m=video 9 RTP/AVP 0", "m="]),
        st.one_of(st.sampled_from(["0", "1", "7", ""]), NASTY_TEXT).map(lambda mid: f"a=mid:{mid}"),
        candidate_line().map(lambda value: "a=" + value),
        st.just("a=end-of-candidates"),
        _JUNK_LINES,
    )
    # Now and then past the fragment's line limit.
    lines = st.one_of(st.lists(line, min_size=1, max_size=6), line.map(lambda one: [one] * 250))
    return st.tuples(lines, st.sampled_from(["\r\n", "\n"])).map(
        lambda parts: parts[1].join(parts[0])
    )


def _json_values(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(NASTY_TEXT, children, max_size=4)
        ),
        max_leaves=6,
    )


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    NASTY_TEXT,
    st.text(max_size=30),
    st.sampled_from(["public", "unlisted", "private", "live", "a" * 300]),
    st.integers(60_000, 70_000).map(lambda n: "x" * n),  # built when drawn: a short repr
)
JSON_VALUES = _json_values(_SCALARS)

# JSON texts json.dumps never writes: lone surrogates, nesting past the parser's recursion,
# duplicate keys, constants, numbers past int's digit limit, broken syntax.
_RAW_JSON = st.one_of(
    st.sampled_from(['"\\ud800"', '"\\udfff"', '"a\\u0000b"', "NaN", "-Infinity", "1" * 5000]),
    st.integers(1, 100_000).map(lambda n: "[" * n),
    st.integers(500, 5_000).map(lambda n: "[" * n + "]" * n),
    st.integers(500, 5_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.sampled_from(["", "{", "}", "[1,]", "{'a': 1}", '{"a" 1}', "nul", "\ufeff{}", "{}{}"]),
)


_API_FIELDS = st.sampled_from(
    ["title", "description", "visibility", "slug", "username", "password", "state"]
)
_TEMPLATES = st.sampled_from(['{"title": %s}', '{"username": %s, "password": "x"}', "%s"])
REST_BODIES = st.one_of(
    # objects with the API's field names and values of every type (weighted: most bodies)
    *[st.dictionaries(st.one_of(_API_FIELDS, NASTY_TEXT), JSON_VALUES, max_size=4).map(json.dumps)]
    * 5,
    # JSON texts no encoder writes, alone or as a field's value
    *[st.tuples(_TEMPLATES, _RAW_JSON).map(lambda p: p[0].replace("%s", p[1]))] * 2,
    JSON_VALUES.map(json.dumps),
    NASTY_TEXT,
).map(lambda text: text.encode("utf-8", errors="surrogatepass")) | st.binary(max_size=200)


_WS_TYPES = st.one_of(
    st.sampled_from(
        ["watch", "offer", "answer", "candidate", "auth", "end", "ping", "restart", "media"]
    ),
    NASTY_TEXT,
)
_WS_CANDIDATES = st.one_of(
    st.none(),
    JSON_VALUES,
    st.fixed_dictionaries(
        {},
        optional={
            "candidate": st.one_of(candidate_line(), JSON_VALUES),
            "sdpMid": st.one_of(st.sampled_from(["0", "1", "9"]), JSON_VALUES),
            "sdpMLineIndex": st.one_of(st.integers(-2, 5), JSON_VALUES),
        },
    ),
)
_WS_FLAG = st.one_of(st.booleans(), JSON_VALUES)  # the media message's booleans, or not
_WS_TEMPLATES = st.sampled_from(['{"type": "auth", "key": %s}', '{"type": "ping", "x": %s}', "%s"])


def _message(kind: str, fields: dict[str, Any]) -> str:
    return json.dumps({"type": kind, **fields})


def ws_frame(offer_base: str, answer_base: str) -> st.SearchStrategy[str | bytes]:
    """A WebSocket frame: a message of the schema with fields of every type, an SDP that
    is broken, or something that is not a message at all."""
    sdp = st.one_of(mutated_sdp(offer_base), JSON_VALUES)
    answer = st.one_of(mutated_sdp(answer_base), JSON_VALUES)
    messages = st.one_of(
        st.builds(lambda v: _message("offer", {"sdp": v}), sdp),
        st.builds(lambda v: _message("answer", {"sdp": v}), answer),
        st.builds(lambda v: _message("candidate", {"candidate": v}), _WS_CANDIDATES),
        st.builds(
            lambda v: _message("auth", {"key": v}),
            st.one_of(NASTY_TEXT, JSON_VALUES, st.just("sk_" + "A" * 43)),
        ),
        st.builds(_message, _WS_TYPES, st.dictionaries(NASTY_TEXT, JSON_VALUES, max_size=3)),
        st.builds(
            lambda v: _message("media", v),
            st.fixed_dictionaries({}, optional={"mic_muted": _WS_FLAG, "camera_off": _WS_FLAG}),
        ),
        st.builds(
            lambda v, media: _message("offer", {"sdp": v, "media": media}),
            sdp,
            st.one_of(JSON_VALUES, st.fixed_dictionaries({"mic_muted": _WS_FLAG})),
        ),
    )
    frames: st.SearchStrategy[str | bytes] = st.one_of(
        *[messages] * 4,
        *[st.tuples(_WS_TEMPLATES, _RAW_JSON).map(lambda p: p[0].replace("%s", p[1]))] * 2,
        st.binary(max_size=100),
        st.integers(13_500, 14_000).map(lambda n: _message("offer", {"sdp": "v=0\r\n" * n})),
        NASTY_TEXT,
    )
    return frames
