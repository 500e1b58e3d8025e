"""This machine: its address for ICE, core pinning, and a process's CPU time and memory."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import aioice.ice

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def host_address() -> str:
    """The IPv4 address aiortc gathers as its host candidate (it never offers loopback).

    Traffic between this machine's own address and itself never leaves the machine.
    """
    addresses = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
    if not addresses:
        raise RuntimeError("no non-loopback IPv4 address for ICE on this machine")
    return addresses[0]


def local_addresses() -> set[str]:
    return {"127.0.0.1", *aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)}


def cores() -> tuple[int, int]:
    """(server core, load core): the server under test and the load generator never share."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        raise RuntimeError("the benchmark needs two cores: one for the server, one for the load")
    return available[0], available[1]


def pin(core: int) -> None:
    """Pin the calling process (for use as a ``preexec_fn``)."""
    os.sched_setaffinity(0, {core})


@dataclass(frozen=True)
class ProcSample:
    """CPU seconds (user + system, all threads) and resident memory of one process."""

    at: float
    cpu_seconds: float
    rss_bytes: int


def sample(pid: int) -> ProcSample:
    with open(f"/proc/{pid}/stat") as stat:
        # The command name may contain spaces: fields are counted after its closing ")".
        fields = stat.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    rss_pages = int(fields[21])
    return ProcSample(
        at=time.monotonic(),
        cpu_seconds=(utime + stime) / CLOCK_TICKS,
        rss_bytes=rss_pages * PAGE_SIZE,
    )


def cpu_fraction(start: ProcSample, end: ProcSample) -> float:
    """Share of one core used between two samples."""
    return (end.cpu_seconds - start.cpu_seconds) / (end.at - start.at)


def machine() -> dict[str, str]:
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu_model": model, "cores": str(os.cpu_count()), "kernel": os.uname().release}
