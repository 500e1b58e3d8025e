"""Every OnAir setting: its key, type, default and meaning, in one place.

``settings.ONAIR`` is a dict of overrides: ``onair/settings/base.py`` fills it from the
``ONAIR_<KEY>`` environment variables that are set (``environment_overrides``), and a settings
module or a test may add keys. ``onair_settings()`` turns it into one typed, validated
``OnAirSettings``; a key absent from the dict takes the default declared below, and nowhere
else. An invalid value (a TURN URL that is not ``turn:``, a policy that is not ``all`` or
``relay``) raises ``ValueError`` on the first read, which ``onair/asgi.py`` and ``runsfu`` do
as they start. The table in docs/SETTINGS.md is ``settings_table()``: ``python -m onair.conf``
rewrites it, and tests/onair/test_conf.py fails when the two differ.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import Field, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

from django.conf import settings
from django.core.signals import setting_changed

from onair.settings.env import parse_bool

ENV_PREFIX = "ONAIR_"


class IcePolicy(StrEnum):
    ALL = "all"
    RELAY = "relay"


class SfuMode(StrEnum):
    EMBEDDED = "embedded"
    CLUSTER = "cluster"


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


class Kind(NamedTuple):
    """How one type of setting is written in the environment, read and documented."""

    label: str
    # ``(variable name, its text)`` → the value put in the ``ONAIR`` dict.
    from_env: Callable[[str, str], Any]
    # ``(key, a value of the ONAIR dict)`` → the field's value; raises ValueError if invalid.
    read: Callable[[str, Any], Any]
    # The field's default as the table shows it.
    show: Callable[[Any], str]


def _text(key: str, value: Any) -> str:
    return str(value)


def _positive_int(key: str, value: Any) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"{key} must be positive")
    return number


def _bool(key: str, value: Any) -> bool:
    return parse_bool(key, value) if isinstance(value, str) else bool(value)


def _comma_list(name: str, text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _urls(*schemes: str) -> Callable[[str, Any], tuple[str, ...]]:
    def read(key: str, value: Any) -> tuple[str, ...]:
        urls = tuple(value.split(",")) if isinstance(value, str) else tuple(value)
        urls = tuple(url.strip() for url in urls if url.strip())
        for url in urls:
            if not url.startswith(schemes):
                raise ValueError(f"ICE server URL {url!r} must start with one of {schemes}")
        return urls

    return read


def _port_range(key: str, value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return parse_port_range(value)
    low, high = value
    return parse_port_range(f"{low}-{high}")


def _as_is(name: str, text: str) -> str:
    return text


def _shown(value: Any) -> str:
    return f"`{value}`" if value != "" else "(empty)"


TEXT = Kind("text", _as_is, _text, _shown)
FLAG = Kind("boolean", parse_bool, _bool, lambda value: "`1` (on)" if value else "`0` (off)")


def _count(key: str, value: Any) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be 0 or more")
    return number


def _seconds(key: str, value: Any) -> float:
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError("must be a number of seconds, 0 or more")
    return number


INTEGER = Kind("integer ≥ 0", lambda name, text: int(text), _count, _shown)
POSITIVE = Kind("integer > 0", lambda name, text: int(text), _positive_int, _shown)
SECONDS = Kind("seconds ≥ 0", lambda name, text: float(text), _seconds, _shown)


def _days(key: str, value: Any) -> float:
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError("must be a number of days, 0 or more")
    return number


DAYS = Kind("days ≥ 0", lambda name, text: float(text), _days, _shown)
STUN = Kind("comma-separated URLs", _comma_list, _urls("stun:", "stuns:"), lambda v: "(none)")
TURN = Kind("comma-separated URLs", _comma_list, _urls("turn:", "turns:"), lambda v: "(none)")
POLICY = Kind("`all` or `relay`", _as_is, lambda key, value: IcePolicy(value), _shown)
MODE = Kind("`embedded` or `cluster`", _as_is, lambda key, value: SfuMode(value), _shown)
PORTS = Kind("`LOW-HIGH`", _as_is, _port_range, lambda value: "(any port)")


def _port(key: str, value: Any) -> int:
    number = int(value)
    if number and not 1024 <= number <= 65535:
        raise ValueError("must be 0 (off) or a port in 1024-65535")
    return number


PORT = Kind("port, `0`: off", lambda name, text: int(text), _port, _shown)


def _networks(key: str, value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    networks = tuple(item.strip() for item in items if item.strip())
    for network in networks:
        ipaddress.ip_network(network, strict=False)  # ValueError names the bad one
    return networks


NETWORKS = Kind("comma-separated addresses or networks", _comma_list, _networks, lambda v: "(none)")


class SettingError(ValueError):
    """A setting with a value OnAir cannot use: the message names its variable."""

    def __init__(self, variable: str, value: Any, reason: Exception) -> None:
        super().__init__(f"{variable}={value!r} is invalid: {reason}")


def setting(default: Any, kind: Kind, doc: str, *, key: str = "") -> Any:
    """A field of a settings group: ``key`` is its ``ONAIR`` key (default: the field's name in
    capitals), read from ``ONAIR_<key>``."""
    return field(default=default, metadata={"kind": kind, "doc": doc, "key": key})


def group(cls: type) -> Any:
    """A field holding a nested group of settings (their keys stay flat in ``ONAIR``)."""
    return field(default_factory=cls, metadata={"group": cls})


@dataclass(frozen=True)
class IceSettings:
    """How every peer traverses NATs (signaling/ice.py, docs/NAT.md). With the defaults no
    ICE server is used at all, so no traffic leaves the machine."""

    stun_urls: tuple[str, ...] = setting(
        (),
        STUN,
        "`stun:` URLs given to browsers, WHIP/WHEP clients and the SFU, e.g. "
        "`stun:turn.example.org:3478`.",
    )
    turn_urls: tuple[str, ...] = setting(
        (),
        TURN,
        "`turn:`/`turns:` URLs, e.g. `turn:turn.example.org:3478?transport=udp`; each session "
        "gets a short-lived credential for them. Unused without `TURN_SECRET`.",
    )
    turn_secret: str = setting(
        "",
        TEXT,
        "coturn's `static-auth-secret`: TURN credentials are derived from it (TURN REST); it "
        "never leaves the server and is redacted from logs.",
    )
    turn_ttl_seconds: int = setting(86400, POSITIVE, "Lifetime of a TURN credential.")
    viewer_policy: IcePolicy = setting(
        IcePolicy.ALL,
        POLICY,
        "`relay`: viewers connect only through TURN, hiding their address from the SFU and the "
        "broadcaster. Broadcasters and the SFU always gather every candidate.",
        key="ICE_TRANSPORT_POLICY",
    )
    public_ip: str = setting(
        "",
        TEXT,
        "The SFU behind a 1:1 NAT (cloud VM): its public address, optionally `public/private`.",
    )
    udp_port_range: tuple[int, int] | None = setting(
        None,
        PORTS,
        "The UDP ports the SFU binds its ICE sockets to (and the firewall opens), e.g. "
        "`50000-50999`.",
    )
    udp_mux_port: int = setting(
        10000,
        PORT,
        "Every ICE connection of an SFU process on one UDP socket at this port (IPv4); "
        "`runsfu --workers N` gives worker *i* this port + *i* (docs/NAT.md, firewall). `0`: "
        "a socket per connection instead, in `UDP_PORT_RANGE`.",
    )

    def __repr__(self) -> str:
        # Settings objects end up in logs and tracebacks: never print the shared secret.
        secret = "***" if self.turn_secret else ""
        return (
            f"IceSettings(stun_urls={self.stun_urls!r}, turn_urls={self.turn_urls!r}, "
            f"turn_secret={secret!r}, turn_ttl_seconds={self.turn_ttl_seconds}, "
            f"viewer_policy={self.viewer_policy.value!r}, public_ip={self.public_ip!r}, "
            f"udp_port_range={self.udp_port_range!r}, udp_mux_port={self.udp_mux_port})"
        )


@dataclass(frozen=True)
class RecordingSettings:
    """Server-side recording of broadcasts (docs/RECORDING.md)."""

    record_by_default: bool = setting(
        True,
        FLAG,
        "A new stream records its broadcasts (each stream's `record` switch changes it).",
    )
    storage: str = setting(
        "recordings",
        TEXT,
        "The `STORAGES` alias finished recordings are kept in: by default `FileSystemStorage` "
        "under `var/recordings/`; name one of your settings module's aliases for "
        "django-storages (S3 and others, docs/RECORDING.md).",
        key="RECORDING_STORAGE",
    )
    spool_dir: str = setting(
        "",
        TEXT,
        "The local directory the SFU writes recordings into while they run (moved into "
        "`RECORDING_STORAGE` once finished). Empty: `var/recording-spool/`.",
        key="RECORDING_SPOOL_DIR",
    )
    max_bytes: int = setting(
        0,
        INTEGER,
        "A recording stops (reason `size_limit`) once its file reaches this many bytes; the "
        "broadcast goes on. `0`: no limit.",
        key="RECORDING_MAX_BYTES",
    )
    max_seconds: float = setting(
        43200.0,
        SECONDS,
        "A recording stops (reason `duration_limit`) after this long; the broadcast goes on. "
        "`0`: no limit.",
        key="RECORDING_MAX_SECONDS",
    )
    min_free_bytes: int = setting(
        1_073_741_824,
        INTEGER,
        "Free-disk guard: a recording stops (reason `disk_full`) when the spool directory's "
        "disk has less free space than this, before it fills; the broadcast goes on.",
        key="RECORDING_MIN_FREE_BYTES",
    )
    retention_days: float = setting(
        0.0,
        DAYS,
        "Recordings older than this many days are deleted with their files (`manage.py "
        "recordings_expire`, and hourly by each running server). `0`: kept until deleted.",
        key="RECORDING_RETENTION_DAYS",
    )


@dataclass(frozen=True)
class ChatSettings:
    """Live chat on the watch page and the studio (docs/SIGNALING.md, Chat). Each stream's
    owner turns its chat on or off, sets slow mode and lets guests post, in the studio."""

    max_chars: int = setting(
        500,
        POSITIVE,
        "The longest chat message, in characters; longer ones are refused.",
        key="CHAT_MAX_CHARS",
    )
    history: int = setting(
        50,
        INTEGER,
        "Messages of the current broadcast a page gets when it joins the chat.",
        key="CHAT_HISTORY",
    )
    rate_messages: int = setting(
        5,
        INTEGER,
        "Chat messages one account (or one guest address) may post within "
        "`CHAT_RATE_SECONDS`, on all streams; past it `chat_rate_limited` with the seconds to "
        "wait. `0`: no limit.",
        key="CHAT_RATE_MESSAGES",
    )
    rate_seconds: float = setting(
        10.0, SECONDS, "The window `CHAT_RATE_MESSAGES` counts over.", key="CHAT_RATE_SECONDS"
    )
    guest_messages_per_stream: int = setting(
        60,
        INTEGER,
        "Guest (no account) messages one stream's chat takes per minute, from everyone "
        "together, where its owner allows guests; past it `chat_busy`. `0`: no cap.",
        key="CHAT_GUEST_MESSAGES_PER_MINUTE",
    )
    retention_days: float = setting(
        30.0,
        DAYS,
        "Chat messages older than this many days are deleted (hourly, by each running "
        "server), and so is a time-out once it has run out. `0`: messages kept until "
        "deleted.",
        key="CHAT_RETENTION_DAYS",
    )


@dataclass(frozen=True)
class WebhookSettings:
    """Webhooks: HTTP POSTs to each account's endpoints when its broadcasts go live, end,
    reconnect, are recorded or reach a new viewer peak (docs/WEBHOOKS.md). Every delivery is
    a row in the database (the outbox), retried with a doubling delay until it succeeds or
    ``WEBHOOK_GIVE_UP_SECONDS`` have passed since its event."""

    max_endpoints_per_user: int = setting(
        10,
        INTEGER,
        "Webhook endpoints one account may have; past it, adding one answers `403` "
        "`webhook_quota`. `0`: no cap.",
        key="WEBHOOK_MAX_ENDPOINTS_PER_USER",
    )
    allow_private: bool = setting(
        False,
        FLAG,
        "Deliver to loopback, private, link-local and other non-public addresses. Off, a "
        "webhook URL whose host resolves to any such address is refused when it is saved and "
        "at every delivery (the address is resolved each time, and the connection goes to the "
        "address checked). Turn on only where every account is trusted (tests, a LAN).",
        key="WEBHOOK_ALLOW_PRIVATE",
    )
    timeout_seconds: float = setting(
        5.0,
        SECONDS,
        "How long one delivery attempt may take (connecting, sending, the response's status "
        "and its first 64 KiB); longer is a failed attempt.",
        key="WEBHOOK_TIMEOUT_SECONDS",
    )
    retry_first_seconds: float = setting(
        10.0,
        SECONDS,
        "The wait after a delivery's first failed attempt; each next wait doubles, up to "
        "`WEBHOOK_RETRY_MAX_SECONDS`.",
        key="WEBHOOK_RETRY_FIRST_SECONDS",
    )
    retry_max_seconds: float = setting(
        3600.0,
        SECONDS,
        "The longest wait between two attempts of one delivery.",
        key="WEBHOOK_RETRY_MAX_SECONDS",
    )
    give_up_seconds: float = setting(
        86400.0,
        SECONDS,
        "A delivery not accepted this long after its event is `failed` and tried no more.",
        key="WEBHOOK_GIVE_UP_SECONDS",
    )
    poll_seconds: float = setting(
        5.0,
        SECONDS,
        "How often each server process looks for deliveries due (events of its own process "
        "are sent at once; another process's within this time).",
        key="WEBHOOK_POLL_SECONDS",
    )
    peak_seconds: float = setting(
        30.0,
        SECONDS,
        "`viewer.peak` is sent this long after a broadcast's viewer count first passes its "
        "peak, with the peak reached by then: at most one per broadcast and endpoint in each "
        "such window.",
        key="WEBHOOK_PEAK_SECONDS",
    )
    retention_days: float = setting(
        30.0,
        DAYS,
        "Finished deliveries (delivered or failed) older than this many days are deleted "
        "from the delivery log (hourly, by each running server). `0`: kept.",
        key="WEBHOOK_RETENTION_DAYS",
    )


@dataclass(frozen=True)
class MetricsSettings:
    """Prometheus metrics (docs/METRICS.md): `/metrics` on every daphne process, and on each
    `runsfu` worker's own port. Closed unless a token or addresses are set."""

    token: str = setting(
        "",
        TEXT,
        "A request with `Authorization: Bearer <token>` may read `/metrics` (daphne and the "
        "`runsfu` workers' ports); without it, `401`. Never logged.",
        key="METRICS_TOKEN",
    )
    allowed_addresses: tuple[str, ...] = setting(
        (),
        NETWORKS,
        "Client addresses or networks that may read `/metrics` without the token, e.g. "
        "`127.0.0.1,10.0.0.0/8` (the address daphne sees: behind a proxy, its own unless "
        "`--proxy-headers`; prefer the token there). With neither this nor `METRICS_TOKEN`, "
        "`/metrics` answers `404` to everyone.",
        key="METRICS_ALLOWED_ADDRESSES",
    )
    sfu_port: int = setting(
        0,
        PORT,
        "Each `runsfu` worker serves its own `/metrics` over HTTP on this port plus its "
        "worker index (`--worker-index I`; `--workers N`: this port and the next N - 1), as "
        "`UDP_MUX_PORT` is shared out. `0`: no listener.",
        key="METRICS_SFU_PORT",
    )
    sfu_host: str = setting(
        "127.0.0.1",
        TEXT,
        "The address `runsfu` workers' metrics listeners bind to.",
        key="METRICS_SFU_HOST",
    )

    def __repr__(self) -> str:
        # Settings objects end up in logs and tracebacks: never print the token.
        return (
            f"MetricsSettings(token={'***' if self.token else ''!r}, "
            f"allowed_addresses={self.allowed_addresses!r}, sfu_port={self.sfu_port}, "
            f"sfu_host={self.sfu_host!r})"
        )


@dataclass(frozen=True)
class OnAirSettings:
    """The ``ONAIR`` settings, typed, with their defaults."""

    site_name: str = setting("OnAir", TEXT, "The site's name in page titles and the header.")
    allow_signup: bool = setting(True, FLAG, "`0` closes the sign-up page.")
    serve_static: bool = setting(
        True,
        FLAG,
        "daphne serves `/static/` itself. `onair.settings.production` turns it off unless "
        "set: there, run `manage.py collectstatic` and serve `STATIC_ROOT` from the proxy.",
    )
    ice: IceSettings = group(IceSettings)
    publisher_grace_seconds: float = setting(
        10.0,
        SECONDS,
        "How long viewers wait, attached, for a broadcaster whose connection dropped.",
    )
    publisher_media_timeout_seconds: float = setting(
        2.0,
        SECONDS,
        "A broadcaster that sends no media (RTP or RTCP) this long is away for its viewers "
        "(reconnecting), and its grace period starts; muted tracks still send "
        "(docs/SIGNALING.md). `0`: only its connection failing counts (about 30 s).",
    )
    connect_timeout_seconds: float = setting(
        20.0,
        SECONDS,
        "A WHIP/WHEP session, studio or watch page whose WebRTC connection is not up this "
        "long after its offer is closed and forgotten (docs/SECURITY.md). `0`: never.",
    )
    publish_max_bitrate: int = setting(
        2_500_000,
        INTEGER,
        "Bits per second a broadcaster may send in all (every simulcast layer and audio): the "
        "SFU says so (RTCP REMB) from the broadcast's first packet, so the encoder starts at "
        "its bitrate within a second instead of climbing for half a minute, and lowers it "
        "only when it loses the broadcaster's packets (over 10 % in a second). "
        "The studio splits it between its simulcast layers. `0`: the estimate aiortc "
        "measures instead (from ≈ 300 kbit/s, growing ≈ 8 % a second).",
    )
    native_forwarding: bool = setting(
        True,
        FLAG,
        "`0` forwards every viewer with the SFU's Python loop instead of its C loop (`make "
        "native` builds it, and must run again after `forward.c` changes: a stale build is "
        "not loaded).",
    )
    auto_layers: bool = setting(
        True,
        FLAG,
        "Each viewer is sent the video layer its own link carries (simulcast), estimated from "
        "its feedback, and its video pauses (audio goes on) when not even the lowest fits. "
        "`0`: every viewer gets the top layer the broadcaster sends, as without estimation; a "
        "viewer's own choice in the watch page's quality menu still applies.",
    )
    viewer_initial_bitrate: int = setting(
        5_000_000,
        INTEGER,
        "Bits per second a new viewer's link is assumed to carry before its first feedback: "
        "it starts on the highest layer that fits and steps down within a second if its link "
        "takes less.",
    )
    thumbnail_seconds: float = setting(
        10.0,
        SECONDS,
        "How often a live stream's poster (home page card, watch page) is refreshed: the SFU "
        "decodes the broadcaster's newest keyframe after each interval (or waits for the "
        "next) into a JPEG at most 640 pixels wide (docs/ARCHITECTURE.md, Thumbnails). "
        "`0`: no posters.",
    )
    max_sessions_per_address: int = setting(
        50,
        INTEGER,
        "Concurrent SFU sessions (WHIP, WHEP, studio, watch page; connected or not) from one "
        "client address, and, separately, its open WebSockets; past it `429` "
        "`too_many_sessions` / close `4429`. `0`: no cap.",
    )
    max_viewers_per_stream: int = setting(
        0,
        INTEGER,
        "Viewers of one stream, connected or not; past it `503` `stream_full` / close `4503`. "
        "`0`: only `MAX_SESSIONS` applies.",
    )
    max_sessions: int = setting(
        0,
        INTEGER,
        "SFU sessions in one process (daphne, or each `runsfu` worker); past it `503` "
        "`server_full` / close `4503`. `0`: derived from `RLIMIT_NOFILE`, leaving the file "
        "descriptors room: (soft limit - 256) / (host addresses + TURN servers + 2).",
    )
    max_websockets: int = setting(
        0,
        INTEGER,
        "Open WebSockets (studio and watch pages) in one daphne process, with or without a "
        "session; past it `server_full`, close `4503`. `0`: `MAX_SESSIONS`' derived default "
        "(the two split the file descriptors).",
    )
    join_concurrency: int = setting(
        16,
        INTEGER,
        "Viewer joins (watch page, WHEP) one daphne process sets up at once, each from its "
        "admission until its connection is up or gone (at most 5 s, and 1 s past its "
        "offer/answer exchange); the others wait in order (`signaling.admission`, "
        "docs/SECURITY.md). `0`: no queue.",
    )
    join_queue_max: int = setting(
        1000,
        INTEGER,
        "Joins waiting for their turn in one daphne process; past it `503` "
        "`join_queue_full` with `Retry-After` / close `4503`.",
    )
    join_queue_seconds: float = setting(
        60.0,
        SECONDS,
        "The longest a join waits for its turn; then `503` `join_queue_timeout` with "
        "`Retry-After` / close `4503`. `0`: no deadline.",
    )
    max_request_bytes: int = setting(
        1_048_576,
        INTEGER,
        "The largest HTTP request body `python -m onair.serve` takes; a larger one (declared, "
        "or counted as it arrives) is answered `413` `too_large` and its connection closed. "
        "`0`: no limit. Plain `daphne` does not enforce it.",
    )
    max_websocket_backlog: int = setting(
        1_048_576,
        INTEGER,
        "Bytes of one WebSocket's messages received and not yet handled (each counted with "
        "1 KiB more) past which `python -m onair.serve` closes it with `4429`. `0`: no limit. "
        "Plain `daphne` does not enforce it.",
    )
    sfu_mode: SfuMode = setting(
        SfuMode.EMBEDDED,
        MODE,
        "`embedded` runs the SFU inside each daphne process; `cluster` sends media to "
        "`manage.py runsfu` workers over the Redis channel layer (needs `REDIS_URL`; daphne "
        "and the workers share `DATABASE_URL`; docs/SCALING.md).",
    )
    sfu_max_viewers_per_worker: int = setting(
        300,
        INTEGER,
        "Viewers a cluster worker takes before a broadcast's viewers go to an edge worker "
        "piped from its origin.",
    )
    sfu_pipe_host: str = setting(
        "127.0.0.1",
        TEXT,
        "The address a cluster worker binds its origin-to-edge pipes to: the cluster "
        "network's address across machines.",
    )
    login_failures_per_address: int = setting(
        20,
        INTEGER,
        "Failed logins (login form and `POST /api/v1/auth/token/`) from one client address "
        "within `LOGIN_WINDOW_SECONDS`; past it, logins answer `429` with `Retry-After` until "
        "the window ends. Counted in Django's cache (Redis when `REDIS_URL` is set).",
    )
    login_failures_per_username: int = setting(
        10, INTEGER, "Failed logins for one username within the window, likewise."
    )
    login_window_seconds: int = setting(900, INTEGER, "The window failed logins are counted over.")
    max_streams_per_user: int = setting(
        20,
        INTEGER,
        "Streams one account may own; past it, creating one answers `403` `stream_quota`. "
        "Staff have no quota; `0`: none for anyone.",
    )
    recording: RecordingSettings = group(RecordingSettings)
    chat: ChatSettings = group(ChatSettings)
    webhooks: WebhookSettings = group(WebhookSettings)
    metrics: MetricsSettings = group(MetricsSettings)


@dataclass(frozen=True)
class SettingInfo:
    """One leaf setting, as the environment, the ``ONAIR`` dict and the docs name it."""

    key: str
    kind: Kind
    default: Any
    doc: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key


def _leaves(cls: type) -> Iterator[tuple[Field[Any], SettingInfo | None]]:
    for item in fields(cls):
        if "group" in item.metadata:
            yield item, None
        else:
            key = item.metadata["key"] or item.name.upper()
            yield item, SettingInfo(key, item.metadata["kind"], item.default, item.metadata["doc"])


def all_settings(cls: type = OnAirSettings) -> list[SettingInfo]:
    """Every leaf setting, in declaration order."""
    found: list[SettingInfo] = []
    for item, info in _leaves(cls):
        found.extend(all_settings(item.metadata["group"]) if info is None else [info])
    return found


def settings_from(raw: Mapping[str, Any], cls: type[Any] = OnAirSettings) -> Any:
    """``cls`` (``OnAirSettings`` by default) from an ``ONAIR`` dict, validated."""
    values: dict[str, Any] = {}
    for item, info in _leaves(cls):
        if info is None:
            values[item.name] = settings_from(raw, item.metadata["group"])
        elif info.key in raw:
            try:
                values[item.name] = info.kind.read(info.key, raw[info.key])
            except ValueError as exc:
                raise SettingError(info.env, raw[info.key], exc) from exc
    return cls(**values)


def environment_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``ONAIR`` dict entries of the ``ONAIR_<KEY>`` variables that are set."""
    environ = os.environ if environ is None else environ
    overrides: dict[str, Any] = {}
    for info in all_settings():
        if info.env in environ:
            try:
                overrides[info.key] = info.kind.from_env(info.env, environ[info.env])
            except ValueError as exc:
                raise SettingError(info.env, environ[info.env], exc) from exc
    return overrides


@functools.cache
def onair_settings() -> OnAirSettings:
    """The typed settings, read once and again whenever ``ONAIR`` changes (tests)."""
    parsed: OnAirSettings = settings_from(getattr(settings, "ONAIR", {}))
    return parsed


def cluster_mode() -> bool:
    """``ONAIR_SFU_MODE=cluster``: the SFU runs in ``manage.py runsfu`` workers, reached
    over the Redis channel layer (docs/SCALING.md); else it runs in each daphne process."""
    return onair_settings().sfu_mode is SfuMode.CLUSTER


def _reread(*, setting: str, **kwargs: Any) -> None:
    if setting == "ONAIR":
        onair_settings.cache_clear()


setting_changed.connect(_reread, dispatch_uid="onair.conf")


def settings_table() -> str:
    """The reference table of docs/SETTINGS.md."""
    rows = [
        "| Environment variable | `ONAIR` key | Type | Default | What it does |",
        "| --- | --- | --- | --- | --- |",
    ]
    for info in all_settings():
        doc = info.doc.replace("|", "\\|")
        default = info.kind.show(info.default)
        rows.append(f"| `{info.env}` | `{info.key}` | {info.kind.label} | {default} | {doc} |")
    return "\n".join(rows) + "\n"


TABLE_START = "<!-- generated by `python -m onair.conf`: do not edit by hand -->\n"
TABLE_END = "<!-- end of generated table -->\n"


def with_table(document: str) -> str:
    """``document`` with the text between its table markers replaced by ``settings_table()``."""
    head, start, rest = document.partition(TABLE_START)
    _, end, tail = rest.partition(TABLE_END)
    if not (start and end):
        raise ValueError("the document has no settings table markers")
    return head + TABLE_START + settings_table() + TABLE_END + tail


if __name__ == "__main__":
    # Rewrites the table of docs/SETTINGS.md from the fields above.
    doc = Path(__file__).resolve().parent.parent / "docs" / "SETTINGS.md"
    doc.write_text(with_table(doc.read_text()))
