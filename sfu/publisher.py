"""The publisher's side: a peer connection that only receives, one producer per track."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import cast

from aiortc import RTCConfiguration, RTCRtpReceiver

from sfu import aiortc_adapter
from sfu.errors import NegotiationError
from sfu.events import PublisherClosed, SfuEvent
from sfu.ice_config import HostNetwork
from sfu.negotiation import OfferedMedia, codec_preferences, select_publish_codec
from sfu.peer import Peer
from sfu.producer import Producer
from sfu.publisher_bandwidth import PublisherBandwidth, with_start_bitrate
from sfu.simulcast import SimulcastOffer, answer_simulcast
from sfu.track import PublishedTrack

logger = logging.getLogger(__name__)

_SENDING_DIRECTIONS = ("sendonly", "sendrecv")
# How often a publisher's packet counters are looked at, at most (see ``_check_media``).
MEDIA_CHECK_SECONDS = 0.25


class PublisherPeer(Peer):
    """The broadcaster's connection. Created by ``Router.publish``; ``on_connected`` runs
    when its connection first comes up (the router says ``PublisherConnected``).

    Once connected, its media is watched: no RTP or RTCP on any of its tracks for
    ``media_timeout`` seconds (0: never) makes it ``media_stalled`` (``on_media_stalled``
    runs), and the next packet makes it flow again (``on_media_resumed``). A muted track
    still sends (silence, black frames; Opus DTX one packet per 400 ms): see
    ``bench.idle_publisher``.

    With ``publish_max_bitrate`` (bit/s; 0: off) the SFU tells the publisher what it may
    send (REMB) from its first packet on, starting at that ceiling (see
    ``sfu.publisher_bandwidth``), instead of aiortc's receive-side estimate.
    """

    def __init__(
        self,
        *,
        router_id: str,
        configuration: RTCConfiguration,
        network: HostNetwork,
        cache_size: int,
        keyframe_request_interval: float,
        emit: Callable[[SfuEvent], None],
        on_lost: Callable[[Peer], None],
        on_closed: Callable[[PublisherPeer], Awaitable[None]],
        on_connected: Callable[[PublisherPeer], None],
        media_timeout: float = 0.0,
        on_media_stalled: Callable[[PublisherPeer], None] | None = None,
        on_media_resumed: Callable[[PublisherPeer], None] | None = None,
        native_forwarding: bool = True,
        publish_max_bitrate: int = 0,
    ) -> None:
        super().__init__(configuration, network, on_lost)
        self._native_forwarding = native_forwarding
        self.router_id = router_id
        self.answer_sdp = ""
        # its tracks; ``producers`` is their layers, flat, in the offer's order
        self.tracks: tuple[PublishedTrack, ...] = ()
        self.producers: tuple[Producer, ...] = ()
        self.closed = False
        self._cache_size = cache_size
        self._keyframe_request_interval = keyframe_request_interval
        self._emit = emit
        self._on_closed = on_closed
        self._on_connected = on_connected
        self.media_stalled = False
        self._media_timeout = media_timeout
        self._on_media_stalled = on_media_stalled
        self._on_media_resumed = on_media_resumed
        self._rtcp_received = 0
        self._media_seen = 0
        self._media_seen_at = 0.0
        self._media_check: asyncio.TimerHandle | None = None
        self._publish_max_bitrate = publish_max_bitrate
        self.bandwidth: PublisherBandwidth | None = None
        self._simulcast_receivers: list[aiortc_adapter.SimulcastReceiver] = []
        # the aiortc receiver each producer's packets arrive on (a layer's: its track's)
        self._receivers: dict[Producer, RTCRtpReceiver] = {}

    async def close(self) -> None:
        """End the broadcast from this publisher: its producers and their
        down tracks close now, without a grace period."""
        await self._close("closed")

    async def _negotiate(self, offer_sdp: str, offered: list[OfferedMedia]) -> None:
        """Answer the publisher's offer (``offered``: its media, from ``offered_media``);
        raises NegotiationError for an offer the SFU cannot take."""
        tracks = []
        simulcast: dict[int, SimulcastOffer] = {}
        for media in offered:
            codec = select_publish_codec(media)
            if codec is None or media.direction not in _SENDING_DIRECTIONS:
                raise NegotiationError(f"publisher offers no forwardable {media.kind} codec")
            transceiver = self._pc.addTransceiver(media.kind, direction="recvonly")
            transceiver.setCodecPreferences(codec_preferences(media.kind, codec))
            aiortc_adapter.on_receiver_rtcp(transceiver.receiver, self._count_rtcp)
            if self._publish_max_bitrate > 0:
                aiortc_adapter.drop_bitrate_estimator(transceiver.receiver)
            # without simulcast the producer taps the receiver; with it, each layer's
            # producer taps its own stand-in, fed by the receiver's demultiplexer
            sources: list[tuple[str | None, RTCRtpReceiver]] = [(None, transceiver.receiver)]
            if media.simulcast is not None:
                simulcast[media.index] = media.simulcast
                layers = aiortc_adapter.SimulcastReceiver(
                    transceiver.receiver,
                    media.simulcast.rids,
                    rid_extension=media.simulcast.rid_extension,
                    repaired_rid_extension=media.simulcast.repaired_rid_extension,
                )
                self._simulcast_receivers.append(layers)
                sources = [
                    (rid, cast(RTCRtpReceiver, stand_in)) for rid, stand_in in layers.layers.items()
                ]
            producers = [
                Producer(
                    router_id=self.router_id,
                    publisher_id=self.id,
                    kind=media.kind,
                    codec=codec,
                    receiver=receiver,
                    cache_size=self._cache_size,
                    keyframe_request_interval=self._keyframe_request_interval,
                    emit=self._emit,
                    native_forwarding=self._native_forwarding,
                    rid=rid,
                )
                for rid, receiver in sources
            ]
            tracks.append(PublishedTrack(media.kind, producers))
            self._receivers.update((producer, transceiver.receiver) for producer in producers)
        if not tracks:
            raise NegotiationError("publisher offers no audio or video")
        self.tracks = tuple(tracks)
        self.producers = tuple(p for track in tracks for p in track.offered_layers)
        if self._publish_max_bitrate > 0:
            self.bandwidth = PublisherBandwidth(
                self._publish_max_bitrate,
                media_ssrcs=self._media_ssrcs,
                counters=self._stream_counters,
                send_remb=self._send_remb,
            )
        answer = await self._answer(offer_sdp)
        for layers in self._simulcast_receivers:
            layers.configure_transport()
        self.answer_sdp = answer_simulcast(answer, simulcast)
        if self.bandwidth is not None:
            self.answer_sdp = with_start_bitrate(self.answer_sdp, self._publish_max_bitrate)

    async def _close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._stop_media_check()
        if self.bandwidth is not None:
            self.bandwidth.stop()
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
            self._start_media_check()
            if self.bandwidth is not None and not self._closing:
                self.bandwidth.start()
            self._on_connected(self)

    def _media_ssrcs(self) -> list[int]:
        return [p.ssrc for p in self.producers if p.ssrc is not None]

    def _stream_counters(self) -> dict[int, tuple[int, int]]:
        receivers = {id(r): r for r in self._receivers.values()}
        return {
            ssrc: counters
            for receiver in receivers.values()
            for ssrc, counters in aiortc_adapter.received_stream_counters(receiver).items()
        }

    async def _send_remb(self, bitrate: int, ssrcs: list[int]) -> None:
        """One REMB per transport (a publisher without BUNDLE has one per track), listing
        the media SSRCs it carries."""
        on_transport: dict[int, tuple[RTCRtpReceiver, list[int]]] = {}
        for producer, receiver in self._receivers.items():
            ssrc = producer.ssrc
            entry = on_transport.setdefault(id(receiver.transport), (receiver, []))
            if ssrc is not None and ssrc in ssrcs:
                entry[1].append(ssrc)
        for receiver, listed in on_transport.values():
            if listed:
                await aiortc_adapter.send_remb(receiver, bitrate, listed)

    @property
    def packets_dropped(self) -> int:
        """RTP packets of its simulcast tracks that were no layer's (an SSRC without a
        known rid, a retransmission stream before its media) and were dropped."""
        return sum(layers.dropped for layers in self._simulcast_receivers)

    def _count_rtcp(self) -> None:
        self._rtcp_received += 1

    def _media_received(self) -> int:
        """Packets received so far on every track: RTP with a payload, and RTCP."""
        return self._rtcp_received + sum(p.packets_received for p in self.producers)

    def _start_media_check(self) -> None:
        if self._media_timeout <= 0 or self._closing:
            return
        loop = asyncio.get_running_loop()
        self._media_seen = self._media_received()
        self._media_seen_at = loop.time()
        self._media_check = loop.call_later(self._media_check_interval, self._check_media)

    @property
    def _media_check_interval(self) -> float:
        return min(MEDIA_CHECK_SECONDS, self._media_timeout / 4)

    def _check_media(self) -> None:
        """Compare the packet counters with the last look: polling them costs the media
        path nothing, and a stall is seen at most ``_media_check_interval`` late."""
        self._media_check = None
        if self._closing or self.closed:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        received = self._media_received()
        if received != self._media_seen:
            self._media_seen, self._media_seen_at = received, now
            if self.media_stalled:
                self.media_stalled = False
                logger.info("publisher media resumed", extra={"publisher_id": self.id})
                if self._on_media_resumed is not None:
                    self._on_media_resumed(self)
        elif not self.media_stalled and now - self._media_seen_at >= self._media_timeout:
            self.media_stalled = True
            logger.info("publisher media stopped", extra={"publisher_id": self.id})
            if self._on_media_stalled is not None:
                self._on_media_stalled(self)
        if not self._closing and not self.closed:
            self._media_check = loop.call_later(self._media_check_interval, self._check_media)

    def _stop_media_check(self) -> None:
        if self._media_check is not None:
            self._media_check.cancel()
            self._media_check = None
