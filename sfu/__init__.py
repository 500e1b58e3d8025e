"""OnAir's media engine: a forwarding SFU on aiortc.

Pure asyncio and aiortc, no web framework. Packets are forwarded, never decoded
or re-encoded (``sfu.thumbnail`` aside: it decodes one keyframe now and then). A
gateway drives it like this::

    registry = RouterRegistry(RouterOptions(ice_servers=(IceServer(("stun:...",)),)),
                              on_event=relay)            # every router's events
    router = registry.get_or_create(broadcast_id)

    publisher = await router.publish(offer_sdp)          # WHIP-style offer
    publisher.answer_sdp                                 # -> the SDP answer
    await publisher.add_ice_candidate(IceCandidate(line, sdp_mid="0"))
    await publisher.close()                              # ends it, no grace period

    viewer = await router.subscribe(offer_sdp)           # WHEP-style recvonly offer
    viewer.answer_sdp
    viewer = await router.subscribe()                    # or the server offers
    viewer.offer_sdp
    await viewer.accept_answer(answer_sdp)
    await viewer.add_ice_candidate(IceCandidate(line, sdp_mid="1"))
    await viewer.close()

    await registry.close(broadcast_id)                   # closes everything in it

A new ``publish()`` on a router replaces its publisher and moves viewers to the
new tracks without renegotiation (from a healthy publisher, once the new one is
connected: until then it is ``pending_publisher``); a publisher whose connection is lost keeps
its viewers attached for ``publisher_grace_seconds``. Offers the SFU cannot use
raise ``NegotiationError``; a closed router raises ``RouterClosedError``.

Codecs: VP8, H.264 constrained baseline with packetization-mode=1, Opus; each
viewer gets the publisher's codec. H.264 from OBS/FFmpeg must be sent without
B-frames (``-bf 0``), which browsers never produce.
"""

from sfu.downtrack import DownTrack
from sfu.errors import NegotiationError, RouterClosedError, SfuError
from sfu.events import (
    DownTrackAdded,
    DownTrackClosed,
    DownTrackStats,
    EventEmitter,
    ProducerAdded,
    ProducerClosed,
    ProducerStats,
    PublisherClosed,
    PublisherConnected,
    PublisherDisconnected,
    RecordingStarted,
    RecordingStopped,
    RouterClosed,
    RouterStats,
    SfuEvent,
    ThumbnailTaken,
    ViewerConnected,
    ViewerFirstFrame,
    ViewerJoined,
    ViewerLeft,
    ViewerQualityChanged,
)
from sfu.ice import IceCandidate, IceServer
from sfu.producer import Producer
from sfu.publisher import PublisherPeer
from sfu.recorder import RecordingSpec, RecordingStatus
from sfu.recording_files import RecordingFileError, RecordingInfo, finalize
from sfu.registry import RouterRegistry
from sfu.retransmission import RetransmissionLimits
from sfu.router import Router, RouterOptions
from sfu.track import PublishedTrack
from sfu.viewer import ViewerPeer

__all__ = [
    "DownTrack",
    "DownTrackAdded",
    "DownTrackClosed",
    "DownTrackStats",
    "EventEmitter",
    "IceCandidate",
    "IceServer",
    "NegotiationError",
    "Producer",
    "ProducerAdded",
    "ProducerClosed",
    "ProducerStats",
    "PublishedTrack",
    "PublisherClosed",
    "PublisherConnected",
    "PublisherDisconnected",
    "PublisherPeer",
    "RecordingFileError",
    "RecordingInfo",
    "RecordingSpec",
    "RecordingStarted",
    "RecordingStatus",
    "RecordingStopped",
    "RetransmissionLimits",
    "Router",
    "RouterClosed",
    "RouterClosedError",
    "RouterOptions",
    "RouterRegistry",
    "RouterStats",
    "SfuError",
    "SfuEvent",
    "ThumbnailTaken",
    "ViewerConnected",
    "ViewerFirstFrame",
    "ViewerJoined",
    "ViewerLeft",
    "ViewerPeer",
    "ViewerQualityChanged",
    "finalize",
]
