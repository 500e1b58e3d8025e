"""What the kernel charges per forwarded datagram: one ``sendto`` each, or UDP GSO.

N receiving sockets in another process (pinned to the other core, draining them with
``epoll`` as a viewer process would) and one sending process (pinned to the first core)
that sends bursts of same-size 1.2 KB datagrams, one burst per "frame" and receiver, at a
viewer's packet rate: either one ``sendto`` per datagram (what a forwarder does without
batching) or one ``sendmsg`` with a ``UDP_SEGMENT`` control message per burst (what
``sfu.rtp_sender.DirectRtpSender`` does). Reported: the sender's CPU time (user +
system) per datagram, and that the receivers got every datagram.

    python -m bench.syscalls [--receivers 100] [--burst 5] [--seconds 4]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import selectors
import socket
import struct
import time
from multiprocessing.connection import Connection

PACKET_BYTES = 1200
PACKETS_PER_SECOND = 210  # ≈ 1.5 Mbit/s of VP8 + Opus
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and core < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {core})


def _address() -> str:
    """This machine's own address (not loopback), as aiortc's host candidates use."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no datagram is sent: this only picks a route
        return str(probe.getsockname()[0])


def _receive(sockets: list[socket.socket], seconds: float, results: Connection) -> None:
    _pin(1)
    selector = selectors.DefaultSelector()
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, sock)
    received = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.1):
            while True:
                try:
                    key.data.recv(65536)
                except BlockingIOError:
                    break
                received += 1
    results.send(received)


def measure(receivers: int, burst: int, seconds: float, gso: bool) -> tuple[float, int, int]:
    """(CPU seconds per datagram sent, datagrams sent, datagrams received)."""
    address = _address()
    inbound = []
    for _ in range(receivers):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2**22)
        sock.bind((address, 0))
        inbound.append(sock)
    targets = [sock.getsockname() for sock in inbound]
    results, child_end = multiprocessing.Pipe(duplex=False)
    receiver = multiprocessing.Process(target=_receive, args=(inbound, seconds + 1.5, child_end))
    receiver.start()
    for sock in inbound:
        sock.close()
    _pin(0)
    outbound = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(receivers)]
    for sock in outbound:
        sock.bind((address, 0))
    payload = os.urandom(PACKET_BYTES * burst)
    segment = [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", PACKET_BYTES))]
    interval = burst / PACKETS_PER_SECOND
    time.sleep(0.5)  # the receiver is polling
    sent = 0
    started = time.process_time()
    next_burst = began = time.monotonic()
    while time.monotonic() < began + seconds:
        for sock, target in zip(outbound, targets, strict=True):
            if gso and burst > 1:
                sock.sendmsg((payload,), segment, 0, target)
            else:
                for offset in range(0, len(payload), PACKET_BYTES):
                    sock.sendto(payload[offset : offset + PACKET_BYTES], target)
            sent += burst
        next_burst += interval
        time.sleep(max(0.0, next_burst - time.monotonic()))
    cpu = time.process_time() - started
    received = results.recv()
    receiver.join()
    for sock in outbound:
        sock.close()
    return cpu / sent, sent, received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receivers", type=int, default=100)
    parser.add_argument("--burst", type=int, default=5, help="datagrams per frame")
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    for gso in (False, True):
        per_datagram, sent, received = measure(args.receivers, args.burst, args.seconds, gso)
        how = f"GSO, {args.burst} per sendmsg" if gso else "one sendto per datagram"
        print(
            f"{how:>26}: {per_datagram * 1e6:5.2f} µs of CPU per datagram "
            f"({args.receivers} receivers, {received}/{sent} received)"
        )


if __name__ == "__main__":
    main()
