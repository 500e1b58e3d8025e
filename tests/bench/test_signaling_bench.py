"""``python -m bench --signaling`` still runs (both join paths, a short window), and its
report stays one paragraph."""

import datetime
import json
from pathlib import Path

import pytest

from bench import signaling
from tests.bench.modules import run_module


def _result(tree: str, path: str, joins: int, cpu: float) -> signaling.SignalingResult:
    return signaling.SignalingResult(
        tree=tree, path=path, clients=8, seconds=10.0, joins=joins, failures=0,
        server_cpu=cpu, join_ms_p50=30.0, join_ms_p95=50.0,
    )  # fmt: skip


def test_the_report_is_one_paragraph_with_both_paths_before_and_after() -> None:
    run = signaling.SignalingRun(
        plan=signaling.FULL,
        results=[
            _result("before", "websocket", 1000, 0.9),
            _result("before", "whep", 700, 0.9),
            _result("this tree", "websocket", 2000, 0.8),
            _result("this tree", "whep", 2400, 0.8),
        ],
    )
    text = signaling.markdown(run, datetime.datetime(2026, 1, 1), "python -m bench")
    lines = text.splitlines()
    assert len(lines) == 2  # docs/BENCHMARKS.md stays under 200 lines
    assert lines[0] == signaling.BEGIN
    assert lines[1].endswith(signaling.END)
    assert "WebSocket **250** (200/s at 80% of its core; join p50 30 ms, p95 50 ms)" in text
    assert "WHEP **300**" in text
    before = text.split("before the per-join work", 1)[1]
    assert "WebSocket **111**" in before
    assert "WHEP **78**" in before


def test_each_whep_join_offers_its_own_credentials_and_fingerprint() -> None:
    offer = (
        "v=0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef012345\r\n"
        "a=fingerprint:sha-256 " + ":".join(["AA"] * 32) + "\r\n"
    )
    first, second = signaling._client_offer(offer), signaling._client_offer(offer)
    assert first != second
    for changed in (first, second):
        assert "a=ice-ufrag:abcd" not in changed
        assert "a=ice-pwd:0123456789abcdef012345" not in changed
        assert ":".join(["AA"] * 32) not in changed
        assert changed.count("a=fingerprint:sha-256 ") == 1


@pytest.mark.slow
def test_quick_signaling_step_joins_by_websocket_and_whep(tmp_path: Path) -> None:
    results = tmp_path / "signaling.json"
    done = run_module(
        "bench", "--signaling", "--quick", "--window", "1", "--no-report", "--json",
        str(results), timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(results.read_text())
    assert document["errors"] == []
    measured = {(r["tree"], r["path"]): r for r in document["summary"]["results"]}
    assert set(measured) == {("this tree", "websocket"), ("this tree", "whep")}
    for result in measured.values():
        assert result["joins"] > 0, result
        assert result["failures"] == 0, result
        assert result["server_cpu"] > 0, result
