"""What the kernel charges per forwarded datagram: one ``sendto`` each, or UDP GSO.

N receiving sockets in another process (pinned to the other core, draining them with
``epoll`` as a viewer process would) and one sending process (pinned to the first core)
that sends bursts of same-size 1.2 KB datagrams, one burst per "frame" and receiver, at a
viewer's packet rate: either one ``sendto`` per datagram (what a forwarder does without
batching) or one ``sendmsg`` with a ``UDP_SEGMENT`` control message per burst (what
``sfu.rtp_sender.DirectRtpSender`` does). Reported: the sender's CPU time (user +
system) per datagram, and that the receivers got every datagram.

``--mmsg V`` instead compares, from one socket as the shared ICE port sends, one GSO
``sendmsg`` per receiver with one ``sendmmsg`` per V receivers (each message a receiver's
GSO burst), both looped in C (compiled with cffi) so that only the system calls differ.

    python -m bench.syscalls [--receivers 100] [--burst 5] [--seconds 4] [--mmsg 16]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import multiprocessing
import os
import selectors
import socket
import struct
import tempfile
import time
from multiprocessing.connection import Connection
from types import ModuleType
from typing import Any

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


_SENDER_SOURCE = r"""
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#define CONTROL CMSG_SPACE(sizeof(uint16_t))

/* One message per receiver: the whole burst, cut by the kernel into `segment`-byte datagrams. */
struct mmsghdr *messages(const char *address, const int *ports, int count, char *payload,
                         int length, int segment) {
    struct mmsghdr *all = calloc((size_t)count, sizeof *all);
    struct sockaddr_in *names = calloc((size_t)count, sizeof *names);
    struct iovec *iov = calloc((size_t)count, sizeof *iov);
    char *control = calloc((size_t)count, CONTROL);
    uint16_t size = (uint16_t)segment;
    for (int i = 0; i < count; i++) {
        struct cmsghdr *cmsg;
        names[i].sin_family = AF_INET;
        names[i].sin_port = htons((uint16_t)ports[i]);
        inet_pton(AF_INET, address, &names[i].sin_addr);
        iov[i].iov_base = payload;
        iov[i].iov_len = (size_t)length;
        all[i].msg_hdr.msg_name = &names[i];
        all[i].msg_hdr.msg_namelen = sizeof names[i];
        all[i].msg_hdr.msg_iov = &iov[i];
        all[i].msg_hdr.msg_iovlen = 1;
        all[i].msg_hdr.msg_control = control + i * CONTROL;
        all[i].msg_hdr.msg_controllen = CONTROL;
        cmsg = CMSG_FIRSTHDR(&all[i].msg_hdr);
        cmsg->cmsg_level = SOL_UDP;
        cmsg->cmsg_type = UDP_SEGMENT;
        cmsg->cmsg_len = CMSG_LEN(sizeof size);
        memcpy(CMSG_DATA(cmsg), &size, sizeof size);
    }
    return all;
}

/* Send every receiver its message: one sendmsg each (vlen 1) or one sendmmsg per vlen.
 * Returns how many messages the socket took. */
int send_round(int fd, struct mmsghdr *all, int count, int vlen) {
    int taken = 0;
    for (int i = 0; i < count; i += vlen) {
        int n = count - i < vlen ? count - i : vlen;
        if (vlen == 1)
            taken += sendmsg(fd, &all[i].msg_hdr, MSG_DONTWAIT) >= 0;
        else {
            int sent = sendmmsg(fd, all + i, (unsigned int)n, MSG_DONTWAIT);
            taken += sent > 0 ? sent : 0;
        }
    }
    return taken;
}
"""


@functools.cache
@functools.cache
def _c_sender() -> Any:
    """The C sender above, compiled with cffi (as ``sfu.native.build`` does the C loop)."""
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(
        "struct mmsghdr; struct mmsghdr *messages(const char *, const int *, int, char *, int,"
        " int); int send_round(int, struct mmsghdr *, int, int);"
    )
    ffi.set_source("_bench_mmsg", "#include <stdint.h>\n" + _SENDER_SOURCE)
    with tempfile.TemporaryDirectory() as temporary:  # (once loaded, the file may go)
        spec = importlib.util.spec_from_file_location(
            "_bench_mmsg", ffi.compile(tmpdir=temporary, verbose=False)
        )
        assert spec is not None
        assert spec.loader is not None
        module: ModuleType = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def measure(
    receivers: int, burst: int, seconds: float, gso: bool, mmsg: int = 0
) -> tuple[float, int, int]:
    """(CPU seconds per datagram sent, datagrams sent, datagrams received). With ``mmsg``
    (needs ``gso``): from one socket, in C, one ``sendmsg`` per receiver (``mmsg`` 1) or one
    ``sendmmsg`` per ``mmsg`` receivers."""
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
    count = 1 if mmsg else receivers
    outbound = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
    for sock in outbound:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2**23)
        sock.bind((address, 0))
    payload = os.urandom(PACKET_BYTES * burst)
    segment = [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", PACKET_BYTES))]
    interval = burst / PACKETS_PER_SECOND
    if mmsg:
        sender = _c_sender()
        keep = sender.ffi.new("char[]", payload)
        ports = sender.ffi.new("int[]", [port for _, port in targets])
        messages = sender.lib.messages(
            address.encode(), ports, receivers, keep, len(payload), PACKET_BYTES
        )
    time.sleep(0.5)  # the receiver is polling
    sent = 0
    started = time.process_time()
    next_burst = began = time.monotonic()
    while time.monotonic() < began + seconds:
        if mmsg:
            sent += burst * sender.lib.send_round(outbound[0].fileno(), messages, receivers, mmsg)
        else:
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
    parser.add_argument(
        "--mmsg", type=int, default=0, help="compare sendmsg with sendmmsg of this many receivers"
    )
    args = parser.parse_args()
    if args.mmsg > 1:
        for vlen in (1, args.mmsg, 1, args.mmsg):  # alternated: the machine's drift apart
            per_datagram, sent, received = measure(
                args.receivers, args.burst, args.seconds, True, vlen
            )
            how = "one sendmsg per receiver" if vlen == 1 else f"sendmmsg of {vlen} receivers"
            print(
                f"{how:>26}: {per_datagram * 1e6:5.2f} µs of CPU per datagram "
                f"({args.receivers} receivers, {received}/{sent} received, one socket, in C)"
            )
        return
    for gso in (False, True):
        per_datagram, sent, received = measure(args.receivers, args.burst, args.seconds, gso)
        how = f"GSO, {args.burst} per sendmsg" if gso else "one sendto per datagram"
        print(
            f"{how:>26}: {per_datagram * 1e6:5.2f} µs of CPU per datagram "
            f"({args.receivers} receivers, {received}/{sent} received)"
        )


if __name__ == "__main__":
    main()
