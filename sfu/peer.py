"""What publisher and viewer sessions share: one server-side peer connection."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import (
    InternalError,
    InvalidAccessError,
    InvalidStateError,
    OperationError,
)

from sfu import aiortc_adapter
from sfu.errors import NegotiationError
from sfu.ice import IceCandidate, parse_ice_candidate
from sfu.ice_config import HostNetwork, configure_ice

logger = logging.getLogger(__name__)

_LOST_STATES = ("failed", "closed")

# What aiortc raises for a description it cannot apply: its own errors, and the Python
# errors its SDP handling trips on input it does not expect (sfu.sdp_validation rejects
# the known cases first; these are the ones it does not know yet).
_AIORTC_NEGOTIATION_ERRORS = (
    ArithmeticError,
    AssertionError,
    AttributeError,
    LookupError,
    TypeError,
    ValueError,
    InternalError,
    InvalidAccessError,
    InvalidStateError,
    OperationError,
)


class Peer:
    """A server-side ``RTCPeerConnection`` and the signaling calls on it.

    ``on_lost`` runs once when the connection fails, the remote end closes it or
    it is not connected by its connect deadline (``lost_reason`` says which), but
    not after ``_close_peer_connection`` was asked for.
    """

    def __init__(
        self,
        configuration: RTCConfiguration,
        network: HostNetwork,
        on_lost: Callable[[Peer], None],
    ) -> None:
        self.id = str(uuid.uuid4())
        self._pc = aiortc_adapter.new_peer_connection(configuration)
        self._network = network
        self._on_lost = on_lost
        self._closing = False
        self._deadline: asyncio.TimerHandle | None = None
        self.lost_reason = "disconnected"
        self.connected = asyncio.Event()
        self._pc.on("connectionstatechange", self._on_connection_state_change)

    @property
    def connection_state(self) -> str:
        return self._pc.connectionState

    @property
    def lost(self) -> bool:
        """Whether it was lost (``on_lost`` ran) or is closed or closing."""
        return self._closing

    @property
    def peer_connection(self) -> RTCPeerConnection:
        return self._pc

    async def add_ice_candidate(self, candidate: IceCandidate) -> None:
        """Add a candidate trickled by the remote peer (aiortc itself gathers
        all its candidates before answering and never trickles). Raises
        NegotiationError for a malformed candidate."""
        await self._pc.addIceCandidate(parse_ice_candidate(candidate))

    async def _apply_remote_description(self, sdp: str, sdp_type: str) -> None:
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=sdp_type))
        except _AIORTC_NEGOTIATION_ERRORS as exc:
            raise NegotiationError(f"cannot apply the remote {sdp_type}: {exc!r}") from exc

    async def _answer(self, offer_sdp: str) -> str:
        await self._apply_remote_description(offer_sdp, "offer")
        try:
            await self._set_local_description(await self._pc.createAnswer())
        except _AIORTC_NEGOTIATION_ERRORS as exc:
            raise NegotiationError(f"cannot answer this offer: {exc!r}") from exc
        return str(self._pc.localDescription.sdp)

    async def _set_local_description(self, description: RTCSessionDescription) -> None:
        # aiortc gathers candidates here: bind them as the host network says first
        configure_ice(self._pc, self._network)
        aiortc_adapter.hasten_dtls_handshakes(self._pc)
        await self._pc.setLocalDescription(description)

    def _arm_connect_deadline(self, seconds: float) -> None:
        """Lose the session unless it connects within ``seconds``: a client that never
        does ICE (or never answers) must not hold a peer connection and its sockets."""
        if seconds > 0 and not self.connected.is_set() and not self._closing:
            self._deadline = asyncio.get_running_loop().call_later(
                seconds, self._connect_deadline_passed
            )

    def _connect_deadline_passed(self) -> None:
        self._deadline = None
        if not self.connected.is_set() and not self._closing:
            self._lose("connect_timeout")

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    async def _close_peer_connection(self) -> None:
        """Never raises: it runs in cleanup paths, where it must not mask the error."""
        self._closing = True
        self._cancel_deadline()
        await aiortc_adapter.close_peer_connection(self._pc)

    def _lose(self, reason: str) -> None:
        self._closing = True
        self._cancel_deadline()
        self.lost_reason = reason
        self._on_lost(self)

    def _on_connection_state_change(self) -> None:
        state = self._pc.connectionState
        if state == "connected":
            self._cancel_deadline()
            self.connected.set()
            logger.info("peer connected", extra={"peer": type(self).__name__, "peer_id": self.id})
        elif state in _LOST_STATES and not self._closing:
            self._lose("disconnected")
