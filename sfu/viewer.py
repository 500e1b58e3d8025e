"""A viewer's side: a peer connection that only sends, one down track per track."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiortc import MediaStreamTrack, RTCConfiguration, RTCRtpTransceiver
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpSendParameters
from aiortc.rtp import AnyRtcpPacket, RtcpPsfbPacket, RtcpRrPacket, RtcpSrPacket
from av.frame import Frame

from sfu import aiortc_adapter
from sfu.downtrack import DownTrack
from sfu.errors import NegotiationError
from sfu.events import SfuEvent, ViewerConnected, ViewerFirstFrame, ViewerLeft
from sfu.ice_config import HostNetwork
from sfu.munger import RtpMunger
from sfu.negotiation import MEDIA_KINDS, CodecLike, OfferedMedia, codec_preferences, is_vp8
from sfu.peer import Peer
from sfu.producer import Producer
from sfu.quality import LayeredTrack, QualityOptions, ViewerQuality
from sfu.sdp_validation import validate_description

logger = logging.getLogger(__name__)

_RECEIVING_DIRECTIONS = ("recvonly", "sendrecv")
# What a viewer's bandwidth estimate reads (``sfu.quality``): receiver reports and REMB.
_ESTIMATE_FEEDBACK = (RtcpRrPacket, RtcpSrPacket, RtcpPsfbPacket)


class _IdleTrack(MediaStreamTrack):
    """Gives a sender a track whose ``recv`` never returns, so aiortc's send
    loop waits instead of polling (and never creates an encoder); the SFU
    sends on the sender's transport directly."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self) -> Frame:
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable")


class SendSlot:
    """One sending transceiver of a viewer, and the down track feeding it.

    The slot keeps what outlives its down tracks: the outgoing stream's sequence number and
    timestamp space (``munger``), which a down track attached later (a new publisher after
    the grace period) continues."""

    def __init__(
        self,
        transceiver: RTCRtpTransceiver,
        *,
        native_forwarding: bool,
        quality: ViewerQuality | None = None,
    ) -> None:
        self.kind = transceiver.kind
        self.sender = transceiver.sender
        self._quality = quality
        self._ssrcs = aiortc_adapter.sender_ssrcs(self.sender)
        self.parameters: RTCRtpSendParameters | None = None
        self.down_track: DownTrack | None = None
        self._native_forwarding = native_forwarding
        self._munger: RtpMunger | None = None
        aiortc_adapter.on_sender_started(self.sender, self._started)
        aiortc_adapter.intercept_sender_rtcp(self.sender, self._handle_rtcp)

    def munger(self, codec: RTCRtpCodecParameters) -> RtpMunger:
        """The sequence-number and timestamp state of this outgoing stream (kept where the C
        loop reads it, where it may forward), for the producer's ``codec``."""
        if self._munger is None:
            self._munger = RtpMunger(
                codec.clockRate, native=self._native_forwarding, vp8=is_vp8(codec)
            )
        return self._munger

    async def attach(self, down_track: DownTrack) -> None:
        self.down_track = down_track
        if self.parameters is not None:
            await down_track.start(self.parameters)

    def detach(self, down_track: DownTrack) -> None:
        if self.down_track is down_track:
            self.down_track = None

    async def _started(self, parameters: RTCRtpSendParameters) -> None:
        self.parameters = parameters
        if self.down_track is not None:
            await self.down_track.start(parameters)

    async def _handle_rtcp(self, packet: AnyRtcpPacket) -> bool:
        quality = self._quality
        if quality is not None and isinstance(packet, _ESTIMATE_FEEDBACK):
            # aiortc goes on with it (RTT, stats): read before, so the RTT is the last one
            quality.feedback(packet, self._ssrcs, aiortc_adapter.sender_rtt(self.sender))
        down_track = self.down_track
        return down_track is not None and await down_track.handle_rtcp(packet)


class ViewerPeer(Peer):
    """One viewer's connection. Created by ``Router.subscribe``."""

    def __init__(
        self,
        *,
        router_id: str,
        configuration: RTCConfiguration,
        network: HostNetwork,
        emit: Callable[[SfuEvent], None],
        on_lost: Callable[[Peer], None],
        on_closed: Callable[[ViewerPeer], None],
        native_forwarding: bool = True,
        quality: QualityOptions | None = None,
        track_of: Callable[[Producer], LayeredTrack | None] = lambda producer: None,
    ) -> None:
        super().__init__(configuration, network, on_lost)
        self._native_forwarding = native_forwarding
        self.router_id = router_id
        self.answer_sdp: str | None = None
        self.offer_sdp: str | None = None
        self.closed = False
        self.slots: list[SendSlot] = []
        self._made_at = time.monotonic()
        self._first_frame_sent = False
        self._emit = emit
        self._on_closed = on_closed
        self.quality = ViewerQuality(
            router_id=router_id,
            viewer_id=self.id,
            options=quality or QualityOptions(),
            emit=emit,
            down_tracks=lambda: self.down_tracks,
            track_of=track_of,
        )

    @property
    def down_tracks(self) -> tuple[DownTrack, ...]:
        return tuple(slot.down_track for slot in self.slots if slot.down_track is not None)

    def free_slot(self, kind: str) -> SendSlot | None:
        return next((s for s in self.slots if s.kind == kind and s.down_track is None), None)

    async def accept_answer(self, answer_sdp: str) -> None:
        """Complete a server-offered session with the viewer's answer. Raises
        NegotiationError for a malformed answer."""
        validate_description(answer_sdp, sdp_type="answer")
        await self._apply_remote_description(answer_sdp, "answer")

    async def close(self) -> None:
        await self._close("closed")

    async def _negotiate(
        self,
        offer_sdp: str | None,
        offered: list[OfferedMedia] | None,
        codecs: dict[str, CodecLike],
    ) -> None:
        """Answer a viewer's (WHEP-style) offer (``offered``: its media, from
        ``offered_media``), or create the server's offer.

        ``codecs`` holds the current producers' codecs by kind; each transceiver
        is restricted to its producer's codec before the offer is applied or
        created, so the viewer's codec is the publisher's.
        """
        if offer_sdp is None or offered is None:
            kinds = list(MEDIA_KINDS)
        else:
            kinds = [m.kind for m in offered if m.direction in _RECEIVING_DIRECTIONS]
            if not kinds:
                raise NegotiationError("viewer offers to receive neither audio nor video")
        for kind in kinds:
            transceiver = aiortc_adapter.add_send_transceiver(self._pc, _IdleTrack(kind))
            transceiver.setCodecPreferences(codec_preferences(kind, codecs.get(kind)))
            self.slots.append(
                SendSlot(
                    transceiver, native_forwarding=self._native_forwarding, quality=self.quality
                )
            )
        if offer_sdp is None:
            await self._set_local_description(await self._pc.createOffer())
            self.offer_sdp = str(self._pc.localDescription.sdp)
        else:
            self.answer_sdp = await self._answer(offer_sdp)
        for transceiver in self._pc.getTransceivers():  # the viewer's media is never received
            aiortc_adapter.drop_bitrate_estimator(transceiver.receiver)

    async def _close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.quality.close()
        for down_track in self.down_tracks:
            down_track.close("viewer_closed")
        await self._close_peer_connection()
        self.slots.clear()
        logger.debug("viewer closed", extra={"viewer_id": self.id, "reason": reason})
        self._emit(ViewerLeft(router_id=self.router_id, viewer_id=self.id, reason=reason))
        self._on_closed(self)

    def _first_frame(self) -> None:
        """A down track of it sent its first keyframe: the viewer's first, once."""
        if self._first_frame_sent or self.closed:
            return
        self._first_frame_sent = True
        self._emit(
            ViewerFirstFrame(
                router_id=self.router_id,
                viewer_id=self.id,
                seconds=time.monotonic() - self._made_at,
            )
        )

    def _on_connection_state_change(self) -> None:
        already_connected = self.connected.is_set()
        super()._on_connection_state_change()
        if self.connected.is_set() and not already_connected and not self.closed:
            self._emit(
                ViewerConnected(
                    router_id=self.router_id,
                    viewer_id=self.id,
                    seconds=time.monotonic() - self._made_at,
                )
            )
            self.quality.start()
