"""The multi-core sweep still runs: two viewers on one worker, then split over two.

Run as ``python -m bench --cluster`` exactly as documented, with one-second windows.
"""

import json
from pathlib import Path

import pytest

from tests.bench.modules import run_module

pytestmark = pytest.mark.slow


def test_quick_cluster_sweep_pipes_the_broadcast_to_the_edge(tmp_path: Path) -> None:
    results = tmp_path / "cluster.json"
    done = run_module(
        "bench",
        "--cluster",
        "--quick",
        "--viewers",
        "0,2",
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
    points = {(p["workers"], p["viewers"]): p for p in document["points"]}
    assert set(points) == {(1, 0), (1, 2), (2, 0), (2, 2)}
    assert (points[1, 2]["on_origin"], points[1, 2]["on_edge"]) == (2, 0)
    assert (points[2, 2]["on_origin"], points[2, 2]["on_edge"]) == (1, 1)
    for key in ((2, 0), (2, 2)):
        assert points[key]["pipe_pps"] > 100, points[key]
        assert points[key]["edge_cpu"] > 0, points[key]
    for key in ((1, 2), (2, 2)):
        assert points[key]["never_connected"] == 0, points[key]
        assert points[key]["median_pps"] > 100, points[key]
