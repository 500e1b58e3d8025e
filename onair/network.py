"""Django-free network helpers (``onair.serve`` uses them before any settings exist)."""

from __future__ import annotations

import ipaddress


def host_is_loopback(host: str) -> bool:
    """Whether serving on ``host`` reaches this machine only (``0.0.0.0``: every interface)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
