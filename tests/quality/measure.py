"""The quality table: one viewer's picture under each link condition, beside a healthy
viewer's, with what the SFU sent toward it and daphne's CPU. Prints a markdown table.

    flock /work/wt/heavy.lock .venv/bin/python -m tests.quality.measure
    .venv/bin/python -m tests.quality.measure --seconds 60 --warmup 40 --only "400 kbit/s"

Needs root (network namespaces, tc, nftables) and /usr/bin/chromium. The publisher is the
studio page (720p, 30 fps asked of Chromium's fake camera; with ``--simulcast``, three
encodings at ¼, ½ and full resolution) in the root namespace; the two
viewers are watch pages in their own namespaces (``tests.quality.rig``). After ``--warmup``
seconds (the publisher's bitrate climbs for a while after Go live), each condition is set
on the impaired viewer's link, left ``--settle`` seconds, then measured for ``--seconds``.

Columns: frames decoded per second; seconds frozen per minute (``totalFreezesDuration``)
and seconds in which no frame was decoded at all (a stalled picture whose freeze has not
ended is in the second figure only) and seconds with the page's "video paused" notice;
the mean jitter buffer delay; packets lost as the browser counts them (after NACK repair
this is what never arrived); retransmitted packets received per second; the decoded frame
height; the SFU's sends toward the viewer, counted in the root namespace before the
bottleneck (kbit/s, as a multiple of the healthy viewer's, which is the stream's rate) and
packets per second (and how many more than toward the healthy viewer: the resends), the
packets the bottleneck dropped per second (audio's small packets count too); daphne's CPU
over the window (the whole process, both viewers and the publisher).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.quality.rig import unavailable_reason
from tests.quality.session import Broadcast, Window


@dataclass(frozen=True)
class Condition:
    label: str
    rate_bits: float | None = None
    loss_percent: float = 0.0


CONDITIONS = (
    Condition("unconstrained"),
    Condition("5 % random loss", loss_percent=5),
    Condition("1 Mbit/s + 2 % loss", rate_bits=1_000_000, loss_percent=2),
    Condition("400 kbit/s", rate_bits=400_000),
    Condition("300 kbit/s", rate_bits=300_000),
)


def row(condition: Condition, impaired: Window, healthy: Window) -> str:
    """One condition's figures (see the module's docstring for the columns)."""
    ratio = impaired.link_kbps / healthy.link_kbps if healthy.link_kbps else float("nan")
    jitter = "-" if impaired.jitter_buffer_ms is None else f"{impaired.jitter_buffer_ms:.0f}"
    per_minute = 60 / impaired.seconds
    extra = impaired.link_packets_per_second - healthy.link_packets_per_second
    cells = [
        condition.label,
        f"{impaired.fps:.1f}",
        f"{impaired.freeze_seconds * per_minute:.1f} / {impaired.stalled_seconds * per_minute:.0f}"
        f" / {impaired.paused_seconds * per_minute:.0f}",
        jitter,
        f"{impaired.loss_percent:.1f}",
        f"{impaired.retransmitted_received / impaired.seconds:.1f}",
        str(impaired.frame_height),
        f"{impaired.link_kbps:.0f} ({ratio:.2f}x)",
        f"{impaired.link_packets_per_second:.0f} ({extra:+.0f})",
        f"{impaired.link_dropped_packets / impaired.seconds:.0f}",
        f"{healthy.fps:.1f}",
        f"{healthy.link_kbps:.0f}",
        f"{impaired.server_cpu_percent:.1f}",
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| impaired viewer's link | fps | frozen / no frame / paused s per min | jitter buffer ms"
    " | lost % | RTX recv/s | height | SFU → viewer kbit/s (x healthy) | sends/s (vs healthy)"
    " | dropped at link /s | healthy fps | healthy kbit/s | daphne CPU % |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.quality.measure")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured per condition")
    parser.add_argument("--warmup", type=float, default=40.0, help="after Go live")
    parser.add_argument("--settle", type=float, default=5.0, help="after each change")
    parser.add_argument("--queue-ms", type=float, default=300.0, help="bottleneck queue")
    parser.add_argument("--only", action="append", help="conditions to run (by label)")
    parser.add_argument("--simulcast", action="store_true", help="the studio sends three encodings")
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"quality rig unavailable: {reason}", file=sys.stderr)
        return 1
    conditions = [c for c in CONDITIONS if not args.only or c.label in args.only]
    workdir = Path(tempfile.mkdtemp(prefix="onair-quality-"))
    with Broadcast.start(workdir, simulcast=args.simulcast) as broadcast:
        broadcast.add_viewer("healthy")
        impaired = broadcast.add_viewer("impaired")
        broadcast.studio.wait_for_timeout(args.warmup * 1000)
        publisher = broadcast.publisher_stats()
        print(
            f"publisher: {broadcast.publisher_kbps():.0f} kbit/s video,"
            f" {publisher['frameHeight']:.0f}p, {publisher['layers']:.0f} encoding(s)",
            flush=True,
        )
        print(HEADER, flush=True)
        for condition in conditions:
            impaired.link.set_rate(condition.rate_bits, queue_seconds=args.queue_ms / 1000)
            impaired.link.set_loss(condition.loss_percent)
            broadcast.studio.wait_for_timeout(args.settle * 1000)
            series = broadcast.sample(args.seconds)
            windows = {name: Window.over(taken) for name, taken in series.items()}
            print(row(condition, windows["impaired"], windows["healthy"]), flush=True)
        impaired.link.set_rate(None)
        impaired.link.set_loss(0)
        print(f"\nserver log: {broadcast.server.log_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
