"""The only part of the project that talks to the media engine (``sfu/``).

Signaling (the WebSocket consumers, the WHIP/WHEP views, the REST API through
``signaling.notify``) calls ``gateway``, the process's one implementation of
``contract.Gateway``, with stream ids and plain values; nothing outside this package
imports ``sfu`` (checked by import-linter, ``make imports``):

- ``contract``: the calls (``Gateway``, ``VERBS``), their values, errors and events;
- ``embedded``: the calls served by this process's routers (the default);
- ``cluster``: the calls sent to ``manage.py runsfu`` workers (``ONAIR_SFU_MODE=cluster``);
- ``worker``: a runsfu worker, serving them with an embedded gateway;
- ``directory``: cluster mode's worker directory in Redis;
- ``reactions``: what Django does about what the SFU reports (the one place for it);
- ``recording``: recordings' spec, and their spool files finalized into storage.
"""

from __future__ import annotations

from onair.conf import cluster_mode, onair_settings
from sfu.heap import freeze_startup_objects
from sfu.ice_mux import udp_mux_reserve
from signaling.gateway.cluster import ClusterGateway
from signaling.gateway.contract import (
    NO_BROADCAST,
    ConnectNotice,
    Gateway,
    IceCandidate,
    IceCredentials,
    PublishResult,
    RecordingProgress,
    SfuGatewayError,
    SfuUnavailableError,
    ViewResult,
    connection_lost,
    local_session_id,
    publisher_status,
    session_worker,
)
from signaling.gateway.embedded import EmbeddedGateway, offer_validate
from signaling.gateway.recording import recordings_repair

__all__ = [
    "NO_BROADCAST",
    "ConnectNotice",
    "Gateway",
    "IceCandidate",
    "IceCredentials",
    "PublishResult",
    "RecordingProgress",
    "SfuGatewayError",
    "SfuUnavailableError",
    "ViewResult",
    "connection_lost",
    "freeze_startup_objects",
    "gateway",
    "local_session_id",
    "offer_validate",
    "publisher_status",
    "recordings_repair",
    "reserve_ice_port",
    "session_worker",
]


def _process_gateway() -> Gateway:
    """In-process SFU by default; ``ONAIR_SFU_MODE=cluster``: the runsfu workers."""
    return ClusterGateway() if cluster_mode() else EmbeddedGateway()


gateway: Gateway = _process_gateway()


def reserve_ice_port() -> None:
    """Bind this process's shared ICE port (``UDP_MUX_PORT``) as the server starts, in
    embedded mode (the SFU is in this process; a ``runsfu`` worker binds its own). Raises
    ``OSError`` if the port is taken: two daphne processes on one machine need a port each."""
    port = onair_settings().ice.udp_mux_port
    if port and not cluster_mode():
        try:
            udp_mux_reserve(port)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"UDP port {port} (ONAIR_UDP_MUX_PORT) is taken: another OnAir process on "
                f"this machine needs its own ({exc.strerror})",
            ) from exc
