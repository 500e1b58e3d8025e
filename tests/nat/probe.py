"""Measure a rig NAT's mapping and filtering (RFC 4787), as a STUN-based NAT test would.

    python -m tests.nat.probe reflect          # on the public side: UDP 7000 and 7001
    python -m tests.nat.probe probe A_IP B_IP  # behind the NAT under test; prints JSON

The reflector answers each datagram on port 7000 with the source address it saw, then
sends an unsolicited datagram to that address from port 7001 (same host, other port).
"""

from __future__ import annotations

import json
import select
import socket
import sys

REFLECT_PORT = 7000
POKE_PORT = 7001


def reflect() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as answer,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as poke,
    ):
        answer.bind(("0.0.0.0", REFLECT_PORT))
        poke.bind(("0.0.0.0", POKE_PORT))
        print("ready", flush=True)
        while True:
            _, source = answer.recvfrom(64)
            answer.sendto(json.dumps(source).encode(), source)
            poke.sendto(b"poke", source)


def probe(first: str, second: str) -> dict[str, object]:
    """Mapped addresses towards two servers, and whether the unsolicited poke got in."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        mapped = []
        poked = False
        for server in (first, second):
            sock.sendto(b"probe", (server, REFLECT_PORT))
            while select.select([sock], [], [], 0.5)[0]:
                data, source = sock.recvfrom(64)
                if source == (server, REFLECT_PORT):
                    mapped.append(tuple(json.loads(data)))
                elif source == (first, POKE_PORT):
                    poked = True
        return {"mapped": mapped, "poked": poked}


if __name__ == "__main__":
    if sys.argv[1] == "reflect":
        reflect()
    else:
        print(json.dumps(probe(sys.argv[2], sys.argv[3])))
