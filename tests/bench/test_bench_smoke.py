"""The benchmark harness still runs: one very short point per server, as a subprocess.

The bench is never imported here; it runs as ``python -m bench`` exactly as ``make bench``
does, with two viewers and one-second windows (and, for OnAir, the quick plan's few decoding
viewers joining a live encoder). The NACK-flood, simulcast, recording, chat and join-rate
steps each have a smoke test of their own (here, test_recording_bench.py, test_chat_bench.py
and test_signaling_bench.py), so the servers' point runs without them.
"""

import json
from pathlib import Path

import pytest

from tests.bench.modules import run_module

pytestmark = pytest.mark.slow


def test_quick_point_measures_every_available_server(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    done = run_module(
        "bench",
        "--quick",
        "--servers",
        "onair,janus",
        "--viewers",
        "0,2",
        "--window",
        "1",
        "--no-report",
        "--no-nack",
        "--no-simulcast",
        "--no-recording",
        "--no-chat",
        "--no-signaling",
        "--json",
        str(results),
        timeout=240,
    )
    if "[janus] skipped" in done.stderr:
        pytest.skip("janus cannot be installed here")
    assert done.returncode == 0, done.stderr[-3000:]

    servers = {s["name"]: s for s in json.loads(results.read_text())["servers"]}
    assert servers["janus"]["error"] is None
    measured = [s for s in servers.values() if s["error"] != "not available"]
    for server in measured:
        assert server["error"] is None, server
        last = server["points"][-1]
        assert last["viewers"] == 2
        assert last["connected"] == 2
        assert last["never_connected"] == 0
        assert min(last["viewer_pps"]) > 100, last
        assert server["summary"]["cpu_per_viewer"] is not None
        (latency,) = server["latency"]
        assert latency["samples"] > 100, latency
        assert 0 < latency["p50_ms"] < 1000, latency
    onair = servers["onair"]
    if onair["error"] is None:
        # The server timed its batches forwarded to every viewer while the latency was traced.
        (latency,) = onair["latency"]
        fanout = {f["kind"]: f for f in latency["fanout"]}
        assert set(fanout) == {"audio", "video"}, latency
        assert all(f["batches"] > 10 and 0 < f["p50_ms"] <= f["max_ms"] for f in fanout.values())
        # The live encoder that answers keyframe requests: decoding viewers got a frame.
        live = {key: value for key, value in onair.items() if key.startswith("live")}
        assert onair["live_join_error"] is None, (live, done.stderr[-3000:])
        assert [ms for ms in onair["live_join_ms"] if ms is not None], (live, done.stderr[-3000:])
        assert onair["live_keyframe_requests"] >= 1, live


def test_the_simulcast_step_measures_both_sources_and_a_layer_switch(tmp_path: Path) -> None:
    results = tmp_path / "simulcast.json"
    done = run_module(
        "bench", "--simulcast", "--quick", "--viewers", "0,2", "--window", "1", "--no-report",
        "--json", str(results), timeout=240,
    )  # fmt: skip
    document = json.loads(results.read_text())
    assert done.returncode == 0, (document["errors"], done.stderr[-3000:])
    for source in ("single", "simulcast"):
        last = document[source]["points"][-1]
        assert last["connected"] == 2, (source, last)
        assert min(last["viewer_pps"]) > 100, (source, last)
    assert set(document["layer_kbps"]) == {"q", "h", "f"}
    assert sum(document["viewers_on"].values()) == 2
    assert len(document["switch_ms"]) == 1
    if document["switch_skipped"] is None:
        assert document["switch_ms"][0] is not None


def test_the_nack_flood_step_measures_a_flooder_against_normal_viewers(tmp_path: Path) -> None:
    results = tmp_path / "nack.json"
    done = run_module(
        "bench",
        "--nack",
        "--quick",
        "--window",
        "1",
        "--no-report",
        "--json",
        str(results),
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(results.read_text())
    assert document["errors"] == []
    windows = {(w["server"], w["normal"], w["flooders"]) for w in document["windows"]}
    assert windows == {
        ("budget", 0, 0),
        ("budget", 10, 0),
        ("budget", 10, 2),
        ("unlimited", 10, 0),
        ("unlimited", 10, 1),
    }
    for window in document["windows"]:
        if window["flooders"]:
            assert window["nacks_per_second"] > 1000, window
            assert window["retransmitted_per_second"] > 0, window
    assert document["summary"]["flooder_ratio"] is not None
