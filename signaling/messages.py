"""The WebSocket message schema (docs/SIGNALING.md): parse and validate incoming frames.

Every frame is a JSON object with a string ``type``. ``parse_message`` turns a raw frame
into one typed message or raises ``MessageError`` carrying the ``error`` code and the
sentence the client is sent; nothing here touches the connection or the SFU.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

MAX_FRAME_BYTES: Final = 64 * 1024
MAX_SDP_CHARS: Final = 32 * 1024


class MessageError(Exception):
    """A frame that cannot be accepted; ``code`` is the `error` message's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Media:
    """What the broadcaster sends of its media: the studio's "Mute mic" and "Turn camera
    off" (a muted track still sends, silence or black), for the viewers' overlays."""

    mic_muted: bool = False
    camera_off: bool = False


@dataclass(frozen=True, slots=True)
class Offer:
    """An offer; the studio's may say how its media starts (``media``), so a publish
    never shows its viewers a mute state it does not have."""

    sdp: str
    media: Media | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    sdp: str


@dataclass(frozen=True, slots=True)
class Candidate:
    """A trickled candidate; ``candidate`` is empty at the end of candidates."""

    candidate: str
    sdp_mid: str | None
    sdp_mline_index: int | None


@dataclass(frozen=True, slots=True)
class Auth:
    key: str


@dataclass(frozen=True, slots=True)
class End:
    pass


@dataclass(frozen=True, slots=True)
class Restart:
    pass


@dataclass(frozen=True, slots=True)
class Watch:
    pass


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Quality:
    """The viewer's choice of video layer: its index, lowest quality first (as in the
    server's ``quality`` message), or None for Auto."""

    layer: int | None


# A simulcast source has a handful of layers; an index above this is no layer of any.
MAX_LAYER_INDEX: Final = 15


class ChatMessageError(MessageError):
    """A chat request that cannot be accepted: answered with ``chat_error``, not ``error``."""


@dataclass(frozen=True, slots=True)
class ChatJoin:
    """The page shows the chat: send its history, then its messages as they come."""


@dataclass(frozen=True, slots=True)
class ChatPost:
    text: str
    name: str  # a guest's name; "" for an account


@dataclass(frozen=True, slots=True)
class ChatDelete:
    id: int


@dataclass(frozen=True, slots=True)
class ChatModerate:
    """Ban, time out (``seconds``) or let back in (``lift``) the author of message ``id``."""

    action: str
    id: int
    seconds: int | None


@dataclass(frozen=True, slots=True)
class ChatConfigure:
    enabled: bool | None
    slow_mode_seconds: int | None
    guests_allowed: bool | None


ChatRequest = ChatJoin | ChatPost | ChatDelete | ChatModerate | ChatConfigure
CHAT_TYPES: Final = frozenset(
    {"chat_join", "chat", "chat_delete", "chat_moderate", "chat_settings"}
)
# Far above any setting's limit: what the service measures against the setting.
MAX_CHAT_TEXT_CHARS: Final = 10_000
MAX_CHAT_NAME_CHARS: Final = 200

Message = (
    Offer | Answer | Candidate | Auth | End | Restart | Watch | Ping | Quality | Media | ChatRequest
)

STUDIO_TYPES: Final = frozenset({"auth", "offer", "candidate", "end", "ping", "media"}) | CHAT_TYPES
WATCH_TYPES: Final = (
    frozenset({"watch", "offer", "answer", "candidate", "restart", "ping", "quality"}) | CHAT_TYPES
)


def parse_message(
    text: str | None, bytes_data: bytes | None, *, allowed: frozenset[str]
) -> Message:
    """Validate one WebSocket frame against the schema of the endpoint (``allowed`` types)."""
    if bytes_data is not None:
        raise MessageError("bad_json", "Binary frames are not accepted; send JSON text.")
    if text is None:
        raise MessageError("bad_json", "Empty frame.")
    if len(text.encode("utf-8", errors="replace")) > MAX_FRAME_BYTES:
        raise MessageError(
            "too_large",
            f"Frames are limited to {MAX_FRAME_BYTES // 1024} KiB; this one was larger.",
        )
    try:
        data = json.loads(text)
    except ValueError:
        raise MessageError("bad_json", "The frame is not valid JSON.") from None
    except RecursionError:
        raise MessageError("bad_json", "The frame's JSON is nested too deeply.") from None
    _check_unicode(data)
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise MessageError("bad_message", 'A message is a JSON object with a string "type".')
    kind = data["type"]
    if kind not in allowed:
        raise MessageError(
            "unknown_type",
            f"Unknown message type {kind[:40]!r}; expected one of: {', '.join(sorted(allowed))}.",
        )
    return _PARSERS[kind](data)


def _check_unicode(data: Any) -> None:
    """JSON's ``\\ud800`` escapes decode to lone surrogates, which no text encoding can
    carry: refuse them here rather than where a value is hashed or stored."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise MessageError(
            "bad_json", "The frame's strings hold a lone surrogate (\\uD800-\\uDFFF)."
        ) from None
    except RecursionError:
        raise MessageError("bad_json", "The frame's JSON is nested too deeply.") from None


def _sdp(data: dict[str, Any]) -> str:
    sdp = data.get("sdp")
    if not isinstance(sdp, str) or not sdp.strip():
        raise MessageError("bad_message", f'"{data["type"]}" needs a non-empty string "sdp".')
    if len(sdp) > MAX_SDP_CHARS:
        raise MessageError("too_large", "The SDP is too large.")
    return sdp


def _offer(data: dict[str, Any]) -> Offer:
    sdp, media = _sdp(data), data.get("media")
    if media is None:
        return Offer(sdp=sdp)
    return Offer(sdp=sdp, media=_media(media if isinstance(media, dict) else {}, '"offer.media"'))


def _media(data: dict[str, Any], what: str = '"media"') -> Media:
    mic_muted, camera_off = data.get("mic_muted"), data.get("camera_off")
    if not isinstance(mic_muted, bool) or not isinstance(camera_off, bool):
        raise MessageError(
            "bad_message", f'{what} needs booleans "mic_muted" and "camera_off" (true or false).'
        )
    return Media(mic_muted=mic_muted, camera_off=camera_off)


def _candidate(data: dict[str, Any]) -> Candidate:
    value = data.get("candidate")
    if value is None:
        return Candidate(candidate="", sdp_mid=None, sdp_mline_index=None)
    if not isinstance(value, dict):
        raise MessageError(
            "bad_message", '"candidate" is an RTCIceCandidateInit object, or null at the end.'
        )
    line = value.get("candidate", "")
    mid = value.get("sdpMid")
    index = value.get("sdpMLineIndex")
    if not isinstance(line, str) or len(line) > 1024:
        raise MessageError("bad_message", '"candidate.candidate" must be a string.')
    if mid is not None and not isinstance(mid, str):
        raise MessageError("bad_message", '"candidate.sdpMid" must be a string or null.')
    if index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 0):
        raise MessageError("bad_message", '"candidate.sdpMLineIndex" must be a number or null.')
    if line and mid is None and index is None:
        raise MessageError("bad_message", "A candidate needs sdpMid or sdpMLineIndex.")
    return Candidate(candidate=line, sdp_mid=mid, sdp_mline_index=index)


def _auth(data: dict[str, Any]) -> Auth:
    key = data.get("key")
    if not isinstance(key, str) or not key or len(key) > 256:
        raise MessageError("bad_message", '"auth" needs the stream key as a string "key".')
    return Auth(key=key)


def _quality(data: dict[str, Any]) -> Quality:
    layer = data.get("layer")
    if layer is not None and (
        not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer <= MAX_LAYER_INDEX
    ):
        raise MessageError(
            "bad_message", '"quality" needs "layer": a layer index (0 = lowest), or null for Auto.'
        )
    return Quality(layer=layer)


def _chat_id(data: dict[str, Any]) -> int:
    value = data.get("id")
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ChatMessageError(
            "chat_invalid", f'"{data["type"]}" needs the message\'s "id" (a number).'
        )
    return value


def _chat_post(data: dict[str, Any]) -> ChatPost:
    text = data.get("text")
    name = data.get("name", "")
    if not isinstance(text, str):
        raise ChatMessageError("chat_invalid", '"chat" needs the message as a string "text".')
    if len(text) > MAX_CHAT_TEXT_CHARS:
        raise ChatMessageError("chat_too_long", "That chat message is far too long.")
    if name is None:
        name = ""
    if not isinstance(name, str) or len(name) > MAX_CHAT_NAME_CHARS:
        raise ChatMessageError("chat_bad_name", '"name" (a guest\'s name) must be a short string.')
    return ChatPost(text=text, name=name)


def _chat_moderate(data: dict[str, Any]) -> ChatModerate:
    action = data.get("action")
    if action not in ("ban", "timeout", "lift"):
        raise ChatMessageError(
            "chat_invalid", '"chat_moderate" needs "action": "ban", "timeout" or "lift".'
        )
    seconds = data.get("seconds")
    if action == "timeout" and (
        not isinstance(seconds, int) or isinstance(seconds, bool) or seconds <= 0
    ):
        raise ChatMessageError("chat_invalid", 'A time-out needs "seconds" (a positive number).')
    return ChatModerate(
        action=action, id=_chat_id(data), seconds=seconds if action == "timeout" else None
    )


def _chat_settings(data: dict[str, Any]) -> ChatConfigure:
    enabled = data.get("enabled")
    guests = data.get("guests_allowed")
    slow = data.get("slow_mode_seconds")
    for key, value in (("enabled", enabled), ("guests_allowed", guests)):
        if value is not None and not isinstance(value, bool):
            raise ChatMessageError("chat_invalid", f'"{key}" must be true or false.')
    if slow is not None and (not isinstance(slow, int) or isinstance(slow, bool) or slow < 0):
        raise ChatMessageError(
            "chat_invalid", '"slow_mode_seconds" must be a number of seconds, 0 for off.'
        )
    return ChatConfigure(enabled=enabled, slow_mode_seconds=slow, guests_allowed=guests)


_PARSERS: Final[dict[str, Callable[[dict[str, Any]], Message]]] = {
    "offer": _offer,
    "answer": lambda data: Answer(sdp=_sdp(data)),
    "candidate": _candidate,
    "auth": _auth,
    "end": lambda data: End(),
    "restart": lambda data: Restart(),
    "watch": lambda data: Watch(),
    "ping": lambda data: Ping(),
    "quality": _quality,
    "media": _media,
    "chat_join": lambda data: ChatJoin(),
    "chat": _chat_post,
    "chat_delete": lambda data: ChatDelete(id=_chat_id(data)),
    "chat_moderate": _chat_moderate,
    "chat_settings": _chat_settings,
}

_TYPE_NAMES: Final[dict[type, str]] = {
    Offer: "offer",
    Answer: "answer",
    Candidate: "candidate",
    Auth: "auth",
    End: "end",
    Restart: "restart",
    Watch: "watch",
    Ping: "ping",
    Quality: "quality",
    Media: "media",
    ChatJoin: "chat_join",
    ChatPost: "chat",
    ChatDelete: "chat_delete",
    ChatModerate: "chat_moderate",
    ChatConfigure: "chat_settings",
}


def message_type(message: Message) -> str:
    """The ``type`` a parsed message had on the wire."""
    return _TYPE_NAMES[type(message)]
