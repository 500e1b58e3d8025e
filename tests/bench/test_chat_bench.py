"""``python -m bench --chat`` still runs (two small audiences, short windows), and its
report stays one paragraph."""

import datetime
import json
from pathlib import Path

import pytest

from bench import chat
from tests.bench.modules import run_module


def test_the_report_is_one_paragraph_with_rate_and_latency_per_audience() -> None:
    audience = chat.Audience(
        viewers=100,
        paced=chat.Phase.measured(50, 10.0, 0, [2.0, 3.0, 9.0]),
        saturated=chat.Phase.measured(1200, 10.0, 0, [40.0, 90.0], 0.98),
    )
    result = chat.ChatResult(plan=chat.FULL, audiences=[audience])
    text = chat.markdown(result, datetime.datetime(2026, 1, 1), "python -m bench")
    lines = text.splitlines()
    assert len(lines) == 2  # docs/BENCHMARKS.md stays under 200 lines
    assert lines[0] == chat.BEGIN
    assert lines[1].startswith("**Chat fan-out**")
    assert lines[1].endswith(chat.END)
    assert "100 viewers: **120 messages/s** (12,000 deliveries/s, daphne at 98% " in text
    assert "at 5 messages/s delivery latency **p50 3.0 ms, p99 9.0 ms**, none lost" in text


@pytest.mark.slow
def test_quick_chat_step_fans_every_message_out_to_every_viewer(tmp_path: Path) -> None:
    results = tmp_path / "chat.json"
    done = run_module(
        "bench",
        "--chat",
        "--quick",
        "--viewers",
        "3,10",
        "--window",
        "1",
        "--no-report",
        "--json",
        str(results),
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(results.read_text())
    assert document["errors"] == []
    audiences = document["summary"]["audiences"]
    assert [a["viewers"] for a in audiences] == [3, 10]
    for audience in audiences:
        assert audience["errors"] == []
        for phase in (audience["paced"], audience["saturated"]):
            assert phase["messages"] > 0, audience
            assert phase["lost"] == 0, audience
            assert phase["latency_ms_p50"] is not None
        assert audience["saturated"]["server_cpu"] > 0
