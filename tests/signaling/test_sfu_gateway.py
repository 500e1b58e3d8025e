"""The gateway hands the configured ICE servers, public address and port range to the SFU."""

from __future__ import annotations

from django.conf import settings
from django.test import override_settings

from sfu import IceServer
from signaling.sfu_gateway import SfuGateway


def test_router_options_follow_settings() -> None:
    onair = {
        **settings.ONAIR,
        "STUN_URLS": ["stun:stun.example.org:3478"],
        "TURN_URLS": ["turn:turn.example.org:3478?transport=udp"],
        "TURN_SECRET": "s3cret",
        "PUBLIC_IP": "203.0.113.7",
        "UDP_PORT_RANGE": "50000-50099",
        "PUBLISHER_GRACE_SECONDS": 3,
    }
    with override_settings(ONAIR=onair):
        options = SfuGateway._router_options()
    assert options.host_network.public_ip == "203.0.113.7"
    assert options.host_network.port_range == (50000, 50099)
    assert options.publisher_grace_seconds == 3.0
    stun, turn = options.ice_servers
    assert stun == IceServer(urls=("stun:stun.example.org:3478",))
    assert turn.username is not None
    assert turn.username.endswith(":sfu")
    assert turn.credential  # an HMAC, never the shared secret itself
    assert turn.credential != "s3cret"


def test_default_options_keep_traffic_on_this_machine() -> None:
    options = SfuGateway._router_options()
    assert options.ice_servers == ()
    assert options.host_network.is_default
