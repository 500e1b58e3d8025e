"""ICE servers, TURN REST credentials and WHIP/WHEP Link headers (signaling/ice.py)."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from onair.conf import IcePolicy, IceSettings, onair_settings, parse_port_range, settings_from
from sfu import RouterOptions
from sfu.ice import rtc_configuration
from signaling.ice import (
    IceServer,
    PeerRole,
    browser_configuration,
    ice_servers,
    ice_transport_policy,
    link_header,
    link_header_values,
    turn_credential,
)

SECRET = "onair-test-secret"
TURN = IceSettings(
    stun_urls=("stun:turn.example.org:3478",),
    turn_urls=(
        "turn:turn.example.org:3478?transport=udp",
        "turns:turn.example.org:443?transport=tcp",
    ),
    turn_secret=SECRET,
    turn_ttl_seconds=86400,
)


@pytest.mark.parametrize(
    ("secret", "user", "now", "ttl", "username", "password"),
    [
        # echo -n 1700086400:viewer-42 | openssl dgst -sha1 -hmac onair-test-secret -binary | base64
        (SECRET, "viewer-42", 1_700_000_000, 86400, "1700086400:viewer-42",
         "4w2U5nu0LmgOu3adefBvuIocMK0="),
        # echo -n "1700000000:alice" | openssl dgst -sha1 -hmac "s3cret" -binary | base64
        ("s3cret", "alice", 1_699_999_400, 600, "1700000000:alice",
         "TtElzSjT0GdnTQ9xdcRNxx96yQs="),
    ],
)  # fmt: skip
def test_turn_credential_matches_known_vectors(
    secret: str, user: str, now: int, ttl: int, username: str, password: str
) -> None:
    credential = turn_credential(secret=secret, user=user, ttl_seconds=ttl, now=now)
    assert credential.username == username
    assert credential.password == password
    assert credential.expires_at == now + ttl


def test_turn_credential_needs_a_secret_and_a_user_without_the_separator() -> None:
    with pytest.raises(ValueError, match="shared secret"):
        turn_credential(secret="", user="alice", ttl_seconds=60)
    with pytest.raises(ValueError, match="must not contain ':'"):
        turn_credential(secret=SECRET, user="a:b", ttl_seconds=60)


def test_by_default_no_ice_server_is_used() -> None:
    assert ice_servers(user="alice", config=IceSettings()) == ()
    configuration = rtc_configuration(ice_servers(user="alice", config=IceSettings()))
    # An explicit empty list: aiortc would otherwise ask a public STUN server.
    assert configuration.iceServers == []


def test_turn_urls_without_a_secret_are_left_out() -> None:
    config = IceSettings(stun_urls=TURN.stun_urls, turn_urls=TURN.turn_urls)
    assert ice_servers(user="alice", config=config) == (IceServer(urls=TURN.stun_urls),)


def test_ice_servers_carry_a_fresh_turn_credential() -> None:
    stun, turn = ice_servers(user="viewer-42", config=TURN, now=1_700_000_000)
    assert stun == IceServer(urls=TURN.stun_urls)
    assert turn == IceServer(
        urls=TURN.turn_urls,
        username="1700086400:viewer-42",
        credential="4w2U5nu0LmgOu3adefBvuIocMK0=",
    )


def test_the_same_list_reaches_the_sfu() -> None:
    servers = ice_servers(user="sfu", config=TURN, now=1_700_000_000)
    options = RouterOptions(ice_servers=servers)
    configured = rtc_configuration(options.ice_servers).iceServers
    assert configured is not None
    assert [s.urls for s in configured] == [
        list(TURN.stun_urls),
        list(TURN.turn_urls),
    ]
    assert configured[1].username == "1700086400:sfu"
    expected = turn_credential(secret=SECRET, user="sfu", ttl_seconds=86400, now=1_700_000_000)
    assert configured[1].credential == expected.password


def test_browser_configuration_for_pages() -> None:
    config = IceSettings(**{**TURN.__dict__, "viewer_policy": IcePolicy.RELAY})
    viewer = browser_configuration(
        user="viewer-42", role=PeerRole.VIEWER, config=config, now=1_700_000_000
    )
    assert viewer == {
        "iceServers": [
            {"urls": ["stun:turn.example.org:3478"]},
            {
                "urls": list(TURN.turn_urls),
                "username": "1700086400:viewer-42",
                "credential": "4w2U5nu0LmgOu3adefBvuIocMK0=",
            },
        ],
        "iceTransportPolicy": "relay",
    }
    publisher = browser_configuration(user="studio-1", role=PeerRole.PUBLISHER, config=config)
    assert publisher["iceTransportPolicy"] == "all"


def test_relay_only_applies_to_viewers_only() -> None:
    config = IceSettings(viewer_policy=IcePolicy.RELAY)
    assert ice_transport_policy(PeerRole.VIEWER, config) is IcePolicy.RELAY
    assert ice_transport_policy(PeerRole.PUBLISHER, config) is IcePolicy.ALL
    assert ice_transport_policy(PeerRole.SFU, config) is IcePolicy.ALL


def test_link_header_values_follow_rfc_9725() -> None:
    values = link_header_values(ice_servers(user="whip-1", config=TURN, now=1_700_000_000))
    password = turn_credential(secret=SECRET, user="whip-1", ttl_seconds=86400, now=1_700_000_000)
    assert values == [
        '<stun:turn.example.org:3478>; rel="ice-server"',
        '<turn:turn.example.org:3478?transport=udp>; rel="ice-server"; '
        f'username="1700086400:whip-1"; credential="{password.password}"; '
        'credential-type="password"',
        '<turns:turn.example.org:443?transport=tcp>; rel="ice-server"; '
        f'username="1700086400:whip-1"; credential="{password.password}"; '
        'credential-type="password"',
    ]


def test_link_header_quotes_and_joins() -> None:
    server = IceServer(urls=("turn:t.example:3478",), username='a"b\\c', credential="x")
    assert link_header_values([server]) == [
        '<turn:t.example:3478>; rel="ice-server"; username="a\\"b\\\\c"; credential="x"; '
        'credential-type="password"'
    ]
    stun = IceServer(urls=("stun:s.example:3478",))
    assert link_header([stun, stun]) == (
        '<stun:s.example:3478>; rel="ice-server", <stun:s.example:3478>; rel="ice-server"'
    )


def test_the_shared_secret_never_leaves_the_server() -> None:
    servers = ice_servers(user="viewer-42", config=TURN)
    exposed = [
        json.dumps(browser_configuration(user="viewer-42", role=PeerRole.VIEWER, config=TURN)),
        link_header(servers),
        repr(servers),
        repr(TURN),
    ]
    assert not [text for text in exposed if SECRET in text]


@override_settings(
    ONAIR={
        "STUN_URLS": ["stun:turn.example.org:3478"],
        "TURN_URLS": ",".join(TURN.turn_urls),  # as ONAIR_TURN_URLS gives it
        "TURN_SECRET": SECRET,
        "TURN_TTL_SECONDS": "3600",
        "ICE_TRANSPORT_POLICY": "relay",
        "PUBLIC_IP": "203.0.113.7",
        "UDP_PORT_RANGE": "50000-50999",
    }
)
def test_ice_settings_read_the_onair_dict() -> None:
    assert onair_settings().ice == IceSettings(
        stun_urls=TURN.stun_urls,
        turn_urls=TURN.turn_urls,
        turn_secret=SECRET,
        turn_ttl_seconds=3600,
        viewer_policy=IcePolicy.RELAY,
        public_ip="203.0.113.7",
        udp_port_range=(50000, 50999),
    )


def test_ice_settings_defaults_and_validation() -> None:
    assert settings_from({}).ice == IceSettings()
    assert IceSettings().turn_ttl_seconds == 24 * 3600
    with pytest.raises(ValueError, match="must start with"):
        settings_from({"TURN_URLS": ["stun:wrong.example"]})
    with pytest.raises(ValueError, match="positive"):
        settings_from({"TURN_TTL_SECONDS": 0})
    with pytest.raises(ValueError, match="is not a valid IcePolicy"):
        settings_from({"ICE_TRANSPORT_POLICY": "none"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", None), ("50000-50999", (50000, 50999)), (" 40000-40000 ", (40000, 40000))],
)
def test_parse_port_range(value: str, expected: tuple[int, int] | None) -> None:
    assert parse_port_range(value) == expected


@pytest.mark.parametrize("value", ["50000", "50999-50000", "80-90", "a-b"])
def test_parse_port_range_rejects(value: str) -> None:
    with pytest.raises(ValueError, match=r"UDP_PORT_RANGE|invalid literal"):
        parse_port_range(value)
