"""The publisher's side: a peer connection that only receives, one producer per track."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiortc import RTCConfiguration

from sfu.errors import NegotiationError
from sfu.events import PublisherClosed, PublisherConnected, SfuEvent
from sfu.ice_config import HostNetwork
from sfu.negotiation import OfferedMedia, codec_preferences, select_publish_codec
from sfu.producer import Producer
from sfu.session import PeerSession

logger = logging.getLogger(__name__)

_SENDING_DIRECTIONS = ("sendonly", "sendrecv")


class PublisherSession(PeerSession):
    """The broadcaster's connection. Created by ``Router.publish``."""

    def __init__(
        self,
        *,
        router_id: str,
        configuration: RTCConfiguration,
        network: HostNetwork,
        cache_size: int,
        keyframe_request_interval: float,
        emit: Callable[[SfuEvent], None],
        on_lost: Callable[[PeerSession], None],
        on_closed: Callable[[PublisherSession], Awaitable[None]],
    ) -> None:
        super().__init__(configuration, network, on_lost)
        self.router_id = router_id
        self.answer_sdp = ""
        self.producers: tuple[Producer, ...] = ()
        self.closed = False
        self._cache_size = cache_size
        self._keyframe_request_interval = keyframe_request_interval
        self._emit = emit
        self._on_closed = on_closed

    async def close(self) -> None:
        """End the broadcast from this publisher: its producers and their
        consumers close now, without a grace period."""
        await self._close("closed")

    async def _negotiate(self, offer_sdp: str, offered: list[OfferedMedia]) -> None:
        """Answer the publisher's offer (``offered``: its media, from ``offered_media``);
        raises NegotiationError for an offer the SFU cannot take."""
        producers = []
        for media in offered:
            codec = select_publish_codec(media)
            if codec is None or media.direction not in _SENDING_DIRECTIONS:
                raise NegotiationError(f"publisher offers no forwardable {media.kind} codec")
            transceiver = self._pc.addTransceiver(media.kind, direction="recvonly")
            transceiver.setCodecPreferences(codec_preferences(media.kind, codec))
            producers.append(
                Producer(
                    router_id=self.router_id,
                    publisher_id=self.id,
                    kind=media.kind,
                    codec=codec,
                    receiver=transceiver.receiver,
                    cache_size=self._cache_size,
                    keyframe_request_interval=self._keyframe_request_interval,
                    emit=self._emit,
                )
            )
        if not producers:
            raise NegotiationError("publisher offers no audio or video")
        self.producers = tuple(producers)
        self.answer_sdp = await self._answer(offer_sdp)

    async def _close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        await self._close_peer_connection()
        for producer in self.producers:
            producer.close(reason)
        logger.info("publisher closed", extra={"publisher_id": self.id, "reason": reason})
        self._emit(PublisherClosed(router_id=self.router_id, publisher_id=self.id, reason=reason))
        await self._on_closed(self)

    def _on_connection_state_change(self) -> None:
        already_connected = self.connected.is_set()
        super()._on_connection_state_change()
        if self.connected.is_set() and not already_connected:
            self._emit(PublisherConnected(router_id=self.router_id, publisher_id=self.id))
