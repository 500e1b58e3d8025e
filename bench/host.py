"""This machine: its address for ICE, core pinning, and a process's CPU time and memory."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

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
    """CPU time (user + system, all threads) and resident memory of one process.

    ``cpu_seconds`` comes from ``/proc/PID/stat`` in clock ticks (10 ms), and counts threads
    that have exited. ``thread_ns`` is each live thread's on-CPU time from the scheduler in
    nanoseconds: a one-second window of a process that uses 0.3 % of a core is zero ticks, but
    three million nanoseconds.
    """

    at: float
    cpu_seconds: float
    rss_bytes: int
    thread_ns: dict[int, int] = field(default_factory=dict)


def _thread_runtimes(pid: int) -> dict[int, int]:
    runtimes: dict[int, int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return runtimes
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as schedstat:
                runtimes[int(tid)] = int(schedstat.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended between the listing and the read
    return runtimes


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
        thread_ns=_thread_runtimes(pid),
    )


def cpu_fraction(start: ProcSample, end: ProcSample) -> float:
    """Share of one core used between two samples.

    Summed per thread from the scheduler's nanosecond counters when every thread of the first
    sample is still there (a thread started in between counts from zero); when one has ended,
    its time is only in the clock ticks, so those are used.
    """
    seconds = end.at - start.at
    if start.thread_ns and set(start.thread_ns) <= set(end.thread_ns):
        used = sum(ns - start.thread_ns.get(tid, 0) for tid, ns in end.thread_ns.items())
        return used / 1e9 / seconds
    return (end.cpu_seconds - start.cpu_seconds) / seconds


def machine() -> dict[str, str]:
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu_model": model, "cores": str(os.cpu_count()), "kernel": os.uname().release}
