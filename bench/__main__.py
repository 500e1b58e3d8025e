"""``python -m bench``: viewers per core of OnAir, Janus and aiortc MediaRelay, side by side.

python -m bench                 # full run (≈ 15 minutes on 2 cores), updates docs/
python -m bench --quick         # ≈ 3 minutes, same report with fewer, shorter points
python -m bench --cluster       # the multi-core sweep instead: 1 vs 2 SFU workers (bench.cluster)
python -m bench --nack          # only the NACK-flood step (bench.nack; part of the full run)
python -m bench --simulcast     # only the simulcast step (bench.simulcast; part of the full run)
python -m bench --recording     # only the recording step (bench.recording; part of the full run)
python -m bench --chat          # only the chat fan-out step (bench.chat; part of the full run)
python -m bench --signaling     # only the join-rate step (bench.signaling; part of the full run)
python -m bench --flash-crowd   # only the flash-crowd step (bench.flash_crowd; in the full run)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import sys
import time
from pathlib import Path

import aiortc

import bench
from bench import janus, runner, source
from bench.measure import ServerResult

SERVERS = ("onair", "janus", "mediarelay")
FULL = {
    "onair": runner.Plan(
        viewers=[0, 20, 40, 60, 80],
        window=15.0,
        latency_at=(1, 100),
        decoded_joins=12,
        live_joins=12,
    ),
    "janus": runner.Plan(
        viewers=[0, 20, 40, 60, 80], window=15.0, latency_at=(1, 100), decoded_joins=12
    ),
    "mediarelay": runner.Plan(viewers=[0, 1, 2, 3, 4], window=15.0, decoded_joins=4),
}
QUICK = {
    "onair": runner.Plan(
        viewers=[0, 10, 20],
        window=4.0,
        latency_at=(1, 20),
        trace_keyframe_intervals=1,
        decoded_joins=2,
        live_joins=3,
    ),
    "janus": runner.Plan(
        viewers=[0, 10, 20],
        window=4.0,
        latency_at=(1, 20),
        trace_keyframe_intervals=1,
        decoded_joins=2,
    ),
    "mediarelay": runner.Plan(viewers=[0, 1, 2], window=4.0, decoded_joins=2),
}


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _onair_version() -> str | None:
    """OnAir's SFU, or None while ``sfu.Router`` does not exist yet."""
    if importlib.util.find_spec("sfu") is None:
        return None
    import sfu
    from sfu import native

    # the server inherits this environment
    loop = "C" if native.available() and bench.native_forwarding() else "Python"
    ice = "one UDP port" if bench.udp_mux_port() else "a UDP socket per viewer"
    if not hasattr(sfu, "Router"):
        return None
    return f"OnAir sfu (this tree, {loop} forwarding loop, {ice})"


def _version(name: str) -> str | None:
    if name == "janus":
        try:
            return janus.ensure_installed()
        except janus.JanusUnavailable as exc:
            _progress(f"[janus] skipped: {exc}")
            return None
    if name == "mediarelay":
        return f"aiortc {aiortc.__version__} MediaRelay"
    return _onair_version()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter points")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset")
    parser.add_argument("--viewers", help="override the audience sizes, e.g. 0,2")
    parser.add_argument("--window", type=float, help="override the steady window (seconds)")
    parser.add_argument(
        "--json", type=Path, help="results file (default bench/results/<time>.json)"
    )
    parser.add_argument(
        "--no-report", action="store_true", help="skip docs/BENCHMARKS.md and plots"
    )
    parser.add_argument(
        "--signaling",
        action="store_true",
        help="only the join-rate step: WebSocket and WHEP joins per core-second of daphne",
    )
    parser.add_argument("--no-signaling", action="store_true", help="skip the join-rate step")
    parser.add_argument(
        "--cluster", action="store_true", help="the 1 vs 2 SFU workers sweep (bench.cluster)"
    )
    parser.add_argument(
        "--nack",
        action="store_true",
        help="only the NACK-flood step: a flooding viewer's CPU against a normal one's",
    )
    parser.add_argument("--no-nack", action="store_true", help="skip the NACK-flood step")
    parser.add_argument(
        "--simulcast",
        action="store_true",
        help="only the simulcast step: viewers/core with a 3-layer source, layer switch time",
    )
    parser.add_argument("--no-simulcast", action="store_true", help="skip the simulcast step")
    parser.add_argument(
        "--recording",
        action="store_true",
        help="only the recording step: a recording's CPU and bytes/s beside forwarding's",
    )
    parser.add_argument("--no-recording", action="store_true", help="skip the recording step")
    parser.add_argument(
        "--chat",
        action="store_true",
        help="only the chat step: messages/s one daphne fans out to N viewers, latency",
    )
    parser.add_argument("--no-chat", action="store_true", help="skip the chat step")
    parser.add_argument(
        "--flash-crowd",
        action="store_true",
        help="only the flash-crowd step: 1,000 viewers joining within 5 s, while 20 watch",
    )
    parser.add_argument("--no-flash-crowd", action="store_true", help="skip the flash-crowd step")
    parser.add_argument(
        "--repetitions", type=int, help="the recording step: recordings measured per codec"
    )
    args = parser.parse_args(argv)
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.cluster:
        from bench import cluster

        return cluster.main(
            args.quick,
            _progress,
            command,
            report=not args.no_report,
            viewers=[int(n) for n in args.viewers.split(",")] if args.viewers else None,
            window=args.window,
            json_path=args.json,
        )

    if args.nack:
        from bench import nack

        return nack.main(
            args.quick,
            _progress,
            command.strip(),
            report=not args.no_report,
            json_path=args.json,
            window=args.window,
        )

    if args.simulcast:
        from bench import simulcast

        return simulcast.main(
            args.quick,
            _progress,
            command.strip(),
            report=not args.no_report,
            json_path=args.json,
            viewers=[int(n) for n in args.viewers.split(",")] if args.viewers else None,
            window=args.window,
        )

    if args.recording:
        from bench import recording

        return recording.main(
            args.quick,
            _progress,
            command.strip(),
            report=not args.no_report,
            json_path=args.json,
            viewers=max(int(n) for n in args.viewers.split(",")) if args.viewers else None,
            window=args.window,
            repetitions=args.repetitions,
        )

    if args.signaling:
        from bench import signaling

        return signaling.main(
            args.quick,
            _progress,
            command.strip(),
            report=not args.no_report,
            json_path=args.json,
            window=args.window,
        )

    if args.chat:
        from bench import chat

        return chat.main(
            args.quick,
            _progress,
            command.strip(),
            report=not args.no_report,
            json_path=args.json,
            viewers=[int(n) for n in args.viewers.split(",")] if args.viewers else None,
            window=args.window,
        )

    if args.flash_crowd:
        from bench import flash_crowd

        return flash_crowd.main(
            args.quick,
            _progress,
            command.strip(),
            report=not args.no_report,
            json_path=args.json,
            viewers=int(args.viewers) if args.viewers else None,
        )

    plans = QUICK if args.quick else FULL
    spec = source.SourceSpec()
    started = time.monotonic()
    _progress(f"source: {spec.describe()}")
    source.encoded_file(spec)

    results: list[ServerResult] = []
    for name in args.servers.split(","):
        version = _version(name)
        if version is None:
            results.append(ServerResult(name=name, version="", error="not available"))
            _progress(f"[{name}] not available: skipped")
            continue
        plan = plans[name]
        if args.viewers:
            viewers = [int(n) for n in args.viewers.split(",")]
            latency_at = (max(viewers),) if plan.latency_at else ()
            plan = dataclasses.replace(plan, viewers=viewers, latency_at=latency_at)
        if args.window:
            plan = dataclasses.replace(plan, window=args.window)
        _progress(f"[{name}] {version}: N = {plan.viewers}, {plan.window:.0f} s windows")
        results.append(runner.run_server(name, version, plan, spec, _progress))

    from bench import report

    when = datetime.datetime.now(datetime.UTC)
    path = report.write_json(results, spec, when, command, args.json)
    _progress(f"results: {path}")
    if not args.no_report:
        for written in report.write_docs(results, spec, when, command.strip()):
            _progress(f"wrote {written}")
    nack_failed = False
    if not args.no_nack and "onair" in args.servers.split(",") and _onair_version():
        from bench import nack

        nack_failed = bool(
            nack.main(args.quick, _progress, command.strip(), report=not args.no_report)
        )
    simulcast_failed = False
    if not args.no_simulcast and "onair" in args.servers.split(",") and _onair_version():
        from bench import simulcast

        simulcast_failed = bool(
            simulcast.main(args.quick, _progress, command.strip(), report=not args.no_report)
        )
    recording_failed = False
    if not args.no_recording and "onair" in args.servers.split(",") and _onair_version():
        from bench import recording

        recording_failed = bool(
            recording.main(args.quick, _progress, command.strip(), report=not args.no_report)
        )
    signaling_failed = False
    if not args.no_signaling:
        from bench import signaling

        signaling_failed = bool(
            signaling.main(args.quick, _progress, command.strip(), report=not args.no_report)
        )
    chat_failed = False
    if not args.no_chat:
        from bench import chat

        chat_failed = bool(
            chat.main(args.quick, _progress, command.strip(), report=not args.no_report)
        )
    crowd_failed = False
    if not args.no_flash_crowd and "onair" in args.servers.split(",") and _onair_version():
        from bench import flash_crowd

        crowd_failed = bool(
            flash_crowd.main(args.quick, _progress, command.strip(), report=not args.no_report)
        )
    _progress(f"done in {time.monotonic() - started:.0f} s")
    ok = (
        all(r.error in (None, "not available") for r in results)
        and not nack_failed
        and not simulcast_failed
        and not recording_failed
        and not signaling_failed
        and not chat_failed
        and not crowd_failed
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
