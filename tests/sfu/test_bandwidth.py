"""sfu.bandwidth: a viewer's estimate from synthetic feedback (REMB, loss)."""

from __future__ import annotations

import pytest

from sfu.bandwidth import BandwidthEstimator, EstimatorSettings

SETTINGS = EstimatorSettings(initial_bps=3_000_000)


def estimator(sent: float = 1_000_000) -> BandwidthEstimator:
    est = BandwidthEstimator(SETTINGS, now=0.0)
    est.sent(sent)
    return est


def test_starts_at_the_initial_estimate() -> None:
    assert estimator().estimate == 3_000_000


def test_heavy_loss_cuts_to_what_was_sent_minus_half_the_loss() -> None:
    est = estimator(sent=1_000_000)
    est.on_loss(0.4, now=1.0)
    assert est.estimate == pytest.approx(800_000)
    assert est.last_decrease_at == 1.0


def test_two_reports_of_one_burst_cut_once() -> None:
    est = estimator(sent=1_000_000)
    est.on_loss(0.4, now=1.0)
    est.on_loss(0.4, now=1.1)  # the audio's report of the same burst
    assert est.estimate == pytest.approx(800_000)
    est.on_loss(0.4, now=1.5)
    assert est.estimate == pytest.approx(640_000)


def test_moderate_loss_holds() -> None:
    est = estimator(sent=1_000_000)
    est.on_loss(0.4, now=1.0)
    est.on_loss(0.05, now=2.0)
    est.on_loss(0.05, now=3.0)
    assert est.estimate == pytest.approx(800_000)


def test_low_loss_grows_eight_percent_a_second_up_to_a_ceiling_above_what_is_sent() -> None:
    est = estimator(sent=1_000_000)
    est.on_loss(0.4, now=1.0)  # 800 k
    est.on_loss(0.0, now=2.0)
    assert est.estimate == pytest.approx(864_000)
    for second in range(3, 30):
        est.on_loss(0.0, now=float(second))
    assert est.estimate == pytest.approx(1_500_000)  # 1.5 * sent: never tested beyond


def test_a_remb_falling_below_what_is_sent_is_a_bound() -> None:
    est = estimator(sent=1_000_000)
    est.on_remb(1_200_000, now=0.5)
    est.on_remb(850_000, now=1.0)  # Chromium saw an overuse
    assert est.estimate == 850_000
    assert est.last_decrease_at == 1.0


def test_a_low_remb_that_does_not_fall_says_nothing() -> None:
    # aiortc's receivers start low and climb by 8 %/s: the first REMB, and one that rises,
    # is no sign of a congested link
    est = estimator(sent=1_000_000)
    est.on_remb(300_000, now=0.5)
    est.on_remb(320_000, now=1.5)
    assert est.estimate == 3_000_000
    assert est.last_decrease_at < 0


def test_a_remb_that_follows_what_is_sent_says_nothing() -> None:
    # Chromium announces at most 1.5 * what it receives: 300 k while it gets 200 k is no
    # limit, or a viewer could never step up
    est = estimator(sent=200_000)
    est.on_remb(300_000, now=1.0)
    assert est.estimate == 3_000_000
    assert est.last_decrease_at < 0


def test_a_successful_probe_raises_the_estimate() -> None:
    est = estimator(sent=200_000)
    est.on_remb(250_000, now=0.5)
    est.on_remb(150_000, now=1.0)
    est.probe_succeeded(600_000, now=3.0)
    assert est.estimate == 600_000


def test_never_below_the_floor() -> None:
    est = estimator(sent=10_000)
    est.on_remb(9_000, now=0.5)
    est.on_remb(1_000, now=1.0)
    assert est.estimate == SETTINGS.min_bps


def test_loss_is_read_over_a_window_of_the_viewers_reports() -> None:
    # 5 % random loss: one report of 40 video packets may lose 5 (12.5 %), but with the
    # audio's report the window lost 7 of 140 (5 %): no cut
    est = estimator(sent=1_000_000)
    est.on_report(1, highest_sequence=1000, packets_lost=0, now=0.1)
    est.on_report(2, highest_sequence=5000, packets_lost=0, now=0.2)
    est.on_report(1, highest_sequence=1040, packets_lost=5, now=0.6)
    assert est.last_decrease_at < 0  # the window is not full yet
    est.on_report(2, highest_sequence=5100, packets_lost=2, now=1.1)
    assert est.loss == pytest.approx(7 / 140)
    assert est.last_decrease_at < 0
    # a link dropping 40 %: cut
    est.on_report(1, highest_sequence=1090, packets_lost=25, now=1.6)
    est.on_report(2, highest_sequence=5150, packets_lost=22, now=2.2)
    assert est.loss == pytest.approx(0.4)
    assert est.estimate == pytest.approx(800_000)
    assert est.heavy_loss_windows == 1


def test_a_report_losing_most_of_its_packets_cuts_at_once_to_what_got_through() -> None:
    # a link taking a fraction of what it is sent: no full window is waited for, and the
    # estimate falls to what got through, not by half the loss
    est = estimator(sent=1_000_000)
    est.on_report(1, highest_sequence=1000, packets_lost=0, now=0.1)
    est.on_report(1, highest_sequence=1040, packets_lost=30, now=0.4)
    assert est.last_decrease_at == 0.4
    assert est.estimate == pytest.approx(250_000)


def test_reports_after_a_deep_cut_are_not_taken_for_a_while() -> None:
    est = estimator(sent=1_000_000)
    est.on_loss(0.8, now=1.0)  # to 200 kbit/s
    assert est.estimate == pytest.approx(200_000)
    est.on_loss(0.8, now=2.0)  # about what was sent before the cut
    assert est.estimate == pytest.approx(200_000)
    assert est.heavy_loss_windows == 1
    est.on_loss(0.8, now=3.5)  # the link still drops most of it: cut again
    assert est.estimate < 200_000


def test_an_overflowing_probes_queue_measures_the_links_rate_whatever_remb_says() -> None:
    """A 450 kbit/s probe of 0.5 s that queued 250 ms went through at 300 kbit/s: the
    estimate goes no higher, even where the viewer's REMB had it above, and the failed
    probe's undoing does not lift it back; a probe that succeeds later forgets it."""
    est = estimator(sent=150_000)
    est.on_remb(367_000, now=0.5)
    before = est.estimate
    assert before > 300_000
    est.probe_sent(450_000, 0.5)
    est.on_probe_delay(0.25, now=1.5)
    assert est.last_probe_overflow_at == 1.5
    assert est.capacity == pytest.approx(300_000)
    assert est.estimate == pytest.approx(300_000)
    est.probe_failed(before, now=1.6)
    assert est.estimate == pytest.approx(300_000)
    est.probe_succeeded(390_000, now=10.0)
    assert est.capacity is None
    assert est.estimate == 390_000


def test_a_probe_that_queued_nothing_measures_nothing() -> None:
    est = estimator(sent=150_000)
    est.probe_sent(450_000, 0.5)
    est.on_probe_delay(0.005, now=1.5)
    assert est.capacity is None
    est.on_probe_delay(0.3, now=3.0)  # a delay without a probe sent just before
    assert est.capacity is None


def test_background_loss_is_the_mean_of_the_last_windows_taken() -> None:
    est = estimator()
    assert est.background_loss == 0.0
    for second, loss in enumerate([0.2, 0.05, 0.05, 0.05, 0.05, 0.05], start=1):
        est.on_loss(loss, now=float(second))
    assert est.background_loss == pytest.approx(0.05)  # the first window is out of the last 5
    est.ignore_loss(until=20.0)
    est.on_loss(0.5, now=10.0)  # ignored: not counted either
    assert est.background_loss == pytest.approx(0.05)


def test_a_window_cuts_only_when_it_loses_well_above_what_the_link_loses_anyway() -> None:
    clean, lossy = estimator(), estimator()
    for second in range(1, 6):
        lossy.on_loss(0.05, now=float(second))  # 5 % whatever it is sent
        clean.on_loss(0.0, now=float(second))
    before = lossy.estimate
    lossy.on_loss(0.12, now=6.0)  # a window of random loss, 7 points above the background
    assert lossy.estimate == before
    clean.on_loss(0.12, now=6.0)
    assert clean.last_decrease_at == 6.0
    lossy.on_loss(0.4, now=7.0)  # congestion on top of it
    assert lossy.last_decrease_at == 7.0
