"""``python -m bench --flash-crowd`` still runs (a small crowd, short windows), and its report
stays one line."""

import dataclasses
import datetime
import json
from pathlib import Path

import pytest

from bench import flash_crowd
from tests.bench.modules import run_module


def test_the_report_is_one_line_with_the_crowd_and_the_watchers() -> None:
    plan = flash_crowd.FULL
    run = flash_crowd.CrowdResult(
        plan=dataclasses.replace(plan, crowd=4),
        join_concurrency=8,
        requested_seconds=4.9,
        keyframe_seconds=[0.5, 1.0, 2.0],
        join_ms=[400.0, 600.0, 900.0],
        answer_ms=[50.0, 80.0, 90.0],
        failures={"503 join_queue_full": 1},
        before=flash_crowd.Window(6.0, 1000, 0.5, 1.2, 15.0, 15.0),
        during=flash_crowd.Window(2.0, 300, 0.7, 2.5, 14.9, 15.0),
        after=flash_crowd.Window(6.0, 1000, 0.6, 1.4, 15.0, 15.0),
        loop_lag_max_seconds=0.025,
        loop_lag_samples=10,
    )
    unqueued = dataclasses.replace(run, join_concurrency=0, failures={})
    result = flash_crowd.FlashCrowd([run, unqueued])
    text = flash_crowd.markdown(result, datetime.datetime(2026, 1, 1), "python -m bench")
    assert len(text.splitlines()) == 1  # docs/BENCHMARKS.md stays under 200 lines
    assert text.startswith(flash_crowd.BEGIN)
    assert text.endswith(flash_crowd.END)
    assert "50 % after **1.0 s**, 95 % after **not reached**" in text
    assert "**1 failed** (1 503 join_queue_full)" in text
    assert "p99 **1.2 ms before, 2.5 ms during the crowd**, 1.4 ms once it was in" in text
    assert "a 0.5 s timer up to ≤ 25 ms late (0 of 10 over 100 ms)" in text
    assert "The same without the queue (`ONAIR_JOIN_CONCURRENCY=0`)" in text
    assert "**0 failed**" in text


@pytest.mark.slow
def test_quick_flash_crowd_every_viewer_gets_a_keyframe(tmp_path: Path) -> None:
    results = tmp_path / "crowd.json"
    done = run_module(
        "bench",
        "--flash-crowd",
        "--quick",
        "--viewers",
        "12",
        "--no-report",
        "--json",
        str(results),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(results.read_text())
    (run,) = document["runs"]
    assert run["errors"] == []
    (summary,) = document["summary"]["runs"]
    assert summary["failed"] == 0, summary["failures"]
    assert summary["first_keyframe_seconds"]["100"] is not None
    for window in (summary["before"], summary["during"], summary["after"]):
        assert window["packets"] > 0
        assert window["latency_ms_p99"] is not None
