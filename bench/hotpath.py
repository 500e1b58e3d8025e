"""The forwarding hot path alone: CPU per packet per viewer, without the kernel's ``sendto``.

One ``Producer`` and N ``DownTrack``s on real aiortc senders whose DTLS transports are marked
connected, with real SRTP sessions (AEAD-AES-256-GCM, what aiortc negotiates) and a
nominated ICE pair whose sends go nowhere: the Python loop's socket is a stand-in, the C
loop's (``sfu.native``) sends go to a hook that takes them. Synthetic VP8 packets of 1.2 KB,
five to a frame, go through ``Producer._on_rtp`` as aiortc's receiver would hand them over,
and the event loop turns after each frame's last (``Producer.flush`` forwards it). What is
left is what the SFU adds per packet and viewer: fan-out, munging, SRTP, bookkeeping.

    python -m bench.hotpath [--viewers 50] [--packets 4000] [--loop python|c|both]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time
from asyncio.selector_events import _SelectorDatagramTransport  # type: ignore[attr-defined]
from typing import Any

import pylibsrtp
from aioice.candidate import Candidate
from aioice.ice import CandidatePair, StunProtocol
from aiortc import RTCPeerConnection, RTCRtpCodecParameters
from aiortc.codecs import CODECS
from aiortc.rtcdtlstransport import State
from aiortc.rtcrtpparameters import RTCRtpSendParameters
from aiortc.rtp import RtpPacket

from sfu import native
from sfu.downtrack import DownTrack
from sfu.munger import RtpMunger
from sfu.producer import Producer
from testpeers import client_configuration

VP8 = next(c for c in CODECS["video"] if c.mimeType == "video/VP8")
PAYLOAD_BYTES = 1150
FRAME_PACKETS = 5  # a 1.4 Mbit/s 30 fps VP8 frame


class _DroppingTransport(_SelectorDatagramTransport):
    """asyncio's datagram transport, on a socket it never sends on, that sends nothing."""

    _buffer = ()  # nothing queued: the sender may use the socket directly
    _closing = False

    def __init__(self) -> None:  # not asyncio's: no event loop, no reading
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def sendto(self, data: bytes, addr: Any = None) -> None:
        pass

    def close(self) -> None:
        self._sock.close()
        self._sock = None  # type: ignore[assignment]  # closed: nothing for __del__ to warn of


class _DroppingSocket:
    """Stands in for the ICE socket: the sender's ``sendto`` and GSO ``sendmsg`` calls
    happen, the system calls do not."""

    family = socket.AF_INET

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def sendto(self, data: Any, addr: Any) -> int:
        return len(data)

    def sendmsg(self, buffers: Any, ancillary: Any, flags: int, addr: Any) -> int:
        return sum(len(b) for b in buffers)


def _connect_for_forwarding(pc: RTCPeerConnection) -> Any:
    sender = pc.addTransceiver("video", direction="sendonly").sender
    dtls = sender.transport
    dtls._state = State.CONNECTED
    dtls._tx_srtp = pylibsrtp.Session(
        pylibsrtp.Policy(
            key=os.urandom(44),
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
        )
    )
    connection = dtls.transport._connection
    protocol = StunProtocol(connection)
    protocol.transport = _DroppingTransport()
    remote = Candidate(
        foundation="1",
        component=1,
        transport="udp",
        priority=1,
        host="127.0.0.1",
        port=9,
        type="host",
    )
    connection._nominated[1] = CandidatePair(protocol, remote)
    return sender


async def measure(viewers: int, packets: int, loop: str) -> float:
    """CPU seconds per packet per viewer, forwarded by the Python or the C ``loop``."""
    return await _measure(viewers, packets, native_forwarding=loop == "c")


async def _measure(viewers: int, packets: int, *, native_forwarding: bool) -> float:
    peers = [RTCPeerConnection(client_configuration()) for _ in range(viewers + 1)]
    receiver = peers[0].addTransceiver("video", direction="recvonly").receiver
    producer = Producer(
        router_id="bench",
        publisher_id="bench",
        kind="video",
        codec=VP8,
        receiver=receiver,
        cache_size=1024,
        keyframe_request_interval=1.0,
        emit=lambda event: None,
        native_forwarding=native_forwarding,
    )
    parameters = RTCRtpSendParameters(
        codecs=[RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)],
        muxId="0",
    )
    tracks = []
    transports = []
    for index, pc in enumerate(peers[1:]):
        track = DownTrack(
            router_id="bench",
            viewer_id=str(index),
            producer=producer,
            sender=_connect_for_forwarding(pc),
            munger=RtpMunger(VP8.clockRate, native=native_forwarding),
            emit=lambda event: None,
            on_close=lambda track: None,
        )
        await track.start(parameters)
        direct = track.rtp_sender
        assert direct is not None
        assert direct.bind()
        transports.append(direct._transport)
        direct._socket = _DroppingSocket(direct._transport._sock)  # type: ignore[assignment]
        if native_forwarding:
            direct.native_send_hook = native.ffi.addressof(native.lib, "onair_discard")
        tracks.append(track)
    payload = b"\x10\x00\x9d\x01\x2a" + os.urandom(PAYLOAD_BYTES - 5)  # a keyframe start
    stream = [
        RtpPacket(
            payload_type=96,
            sequence_number=i & 0xFFFF,
            timestamp=i * 3000,
            ssrc=1,
            marker=i % FRAME_PACKETS == 0,  # the last packet of a frame
            payload=payload,
        )
        for i in range(packets)
    ]
    await producer._on_rtp(stream[0])  # the keyframe each viewer starts on (C loop from here)
    producer.flush()
    started = time.process_time()
    for packet in stream[1:]:
        await producer._on_rtp(packet)
        if packet.marker:
            await asyncio.sleep(0)  # the event loop's turn: the producer forwards the frame
    producer.flush()
    elapsed = time.process_time() - started
    sent = sum(t.packets_sent for t in tracks)
    producer.close("bench")
    await asyncio.gather(*(pc.close() for pc in peers))
    for transport in transports:
        transport.close()
    if sent != packets * viewers:
        raise RuntimeError(f"{sent} of {packets * viewers} packets were forwarded")
    return elapsed / (sent - viewers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--packets", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--loop", choices=["python", "c", "both"], default="both")
    args = parser.parse_args()
    loops = ["python", "c"] if args.loop == "both" else [args.loop]
    if "c" in loops and native.lib is None:
        raise SystemExit("the C loop is not built (make native) or is off")
    for loop in loops:
        best = min(
            asyncio.run(measure(args.viewers, args.packets, loop)) for _ in range(args.repeat)
        )
        print(
            f"{loop:>6} loop: {best * 1e6:.2f} µs per packet per viewer "
            f"({args.viewers} viewers, best of {args.repeat})"
        )


if __name__ == "__main__":
    main()
