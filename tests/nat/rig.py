"""A NAT test rig: network namespaces, veth pairs, iptables NAT routers and a coturn.

    python -m tests.nat.rig up       # build it, print the layout, leave it running
    python -m tests.nat.rig status   # list this machine's rig namespaces and processes
    python -m tests.nat.rig down     # remove every rig namespace, even of a crashed run

Layout (every address exists only inside namespaces created here)::

    "internet": bridge in <run>-inet, 100.64.0.0/24, drops what is not for 100.64.0.0/24
      ├── turn        100.64.0.3   coturn, use-auth-secret, UDP+TCP 3478
      ├── none        100.64.0.50  a client with a public address
      ├── r-cone      100.64.0.11 ─ 10.201.11.0/24 ─ cone   10.201.11.2
      ├── r-prc       100.64.0.12 ─ 10.201.12.0/24 ─ prc    10.201.12.2
      ├── r-sym       100.64.0.13 ─ 10.201.13.0/24 ─ sym    10.201.13.2
      ├── r-cloud     100.64.0.10 ─ 10.201.10.0/24 ─ cloud  10.201.10.2  SFU, 1:1 NAT
      └── r-home      100.64.0.20 ─ 10.201.20.0/24 ─ home   10.201.20.2  SFU, port-restricted

The NAT behaviours (RFC 4787 terms: mapping / filtering):

* ``none``: no NAT.
* ``cone`` (full cone: endpoint-independent mapping and filtering). Linux has no full-cone
  NAT in tree; for a single inside host it is exact to combine source NAT, which keeps the
  inside port when it is free (always, with one host), with a DNAT of every inbound UDP
  packet to that host (a "DMZ host"): ``wan:P`` maps to ``host:P`` for every remote.
* ``prc`` (port-restricted cone): plain ``MASQUERADE``. Conntrack keeps the source port, so
  the mapping is endpoint-independent in practice, and only replies to a flow pass.
* ``sym`` (symmetric): ``MASQUERADE --random-fully``: a random port per destination.
* ``1:1`` (cloud VM): ``DNAT``/``SNAT`` between one public and one private address.
* The restricted cone (address-restricted filtering) is not modelled.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from tests.netns import NamespaceRig, RigError, namespaces, remove_namespace, run

PREFIX = "onairnat"
TURN_IP = "100.64.0.3"
TURN_PORT = 3478
TURN_REALM = "onair.test"
PUBLIC_NET = "100.64.0"
INTERNET_GATEWAY = f"{PUBLIC_NET}.1"
_PACKAGES = {"turnserver": "coturn", "iptables": "iptables"}


class Nat(StrEnum):
    NONE = "none"
    FULL_CONE = "cone"
    PORT_RESTRICTED = "prc"
    SYMMETRIC = "sym"
    ONE_TO_ONE = "1:1"


@dataclass(frozen=True)
class Site:
    """A host and, unless ``nat`` is ``NONE``, the router in front of it."""

    name: str
    nat: Nat
    wan_ip: str
    lan_index: int = 0

    @property
    def host_ip(self) -> str:
        return self.wan_ip if self.nat is Nat.NONE else f"10.201.{self.lan_index}.2"

    @property
    def gateway_ip(self) -> str:
        return f"10.201.{self.lan_index}.1"


CLIENT_SITES = (
    Site("none", Nat.NONE, f"{PUBLIC_NET}.50"),
    Site("cone", Nat.FULL_CONE, f"{PUBLIC_NET}.11", 11),
    Site("prc", Nat.PORT_RESTRICTED, f"{PUBLIC_NET}.12", 12),
    Site("sym", Nat.SYMMETRIC, f"{PUBLIC_NET}.13", 13),
)
SERVER_SITES = (
    Site("cloud", Nat.ONE_TO_ONE, f"{PUBLIC_NET}.10", 10),
    Site("home", Nat.PORT_RESTRICTED, f"{PUBLIC_NET}.20", 20),
)
TURN_SITE = Site("turn", Nat.NONE, TURN_IP)


def unavailable_reason() -> str | None:
    """Why the rig cannot run here, or ``None``. Installs coturn/iptables when missing."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "the NAT rig needs root (network namespaces, iptables)"
    if shutil.which("ip") is None:
        return "iproute2 ('ip') is not installed"
    _install_missing_packages()
    probe = f"{PREFIX}probe{os.getpid()}"
    created = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if created.returncode != 0:
        return f"cannot create a network namespace: {created.stderr.strip()}"
    try:
        nat = subprocess.run(
            ["ip", "netns", "exec", probe, "iptables", "-t", "nat", "-L", "-n"],
            capture_output=True,
            text=True,
        )
        if nat.returncode != 0:
            return f"iptables NAT is unavailable in a namespace: {nat.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _install_missing_packages() -> None:
    missing = sorted(pkg for tool, pkg in _PACKAGES.items() if shutil.which(tool) is None)
    if not missing or shutil.which("apt-get") is None:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *missing], check=True, env=env, capture_output=True
    )


@dataclass
class Rig(NamespaceRig):
    """One run's namespaces and daemons. Use as a context manager, or ``up()``/``down()``."""

    run_id: str = field(default_factory=lambda: f"{os.getpid()}")
    turn_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="onair-nat-")))
    _namespaces: list[str] = field(default_factory=list)
    _daemons: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def ns(self, node: str) -> str:
        return f"{PREFIX}{self.run_id}-{node}"

    def exec_argv(self, node: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``node``'s namespace."""
        return ["ip", "netns", "exec", self.ns(node), *argv]

    def down(self) -> None:
        for daemon in self._daemons:
            if daemon.poll() is None:
                daemon.terminate()
        for daemon in self._daemons:
            try:
                daemon.wait(timeout=5)
            except subprocess.TimeoutExpired:
                daemon.kill()
        self._daemons.clear()
        for namespace in reversed(self._namespaces):
            remove_namespace(namespace)
        self._namespaces.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)
        atexit.unregister(self.down)

    def _build(self) -> None:
        self._add_namespace("inet")
        self._ip("inet", "link", "add", "br0", "type", "bridge")
        self._ip("inet", "link", "set", "br0", "up")
        # The "internet" routes nothing anywhere: packets to other (private) networks are
        # dropped silently, as on the real one. Without a route, senders got an error instead,
        # and coturn closes an allocation when relaying to a peer's private host candidate fails.
        self._ip("inet", "addr", "add", f"{INTERNET_GATEWAY}/24", "dev", "br0")
        self._ip("inet", "route", "add", "blackhole", "default")
        run(self.exec_argv("inet", ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]))
        for site in (TURN_SITE, *CLIENT_SITES, *SERVER_SITES):
            self._add_site(site)
        self._start_coturn()

    def _add_namespace(self, node: str) -> None:
        namespace = self.ns(node)
        run(["ip", "netns", "add", namespace])
        self._namespaces.append(namespace)
        self._ip(node, "link", "set", "lo", "up")

    def _ip(self, node: str, *args: str) -> None:
        run(["ip", "-n", self.ns(node), *args])

    def _iptables(self, node: str, *args: str) -> None:
        run(self.exec_argv(node, ["iptables", "-w", *args]))

    def _plug(self, node: str, device: str, address: str, *, peer: str, peer_device: str) -> None:
        self._ip(
            node, "link", "add", device, "type", "veth", "peer", "name", peer_device,
            "netns", self.ns(peer),
        )  # fmt: skip
        self._ip(node, "addr", "add", address, "dev", device)
        self._ip(node, "link", "set", device, "up")
        self._ip(peer, "link", "set", peer_device, "up")

    def _add_site(self, site: Site) -> None:
        outside = site.name if site.nat is Nat.NONE else f"r-{site.name}"
        self._add_namespace(outside)
        self._plug(outside, "wan", f"{site.wan_ip}/24", peer="inet", peer_device=f"v-{outside}")
        self._ip("inet", "link", "set", f"v-{outside}", "master", "br0")
        self._ip(outside, "route", "add", "default", "via", INTERNET_GATEWAY)
        if site.nat is Nat.NONE:
            return
        self._add_namespace(site.name)
        self._plug(outside, "lan", f"{site.gateway_ip}/24", peer=site.name, peer_device="eth0")
        self._ip(site.name, "addr", "add", f"{site.host_ip}/24", "dev", "eth0")
        self._ip(site.name, "route", "add", "default", "via", site.gateway_ip)
        run(self.exec_argv(outside, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]))
        self._add_nat(outside, site)

    def _add_nat(self, router: str, site: Site) -> None:
        nat = ("-t", "nat")
        if site.nat is Nat.FULL_CONE:
            self._iptables(router, *nat, "-A", "POSTROUTING", "-o", "wan", "-j", "SNAT",
                           "--to-source", site.wan_ip)  # fmt: skip
            self._iptables(router, *nat, "-A", "PREROUTING", "-i", "wan", "-p", "udp", "-j",
                           "DNAT", "--to-destination", site.host_ip)  # fmt: skip
        elif site.nat is Nat.PORT_RESTRICTED:
            self._iptables(router, *nat, "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE")
        elif site.nat is Nat.SYMMETRIC:
            self._iptables(router, *nat, "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE",
                           "--random-fully")  # fmt: skip
        elif site.nat is Nat.ONE_TO_ONE:
            self._iptables(router, *nat, "-A", "PREROUTING", "-i", "wan", "-d", site.wan_ip,
                           "-j", "DNAT", "--to-destination", site.host_ip)  # fmt: skip
            self._iptables(router, *nat, "-A", "POSTROUTING", "-o", "wan", "-s", site.host_ip,
                           "-j", "SNAT", "--to-source", site.wan_ip)  # fmt: skip
        # Filtering for the NATs that have it: only flows the inside started come back in.
        if site.nat in (Nat.PORT_RESTRICTED, Nat.SYMMETRIC):
            self._iptables(router, "-A", "FORWARD", "-i", "wan", "-m", "conntrack",
                           "!", "--ctstate", "ESTABLISHED,RELATED", "-j", "DROP")  # fmt: skip

    def _start_coturn(self) -> None:
        config = self.workdir / "turnserver.conf"
        config.write_text(
            "\n".join(
                [
                    f"listening-ip={TURN_IP}",
                    f"relay-ip={TURN_IP}",
                    f"listening-port={TURN_PORT}",
                    "min-port=49152",
                    "max-port=49999",
                    "use-auth-secret",
                    f"static-auth-secret={self.turn_secret}",
                    f"realm={TURN_REALM}",
                    "fingerprint",
                    "no-tls",
                    "no-dtls",
                    "no-cli",
                    "allow-loopback-peers",
                    "no-software-attribute",
                    f"pidfile={self.workdir / 'turnserver.pid'}",
                    f"log-file={self.workdir / 'turnserver.log'}",
                    f"userdb={self.workdir / 'turndb'}",
                    "simple-log",
                    "",
                ]
            )
        )
        config.chmod(0o600)
        daemon = subprocess.Popen(
            self.exec_argv("turn", ["turnserver", "-c", str(config)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._daemons.append(daemon)
        deadline = time.monotonic() + 10
        while not self._listening("turn", TURN_PORT):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RigError(f"coturn did not start; see {self.workdir / 'turnserver.log'}")
            time.sleep(0.05)

    def _listening(self, node: str, port: int) -> bool:
        sockets = subprocess.run(
            self.exec_argv(node, ["ss", "-H", "-lun", f"sport = :{port}"]),
            capture_output=True,
            text=True,
        )
        return bool(sockets.stdout.strip())

    def coturn_log(self) -> str:
        path = self.workdir / "turnserver.log"
        return path.read_text(errors="replace") if path.exists() else ""


def rig_namespaces() -> list[str]:
    return namespaces(PREFIX)


def _main(argv: Sequence[str]) -> int:
    command = argv[0] if argv else "status"
    if command == "up":
        reason = unavailable_reason()
        if reason is not None:
            print(f"NAT rig unavailable: {reason}", file=sys.stderr)
            return 1
        rig = Rig(run_id="cli")
        rig.up()
        atexit.unregister(rig.down)  # the CLI leaves the rig running until "down"
        print(json.dumps({"namespaces": rig._namespaces, "turn": f"{TURN_IP}:{TURN_PORT}"}))
        return 0
    if command == "down":
        for namespace in rig_namespaces():
            remove_namespace(namespace)
        return 0
    if command == "status":
        for namespace in rig_namespaces():
            pids = subprocess.run(
                ["ip", "netns", "pids", namespace], capture_output=True, text=True
            ).stdout.split()
            print(f"{namespace}\tprocesses: {' '.join(pids) or '-'}")
        return 0
    print("usage: python -m tests.nat.rig up|down|status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
