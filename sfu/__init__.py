"""OnAir's media engine: a forwarding SFU on aiortc.

Pure asyncio and aiortc, no web framework. A gateway drives it through
``RouterRegistry`` / ``Router`` and listens to ``Router.events``.
"""

from sfu.consumer import Consumer
from sfu.errors import NegotiationError, RouterClosedError, SfuError
from sfu.events import (
    ConsumerAdded,
    ConsumerClosed,
    ConsumerStats,
    EventEmitter,
    ProducerAdded,
    ProducerClosed,
    ProducerStats,
    PublisherClosed,
    PublisherConnected,
    PublisherDisconnected,
    RouterClosed,
    RouterStats,
    SfuEvent,
    ViewerJoined,
    ViewerLeft,
)
from sfu.ice import IceCandidate, IceServer
from sfu.producer import Producer
from sfu.publisher import PublisherSession
from sfu.registry import RouterRegistry
from sfu.router import Router, RouterOptions
from sfu.viewer import ViewerSession

__all__ = [
    "Consumer",
    "ConsumerAdded",
    "ConsumerClosed",
    "ConsumerStats",
    "EventEmitter",
    "IceCandidate",
    "IceServer",
    "NegotiationError",
    "Producer",
    "ProducerAdded",
    "ProducerClosed",
    "ProducerStats",
    "PublisherClosed",
    "PublisherConnected",
    "PublisherDisconnected",
    "PublisherSession",
    "Router",
    "RouterClosed",
    "RouterClosedError",
    "RouterOptions",
    "RouterRegistry",
    "RouterStats",
    "SfuError",
    "SfuEvent",
    "ViewerJoined",
    "ViewerLeft",
    "ViewerSession",
]
