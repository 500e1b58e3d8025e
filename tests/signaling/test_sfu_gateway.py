"""The gateway hands the configured ICE servers, public address and port range to the SFU,
and closing it waits for the work its listeners were given."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Coroutine
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from onair.conf import onair_settings
from sfu import IceServer
from sfu.ice_config import HostNetwork
from signaling.gateway import reserve_ice_port
from signaling.gateway.contract import BroadcastClosed, GatewayEvent
from signaling.gateway.embedded import EmbeddedGateway


def test_router_options_follow_settings() -> None:
    onair = {
        **settings.ONAIR,
        "STUN_URLS": ["stun:stun.example.org:3478"],
        "TURN_URLS": ["turn:turn.example.org:3478?transport=udp"],
        "TURN_SECRET": "s3cret",
        "PUBLIC_IP": "203.0.113.7",
        "UDP_PORT_RANGE": "50000-50099",
        "PUBLISHER_GRACE_SECONDS": 3,
        "NATIVE_FORWARDING": False,
    }
    with override_settings(ONAIR=onair):
        options = EmbeddedGateway._router_options()
    assert not options.native_forwarding
    assert options.host_network.public_ip == "203.0.113.7"
    assert options.host_network.port_range == (50000, 50099)
    assert options.publisher_grace_seconds == 3.0
    stun, turn = options.ice_servers
    assert stun == IceServer(urls=("stun:stun.example.org:3478",))
    assert turn.username is not None
    assert turn.username.endswith(":sfu")
    assert turn.credential  # an HMAC, never the shared secret itself
    assert turn.credential != "s3cret"


def test_each_worker_of_a_runsfu_gets_its_own_shared_ice_port() -> None:
    with override_settings(ONAIR={**settings.ONAIR, "UDP_MUX_PORT": 40000}):
        assert EmbeddedGateway._router_options().host_network.udp_mux_port == 40000
        assert EmbeddedGateway._router_options(2).host_network.udp_mux_port == 40002
    with override_settings(ONAIR={**settings.ONAIR, "UDP_MUX_PORT": 0}):
        assert EmbeddedGateway._router_options(2).host_network.is_default


def test_default_options_keep_traffic_on_this_machine() -> None:
    options = EmbeddedGateway._router_options()
    assert options.ice_servers == ()
    assert options.host_network == HostNetwork(udp_mux_port=onair_settings().ice.udp_mux_port)


async def test_closing_everything_waits_for_what_the_listeners_set_off() -> None:
    """Sessions end in the database after their peer closes; a test's database teardown (or a
    server's shutdown) must not run while that work is still under way."""
    gateway = EmbeddedGateway()
    finished: list[str] = []

    async def record_later(stream_id: str) -> None:
        await asyncio.sleep(0.05)
        finished.append(stream_id)

    def listener(event: GatewayEvent) -> Coroutine[Any, Any, None] | None:
        return record_later(event.stream_id) if isinstance(event, BroadcastClosed) else None

    gateway.add_listener(listener)
    gateway.routers().get_or_create("launch")
    await gateway.close_all()
    assert finished == ["launch"]


async def test_closing_everything_gives_up_on_work_that_does_not_finish() -> None:
    gateway = EmbeddedGateway()
    never = asyncio.Event()

    def listener(event: GatewayEvent) -> Coroutine[Any, Any, None] | None:
        return never.wait() if isinstance(event, BroadcastClosed) else None  # type: ignore[return-value]

    gateway.add_listener(listener)
    gateway.routers().get_or_create("launch")
    await asyncio.wait_for(gateway.close_all(wait_seconds=0.1), timeout=5)
    never.set()  # let the stuck task end with the test
    await asyncio.sleep(0)


def test_a_taken_shared_ice_port_stops_the_server_as_it_starts() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("0.0.0.0", 0))
        port = taken.getsockname()[1]
        onair = {**settings.ONAIR, "UDP_MUX_PORT": port}
        with override_settings(ONAIR=onair), pytest.raises(OSError, match="ONAIR_UDP_MUX_PORT"):
            reserve_ice_port()
