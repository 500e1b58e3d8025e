"""The SFU's exceptions: one hierarchy for the gateway to map to HTTP/WS errors."""

from __future__ import annotations


class SfuError(Exception):
    """Base class of every error the SFU raises on purpose."""


class NegotiationError(SfuError, ValueError):
    """An SDP offer or answer the SFU cannot accept (malformed, or no codec in
    common with the publisher), or a malformed ICE candidate."""


class RouterClosedError(SfuError):
    """The router was closed; nothing can publish to or subscribe from it."""
