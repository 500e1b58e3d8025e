"""The multi-core sweep's arithmetic: slopes, scaling efficiency, the pipe's fixed cost."""

import pytest

from bench.cluster import ClusterPoint, ClusterResult


def _point(workers: int, viewers: int, cpu: float, edge_cpu: float = 0.0) -> ClusterPoint:
    return ClusterPoint(
        workers=workers,
        round=0,
        viewers=viewers,
        on_origin=viewers,
        on_edge=0,
        never_connected=0,
        seconds=10.0,
        origin_cpu=cpu,
        edge_cpu=edge_cpu,
        load_cpu=0.2,
        core_busy=[0.3, 0.4],
        loadavg=1.0,
        median_pps=210.0 if viewers else None,
        source_pps=210.0,
        pipe_pps=210.0 if workers == 2 else None,
    )


def test_efficiency_is_one_worker_cost_over_two_workers_cost() -> None:
    result = ClusterResult(
        points=[
            _point(1, 0, 0.04),
            _point(1, 40, 0.24),
            _point(2, 0, 0.05, edge_cpu=0.02),
            _point(2, 40, 0.30, edge_cpu=0.10),
        ]
    )

    summary = result.summary()

    assert summary["cpu_per_viewer_1_worker"] == pytest.approx(0.005)
    assert summary["cpu_per_viewer_2_workers"] == pytest.approx(0.00825)
    assert summary["efficiency"] == pytest.approx(0.005 / 0.00825)
    assert summary["pipe_fixed_cpu"] == pytest.approx(0.03)
    assert summary["edge_idle_cpu"] == pytest.approx(0.02)
    assert summary["viewers_per_core"] == pytest.approx(200)


def test_a_starved_point_is_left_out_of_the_fit() -> None:
    starved = _point(1, 60, 0.9)
    starved.median_pps = 150.0
    result = ClusterResult(points=[_point(1, 0, 0.04), _point(1, 40, 0.24), starved])

    fit = result.fit(1)

    assert starved.saturated
    assert fit is not None
    assert fit.slope == pytest.approx(0.005)
    assert result.fit(2) is None


def test_a_window_on_a_crowded_machine_is_left_out_of_the_fit() -> None:
    crowded = _point(1, 60, 0.34)
    crowded.core_busy = [0.99, 0.97]

    assert crowded.contended
    assert crowded.saturated
    assert crowded.verdict == "no: machine busy"
