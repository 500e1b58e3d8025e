"""Shaped links for real viewers: each viewer's Chromium runs in its own network namespace,
connected to the root namespace (where the SFU runs) by a veth pair whose root end shapes
what the SFU sends toward it.

    python -m tests.quality.rig status   # this machine's quality-rig namespaces
    python -m tests.quality.rig down     # remove every one of them, even of a crashed run

Layout of one run (``k`` is taken from the process id, so concurrent runs do not collide)::

    root namespace                                      namespace <run>-<viewer>
      server address 10.78.k.254/32 (on a veth pair      eth0 10.78.k.(4i+2)/30
        held in the root namespace: no dummy module)      default route via 10.78.k.(4i+1)
      oqr<run>v<i> 10.78.k.(4i+1)/30 ─── veth ───────────── eth0
        egress (SFU → viewer): htb; UDP in a class with    ingress: nftables drops
        its own rate and a bfifo queue, TCP unlimited      ``loss`` % of UDP at random

The SFU (daphne) listens on the server address; the viewer's pages load from it and ICE
finds it (aiortc gathers every interface's address; all are local to the root namespace).
Only UDP is shaped: the page and its signaling load as fast as ever, the media does not.
What the SFU sent toward a viewer is counted before the bottleneck (an nftables counter on
the root end's output, in packets and bytes) and at it (the queue's sent and dropped
packets): a retransmission storm shows there even when the viewer never sees it. Random
loss applies after the bottleneck, so those counts include what is then lost. There is no
delay (this kernel has no netem).

Chromium runs inside a viewer's namespace through a wrapper script given to Playwright as
``executable_path``: ``ip netns exec <ns> /usr/bin/chromium "$@"`` (Playwright talks to it
over inherited pipes, which ``ip netns exec`` keeps).
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.netns import NamespaceRig, RigError, namespaces, remove_namespace, run

PREFIX = "onairq"
DEVICE_PREFIX = "oqr"  # interface names have at most 15 characters
_RUNS = itertools.count()
CHROMIUM = "/usr/bin/chromium"
_UNLIMITED = "10gbit"
_UDP_CLASS = "1:20"
_UDP_QUEUE = "20:"


def unavailable_reason() -> str | None:
    """Why the rig cannot run here, or ``None``."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "the quality rig needs root (network namespaces, tc, nftables)"
    for tool in ("ip", "tc", "nft"):
        if shutil.which(tool) is None:
            return f"{tool!r} is not installed"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is not installed (make browser installs it)"
    probe = f"{PREFIX}probe{os.getpid()}"
    created = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if created.returncode != 0:
        return f"cannot create a network namespace: {created.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@dataclass(frozen=True)
class LinkCounters:
    """What the SFU sent toward a viewer, cumulative: offered to the link (UDP, counted
    before the bottleneck), and of that, what the bottleneck's queue dropped."""

    packets: int
    bytes: int
    dropped_packets: int

    def __sub__(self, other: LinkCounters) -> LinkCounters:
        return LinkCounters(
            self.packets - other.packets,
            self.bytes - other.bytes,
            self.dropped_packets - other.dropped_packets,
        )


@dataclass
class Link:
    """One viewer's namespace and the shaped link to it."""

    rig: QualityRig
    name: str
    namespace: str
    device: str  # the root end of the veth
    address: str  # the viewer's address, in its namespace
    gateway: str  # the root end's address
    chromium: Path  # the wrapper running Chromium in the namespace
    rate_bits: float | None = None
    loss_percent: float = 0.0
    queue_seconds: float = 0.3

    def set_rate(
        self, bits_per_second: float | None, *, queue_seconds: float | None = None
    ) -> None:
        """Cap the SFU → viewer media at ``bits_per_second`` (None: lift the cap); the
        queue in front of the cap holds ``queue_seconds`` of it, beyond which it drops."""
        if queue_seconds is not None:
            self.queue_seconds = queue_seconds
        self.rate_bits = bits_per_second
        rate = _UNLIMITED if bits_per_second is None else f"{int(bits_per_second)}bit"
        # a burst of a few packets (htb's default at low rates is one): the link's own pace
        run(["tc", "class", "change", "dev", self.device, "parent", "1:", "classid",
              _UDP_CLASS, "htb", "rate", rate, "ceil", rate, "burst", "6000",
              "cburst", "6000", "quantum", "1514"])  # fmt: skip
        limit = 1_000_000
        if bits_per_second is not None:
            limit = int(bits_per_second / 8 * self.queue_seconds)
        run(["tc", "qdisc", "change", "dev", self.device, "parent", _UDP_CLASS, "handle",
              _UDP_QUEUE, "bfifo", "limit", str(max(limit, 3000))])  # fmt: skip

    def set_loss(self, percent: float) -> None:
        """Drop ``percent`` % (whole numbers) of the UDP packets reaching the viewer, at random."""
        self.loss_percent = percent
        table = ["inet", PREFIX]
        run(["ip", "netns", "exec", self.namespace, "nft", "flush", "chain", *table, "loss"])
        if percent > 0:
            run(["ip", "netns", "exec", self.namespace, "nft", "add", "rule", *table, "loss",
                  "meta", "l4proto", "udp", "numgen", "random", "mod", "100", "<",
                  str(int(percent)), "drop"])  # fmt: skip

    def counters(self) -> LinkCounters:
        """What the SFU has sent toward this viewer so far (see ``LinkCounters``)."""
        offered = self.rig.output_counter(self.device)
        dropped = 0
        listed = subprocess.run(
            ["tc", "-s", "-j", "qdisc", "show", "dev", self.device],
            capture_output=True,
            text=True,
            check=True,
        )
        for qdisc in json.loads(listed.stdout):
            if qdisc.get("handle") == _UDP_QUEUE:
                dropped = int(qdisc.get("drops", 0))
        return LinkCounters(offered[0], offered[1], dropped)

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *argv]


@dataclass
class QualityRig(NamespaceRig):
    """One run's namespaces. Use as a context manager, or ``up()``/``down()``; then
    ``add_link`` per viewer. Subnets are 10.78.k.0/24, ``k`` from ``run_id``."""

    run_id: str = field(default_factory=lambda: f"{os.getpid()}{next(_RUNS) % 10}")
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="onair-q-")))
    links: list[Link] = field(default_factory=list)
    _namespaces: list[str] = field(default_factory=list)
    _devices: list[str] = field(default_factory=list)
    _table: str = ""

    @property
    def subnet(self) -> int:
        return int(self.run_id) % 250 if self.run_id.isdigit() else 250

    @property
    def server_ip(self) -> str:
        """Where the SFU listens, reachable from the root and every viewer's namespace."""
        return f"10.78.{self.subnet}.254"

    def down(self) -> None:
        for namespace in reversed(self._namespaces):
            remove_namespace(namespace)
        self._namespaces.clear()
        for device in self._devices:
            subprocess.run(["ip", "link", "del", device], capture_output=True)
        self._devices.clear()
        if self._table:
            subprocess.run(["nft", "delete", "table", "inet", self._table], capture_output=True)
            self._table = ""
        self.links.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)
        atexit.unregister(self.down)

    def _build(self) -> None:
        # The server's address lives on one end of a veth pair kept in the root namespace.
        device = f"{DEVICE_PREFIX}{self.run_id}s"
        run(["ip", "link", "add", device, "type", "veth", "peer", "name", f"{device}p"])
        self._devices.append(device)
        run(["ip", "addr", "add", f"{self.server_ip}/32", "dev", device])
        run(["ip", "link", "set", device, "up"])
        run(["ip", "link", "set", f"{device}p", "up"])
        self._table = f"{PREFIX}{self.run_id}"
        run(["nft", "add", "table", "inet", self._table])
        run(["nft", "add", "chain", "inet", self._table, "out",
              "{ type filter hook output priority 0 ; }"])  # fmt: skip

    def add_link(self, name: str) -> Link:
        """A namespace for one viewer, its veth, an unshaped link (``Link.set_rate`` and
        ``set_loss`` shape it) and a Chromium wrapper."""
        index = len(self.links)
        if index >= 60:
            raise RigError("at most 60 links per run")
        namespace = f"{PREFIX}{self.run_id}-{name}"
        device = f"{DEVICE_PREFIX}{self.run_id}v{index}"
        base = f"10.78.{self.subnet}"
        gateway, address = f"{base}.{4 * index + 1}", f"{base}.{4 * index + 2}"
        run(["ip", "netns", "add", namespace])
        self._namespaces.append(namespace)
        run(["ip", "-n", namespace, "link", "set", "lo", "up"])
        run(["ip", "link", "add", device, "type", "veth", "peer", "name", "eth0",
              "netns", namespace])  # fmt: skip
        run(["ip", "addr", "add", f"{gateway}/30", "dev", device])
        run(["ip", "link", "set", device, "up"])
        run(["ip", "-n", namespace, "addr", "add", f"{address}/30", "dev", "eth0"])
        run(["ip", "-n", namespace, "link", "set", "eth0", "up"])
        run(["ip", "-n", namespace, "route", "add", "default", "via", gateway])
        # SFU → viewer: UDP through its own class (rate, bounded queue), the rest unlimited
        run(["tc", "qdisc", "add", "dev", device, "root", "handle", "1:", "htb",
              "default", "10"])  # fmt: skip
        for classid in ("1:10", _UDP_CLASS):
            run(["tc", "class", "add", "dev", device, "parent", "1:", "classid", classid,
                  "htb", "rate", _UNLIMITED, "quantum", "1514"])  # fmt: skip
        run(["tc", "qdisc", "add", "dev", device, "parent", _UDP_CLASS, "handle",
              _UDP_QUEUE, "bfifo", "limit", "1000000"])  # fmt: skip
        run(["tc", "filter", "add", "dev", device, "parent", "1:", "protocol", "ip",
              "prio", "1", "u32", "match", "ip", "protocol", "17", "0xff",
              "flowid", _UDP_CLASS])  # fmt: skip
        run(["nft", "add", "rule", "inet", self._table, "out", "oifname", device,
              "meta", "l4proto", "udp", "counter"])  # fmt: skip
        # viewer side: random loss of what reaches it (empty until set_loss)
        nft = ["ip", "netns", "exec", namespace, "nft"]
        run([*nft, "add", "table", "inet", PREFIX])
        run([*nft, "add", "chain", "inet", PREFIX, "loss",
              "{ type filter hook prerouting priority -300 ; }"])  # fmt: skip
        wrapper = self.workdir / f"chromium-{name}"
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {namespace} {CHROMIUM} "$@"\n')
        wrapper.chmod(0o755)
        link = Link(self, name, namespace, device, address, gateway, wrapper)
        self.links.append(link)
        return link

    def output_counter(self, device: str) -> tuple[int, int]:
        """(packets, bytes) of UDP the root namespace sent out of ``device``."""
        listed = subprocess.run(
            ["nft", "-j", "list", "chain", "inet", self._table, "out"],
            capture_output=True,
            text=True,
            check=True,
        )
        for item in json.loads(listed.stdout)["nftables"]:
            rule = item.get("rule")
            if rule is None:
                continue
            matches = [e["match"] for e in rule["expr"] if "match" in e]
            counters = [e["counter"] for e in rule["expr"] if "counter" in e]
            if counters and any(m.get("right") == device for m in matches):
                return int(counters[0]["packets"]), int(counters[0]["bytes"])
        raise RigError(f"no counter for {device}")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rig_namespaces() -> list[str]:
    return namespaces(PREFIX)


def _leftover_devices() -> list[str]:
    listed = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True)
    names = [link["ifname"] for link in json.loads(listed.stdout or "[]")]
    # the server's pair: <prefix><run>s (its peer goes with it)
    return [name for name in names if name.startswith(DEVICE_PREFIX) and name.endswith("s")]


def _leftover_tables() -> list[str]:
    listed = subprocess.run(["nft", "-j", "list", "tables"], capture_output=True, text=True)
    items = json.loads(listed.stdout or '{"nftables": []}')["nftables"]
    return [
        item["table"]["name"]
        for item in items
        if "table" in item and item["table"]["name"].startswith(PREFIX)
    ]


def _main(argv: Sequence[str]) -> int:
    command = argv[0] if argv else "status"
    if command == "down":
        for namespace in rig_namespaces():
            remove_namespace(namespace)
        for device in _leftover_devices():
            subprocess.run(["ip", "link", "del", device], capture_output=True)
        for table in _leftover_tables():
            subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)
        return 0
    if command == "status":
        for namespace in rig_namespaces():
            pids = subprocess.run(
                ["ip", "netns", "pids", namespace], capture_output=True, text=True
            ).stdout.split()
            print(f"{namespace}\tprocesses: {' '.join(pids) or '-'}")
        for device in _leftover_devices():
            print(f"{device}\tserver address device")
        for table in _leftover_tables():
            print(f"inet {table}\tnftables table")
        return 0
    print("usage: python -m tests.quality.rig down|status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
