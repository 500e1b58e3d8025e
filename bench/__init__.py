"""OnAir benchmarks: viewers per core, side by side with Janus and aiortc's MediaRelay.

Run with ``python -m bench`` (or ``make bench``). Nothing here is imported by the
application or its tests; see docs/BENCHMARKS.md for the method.
"""

import os


def native_forwarding() -> bool:
    """Whether OnAir's SFU forwards with its C loop in this run (where it is built):
    ``ONAIR_NATIVE_FORWARDING=0`` measures its Python loop instead
    (``RouterOptions.native_forwarding``)."""
    return os.environ.get("ONAIR_NATIVE_FORWARDING", "1") != "0"


def udp_mux_port() -> int | None:
    """The shared ICE port of OnAir's SFU in this run (``ONAIR_UDP_MUX_PORT`` and its
    default, as the servers read it; ``HostNetwork.udp_mux_port``), None for a UDP socket
    per peer connection. The cluster sweep gives its second worker the next port."""
    from onair.conf import environment_overrides, settings_from

    port: int = settings_from(environment_overrides()).ice.udp_mux_port
    return port or None
